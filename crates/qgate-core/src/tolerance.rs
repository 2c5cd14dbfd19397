//! Named tolerances. Numbers are compared through these levels only, so that every place
//! that accepts "close enough" says how close and why (after tract's `Approximation`).

/// How close two numbers must be to count as equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    Exact,
    /// Rounding noise of f64 arithmetic: |a−b| ≤ 1e-9 + 1e-9·|b|. Used where a threshold is
    /// met exactly up to the last bits (a 1.0 pp drop against a 1.0 pp limit).
    Rounding,
    /// Two float32 computations of the same graph in different orders: 1e-5 abs + 1e-4 rel.
    Float32Reordering,
    /// The same graph computed in float16 by two runtimes whose accumulation order and
    /// precision differ (f16 epsilon ≈ 1e-3, sums over hundreds of terms): 5e-2 abs +
    /// 5e-3 rel.
    Float16Compute,
}

impl Tolerance {
    /// `(absolute, relative)` bounds.
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Tolerance::Exact => (0.0, 0.0),
            Tolerance::Rounding => (1e-9, 1e-9),
            Tolerance::Float32Reordering => (1e-5, 1e-4),
            Tolerance::Float16Compute => (5e-2, 5e-3),
        }
    }

    /// Whether `actual` is within this tolerance of `expected`.
    pub fn close(self, actual: f64, expected: f64) -> bool {
        if actual == expected {
            return true;
        }
        let (abs, rel) = self.bounds();
        (actual - expected).abs() <= abs + rel * expected.abs()
    }

    /// `value ≤ limit`, forgiving this tolerance.
    pub fn at_most(self, value: f64, limit: f64) -> bool {
        value <= limit || self.close(value, limit)
    }

    /// `value ≥ limit`, forgiving this tolerance.
    pub fn at_least(self, value: f64, limit: f64) -> bool {
        value >= limit || self.close(value, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_forgives_last_bits_only() {
        assert!(Tolerance::Rounding.at_most(1.0000000000001, 1.0));
        assert!(!Tolerance::Rounding.at_most(1.001, 1.0));
        assert!(!Tolerance::Exact.close(1.0, 1.0 + f64::EPSILON));
    }
}

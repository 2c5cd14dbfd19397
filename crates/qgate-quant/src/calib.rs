//! Activation ranges from a calibration set: min-max (onnxruntime's `MinMax`), percentile
//! and entropy (TensorRT's KL-divergence threshold search).

use std::collections::BTreeMap;

use qgate_core::Array;
use qgate_runtime::Model;
use serde::Serialize;

use crate::QuantError;

/// How activation ranges are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum CalibMethod {
    /// Smallest and largest value seen (onnxruntime's default).
    MinMax,
    /// The `p`-th percentile of |x| (e.g. 99.999), clipping rare outliers.
    Percentile {
        /// Percentile, (0, 100].
        p: f64,
    },
    /// The clipping threshold whose 128-level quantization keeps the histogram's KL
    /// divergence smallest (TensorRT's entropy calibration).
    Entropy,
}

impl CalibMethod {
    /// The method's name as reports write it: `min_max`, `percentile`, `entropy`.
    pub fn name(&self) -> &'static str {
        match self {
            CalibMethod::MinMax => "min_max",
            CalibMethod::Percentile { .. } => "percentile",
            CalibMethod::Entropy => "entropy",
        }
    }
}

impl std::str::FromStr for CalibMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minmax" => Ok(CalibMethod::MinMax),
            "entropy" => Ok(CalibMethod::Entropy),
            "percentile" => Ok(CalibMethod::Percentile { p: 99.999 }),
            other => match other.strip_prefix("percentile:").map(str::parse::<f64>) {
                Some(Ok(p)) if p > 0.0 && p <= 100.0 => Ok(CalibMethod::Percentile { p }),
                _ => Err(format!(
                    "'{other}': expected minmax, entropy, percentile or percentile:P (0 < P ≤ 100)"
                )),
            },
        }
    }
}

/// A tensor's calibrated range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    /// Lower end (≤ 0 after widening to include zero).
    pub min: f64,
    /// Upper end.
    pub max: f64,
}

const BINS: usize = 2048;

/// Runs `model` over `batches` and returns the range of each named tensor. Min-max needs
/// one pass; percentile and entropy a second pass for the histogram of |x|.
pub fn calibrate(
    model: &mut dyn Model,
    batches: &[Vec<Array>],
    tensors: &[String],
    method: CalibMethod,
) -> Result<BTreeMap<String, Range>, QuantError> {
    let mut lo = vec![f64::INFINITY; tensors.len()];
    let mut hi = vec![f64::NEG_INFINITY; tensors.len()];
    for b in batches {
        let outs = model.run_tensors(b, tensors).map_err(QuantError::Runtime)?;
        for (k, a) in outs.iter().enumerate() {
            for v in values(a, &tensors[k])? {
                if v.is_finite() {
                    lo[k] = lo[k].min(v);
                    hi[k] = hi[k].max(v);
                }
            }
        }
    }
    let mut ranges = BTreeMap::new();
    if method == CalibMethod::MinMax {
        for (k, t) in tensors.iter().enumerate() {
            ranges.insert(t.clone(), finite_range(t, lo[k], hi[k])?);
        }
        return Ok(ranges);
    }
    let absmax: Vec<f64> = lo
        .iter()
        .zip(&hi)
        .map(|(a, b)| a.abs().max(b.abs()))
        .collect();
    let mut hist = vec![vec![0u64; BINS]; tensors.len()];
    for b in batches {
        let outs = model.run_tensors(b, tensors).map_err(QuantError::Runtime)?;
        for (k, a) in outs.iter().enumerate() {
            let width = absmax[k] / BINS as f64;
            for v in values(a, &tensors[k])? {
                if v.is_finite() && width > 0.0 {
                    let i = ((v.abs() / width) as usize).min(BINS - 1);
                    hist[k][i] += 1;
                }
            }
        }
    }
    for (k, t) in tensors.iter().enumerate() {
        let r = finite_range(t, lo[k], hi[k])?;
        let width = absmax[k] / BINS as f64;
        let threshold = match method {
            CalibMethod::Percentile { p } => percentile_threshold(&hist[k], p) * width,
            CalibMethod::Entropy => entropy_threshold(&hist[k]) * width,
            CalibMethod::MinMax => absmax[k],
        };
        let threshold = threshold.min(absmax[k]);
        ranges.insert(
            t.clone(),
            Range {
                min: if r.min < 0.0 {
                    -threshold.min(-r.min)
                } else {
                    r.min
                },
                max: threshold.min(r.max.max(0.0)),
            },
        );
    }
    Ok(ranges)
}

fn values(a: &Array, name: &str) -> Result<Vec<f64>, QuantError> {
    a.to_f64().ok_or_else(|| {
        QuantError::Model(format!(
            "tensor '{name}' holds {}, not numbers; only float activations can be calibrated",
            a.elem_type()
        ))
    })
}

fn finite_range(name: &str, lo: f64, hi: f64) -> Result<Range, QuantError> {
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(QuantError::Model(format!(
            "tensor '{name}' had no finite value on the calibration set"
        )));
    }
    Ok(Range { min: lo, max: hi })
}

/// Upper edge (in bins) below which `p` % of the histogram lies.
fn percentile_threshold(hist: &[u64], p: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return hist.len() as f64;
    }
    let target = (total as f64 * p / 100.0).ceil() as u64;
    let mut seen = 0;
    for (i, &c) in hist.iter().enumerate() {
        seen += c;
        if seen >= target {
            return (i + 1) as f64;
        }
    }
    hist.len() as f64
}

/// TensorRT's entropy calibration (Migacz 2017): for each candidate threshold i (in
/// bins, from 128), clip the histogram at i (outliers folded into the last bin), quantize
/// it to 128 levels, expand back, and keep the i with the smallest KL(P ‖ Q).
fn entropy_threshold(hist: &[u64]) -> f64 {
    const LEVELS: usize = 128;
    let n = hist.len();
    if hist.iter().sum::<u64>() == 0 || n <= LEVELS {
        return n as f64;
    }
    let mut best = (f64::INFINITY, n);
    for i in LEVELS..=n {
        let mut p: Vec<f64> = hist[..i].iter().map(|&c| c as f64).collect();
        let outliers: u64 = hist[i..].iter().sum();
        p[i - 1] += outliers as f64;
        // Quantize into LEVELS merged bins, then spread each back over its non-empty bins.
        let mut q = vec![0.0; i];
        let per = i as f64 / LEVELS as f64;
        for j in 0..LEVELS {
            let start = (j as f64 * per).floor() as usize;
            let end = (((j + 1) as f64 * per).floor() as usize).clamp(start + 1, i);
            // Q comes from the clipped histogram without the folded outliers: that
            // difference is what KL charges a threshold that clips too much.
            let sum: f64 = hist[start..end].iter().map(|&c| c as f64).sum::<f64>();
            let nonzero = (start..end).filter(|&b| hist[b] > 0).count();
            if nonzero > 0 {
                for b in start..end {
                    if hist[b] > 0 {
                        q[b] = sum / nonzero as f64;
                    }
                }
            }
        }
        let ps: f64 = p.iter().sum();
        let qs: f64 = q.iter().sum();
        let mut kl = 0.0;
        for (a, b) in p.iter().zip(&q) {
            if *a > 0.0 {
                let (a, b) = (a / ps, (b / qs).max(1e-12));
                kl += a * (a / b).ln();
            }
        }
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_threshold_of_a_flat_histogram() {
        let h = vec![10u64; 100];
        assert_eq!(percentile_threshold(&h, 50.0), 50.0);
        assert_eq!(percentile_threshold(&h, 100.0), 100.0);
    }

    #[test]
    fn entropy_clips_a_long_tail() {
        // |x| of a Gaussian (half-normal) over 0–8σ plus a few outliers at the very end,
        // as post-ReLU activations look: the threshold lands in the tail, well below the
        // maximum (TensorRT's calibrator clips around 3–6σ here) and above the bulk.
        let mut h: Vec<u64> = (0..BINS)
            .map(|i| {
                let x = (i as f64 + 0.5) / BINS as f64 * 8.0;
                (1e6 * (-x * x / 2.0).exp()).round() as u64
            })
            .collect();
        h[BINS - 1] += 5;
        let t = entropy_threshold(&h) / BINS as f64 * 8.0;
        assert!((2.5..6.5).contains(&t), "threshold {t} σ");
    }

    #[test]
    fn method_names_parse() {
        assert_eq!("minmax".parse::<CalibMethod>(), Ok(CalibMethod::MinMax));
        assert_eq!(
            "percentile:99.9".parse::<CalibMethod>(),
            Ok(CalibMethod::Percentile { p: 99.9 })
        );
        assert!("percentile:120".parse::<CalibMethod>().is_err());
    }
}

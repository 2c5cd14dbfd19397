//! Statistics for live traffic: fixed-horizon two-sample tests (Pearson's chi-square,
//! the two-proportion z test, Newcombe's interval, Welch's t, a bootstrap interval) and the
//! always-valid mixture SPRT (mSPRT) of Johari, Pekelis & Walsh, "Always Valid Inference:
//! Continuous Monitoring of A/B Tests" (Operations Research 70(3), 2022).
//!
//! Fixed-horizon figures are valid once, at a sample size chosen in advance; read every hour
//! they raise false alarms far above α. The mSPRT p-value and confidence sequence stay valid
//! however often they are looked at: that is what a canary or a watched dashboard needs.
//!
//! ```
//! use qgate_core::online::{msprt_half_width, msprt_log_lr};
//! // Equal estimate and null: the mixture likelihood ratio is below 1 (log < 0).
//! assert!(msprt_log_lr(0.0, 0.0, 1e-4, 1e-4) < 0.0);
//! // The confidence sequence is wider than a fixed-horizon interval of the same variance.
//! assert!(msprt_half_width(1e-4, 1e-4, 0.05) > 1.96 * 1e-2);
//! ```

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

use crate::stats::{percentile_interval, wilson_interval, Rng};

/// Upper tail of the standard normal, P(Z > z).
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile Φ⁻¹(p).
pub fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// A test's statistic and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Test {
    pub statistic: f64,
    pub p_value: f64,
}

/// Pearson's chi-square goodness-of-fit test of `observed` counts against `expected`
/// counts (same total), with `k − 1` degrees of freedom: `scipy.stats.chisquare`. A count
/// in a cell that expects none is an infinite statistic (p = 0); with fewer than two cells
/// expecting anything and nothing elsewhere, nothing can mismatch (p = 1). NaN inputs give
/// NaN.
pub fn chi_square_gof(observed: &[f64], expected: &[f64]) -> Test {
    if observed.iter().chain(expected).any(|v| v.is_nan()) {
        return Test {
            statistic: f64::NAN,
            p_value: f64::NAN,
        };
    }
    if observed
        .iter()
        .zip(expected)
        .any(|(&o, &e)| e <= 0.0 && o > 0.0)
    {
        return Test {
            statistic: f64::INFINITY,
            p_value: 0.0,
        };
    }
    let cells: Vec<(f64, f64)> = observed
        .iter()
        .zip(expected)
        .filter(|(_, &e)| e > 0.0)
        .map(|(&o, &e)| (o, e))
        .collect();
    if cells.len() < 2 {
        return Test {
            statistic: 0.0,
            p_value: 1.0,
        };
    }
    let stat: f64 = cells.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    let df = (cells.len() - 1) as f64;
    // One degree of freedom (two arms): P(χ²₁ > x) = erfc(√(x/2)) to full precision.
    let p = match ChiSquared::new(df) {
        _ if cells.len() == 2 => libm::erfc((stat / 2.0).sqrt()),
        Ok(d) => d.sf(stat),
        Err(_) => f64::NAN,
    };
    Test {
        statistic: stat,
        p_value: p,
    }
}

/// Two-proportion z test of `x1/n1 − x2/n2` with the pooled variance:
/// `statsmodels.stats.proportion.proportions_ztest([x1, x2], [n1, n2])`. NaN when a side is
/// empty or the pooled proportion is 0 or 1.
pub fn two_proportion_z(x1: u64, n1: u64, x2: u64, n2: u64) -> Test {
    let nan = Test {
        statistic: f64::NAN,
        p_value: f64::NAN,
    };
    if n1 == 0 || n2 == 0 {
        return nan;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se.is_nan() || se == 0.0 {
        return nan;
    }
    let z = (p1 - p2) / se;
    Test {
        statistic: z,
        p_value: 2.0 * normal_sf(z.abs()),
    }
}

/// Newcombe's hybrid score interval (Newcombe 1998, method 10) of `x1/n1 − x2/n2` at level
/// `1 − alpha`, from the two Wilson intervals: `statsmodels.stats.proportion.
/// confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")`.
pub fn newcombe_interval(x1: u64, n1: u64, x2: u64, n2: u64, alpha: f64) -> [f64; 2] {
    if n1 == 0 || n2 == 0 {
        return [f64::NAN, f64::NAN];
    }
    let z = normal_quantile(1.0 - alpha / 2.0);
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let (l1, u1) = wilson_interval(x1, n1, z);
    let (l2, u2) = wilson_interval(x2, n2, z);
    let d = p1 - p2;
    [
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    ]
}

/// Count, mean and sample variance (n − 1) of a set of values, accumulated one by one
/// (Welford), so that arms of millions of requests need no stored values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    m2: f64,
}

impl Moments {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Moments of `values`.
    pub fn of(values: &[f64]) -> Moments {
        let mut m = Moments::default();
        values.iter().for_each(|&v| m.push(v));
        m
    }

    /// Sample variance (n − 1); NaN below two values.
    pub fn variance(&self) -> f64 {
        if self.n < 2 {
            f64::NAN
        } else {
            self.m2 / (self.n - 1) as f64
        }
    }
}

/// Welch's unequal-variance t test of `mean(a) − mean(b)` and its interval at level
/// `1 − alpha`: `scipy.stats.ttest_ind(a, b, equal_var=False)` and its
/// `confidence_interval(1 − alpha)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Welch {
    pub difference: f64,
    pub statistic: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    pub p_value: f64,
    pub interval: [f64; 2],
}

/// [`Welch`] from the two sides' moments; NaN figures when a side has fewer than two values
/// or both have no spread.
pub fn welch(a: &Moments, b: &Moments, alpha: f64) -> Welch {
    let diff = if a.n == 0 || b.n == 0 {
        f64::NAN
    } else {
        a.mean - b.mean
    };
    let (va, vb) = (a.variance() / a.n as f64, b.variance() / b.n as f64);
    let se2 = va + vb;
    let df = se2 * se2 / (va * va / (a.n as f64 - 1.0) + vb * vb / (b.n as f64 - 1.0));
    let nan = Welch {
        difference: diff,
        statistic: f64::NAN,
        df: f64::NAN,
        p_value: f64::NAN,
        interval: [f64::NAN, f64::NAN],
    };
    if se2.is_nan() || se2 <= 0.0 || df.is_nan() || df <= 0.0 {
        return nan;
    }
    let Ok(t) = StudentsT::new(0.0, 1.0, df) else {
        return nan;
    };
    let se = se2.sqrt();
    let stat = diff / se;
    let q = t.inverse_cdf(1.0 - alpha / 2.0);
    Welch {
        difference: diff,
        statistic: stat,
        df,
        p_value: 2.0 * t.sf(stat.abs()),
        interval: [diff - q * se, diff + q * se],
    }
}

/// The one-sample t interval of the mean at level `1 − alpha` and the two-sided p-value of
/// mean = 0 (`scipy.stats.ttest_1samp` and its `confidence_interval`): `(statistic, p,
/// interval)`; NaN below two values or without spread.
pub fn one_sample_t(m: &Moments, alpha: f64) -> (f64, f64, [f64; 2]) {
    let se = (m.variance() / m.n as f64).sqrt();
    let df = m.n as f64 - 1.0;
    let Ok(t) = StudentsT::new(0.0, 1.0, df) else {
        return (f64::NAN, f64::NAN, [f64::NAN; 2]);
    };
    if se.is_nan() || se <= 0.0 {
        return (f64::NAN, f64::NAN, [f64::NAN; 2]);
    }
    let stat = m.mean / se;
    let q = t.inverse_cdf(1.0 - alpha / 2.0);
    (
        stat,
        2.0 * t.sf(stat.abs()),
        [m.mean - q * se, m.mean + q * se],
    )
}

/// Percentile-bootstrap interval of `statistic(a) − statistic(b)` at level `confidence`,
/// resampling each side independently with a seeded generator (`resamples` draws).
/// `statistic` may reorder the resample it is given (a selection, not a sort).
pub fn bootstrap_difference(
    a: &[f64],
    b: &[f64],
    statistic: fn(&mut [f64]) -> f64,
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> [f64; 2] {
    if a.is_empty() || b.is_empty() || resamples == 0 {
        return [f64::NAN, f64::NAN];
    }
    let mut rng = Rng::new(seed);
    let mut draw = |v: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..v.len()).map(|_| v[rng.below(v.len())]));
    };
    let (mut ba, mut bb) = (Vec::with_capacity(a.len()), Vec::with_capacity(b.len()));
    let values = (0..resamples)
        .map(|_| {
            draw(a, &mut ba);
            draw(b, &mut bb);
            statistic(&mut ba) - statistic(&mut bb)
        })
        .collect();
    percentile_interval(values, confidence)
}

/// The default mixing standard deviation of the mSPRT, in units of the per-observation
/// standard deviation (see [`Msprt`]).
pub const DEFAULT_MSPRT_TAU: f64 = 0.1;

/// ln Λ, the log of the mixture likelihood ratio of H₀: θ = `theta0` for an estimate
/// `theta_hat` with variance `v` (the estimate's, e.g. σ²/n), mixing θ over N(θ₀, `tau2`):
/// Λ = √(v / (v + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 v (v + τ²))) — Johari et al.'s statistic
/// written with the estimate's variance, so it holds for unequal arms.
pub fn msprt_log_lr(theta_hat: f64, theta0: f64, v: f64, tau2: f64) -> f64 {
    let d = theta_hat - theta0;
    0.5 * (v / (v + tau2)).ln() + tau2 * d * d / (2.0 * v * (v + tau2))
}

/// Half-width of the mSPRT confidence set {θ₀ : Λ(θ₀) < 1/α} around the estimate:
/// √( v (v + τ²) / τ² · (2 ln(1/α) + ln((v + τ²) / v)) ).
pub fn msprt_half_width(v: f64, tau2: f64, alpha: f64) -> f64 {
    (v * (v + tau2) / tau2 * (2.0 * (1.0 / alpha).ln() + ((v + tau2) / v).ln())).sqrt()
}

/// A running mixture SPRT of one parameter θ (a difference of means or rates, or one
/// mean), updated at every look with the current estimate and its variance. It keeps the
/// always-valid p-value of H₀: θ = θ₀ (the running minimum of 1/Λ) and the confidence
/// sequence (the running intersection of the confidence sets), both valid at any look,
/// however many (Johari et al. 2022, §3–4).
///
/// The mixing distribution is N(θ₀, τ²) with τ = `tau` × the per-observation standard
/// deviation `sd` given at each look, so one default suits rates, milliseconds and scores
/// alike; the variance is the plug-in estimate, as in the paper's A/B application.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Msprt {
    /// Null value θ₀ of the p-value.
    pub theta0: f64,
    /// Mixing standard deviation in units of the per-observation standard deviation.
    pub tau: f64,
    pub alpha: f64,
    /// Looks taken.
    pub looks: u64,
    /// The always-valid p-value (1 before the first look).
    pub p_value: f64,
    /// The always-valid confidence sequence at level 1 − α (±∞ before the first look).
    pub interval: [f64; 2],
    /// The last estimate.
    pub estimate: f64,
    /// Whether the sequence is the running intersection of every look's set and the
    /// p-value the running minimum (the paper's always-valid forms), or each look's own set
    /// and p-value. The running forms suit bounded data (rates): a plug-in variance of
    /// heavy-tailed values (KL, latencies, amounts) is too small early, and an intersection
    /// would keep those early, too narrow sets for ever.
    pub running: bool,
}

impl Msprt {
    /// A test of θ = `theta0` at level `alpha` with mixing scale `tau`.
    pub fn new(theta0: f64, tau: f64, alpha: f64) -> Msprt {
        Msprt {
            theta0,
            tau,
            alpha,
            looks: 0,
            p_value: 1.0,
            interval: [f64::NEG_INFINITY, f64::INFINITY],
            estimate: f64::NAN,
            running: true,
        }
    }

    /// A test whose sequence and p-value are each look's own (see [`Msprt::running`]).
    pub fn per_look(theta0: f64, tau: f64, alpha: f64) -> Msprt {
        Msprt {
            running: false,
            ..Msprt::new(theta0, tau, alpha)
        }
    }

    /// The sequence clamped to the parameter's range (a rate lies in [0, 1], a difference of
    /// rates in [−1, 1]).
    pub fn clamp(&mut self, lo: f64, hi: f64) {
        self.interval = [self.interval[0].max(lo), self.interval[1].min(hi)];
    }

    /// One look: the estimate `theta_hat`, its variance `v` and the per-observation
    /// standard deviation `sd` (for τ). A variance of exactly 0 (every value equal) makes
    /// the set the estimate itself; a look with an infinite or NaN variance only records the
    /// estimate (nothing can be learnt from it).
    pub fn look(&mut self, theta_hat: f64, v: f64, sd: f64) {
        self.estimate = theta_hat;
        let tau2 = (self.tau * sd).powi(2);
        if v == 0.0 && theta_hat.is_finite() {
            // Every value equal (after the caller's burn-in): the set is the value itself,
            // and a null other than it is rejected.
            self.looks += 1;
            let p = if theta_hat == self.theta0 { 1.0 } else { 0.0 };
            self.p_value = if self.running { self.p_value.min(p) } else { p };
            self.interval = [theta_hat, theta_hat];
            return;
        }
        if !(v > 0.0 && v.is_finite() && tau2 > 0.0 && theta_hat.is_finite()) {
            return;
        }
        self.looks += 1;
        let lr = msprt_log_lr(theta_hat, self.theta0, v, tau2);
        let h = msprt_half_width(v, tau2, self.alpha);
        let (lo, hi) = (theta_hat - h, theta_hat + h);
        if !self.running {
            self.p_value = (-lr).exp().min(1.0);
            self.interval = [lo, hi];
            return;
        }
        self.p_value = self.p_value.min((-lr).exp()).min(1.0);
        let (nlo, nhi) = (self.interval[0].max(lo), self.interval[1].min(hi));
        // An empty intersection happens with probability ≤ α; the sets are kept as they were
        // rather than reporting an empty interval.
        if nlo <= nhi {
            self.interval = [nlo, nhi];
        }
    }
}

/// The variance of a proportion's estimate for sequential tests: p̃(1 − p̃) with the
/// add-one smoothed p̃ = (x + 1)/(n + 2), so that 0 of n or n of n still carries the
/// uncertainty of n observations.
pub fn smoothed_bernoulli_variance(x: u64, n: u64) -> f64 {
    let p = (x as f64 + 1.0) / (n as f64 + 2.0);
    p * (1.0 - p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_tail_matches_known_values() {
        assert!((normal_sf(1.959_963_984_540_054) - 0.025).abs() < 1e-16);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
    }

    #[test]
    fn the_confidence_set_is_where_the_ratio_is_below_one_over_alpha() {
        let (v, tau2, alpha) = (2e-4, 5e-4, 0.05);
        let h = msprt_half_width(v, tau2, alpha);
        let at_edge = msprt_log_lr(0.3 + h, 0.3, v, tau2);
        assert!((at_edge - (1.0 / alpha).ln()).abs() < 1e-9, "{at_edge}");
    }

    #[test]
    fn counts_where_none_are_expected_are_a_mismatch() {
        assert_eq!(chi_square_gof(&[5.0, 3.0], &[8.0, 0.0]).p_value, 0.0);
        assert_eq!(chi_square_gof(&[8.0, 0.0], &[8.0, 0.0]).p_value, 1.0);
        assert!(chi_square_gof(&[8.0, 1.0], &[f64::NAN, 1.0])
            .p_value
            .is_nan());
    }

    #[test]
    fn a_look_without_spread_is_the_value_itself() {
        let mut m = Msprt::per_look(0.0, 0.1, 0.05);
        m.look(0.0, 0.0, 0.0);
        assert_eq!((m.interval, m.p_value), ([0.0, 0.0], 1.0));
        m.look(f64::NAN, f64::INFINITY, 1.0);
        assert_eq!(m.looks, 1);
    }

    #[test]
    fn moments_match_two_pass_figures() {
        let v = [1.0, 4.0, 4.0, 7.5, -2.0];
        let m = Moments::of(&v);
        let mean = v.iter().sum::<f64>() / 5.0;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        assert!((m.mean - mean).abs() < 1e-12 && (m.variance() - var).abs() < 1e-12);
    }
}

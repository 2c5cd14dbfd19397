//! Calibration: whether a model's confidence means what it says. Quantization often keeps
//! the top-1 class and shifts the confidence that thresholds downstream depend on.
//!
//! A sample's confidence is its largest class probability and it is correct when that
//! class (the first of equal maxima) is its label. The expected calibration error (ECE,
//! Naeini et al. 2015; Guo et al. 2017) is `Σ_b (n_b / N) |accuracy_b − confidence_b|`
//! over bins of samples:
//! - **equal-width** bins split (0, 1] into `B` intervals `((b−1)/B, b/B]`, a confidence of
//!   exactly 0 falling in the first;
//! - **equal-mass** bins sort the samples by confidence (ties in data order) and cut them
//!   into `B` runs of ⌈N/B⌉ or ⌊N/B⌋ samples, the longer runs first (numpy's
//!   `array_split`).
//!
//! The Brier score (Brier 1950) is the mean over samples of `Σ_k (p_k − 1[k = label])²`,
//! the original multi-class form (0 is perfect, 2 the worst).
//!
//! ```
//! use qgate_core::calibration::calibration;
//! use qgate_core::metrics::Scores;
//! let probs = Scores { n_samples: 2, n_classes: 2, values: vec![0.9, 0.1, 0.3, 0.7] };
//! let c = calibration(&probs, &[0, 0], 10);
//! // one sample 90 % sure and right, one 70 % sure and wrong
//! assert!((c.ece - (0.5 * 0.1 + 0.5 * 0.7)).abs() < 1e-12);
//! assert!((c.brier - (0.02 + 0.98) / 2.0).abs() < 1e-12);
//! ```

use serde::Serialize;

use crate::metrics::Scores;
use crate::rows::RowStats;

/// Bins of the reliability diagrams and the ECE (Guo et al. 2017 use 15).
pub const DEFAULT_BINS: usize = 15;

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Confidence range of the bin: `(lower, upper]` for equal-width bins; the smallest and
    /// largest confidence in it for equal-mass bins.
    pub lower: f64,
    pub upper: f64,
    /// Samples in the bin.
    pub count: u64,
    /// Mean confidence of its samples (NaN when empty).
    pub confidence: f64,
    /// Share of its samples that are correct (NaN when empty).
    pub accuracy: f64,
}

/// Calibration of one model on one data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Samples counted: those with finite probabilities (of both models, for a pair).
    pub samples: u64,
    /// Samples left out because a probability (of either model, for a pair) was NaN or
    /// infinite.
    pub excluded: u64,
    /// Number of bins.
    pub bins: usize,
    /// ECE over equal-width bins.
    pub ece: f64,
    /// ECE over equal-mass bins.
    pub ece_equal_mass: f64,
    /// Largest |accuracy − confidence| of a non-empty equal-width bin (maximum calibration
    /// error).
    pub mce: f64,
    /// Mean multi-class Brier score.
    pub brier: f64,
    /// Mean confidence over the samples.
    pub mean_confidence: f64,
    /// The equal-width reliability diagram.
    pub reliability: Vec<ReliabilityBin>,
    /// The equal-mass reliability diagram.
    pub reliability_equal_mass: Vec<ReliabilityBin>,
}

/// Calibration of `probs` against `labels` with `bins` bins (at least 1), over the samples
/// whose probabilities are finite.
pub fn calibration(probs: &Scores, labels: &[usize], bins: usize) -> Calibration {
    let rows = RowStats::from_scores(probs, probs, labels, 1);
    calibration_on(&rows, bins, &rows.finite)
}

/// Both models' calibration over the same samples: those where both give finite
/// probabilities (a model that answers NaN on hard samples must not look better
/// calibrated for it).
pub fn calibration_pair(
    baseline: &Scores,
    candidate: &Scores,
    labels: &[usize],
    bins: usize,
) -> [Calibration; 2] {
    calibration_pair_of(
        &RowStats::from_scores(baseline, baseline, labels, 1),
        &RowStats::from_scores(candidate, candidate, labels, 1),
        bins,
    )
}

/// [`calibration_pair`] from both models' per-sample figures.
pub fn calibration_pair_of(
    baseline: &RowStats,
    candidate: &RowStats,
    bins: usize,
) -> [Calibration; 2] {
    let keep: Vec<bool> = baseline
        .finite
        .iter()
        .zip(&candidate.finite)
        .map(|(&b, &c)| b && c)
        .collect();
    [
        calibration_on(baseline, bins, &keep),
        calibration_on(candidate, bins, &keep),
    ]
}

/// Calibration over the samples `keep` marks (each must have finite probabilities).
fn calibration_on(rows: &RowStats, bins: usize, keep: &[bool]) -> Calibration {
    let bins = bins.max(1);
    let total = rows.len();
    let mut points: Vec<(f64, bool)> = Vec::with_capacity(total);
    let mut brier_sum = 0.0;
    for (i, _) in keep.iter().enumerate().filter(|(_, &k)| k) {
        if !rows.finite[i] || rows.confidence[i].is_nan() {
            continue;
        }
        brier_sum += rows.brier[i];
        points.push((rows.confidence[i], rows.confident_correct[i]));
    }
    let n = points.len();
    let width: Vec<ReliabilityBin> = (0..bins)
        .map(|b| {
            let members = points.iter().filter(|(c, _)| width_bin(*c, bins) == b);
            summarise(
                members,
                b as f64 / bins as f64,
                (b + 1) as f64 / bins as f64,
            )
        })
        .collect();
    let mean_confidence = if n == 0 {
        f64::NAN
    } else {
        points.iter().map(|p| p.0).sum::<f64>() / n as f64
    };
    // Sorted in place: the equal-width bins are taken, the points are not needed in order.
    let mut sorted = points;
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut mass = Vec::with_capacity(bins);
    let (q, r) = (n / bins, n % bins);
    let mut start = 0;
    for b in 0..bins {
        let len = q + usize::from(b < r);
        let run = &sorted[start..start + len];
        let (lo, hi) = match (run.first(), run.last()) {
            (Some(f), Some(l)) => (f.0, l.0),
            _ => (f64::NAN, f64::NAN),
        };
        mass.push(summarise(run.iter(), lo, hi));
        start += len;
    }
    let ece = |bins: &[ReliabilityBin]| -> f64 {
        if n == 0 {
            return f64::NAN;
        }
        bins.iter()
            .filter(|b| b.count > 0)
            .map(|b| b.count as f64 / n as f64 * (b.accuracy - b.confidence).abs())
            .sum()
    };
    let mce = width
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| (b.accuracy - b.confidence).abs())
        .fold(if n == 0 { f64::NAN } else { 0.0 }, f64::max);
    Calibration {
        samples: n as u64,
        excluded: (total - n) as u64,
        bins,
        ece: ece(&width),
        ece_equal_mass: ece(&mass),
        mce,
        brier: if n == 0 {
            f64::NAN
        } else {
            brier_sum / n as f64
        },
        mean_confidence,
        reliability: width,
        reliability_equal_mass: mass,
    }
}

/// The equal-width bin of confidence `c`: `b` with `b/B < c ≤ (b+1)/B`; 0 for `c = 0`.
fn width_bin(c: f64, bins: usize) -> usize {
    ((c * bins as f64).ceil() as usize)
        .saturating_sub(1)
        .min(bins - 1)
}

fn summarise<'a>(
    members: impl Iterator<Item = &'a (f64, bool)>,
    lower: f64,
    upper: f64,
) -> ReliabilityBin {
    let (mut count, mut conf, mut correct) = (0u64, 0.0, 0u64);
    for &(c, ok) in members {
        count += 1;
        conf += c;
        correct += u64::from(ok);
    }
    let mean = |x: f64| {
        if count == 0 {
            f64::NAN
        } else {
            x / count as f64
        }
    };
    ReliabilityBin {
        lower,
        upper,
        count,
        confidence: mean(conf),
        accuracy: mean(correct as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_mass_bins_split_like_array_split() {
        let values: Vec<f64> = (0..7)
            .flat_map(|i| [0.5 + 0.05 * i as f64, 0.5 - 0.05 * i as f64])
            .collect();
        let probs = Scores {
            n_samples: 7,
            n_classes: 2,
            values,
        };
        let c = calibration(&probs, &[0; 7], 3);
        let counts: Vec<u64> = c.reliability_equal_mass.iter().map(|b| b.count).collect();
        assert_eq!(counts, vec![3, 2, 2]);
        assert_eq!(c.reliability.iter().map(|b| b.count).sum::<u64>(), 7);
    }

    #[test]
    fn non_finite_rows_are_excluded_and_counted() {
        let probs = Scores {
            n_samples: 2,
            n_classes: 2,
            values: vec![f64::NAN, 0.5, 0.8, 0.2],
        };
        let c = calibration(&probs, &[0, 0], 5);
        assert_eq!((c.samples, c.excluded), (1, 1));
        assert!((c.ece - 0.2).abs() < 1e-12);
    }
}

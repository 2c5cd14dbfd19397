//! How far two models' outputs drift apart: element-wise error, cosine similarity, SQNR,
//! KL divergence of class probabilities and agreement of their top classes.

use serde::Serialize;

use crate::metrics::Scores;
use crate::stats::percentile_sorted;

/// Divergence of one output tensor of the candidate from the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorDivergence {
    pub n_values: u64,
    /// Values that are not finite in either model (left out of every figure below).
    pub n_non_finite: u64,
    /// Largest |baseline − candidate|.
    pub max_abs: f64,
    /// Mean |baseline − candidate| over all values.
    pub mean_abs: f64,
    /// Mean over samples of the cosine similarity of the two output rows.
    pub cosine_mean: f64,
    /// Smallest per-sample cosine similarity.
    pub cosine_min: f64,
    /// Signal-to-quantization-noise ratio in dB: 10·log10(Σ baseline² / Σ (baseline −
    /// candidate)²). `None` when the outputs are identical (infinite SQNR).
    pub sqnr_db: Option<f64>,
}

/// Compares two output tensors of equal length, `row_len` values per sample.
pub fn tensor_divergence(base: &[f64], cand: &[f64], row_len: usize) -> TensorDivergence {
    let mut sums = DivergenceSums::default();
    sums.add(base, cand, row_len);
    sums.finish()
}

/// Running sums of [`tensor_divergence`], added a batch of whole rows at a time: the
/// figures of all batches are those of the stacked tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DivergenceSums {
    n_values: u64,
    n_non_finite: u64,
    max_abs: f64,
    sum_abs: f64,
    signal: f64,
    noise: f64,
    counted: u64,
    cos_sum: f64,
    cos_min: Option<f64>,
    rows: u64,
}

impl DivergenceSums {
    /// Adds one batch: `base` and `cand` of equal length, `row_len` values per sample.
    pub fn add(&mut self, base: &[f64], cand: &[f64], row_len: usize) {
        self.n_values += base.len() as u64;
        for (&a, &b) in base.iter().zip(cand) {
            if !a.is_finite() || !b.is_finite() {
                self.n_non_finite += 1;
                continue;
            }
            let d = (a - b).abs();
            self.max_abs = self.max_abs.max(d);
            self.sum_abs += d;
            self.signal += a * a;
            self.noise += d * d;
            self.counted += 1;
        }
        let row_len = row_len.max(1);
        for (ra, rb) in base.chunks(row_len).zip(cand.chunks(row_len)) {
            if ra.iter().chain(rb).any(|v| !v.is_finite()) {
                continue;
            }
            let c = cosine(ra, rb);
            self.cos_sum += c;
            self.cos_min = Some(self.cos_min.map_or(c.min(1.0), |m| m.min(c)));
            self.rows += 1;
        }
    }

    /// The figures over everything added.
    pub fn finish(&self) -> TensorDivergence {
        TensorDivergence {
            n_values: self.n_values,
            n_non_finite: self.n_non_finite,
            max_abs: self.max_abs,
            mean_abs: if self.counted > 0 {
                self.sum_abs / self.counted as f64
            } else {
                f64::NAN
            },
            cosine_mean: if self.rows > 0 {
                self.cos_sum / self.rows as f64
            } else {
                f64::NAN
            },
            cosine_min: self.cos_min.unwrap_or(f64::NAN),
            sqnr_db: if self.noise > 0.0 {
                Some(10.0 * (self.signal / self.noise).log10())
            } else {
                None
            },
        }
    }
}

/// Cosine similarity; 1 when both vectors are zero, 0 when only one is.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    match (na > 0.0, nb > 0.0) {
        (true, true) => dot / (na * nb),
        (false, false) => 1.0,
        _ => 0.0,
    }
}

/// KL(p ‖ q) in nats of two probability rows, with `scipy.special.rel_entr`'s conventions:
/// a term with p = 0 is 0, a term with p > 0 and q = 0 is +∞.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&pi, &qi)| {
            if pi == 0.0 {
                0.0
            } else if qi == 0.0 {
                f64::INFINITY
            } else {
                pi * (pi / qi).ln()
            }
        })
        .sum()
}

/// Summary of per-sample KL(baseline ‖ candidate) over samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KlSummary {
    /// Samples with a finite value (rows with non-finite probabilities are left out).
    pub n: u64,
    pub mean: f64,
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    pub max: f64,
    /// Histogram of the per-sample values.
    pub histogram: Histogram,
}

/// A histogram with equal-width bins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bin edges, `counts.len() + 1` of them.
    pub edges: Vec<f64>,
    /// Samples per bin; the last bin includes its upper edge.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `bins` equal bins from the smallest to the largest finite value.
    pub fn new(values: &[f64], bins: usize) -> Histogram {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if finite.is_empty() || bins == 0 {
            return Histogram {
                edges: Vec::new(),
                counts: Vec::new(),
            };
        }
        let width = if hi > lo {
            (hi - lo) / bins as f64
        } else {
            1.0
        };
        let edges = (0..=bins).map(|i| lo + width * i as f64).collect();
        let mut counts = vec![0u64; bins];
        for v in finite {
            let b = (((v - lo) / width) as usize).min(bins - 1);
            counts[b] += 1;
        }
        Histogram { edges, counts }
    }
}

/// Per-sample KL(softmax-or-probs baseline ‖ candidate) and its summary.
pub fn kl_summary(base_probs: &Scores, cand_probs: &Scores) -> (Vec<f64>, KlSummary) {
    let per_sample: Vec<f64> = (0..base_probs.n_samples)
        .map(|i| kl_divergence(base_probs.row(i), cand_probs.row(i)))
        .collect();
    let summary = kl_summary_of(&per_sample);
    (per_sample, summary)
}

/// The summary of per-sample KL values (`NaN` ones, from non-finite rows, left out).
pub fn kl_summary_of(per_sample: &[f64]) -> KlSummary {
    let mut sorted: Vec<f64> = per_sample.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    KlSummary {
        n: sorted.len() as u64,
        mean: crate::stats::mean(&sorted),
        median: percentile_sorted(&sorted, 50.0),
        p95: percentile_sorted(&sorted, 95.0),
        p99: percentile_sorted(&sorted, 99.0),
        max: sorted.last().copied().unwrap_or(f64::NAN),
        histogram: Histogram::new(&sorted, 30),
    }
}

/// Fraction of samples whose sets of `k` highest-scoring classes are equal. Ties at the
/// k-th place keep the lower class index (a stable descending sort), as `numpy.argsort` of
/// the negated scores; quantized logits tie often, so the rule matters.
pub fn top_k_agreement(base: &Scores, cand: &Scores, k: usize) -> f64 {
    if base.n_samples == 0 {
        return f64::NAN;
    }
    let same = (0..base.n_samples)
        .filter(|&i| same_top_k(base.row(i), cand.row(i), k))
        .count();
    same as f64 / base.n_samples as f64
}

/// Whether two rows are both finite and have the same set of `k` highest values: one
/// sample of [`top_k_agreement`].
pub fn same_top_k(p: &[f64], q: &[f64], k: usize) -> bool {
    matches!((top_k_set(p, k), top_k_set(q, k)), (Some(a), Some(b)) if a == b)
}

/// The indices of the `k` highest values of a finite row, ascending (ties at the k-th
/// place keep the lower index, as `numpy.argsort`); `None` when a value is not finite.
pub fn top_k_set(row: &[f64], k: usize) -> Option<Vec<usize>> {
    let mut set = Vec::with_capacity(row.len());
    top_k_set_into(row, k, &mut set).then_some(set)
}

/// [`top_k_set`] into `set` (cleared first, its room kept for the next row); `false`, with
/// `set` empty, where `top_k_set` gives `None`.
pub fn top_k_set_into(row: &[f64], k: usize, set: &mut Vec<usize>) -> bool {
    set.clear();
    if !row.iter().all(|v| v.is_finite()) {
        return false;
    }
    crate::metrics::top_k_ordered_into(row, k, true, set);
    set.sort_unstable();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_outputs_have_no_divergence() {
        let a = [1.0, -2.0, 3.0, 0.5];
        let d = tensor_divergence(&a, &a, 2);
        assert_eq!(d.max_abs, 0.0);
        assert_eq!(d.sqnr_db, None);
        assert!((d.cosine_mean - 1.0).abs() < 1e-15);
    }

    #[test]
    fn sqnr_of_known_noise() {
        // signal energy 4, noise energy 0.04 → 20 dB
        let d = tensor_divergence(&[2.0], &[1.8], 1);
        assert!((d.sqnr_db.unwrap() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn kl_conventions_follow_rel_entr() {
        assert_eq!(kl_divergence(&[0.0, 1.0], &[0.5, 0.5]), 2f64.ln());
        assert_eq!(kl_divergence(&[0.5, 0.5], &[1.0, 0.0]), f64::INFINITY);
    }
}

//! One model's class scores reduced, sample by sample, to what the statistics read, so an
//! evaluation keeps a few numbers per sample rather than every output row.

use crate::metrics::{argmax, in_top_k, Scores};

/// Per-sample figures of one model's scores and class probabilities: top-k accuracy and
/// calibration are computed from these alone. (Top-k agreement compares two models, so
/// the evaluation keeps it per pair: [`crate::compare::PairInput::top_k_same`].)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowStats {
    /// `k` of the top-k figures.
    pub k: usize,
    /// Whether the sample's probabilities are all finite.
    pub finite: Vec<bool>,
    /// Whether the label is among the `k` highest scores (`false` for a non-finite row).
    pub top_k_hit: Vec<bool>,
    /// The highest probability (`NaN` for a non-finite row).
    pub confidence: Vec<f64>,
    /// Whether the most probable class is the label.
    pub confident_correct: Vec<bool>,
    /// Σ_c (p_c − [c = label])², the sample's multi-class Brier score.
    pub brier: Vec<f64>,
}

impl RowStats {
    /// Empty, for top-`k` figures.
    pub fn new(k: usize) -> RowStats {
        RowStats::with_capacity(k, 0)
    }

    /// [`RowStats::new`] with room for `n` samples.
    pub fn with_capacity(k: usize, n: usize) -> RowStats {
        RowStats {
            k,
            finite: Vec::with_capacity(n),
            top_k_hit: Vec::with_capacity(n),
            confidence: Vec::with_capacity(n),
            confident_correct: Vec::with_capacity(n),
            brier: Vec::with_capacity(n),
        }
    }

    /// Samples added.
    pub fn len(&self) -> usize {
        self.finite.len()
    }

    /// Whether no sample was added.
    pub fn is_empty(&self) -> bool {
        self.finite.is_empty()
    }

    /// Adds one sample: its raw `scores`, its class `probs` (the same row after softmax or
    /// normalisation) and its `label` (`None`: not a class of this output).
    pub fn push(&mut self, scores: &[f64], probs: &[f64], label: Option<usize>) {
        let scores_finite = scores.iter().all(|v| v.is_finite());
        let finite = probs.iter().all(|v| v.is_finite());
        self.finite.push(finite);
        self.top_k_hit
            .push(scores_finite && label.is_some_and(|y| in_top_k(scores, y, self.k)));
        match argmax(probs).filter(|_| finite) {
            Some(pred) => {
                self.confidence.push(probs[pred]);
                self.confident_correct.push(Some(pred) == label);
            }
            None => {
                self.confidence.push(f64::NAN);
                self.confident_correct.push(false);
            }
        }
        let brier: f64 = probs
            .iter()
            .enumerate()
            .map(|(c, &p)| {
                let t = if Some(c) == label { 1.0 } else { 0.0 };
                (p - t) * (p - t)
            })
            .sum();
        self.brier.push(brier);
    }

    /// From whole score and probability matrices and their labels.
    pub fn from_scores(scores: &Scores, probs: &Scores, labels: &[usize], k: usize) -> RowStats {
        let mut out = RowStats::new(k);
        for (i, &y) in labels.iter().enumerate().take(probs.n_samples) {
            out.push(scores.row(i), probs.row(i), Some(y));
        }
        out
    }

    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> RowStats {
        RowStats {
            k: self.k,
            finite: idx.iter().map(|&i| self.finite[i]).collect(),
            top_k_hit: idx.iter().map(|&i| self.top_k_hit[i]).collect(),
            confidence: idx.iter().map(|&i| self.confidence[i]).collect(),
            confident_correct: idx.iter().map(|&i| self.confident_correct[i]).collect(),
            brier: idx.iter().map(|&i| self.brier[i]).collect(),
        }
    }
}

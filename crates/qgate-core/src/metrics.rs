//! Classification metrics of one model: accuracy, top-k accuracy, per-class precision,
//! recall, F1 and support, macro and weighted averages, confusion matrix.
//!
//! Definitions follow scikit-learn (`accuracy_score`, `top_k_accuracy_score`,
//! `precision_recall_fscore_support(zero_division=0)`, `confusion_matrix`) so that figures
//! can be checked against it.

use serde::Serialize;

/// Class scores of a set of samples: `n_samples × n_classes`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Number of rows.
    pub n_samples: usize,
    /// Number of columns.
    pub n_classes: usize,
    /// Row-major scores (logits or probabilities).
    pub values: Vec<f64>,
}

impl Scores {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.n_classes..(i + 1) * self.n_classes]
    }

    /// Whether every score of row `i` is finite.
    pub fn row_is_finite(&self, i: usize) -> bool {
        self.row(i).iter().all(|v| v.is_finite())
    }

    /// Index of the largest score of each row (first on ties, as `numpy.argmax`);
    /// `None` for a row with a non-finite score.
    pub fn argmax(&self) -> Vec<Option<usize>> {
        (0..self.n_samples).map(|i| argmax(self.row(i))).collect()
    }

    /// Softmax of each row, computed in f64 with the max subtracted.
    pub fn softmax(&self) -> Scores {
        let mut values = Vec::with_capacity(self.values.len());
        for i in 0..self.n_samples {
            values.extend(softmax(self.row(i)));
        }
        Scores {
            n_samples: self.n_samples,
            n_classes: self.n_classes,
            values,
        }
    }
}

/// Index of the largest value (first on ties); `None` if any value is not finite.
pub fn argmax(row: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_finite() {
            return None;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

/// Softmax of one row.
pub fn softmax(row: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(row.len());
    softmax_into(row, &mut out);
    out
}

/// Softmax of one row appended to `out` (the same values as [`softmax`], without an
/// allocation per row).
pub fn softmax_into(row: &[f64], out: &mut Vec<f64>) {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let from = out.len();
    out.extend(row.iter().map(|v| (v - max).exp()));
    let sum: f64 = out[from..].iter().sum();
    for e in &mut out[from..] {
        *e /= sum;
    }
}

/// The `k` class indices with the highest scores, highest first. Ties rank the higher index
/// first, as scikit-learn's `top_k_accuracy_score` (stable ascending sort, reversed).
pub fn top_k(row: &[f64], k: usize) -> Vec<usize> {
    top_k_ordered(row, k, false)
}

/// Whether class `y` is among [`top_k`]`(row, k)`, without ranking the row: it is when
/// fewer than `k` classes rank above it (a higher score, or an equal one at a higher
/// index). `false` for a `y` outside the row.
pub fn in_top_k(row: &[f64], y: usize, k: usize) -> bool {
    let Some(v) = row.get(y) else {
        return false;
    };
    let above = row
        .iter()
        .enumerate()
        .filter(|&(j, w)| match w.total_cmp(v) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => j > y,
            std::cmp::Ordering::Less => false,
        })
        .count();
    above < k
}

/// The `k` indices with the highest values, highest first; ties rank the lower index first
/// with `lower_first`, else the higher. A partial selection (O(n)) picks them, then only
/// those `k` are sorted.
pub(crate) fn top_k_ordered(row: &[f64], k: usize, lower_first: bool) -> Vec<usize> {
    let mut idx = Vec::with_capacity(row.len());
    top_k_ordered_into(row, k, lower_first, &mut idx);
    idx
}

/// [`top_k_ordered`] into `idx` (cleared first), which keeps its room for the next row.
pub(crate) fn top_k_ordered_into(row: &[f64], k: usize, lower_first: bool, idx: &mut Vec<usize>) {
    let order = |a: &usize, b: &usize| {
        let by_index = if lower_first { a.cmp(b) } else { b.cmp(a) };
        row[*b].total_cmp(&row[*a]).then(by_index)
    };
    idx.clear();
    idx.extend(0..row.len());
    if k < idx.len() {
        if k > 0 {
            idx.select_nth_unstable_by(k - 1, order);
        }
        idx.truncate(k);
    }
    idx.sort_by(order);
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Class index.
    pub class: usize,
    /// Class name (the index as text when the data set names none).
    pub name: String,
    /// TP / (TP + FP), 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class has no sample.
    pub recall: f64,
    /// Harmonic mean of precision and recall, 0 when both are 0.
    pub f1: f64,
    /// Samples whose true label is this class.
    pub support: u64,
}

/// An average of precision, recall and F1 over classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    /// Averaged F1 (the average of per-class F1, as scikit-learn).
    pub f1: f64,
}

/// All classification metrics of one model on one data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub n_samples: u64,
    /// Samples whose prediction was invalid (non-finite scores); counted as wrong.
    pub n_invalid: u64,
    /// Fraction of samples whose top-1 prediction equals the label.
    pub accuracy: f64,
    /// Wilson 95 % interval of the accuracy.
    pub accuracy_ci: [f64; 2],
    /// `k` of the top-k accuracy.
    pub top_k: usize,
    /// Fraction of samples whose label is among the `top_k` highest scores; `None` when the
    /// model outputs labels, not scores.
    pub top_k_accuracy: Option<f64>,
    /// One entry per class.
    pub per_class: Vec<ClassMetrics>,
    /// Unweighted mean over classes.
    pub macro_avg: Averages,
    /// Mean over classes weighted by support.
    pub weighted_avg: Averages,
    /// `confusion_matrix[true][predicted]`; invalid predictions are left out.
    pub confusion_matrix: Vec<Vec<u64>>,
}

impl Metrics {
    /// Computes every metric from true labels and predictions (`None` = invalid).
    ///
    /// `top_k_hits` (same samples: whether the label is among the `top_k_value` highest
    /// scores, see [`crate::rows::RowStats`]) enables top-k accuracy. `class_names` may be
    /// empty.
    pub fn compute(
        labels: &[usize],
        predictions: &[Option<usize>],
        top_k_hits: Option<&[bool]>,
        n_classes: usize,
        top_k_value: usize,
        class_names: &[String],
    ) -> Metrics {
        let n = labels.len();
        let mut confusion = vec![vec![0u64; n_classes]; n_classes];
        let mut support = vec![0u64; n_classes];
        let mut correct = 0u64;
        let mut invalid = 0u64;
        for (&y, p) in labels.iter().zip(predictions) {
            support[y] += 1;
            match p {
                Some(p) if *p < n_classes => {
                    confusion[y][*p] += 1;
                    if *p == y {
                        correct += 1;
                    }
                }
                _ => invalid += 1,
            }
        }
        let predicted_as: Vec<u64> = (0..n_classes)
            .map(|c| confusion.iter().map(|row| row[c]).sum())
            .collect();
        let per_class: Vec<ClassMetrics> = (0..n_classes)
            .map(|c| {
                let tp = confusion[c][c] as f64;
                let precision = ratio(tp, predicted_as[c] as f64);
                let recall = ratio(tp, support[c] as f64);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    class: c,
                    name: class_names.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    precision,
                    recall,
                    f1,
                    support: support[c],
                }
            })
            .collect();
        let top_k_accuracy = top_k_hits.map(|h| {
            let hits = h.iter().take(n).filter(|&&hit| hit).count();
            ratio(hits as f64, n as f64)
        });
        let (lo, hi) = crate::stats::wilson_interval(correct, n as u64, crate::stats::Z_95);
        Metrics {
            n_samples: n as u64,
            n_invalid: invalid,
            accuracy: ratio(correct as f64, n as f64),
            accuracy_ci: [lo, hi],
            top_k: top_k_value,
            top_k_accuracy,
            macro_avg: average(&per_class, |_| 1.0),
            weighted_avg: average(&per_class, |c| c.support as f64),
            per_class,
            confusion_matrix: confusion,
        }
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

fn average(per_class: &[ClassMetrics], weight: impl Fn(&ClassMetrics) -> f64) -> Averages {
    let total: f64 = per_class.iter().map(&weight).sum();
    let avg = |f: &dyn Fn(&ClassMetrics) -> f64| {
        ratio(
            per_class.iter().map(|c| weight(c) * f(c)).sum::<f64>(),
            total,
        )
    };
    Averages {
        precision: avg(&|c| c.precision),
        recall: avg(&|c| c.recall),
        f1: avg(&|c| c.f1),
    }
}

/// Macro-averaged F1 from a confusion matrix given as `tp`, predicted-as and support counts
/// per class. Used by the bootstrap, which rebuilds these counts for each resample.
pub fn macro_f1_from_counts(tp: &[u64], predicted_as: &[u64], support: &[u64]) -> f64 {
    let n = tp.len();
    if n == 0 {
        return 0.0;
    }
    // F1 = 2·P·R / (P + R) = 2·TP / (predicted + support) where TP > 0, else 0: one
    // division per class (this runs for every bootstrap resample).
    let mut sum = 0.0;
    for c in 0..n {
        if tp[c] > 0 {
            sum += 2.0 * tp[c] as f64 / (predicted_as[c] + support[c]) as f64;
        }
    }
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_in_the_top_k_agrees_with_the_ranking() {
        let mut rng = crate::stats::Rng::new(5);
        for _ in 0..2000 {
            let c = 1 + rng.below(12);
            // Few distinct values, so that ties (and -0.0 against 0.0) are common.
            let row: Vec<f64> = (0..c)
                .map(|_| [-1.0, -0.0, 0.0, 0.5, 2.0, f64::NEG_INFINITY][rng.below(6)])
                .collect();
            let k = rng.below(c + 2);
            for y in 0..c + 1 {
                assert_eq!(
                    in_top_k(&row, y, k),
                    top_k(&row, k).contains(&y),
                    "{row:?} y={y} k={k}"
                );
            }
        }
    }

    #[test]
    fn softmax_into_appends_the_softmax() {
        let mut out = vec![7.0];
        softmax_into(&[1.0, 2.0, 3.0], &mut out);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| (v - 3.0).exp()).collect();
        let s: f64 = e.iter().sum();
        assert_eq!(out[0], 7.0);
        for (a, b) in out[1..].iter().zip(&e) {
            assert_eq!(*a, b / s);
        }
    }

    #[test]
    fn small_hand_checked_example() {
        // y_true = [0, 0, 1, 1, 2], y_pred = [0, 1, 1, 1, 0]
        let labels = [0, 0, 1, 1, 2];
        let preds = [Some(0), Some(1), Some(1), Some(1), Some(0)];
        let m = Metrics::compute(&labels, &preds, None, 3, 1, &[]);
        assert_eq!(m.accuracy, 0.6);
        assert_eq!(
            m.confusion_matrix,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 0]]
        );
        assert_eq!(m.per_class[0].precision, 0.5);
        assert_eq!(m.per_class[1].precision, 2.0 / 3.0);
        assert_eq!(m.per_class[2].f1, 0.0);
        assert!((m.macro_avg.f1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-15);
    }

    #[test]
    fn invalid_predictions_count_as_wrong() {
        let m = Metrics::compute(&[0, 1], &[Some(0), None], None, 2, 1, &[]);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.n_invalid, 1);
        assert_eq!(m.per_class[1].recall, 0.0);
    }

    #[test]
    fn top_k_ties_rank_higher_index_first() {
        assert_eq!(top_k(&[0.5, 0.5, 0.1], 1), vec![1]);
        assert_eq!(argmax(&[0.5, 0.5, 0.1]), Some(0));
        assert_eq!(argmax(&[0.5, f64::NAN]), None);
    }
}

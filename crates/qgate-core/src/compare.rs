//! The pair: how the candidate differs from the baseline on the same samples.

use std::collections::HashMap;

use serde::Serialize;

use crate::calibration::Calibration;
use crate::divergence::{kl_summary_of, KlSummary};
use crate::metrics::{argmax, macro_f1_from_counts, Metrics, Scores};
use crate::policy::Observations;
use crate::rows::RowStats;
use crate::stats::{
    bh_adjusted, holm_adjusted, mcnemar_exact, paired_bootstrap, BootstrapSettings,
};

/// What one model predicted on every sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicted {
    /// Top-1 class per sample; `None` where the output was not finite.
    pub predictions: Vec<Option<usize>>,
    /// Per-sample figures of the class probabilities (softmax of logits, or the model's
    /// probabilities); `None` when the model outputs labels only.
    pub rows: Option<RowStats>,
}

impl Predicted {
    /// From whole score and probability matrices: top-1 of the scores, and the per-sample
    /// figures of both against `labels` with top-`k`.
    pub fn from_scores(scores: &Scores, probs: &Scores, labels: &[usize], k: usize) -> Predicted {
        Predicted {
            predictions: (0..scores.n_samples)
                .map(|i| argmax(scores.row(i)))
                .collect(),
            rows: Some(RowStats::from_scores(scores, probs, labels, k)),
        }
    }

    /// The samples at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Predicted {
        Predicted {
            predictions: idx.iter().map(|&i| self.predictions[i]).collect(),
            rows: self.rows.as_ref().map(|r| r.subset(idx)),
        }
    }
}

/// Everything needed to compare two models on one labelled data set.
#[derive(Debug, Clone, Copy)]
pub struct PairInput<'a> {
    /// True class per sample.
    pub labels: &'a [usize],
    /// Sample ids, for the flip lists.
    pub ids: &'a crate::Ids,
    /// Number of classes.
    pub n_classes: usize,
    /// The `k` of top-k agreement.
    pub top_k: usize,
    /// Class names (may be empty).
    pub class_names: &'a [String],
    /// The baseline's predictions.
    pub baseline: &'a Predicted,
    /// The candidate's predictions.
    pub candidate: &'a Predicted,
    /// KL(baseline ‖ candidate) of each sample's class probabilities (`NaN` where either
    /// is not finite); `None` unless both models give probabilities.
    pub kl: Option<&'a [f64]>,
    /// Whether each sample's `top_k` most probable classes are the same set for both
    /// models (both rows finite: [`crate::divergence::same_top_k`]); `None` unless both
    /// models give probabilities.
    pub top_k_same: Option<&'a [bool]>,
    /// Bootstrap settings for the intervals.
    pub bootstrap: BootstrapSettings,
    /// A class whose recall drops by more than this (percentage points) is called out.
    pub class_recall_drop_pp: f64,
    /// A class whose F1 drops by more than this (percentage points) is called out.
    pub class_f1_drop_pp: f64,
    /// Level of the corrected per-class McNemar tests (`slice_alpha`).
    pub alpha: f64,
}

/// Whether a group of samples (a class, a slice) got worse, judged with the other groups
/// of its family: McNemar's exact test on its flips, adjusted by Holm (family-wise error)
/// and by Benjamini–Hochberg (false discovery rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Significance {
    /// Fewer correct answers, significant after Holm's correction.
    SignificantDrop,
    /// Fewer correct answers, significant after Benjamini–Hochberg's correction only.
    FdrDrop,
    /// Fewer correct answers, but not significant after correction: could be noise.
    CouldBeNoise,
    /// No fewer correct answers than the baseline.
    NoDrop,
    /// Too small to be judged (`min_slice_samples`); not in the family.
    NotJudged,
}

impl Significance {
    /// The class of a group that lost `negative` and gained `positive` correct answers,
    /// with its adjusted p-values (`None`: not in the family).
    pub fn of(
        negative: u64,
        positive: u64,
        p_holm: Option<f64>,
        p_bh: Option<f64>,
        alpha: f64,
    ) -> Significance {
        match (p_holm, p_bh) {
            (None, _) | (_, None) => Significance::NotJudged,
            _ if negative <= positive => Significance::NoDrop,
            (Some(h), _) if h < alpha => Significance::SignificantDrop,
            (_, Some(b)) if b < alpha => Significance::FdrDrop,
            _ => Significance::CouldBeNoise,
        }
    }
}

/// One group's test within its family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FamilyTest {
    /// McNemar's exact p-value of the group's flips.
    pub mcnemar_p: f64,
    /// Holm-adjusted over the family (`None`: not in it).
    pub p_holm: Option<f64>,
    /// Benjamini–Hochberg-adjusted over the family.
    pub p_bh: Option<f64>,
    pub significance: Significance,
}

/// McNemar's test on each group's `(negative, positive)` flips, with its Holm and
/// Benjamini–Hochberg adjustments over the groups whose `in_family` is true (the others are
/// not counted and are `not_judged`), classified at `alpha`.
pub fn family_tests(flips: &[(u64, u64)], in_family: &[bool], alpha: f64) -> Vec<FamilyTest> {
    let raw: Vec<f64> = flips.iter().map(|&(n, p)| mcnemar_exact(n, p)).collect();
    let family: Vec<f64> = raw
        .iter()
        .zip(in_family)
        .map(|(&p, &inside)| if inside { p } else { f64::NAN })
        .collect();
    let (holm, bh) = (holm_adjusted(&family), bh_adjusted(&family));
    let finite = |x: f64| (!x.is_nan()).then_some(x);
    flips
        .iter()
        .enumerate()
        .map(|(i, &(neg, pos))| {
            let (p_holm, p_bh) = (finite(holm[i]), finite(bh[i]));
            FamilyTest {
                mcnemar_p: raw[i],
                p_holm,
                p_bh,
                significance: Significance::of(neg, pos, p_holm, p_bh, alpha),
            }
        })
        .collect()
}

/// How one class fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassDelta {
    /// Class index.
    pub class: usize,
    pub name: String,
    /// Samples of this class.
    pub support: u64,
    pub baseline_recall: f64,
    pub candidate_recall: f64,
    /// Candidate − baseline recall (fraction).
    pub recall_delta: f64,
    /// Candidate − baseline precision (fraction).
    pub precision_delta: f64,
    pub baseline_f1: f64,
    pub candidate_f1: f64,
    /// Candidate − baseline F1 (fraction).
    pub f1_delta: f64,
    /// Correct → wrong samples of this class.
    pub negative_flips: u64,
    /// Wrong → correct samples of this class.
    pub positive_flips: u64,
    /// Whether recall or F1 dropped beyond the call-out tolerance.
    pub flagged: bool,
    /// McNemar's exact p-value of the class's flips.
    pub mcnemar_p: f64,
    /// Holm-adjusted over the classes with samples (`None` for a class without any).
    pub p_holm: Option<f64>,
    /// Benjamini–Hochberg-adjusted over the same classes.
    pub p_bh: Option<f64>,
    /// Whether the class got worse, after correction.
    pub significance: Significance,
}

/// One sample whose correctness changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flip {
    /// Position in the evaluated data.
    pub index: usize,
    pub id: String,
    pub label: usize,
    /// Baseline's class (`None` = invalid output).
    pub baseline: Option<usize>,
    pub candidate: Option<usize>,
}

/// Sample ids whose correctness changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flips {
    /// Baseline right, candidate wrong.
    pub negative: Vec<String>,
    /// Baseline wrong, candidate right.
    pub positive: Vec<String>,
}

/// The pair comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Candidate − baseline accuracy (a fraction).
    pub accuracy_delta: f64,
    /// Paired bootstrap interval of `accuracy_delta`.
    pub accuracy_delta_ci: [f64; 2],
    /// Candidate accuracy ÷ baseline accuracy.
    pub relative_accuracy: f64,
    /// Candidate − baseline macro-F1.
    pub macro_f1_delta: f64,
    /// Paired bootstrap interval of `macro_f1_delta`.
    pub macro_f1_delta_ci: [f64; 2],
    /// Bootstrap settings used for both intervals.
    pub bootstrap: BootstrapSettings,
    /// McNemar's exact two-sided p-value on per-sample correctness.
    pub mcnemar_p: f64,
    /// Samples the baseline got right and the candidate wrong.
    pub negative_flips: u64,
    /// Samples the baseline got wrong and the candidate right.
    pub positive_flips: u64,
    /// `negative_flips / n_samples`.
    pub negative_flip_rate: f64,
    /// `positive_flips / n_samples`.
    pub positive_flip_rate: f64,
    /// Samples both got wrong but with different answers.
    pub changed_wrong_answers: u64,
    pub flips: Flips,
    /// Flip details (label, both answers) in data order.
    pub flip_details: Vec<Flip>,
    /// Fraction of samples with the same top-1 class.
    pub top1_agreement: f64,
    /// `k` of `top_k_agreement`.
    pub top_k: usize,
    /// Fraction of samples with the same set of top-k classes; `None` without scores.
    pub top_k_agreement: Option<f64>,
    /// KL(baseline ‖ candidate) of the class probabilities; `None` without scores.
    pub kl: Option<KlSummary>,
    /// Per-class deltas, smallest classes first (where quantization hides damage).
    pub per_class: Vec<ClassDelta>,
}

impl Comparison {
    /// Compares the pair. `base_metrics`/`cand_metrics` are the models' own metrics on the
    /// same samples.
    pub fn compute(input: &PairInput<'_>, base_metrics: &Metrics, cand_metrics: &Metrics) -> Self {
        let n = input.labels.len();
        let tally = FlipTally::count(input);
        let negative = tally.neg_ids.len() as u64;
        let positive = tally.pos_ids.len() as u64;
        let [acc_ci, f1_ci] = bootstrap_deltas(input);
        let per_class = class_deltas(input, base_metrics, cand_metrics, &tally);
        let (kl, top_k_agreement) = score_agreement(input);
        let nf = n.max(1) as f64;
        Comparison {
            accuracy_delta: cand_metrics.accuracy - base_metrics.accuracy,
            accuracy_delta_ci: acc_ci,
            relative_accuracy: if base_metrics.accuracy > 0.0 {
                cand_metrics.accuracy / base_metrics.accuracy
            } else {
                f64::NAN
            },
            macro_f1_delta: cand_metrics.macro_avg.f1 - base_metrics.macro_avg.f1,
            macro_f1_delta_ci: f1_ci,
            bootstrap: input.bootstrap,
            mcnemar_p: mcnemar_exact(negative, positive),
            negative_flips: negative,
            positive_flips: positive,
            negative_flip_rate: negative as f64 / nf,
            positive_flip_rate: positive as f64 / nf,
            changed_wrong_answers: tally.changed_wrong,
            flips: Flips {
                negative: tally.neg_ids,
                positive: tally.pos_ids,
            },
            flip_details: tally.flip_details,
            top1_agreement: tally.same_top1 as f64 / nf,
            top_k: input.top_k,
            top_k_agreement,
            kl,
            per_class,
        }
    }
}

impl Observations {
    /// What the gate looks at in a pair: the models' metrics on the same samples, their
    /// comparison, the samples with non-finite outputs per side and, when both give
    /// probabilities, their calibration.
    pub fn of_pair(
        [base, cand]: [&Metrics; 2],
        cmp: &Comparison,
        non_finite: [u64; 2],
        calibration: Option<[&Calibration; 2]>,
    ) -> Observations {
        Observations {
            baseline_accuracy: base.accuracy,
            candidate_accuracy: cand.accuracy,
            accuracy_delta_ci: cmp.accuracy_delta_ci,
            class_deltas: cmp
                .per_class
                .iter()
                .filter(|c| c.support > 0)
                .map(|c| (c.name.clone(), c.recall_delta, c.f1_delta))
                .collect(),
            negative_flip_rate: cmp.negative_flip_rate,
            kl_mean: cmp.kl.as_ref().map(|k| k.mean),
            top1_agreement: cmp.top1_agreement,
            baseline_non_finite: non_finite[0],
            candidate_non_finite: non_finite[1],
            n_samples: base.n_samples,
            ece_increase: calibration.map(|[b, c]| c.ece - b.ece),
            brier_increase: calibration.map(|[b, c]| c.brier - b.brier),
        }
    }
}

/// Per-sample agreement and correctness changes of the pair, counted in one pass.
struct FlipTally {
    /// Every sample whose correctness changed, in data order.
    flip_details: Vec<Flip>,
    /// Ids of samples the baseline got right and the candidate wrong.
    neg_ids: Vec<String>,
    /// Ids of samples the baseline got wrong and the candidate right.
    pos_ids: Vec<String>,
    /// Samples both got wrong with different answers.
    changed_wrong: u64,
    /// Samples with the same valid top-1 class.
    same_top1: u64,
    /// Right → wrong samples per true class.
    class_neg: Vec<u64>,
    /// Wrong → right samples per true class.
    class_pos: Vec<u64>,
}

impl FlipTally {
    /// Counts over every sample of `input`; a flipped sample's label must be below `n_classes`.
    fn count(input: &PairInput<'_>) -> Self {
        let (bp, cp) = (&input.baseline.predictions, &input.candidate.predictions);
        let mut t = FlipTally {
            flip_details: Vec::new(),
            neg_ids: Vec::new(),
            pos_ids: Vec::new(),
            changed_wrong: 0,
            same_top1: 0,
            class_neg: vec![0u64; input.n_classes],
            class_pos: vec![0u64; input.n_classes],
        };
        for i in 0..input.labels.len() {
            let y = input.labels[i];
            let b_ok = bp[i] == Some(y);
            let c_ok = cp[i] == Some(y);
            if bp[i].is_some() && bp[i] == cp[i] {
                t.same_top1 += 1;
            }
            if b_ok != c_ok {
                let id = input.ids[i].to_string();
                if b_ok {
                    t.neg_ids.push(id.clone());
                    t.class_neg[y] += 1;
                } else {
                    t.pos_ids.push(id.clone());
                    t.class_pos[y] += 1;
                }
                t.flip_details.push(Flip {
                    index: i,
                    id,
                    label: y,
                    baseline: bp[i],
                    candidate: cp[i],
                });
            } else if !b_ok && bp[i] != cp[i] {
                t.changed_wrong += 1;
            }
        }
        t
    }
}

/// Per-class deltas of the models' own metrics with each class's flips, flagged against
/// the call-out tolerances, smallest classes first (ties by class index).
fn class_deltas(
    input: &PairInput<'_>,
    base_metrics: &Metrics,
    cand_metrics: &Metrics,
    tally: &FlipTally,
) -> Vec<ClassDelta> {
    let mut per_class: Vec<ClassDelta> = base_metrics
        .per_class
        .iter()
        .zip(&cand_metrics.per_class)
        .map(|(b, c)| {
            let recall_delta = c.recall - b.recall;
            let f1_delta = c.f1 - b.f1;
            ClassDelta {
                class: b.class,
                name: b.name.clone(),
                support: b.support,
                baseline_recall: b.recall,
                candidate_recall: c.recall,
                recall_delta,
                precision_delta: c.precision - b.precision,
                baseline_f1: b.f1,
                candidate_f1: c.f1,
                f1_delta,
                negative_flips: tally.class_neg[b.class],
                positive_flips: tally.class_pos[b.class],
                flagged: -recall_delta * 100.0 > input.class_recall_drop_pp
                    || -f1_delta * 100.0 > input.class_f1_drop_pp,
                mcnemar_p: f64::NAN,
                p_holm: None,
                p_bh: None,
                significance: Significance::NotJudged,
            }
        })
        .collect();
    let flips: Vec<(u64, u64)> = per_class
        .iter()
        .map(|c| (c.negative_flips, c.positive_flips))
        .collect();
    let in_family: Vec<bool> = per_class.iter().map(|c| c.support > 0).collect();
    for (c, t) in per_class
        .iter_mut()
        .zip(family_tests(&flips, &in_family, input.alpha))
    {
        (c.mcnemar_p, c.p_holm, c.p_bh, c.significance) =
            (t.mcnemar_p, t.p_holm, t.p_bh, t.significance);
    }
    per_class.sort_by(|a, b| a.support.cmp(&b.support).then(a.class.cmp(&b.class)));
    per_class
}

/// `(KL summary, top-k agreement)` of the two models' class probabilities; both `None`
/// unless both models give probabilities.
fn score_agreement(input: &PairInput<'_>) -> (Option<KlSummary>, Option<f64>) {
    match (input.kl, input.top_k_same) {
        (Some(kl), Some(same)) => (Some(kl_summary_of(kl)), Some(fraction_true(same))),
        _ => (None, None),
    }
}

/// Fraction of `true` values; `NaN` when empty.
fn fraction_true(v: &[bool]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().filter(|&&x| x).count() as f64 / v.len() as f64
}

/// Paired bootstrap intervals of the accuracy and macro-F1 deltas. Samples are reduced to
/// their distinct `(label, baseline, candidate)` triples so that each resample costs one
/// draw per sample plus O(triples) to evaluate.
fn bootstrap_deltas(input: &PairInput<'_>) -> [[f64; 2]; 2] {
    let c = input.n_classes;
    let invalid = c; // code of an invalid prediction
                     // Per code: its label, both predictions, and whether each model is right (1 or 0), so a
                     // resample's tallies are branch-free adds (a code's count is often 0 or 1 at random:
                     // a test on it would be mispredicted half the time).
    let mut tallied: Vec<[usize; 5]> = Vec::new();
    let mut index: HashMap<(usize, usize, usize), u32> = HashMap::new();
    let codes: Vec<u32> = (0..input.labels.len())
        .map(|i| {
            let t = (
                input.labels[i],
                input.baseline.predictions[i]
                    .unwrap_or(invalid)
                    .min(invalid),
                input.candidate.predictions[i]
                    .unwrap_or(invalid)
                    .min(invalid),
            );
            *index.entry(t).or_insert_with(|| {
                let (y, b, cc) = t;
                tallied.push([y, b, cc, usize::from(b == y), usize::from(cc == y)]);
                (tallied.len() - 1) as u32
            })
        })
        .collect();
    let stats = |counts: &[u64], scratch: &mut Vec<u64>| -> [f64; 2] {
        scratch.clear();
        scratch.resize(5 * c + 2, 0);
        let (support, rest) = scratch.split_at_mut(c);
        let (tp_b, rest) = rest.split_at_mut(c);
        let (tp_c, rest) = rest.split_at_mut(c);
        let (pred_b, pred_c) = rest.split_at_mut(c + 1);
        let (mut n, mut right_b, mut right_c) = (0u64, 0u64, 0u64);
        for (&[y, b, cc, b_right, c_right], &k) in tallied.iter().zip(counts) {
            n += k;
            support[y] += k;
            pred_b[b] += k;
            pred_c[cc] += k;
            let (kb, kc) = (k * b_right as u64, k * c_right as u64);
            tp_b[y] += kb;
            tp_c[y] += kc;
            right_b += kb;
            right_c += kc;
        }
        let acc_b = right_b as f64 / n as f64;
        let acc_c = right_c as f64 / n as f64;
        let f1_b = macro_f1_from_counts(tp_b, &pred_b[..c], support);
        let f1_c = macro_f1_from_counts(tp_c, &pred_c[..c], support);
        [acc_c - acc_b, f1_c - f1_b]
    };
    let [a, f] = paired_bootstrap(&codes, tallied.len(), input.bootstrap, stats);
    [[a.0, a.1], [f.0, f.1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn predicted(p: &[usize]) -> Predicted {
        Predicted {
            predictions: p.iter().map(|&x| Some(x)).collect(),
            rows: None,
        }
    }

    #[test]
    fn flips_and_mcnemar() {
        let labels = [0, 1, 1, 0, 1, 0];
        let ids: crate::Ids = (0..6).map(|i| format!("s{i}")).collect();
        let base = predicted(&[0, 1, 1, 1, 0, 0]);
        let cand = predicted(&[0, 0, 1, 0, 0, 1]);
        let bm = Metrics::compute(&labels, &base.predictions, None, 2, 1, &[]);
        let cm = Metrics::compute(&labels, &cand.predictions, None, 2, 1, &[]);
        let input = PairInput {
            labels: &labels,
            ids: &ids,
            n_classes: 2,
            top_k: 1,
            class_names: &[],
            baseline: &base,
            candidate: &cand,
            kl: None,
            top_k_same: None,
            bootstrap: BootstrapSettings::default(),
            class_recall_drop_pp: 5.0,
            class_f1_drop_pp: 5.0,
            alpha: 0.05,
        };
        let cmp = Comparison::compute(&input, &bm, &cm);
        assert_eq!(cmp.flips.negative, vec!["s1", "s5"]);
        assert_eq!(cmp.flips.positive, vec!["s3"]);
        assert_eq!(cmp.mcnemar_p, mcnemar_exact(2, 1));
        assert!((cmp.accuracy_delta - (3.0 / 6.0 - 4.0 / 6.0)).abs() < 1e-15);
        assert!(cmp.accuracy_delta_ci[0] <= cmp.accuracy_delta);
        assert!(cmp.accuracy_delta <= cmp.accuracy_delta_ci[1]);
    }
}

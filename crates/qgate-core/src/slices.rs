//! Slices: the pair compared on each group of samples that shares a tag value
//! (`lighting=dark`), with the same metrics and intervals as the whole set; McNemar's test
//! per slice corrected over every judged slice (Holm and Benjamini–Hochberg); and the
//! per-slice gate of `[slices."tag=value"]` tables and `max_slice_accuracy_drop_pp`.

use serde::Serialize;

use crate::calibration::{calibration_pair_of, DEFAULT_BINS};
use crate::compare::{family_tests, Comparison, PairInput, Predicted, Significance};
use crate::metrics::Metrics;
use crate::policy::{
    skipped, CriterionResult, Gate, Observations, Policy, Reason, Skip, SliceGate, Status,
    Threshold, ACCURACY_KEYS, PERFORMANCE_KEYS,
};

/// The pair on one slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceResult {
    /// `tag=value`.
    pub slice: String,
    pub tag: String,
    pub value: String,
    /// Samples in the slice.
    pub samples: u64,
    /// Whether it has `min_slice_samples` samples (and so is tested and judged).
    pub judged: bool,
    /// The baseline's metrics on the slice's samples.
    pub baseline: Metrics,
    /// The candidate's metrics on the slice's samples.
    pub candidate: Metrics,
    /// Candidate − baseline accuracy and its paired bootstrap interval.
    pub accuracy_delta: f64,
    pub accuracy_delta_ci: [f64; 2],
    /// Candidate − baseline macro-F1 and its paired bootstrap interval.
    pub macro_f1_delta: f64,
    pub macro_f1_delta_ci: [f64; 2],
    /// Correct → wrong and wrong → correct samples.
    pub negative_flips: u64,
    pub positive_flips: u64,
    pub top1_agreement: f64,
    pub top_k_agreement: Option<f64>,
    /// Mean KL(baseline ‖ candidate), when both give probabilities.
    pub kl_mean: Option<f64>,
    /// Candidate − baseline ECE (equal-width bins) on the slice, when both give
    /// probabilities.
    pub ece_increase: Option<f64>,
    /// Candidate − baseline Brier score on the slice, when both give probabilities.
    pub brier_increase: Option<f64>,
    /// McNemar's exact p-value of the slice's flips.
    pub mcnemar_p: f64,
    /// Holm-adjusted over every judged slice (`None`: not judged).
    pub p_holm: Option<f64>,
    /// Benjamini–Hochberg-adjusted over every judged slice.
    pub p_bh: Option<f64>,
    pub significance: Significance,
    /// What the slice's gate looks at.
    #[serde(skip)]
    pub observations: Observations,
}

/// One tag: its name and each sample's value.
pub type TagValues<'a> = (&'a str, &'a [Option<String>]);

/// The pair on every slice of `tags`, worst first: judged slices before the others, then by
/// accuracy change (largest drop first), then by name.
pub fn compare_slices(
    input: &PairInput<'_>,
    tags: &[TagValues<'_>],
    min_samples: u64,
) -> Vec<SliceResult> {
    let mut out = Vec::new();
    for (tag, values) in tags {
        let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                groups.entry(v.as_str()).or_default().push(i);
            }
        }
        for (value, idx) in groups {
            out.push(one_slice(input, tag, value, &idx, min_samples));
        }
    }
    test_family(&mut out, input.alpha);
    out.sort_by(|a, b| {
        b.judged
            .cmp(&a.judged)
            .then(a.accuracy_delta.total_cmp(&b.accuracy_delta))
            .then(a.slice.cmp(&b.slice))
    });
    out
}

/// McNemar on each slice's flips, Holm- and BH-adjusted over the judged ones of `slices`
/// (one family), classified at `alpha`.
pub fn test_family(slices: &mut [SliceResult], alpha: f64) {
    let flips: Vec<(u64, u64)> = slices
        .iter()
        .map(|s| (s.negative_flips, s.positive_flips))
        .collect();
    let judged: Vec<bool> = slices.iter().map(|s| s.judged).collect();
    for (s, t) in slices.iter_mut().zip(family_tests(&flips, &judged, alpha)) {
        (s.p_holm, s.p_bh, s.significance) = (t.p_holm, t.p_bh, t.significance);
    }
}

/// The pair on the samples `idx` of `input`, named `tag=value` (not yet tested with its
/// family: see [`test_family`]).
pub fn one_slice(
    input: &PairInput<'_>,
    tag: &str,
    value: &str,
    idx: &[usize],
    min_samples: u64,
) -> SliceResult {
    let labels: Vec<usize> = idx.iter().map(|&i| input.labels[i]).collect();
    let ids = input.ids.select(idx);
    let base = input.baseline.subset(idx);
    let cand = input.candidate.subset(idx);
    let kl: Option<Vec<f64>> = input.kl.map(|kl| idx.iter().map(|&i| kl[i]).collect());
    let top_k_same: Option<Vec<bool>> = input
        .top_k_same
        .map(|same| idx.iter().map(|&i| same[i]).collect());
    let metrics = |p: &Predicted| {
        Metrics::compute(
            &labels,
            &p.predictions,
            p.rows.as_ref().map(|r| r.top_k_hit.as_slice()),
            input.n_classes,
            input.top_k,
            input.class_names,
        )
    };
    let (bm, cm) = (metrics(&base), metrics(&cand));
    let sub = PairInput {
        labels: &labels,
        ids: &ids,
        baseline: &base,
        candidate: &cand,
        kl: kl.as_deref(),
        top_k_same: top_k_same.as_deref(),
        ..*input
    };
    let cmp = Comparison::compute(&sub, &bm, &cm);
    let bad = |p: &Predicted| p.predictions.iter().filter(|x| x.is_none()).count() as u64;
    let calibrated = match (&base.rows, &cand.rows) {
        (Some(b), Some(c)) => Some(calibration_pair_of(b, c, DEFAULT_BINS)),
        _ => None,
    };
    let observations = Observations::of_pair(
        [&bm, &cm],
        &cmp,
        [bad(&base), bad(&cand)],
        calibrated.as_ref().map(|[b, c]| [b, c]),
    );
    SliceResult {
        slice: format!("{tag}={value}"),
        tag: tag.to_string(),
        value: value.to_string(),
        samples: idx.len() as u64,
        judged: idx.len() as u64 >= min_samples,
        accuracy_delta: cmp.accuracy_delta,
        accuracy_delta_ci: cmp.accuracy_delta_ci,
        macro_f1_delta: cmp.macro_f1_delta,
        macro_f1_delta_ci: cmp.macro_f1_delta_ci,
        negative_flips: cmp.negative_flips,
        positive_flips: cmp.positive_flips,
        top1_agreement: cmp.top1_agreement,
        top_k_agreement: cmp.top_k_agreement,
        kl_mean: cmp.kl.as_ref().map(|k| k.mean),
        ece_increase: observations.ece_increase,
        brier_increase: observations.brier_increase,
        mcnemar_p: cmp.mcnemar_p,
        p_holm: None,
        p_bh: None,
        significance: Significance::NotJudged,
        baseline: bm,
        candidate: cm,
        observations,
    }
}

/// The slice criteria of `policy`: each `[slices."tag=value"]` table's keys, and
/// `max_slice_accuracy_drop_pp` on every slice whose table does not set
/// `max_accuracy_drop_pp`. A slice under `min_slice_samples` (or one that `--limit` left
/// empty) is listed as skipped, and so are performance keys (not measured per slice). With
/// `slice_gate = "significant"` a criterion that misses its threshold fails only when the
/// slice's drop is significant after Holm's correction. `file_slices` are the slices of the
/// whole data file; a table naming a slice not among them is an error that lists them.
/// `max_slice_accuracy_drop_pp` on data without slices is listed as skipped.
pub fn judge_slices(
    policy: &Policy,
    slices: &[SliceResult],
    file_slices: &[String],
) -> Result<Vec<CriterionResult>, String> {
    let known = |name: &str| {
        slices.iter().any(|s| s.slice == name) || file_slices.iter().any(|f| f == name)
    };
    if let Some(table) = policy.slices.iter().find(|t| !known(&t.slice)) {
        return Err(format!(
            "policy {}: table [slices.\"{}\"] names a slice the data does not have; {}",
            table.source,
            table.slice,
            if table.slice.starts_with("corruption=") {
                "corruption slices exist with --corruptions NAME --severities S (docs/corruptions.md)".to_string()
            } else if file_slices.is_empty() && slices.is_empty() {
                "the data has no slices (give --slices FILE or slice_<tag> arrays)".to_string()
            } else {
                let mut all: Vec<&str> = file_slices.iter().map(String::as_str).collect();
                all.extend(slices.iter().map(|s| s.slice.as_str()));
                all.sort_unstable();
                all.dedup();
                format!("its slices are: {}", all.join(", "))
            }
        ));
    }
    let default_drop = policy
        .thresholds
        .iter()
        .find(|t| t.key == "max_slice_accuracy_drop_pp");
    let min = policy.value("min_slice_samples").unwrap_or(30.0).ceil() as u64;
    if slices.is_empty() {
        // A default that judged nothing would read as a pass.
        return Ok(default_drop
            .and_then(|t| {
                let spec = ACCURACY_KEYS.iter().find(|k| k.key == t.key)?;
                Some(vec![skipped(spec, t, Skip::NoSlices)])
            })
            .unwrap_or_default());
    }
    let mut names: Vec<&str> = slices.iter().map(|s| s.slice.as_str()).collect();
    names.extend(policy.slices.iter().map(|t| t.slice.as_str()));
    names.sort_unstable();
    names.dedup();
    let mut criteria = Vec::new();
    for name in names {
        let mut thresholds: Vec<Threshold> = policy
            .slices
            .iter()
            .find(|t| t.slice == name)
            .map(|t| t.thresholds.clone())
            .unwrap_or_default();
        if let Some(d) = default_drop {
            if !thresholds.iter().any(|t| t.key == "max_accuracy_drop_pp") {
                thresholds.insert(
                    0,
                    Threshold {
                        key: "max_accuracy_drop_pp",
                        value: d.value,
                        source: d.source.clone(),
                    },
                );
            }
        }
        let slice = slices.iter().find(|s| s.slice == name);
        for mut c in one_slice_criteria(policy, slice, thresholds, min) {
            c.slice = Some(name.to_string());
            criteria.push(c);
        }
    }
    Ok(criteria)
}

/// The criteria of one slice (`None`: the selection left it no sample).
fn one_slice_criteria(
    policy: &Policy,
    slice: Option<&SliceResult>,
    thresholds: Vec<Threshold>,
    min: u64,
) -> Vec<CriterionResult> {
    let alpha = policy.value("slice_alpha").unwrap_or(0.05);
    let (accuracy, performance): (Vec<Threshold>, Vec<Threshold>) = thresholds
        .into_iter()
        .partition(|t| ACCURACY_KEYS.iter().any(|k| k.key == t.key));
    let mut out: Vec<CriterionResult> = match slice.filter(|s| s.judged) {
        None => accuracy
            .iter()
            .filter_map(|t| {
                let spec = ACCURACY_KEYS.iter().find(|k| k.key == t.key)?;
                let samples = slice.map_or(0, |s| s.samples);
                Some(skipped(spec, t, Skip::TooFewSamples { samples, min }))
            })
            .collect(),
        Some(s) => {
            let sub = Policy {
                thresholds: accuracy,
                slices: Vec::new(),
                slice_gate: policy.slice_gate,
            };
            let mut g = Gate::evaluate(&sub, &s.observations).criteria;
            // finite_outputs is judged on the whole set.
            g.retain(|c| c.key != "finite_outputs");
            if policy.slice_gate == SliceGate::Significant {
                for c in g.iter_mut().filter(|c| c.status == Status::Fail) {
                    if s.significance != Significance::SignificantDrop {
                        c.status = Status::Pass;
                        c.reason = Reason::NotSignificant {
                            p_holm: s.p_holm.unwrap_or(1.0),
                            alpha,
                            no_drop: s.significance == Significance::NoDrop,
                        };
                    }
                }
            }
            g
        }
    };
    out.extend(performance.iter().filter_map(|t| {
        let spec = PERFORMANCE_KEYS.iter().find(|k| k.key == t.key)?;
        Some(skipped(spec, t, Skip::NotPerSlice))
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::BootstrapSettings;

    #[test]
    fn a_slice_table_with_an_unknown_slice_is_an_error() {
        let file = crate::policy::PolicyFile::parse(
            "[slices.\"lighting=drak\"]\nmax_accuracy_drop_pp = 2\n",
            "p.toml",
        )
        .unwrap();
        let policy = Policy::resolve(&file, &crate::policy::Source::File("p.toml".into()));
        let labels = vec![0usize; 4];
        let ids = crate::Ids::indices(4);
        let p = Predicted {
            predictions: vec![Some(0); 4],
            rows: None,
        };
        let input = PairInput {
            labels: &labels,
            ids: &ids,
            n_classes: 2,
            top_k: 1,
            class_names: &[],
            baseline: &p,
            candidate: &p,
            kl: None,
            top_k_same: None,
            bootstrap: BootstrapSettings::default(),
            class_recall_drop_pp: 5.0,
            class_f1_drop_pp: 5.0,
            alpha: 0.05,
        };
        let values = vec![Some("dark".to_string()); 4];
        let slices = compare_slices(&input, &[("lighting", &values)], 1);
        let e = judge_slices(&policy, &slices, &[]).unwrap_err();
        assert!(
            e.contains("lighting=drak") && e.contains("lighting=dark"),
            "{e}"
        );
    }
}

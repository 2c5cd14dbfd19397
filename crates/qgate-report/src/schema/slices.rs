//! The `slices` and `calibration` sections of an accuracy report.

use schemars::JsonSchema;
use serde::Serialize;

use super::convert::Conv;
use super::{Averages, ClassMetrics, Significance};

/// Calibration of both models and its change (present when both give class probabilities).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CalibrationReport {
    /// Bins of the ECE and the reliability diagrams.
    pub bins: usize,
    pub baseline: SideCalibration,
    pub candidate: SideCalibration,
    /// Candidate − baseline ECE (equal-width bins): `max_ece_increase` judges it.
    pub ece_increase: f64,
    /// Candidate − baseline ECE over equal-mass bins.
    pub ece_equal_mass_increase: f64,
    /// Candidate − baseline Brier score: `max_brier_increase` judges it.
    pub brier_increase: f64,
}

/// One model's calibration.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SideCalibration {
    /// Samples counted (finite probabilities).
    pub samples: u64,
    /// Samples left out for a NaN or infinite probability.
    pub excluded: u64,
    /// Expected calibration error over equal-width bins.
    pub ece: f64,
    /// Expected calibration error over equal-mass bins.
    pub ece_equal_mass: f64,
    /// Largest |accuracy − confidence| of a non-empty equal-width bin.
    pub mce: f64,
    /// Mean multi-class Brier score (0 best, 2 worst).
    pub brier: f64,
    /// Mean top-1 confidence.
    pub mean_confidence: f64,
    /// Equal-width reliability diagram.
    pub reliability: Vec<ReliabilityBin>,
    /// Equal-mass reliability diagram.
    pub reliability_equal_mass: Vec<ReliabilityBin>,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ReliabilityBin {
    /// Confidence range: `(lower, upper]` for equal-width bins, the smallest and largest
    /// confidence inside for equal-mass bins (null when empty).
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub count: u64,
    /// Mean confidence (null when empty).
    pub confidence: Option<f64>,
    /// Share correct (null when empty).
    pub accuracy: Option<f64>,
}

/// The pair on every slice of the data.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceReport {
    /// Where the tags came from (a manifest, the archive's `slice_*` arrays).
    pub source: String,
    /// Each tag, its number of values and its untagged samples.
    pub tags: Vec<SliceTagInfo>,
    /// Manifest rows whose id is not a sample of the data file.
    pub unknown_ids: u64,
    /// The first few of them.
    pub unknown_id_examples: Vec<String>,
    /// Samples of the data file the manifest does not list.
    pub unlisted_samples: u64,
    /// `min_slice_samples`: smaller slices are shown, neither tested nor judged.
    pub min_samples: u64,
    /// `slice_alpha`: level of the corrected tests.
    pub alpha: f64,
    /// Slices in the corrected family (those with `min_samples` or more).
    pub judged: usize,
    /// Every slice, worst first (judged slices first, then by accuracy change).
    pub slices: Vec<SliceEntry>,
}

/// One tag.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceTagInfo {
    pub tag: String,
    /// Distinct values (slices).
    pub values: usize,
    /// Samples with no value of this tag.
    pub untagged: u64,
}

/// The pair on one slice.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceEntry {
    /// `tag=value`.
    pub slice: String,
    pub tag: String,
    pub value: String,
    pub samples: u64,
    /// Whether it has `min_samples` samples (tested and judged).
    pub judged: bool,
    pub baseline: SliceSide,
    pub candidate: SliceSide,
    /// Candidate − baseline accuracy.
    pub accuracy_delta: f64,
    /// Paired bootstrap 95 % interval of `accuracy_delta`.
    pub accuracy_delta_ci: [f64; 2],
    /// Candidate − baseline macro-F1.
    pub macro_f1_delta: f64,
    /// Paired bootstrap 95 % interval of `macro_f1_delta`.
    pub macro_f1_delta_ci: [f64; 2],
    pub negative_flips: u64,
    pub positive_flips: u64,
    pub top1_agreement: f64,
    pub top_k_agreement: Option<f64>,
    pub kl_mean: Option<f64>,
    /// Candidate − baseline ECE (equal-width bins) on the slice.
    pub ece_increase: Option<f64>,
    /// Candidate − baseline Brier score on the slice.
    pub brier_increase: Option<f64>,
    /// McNemar's exact p-value of the slice's flips.
    pub mcnemar_p: f64,
    /// Holm-adjusted over the judged slices.
    pub p_holm: Option<f64>,
    /// Benjamini–Hochberg-adjusted over the judged slices.
    pub p_bh: Option<f64>,
    pub significance: Significance,
}

/// One model's metrics on a slice.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SliceSide {
    /// Samples whose output was not finite (counted wrong).
    pub n_invalid: u64,
    pub accuracy: f64,
    /// Wilson 95 % interval of `accuracy`.
    pub accuracy_ci: [f64; 2],
    pub top_k: usize,
    pub top_k_accuracy: Option<f64>,
    pub macro_avg: Averages,
    pub weighted_avg: Averages,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion_matrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn bins(v: &[qgate_core::calibration::ReliabilityBin]) -> Vec<ReliabilityBin> {
    v.iter()
        .map(|b| ReliabilityBin {
            lower: finite(b.lower),
            upper: finite(b.upper),
            count: b.count,
            confidence: finite(b.confidence),
            accuracy: finite(b.accuracy),
        })
        .collect()
}

fn side_calibration(c: &qgate_core::calibration::Calibration) -> SideCalibration {
    SideCalibration {
        samples: c.samples,
        excluded: c.excluded,
        ece: c.ece,
        ece_equal_mass: c.ece_equal_mass,
        mce: c.mce,
        brier: c.brier,
        mean_confidence: c.mean_confidence,
        reliability: bins(&c.reliability),
        reliability_equal_mass: bins(&c.reliability_equal_mass),
    }
}

/// The calibration section of a pair.
pub(crate) fn calibration_report(c: &qgate_eval::PairCalibration) -> CalibrationReport {
    CalibrationReport {
        bins: c.baseline.bins,
        ece_increase: c.candidate.ece - c.baseline.ece,
        ece_equal_mass_increase: c.candidate.ece_equal_mass - c.baseline.ece_equal_mass,
        brier_increase: c.candidate.brier - c.baseline.brier,
        baseline: side_calibration(&c.baseline),
        candidate: side_calibration(&c.candidate),
    }
}

fn slice_side(m: &qgate_core::metrics::Metrics) -> SliceSide {
    SliceSide {
        n_invalid: m.n_invalid,
        accuracy: m.accuracy,
        accuracy_ci: m.accuracy_ci,
        top_k: m.top_k,
        top_k_accuracy: m.top_k_accuracy,
        macro_avg: m.macro_avg.conv(),
        weighted_avg: m.weighted_avg.conv(),
        per_class: m.per_class.conv(),
        confusion_matrix: m.confusion_matrix.clone(),
    }
}

/// The slices section.
pub(crate) fn slice_report(s: &qgate_eval::SliceEvaluation) -> SliceReport {
    SliceReport {
        source: s.tags.source.clone(),
        tags: s
            .tags
            .tags
            .iter()
            .map(|t| SliceTagInfo {
                tag: t.tag.clone(),
                values: s.slices.iter().filter(|x| x.tag == t.tag).count(),
                untagged: t.untagged(),
            })
            .collect(),
        unknown_ids: s.tags.unknown_ids,
        unknown_id_examples: s.tags.unknown_id_examples.clone(),
        unlisted_samples: s.tags.unlisted_samples(),
        min_samples: s.min_samples,
        alpha: s.alpha,
        judged: s.slices.iter().filter(|x| x.judged).count(),
        slices: s
            .slices
            .iter()
            .map(|x| SliceEntry {
                slice: x.slice.clone(),
                tag: x.tag.clone(),
                value: x.value.clone(),
                samples: x.samples,
                judged: x.judged,
                baseline: slice_side(&x.baseline),
                candidate: slice_side(&x.candidate),
                accuracy_delta: x.accuracy_delta,
                accuracy_delta_ci: x.accuracy_delta_ci,
                macro_f1_delta: x.macro_f1_delta,
                macro_f1_delta_ci: x.macro_f1_delta_ci,
                negative_flips: x.negative_flips,
                positive_flips: x.positive_flips,
                top1_agreement: x.top1_agreement,
                top_k_agreement: x.top_k_agreement,
                kl_mean: x.kl_mean,
                ece_increase: x.ece_increase,
                brier_increase: x.brier_increase,
                mcnemar_p: x.mcnemar_p,
                p_holm: x.p_holm,
                p_bh: x.p_bh,
                significance: x.significance.conv(),
            })
            .collect(),
    }
}

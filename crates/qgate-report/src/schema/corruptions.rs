//! The `corruptions` section: both models on corrupted copies of the images.

use schemars::JsonSchema;
use serde::Serialize;

use super::convert::Conv;
use super::Significance;
use super::Thumbnail;

/// Both models on every corruption × severity (`--corruptions`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CorruptionReport {
    /// The array corrupted.
    pub array: String,
    pub corruptions: Vec<String>,
    pub severities: Vec<u8>,
    /// Seed of the random corruptions.
    pub seed: u64,
    /// How the array's values are pixels: `value = (pixel · range − mean) / std`.
    pub pixels: PixelSpaceInfo,
    /// Clean accuracy, baseline then candidate.
    pub clean_accuracy: [f64; 2],
    /// Corruption-major, severities ascending.
    pub cells: Vec<CorruptionCell>,
    /// Per corruption: ImageNet-C's corruption error of the candidate relative to the
    /// baseline.
    pub summary: Vec<CorruptionSummaryEntry>,
    /// Mean of `summary[].ce` (`null` when any corruption has none).
    pub mce: Option<f64>,
    /// Mean of `summary[].relative_ce` (`null` when any corruption has none: a baseline that
    /// does not degrade under it).
    pub relative_mce: Option<f64>,
    /// Corrupted samples that went correct → wrong (HTML only).
    #[serde(skip)]
    pub thumbnails: Vec<Thumbnail>,
}

/// The pixel space of the corrupted array.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PixelSpaceInfo {
    /// `nchw` or `nhwc`.
    pub layout: String,
    pub range: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// One corruption at one severity.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CorruptionCell {
    pub corruption: String,
    pub severity: u8,
    /// Its slice name, `corruption=dark:5` (gates: `[slices."corruption=dark:5"]`).
    pub slice: String,
    pub baseline_accuracy: f64,
    /// Wilson 95 % interval.
    pub baseline_accuracy_ci: [f64; 2],
    pub candidate_accuracy: f64,
    pub candidate_accuracy_ci: [f64; 2],
    /// Candidate − baseline accuracy on the corrupted copy.
    pub accuracy_delta: f64,
    /// Paired bootstrap 95 % interval of `accuracy_delta`.
    pub accuracy_delta_ci: [f64; 2],
    /// The candidate's accuracy drop from clean minus the baseline's (positive: it degrades
    /// faster).
    pub extra_drop: f64,
    pub negative_flips: u64,
    pub positive_flips: u64,
    pub mcnemar_p: f64,
    /// Holm-adjusted over the corruption cells.
    pub p_holm: Option<f64>,
    /// Benjamini–Hochberg-adjusted over the corruption cells.
    pub p_bh: Option<f64>,
    pub significance: Significance,
}

/// One corruption over its severities.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CorruptionSummaryEntry {
    pub corruption: String,
    /// Σ candidate error ÷ Σ baseline error.
    pub ce: Option<f64>,
    /// Σ (candidate error − its clean error) ÷ Σ (baseline error − its clean error)
    /// (`null` when the baseline does not degrade).
    pub relative_ce: Option<f64>,
    /// Whether the baseline's error grew under this corruption.
    pub baseline_degrades: bool,
    /// Whether the candidate's error grew under this corruption.
    pub candidate_degrades: bool,
}

/// The corruptions section of an evaluation.
pub(crate) fn corruption_report(c: &qgate_eval::CorruptionEvaluation) -> CorruptionReport {
    let p = &c.plan;
    CorruptionReport {
        array: c.array.clone(),
        corruptions: p.corruptions.iter().map(|x| x.name().to_string()).collect(),
        severities: p.severities.clone(),
        seed: p.seed,
        pixels: PixelSpaceInfo {
            layout: match p.pixels.layout {
                qgate_eval::PixelLayout::Nchw => "nchw".into(),
                qgate_eval::PixelLayout::Nhwc => "nhwc".into(),
            },
            range: p.pixels.range,
            mean: p.pixels.mean.clone(),
            std: p.pixels.std.clone(),
        },
        clean_accuracy: c.clean_accuracy,
        cells: c
            .entries
            .iter()
            .map(|e| {
                let s = &e.slice;
                CorruptionCell {
                    corruption: e.corruption.name().to_string(),
                    severity: e.severity,
                    slice: s.slice.clone(),
                    baseline_accuracy: s.baseline.accuracy,
                    baseline_accuracy_ci: s.baseline.accuracy_ci,
                    candidate_accuracy: s.candidate.accuracy,
                    candidate_accuracy_ci: s.candidate.accuracy_ci,
                    accuracy_delta: s.accuracy_delta,
                    accuracy_delta_ci: s.accuracy_delta_ci,
                    extra_drop: e.extra_drop,
                    negative_flips: s.negative_flips,
                    positive_flips: s.positive_flips,
                    mcnemar_p: s.mcnemar_p,
                    p_holm: s.p_holm,
                    p_bh: s.p_bh,
                    significance: s.significance.conv(),
                }
            })
            .collect(),
        summary: c
            .summary
            .iter()
            .map(|s| CorruptionSummaryEntry {
                corruption: s.corruption.name().to_string(),
                ce: s.ce,
                relative_ce: s.relative_ce,
                baseline_degrades: s.baseline_degrades,
                candidate_degrades: s.candidate_degrades,
            })
            .collect(),
        mce: c.mce,
        relative_mce: c.relative_mce,
        thumbnails: c.thumbnails.conv(),
    }
}

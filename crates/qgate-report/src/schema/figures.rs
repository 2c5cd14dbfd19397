//! Report types copied from the crate that computes them; src/schema/convert.rs fills them.

#![allow(clippy::wildcard_imports)]

use schemars::JsonSchema;
use serde::Serialize;

/// An average of precision, recall and F1 over classes.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Averages {
    pub precision: f64,
    pub recall: f64,
    /// Averaged F1 (the average of per-class F1, as scikit-learn).
    pub f1: f64,
}

/// Settings of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct BootstrapSettings {
    /// Number of resamples.
    pub resamples: usize,
    /// Confidence level, e.g. 0.95.
    pub confidence: f64,
    /// Seed of the generator: the same seed gives the same interval.
    pub seed: u64,
}

/// How one class fared.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
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
    /// Holm-adjusted over the classes with samples.
    pub p_holm: Option<f64>,
    /// Benjamini–Hochberg-adjusted over the same classes.
    pub p_bh: Option<f64>,
    /// Whether the class got worse, after correction.
    pub significance: Significance,
}

/// Whether a group of samples (a class, a slice) got worse, judged with the others of its
/// family (McNemar's exact test, Holm and Benjamini–Hochberg corrections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Significance {
    /// Fewer correct answers, significant after Holm's correction.
    SignificantDrop,
    /// Fewer correct answers, significant after Benjamini–Hochberg's correction only.
    FdrDrop,
    /// Fewer correct answers, not significant after correction: could be noise.
    CouldBeNoise,
    /// No fewer correct answers than the baseline.
    NoDrop,
    /// Too small to be judged; not in the family.
    NotJudged,
}

impl Significance {
    /// Whether the group got worse beyond noise (after Holm or after BH).
    pub fn is_drop(self) -> bool {
        matches!(self, Significance::SignificantDrop | Significance::FdrDrop)
    }
}

/// Precision, recall, F1 and support of one class.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
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

/// One judged criterion.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct CriterionResult {
    /// The policy key (or `finite_outputs`, which is always judged).
    pub key: String,
    /// What it judges.
    pub description: String,
    /// `at_most` / `at_least`.
    pub direction: Direction,
    pub threshold: f64,
    /// Where the threshold came from.
    pub source: Source,
    /// The observed value, when measurable.
    pub observed: Option<f64>,
    /// The observed value's 95 % interval, where one exists.
    pub interval: Option<[f64; 2]>,
    pub status: Status,
    /// One sentence a reviewer can act on.
    pub message: String,
    /// The slice (`tag=value`) it judges; absent for the whole data set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
}

/// Whether a criterion asks for "at most" or "at least".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// observed ≤ threshold passes.
    AtMost,
    /// observed ≥ threshold passes.
    AtLeast,
}

impl Direction {
    /// `≤` or `≥`.
    pub fn symbol(self) -> &'static str {
        match self {
            Direction::AtMost => "≤",
            Direction::AtLeast => "≥",
        }
    }
}

/// The element type of an [`Array`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    /// IEEE half precision (stored widened to `f32` in memory).
    F16,
    F32,
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    Bool,
    /// Text (sample ids, class names).
    Str,
}

/// One sample whose correctness changed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Flips {
    /// Baseline right, candidate wrong.
    pub negative: Vec<String>,
    /// Baseline wrong, candidate right.
    pub positive: Vec<String>,
}

/// A histogram with equal-width bins.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Histogram {
    /// Bin edges, `counts.len() + 1` of them.
    pub edges: Vec<f64>,
    /// Samples per bin; the last bin includes its upper edge.
    pub counts: Vec<u64>,
}

/// Summary of per-sample KL(baseline ‖ candidate) over samples.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
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

/// Summary of repeated latency measurements, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LatencySummary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 95 % percentile-bootstrap interval of the mean.
    pub mean_ci: [f64; 2],
    /// 95 % percentile-bootstrap interval of the median.
    pub median_ci: [f64; 2],
    /// Measurements whose modified z-score exceeds 3.5 (Iglewicz & Hoaglin 1993), as
    /// hyperfine flags them: a sign of interference (other processes, frequency changes).
    pub outliers: usize,
}

/// Where a threshold came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum Source {
    /// qgate's built-in default.
    Default,
    /// A policy file (or the `[policy]` table of a run config) at this path.
    File(String),
}

/// Outcome of one criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Could not be judged (e.g. KL of a model that outputs labels); does not fail the gate.
    Skipped,
}

/// A threshold in force.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Threshold {
    pub key: &'static str,
    pub value: f64,
    /// Where it came from.
    pub source: Source,
}

/// How close two numbers must be to count as equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tolerance {
    Exact,
    /// Rounding noise of f64 arithmetic: |a−b| ≤ 1e-9 + 1e-9·|b|. Used where a threshold is
    /// met exactly up to the last bits (a 1.0 pp drop against a 1.0 pp limit).
    Rounding,
    /// Two float32 computations of the same graph in different orders: 1e-5 abs + 1e-4 rel.
    Float32Reordering,
    /// The same graph computed in float16 by two runtimes whose accumulation order and
    /// precision differ (f16 epsilon ≈ 1e-3, sums over hundreds of terms): 5e-2 abs +
    /// 5e-3 rel.
    Float16Compute,
}

/// The verdict of a run (exit code 0, 1, 1, 3). `invalid` and `inconclusive` come only
/// from `qgate analyze`, which judges live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every criterion met.
    Pass,
    /// At least one criterion failed.
    Fail,
    /// The data cannot be judged (sample-ratio mismatch, no data, every request errored, a
    /// side without data).
    Invalid,
    /// Not enough evidence yet either way: a pipeline may retry later.
    Inconclusive,
}

impl Verdict {
    /// The process exit code: 0 pass, 1 fail or invalid, 3 inconclusive (2 is an error).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail | Verdict::Invalid => 1,
            Verdict::Inconclusive => 3,
        }
    }

    /// The verdict with its mark, for Markdown headings: `✅ PASS`.
    pub fn badge(self) -> &'static str {
        match self {
            Verdict::Pass => "✅ PASS",
            Verdict::Fail => "❌ FAIL",
            Verdict::Invalid => "⛔ INVALID",
            Verdict::Inconclusive => "⏳ INCONCLUSIVE",
        }
    }

    /// The verdict as written in reports: `pass`, `fail`, `invalid`, `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Invalid => "invalid",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => f.write_str(p),
        }
    }
}

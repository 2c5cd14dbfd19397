//! The typed result of an analysis: every figure `qgate analyze` reports, as the `online`
//! section of report.json (docs/report-schema.md). Each interval says what it is:
//! `sequential` (an always-valid mSPRT confidence sequence, valid at every look) or
//! `fixed_horizon` (valid once, at this sample size).

use std::collections::BTreeMap;

use qgate_core::online::Msprt;
use schemars::JsonSchema;
use serde::Serialize;

use crate::window::Window;

/// An always-valid mSPRT result (Johari, Pekelis & Walsh 2022).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct Sequential {
    /// The null value θ₀ the p-value tests (0 for differences).
    pub null: f64,
    /// Always-valid p-value: for rates the smallest 1/Λ over every look so far; for means
    /// of unbounded values (KL, continuous outcomes) the last look's 1/Λ.
    pub p_value: f64,
    /// Always-valid (1 − alpha) confidence sequence: for rates the intersection of every
    /// look's confidence set (clamped to the rate's range); for means of unbounded values
    /// the last look's set (docs/analyze.md says why). ±∞ (null in JSON) before the first
    /// look.
    pub interval: [f64; 2],
    /// Looks taken (one per observation after the burn-in).
    pub looks: u64,
}

impl From<&Msprt> for Sequential {
    fn from(m: &Msprt) -> Self {
        Sequential {
            null: m.theta0,
            p_value: m.p_value,
            interval: m.interval,
            looks: m.looks,
        }
    }
}

/// A fixed-horizon test or interval: valid when read once, at this sample size.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Fixed {
    /// `two_proportion_z` (pooled), `welch_t`, `paired_t`, `wilson`, `mcnemar_exact` or
    /// `bootstrap_percentile`.
    pub test: String,
    pub statistic: Option<f64>,
    pub p_value: Option<f64>,
    /// (1 − alpha) interval: Newcombe's for a difference of proportions, Welch's or the
    /// paired t for means, Wilson's for one proportion, percentile bootstrap otherwise.
    pub interval: [f64; 2],
    /// Which interval `interval` is.
    pub interval_method: String,
}

/// Latency percentiles of one side, milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Percentiles {
    pub n: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(values: &[f64]) -> Percentiles {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let p = |q| qgate_core::stats::percentile_sorted(&v, q);
        Percentiles {
            n: v.len() as u64,
            mean: qgate_core::stats::mean(&v),
            p50: p(50.0),
            p90: p(90.0),
            p99: p(99.0),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// KL(baseline ‖ candidate) of the class probabilities over paired rows, nats.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct KlFigures {
    /// Rows with a finite value.
    pub n: u64,
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Always-valid confidence sequence of the mean.
    pub mean_sequential: Sequential,
}

/// Output divergence of one output over paired rows (as `qgate compare` computes it).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Divergence {
    pub output: String,
    pub n_values: u64,
    pub max_abs: f64,
    pub mean_abs: f64,
    pub cosine_mean: f64,
    pub cosine_min: f64,
    /// 10·log10(Σ baseline² / Σ (baseline − candidate)²); null when identical.
    pub sqnr_db: Option<f64>,
}

/// Latency of the two models on the same requests (shadow), milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PairedLatency {
    pub baseline: Percentiles,
    pub candidate: Percentiles,
    /// Mean of candidate − baseline per request.
    pub mean_difference_ms: f64,
    /// Paired t interval of the mean difference (fixed-horizon).
    pub mean_difference: Fixed,
    /// Candidate p99 − baseline p99.
    pub p99_difference_ms: f64,
    /// Paired percentile-bootstrap interval of the p99 difference (fixed-horizon).
    pub p99_difference_ci: [f64; 2],
}

/// Error rates of the two models on the same requests (shadow).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PairedRates {
    /// Requests whose copy the candidate answered or failed (`ok`, `error`, `timeout`).
    pub n: u64,
    pub baseline_errors: u64,
    /// Candidate `error` and `timeout` results.
    pub candidate_errors: u64,
    /// Candidate error rate − baseline error rate.
    pub increase: f64,
    /// Always-valid confidence sequence of the increase.
    pub sequential: Sequential,
}

/// Accuracy of both models on the labelled mirrored requests (outcomes named `label`).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PairedLabels {
    pub n: u64,
    pub baseline_accuracy: f64,
    pub candidate_accuracy: f64,
    /// Candidate − baseline.
    pub difference: f64,
    /// McNemar's exact test of the discordant pairs (fixed-horizon).
    pub mcnemar_p: f64,
    /// Always-valid confidence sequence of the difference.
    pub sequential: Sequential,
}

/// Shadow mode: the candidate's answers to mirrored requests against the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Shadow {
    /// Requests mirrored to the candidate (rows with a shadow status).
    pub requests: u64,
    /// Mirrored copies by status: `ok`, `error`, `timeout`, `dropped`, `missing`, `pending`.
    pub copies: BTreeMap<String, u64>,
    /// Requests both models answered (baseline 200 and shadow `ok`).
    pub paired: u64,
    /// Rows compared (a request may hold a batch of rows).
    pub rows: u64,
    /// Of mirrored copies: candidate `error`, `timeout`, `dropped`, `missing`.
    pub error_rate: f64,
    pub timeout_rate: f64,
    pub drop_rate: f64,
    pub missing_rate: f64,
    /// The output compared, and how the log kept it: `full` or `topk`.
    pub output: Option<String>,
    pub outputs_logged: String,
    /// `logits` or `probs` (full outputs; decided as `qgate compare` decides).
    pub output_kind: Option<String>,
    /// Share of compared rows with the same top-1 class.
    pub top1_agreement: f64,
    /// Wilson interval (fixed-horizon).
    pub top1_agreement_ci: [f64; 2],
    /// Always-valid confidence sequence of the agreement.
    pub top1_agreement_sequential: Sequential,
    /// `k` of `top_k_agreement` (the smaller of 5 and what the log kept).
    pub top_k: usize,
    /// Share of rows whose `k` best classes are the same set.
    pub top_k_agreement: Option<f64>,
    /// Mean KL(baseline ‖ candidate); null when the log keeps top-k only (see
    /// `kl_unavailable`).
    pub kl_mean: Option<f64>,
    pub kl: Option<KlFigures>,
    pub kl_unavailable: Option<String>,
    /// Divergence of every output both models logged in full.
    pub divergence: Vec<Divergence>,
    pub latency: Option<PairedLatency>,
    pub error_rate_increase: Option<PairedRates>,
    pub labels: Option<PairedLabels>,
}

/// One arm of an A/B test or canary.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Arm {
    /// Requests routed to this arm.
    pub requests: u64,
    /// Of those, answered with a status other than 200.
    pub errors: u64,
    pub error_rate: f64,
    /// Wilson interval of the error rate (fixed-horizon).
    pub error_rate_ci: [f64; 2],
    /// Latency of the answered requests (time in the model).
    pub latency: Percentiles,
    /// Accuracy against outcomes named `label` (single-row requests), when any arrived.
    pub accuracy: Option<ArmAccuracy>,
}

/// An arm's figures against the labels that arrived.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct ArmAccuracy {
    pub n: u64,
    pub accuracy: f64,
    /// Macro-averaged F1 over the classes seen (as `qgate compare`, scikit-learn's
    /// `f1_score(average="macro", zero_division=0)` over the labels present).
    pub macro_f1: f64,
}

/// Both arms.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Arms {
    pub baseline: Arm,
    pub candidate: Arm,
}

/// Sample-ratio mismatch: arm counts against the weights the log recorded per request.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Srm {
    /// Requests routed `[baseline, candidate]`.
    pub observed: [u64; 2],
    /// Expected from each request's weight: `[Σ (1 − w), Σ w]`.
    pub expected: [f64; 2],
    /// Pearson's chi-square, 1 degree of freedom (fixed-horizon).
    pub statistic: f64,
    pub p_value: f64,
    /// `srm_alpha` in force.
    pub alpha: f64,
    /// p < alpha: the split is broken and no outcome figure can be trusted.
    pub mismatch: bool,
}

/// The error rate of the candidate arm against the baseline arm (A/B, canary).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct RateDifference {
    /// Candidate − baseline.
    pub increase: f64,
    /// Two-proportion z test and Newcombe's interval (fixed-horizon).
    pub fixed: Fixed,
    /// Always-valid confidence sequence of the increase.
    pub sequential: Sequential,
}

/// Latency of the candidate arm against the baseline arm, milliseconds (fixed-horizon).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct LatencyDifference {
    pub p99_increase_ms: f64,
    /// Percentile-bootstrap interval of the p99 difference.
    pub p99_increase_ci: [f64; 2],
    pub mean_increase_ms: f64,
    /// Welch's t test of the means.
    pub mean: Fixed,
}

/// One side of an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OutcomeSide {
    /// Requests of this arm with this outcome.
    pub n: u64,
    pub mean: f64,
    /// Routed requests without it.
    pub missing: u64,
}

/// A named outcome posted to `/outcome`, per arm.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Outcome {
    pub name: String,
    /// `binary` (0/1: proportions) or `continuous` (means).
    pub kind: String,
    /// `policy` (declared in `[outcomes.NAME]`) or `values` (all values 0/1 → binary).
    pub kind_from: String,
    /// `higher` or `lower` is better.
    pub better: String,
    pub baseline: OutcomeSide,
    pub candidate: OutcomeSide,
    /// Candidate mean − baseline mean.
    pub difference: f64,
    /// Binary: two-proportion z test with Newcombe's interval; continuous: Welch's t.
    pub fixed: Fixed,
    /// Continuous only: percentile-bootstrap interval of the difference of means.
    pub bootstrap_ci: Option<[f64; 2]>,
    /// Always-valid confidence sequence of the difference.
    pub sequential: Sequential,
}

/// Shadow figures of one window.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WindowShadow {
    pub rows: u64,
    pub top1_agreement: f64,
    pub kl_mean: Option<f64>,
    /// Candidate error rate over this window's mirrored copies.
    pub candidate_error_rate: f64,
    /// The agreement's confidence sequence at the end of the window (cumulative); null in a
    /// window without a compared row.
    pub top1_agreement_sequential: Option<Sequential>,
    /// The mean KL's confidence sequence at the end of the window (cumulative).
    pub kl_mean_sequential: Option<Sequential>,
    /// p99 latency of the paired requests in this window, ms.
    pub baseline_p99_ms: f64,
    pub candidate_p99_ms: f64,
    /// Accuracy of `[baseline, candidate]` on this window's labelled requests.
    pub accuracy: Option<[f64; 2]>,
}

/// Arm figures of one window.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WindowArms {
    pub baseline_requests: u64,
    pub candidate_requests: u64,
    pub baseline_error_rate: f64,
    pub candidate_error_rate: f64,
    pub baseline_p99_ms: f64,
    pub candidate_p99_ms: f64,
    /// Mean candidate weight in force.
    pub weight: f64,
    /// The sample-ratio-mismatch chi-square p-value of this window's arm counts.
    pub srm_p_value: f64,
    /// The error-rate increase's confidence sequence at the end of the window (cumulative).
    pub error_rate_sequential: Sequential,
}

/// An outcome's difference in one window.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WindowOutcome {
    pub name: String,
    /// Candidate − baseline within the window.
    pub difference: f64,
    pub n: [u64; 2],
    /// The confidence sequence at the end of the window (cumulative).
    pub sequential: Sequential,
}

/// One window of the time series.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WindowFigures {
    /// RFC 3339 of the first and last request in the window.
    pub start: String,
    pub end: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub requests: u64,
    pub shadow: Option<WindowShadow>,
    pub arms: Option<WindowArms>,
    pub outcomes: Vec<WindowOutcome>,
}

/// An operator's action or an automatic decision in the window: the canary's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct DecisionMark {
    pub ts: String,
    pub ts_ms: i64,
    /// `canary/auto-promote`, `canary/auto-rollback`, … (the controller) or `mode`,
    /// `weights`, `canary/advance`, … (an operator).
    pub action: String,
    /// `controller` or `operator`.
    pub by: String,
    /// The decision record's sentence (the controller's decisions).
    pub reason: Option<String>,
    /// The verdict it acted on.
    pub verdict: Option<String>,
    /// The candidate's weight after it.
    pub weight_after: Option<f64>,
}

/// The statistics' settings in force.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Settings {
    pub alpha: f64,
    pub srm_alpha: f64,
    pub msprt_tau: f64,
    pub min_requests: u64,
    /// Observations per side before the first sequential look.
    pub burn_in: u64,
}

/// Everything `qgate analyze` found in the log.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Analysis {
    /// The log read (a PostgreSQL password hidden).
    pub source: String,
    pub schema_version: u32,
    pub model: String,
    /// The window asked for (`--since`, `--until`), RFC 3339.
    pub since: Option<String>,
    pub until: Option<String>,
    /// First and last request read.
    pub first: Option<String>,
    pub last: Option<String>,
    /// Requests read (refused ones included).
    pub requests: u64,
    /// Requests refused before routing (bad requests): neither arm's.
    pub refused: u64,
    /// Requests per mode (`shadow`, `ab`, `canary`).
    pub modes: BTreeMap<String, u64>,
    /// How the time series is cut.
    pub window: Window,
    pub settings: Settings,
    pub shadow: Option<Shadow>,
    pub arms: Option<Arms>,
    pub srm: Option<Srm>,
    pub error_rate: Option<RateDifference>,
    pub latency: Option<LatencyDifference>,
    pub outcomes: Vec<Outcome>,
    pub windows: Vec<WindowFigures>,
    /// Admin actions and automatic canary decisions in the window, in order.
    pub decisions: Vec<DecisionMark>,
    /// Why the data cannot be judged (SRM, no data, every request errored, a side without
    /// data); empty when valid.
    pub invalid: Vec<String>,
    /// Things the reader should know (labels on batched requests, outputs that changed
    /// shape …).
    pub notes: Vec<String>,
}

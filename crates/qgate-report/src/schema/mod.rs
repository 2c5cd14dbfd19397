//! The report schema, version [`SCHEMA_VERSION`]. docs/report-schema.md documents every
//! field; a change that removes or renames a field bumps the major version.

use std::collections::BTreeMap;

use qgate_eval::{Evaluation, SideResult};
use schemars::JsonSchema;
use serde::Serialize;

mod candidates;
mod convert;
mod corruptions;
mod evaluation;
mod figures;
mod model;
mod performance;
mod sensitivity;
mod slices;

pub use candidates::*;
use convert::Conv;
pub use corruptions::*;
pub use evaluation::*;
pub use figures::*;
pub use model::*;
pub use performance::*;
pub use sensitivity::*;
pub use slices::*;

/// Version of the JSON schema (semver: major bumps break readers).
pub const SCHEMA_VERSION: &str = "1.9.0";

/// The whole report of one `qgate compare` run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    pub schema_version: &'static str,
    /// Tool name and version.
    pub tool: Tool,
    /// The command that produced it.
    pub command: String,
    /// `pass` or `fail`.
    pub verdict: Verdict,
    /// One-line summary a reviewer reads first.
    pub summary: String,
    /// The data set (accuracy runs: `compare`, `check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataInfo>,
    /// Baseline model's accuracy figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<SideReport>,
    /// Candidate model's accuracy figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<SideReport>,
    /// The accuracy comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<ComparisonReport>,
    /// Calibration of both models (accuracy runs whose models give class probabilities).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
    /// The pair per slice (accuracy runs on data with slices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slices: Option<SliceReport>,
    /// Both models on corrupted copies of the images (`--corruptions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corruptions: Option<CorruptionReport>,
    /// Inference performance (`bench`, `check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance: Option<Performance>,
    /// Layer sensitivity and mixed precision (`sensitivity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<SensitivityReport>,
    pub gate: GateReport,
    /// The machine the figures come from.
    pub host: HostInfo,
    /// The runtime declared for deployment, if any.
    pub deployment_runtime: Option<String>,
    /// Things the reader should know, each with what to do.
    pub warnings: Vec<Warning>,
    /// The runtime checks of quantized models run in tract against onnxruntime's
    /// node-by-node execution (`passed` or `skipped` with the reason; a failed check stops
    /// the run with an error instead).
    pub runtime_checks: Vec<RuntimeCheckOutcome>,
    /// Thumbnails of flipped samples (HTML only).
    #[serde(skip)]
    pub thumbnails: Vec<Thumbnail>,
    /// With several candidates: whether all must pass or any one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require: Option<Require>,
    /// With several candidates: each one's report, best first. The run's own `candidate`,
    /// `comparison`, `calibration`, `slices` and `performance` are then absent, and its
    /// gate holds the one `require_all` / `require_any` criterion.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(default)]
    pub candidates: Vec<CandidateReport>,
}

/// Tool identity.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Tool {
    /// `qgate`.
    pub name: &'static str,
    pub version: &'static str,
}

impl Tool {
    /// This build of qgate.
    pub fn qgate() -> Tool {
        Tool {
            name: "qgate",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// The data set.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DataInfo {
    pub source: String,
    pub n_samples: usize,
    pub n_classes: usize,
    pub class_names: Vec<String>,
    /// Samples per inference call.
    pub batch_size: usize,
    /// Arrays of the data file that the run did not read, and why (never checked).
    pub ignored_arrays: Vec<IgnoredArray>,
}

/// One side's figures.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SideReport {
    pub runtime: Provenance,
    /// Declared inputs, outputs, op counts, file size.
    pub model: ModelInfo,
    /// Which array fed which input.
    pub inputs: Vec<InputBinding>,
    /// The output read as scores.
    pub score_output: ScoreOutput,
    pub n_samples: u64,
    /// Samples with non-finite outputs (counted wrong).
    pub n_invalid: u64,
    pub accuracy: f64,
    /// Wilson 95 % interval.
    pub accuracy_ci: [f64; 2],
    /// k of top-k.
    pub top_k: usize,
    /// Top-k accuracy (null for label outputs).
    pub top_k_accuracy: Option<f64>,
    pub per_class: Vec<ClassMetrics>,
    pub macro_avg: Averages,
    /// Support-weighted averages.
    pub weighted_avg: Averages,
    /// Rows = true class, columns = predicted.
    pub confusion_matrix: Vec<Vec<u64>>,
    /// Inference wall time over the data, seconds (not a benchmark).
    pub inference_seconds: f64,
}

/// Divergence of one output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DivergenceEntry {
    /// Max |Δ|.
    pub max_abs: f64,
    /// Mean |Δ|.
    pub mean_abs: f64,
    /// Mean per-sample cosine similarity.
    pub cosine_mean: f64,
    /// Worst per-sample cosine similarity.
    pub cosine_min: f64,
    /// SQNR in dB (null = identical).
    pub sqnr_db: Option<f64>,
    /// Values not finite in either model.
    pub n_non_finite: u64,
    /// Whether metrics were read from this output.
    pub is_score_output: bool,
    /// KL mean (score output only).
    pub kl_mean: Option<f64>,
    pub kl_median: Option<f64>,
    /// KL 95th percentile.
    pub kl_p95: Option<f64>,
    /// KL 99th percentile.
    pub kl_p99: Option<f64>,
    pub kl_max: Option<f64>,
}

/// The comparison section.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ComparisonReport {
    /// Candidate − baseline accuracy (fraction).
    pub accuracy_delta: f64,
    /// Paired bootstrap 95 % interval.
    pub accuracy_delta_ci: [f64; 2],
    /// Candidate ÷ baseline accuracy.
    pub relative_accuracy: f64,
    /// Candidate − baseline macro-F1.
    pub macro_f1_delta: f64,
    /// Paired bootstrap 95 % interval.
    pub macro_f1_delta_ci: [f64; 2],
    pub bootstrap: BootstrapSettings,
    /// McNemar exact p-value.
    pub mcnemar_p: f64,
    /// Correct → wrong count.
    pub negative_flips: u64,
    /// Wrong → correct count.
    pub positive_flips: u64,
    /// Negative flips ÷ samples.
    pub negative_flip_rate: f64,
    /// Positive flips ÷ samples.
    pub positive_flip_rate: f64,
    /// Both wrong, different answers.
    pub changed_wrong_answers: u64,
    pub flips: Flips,
    pub flip_details: Vec<Flip>,
    /// Same top-1 share.
    pub top1_agreement: f64,
    /// k of top-k agreement.
    pub top_k: usize,
    /// Same top-k set share.
    pub top_k_agreement: Option<f64>,
    /// KL summary of the score output.
    pub kl: Option<KlSummary>,
    /// Per-class deltas, smallest classes first.
    pub per_class: Vec<ClassDelta>,
    /// Level of the per-class corrected tests (`slice_alpha`).
    pub alpha: f64,
    /// Divergence per output name.
    pub divergence: BTreeMap<String, DivergenceEntry>,
    /// Outputs not compared and why.
    pub divergence_skipped: BTreeMap<String, String>,
}

/// The gate section.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GateReport {
    /// `pass` or `fail`.
    pub verdict: Verdict,
    /// Thresholds in force, with sources.
    pub thresholds: Vec<Threshold>,
    pub criteria: Vec<CriterionResult>,
}

/// Something the reader should know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// Speed figures come from tract running quantized ops.
    TractInt8Speed,
    /// Dynamic quantization makes outputs depend on the batch.
    DynamicQuantBatch,
    /// Some classes have few samples.
    SmallClasses,
    /// The models output labels; KL and top-k are unavailable.
    LabelsOnly,
    /// A side ran on a runtime other than the one declared for deployment.
    NotDeploymentRuntime,
    /// The same model file ran on two runtimes: differences are runtime disagreement.
    CrossRuntime,
    /// Something about how the performance figures were measured (warm-up, noise, governor).
    Measurement,
}

/// A warning: what and what to do.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Warning {
    pub kind: WarningKind,
    /// What to know and what to do.
    pub message: String,
}

/// Samples below which per-class figures are flagged as resting on little data.
pub const SMALL_CLASS_SUPPORT: u64 = 30;

impl Report {
    /// Builds the report of a comparison.
    pub fn from_evaluation(
        eval: &Evaluation,
        command: &str,
        deployment_runtime: Option<&str>,
        host: &qgate_runtime::HostInfo,
    ) -> Report {
        let comparison = comparison_report(eval);
        let gate = GateReport {
            verdict: eval.gate.verdict.conv(),
            thresholds: eval.policy.thresholds.conv(),
            criteria: eval.gate.criteria.conv(),
        };
        let warnings = warnings(eval, deployment_runtime);
        let summary = summary(eval, &gate);
        Report {
            schema_version: SCHEMA_VERSION,
            tool: Tool::qgate(),
            command: command.to_string(),
            verdict: eval.gate.verdict.conv(),
            summary,
            data: Some(DataInfo {
                source: eval.data_source.clone(),
                n_samples: eval.n_samples,
                n_classes: eval.n_classes,
                class_names: eval.class_names.clone(),
                batch_size: eval.batch_size,
                ignored_arrays: eval.ignored_arrays.conv(),
            }),
            baseline: Some(side(&eval.baseline)),
            candidate: Some(side(&eval.candidate)),
            comparison: Some(comparison),
            calibration: eval.calibration.as_ref().map(calibration_report),
            slices: eval.slices.as_ref().map(slice_report),
            corruptions: eval.corruptions.as_ref().map(corruption_report),
            performance: None,
            sensitivity: None,
            gate,
            host: host.conv(),
            deployment_runtime: deployment_runtime.map(str::to_string),
            warnings,
            runtime_checks: eval.runtime_checks.conv(),
            thumbnails: eval.thumbnails.conv(),
            require: None,
            candidates: Vec::new(),
        }
    }

    /// Histogram of per-sample KL, when present.
    pub fn kl_histogram(&self) -> Option<&Histogram> {
        self.comparison.as_ref()?.kl.as_ref().map(|k| &k.histogram)
    }

    /// The accuracy sections, when this run evaluated accuracy.
    pub fn accuracy(&self) -> Option<Accuracy<'_>> {
        Some(Accuracy {
            data: self.data.as_ref()?,
            baseline: self.baseline.as_ref()?,
            candidate: self.candidate.as_ref()?,
            comparison: self.comparison.as_ref()?,
        })
    }

    /// The two sides' provenance, from whichever section exists.
    pub fn sides(&self) -> Option<(&Provenance, &Provenance)> {
        if let Some(a) = self.accuracy() {
            return Some((&a.baseline.runtime, &a.candidate.runtime));
        }
        self.performance
            .as_ref()
            .map(|p| (&p.baseline.runtime, &p.candidate.runtime))
    }

    /// The report of a benchmark: performance figures judged by `criteria` (built by
    /// `Gate::evaluate_performance`).
    pub fn from_performance(
        perf: &qgate_bench::Performance,
        policy: &qgate_core::policy::Policy,
        criteria: &[qgate_core::policy::CriterionResult],
        command: &str,
        deployment_runtime: Option<&str>,
        host: &qgate_runtime::HostInfo,
    ) -> Report {
        let gate = Gate::from_criteria(criteria.conv());
        let performance: Performance = perf.conv();
        let mut warnings = Vec::new();
        perf_warnings(perf, &performance.notes, deployment_runtime, &mut warnings);
        let summary = perf_summary(&performance, &gate);
        Report {
            schema_version: SCHEMA_VERSION,
            tool: Tool::qgate(),
            command: command.to_string(),
            verdict: gate.verdict,
            summary,
            data: None,
            baseline: None,
            candidate: None,
            comparison: None,
            calibration: None,
            slices: None,
            corruptions: None,
            performance: Some(performance),
            sensitivity: None,
            gate: GateReport {
                verdict: gate.verdict,
                thresholds: policy.thresholds.conv(),
                criteria: gate.criteria,
            },
            host: host.conv(),
            deployment_runtime: deployment_runtime.map(str::to_string),
            warnings,
            runtime_checks: Vec::new(),
            thumbnails: Vec::new(),
            require: None,
            candidates: Vec::new(),
        }
    }

    /// The report of a sensitivity analysis: the gate is whether a configuration meeting the
    /// policy was found.
    pub fn from_sensitivity(
        sens: SensitivityReport,
        policy: &qgate_core::policy::Policy,
        host: &qgate_runtime::HostInfo,
    ) -> Report {
        let gate = Gate::from_criteria(vec![found_criterion(&sens)]);
        let summary = sens_summary(&sens, &gate);
        Report {
            schema_version: SCHEMA_VERSION,
            tool: Tool::qgate(),
            command: "sensitivity".into(),
            verdict: gate.verdict,
            summary,
            data: None,
            baseline: None,
            candidate: None,
            comparison: None,
            calibration: None,
            slices: None,
            corruptions: None,
            performance: None,
            sensitivity: Some(sens),
            gate: GateReport {
                verdict: gate.verdict,
                thresholds: policy.thresholds.conv(),
                criteria: gate.criteria,
            },
            host: host.conv(),
            deployment_runtime: None,
            warnings: Vec::new(),
            runtime_checks: Vec::new(),
            thumbnails: Vec::new(),
            require: None,
            candidates: Vec::new(),
        }
    }

    /// Adds performance figures and their criteria to an accuracy report (`qgate check`):
    /// one report, one verdict. Skipped "not measured" entries of performance keys are
    /// replaced by the judged ones.
    pub fn with_performance(
        mut self,
        perf: &qgate_bench::Performance,
        criteria: &[qgate_core::policy::CriterionResult],
    ) -> Report {
        let criteria: Vec<CriterionResult> = criteria.conv();
        let acc_head = verdict_head(self.gate.verdict, &self.gate.criteria);
        // The whole-set "not measured" entries give way; slice entries stay.
        let mut all: Vec<CriterionResult> = self
            .gate
            .criteria
            .into_iter()
            .filter(|c| c.slice.is_some() || !criteria.iter().any(|p| p.key == c.key))
            .collect();
        all.extend(criteria);
        let gate = Gate::from_criteria(all);
        let performance: Performance = perf.conv();
        let mut extra = Vec::new();
        perf_warnings(
            perf,
            &performance.notes,
            self.deployment_runtime.as_deref(),
            &mut extra,
        );
        // The accuracy half already explains tract's INT8 and the deployment runtime.
        extra.retain(|w| {
            !matches!(
                w.kind,
                WarningKind::TractInt8Speed | WarningKind::NotDeploymentRuntime
            ) || !self.warnings.iter().any(|x| x.kind == w.kind)
        });
        self.warnings.extend(extra);
        // Each summary is `HEAD: text`; the head (which may name slices holding ": ") is
        // rebuilt rather than searched for.
        let tail = |summary: &str, head: String| {
            summary
                .strip_prefix(&format!("{head}: "))
                .unwrap_or(summary)
                .to_string()
        };
        let acc_summary = tail(&self.summary, acc_head);
        let perf_tail = tail(
            &perf_summary(&performance, &gate),
            verdict_head(gate.verdict, &gate.criteria),
        );
        self.summary = format!(
            "{}: {acc_summary}; {perf_tail}",
            verdict_head(gate.verdict, &gate.criteria)
        );
        self.verdict = gate.verdict;
        self.gate.verdict = gate.verdict;
        self.gate.criteria = gate.criteria;
        self.performance = Some(performance);
        self
    }
}

/// The `sensitivity` section.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SensitivityReport {
    /// The FP32 model.
    pub model: String,
    /// The user's quantized model, when given (`--quantized`).
    pub quantized: Option<String>,
    /// How activation ranges were calibrated.
    pub calibration: CalibrationInfo,
    /// The evaluation subset.
    pub evaluation: SubsetInfo,
    /// Layers, front, recommendation, localisation.
    #[serde(flatten)]
    pub analysis: Analysis,
    /// How the model file was read: Constant-node weights lifted, nodes named, external
    /// data inlined, opset upgraded or per-tensor weight scales.
    pub normalization: Normalization,
    /// The model as qgate read it (`model_normalized.onnx`), written when it differs from
    /// the file: the exclusion lists resolve against its node names.
    pub normalized_model: Option<String>,
    /// The written mixed-precision model.
    pub mixed_model: String,
    /// How the front's latency was measured (`None`: `--bench-seconds 0`).
    pub latency: Option<FrontLatencyInfo>,
    /// Wall time of the analysis, seconds.
    pub seconds: f64,
}

/// How the trade-off front's latency was measured.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FrontLatencyInfo {
    /// Runtime and version that ran the models.
    pub runtime: String,
    /// Timed seconds per side of each pair (FP32 against one configuration).
    pub seconds_per_side: f64,
    /// Samples per call.
    pub batch_size: usize,
    /// The FP32 model's median latency, ms (from the first pair).
    pub fp32_median_ms: f64,
    /// Things to know about these figures.
    pub notes: Vec<String>,
}

impl FrontLatencyInfo {
    /// The front's timing: each configuration against FP32 at batch 1 on `runtime` (name and
    /// version), `seconds_per_side` each; `tract` says the runtime was tract, whose INT8 runs
    /// slower than its FP32 (the notes say so).
    pub fn new(
        runtime: String,
        seconds_per_side: f64,
        fp32_median_ms: f64,
        tract: bool,
    ) -> FrontLatencyInfo {
        let mut notes = vec![
            "each configuration is timed in a pair with the FP32 model (its own worker processes, interleaved rounds); the speed-up is paired within that pair".to_string(),
        ];
        if tract {
            notes.push(
                "tract simulates INT8 (QDQ) in float and runs it slower than FP32: these are tract's latencies, not your deployment runtime's; use --latency-runtime ort or `qgate bench` with the runtime you ship"
                    .into(),
            );
        }
        FrontLatencyInfo {
            runtime,
            seconds_per_side,
            batch_size: 1,
            fp32_median_ms,
            notes,
        }
    }
}

/// Calibration, as done.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CalibrationInfo {
    /// `min_max`, `percentile`, `entropy`, or `given model` with `--quantized`.
    pub method: String,
    /// Where the calibration samples came from.
    pub source: String,
    pub samples: usize,
}

/// The evaluation subset.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubsetInfo {
    /// Where it came from.
    pub source: String,
    pub samples: usize,
}

/// The accuracy sections of a report, borrowed together.
#[derive(Debug, Clone, Copy)]
pub struct Accuracy<'a> {
    /// The data set.
    pub data: &'a DataInfo,
    pub baseline: &'a SideReport,
    pub candidate: &'a SideReport,
    pub comparison: &'a ComparisonReport,
}

/// The one criterion of a sensitivity report: whether a mixed-precision configuration
/// meets the policy, with what was kept in float or how close the best came.
fn found_criterion(sens: &SensitivityReport) -> CriterionResult {
    let rec = &sens.analysis.recommendation;
    CriterionResult {
        key: "mixed_precision_found".into(),
        description: "a mixed-precision configuration meets the accuracy policy".into(),
        direction: Direction::AtLeast,
        threshold: 1.0,
        source: Source::Default,
        observed: Some(if rec.passes { 1.0 } else { 0.0 }),
        interval: None,
        slice: None,
        status: if rec.passes {
            Status::Pass
        } else {
            Status::Fail
        },
        message: if rec.passes {
            format!(
                "keeping {} of {} layers in float meets the policy: {}",
                rec.n_float_layers,
                sens.analysis.layers.len(),
                if rec.keep_float.is_empty() {
                    "none needed".to_string()
                } else {
                    rec.keep_float.join(", ")
                }
            )
        } else {
            format!(
                "no configuration evaluated meets the policy; the best ({} in float) reaches {:.2}% against FP32 {:.2}%",
                rec.n_float_layers,
                rec.metric * 100.0,
                sens.analysis.fp32_metric * 100.0
            )
        },
    }
}

/// The one-line summary of a sensitivity report: the verdict, the metric at each
/// precision and the most sensitive layers.
fn sens_summary(sens: &SensitivityReport, gate: &Gate) -> String {
    let rec = &sens.analysis.recommendation;
    let top: Vec<String> = sens
        .analysis
        .layers
        .iter()
        .take(3)
        .map(|l| format!("{} ({})", l.node, sens_figures(l, &sens.analysis.ranked_by)))
        .collect();
    let by: Vec<&str> = sens.analysis.ranked_by.iter().map(|s| s.label()).collect();
    format!(
        "{}: FP32 {:.2}% → all INT8 {:.2}% → mixed {:.2}% with {} layer(s) in float [{}]; most sensitive by {}: {}",
        verdict_head(gate.verdict, &gate.criteria),
        sens.analysis.fp32_metric * 100.0,
        sens.analysis.all_int8.metric * 100.0,
        rec.metric * 100.0,
        rec.n_float_layers,
        rec.keep_float.join(", "),
        by.join(", then "),
        top.join(", ")
    )
}

/// A layer's figures for the signals that ranked it (`-0.53 pp`, `+0.00 pp, KL 0.0123`).
fn sens_figures(l: &LayerSensitivity, by: &[Signal]) -> String {
    by.iter()
        .map(|s| match s {
            Signal::MetricDrop => format!("{:+.2} pp", -l.metric_drop + 0.0),
            Signal::Kl => format!("KL {}", crate::sig(l.kl.unwrap_or(0.0), 3)),
            Signal::LogitMse => format!("MSE {}", crate::sig(l.mse.unwrap_or(0.0), 3)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A verdict and the criteria it rests on: failed when any criterion failed.
struct Gate {
    verdict: Verdict,
    criteria: Vec<CriterionResult>,
}

impl Gate {
    fn from_criteria(criteria: Vec<CriterionResult>) -> Gate {
        let verdict = if criteria.iter().any(|c| c.status == Status::Fail) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        Gate { verdict, criteria }
    }
}

impl CriterionResult {
    /// The key, with the slice it judges: `max_accuracy_drop_pp [lighting=dark]`.
    pub fn label(&self) -> String {
        match &self.slice {
            Some(s) => format!("{} [{s}]", self.key),
            None => self.key.clone(),
        }
    }
}

/// The labels of the failed criteria.
pub(crate) fn failed_labels(criteria: &[CriterionResult]) -> Vec<String> {
    criteria
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(CriterionResult::label)
        .collect()
}

fn verdict_head(verdict: Verdict, criteria: &[CriterionResult]) -> String {
    match verdict {
        Verdict::Pass | Verdict::Invalid | Verdict::Inconclusive => verdict.as_str().to_uppercase(),
        Verdict::Fail => {
            format!("FAIL ({})", failed_labels(criteria).join(", "))
        }
    }
}

fn perf_summary(p: &Performance, gate: &Gate) -> String {
    let (b, c) = (&p.baseline, &p.candidate);
    let mib = |x: Option<u64>| {
        x.map(|v| format!("{:.1}", v as f64 / 1048576.0))
            .unwrap_or_else(|| "n/a".into())
    };
    format!(
        "{}: {}; median latency {:.3} → {:.3} ms, p99 {:.3} → {:.3} ms (batch {}); peak RSS {} → {} MiB",
        verdict_head(gate.verdict, &gate.criteria),
        p.comparison.summary,
        b.latency_ms.p50,
        c.latency_ms.p50,
        b.latency_ms.p99,
        c.latency_ms.p99,
        p.batch_size,
        mib(b.peak_rss_bytes),
        mib(c.peak_rss_bytes)
    )
}

/// Warnings about how the figures were timed; `notes` are the measurement notes in words.
fn perf_warnings(
    p: &qgate_bench::Performance,
    notes: &[String],
    deployment_runtime: Option<&str>,
    out: &mut Vec<Warning>,
) {
    for (name, s) in [("baseline", &p.baseline), ("candidate", &p.candidate)] {
        if s.runtime.runtime == "tract" && s.model.is_quantized() {
            out.push(Warning {
                kind: WarningKind::TractInt8Speed,
                message: format!(
                    "the {name} is quantized and was timed in tract, whose INT8 kernels are slower than its FP32 ones: \
                     this speed says nothing about a runtime with fast integer kernels; bench with the deployment runtime (e.g. ort:MODEL.onnx)"
                ),
            });
        }
        if let Some(deploy) = deployment_runtime {
            if s.runtime.runtime != deploy {
                out.push(Warning {
                    kind: WarningKind::NotDeploymentRuntime,
                    message: format!(
                        "the {name} was timed on {}, not on the deployment runtime {deploy}: speed there may differ",
                        s.runtime.runtime
                    ),
                });
            }
        }
    }
    if p.baseline.runtime.runtime != p.candidate.runtime.runtime {
        out.push(Warning {
            kind: WarningKind::CrossRuntime,
            message: format!(
                "the sides were timed on different runtimes ({} vs {}): the speed-up mixes model and runtime",
                p.baseline.runtime.runtime, p.candidate.runtime.runtime
            ),
        });
    }
    for n in notes {
        out.push(Warning {
            kind: WarningKind::Measurement,
            message: n.clone(),
        });
    }
}

/// The comparison section of an accuracy report, divergence included.
fn comparison_report(eval: &Evaluation) -> ComparisonReport {
    let c = &eval.comparison;
    let divergence = divergence_entries(eval);
    ComparisonReport {
        accuracy_delta: c.accuracy_delta,
        accuracy_delta_ci: c.accuracy_delta_ci,
        relative_accuracy: c.relative_accuracy,
        macro_f1_delta: c.macro_f1_delta,
        macro_f1_delta_ci: c.macro_f1_delta_ci,
        bootstrap: c.bootstrap.conv(),
        mcnemar_p: c.mcnemar_p,
        negative_flips: c.negative_flips,
        positive_flips: c.positive_flips,
        negative_flip_rate: c.negative_flip_rate,
        positive_flip_rate: c.positive_flip_rate,
        changed_wrong_answers: c.changed_wrong_answers,
        flips: c.flips.conv(),
        flip_details: c.flip_details.conv(),
        top1_agreement: c.top1_agreement,
        top_k: c.top_k,
        top_k_agreement: c.top_k_agreement,
        kl: c.kl.conv(),
        per_class: c.per_class.conv(),
        alpha: eval.policy.value("slice_alpha").unwrap_or(0.05),
        divergence,
        divergence_skipped: eval.divergence_skipped.iter().cloned().collect(),
    }
}

/// Divergence figures per compared output; KL is attached to the score output only.
fn divergence_entries(eval: &Evaluation) -> BTreeMap<String, DivergenceEntry> {
    let c = &eval.comparison;
    let mut divergence = BTreeMap::new();
    for d in &eval.divergence {
        let kl = if d.is_score_output {
            c.kl.as_ref()
        } else {
            None
        };
        divergence.insert(
            d.output.clone(),
            DivergenceEntry {
                max_abs: d.tensor.max_abs,
                mean_abs: d.tensor.mean_abs,
                cosine_mean: d.tensor.cosine_mean,
                cosine_min: d.tensor.cosine_min,
                sqnr_db: d.tensor.sqnr_db,
                n_non_finite: d.tensor.n_non_finite,
                is_score_output: d.is_score_output,
                kl_mean: kl.map(|k| k.mean),
                kl_median: kl.map(|k| k.median),
                kl_p95: kl.map(|k| k.p95),
                kl_p99: kl.map(|k| k.p99),
                kl_max: kl.map(|k| k.max),
            },
        );
    }
    divergence
}

fn side(s: &SideResult) -> SideReport {
    let m = &s.metrics;
    SideReport {
        runtime: s.provenance.conv(),
        model: s.model.conv(),
        inputs: s.inputs.conv(),
        score_output: s.scores.conv(),
        n_samples: m.n_samples,
        n_invalid: m.n_invalid,
        accuracy: m.accuracy,
        accuracy_ci: m.accuracy_ci,
        top_k: m.top_k,
        top_k_accuracy: m.top_k_accuracy,
        per_class: m.per_class.conv(),
        macro_avg: m.macro_avg.conv(),
        weighted_avg: m.weighted_avg.conv(),
        confusion_matrix: m.confusion_matrix.clone(),
        inference_seconds: s.inference_seconds,
    }
}

fn warnings(eval: &Evaluation, deployment_runtime: Option<&str>) -> Vec<Warning> {
    let mut out = Vec::new();
    let sides = [("baseline", &eval.baseline), ("candidate", &eval.candidate)];
    out.extend(cross_runtime(eval));
    if let Some(deploy) = deployment_runtime {
        for (name, s) in sides {
            if s.provenance.runtime != deploy {
                out.push(Warning {
                    kind: WarningKind::NotDeploymentRuntime,
                    message: format!(
                        "the {name}'s figures come from {}, not from the deployment runtime {deploy}: \
                         accuracy and speed may differ there; run that side as {}",
                        s.provenance.runtime,
                        match deploy {
                            "onnxruntime" => "ort:MODEL.onnx",
                            "kserve-v2" => "http://HOST:PORT/v2/models/NAME",
                            _ => "the deployment runtime's spec",
                        }
                    ),
                });
            }
        }
    }
    for (name, s) in sides {
        if s.provenance.runtime == "tract" && s.model.is_quantized() {
            out.push(Warning {
                kind: WarningKind::TractInt8Speed,
                message: format!(
                    "the {name} is quantized and ran in tract, whose INT8 kernels are slower than its FP32 ones: \
                     its inference time here says nothing about deployment speed; measure speed with the deployment runtime"
                ),
            });
        }
        if s.model.op_counts.contains_key("DynamicQuantizeLinear") {
            out.push(Warning {
                kind: WarningKind::DynamicQuantBatch,
                message: format!(
                    "the {name} quantizes activations dynamically (DynamicQuantizeLinear): each batch gets its own scale, \
                     so outputs depend on which samples share a batch; evaluate with the batch size you deploy"
                ),
            });
        }
    }
    let small: Vec<String> = eval
        .comparison
        .per_class
        .iter()
        .filter(|c| c.support > 0 && c.support < SMALL_CLASS_SUPPORT)
        .map(|c| format!("{} ({})", c.name, c.support))
        .collect();
    if !small.is_empty() {
        out.push(Warning {
            kind: WarningKind::SmallClasses,
            message: format!(
                "per-class figures of {} rest on fewer than {SMALL_CLASS_SUPPORT} samples each: one sample moves recall by several points; add samples of these classes",
                small.join(", ")
            ),
        });
    }
    if eval.comparison.kl.is_none() {
        out.push(Warning {
            kind: WarningKind::LabelsOnly,
            message: "a model outputs labels, not scores: KL divergence, top-k accuracy and top-k agreement are not available; \
                      point --output at a score output to get them"
                .into(),
        });
    }
    out
}

/// The same model file on both sides: every difference is the runtimes' disagreement.
fn cross_runtime(eval: &Evaluation) -> Option<Warning> {
    let (b, c) = (&eval.baseline, &eval.candidate);
    if b.model.sha256.is_some() && b.model.sha256 == c.model.sha256 {
        let how = if b.provenance.runtime == c.provenance.runtime {
            format!(
                "twice on {} (settings: {:?} vs {:?})",
                b.provenance.runtime, b.provenance.settings, c.provenance.settings
            )
        } else {
            format!(
                "on {} and on {}",
                b.provenance.runtime, c.provenance.runtime
            )
        };
        let worst = eval
            .divergence
            .iter()
            .max_by(|a, b| a.tensor.max_abs.total_cmp(&b.tensor.max_abs))
            .map(|d| {
                format!(
                    "largest output difference {:.3e} in '{}'",
                    d.tensor.max_abs, d.output
                )
            })
            .unwrap_or_else(|| "no common output to compare".into());
        return Some(Warning {
            kind: WarningKind::CrossRuntime,
            message: format!(
                "the same model file ran {how}: every difference in this report is runtime disagreement \
                 (top-1 agreement {:.4}, {} of {} predictions differ, {worst})",
                eval.comparison.top1_agreement,
                eval.n_samples - (eval.comparison.top1_agreement * eval.n_samples as f64).round() as usize,
                eval.n_samples
            ),
        });
    }
    None
}

fn summary(eval: &Evaluation, gate: &GateReport) -> String {
    let c = &eval.comparison;
    let sig = if c.mcnemar_p < 0.05 {
        "a real change (McNemar p < 0.05)"
    } else {
        "not distinguishable from noise (McNemar p ≥ 0.05)"
    };
    let head = verdict_head(gate.verdict, &gate.criteria);
    format!(
        "{head}: accuracy {:.2}% → {:.2}% ({:+.2} pp, 95% CI [{:+.2}, {:+.2}]{}), {} correct→wrong and {} wrong→correct of {} samples — {sig}",
        eval.baseline.metrics.accuracy * 100.0,
        eval.candidate.metrics.accuracy * 100.0,
        c.accuracy_delta * 100.0,
        c.accuracy_delta_ci[0] * 100.0,
        c.accuracy_delta_ci[1] * 100.0,
        crate::ci_note(c.accuracy_delta, c.accuracy_delta_ci),
        c.negative_flips,
        c.positive_flips,
        eval.n_samples
    )
}

//! Report types copied from the crate that computes them; src/schema/convert.rs fills them.

#![allow(clippy::wildcard_imports)]

use schemars::JsonSchema;
use serde::Serialize;

/// Everything the analysis found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Analysis {
    /// FP32 metric on the evaluation subset.
    pub fp32_metric: f64,
    /// Every layer quantized.
    pub all_int8: EvalResult,
    /// Layers, most sensitive first.
    pub layers: Vec<LayerSensitivity>,
    /// The signals that ordered the first layers (metric drop; where drops tie, KL; then
    /// logit MSE).
    pub ranked_by: Vec<Signal>,
    /// Every configuration evaluated by the searches.
    pub front: Vec<FrontPoint>,
    pub recommendation: Recommendation,
    /// Models evaluated in total (full evaluations and probes).
    pub evaluations: usize,
    /// Samples of the proxy (the first ones of the evaluation data).
    pub proxy_samples: usize,
    /// Whether the policy's verdict never went from pass to fail as more layers of the
    /// ranking were kept in float (bisection assumes so); `None` when nothing was searched.
    pub monotone: Option<bool>,
    /// Error localisation, with `--quantized`.
    pub localisation: Option<Localisation>,
    /// What the one-at-a-time analysis cost.
    pub cost: Cost,
}

/// What the analysis cost.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Cost {
    /// Wall time of the FP32 reference pass over every sample, recording the activations
    /// the layers' models are fed, seconds.
    pub reference_s: f64,
    /// Wall time of one full evaluation (the all-INT8 model on every sample, loading and
    /// the policy's statistics included), seconds.
    pub full_evaluation_s: f64,
    /// Wall time of the one-at-a-time analysis of every layer (only that layer
    /// quantized): the proxy and the confirmations, seconds.
    pub one_at_a_time_s: f64,
    /// `one_at_a_time_s ÷ (layers × full_evaluation_s)`.
    pub full_evaluations_per_layer: f64,
    /// Wall time of "everything but this layer" for every layer (on the proxy samples).
    pub all_but_s: f64,
    /// How: cut graphs fed recorded FP32 activations or whole models, the proxy samples,
    /// how many layers were confirmed on all.
    pub method: String,
}

/// What one evaluation of a model on the evaluation subset gives.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EvalResult {
    /// Task metric (top-1 accuracy, fraction).
    pub metric: f64,
    /// Mean KL(FP32 ‖ model) of the class probabilities.
    pub kl_mean: Option<f64>,
    /// Whether the policy's accuracy criteria pass against the FP32 model.
    pub passes: bool,
    /// Criteria that failed.
    pub failed: Vec<String>,
}

/// Latency of a front configuration against the FP32 model, measured in interleaved
/// rounds (batch 1).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FrontLatency {
    /// Median latency, ms.
    pub median_ms: f64,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// FP32 median ÷ this median, paired over rounds.
    pub speedup_vs_fp32: f64,
    /// Its 95 % interval.
    pub speedup_ci: [f64; 2],
}

/// A configuration on the trade-off front.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FrontPoint {
    /// What found it: `none` (every layer INT8), `greedy`, `bisection`, `prune` (a greedy
    /// set with one layer less), or several joined by `+` when searches met.
    pub method: String,
    /// Layers kept in float.
    pub keep_float: Vec<String>,
    pub n_float_layers: usize,
    pub metric: f64,
    /// Mean KL against FP32.
    pub kl: Option<f64>,
    /// Whether the policy passes.
    pub passes: bool,
    /// Size of the written model, bytes.
    pub model_bytes: u64,
    /// Latency measured by `qgate bench`'s engine, filled in by the caller.
    pub latency: Option<FrontLatency>,
}

/// A layer whose weight and activation inputs can be quantized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Layer {
    /// Node name (the name every toolchain's exclusion list uses).
    pub node: String,
    /// `Conv`, `Gemm` or `MatMul`.
    pub op_type: String,
    /// Position of the node in the graph.
    pub index: usize,
    /// The weight initializer.
    pub weight: String,
    /// Input slot of the weight.
    pub weight_slot: usize,
    /// Axis of the weight's output channels (per-channel quantization axis).
    pub weight_axis: usize,
    /// Activation inputs (not initializers) that get quantized with the layer.
    pub activations: Vec<String>,
    /// The layer's output after the Relu/Clip that alone follows it, if any (the tensor
    /// onnxruntime quantizes as the layer's output).
    pub output: String,
    /// What the graph from this layer on reads that earlier nodes or the graph's inputs
    /// produce — the inputs of a model cut at this layer ([`cut_at`]): the layer's own
    /// activations first, then e.g. the skip tensor a later residual Add reads.
    pub cut_inputs: Vec<String>,
}

/// One layer's sensitivity.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LayerSensitivity {
    pub node: String,
    pub op_type: String,
    /// Metric drop (pp) when only this layer is quantized.
    pub metric_drop: f64,
    /// Mean KL(FP32 ‖ model) of the class probabilities when only this layer is quantized.
    pub kl: Option<f64>,
    /// Mean squared difference of the score output (logits) from FP32's, same setting.
    pub mse: Option<f64>,
    /// SQNR (dB) of the layer's output activation with only this layer quantized.
    pub sqnr_db: Option<f64>,
    /// SQNR (dB) of its weights quantized per channel.
    pub weight_sqnr_db: Option<f64>,
    /// Metric drop (pp) when every layer but this one is quantized, on the proxy samples
    /// (what keeping this layer alone in float recovers, against the all-INT8 drop).
    pub all_but_metric_drop: Option<f64>,
    /// Mean KL when every layer but this one is quantized, on the proxy samples.
    pub all_but_kl: Option<f64>,
    /// Whether `metric_drop`, `kl` and `mse` were measured on every evaluation sample
    /// (else on the proxy samples).
    pub confirmed: bool,
}

/// Error localisation of a given QDQ model.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Localisation {
    /// Activations in graph order.
    pub activations: Vec<TensorError>,
    /// Per-layer weight SQNR of the given model's weights (dB).
    pub weights: Vec<(String, Option<f64>)>,
    /// The tensor where SQNR falls most from the tensor before it.
    pub first_jump: Option<String>,
}

/// What [`normalize`] changed, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Normalization {
    /// `Constant` nodes whose tensors became initializers.
    pub constants_lifted: usize,
    /// Nodes that had no name and got a generated one (`{op}_{index}`).
    pub names_generated: usize,
    /// Initializers read from external data files.
    pub external_tensors: usize,
    /// The default-domain opset of the file.
    pub opset_in: i64,
    /// The opset of the normalised model (equal to `opset_in` unless upgraded).
    pub opset_out: i64,
    /// How weights are scaled.
    pub weight_scales: WeightScales,
    /// Why, in a sentence: the upgrade made, or the op that prevented it.
    pub opset_note: String,
}

/// The recommended configuration.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Recommendation {
    /// Layers to keep in float (node names).
    pub keep_float: Vec<String>,
    /// Metric of the mixed model.
    pub metric: f64,
    pub n_float_layers: usize,
    /// Whether it passes the policy (false: the best configuration found).
    pub passes: bool,
    /// onnxruntime `quantize_static(nodes_to_exclude=…)`.
    pub ort_nodes_to_exclude: Vec<String>,
    /// trtexec `--layerPrecisions=…` (with `--precisionConstraints=obey`).
    pub tensorrt_layer_precisions: String,
    /// NNCF `IgnoredScope(names=…)` as JSON.
    pub nncf_ignored_scope: serde_json::Value,
}

/// A signal the layers are ranked by, in the order the ranking consults them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Metric drop with the layer alone quantized.
    MetricDrop,
    /// Mean KL(FP32 ‖ model), same setting.
    Kl,
    /// Mean squared logit difference, same setting.
    LogitMse,
}

/// Per-tensor error of an existing quantized model against FP32.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TensorError {
    /// Tensor name (the same in both models).
    pub tensor: String,
    /// Op producing it.
    pub op_type: String,
    /// SQNR, dB (null = identical).
    pub sqnr_db: Option<f64>,
    /// Mean per-sample cosine similarity.
    pub cosine: f64,
    /// Largest absolute difference.
    pub max_abs: f64,
}

/// How weights are scaled when quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WeightScales {
    /// One scale per output channel (opset ≥ 13).
    PerChannel,
    /// One scale per weight tensor (opset 10–12).
    PerTensor,
}

impl Normalization {
    /// One sentence per change, as the report and `qgate inspect` print it.
    pub fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if self.constants_lifted > 0 {
            n.push(format!(
                "{} Constant node(s) read as weights (initializers)",
                self.constants_lifted
            ));
        }
        if self.names_generated > 0 {
            n.push(format!(
                "{} unnamed node(s) named {{op}}_{{index}}; the written models carry these names, so exclusion lists resolve against them",
                self.names_generated
            ));
        }
        if self.external_tensors > 0 {
            n.push(format!(
                "{} tensor(s) read from external data files",
                self.external_tensors
            ));
        }
        n.push(self.opset_note.clone());
        n
    }
}

impl Signal {
    /// Its name in prose.
    pub fn label(self) -> &'static str {
        match self {
            Signal::MetricDrop => "metric drop",
            Signal::Kl => "KL",
            Signal::LogitMse => "logit MSE",
        }
    }
}

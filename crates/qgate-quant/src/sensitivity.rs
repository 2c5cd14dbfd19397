//! Which layers quantization hurts, and the smallest set to keep in float: one-at-a-time
//! sensitivity (only this layer quantized; everything but this layer), error localisation
//! against an existing QDQ model, and the mixed-precision search (greedy by sensitivity and
//! bisection over the ranking, Polygraphy `debug precision` style), reporting the whole
//! trade-off front. Evaluation is the caller's ([`Evaluator`]): this crate edits graphs.

use std::path::{Path, PathBuf};

use prost::Message;
use qgate_core::divergence::tensor_divergence;
use qgate_core::Array;
use qgate_runtime::onnx_pb as pb;
use serde::Serialize;

use crate::graph::{float_initializer, graph, node_outputs, Layer};
use crate::qdq::{effective_weight, weight_sqnr_db};
use crate::QuantError;

/// What one evaluation of a model on the evaluation subset gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Task metric (top-1 accuracy, fraction).
    pub metric: f64,
    /// The FP32 model's metric on the same samples (drops are measured against it).
    pub baseline_metric: f64,
    /// Mean KL(FP32 ‖ model) of the class probabilities.
    pub kl_mean: Option<f64>,
    /// Whether the policy's accuracy criteria pass against the FP32 model.
    pub passes: bool,
    /// Criteria that failed.
    pub failed: Vec<String>,
}

/// Evaluates model files on the evaluation data against the FP32 model.
pub trait Evaluator {
    /// Samples of the evaluation data.
    fn samples(&self) -> usize;
    /// Metric, divergence and the policy's verdict of the model at `path`.
    fn evaluate(&mut self, path: &Path) -> Result<EvalResult, QuantError>;
    /// The same for a model whose inputs are given (cached activations of the first
    /// `rows` samples, named as the model's inputs); judged on those samples.
    fn evaluate_fed(
        &mut self,
        path: &Path,
        inputs: &[(String, Array)],
    ) -> Result<EvalResult, QuantError>;
    /// The named tensors of the model at `path` over the first `n` samples, stacked.
    fn tensors(
        &mut self,
        path: &Path,
        names: &[String],
        n: usize,
    ) -> Result<Vec<Array>, QuantError>;
    /// The named tensors of a model fed with `inputs`.
    fn tensors_fed(
        &mut self,
        path: &Path,
        inputs: &[(String, Array)],
        names: &[String],
    ) -> Result<Vec<Array>, QuantError>;
}

/// Builds the model that quantizes only `layer`, cut to start at the layer's activation
/// inputs (everything before it is FP32, so cached FP32 activations can feed it).
/// It receives the inputs to start from, with their per-sample dimensions.
pub type OnlyBuilder<'a> =
    &'a dyn Fn(&Layer, &[(String, Vec<usize>)]) -> Result<pb::ModelProto, QuantError>;

/// How configurations are built.
pub struct Builders<'a> {
    /// Whole models keeping the given layers in float.
    pub full: Builder<'a>,
    /// Models quantizing one layer, starting at its inputs (for cached activations);
    /// `None` evaluates whole models instead.
    pub only: Option<OnlyBuilder<'a>>,
    /// Precision of the layers kept out of INT8 (`fp32` or `fp16`), for the exclusion lists.
    pub float_type: &'a str,
}

/// What the one-at-a-time analysis cost.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Wall time of one full evaluation (the all-INT8 model on every sample), seconds.
    pub full_evaluation_s: f64,
    /// Wall time of the one-at-a-time analysis of every layer (only that layer
    /// quantized), caching included, seconds.
    pub one_at_a_time_s: f64,
    /// `one_at_a_time_s ÷ (layers × full_evaluation_s)`.
    pub full_evaluations_per_layer: f64,
    /// How: `cached activations, proxy on N samples, top K confirmed on all` or `full`.
    pub method: String,
}

/// Builds the model that keeps `keep_float` in float and quantizes every other layer.
pub type Builder<'a> = &'a dyn Fn(&[String]) -> Result<pb::ModelProto, QuantError>;

/// One layer's sensitivity.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    /// Node name.
    pub node: String,
    /// Op type.
    pub op_type: String,
    /// Metric drop (pp) when only this layer is quantized.
    pub metric_drop: f64,
    /// Mean KL when only this layer is quantized.
    pub kl: Option<f64>,
    /// SQNR (dB) of the layer's output activation with only this layer quantized.
    pub sqnr_db: Option<f64>,
    /// SQNR (dB) of its weights quantized per channel.
    pub weight_sqnr_db: Option<f64>,
    /// Metric drop (pp) when every layer but this one is quantized (the confirmed layers).
    pub all_but_metric_drop: Option<f64>,
    /// Whether `metric_drop` and `kl` were measured on every evaluation sample (else on
    /// the proxy subset).
    pub confirmed: bool,
}

/// A configuration on the trade-off front.
#[derive(Debug, Clone, Serialize)]
pub struct FrontPoint {
    /// `greedy` or `bisection`.
    pub method: String,
    /// Layers kept in float.
    pub keep_float: Vec<String>,
    /// Their count.
    pub n_float_layers: usize,
    /// Metric.
    pub metric: f64,
    /// Mean KL against FP32.
    pub kl: Option<f64>,
    /// Whether the policy passes.
    pub passes: bool,
    /// Size of the written model, bytes.
    pub model_bytes: u64,
}

/// The recommended configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// Layers to keep in float (node names).
    pub keep_float: Vec<String>,
    /// Metric of the mixed model.
    pub metric: f64,
    /// Their count.
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

/// Per-tensor error of an existing quantized model against FP32.
#[derive(Debug, Clone, Serialize)]
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

/// Error localisation of a given QDQ model.
#[derive(Debug, Clone, Serialize)]
pub struct Localisation {
    /// Activations in graph order.
    pub activations: Vec<TensorError>,
    /// Per-layer weight SQNR of the given model's weights (dB).
    pub weights: Vec<(String, Option<f64>)>,
    /// The tensor where SQNR falls most from the tensor before it.
    pub first_jump: Option<String>,
}

/// Everything the analysis found.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// FP32 metric on the evaluation subset.
    pub fp32_metric: f64,
    /// Every layer quantized.
    pub all_int8: EvalResult,
    /// Layers, most sensitive first.
    pub layers: Vec<LayerSensitivity>,
    /// Every configuration evaluated by the searches.
    pub front: Vec<FrontPoint>,
    /// The answer.
    pub recommendation: Recommendation,
    /// Models evaluated in total.
    pub evaluations: usize,
    /// Error localisation, with `--quantized`.
    pub localisation: Option<Localisation>,
    /// What the one-at-a-time analysis cost.
    pub cost: Cost,
}

/// Writes `model` to `path`.
pub fn write_model(model: &pb::ModelProto, path: &Path) -> Result<u64, QuantError> {
    let bytes = model.encode_to_vec();
    std::fs::write(path, &bytes).map_err(|e| QuantError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(bytes.len() as u64)
}

struct Runner<'a> {
    eval: &'a mut dyn Evaluator,
    scratch: PathBuf,
    count: usize,
}

impl Runner<'_> {
    fn run(&mut self, model: &pb::ModelProto) -> Result<(EvalResult, PathBuf, u64), QuantError> {
        self.count += 1;
        let path = self.scratch.join(format!("model_{}.onnx", self.count));
        let bytes = write_model(model, &path)?;
        let r = self.eval.evaluate(&path)?;
        Ok((r, path, bytes))
    }
}

/// Progress messages.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Runs the analysis and the search. `build(keep_float)` makes each configuration; `fp32`
/// is the float model; `quantized` the user's QDQ model, for error localisation.
pub fn analyze(
    fp32: &pb::ModelProto,
    quantized: Option<&pb::ModelProto>,
    layers: &[Layer],
    builders: Builders,
    eval: &mut dyn Evaluator,
    scratch: &Path,
    progress: Progress,
) -> Result<Analysis, QuantError> {
    let (build, build_only, float_type) = (builders.full, builders.only, builders.float_type);
    let mut runner = Runner {
        eval,
        scratch: scratch.to_path_buf(),
        count: 0,
    };
    let names: Vec<String> = layers.iter().map(|l| l.node.clone()).collect();
    progress("evaluating the FP32 model");
    let (fp32_r, fp32_path, _) = runner.run(fp32)?;
    let fp32_metric = fp32_r.metric;
    progress("evaluating the fully quantized model");
    let t_full = std::time::Instant::now();
    let (all_r, _, all_bytes) = runner.run(&build(&[])?)?;
    let full_evaluation_s = t_full.elapsed().as_secs_f64();
    let g = graph(fp32)?;
    let t_one = std::time::Instant::now();
    let n = runner.eval.samples();
    let mut sens = Vec::new();
    let method;
    match build_only {
        Some(build_only) => {
            // Cache every layer's FP32 inputs and outputs once; each layer's model then
            // starts at its inputs, on a proxy subset, and only the top of the ranking is
            // confirmed on every sample.
            let proxy = n.min(128.max(n / 4));
            let mut names: Vec<String> = Vec::new();
            for l in layers {
                for t in l.activations.iter().chain(std::iter::once(&l.output)) {
                    if !names.contains(t) {
                        names.push(t.clone());
                    }
                }
            }
            let cached = runner.eval.tensors(&fp32_path, &names, n)?;
            let get = |t: &str, rows: usize| -> Option<(String, Array)> {
                let k = names.iter().position(|x| x == t)?;
                Some((
                    t.to_string(),
                    cached[k].slice_rows(0, rows.min(cached[k].n_rows())),
                ))
            };
            let mut paths = Vec::new();
            for (i, l) in layers.iter().enumerate() {
                progress(&format!(
                    "layer {}/{}: {} (proxy)",
                    i + 1,
                    layers.len(),
                    l.node
                ));
                let dims: Vec<(String, Vec<usize>)> = l
                    .activations
                    .iter()
                    .filter_map(|t| get(t, 1).map(|(n, a)| (n, a.shape[1..].to_vec())))
                    .collect();
                let model = build_only(l, &dims)?;
                runner.count += 1;
                let path = runner.scratch.join(format!("only_{}.onnx", runner.count));
                write_model(&model, &path)?;
                let feed: Vec<(String, Array)> =
                    l.activations.iter().filter_map(|t| get(t, proxy)).collect();
                let r = runner.eval.evaluate_fed(&path, &feed)?;
                let out = runner
                    .eval
                    .tensors_fed(&path, &feed, std::slice::from_ref(&l.output))?;
                let sqnr = match (get(&l.output, proxy), out.first()) {
                    (Some((_, a)), Some(b)) => output_sqnr(&a, b),
                    _ => None,
                };
                paths.push((path, feed.iter().map(|f| f.0.clone()).collect::<Vec<_>>()));
                sens.push(LayerSensitivity {
                    node: l.node.clone(),
                    op_type: l.op_type.clone(),
                    metric_drop: (r.baseline_metric - r.metric) * 100.0,
                    kl: r.kl_mean,
                    sqnr_db: sqnr,
                    weight_sqnr_db: float_initializer(g, &l.weight)
                        .and_then(|w| weight_sqnr_db(&w, l.weight_axis)),
                    all_but_metric_drop: None,
                    confirmed: proxy == n,
                });
            }
            // Confirm the proxy's top three on every sample (still from cached inputs).
            let mut order: Vec<usize> = (0..sens.len()).collect();
            order.sort_by(|&a, &b| rank(&sens[a], &sens[b]));
            const CONFIRM: usize = 3;
            for &i in order.iter().take(CONFIRM) {
                if sens[i].confirmed {
                    continue;
                }
                progress(&format!("confirming {} on every sample", sens[i].node));
                let (path, feeds) = &paths[i];
                let feed: Vec<(String, Array)> = feeds.iter().filter_map(|t| get(t, n)).collect();
                let r = runner.eval.evaluate_fed(path, &feed)?;
                sens[i].metric_drop = (r.baseline_metric - r.metric) * 100.0;
                sens[i].kl = r.kl_mean;
                sens[i].confirmed = true;
            }
            method = format!(
                "cached FP32 activations, each layer's graph from its inputs on; proxy on {proxy} of {n} samples, top {CONFIRM} confirmed on all"
            );
        }
        None => {
            // Every layer's FP32 output once; each variant then gives its own.
            let outputs: Vec<String> = layers.iter().map(|l| l.output.clone()).collect();
            let fp32_outputs = runner.eval.tensors(&fp32_path, &outputs, 128)?;
            for (i, l) in layers.iter().enumerate() {
                progress(&format!("layer {}/{}: {}", i + 1, layers.len(), l.node));
                let others: Vec<String> = names.iter().filter(|x| **x != l.node).cloned().collect();
                let (only, only_path, _) = runner.run(&build(&others)?)?;
                let b = runner
                    .eval
                    .tensors(&only_path, std::slice::from_ref(&l.output), 128)?;
                let sqnr = match (fp32_outputs.get(i), b.first()) {
                    (Some(a), Some(b)) => output_sqnr(a, b),
                    _ => None,
                };
                sens.push(LayerSensitivity {
                    node: l.node.clone(),
                    op_type: l.op_type.clone(),
                    metric_drop: (fp32_metric - only.metric) * 100.0,
                    kl: only.kl_mean,
                    sqnr_db: sqnr,
                    weight_sqnr_db: float_initializer(g, &l.weight)
                        .and_then(|w| weight_sqnr_db(&w, l.weight_axis)),
                    all_but_metric_drop: None,
                    confirmed: true,
                });
            }
            method = "full evaluation of every configuration".to_string();
        }
    }
    let one_at_a_time_s = t_one.elapsed().as_secs_f64();
    // Everything but the layer, for the top of the ranking.
    let mut order: Vec<usize> = (0..sens.len()).collect();
    order.sort_by(|&a, &b| rank(&sens[a], &sens[b]));
    for &i in order.iter().take(3) {
        progress(&format!("all but {}", sens[i].node));
        let (r, _, _) = runner.run(&build(std::slice::from_ref(&sens[i].node))?)?;
        sens[i].all_but_metric_drop = Some((fp32_metric - r.metric) * 100.0);
    }
    let cost = Cost {
        full_evaluation_s,
        one_at_a_time_s,
        full_evaluations_per_layer: one_at_a_time_s
            / (layers.len().max(1) as f64 * full_evaluation_s.max(1e-9)),
        method,
    };
    // Most sensitive first: the metric drop of quantizing the layer alone, then its KL.
    sens.sort_by(rank);
    let order: Vec<String> = sens.iter().map(|s| s.node.clone()).collect();
    let mut front = vec![FrontPoint {
        method: "none".into(),
        keep_float: Vec::new(),
        n_float_layers: 0,
        metric: all_r.metric,
        kl: all_r.kl_mean,
        passes: all_r.passes,
        model_bytes: all_bytes,
    }];
    let point = |runner: &mut Runner, method: &str, k: usize| -> Result<FrontPoint, QuantError> {
        let keep: Vec<String> = order.iter().take(k).cloned().collect();
        let (r, _, bytes) = runner.run(&build(&keep)?)?;
        Ok(FrontPoint {
            method: method.into(),
            n_float_layers: keep.len(),
            keep_float: keep,
            metric: r.metric,
            kl: r.kl_mean,
            passes: r.passes,
            model_bytes: bytes,
        })
    };
    if !all_r.passes {
        // Greedy: keep the next most sensitive layer until the policy passes.
        for k in 1..=order.len() {
            progress(&format!("greedy: {k} layer(s) in float"));
            let p = point(&mut runner, "greedy", k)?;
            let done = p.passes;
            front.push(p);
            if done {
                break;
            }
        }
        // Bisection over the same ranking: smallest k whose top-k set passes (assumes
        // keeping more layers never hurts; reported apart so a violation is visible).
        let (mut lo, mut hi) = (0usize, order.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            progress(&format!("bisection: {mid} layer(s) in float"));
            let p = point(&mut runner, "bisection", mid)?;
            if p.passes {
                hi = mid;
            } else {
                lo = mid;
            }
            front.push(p);
        }
    }
    // Keeping every layer in float is the FP32 model, not a mixed-precision answer.
    let n_layers = layers.len();
    let best = front
        .iter()
        .filter(|p| p.passes && p.n_float_layers < n_layers)
        .min_by(|a, b| {
            a.n_float_layers
                .cmp(&b.n_float_layers)
                .then(b.metric.total_cmp(&a.metric))
        })
        .or_else(|| {
            front
                .iter()
                .filter(|p| p.n_float_layers < n_layers)
                .max_by(|a, b| a.metric.total_cmp(&b.metric))
        })
        .cloned()
        .map(|mut p| {
            p.passes = p.passes && p.n_float_layers < n_layers;
            p
        })
        .ok_or_else(|| QuantError::Model("no configuration was evaluated".into()))?;
    let keep = best.keep_float.clone();
    let localisation = quantized
        .map(|q| localise(fp32, q, layers, &fp32_path, &mut runner))
        .transpose()?;
    Ok(Analysis {
        fp32_metric,
        all_int8: all_r,
        layers: sens,
        recommendation: Recommendation {
            metric: best.metric,
            n_float_layers: keep.len(),
            passes: best.passes,
            ort_nodes_to_exclude: keep.clone(),
            tensorrt_layer_precisions: keep
                .iter()
                .map(|n| format!("{n}:{float_type}"))
                .collect::<Vec<_>>()
                .join(","),
            nncf_ignored_scope: serde_json::json!({ "names": keep }),
            keep_float: keep,
        },
        front,
        evaluations: runner.count,
        localisation,
        cost,
    })
}

/// SQNR (dB) of `b` against `a`, same shape; `None` when identical or not comparable.
fn output_sqnr(a: &Array, b: &Array) -> Option<f64> {
    match (a.to_f64(), b.to_f64()) {
        (Some(x), Some(y)) if x.len() == y.len() => {
            tensor_divergence(&x, &y, a.row_len().max(1)).sqnr_db
        }
        _ => None,
    }
}

fn rank(a: &LayerSensitivity, b: &LayerSensitivity) -> std::cmp::Ordering {
    b.metric_drop
        .total_cmp(&a.metric_drop)
        .then(b.kl.unwrap_or(0.0).total_cmp(&a.kl.unwrap_or(0.0)))
}

fn localise(
    fp32: &pb::ModelProto,
    q: &pb::ModelProto,
    layers: &[Layer],
    fp32_path: &Path,
    runner: &mut Runner,
) -> Result<Localisation, QuantError> {
    let q_outputs: std::collections::HashSet<String> =
        node_outputs(q)?.into_iter().map(|(o, _)| o).collect();
    let common: Vec<(String, String)> = node_outputs(fp32)?
        .into_iter()
        .filter(|(o, _)| q_outputs.contains(o))
        .collect();
    let names: Vec<String> = common.iter().map(|(o, _)| o.clone()).collect();
    // What the quantized model's readers see: the DequantizeLinear output where a tensor
    // goes through a Q/DQ pair (a folded Relu only applies there).
    let qg = graph(q)?;
    let seen: Vec<String> = names
        .iter()
        .map(|t| {
            qg.node
                .iter()
                .find(|n| n.op_type == "QuantizeLinear" && n.input.first() == Some(t))
                .and_then(|qn| {
                    qg.node.iter().find(|d| {
                        d.op_type == "DequantizeLinear" && d.input.first() == qn.output.first()
                    })
                })
                .and_then(|d| d.output.first().cloned())
                .unwrap_or_else(|| t.clone())
        })
        .collect();
    let q_path = runner.scratch.join("quantized.onnx");
    write_model(q, &q_path)?;
    let n = runner.eval.samples().min(128);
    let a = runner.eval.tensors(fp32_path, &names, n)?;
    let b = runner.eval.tensors(&q_path, &seen, n)?;
    let mut activations = Vec::new();
    for (((name, op), x), y) in common.iter().zip(&a).zip(&b) {
        let (Some(xv), Some(yv)) = (x.to_f64(), y.to_f64()) else {
            continue;
        };
        if xv.len() != yv.len() {
            continue;
        }
        let d = tensor_divergence(&xv, &yv, x.row_len().max(1));
        activations.push(TensorError {
            tensor: name.clone(),
            op_type: op.clone(),
            sqnr_db: d.sqnr_db,
            cosine: d.cosine_mean,
            max_abs: d.max_abs,
        });
    }
    let mut first_jump = None;
    let mut worst = 0.0;
    let mut prev = f64::INFINITY;
    for t in &activations {
        let s = t.sqnr_db.unwrap_or(f64::INFINITY);
        let fall = if prev.is_finite() { prev - s } else { 0.0 };
        if fall > worst {
            worst = fall;
            first_jump = Some(t.tensor.clone());
        }
        prev = s;
    }
    let g = graph(fp32)?;
    let weights = layers
        .iter()
        .map(|l| {
            let sqnr = match (
                float_initializer(g, &l.weight),
                effective_weight(q, &l.node, l.weight_slot),
            ) {
                (Some(w), Some(e)) if w.values.len() == e.len() => {
                    let signal: f64 = w.values.iter().map(|v| (*v as f64).powi(2)).sum();
                    let noise: f64 = w
                        .values
                        .iter()
                        .zip(&e)
                        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                        .sum();
                    (noise > 0.0).then(|| 10.0 * (signal / noise).log10())
                }
                _ => None,
            };
            (l.node.clone(), sqnr)
        })
        .collect();
    Ok(Localisation {
        activations,
        weights,
        first_jump,
    })
}

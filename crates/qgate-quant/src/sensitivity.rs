//! Which layers quantization hurts, and the smallest set to keep in float: one-at-a-time
//! sensitivity (only this layer quantized; everything but this layer), error localisation
//! against an existing QDQ model, and the mixed-precision search (greedy by sensitivity and
//! bisection over the ranking, Polygraphy `debug precision` style), reporting the whole
//! trade-off front. Evaluation is the caller's ([`Evaluator`]): this crate edits graphs.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use prost::Message;
use qgate_core::divergence::tensor_divergence;
use qgate_core::Array;
use qgate_runtime::onnx_pb as pb;
use serde::Serialize;

use crate::graph::{float_initializer, graph, node_outputs, Layer};
use crate::qdq::{effective_weight, sqnr_db, weight_sqnr_db};
use crate::QuantError;

/// What one evaluation of a model on the evaluation subset gives.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// A light measurement of one model: the task metric and output divergence against the
/// FP32 model on some samples, without the policy's verdict.
#[derive(Debug, Clone)]
pub struct Probe {
    pub rows: usize,
    /// Task metric (top-1 accuracy, fraction).
    pub metric: f64,
    /// The FP32 model's metric on the same samples.
    pub baseline_metric: f64,
    /// Mean KL(FP32 ‖ model) of the class probabilities.
    pub kl_mean: Option<f64>,
    /// Mean squared difference of the score output (logits or probabilities).
    pub mse: Option<f64>,
    /// The tensors asked for, over those samples.
    pub tensors: Vec<Array>,
}

/// Evaluates model files on the evaluation data against the FP32 model.
pub trait Evaluator {
    /// Samples of the evaluation data.
    fn samples(&self) -> usize;
    /// Samples per inference call.
    fn batch_size(&self) -> usize;
    /// Runs the FP32 model at `path` on every sample once: the reference of everything
    /// after. Returns its metric and the tensors `names` (FP32 activations to cache), over
    /// every sample while they take at most `budget` bytes, else over the first `min_rows`.
    fn reference(
        &mut self,
        path: &Path,
        names: &[String],
        min_rows: usize,
        budget: usize,
    ) -> Result<(f64, Vec<Array>), QuantError>;
    /// Metric, divergence and the policy's verdict of the model at `path` on every sample,
    /// against the reference.
    fn evaluate(&mut self, path: &Path) -> Result<EvalResult, QuantError>;
    /// Metric and divergence of the model at `path` on the samples `rows`, with the tensors
    /// `names`. `feed` gives its inputs by name (cached activations of every sample up to
    /// `rows.end`); `None` feeds the evaluation data.
    fn probe(
        &mut self,
        path: &Path,
        feed: Option<&[(&str, &Array)]>,
        rows: Range<usize>,
        names: &[String],
    ) -> Result<Probe, QuantError>;
    /// The named tensors of the model at `path` over the samples `rows`, stacked.
    fn tensors(
        &mut self,
        path: &Path,
        names: &[String],
        rows: Range<usize>,
    ) -> Result<Vec<Array>, QuantError>;
    /// Keeps these models loaded (and drops the others) until the next call.
    fn pin(&mut self, paths: &[PathBuf]);
}

/// Builds the model that quantizes only `layer`, cut to start at the layer's activation
/// cut inputs (everything before it is FP32, so cached FP32 activations can feed it).
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

/// What the analysis cost.
#[derive(Debug, Clone, Serialize)]
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
    /// How the layers were analysed.
    pub method: CostMethod,
}

/// How the one-at-a-time analysis ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CostMethod {
    /// Each layer's graph from its inputs on, fed FP32 activations the reference pass
    /// recorded (`false`: whole models, the given quantized model with one layer's Q/DQ kept).
    pub cut_graphs: bool,
    /// Samples the proxy ranking used.
    pub proxy: usize,
    /// Samples in all.
    pub samples: usize,
    /// Layers at the top of the proxy ranking confirmed on every sample.
    pub confirmed: usize,
}

/// Builds the model that keeps `keep_float` in float and quantizes every other layer.
pub type Builder<'a> = &'a dyn Fn(&[String]) -> Result<pb::ModelProto, QuantError>;

/// One layer's sensitivity.
#[derive(Debug, Clone, Serialize)]
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

/// A configuration on the trade-off front.
#[derive(Debug, Clone, Serialize)]
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
    /// The written model (in the scratch directory).
    #[serde(skip)]
    pub model: PathBuf,
    /// Latency measured by `qgate bench`'s engine, filled in by the caller.
    pub latency: Option<FrontLatency>,
}

/// Latency of a front configuration against the FP32 model, measured in interleaved
/// rounds (batch 1).
#[derive(Debug, Clone, Serialize)]
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

/// The recommended configuration.
#[derive(Debug, Clone, Serialize)]
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
    /// The written model (in the scratch directory).
    #[serde(skip)]
    pub model: PathBuf,
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
    /// Writes `model` to a fresh scratch file.
    fn write(&mut self, model: &pb::ModelProto, stem: &str) -> Result<(PathBuf, u64), QuantError> {
        self.count += 1;
        let path = self.scratch.join(format!("{stem}_{}.onnx", self.count));
        let bytes = write_model(model, &path)?;
        Ok((path, bytes))
    }

    fn run(&mut self, model: &pb::ModelProto) -> Result<(EvalResult, PathBuf, u64), QuantError> {
        let (path, bytes) = self.write(model, "model")?;
        let r = self.eval.evaluate(&path)?;
        Ok((r, path, bytes))
    }
}

pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Layers confirmed on every sample after the proxy ranking.
const CONFIRM: usize = 3;

/// Cached FP32 activations cover every sample up to this size; past it only the proxy
/// samples are kept and the confirmed layers' inputs are computed again.
const CACHE_BYTES: usize = 1 << 30;

/// The proxy: the first quarter of the data, at least 128 samples, in whole batches.
fn proxy_rows(n: usize, batch: usize) -> usize {
    let want = 128.max(n / 4).min(n);
    if want < batch || want == n {
        return want;
    }
    want / batch * batch
}

/// Runs the analysis and the search. `builders.full(keep_float)` makes each configuration;
/// `fp32` is the float model; `quantized` the user's QDQ model, for error localisation.
pub fn analyze(
    fp32: &pb::ModelProto,
    quantized: Option<&pb::ModelProto>,
    layers: &[Layer],
    builders: Builders,
    eval: &mut dyn Evaluator,
    scratch: &Path,
    progress: Progress,
) -> Result<Analysis, QuantError> {
    let mut runner = Runner {
        eval,
        scratch: scratch.to_path_buf(),
        count: 0,
    };
    let n = runner.eval.samples();
    let proxy = proxy_rows(n, runner.eval.batch_size());
    let cut = builders.only.is_some();
    let cache_names = cache_names(layers, cut);
    progress("evaluating the FP32 model");
    let t_ref = Instant::now();
    let (fp32_path, _) = runner.write(fp32, "fp32")?;
    let (fp32_metric, cached) =
        runner
            .eval
            .reference(&fp32_path, &cache_names, proxy, CACHE_BYTES)?;
    let reference_s = t_ref.elapsed().as_secs_f64();
    progress("evaluating the fully quantized model");
    let t_full = Instant::now();
    let (all_r, all_path, all_bytes) = runner.run(&(builders.full)(&[])?)?;
    let full_evaluation_s = t_full.elapsed().as_secs_f64();

    let pass = Pass {
        fp32: graph(fp32)?,
        layers,
        builders: &builders,
        n,
        proxy,
        fp32_path: &fp32_path,
        cache: Cache {
            complete: cached.first().is_some_and(|a| a.n_rows() >= n),
            names: &cache_names,
            arrays: &cached,
        },
    };
    let t_one = Instant::now();
    let mut sens = pass.one_at_a_time(&mut runner, progress)?;
    let one_at_a_time_s = t_one.elapsed().as_secs_f64();
    let t_all_but = Instant::now();
    pass.all_but(&mut runner, &mut sens, progress)?;
    let cost = Cost {
        reference_s,
        full_evaluation_s,
        one_at_a_time_s,
        full_evaluations_per_layer: one_at_a_time_s
            / (layers.len().max(1) as f64 * full_evaluation_s.max(1e-9)),
        all_but_s: t_all_but.elapsed().as_secs_f64(),
        method: pass.method(),
    };

    sens.sort_by(rank);
    let ranked_by = ranked_by(&sens, CONFIRM);
    let order: Vec<String> = sens.iter().map(|s| s.node.clone()).collect();
    let mut front = vec![FrontPoint {
        method: "none".into(),
        keep_float: Vec::new(),
        n_float_layers: 0,
        metric: all_r.metric,
        kl: all_r.kl_mean,
        passes: all_r.passes,
        model_bytes: all_bytes,
        model: all_path,
        latency: None,
    }];
    let monotone = if all_r.passes {
        None
    } else {
        let mut point = |method: &str, keep: Vec<String>| {
            add_point(&mut runner, &mut front, builders.full, method, keep)
        };
        Some(search(&order, &mut point, progress)?)
    };
    let best = recommend(&front, layers.len())?;
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
                .map(|n| format!("{n}:{}", builders.float_type))
                .collect::<Vec<_>>()
                .join(","),
            nncf_ignored_scope: serde_json::json!({ "names": keep }),
            keep_float: keep,
            model: best.model,
        },
        front,
        ranked_by,
        evaluations: runner.count,
        proxy_samples: proxy,
        monotone,
        localisation,
        cost,
    })
}

/// The tensors the FP32 reference pass records: every layer's output and, with qgate's own
/// quantization (`cut`), its inputs — each layer's model then starts at its inputs (all
/// before it is FP32 anyway) and is fed them; else whole models run and only the outputs
/// are needed.
fn cache_names(layers: &[Layer], cut: bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for l in layers {
        let inputs = if cut { l.cut_inputs.as_slice() } else { &[] };
        for t in inputs.iter().chain(std::iter::once(&l.output)) {
            if !names.contains(t) {
                names.push(t.clone());
            }
        }
    }
    names
}

/// The FP32 tensors the reference pass kept.
struct Cache<'a> {
    names: &'a [String],
    arrays: &'a [Array],
    /// Whether they cover every sample (else only the proxy's).
    complete: bool,
}

impl Cache<'_> {
    fn of(&self, t: &str) -> Option<&Array> {
        self.entry(t).map(|(_, a)| a)
    }

    /// The cached tensor's name (borrowed from the cache) and values.
    fn entry(&self, t: &str) -> Option<(&str, &Array)> {
        let k = self.names.iter().position(|x| x == t)?;
        Some((self.names[k].as_str(), &self.arrays[k]))
    }
}

/// FP32 tensors fed to a cut model: `(tensor, values)`.
type Feed<'a> = Vec<(&'a str, &'a Array)>;

/// Evaluates one configuration of a search: `(method, layers kept in float)` → passes.
type PointFn<'a> = dyn FnMut(&str, Vec<String>) -> Result<bool, QuantError> + 'a;

/// What the per-layer passes share.
struct Pass<'a> {
    fp32: &'a pb::GraphProto,
    layers: &'a [Layer],
    builders: &'a Builders<'a>,
    n: usize,
    proxy: usize,
    fp32_path: &'a Path,
    cache: Cache<'a>,
}

impl Pass<'_> {
    fn cut(&self) -> bool {
        self.builders.only.is_some()
    }

    /// How the one-at-a-time figures were made, for the report.
    fn method(&self) -> CostMethod {
        CostMethod {
            cut_graphs: self.cut(),
            proxy: self.proxy,
            samples: self.n,
            confirmed: CONFIRM,
        }
    }

    /// Only this layer in INT8, for every layer: the proxy ranks, the top [`CONFIRM`] are
    /// confirmed on every sample, their models kept loaded meanwhile.
    fn one_at_a_time(
        &self,
        runner: &mut Runner,
        progress: Progress,
    ) -> Result<Vec<LayerSensitivity>, QuantError> {
        let mut sens: Vec<LayerSensitivity> = Vec::new();
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut proxies: Vec<Probe> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            progress(&format!(
                "layer {}/{}: {} (proxy, {} samples)",
                i + 1,
                self.layers.len(),
                l.node,
                self.proxy
            ));
            let (path, feed) = self.only_model(runner, l)?;
            let p = runner.eval.probe(
                &path,
                feed.as_deref(),
                0..self.proxy,
                std::slice::from_ref(&l.output),
            )?;
            let sqnr = match (self.cache.of(&l.output), p.tensors.first()) {
                (Some(a), Some(b)) => output_sqnr(a, b),
                _ => None,
            };
            sens.push(LayerSensitivity {
                node: l.node.clone(),
                op_type: l.op_type.clone(),
                metric_drop: (p.baseline_metric - p.metric) * 100.0,
                kl: p.kl_mean,
                mse: p.mse,
                sqnr_db: sqnr,
                weight_sqnr_db: float_initializer(self.fp32, &l.weight)
                    .and_then(|w| weight_sqnr_db(&w, l.weight_axis)),
                all_but_metric_drop: None,
                all_but_kl: None,
                confirmed: self.proxy == self.n,
            });
            paths.push(path);
            proxies.push(Probe {
                tensors: Vec::new(),
                ..p
            });
            // Keep the models of the current top candidates loaded for their confirmation.
            let top: Vec<PathBuf> = top_of(&sens, CONFIRM)
                .into_iter()
                .map(|k| paths[k].clone())
                .collect();
            runner.eval.pin(&top);
        }
        self.confirm(runner, &mut sens, &paths, &proxies, progress)?;
        runner.eval.pin(&[]);
        Ok(sens)
    }

    /// The model quantizing only `l`, and the FP32 tensors it is fed (cut models).
    fn only_model<'c>(
        &'c self,
        runner: &mut Runner,
        l: &Layer,
    ) -> Result<(PathBuf, Option<Feed<'c>>), QuantError> {
        match self.builders.only {
            Some(build_only) => {
                let feed: Vec<(&str, &Array)> = l
                    .cut_inputs
                    .iter()
                    .filter_map(|t| self.cache.entry(t))
                    .collect();
                let dims: Vec<(String, Vec<usize>)> = feed
                    .iter()
                    .map(|(t, a)| (t.to_string(), a.shape[1..].to_vec()))
                    .collect();
                Ok((runner.write(&build_only(l, &dims)?, "only")?.0, Some(feed)))
            }
            None => {
                let others: Vec<String> = self
                    .layers
                    .iter()
                    .filter(|x| x.node != l.node)
                    .map(|x| x.node.clone())
                    .collect();
                Ok((
                    runner.write(&(self.builders.full)(&others)?, "only")?.0,
                    None,
                ))
            }
        }
    }

    /// The proxy's top layers on the samples it did not see, weighed with the proxy's part
    /// by their samples.
    fn confirm(
        &self,
        runner: &mut Runner,
        sens: &mut [LayerSensitivity],
        paths: &[PathBuf],
        proxies: &[Probe],
        progress: Progress,
    ) -> Result<(), QuantError> {
        let top: Vec<usize> = top_of(sens, CONFIRM)
            .into_iter()
            .filter(|&k| !sens[k].confirmed)
            .collect();
        if top.is_empty() {
            return Ok(());
        }
        // The confirmed layers' FP32 inputs on every sample (cut models only).
        let inputs: Vec<String> = if self.cut() && !self.cache.complete {
            let mut v: Vec<String> = Vec::new();
            for &k in &top {
                for t in &self.layers[k].cut_inputs {
                    if !v.contains(t) {
                        v.push(t.clone());
                    }
                }
            }
            v
        } else {
            Vec::new()
        };
        let all_rows = if inputs.is_empty() {
            Vec::new()
        } else {
            runner.eval.tensors(self.fp32_path, &inputs, 0..self.n)?
        };
        let n = self.n;
        for &k in &top {
            progress(&format!("confirming {} on all {n} samples", sens[k].node));
            let feed: Option<Vec<(&str, &Array)>> = self.cut().then(|| {
                self.layers[k]
                    .cut_inputs
                    .iter()
                    .filter_map(|t| match inputs.iter().position(|x| x == t) {
                        Some(j) => Some((t.as_str(), &all_rows[j])),
                        None => self.cache.of(t).map(|a| (t.as_str(), a)),
                    })
                    .collect()
            });
            // The same tensors as the proxy asked for (the compiled plan is reused).
            let p = runner.eval.probe(
                &paths[k],
                feed.as_deref(),
                self.proxy..n,
                std::slice::from_ref(&self.layers[k].output),
            )?;
            let q = &proxies[k];
            let w = |a: f64, b: f64| (a * q.rows as f64 + b * p.rows as f64) / n as f64;
            let both = |a: Option<f64>, b: Option<f64>| Some(w(a?, b?));
            sens[k].metric_drop =
                w(q.baseline_metric - q.metric, p.baseline_metric - p.metric) * 100.0;
            sens[k].kl = both(q.kl_mean, p.kl_mean);
            sens[k].mse = both(q.mse, p.mse);
            sens[k].confirmed = true;
        }
        Ok(())
    }

    /// Everything but this layer in INT8, for every layer, on the proxy samples.
    fn all_but(
        &self,
        runner: &mut Runner,
        sens: &mut [LayerSensitivity],
        progress: Progress,
    ) -> Result<(), QuantError> {
        let count = sens.len();
        for (i, s) in sens.iter_mut().enumerate() {
            progress(&format!("all but {} ({}/{count})", s.node, i + 1));
            let model = (self.builders.full)(std::slice::from_ref(&s.node))?;
            let (path, _) = runner.write(&model, "all_but")?;
            let p = runner.eval.probe(&path, None, 0..self.proxy, &[])?;
            s.all_but_metric_drop = Some((p.baseline_metric - p.metric) * 100.0);
            s.all_but_kl = p.kl_mean;
        }
        Ok(())
    }
}

/// Evaluates the configuration keeping `keep` in float once and adds it to the front; a
/// search meeting it again only adds its name. Returns whether it passes the policy.
fn add_point(
    runner: &mut Runner,
    front: &mut Vec<FrontPoint>,
    build: Builder,
    method: &str,
    keep: Vec<String>,
) -> Result<bool, QuantError> {
    let mut sorted = keep.clone();
    sorted.sort();
    let same = |p: &FrontPoint| {
        let mut k = p.keep_float.clone();
        k.sort();
        k == sorted
    };
    if let Some(p) = front.iter_mut().find(|p| same(p)) {
        if !p.method.split('+').any(|m| m == method) {
            p.method = format!("{}+{method}", p.method);
        }
        return Ok(p.passes);
    }
    let (r, path, bytes) = runner.run(&build(&keep)?)?;
    front.push(FrontPoint {
        method: method.into(),
        n_float_layers: keep.len(),
        keep_float: keep,
        metric: r.metric,
        kl: r.kl_mean,
        passes: r.passes,
        model_bytes: bytes,
        model: path,
        latency: None,
    });
    Ok(r.passes)
}

/// The searches over the ranking `order` (most sensitive first), for a model whose fully
/// quantized form fails: greedy (keep the next layer in float until the policy passes),
/// bisection (the smallest k whose top-k set passes, assuming more float layers never hurt;
/// Polygraphy `debug precision` style) and prune (drop each layer of the greedy set, least
/// sensitive first, while it still passes). `point(method, keep_float)` evaluates one
/// configuration (once per set). Returns whether passing was monotone along the ranking:
/// no top-k set that passes is followed by a larger one that fails.
pub(crate) fn search(
    order: &[String],
    point: &mut PointFn,
    progress: Progress,
) -> Result<bool, QuantError> {
    let top_k = |k: usize| order.iter().take(k).cloned().collect::<Vec<_>>();
    let mut along: Vec<(usize, bool)> = Vec::new();
    let mut judge = |method: &str, k: usize, keep: Vec<String>| -> Result<bool, QuantError> {
        let on_ranking = keep == top_k(k);
        let passes = point(method, keep)?;
        if on_ranking && !along.iter().any(|(j, _)| *j == k) {
            along.push((k, passes));
        }
        Ok(passes)
    };
    let mut greedy_k = None;
    for k in 1..=order.len() {
        progress(&format!("greedy: {k} layer(s) in float"));
        if judge("greedy", k, top_k(k))? {
            greedy_k = Some(k);
            break;
        }
    }
    let (mut lo, mut hi) = (0usize, order.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        progress(&format!("bisection: {mid} layer(s) in float"));
        if judge("bisection", mid, top_k(mid))? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if let Some(k) = greedy_k.filter(|&k| k >= 2) {
        let mut keep = top_k(k);
        for layer in top_k(k).into_iter().rev() {
            if keep.len() < 2 {
                break;
            }
            let fewer: Vec<String> = keep.iter().filter(|x| **x != layer).cloned().collect();
            progress(&format!("prune: without {layer}"));
            let k = fewer.len();
            if judge("prune", k, fewer.clone())? {
                keep = fewer;
            }
        }
    }
    along.sort();
    Ok(along.windows(2).all(|w| !w[0].1 || w[1].1))
}

/// The recommendation: the passing configuration with the fewest float layers (ties: the
/// better metric), else the best metric. Keeping every layer in float is the FP32 model,
/// not a mixed-precision answer, so it is never chosen.
fn recommend(front: &[FrontPoint], n_layers: usize) -> Result<FrontPoint, QuantError> {
    front
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
        .ok_or_else(|| QuantError::Model("no configuration was evaluated".into()))
}

/// Indices of the `k` most sensitive layers so far.
fn top_of(sens: &[LayerSensitivity], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sens.len()).collect();
    order.sort_by(|&a, &b| rank(&sens[a], &sens[b]));
    order.truncate(k);
    order
}

/// SQNR (dB) of `b` against the first rows of `a`, same row shape; `None` when identical
/// or not comparable.
fn output_sqnr(a: &Array, b: &Array) -> Option<f64> {
    if a.shape.get(1..) != b.shape.get(1..) || a.n_rows() < b.n_rows() {
        return None;
    }
    match (a.to_f64(), b.to_f64()) {
        (Some(mut x), Some(y)) => {
            x.truncate(y.len());
            tensor_divergence(&x, &y, a.row_len().max(1)).sqnr_db
        }
        _ => None,
    }
}

/// A signal the layers are ranked by, in the order the ranking consults them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Metric drop with the layer alone quantized.
    MetricDrop,
    /// Mean KL(FP32 ‖ model), same setting.
    Kl,
    /// Mean squared logit difference, same setting.
    LogitMse,
}

impl Signal {
    /// Every signal, in ranking order.
    pub const ALL: [Signal; 3] = [Signal::MetricDrop, Signal::Kl, Signal::LogitMse];

    /// The layer's value of this signal (larger = more sensitive; unmeasured = 0).
    pub fn of(self, l: &LayerSensitivity) -> f64 {
        match self {
            Signal::MetricDrop => l.metric_drop,
            Signal::Kl => l.kl.unwrap_or(0.0),
            Signal::LogitMse => l.mse.unwrap_or(0.0),
        }
    }
}

/// Most sensitive first: the metric drop of quantizing the layer alone; where drops tie
/// (e.g. no single layer moves the metric), its KL; then its logit MSE.
fn rank(a: &LayerSensitivity, b: &LayerSensitivity) -> std::cmp::Ordering {
    Signal::ALL
        .iter()
        .map(|s| s.of(b).total_cmp(&s.of(a)))
        .fold(std::cmp::Ordering::Equal, std::cmp::Ordering::then)
}

/// The signals that decided the order of the first `k` layers of a ranked list (and which
/// layers made the cut): for each neighbouring pair the first signal that differs; the
/// deepest of them and every signal before it.
pub fn ranked_by(ranked: &[LayerSensitivity], k: usize) -> Vec<Signal> {
    let deepest = ranked
        .windows(2)
        .take(k)
        .map(|w| {
            Signal::ALL
                .iter()
                .position(|s| s.of(&w[0]) != s.of(&w[1]))
                .unwrap_or(Signal::ALL.len() - 1)
        })
        .max()
        .unwrap_or(0);
    Signal::ALL[..=deepest].to_vec()
}

/// The activation after which SQNR falls most from the one before it.
fn first_jump(activations: &[TensorError]) -> Option<String> {
    let mut first_jump = None;
    let mut worst = 0.0;
    let mut prev = f64::INFINITY;
    for t in activations {
        let s = t.sqnr_db.unwrap_or(f64::INFINITY);
        let fall = if prev.is_finite() { prev - s } else { 0.0 };
        if fall > worst {
            worst = fall;
            first_jump = Some(t.tensor.clone());
        }
        prev = s;
    }
    first_jump
}

/// Each layer's weight SQNR (dB) in `q` against the FP32 weight (`None`: not comparable).
fn weight_sqnr(
    fp32: &pb::ModelProto,
    q: &pb::ModelProto,
    layers: &[Layer],
) -> Result<Vec<(String, Option<f64>)>, QuantError> {
    let g = graph(fp32)?;
    Ok(layers
        .iter()
        .map(|l| {
            let sqnr = match (
                float_initializer(g, &l.weight),
                effective_weight(q, &l.node, l.weight_slot),
            ) {
                (Some(w), Some(e)) if w.values.len() == e.len() => {
                    sqnr_db(&w.values, e.iter().map(|v| *v as f64))
                }
                _ => None,
            };
            (l.node.clone(), sqnr)
        })
        .collect())
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
    let a = runner.eval.tensors(fp32_path, &names, 0..n)?;
    let b = runner.eval.tensors(&q_path, &seen, 0..n)?;
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
    let first_jump = first_jump(&activations);
    let weights = weight_sqnr(fp32, q, layers)?;
    Ok(Localisation {
        activations,
        weights,
        first_jump,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(node: &str, drop: f64, kl: f64, mse: f64) -> LayerSensitivity {
        LayerSensitivity {
            node: node.into(),
            op_type: "Conv".into(),
            metric_drop: drop,
            kl: Some(kl),
            mse: Some(mse),
            sqnr_db: None,
            weight_sqnr_db: None,
            all_but_metric_drop: None,
            all_but_kl: None,
            confirmed: true,
        }
    }

    fn ranked(mut layers: Vec<LayerSensitivity>) -> (Vec<String>, Vec<Signal>) {
        layers.sort_by(rank);
        let by = ranked_by(&layers, CONFIRM);
        (layers.into_iter().map(|l| l.node).collect(), by)
    }

    #[test]
    fn tied_metric_drops_are_ranked_by_kl_then_mse() {
        // No single layer moves the metric (the case that printed "+0.00 pp" three times).
        let (order, by) = ranked(vec![
            layer("a", 0.0, 0.001, 5.0),
            layer("b", 0.0, 0.009, 1.0),
            layer("c", 0.0, 0.004, 2.0),
            layer("d", 0.0, 0.004, 3.0),
        ]);
        assert_eq!(order, ["b", "d", "c", "a"]);
        assert_eq!(by, [Signal::MetricDrop, Signal::Kl, Signal::LogitMse]);
        // Distinct drops at the top: the metric alone decides.
        let (order, by) = ranked(vec![
            layer("a", 0.5, 0.001, 5.0),
            layer("b", 2.0, 0.0, 0.0),
            layer("c", 1.0, 0.004, 2.0),
            layer("d", 0.0, 0.9, 3.0),
        ]);
        assert_eq!(order, ["b", "c", "a", "d"]);
        assert_eq!(by, [Signal::MetricDrop]);
        // Ties only among the first two: KL breaks them and is named.
        let (order, by) = ranked(vec![layer("a", 1.0, 0.1, 0.0), layer("b", 1.0, 0.2, 0.0)]);
        assert_eq!(order, ["b", "a"]);
        assert_eq!(by, [Signal::MetricDrop, Signal::Kl]);
    }

    /// Runs [`search`] over layers `a`, `b`, `c`, `d` (most sensitive first) with a fake
    /// evaluator whose verdict `passes(keep)` is known; returns the calls and monotonicity.
    fn run_search(passes: impl Fn(&[String]) -> bool) -> (Vec<(String, Vec<String>)>, bool) {
        let order: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let mut calls = Vec::new();
        let mut point = |method: &str, keep: Vec<String>| {
            let p = passes(&keep);
            calls.push((method.to_string(), keep));
            Ok(p)
        };
        let monotone = search(&order, &mut point, &mut |_| {}).unwrap();
        (calls, monotone)
    }

    fn keep(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn greedy_and_bisection_find_the_smallest_passing_prefix() {
        // Passes once a and b are both float.
        let has = |k: &[String], n: &str| k.iter().any(|x| x == n);
        let (calls, monotone) = run_search(|k| has(k, "a") && has(k, "b"));
        let greedy: Vec<_> = calls.iter().filter(|c| c.0 == "greedy").collect();
        assert_eq!(greedy.len(), 2, "greedy stops at the first pass: {calls:?}");
        assert_eq!(greedy[1].1, keep(&["a", "b"]));
        // Bisection over 0..4: mid 2 passes, then mid 1 fails.
        let bisection: Vec<_> = calls
            .iter()
            .filter(|c| c.0 == "bisection")
            .map(|c| c.1.clone())
            .collect();
        assert_eq!(bisection, [keep(&["a", "b"]), keep(&["a"])]);
        // Prune tries dropping b, then a; neither passes alone.
        let prune: Vec<_> = calls
            .iter()
            .filter(|c| c.0 == "prune")
            .map(|c| c.1.clone())
            .collect();
        assert_eq!(prune, [keep(&["a"]), keep(&["b"])]);
        assert!(monotone);
    }

    #[test]
    fn prune_drops_layers_the_policy_does_not_need() {
        // Only c matters, but the ranking puts it third: greedy keeps a, b, c; prune
        // leaves c alone.
        let (calls, monotone) = run_search(|k| k.iter().any(|x| x == "c"));
        let prune: Vec<_> = calls
            .iter()
            .filter(|c| c.0 == "prune")
            .map(|c| (c.1.clone(), k_passes(&c.1)))
            .collect();
        fn k_passes(k: &[String]) -> bool {
            k.iter().any(|x| x == "c")
        }
        assert_eq!(
            prune,
            [
                (keep(&["a", "b"]), false),
                (keep(&["a", "c"]), true),
                (keep(&["c"]), true),
            ]
        );
        assert!(monotone);
    }

    #[test]
    fn a_pass_that_turns_into_a_fail_along_the_ranking_is_not_monotone() {
        // Only the top layer alone passes: keeping more layers in float hurts.
        let (_, monotone) = run_search(|k| k == keep(&["a"]).as_slice());
        assert!(!monotone);
        // Nothing passes: greedy walks the whole ranking, which stays monotone.
        let (calls, monotone) = run_search(|_| false);
        assert_eq!(calls.iter().filter(|c| c.0 == "greedy").count(), 4);
        assert!(monotone);
    }

    fn point(n_float: usize, metric: f64, passes: bool) -> FrontPoint {
        FrontPoint {
            method: "test".into(),
            keep_float: (0..n_float).map(|i| format!("l{i}")).collect(),
            n_float_layers: n_float,
            metric,
            kl: None,
            passes,
            model_bytes: 0,
            model: PathBuf::new(),
            latency: None,
        }
    }

    #[test]
    fn the_recommendation_is_the_smallest_passing_mix_never_all_float() {
        let front = [
            point(0, 0.90, false),
            point(2, 0.95, true),
            point(1, 0.96, true),
            point(1, 0.97, true),
            point(4, 0.99, true),
        ];
        let best = recommend(&front, 4).unwrap();
        assert_eq!((best.n_float_layers, best.metric), (1, 0.97));
        // No mix passes: the best metric short of all-float, marked as failing.
        let front = [
            point(0, 0.90, false),
            point(2, 0.93, false),
            point(4, 0.99, true),
        ];
        let best = recommend(&front, 4).unwrap();
        assert_eq!((best.n_float_layers, best.passes), (2, false));
        assert!(recommend(&[point(4, 0.99, true)], 4).is_err());
    }
}

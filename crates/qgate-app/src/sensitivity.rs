//! `qgate sensitivity`: which layers quantization hurts, and a mixed-precision model that
//! meets the policy. Reads the model and data, calibrates (or takes a given QDQ model),
//! runs `qgate_quant::analyze` with `qgate_eval::SubsetEvaluator`, times the trade-off
//! front as `qgate bench` does, writes `mixed.onnx` (and `model_normalized.onnx` when qgate
//! renamed nodes) and returns the report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use qgate_core::policy::Policy;
use qgate_data::{ArrayKeys, Dataset};
use qgate_eval::InputMapping;
use qgate_quant::{
    analyze, calibrate, quantizable_layers, quantize_layers, strip_qdq, Layer, Normalization,
    QuantError,
};
use qgate_report::Report;
use qgate_runtime::onnx_pb as pb;
use qgate_runtime::{load, LoadOptions, ModelSpec};

use crate::error::{io, AppError, Context};
use crate::measure::{measure, Pair, PerfConfig, Workers};

/// Precision of the layers kept out of INT8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatType {
    /// Their FP32 weights (the model's own).
    #[default]
    Fp32,
    Fp16,
}

impl FloatType {
    /// `fp32` or `fp16`, as the exclusion lists write it.
    pub fn name(self) -> &'static str {
        match self {
            FloatType::Fp32 => "fp32",
            FloatType::Fp16 => "fp16",
        }
    }
}

/// The runtime that times the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatencyRuntime {
    /// tract, embedded.
    #[default]
    Tract,
    /// ONNX Runtime on the CPU.
    Ort,
}

/// Everything `qgate sensitivity` needs, validated.
#[derive(Debug, Clone)]
pub struct SensitivityConfig {
    /// The FP32 model.
    pub model: PathBuf,
    /// Labelled evaluation data.
    pub data: PathBuf,
    /// Calibration data; `None` splits `data`.
    pub calibration: Option<PathBuf>,
    /// A given QDQ model to analyse instead of quantizing `model`.
    pub quantized: Option<PathBuf>,
    /// The gate each configuration is judged by.
    pub policy: Policy,
    /// Report folder; `mixed.onnx` goes there.
    pub out: PathBuf,
    /// Activation calibration.
    pub method: CalibMethod,
    /// Precision of the kept layers (`Fp16` only with qgate's own quantization).
    pub float_type: FloatType,
    /// `--calib-samples` as given; `None` = 200 (clamped to a third of the data when the
    /// data is split, never clamped when given).
    pub calib_samples: Option<usize>,
    /// Evaluate on at most this many samples.
    pub limit: Option<usize>,
    /// Which arrays hold labels and ids.
    pub keys: ArrayKeys,
    /// How image folders become tensors (the calibration folder too).
    pub images: qgate_data::ImagePreprocess,
    /// Which arrays feed which model inputs.
    pub mapping: InputMapping,
    /// Samples per inference call.
    pub batch_size: usize,
    /// Seconds per side to time each configuration of the front; 0 = no timing.
    pub bench_seconds: f64,
    /// The runtime that times the front.
    pub latency_runtime: LatencyRuntime,
    /// Runtime options of the timing workers.
    pub bench_load: LoadOptions,
    /// The qgate binary (its `__worker` times the front).
    pub worker_exe: PathBuf,
}

/// Calibration samples when `--calib-samples` is not given.
pub const DEFAULT_CALIB_SAMPLES: usize = 200;

pub use qgate_quant::CalibMethod;

/// How activations are calibrated unless told otherwise.
pub const DEFAULT_METHOD: qgate_quant::CalibMethod = qgate_quant::CalibMethod::MinMax;

/// Samples per inference call of the search's evaluations.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Seconds per side that time each configuration of the front against FP32 (0: none).
pub const DEFAULT_BENCH_SECONDS: f64 = 1.0;

/// The model, its layers and the data, read and split.
struct Inputs {
    fp32: pb::ModelProto,
    normalization: Normalization,
    layers: Vec<Layer>,
    quantized: Option<pb::ModelProto>,
    data: Dataset,
    calib: Option<Dataset>,
    calib_source: String,
}

/// Runs the analysis and writes `mixed.onnx` into `cfg.out`; the caller exports the report.
pub fn run(cfg: &SensitivityConfig, progress: &mut dyn FnMut(&str)) -> Result<Report, AppError> {
    let started = Instant::now();
    let inputs = read_inputs(cfg)?;
    let mapping = &cfg.mapping;
    let ranges = match &inputs.calib {
        Some(calib) => {
            progress("calibrating");
            activation_ranges(cfg, &inputs, calib, mapping)?
        }
        None => Default::default(),
    };
    let fp16 = cfg.float_type == FloatType::Fp16;
    let build = |keep: &[String]| build_config(&inputs, &ranges, fp16, keep);
    // With qgate's own quantization, "only this layer" models start at the layer's inputs
    // and are fed cached FP32 activations (everything before the layer is FP32 anyway).
    let build_only = |l: &Layer, feeds: &[(String, Vec<usize>)]| -> Result<_, QuantError> {
        let cut = qgate_quant::cut_at(&inputs.fp32, feeds)?;
        let cut_layers = quantizable_layers(&cut)?;
        let chosen = qgate_quant::select(&cut_layers, std::slice::from_ref(&l.node))?;
        quantize_layers(&cut, &chosen, &ranges)
    };
    let scratch = crate::error::scratch()?;
    let n_eval = inputs.data.len();
    let mut bench_data = inputs.data.clone();
    bench_data.subset(Some(64), None);
    let mut evaluator = evaluator(cfg, &inputs.data, scratch.path())?;
    let mut analysis = analyze(
        &inputs.fp32,
        inputs.quantized.as_ref(),
        &inputs.layers,
        qgate_quant::Builders {
            full: &build,
            only: if inputs.quantized.is_none() {
                Some(&build_only)
            } else {
                None
            },
            float_type: cfg.float_type.name(),
        },
        &mut evaluator,
        scratch.path(),
        progress,
    )?;
    let latency = if cfg.bench_seconds > 0.0 {
        let timing = FrontTiming {
            data: &bench_data,
            mapping,
            runtime: cfg.latency_runtime,
            load: &cfg.bench_load,
            seconds: cfg.bench_seconds,
            exe: &cfg.worker_exe,
        };
        Some(time_front(
            &mut analysis,
            &cfg.model,
            &timing,
            scratch.path(),
            progress,
        )?)
    } else {
        None
    };
    let (mixed, normalized) = write_models(cfg, &inputs, &analysis)?;
    let outcome = Outcome {
        analysis,
        latency,
        mixed,
        normalized,
        n_eval,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(report(cfg, inputs, outcome))
}

/// The model of one configuration: every layer INT8 but `keep` — the given QDQ model with
/// the kept layers' Q/DQ removed, or qgate's own quantization with the kept layers left in
/// float (FP16 weights with `--float-type fp16`).
fn build_config(
    inputs: &Inputs,
    ranges: &Ranges,
    fp16: bool,
    keep: &[String],
) -> Result<pb::ModelProto, QuantError> {
    if let Some(q) = &inputs.quantized {
        return strip_qdq(q, keep, Some(&inputs.fp32));
    }
    let (kept, chosen): (Vec<&Layer>, Vec<&Layer>) =
        inputs.layers.iter().partition(|l| keep.contains(&l.node));
    let q = quantize_layers(&inputs.fp32, &chosen, ranges)?;
    if fp16 {
        qgate_quant::layers_to_fp16(&q, &kept)
    } else {
        Ok(q)
    }
}

/// The evaluator of configurations on the evaluation subset. 200 resamples: the search
/// judges points, and each configuration's interval is not reported.
fn evaluator(
    cfg: &SensitivityConfig,
    data: &Dataset,
    scratch: &Path,
) -> Result<qgate_eval::SubsetEvaluator, AppError> {
    let eval_opts = qgate_eval::EvalOptions {
        batch_size: cfg.batch_size,
        inputs: cfg.mapping.clone(),
        bootstrap: qgate_core::stats::BootstrapSettings {
            resamples: 200,
            ..Default::default()
        },
        ..Default::default()
    };
    qgate_eval::SubsetEvaluator::new(
        data.clone(),
        cfg.policy.clone(),
        eval_opts,
        LoadOptions::default(),
        scratch,
    )
    .map_err(AppError::from)
}

/// Activation ranges by tensor name.
type Ranges = std::collections::BTreeMap<String, qgate_quant::Range>;

/// What the analysis produced, for the report.
struct Outcome {
    analysis: qgate_quant::Analysis,
    latency: Option<qgate_report::FrontLatencyInfo>,
    mixed: PathBuf,
    normalized: Option<PathBuf>,
    n_eval: usize,
    seconds: f64,
}

/// The sensitivity report: what was read, how it was calibrated, what came out.
fn report(cfg: &SensitivityConfig, inputs: Inputs, o: Outcome) -> Report {
    Report::from_sensitivity(
        qgate_report::SensitivityReport {
            model: cfg.model.display().to_string(),
            quantized: cfg.quantized.as_ref().map(|p| p.display().to_string()),
            calibration: qgate_report::CalibrationInfo {
                method: if inputs.quantized.is_some() {
                    "the given quantized model's own".into()
                } else {
                    cfg.method.name().into()
                },
                source: inputs.calib_source,
                samples: inputs.calib.as_ref().map_or(0, Dataset::len),
            },
            evaluation: qgate_report::SubsetInfo {
                source: cfg.data.display().to_string(),
                samples: o.n_eval,
            },
            analysis: (&o.analysis).into(),
            normalization: (&inputs.normalization).into(),
            normalized_model: o.normalized.map(|p| p.display().to_string()),
            mixed_model: o.mixed.display().to_string(),
            latency: o.latency,
            seconds: o.seconds,
        },
        &cfg.policy,
        &crate::host(),
    )
}

/// Reads the FP32 model (as exporters write it), its layers, the given QDQ model and the
/// data, and splits calibration from evaluation samples.
fn read_inputs(cfg: &SensitivityConfig) -> Result<Inputs, AppError> {
    let model_dir = cfg.model.parent().unwrap_or(Path::new("."));
    let (fp32, normalization) =
        qgate_quant::normalize(qgate_runtime::read_onnx(&cfg.model)?, model_dir)
            .with_context(|| cfg.model.display().to_string())?;
    let layers = quantizable_layers(&fp32)?;
    if layers.is_empty() {
        return Err(AppError::Invalid(format!(
            "{}: no quantizable layer (Conv, Gemm or MatMul with a float weight, as an initializer or a Constant node)",
            cfg.model.display()
        )));
    }
    let quantized = match &cfg.quantized {
        Some(p) => Some(read_qdq(p)?),
        None => None,
    };
    let mut data = Dataset::load(&cfg.data, &cfg.keys, &cfg.images)?;
    let (mut calib, calib_source) = split_calibration(cfg, &mut data)?;
    // The calibration run feeds its samples in batches from memory.
    if let Some(c) = &mut calib {
        c.materialize()?;
    }
    data.subset(cfg.limit, None);
    Ok(Inputs {
        fp32,
        normalization,
        layers,
        quantized,
        data,
        calib,
        calib_source,
    })
}

/// A `--quantized` model: QDQ, read as exporters write it.
fn read_qdq(p: &Path) -> Result<pb::ModelProto, AppError> {
    let dir = p.parent().unwrap_or(Path::new("."));
    let (q, _) = qgate_quant::normalize(qgate_runtime::read_onnx(p)?, dir)
        .with_context(|| p.display().to_string())?;
    let qdq = q.graph.as_ref().map_or(0, |g| {
        g.node
            .iter()
            .filter(|n| n.op_type == "DequantizeLinear")
            .count()
    });
    if qdq == 0 {
        return Err(AppError::Invalid(format!(
            "--quantized {}: no DequantizeLinear node; expected a QDQ model (e.g. from \
             onnxruntime.quantization.quantize_static with QuantFormat.QDQ), not a float or \
             QOperator one",
            p.display()
        )));
    }
    Ok(q)
}

/// The calibration samples and where they come from: none with `--quantized` (it brings
/// its own), the first `--calib-samples` of `--calibration`, else the first samples of the
/// data, which then evaluates on the rest only, so no sample is both.
fn split_calibration(
    cfg: &SensitivityConfig,
    data: &mut Dataset,
) -> Result<(Option<Dataset>, String), AppError> {
    let wanted = cfg.calib_samples.unwrap_or(DEFAULT_CALIB_SAMPLES);
    match (&cfg.quantized, &cfg.calibration) {
        (Some(q), _) => Ok((None, q.display().to_string())),
        (None, Some(p)) => {
            // Calibration needs no labels: only the id key carries over.
            let keys = ArrayKeys {
                label_key: None,
                id_key: cfg.keys.id_key.clone(),
            };
            let mut c = Dataset::load(p, &keys, &cfg.images)?;
            if cfg.calib_samples.is_some_and(|k| k > c.len()) {
                return Err(AppError::Invalid(format!(
                    "--calib-samples {wanted}: {} holds {} samples; give at most {}",
                    p.display(),
                    c.len(),
                    c.len()
                )));
            }
            c.subset(Some(wanted), None);
            let src = format!("{} (first {} samples)", p.display(), c.len());
            Ok((Some(c), src))
        }
        (None, None) => {
            let n = data.len();
            if cfg.calib_samples.is_some_and(|k| k > n / 3) {
                return Err(AppError::Invalid(format!(
                    "--calib-samples {wanted}: without --calibration at most a third of {}'s {n} \
                     samples ({}) calibrate so that the rest evaluate; give at most {} or a \
                     separate --calibration file",
                    cfg.data.display(),
                    n / 3,
                    n / 3
                )));
            }
            let k = wanted.min(n / 3);
            let mut c = data.clone();
            c.select(&(0..k).collect::<Vec<_>>());
            data.select(&(k..n).collect::<Vec<_>>());
            let src = format!(
                "the first {k} samples of {} (no --calibration given; evaluation uses the other {})",
                cfg.data.display(),
                n - k
            );
            Ok((Some(c), src))
        }
    }
}

/// Activation ranges of every quantized tensor, from the FP32 model run on `calib`.
fn activation_ranges(
    cfg: &SensitivityConfig,
    inputs: &Inputs,
    calib: &Dataset,
    mapping: &InputMapping,
) -> Result<Ranges, AppError> {
    let spec = ModelSpec::parse(&cfg.model.display().to_string())?;
    let mut m = load(&spec, &LoadOptions::default())?;
    let bindings = qgate_eval::resolve_inputs(m.info(), calib, mapping)
        .map_err(|e| AppError::Invalid(format!("calibration data: {e}")))?;
    let arrays: Vec<&qgate_core::Array> = bindings
        .iter()
        .filter_map(|b| calib.arrays.get(&b.array))
        .collect();
    let batches: Vec<Vec<qgate_core::Array>> = (0..calib.len())
        .step_by(cfg.batch_size)
        .map(|s| {
            let idx: Vec<usize> = (s..(s + cfg.batch_size).min(calib.len())).collect();
            arrays.iter().map(|a| a.select_rows(&idx)).collect()
        })
        .collect();
    let all: Vec<&Layer> = inputs.layers.iter().collect();
    let tensors = qgate_quant::quantized_tensors(&inputs.fp32, &all)?;
    Ok(calibrate(m.as_mut(), &batches, &tensors, cfg.method)?)
}

/// Writes `mixed.onnx`, and `model_normalized.onnx` when qgate read the model differently
/// from the file (the exclusion lists name that model's nodes, generated names included).
fn write_models(
    cfg: &SensitivityConfig,
    inputs: &Inputs,
    analysis: &qgate_quant::Analysis,
) -> Result<(PathBuf, Option<PathBuf>), AppError> {
    std::fs::create_dir_all(&cfg.out).map_err(io(format!(
        "cannot create output directory {}",
        cfg.out.display()
    )))?;
    let mixed = cfg.out.join("mixed.onnx");
    let rec_model = &analysis.recommendation.model;
    std::fs::copy(rec_model, &mixed).map_err(io(format!(
        "cannot copy {} to {}",
        rec_model.display(),
        mixed.display()
    )))?;
    let normalized = if inputs.normalization.changed() {
        let p = cfg.out.join("model_normalized.onnx");
        qgate_quant::write_model(&inputs.fp32, &p)?;
        Some(p)
    } else {
        None
    };
    Ok((mixed, normalized))
}

/// How the trade-off front is timed.
struct FrontTiming<'a> {
    data: &'a Dataset,
    mapping: &'a InputMapping,
    runtime: LatencyRuntime,
    load: &'a LoadOptions,
    seconds: f64,
    exe: &'a Path,
}

/// Times every configuration of the trade-off front against the FP32 model: batch 1,
/// interleaved rounds, each pair in its own worker processes, as `qgate bench` measures.
/// How each point of the front is timed against FP32: batch 1, ten interleaved rounds of
/// `t.seconds` per side, no sweeps and no output check (the search already compared outputs).
fn front_plan(t: &FrontTiming) -> PerfConfig {
    PerfConfig {
        plan: qgate_bench::Plan {
            batch: 1,
            warmup_seconds: 0.2,
            warmup_max_seconds: 2.0,
            seconds: t.seconds,
            rounds: 10,
            batch_sweep: Vec::new(),
            concurrency_sweep: Vec::new(),
            load_fractions: Vec::new(),
            offline_batch: None,
            output_check: false,
            ..Default::default()
        },
        perf_samples: t.data.len(),
        shapes: Default::default(),
        probe: Default::default(),
        tolerance: None,
    }
}

fn time_front(
    analysis: &mut qgate_quant::Analysis,
    fp32: &Path,
    t: &FrontTiming,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<qgate_report::FrontLatencyInfo, AppError> {
    let spec = |p: &Path| -> Result<ModelSpec, AppError> {
        let raw = match t.runtime {
            LatencyRuntime::Ort => format!("ort:{}", p.display()),
            LatencyRuntime::Tract => p.display().to_string(),
        };
        Ok(ModelSpec::parse(&raw)?)
    };
    let base = spec(fp32)?;
    let perf = front_plan(t);
    let none = Policy::default();
    let workers = Workers {
        exe: t.exe,
        scratch,
    };
    let mut fp32_median = None;
    let mut runtime = String::new();
    let n = analysis.front.len();
    for (i, point) in analysis.front.iter_mut().enumerate() {
        progress(&format!(
            "timing the front {}/{n}: {} layer(s) in float against FP32",
            i + 1,
            point.n_float_layers
        ));
        let path = &point.model;
        let candidate = spec(path)?;
        let pair = Pair {
            baseline: &base,
            candidate: &candidate,
            data: Some(t.data),
            mapping: t.mapping,
            load: t.load,
        };
        let (p, _) = measure(&pair, &perf, &none, &workers, &mut |_| {})
            .with_context(|| format!("timing {} against {}", path.display(), fp32.display()))?;
        fp32_median.get_or_insert(p.baseline.latency_ms.p50);
        if runtime.is_empty() {
            runtime = format!(
                "{} {}",
                p.candidate.runtime.runtime, p.candidate.runtime.runtime_version
            );
        }
        point.latency = Some(qgate_quant::FrontLatency {
            median_ms: p.candidate.latency_ms.p50,
            p99_ms: p.candidate.latency_ms.p99,
            speedup_vs_fp32: p.comparison.speedup,
            speedup_ci: p.comparison.speedup_ci,
        });
    }
    Ok(qgate_report::FrontLatencyInfo::new(
        runtime,
        t.seconds,
        fp32_median.unwrap_or(f64::NAN),
        t.runtime == LatencyRuntime::Tract,
    ))
}

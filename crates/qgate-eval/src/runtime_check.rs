//! The runtime check: before a quantized model's figures from tract are trusted, a few
//! samples run in tract and in onnxruntime's node-by-node execution (graph optimisations
//! off: the graph as the ONNX operator specs define it, the same on every CPU), and the two
//! must agree. tract has executed a construct differently from the specification before
//! (a quantized Softmax, see `qgate_runtime::tract_fix`); this guard catches the next such
//! construct instead of printing a wrong accuracy. When they disagree, every intermediate
//! tensor is compared in graph order and the first one beyond tolerance is named.

use std::path::Path;

use qgate_core::metrics::argmax;
use qgate_core::Array;
use qgate_data::Dataset;
use qgate_runtime::{load, LoadOptions, Model, ModelSpec, RuntimeError};
use serde::Serialize;

use crate::{resolve_inputs, run_model, select_scores, EvalError, EvalOptions};

/// Output differences allowed, in quantization steps of the output. Node-by-node, two
/// runtimes differ only where QuantizeLinear rounds an exact tie differently (tract
/// multiplies by 1/scale, the specification divides): one step at a tensor, measured to
/// grow to at most three steps at the logits.
pub const STEPS: f64 = 4.0;
/// Where the output has no quantization step (a float output): this fraction of the
/// reference output's largest magnitude.
pub const FLOAT_FRACTION: f64 = 0.01;
/// The least top-1 agreement (samples whose two best classes lie within the tolerance of
/// each other in the reference count as agreeing: either answer is right there).
pub const MIN_TOP1_AGREEMENT: f64 = 0.99;
/// Samples used to locate the first diverging tensor (every intermediate tensor is kept).
const LOCATE_SAMPLES: usize = 4;

/// What the check found for one side.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeCheck {
    /// `baseline` or `candidate`.
    pub side: String,
    /// The model file.
    pub model: String,
    /// The reference: runtime, version and settings.
    pub reference: String,
    /// Samples compared (the first ones of the data).
    pub samples: usize,
    /// The output compared (the score output).
    pub output: String,
    /// Fraction of samples with the same top-1 class.
    pub top1_agreement: f64,
    /// Largest absolute difference of the output.
    pub max_abs_diff: f64,
    /// The difference allowed.
    pub tolerance: f64,
    /// Where the tolerance comes from.
    pub tolerance_basis: String,
    /// Whether tract's outputs can be trusted for this model.
    pub passed: bool,
    /// The first tensor, in graph order, that differs beyond its tolerance (when the check
    /// failed and the tensors could be compared).
    pub first_diverging_tensor: Option<DivergingTensor>,
}

/// A tensor where tract and the reference part.
#[derive(Debug, Clone, Serialize)]
pub struct DivergingTensor {
    pub name: String,
    /// The op that produces it.
    pub op_type: String,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
    /// The difference allowed there.
    pub tolerance: f64,
}

/// Runs the first `settings.samples` samples of `data` through `model` (loaded in tract
/// from `path`) and through onnxruntime node by node, and compares the score output.
pub fn check_against_onnxruntime(
    side: &str,
    model: &mut dyn Model,
    path: &Path,
    data: &Dataset,
    opts: &EvalOptions,
    settings: &RuntimeCheckSettings,
    scratch: &Path,
) -> Result<RuntimeCheck, EvalError> {
    let (samples, ort) = (settings.samples, &settings.ort);
    let rt = |source: RuntimeError| EvalError::Runtime {
        side: side.into(),
        source,
    };
    let mut subset = data.clone();
    subset.select(&(0..samples.min(data.len())).collect::<Vec<_>>());
    let bindings = resolve_inputs(model.info(), &subset, &opts.inputs).map_err(|message| {
        EvalError::Inputs {
            side: side.into(),
            message,
        }
    })?;
    let reference_opts = reference_options(ort);
    let spec = ModelSpec::parse(&format!("ort:{}", path.display())).map_err(rt)?;
    let mut reference = load(&spec, &reference_opts).map_err(rt)?;
    let batch = opts.batch_size;
    let got = run_quietly(model, &subset, &bindings, batch).map_err(rt)?;
    let want = run_quietly(reference.as_mut(), &subset, &bindings, batch).map_err(rt)?;
    let scores =
        select_scores(&want, opts.output.as_deref(), opts.output_kind).map_err(|message| {
            EvalError::Outputs {
                side: side.into(),
                message,
            }
        })?;
    let (g, w) = score_pair(side, &scores.name, &got, &want)?;
    let proto = qgate_runtime::read_onnx(path).map_err(rt)?;
    let (tolerance, basis) = tolerance_of(&proto, &scores.name, &w);
    let (max_abs_diff, top1_agreement) = agreement(&g, &w, tolerance);
    let passed = top1_agreement >= MIN_TOP1_AGREEMENT && max_abs_diff <= tolerance;
    let provenance = reference.provenance();
    let mut check = RuntimeCheck {
        side: side.into(),
        model: path.display().to_string(),
        reference: format!(
            "{} {}, graph optimisations off (node by node)",
            provenance.runtime, provenance.runtime_version
        ),
        samples: subset.len(),
        output: scores.name.clone(),
        top1_agreement,
        max_abs_diff,
        tolerance,
        tolerance_basis: basis,
        passed,
        first_diverging_tensor: None,
    };
    if !passed {
        drop(reference);
        check.first_diverging_tensor =
            locate(model, &proto, &subset, &bindings, &reference_opts, scratch);
    }
    Ok(check)
}

/// The reference's load options: `ort` with graph optimisations off, one thread, on the CPU.
fn reference_options(ort: &LoadOptions) -> LoadOptions {
    LoadOptions {
        ort_optimize: false,
        threads: Some(1),
        device: None,
        ..ort.clone()
    }
}

/// [`run_model`] without progress reports.
fn run_quietly(
    model: &mut dyn Model,
    data: &Dataset,
    bindings: &[crate::InputBinding],
    batch: usize,
) -> Result<crate::ModelRun, RuntimeError> {
    run_model(model, data, bindings, batch, &mut |_, _| {})
}

/// `(got, want)`: the values of output `name` in each run; an error when either lacks it.
fn score_pair(
    side: &str,
    name: &str,
    got: &crate::ModelRun,
    want: &crate::ModelRun,
) -> Result<(Array, Array), EvalError> {
    let find = |run: &crate::ModelRun| {
        run.outputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| a.clone())
    };
    let (Some(g), Some(w)) = (find(got), find(want)) else {
        return Err(EvalError::Outputs {
            side: side.into(),
            message: format!("output '{name}' missing from one runtime"),
        });
    };
    Ok((g, w))
}

/// The tolerance of `output`: [`STEPS`] steps of its quantization grid, else
/// [`FLOAT_FRACTION`] of the reference's largest magnitude.
fn tolerance_of(
    proto: &qgate_runtime::onnx_pb::ModelProto,
    output: &str,
    reference: &Array,
) -> (f64, String) {
    match qgate_quant::quant_step(proto, output) {
        Some(step) => (
            STEPS * step,
            format!("{STEPS} steps of the output's quantization scale {step:.6}"),
        ),
        None => {
            let peak = reference
                .to_f64()
                .unwrap_or_default()
                .iter()
                .fold(0.0f64, |m, v| m.max(v.abs()));
            (
                FLOAT_FRACTION * peak,
                format!(
                    "{} % of the output's largest magnitude {peak:.4}",
                    FLOAT_FRACTION * 100.0
                ),
            )
        }
    }
}

/// `(max |got − want|, top-1 agreement)`; a sample whose two best reference classes lie
/// within `tolerance` agrees whichever of them `got` picks.
fn agreement(got: &Array, want: &Array, tolerance: f64) -> (f64, f64) {
    let (g, w) = (
        got.to_f64().unwrap_or_default(),
        want.to_f64().unwrap_or_default(),
    );
    if g.len() != w.len() || g.is_empty() {
        return (f64::INFINITY, 0.0);
    }
    let max = g
        .iter()
        .zip(&w)
        .map(|(a, b)| {
            if a.is_nan() && b.is_nan() {
                0.0
            } else {
                (a - b).abs()
            }
        })
        .fold(
            0.0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
    let c = want.row_len().max(1);
    let rows = w.len() / c;
    let agree = (0..rows)
        .filter(|&i| {
            let (a, b) = (&g[i * c..(i + 1) * c], &w[i * c..(i + 1) * c]);
            match (argmax(a), argmax(b)) {
                (Some(x), Some(y)) => x == y || (b[y] - b[x]).abs() <= tolerance,
                (None, None) => true,
                _ => false,
            }
        })
        .count();
    (max, agree as f64 / rows.max(1) as f64)
}

/// Compares every node output in graph order on a few samples; the first beyond its
/// tolerance (quantized tensors: [`STEPS`] steps; float tensors: [`FLOAT_FRACTION`] of
/// their largest magnitude, as divergence upstream spreads). `None` when the tensors
/// cannot be read from one of the runtimes.
fn locate(
    model: &mut dyn Model,
    proto: &qgate_runtime::onnx_pb::ModelProto,
    data: &Dataset,
    bindings: &[crate::InputBinding],
    reference_opts: &LoadOptions,
    scratch: &Path,
) -> Option<DivergingTensor> {
    let tensors = qgate_quant::node_outputs(proto).ok()?;
    let names: Vec<String> = tensors.iter().map(|(t, _)| t.clone()).collect();
    let all = qgate_quant::with_outputs(proto, &names).ok()?;
    let path = scratch.join("runtime_check_all_tensors.onnx");
    qgate_quant::write_model(&all, &path).ok()?;
    let spec = ModelSpec::parse(&format!("ort:{}", path.display())).ok()?;
    let mut reference = load(&spec, reference_opts).ok()?;
    let idx: Vec<usize> = (0..LOCATE_SAMPLES.min(data.len())).collect();
    let inputs: Vec<Array> = bindings
        .iter()
        .filter_map(|b| data.read_rows(&b.array, &idx).ok())
        .collect();
    let want = reference.run(&inputs).ok()?;
    let by_name: std::collections::HashMap<&str, &Array> = reference
        .info()
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .zip(&want)
        .collect();
    let got = model.run_tensors(&inputs, &names).ok()?;
    for ((name, op), g) in tensors.iter().zip(&got) {
        let Some(w) = by_name.get(name.as_str()) else {
            continue;
        };
        let (gv, wv) = (g.to_f64()?, w.to_f64()?);
        if gv.len() != wv.len() {
            return Some(DivergingTensor {
                name: name.clone(),
                op_type: op.clone(),
                max_abs_diff: f64::INFINITY,
                tolerance: 0.0,
            });
        }
        let tol = match qgate_quant::quant_step(proto, name) {
            Some(step) => STEPS * step,
            None => FLOAT_FRACTION * wv.iter().fold(0.0f64, |m, v| m.max(v.abs())),
        };
        let diff = gv
            .iter()
            .zip(&wv)
            .map(|(a, b)| (a - b).abs())
            .fold(
                0.0f64,
                |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
            );
        if diff > tol {
            return Some(DivergingTensor {
                name: name.clone(),
                op_type: op.clone(),
                max_abs_diff: diff,
                tolerance: tol,
            });
        }
    }
    None
}

/// The runtime check of one side, as the report records it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RuntimeCheckOutcome {
    /// tract agreed with the reference.
    Passed(RuntimeCheck),
    /// Not run, and why (`--no-runtime-check`, no onnxruntime library).
    Skipped {
        /// `baseline` or `candidate`.
        side: String,
        reason: String,
    },
}

/// Settings of [`guard_tract_sides`].
#[derive(Debug, Clone)]
pub struct RuntimeCheckSettings {
    /// Run it (`--no-runtime-check` turns it off).
    pub enabled: bool,
    pub samples: usize,
    /// How to find onnxruntime.
    pub ort: LoadOptions,
}

/// Samples the check compares by default.
pub const DEFAULT_SAMPLES: usize = 32;

/// Checks every side that runs a quantized model in tract (see the module documentation).
/// A side that fails is an error naming the first diverging tensor and suggesting `ort:`;
/// the others are returned for the report (sides that are not quantized tract models are
/// left out).
pub fn guard_tract_sides(
    sides: Vec<(&str, &ModelSpec, &mut dyn Model)>,
    data: &Dataset,
    opts: &EvalOptions,
    settings: &RuntimeCheckSettings,
    scratch: &Path,
) -> Result<Vec<RuntimeCheckOutcome>, EvalError> {
    let mut out = Vec::new();
    if data.is_empty() {
        // Nothing to compare; the evaluation says so.
        return Ok(out);
    }
    for (side, spec, model) in sides {
        let qgate_runtime::SpecKind::Tract(path) = &spec.kind else {
            continue;
        };
        if !model.info().is_quantized() {
            continue;
        }
        let skipped = |reason: String| RuntimeCheckOutcome::Skipped {
            side: side.into(),
            reason,
        };
        if !settings.enabled {
            out.push(skipped("--no-runtime-check".into()));
            continue;
        }
        if let Err(e) = qgate_runtime::locate_onnxruntime(
            settings.ort.ort_lib.as_deref(),
            settings.ort.ort_env_path.as_deref(),
            &settings.ort.python,
        ) {
            out.push(skipped(format!(
                "no onnxruntime library to compare with: {e}"
            )));
            continue;
        }
        let check = check_against_onnxruntime(side, model, path, data, opts, settings, scratch)?;
        if !check.passed {
            return Err(EvalError::RuntimeCheck(Box::new(check)));
        }
        out.push(RuntimeCheckOutcome::Passed(check));
    }
    Ok(out)
}

impl std::fmt::Display for RuntimeCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: tract's outputs of {} disagree with {} on the first {} samples: top-1 agreement {:.3} (at least {MIN_TOP1_AGREEMENT} needed), largest difference of '{}' {:.4} (tolerance {:.4}: {})",
            self.side,
            self.model,
            self.reference,
            self.samples,
            self.top1_agreement,
            self.output,
            self.max_abs_diff,
            self.tolerance,
            self.tolerance_basis
        )?;
        match &self.first_diverging_tensor {
            Some(t) => write!(
                f,
                "; the first diverging tensor is '{}' (output of {}, difference {:.4} > {:.4})",
                t.name, t.op_type, t.max_abs_diff, t.tolerance
            )?,
            None => write!(f, "; the diverging tensor could not be located")?,
        }
        write!(
            f,
            ". tract executes this model differently from the ONNX specification: run it in ONNX Runtime with `ort:{}` (or skip this check with --no-runtime-check)",
            self.model
        )
    }
}

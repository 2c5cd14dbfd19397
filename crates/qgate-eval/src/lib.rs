//! Runs models over a data set, turns their outputs into predictions and builds the
//! baseline/candidate comparison: metrics of each side, the paired comparison, divergence of
//! every output tensor and the gate. Nothing here prints or formats.
//!
//! ```
//! use qgate_eval::OutputKind;
//! assert_eq!("logits".parse::<OutputKind>().unwrap(), OutputKind::Logits);
//! ```

mod corruptions;
mod outputs;
mod quant_eval;
mod run;
mod runtime_check;
mod thumbnails;

use std::collections::BTreeMap;

use qgate_core::calibration::{calibration_pair, Calibration};
use qgate_core::compare::{Comparison, PairInput, Predicted};
use qgate_core::divergence::{tensor_divergence, TensorDivergence};
use qgate_core::metrics::Metrics;
use qgate_core::policy::{Gate, Observations, Policy};
use qgate_core::slices::{compare_slices, judge_slices, SliceResult};
use qgate_core::stats::BootstrapSettings;
use qgate_data::{Dataset, Slices};
use qgate_runtime::{Model, ModelInfo, Provenance, RuntimeError};
use serde::Serialize;

pub use corruptions::{CorruptionEntry, CorruptionEvaluation, CorruptionSummary};
pub use outputs::{select_scores, ChosenBy, KindBy, OutputKind, ScoreOutput};
pub use qgate_data::corrupt::{Corruption, CorruptionPlan, PixelSpace};
pub use qgate_data::Layout as PixelLayout;
pub use qgate_runtime::{
    ignored_arrays, resolve_inputs, BoundBy, Ignored, IgnoredArray, InputBinding, InputMapping,
};
pub use quant_eval::SubsetEvaluator;
pub use run::{run_model, run_model_with, BatchTransform, ModelRun};
pub use runtime_check::{
    check_against_onnxruntime, guard_tract_sides, DivergingTensor, RuntimeCheck,
    RuntimeCheckOutcome, RuntimeCheckSettings, DEFAULT_SAMPLES as RUNTIME_CHECK_SAMPLES,
};
pub use thumbnails::{pixel_thumbnail, thumbnail, Thumbnail};

/// Errors of an evaluation. Each names the model side, tensor, array or sample at fault.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The runtime failed.
    #[error("{side}: {source}")]
    Runtime {
        /// `baseline` or `candidate`.
        side: String,
        /// The runtime's error.
        source: RuntimeError,
    },
    /// The data does not fit the model's inputs.
    #[error("{side}: {message}")]
    Inputs {
        /// `baseline` or `candidate`.
        side: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The model's outputs cannot be read as class scores or labels.
    #[error("{side}: {message}")]
    Outputs {
        /// `baseline` or `candidate`.
        side: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The labels do not fit.
    #[error("{0}")]
    Labels(String),
    /// Nothing to evaluate.
    #[error("{0}: no sample to evaluate (check --limit and the data file)")]
    Empty(String),
    /// tract disagrees with onnxruntime's node-by-node execution on a quantized model.
    #[error("{0}")]
    RuntimeCheck(Box<RuntimeCheck>),
    /// The policy's slice tables do not fit the data's slices.
    #[error("{data}: {message}")]
    Slices {
        /// The data set.
        data: String,
        message: String,
    },
}

/// Calibration of both sides.
#[derive(Debug, Clone, Serialize)]
pub struct PairCalibration {
    pub baseline: Calibration,
    pub candidate: Calibration,
}

/// The pair on every slice of the data, with how the tags met the samples.
#[derive(Debug, Clone, Serialize)]
pub struct SliceEvaluation {
    /// The tags, where they came from and what did not match.
    pub tags: Slices,
    /// `min_slice_samples` in force.
    pub min_samples: u64,
    /// `slice_alpha` in force.
    pub alpha: f64,
    /// Every slice, worst first.
    pub slices: Vec<SliceResult>,
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Samples per inference call.
    pub batch_size: usize,
    /// `k` of top-k accuracy and top-k agreement.
    pub top_k: usize,
    /// Output holding class scores; default: the first output shaped `[N, C]`.
    pub output: Option<String>,
    /// Override of the auto-detected output kind.
    pub output_kind: Option<OutputKind>,
    /// Which data arrays feed which model inputs.
    pub inputs: InputMapping,
    /// Bootstrap settings of the intervals.
    pub bootstrap: BootstrapSettings,
    /// Corrupted copies to evaluate too (`--corruptions`).
    pub corruptions: Option<CorruptionPlan>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch_size: 32,
            top_k: 5,
            output: None,
            output_kind: None,
            inputs: InputMapping::default(),
            bootstrap: BootstrapSettings::default(),
            corruptions: None,
        }
    }
}

/// Everything measured about one side.
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// Runtime, version, settings.
    pub provenance: Provenance,
    /// What the model declares.
    pub model: ModelInfo,
    /// Which array fed which input.
    pub inputs: Vec<InputBinding>,
    /// The output read as class scores, and how.
    pub scores: ScoreOutput,
    pub metrics: Metrics,
    /// Wall time of inference over the whole data set, seconds (not a benchmark).
    pub inference_seconds: f64,
    /// Samples with non-finite values in the score output.
    pub non_finite_samples: u64,
    /// Every output over the whole data set, in declaration order (for `--save-outputs`).
    #[serde(skip)]
    pub outputs: Vec<(String, qgate_core::Array)>,
}

/// Divergence of one output tensor.
#[derive(Debug, Clone, Serialize)]
pub struct OutputDivergence {
    pub output: String,
    pub tensor: TensorDivergence,
    /// Whether this is the output the metrics were read from (KL lives there).
    pub is_score_output: bool,
}

/// The whole evaluation of a pair.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Data set path.
    pub data_source: String,
    pub n_samples: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Samples per inference call (a model with a fixed batch dimension uses its own).
    pub batch_size: usize,
    /// Class names (index = class).
    pub class_names: Vec<String>,
    /// Arrays of the data file that neither model read (not checked), with the reason.
    pub ignored_arrays: Vec<IgnoredArray>,
    pub baseline: SideResult,
    pub candidate: SideResult,
    pub comparison: Comparison,
    /// Divergence per output present in both models with the same shape.
    pub divergence: Vec<OutputDivergence>,
    /// Outputs not compared, with the reason.
    pub divergence_skipped: Vec<(String, String)>,
    /// Thumbnails of flipped samples when the inputs are images (at most 48).
    pub thumbnails: Vec<Thumbnail>,
    /// Calibration of both sides, when both give class probabilities.
    pub calibration: Option<PairCalibration>,
    /// The pair per slice, when the data has slices.
    pub slices: Option<SliceEvaluation>,
    /// The pair on corrupted copies of the data (`--corruptions`).
    pub corruptions: Option<CorruptionEvaluation>,
    pub gate: Gate,
    /// The policy in force.
    pub policy: Policy,
    /// The runtime checks of quantized models run in tract (filled by the caller that ran
    /// them: [`guard_tract_sides`]).
    pub runtime_checks: Vec<RuntimeCheckOutcome>,
}

/// Progress of a long run: `(side, samples done, samples in all)`.
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Evaluates the pair on `data` and judges it against `policy`.
pub fn evaluate_pair(
    baseline: &mut dyn Model,
    candidate: &mut dyn Model,
    data: &Dataset,
    policy: &Policy,
    opts: &EvalOptions,
    progress: Progress<'_>,
) -> Result<Evaluation, EvalError> {
    let mut candidates: [&mut dyn Model; 1] = [candidate];
    let mut all = evaluate_candidates(baseline, &mut candidates, data, policy, opts, progress)?;
    Ok(all.remove(0))
}

/// Evaluates every candidate against one baseline on `data` (the baseline runs once) and
/// judges each pair against `policy`. With several candidates, errors name the candidate
/// by its position (`candidate 2`).
pub fn evaluate_candidates(
    baseline: &mut dyn Model,
    candidates: &mut [&mut dyn Model],
    data: &Dataset,
    policy: &Policy,
    opts: &EvalOptions,
    progress: Progress<'_>,
) -> Result<Vec<Evaluation>, EvalError> {
    if data.is_empty() {
        return Err(EvalError::Empty(data.source.clone()));
    }
    let labels_raw = data.labels.as_ref().ok_or_else(|| {
        EvalError::Labels(format!(
            "{}: the data set has no labels; name the label array with --label-key",
            data.source
        ))
    })?;
    // Corruptions are checked before any model runs: what to corrupt, and its pixels.
    let array = match &opts.corruptions {
        Some(plan) => Some(corruption_target(plan, baseline, candidates, data, opts)?),
        None => None,
    };
    let base = run_side("baseline".into(), baseline, data, opts, progress)?;
    let several = candidates.len() > 1;
    let mut sides = Vec::with_capacity(candidates.len());
    for (k, candidate) in candidates.iter_mut().enumerate() {
        let name = if several {
            format!("candidate {}", k + 1)
        } else {
            "candidate".to_string()
        };
        sides.push(run_side(name, &mut **candidate, data, opts, progress)?);
    }
    let mut cells = match &array {
        Some(array) => {
            let all: Vec<(&str, &ScoreOutput)> = std::iter::once(&base)
                .chain(&sides)
                .map(|s| (s.0.as_str(), &s.5))
                .collect();
            let labels = check_labels(labels_raw, data, &all)?;
            let run = corruptions::CellRun {
                data,
                array,
                labels: &labels,
                opts,
                policy,
            };
            corruptions::run_cells(&run, (baseline, &base), candidates, &sides, progress)?
                .into_iter()
                .map(Some)
                .collect()
        }
        None => vec![None; sides.len()],
    };
    let mut out = Vec::with_capacity(sides.len());
    for (cand, cells) in sides.iter().zip(cells.iter_mut()) {
        let corrupted = array.as_deref().zip(cells.take());
        out.push(assemble(
            [&base, cand],
            labels_raw,
            data,
            policy,
            opts,
            corrupted,
        )?);
    }
    Ok(out)
}

/// The image array `--corruptions` changes, resolved from every model's inputs and checked
/// (its pixels too) before any model runs. Saved outputs cannot be corrupted.
fn corruption_target(
    plan: &CorruptionPlan,
    baseline: &dyn Model,
    candidates: &[&mut dyn Model],
    data: &Dataset,
    opts: &EvalOptions,
) -> Result<String, EvalError> {
    let models: Vec<&dyn Model> = std::iter::once(baseline)
        .chain(candidates.iter().map(|c| &**c))
        .collect();
    if let Some(m) = models.iter().find(|m| m.keyed_by_sample()) {
        return Err(EvalError::Inputs {
            side: m.provenance().spec,
            message: run::SAVED_OUTPUTS_UNCORRUPTED.into(),
        });
    }
    let mut bindings = Vec::with_capacity(models.len());
    for m in &models {
        bindings.push(
            resolve_inputs(m.info(), data, &opts.inputs).map_err(|message| EvalError::Inputs {
                side: m.provenance().spec,
                message,
            })?,
        );
    }
    let sides: Vec<&[InputBinding]> = bindings.iter().map(Vec::as_slice).collect();
    corruptions::pick_array(plan, data, &sides)
}

/// The number of classes of a pair: the larger score output, the data's class names and
/// its largest label.
pub(crate) fn pair_classes(sides: [&Side; 2], data: &Dataset, labels: &[usize]) -> usize {
    let n_out = sides.iter().map(|s| s.5.n_classes).max().unwrap_or(0);
    let max_label = labels.iter().copied().max().map_or(0, |m| m + 1);
    n_out.max(data.class_names.len()).max(max_label)
}

/// The pair's comparison input on `labels`, with the policy's call-out limits and level.
pub(crate) fn pair_input<'a>(
    labels: &'a [usize],
    data: &'a Dataset,
    n_classes: usize,
    [baseline, candidate]: [&'a Predicted; 2],
    opts: &EvalOptions,
    policy: &Policy,
) -> PairInput<'a> {
    PairInput {
        labels,
        ids: &data.ids,
        n_classes,
        top_k: opts.top_k,
        class_names: &data.class_names,
        baseline,
        candidate,
        bootstrap: opts.bootstrap,
        // Classes are called out at the policy's per-class limits (never judged: no call-out).
        class_recall_drop_pp: policy
            .value("max_class_recall_drop_pp")
            .unwrap_or(f64::INFINITY),
        class_f1_drop_pp: policy
            .value("max_class_f1_drop_pp")
            .unwrap_or(f64::INFINITY),
        alpha: policy.value("slice_alpha").unwrap_or(0.05),
    }
}

/// The evaluation of one pair from both sides' runs.
fn assemble(
    sides: [&Side; 2],
    labels_raw: &[i64],
    data: &Dataset,
    policy: &Policy,
    opts: &EvalOptions,
    corrupted: Option<(&str, corruptions::CorruptedCells)>,
) -> Result<Evaluation, EvalError> {
    let labels = check_labels(
        labels_raw,
        data,
        &sides
            .iter()
            .map(|s| (s.0.as_str(), &s.5))
            .collect::<Vec<_>>(),
    )?;
    let n_classes = pair_classes(sides, data, &labels);
    let side_result = |(_, provenance, info, bindings, run, scores): &Side| {
        let metrics = Metrics::compute(
            &labels,
            &scores.predictions,
            scores.scores.as_ref(),
            n_classes,
            opts.top_k,
            &data.class_names,
        );
        let non_finite = scores.predictions.iter().filter(|p| p.is_none()).count() as u64;
        let result = SideResult {
            provenance: provenance.clone(),
            model: info.clone(),
            inputs: bindings.clone(),
            scores: scores.without_values(),
            metrics,
            inference_seconds: run.seconds,
            non_finite_samples: non_finite,
            outputs: run.outputs.clone(),
        };
        let predicted = Predicted {
            predictions: scores.predictions.clone(),
            probs: scores.probs.clone(),
        };
        (result, predicted)
    };
    let (baseline, base_pred) = side_result(sides[0]);
    let (candidate, cand_pred) = side_result(sides[1]);
    let input = pair_input(
        &labels,
        data,
        n_classes,
        [&base_pred, &cand_pred],
        opts,
        policy,
    );
    let comparison = Comparison::compute(&input, &baseline.metrics, &candidate.metrics);
    let calibration = match (&base_pred.probs, &cand_pred.probs) {
        (Some(b), Some(c)) => {
            let [baseline, candidate] = calibration_pair(b, c, &labels, CALIBRATION_BINS);
            Some(PairCalibration {
                baseline,
                candidate,
            })
        }
        _ => None,
    };
    let slices = evaluate_slices(data, policy, &input)?;
    let (divergence, divergence_skipped) =
        output_divergence(&sides[0].4, &sides[1].4, &sides[0].5.name);
    let thumbnails = comparison
        .flip_details
        .iter()
        .take(48)
        .filter_map(|f| {
            sides[0]
                .3
                .first()
                .and_then(|b| data.arrays.get(&b.array))
                .and_then(|a| thumbnail(a, f.index, &f.id))
        })
        .collect();
    let obs = Observations::of_pair(
        [&baseline.metrics, &candidate.metrics],
        &comparison,
        [baseline.non_finite_samples, candidate.non_finite_samples],
        calibration.as_ref().map(|c| [&c.baseline, &c.candidate]),
    );
    let mut gate = Gate::evaluate(policy, &obs);
    let corruptions = match (&opts.corruptions, corrupted) {
        (Some(plan), Some((array, cells))) => Some(corruptions::evaluate(
            plan,
            array,
            cells,
            [baseline.metrics.accuracy, candidate.metrics.accuracy],
            input.alpha,
        )),
        _ => None,
    };
    let mut judged_slices: Vec<SliceResult> =
        slices.as_ref().map_or(Vec::new(), |s| s.slices.clone());
    let mut known = data.slices.all_slice_names();
    if let Some(c) = &corruptions {
        judged_slices.extend(c.entries.iter().map(|e| e.slice.clone()));
        known.extend(c.entries.iter().map(|e| e.slice.slice.clone()));
    }
    let judged =
        judge_slices(policy, &judged_slices, &known).map_err(|message| EvalError::Slices {
            data: data.source.clone(),
            message,
        })?;
    gate = Gate::from_criteria(gate.criteria.into_iter().chain(judged).collect());
    // Speed and memory keys are judged by `qgate bench` / `qgate check`; list them as not
    // measured so nobody reads their absence as a pass.
    gate.criteria.extend(Gate::unmeasured_performance(policy));
    Ok(Evaluation {
        data_source: data.source.clone(),
        n_samples: labels.len(),
        n_classes,
        batch_size: opts.batch_size,
        class_names: (0..n_classes)
            .map(|c| {
                data.class_names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string())
            })
            .collect(),
        ignored_arrays: ignored_arrays(data, &[&sides[0].3, &sides[1].3]),
        baseline,
        candidate,
        comparison,
        divergence,
        divergence_skipped,
        thumbnails,
        calibration,
        slices,
        corruptions,
        gate,
        policy: policy.clone(),
        runtime_checks: Vec::new(),
    })
}

/// Distinct values a tag may have: each is a slice with its own metrics and bootstrap.
pub const MAX_SLICES_PER_TAG: usize = 1000;

/// Bins of the reliability diagrams and ECE.
pub const CALIBRATION_BINS: usize = qgate_core::calibration::DEFAULT_BINS;

/// The pair on every slice of `data` (none without tags).
fn evaluate_slices(
    data: &Dataset,
    policy: &Policy,
    input: &PairInput<'_>,
) -> Result<Option<SliceEvaluation>, EvalError> {
    if data.slices.is_empty() {
        return Ok(None);
    }
    let min_samples = policy.value("min_slice_samples").unwrap_or(30.0).ceil() as u64;
    for t in &data.slices.tags {
        let mut values: Vec<&String> = t.values.iter().flatten().collect();
        values.sort_unstable();
        values.dedup();
        let tagged = t.values.iter().flatten().count();
        let id_like = values.len() > 100 && 2 * values.len() > tagged;
        if values.len() > MAX_SLICES_PER_TAG || id_like {
            return Err(EvalError::Slices {
                data: data.source.clone(),
                message: format!(
                    "tag '{}' of {} has {} distinct values over {tagged} samples; a tag groups samples (lighting=dark), and this one looks like an id or file-name column (at most {MAX_SLICES_PER_TAG} values, and more than 100 only when most values hold several samples): leave it out of the slices",
                    t.tag,
                    data.slices.source,
                    values.len()
                ),
            });
        }
    }
    let tags: Vec<(&str, &[Option<String>])> = data
        .slices
        .tags
        .iter()
        .map(|t| (t.tag.as_str(), t.values.as_slice()))
        .collect();
    let slices = compare_slices(input, &tags, min_samples);
    Ok(Some(SliceEvaluation {
        tags: data.slices.clone(),
        min_samples,
        alpha: input.alpha,
        slices,
    }))
}

pub(crate) type Side = (
    String,
    Provenance,
    ModelInfo,
    Vec<InputBinding>,
    ModelRun,
    ScoreOutput,
);

fn run_side(
    side: String,
    model: &mut dyn Model,
    data: &Dataset,
    opts: &EvalOptions,
    progress: Progress<'_>,
) -> Result<Side, EvalError> {
    let bindings =
        resolve_inputs(model.info(), data, &opts.inputs).map_err(|message| EvalError::Inputs {
            side: side.clone(),
            message,
        })?;
    let run = run_model(model, data, &bindings, opts.batch_size, &mut |done, all| {
        progress(&side, done, all)
    })
    .map_err(|source| EvalError::Runtime {
        side: side.clone(),
        source,
    })?;
    let scores =
        select_scores(&run, opts.output.as_deref(), opts.output_kind).map_err(|message| {
            EvalError::Outputs {
                side: side.clone(),
                message,
            }
        })?;
    Ok((
        side,
        model.provenance(),
        model.info().clone(),
        bindings,
        run,
        scores,
    ))
}

fn check_labels(
    labels: &[i64],
    data: &Dataset,
    sides: &[(&str, &ScoreOutput)],
) -> Result<Vec<usize>, EvalError> {
    let label_key = data.label_key.clone().unwrap_or_else(|| "labels".into());
    for (i, &y) in labels.iter().enumerate() {
        if y < 0 {
            return Err(EvalError::Labels(format!(
                "{}: label array '{label_key}': sample '{}' has label {y}; labels must be class indices ≥ 0",
                data.source, data.ids[i]
            )));
        }
        for (side, s) in sides {
            if s.kind != OutputKind::Labels && y as usize >= s.n_classes {
                return Err(EvalError::Labels(format!(
                    "{}: label array '{label_key}': sample '{}' has label {y}, out of range for the {side}'s output '{}' with {} classes (0..{})",
                    data.source, data.ids[i], s.name, s.n_classes, s.n_classes - 1
                )));
            }
        }
    }
    Ok(labels.iter().map(|&y| y as usize).collect())
}

fn output_divergence(
    base: &ModelRun,
    cand: &ModelRun,
    score_output: &str,
) -> (Vec<OutputDivergence>, Vec<(String, String)>) {
    let cand_by_name: BTreeMap<&str, &qgate_core::Array> =
        cand.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (name, a) in &base.outputs {
        let Some(b) = cand_by_name.get(name.as_str()) else {
            skipped.push((
                name.clone(),
                "the candidate has no output of this name".into(),
            ));
            continue;
        };
        if a.shape != b.shape {
            skipped.push((
                name.clone(),
                format!(
                    "shapes differ: baseline {:?}, candidate {:?}",
                    a.shape, b.shape
                ),
            ));
            continue;
        }
        match (a.to_f64(), b.to_f64()) {
            (Some(x), Some(y)) => out.push(OutputDivergence {
                output: name.clone(),
                tensor: tensor_divergence(&x, &y, a.row_len()),
                is_score_output: name == score_output,
            }),
            _ => skipped.push((name.clone(), "not numeric".into())),
        }
    }
    (out, skipped)
}

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
mod stream;
mod thumbnails;

use qgate_core::calibration::{calibration_pair_of, Calibration};
use qgate_core::compare::{Comparison, PairInput, Predicted};
use qgate_core::divergence::TensorDivergence;
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
pub use run::{run_model, BatchTransform, ModelRun};
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
    /// Keep every output of every model ([`SideResult::outputs`]) for the first this many
    /// samples: all of them for `--save-outputs`, the benchmark's for `qgate check`'s
    /// reference outputs. Otherwise (`0`) outputs are reduced batch by batch and dropped.
    pub keep_outputs: usize,
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
            keep_outputs: 0,
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
    /// Every output over the whole data set, in declaration order, when
    /// [`EvalOptions::keep_outputs`] asked for them (else empty); shared with the other pairs
    /// of the same baseline rather than copied.
    #[serde(skip)]
    pub outputs: std::sync::Arc<Vec<(String, qgate_core::Array)>>,
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
    let several = candidates.len() > 1;
    let names: Vec<String> = std::iter::once("baseline".to_string())
        .chain((0..candidates.len()).map(|k| {
            if several {
                format!("candidate {}", k + 1)
            } else {
                "candidate".to_string()
            }
        }))
        .collect();
    let mut bindings = Vec::with_capacity(names.len());
    {
        let models = std::iter::once(&*baseline).chain(candidates.iter().map(|c| &**c));
        for (name, m) in names.iter().zip(models) {
            bindings.push(
                resolve_inputs(m.info(), data, &opts.inputs).map_err(|message| {
                    EvalError::Inputs {
                        side: name.clone(),
                        message,
                    }
                })?,
            );
        }
    }
    let label = if several {
        format!("baseline + {} candidates", candidates.len())
    } else {
        "baseline + candidate".to_string()
    };
    let streamed = {
        let mut members: Vec<stream::Member<'_>> = Vec::with_capacity(names.len());
        members.push(stream::Member {
            side: names[0].clone(),
            model: &mut *baseline,
            bindings: &bindings[0],
            forced: None,
        });
        for (k, c) in candidates.iter_mut().enumerate() {
            members.push(stream::Member {
                side: names[k + 1].clone(),
                model: &mut **c,
                bindings: &bindings[k + 1],
                forced: None,
            });
        }
        let stream_opts = stream::StreamOptions {
            batch_size: opts.batch_size,
            top_k: opts.top_k,
            output: opts.output.as_deref(),
            output_kind: opts.output_kind,
            keep_outputs: opts.keep_outputs,
            divergence: true,
            transform: None,
        };
        stream::stream(
            &mut members,
            data,
            labels_raw,
            &stream_opts,
            &label,
            progress,
        )?
    };
    let stream::Streamed { sides, pairs } = streamed;
    let models = std::iter::once(&*baseline).chain(candidates.iter().map(|c| &**c));
    let mut all: Vec<Side> = names
        .into_iter()
        .zip(models)
        .zip(bindings)
        .zip(sides)
        .map(|(((name, m), bindings), s)| Side {
            name,
            provenance: m.provenance(),
            info: m.info().clone(),
            bindings,
            scores: s.scores,
            predicted: s.predicted,
            seconds: s.seconds,
            outputs: s.outputs,
        })
        .collect();
    let base = all.remove(0);
    let sides = all;
    let mut cells = match &array {
        Some(array) => {
            let all: Vec<(&str, &ScoreOutput)> = std::iter::once(&base)
                .chain(&sides)
                .map(|s| (s.name.as_str(), &s.scores))
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
    for ((cand, pair), cells) in sides.iter().zip(&pairs).zip(cells.iter_mut()) {
        let corrupted = array.as_deref().zip(cells.take());
        out.push(assemble(
            [&base, cand],
            pair,
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
    let n_out = sides.iter().map(|s| s.scores.n_classes).max().unwrap_or(0);
    let max_label = labels.iter().copied().max().map_or(0, |m| m + 1);
    n_out.max(data.class_names.len()).max(max_label)
}

/// The pair's comparison input on `labels`, with the policy's call-out limits and level.
pub(crate) fn pair_input<'a>(
    labels: &'a [usize],
    data: &'a Dataset,
    n_classes: usize,
    [baseline, candidate]: [&'a Predicted; 2],
    pair: &'a stream::StreamedPair,
    opts: &EvalOptions,
    policy: &Policy,
) -> PairInput<'a> {
    PairInput {
        kl: pair.kl.as_deref(),
        top_k_same: pair.top_k_same.as_deref(),
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
fn assemble<'a>(
    sides: [&'a Side; 2],
    pair: &stream::StreamedPair,
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
            .map(|s| (s.name.as_str(), &s.scores))
            .collect::<Vec<_>>(),
    )?;
    let n_classes = pair_classes(sides, data, &labels);
    let side_result = |side: &'a Side| {
        let predicted = &side.predicted;
        let metrics = Metrics::compute(
            &labels,
            &predicted.predictions,
            predicted.rows.as_ref().map(|r| r.top_k_hit.as_slice()),
            n_classes,
            opts.top_k,
            &data.class_names,
        );
        let non_finite = predicted.predictions.iter().filter(|p| p.is_none()).count() as u64;
        let result = SideResult {
            provenance: side.provenance.clone(),
            model: side.info.clone(),
            inputs: side.bindings.clone(),
            scores: side.scores.without_values(),
            metrics,
            inference_seconds: side.seconds,
            non_finite_samples: non_finite,
            outputs: side.outputs.clone(),
        };
        (result, predicted)
    };
    let (baseline, base_pred) = side_result(sides[0]);
    let (candidate, cand_pred) = side_result(sides[1]);
    let input = pair_input(
        &labels,
        data,
        n_classes,
        [base_pred, cand_pred],
        pair,
        opts,
        policy,
    );
    let comparison = Comparison::compute(&input, &baseline.metrics, &candidate.metrics);
    let calibration = match (&base_pred.rows, &cand_pred.rows) {
        (Some(b), Some(c)) => {
            let [baseline, candidate] = calibration_pair_of(b, c, CALIBRATION_BINS);
            Some(PairCalibration {
                baseline,
                candidate,
            })
        }
        _ => None,
    };
    let slices = evaluate_slices(data, policy, &input)?;
    let (divergence, divergence_skipped) =
        (pair.divergence.clone(), pair.divergence_skipped.clone());
    let thumbnails = comparison
        .flip_details
        .iter()
        .take(48)
        .filter_map(|f| {
            let b = sides[0].bindings.first()?;
            let row = data.read_rows(&b.array, &[f.index]).ok()?;
            thumbnail(&row, 0, &f.id)
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
        ignored_arrays: ignored_arrays(data, &[&sides[0].bindings, &sides[1].bindings]),
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

/// One model's run over the data, reduced.
pub(crate) struct Side {
    /// `baseline`, `candidate`, `candidate 2`.
    pub name: String,
    pub provenance: Provenance,
    pub info: ModelInfo,
    pub bindings: Vec<InputBinding>,
    /// The output read as predictions (without per-sample values).
    pub scores: ScoreOutput,
    pub predicted: Predicted,
    /// Wall time of its inference, seconds.
    pub seconds: f64,
    /// Its outputs when kept ([`EvalOptions::keep_outputs`]).
    pub outputs: std::sync::Arc<Vec<(String, qgate_core::Array)>>,
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
                data.source, &data.ids[i]
            )));
        }
        for (side, s) in sides {
            if s.kind != OutputKind::Labels && y as usize >= s.n_classes {
                return Err(EvalError::Labels(format!(
                    "{}: label array '{label_key}': sample '{}' has label {y}, out of range for the {side}'s output '{}' with {} classes (0..{})",
                    data.source, &data.ids[i], s.name, s.n_classes, s.n_classes - 1
                )));
            }
        }
    }
    Ok(labels.iter().map(|&y| y as usize).collect())
}

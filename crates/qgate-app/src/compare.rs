//! `qgate compare`: both models on the same labelled data, one report.

use std::path::PathBuf;

use qgate_core::policy::Policy;
use qgate_data::{ArrayKeys, Dataset, ImagePreprocess};
use qgate_eval::{evaluate_candidates, EvalOptions, Evaluation, RuntimeCheckSettings};
use qgate_report::{Report, Require};
use qgate_runtime::{load, LoadOptions, ModelSpec};

use crate::error::{AppError, Context};

/// Everything `qgate compare` needs, validated.
#[derive(Debug)]
pub struct CompareConfig {
    /// The reference model.
    pub baseline: ModelSpec,
    /// The compressed models judged against it, in command-line order (at least one).
    pub candidates: Vec<ModelSpec>,
    /// With several candidates: whether all must pass or any one (the exit code).
    pub require: Require,
    /// Labelled data: `.npz`, `.npy`, `.csv` or an image folder.
    pub data: PathBuf,
    /// A slice manifest (`--slices`).
    pub slices: Option<PathBuf>,
    pub out: PathBuf,
    /// Which arrays hold labels and ids.
    pub keys: ArrayKeys,
    /// How image folders become tensors.
    pub images: ImagePreprocess,
    /// Evaluate only this many samples…
    pub limit: Option<usize>,
    /// …drawn at random with this seed (else the first ones).
    pub seed: Option<u64>,
    /// Batching, outputs, input mapping, bootstrap.
    pub eval: EvalOptions,
    pub policy: Policy,
    /// Draw progress (the binary's concern; carried with the run's settings).
    pub progress: bool,
    /// Runtime options of both sides.
    pub load: LoadOptions,
    /// Also write each side's outputs here.
    pub save_outputs: Option<PathBuf>,
    /// The runtime the model will be deployed on (`tract`, `onnxruntime`, `kserve-v2`).
    pub deployment_runtime: Option<String>,
    /// The tract-against-onnxruntime check of quantized models.
    pub runtime_check: RuntimeCheckSettings,
    /// Corrupted copies of the images to evaluate too (`--corruptions`).
    pub corruptions: Option<CorruptionRequest>,
}

/// `--corruptions` as given; the pixel space is settled once the data's kind is known.
#[derive(Debug, Clone)]
pub struct CorruptionRequest {
    pub corruptions: Vec<qgate_data::corrupt::Corruption>,
    pub severities: Vec<u8>,
    pub seed: u64,
    /// `--input-range`: the value of white (1 or 255), arrays only.
    pub range: Option<f32>,
    /// `--input-layout`, arrays only.
    pub layout: Option<qgate_data::Layout>,
}

/// The corruption plan of `cfg` on its data: an image folder knows its pixels (its declared
/// preprocessing); an array needs `--input-range`.
fn corruption_plan(
    cfg: &CompareConfig,
) -> Result<Option<qgate_data::corrupt::CorruptionPlan>, AppError> {
    let Some(req) = &cfg.corruptions else {
        return Ok(None);
    };
    let pixels = if cfg.data.is_dir() {
        if req.range.is_some() || req.layout.is_some() {
            return Err(AppError::Invalid(format!(
                "{}: an image folder's pixels are known from its --image-* options; --input-range and --input-layout are for arrays",
                cfg.data.display()
            )));
        }
        qgate_data::corrupt::PixelSpace {
            layout: cfg.images.layout,
            range: 255.0 * cfg.images.scale,
            mean: cfg.images.mean.clone(),
            std: cfg.images.std.clone(),
        }
    } else {
        let range = req.range.ok_or_else(|| {
            AppError::Invalid(format!(
                "--corruptions on {}: give --input-range 0,1 or 0,255 (and --input-layout, --image-mean, --image-std when they apply): qgate corrupts pixels and must know which values are black and white",
                cfg.data.display()
            ))
        })?;
        qgate_data::corrupt::PixelSpace {
            layout: req.layout.unwrap_or_default(),
            range,
            mean: cfg.images.mean.clone(),
            std: cfg.images.std.clone(),
        }
    };
    Ok(Some(qgate_data::corrupt::CorruptionPlan {
        corruptions: req.corruptions.clone(),
        severities: req.severities.clone(),
        seed: req.seed,
        pixels,
    }))
}

/// `(side, samples done, samples of the side)` as the evaluation goes.
pub type EvalProgress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The accuracy half of a run: one report per candidate, and the data and evaluations they
/// came from (`check` benchmarks on the same data and compares outputs).
pub struct Accuracy {
    /// The report of each candidate's comparison, in command-line order.
    pub reports: Vec<Report>,
    /// The samples evaluated (after `--limit`).
    pub data: Dataset,
    /// Each candidate's outputs, metrics and gate, in command-line order.
    pub evaluations: Vec<Evaluation>,
}

/// Evaluates every candidate against the baseline (which runs once) and builds each
/// candidate's report.
pub fn run(cfg: &CompareConfig, progress: EvalProgress) -> Result<Accuracy, AppError> {
    run_keeping(cfg, 0, progress)
}

/// [`run`], keeping every model's outputs on the first `keep` samples (`qgate check`
/// compares its benchmark's outputs with them); with `--save-outputs` all are kept.
pub fn run_keeping(
    cfg: &CompareConfig,
    keep: usize,
    progress: EvalProgress,
) -> Result<Accuracy, AppError> {
    let mut data = Dataset::load(&cfg.data, &cfg.keys, &cfg.images)?;
    if let Some(manifest) = &cfg.slices {
        data.attach_slices(manifest)?;
    }
    data.subset(cfg.limit, cfg.seed);
    let several = cfg.candidates.len() > 1;
    let name = |k: usize| {
        if several {
            format!("candidate {}", k + 1)
        } else {
            "candidate".to_string()
        }
    };
    let mut baseline = load(&cfg.baseline, &cfg.load).context("baseline")?;
    let mut candidates = Vec::with_capacity(cfg.candidates.len());
    for (k, spec) in cfg.candidates.iter().enumerate() {
        candidates.push(load(spec, &cfg.load).context(name(k))?);
    }
    let scratch = crate::error::scratch()?;
    // The baseline is checked once; its outcome goes into every candidate's report.
    let base_check = qgate_eval::guard_tract_sides(
        vec![("baseline", &cfg.baseline, baseline.as_mut())],
        &data,
        &cfg.eval,
        &cfg.runtime_check,
        scratch.path(),
    )?;
    let mut checks = Vec::with_capacity(candidates.len());
    for (k, (spec, candidate)) in cfg.candidates.iter().zip(candidates.iter_mut()).enumerate() {
        let side = name(k);
        let mut outcomes = base_check.clone();
        outcomes.extend(qgate_eval::guard_tract_sides(
            vec![(side.as_str(), spec, candidate.as_mut())],
            &data,
            &cfg.eval,
            &cfg.runtime_check,
            scratch.path(),
        )?);
        checks.push(outcomes);
    }
    let mut models: Vec<&mut dyn qgate_runtime::Model> = candidates
        .iter_mut()
        .map(|c| -> &mut dyn qgate_runtime::Model { c.as_mut() })
        .collect();
    let mut eval = cfg.eval.clone();
    eval.corruptions = corruption_plan(cfg)?;
    eval.keep_outputs = if cfg.save_outputs.is_some() {
        usize::MAX
    } else {
        keep
    };
    let mut evaluations = evaluate_candidates(
        baseline.as_mut(),
        &mut models,
        &data,
        &cfg.policy,
        &eval,
        progress,
    )?;
    drop(models);
    for (e, c) in evaluations.iter_mut().zip(checks) {
        e.runtime_checks = c;
    }
    if let Some(dir) = &cfg.save_outputs {
        crate::outputs::save_outputs(dir, &data, &evaluations)?;
    }
    let reports = evaluations
        .iter()
        .map(|e| {
            Report::from_evaluation(
                e,
                "compare",
                cfg.deployment_runtime.as_deref(),
                &crate::host(),
            )
        })
        .collect();
    Ok(Accuracy {
        reports,
        data,
        evaluations,
    })
}

/// One report of the run: the candidate's own, or with several, their ranking
/// ([`Report::of_candidates`]).
pub fn combine(cfg: &CompareConfig, reports: Vec<Report>) -> Report {
    let specs: Vec<String> = cfg.candidates.iter().map(|s| s.to_string()).collect();
    Report::of_candidates(reports, &specs, cfg.require)
}

//! `qgate compare`: both models on the same labelled data, one report.

use std::path::PathBuf;

use qgate_core::policy::Policy;
use qgate_data::{ArrayKeys, Dataset, ImagePreprocess};
use qgate_eval::{evaluate_pair, EvalOptions, Evaluation, RuntimeCheckSettings};
use qgate_report::Report;
use qgate_runtime::{load, LoadOptions, ModelSpec};

use crate::error::{AppError, Context};

/// Everything `qgate compare` needs, validated.
#[derive(Debug)]
pub struct CompareConfig {
    /// The reference model.
    pub baseline: ModelSpec,
    /// The compressed model judged against it.
    pub candidate: ModelSpec,
    /// Labelled data: `.npz`, `.npy`, `.csv` or an image folder.
    pub data: PathBuf,
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
}

/// `(side, samples done, samples of the side)` as the evaluation goes.
pub type EvalProgress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// The accuracy half of a run: the report, and the data and evaluation it came from
/// (`check` benchmarks on the same data and compares outputs).
pub struct Accuracy {
    /// The report of the comparison.
    pub report: Report,
    /// The samples evaluated (after `--limit`).
    pub data: Dataset,
    /// Both sides' outputs, metrics and the gate.
    pub evaluation: Evaluation,
}

/// Evaluates the pair and builds its report.
pub fn run(cfg: &CompareConfig, progress: EvalProgress) -> Result<Accuracy, AppError> {
    let mut data = Dataset::load(&cfg.data, &cfg.keys, &cfg.images)?;
    data.subset(cfg.limit, cfg.seed);
    let mut baseline = load(&cfg.baseline, &cfg.load).context("baseline")?;
    let mut candidate = load(&cfg.candidate, &cfg.load).context("candidate")?;
    let scratch = crate::error::scratch()?;
    let runtime_checks = qgate_eval::guard_tract_sides(
        [
            ("baseline", &cfg.baseline, baseline.as_mut()),
            ("candidate", &cfg.candidate, candidate.as_mut()),
        ],
        &data,
        &cfg.eval,
        &cfg.runtime_check,
        scratch.path(),
    )?;
    let mut evaluation = evaluate_pair(
        baseline.as_mut(),
        candidate.as_mut(),
        &data,
        &cfg.policy,
        &cfg.eval,
        progress,
    )?;
    evaluation.runtime_checks = runtime_checks;
    if let Some(dir) = &cfg.save_outputs {
        crate::outputs::save_outputs(dir, &data, &evaluation)?;
    }
    let report = Report::from_evaluation(
        &evaluation,
        "compare",
        cfg.deployment_runtime.as_deref(),
        &crate::host(),
    );
    Ok(Accuracy {
        report,
        data,
        evaluation,
    })
}

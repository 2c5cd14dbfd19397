//! `qgate bench` and `qgate check`: performance of the pair, alone or with the accuracy
//! run's verdict.

use std::path::{Path, PathBuf};

use qgate_core::policy::Policy;
use qgate_data::{Dataset, ImagePreprocess};
use qgate_eval::InputMapping;
use qgate_report::Report;
use qgate_runtime::{LoadOptions, ModelSpec};

use crate::compare::{CompareConfig, EvalProgress};
use crate::error::AppError;
use crate::measure::{measure, Pair, PerfConfig, Workers};

/// Everything `qgate bench` needs, validated.
#[derive(Debug)]
pub struct BenchConfig {
    /// The reference model.
    pub baseline: ModelSpec,
    /// The compressed model.
    pub candidate: ModelSpec,
    /// Inputs to feed; synthetic ones when `None`.
    pub data: Option<PathBuf>,
    /// Which arrays hold labels and ids (the same data flags as `compare`).
    pub keys: qgate_data::ArrayKeys,
    /// How image folders become tensors.
    pub images: ImagePreprocess,
    /// Which arrays feed which inputs.
    pub mapping: InputMapping,
    pub out: PathBuf,
    /// The gate (performance keys).
    pub policy: Policy,
    /// Runtime options of both sides.
    pub load: LoadOptions,
    /// How to measure.
    pub perf: PerfConfig,
    /// Draw progress (the binary's concern).
    pub progress: bool,
    /// The runtime the model will be deployed on.
    pub deployment_runtime: Option<String>,
}

/// Measures the pair; `exe` is the qgate binary whose `__worker` runs each side.
pub fn run(
    cfg: &BenchConfig,
    exe: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, AppError> {
    let data = match &cfg.data {
        Some(path) => {
            let mut d = Dataset::load(path, &cfg.keys, &cfg.images)?;
            d.subset(Some(cfg.perf.perf_samples), None);
            // The benchmark feeds the same few samples over and over: from memory.
            d.materialize()?;
            Some(d)
        }
        None => None,
    };
    let scratch = crate::error::scratch()?;
    let pair = Pair {
        baseline: &cfg.baseline,
        candidate: &cfg.candidate,
        data: data.as_ref(),
        mapping: &cfg.mapping,
        load: &cfg.load,
    };
    let workers = Workers {
        exe,
        scratch: scratch.path(),
    };
    let (perf, criteria) = measure(&pair, &cfg.perf, &cfg.policy, &workers, progress)?;
    Ok(Report::from_performance(
        &perf,
        &cfg.policy,
        &criteria,
        "bench",
        cfg.deployment_runtime.as_deref(),
        &crate::host(),
    ))
}

/// Accuracy, then performance on the same data, whose timed outputs must equal the
/// outputs whose accuracy was just measured: one report, one gate.
pub fn check(
    cfg: &CompareConfig,
    perf: &PerfConfig,
    exe: &Path,
    eval_progress: EvalProgress,
    progress: &mut dyn FnMut(&str),
) -> Result<Report, AppError> {
    if perf.plan.reference_outputs.iter().any(Option::is_some) {
        return Err(AppError::Invalid(
            "--reference-outputs: `qgate check` compares the timed outputs with its own accuracy run's outputs; give saved outputs to `qgate bench` instead".into(),
        ));
    }
    let crate::compare::Accuracy {
        reports,
        mut data,
        evaluations,
    } = crate::compare::run_keeping(cfg, perf.perf_samples, eval_progress)?;
    let scratch = crate::error::scratch()?;
    // Each pair's outputs, saved before the samples are cut to the benchmark's.
    let dirs: Vec<PathBuf> = (0..evaluations.len())
        .map(|k| scratch.path().join(format!("pair-{}", k + 1)))
        .collect();
    for (dir, evaluation) in dirs.iter().zip(&evaluations) {
        crate::outputs::save_outputs(dir, &data, std::slice::from_ref(evaluation))?;
    }
    data.subset(Some(perf.perf_samples), None);
    data.materialize()?;
    let mut checked = Vec::with_capacity(reports.len());
    let n = cfg.candidates.len();
    for (k, ((report, dir), spec)) in reports
        .into_iter()
        .zip(&dirs)
        .zip(&cfg.candidates)
        .enumerate()
    {
        let mut perf = perf.clone();
        perf.plan.reference_outputs = [
            Some(dir.join("baseline.npz")),
            Some(dir.join("candidate.npz")),
        ];
        let pair = Pair {
            baseline: &cfg.baseline,
            candidate: spec,
            data: Some(&data),
            mapping: &cfg.eval.inputs,
            load: &cfg.load,
        };
        let workers = Workers { exe, scratch: dir };
        let mut tell = |m: &str| {
            if n > 1 {
                progress(&format!("candidate {}/{n}: {m}", k + 1))
            } else {
                progress(m)
            }
        };
        let (performance, criteria) = measure(&pair, &perf, &cfg.policy, &workers, &mut tell)?;
        let mut report = report.with_performance(&performance, &criteria);
        report.command = "check".into();
        checked.push(report);
    }
    Ok(crate::compare::combine(cfg, checked))
}

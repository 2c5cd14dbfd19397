//! Measuring a pair as `qgate bench` does: each side in a worker process of the qgate
//! binary, interleaved rounds, then the performance criteria.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qgate_bench::protocol::{Init, LoadSpec, ProbeSpec};
use qgate_bench::{run_pair, ChildSide, Performance, Plan, WorkloadSpec};
use qgate_core::policy::{CriterionResult, Gate, Policy};
use qgate_core::Tolerance;
use qgate_data::Dataset;
use qgate_eval::InputMapping;
use qgate_runtime::{LoadOptions, ModelSpec, SpecKind};

use crate::error::AppError;
use crate::outputs::write_with_ids;

/// Distinct samples of the data a benchmark cycles through (MLPerf's performance sample
/// count) unless told otherwise.
pub const DEFAULT_PERF_SAMPLES: usize = 1024;

/// How to measure (`bench` and the performance half of `check`), validated.
#[derive(Debug, Clone)]
pub struct PerfConfig {
    /// What the engine runs: warm-up, rounds, sweeps, output checks.
    pub plan: Plan,
    /// Distinct samples of the data cycled through.
    pub perf_samples: usize,
    /// `--shape NAME=…` of synthetic inputs.
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Where the probes read from.
    pub probe: ProbeSpec,
    /// `--output-tolerance`; `None` picks one per side ([`output_tolerance`]).
    pub tolerance: Option<Tolerance>,
}

/// One pair to measure.
pub struct Pair<'a> {
    /// The reference side.
    pub baseline: &'a ModelSpec,
    /// The side judged.
    pub candidate: &'a ModelSpec,
    /// Inputs to feed; synthetic ones shaped like the model's when `None`.
    pub data: Option<&'a Dataset>,
    /// Which arrays feed which inputs.
    pub mapping: &'a InputMapping,
    /// Runtime options of both sides.
    pub load: &'a LoadOptions,
}

/// Where the measurement runs.
pub struct Workers<'a> {
    /// The qgate binary, started as `qgate __worker` once per side.
    pub exe: &'a Path,
    /// Inputs and worker logs go here.
    pub scratch: &'a Path,
}

/// Output tolerance of the same-artifact check: exact where the runtime is deterministic
/// on the CPU, float32 reordering on GPUs and behind servers (batching, kernels chosen at
/// run time).
pub fn output_tolerance(spec: &ModelSpec, load: &LoadOptions) -> Tolerance {
    let device = spec.options.device.as_deref().or(load.device.as_deref());
    match (&spec.kind, device) {
        (SpecKind::Remote(_), _) => Tolerance::Float32Reordering,
        (_, Some(d)) if d != "cpu" => Tolerance::Float32Reordering,
        _ => Tolerance::Exact,
    }
}

/// Writes every array of `d` (with its ids) to `path` for the worker processes. Arrays left
/// in their files (large `.npy` data, big image folders) are read here: a benchmark's data
/// is a few samples.
fn write_inputs(path: &Path, d: &Dataset) -> Result<(), AppError> {
    let mut d = d.clone();
    d.materialize()?;
    let arrays = d.arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    write_with_ids(path, arrays, d.ids.to_vec())
}

/// Runs the benchmark of `pair` and judges `policy`'s performance keys.
pub fn measure(
    pair: &Pair,
    perf: &PerfConfig,
    policy: &Policy,
    workers: &Workers,
    progress: &mut dyn FnMut(&str),
) -> Result<(Performance, Vec<CriterionResult>), AppError> {
    let data_npz: Option<PathBuf> = match pair.data {
        Some(d) => {
            let path = workers.scratch.join("inputs.npz");
            write_inputs(&path, d)?;
            Some(path)
        }
        None => None,
    };
    let mut plan = perf.plan.clone();
    plan.output_tolerance = [
        perf.tolerance
            .unwrap_or_else(|| output_tolerance(pair.baseline, pair.load)),
        perf.tolerance
            .unwrap_or_else(|| output_tolerance(pair.candidate, pair.load)),
    ];
    let init = |side: &str, spec: &ModelSpec| Init {
        side: side.into(),
        spec: spec.raw.clone(),
        load: LoadSpec::from(pair.load),
        workload: WorkloadSpec {
            data: data_npz.clone(),
            data_source: pair.data.map(|d| d.source.clone()),
            single_key: pair.mapping.single_key.clone(),
            pairs: pair.mapping.pairs.clone(),
            shapes: perf.shapes.clone(),
            seed: perf.plan.seed,
        },
        probe: perf.probe.clone(),
    };
    let mut spawn = |side: &str, spec: &ModelSpec| {
        progress(&format!("loading {side}"));
        ChildSide::spawn(
            workers.exe,
            &["__worker"],
            init(side, spec),
            plan.batch,
            workers.scratch,
        )
    };
    let mut b = spawn("baseline", pair.baseline)?;
    let mut c = spawn("candidate", pair.candidate)?;
    let env = qgate_probe::Fingerprint::read(&perf.probe.roots());
    let perf = run_pair(&mut b, &mut c, &plan, env, progress)?;
    let criteria = Gate::evaluate_performance(policy, &qgate_bench::observations(&perf));
    Ok((perf, criteria))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qgate_data::ArrayKeys;

    /// The workers' inputs hold the arrays a data set left in its file, as numpy wrote
    /// them, through a `--limit`/`--seed` subset.
    #[test]
    fn workers_get_the_arrays_left_in_the_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits/test.npz");
        let mut whole = qgate_data::load_npz(&path, &ArrayKeys::default()).unwrap();
        let mut lazy = qgate_data::load_npz_streaming(&path, &ArrayKeys::default(), 0).unwrap();
        assert!(lazy.arrays.is_empty());
        whole.subset(Some(40), Some(3));
        lazy.subset(Some(40), Some(3));
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("inputs.npz");
        write_inputs(&out, &lazy).unwrap();
        let written = qgate_data::load_npz(&out, &ArrayKeys::default()).unwrap();
        assert_eq!(written.ids, whole.ids);
        assert_eq!(written.arrays, whole.arrays);
    }
}

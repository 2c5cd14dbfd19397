//! What the orchestrator asks a measured side to do, and what comes back. The same types
//! travel in-process ([`crate::LocalSide`]) and as JSON lines to a worker process
//! ([`crate::ChildSide`]), so both paths run the same measurement code.

use std::path::PathBuf;

use qgate_core::Tolerance;
use qgate_probe::{PhaseReading, Roots, Unavailable};
use qgate_runtime::{ModelInfo, Provenance};
use serde::{Deserialize, Serialize};

use crate::clock::TimerOverhead;
use crate::workload::{WorkloadInfo, WorkloadSpec};

/// First message to a worker: what to load and feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Init {
    /// `baseline` or `candidate`, for messages.
    pub side: String,
    /// The model spec as given on the command line.
    pub spec: String,
    pub load: LoadSpec,
    pub workload: WorkloadSpec,
    /// Where the kernel's files and NVML are.
    pub probe: ProbeSpec,
}

/// The serialisable part of `qgate_runtime::LoadOptions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    pub threads: Option<usize>,
    pub device: Option<String>,
    /// ONNX Runtime library.
    pub ort_lib: Option<PathBuf>,
    /// `ORT_DYLIB_PATH` as the parent saw it.
    pub ort_env_path: Option<PathBuf>,
    /// Python whose onnxruntime is the fallback library.
    pub python: String,
    /// Remote request timeout, seconds.
    pub timeout_s: Option<f64>,
    /// tract gets qgate's graph rewrites (off only in tests).
    #[serde(default = "yes")]
    pub tract_rewrites: bool,
    /// `--max-memory` in bytes, applied by the worker before it allocates anything.
    #[serde(default)]
    pub max_memory: Option<u64>,
}

fn yes() -> bool {
    true
}

/// serde_json writes a non-finite f64 as `null`; read it back as NaN instead of failing the
/// whole worker reply.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Default for LoadSpec {
    fn default() -> LoadSpec {
        LoadSpec::from(&qgate_runtime::LoadOptions::default())
    }
}

impl From<&qgate_runtime::LoadOptions> for LoadSpec {
    fn from(o: &qgate_runtime::LoadOptions) -> LoadSpec {
        LoadSpec {
            threads: o.threads,
            device: o.device.clone(),
            ort_lib: o.ort_lib.clone(),
            ort_env_path: o.ort_env_path.clone(),
            python: o.python.clone(),
            timeout_s: o.timeout.map(|t| t.as_secs_f64()),
            tract_rewrites: o.tract_rewrites,
            max_memory: o.max_memory,
        }
    }
}

impl From<&LoadSpec> for qgate_runtime::LoadOptions {
    fn from(s: &LoadSpec) -> qgate_runtime::LoadOptions {
        qgate_runtime::LoadOptions {
            threads: s.threads,
            device: s.device.clone(),
            ort_lib: s.ort_lib.clone(),
            ort_env_path: s.ort_env_path.clone(),
            python: s.python.clone(),
            timeout: s.timeout_s.map(std::time::Duration::from_secs_f64),
            tract_rewrites: s.tract_rewrites,
            ort_optimize: true,
            max_memory: s.max_memory,
        }
    }
}

/// Where probes read from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// `/proc` (or a fake tree).
    pub proc_root: PathBuf,
    /// `/sys` (or a fake tree).
    pub sys_root: PathBuf,
    /// NVML library path; `None` = the driver's default.
    pub nvml_lib: Option<PathBuf>,
    /// Whether to try NVML at all.
    pub enable_nvml: bool,
}

impl ProbeSpec {
    /// The `/proc` and `/sys` roots.
    pub fn roots(&self) -> Roots {
        Roots {
            proc: self.proc_root.clone(),
            sys: self.sys_root.clone(),
        }
    }
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            nvml_lib: None,
            enable_nvml: true,
        }
    }
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run until steady: at least `min_iterations` and `min_seconds`, then until the
    /// median of the last window is within 5 % of the window before, at most `max_seconds`.
    Warmup {
        /// Samples per call.
        batch: usize,
        /// Fewest iterations.
        min_iterations: u64,
        /// Fewest seconds.
        min_seconds: f64,
        /// Most seconds.
        max_seconds: f64,
    },
    /// One request in flight, timed one call at a time (MLPerf SingleStream).
    Measure {
        /// Samples per call.
        batch: usize,
        /// Stop after this many calls…
        iterations: Option<u64>,
        /// …or after this many seconds (and at least `min_iterations` calls).
        seconds: Option<f64>,
        min_iterations: u64,
        /// Keep the outputs of the timed calls for the same-artifact check.
        capture: bool,
    },
    /// `streams` requests in flight, each on its own model instance (closed loop).
    Closed {
        /// Samples per call.
        batch: usize,
        /// Model instances, each with one request in flight.
        streams: usize,
        /// Seconds.
        seconds: f64,
    },
    /// Poisson arrivals at `rate` queries per second served by `servers` instances
    /// (open loop, MLPerf Server); latency counts from the scheduled arrival.
    Poisson {
        /// Offered queries per second.
        rate: f64,
        /// Seconds of arrivals.
        seconds: f64,
        /// Model instances serving the queue.
        servers: usize,
        /// Seed of the arrival times.
        seed: u64,
    },
    /// Rerun the captured batches untimed and compare; optionally compare with saved
    /// outputs keyed by sample id.
    CheckOutputs {
        /// Tolerance against the untimed pass.
        tolerance: Tolerance,
        /// Saved outputs (`--save-outputs` of an accuracy run).
        reference: Option<PathBuf>,
        /// Tolerance against the saved outputs.
        reference_tolerance: Tolerance,
    },
    /// Memory now and peak.
    Memory,
    Quit,
}

/// One answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Warmed(Warmed),
    Measured(Measured),
    Served(Served),
    Outputs(OutputCheck),
    Memory(MemoryReading),
    /// The request failed.
    Error {
        /// What went wrong.
        message: String,
    },
    Bye,
}

/// A worker's first answer: what it loaded, and what that cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Startup {
    pub provenance: Provenance,
    /// Declared inputs and outputs.
    pub info: ModelInfo,
    /// Wall time of loading (parsing, optimising, session creation), ms.
    pub load_ms: f64,
    /// Wall time of the first inference (batch of the latency test), ms.
    pub first_inference_ms: f64,
    /// Resident memory before loading the model (data already loaded), bytes.
    pub rss_before_load_bytes: Option<u64>,
    /// Resident memory after loading and the first inference, bytes.
    pub rss_after_load_bytes: Option<u64>,
    /// Model file size, bytes (none for a remote model).
    pub model_bytes: Option<u64>,
    /// Cost of a clock read in this process.
    pub timer: TimerOverhead,
    pub workload: WorkloadInfo,
    /// Energy / GPU meters found.
    pub meters: Vec<qgate_probe::Meter>,
    /// Meters not available, and why.
    pub meters_unavailable: Vec<Unavailable>,
    /// Process id of the measuring process.
    pub pid: u32,
}

/// Result of a warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warmed {
    pub iterations: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Whether the latency settled before `max_seconds`.
    pub steady: bool,
    /// Median latency of the last window, ms (NaN when fewer calls than one window were
    /// made: a slow model at a large batch; JSON carries it as null).
    #[serde(deserialize_with = "nan_from_null")]
    pub last_window_median_ms: f64,
}

/// Timed calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Latency of each call, ms, in order.
    pub latencies_ms: Vec<f64>,
    pub samples: u64,
    /// Wall time of the phase, seconds.
    pub wall_s: f64,
    /// CPU time of the measuring process over the phase, seconds.
    pub cpu_s: Option<f64>,
    /// Energy and GPU readings over the phase.
    pub phase: PhaseReading,
}

/// An open-loop run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    pub queries: u64,
    /// Queries still waiting at the cut-off (3 × the run + 1 s): the server could not keep
    /// up; their latency is counted as the wait so far, a lower bound.
    pub unserved: u64,
    /// Wall time from the first arrival to the last completion, seconds.
    pub wall_s: f64,
    /// Latency of each query from its scheduled arrival to its completion, ms.
    pub latencies_ms: Vec<f64>,
}

/// The same-artifact check of one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputCheck {
    /// Tolerance used against the untimed pass.
    pub tolerance: Tolerance,
    pub batches: u64,
    /// Batches whose outputs differ beyond the tolerance.
    pub mismatched_batches: u64,
    /// Timed batches with a NaN or infinite value in any output (the rerun may agree: NaN
    /// in the same place counts as equal, so this is judged on its own).
    #[serde(default)]
    pub non_finite_batches: u64,
    /// Largest absolute difference seen.
    #[serde(deserialize_with = "nan_from_null")]
    pub max_abs_diff: f64,
    /// Samples compared against saved outputs, when given.
    pub reference_samples: Option<u64>,
    /// Of those, samples that differ beyond the reference tolerance.
    pub reference_mismatches: Option<u64>,
    /// Tolerance against saved outputs.
    pub reference_tolerance: Option<Tolerance>,
    /// The first difference, in words.
    pub first_mismatch: Option<String>,
}

impl OutputCheck {
    /// Whether everything compared was equal within tolerance.
    pub fn passed(&self) -> bool {
        self.mismatched_batches == 0 && self.reference_mismatches.unwrap_or(0) == 0
    }
}

/// Memory of the measuring process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryReading {
    /// Resident now, bytes.
    pub rss_bytes: Option<u64>,
    /// Peak resident over the process's life (load included), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Peak resident since measuring began (after load), where the kernel can reset it.
    pub peak_rss_run_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warm_up_too_short_for_one_window_survives_the_json_round_trip() {
        // A slow model at batch 32 in a short sweep: three calls, no window median.
        let w = Warmed {
            iterations: 3,
            seconds: 0.08,
            steady: false,
            last_window_median_ms: f64::NAN,
        };
        let text = serde_json::to_string(&w).unwrap_or_default();
        assert!(text.contains("null"), "{text}");
        let back: Warmed = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(back.last_window_median_ms.is_nan());
        assert_eq!(back.iterations, 3);
    }
}

//! Report types copied from the crate that computes them; src/schema/convert.rs fills them.

#![allow(clippy::wildcard_imports)]

use schemars::JsonSchema;
use serde::Serialize;

use super::*;

/// Energy over the latency rounds.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EnergyFigures {
    /// Each meter's total.
    pub sources: Vec<EnergyReading>,
    /// Sum of the meters ÷ inferences (a call of `batch_size` samples is one inference).
    pub joules_per_inference: Option<f64>,
    /// 95 % Student-t interval over rounds.
    pub joules_per_inference_ci: Option<[f64; 2]>,
    /// 99 % interval (the `max_joules_per_inference` rule judges this one).
    #[serde(skip)]
    pub decision_ci: Option<[f64; 2]>,
    /// Meters that are not available here, and why.
    pub unavailable: Vec<Unavailable>,
}

/// Energy one meter counted over a phase.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct EnergyReading {
    pub source: Meter,
    /// What was measured, in plain words, including whether other processes count too.
    pub scope: String,
    /// Energy over the phase, in joules.
    pub joules: f64,
    /// Seconds the meter covered.
    pub seconds: f64,
    /// `joules / seconds`.
    pub mean_watts: f64,
    /// Joules per RAPL zone, GPU (`gpu0`, …) or rail.
    pub domains: Vec<(String, f64)>,
}

/// A description of the host; missing figures are `None` or `"unknown"`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Fingerprint {
    /// `model name` (x86), else `Model`, `Hardware` or the `CPU part` (Arm).
    pub cpu_model: String,
    /// `std::env::consts::ARCH` of this build.
    pub arch: String,
    /// The ISA features that matter for inference, sorted.
    pub cpu_features: Vec<String>,
    /// Logical CPUs (`processor` entries of cpuinfo).
    pub logical_cores: usize,
    /// Distinct (physical id, core id) pairs; `None` where cpuinfo has no topology (Arm).
    pub physical_cores: Option<usize>,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// `PRETTY_NAME` of `etc/os-release` beside the proc root, or `"unknown"`.
    pub os: String,
    /// /proc/sys/kernel/osrelease.
    pub kernel: Option<String>,
    /// cpufreq scaling governor of cpu0 (`performance`, `powersave`, …).
    pub governor: Option<String>,
    /// cpu0's `cpuinfo_max_freq`, in MHz.
    pub max_freq_mhz: Option<f64>,
    /// Whether simultaneous multithreading is active.
    pub smt: Option<bool>,
}

/// Use and memory of one GPU over a phase.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct GpuDeviceReading {
    /// NVML device index.
    pub index: u32,
    /// Device name as NVML reports it.
    pub name: String,
    /// Mean of NVML's GPU utilisation samples, in percent; `None` where unsupported.
    pub mean_util_pct: Option<f64>,
    /// Highest device memory in use seen by the samples (all processes), in bytes.
    pub peak_mem_used_bytes: Option<u64>,
    /// Device memory installed, in bytes.
    pub mem_total_bytes: Option<u64>,
}

/// Figures of one open-loop run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LoadFigures {
    /// Completed queries per second.
    pub achieved_per_s: f64,
    /// Median latency from arrival, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Queries not served by the cut-off (overload).
    pub unserved: u64,
}

/// An open-loop point.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LoadPoint {
    /// Offered queries per second.
    pub offered_per_s: f64,
    pub baseline: Option<LoadFigures>,
    pub candidate: Option<LoadFigures>,
}

/// Memory of the measuring process.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemoryFigures {
    /// Before loading the model (process and inputs), bytes.
    pub rss_before_load_bytes: Option<u64>,
    /// After loading and the first inference, bytes.
    pub rss_after_load_bytes: Option<u64>,
    /// Growth from loading, bytes.
    pub load_delta_bytes: Option<i64>,
    /// Peak over load and the latency rounds, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Peak during the latency rounds only, where the kernel can reset the peak.
    pub peak_rss_run_bytes: Option<u64>,
    /// Peak including the sweeps (extra instances for concurrency), bytes.
    pub peak_rss_with_sweeps_bytes: Option<u64>,
}

/// The same-artifact check of one side.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OutputCheck {
    /// Tolerance used against the untimed pass.
    pub tolerance: Tolerance,
    pub batches: u64,
    /// Batches whose outputs differ beyond the tolerance.
    pub mismatched_batches: u64,
    /// Timed batches with a NaN or infinite value in any output (the rerun may agree: NaN
    /// in the same place counts as equal, so this is judged on its own).
    pub non_finite_batches: u64,
    /// Largest absolute difference seen.
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

/// Pair figures.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PerfComparison {
    /// Baseline median latency ÷ candidate median latency.
    pub speedup: f64,
    /// 95 % interval from the paired rounds.
    pub speedup_ci: [f64; 2],
    /// 99 % interval (what `min_speedup` is judged on).
    pub speedup_decision_ci: [f64; 2],
    /// Candidate ÷ baseline throughput at the latency point.
    pub throughput_ratio: f64,
    /// Candidate ÷ baseline p99.
    pub p99_ratio: f64,
    /// Candidate ÷ baseline peak resident memory.
    pub peak_rss_ratio: Option<f64>,
    /// Candidate ÷ baseline model file size.
    pub model_bytes_ratio: Option<f64>,
    pub summary: String,
}

/// The `performance` section of a report.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Performance {
    /// The latency scenario in words.
    pub scenario: String,
    /// Samples per call at the latency point.
    pub batch_size: usize,
    pub rounds: usize,
    pub baseline: SidePerformance,
    pub candidate: SidePerformance,
    pub comparison: PerfComparison,
    /// Throughput and load sweeps.
    pub sweeps: Sweeps,
    pub environment: Fingerprint,
    /// Things to know about these figures.
    pub notes: Vec<String>,
}

/// Figures of one closed-loop run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PointFigures {
    /// Samples per second.
    pub samples_per_s: f64,
    /// Calls per second.
    pub requests_per_s: f64,
    /// Mean call latency, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// One side's performance figures.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SidePerformance {
    pub runtime: Provenance,
    /// Model file size, bytes.
    pub model_bytes: Option<u64>,
    /// Declared inputs, outputs and op counts.
    pub model: ModelInfo,
    /// Latency at the latency point, ms (all rounds pooled).
    pub latency_ms: LatencySummary,
    /// 95 % bootstrap interval of p99, ms.
    pub p99_ci_ms: [f64; 2],
    /// 99 % interval of p99 (what `max_p99_ms` is judged on).
    #[serde(skip)]
    pub p99_decision_ci_ms: [f64; 2],
    /// Samples per second at the latency point (one request in flight).
    pub throughput_per_s: f64,
    /// Peak resident memory of the measuring process over load and the latency rounds.
    pub peak_rss_bytes: Option<u64>,
    pub memory: MemoryFigures,
    /// Start-up, apart from steady state.
    pub startup: StartupFigures,
    pub warmup: Warmed,
    /// CPU use over the latency rounds.
    pub utilisation: Utilisation,
    /// Energy over the latency rounds.
    pub energy: EnergyFigures,
    /// GPU figures over the latency rounds.
    pub gpus: Vec<GpuDeviceReading>,
    pub output_check: Option<OutputCheck>,
    pub workload: WorkloadInfo,
    /// Cost of one clock read in the measuring process.
    pub timer_overhead: TimerOverhead,
    /// Median latency of each round, ms.
    pub round_medians_ms: Vec<f64>,
    /// Timed calls in each round.
    pub round_calls: Vec<usize>,
    /// Every timed call, ms, in order (exported to latencies.csv, not to JSON).
    #[serde(skip)]
    pub raw_latencies_ms: Vec<f64>,
}

/// Result of the highest-rate search.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SloSearch {
    /// The p99 bound, ms.
    pub slo_p99_ms: f64,
    /// Highest rate found meeting it, baseline (0 = none).
    pub baseline_max_per_s: f64,
    pub candidate_max_per_s: f64,
    /// Every trial: side, offered rate, p99, met.
    pub trials: Vec<SloTrial>,
}

/// One trial of the search.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SloTrial {
    /// `baseline` or `candidate`.
    pub side: String,
    pub offered_per_s: f64,
    /// Measured p99, ms.
    pub p99_ms: f64,
    /// Whether the bound was met with every query served.
    pub met: bool,
}

/// Start-up costs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StartupFigures {
    /// Loading (parse, optimise, session), ms.
    pub load_ms: f64,
    /// The first inference, ms.
    pub first_inference_ms: f64,
}

/// A closed-loop point.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SweepPoint {
    /// Samples per call.
    pub batch: usize,
    /// Requests in flight.
    pub streams: usize,
    pub baseline: Option<PointFigures>,
    pub candidate: Option<PointFigures>,
}

/// Throughput and load sweeps.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct Sweeps {
    /// Batch sizes, one request in flight.
    pub batch: Vec<SweepPoint>,
    /// In-flight requests (one instance each), at the latency batch.
    pub concurrency: Vec<SweepPoint>,
    /// Offline: maximum throughput.
    pub offline: Option<SweepPoint>,
    /// Poisson arrivals at fixed rates.
    pub load: Vec<LoadPoint>,
    /// Highest Poisson rate meeting the p99 bound.
    pub slo: Option<SloSearch>,
    /// Points that could not run, and why.
    pub skipped: Vec<String>,
}

/// What reading the clock costs: the overhead every latency figure carries once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, JsonSchema)]
pub struct TimerOverhead {
    /// Mean cost of one clock read, nanoseconds.
    pub read_ns: f64,
    /// Smallest non-zero difference between two consecutive reads, nanoseconds.
    pub resolution_ns: f64,
}

/// A meter that is absent, unreadable, or failed during a phase.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Unavailable {
    pub source: Meter,
    /// Why, in plain words, naming the file or library at fault.
    pub reason: String,
}

/// CPU time over wall time.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Utilisation {
    /// CPU seconds of the measuring process (all threads).
    pub cpu_seconds: Option<f64>,
    /// Wall seconds.
    pub wall_seconds: f64,
    /// CPU ÷ wall: cores kept busy on average.
    pub cores_busy: Option<f64>,
    /// `cores_busy` ÷ logical cores, percent.
    pub per_core_pct: Option<f64>,
}

/// Result of a warm-up.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Warmed {
    pub iterations: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Whether the latency settled before `max_seconds`.
    pub steady: bool,
    /// Median latency of the last window, ms (NaN when fewer calls than one window were
    /// made: a slow model at a large batch; JSON carries it as null).
    pub last_window_median_ms: f64,
}

/// What the benchmark feeds, described for the report.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WorkloadInfo {
    /// `data FILE (N samples)` or `synthetic (seeded uniform [0, 1))`.
    pub source: String,
    /// Distinct samples cycled through.
    pub samples: usize,
    /// Batch size the model fixes, if it does.
    pub fixed_batch: Option<usize>,
}

/// An energy or GPU meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Meter {
    /// Intel/AMD RAPL through powercap.
    Rapl,
    /// Jetson INA3221 power rails.
    Jetson,
    /// NVIDIA's management library.
    Nvml,
}

impl std::fmt::Display for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Meter::Rapl => "rapl",
            Meter::Jetson => "jetson",
            Meter::Nvml => "nvml",
        })
    }
}

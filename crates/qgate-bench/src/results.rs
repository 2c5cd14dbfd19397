//! What a benchmark measured: the typed results of [`crate::run_pair`], without the
//! orchestration that fills them and without sentences (qgate-report words them).

use qgate_core::latency::LatencySummary;
use qgate_probe::{EnergyReading, Fingerprint, GpuDeviceReading, Unavailable};
use qgate_runtime::Provenance;
use serde::Serialize;

use crate::clock::TimerOverhead;
use crate::protocol::{OutputCheck, Warmed};
use crate::workload::WorkloadInfo;

/// The `performance` section of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Performance {
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
    pub notes: Vec<MeasurementNote>,
}

/// Something about how the figures were measured that the reader should know.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MeasurementNote {
    /// A side's latency had not settled when its warm-up ended.
    NotSteady {
        /// The side's model spec.
        spec: String,
        /// Warm-up seconds spent.
        seconds: f64,
        /// Warm-up calls made.
        iterations: u64,
    },
    /// More than one timing in ten is an outlier (modified z-score > 3.5).
    Outliers {
        spec: String,
        outliers: usize,
        /// Timings in all.
        n: usize,
    },
    /// The CPU frequency governor is not `performance`.
    Governor { governor: String },
}

/// How the candidate's speed compares with the baseline's, judged on the 95 % interval of
/// the paired speed-up: a difference inside [`qgate_core::latency::LAYOUT_MARGIN`] is not
/// material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeedVerdict {
    /// The speed-up is not finite (no timing).
    Unmeasured,
    /// The whole interval lies above 1 + margin.
    Faster,
    /// The whole interval lies below 1 − margin.
    Slower,
    /// The interval excludes 1 but stays within the margin.
    WithinMargin,
    /// The interval contains 1.
    Unclear,
}

/// One side's performance figures.
#[derive(Debug, Clone, Serialize)]
pub struct SidePerformance {
    pub runtime: Provenance,
    /// Model file size, bytes.
    pub model_bytes: Option<u64>,
    /// Declared inputs, outputs and op counts.
    pub model: qgate_runtime::ModelInfo,
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

/// Memory of the measuring process.
#[derive(Debug, Clone, Serialize)]
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

/// Start-up costs.
#[derive(Debug, Clone, Serialize)]
pub struct StartupFigures {
    /// Loading (parse, optimise, session), ms.
    pub load_ms: f64,
    /// The first inference, ms.
    pub first_inference_ms: f64,
}

/// CPU time over wall time.
#[derive(Debug, Clone, Serialize)]
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

/// Energy over the latency rounds.
#[derive(Debug, Clone, Serialize)]
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

/// Pair figures.
#[derive(Debug, Clone, Serialize)]
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
    /// The speed-up judged on its 95 % interval.
    pub verdict: SpeedVerdict,
}

/// Throughput and load sweeps.
#[derive(Debug, Clone, Default, Serialize)]
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

/// A closed-loop point.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// Samples per call.
    pub batch: usize,
    /// Requests in flight.
    pub streams: usize,
    pub baseline: Option<PointFigures>,
    pub candidate: Option<PointFigures>,
}

/// Figures of one closed-loop run.
#[derive(Debug, Clone, Serialize)]
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

/// An open-loop point.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPoint {
    /// Offered queries per second.
    pub offered_per_s: f64,
    pub baseline: Option<LoadFigures>,
    pub candidate: Option<LoadFigures>,
}

/// Figures of one open-loop run.
#[derive(Debug, Clone, Serialize)]
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

/// Result of the highest-rate search.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct SloTrial {
    /// `baseline` or `candidate`.
    pub side: String,
    pub offered_per_s: f64,
    /// Measured p99, ms.
    pub p99_ms: f64,
    /// Whether the bound was met with every query served.
    pub met: bool,
}

/// Progress messages while measuring.
/// The speed-up's verdict from its 95 % interval `ci` (see [`SpeedVerdict`]).
pub fn speed_verdict(ratio: f64, ci: [f64; 2]) -> SpeedVerdict {
    let margin = qgate_core::latency::LAYOUT_MARGIN;
    if !ratio.is_finite() {
        SpeedVerdict::Unmeasured
    } else if ci[0] > 1.0 + margin {
        SpeedVerdict::Faster
    } else if ci[1] < 1.0 - margin {
        SpeedVerdict::Slower
    } else if ci[0] > 1.0 || ci[1] < 1.0 {
        SpeedVerdict::WithinMargin
    } else {
        SpeedVerdict::Unclear
    }
}

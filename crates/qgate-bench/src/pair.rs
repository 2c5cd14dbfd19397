//! The baseline/candidate benchmark: warm-up, interleaved rounds (A B, then B A, …) at the
//! latency point, the same-artifact check, memory, then the sweeps; and the figures the
//! report shows, computed from what was measured.

use std::path::PathBuf;

use qgate_core::latency::{
    paired_speedup, summarize_with_p99, t_interval, LatencySummary, DECISION_CONFIDENCE,
};
use qgate_core::policy::PerfObservations;
use qgate_core::stats::{percentile, BootstrapSettings};
use qgate_core::Tolerance;
use qgate_probe::{EnergyReading, Fingerprint, GpuDeviceReading, PhaseReading, Unavailable};
use qgate_runtime::Provenance;
use serde::Serialize;

use crate::clock::TimerOverhead;
use crate::protocol::{Measured, MemoryReading, OutputCheck, Request, Response, Served, Warmed};
use crate::side::Side;
use crate::workload::WorkloadInfo;
use crate::BenchError;

/// What to measure and for how long.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Samples per call at the latency point [1].
    pub batch: usize,
    /// Warm-up: fewest calls.
    pub warmup_iterations: u64,
    /// Warm-up: fewest seconds.
    pub warmup_seconds: f64,
    /// Warm-up: most seconds (stops even when not steady, and says so).
    pub warmup_max_seconds: f64,
    /// Timed calls per side in total (split over the rounds); overrides `seconds`.
    pub iterations: Option<u64>,
    /// Timed seconds per side in total (split over the rounds).
    pub seconds: f64,
    pub rounds: usize,
    /// Fewest calls per round.
    pub min_iterations_per_round: u64,
    /// Batch sizes of the throughput sweep (one request in flight).
    pub batch_sweep: Vec<usize>,
    /// In-flight requests of the closed-loop sweep (one model instance each).
    pub concurrency_sweep: Vec<usize>,
    /// Poisson load points as fractions of the baseline's single-stream capacity.
    pub load_fractions: Vec<f64>,
    /// Further Poisson rates, queries per second.
    pub arrival_rates: Vec<f64>,
    /// p99 latency bound of the highest-rate search, ms.
    pub slo_p99_ms: Option<f64>,
    /// Model instances serving Poisson arrivals and the offline run.
    pub servers: usize,
    /// Batch of the offline (maximum throughput) run; `None` = no offline run.
    pub offline_batch: Option<usize>,
    /// Seconds per sweep point and side.
    pub sweep_seconds: f64,
    /// Compare timed outputs with an untimed pass.
    pub output_check: bool,
    /// Tolerance of that comparison, per side (exact for deterministic CPU runtimes).
    pub output_tolerance: [Tolerance; 2],
    /// Saved outputs of an accuracy run, per side.
    pub reference_outputs: [Option<PathBuf>; 2],
    /// Tolerance against saved outputs (batches may differ).
    pub reference_tolerance: Tolerance,
    /// Seed of arrivals and bootstraps.
    pub seed: u64,
    /// Bootstrap of the latency intervals.
    pub bootstrap: BootstrapSettings,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            batch: 1,
            warmup_iterations: 10,
            warmup_seconds: 0.5,
            warmup_max_seconds: 5.0,
            iterations: None,
            seconds: 3.0,
            rounds: 10,
            min_iterations_per_round: 5,
            batch_sweep: vec![1, 8, 32],
            concurrency_sweep: vec![1, 2],
            load_fractions: vec![0.25, 0.5, 0.75, 0.9],
            arrival_rates: Vec::new(),
            slo_p99_ms: None,
            servers: 1,
            offline_batch: Some(32),
            sweep_seconds: 1.0,
            output_check: true,
            output_tolerance: [Tolerance::Exact; 2],
            reference_outputs: [None, None],
            reference_tolerance: Tolerance::Float32Reordering,
            seed: 0,
            bootstrap: BootstrapSettings::default(),
        }
    }
}

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
pub type Progress<'a> = &'a mut dyn FnMut(&str);

fn expect_measured(r: Response, side: &str) -> Result<Measured, BenchError> {
    match r {
        Response::Measured(m) => Ok(m),
        other => Err(unexpected(side, &other)),
    }
}

fn unexpected(side: &str, r: &Response) -> BenchError {
    BenchError::Side {
        side: side.to_string(),
        message: format!("unexpected answer {r:?}"),
    }
}

/// Runs the whole benchmark on two sides and computes the figures.
pub fn run_pair(
    baseline: &mut dyn Side,
    candidate: &mut dyn Side,
    plan: &Plan,
    environment: Fingerprint,
    progress: Progress,
) -> Result<Performance, BenchError> {
    let rounds = plan.rounds.max(2);
    let mut sides: [&mut dyn Side; 2] = [baseline, candidate];
    // Warm-up.
    let mut warm = Vec::new();
    for s in sides.iter_mut() {
        progress(&format!("warming up {}", s.name()));
        match s.call(&Request::Warmup {
            batch: plan.batch,
            min_iterations: plan.warmup_iterations,
            min_seconds: plan.warmup_seconds,
            max_seconds: plan.warmup_max_seconds.max(plan.warmup_seconds),
        })? {
            Response::Warmed(w) => warm.push(w),
            other => return Err(unexpected(s.name(), &other)),
        }
    }
    // Interleaved rounds: A B, B A, A B, … so neither side always runs first.
    let per_round_iters = plan.iterations.map(|i| i.div_ceil(rounds as u64).max(1));
    let per_round_secs = plan.seconds / rounds as f64;
    let mut measured: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        progress(&format!("round {}/{rounds}", r + 1));
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let m = sides[k].call(&Request::Measure {
                batch: plan.batch,
                iterations: per_round_iters,
                seconds: Some(per_round_secs),
                min_iterations: plan.min_iterations_per_round,
                capture: plan.output_check,
            })?;
            measured[k].push(expect_measured(m, sides[k].name())?);
        }
    }
    let mut memory = Vec::new();
    for s in sides.iter_mut() {
        memory.push(read_memory(*s)?);
    }
    let mut checks: [Option<OutputCheck>; 2] = [None, None];
    if plan.output_check {
        for (k, s) in sides.iter_mut().enumerate() {
            progress(&format!("checking {} outputs", s.name()));
            match s.call(&Request::CheckOutputs {
                tolerance: plan.output_tolerance[k],
                reference: plan.reference_outputs[k].clone(),
                reference_tolerance: plan.reference_tolerance,
            })? {
                Response::Outputs(c) => checks[k] = Some(c),
                other => return Err(unexpected(s.name(), &other)),
            }
        }
    }
    let medians = [pooled_median(&measured[0]), pooled_median(&measured[1])];
    let sweeps = run_sweeps(&mut sides, plan, medians, progress)?;
    let mut memory_end = Vec::new();
    for s in sides.iter_mut() {
        memory_end.push(read_memory(*s)?);
    }
    // Figures.
    let logical_cores = environment.logical_cores.max(1);
    let side_perf = |k: usize, s: &dyn Side| -> SidePerformance {
        side_figures(
            s,
            &measured[k],
            warm[k].clone(),
            memory[k],
            memory_end[k],
            checks[k].clone(),
            plan,
            logical_cores,
        )
    };
    let b = side_perf(0, &*sides[0]);
    let c = side_perf(1, &*sides[1]);
    let pairs: Vec<(&[f64], &[f64])> = measured[0]
        .iter()
        .zip(&measured[1])
        .map(|(a, b)| (a.latencies_ms.as_slice(), b.latencies_ms.as_slice()))
        .collect();
    let sp95 = paired_speedup(&pairs, 0.95);
    let sp99 = paired_speedup(&pairs, DECISION_CONFIDENCE);
    let ratio = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64),
        _ => None,
    };
    let comparison = PerfComparison {
        speedup: sp95.ratio,
        speedup_ci: sp95.ci,
        speedup_decision_ci: sp99.ci,
        throughput_ratio: c.throughput_per_s / b.throughput_per_s,
        p99_ratio: c.latency_ms.p99 / b.latency_ms.p99,
        peak_rss_ratio: ratio(b.peak_rss_bytes, c.peak_rss_bytes),
        model_bytes_ratio: ratio(b.model_bytes, c.model_bytes),
        verdict: speed_verdict(sp95.ratio, sp95.ci),
    };
    let mut notes = Vec::new();
    for (s, w) in [(&b, &warm[0]), (&c, &warm[1])] {
        if !w.steady {
            notes.push(MeasurementNote::NotSteady {
                spec: s.runtime.spec.clone(),
                seconds: w.seconds,
                iterations: w.iterations,
            });
        }
        if s.latency_ms.outliers * 10 > s.latency_ms.n.max(1) {
            notes.push(MeasurementNote::Outliers {
                spec: s.runtime.spec.clone(),
                outliers: s.latency_ms.outliers,
                n: s.latency_ms.n,
            });
        }
    }
    if let Some(g) = environment
        .governor
        .as_deref()
        .filter(|g| *g != "performance")
    {
        notes.push(MeasurementNote::Governor {
            governor: g.to_string(),
        });
    }
    Ok(Performance {
        batch_size: plan.batch,
        rounds,
        baseline: b,
        candidate: c,
        comparison,
        sweeps,
        environment,
        notes,
    })
}

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

fn read_memory(s: &mut dyn Side) -> Result<MemoryReading, BenchError> {
    match s.call(&Request::Memory)? {
        Response::Memory(m) => Ok(m),
        other => Err(unexpected(s.name(), &other)),
    }
}

fn pooled_median(m: &[Measured]) -> f64 {
    let all: Vec<f64> = m
        .iter()
        .flat_map(|x| x.latencies_ms.iter().copied())
        .collect();
    percentile(&all, 50.0)
}

#[allow(clippy::too_many_arguments)]
fn side_figures(
    s: &dyn Side,
    measured: &[Measured],
    warmup: Warmed,
    memory: MemoryReading,
    memory_end: MemoryReading,
    output_check: Option<OutputCheck>,
    plan: &Plan,
    logical_cores: usize,
) -> SidePerformance {
    let st = s.startup();
    let raw: Vec<f64> = measured
        .iter()
        .flat_map(|m| m.latencies_ms.iter().copied())
        .collect();
    let (latency, p99_ci, p99_decision) = summarize_with_p99(&raw, plan.bootstrap);
    let samples: u64 = measured.iter().map(|m| m.samples).sum();
    let wall: f64 = measured.iter().map(|m| m.wall_s).sum();
    let cpu: Option<f64> = measured.iter().map(|m| m.cpu_s).sum();
    let cores_busy = cpu.map(|c| c / wall);
    let energy = energy_figures(measured, st.meters_unavailable.clone());
    SidePerformance {
        runtime: st.provenance.clone(),
        model_bytes: st.model_bytes,
        p99_ci_ms: p99_ci,
        p99_decision_ci_ms: p99_decision,
        model: st.info.clone(),
        throughput_per_s: samples as f64 / wall,
        peak_rss_bytes: memory.peak_rss_bytes,
        memory: MemoryFigures {
            rss_before_load_bytes: st.rss_before_load_bytes,
            rss_after_load_bytes: st.rss_after_load_bytes,
            load_delta_bytes: match (st.rss_before_load_bytes, st.rss_after_load_bytes) {
                (Some(a), Some(b)) => Some(b as i64 - a as i64),
                _ => None,
            },
            peak_rss_bytes: memory.peak_rss_bytes,
            peak_rss_run_bytes: memory.peak_rss_run_bytes,
            peak_rss_with_sweeps_bytes: memory_end.peak_rss_bytes,
        },
        startup: StartupFigures {
            load_ms: st.load_ms,
            first_inference_ms: st.first_inference_ms,
        },
        warmup,
        utilisation: Utilisation {
            cpu_seconds: cpu,
            wall_seconds: wall,
            cores_busy,
            per_core_pct: cores_busy.map(|c| 100.0 * c / logical_cores as f64),
        },
        energy,
        gpus: merge_gpus(measured.iter().map(|m| &m.phase)),
        output_check,
        workload: st.workload.clone(),
        timer_overhead: st.timer,
        round_medians_ms: measured
            .iter()
            .map(|m| percentile(&m.latencies_ms, 50.0))
            .collect(),
        round_calls: measured.iter().map(|m| m.latencies_ms.len()).collect(),
        latency_ms: latency,
        raw_latencies_ms: raw,
    }
}

/// Totals per meter, and joules per inference with intervals over the rounds.
fn energy_figures(measured: &[Measured], unavailable: Vec<Unavailable>) -> EnergyFigures {
    let mut sources: Vec<EnergyReading> = Vec::new();
    let mut per_round = Vec::new();
    let mut unavailable = unavailable;
    for m in measured {
        let calls = m.latencies_ms.len() as f64;
        let mut round_j = 0.0;
        for e in &m.phase.energy {
            round_j += e.joules;
            match sources.iter_mut().find(|s| s.source == e.source) {
                Some(s) => {
                    s.joules += e.joules;
                    s.seconds += e.seconds;
                    for (name, j) in &e.domains {
                        match s.domains.iter_mut().find(|d| &d.0 == name) {
                            Some(d) => d.1 += j,
                            None => s.domains.push((name.clone(), *j)),
                        }
                    }
                }
                None => sources.push(e.clone()),
            }
        }
        if !m.phase.energy.is_empty() && calls > 0.0 {
            per_round.push(round_j / calls);
        }
    }
    for s in sources.iter_mut() {
        s.mean_watts = if s.seconds > 0.0 {
            s.joules / s.seconds
        } else {
            f64::NAN
        };
    }
    // A meter that came and went (failed mid-run) would make rounds incomparable.
    let complete = per_round.len() == measured.len() && !per_round.is_empty();
    if !complete && !sources.is_empty() {
        unavailable.push(Unavailable {
            source: "energy".into(),
            reason: "a meter stopped answering during the rounds; no per-inference figure".into(),
        });
    }
    let (jpi, ci, dci) = if complete {
        let (m, ci) = t_interval(&per_round, 0.95);
        let (_, dci) = t_interval(&per_round, DECISION_CONFIDENCE);
        (Some(m), Some(ci), Some(dci))
    } else {
        (None, None, None)
    };
    EnergyFigures {
        sources,
        joules_per_inference: jpi,
        joules_per_inference_ci: ci,
        decision_ci: dci,
        unavailable,
    }
}

fn merge_gpus<'a>(phases: impl Iterator<Item = &'a PhaseReading>) -> Vec<GpuDeviceReading> {
    let mut out: Vec<(GpuDeviceReading, Vec<f64>)> = Vec::new();
    for p in phases {
        for g in &p.gpus {
            match out.iter_mut().find(|(o, _)| o.index == g.index) {
                Some((o, utils)) => {
                    o.peak_mem_used_bytes = o.peak_mem_used_bytes.max(g.peak_mem_used_bytes);
                    utils.extend(g.mean_util_pct);
                }
                None => out.push((g.clone(), g.mean_util_pct.into_iter().collect())),
            }
        }
    }
    out.into_iter()
        .map(|(mut g, utils)| {
            if !utils.is_empty() {
                g.mean_util_pct = Some(utils.iter().sum::<f64>() / utils.len() as f64);
            }
            g
        })
        .collect()
}

fn point(m: &Measured) -> PointFigures {
    PointFigures {
        samples_per_s: m.samples as f64 / m.wall_s,
        requests_per_s: m.latencies_ms.len() as f64 / m.wall_s,
        mean_ms: qgate_core::stats::mean(&m.latencies_ms),
        p50_ms: percentile(&m.latencies_ms, 50.0),
        p99_ms: percentile(&m.latencies_ms, 99.0),
    }
}

fn load_figures(s: &Served) -> LoadFigures {
    LoadFigures {
        achieved_per_s: (s.queries - s.unserved) as f64 / s.wall_s,
        p50_ms: percentile(&s.latencies_ms, 50.0),
        p90_ms: percentile(&s.latencies_ms, 90.0),
        p99_ms: percentile(&s.latencies_ms, 99.0),
        unserved: s.unserved,
    }
}

fn run_sweeps(
    sides: &mut [&mut dyn Side; 2],
    plan: &Plan,
    medians_ms: [f64; 2],
    progress: Progress,
) -> Result<Sweeps, BenchError> {
    let baseline_median_ms = medians_ms[0];
    let mut sw = Sweeps::default();
    let mut closed = |sides: &mut [&mut dyn Side; 2],
                      batch: usize,
                      streams: usize,
                      skipped: &mut Vec<String>|
     -> SweepPoint {
        let mut figs: [Option<PointFigures>; 2] = [None, None];
        for (k, s) in sides.iter_mut().enumerate() {
            progress(&format!("{}: batch {batch}, {streams} in flight", s.name()));
            let warm = s.call(&Request::Warmup {
                batch,
                min_iterations: 3,
                min_seconds: 0.0,
                max_seconds: (plan.sweep_seconds / 4.0).max(0.05),
            });
            let r = warm.and_then(|_| {
                s.call(&Request::Closed {
                    batch,
                    streams,
                    seconds: plan.sweep_seconds,
                })
            });
            match r {
                Ok(Response::Measured(m)) => figs[k] = Some(point(&m)),
                Ok(other) => skipped.push(format!("{other:?}")),
                Err(e) => skipped.push(format!("batch {batch}, {streams} in flight: {e}")),
            }
        }
        let [baseline, candidate] = figs;
        SweepPoint {
            batch,
            streams,
            baseline,
            candidate,
        }
    };
    let mut skipped = Vec::new();
    for &b in &plan.batch_sweep {
        sw.batch.push(closed(sides, b, 1, &mut skipped));
    }
    for &n in &plan.concurrency_sweep {
        sw.concurrency
            .push(closed(sides, plan.batch, n, &mut skipped));
    }
    if let Some(b) = plan.offline_batch {
        sw.offline = Some(closed(sides, b, plan.servers.max(1), &mut skipped));
    }
    // Open loop. Rates as fractions of the baseline's capacity at batch 1, so both sides
    // see the same offered load.
    let mut rates: Vec<f64> = Vec::new();
    if plan.batch == 1 && baseline_median_ms > 0.0 && baseline_median_ms.is_finite() {
        let capacity = plan.servers.max(1) as f64 * 1000.0 / baseline_median_ms;
        rates.extend(plan.load_fractions.iter().map(|f| f * capacity));
    }
    rates.extend(plan.arrival_rates.iter().copied());
    for (i, &rate) in rates.iter().enumerate() {
        let mut figs: [Option<LoadFigures>; 2] = [None, None];
        for (k, s) in sides.iter_mut().enumerate() {
            progress(&format!("{}: Poisson arrivals at {rate:.1}/s", s.name()));
            match s.call(&Request::Poisson {
                rate,
                seconds: plan.sweep_seconds,
                servers: plan.servers,
                seed: plan.seed.wrapping_add(i as u64),
            }) {
                Ok(Response::Served(sv)) => figs[k] = Some(load_figures(&sv)),
                Ok(other) => skipped.push(format!("{other:?}")),
                Err(e) => skipped.push(format!("Poisson {rate:.1}/s: {e}")),
            }
        }
        let [baseline, candidate] = figs;
        sw.load.push(LoadPoint {
            offered_per_s: rate,
            baseline,
            candidate,
        });
    }
    if let Some(slo) = plan.slo_p99_ms {
        let mut trials = Vec::new();
        let mut best = [0.0; 2];
        for (k, s) in sides.iter_mut().enumerate() {
            // Bisection between 0 and 1.5 × this side's single-stream capacity.
            let capacity = plan.servers.max(1) as f64 * 1000.0 / medians_ms[k].max(1e-3);
            let (mut lo, mut hi) = (0.0, 1.5 * capacity);
            for step in 0..7 {
                let rate = (lo + hi) / 2.0;
                progress(&format!(
                    "{}: searching the highest rate with p99 ≤ {slo} ms ({rate:.1}/s)",
                    s.name()
                ));
                let served = match s.call(&Request::Poisson {
                    rate,
                    seconds: plan.sweep_seconds,
                    servers: plan.servers,
                    seed: plan.seed.wrapping_add(100 + step),
                })? {
                    Response::Served(sv) => sv,
                    other => return Err(unexpected(s.name(), &other)),
                };
                let f = load_figures(&served);
                let met = f.p99_ms <= slo && f.unserved == 0;
                trials.push(SloTrial {
                    side: s.name().to_string(),
                    offered_per_s: rate,
                    p99_ms: f.p99_ms,
                    met,
                });
                if met {
                    lo = rate;
                } else {
                    hi = rate;
                }
            }
            best[k] = lo;
        }
        sw.slo = Some(SloSearch {
            slo_p99_ms: slo,
            baseline_max_per_s: best[0],
            candidate_max_per_s: best[1],
            trials,
        });
    }
    sw.skipped = skipped;
    Ok(sw)
}

/// What the performance criteria look at.
pub fn observations(p: &Performance) -> PerfObservations {
    let c = &p.candidate;
    let same = match (&p.baseline.output_check, &c.output_check) {
        (Some(a), Some(b)) => Some((a.passed() && b.passed(), output_sentence(a, b))),
        _ => None,
    };
    let finite = match (&p.baseline.output_check, &c.output_check) {
        (Some(a), Some(b)) => Some([
            [a.non_finite_batches, a.batches],
            [b.non_finite_batches, b.batches],
        ]),
        _ => None,
    };
    PerfObservations {
        speedup: p.comparison.speedup,
        speedup_decision_ci: p.comparison.speedup_decision_ci,
        p99_ms: c.latency_ms.p99,
        p99_decision_ci: c.p99_decision_ci_ms,
        peak_rss_bytes: c.peak_rss_bytes,
        joules_per_inference: match (c.energy.joules_per_inference, c.energy.decision_ci) {
            (Some(j), Some(ci)) => Ok((j, ci)),
            _ => Err(if c.energy.unavailable.is_empty() {
                "no energy meter".to_string()
            } else {
                format!(
                    "energy is not measurable on this machine ({})",
                    c.energy
                        .unavailable
                        .iter()
                        .map(|u| format!("{}: {}", u.source, u.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }),
        },
        same_outputs: same,
        non_finite_batches: finite,
    }
}

fn output_sentence(a: &OutputCheck, b: &OutputCheck) -> String {
    let one = |name: &str, c: &OutputCheck| {
        let mut s = format!(
            "{name}: {}/{} timed batches equal an untimed rerun ({:?})",
            c.batches - c.mismatched_batches,
            c.batches,
            c.tolerance
        );
        if let (Some(n), Some(bad)) = (c.reference_samples, c.reference_mismatches) {
            s.push_str(&format!(
                ", {}/{n} samples equal the saved outputs ({:?})",
                n - bad,
                c.reference_tolerance.unwrap_or(Tolerance::Exact)
            ));
        }
        if let Some(m) = &c.first_mismatch {
            s.push_str(&format!(" — {m}"));
        }
        s
    };
    format!("{}; {}", one("baseline", a), one("candidate", b))
}

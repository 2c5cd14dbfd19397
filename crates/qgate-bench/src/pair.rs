//! The baseline/candidate benchmark: warm-up, interleaved rounds (A B, then B A, …) at the
//! latency point, the same-artifact check, memory, then the sweeps; and the figures the
//! report shows, computed from what was measured.

use std::path::PathBuf;

use qgate_core::latency::{paired_speedup, summarize_with_p99, t_interval, DECISION_CONFIDENCE};
use qgate_core::policy::{OutputCheckCounts, PerfObservations};
use qgate_core::stats::{percentile, BootstrapSettings};
use qgate_core::Tolerance;
use qgate_probe::{EnergyReading, Fingerprint, GpuDeviceReading, PhaseReading, Unavailable};

use crate::protocol::{Measured, MemoryReading, OutputCheck, Request, Response, Served, Warmed};
use crate::results::*;
use crate::side::Side;
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
    // Rounds each meter counted: a meter that came and went makes rounds incomparable.
    let mut rounds_of: Vec<(qgate_probe::Meter, usize)> = Vec::new();
    for m in measured {
        let calls = m.latencies_ms.len() as f64;
        let mut round_j = 0.0;
        for e in &m.phase.energy {
            round_j += e.joules;
            match rounds_of.iter_mut().find(|(s, _)| *s == e.source) {
                Some((_, n)) => *n += 1,
                None => rounds_of.push((e.source, 1)),
            }
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
    let gaps: Vec<qgate_probe::Meter> = rounds_of
        .iter()
        .filter(|(_, n)| *n < measured.len())
        .map(|(s, _)| *s)
        .collect();
    let complete = per_round.len() == measured.len() && !per_round.is_empty() && gaps.is_empty();
    if !complete {
        // The meters that missed rounds (all that counted, when none did: a round without
        // calls), unless they already said why.
        let named: Vec<qgate_probe::Meter> = if gaps.is_empty() {
            sources.iter().map(|s| s.source).collect()
        } else {
            gaps
        };
        for source in named {
            if !unavailable.iter().any(|u| u.source == source) {
                unavailable.push(Unavailable {
                    source,
                    reason: "stopped answering during the rounds; no per-inference figure".into(),
                });
            }
        }
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
        (Some(a), Some(b)) => Some([counts(a), counts(b)]),
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

/// What one side's output check found, for the `same_outputs` criterion.
fn counts(c: &OutputCheck) -> OutputCheckCounts {
    OutputCheckCounts {
        batches: c.batches,
        mismatched: c.mismatched_batches,
        tolerance: c.tolerance,
        reference: c
            .reference_samples
            .zip(c.reference_mismatches)
            .map(|(n, bad)| (n, bad, c.reference_tolerance.unwrap_or(Tolerance::Exact))),
        first_mismatch: c.first_mismatch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qgate_probe::Meter;

    fn reading(source: Meter, joules: f64) -> EnergyReading {
        EnergyReading {
            source,
            scope: String::new(),
            joules,
            seconds: 1.0,
            mean_watts: joules,
            domains: Vec::new(),
        }
    }

    /// A round of 10 calls in which `meters` counted 2 J each.
    fn round(meters: &[Meter]) -> Measured {
        Measured {
            latencies_ms: vec![1.0; 10],
            samples: 10,
            wall_s: 1.0,
            cpu_s: None,
            phase: PhaseReading {
                wall_s: 1.0,
                energy: meters.iter().map(|m| reading(*m, 2.0)).collect(),
                gpus: Vec::new(),
            },
        }
    }

    #[test]
    fn a_meter_that_drops_out_leaves_no_per_inference_figure_and_is_named() {
        let both = [Meter::Rapl, Meter::Jetson];
        let steady = energy_figures(&[round(&both), round(&both), round(&both)], Vec::new());
        // 2 J + 2 J per round of 10 calls.
        let jpi = steady.joules_per_inference.unwrap();
        assert!((jpi - 0.4).abs() < 1e-12, "{jpi}");
        assert!(steady.unavailable.is_empty());

        let dropped = [round(&both), round(&[Meter::Rapl]), round(&[Meter::Rapl])];
        let e = energy_figures(&dropped, Vec::new());
        assert_eq!(e.joules_per_inference, None);
        let named: Vec<Meter> = e.unavailable.iter().map(|u| u.source).collect();
        assert_eq!(named, [Meter::Jetson], "{:?}", e.unavailable);

        // A meter that already said why is not named twice.
        let said = Unavailable {
            source: Meter::Jetson,
            reason: "in_power0_input unreadable".into(),
        };
        let e = energy_figures(&dropped, vec![said.clone()]);
        assert_eq!(e.unavailable, [said]);
    }
}

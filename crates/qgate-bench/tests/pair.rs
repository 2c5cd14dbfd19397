//! The benchmark's statistics on mock models whose latencies are known: a fake clock
//! advanced by each call (as hyperfine tests with a mock executor), on a simulated machine
//! whose speed drifts over time.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use qgate_bench::clock::{Clock, FakeClock};
use qgate_bench::protocol::{Init, LoadSpec, ProbeSpec};
use qgate_bench::{observations, run_pair, LocalSide, Performance, Plan, WorkloadSpec};
use qgate_core::latency::fails_at_least;
use qgate_core::policy::{Gate, Policy, PolicyFile, Source, Status};
use qgate_core::stats::{BootstrapSettings, Rng};
use qgate_core::{Array, Tolerance};
use qgate_probe::Fingerprint;
use qgate_runtime::mock::MockModel;
use qgate_runtime::{Dim, Model, ModelInfo, TensorInfo};

fn info() -> ModelInfo {
    ModelInfo {
        inputs: vec![TensorInfo {
            name: "x".into(),
            elem_type: Some(qgate_core::ElemType::F32),
            shape: vec![Dim::Symbolic("N".into()), Dim::Fixed(4)],
        }],
        outputs: vec![TensorInfo {
            name: "y".into(),
            elem_type: Some(qgate_core::ElemType::F32),
            shape: vec![Dim::Symbolic("N".into()), Dim::Fixed(2)],
        }],
        ..ModelInfo::default()
    }
}

/// A model whose call takes `median_ms` × machine drift × log-normal noise (σ 0.15) with
/// rare 3× spikes, on the fake clock. The drift is a slow ±30 % wave shared by both sides,
/// like a machine whose other load comes and goes.
fn mock(clock: &FakeClock, median_ms: f64, seed: u64, phase: f64) -> Box<dyn Model> {
    let clock = clock.clone();
    let mut rng = Rng::new(seed);
    let counter = Arc::new(AtomicU64::new(0));
    Box::new(MockModel::new(info(), move |inputs: &[Array]| {
        let t = clock.now().as_secs_f64();
        let drift = 1.0 + 0.3 * (2.0 * std::f64::consts::PI * t / 1.7 + phase).sin();
        let (u1, u2) = (rng.unit().max(1e-300), rng.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let spike = if rng.unit() < 0.01 { 3.0 } else { 1.0 };
        let ms = median_ms * drift * (0.15 * z).exp() * spike;
        clock.advance(Duration::from_secs_f64(ms / 1e3));
        counter.fetch_add(1, Ordering::Relaxed);
        let n = inputs[0].shape[0];
        let x = inputs[0].to_f32().unwrap();
        let y: Vec<f32> = (0..n)
            .flat_map(|i| [x[i * 4], x[i * 4 + 1] * 2.0])
            .collect();
        Ok(vec![Array::from_f32(vec![n, 2], y).unwrap()])
    }))
}

fn init(side: &str) -> Init {
    Init {
        side: side.into(),
        spec: "mock".into(),
        load: LoadSpec::default(),
        workload: WorkloadSpec::default(),
        probe: ProbeSpec {
            enable_nvml: false,
            ..ProbeSpec::default()
        },
    }
}

fn quick_plan() -> Plan {
    Plan {
        seconds: 3.0,
        rounds: 10,
        batch_sweep: vec![],
        concurrency_sweep: vec![],
        load_fractions: vec![],
        offline_batch: None,
        bootstrap: BootstrapSettings {
            resamples: 200,
            confidence: 0.95,
            seed: 0,
        },
        ..Plan::default()
    }
}

fn side(name: &str, clock: &FakeClock, median_ms: f64, seed: u64, phase: f64) -> LocalSide {
    let c = clock.clone();
    let mut k = 0;
    LocalSide::new(
        name,
        Box::new(move || {
            k += 1;
            Ok(mock(&c, median_ms, seed * 1000 + k, phase))
        }),
        None,
        &init(name),
        1,
        Arc::new(clock.clone()),
    )
    .unwrap()
}

fn bench(seed: u64, base_ms: f64, cand_ms: f64, plan: &Plan) -> Performance {
    let clock = FakeClock::new();
    let phase = seed as f64;
    let mut a = side("baseline", &clock, base_ms, seed, phase);
    let mut b = side("candidate", &clock, cand_ms, seed + 7919, phase);
    run_pair(
        &mut a,
        &mut b,
        plan,
        Fingerprint::read(&Default::default()),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn an_a_a_run_passes_min_speedup() {
    let plan = quick_plan();
    let trials = 40;
    let failed = (0..trials)
        .filter(|&s| {
            let p = bench(s, 2.0, 2.0, &plan);
            fails_at_least(p.comparison.speedup, p.comparison.speedup_decision_ci, 1.0)
        })
        .count();
    // Judged on a 99 % interval an A/A run fails by chance about 0.5 % of the time.
    assert!(
        failed <= 2,
        "{failed} of {trials} A/A runs failed min_speedup = 1"
    );
}

#[test]
fn a_two_times_slower_candidate_fails_and_the_interval_covers_the_truth() {
    let plan = quick_plan();
    let policy = Policy::resolve(
        &PolicyFile::parse("min_speedup = 1.0\n", "p.toml").unwrap(),
        &Source::Default,
    );
    for s in 0..10 {
        let p = bench(100 + s, 2.0, 4.0, &plan);
        let c = Gate::evaluate_performance(&policy, &observations(&p));
        let sp = c.iter().find(|c| c.key == "min_speedup").unwrap();
        assert_eq!(sp.status, Status::Fail, "seed {s}: {:?}", sp.reason);
        // The pooled-median ratio carries some of the ±30 % drift; the paired interval
        // is what the rule judges.
        assert!(
            (p.comparison.speedup - 0.5).abs() < 0.1,
            "{:?}",
            p.comparison
        );
        let ci = p.comparison.speedup_decision_ci;
        assert!(ci[1] < 1.0 && ci[0] < 0.5 && 0.5 < ci[1], "{ci:?}");
        // Outputs are deterministic: the same-artifact check passes.
        let same = c.iter().find(|c| c.key == "same_outputs").unwrap();
        assert_eq!(same.status, Status::Pass, "{:?}", same.reason);
    }
    // True speed-up 1.5: the 95 % interval should cover it in about 95 % of runs.
    let trials = 40;
    let covered = (0..trials)
        .filter(|&s| {
            let ci = bench(500 + s, 3.0, 2.0, &plan).comparison.speedup_ci;
            ci[0] <= 1.5 && 1.5 <= ci[1]
        })
        .count();
    assert!(covered >= 34, "covered {covered} of {trials}");
}

#[test]
fn latency_figures_match_the_simulated_distribution() {
    let p = bench(3, 2.0, 2.0, &quick_plan());
    let l = &p.baseline.latency_ms;
    // Median of 2 ms × drift (mean 1) × lognormal(σ 0.15): within 10 %.
    assert!((l.p50 - 2.0).abs() < 0.2, "{l:?}");
    assert!(l.p99 > l.p90 && l.p90 > l.p50 && l.min < l.p50 && l.max >= l.p999);
    assert!(l.mean_ci[0] <= l.mean && l.mean <= l.mean_ci[1]);
    // Throughput at one in flight is the inverse of the mean latency.
    let expected = 1000.0 / l.mean;
    assert!((p.baseline.throughput_per_s / expected - 1.0).abs() < 0.01);
    // 3 s per side in 10 rounds.
    assert_eq!(p.baseline.round_medians_ms.len(), 10);
    assert_eq!(p.baseline.raw_latencies_ms.len(), l.n);
    assert!(p.baseline.warmup.iterations >= 10);
}

#[test]
fn poisson_queueing_and_the_slo_search_follow_m_d_1() {
    // Constant 2 ms service (capacity 500/s) on one server.
    let clock = FakeClock::new();
    let make = |name: &str, clock: &FakeClock| {
        let c = clock.clone();
        LocalSide::new(
            name,
            Box::new(move || {
                let c = c.clone();
                Ok(Box::new(MockModel::new(info(), move |inputs: &[Array]| {
                    c.advance(Duration::from_millis(2));
                    let n = inputs[0].shape[0];
                    Ok(vec![Array::from_f32(vec![n, 2], vec![0.0; n * 2]).unwrap()])
                })) as Box<dyn Model>)
            }),
            None,
            &init(name),
            1,
            Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let mut a = make("baseline", &clock);
    let mut b = make("candidate", &clock);
    let plan = Plan {
        load_fractions: vec![0.2, 0.8],
        arrival_rates: vec![600.0],
        slo_p99_ms: Some(10.0),
        sweep_seconds: 5.0,
        ..quick_plan()
    };
    let p = run_pair(
        &mut a,
        &mut b,
        &plan,
        Fingerprint::read(&Default::default()),
        &mut |_| {},
    )
    .unwrap();
    let load = &p.sweeps.load;
    assert_eq!(load.len(), 3);
    // ρ = 0.2: M/D/1 mean wait ρ/(2μ(1−ρ)) = 0.25 ms; the median stays near the service time.
    let low = load[0].baseline.as_ref().unwrap();
    assert!(
        (100.0 - load[0].offered_per_s).abs() < 1.0,
        "{}",
        load[0].offered_per_s
    );
    assert!(low.p50_ms >= 2.0 && low.p50_ms < 2.6, "{low:?}");
    // ρ = 0.8: queueing shows in the tail.
    let high = load[1].baseline.as_ref().unwrap();
    assert!(high.p99_ms > 3.0 * low.p99_ms, "{high:?} vs {low:?}");
    // 600/s > capacity: the queue grows without bound.
    let over = load[2].baseline.as_ref().unwrap();
    assert!(
        over.p99_ms > 100.0 && over.achieved_per_s < 510.0,
        "{over:?}"
    );
    let slo = p.sweeps.slo.as_ref().unwrap();
    assert!(
        slo.baseline_max_per_s > 250.0 && slo.baseline_max_per_s < 500.0,
        "{slo:?}"
    );
    assert_eq!(slo.baseline_max_per_s, slo.candidate_max_per_s);
}

#[test]
fn outputs_that_change_between_timed_and_untimed_runs_fail_the_check() {
    let clock = FakeClock::new();
    let c = clock.clone();
    let calls = Arc::new(AtomicU64::new(0));
    let calls2 = calls.clone();
    let mut flaky = LocalSide::new(
        "candidate",
        Box::new(move || {
            let (c, calls) = (c.clone(), calls2.clone());
            Ok(Box::new(MockModel::new(info(), move |inputs: &[Array]| {
                c.advance(Duration::from_millis(1));
                let k = calls.fetch_add(1, Ordering::Relaxed);
                let n = inputs[0].shape[0];
                // Every call returns a slightly different value: a nondeterministic runtime.
                Ok(vec![Array::from_f32(
                    vec![n, 2],
                    vec![k as f32 * 1e-3; n * 2],
                )
                .unwrap()])
            })) as Box<dyn Model>)
        }),
        None,
        &init("candidate"),
        1,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let mut good = side("baseline", &clock, 1.0, 1, 0.0);
    let plan = quick_plan();
    let p = run_pair(
        &mut good,
        &mut flaky,
        &plan,
        Fingerprint::read(&Default::default()),
        &mut |_| {},
    )
    .unwrap();
    let bad = p.candidate.output_check.as_ref().unwrap();
    assert_eq!(bad.tolerance, Tolerance::Exact);
    assert!(
        bad.batches > 0 && bad.mismatched_batches == bad.batches,
        "{bad:?}"
    );
    assert!(bad.first_mismatch.as_ref().unwrap().contains("output 'y'"));
    let obs = observations(&p);
    let [baseline, candidate] = obs.same_outputs.unwrap();
    assert!(
        baseline.all_equal() && !candidate.all_equal(),
        "{candidate:?}"
    );
    assert!(p.baseline.output_check.as_ref().unwrap().passed());
}

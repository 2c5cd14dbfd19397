//! `qgate analyze`'s cost on synthetic logs: 100 000 A/B requests with an outcome each, and
//! 100 000 shadow requests with full 10-class outputs from both models (SQLite, written
//! once per run with the documented schema). Run with `cargo bench -p qgate-online --bench
//! analyze`; `QGATE_BENCH_REQUESTS` changes the size.

use criterion::{criterion_group, criterion_main, Criterion};
use qgate_core::policy::{PolicyFile, Source};
use qgate_core::stats::Rng;
use qgate_online::{analyze, AnalyzeConfig};

#[path = "../tests/common/mod.rs"]
mod common;

fn requests() -> usize {
    std::env::var("QGATE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn write_log(path: &std::path::Path, shadow: bool, n: usize) {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(common::LOG_SCHEMA).expect("schema");
    let tx = conn.transaction().expect("tx");
    let mut rng = Rng::new(1);
    let logits = |rng: &mut Rng| {
        let v: Vec<String> = (0..10)
            .map(|_| format!("{:.6}", rng.unit() * 8.0 - 4.0))
            .collect();
        format!(
            "{{\"logits\": {{\"datatype\": \"FP32\", \"shape\": [1, 10], \"data\": [{}]}}}}",
            v.join(", ")
        )
    };
    for i in 0..n {
        let id = format!("r{i}");
        let ts = 1_700_000_000_000i64 + i as i64 * 5;
        if shadow {
            let (b, c) = (logits(&mut rng), logits(&mut rng));
            tx.execute(
                "INSERT INTO requests (request_id, ts_ms, model, mode, arm, weight, status, outputs, shadow_status, shadow_outputs, baseline_us, shadow_us)
                 VALUES (?1, ?2, 'm', 'shadow', 'baseline', 0, 200, ?3, 'ok', ?4, ?5, ?6)",
                rusqlite::params![id, ts, b, c, 900 + rng.below(300) as i64, 950 + rng.below(300) as i64],
            )
            .expect("insert");
        } else {
            let cand = rng.unit() < 0.5;
            let status = if rng.unit() < 0.01 { 500 } else { 200 };
            tx.execute(
                "INSERT INTO requests (request_id, ts_ms, model, mode, arm, weight, status, baseline_us, candidate_us)
                 VALUES (?1, ?2, 'm', 'ab', ?3, 0.5, ?4, ?5, ?6)",
                rusqlite::params![
                    id,
                    ts,
                    if cand { "candidate" } else { "baseline" },
                    status,
                    (!cand).then_some(1000 + rng.below(500) as i64),
                    cand.then_some(1000 + rng.below(500) as i64)
                ],
            )
            .expect("insert");
            tx.execute(
                "INSERT INTO outcomes (request_id, ts_ms, name, value) VALUES (?1, ?2, 'purchase', ?3)",
                rusqlite::params![id, ts, f64::from(u8::from(rng.unit() < 0.1))],
            )
            .expect("outcome");
        }
    }
    tx.commit().expect("commit");
}

fn bench(c: &mut Criterion) {
    let n = requests();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = AnalyzeConfig {
        model: Some("m".into()),
        since_ms: None,
        until_ms: None,
        window: None,
        output: None,
        output_kind: None,
        policy: PolicyFile::parse("max_shadow_kl_mean = 0.5\n", "bench").expect("policy"),
        policy_source: Source::Default,
        top_k: 5,
        seed: 0,
        with_inputs: false,
    };
    let mut g = c.benchmark_group("analyze");
    g.sample_size(10);
    for (name, shadow) in [("ab_outcomes", false), ("shadow_full_outputs", true)] {
        let path = dir.path().join(format!("{name}.db"));
        write_log(&path, shadow, n);
        let spec = path.to_str().expect("utf-8").to_string();
        g.bench_function(format!("{name}/{n}"), |b| {
            b.iter(|| {
                let mut r = qgate_online::open(&spec).expect("log");
                analyze(r.as_mut(), &cfg, None).expect("analysis")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

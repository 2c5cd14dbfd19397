//! What the gateway costs: a bounded closed-loop load generator on loopback (keep-alive
//! connections, one request in flight per connection, fixed duration after a warm-up)
//! against one gateway process serving a local model, in these set-ups:
//!
//! - `alone`: the baseline served alone (A/B mode at weight 0: the candidate is never called);
//! - `shadow`: shadow mode with a healthy candidate;
//! - `shadow-slow`: the candidate sleeps 10× the baseline's median latency per call;
//! - `shadow-error`: the candidate fails every call;
//! - `shadow-hang`: the candidate never answers.
//!
//! `cargo bench -p qgate-serve --bench gateway` (env: `QGATE_BENCH_SECS`, default 5 per
//! set-up; `QGATE_BENCH_CONNS`, default 1,4; `QGATE_BENCH_DURABILITY`, normal or fsync;
//! `QGATE_BENCH_SETUPS`, default all). Prints median, p99 and requests per second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qgate_core::Array;
use qgate_runtime::mock::MockModel;
use qgate_runtime::{LoadOptions, Model, ModelSpec, RuntimeError};
use qgate_serve::{Backends, Factory, Gateway, GatewayConfig};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tract(name: &str) -> Factory {
    let spec = ModelSpec::parse(
        &root()
            .join("fixtures/digits")
            .join(name)
            .display()
            .to_string(),
    )
    .expect("spec");
    Arc::new(move || qgate_runtime::load(&spec, &LoadOptions::default()))
}

/// `inner`, then `f` (a sleep, a failure, a hang) on every call.
fn wrapped(inner: Factory, f: fn(Duration) -> Option<RuntimeError>, d: Duration) -> Factory {
    Arc::new(move || {
        let mut m = inner()?;
        let info = m.info().clone();
        Ok(Box::new(MockModel::new(info, move |x: &[Array]| {
            let out = m.run(x)?;
            match f(d) {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })) as Box<dyn Model>)
    })
}

fn sleep(d: Duration) -> Option<RuntimeError> {
    std::thread::sleep(d);
    None
}

fn fail(_: Duration) -> Option<RuntimeError> {
    Some(RuntimeError::Remote {
        url: "bench".into(),
        message: "failing on purpose".into(),
    })
}

fn hang(_: Duration) -> Option<RuntimeError> {
    std::thread::sleep(Duration::from_secs(86_400));
    None
}

struct Figures {
    median_ms: f64,
    p99_ms: f64,
    rps: f64,
    n: usize,
}

fn drive(addr: &str, conns: usize, secs: f64) -> Figures {
    let x: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x}]})
        .to_string();
    let url = format!("http://{addr}/v2/models/digits/infer");
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (url, body, stop, measuring) =
                (url.clone(), body.clone(), stop.clone(), measuring.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let mut r = agent.post(&url).send(&body).expect("request");
                    let _ = r.body_mut().read_to_vec().expect("body");
                    assert_eq!(r.status(), 200);
                    if measuring.load(Ordering::Relaxed) {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    measuring.store(false, Ordering::Relaxed);
    let took = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Figures {
        median_ms: q(0.5),
        p99_ms: q(0.99),
        rps: lat.len() as f64 / took,
        n: lat.len(),
    }
}

fn run(setup: &str, mode: &str, candidate: Factory, conns: usize, secs: f64) -> Figures {
    let durability = std::env::var("QGATE_BENCH_DURABILITY").unwrap_or_else(|_| "normal".into());
    let dir = tempfile::tempdir().expect("tmp");
    // QGATE_BENCH_PG_URL: log to a new database on that PostgreSQL server instead of SQLite.
    let pg = std::env::var("QGATE_BENCH_PG_URL").ok().map(|server| {
        let name = format!(
            "qgate_bench_{}_{}",
            std::process::id(),
            qgate_serve::store::now_ms()
        );
        let mut c = postgres::Client::connect(&server, postgres::NoTls).expect("PostgreSQL");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        format!(
            "{}/{name}",
            server.rsplit_once('/').expect("URL with a database").0
        )
    });
    let log = match &pg {
        Some(url) => format!("url = \"{url}\""),
        None => format!("durability = \"{durability}\""),
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmodel_name = \"digits\"\nmode = \"{mode}\"\nbaseline = \"b.onnx\"\n\
         candidate = \"c.onnx\"\nshutdown_grace_ms = 500\n[shadow]\ntimeout_ms = 2000\n\
         [log]\n{log}\n"
    );
    let db = dir.path().join("qgate-log.db");
    let cfg = GatewayConfig::parse(&text, &dir.path().join("gateway.toml"), None, &|_| None)
        .expect("config");
    let gw = Gateway::start(
        cfg,
        vec![Backends {
            baseline: tract("mlp_fp32.onnx"),
            candidate,
        }],
    )
    .expect("start");
    let f = drive(&gw.addr().to_string(), conns, secs);
    println!(
        "{setup:<13} conns {conns}  median {:>7.3} ms  p99 {:>7.3} ms  {:>7.0} req/s  (n = {})",
        f.median_ms, f.p99_ms, f.rps, f.n
    );
    gw.stop_handle().stop();
    let _ = gw.wait();
    let (bytes, records): (u64, i64) = match &pg {
        Some(url) => {
            let mut c = postgres::Client::connect(url, postgres::NoTls).expect("PostgreSQL");
            let r = c
                .query_one(
                    "SELECT SUM(pg_total_relation_size(c.oid))::BIGINT, \
                     (SELECT COUNT(*) FROM requests) FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                    &[],
                )
                .expect("size");
            (r.get::<_, i64>(0) as u64, r.get(1))
        }
        None => (
            std::fs::metadata(&db).map_or(0, |m| m.len()),
            rusqlite::Connection::open(&db)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0)))
                .unwrap_or(0),
        ),
    };
    let durability = if pg.is_some() {
        "postgresql"
    } else {
        &durability
    };
    println!(
        "{:<13} log: {durability}, {:.0} bytes per record ({records} records, {bytes} bytes)",
        "",
        bytes as f64 / records.max(1) as f64
    );
    f
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = std::env::var("QGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let conns: Vec<usize> = std::env::var("QGATE_BENCH_CONNS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // The baseline's own latency, for the slow candidate's sleep.
    let mut m = tract("mlp_fp32.onnx")().expect("model");
    let x = Array::from_f32(vec![1, 64], vec![0.5; 64]).expect("shape");
    let t = Instant::now();
    for _ in 0..2000 {
        m.run(std::slice::from_ref(&x)).expect("run");
    }
    let base = t.elapsed() / 2000;
    println!(
        "baseline model alone: {:.3} ms per call (tract, 1 row)",
        base.as_secs_f64() * 1e3
    );
    let setups = std::env::var("QGATE_BENCH_SETUPS").unwrap_or_default();
    let want = |name: &str| setups.is_empty() || setups.split(',').any(|s| s == name);
    let rounds: usize = std::env::var("QGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let int8 = || tract("mlp_int8_qdq.onnx");
    for &c in &conns {
        // "Slow" is 10x the baseline's median latency as clients see it through the gateway.
        let probe = run("alone", "ab", int8(), c, secs.min(2.0));
        let slow = Duration::from_secs_f64(probe.median_ms * 10.0 / 1e3);
        println!(
            "conns {c}: the slow candidate sleeps {:.3} ms per call",
            slow.as_secs_f64() * 1e3
        );
        let mut fig: std::collections::BTreeMap<&str, Vec<Figures>> = Default::default();
        // Rounds interleave the set-ups, so a noisy minute does not land on one of them.
        for _ in 0..rounds {
            let setups: [(&str, &str, Factory); 5] = [
                ("alone", "ab", int8()),
                ("shadow", "shadow", int8()),
                ("shadow-slow", "shadow", wrapped(int8(), sleep, slow)),
                ("shadow-error", "shadow", wrapped(int8(), fail, base)),
                ("shadow-hang", "shadow", wrapped(int8(), hang, base)),
            ];
            for (name, mode, candidate) in setups {
                if want(name) {
                    fig.entry(name)
                        .or_default()
                        .push(run(name, mode, candidate, c, secs));
                }
            }
        }
        let mid = |v: &[Figures], f: fn(&Figures) -> f64| {
            let mut x: Vec<f64> = v.iter().map(f).collect();
            x.sort_by(f64::total_cmp);
            x[x.len() / 2]
        };
        let summary: std::collections::BTreeMap<&str, (f64, f64, f64)> = fig
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    (
                        mid(v, |f| f.median_ms),
                        mid(v, |f| f.p99_ms),
                        mid(v, |f| f.rps),
                    ),
                )
            })
            .collect();
        for (k, (m, p, r)) in &summary {
            println!("conns {c} {k:<13} median of {rounds} rounds: median {m:.3} ms, p99 {p:.3} ms, {r:.0} req/s");
        }
        if let (Some(a), Some(s)) = (summary.get("alone"), summary.get("shadow")) {
            println!(
                "conns {c}: shadow adds {:+.3} ms to the median, {:+.3} ms to p99",
                s.0 - a.0,
                s.1 - a.1
            );
            for other in ["shadow-slow", "shadow-error", "shadow-hang"] {
                if let Some(o) = summary.get(other) {
                    println!(
                        "conns {c}: p99 with {other} vs a healthy candidate: {:+.1} %",
                        (o.1 / s.1 - 1.0) * 100.0
                    );
                }
            }
        }
    }
}

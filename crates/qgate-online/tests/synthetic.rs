//! The analysis on synthetic gateway logs whose truth is known: validity first (SRM, no
//! data, every request errored, one side), then evidence (a worse candidate fails, an equal
//! one passes once enough traffic arrived, a small sample stays inconclusive).
//!
//! The logs are written with the documented schema (docs/serve.md, "The log", version 2):
//! the columns the analysis reads; the gateway's own logs are read end to end in
//! crates/qgate/tests/analyze.rs.

use qgate_core::online::{chi_square_gof, newcombe_interval, two_proportion_z};
use qgate_core::policy::{PolicyFile, Source};
use qgate_core::stats::Rng;
use qgate_online::{analyze, AnalyzeConfig, Online, OnlineError, OnlineVerdict, Window};

mod common;

struct Log {
    conn: rusqlite::Connection,
    path: std::path::PathBuf,
    seq: i64,
    _dir: tempfile::TempDir,
}

impl Log {
    fn new() -> Log {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.db");
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(&format!("{}\nBEGIN;", common::LOG_SCHEMA))
            .expect("schema");
        Log {
            conn,
            path,
            seq: 0,
            _dir: dir,
        }
    }

    /// One routed A/B request at `t` ms; returns its id.
    fn ab(&mut self, candidate: bool, weight: f64, status: i64, us: i64) -> String {
        self.seq += 1;
        let id = format!("r{}", self.seq);
        let arm = if candidate { "candidate" } else { "baseline" };
        self.conn
            .execute(
                "INSERT INTO requests (request_id, ts_ms, model, mode, arm, weight, status, baseline_us, candidate_us)
                 VALUES (?1, ?2, 'm', 'ab', ?3, ?4, ?5, ?6, ?7)",
                rusqlite::params![
                    id,
                    1_000_000 + self.seq * 10,
                    arm,
                    weight,
                    status,
                    (!candidate).then_some(us),
                    candidate.then_some(us)
                ],
            )
            .expect("insert");
        id
    }

    fn shadow(&mut self, status: i64, shadow: &str, base: &str, cand: &str) -> String {
        self.seq += 1;
        let id = format!("r{}", self.seq);
        self.conn
            .execute(
                "INSERT INTO requests (request_id, ts_ms, model, mode, arm, weight, status, outputs, shadow_status, shadow_outputs, baseline_us, shadow_us)
                 VALUES (?1, ?2, 'm', 'shadow', 'baseline', 0, ?3, ?4, ?5, ?6, 1000, 1200)",
                rusqlite::params![id, 1_000_000 + self.seq * 10, status, base, shadow, cand],
            )
            .expect("insert");
        id
    }

    /// A routed A/B request at `ts` ms with `outputs` and the time in the model.
    fn ab_at(&mut self, ts: i64, candidate: bool, outputs: &str, us: i64) -> String {
        self.seq += 1;
        let id = format!("r{}", self.seq);
        self.conn
            .execute(
                "INSERT INTO requests (request_id, ts_ms, model, mode, arm, weight, status, outputs, baseline_us, candidate_us)
                 VALUES (?1, ?2, 'm', 'ab', ?3, 0.5, 200, ?4, ?5, ?6)",
                rusqlite::params![
                    id,
                    ts,
                    if candidate { "candidate" } else { "baseline" },
                    outputs,
                    (!candidate).then_some(us),
                    candidate.then_some(us)
                ],
            )
            .expect("insert");
        id
    }

    fn outcome(&mut self, id: &str, name: &str, value: f64) {
        self.conn
            .execute(
                "INSERT INTO outcomes (request_id, ts_ms, name, value) VALUES (?1, 0, ?2, ?3)",
                rusqlite::params![id, name, value],
            )
            .expect("outcome");
    }

    fn run(&self, policy: &str, window: Option<Window>) -> Result<Online, OnlineError> {
        self.conn.execute_batch("COMMIT; BEGIN;").expect("commit");
        let mut reader = qgate_online::open(self.path.to_str().expect("utf-8")).expect("open log");
        let cfg = AnalyzeConfig {
            model: Some("m".into()),
            since_ms: None,
            until_ms: None,
            window,
            output: None,
            output_kind: None,
            policy: PolicyFile::parse(policy, "p.toml").expect("policy"),
            policy_source: Source::File("p.toml".into()),
            top_k: 5,
            seed: 1,
            with_inputs: false,
        };
        analyze(reader.as_mut(), &cfg, None)
    }
}

/// An A/B log: `n` requests at candidate weight `w`, routed by a seeded coin, with error
/// rates `err` and conversion rates `conv` per arm.
fn ab_log(n: usize, w: f64, err: [f64; 2], conv: [f64; 2], seed: u64) -> Log {
    let mut log = Log::new();
    let mut rng = Rng::new(seed);
    for _ in 0..n {
        let cand = rng.unit() < w;
        let i = usize::from(cand);
        let status = if rng.unit() < err[i] { 500 } else { 200 };
        let id = log.ab(cand, w, status, 1000 + rng.below(500) as i64);
        if status == 200 {
            let bought = rng.unit() < conv[i];
            log.outcome(&id, "purchase", f64::from(u8::from(bought)));
        }
    }
    log
}

#[test]
fn a_52_48_split_on_50_50_weights_is_invalid_whatever_the_outcome_says() {
    let mut log = Log::new();
    for k in 0..10_000 {
        let cand = k % 25 >= 13; // 13 of 25 baseline: 52 %
        let id = log.ab(cand, 0.5, 200, 1000);
        log.outcome(&id, "purchase", f64::from(u8::from(cand)));
    }
    let r = log.run("", None).expect("analysis");
    let srm = r.analysis.srm.as_ref().expect("srm");
    assert_eq!(srm.observed, [5200, 4800]);
    let want = chi_square_gof(&[5200.0, 4800.0], &[5000.0, 5000.0]);
    assert!((srm.p_value - want.p_value).abs() < 1e-15 && srm.mismatch);
    assert_eq!(r.gate.verdict, OnlineVerdict::Invalid);
    assert!(
        r.analysis.invalid[0].contains("sample-ratio mismatch"),
        "{:?}",
        r.analysis.invalid
    );
    assert_eq!(OnlineVerdict::Invalid.exit_code(), 1);
}

#[test]
fn no_data_all_errored_and_one_sided_logs_are_never_a_pass() {
    let empty = Log::new();
    let r = empty.run("", None).expect("analysis");
    assert_eq!(r.gate.verdict, OnlineVerdict::Invalid);
    assert!(r.analysis.invalid[0].contains("no requests"));

    let mut errored = Log::new();
    for k in 0..400 {
        errored.ab(k % 2 == 0, 0.5, 503, 10);
    }
    let r = errored.run("", None).expect("analysis");
    assert_eq!(r.gate.verdict, OnlineVerdict::Invalid);
    assert!(r
        .analysis
        .invalid
        .iter()
        .any(|w| w.contains("every request errored")));

    let mut one_sided = Log::new();
    for _ in 0..400 {
        one_sided.ab(false, 0.2, 200, 10);
    }
    let r = one_sided.run("", None).expect("analysis");
    assert_eq!(r.gate.verdict, OnlineVerdict::Invalid);
    assert!(r
        .analysis
        .invalid
        .iter()
        .any(|w| w.contains("candidate arm has no requests")));

    let mut no_pairs = Log::new();
    let out = r#"{"y": {"datatype": "FP32", "shape": [1, 3], "top_k": [[0, 1, 2]], "scores": [[3, 2, 1]]}}"#;
    for _ in 0..200 {
        no_pairs.shadow(200, "error", out, "");
    }
    let r = no_pairs.run("", None).expect("analysis");
    assert_eq!(r.gate.verdict, OnlineVerdict::Invalid);
    assert!(r
        .analysis
        .invalid
        .iter()
        .any(|w| w.contains("no mirrored request")));
}

#[test]
fn a_candidate_with_five_points_more_errors_fails_and_an_equal_one_passes() {
    let bad = ab_log(6_000, 0.5, [0.01, 0.06], [0.1, 0.1], 3);
    let r = bad.run("", None).expect("analysis");
    assert_eq!(
        r.gate.verdict,
        OnlineVerdict::Fail,
        "{:#?}",
        r.gate.criteria
    );
    let c = r
        .gate
        .criteria
        .iter()
        .find(|c| c.key == "max_error_rate_increase")
        .expect("criterion");
    assert!(c.interval.expect("interval")[0] > 0.01);

    let good = ab_log(12_000, 0.5, [0.01, 0.01], [0.1, 0.1], 4);
    let r = good
        .run("[outcomes.purchase]\nmax_drop = 0.05\n", None)
        .expect("analysis");
    assert_eq!(
        r.gate.verdict,
        OnlineVerdict::Pass,
        "{:#?}",
        r.gate.criteria
    );
    assert!(r
        .gate
        .criteria
        .iter()
        .any(|c| c.key == "outcomes.purchase.max_drop"));
}

#[test]
fn too_little_traffic_is_inconclusive() {
    let small = ab_log(300, 0.5, [0.01, 0.01], [0.1, 0.1], 5);
    let r = small.run("", None).expect("analysis");
    assert_eq!(
        r.gate.verdict,
        OnlineVerdict::Inconclusive,
        "{:#?}",
        r.gate.criteria
    );
    assert_eq!(OnlineVerdict::Inconclusive.exit_code(), 3);
}

#[test]
fn outcome_figures_are_the_fixed_and_sequential_statistics_of_the_joined_values() {
    let log = ab_log(4_000, 0.5, [0.0, 0.0], [0.10, 0.08], 6);
    let r = log.run("", Some(Window::Requests(1000))).expect("analysis");
    let o = &r.analysis.outcomes[0];
    assert_eq!(
        (o.name.as_str(), o.kind.as_str(), o.kind_from.as_str()),
        ("purchase", "binary", "values")
    );
    let (nb, nc) = (o.baseline.n, o.candidate.n);
    let (xb, xc) = (
        (o.baseline.mean * nb as f64).round() as u64,
        (o.candidate.mean * nc as f64).round() as u64,
    );
    let t = two_proportion_z(xc, nc, xb, nb);
    assert_eq!(o.fixed.p_value, Some(t.p_value));
    assert_eq!(o.fixed.interval, newcombe_interval(xc, nc, xb, nb, 0.05));
    // The sequence is wider than the fixed interval and holds the estimate.
    let [lo, hi] = o.sequential.interval;
    assert!(lo < o.difference && o.difference < hi);
    assert!(hi - lo > o.fixed.interval[1] - o.fixed.interval[0]);
    // Four windows of 1 000 requests; the last window's sequence is the final one.
    assert_eq!(r.analysis.windows.len(), 4);
    let last = r.analysis.windows[3].outcomes[0].sequential;
    assert_eq!(last, o.sequential);
    // Not judged without a limit.
    assert!(r.gate.criteria.iter().all(|c| !c.key.contains("purchase")));
}

#[test]
fn a_kl_limit_on_a_top_k_log_is_an_error_that_says_what_to_change() {
    let mut log = Log::new();
    let a = r#"{"y": {"datatype": "FP32", "shape": [1, 3], "top_k": [[0, 1, 2]], "scores": [[3, 2, 1]]}}"#;
    for _ in 0..50 {
        log.shadow(200, "ok", a, a);
    }
    let e = log
        .run("max_shadow_kl_mean = 0.1\n", None)
        .expect_err("cannot judge KL");
    assert!(e.to_string().contains("outputs = \"full\""), "{e}");
    let r = log.run("", None).expect("analysis");
    let s = r.analysis.shadow.as_ref().expect("shadow");
    assert_eq!((s.paired, s.rows, s.top1_agreement), (50, 50, 1.0));
    assert_eq!(s.top_k_agreement, Some(1.0));
    assert_eq!(s.top_k, 3);
}

#[test]
fn the_log_reader_refuses_what_is_not_a_readable_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.db");
    let e = qgate_online::open(missing.to_str().expect("utf-8"))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no such log file"), "{e}");
    let newer = dir.path().join("newer.db");
    let c = rusqlite::Connection::open(&newer).expect("open");
    c.execute_batch("CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('schema_version', '9');")
        .expect("schema");
    let e = qgate_online::open(newer.to_str().expect("utf-8"))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("newer than this qgate reads"), "{e}");
}

#[test]
fn time_windows_follow_arrival_not_commit_order() {
    // Committed out of order (as concurrent requests and replicas commit): arrival times
    // 0, 65, 5, 70, 10, … ms in windows of 60 ms are two windows of ten, not twenty.
    let mut log = Log::new();
    for k in 0..10 {
        log.ab_at(1_000_000 + k * 5, k % 2 == 0, "", 1000);
        log.ab_at(1_000_065 + k * 5, k % 2 == 1, "", 1000);
    }
    let r = log.run("", Some(Window::Millis(60))).expect("analysis");
    let w = &r.analysis.windows;
    assert_eq!(w.len(), 2, "{w:#?}");
    assert_eq!((w[0].requests, w[1].requests), (10, 10));
    assert!(w[0].end_ms < w[1].start_ms);
}

#[test]
fn a_fixed_horizon_latency_limit_never_fails_on_a_handful_of_requests() {
    let mut log = Log::new();
    for k in 0..4 {
        log.ab_at(
            1_000_000 + k,
            k % 2 == 1,
            "",
            if k % 2 == 1 { 900_000 } else { 1000 },
        );
    }
    let r = log
        .run("max_p99_ms_increase = 1\n", None)
        .expect("analysis");
    let c = r
        .gate
        .criteria
        .iter()
        .find(|c| c.key == "max_p99_ms_increase")
        .expect("criterion");
    assert_eq!(c.status, qgate_online::OnlineStatus::Inconclusive, "{c:#?}");
}

#[test]
fn any_posted_label_is_counted_without_sizing_anything_by_it() {
    let mut log = Log::new();
    let out = r#"{"y": {"datatype": "FP32", "shape": [1, 3], "top_k": [[2, 0, 1]], "scores": [[3, 2, 1]]}}"#;
    for k in 0..40 {
        let id = log.ab_at(1_000_000 + k, k % 2 == 1, out, 1000);
        log.outcome(&id, "label", if k < 38 { 2.0 } else { 1e12 });
    }
    let r = log.run("", None).expect("analysis");
    let acc = r
        .analysis
        .arms
        .as_ref()
        .expect("arms")
        .baseline
        .accuracy
        .clone()
        .expect("labels");
    // Baseline: 19 of 20 right (the label 1e12 is wrong); macro-F1 over the classes present
    // (2 and 1e12), as scikit-learn: class 2 F1 = 2·(19/20)·1 / (19/20 + 1), class 1e12 0.
    assert_eq!((acc.n, acc.accuracy), (20, 0.95));
    let f1_2 = 2.0 * 0.95 / 1.95;
    assert!(
        (acc.macro_f1 - f1_2 / 2.0).abs() < 1e-12,
        "{}",
        acc.macro_f1
    );
}

#[test]
fn a_candidate_that_gives_a_class_probability_zero_has_infinite_kl_and_fails() {
    let mut log = Log::new();
    let p = |v: &str| format!(r#"{{"p": {{"datatype": "FP32", "shape": [1, 3], "data": [{v}]}}}}"#);
    let (b, c) = (p("0.5, 0.25, 0.25"), p("1.0, 0.0, 0.0"));
    for _ in 0..40 {
        log.shadow(200, "ok", &b, &c);
    }
    let r = log
        .run("max_shadow_kl_mean = 0.5\n", None)
        .expect("analysis");
    let s = r.analysis.shadow.as_ref().expect("shadow");
    assert_eq!(s.output_kind.as_deref(), Some("probs"));
    assert_eq!(s.kl_mean, Some(f64::INFINITY));
    assert_eq!(
        r.gate.verdict,
        OnlineVerdict::Fail,
        "{:#?}",
        r.gate.criteria
    );
}

//! `qgate serve` as users run it: the binary on 127.0.0.1, Triton's Python client
//! (`tritonclient[http]`, binary and JSON) in front, onnxruntime models and the MLServer
//! test server behind; answers compared with the baseline called directly, the log read
//! with SQLite, and a `kill -9` under load. Needs `QGATE_TEST_PYTHON` (the servers venv)
//! and `ORT_DYLIB_PATH` / `QGATE_V2_URL` as the runtime tests do (required in CI).

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

fn python() -> Option<String> {
    match std::env::var("QGATE_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("QGATE_REQUIRE_ORT").is_ok_and(|v| v == "1") => {
            panic!("QGATE_TEST_PYTHON is not set")
        }
        _ => {
            eprintln!("skipping: QGATE_TEST_PYTHON (a venv with tritonclient) is not set");
            None
        }
    }
}

fn ort_ready() -> bool {
    let set = std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty());
    if !set && std::env::var("QGATE_REQUIRE_ORT").is_ok_and(|v| v == "1") {
        panic!("ORT_DYLIB_PATH is not set");
    }
    set
}

struct Served {
    child: Child,
    addr: String,
    /// The gRPC address, when the config has `grpc_listen`.
    grpc: Option<String>,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// SIGTERM, then the exit code and what it said on stderr.
    fn terminate(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let code = wait(&mut self.child, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
        let err = self.stderr.lock().unwrap().clone();
        (code, err)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait(child: &mut Child, limit: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("qgate serve did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `qgate serve --config CONFIG` and waits for its `listening on` line.
fn serve(config: &Path, extra: &[&str]) -> Served {
    serve_env(config, extra, &[])
}

/// `serve` with more environment variables.
fn serve_env(config: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qgate"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("QGATE_ADMIN_TOKEN", "tok")
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut next_line = |what: &str| match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            panic!("no `{what}` line; stderr: {}", stderr.lock().unwrap());
        }
    };
    let line = next_line("listening on");
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line}"))
        .to_string();
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let grpc = text.contains("grpc_listen").then(|| {
        let line = next_line("grpc listening on");
        line.strip_prefix("grpc listening on ")
            .unwrap_or_else(|| panic!("second line: {line}"))
            .to_string()
    });
    Served {
        child,
        addr,
        grpc,
        stderr,
    }
}

/// A shadow gateway over the digits CNN on ONNX Runtime (FP32 baseline, INT8 candidate)
/// logging to `log.db`; returns the config and the two model paths.
fn ort_shadow_config(dir: &Path) -> (PathBuf, String, String) {
    let (b, c) = (common::fx("cnn_fp32.onnx"), common::fx("cnn_int8_qdq.onnx"));
    let cfg = write_config(
        dir,
        &format!("mode = \"shadow\"\nbaseline = \"ort:{b}\"\ncandidate = \"ort:{c}\"\n[log]\nurl = \"sqlite://log.db\""),
    );
    (cfg, b, c)
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("gateway.toml");
    std::fs::write(
        &p,
        format!("listen = \"127.0.0.1:0\"\nmodel_name = \"digits\"\n{body}\n[admin]\ntoken_env = \"QGATE_ADMIN_TOKEN\"\n"),
    )
    .unwrap();
    p
}

/// Runs a client script of tests/serve against the gateway at `addr` (model `digits`):
/// `script ADDR digits ARGS…`; returns one JSON object per request it printed.
fn client(python: &str, script: &str, addr: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(python)
        .arg(common::root().join("tests/serve").join(script))
        .args([addr, "digits"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs tests/serve/client.py (tritonclient): `n` requests, answers checked against `direct`.
fn tritonclient(python: &str, addr: &str, n: usize, direct: &[&str]) -> Vec<Value> {
    let n = n.to_string();
    let args: Vec<&str> = std::iter::once(n.as_str())
        .chain(direct.iter().copied())
        .collect();
    client(python, "client.py", addr, &args)
}

/// Every request the client made is in the log with both answers: the client's top-5
/// from the baseline, the shadow's from the candidate, as each called directly gave them.
fn assert_log_pairs(db: &Path, sent: &[Value]) {
    let conn = rusqlite::Connection::open(db).unwrap();
    for s in sent {
        let id = s["id"].as_str().unwrap();
        let (status, arm, shadow, outputs, shadow_outputs): (i64, String, String, String, String) = conn
            .query_row(
                "SELECT status, arm, shadow_status, outputs, shadow_outputs FROM requests WHERE request_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap_or_else(|e| panic!("no record of {id}: {e}"));
        assert_eq!(
            (status, arm.as_str(), shadow.as_str()),
            (200, "baseline", "ok"),
            "{id}"
        );
        let logged: Value = serde_json::from_str(&outputs).unwrap();
        let shadowed: Value = serde_json::from_str(&shadow_outputs).unwrap();
        for (name, top) in s["baseline_top5"].as_object().unwrap() {
            assert_eq!(&logged[name]["top_k"], top, "{id} {name} (client's answer)");
        }
        for (name, top) in s["candidate_top5"].as_object().unwrap() {
            assert_eq!(&shadowed[name]["top_k"], top, "{id} {name} (shadow answer)");
        }
    }
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, sent.len());
}

#[test]
fn tritonclient_gets_onnxruntimes_answers_and_the_log_pairs_both() {
    let (Some(py), true) = (python(), ort_ready()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, b, c) = ort_shadow_config(dir.path());
    let served = serve(&cfg, &[]);
    let sent = tritonclient(&py, &served.addr, 30, &["--ort", &b, &c]);
    assert!(sent.iter().any(|s| s["binary"] == true) && sent.iter().any(|s| s["binary"] == false));
    // Shadow copies are joined after the answers: give them a moment, then stop cleanly.
    std::thread::sleep(Duration::from_millis(500));
    let (code, err) = served.terminate();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("0 pending shadow copies marked missing"),
        "{err}"
    );
    assert_log_pairs(&dir.path().join("log.db"), &sent);
}

/// The test V2 server's URL (`QGATE_V2_URL`, required in CI), or `None` to skip.
fn v2_url() -> Option<String> {
    match std::env::var("QGATE_V2_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("QGATE_REQUIRE_V2").is_ok_and(|v| v == "1") => {
            panic!("QGATE_V2_URL is not set")
        }
        _ => None,
    }
}

#[test]
fn mlserver_models_behind_the_gateway_answer_as_mlserver_does() {
    let Some(py) = python() else { return };
    let Some(url) = v2_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "mode = \"shadow\"\nbaseline = \"{url}/v2/models/cnn_fp32\"\ncandidate = \"{url}/v2/models/cnn_int8_qdq\"\n[log]\nurl = \"sqlite://log.db\""
        ),
    );
    let served = serve(&cfg, &[]);
    let host = url.trim_start_matches("http://");
    let sent = tritonclient(
        &py,
        &served.addr,
        12,
        &["--v2", host, "cnn_fp32", "cnn_int8_qdq"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (code, err) = served.terminate();
    assert_eq!(code, 0, "{err}");
    assert_log_pairs(&dir.path().join("log.db"), &sent);
}

#[test]
fn tritonclient_over_grpc_gets_what_rest_answers_and_every_call_is_logged() {
    let (Some(py), true) = (python(), ort_ready()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (common::fx("cnn_fp32.onnx"), common::fx("cnn_int8_qdq.onnx"));
    let cfg = write_config(
        dir.path(),
        &format!(
            "grpc_listen = \"127.0.0.1:0\"\nmode = \"ab\"\nbaseline = \"ort:{b}\"\n\
             candidate = \"ort:{c}\"\n[ab]\ncandidate_weight = 0.5\n[log]\nurl = \"sqlite://log.db\""
        ),
    );
    let served = serve(&cfg, &[]);
    let grpc = served.grpc.clone().expect("grpc listening on");
    let sent = client(&py, "grpc_client.py", &served.addr, &[&grpc, "20"]);
    assert_eq!(sent.len(), 20);
    let (code, err) = served.terminate();
    assert_eq!(code, 0, "{err}");
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).unwrap();
    for s in &sent {
        let id = s["id"].as_str().unwrap();
        let status: i64 = conn
            .query_row(
                "SELECT status FROM requests WHERE request_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("no record of gRPC request {id}: {e}"));
        assert_eq!(status, 200, "{id}");
    }
    let given = sent.iter().filter(|s| s["given"] == true).count();
    assert!(given > 0 && given < sent.len());
    // 20 gRPC and 20 REST answers, and the two gRPC refusals (the unknown model's is
    // refused before it names a model of this gateway, so not logged).
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 41);
}

#[test]
fn a_grpc_upstream_answers_as_the_server_does_over_rest() {
    let Some(py) = python() else { return };
    let Some(url) = v2_url() else { return };
    // tests/servers/start.sh serves MLServer's gRPC on the REST port + 1.
    let host = url.trim_start_matches("http://").to_string();
    let (h, p) = host.rsplit_once(':').unwrap();
    let grpc = format!("{h}:{}", p.parse::<u16>().unwrap() + 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "mode = \"shadow\"\nbaseline = \"grpc://{grpc}/cnn_fp32\"\n\
             candidate = \"grpc://{grpc}/cnn_int8_qdq\"\n[log]\nurl = \"sqlite://log.db\""
        ),
    );
    let served = serve(&cfg, &[]);
    // Answers through the gateway (gRPC upstream) equal MLServer's own over REST.
    let sent = tritonclient(
        &py,
        &served.addr,
        12,
        &["--v2", &host, "cnn_fp32", "cnn_int8_qdq"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let (code, err) = served.terminate();
    assert_eq!(code, 0, "{err}");
    assert_log_pairs(&dir.path().join("log.db"), &sent);
    // A gRPC spec that reaches nothing is named at start.
    let bad = write_config(
        dir.path(),
        "mode = \"shadow\"\nbaseline = \"grpc://127.0.0.1:1/cnn_fp32\"\ncandidate = \"grpc://127.0.0.1:1/x\"",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_qgate"))
        .args(["serve", "--check-config", "--config"])
        .arg(&bad)
        .env("QGATE_ADMIN_TOKEN", "tok")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("grpc://127.0.0.1:1/cnn_fp32") && text.contains("cannot connect"),
        "{text}"
    );
}

#[test]
fn two_gateway_processes_share_one_postgres_log_and_its_admin_state() {
    let Some(db) = common::pg_database("replicas") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (common::fx("mlp_fp32.onnx"), common::fx("mlp_int8_qdq.onnx"));
    let cfg = write_config(
        dir.path(),
        &format!(
            "mode = \"ab\"\nbaseline = \"{b}\"\ncandidate = \"{c}\"\n[ab]\ncandidate_weight = 0.5\n\
             [log]\nurl_env = \"QGATE_LOG_URL\"\nstate_poll_ms = 100"
        ),
    );
    let env = [("QGATE_LOG_URL", db.as_str())];
    let (one, two) = (serve_env(&cfg, &[], &env), serve_env(&cfg, &[], &env));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let x: Vec<f32> = (0..64).map(|i| (i % 7) as f32 / 7.0).collect();
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x}]})
        .to_string();
    let call = |addr: &str, user: &str| {
        let mut r = agent
            .post(&format!("http://{addr}/v2/models/digits/infer"))
            .header("x-user-id", user)
            .send(body.as_bytes())
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let arm = r
            .headers()
            .get("x-qgate-arm")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let id = r
            .headers()
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let _ = r.body_mut().read_to_vec();
        (arm, id)
    };
    // Every user goes to both processes and gets one arm from both.
    let mut ids = Vec::new();
    let mut on_candidate = 0;
    for u in 0..20 {
        let user = format!("user-{u}");
        let (a1, i1) = call(&one.addr, &user);
        let (a2, i2) = call(&two.addr, &user);
        assert_eq!(a1, a2, "{user}");
        on_candidate += usize::from(a1 == "candidate");
        ids.extend([i1, i2]);
    }
    assert!(on_candidate > 0 && on_candidate < 20, "{on_candidate}");
    // A weight set on one process is in force on the other within the poll interval.
    let set = agent
        .post(&format!("http://{}/admin/weights", one.addr))
        .header("authorization", "Bearer tok")
        .send(br#"{"candidate_weight": 0}"#)
        .unwrap();
    assert_eq!(set.status().as_u16(), 200);
    let t = std::time::Instant::now();
    loop {
        let text = agent
            .get(&format!("http://{}/admin/state", two.addr))
            .header("authorization", "Bearer tok")
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let state: Value = serde_json::from_str(&text).unwrap();
        if state["weight_in_force"] == serde_json::json!(0.0) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(3), "{state}");
        std::thread::sleep(Duration::from_millis(20));
    }
    for u in 0..20 {
        assert_eq!(call(&two.addr, &format!("user-{u}")).0, "baseline");
    }
    for s in [one, two] {
        let (code, err) = s.terminate();
        assert_eq!(code, 0, "{err}");
    }
    let mut c = postgres::Client::connect(&db, postgres::NoTls).unwrap();
    let rows = c
        .query_one(
            "SELECT COUNT(*), COUNT(DISTINCT request_id), COUNT(DISTINCT replica) FROM requests",
            &[],
        )
        .unwrap();
    let (n, distinct, replicas): (i64, i64, i64) = (rows.get(0), rows.get(1), rows.get(2));
    assert_eq!((n, distinct, replicas), (60, 60, 2));
    for id in &ids {
        let found: i64 = c
            .query_one("SELECT COUNT(*) FROM requests WHERE request_id = $1", &[id])
            .unwrap()
            .get(0);
        assert_eq!(found, 1, "{id}");
    }
}

/// One client thread of the load generator: ids it got a 200 for.
fn load(addr: &str, thread: usize, stop: &AtomicBool) -> Vec<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let x: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let mut ok = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let id = format!("load-{thread}-{n}");
        let body = serde_json::json!({"id": id, "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x}]});
        match agent
            .post(&format!("http://{addr}/v2/models/digits/infer"))
            .send(body.to_string())
        {
            Ok(r) if r.status() == 200 => ok.push(id),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    ok
}

#[test]
fn kill_9_under_load_loses_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (common::fx("mlp_fp32.onnx"), common::fx("mlp_int8_qdq.onnx"));
    let cfg = write_config(
        dir.path(),
        &format!("mode = \"shadow\"\nbaseline = \"{b}\"\ncandidate = \"{c}\"\n[log]\nurl = \"sqlite://log.db\""),
    );
    let mut served = serve(&cfg, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = served.addr.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || load(&addr, t, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    served.child.kill().unwrap(); // SIGKILL
    served.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let answered: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        answered.len() > 50,
        "the load generator got only {} answers",
        answered.len()
    );
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).unwrap();
    let mut lost = Vec::new();
    for id in &answered {
        let found: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM requests WHERE request_id = ?1 AND status = 200",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        if found != 1 {
            lost.push(id.clone());
        }
    }
    let logged: i64 = conn
        .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
        .unwrap();
    eprintln!(
        "kill -9 under load: {} requests answered 200, {logged} records, {} answered but unlogged",
        answered.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "answered but not logged: {lost:?}");
    drop(conn);
    // The next start marks the copies the killed run left pending as missing.
    let served = serve(&cfg, &[]);
    let (code, err) = served.terminate();
    assert_eq!(code, 0, "{err}");
    let conn = rusqlite::Connection::open(dir.path().join("log.db")).unwrap();
    let pending: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM requests WHERE shadow_status = 'pending'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0);
}

#[test]
fn check_config_loads_both_models_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (common::fx("mlp_fp32.onnx"), common::fx("mlp_int8_qdq.onnx"));
    let ok = write_config(
        dir.path(),
        &format!("mode = \"ab\"\nbaseline = \"{b}\"\ncandidate = \"{c}\""),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_qgate"))
        .args(["serve", "--check-config", "--config"])
        .arg(&ok)
        .env("QGATE_ADMIN_TOKEN", "tok")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("valid") && text.contains("inputs    x"),
        "{text}"
    );
    let cases: [(&str, String, &str); 4] = [
        (
            "missing model",
            format!("mode = \"ab\"\nbaseline = \"{b}\"\ncandidate = \"nope.onnx\""),
            "nope.onnx",
        ),
        (
            "incompatible",
            format!(
                "mode = \"ab\"\nbaseline = \"{b}\"\ncandidate = \"{}\"",
                common::fx("cnn_fp32.onnx")
            ),
            "the candidate",
        ),
        (
            "bad mode",
            format!("mode = \"blue\"\nbaseline = \"{b}\"\ncandidate = \"{c}\""),
            "blue",
        ),
        (
            "token unset",
            format!("mode = \"ab\"\nbaseline = \"{b}\"\ncandidate = \"{c}\""),
            "QGATE_ADMIN_TOKEN",
        ),
    ];
    for (what, body, needle) in cases {
        let p = write_config(dir.path(), &body);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qgate"));
        cmd.args(["serve", "--check-config", "--config"]).arg(&p);
        if what != "token unset" {
            cmd.env("QGATE_ADMIN_TOKEN", "tok");
        } else {
            cmd.env_remove("QGATE_ADMIN_TOKEN");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(needle) && err.contains("gateway.toml"),
            "{what}: {err}"
        );
    }
    // Beyond loopback only when the config allows it.
    let out = Command::new(env!("CARGO_BIN_EXE_qgate"))
        .args([
            "serve",
            "--check-config",
            "--listen",
            "0.0.0.0:0",
            "--config",
        ])
        .arg(&ok)
        .env("QGATE_ADMIN_TOKEN", "tok")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_non_loopback"));
}

#[test]
fn parse_only_checks_the_file_alone_and_never_prints_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = (common::fx("mlp_fp32.onnx"), common::fx("mlp_int8_qdq.onnx"));
    let cfg = write_config(
        dir.path(),
        &format!(
            "mode = \"ab\"\nbaseline = \"{b}\"\ncandidate = \"{c}\"\n\
             [log]\nurl_env = \"QGATE_LOG_URL\"\non_log_failure = \"serve_unlogged\""
        ),
    );
    let url = "postgres://qgate:s3cret@db.invalid:5432/qgate";
    let run = |flag: &str, url: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qgate"));
        cmd.args(["serve", flag, "--config"])
            .arg(&cfg)
            .env("QGATE_ADMIN_TOKEN", "tok");
        match url {
            Some(u) => cmd.env("QGATE_LOG_URL", u),
            None => cmd.env_remove("QGATE_LOG_URL"),
        };
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    // --parse-only reaches neither the models nor the database.
    let (code, text) = run("--parse-only", Some(url));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("postgres://qgate:***@db.invalid:5432/qgate"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    // --check-config does, and names the log it cannot reach, still without the password.
    let (code, text) = run("--check-config", Some(url));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("db.invalid") && text.contains("cannot connect"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    // The variable must be set.
    let (code, text) = run("--parse-only", None);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("log.url_env") && text.contains("QGATE_LOG_URL"),
        "{text}"
    );
    let (code, text) = run("--parse-only", Some("mysql://x"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("postgres://"), "{text}");
}

/// The KServe SDK's interpreter (`.venv-kserve`: `tests/servers/install.sh` with
/// `QGATE_REQUIREMENTS=tests/serve/kserve-requirements.txt`, as `.ci/run` does).
fn kserve_python() -> Option<String> {
    match std::env::var("QGATE_KSERVE_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var("QGATE_REQUIRE_KSERVE").is_ok_and(|v| v == "1") => {
            panic!("QGATE_KSERVE_PYTHON is not set")
        }
        _ => {
            eprintln!("skipping: QGATE_KSERVE_PYTHON (a venv with the kserve SDK) is not set");
            None
        }
    }
}

#[test]
fn the_kserve_sdk_works_unchanged() {
    let (Some(py), true) = (kserve_python(), ort_ready()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cfg, b, _) = ort_shadow_config(dir.path());
    let served = serve(&cfg, &[]);
    let sent = client(&py, "kserve_client.py", &served.addr, &["10", &b]);
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|s| s["id"] == s["sent"]), "{sent:?}");
    let (code, err) = served.terminate();
    assert_eq!(code, 0, "{err}");
    let ok: i64 = rusqlite::Connection::open(dir.path().join("log.db"))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM requests WHERE status = 200 AND request_id LIKE 'ks-%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ok, 10);
}

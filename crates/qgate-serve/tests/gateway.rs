//! The gateway in-process over a real socket on 127.0.0.1 (port 0), with mock models whose
//! answers are computed independently here: what clients get, what the log keeps, and what
//! a failing candidate, a restart or a hostile request cannot change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qgate_core::{Array, ArrayData, ElemType};
use qgate_runtime::mock::MockModel;
use qgate_runtime::{Dim, ModelInfo, RuntimeError, TensorInfo};
use qgate_serve::{Backends, Factory, Gateway, GatewayConfig};
use serde_json::{json, Value};

fn info() -> ModelInfo {
    let t = |name: &str, elem, shape: Vec<Dim>| TensorInfo {
        name: name.into(),
        elem_type: Some(elem),
        shape,
    };
    let n = || Dim::Symbolic("N".into());
    ModelInfo {
        inputs: vec![t("x", ElemType::F32, vec![n(), Dim::Fixed(4)])],
        outputs: vec![
            t("scores", ElemType::F32, vec![n(), Dim::Fixed(3)]),
            t("label", ElemType::I64, vec![n()]),
        ],
        ..ModelInfo::default()
    }
}

/// The reference forward pass: scores_j = Σ_i x_i · (i + 1)^j · scale, label = argmax.
fn forward(x: &Array, scale: f32) -> Vec<Array> {
    let v = x.to_f32().expect("floats");
    let rows = x.shape[0];
    let mut scores = Vec::with_capacity(rows * 3);
    let mut labels = Vec::with_capacity(rows);
    for r in v.chunks(4) {
        let s: Vec<f32> = (0..3)
            .map(|j| {
                r.iter()
                    .enumerate()
                    .map(|(i, &xi)| xi * ((i + 1) as f32).powi(j) * scale)
                    .sum::<f32>()
                    .sin()
            })
            .collect();
        let best = (0..3).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap_or(0);
        labels.push(best as i64);
        scores.extend(s);
    }
    vec![
        Array::new(vec![rows, 3], ArrayData::F32(scores)).expect("shape"),
        Array::new(vec![rows], ArrayData::I64(labels)).expect("shape"),
    ]
}

#[derive(Clone, Copy)]
enum Kind {
    Healthy(f32),
    Errors,
    Hangs,
    Sleeps(Duration, f32),
    /// Declares and returns its outputs in the other order (`label`, `scores`), as a
    /// re-export may.
    Reversed(f32),
    /// Panics on a batch of exactly 3 rows.
    PanicsOnThree,
    /// Fails this percentage of inputs (chosen by the input's bits: the same input always
    /// fails or always answers).
    FailsPercent(u32),
}

fn model(kind: Kind) -> Factory {
    Arc::new(move || {
        let mut declared = info();
        if matches!(kind, Kind::Reversed(_)) {
            declared.outputs.reverse();
        }
        Ok(Box::new(MockModel::new(
            declared,
            move |inputs: &[Array]| match kind {
                Kind::Reversed(scale) => {
                    let mut out = forward(&inputs[0], scale);
                    out.reverse();
                    Ok(out)
                }
                Kind::PanicsOnThree if inputs[0].shape[0] == 3 => panic!("three rows"),
                Kind::PanicsOnThree => Ok(forward(&inputs[0], 1.0)),
                Kind::Healthy(scale) => Ok(forward(&inputs[0], scale)),
                Kind::FailsPercent(p) => {
                    let bits = inputs[0]
                        .to_f32()
                        .unwrap_or_default()
                        .iter()
                        .fold(0u64, |h, v| {
                            h.wrapping_mul(31).wrapping_add(u64::from(v.to_bits()))
                        });
                    if (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100 < u64::from(p) {
                        Err(RuntimeError::Remote {
                            url: "mock".into(),
                            message: "a transient failure".into(),
                        })
                    } else {
                        Ok(forward(&inputs[0], 1.0))
                    }
                }
                Kind::Errors => Err(RuntimeError::Remote {
                    url: "mock".into(),
                    message: "the candidate broke".into(),
                }),
                Kind::Hangs => {
                    std::thread::sleep(Duration::from_secs(3600));
                    Ok(vec![])
                }
                Kind::Sleeps(d, scale) => {
                    std::thread::sleep(d);
                    Ok(forward(&inputs[0], scale))
                }
            },
        )) as Box<dyn qgate_runtime::Model>)
    })
}

struct Run {
    gw: Option<Gateway>,
    base: String,
    db: PathBuf,
}

impl Run {
    fn stop(&mut self) -> qgate_serve::ServeSummary {
        let gw = self.gw.take().expect("running");
        gw.stop_handle().stop();
        gw.wait().expect("clean stop")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.stop_handle().stop();
            let _ = gw.wait();
        }
    }
}

const TOKEN: &str = "test-token-123";

fn start(dir: &Path, extra: &str, baseline: Kind, candidate: Kind) -> Run {
    let grace = if extra.contains("shutdown_grace_ms") {
        ""
    } else {
        "shutdown_grace_ms = 2000\n"
    };
    let mode = if extra.starts_with("mode =") {
        ""
    } else {
        "mode = \"shadow\"\n"
    };
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmodel_name = \"m\"\n{mode}baseline = \"b.onnx\"\n\
         candidate = \"c.onnx\"\n{grace}{extra}"
    );
    let env = |k: &str| (k == "TOKEN").then(|| TOKEN.to_string());
    let cfg = GatewayConfig::parse(&text, &dir.join("gateway.toml"), None, &env).expect("config");
    let db = match &cfg.log.target {
        qgate_serve::config::LogTarget::Sqlite(p) => p.clone(),
        qgate_serve::config::LogTarget::Postgres { .. } => PathBuf::new(),
    };
    let gw = Gateway::start(
        cfg,
        vec![Backends {
            baseline: model(baseline),
            candidate: model(candidate),
        }],
    )
    .expect("start");
    let base = format!("http://{}", gw.addr());
    Run {
        gw: Some(gw),
        base,
        db,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

fn post(a: &ureq::Agent, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut req = a.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("HTTP");
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

fn sample(i: usize, rows: usize) -> Vec<f32> {
    (0..rows * 4)
        .map(|k| ((i * 31 + k * 7) % 23) as f32 / 7.0 - 1.5)
        .collect()
}

fn json_request(id: Option<&str>, x: &[f32]) -> Vec<u8> {
    let mut v = json!({"inputs": [{"name": "x", "shape": [x.len() / 4, 4], "datatype": "FP32", "data": x}]});
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v.to_string().into_bytes()
}

/// A binary-extension request as Triton's client sends it: inputs and outputs binary.
fn binary_request(x: &[f32]) -> (Vec<u8>, usize) {
    let head = json!({
        "inputs": [{"name": "x", "shape": [x.len() / 4, 4], "datatype": "FP32",
                    "parameters": {"binary_data_size": x.len() * 4}}],
        "outputs": [{"name": "scores", "parameters": {"binary_data": true}},
                    {"name": "label", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = head.clone().into_bytes();
    body.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    (body, head.len())
}

/// The outputs of an answer, JSON or binary, as (name, datatype, shape, values as f64).
fn outputs_of(a: &Answer) -> Vec<(String, String, Vec<usize>, Vec<f64>)> {
    let n = a
        .header("inference-header-content-length")
        .map(|v| v.parse::<usize>().expect("length"));
    let head: Value = serde_json::from_slice(&a.body[..n.unwrap_or(a.body.len())]).expect("json");
    let mut tail = &a.body[n.unwrap_or(a.body.len())..];
    head["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| {
            let dt = o["datatype"].as_str().expect("datatype").to_string();
            let shape: Vec<usize> = o["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            let values = match o.pointer("/parameters/binary_data_size") {
                Some(size) => {
                    let size = size.as_u64().expect("size") as usize;
                    let (mine, rest) = tail.split_at(size);
                    tail = rest;
                    match dt.as_str() {
                        "FP32" => mine
                            .chunks(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                            .collect(),
                        "INT64" => mine
                            .chunks(8)
                            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                            .collect(),
                        other => panic!("unexpected {other}"),
                    }
                }
                None => o["data"]
                    .as_array()
                    .expect("data")
                    .iter()
                    .map(|v| v.as_f64().expect("number"))
                    .collect(),
            };
            (
                o["name"].as_str().expect("name").to_string(),
                dt,
                shape,
                values,
            )
        })
        .collect()
}

fn expected(x: &[f32]) -> Vec<(String, String, Vec<usize>, Vec<f64>)> {
    let a = Array::from_f32(vec![x.len() / 4, 4], x.to_vec()).expect("shape");
    let out = forward(&a, 1.0);
    vec![
        (
            "scores".into(),
            "FP32".into(),
            out[0].shape.clone(),
            out[0].to_f64().expect("f"),
        ),
        (
            "label".into(),
            "INT64".into(),
            out[1].shape.clone(),
            out[1].to_f64().expect("f"),
        ),
    ]
}

fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("log")
}

/// `SELECT COUNT(*) FROM requests WHERE cond` in the log at `path`.
fn count(path: &Path, cond: &str) -> i64 {
    db(path)
        .query_row(
            &format!("SELECT COUNT(*) FROM requests WHERE {cond}"),
            [],
            |r| r.get(0),
        )
        .expect("sql")
}

/// The first column of `sql`'s rows, as text.
fn column(path: &Path, sql: &str) -> Vec<String> {
    db(path)
        .prepare(sql)
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// GET `url`'s body as text, with the admin token when `admin`.
fn get_text(a: &ureq::Agent, url: &str, admin: bool) -> String {
    let mut req = a.get(url);
    if admin {
        req = req.header("authorization", &format!("Bearer {TOKEN}"));
    }
    req.call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .expect("text")
}

fn infer_url(r: &Run) -> String {
    format!("{}/v2/models/m/infer", r.base)
}

#[test]
fn shadow_answers_equal_the_baseline_and_the_log_pairs_both() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut run = start(dir.path(), "", Kind::Healthy(1.0), Kind::Healthy(0.9));
    let a = agent();
    let mut ids = Vec::new();
    for i in 0..40 {
        let x = sample(i, 1 + i % 3);
        let ans = if i % 2 == 0 {
            post(
                &a,
                &infer_url(&run),
                &[("content-type", "application/json")],
                &json_request(Some(&format!("req-{i}")), &x),
            )
        } else {
            let (body, n) = binary_request(&x);
            post(
                &a,
                &infer_url(&run),
                &[("inference-header-content-length", &n.to_string())],
                &body,
            )
        };
        assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
        assert_eq!(ans.header("x-qgate-arm"), Some("baseline"));
        assert_eq!(outputs_of(&ans), expected(&x), "request {i}");
        let id = ans.header("x-request-id").expect("id").to_string();
        if i % 2 == 0 {
            assert_eq!(id, format!("req-{i}"));
        }
        ids.push((id, x));
    }
    std::thread::sleep(Duration::from_millis(300));
    let summary = run.stop();
    assert_eq!(summary.marked_missing, 0);
    let conn = db(&run.db);
    for (id, x) in &ids {
        let (status, shadow, outputs, shadow_outputs, mode, arm): (i64, String, String, String, String, String) = conn
            .query_row(
                "SELECT status, shadow_status, outputs, shadow_outputs, mode, arm FROM requests WHERE request_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .expect("a record per request");
        assert_eq!(
            (status, shadow.as_str(), mode.as_str(), arm.as_str()),
            (200, "ok", "shadow", "baseline")
        );
        let a = Array::from_f32(vec![x.len() / 4, 4], x.clone()).expect("shape");
        for (log, scale) in [(outputs, 1.0f32), (shadow_outputs, 0.9)] {
            let log: Value = serde_json::from_str(&log).expect("json");
            let want = forward(&a, scale);
            let scores = want[0].to_f64().expect("f");
            for (r, row) in scores.chunks(3).enumerate() {
                let mut order: Vec<usize> = (0..3).collect();
                order.sort_by(|&p, &q| row[q].total_cmp(&row[p]));
                assert_eq!(log["scores"]["top_k"][r], json!(order), "{id}");
                assert_eq!(log["scores"]["scores"][r][0].as_f64(), Some(row[order[0]]));
            }
            assert_eq!(
                log["label"]["data"],
                json!(want[1].data.to_i64().expect("i"))
            );
        }
    }
}

#[test]
fn a_failing_hanging_or_slow_candidate_changes_no_answer() {
    let a = agent();
    let cases = [
        (Kind::Errors, "error", ""),
        (
            Kind::Hangs,
            "timeout",
            "[shadow]\ntimeout_ms = 300\nqueue = 4\n",
        ),
        (Kind::Sleeps(Duration::from_millis(20), 0.9), "ok", ""),
    ];
    for (kind, want, extra) in cases {
        let dir = tempfile::tempdir().expect("tmp");
        let baseline = Kind::Sleeps(Duration::from_millis(2), 1.0);
        let mut run = start(dir.path(), extra, baseline, kind);
        for i in 0..20 {
            let x = sample(i, 2);
            let ans = post(&a, &infer_url(&run), &[], &json_request(None, &x));
            assert_eq!(
                ans.status,
                200,
                "{want}: {}",
                String::from_utf8_lossy(&ans.body)
            );
            assert_eq!(outputs_of(&ans), expected(&x), "{want}: request {i}");
        }
        std::thread::sleep(Duration::from_millis(700));
        run.stop();
        let conn = db(&run.db);
        let statuses: Vec<(String, i64)> = conn
            .prepare("SELECT shadow_status, COUNT(*) FROM requests GROUP BY shadow_status")
            .expect("sql")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows");
        let total: i64 = statuses.iter().map(|s| s.1).sum();
        assert_eq!(total, 20, "{want}: {statuses:?}");
        assert!(
            statuses.iter().any(|(s, _)| s == want),
            "{want}: {statuses:?}"
        );
        if want == "timeout" {
            // One copy at a time runs into the hung candidate; the queue (4) fills and
            // the rest are dropped or expire while queued; none is left pending.
            assert!(
                statuses
                    .iter()
                    .all(|(s, _)| ["timeout", "dropped", "missing"].contains(&s.as_str())),
                "{statuses:?}"
            );
        } else {
            assert_eq!(statuses, vec![(want.to_string(), 20)]);
        }
        assert_eq!(count(&run.db, "status = 200"), 20);
    }
}

#[test]
fn refusals_are_v2_errors_and_logged() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(
        dir.path(),
        "body_limit_bytes = 2000\n[admin]\ntoken_env = \"TOKEN\"\n",
        Kind::Healthy(1.0),
        Kind::Healthy(1.0),
    );
    let a = agent();
    let url = infer_url(&run);
    let big = json_request(None, &sample(0, 100));
    type Case<'a> = (&'a str, Vec<u8>, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed", b"{\"inputs\": [".to_vec(), vec![], 400, "not valid JSON"),
        ("no inputs", b"{}".to_vec(), vec![], 400, "no `inputs`"),
        ("wrong name", br#"{"inputs":[{"name":"y","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.to_vec(), vec![], 400, "no input 'y'"),
        ("wrong type", br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}"#.to_vec(), vec![], 400, "datatype INT64, the model expects FP32"),
        ("wrong shape", br#"{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#.to_vec(), vec![], 400, "shape [1, 5]"),
        ("unknown output", br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"zz"}]}"#.to_vec(), vec![], 400, "no output 'zz'"),
        ("oversized", big, vec![], 413, "body_limit_bytes"),
        ("bad header", json_request(None, &sample(0, 1)), vec![("inference-header-content-length", "ten")], 400, "byte count"),
    ];
    for (what, body, headers, status, needle) in cases {
        let ans = post(&a, &url, &headers, &body);
        assert_eq!(ans.status, status, "{what}");
        let err = ans.json()["error"]
            .as_str()
            .expect("V2 error body")
            .to_string();
        assert!(err.contains(needle), "{what}: {err}");
        assert!(ans.header("x-request-id").is_some(), "{what}");
        assert_eq!(ans.header("x-qgate-arm"), Some("none"), "{what}");
    }
    let other = post(
        &a,
        &format!("{}/v2/models/other/infer", run.base),
        &[],
        &json_request(None, &sample(0, 1)),
    );
    assert_eq!(other.status, 404);
    // Admin: no token, a wrong token, the right one.
    let mode = format!("{}/admin/mode", run.base);
    let body = br#"{"mode":"ab"}"#;
    assert_eq!(post(&a, &mode, &[], body).status, 401);
    assert_eq!(
        post(&a, &mode, &[("authorization", "Bearer wrong")], body).status,
        401
    );
    assert_eq!(
        post(
            &a,
            &mode,
            &[("authorization", &format!("Bearer {TOKEN}x"))],
            body
        )
        .status,
        401
    );
    assert_eq!(
        post(
            &a,
            &mode,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            b"{"
        )
        .status,
        400
    );
    assert_eq!(
        post(
            &a,
            &mode,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            body
        )
        .status,
        200
    );
    drop(run);
    let refused = count(
        &dir.path().join("qgate-log.db"),
        "status IN (400, 413) AND arm IS NULL AND error IS NOT NULL",
    );
    assert_eq!(refused, 8);
    // Without a configured token the admin API is absent.
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(dir.path(), "", Kind::Healthy(1.0), Kind::Healthy(1.0));
    let ans = post(
        &a,
        &format!("{}/admin/mode", run.base),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        body,
    );
    assert_eq!(ans.status, 404);
}

fn admin(a: &ureq::Agent, run: &Run, path: &str, body: &str) -> Answer {
    post(
        a,
        &format!("{}/admin/{path}", run.base),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        body.as_bytes(),
    )
}

fn arms(a: &ureq::Agent, run: &Run, users: usize) -> Vec<bool> {
    (0..users)
        .map(|u| {
            let ans = post(
                a,
                &infer_url(run),
                &[("x-user-id", &format!("user-{u}"))],
                &json_request(None, &sample(u, 1)),
            );
            assert_eq!(ans.status, 200);
            ans.header("x-qgate-arm") == Some("candidate")
        })
        .collect()
}

#[test]
fn users_keep_their_arm_across_restarts_and_as_the_weight_grows() {
    let dir = tempfile::tempdir().expect("tmp");
    let extra = "[ab]\ncandidate_weight = 0.3\n[admin]\ntoken_env = \"TOKEN\"\n";
    let a = agent();
    let mut run = start(dir.path(), extra, Kind::Healthy(1.0), Kind::Healthy(0.9));
    assert_eq!(admin(&a, &run, "mode", r#"{"mode":"ab"}"#).status, 200);
    let first = arms(&a, &run, 300);
    let share = first.iter().filter(|c| **c).count() as f64 / 300.0;
    assert!((share - 0.3).abs() < 0.1, "{share}");
    run.stop();
    let mut run = start(dir.path(), extra, Kind::Healthy(1.0), Kind::Healthy(0.9));
    assert_eq!(arms(&a, &run, 300), first, "a restart moved users");
    assert_eq!(
        admin(&a, &run, "weights", r#"{"candidate_weight":0.6}"#).status,
        200
    );
    let second = arms(&a, &run, 300);
    assert!(
        first.iter().zip(&second).all(|(f, s)| !f || *s),
        "a candidate user went back"
    );
    assert!(second.iter().filter(|c| **c).count() > first.iter().filter(|c| **c).count());
    // Requests without the header are split per request and counted.
    let ans = post(
        &a,
        &infer_url(&run),
        &[],
        &json_request(None, &sample(1, 1)),
    );
    assert_eq!(ans.status, 200);
    let m = get_text(&a, &format!("{}/metrics", run.base), false);
    assert!(
        m.contains("qgate_unsticky_requests_total{model=\"m\"} 1"),
        "{m}"
    );
    assert!(m.contains("qgate_candidate_weight{model=\"m\"} 0.6"), "{m}");
    run.stop();
}

#[test]
fn a_restart_never_undoes_a_rollback() {
    let dir = tempfile::tempdir().expect("tmp");
    let extra =
        "mode = \"canary\"\n[admin]\ntoken_env = \"TOKEN\"\n".replace("mode = \"canary\"\n", "");
    let a = agent();
    let mut run = start(dir.path(), &extra, Kind::Healthy(1.0), Kind::Healthy(0.9));
    assert_eq!(
        admin(&a, &run, "canary/advance", "").status,
        409,
        "advance needs canary mode"
    );
    assert_eq!(admin(&a, &run, "mode", r#"{"mode":"canary"}"#).status, 200);
    for want in [0.05, 0.25, 0.5] {
        let s = admin(&a, &run, "canary/advance", "").json();
        assert_eq!(s["weight_in_force"].as_f64(), Some(want));
    }
    let at_half = arms(&a, &run, 50);
    assert!(
        at_half.iter().any(|c| *c) && at_half.iter().any(|c| !c),
        "{at_half:?}"
    );
    assert_eq!(admin(&a, &run, "canary/hold", "").status, 200);
    assert_eq!(admin(&a, &run, "canary/advance", "").status, 409, "held");
    let s = admin(&a, &run, "canary/rollback", "").json();
    assert_eq!(s["weight_in_force"].as_f64(), Some(0.0));
    // Every user is on the baseline for the very next request.
    assert!(arms(&a, &run, 50).iter().all(|c| !c));
    run.stop();
    let mut run = start(dir.path(), &extra, Kind::Healthy(1.0), Kind::Healthy(0.9));
    let s = post(&a, &format!("{}/admin/state", run.base), &[], b"");
    assert_eq!(s.status, 405, "state is a GET");
    let s: Value = serde_json::from_str(&get_text(&a, &format!("{}/admin/state", run.base), true))
        .expect("json");
    assert_eq!(s["mode"], "canary");
    assert_eq!(s["canary_step"], Value::Null);
    assert_eq!(s["weight_in_force"].as_f64(), Some(0.0));
    assert!(arms(&a, &run, 50).iter().all(|c| !c));
    run.stop();
    let actions = column(&run.db, "SELECT action FROM admin_actions ORDER BY seq");
    assert_eq!(
        actions,
        [
            "start",
            "mode",
            "canary/advance",
            "canary/advance",
            "canary/advance",
            "canary/hold",
            "canary/rollback",
            "start"
        ]
    );
}

#[test]
fn duplicate_ids_get_a_suffix_and_outcomes_join_requests() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut run = start(
        dir.path(),
        "outcome_token_env = \"TOKEN\"\n",
        Kind::Healthy(1.0),
        Kind::Healthy(1.0),
    );
    let a = agent();
    let first = post(
        &a,
        &infer_url(&run),
        &[],
        &json_request(Some("same"), &sample(1, 1)),
    );
    let second = post(
        &a,
        &infer_url(&run),
        &[],
        &json_request(Some("same"), &sample(2, 1)),
    );
    let by_header = post(
        &a,
        &infer_url(&run),
        &[("x-request-id", "hdr-1")],
        &json_request(None, &sample(3, 1)),
    );
    assert_eq!(first.header("x-request-id"), Some("same"));
    assert_eq!(second.header("x-request-id"), Some("same~2"));
    assert_eq!(second.json()["id"], "same~2");
    assert_eq!(by_header.header("x-request-id"), Some("hdr-1"));
    let outcome = format!("{}/v2/models/m/outcome", run.base);
    let auth = format!("Bearer {TOKEN}");
    let ok = post(
        &a,
        &outcome,
        &[("authorization", &auth)],
        br#"{"request_id":"same~2","name":"click","value":1}"#,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        post(
            &a,
            &outcome,
            &[],
            br#"{"request_id":"same","name":"click","value":1}"#
        )
        .status,
        401
    );
    assert_eq!(
        post(
            &a,
            &outcome,
            &[("authorization", &auth)],
            br#"{"request_id":"nope","name":"click","value":1}"#
        )
        .status,
        404
    );
    assert_eq!(
        post(
            &a,
            &outcome,
            &[("authorization", &auth)],
            br#"{"request_id":"same","name":"click","value":"x"}"#
        )
        .status,
        400
    );
    let m = get_text(&a, &format!("{}/metrics", run.base), false);
    assert!(
        m.contains("qgate_duplicate_request_ids_total{model=\"m\"} 1"),
        "{m}"
    );
    run.stop();
    let joined: (String, String, f64) = db(&run.db)
        .query_row(
            "SELECT r.client_request_id, o.name, o.value FROM outcomes o JOIN requests r USING (request_id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("joined");
    assert_eq!(joined, ("same".to_string(), "click".to_string(), 1.0));
}

#[test]
fn shutdown_marks_copies_still_pending_missing() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut run = start(
        dir.path(),
        "shutdown_grace_ms = 300\n[shadow]\ntimeout_ms = 60000\n",
        Kind::Healthy(1.0),
        Kind::Hangs,
    );
    let a = agent();
    for i in 0..5 {
        assert_eq!(
            post(
                &a,
                &infer_url(&run),
                &[],
                &json_request(None, &sample(i, 1))
            )
            .status,
            200
        );
    }
    let summary = run.stop();
    assert_eq!(summary.marked_missing, 5);
    assert_eq!(count(&run.db, "shadow_status = 'missing'"), 5);
}

#[test]
fn the_metadata_is_the_baselines() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(dir.path(), "", Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    let get = |p: &str| {
        let mut r = a.get(&format!("{}{p}", run.base)).call().expect("get");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(
        get("/v2/health/live"),
        (200, r#"{"live":true}"#.to_string())
    );
    assert_eq!(
        get("/v2/health/ready"),
        (200, r#"{"ready":true}"#.to_string())
    );
    assert_eq!(get("/v2/models/m/ready").1, r#"{"name":"m","ready":true}"#);
    assert_eq!(get("/v2/models/m/ready").0, 200);
    assert_eq!(get("/v2/models/m/versions/1/ready").0, 200);
    assert_eq!(get("/v2/models/nope/ready").0, 404);
    let meta: Value = serde_json::from_str(&get("/v2/models/m").1).expect("json");
    assert_eq!(
        meta["inputs"],
        json!([{"name": "x", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"][1],
        json!({"name": "label", "datatype": "INT64", "shape": [-1]})
    );
    let server: Value = serde_json::from_str(&get("/v2").1).expect("json");
    assert_eq!(server["extensions"], json!(["binary_tensor_data"]));
    let versioned = post(
        &a,
        &format!("{}/v2/models/m/versions/7/infer", run.base),
        &[],
        &json_request(None, &sample(0, 1)),
    );
    assert_eq!(versioned.json()["model_version"], "7");
}

#[test]
fn inputs_are_kept_under_their_cap_and_old_records_are_deleted() {
    let dir = tempfile::tempdir().expect("tmp");
    let extra = "[log]\nstore_inputs = true\nmax_input_bytes = 100\nretain_days = 1\n";
    let mut run = start(dir.path(), extra, Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    let small = sample(1, 1);
    assert_eq!(
        post(
            &a,
            &infer_url(&run),
            &[],
            &json_request(Some("small"), &small)
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &a,
            &infer_url(&run),
            &[],
            &json_request(Some("big"), &sample(2, 10))
        )
        .status,
        200
    );
    run.stop();
    let conn = db(&run.db);
    let kept: Option<String> = conn
        .query_row(
            "SELECT inputs FROM requests WHERE request_id = 'small'",
            [],
            |r| r.get(0),
        )
        .expect("row");
    let kept: Value =
        serde_json::from_str(&kept.expect("16 bytes are under the cap")).expect("json");
    assert_eq!(kept[0]["data"], json!(small));
    assert_eq!(kept[0]["shape"], json!([1, 4]));
    let (big, bytes): (Option<String>, i64) = conn
        .query_row(
            "SELECT inputs, input_bytes FROM requests WHERE request_id = 'big'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!((big, bytes), (None, 160));
    // Two days old: the next start's retention deletes it, and only it.
    let old = qgate_serve::store::now_ms() - 2 * 86_400_000;
    conn.execute(
        "UPDATE requests SET ts_ms = ?1 WHERE request_id = 'big'",
        [old],
    )
    .expect("sql");
    drop(conn);
    let mut run = start(dir.path(), extra, Kind::Healthy(1.0), Kind::Healthy(1.0));
    std::thread::sleep(Duration::from_millis(800));
    run.stop();
    let ids = column(&run.db, "SELECT request_id FROM requests");
    assert_eq!(ids, ["small"]);
}

#[test]
fn a_stop_drains_requests_in_flight_and_refuses_new_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut run = start(
        dir.path(),
        "",
        Kind::Sleeps(Duration::from_millis(600), 1.0),
        Kind::Healthy(1.0),
    );
    let url = infer_url(&run);
    let x = sample(4, 2);
    let body = json_request(Some("in-flight"), &x);
    let client = std::thread::spawn(move || post(&agent(), &url, &[], &body));
    std::thread::sleep(Duration::from_millis(200));
    let base = run.base.clone();
    let gw = run.gw.take().expect("running");
    gw.stop_handle().stop();
    let ans = client.join().expect("client");
    assert_eq!(ans.status, 200, "the request in flight is answered");
    assert_eq!(outputs_of(&ans), expected(&x));
    let summary = gw.wait().expect("clean stop");
    assert!(summary.drained);
    let refused = ureq::get(&format!("{base}/v2/health/live")).call();
    assert!(refused.is_err(), "a stopped gateway accepts no connection");
    let status: i64 = db(&run.db)
        .query_row(
            "SELECT status FROM requests WHERE request_id = 'in-flight'",
            [],
            |r| r.get(0),
        )
        .expect("its record");
    assert_eq!(status, 200);
}

/// The share of rows whose argmax agrees between the two mock models, computed here.
fn agreement(xs: &[Vec<f32>]) -> f64 {
    let (mut rows, mut agreed) = (0, 0);
    for x in xs {
        let a = Array::from_f32(vec![x.len() / 4, 4], x.clone()).expect("shape");
        let (b, c) = (forward(&a, 1.0), forward(&a, 0.9));
        let (lb, lc) = (
            b[1].data.to_i64().expect("i"),
            c[1].data.to_i64().expect("i"),
        );
        rows += lb.len();
        agreed += lb.iter().zip(&lc).filter(|(p, q)| p == q).count();
    }
    agreed as f64 / rows as f64
}

#[test]
fn metrics_count_arms_statuses_and_the_agreement_of_paired_answers() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(dir.path(), "", Kind::Healthy(1.0), Kind::Healthy(0.9));
    let a = agent();
    let xs: Vec<Vec<f32>> = (0..30).map(|i| sample(i, 1 + i % 4)).collect();
    for x in &xs {
        assert_eq!(
            post(&a, &infer_url(&run), &[], &json_request(None, x)).status,
            200
        );
    }
    assert_eq!(post(&a, &infer_url(&run), &[], b"{").status, 400);
    std::thread::sleep(Duration::from_millis(400));
    let m = get_text(&a, &format!("{}/metrics", run.base), false);
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert_eq!(
        value("qgate_requests_total{model=\"m\",arm=\"baseline\",code=\"200\"}"),
        30.0
    );
    assert_eq!(
        value("qgate_requests_total{model=\"m\",arm=\"none\",code=\"400\"}"),
        1.0
    );
    assert_eq!(
        value("qgate_latency_seconds_count{model=\"m\",what=\"request\",arm=\"baseline\"}"),
        30.0
    );
    assert_eq!(value("qgate_shadow_total{model=\"m\",status=\"ok\"}"), 30.0);
    let rows: usize = xs.iter().map(|x| x.len() / 4).sum();
    assert_eq!(value("qgate_paired_rows_total{model=\"m\"}"), rows as f64);
    let want = agreement(&xs);
    assert!(
        want < 1.0,
        "the two mocks must disagree somewhere for this test to mean anything"
    );
    assert!((value("qgate_top1_agreement{model=\"m\"}") - want).abs() < 1e-12);
    assert_eq!(value("qgate_shadow_queue_depth{model=\"m\"}"), 0.0);
    assert_eq!(value("qgate_shadow_dropped_total{model=\"m\"}"), 0.0);
    assert_eq!(value("qgate_candidate_weight{model=\"m\"}"), 0.0);
    assert!(m.contains("qgate_mode{model=\"m\",mode=\"shadow\"} 1"));
}

#[test]
fn hostile_requests_are_refused_and_the_gateway_lives_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(dir.path(), "", Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    let url = infer_url(&run);
    let huge = 1u64 << 40;
    let bytes_head = format!(
        r#"{{"inputs":[{{"name":"x","shape":[{huge}],"datatype":"BYTES","parameters":{{"binary_data_size":8}}}}]}}"#
    );
    let mut bytes_body = bytes_head.clone().into_bytes();
    bytes_body.extend([0u8; 8]);
    let bad_utf8_head = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
    let mut bad_utf8 = bad_utf8_head.as_bytes().to_vec();
    bad_utf8.extend([2, 0, 0, 0, 0xff, 0xfe]);
    let cases: Vec<(&str, Vec<u8>, Option<usize>, &str)> = vec![
        ("huge JSON shape", format!(r#"{{"inputs":[{{"name":"x","shape":[{huge},4],"datatype":"FP32","data":[1]}}]}}"#).into_bytes(), None, "the shape holds"),
        ("overflowing shape", format!(r#"{{"inputs":[{{"name":"x","shape":[{huge},{huge},{huge}],"datatype":"FP32","data":[1]}}]}}"#).into_bytes(), None, "too large"),
        ("huge binary shape", {
            let h = format!(r#"{{"inputs":[{{"name":"x","shape":[{huge},4],"datatype":"FP32","parameters":{{"binary_data_size":16}}}}]}}"#);
            let mut b = h.into_bytes();
            b.extend([0u8; 16]);
            b
        }, Some(0), "binary_data_size is 16 bytes"),
        ("huge BYTES shape", bytes_body, Some(bytes_head.len()), "cannot hold them"),
        ("non-UTF-8 BYTES", bad_utf8, Some(bad_utf8_head.len()), "not UTF-8"),
        ("empty id", br#"{"id":"","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#.to_vec(), None, "request id"),
        ("control id", b"{\"id\":\"a\\nb\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}".to_vec(), None, "request id"),
    ];
    for (what, body, header_len, needle) in cases {
        let n = header_len
            .map(|n| if n == 0 { body.len() - 16 } else { n })
            .map(|n| n.to_string());
        let headers: Vec<(&str, &str)> = n
            .iter()
            .map(|n| ("inference-header-content-length", n.as_str()))
            .collect();
        let ans = post(&a, &url, &headers, &body);
        assert_eq!(
            ans.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&ans.body)
        );
        let err = ans.json()["error"].as_str().expect("error").to_string();
        assert!(err.contains(needle), "{what}: {err}");
    }
    let x = sample(1, 1);
    let ok = post(&a, &url, &[], &json_request(None, &x));
    assert_eq!(ok.status, 200);
    assert_eq!(outputs_of(&ok), expected(&x));
}

#[test]
fn a_panicking_model_answers_502_and_is_rebuilt() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(
        dir.path(),
        "workers = 1\n",
        Kind::PanicsOnThree,
        Kind::Healthy(1.0),
    );
    let a = agent();
    for round in 0..3 {
        let bad = post(
            &a,
            &infer_url(&run),
            &[],
            &json_request(None, &sample(round, 3)),
        );
        assert_eq!(bad.status, 502, "round {round}");
        let err = bad.json()["error"].as_str().expect("error").to_string();
        assert!(
            err.contains("the baseline model failed") && err.contains("panicked"),
            "{err}"
        );
        // The one worker is still there (a fresh instance).
        let x = sample(round, 2);
        let ok = post(&a, &infer_url(&run), &[], &json_request(None, &x));
        assert_eq!(ok.status, 200, "round {round}");
        assert_eq!(outputs_of(&ok), expected(&x));
    }
}

#[test]
fn a_candidate_with_its_outputs_in_another_order_is_matched_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let extra = "[ab]\ncandidate_weight = 1.0\n[admin]\ntoken_env = \"TOKEN\"\n";
    let mut run = start(dir.path(), extra, Kind::Healthy(1.0), Kind::Reversed(1.0));
    let a = agent();
    // Shadow: the log names the candidate's answer with the baseline's names.
    let x = sample(3, 2);
    assert_eq!(
        post(&a, &infer_url(&run), &[], &json_request(Some("s1"), &x)).status,
        200
    );
    // The metadata is the baseline's, in its order.
    let meta: Value =
        serde_json::from_str(&get_text(&a, &format!("{}/v2/models/m", run.base), false))
            .expect("json");
    assert_eq!(meta["outputs"][0]["name"], "scores");
    // A/B at weight 1: the candidate answers every client, under the right names.
    assert_eq!(admin(&a, &run, "mode", r#"{"mode":"ab"}"#).status, 200);
    assert_eq!(
        admin(&a, &run, "canary/rollback", "").status,
        409,
        "rollback is a canary action"
    );
    for i in 0..5 {
        let x = sample(i, 1 + i % 3);
        let ans = post(
            &a,
            &infer_url(&run),
            &[("x-user-id", &format!("u{i}"))],
            &json_request(None, &x),
        );
        assert_eq!(ans.header("x-qgate-arm"), Some("candidate"));
        assert_eq!(outputs_of(&ans), expected(&x), "request {i}");
    }
    std::thread::sleep(Duration::from_millis(300));
    run.stop();
    let shadow: String = db(&run.db)
        .query_row(
            "SELECT shadow_outputs FROM requests WHERE request_id = 's1'",
            [],
            |r| r.get(0),
        )
        .expect("paired");
    let shadow: Value = serde_json::from_str(&shadow).expect("json");
    let want = expected(&x);
    assert_eq!(
        shadow["label"]["data"],
        json!(want[1].3.iter().map(|v| *v as i64).collect::<Vec<_>>())
    );
    assert_eq!(shadow["scores"]["shape"], json!([2, 3]));
}

#[test]
fn tensors_line_up_by_name_else_by_position_never_by_a_partial_match() {
    use qgate_serve::gateway::map_tensors;
    let named = |ins: &[&str], outs: &[&str]| {
        let t = |n: &&str| TensorInfo {
            name: n.to_string(),
            elem_type: Some(ElemType::F32),
            shape: vec![],
        };
        ModelInfo {
            inputs: ins.iter().map(t).collect(),
            outputs: outs.iter().map(t).collect(),
            ..ModelInfo::default()
        }
    };
    let base = named(&["x"], &["logits", "probs"]);
    let m = map_tensors(&base, &named(&["x"], &["probs", "logits"])).expect("by name");
    assert_eq!(m.outputs, vec![1, 0]);
    let m = map_tensors(&base, &named(&["input"], &["out0", "out1"])).expect("by position");
    assert_eq!((m.inputs, m.outputs), (vec![0], vec![0, 1]));
    let e = map_tensors(&base, &named(&["x"], &["probs", "logits_v2"])).expect_err("partial");
    assert!(
        e.contains("logits_v2") && e.contains("logits, probs"),
        "{e}"
    );
    let e = map_tensors(&base, &named(&["x", "mask"], &["logits", "probs"])).expect_err("inputs");
    assert!(e.contains("2 input(s)"), "{e}");
}

#[test]
fn ids_the_header_cannot_carry_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let run = start(dir.path(), "", Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    for id in ["caf\u{e9}", " padded", "x".repeat(257).as_str()] {
        let body = json!({"id": id, "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
        let ans = post(&a, &infer_url(&run), &[], body.to_string().as_bytes());
        assert_eq!(ans.status, 400, "{id:?}");
    }
    let ok = post(
        &a,
        &infer_url(&run),
        &[],
        &json_request(Some("a b-1_2.3"), &sample(0, 1)),
    );
    assert_eq!(ok.header("x-request-id"), Some("a b-1_2.3"));
}

/// The shared PostgreSQL log: two replicas, a database killed under load. These run when
/// `QGATE_PG_URL` names a server whose role may create databases (`.ci/run` starts one with
/// tests/servers/pg.sh, and sets `QGATE_REQUIRE_PG=1` so they cannot be skipped there).
mod postgres_log {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    use std::time::Instant;

    /// The kill test stops the server every other test uses: one at a time.
    static SERVER: Mutex<()> = Mutex::new(());

    fn server() -> Option<String> {
        match std::env::var("QGATE_PG_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                assert!(
                    std::env::var("QGATE_REQUIRE_PG").is_err(),
                    "QGATE_REQUIRE_PG is set but QGATE_PG_URL is not"
                );
                eprintln!("skipped: set QGATE_PG_URL to a PostgreSQL server to run this test");
                None
            }
        }
    }

    /// A new, empty database on the server; its URL.
    fn fresh_database(server: &str, tag: &str) -> String {
        let name = format!(
            "qgate_{tag}_{}_{:x}",
            std::process::id(),
            qgate_serve::store::now_ms()
        );
        let mut c = postgres::Client::connect(server, postgres::NoTls).expect("connect");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let (head, _) = server.rsplit_once('/').expect("URL with a database");
        format!("{head}/{name}")
    }

    fn query_ids(url: &str, sql: &str) -> Vec<String> {
        let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
        c.query(sql, &[])
            .expect("sql")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }

    fn start_pg(dir: &Path, url: &str, poll_ms: u64, extra: &str) -> Run {
        let extra = format!(
            "workers = 2\n[ab]\ncandidate_weight = 0.5\n[admin]\ntoken_env = \"TOKEN\"\n\
             [log]\nurl = \"{url}\"\nstate_poll_ms = {poll_ms}\nconnect_timeout_ms = 1000\n{extra}"
        );
        start(dir, &extra, Kind::Healthy(1.0), Kind::Healthy(0.9))
    }

    #[test]
    fn two_replicas_apply_each_automatic_decision_once() {
        let Some(server) = server() else { return };
        let _one = SERVER.lock().unwrap_or_else(|e| e.into_inner());
        let url = fresh_database(&server, "canary");
        let (d1, d2) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let extra = format!(
            "mode = \"canary\"\n[admin]\ntoken_env = \"TOKEN\"\n[canary]\nsteps = [25, 50, 100]\n\
             auto = true\npolicy = \"canary.toml\"\nmin_requests_per_step = 60\nmin_step_seconds = 0.2\n\
             [log]\nurl = \"{url}\"\nstate_poll_ms = 100\n"
        );
        for d in [&d1, &d2] {
            std::fs::write(
                d.path().join("canary.toml"),
                "min_requests = 30\nmax_error_rate_increase = 0.05\n",
            )
            .expect("policy");
        }
        let r1 = start(d1.path(), &extra, Kind::Healthy(1.0), Kind::Healthy(1.0));
        let r2 = start(d2.path(), &extra, Kind::Healthy(1.0), Kind::Healthy(1.0));
        let a = agent();
        let t = Instant::now();
        let mut from = 0;
        while state_of(&a, &r1)["promoted"] != Value::Bool(true) {
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "{}",
                state_of(&a, &r1)
            );
            traffic(&a, &r1, from, 40);
            traffic(&a, &r2, from + 40, 40);
            from += 80;
            std::thread::sleep(Duration::from_millis(50));
        }
        // Both controllers judged every step; the compare-and-set let exactly one apply each.
        let actions = query_ids(
            &url,
            "SELECT action FROM admin_actions WHERE action LIKE 'canary/auto-%' \
             AND action <> 'canary/auto-hold' ORDER BY seq",
        );
        assert_eq!(actions, ["canary/auto-promote", "canary/auto-complete"]);
        wait_state(&a, &r2, |s| s["promoted"] == Value::Bool(true));
    }

    fn state_of(a: &ureq::Agent, run: &Run) -> Value {
        serde_json::from_str(&get_text(a, &format!("{}/admin/state", run.base), true))
            .expect("state")
    }

    /// Waits until `run`'s admin state satisfies `ok`; answers how long it took.
    fn wait_state(a: &ureq::Agent, run: &Run, ok: impl Fn(&Value) -> bool) -> Duration {
        let t = Instant::now();
        while !ok(&state_of(a, run)) {
            assert!(t.elapsed() < Duration::from_secs(5), "{}", state_of(a, run));
            std::thread::sleep(Duration::from_millis(10));
        }
        t.elapsed()
    }

    #[test]
    fn two_replicas_write_one_log_agree_on_arms_and_share_a_rollback() {
        let Some(server) = server() else { return };
        let _one = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        let url = fresh_database(&server, "replicas");
        let dir = tempfile::tempdir().expect("tmp");
        let a = agent();
        let mut r1 = start_pg(dir.path(), &url, 100, "");
        let mut r2 = start_pg(dir.path(), &url, 100, "");
        // A third replica that reads the shared state only once a minute.
        let mut r3 = start_pg(dir.path(), &url, 60_000, "");
        // A mode set on one replica is in force on the other within the poll interval.
        assert_eq!(admin(&a, &r1, "mode", r#"{"mode":"ab"}"#).status, 200);
        let took = wait_state(&a, &r2, |s| s["mode"] == "ab");
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Load: 4 clients, 150 requests each, alternating replicas; 60 users.
        let answered: Vec<(String, String, String, &str)> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..4)
                .map(|c| {
                    let (r1, r2) = (&r1, &r2);
                    sc.spawn(move || {
                        let a = agent();
                        (0..150)
                            .map(|i| {
                                // Each user comes back every 60 requests, to the other replica.
                                let (run, which) = if (i / 60 + c) % 2 == 0 {
                                    (r1, "r1")
                                } else {
                                    (r2, "r2")
                                };
                                let user = format!("user-{}", i % 60);
                                let ans = post(
                                    &a,
                                    &infer_url(run),
                                    &[("x-user-id", &user)],
                                    &json_request(None, &sample(i, 1)),
                                );
                                assert_eq!(
                                    ans.status,
                                    200,
                                    "{}",
                                    String::from_utf8_lossy(&ans.body)
                                );
                                (
                                    ans.header("x-request-id").expect("id").to_string(),
                                    user,
                                    ans.header("x-qgate-arm").expect("arm").to_string(),
                                    which,
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("client"))
                .collect()
        });
        assert_eq!(answered.len(), 600);
        // Every answered request is in the log exactly once, under the id its client got.
        let logged = query_ids(&url, "SELECT request_id FROM requests WHERE status = 200");
        assert_eq!(logged.len(), 600);
        assert!(
            logged.iter().all(|id| !id.contains('~')),
            "a record logged twice"
        );
        let logged: HashSet<String> = logged.into_iter().collect();
        assert_eq!(logged.len(), 600, "an id logged twice");
        assert!(answered.iter().all(|(id, ..)| logged.contains(id)));
        // A NUL in a refused input's name is echoed in the logged error: PostgreSQL refuses
        // NUL in text, and the batch it shares must not fail for it.
        let body =
            br#"{"inputs":[{"name":"x\u0000y","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        let nul = post(&a, &infer_url(&r1), &[], body);
        assert_eq!(nul.status, 400, "{}", String::from_utf8_lossy(&nul.body));
        let id = nul.header("x-request-id").expect("id").to_string();
        let err = query_ids(
            &url,
            &format!("SELECT error FROM requests WHERE request_id = '{id}'"),
        );
        assert!(err.len() == 1 && err[0].contains('\u{FFFD}'), "{err:?}");
        assert_eq!(
            a.get(&format!("{}/v2/health/ready", r1.base))
                .call()
                .map(|r| r.status().as_u16())
                .ok(),
            Some(200)
        );
        // Both replicas wrote, and they agree on every user's arm.
        let replicas = query_ids(&url, "SELECT DISTINCT replica FROM requests");
        assert_eq!(replicas.len(), 2, "{replicas:?}");
        let mut arm_of: HashMap<&str, (&str, HashSet<&str>)> = HashMap::new();
        for (_, user, arm, which) in &answered {
            let e = arm_of.entry(user).or_insert((arm, HashSet::new()));
            assert_eq!(e.0, arm, "{user} got two arms");
            e.1.insert(which);
        }
        assert!(arm_of.values().all(|(_, w)| w.len() == 2));
        let on_candidate: Vec<&str> = arm_of
            .iter()
            .filter(|(_, (arm, _))| *arm == "candidate")
            .map(|(u, _)| *u)
            .collect();
        assert!(!on_candidate.is_empty());
        // A canary rollback on replica 1 holds on replica 2 within the poll interval.
        assert_eq!(admin(&a, &r1, "mode", r#"{"mode":"canary"}"#).status, 200);
        for _ in 0..4 {
            assert_eq!(admin(&a, &r1, "canary/advance", "{}").status, 200);
        }
        wait_state(&a, &r2, |s| s["weight_in_force"] == json!(1.0));
        assert_eq!(admin(&a, &r1, "canary/rollback", "{}").status, 200);
        let took = wait_state(&a, &r2, |s| s["weight_in_force"] == json!(0.0));
        eprintln!("the rollback was in force on the other replica after {took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        for user in &on_candidate {
            let ans = post(
                &a,
                &infer_url(&r2),
                &[("x-user-id", user)],
                &json_request(None, &sample(1, 1)),
            );
            assert_eq!(ans.header("x-qgate-arm"), Some("baseline"), "{user}");
        }
        // Replica 3 has not read the changes yet: an action it derives from its stale state
        // is refused (compare-and-set on the state's version), never applied over the
        // rollback; the refusal brings it up to date, and the retry applies.
        assert_eq!(state_of(&a, &r3)["mode"], "shadow");
        let stale = admin(&a, &r3, "weights", r#"{"candidate_weight":0.9}"#);
        assert_eq!(
            stale.status,
            409,
            "{}",
            String::from_utf8_lossy(&stale.body)
        );
        assert_eq!(state_of(&a, &r3)["weight_in_force"], json!(0.0));
        let advance = admin(&a, &r3, "canary/advance", "{}");
        assert_eq!(advance.status, 200);
        assert_eq!(advance.json()["canary_step"], 0);
        wait_state(&a, &r1, |s| s["canary_step"] == json!(0));
        let actions = query_ids(&url, "SELECT action FROM admin_actions ORDER BY seq");
        assert_eq!(
            actions.iter().filter(|a| *a == "canary/rollback").count(),
            1,
            "{actions:?}"
        );
        r1.stop();
        r2.stop();
        r3.stop();
    }

    fn pg_ctl(cmd: &str, server: &str) {
        let port = server
            .rsplit_once(':')
            .and_then(|(_, p)| p.split('/').next())
            .expect("URL with a port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/servers/pg.sh");
        let ok = std::process::Command::new(script)
            .args([cmd, port])
            .status()
            .expect("pg.sh");
        assert!(ok.success(), "pg.sh {cmd}");
    }

    fn ready(a: &ureq::Agent, run: &Run) -> u16 {
        a.get(&format!("{}/v2/health/ready", run.base))
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    #[test]
    fn a_killed_database_turns_the_gateway_unready_and_loses_no_answered_request() {
        let Some(server) = server() else { return };
        if std::env::var("QGATE_PG_KILL").is_err() {
            assert!(
                std::env::var("QGATE_REQUIRE_PG").is_err(),
                "QGATE_REQUIRE_PG needs QGATE_PG_KILL=1 (the server is tests/servers/pg.sh's)"
            );
            eprintln!("skipped: set QGATE_PG_KILL=1 when QGATE_PG_URL is tests/servers/pg.sh's");
            return;
        }
        let _one = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        let (url_r, url_u) = (
            fresh_database(&server, "reject"),
            fresh_database(&server, "unlogged"),
        );
        let dir = tempfile::tempdir().expect("tmp");
        let reject = start_pg(dir.path(), &url_r, 100, "");
        let unlogged = start_pg(
            dir.path(),
            &url_u,
            100,
            "on_log_failure = \"serve_unlogged\"\n",
        );
        let a = agent();
        assert_eq!(ready(&a, &reject), 200);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (answers, outage) = std::thread::scope(|sc| {
            let load: Vec<_> = [&reject, &unlogged]
                .into_iter()
                .map(|run| {
                    let stop = &stop;
                    sc.spawn(move || {
                        let a = agent();
                        let mut got = Vec::new();
                        let mut i = 0;
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            let ans = post(
                                &a,
                                &infer_url(run),
                                &[("x-user-id", &format!("u{i}"))],
                                &json_request(None, &sample(i, 1)),
                            );
                            got.push((
                                ans.status,
                                ans.header("x-request-id").unwrap_or("").to_string(),
                            ));
                            i += 1;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        got
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(500));
            pg_ctl("kill", &server);
            let killed = Instant::now();
            // The reject gateway turns unready; the serve_unlogged one stays ready.
            while ready(&a, &reject) != 503 {
                assert!(killed.elapsed() < Duration::from_secs(10), "still ready");
                std::thread::sleep(Duration::from_millis(20));
            }
            let unready_after = killed.elapsed();
            assert_eq!(ready(&a, &unlogged), 200);
            std::thread::sleep(Duration::from_millis(1000));
            pg_ctl("restart", &server);
            let back = Instant::now();
            while ready(&a, &reject) != 200 {
                assert!(back.elapsed() < Duration::from_secs(20), "not ready again");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(500));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let answers: Vec<Vec<(u16, String)>> =
                load.into_iter().map(|h| h.join().expect("load")).collect();
            (answers, unready_after)
        });
        eprintln!("unready {outage:?} after the kill");
        let (r, u) = (&answers[0], &answers[1]);
        // reject: 503s during the outage, and every 200 is in the log.
        assert!(
            r.iter().any(|(s, _)| *s == 503),
            "no 503 while the log was down"
        );
        assert!(r.iter().all(|(s, _)| *s == 200 || *s == 503), "{r:?}");
        let ok: Vec<&String> = r
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, id)| id)
            .collect();
        let logged: HashSet<String> = query_ids(&url_r, "SELECT request_id FROM requests")
            .into_iter()
            .collect();
        assert!(
            ok.iter().all(|id| logged.contains(*id)),
            "an answered request is not logged"
        );
        assert!(
            logged.iter().all(|id| !id.contains('~')),
            "a record logged twice"
        );
        // serve_unlogged: every request answered 200, counted, and written once the
        // database was back (the backlog drains within a few seconds).
        assert!(
            u.iter().all(|(s, _)| *s == 200),
            "serve_unlogged refused a request"
        );
        let metrics = get_text(&a, &format!("{}/metrics", unlogged.base), false);
        let unlogged_n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("qgate_log_unlogged_total{model=\"m\"} "))
            .and_then(|v| v.parse().ok())
            .expect("qgate_log_unlogged_total");
        assert!(unlogged_n > 0, "{metrics}");
        let t = Instant::now();
        loop {
            let logged: HashSet<String> = query_ids(&url_u, "SELECT request_id FROM requests")
                .into_iter()
                .collect();
            if u.iter().all(|(_, id)| logged.contains(id)) {
                assert_eq!(logged.len(), u.len(), "a record logged twice");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the backlog was not written"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let metrics = get_text(&a, &format!("{}/metrics", unlogged.base), false);
        assert!(metrics.contains("qgate_log_backlog 0"), "{metrics}");
        assert!(
            metrics.contains(&format!("qgate_log_written_late_total {unlogged_n}")),
            "{metrics}"
        );
        drop(reject);
        drop(unlogged);
    }
}

/// TLS on the listener with certificates made here by `openssl`: a CA, a server certificate
/// for 127.0.0.1 and a client certificate for mutual TLS.
mod tls {
    use super::*;
    use std::io::{Read, Write};
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

    fn openssl(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes ca.pem, server.pem/.key (SAN 127.0.0.1) and client.pem/.key, all signed by
    /// the CA, into `dir`.
    fn certificates(dir: &Path) {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=qgate test CA",
        ]);
        openssl(dir, &ca);
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(
                dir.join(format!("{who}.ext")),
                format!("basicConstraints=CA:FALSE\n{ext}"),
            )
            .expect("ext");
            let mut req = vec!["req"];
            req.extend(ec);
            let (key, csr, pem, ext) = (
                format!("{who}.key"),
                format!("{who}.csr"),
                format!("{who}.pem"),
                format!("{who}.ext"),
            );
            req.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=qgate test"]);
            openssl(dir, &req);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                ],
            );
        }
    }

    fn tls_agent(dir: &Path, client: bool) -> ureq::Agent {
        let ca =
            Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).expect("ca")).expect("pem");
        let mut tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(vec![ca])));
        if client {
            let cert = Certificate::from_pem(&std::fs::read(dir.join("client.pem")).expect("cert"))
                .expect("pem");
            let key = PrivateKey::from_pem(&std::fs::read(dir.join("client.key")).expect("key"))
                .expect("pem");
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into()
    }

    #[test]
    fn https_answers_equal_plain_ones_and_mutual_tls_guards_the_admin_api() {
        let dir = tempfile::tempdir().expect("tmp");
        certificates(dir.path());
        let extra = "[admin]\ntoken_env = \"TOKEN\"\n\
                     [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n";
        let run = start(dir.path(), extra, Kind::Healthy(1.0), Kind::Healthy(0.9));
        let port = run.base.rsplit(':').next().expect("port").to_string();
        let https = format!("https://127.0.0.1:{port}");
        let x = sample(3, 2);
        // Inference needs no client certificate; the answer is the reference's.
        let a = tls_agent(dir.path(), false);
        let ans = post(
            &a,
            &format!("{https}/v2/models/m/infer"),
            &[],
            &json_request(None, &x),
        );
        assert_eq!(ans.status, 200, "{}", String::from_utf8_lossy(&ans.body));
        assert_eq!(outputs_of(&ans), expected(&x));
        // The admin API: 403 without a client certificate (token or not), 200 with one.
        let auth = format!("Bearer {TOKEN}");
        let without = post(
            &a,
            &format!("{https}/admin/weights"),
            &[("authorization", &auth)],
            br#"{"candidate_weight":0.2}"#,
        );
        assert_eq!(
            without.status,
            403,
            "{}",
            String::from_utf8_lossy(&without.body)
        );
        assert!(String::from_utf8_lossy(&without.body).contains("client certificate"));
        let m = tls_agent(dir.path(), true);
        let with = post(
            &m,
            &format!("{https}/admin/weights"),
            &[("authorization", &auth)],
            br#"{"candidate_weight":0.2}"#,
        );
        assert_eq!(with.status, 200, "{}", String::from_utf8_lossy(&with.body));
        // Outcomes are guarded the same way.
        let id = ans.header("x-request-id").expect("id").to_string();
        let body = json!({"request_id": id, "name": "click", "value": 1}).to_string();
        let url = format!("{https}/v2/models/m/outcome");
        assert_eq!(post(&a, &url, &[], body.as_bytes()).status, 403);
        assert_eq!(post(&m, &url, &[], body.as_bytes()).status, 200);
        // A plaintext client to the TLS port gets a plain 400 that says why, not a hang.
        let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("tcp");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("write");
        let mut text = String::new();
        let _ = tcp.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("use https://"), "{text}");
        // ureq over plain HTTP fails cleanly too (an error, not a hang).
        let plain = agent().get(&format!("{}/v2/health/ready", run.base)).call();
        assert_eq!(plain.map(|r| r.status().as_u16()).ok(), Some(400));
        // The gateway lives on.
        assert_eq!(
            post(
                &a,
                &format!("{https}/v2/models/m/infer"),
                &[],
                &json_request(None, &x)
            )
            .status,
            200
        );
    }

    #[test]
    fn the_grpc_port_speaks_tls_with_the_same_certificate() {
        use qgate_serve::grpc::pb;
        let dir = tempfile::tempdir().expect("tmp");
        certificates(dir.path());
        let text = "listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\nmodel_name = \"m\"\n\
                    mode = \"shadow\"\nbaseline = \"b.onnx\"\ncandidate = \"c.onnx\"\n\
                    shutdown_grace_ms = 2000\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\n";
        let cfg = GatewayConfig::parse(text, &dir.path().join("gateway.toml"), None, &|_| None)
            .expect("config");
        let gw = Gateway::start(
            cfg,
            vec![Backends {
                baseline: model(Kind::Healthy(1.0)),
                candidate: model(Kind::Healthy(0.9)),
            }],
        )
        .expect("start");
        let addr = gw.grpc_addr().expect("grpc");
        let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let x = sample(2, 1);
        let (live, scores, plain) = rt.block_on(async {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .domain_name("localhost");
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .expect("endpoint")
                .tls_config(tls)
                .expect("tls")
                .connect()
                .await
                .expect("TLS connect");
            let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel);
            let live = c
                .server_live(pb::ServerLiveRequest {})
                .await
                .expect("live")
                .into_inner()
                .live;
            let req = pb::ModelInferRequest {
                model_name: "m".into(),
                inputs: vec![pb::model_infer_request::InferInputTensor {
                    name: "x".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 4],
                    contents: Some(pb::InferTensorContents {
                        fp32_contents: x.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let resp = c.model_infer(req).await.expect("infer").into_inner();
            let scores: Vec<f64> = resp.raw_output_contents[0]
                .chunks(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect();
            // A plaintext gRPC client cannot use the TLS port.
            let plain = async {
                let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect()
                    .await?;
                pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch)
                    .server_live(pb::ServerLiveRequest {})
                    .await
                    .map(|_| ())
                    .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            };
            let plain: Result<(), Box<dyn std::error::Error>> =
                tokio::time::timeout(Duration::from_secs(15), async {
                    plain.await.map_err(|e| e.to_string().into())
                })
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            (live, scores, plain)
        });
        assert!(live);
        let xa = Array::from_f32(vec![1, 4], x).expect("shape");
        assert_eq!(scores, forward(&xa, 1.0)[0].to_f64().expect("f"));
        let err = plain.expect_err("plaintext gRPC to a TLS port");
        assert!(!err.to_string().contains("timed out"), "{err}");
        gw.stop_handle().stop();
        gw.wait().expect("stop");
    }

    #[test]
    fn bad_tls_files_are_named_at_start() {
        let dir = tempfile::tempdir().expect("tmp");
        certificates(dir.path());
        std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").expect("write");
        let cases = [
            (
                "cert = \"missing.pem\"\nkey = \"server.key\"\n",
                "missing.pem",
            ),
            (
                "cert = \"empty.pem\"\nkey = \"server.key\"\n",
                "holds no PEM certificate",
            ),
            ("cert = \"server.pem\"\nkey = \"server.pem\"\n", "tls.key"),
            (
                "cert = \"server.pem\"\nkey = \"client.key\"\n",
                "do not make a usable pair",
            ),
            (
                "cert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"empty.pem\"\n",
                "tls.client_ca",
            ),
        ];
        for (tls, needle) in cases {
            let text = format!(
                "listen = \"127.0.0.1:0\"\nmodel_name = \"m\"\nmode = \"shadow\"\nbaseline = \"b.onnx\"\n\
                 candidate = \"c.onnx\"\n[tls]\n{tls}"
            );
            let cfg =
                GatewayConfig::parse(&text, &dir.path().join("gateway.toml"), None, &|_| None)
                    .expect("config");
            let err = Gateway::start(
                cfg,
                vec![Backends {
                    baseline: model(Kind::Healthy(1.0)),
                    candidate: model(Kind::Healthy(1.0)),
                }],
            )
            .err()
            .expect(tls)
            .to_string();
            assert!(err.contains(needle), "{tls}: {err}");
        }
    }
}

#[test]
fn several_models_are_served_routed_administered_and_logged_apart() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = "listen = \"127.0.0.1:0\"\nshutdown_grace_ms = 2000\n\
                [[models]]\nmodel_name = \"digits\"\nmode = \"shadow\"\nbaseline = \"a.onnx\"\ncandidate = \"b.onnx\"\n\
                [[models]]\nmodel_name = \"text\"\nmode = \"ab\"\nbaseline = \"c.onnx\"\ncandidate = \"d.onnx\"\n\
                [models.ab]\ncandidate_weight = 1.0\n\
                [admin]\ntoken_env = \"TOKEN\"\n";
    let env = |k: &str| (k == "TOKEN").then(|| TOKEN.to_string());
    let cfg =
        GatewayConfig::parse(text, &dir.path().join("gateway.toml"), None, &env).expect("config");
    let db = dir.path().join("qgate-log.db");
    let gw = Gateway::start(
        cfg,
        vec![
            Backends {
                baseline: model(Kind::Healthy(1.0)),
                candidate: model(Kind::Healthy(0.9)),
            },
            Backends {
                baseline: model(Kind::Healthy(2.0)),
                candidate: model(Kind::Healthy(3.0)),
            },
        ],
    )
    .expect("start");
    let mut run = Run {
        base: format!("http://{}", gw.addr()),
        gw: Some(gw),
        db: db.clone(),
    };
    let a = agent();
    let x = sample(5, 2);
    let call = |name: &str| {
        post(
            &a,
            &format!("{}/v2/models/{name}/infer", run.base),
            &[("x-user-id", "u1")],
            &json_request(None, &x),
        )
    };
    // Each model answers with its own pair and mode: digits' baseline (shadow), text's
    // candidate (ab at weight 1).
    let d = call("digits");
    assert_eq!((d.status, d.header("x-qgate-arm")), (200, Some("baseline")));
    let text = call("text");
    assert_eq!(
        (text.status, text.header("x-qgate-arm")),
        (200, Some("candidate"))
    );
    let xa = Array::from_f32(vec![2, 4], x.clone()).expect("shape");
    let scores = |ans: &Answer| outputs_of(ans)[0].3.clone();
    assert_eq!(scores(&d), forward(&xa, 1.0)[0].to_f64().expect("f"));
    assert_eq!(scores(&text), forward(&xa, 3.0)[0].to_f64().expect("f"));
    let nope = call("other");
    assert_eq!(nope.status, 404);
    let msg = String::from_utf8_lossy(&nope.body).to_string();
    assert!(msg.contains("'digits'") && msg.contains("'text'"), "{msg}");
    // Admin: by name; without one it names the models (400); the state lists them all.
    let adm = |path: &str, body: &str| {
        post(
            &a,
            &format!("{}/admin/{path}", run.base),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            body.as_bytes(),
        )
    };
    let unnamed = adm("weights", r#"{"candidate_weight":0.5}"#);
    assert_eq!(unnamed.status, 400);
    assert!(String::from_utf8_lossy(&unnamed.body).contains("/admin/models/NAME"));
    assert_eq!(
        adm("models/text/weights", r#"{"candidate_weight":0.0}"#).status,
        200
    );
    assert_eq!(
        adm("models/nope/weights", r#"{"candidate_weight":0.0}"#).status,
        404
    );
    let state: Value =
        serde_json::from_str(&get_text(&a, &format!("{}/admin/state", run.base), true))
            .expect("json");
    assert_eq!(state["models"]["text"]["weight_in_force"], json!(0.0));
    assert_eq!(state["models"]["digits"]["mode"], "shadow");
    let text = call("text");
    assert_eq!(text.header("x-qgate-arm"), Some("baseline"));
    assert_eq!(scores(&text), forward(&xa, 2.0)[0].to_f64().expect("f"));
    // Metrics and log rows per model.
    std::thread::sleep(Duration::from_millis(300));
    let m = get_text(&a, &format!("{}/metrics", run.base), false);
    assert!(
        m.contains("qgate_requests_total{model=\"digits\",arm=\"baseline\",code=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("qgate_requests_total{model=\"text\",arm=\"candidate\",code=\"200\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("qgate_requests_total{model=\"text\",arm=\"baseline\",code=\"200\"} 1"),
        "{m}"
    );
    assert_eq!(
        m.matches("# TYPE qgate_requests_total").count(),
        1,
        "one family header"
    );
    run.stop();
    assert_eq!(count(&db, "model = 'digits' AND shadow_status = 'ok'"), 1);
    assert_eq!(count(&db, "model = 'text'"), 2);
    assert_eq!(
        column(&db, "SELECT model FROM model_state ORDER BY model"),
        vec!["digits".to_string(), "text".to_string()]
    );
}

/// The automatic rollback's decision record in the log.
fn rollback_record(run: &Run) -> Value {
    let rows = column(
        &run.db,
        "SELECT detail FROM admin_actions WHERE action = 'canary/auto-rollback'",
    );
    serde_json::from_str(rows.first().expect("a rollback")).expect("json")
}

/// `n` requests from distinct users (both arms get traffic at a 50 % step).
fn traffic(a: &ureq::Agent, run: &Run, from: usize, n: usize) {
    for u in from..from + n {
        let _ = post(
            a,
            &infer_url(run),
            &[("x-user-id", &format!("user-{u}"))],
            &json_request(None, &sample(u, 1)),
        );
    }
}

fn state(a: &ureq::Agent, run: &Run) -> Value {
    serde_json::from_str(&get_text(a, &format!("{}/admin/state", run.base), true)).expect("json")
}

fn canary_config(dir: &Path, policy: &str) -> String {
    std::fs::write(dir.join("canary.toml"), policy).expect("policy");
    "mode = \"canary\"\n[admin]\ntoken_env = \"TOKEN\"\n[canary]\nsteps = [25, 50, 100]\nauto = true\n\
     policy = \"canary.toml\"\nmin_requests_per_step = 60\nmin_step_seconds = 0.2\n\
     decisions_dir = \"decisions\"\n"
        .to_string()
}

#[test]
fn an_automatic_canary_rolls_back_a_candidate_that_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = canary_config(dir.path(), "min_requests = 30\n");
    let run = start(dir.path(), &cfg, Kind::Healthy(1.0), Kind::Errors);
    let a = agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut from = 0;
    while state(&a, &run)["canary_step"] != Value::Null {
        assert!(std::time::Instant::now() < deadline, "{}", state(&a, &run));
        traffic(&a, &run, from, 50);
        from += 50;
        std::thread::sleep(Duration::from_millis(100));
    }
    let actions = column(
        &run.db,
        "SELECT action FROM admin_actions WHERE action LIKE 'canary/auto%'",
    );
    // Holds while the evidence gathers, then the rollback; never a promotion.
    assert_eq!(
        actions.last().map(String::as_str),
        Some("canary/auto-rollback"),
        "{actions:?}"
    );
    assert!(
        actions.iter().all(|a| a != "canary/auto-promote"),
        "{actions:?}"
    );
    let detail = rollback_record(&run);
    assert_eq!(detail["verdict"], "fail");
    assert_eq!(detail["weight_after"], 0.0);
    let reason = detail["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("Rolled back at step") && reason.contains("max_error_rate_increase"),
        "{reason}"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("decisions"))
        .expect("decisions")
        .collect();
    assert_eq!(files.len(), actions.len());
    // A restart resumes at the recorded state and never re-promotes it.
    drop(run);
    let run = start(dir.path(), &cfg, Kind::Healthy(1.0), Kind::Healthy(1.0));
    traffic(&a, &run, from, 400);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(state(&a, &run)["canary_step"], Value::Null);
    let after = column(
        &run.db,
        "SELECT action FROM admin_actions WHERE action LIKE 'canary/auto%'",
    );
    assert_eq!(after, actions);
}

#[test]
fn an_automatic_canary_promotes_an_equal_candidate_to_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = canary_config(
        dir.path(),
        "min_requests = 30\nmax_error_rate_increase = 0.05\n",
    );
    let run = start(dir.path(), &cfg, Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut from = 0;
    while state(&a, &run)["promoted"] != Value::Bool(true) {
        assert!(std::time::Instant::now() < deadline, "{}", state(&a, &run));
        traffic(&a, &run, from, 50);
        from += 50;
        std::thread::sleep(Duration::from_millis(100));
    }
    let actions = column(&run.db, "SELECT action FROM admin_actions WHERE action LIKE 'canary/auto%' AND action <> 'canary/auto-hold'");
    assert_eq!(
        actions,
        ["canary/auto-promote", "canary/auto-complete"],
        "{actions:?}"
    );
}

#[test]
fn an_automatic_canary_without_traffic_never_moves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = canary_config(dir.path(), "min_requests = 30\n");
    let run = start(dir.path(), &cfg, Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    std::thread::sleep(Duration::from_millis(1500));
    let s = state(&a, &run);
    assert_eq!(
        (s["canary_step"].as_u64(), s["holds"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert!(column(
        &run.db,
        "SELECT action FROM admin_actions WHERE action LIKE 'canary/auto%'"
    )
    .is_empty());
    // The analysis endpoint says why: no requests in the step.
    let v: Value = serde_json::from_str(&get_text(
        &a,
        &format!("{}/v2/models/m/analysis", run.base),
        true,
    ))
    .expect("json");
    assert_eq!(v["verdict"], "invalid", "{v}");
    assert_eq!(v["requests"], 0);
    // An operator's action is a decision record too.
    assert_eq!(admin(&a, &run, "canary/hold", "").status, 200);
    let files: Vec<String> = std::fs::read_dir(dir.path().join("decisions"))
        .expect("decisions")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("-m-canary-hold.json"), "{files:?}");
}

#[test]
fn a_candidate_with_five_points_more_errors_is_rolled_back_by_the_second_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("canary.toml"), "min_requests = 30\n").expect("policy");
    let cfg = "mode = \"canary\"\n[admin]\ntoken_env = \"TOKEN\"\n[canary]\nsteps = [10, 25, 50, 100]\n\
               auto = true\npolicy = \"canary.toml\"\nmin_requests_per_step = 100\nmin_step_seconds = 0.2\n\
               max_holds = 60\n";
    let run = start(dir.path(), cfg, Kind::Healthy(1.0), Kind::FailsPercent(5));
    let a = agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (mut from, mut highest) = (0, 0);
    loop {
        let s = state(&a, &run);
        if s["canary_step"] == Value::Null {
            break;
        }
        highest = highest.max(s["canary_step"].as_u64().unwrap_or(0));
        assert!(std::time::Instant::now() < deadline, "{s}");
        traffic(&a, &run, from, 100);
        from += 100;
    }
    // Steps are 0-based: rolled back at the first or the second step, never promoted past it.
    assert!(highest <= 1, "reached step {}", highest + 1);
    let detail = rollback_record(&run);
    assert_eq!(detail["verdict"], "fail", "{detail}");
    let crit = detail["criteria"]
        .as_array()
        .expect("criteria")
        .iter()
        .find(|c| c["key"] == "max_error_rate_increase")
        .expect("criterion")
        .clone();
    assert_eq!(crit["status"], "fail", "{crit}");
}

/// Argo Rollouts' conditions in deploy/rollouts/argo-analysis-template.yaml, evaluated on
/// `result` for the forms they use: `result.PATH == "STRING"` joined by `||` or `&&`.
fn argo_condition(template: &str, key: &str, result: &Value) -> bool {
    let line = template
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in the template"))
        .trim();
    let term = |t: &str| {
        let (path, want) = t.split_once("==").expect("a comparison");
        let path = path.trim().strip_prefix("result.").expect("result.PATH");
        let got = path.split('.').fold(result, |v, k| &v[k]);
        got.as_str() == Some(want.trim().trim_matches('"'))
    };
    line.split("||")
        .any(|alt| alt.split("&&").all(|t| term(t.trim())))
}

#[test]
fn the_analysis_endpoint_serves_argo_rollouts_and_flagger() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("canary.toml"),
        "min_requests = 30\nmax_error_rate_increase = 0.05\n",
    )
    .expect("policy");
    // The controller waits an hour: the endpoint is read as a rollout tool reads it.
    let cfg = "mode = \"canary\"\n[admin]\ntoken_env = \"TOKEN\"\n[canary]\nsteps = [50, 100]\n\
               auto = true\npolicy = \"canary.toml\"\nmin_step_seconds = 3600\n";
    let run = start(dir.path(), cfg, Kind::Healthy(1.0), Kind::Healthy(1.0));
    let a = agent();
    let url = format!("{}/v2/models/m/analysis", run.base);
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/rollouts/argo-analysis-template.yaml"),
    )
    .expect("template");
    // No traffic yet: invalid, which the template's failureCondition catches; Flagger's
    // webhook (token in the body's metadata, as Flagger sends it) gets 409.
    let empty: Value = serde_json::from_str(&get_text(&a, &url, true)).expect("json");
    assert_eq!(empty["verdict"], "invalid");
    assert_valid_answer(&empty);
    assert!(argo_condition(&template, "failureCondition", &empty));
    let flagger = |a: &ureq::Agent| {
        post(
            a,
            &url,
            &[],
            format!(
                "{{\"name\": \"digits\", \"metadata\": {{\"authorization\": \"Bearer {TOKEN}\"}}}}"
            )
            .as_bytes(),
        )
        .status
    };
    assert_eq!(flagger(&a), 409);
    traffic(&a, &run, 0, 1500);
    let v: Value = serde_json::from_str(&get_text(&a, &url, true)).expect("json");
    assert_eq!(v["verdict"], "pass", "{v}");
    assert_valid_answer(&v);
    assert!(argo_condition(&template, "successCondition", &v));
    assert!(!argo_condition(&template, "failureCondition", &v));
    assert_eq!(flagger(&a), 200);
    // Without the token: 401.
    assert_eq!(post(&a, &url, &[], b"{}").status, 401);
}

/// A webhook receiver on a free port: the bodies POSTed to it.
fn hook() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut r = BufReader::new(stream);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice(&body) {
                    sink.lock().expect("lock").push(v);
                }
            }
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn each_automatic_decision_is_posted_to_the_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, got) = hook();
    let cfg =
        canary_config(dir.path(), "min_requests = 30\n") + &format!("notify_url = \"{url}\"\n");
    let run = start(dir.path(), &cfg, Kind::Healthy(1.0), Kind::Errors);
    let a = agent();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut from = 0;
    while state(&a, &run)["canary_step"] != Value::Null {
        assert!(std::time::Instant::now() < deadline);
        traffic(&a, &run, from, 50);
        from += 50;
        std::thread::sleep(Duration::from_millis(100));
    }
    let wait = std::time::Instant::now() + Duration::from_secs(10);
    while got
        .lock()
        .expect("lock")
        .iter()
        .all(|v| v["action"] != "canary/auto-rollback")
    {
        assert!(
            std::time::Instant::now() < wait,
            "{:?}",
            got.lock().expect("lock")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let posted = got.lock().expect("lock").clone();
    let logged = column(
        &run.db,
        "SELECT detail FROM admin_actions WHERE action LIKE 'canary/auto%'",
    );
    assert_eq!(posted.len(), logged.len());
    let last: Value = serde_json::from_str(logged.last().expect("a decision")).expect("json");
    assert_eq!(posted.last(), Some(&last));
}

/// docs/analysis.schema.json, the published schema of the analysis endpoint's answer.
fn answer_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/analysis.schema.json")
}

fn assert_valid_answer(v: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(answer_schema_path()).expect("schema"))
            .expect("json");
    let validator = jsonschema::validator_for(&schema).expect("a schema");
    let errors: Vec<String> = validator
        .iter_errors(v)
        .take(5)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_published_analysis_schema_is_what_the_type_generates() {
    let text =
        serde_json::to_string_pretty(&qgate_serve::canary::answer_schema()).expect("json") + "\n";
    if std::env::var("QGATE_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(answer_schema_path(), &text).expect("write");
        return;
    }
    let published = std::fs::read_to_string(answer_schema_path()).unwrap_or_default();
    assert!(
        published == text,
        "docs/analysis.schema.json differs from what AnalysisAnswer generates: \
         QGATE_UPDATE_SNAPSHOTS=1 cargo test -p qgate-serve --test gateway published_analysis"
    );
}

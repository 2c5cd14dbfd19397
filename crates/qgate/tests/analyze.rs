//! `qgate analyze` on logs `qgate serve` wrote: the bundled digits pair served in shadow mode
//! over every test input gives the same top-1 agreement and KL as `qgate compare` on the
//! same inputs with the same runtime; the exported production inputs are a data set
//! `compare` reads; the flags' errors name what was expected.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;

struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qgate"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("first line: {line}"))
        .to_string();
    Served { child, addr }
}

fn qgate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_qgate"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// `qgate compare` of the pair on `data`, one sample per call (as the gateway's requests
/// were); its report.
fn compare(b: &str, c: &str, data: &str, out: &Path) -> Value {
    let (code, text) = qgate(&[
        "compare",
        "--baseline",
        b,
        "--candidate",
        c,
        "--data",
        data,
        "--batch-size",
        "1",
        "--no-runtime-check",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 1, "{text}");
    report(out)
}

/// Runs `qgate analyze --log LOG` into `out` until every one of `n` requests is logged and
/// no mirrored copy is pending; the last report.
fn settled(log: &str, out: &Path, n: usize) -> Value {
    let start = Instant::now();
    loop {
        let (code, text) = qgate(&["analyze", "--log", log, "--out", out.to_str().unwrap()]);
        assert!(code != 2, "{text}");
        let r = report(out);
        let pending = r["online"]["shadow"]["copies"]["pending"]
            .as_u64()
            .unwrap_or(0);
        if r["online"]["requests"].as_u64() == Some(n as u64) && pending == 0 {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shadow_log_of_the_digits_pair_gives_compares_agreement_and_kl() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("log.db");
    shadow_pair_agrees_with_compare(dir.path(), "sqlite://log.db", db.to_str().unwrap());
}

#[test]
fn the_same_on_a_postgresql_log() {
    let Some(url) = common::pg_database("analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    shadow_pair_agrees_with_compare(dir.path(), &url, &url);
}

/// The digits MLP pair (tract) served in shadow mode over every test sample, one request
/// each, with its label posted as an outcome; then `qgate analyze` on the log against
/// `qgate compare` on the same samples.
fn shadow_pair_agrees_with_compare(dir: &Path, log_in_config: &str, log: &str) {
    let (b, c) = (common::fx("mlp_fp32.onnx"), common::fx("mlp_int8_qdq.onnx"));
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nmodel_name = \"digits\"\nmode = \"shadow\"\nbaseline = \"{b}\"\ncandidate = \"{c}\"\n[log]\nurl = \"{log_in_config}\"\noutputs = \"full\"\nstore_inputs = true\n"
        ),
    )
    .unwrap();
    let data = common::fx("test.npz");
    let file = std::fs::File::open(&data).unwrap();
    let members = qgate_data::npy::read_npz(file).unwrap();
    let get = |k: &str| {
        let m = members
            .iter()
            .find(|(n, _)| n == k || n == &format!("{k}.npy"));
        m.unwrap().1.as_ref().unwrap().clone()
    };
    let (x, labels) = (get("x"), get("label"));
    let (xv, yv) = (x.to_f32().unwrap(), labels.data.to_i64().unwrap());
    let row = x.row_len();
    let n = x.n_rows();
    let served = serve(&cfg);
    let base = format!("http://{}/v2/models/digits", served.addr);
    let meta: Value = serde_json::from_str(
        &ureq::get(&base)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let input = meta["inputs"][0]["name"].as_str().unwrap().to_string();
    for i in 0..n {
        let body = json!({"id": format!("s{i}"), "inputs": [{"name": input, "datatype": "FP32",
            "shape": [1, row], "data": &xv[i * row..(i + 1) * row]}]});
        let r: Value = serde_json::from_str(
            &ureq::post(format!("{base}/infer"))
                .send(body.to_string())
                .unwrap()
                .into_body()
                .read_to_string()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(r["id"], format!("s{i}"));
        ureq::post(format!("{base}/outcome"))
            .send(
                json!({"request_id": format!("s{i}"), "name": "label", "value": yv[i]}).to_string(),
            )
            .unwrap();
    }
    settled(log, &dir.join("settled"), n);
    drop(served);

    let out = dir.join("analysis");
    let export = dir.join("prod.npz");
    let (code, text) = qgate(&[
        "analyze",
        "--log",
        log,
        "--out",
        out.to_str().unwrap(),
        "--export-inputs",
        export.to_str().unwrap(),
        "--window",
        "100req",
    ]);
    let a = report(&out);
    assert_eq!(a["verdict"], "pass", "{text}");
    assert_eq!(code, 0, "{text}");
    let s = &a["online"]["shadow"];
    assert_eq!(s["paired"], n as u64);
    assert_eq!(s["outputs_logged"], "full");
    common::assert_valid_report(&out);

    let cmp = compare(&b, &c, &data, &dir.join("compare"));
    let cc = &cmp["comparison"];
    let close = |x: &Value, y: &Value, what: &str| {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-12 * y.abs().max(1.0),
            "{what}: analyze {x}, compare {y}"
        );
    };
    close(
        &s["top1_agreement"],
        &cc["top1_agreement"],
        "top-1 agreement",
    );
    close(&s["kl_mean"], &cc["kl"]["mean"], "KL mean");
    close(&s["kl"]["p99"], &cc["kl"]["p99"], "KL p99");
    close(
        &s["top_k_agreement"],
        &cc["top_k_agreement"],
        "top-5 agreement",
    );
    // The labels posted as outcomes give each model's accuracy on the same requests.
    let l = &s["labels"];
    assert_eq!(l["n"], n as u64);
    close(
        &l["baseline_accuracy"],
        &cmp["baseline"]["accuracy"],
        "baseline accuracy",
    );
    close(
        &l["candidate_accuracy"],
        &cmp["candidate"]["accuracy"],
        "candidate accuracy",
    );
    // Windows of 100 requests, each with its agreement.
    let windows = a["online"]["windows"].as_array().unwrap();
    assert_eq!(windows.len(), n.div_ceil(100));
    assert_eq!(windows[0]["requests"], 100);
    for f in ["report.md", "report.html", "junit.xml"] {
        assert!(out.join(f).is_file(), "{f}");
    }

    // Production back to the lab: the exported inputs are a data set compare reads, with
    // the same answers.
    let e = &a["exported"];
    assert_eq!(
        (e["samples"].as_u64(), e["labelled"].as_u64()),
        (Some(n as u64), Some(n as u64))
    );
    let r = compare(&b, &c, export.to_str().unwrap(), &dir.join("again"));
    close(
        &r["comparison"]["top1_agreement"],
        &cc["top1_agreement"],
        "agreement on the export",
    );
    close(
        &r["candidate"]["accuracy"],
        &cmp["candidate"]["accuracy"],
        "accuracy on the export",
    );
    let disagreements = e["disagreements"].as_u64().unwrap();
    let want = ((1.0 - cc["top1_agreement"].as_f64().unwrap()) * n as f64).round() as u64;
    assert_eq!(disagreements, want);
}

#[test]
fn analyze_flags_are_checked_and_name_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = out.to_str().unwrap();
    for (args, want) in [
        (vec!["analyze", "--out", o], "missing --log"),
        (
            vec!["analyze", "--log", "nope.db", "--out", o],
            "no such log file",
        ),
        (
            vec![
                "analyze",
                "--log",
                "x.db",
                "--since",
                "yesterday",
                "--out",
                o,
            ],
            "--since 'yesterday': expected RFC 3339",
        ),
        (
            vec![
                "analyze",
                "--log",
                "x.db",
                "--window",
                "5 parsecs",
                "--out",
                o,
            ],
            "--window",
        ),
        (
            vec![
                "analyze", "--log", "x.db", "--since", "-1h", "--until", "-2h", "--out", o,
            ],
            "--since must be before --until",
        ),
        (
            vec![
                "analyze",
                "--log",
                "x.db",
                "--export-inputs",
                "a.csv",
                "--out",
                o,
            ],
            "FILE.npz",
        ),
    ] {
        let (code, text) = qgate(&args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(want), "{args:?}: {text}");
    }
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "[outcomes.purchase]\nkind = \"ordinal\"\n").unwrap();
    let (code, text) = qgate(&[
        "analyze",
        "--log",
        "x.db",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("[outcomes.purchase]") && text.contains("\"binary\" or \"continuous\""),
        "{text}"
    );
    assert_eq!(report(&out)["verdict"], "error");
}

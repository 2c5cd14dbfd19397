//! `qgate compare` across runtimes: ONNX Runtime (`ort:`), a KServe V2 server (`http://`),
//! saved predictions (`preds:`) and `--save-outputs`, cross-runtime parity reports and the
//! deployment-runtime warning. ORT and V2 parts follow the rules of the runtime crate's
//! tests: they need `ORT_DYLIB_PATH`/`QGATE_TEST_PYTHON` and `QGATE_V2_URL` (set by
//! `.ci/run`) and are required when `QGATE_REQUIRE_ORT=1` / `QGATE_REQUIRE_V2=1`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

mod common;
#[path = "../../../tests/reference/ort_refs.rs"]
mod ort_refs;

use common::fx;
use serde_json::Value;

fn ort_lib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let python = std::env::var("QGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    match qgate_runtime::locate_onnxruntime(None, None, &python) {
        Ok(lib) => Some(lib.path),
        Err(e) if std::env::var("QGATE_REQUIRE_ORT").is_ok_and(|v| v == "1") => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping ONNX Runtime CLI tests: {e}");
            None
        }
    }
}

/// The test server is one MLServer process; its `slow` model stalls every other request,
/// so the tests that use it take turns.
static SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn server_turn() -> std::sync::MutexGuard<'static, ()> {
    SERVER.lock().unwrap_or_else(|e| e.into_inner())
}

fn v2_url() -> Option<String> {
    match std::env::var("QGATE_V2_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("QGATE_REQUIRE_V2").is_ok_and(|v| v == "1") => {
            panic!("QGATE_V2_URL is not set")
        }
        _ => None,
    }
}

/// Runs `qgate compare ARGS --out TMP`; returns exit code, report.json, stderr and the dir.
fn compare(args: &[&str]) -> (i32, Value, String, tempfile::TempDir) {
    let run = common::qgate("compare", args, &[]);
    (run.code, run.json_or_null(), run.stderr, run.out)
}

#[test]
fn same_int8_model_on_tract_and_onnxruntime_reports_runtime_disagreement() {
    let Some(lib) = ort_lib() else { return };
    let lib = lib.display().to_string();
    let (code, r, err, _out) = compare(&[
        "--baseline",
        &fx("cnn_int8_qdq.onnx"),
        "--candidate",
        &format!("ort:{}", fx("cnn_int8_qdq.onnx")),
        "--data",
        &fx("test.npz"),
        "--ort-lib",
        &lib,
        "--deployment-runtime",
        "onnxruntime",
    ]);
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(r["baseline"]["runtime"]["runtime"], "tract");
    assert_eq!(r["candidate"]["runtime"]["runtime"], "onnxruntime");
    assert_eq!(
        r["baseline"]["model"]["sha256"],
        r["candidate"]["model"]["sha256"]
    );
    let kinds: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"cross_runtime"), "{kinds:?}");
    // The tract side is not the declared deployment runtime; the ORT side is.
    let deploy: Vec<&Value> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["kind"] == "not_deployment_runtime")
        .collect();
    assert_eq!(deploy.len(), 1);
    assert!(deploy[0]["message"].as_str().unwrap().contains("baseline"));
    // Whether tract and ORT's fused kernels differ depends on the CPU (on AVX2 they differ
    // by up to 17 quantization steps of the logits, on AVX-512 VNNI not at all), so only what
    // every conforming pair guarantees is asserted: the divergence is measured and finite,
    // and the predictions agree.
    let logits = &r["comparison"]["divergence"]["logits"];
    assert!(logits["max_abs"].as_f64().unwrap().is_finite(), "{logits}");
    assert!(
        r["comparison"]["top1_agreement"].as_f64().unwrap() >= 0.99,
        "{}",
        r["comparison"]
    );
}

#[test]
fn contrib_op_model_runs_in_onnxruntime() {
    let Some(lib) = ort_lib() else { return };
    let lib = lib.display().to_string();
    let (code, r, err, _out) = compare(&[
        "--baseline",
        &format!("ort:{}", fx("cnn_fp32.onnx")),
        "--candidate",
        &format!("ort:{}", fx("cnn_int8_qop_contrib.onnx")),
        "--data",
        &fx("test.npz"),
        "--ort-lib",
        &lib,
        "--top-k",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    // The reference accuracy from onnxruntime on this machine (its fused kernels are CPU
    // dependent; reference.json holds the generator machine's figure).
    let Some(refs) = ort_refs::onnxruntime_outputs(
        std::path::Path::new(&fx("test.npz")),
        &[PathBuf::from(fx("cnn_int8_qop_contrib.onnx"))],
    ) else {
        return;
    };
    let logits = &refs.arrays["cnn_int8_qop_contrib__logits"];
    let labels = qgate_data::load_npz(std::path::Path::new(&fx("test.npz")), &Default::default())
        .unwrap()
        .labels
        .unwrap();
    let values = logits.to_f64().unwrap();
    let c = logits.row_len();
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, &l)| {
            qgate_core::metrics::argmax(&values[i * c..(i + 1) * c]) == Some(l as usize)
        })
        .count();
    let want = correct as f64 / labels.len() as f64;
    assert_eq!(r["candidate"]["accuracy"].as_f64().unwrap(), want);
    assert_eq!(
        r["candidate"]["runtime"]["settings"]["execution_provider"],
        "cpu"
    );
}

/// `compare cnn_fp32 cnn_int8_qdq --save-outputs DIR`: the directory and the report.
fn saved_example_outputs() -> (tempfile::TempDir, Value) {
    let saved = tempfile::tempdir().unwrap();
    let (code, report, err, _o) = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_int8_qdq.onnx"),
        "--data",
        &fx("test.npz"),
        "--save-outputs",
        saved.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    (saved, report)
}

#[test]
fn saved_outputs_replay_as_predictions() {
    let (saved, first) = saved_example_outputs();
    let preds = |side: &str| {
        format!(
            "preds:{}",
            saved.path().join(format!("{side}.npz")).display()
        )
    };
    // Replayed by sample id, on a shuffled subset: the same figures for those samples.
    let (code, again, err, _o) = compare(&[
        "--baseline",
        &preds("baseline"),
        "--candidate",
        &preds("candidate"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(code, 0, "{err}");
    for key in [
        "accuracy_delta",
        "mcnemar_p",
        "negative_flips",
        "top1_agreement",
    ] {
        assert_eq!(again["comparison"][key], first["comparison"][key], "{key}");
    }
    assert_eq!(
        again["comparison"]["kl"]["mean"],
        first["comparison"]["kl"]["mean"]
    );
    assert_eq!(again["baseline"]["runtime"]["runtime"], "saved predictions");
    let (code, subset, err, _o) = compare(&[
        "--baseline",
        &preds("candidate"),
        "--candidate",
        &fx("cnn_int8_qdq.onnx"),
        "--data",
        &fx("test.npz"),
        "--limit",
        "100",
        "--seed",
        "5",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(subset["data"]["n_samples"], 100);
    assert_eq!(subset["comparison"]["divergence"]["logits"]["max_abs"], 0.0);
}

#[test]
fn predictions_missing_a_sample_are_an_error_naming_it() {
    let saved = tempfile::tempdir().unwrap();
    let (code, _, err, _o) = compare(&[
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &fx("mlp_fp32.onnx"),
        "--data",
        &fx("test.npz"),
        "--limit",
        "10",
        "--save-outputs",
        saved.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err, _o) = compare(&[
        "--baseline",
        &format!("preds:{}", saved.path().join("baseline.npz").display()),
        "--candidate",
        &fx("mlp_fp32.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no saved output for sample id"), "{err}");
}

#[test]
fn a_model_served_over_kserve_v2_is_compared_like_a_file() {
    let Some(url) = v2_url() else { return };
    let _turn = server_turn();
    let (code, r, err, out) = compare(&[
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &format!("{url}/v2/models/mlp_int8_dynamic"),
        "--data",
        &fx("test.npz"),
        "--batch-size",
        "540",
        "--top-k",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["candidate"]["runtime"]["runtime"], "kserve-v2");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fx("reference.json")).unwrap()).unwrap();
    let want = &reference["pairs"]["mlp_fp32__vs__mlp_int8_dynamic"];
    assert_eq!(
        r["comparison"]["mcnemar_p"].as_f64(),
        want["mcnemar_p"].as_f64()
    );
    assert_eq!(r["comparison"]["negative_flips"], want["negative_flips"]);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("kserve-v2"));
    let (code, _, err, _o) = compare(&[
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &format!("{url}/v2/models/slow"),
        "--data",
        &fx("test.npz"),
        "--limit",
        "4",
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("timeout"), "{err}");
}

/// Runs `qgate bench ARGS --out TMP` with short durations.
fn bench(args: &[&str]) -> (i32, Value, String, tempfile::TempDir) {
    let run = common::qgate(
        "bench",
        args,
        &[
            "--duration",
            "0.5",
            "--rounds",
            "4",
            "--warmup-time",
            "0.1",
            "--sweep-duration",
            "0.2",
            "--batch-sizes",
            "1,8",
            "--concurrency",
            "1,2",
            "--load-fractions",
            "0.5",
            "--offline-batch",
            "none",
            "--no-nvml",
        ],
    );
    (run.code, run.json_or_null(), run.stderr, run.out)
}

fn assert_bench_figures(r: &Value, runtime: &str) {
    let p = &r["performance"];
    for side in ["baseline", "candidate"] {
        assert_eq!(p[side]["runtime"]["runtime"], runtime, "{side}");
        assert!(p[side]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
        assert!(p[side]["throughput_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(p[side]["output_check"]["mismatched_batches"], 0, "{side}");
        let conc = &p["sweeps"]["concurrency"];
        assert!(
            conc[1][side]["samples_per_s"].as_f64().unwrap_or(0.0) > 0.0,
            "{side}: two requests in flight: {}",
            p["sweeps"]["skipped"]
        );
    }
    assert!(p["comparison"]["speedup"].as_f64().unwrap() > 0.0);
    assert_eq!(r["gate"]["verdict"], "pass", "{}", r["summary"]);
}

#[test]
fn bench_runs_on_onnxruntime_including_contrib_ops() {
    let Some(lib) = ort_lib() else { return };
    let lib = lib.display().to_string();
    let (code, r, err, _out) = bench(&[
        "--baseline",
        &format!("ort:{}", fx("cnn_fp32.onnx")),
        "--candidate",
        &format!("ort:{}", fx("cnn_int8_qop_contrib.onnx")),
        "--data",
        &fx("test.npz"),
        "--ort-lib",
        &lib,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_bench_figures(&r, "onnxruntime");
    // ONNX Runtime on the CPU is deterministic: the check is exact.
    assert_eq!(
        r["performance"]["candidate"]["output_check"]["tolerance"],
        "exact"
    );
}

#[test]
fn bench_runs_against_a_kserve_v2_server() {
    let Some(url) = v2_url() else { return };
    let _turn = server_turn();
    let (code, r, err, _out) = bench(&[
        "--baseline",
        &format!("{url}/v2/models/cnn_fp32"),
        "--candidate",
        &format!("{url}/v2/models/cnn_int8_qdq"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_bench_figures(&r, "kserve-v2");
    let p = &r["performance"];
    // Behind a server the check allows float32 reordering, and there is no model file.
    assert_eq!(
        p["candidate"]["output_check"]["tolerance"],
        "float32_reordering"
    );
    assert!(p["candidate"]["model_bytes"].is_null());
}

#[test]
fn models_written_by_sensitivity_load_in_onnxruntime() {
    let Some(lib) = ort_lib() else { return };
    let lib = lib.display().to_string();
    let run = common::qgate(
        "sensitivity",
        &[
            "--model",
            &fx("sens_cnn_fragile_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--calibration",
            &fx("calib.npz"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mixed = run.out.path().join("mixed.onnx").display().to_string();
    // The same file in tract and in ONNX Runtime (node by node is what tract matches;
    // fused kernels may differ by a few samples, so only loading and agreement are asked).
    let (code, r, err, _o) = compare(&[
        "--baseline",
        &mixed,
        "--candidate",
        &format!("ort:{mixed}"),
        "--data",
        &fx("test.npz"),
        "--ort-lib",
        &lib,
    ]);
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(r["candidate"]["runtime"]["runtime"], "onnxruntime");
    assert!(r["comparison"]["top1_agreement"].as_f64().unwrap() > 0.95);
}

#[test]
fn preds_npy_equals_preds_npz_equals_the_live_model() {
    // `np.save("logits.npy", out)`: one array, rows in the data file's order.
    let (saved, live) = saved_example_outputs();
    let npz = saved.path().join("candidate.npz");
    let outputs = qgate_data::load_npz(&npz, &qgate_data::ArrayKeys::default()).unwrap();
    let npy = saved.path().join("logits.npy");
    std::fs::write(&npy, qgate_data::npy::encode_npy(&outputs.arrays["logits"])).unwrap();
    let spec = |p: &std::path::Path| format!("preds:{}", p.display());
    let run = |candidate: &str, extra: &[&str]| {
        let mut args = vec![
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            candidate,
            "--data",
            &fx("test.npz"),
        ]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        compare(&args)
    };
    let (code, from_npz, err, _o) = run(&spec(&npz), &[]);
    assert_eq!(code, 0, "{err}");
    let (code, from_npy, err, _o) = run(&spec(&npy), &[]);
    assert_eq!(code, 0, "{err}");
    for key in [
        "accuracy_delta",
        "mcnemar_p",
        "negative_flips",
        "top1_agreement",
    ] {
        assert_eq!(
            from_npz["comparison"][key], live["comparison"][key],
            "{key}"
        );
        assert_eq!(
            from_npy["comparison"][key], live["comparison"][key],
            "{key}"
        );
    }
    assert_eq!(
        from_npy["comparison"]["divergence"]["logits"],
        live["comparison"]["divergence"]["logits"]
    );
    assert_eq!(
        from_npy["candidate"]["accuracy"],
        live["candidate"]["accuracy"]
    );
    // Rows are matched by their position in the file, before --limit/--seed pick samples.
    let (code, subset, err, _o) = run(&spec(&npy), &["--limit", "100", "--seed", "5"]);
    assert_eq!(code, 0, "{err}");
    let (_, live_subset, _, _o) = run(&fx("cnn_int8_qdq.onnx"), &["--limit", "100", "--seed", "5"]);
    assert_eq!(
        subset["candidate"]["accuracy"],
        live_subset["candidate"]["accuracy"]
    );
    assert_eq!(
        subset["comparison"]["divergence"]["logits"],
        live_subset["comparison"]["divergence"]["logits"]
    );
    // Another row count is an error naming both counts; another format names the accepted ones.
    let short = saved.path().join("short.npy");
    std::fs::write(
        &short,
        qgate_data::npy::encode_npy(&outputs.arrays["logits"].slice_rows(0, 539)),
    )
    .unwrap();
    let (code, _, err, _o) = run(&spec(&short), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("539") && err.contains("540"), "{err}");
    let txt = saved.path().join("logits.txt");
    std::fs::write(&txt, "1 2 3").unwrap();
    let (code, _, err, _o) = run(&spec(&txt), &[]);
    assert_eq!(code, 2);
    assert!(err.contains(".npy") && err.contains(".npz"), "{err}");
}

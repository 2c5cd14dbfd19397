//! Models as toolchains export them (fixtures/digits/forms, written by
//! fixtures/gen/export_forms.py): Constant-node weights at opset 11 and 12, unnamed nodes,
//! external data. On every form `sensitivity`, `compare` and `inspect` work; sensitivity's
//! weight scales equal onnxruntime.quantization's (per tensor where the opset stays below 13,
//! per channel after an upgrade), its mixed model's accuracy in onnxruntime (node by node)
//! is within one sample of what the report claims, and its exclusion lists name nodes of the
//! model it wrote.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{fx, qgate};
use qgate_runtime::{load, LoadOptions, ModelSpec};
use serde_json::Value;

const FORMS: [&str; 4] = [
    "cnn_constants_op11",
    "cnn_logits_op12",
    "cnn_unnamed",
    "cnn_external",
];

fn form(name: &str) -> String {
    fx(&format!("forms/{name}.onnx"))
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fx("forms/reference.json")).unwrap()).unwrap()
}

/// onnxruntime, node by node (the figures the report claims are tract's, which follows the
/// operator specs), or `None` when this machine has none and it is not required.
fn ort_options() -> Option<LoadOptions> {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let python = std::env::var("QGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    match qgate_runtime::locate_onnxruntime(None, env.as_deref(), &python) {
        Ok(_) => Some(LoadOptions {
            ort_env_path: env,
            python,
            threads: Some(1),
            ort_optimize: false,
            ..LoadOptions::default()
        }),
        Err(e) if std::env::var("QGATE_REQUIRE_ORT").is_ok_and(|v| v == "1") => panic!("{e}"),
        Err(e) => {
            eprintln!("skipping the onnxruntime part: {e}");
            None
        }
    }
}

/// Correct predictions of `model` on test.npz in onnxruntime.
fn ort_correct(model: &Path, opts: &LoadOptions) -> usize {
    let spec = ModelSpec::parse(&format!("ort:{}", model.display())).unwrap();
    let mut m = load(&spec, opts).unwrap();
    let data = qgate_data::load_npz(Path::new(&fx("test.npz")), &Default::default()).unwrap();
    let out = m.run(&[data.arrays["image"].clone()]).unwrap();
    let logits = out[0].to_f64().unwrap();
    let c = out[0].row_len();
    data.labels
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, &y)| {
            qgate_core::metrics::argmax(&logits[i * c..(i + 1) * c]) == Some(y as usize)
        })
        .count()
}

/// The float values of initializer `name` of the ONNX file at `path`.
fn initializer(path: &Path, name: &str) -> Vec<f32> {
    let m = qgate_runtime::read_onnx(path).unwrap();
    let g = m.graph.unwrap();
    let t = g.initializer.iter().find(|t| t.name == name).unwrap();
    if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// `qgate compare` of two fixture-relative models on test.npz, plus `extra`.
fn compare(baseline: &str, candidate: &str, extra: &[&str]) -> common::Run {
    let data = fx("test.npz");
    let mut args = vec![
        "--baseline",
        baseline,
        "--candidate",
        candidate,
        "--data",
        &data,
    ];
    args.extend_from_slice(extra);
    qgate("compare", &args, &[])
}

fn node_names(path: &Path) -> Vec<String> {
    let m = qgate_runtime::read_onnx(path).unwrap();
    m.graph.unwrap().node.into_iter().map(|n| n.name).collect()
}

#[test]
fn sensitivity_reads_every_export_form() {
    let refs = reference();
    let ort = ort_options();
    for name in FORMS {
        let want = &refs["forms"][name];
        let run = qgate(
            "sensitivity",
            &[
                "--model",
                &form(name),
                "--data",
                &fx("test.npz"),
                "--calibration",
                &fx("calib.npz"),
                "--bench-seconds",
                "0",
            ],
            &[],
        );
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let s = run.json()["sensitivity"].clone();
        let norm = &s["normalization"];
        // What the reader was told: weights lifted, names generated, data inlined, opset.
        let lifted = norm["constants_lifted"].as_u64().unwrap();
        assert_eq!(lifted > 0, name.contains("op1"), "{name}: {norm}");
        assert_eq!(
            norm["names_generated"].as_u64().unwrap() > 0,
            name == "cnn_unnamed"
        );
        assert_eq!(
            norm["external_tensors"].as_u64().unwrap() > 0,
            name == "cnn_external"
        );
        let per_channel = want["ort_per_channel"].as_bool().unwrap();
        assert_eq!(
            norm["weight_scales"],
            if per_channel {
                "per_channel"
            } else {
                "per_tensor"
            },
            "{name}: {norm}"
        );
        assert_eq!(
            norm["opset_out"],
            if per_channel { 13 } else { 11 },
            "{name}"
        );
        // The recommended model (every layer INT8 here) holds onnxruntime's weight scales.
        let mixed = run.out.path().join("mixed.onnx");
        assert_eq!(s["recommendation"]["n_float_layers"], 0, "{name}: {s}");
        for (w, scales) in want["ort_weight_scales"].as_object().unwrap() {
            let ours = initializer(&mixed, &format!("{w}_scale"));
            let theirs: Vec<f64> = scales
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(ours.len(), theirs.len(), "{name}/{w}");
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    qgate_core::Tolerance::Float32Reordering.close(*a as f64, *b),
                    "{name}/{w}: qgate {a}, onnxruntime {b}"
                );
            }
        }
        // Every layer the report names is a node of the model qgate wrote (generated names
        // included), so exclusion lists resolve against it.
        let written = match s["normalized_model"].as_str() {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(form(name)),
        };
        let nodes = node_names(&written);
        for l in s["layers"].as_array().unwrap() {
            let n = l["node"].as_str().unwrap();
            assert!(nodes.iter().any(|x| x == n), "{name}: {n} not in {nodes:?}");
            assert!(
                node_names(&mixed).iter().any(|x| x.contains(n)),
                "{name}: {n}"
            );
        }
        // onnxruntime loads what qgate wrote and measures the accuracy the report claims.
        if let Some(opts) = &ort {
            let claimed = (s["recommendation"]["metric"].as_f64().unwrap() * 540.0).round();
            let got = ort_correct(&mixed, opts) as f64;
            assert!(
                (got - claimed).abs() <= 1.0,
                "{name}: onnxruntime {got}, report {claimed}"
            );
            let fp32 = ort_correct(&written, opts);
            assert_eq!(
                fp32 as u64,
                want["fp32_correct"].as_u64().unwrap(),
                "{name}"
            );
        }
    }
}

#[test]
fn compare_and_inspect_read_every_export_form() {
    for name in FORMS {
        let run = compare(&fx("cnn_fp32.onnx"), &form(name), &[]);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let r = run.json();
        // Same weights in another form: the same predictions.
        assert_eq!(r["comparison"]["top1_agreement"], 1.0, "{name}");
        assert_eq!(
            r["candidate"]["accuracy"], r["baseline"]["accuracy"],
            "{name}"
        );
        let o = assert_cmd::Command::cargo_bin("qgate")
            .unwrap()
            .args(["inspect", &form(name), "--json"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let info: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            info["model"]["inputs"][0]["name"], "image",
            "{name}: {info}"
        );
        assert_eq!(
            info["model"]["outputs"][0]["name"], "logits",
            "{name}: {info}"
        );
        let reading = &info["quantization_reading"];
        assert_eq!(
            reading["constants_lifted"].as_u64().unwrap() > 0,
            name.contains("op1"),
            "{name}: {reading}"
        );
    }
}

#[test]
fn a_quantized_softmax_runs_in_tract_as_onnxruntime_defines_it() {
    // tract 0.23 folds DequantizeLinear → Softmax → QuantizeLinear into a lookup table that
    // gives every class 1.0; qgate rewrites the QuantizeLinear into float ops first.
    let refs = reference();
    let (base, cand) = (fx("cnn_probs_fp32.onnx"), fx("cnn_probs_int8_qdq.onnx"));
    let run = compare(&base, &cand, &["--no-runtime-check"]);
    assert_ne!(run.code, 2, "{}", run.stderr);
    let r = run.json();
    let correct = (r["candidate"]["accuracy"].as_f64().unwrap() * 540.0).round() as u64;
    assert_eq!(
        correct,
        refs["probs"]["int8_correct_unfused"].as_u64().unwrap()
    );
    assert!(
        r["candidate"]["runtime"]["settings"]["graph_rewrites"]
            .as_str()
            .unwrap()
            .contains("Softmax"),
        "{}",
        r["candidate"]["runtime"]
    );
}

#[test]
fn the_runtime_check_stops_a_model_tract_gets_wrong_and_is_silent_otherwise() {
    if ort_options().is_none() {
        return;
    }
    // Made wrong on purpose: without qgate's rewrite tract mis-computes the quantized Softmax.
    let (base, cand) = (fx("cnn_probs_fp32.onnx"), fx("cnn_probs_int8_qdq.onnx"));
    let wrong = compare(&base, &cand, &["--no-tract-rewrites"]);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    for needle in [
        "candidate",
        "probs_QuantizeLinear_Output",
        "ort:",
        "--no-runtime-check",
    ] {
        assert!(wrong.stderr.contains(needle), "{needle}: {}", wrong.stderr);
    }
    // Every quantized fixture tract runs correctly passes, and the report says so.
    for v in [
        "mlp_int8_qdq",
        "mlp_int8_qop",
        "mlp_int8_dynamic",
        "cnn_int8_qdq",
        "cnn_int8_qop",
        "cnn_int8_dynamic",
        "cnn_wide_int8_qdq",
        "sens_cnn_int8_qdq",
        "sens_cnn_fragile_int8_qdq",
        "cnn_probs_int8_qdq",
    ] {
        let base = format!("{}_fp32.onnx", v.split("_int8").next().unwrap());
        let run = compare(&fx(&base), &fx(&format!("{v}.onnx")), &[]);
        assert_ne!(run.code, 2, "{v}: {}", run.stderr);
        let checks = run.json()["runtime_checks"].clone();
        assert_eq!(checks.as_array().unwrap().len(), 1, "{v}: {checks}");
        assert_eq!(checks[0]["status"], "passed", "{v}: {checks}");
        assert_eq!(checks[0]["side"], "candidate");
        assert_eq!(checks[0]["samples"], 32);
    }
    // Skipped on request, and recorded as such.
    let run = compare(
        &fx("cnn_fp32.onnx"),
        &fx("cnn_int8_qdq.onnx"),
        &["--no-runtime-check"],
    );
    assert_eq!(run.json()["runtime_checks"][0]["status"], "skipped");
}

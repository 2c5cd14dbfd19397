//! `qgate sensitivity` on the fixture CNNs against onnxruntime.quantization's figures in
//! fixtures/digits/sens_reference.json: a deliberately fragile layer ranks first, the
//! recommended set matches, and the written mixed model's accuracy is within one sample of
//! what onnxruntime gives when told to exclude the same nodes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fx, qgate, Run};
use serde_json::Value;

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fx("sens_reference.json")).unwrap()).unwrap()
}

/// Runs `qgate sensitivity`, without timing the front unless `--bench-seconds` is given.
fn sensitivity(args: &[&str]) -> Run {
    let mut args = args.to_vec();
    if !args.contains(&"--bench-seconds") {
        args.extend(["--bench-seconds", "0"]);
    }
    qgate("sensitivity", &args, &[])
}

/// `qgate sensitivity` on `model` (a path) with test.npz and calib.npz, plus `extra`.
fn calibrated(model: &str, extra: &[&str]) -> Run {
    let (data, calib) = (fx("test.npz"), fx("calib.npz"));
    let mut args = vec!["--model", model, "--data", &data, "--calibration", &calib];
    args.extend_from_slice(extra);
    sensitivity(&args)
}

/// The metric drop (pp) onnxruntime gives on qgate's proxy samples when `exclude` is
/// kept in float: "everything but this layer" for one layer.
fn ort_proxy_drop(refs: &Value, model: &str, exclude: &str) -> f64 {
    let m = &refs["models"][model];
    let fp32 = m["fp32_correct_proxy"].as_f64().unwrap();
    let q = m["exclude"][exclude]["correct_proxy_unfused"]
        .as_f64()
        .unwrap();
    (fp32 - q) / 128.0 * 100.0
}

/// Every layer's "all but this layer" drop is within one proxy sample of onnxruntime's.
fn assert_all_but_matches(refs: &Value, model: &str, s: &Value) {
    assert_eq!(s["proxy_samples"], 128);
    for l in s["layers"].as_array().unwrap() {
        let node = l["node"].as_str().unwrap();
        let ours = l["all_but_metric_drop"].as_f64().unwrap();
        let theirs = ort_proxy_drop(refs, model, node);
        assert!(
            (ours - theirs).abs() <= 100.0 / 128.0 + 1e-9,
            "{model} all but {node}: {ours} vs onnxruntime {theirs}"
        );
        assert!(l["all_but_kl"].as_f64().unwrap() >= 0.0, "{l}");
    }
}

/// Correct predictions of `model` on test.npz, measured by `qgate compare` (tract).
fn correct(model: &str) -> i64 {
    let run = qgate(
        "compare",
        &[
            "--baseline",
            model,
            "--candidate",
            model,
            "--data",
            &fx("test.npz"),
        ],
        &[],
    );
    assert_ne!(run.code, 2, "{}", run.stderr);
    let r = run.json();
    (r["candidate"]["accuracy"].as_f64().unwrap() * r["candidate"]["n_samples"].as_f64().unwrap())
        .round() as i64
}

/// Correct predictions (of 540) onnxruntime gives with `nodes` excluded from quantization,
/// executed node by node. Reference keys are the names in graph order joined by ",".
fn ort_correct(reference: &Value, model: &str, nodes: &[String]) -> i64 {
    let m = &reference["models"][model];
    let key = m["quantizable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .filter(|n| nodes.contains(n))
        .collect::<Vec<_>>()
        .join(",");
    m["exclude"][&key]["correct_unfused"].as_i64().unwrap()
}

#[test]
fn a_fragile_layer_ranks_first_and_the_mixed_model_matches_onnxruntime() {
    let refs = reference();
    let run = calibrated(&fx("sens_cnn_fragile_fp32.onnx"), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    let s = &r["sensitivity"];
    let layers = s["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 10);
    assert_eq!(layers[0]["node"], "conv4", "{}", layers[0]);
    assert_eq!(layers[0]["op_type"], "Conv");
    for k in ["metric_drop", "kl", "sqnr_db"] {
        assert!(layers[0][k].is_number(), "{k}: {}", layers[0]);
    }
    assert!(layers[0]["metric_drop"].as_f64().unwrap() > 10.0);
    let rec = &s["recommendation"];
    let keep: Vec<String> = rec["keep_float"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(rec["n_float_layers"], keep.len());
    assert!(keep.contains(&"conv4".to_string()), "{keep:?}");
    // onnxruntime's own greedy search (fixture generator) ends at the same set.
    let greedy = refs["models"]["sens_cnn_fragile_fp32"]["greedy"]
        .as_array()
        .unwrap();
    let ort_final: Vec<String> = greedy.last().unwrap()["exclude"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut a = keep.clone();
    let mut b = ort_final.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "qgate {keep:?} vs onnxruntime greedy {ort_final:?}");
    // The written model, measured by `qgate compare`, against onnxruntime excluding the
    // same nodes (node-by-node execution, which tract matches on QDQ).
    let mixed = run.out.path().join("mixed.onnx");
    let ours = correct(mixed.to_str().unwrap());
    let theirs = ort_correct(&refs, "sens_cnn_fragile_fp32", &keep);
    assert!(
        (ours - theirs).abs() <= 1,
        "mixed {ours} vs onnxruntime {theirs} ({keep:?})"
    );
    // Every layer INT8: within one sample of onnxruntime too.
    let all = (s["all_int8"]["metric"].as_f64().unwrap() * 540.0).round() as i64;
    let ort_all = ort_correct(&refs, "sens_cnn_fragile_fp32", &[]);
    assert!(
        (all - ort_all).abs() <= 1,
        "all INT8 {all} vs onnxruntime {ort_all}"
    );
    // The exclusion lists every toolchain reads.
    let ex: Value = serde_json::from_str(&run.file("exclusions.json")).unwrap();
    assert_eq!(
        ex["onnxruntime_nodes_to_exclude"].as_array().unwrap().len(),
        keep.len()
    );
    assert!(ex["tensorrt_layer_precisions"]
        .as_str()
        .unwrap()
        .contains("conv4:fp32"));
    assert_eq!(ex["nncf_ignored_scope"]["names"], rec["keep_float"]);
    assert!(run.file("report.html").contains("Trade-off"));
    assert!(run.file("report.md").contains("**Sensitivity**"));
    // The front holds more than the first passing configuration.
    assert!(s["front"].as_array().unwrap().len() >= 3);
    // The ranking's top was confirmed on every sample and measured with the rest of the
    // graph fed from cached activations; the cost is reported.
    assert_eq!(layers[0]["confirmed"], true);
    let cost = &s["cost"];
    assert!(cost["method"]
        .as_str()
        .unwrap()
        .starts_with("FP32 activations recorded by the reference pass"));
    assert!(cost["full_evaluations_per_layer"].as_f64().unwrap() > 0.0);
    // The output-divergence proxies agree with the metric: conv4's logits move most.
    let mse = |l: &Value| l["mse"].as_f64().unwrap();
    assert!(layers[1..].iter().all(|l| mse(&layers[0]) > 2.0 * mse(l)));
    // Everything but one layer, for every layer, against onnxruntime's exclusions.
    assert_all_but_matches(&refs, "sens_cnn_fragile_fp32", s);
    // Keeping more of the ranking in float never turned a pass into a fail here, and
    // every configuration was evaluated once even when several searches met it.
    assert_eq!(s["monotone"], true);
    let front = s["front"].as_array().unwrap();
    let mut sets: Vec<Vec<String>> = front
        .iter()
        .map(|p| {
            let mut k: Vec<String> = p["keep_float"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            k.sort();
            k
        })
        .collect();
    let n = sets.len();
    sets.sort();
    sets.dedup();
    assert_eq!(sets.len(), n, "{front:?}");
    assert!(front.iter().all(|p| p["latency"].is_null()));
}

#[test]
fn the_mlp_ranking_and_mixed_model_match_onnxruntime() {
    let refs = reference();
    let run = calibrated(&fx("mlp_fp32.onnx"), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["sensitivity"];
    let mut nodes: Vec<&str> = s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["fc1_matmul", "fc2_matmul"]);
    for l in s["layers"].as_array().unwrap() {
        assert_eq!(l["op_type"], "MatMul");
        for k in ["kl", "mse", "sqnr_db", "weight_sqnr_db"] {
            assert!(l[k].is_number(), "{k}: {l}");
        }
    }
    // onnxruntime loses nothing on this MLP (unfused, every exclusion): no float layer.
    assert_eq!(s["recommendation"]["n_float_layers"], 0);
    let ours = correct(run.out.path().join("mixed.onnx").to_str().unwrap());
    let theirs = ort_correct(&refs, "mlp_fp32", &[]);
    assert!((ours - theirs).abs() <= 1, "{ours} vs {theirs}");
    let all_int8 = (s["all_int8"]["metric"].as_f64().unwrap() * 540.0).round() as i64;
    assert!((all_int8 - theirs).abs() <= 1, "{all_int8} vs {theirs}");
    assert_all_but_matches(&refs, "mlp_fp32", s);
}

#[test]
fn the_front_is_timed_against_fp32_as_bench_measures() {
    let run = calibrated(
        &fx("sens_cnn_fragile_fp32.onnx"),
        &["--bench-seconds", "0.2"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["sensitivity"];
    let info = &s["latency"];
    assert!(info["runtime"].as_str().unwrap().starts_with("tract"));
    assert!(info["fp32_median_ms"].as_f64().unwrap() > 0.0);
    assert!(info["notes"].to_string().contains("slower than FP32"));
    for p in s["front"].as_array().unwrap() {
        let l = &p["latency"];
        let (median, p99) = (
            l["median_ms"].as_f64().unwrap(),
            l["p99_ms"].as_f64().unwrap(),
        );
        assert!(median > 0.0 && p99 >= median, "{p}");
        let sp = l["speedup_vs_fp32"].as_f64().unwrap();
        let ci = &l["speedup_ci"];
        assert!(
            sp > 0.0 && ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap(),
            "{p}"
        );
    }
    let html = run.file("report.html");
    assert!(html.contains("metric vs median latency"));
    assert!(run.file("report.md").contains("speed-up vs FP32"));
}

#[test]
fn a_robust_model_needs_no_float_layer_and_matches_onnxruntime() {
    let refs = reference();
    let run = calibrated(
        &fx("sens_cnn_fp32.onnx"),
        &["--calibration-method", "minmax"],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["sensitivity"];
    assert_eq!(s["recommendation"]["n_float_layers"], 0);
    let mixed = run.out.path().join("mixed.onnx");
    let ours = correct(mixed.to_str().unwrap());
    let theirs = ort_correct(&refs, "sens_cnn_fp32", &[]);
    assert!((ours - theirs).abs() <= 1, "{ours} vs {theirs}");
}

#[test]
fn a_given_quantized_model_is_localised_and_stripped() {
    let run = sensitivity(&[
        "--model",
        &fx("sens_cnn_fragile_fp32.onnx"),
        "--quantized",
        &fx("sens_cnn_fragile_int8_qdq.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["sensitivity"];
    let loc = &s["localisation"];
    assert_eq!(loc["first_jump"], "conv4_relu", "{loc}");
    let acts = loc["activations"].as_array().unwrap();
    let sqnr = |t: &str| {
        acts.iter().find(|a| a["tensor"] == t).unwrap()["sqnr_db"]
            .as_f64()
            .unwrap()
    };
    assert!(sqnr("conv3_relu") > 30.0 && sqnr("conv4_relu") < 10.0);
    assert_eq!(s["layers"][0]["node"], "conv4");
    // Keeping conv4 float in the given model recovers most of the loss.
    let ours = correct(run.out.path().join("mixed.onnx").to_str().unwrap());
    let all = correct(&fx("sens_cnn_fragile_int8_qdq.onnx"));
    assert!(ours > all + 50, "mixed {ours} vs given {all}");
    assert!(s["calibration"]["method"]
        .as_str()
        .unwrap()
        .contains("given"));
}

#[test]
fn no_passing_configuration_exits_1_and_still_writes_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p.toml");
    // Any quantization changes the probabilities: only the FP32 model meets KL = 0.
    std::fs::write(&pol, "max_kl_mean = 0\n").unwrap();
    let run = sensitivity(&[
        "--model",
        &fx("cnn_fp32.onnx"),
        "--data",
        &fx("test.npz"),
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.out.path().join("mixed.onnx").exists());
    let s = &run.json()["sensitivity"];
    assert_eq!(s["recommendation"]["passes"], false);
    // No --calibration: a documented slice calibrates and the report says so.
    let src = s["calibration"]["source"].as_str().unwrap();
    assert!(
        src.contains("first 180 samples") && src.contains("no --calibration"),
        "{src}"
    );
    assert_eq!(s["evaluation"]["samples"], 360);
}

#[test]
fn bad_sensitivity_input_is_a_clear_error() {
    for (args, needle) in [
        (
            vec![
                "--model",
                &fx("truncated.onnx") as &str,
                "--data",
                &fx("test.npz"),
            ],
            "truncated.onnx",
        ),
        (
            vec![
                "--model",
                &fx("cnn_fp32.onnx"),
                "--data",
                &fx("test.npz"),
                "--calibration-method",
                "kl",
            ],
            "--calibration-method",
        ),
        (
            vec!["--model", &fx("cnn_fp32.onnx"), "--data", &fx("test.csv")],
            "expects shape",
        ),
        (
            vec![
                "--model",
                &fx("cnn_fp32.onnx"),
                "--data",
                &fx("test.npz"),
                "--bench-seconds",
                "nan",
            ],
            "--bench-seconds",
        ),
        (
            vec![
                "--model",
                &fx("cnn_fp32.onnx"),
                "--data",
                &fx("test.npz"),
                "--latency-runtime",
                "tensorrt",
            ],
            "--latency-runtime",
        ),
        // A float model given as the quantized one would report "all INT8" figures.
        (
            vec![
                "--model",
                &fx("mlp_fp32.onnx"),
                "--data",
                &fx("test.npz"),
                "--quantized",
                &fx("mlp_fp32.onnx"),
            ],
            "--quantized",
        ),
        // 540 samples without --calibration: at most 180 calibrate; never clamped silently.
        (
            vec![
                "--model",
                &fx("mlp_fp32.onnx"),
                "--data",
                &fx("test.npz"),
                "--calib-samples",
                "540",
            ],
            "give at most 180",
        ),
    ] {
        sensitivity(&args).assert_error(&[needle]);
    }
}

#[test]
fn fp16_keeps_the_sensitive_layers_in_half_precision() {
    let refs = reference();
    let run = calibrated(&fx("sens_cnn_fragile_fp32.onnx"), &["--float-type", "fp16"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["sensitivity"];
    let keep: Vec<String> = s["recommendation"]["keep_float"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(s["recommendation"]["tensorrt_layer_precisions"]
        .as_str()
        .unwrap()
        .contains("conv4:fp16"));
    let mixed = run.out.path().join("mixed.onnx");
    let model = qgate_runtime::read_onnx(&mixed).unwrap();
    let g = model.graph.as_ref().unwrap();
    // conv4's weights are stored as FLOAT16 and the layer sits between Casts.
    assert!(g
        .initializer
        .iter()
        .any(|t| t.name.starts_with("conv4_w") && t.data_type == 10));
    assert!(g.node.iter().filter(|n| n.op_type == "Cast").count() >= 2 * keep.len());
    // FP16 for the kept layers costs at most one sample against keeping them in FP32
    // (onnxruntime, node by node).
    let ours = correct(mixed.to_str().unwrap());
    let fp32_kept = ort_correct(&refs, "sens_cnn_fragile_fp32", &keep);
    assert!(
        (ours - fp32_kept).abs() <= 1,
        "fp16 {ours} vs fp32-kept {fp32_kept}"
    );
    let bad = sensitivity(&[
        "--model",
        &fx("sens_cnn_fragile_fp32.onnx"),
        "--quantized",
        &fx("sens_cnn_fragile_int8_qdq.onnx"),
        "--data",
        &fx("test.npz"),
        "--float-type",
        "fp16",
    ]);
    bad.assert_error(&["--float-type"]);
}

#[test]
fn a_residual_model_is_analysed_from_cut_graphs_with_its_skip_fed() {
    // sens_cnn_fp32 with a skip: conv6 reads conv5_relu + conv3_relu.
    let mut m = qgate_runtime::read_onnx(std::path::Path::new(&fx("sens_cnn_fp32.onnx"))).unwrap();
    let g = m.graph.as_mut().unwrap();
    let at = g.node.iter().position(|n| n.name == "conv6").unwrap();
    g.node[at].input[0] = "res5".into();
    let mut add = g.node[at].clone();
    add.name = "res5_add".into();
    add.op_type = "Add".into();
    add.input = vec!["conv5_relu".into(), "conv3_relu".into()];
    add.output = vec!["res5".into()];
    add.attribute.clear();
    g.node.insert(at, add);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("residual.onnx");
    qgate_quant::write_model(&m, &path).unwrap();
    let run = calibrated(path.to_str().unwrap(), &[]);
    assert_ne!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let s = &run.json()["sensitivity"];
    assert_eq!(s["layers"].as_array().unwrap().len(), 10);
    assert!(s["cost"]["method"]
        .as_str()
        .unwrap()
        .starts_with("FP32 activations recorded"));
    // Every layer's "only this layer" model ran: each has an output SQNR.
    for l in s["layers"].as_array().unwrap() {
        assert!(l["sqnr_db"].is_number(), "{l}");
    }
}

/// `sensitivity` takes the data flags `compare` takes: an image folder of grayscale digits,
/// calibrated on its first images.
#[test]
fn sensitivity_reads_image_folders() {
    let run = sensitivity(&[
        "--model",
        &fx("cnn_fp32.onnx"),
        "--data",
        &fx("images"),
        "--image-color",
        "gray",
        "--image-scale",
        &(1.0f64 / 240.0).to_string(),
        "--calib-samples",
        "10",
        "--bench-seconds",
        "0",
    ]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let s = &run.json()["sensitivity"];
    assert_eq!(s["evaluation"]["samples"], 40, "{s}");
    assert_eq!(s["calibration"]["samples"], 10, "{s}");
    assert!(s["calibration"]["source"]
        .as_str()
        .unwrap()
        .contains("images"));
}

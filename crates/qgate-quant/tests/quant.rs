//! Simulated quantization against onnxruntime.quantization's own output on the fixture CNN:
//! the same min-max calibration must give the same activation scales and zero points; the
//! written QDQ model must load and run in tract; removing Q/DQ pairs must leave a valid model.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use qgate_core::Array;
use qgate_data::{load_npz, ArrayKeys};
use qgate_quant::{
    calibrate, quantizable_layers, quantize_layers, quantize_weight, quantized_tensors, strip_qdq,
    write_model, CalibMethod, Layer, Range,
};
use qgate_runtime::onnx_pb as pb;
use qgate_runtime::{load, read_onnx, LoadOptions, ModelSpec};

fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/digits")
        .join(name)
}

fn scalar(g: &pb::GraphProto, name: &str) -> f64 {
    let t = g.initializer.iter().find(|t| t.name == name).unwrap();
    match t.data_type {
        1 if !t.raw_data.is_empty() => {
            f32::from_le_bytes(t.raw_data[..4].try_into().unwrap()) as f64
        }
        1 => t.float_data[0] as f64,
        2 if !t.raw_data.is_empty() => t.raw_data[0] as f64,
        2 => t.int32_data[0] as f64,
        other => panic!("{name}: type {other}"),
    }
}

/// Scale and zero point of the QuantizeLinear that reads tensor `x`.
fn qparams(g: &pb::GraphProto, x: &str) -> (f64, f64) {
    let q = g
        .node
        .iter()
        .find(|n| n.op_type == "QuantizeLinear" && n.input[0] == x)
        .unwrap_or_else(|| panic!("no QuantizeLinear reads {x}"));
    (scalar(g, &q.input[1]), scalar(g, &q.input[2]))
}

fn calib_batches() -> Vec<Vec<Array>> {
    let d = load_npz(&fx("calib.npz"), &ArrayKeys::default()).unwrap();
    let img = &d.arrays["image"];
    (0..img.n_rows())
        .step_by(64)
        .map(|s| vec![img.slice_rows(s, (s + 64).min(img.n_rows()))])
        .collect()
}

fn ranges(
    model: &Path,
    layers: &[Layer],
    method: CalibMethod,
) -> std::collections::BTreeMap<String, Range> {
    let spec = ModelSpec::parse(model.to_str().unwrap()).unwrap();
    let mut m = load(&spec, &LoadOptions::default()).unwrap();
    let proto = read_onnx(model).unwrap();
    let all: Vec<&Layer> = layers.iter().collect();
    let tensors = quantized_tensors(&proto, &all).unwrap();
    calibrate(m.as_mut(), &calib_batches(), &tensors, method).unwrap()
}

fn accuracy(path: &Path) -> f64 {
    let d = load_npz(&fx("test.npz"), &ArrayKeys::default()).unwrap();
    let spec = ModelSpec::parse(path.to_str().unwrap()).unwrap();
    let mut m = load(&spec, &LoadOptions::default()).unwrap();
    let out = m.run(&[d.arrays["image"].clone()]).unwrap();
    let logits = out[0].to_f64().unwrap();
    let labels = d.labels.unwrap();
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, &y)| {
            let row = &logits[i * 10..i * 10 + 10];
            let arg = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            arg as i64 == y
        })
        .count();
    correct as f64 / labels.len() as f64
}

#[test]
fn min_max_calibration_gives_onnxruntimes_activation_scales() {
    let fp32 = read_onnx(&fx("cnn_fp32.onnx")).unwrap();
    let layers = quantizable_layers(&fp32).unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l.node.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc_matmul"]);
    let r = ranges(&fx("cnn_fp32.onnx"), &layers, CalibMethod::MinMax);
    let refs: Vec<&Layer> = layers.iter().collect();
    let q = quantize_layers(&fp32, &refs, &r).unwrap();
    let ours = q.graph.as_ref().unwrap();
    // onnxruntime.quantization.quantize_static(MinMax, QUInt8 activations) on the same
    // calibration set wrote these.
    let ort = read_onnx(&fx("cnn_int8_qdq.onnx")).unwrap();
    let theirs = ort.graph.as_ref().unwrap();
    for x in ["image", "conv1_relu", "conv2_relu", "flat", "fc_mm"] {
        let ((a, za), (b, zb)) = (qparams(ours, x), qparams(theirs, x));
        assert!(
            (a / b - 1.0).abs() < 1e-6,
            "{x}: scale {a} vs onnxruntime {b}"
        );
        assert_eq!(za, zb, "{x}: zero point");
    }
}

#[test]
fn the_written_qdq_model_runs_in_tract_close_to_fp32() {
    let fp32 = read_onnx(&fx("cnn_fp32.onnx")).unwrap();
    let layers = quantizable_layers(&fp32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for method in [
        CalibMethod::MinMax,
        CalibMethod::Percentile { p: 99.99 },
        CalibMethod::Entropy,
    ] {
        let r = ranges(&fx("cnn_fp32.onnx"), &layers, method);
        // Percentile and entropy clip: never wider than min-max.
        for (t, range) in &r {
            assert!(range.max <= 1.0 + 1e-9 || t != "image", "{t}: {range:?}");
        }
        let refs: Vec<&Layer> = layers.iter().collect();
        let q = quantize_layers(&fp32, &refs, &r).unwrap();
        let path = dir.path().join("q.onnx");
        write_model(&q, &path).unwrap();
        let ops: Vec<String> = read_onnx(&path)
            .unwrap()
            .graph
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.clone())
            .collect();
        // image, conv1_relu, conv2_relu, flat, fc_mm; plus three weights and the two
        // Conv biases (INT32).
        assert_eq!(
            ops.iter().filter(|o| *o == "QuantizeLinear").count(),
            5,
            "{ops:?}"
        );
        assert_eq!(
            ops.iter().filter(|o| *o == "DequantizeLinear").count(),
            10,
            "{ops:?}"
        );
        let (a, b) = (accuracy(&fx("cnn_fp32.onnx")), accuracy(&path));
        assert!(a - b < 0.01, "{method:?}: FP32 {a} → INT8 {b}");
    }
}

#[test]
fn removing_the_qdq_pairs_of_a_layer_keeps_a_valid_model() {
    let q = read_onnx(&fx("cnn_int8_qdq.onnx")).unwrap();
    let before = q.graph.as_ref().unwrap().node.len();
    let stripped = strip_qdq(&q, &["conv1".to_string()], None).unwrap();
    let g = stripped.graph.as_ref().unwrap();
    let conv1 = g.node.iter().find(|n| n.name == "conv1").unwrap();
    // conv1 reads the float image and float weights again.
    assert_eq!(conv1.input[0], "image");
    assert!(g
        .initializer
        .iter()
        .any(|t| t.name == conv1.input[1] && t.data_type == 1));
    assert!(g.node.len() < before);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.onnx");
    write_model(&stripped, &path).unwrap();
    let (a, b) = (accuracy(&fx("cnn_int8_qdq.onnx")), accuracy(&path));
    assert!((a - b).abs() < 0.01, "{a} vs {b}");
    assert!(strip_qdq(&q, &["nope".to_string()], None)
        .unwrap_err()
        .to_string()
        .contains("nope"));
}

/// sens_reference.json, written by the fixture generator from onnxruntime.quantization
/// (per-channel weights, min-max on calib.npz).
fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx("sens_reference.json")).unwrap()).unwrap()
}

#[test]
fn per_channel_weights_and_every_activation_match_onnxruntime() {
    let refs = reference();
    for name in ["sens_cnn_fp32", "sens_cnn_fragile_fp32"] {
        let r = &refs["models"][name];
        let path = fx(&format!("{name}.onnx"));
        let fp32 = read_onnx(&path).unwrap();
        let layers = quantizable_layers(&fp32).unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l.node.as_str()).collect();
        let expected: Vec<&str> = r["quantizable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, expected, "{name}");
        let g = fp32.graph.as_ref().unwrap();
        for l in &layers {
            let w = qgate_quant::float_initializer(g, &l.weight).unwrap();
            let (scales, _) = quantize_weight(&w, l.weight_axis);
            let theirs = r["weight_scales"][&l.node].as_array().unwrap();
            assert_eq!(scales.len(), theirs.len(), "{name} {}", l.node);
            for (a, b) in scales.iter().zip(theirs) {
                let b = b.as_f64().unwrap();
                assert!(
                    (*a as f64 / b - 1.0).abs() < 1e-6,
                    "{name} {}: {a} vs {b}",
                    l.node
                );
            }
        }
        let ranges = ranges(&path, &layers, CalibMethod::MinMax);
        let qp = r["activation_qparams"].as_object().unwrap();
        assert!(qp.len() >= 10, "{name}: {} tensors", qp.len());
        for (t, v) in qp {
            let range = ranges
                .get(t)
                .unwrap_or_else(|| panic!("{name}: onnxruntime quantized '{t}', qgate did not"));
            let (s, z) = qgate_quant::act_qparams(*range);
            let (rs, rz) = (
                v["scale"].as_f64().unwrap(),
                v["zero_point"].as_f64().unwrap(),
            );
            assert!(
                (s as f64 / rs - 1.0).abs() < 1e-6,
                "{name} {t}: scale {s} vs {rs}"
            );
            assert_eq!(z as f64, rz, "{name} {t}: zero point");
        }
    }
}

#[test]
fn a_graph_cut_at_a_layer_fed_cached_activations_gives_the_full_models_outputs() {
    let path = fx("sens_cnn_fp32.onnx");
    let fp32 = read_onnx(&path).unwrap();
    let d = load_npz(&fx("test.npz"), &ArrayKeys::default()).unwrap();
    let images = d.arrays["image"].slice_rows(0, 64);
    let spec = ModelSpec::parse(path.to_str().unwrap()).unwrap();
    let mut full = load(&spec, &LoadOptions::default()).unwrap();
    let t = full
        .run_tensors(
            std::slice::from_ref(&images),
            &["conv3_relu".to_string(), "logits".to_string()],
        )
        .unwrap();
    let cut = qgate_quant::cut_at(
        &fp32,
        &[("conv3_relu".to_string(), t[0].shape[1..].to_vec())],
    )
    .unwrap();
    let g = cut.graph.as_ref().unwrap();
    assert_eq!(g.input.len(), 1);
    assert!(g
        .node
        .iter()
        .all(|n| n.name != "conv1" && n.name != "conv3"));
    assert!(g.node.iter().any(|n| n.name == "conv4"));
    let dir = tempfile::tempdir().unwrap();
    let cut_path = dir.path().join("cut.onnx");
    write_model(&cut, &cut_path).unwrap();
    let spec = ModelSpec::parse(cut_path.to_str().unwrap()).unwrap();
    let mut part = load(&spec, &LoadOptions::default()).unwrap();
    let out = part.run(&[t[0].clone()]).unwrap();
    let (a, b) = (t[1].to_f64().unwrap(), out[0].to_f64().unwrap());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(
            qgate_core::Tolerance::Float32Reordering.close(*y, *x),
            "{x} vs {y}"
        );
    }
    // Nothing computable from an unknown tensor.
    assert!(qgate_quant::cut_at(&fp32, &[("nope".to_string(), vec![1])]).is_err());
}

/// `sens_cnn_fp32` with a residual skip: conv6 reads `conv5_relu + conv3_relu`, so the
/// graph after conv5 reads a tensor computed before conv5's input.
fn residual(dir: &Path) -> PathBuf {
    let mut m = read_onnx(&fx("sens_cnn_fp32.onnx")).unwrap();
    let g = m.graph.as_mut().unwrap();
    let at = g.node.iter().position(|n| n.name == "conv6").unwrap();
    g.node[at].input[0] = "res5".into();
    g.node.insert(
        at,
        pb::NodeProto {
            name: "res5_add".into(),
            op_type: "Add".into(),
            input: vec!["conv5_relu".into(), "conv3_relu".into()],
            output: vec!["res5".into()],
            ..Default::default()
        },
    );
    let path = dir.join("residual.onnx");
    write_model(&m, &path).unwrap();
    path
}

#[test]
fn a_residual_skip_is_a_cut_input_and_the_cut_model_equals_the_whole_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = residual(dir.path());
    let model = read_onnx(&path).unwrap();
    let layers = quantizable_layers(&model).unwrap();
    let by = |n: &str| layers.iter().find(|l| l.node == n).unwrap();
    assert_eq!(by("conv5").cut_inputs, ["conv4_relu", "conv3_relu"]);
    assert_eq!(by("conv4").cut_inputs, ["conv3_relu"]);
    assert_eq!(by("conv1").cut_inputs, ["image"]);
    let conv5 = by("conv5");
    // FP32 activations of the whole model, and its logits with only conv5 quantized.
    let d = load_npz(&fx("test.npz"), &ArrayKeys::default()).unwrap();
    let images = d.arrays["image"].slice_rows(0, 64);
    let run = |p: &Path, inputs: &[Array], names: &[String]| {
        let spec = ModelSpec::parse(p.to_str().unwrap()).unwrap();
        let mut m = load(&spec, &LoadOptions::default()).unwrap();
        m.run_tensors(inputs, names).unwrap()
    };
    let mut names = conv5.cut_inputs.clone();
    names.push("logits".into());
    let mut acts = run(&path, std::slice::from_ref(&images), &names);
    let fp32_logits = acts.pop().unwrap().to_f64().unwrap();
    let r = ranges(&path, &layers, CalibMethod::MinMax);
    let only = quantize_layers(&model, &[conv5], &r).unwrap();
    let only_path = dir.path().join("only.onnx");
    write_model(&only, &only_path).unwrap();
    let whole = run(&only_path, &[images], &["logits".to_string()]);
    // The same, cut at conv5's inputs and fed the FP32 activations.
    let feeds: Vec<(String, Vec<usize>)> = conv5
        .cut_inputs
        .iter()
        .zip(&acts)
        .map(|(n, a)| (n.clone(), a.shape[1..].to_vec()))
        .collect();
    let cut = qgate_quant::cut_at(&model, &feeds).unwrap();
    let cut_layers = quantizable_layers(&cut).unwrap();
    let chosen = qgate_quant::select(&cut_layers, &["conv5".to_string()]).unwrap();
    let cut_only = quantize_layers(&cut, &chosen, &r).unwrap();
    let cut_path = dir.path().join("cut.onnx");
    write_model(&cut_only, &cut_path).unwrap();
    let part = run(&cut_path, &acts, &["logits".to_string()]);
    let (a, b) = (whole[0].to_f64().unwrap(), part[0].to_f64().unwrap());
    assert_eq!(a.len(), b.len());
    // Quantizing conv5 changed the logits: the comparison is not FP32 against FP32.
    assert!(a.iter().zip(&fp32_logits).any(|(x, y)| x != y));
    for (x, y) in a.iter().zip(&b) {
        assert!(
            qgate_core::Tolerance::Float32Reordering.close(*y, *x),
            "{x} vs {y}"
        );
    }
    // Cut at conv5's own input alone, the skip cannot be computed: no logits.
    let alone = qgate_quant::cut_at(&model, &feeds[..1]).unwrap_err();
    assert!(alone.to_string().contains("no graph output"), "{alone}");
}

//! The ONNX Runtime backend against onnxruntime's own Python outputs computed on this machine
//! (tests/reference/ort_outputs.py: same onnxruntime version, same default optimisation
//! level, same CPU — fused INT8 kernels differ between CPUs): every fixture variant, contrib
//! ops included.
//!
//! Needs an onnxruntime library: `--ort-lib`-style from `ORT_DYLIB_PATH`, or the
//! `onnxruntime` package of `QGATE_TEST_PYTHON` (default `python3`). Without one the tests say
//! so and pass, unless `QGATE_REQUIRE_ORT=1` (set by `.ci/run`), which makes it a failure.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use qgate_core::{Array, Tolerance};
use qgate_data::{load_npz, ArrayKeys, Dataset};
use qgate_runtime::{load, locate_onnxruntime, LoadOptions, Model, ModelSpec};

#[path = "../../../tests/reference/ort_refs.rs"]
mod ort_refs;

#[path = "../../../tests/reference/fixtures.rs"]
mod fixtures_dir;
use fixtures_dir::fixtures;

fn python() -> String {
    std::env::var("QGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn options() -> Option<LoadOptions> {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    match locate_onnxruntime(None, env.as_deref(), &python()) {
        Ok(_) => Some(LoadOptions {
            ort_env_path: env,
            python: python(),
            threads: Some(1),
            ..LoadOptions::default()
        }),
        Err(e) if std::env::var("QGATE_REQUIRE_ORT").is_ok_and(|v| v == "1") => {
            panic!("QGATE_REQUIRE_ORT=1 but no ONNX Runtime: {e}")
        }
        Err(e) => {
            eprintln!("skipping ONNX Runtime tests: {e}");
            None
        }
    }
}

fn npz(file: &str) -> Dataset {
    load_npz(&fixtures().join(file), &ArrayKeys::default()).unwrap()
}

fn model(variant: &str, opts: &LoadOptions) -> Box<dyn Model> {
    let spec = ModelSpec::parse(&format!(
        "ort:{}",
        fixtures().join(format!("{variant}.onnx")).display()
    ))
    .unwrap();
    load(&spec, opts).unwrap()
}

#[test]
fn every_variant_equals_onnxruntime_python() {
    let Some(opts) = options() else { return };
    let data = npz("test.npz");
    let variants = [
        "mlp_fp32",
        "mlp_fp16",
        "mlp_int8_dynamic",
        "mlp_int8_qdq",
        "mlp_int8_qop",
        "mlp_pruned",
        "mlp_nan",
        "cnn_fp32",
        "cnn_fp16",
        "cnn_int8_dynamic",
        "cnn_int8_qdq",
        "cnn_int8_qop",
        "cnn_int8_qop_contrib",
        "cnn_wide_fp32",
        "cnn_wide_int8_qdq",
    ];
    let Some(refs) = ort_refs::fixture_outputs(&variants) else {
        return;
    };
    for v in variants {
        let mut m = model(v, &opts);
        assert_eq!(m.provenance().runtime, "onnxruntime");
        let input = m.info().inputs[0].name.clone();
        // One batch of all samples, as the references (dynamic quantization depends on the batch).
        let outs = m.run(&[data.arrays[&input].clone()]).unwrap();
        for (info, got) in m.info().outputs.clone().iter().zip(outs) {
            let want: &Array = &refs.arrays[&format!("{v}__{}", info.name)];
            assert_eq!(&got.shape, &want.shape, "{v}/{}", info.name);
            for (g, w) in got.to_f64().unwrap().iter().zip(want.to_f64().unwrap()) {
                // Same library, same graph, same thread count: bit-exact (NaN = NaN).
                assert!(
                    Tolerance::Exact.close(*g, w) || (g.is_nan() && w.is_nan()),
                    "{v}/{}: qgate {g}, onnxruntime {w}",
                    info.name
                );
            }
        }
    }
}

#[test]
fn provenance_names_library_version_and_settings() {
    let Some(opts) = options() else { return };
    let m = model("mlp_fp32", &opts);
    let p = m.provenance();
    assert!(p.runtime_version.starts_with("1."), "{p:?}");
    assert_eq!(p.settings["execution_provider"], "cpu");
    assert_eq!(p.settings["intra_op_threads"], "1");
    assert!(p.settings["library"].contains("libonnxruntime"));
}

#[test]
fn a_device_the_library_lacks_is_a_clear_error() {
    let Some(opts) = options() else { return };
    let spec = ModelSpec::parse(&format!(
        "ort:{}?device=tensorrt",
        fixtures().join("mlp_fp32.onnx").display()
    ))
    .unwrap();
    let err = load(&spec, &opts).err().unwrap().to_string();
    assert!(
        err.contains("TensorrtExecutionProvider") && err.contains("install"),
        "{err}"
    );
    let spec = ModelSpec::parse(&format!(
        "ort:{}?device=abacus",
        fixtures().join("mlp_fp32.onnx").display()
    ))
    .unwrap();
    let err = load(&spec, &opts).err().unwrap().to_string();
    assert!(err.contains("abacus"), "{err}");
}

#[test]
fn a_truncated_model_is_refused_before_onnxruntime_sees_it() {
    let Some(opts) = options() else { return };
    let spec = ModelSpec::parse(&format!(
        "ort:{}",
        fixtures().join("truncated.onnx").display()
    ))
    .unwrap();
    let err = load(&spec, &opts).err().unwrap().to_string();
    assert!(
        err.contains("truncated.onnx") && err.contains("not a valid ONNX model"),
        "{err}"
    );
}

//! onnxruntime references computed on the machine that runs the test (see
//! `tests/reference/ort_outputs.py`: fused INT8 kernels differ between CPUs, so numbers
//! committed from another machine do not hold). Included by test crates with
//! `#[path = "…/tests/reference/ort_refs.rs"] mod ort_refs;`.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use qgate_data::{load_npz, ArrayKeys, Dataset};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python with numpy and onnxruntime (`QGATE_TEST_PYTHON`, default `python3`).
pub fn python() -> String {
    std::env::var("QGATE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// onnxruntime's outputs of `models` (paths) on `data`, keyed `{stem}__{output}`, computed
/// here and now; `None` (with a note) when this machine's Python has no onnxruntime, which
/// is a failure under `QGATE_REQUIRE_ORT=1`.
pub fn onnxruntime_outputs(data: &Path, models: &[PathBuf]) -> Option<Dataset> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ort_outputs.npz");
    let status = Command::new(python())
        .arg(root().join("tests/reference/ort_outputs.py"))
        .arg(&out)
        .arg(data)
        .args(models)
        .output();
    let ok = match &status {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).to_string();
            note_or_panic(&format!("ort_outputs.py failed: {why}"));
            false
        }
        Err(e) => {
            note_or_panic(&format!("cannot run {}: {e}", python()));
            false
        }
    };
    ok.then(|| load_npz(&out, &ArrayKeys::default()).unwrap())
}

fn note_or_panic(why: &str) {
    if std::env::var("QGATE_REQUIRE_ORT").is_ok_and(|v| v == "1") {
        panic!("QGATE_REQUIRE_ORT=1 but no onnxruntime reference: {why}");
    }
    eprintln!("skipping onnxruntime reference comparison: {why}");
}

/// [`onnxruntime_outputs`] of `fixtures/digits/{variant}.onnx` on `fixtures/digits/test.npz`.
pub fn fixture_outputs(variants: &[&str]) -> Option<Dataset> {
    let dir = root().join("fixtures/digits");
    let models: Vec<PathBuf> = variants
        .iter()
        .map(|v| dir.join(format!("{v}.onnx")))
        .collect();
    onnxruntime_outputs(&dir.join("test.npz"), &models)
}

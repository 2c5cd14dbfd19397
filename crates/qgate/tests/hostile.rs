//! Hostile inputs, one test per root cause that the corpus (tests/hostile, run against the
//! release binary in CI) exercises broadly: sizes checked against the memory limit before
//! allocating, no stale PASS after an early error, reports moved into place whole, `inspect`
//! running the load checks, TOML errors that name line and key, and settings that name
//! things checked against what exists.

#![allow(clippy::unwrap_used)]

use std::path::Path;

mod common;

use common::{fx, qgate};

/// Runs the binary with exactly `args` (no `--out` added): `(exit code, stdout, stderr)`.
fn raw(args: &[&str]) -> (i32, String, String) {
    let r = common::exec(args);
    assert!(!r.stderr.contains("panicked at"), "panic: {}", r.stderr);
    (r.code.unwrap_or(-1), r.stdout, r.stderr)
}

/// The digits MLP with its input's batch dimension fixed to `batch`.
fn mlp_with_fixed_batch(dir: &Path, batch: i64) -> String {
    use qgate_runtime::onnx_pb as pb;
    let mut m = qgate_runtime::read_onnx(Path::new(&fx("mlp_fp32.onnx"))).unwrap();
    let input = &mut m.graph.as_mut().unwrap().input[0];
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("the MLP's input is a tensor")
    };
    t.shape.as_mut().unwrap().dim[0].value =
        Some(pb::tensor_shape_proto::dimension::Value::DimValue(batch));
    let path = dir.join(format!("batch_{batch}.onnx"));
    qgate_quant::write_model(&m, &path).unwrap();
    path.display().to_string()
}

/// A batch of 2^40 declared by the model, a resize to 100000×100000, an archive member
/// bigger than `--max-memory`: each refused before allocating, naming its source and the
/// flag that raises the limit.
#[test]
fn sizes_from_shapes_flags_and_archives_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let huge = mlp_with_fixed_batch(dir.path(), 1 << 40);
    let run = qgate(
        "compare",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &huge,
            "--data",
            &fx("test.npz"),
            "--no-runtime-check",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    for needle in [
        "batch_1099511627776.onnx",
        "fixed batch of 1099511627776",
        "--max-memory",
    ] {
        assert!(
            run.stderr.contains(needle),
            "'{needle}' missing: {}",
            run.stderr
        );
    }
    let run = qgate(
        "compare",
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_fp32.onnx"),
            "--data",
            &fx("images"),
            "--image-color",
            "gray",
            "--image-size",
            "100000x100000",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--image-size 100000x100000") && run.stderr.contains("--max-memory"),
        "{}",
        run.stderr
    );
    // test.npz's `x` member is 540 × 64 float32 = 135 KiB.
    let run = qgate(
        "compare",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--max-memory",
            "100KiB",
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("test.npz")
            && run.stderr.contains("needs 135 KiB")
            && run.stderr.contains("100 KiB (--max-memory)"),
        "{}",
        run.stderr
    );
    // A fixed batch that fits runs: padding to 600 rows, outputs of the 540 real ones.
    let fits = mlp_with_fixed_batch(dir.path(), 600);
    let run = qgate(
        "compare",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fits,
            "--data",
            &fx("test.npz"),
            "--no-runtime-check",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A flag clap refuses and a run config qgate refuses still settle `--out`: the earlier
/// PASS is replaced by an error report.
#[test]
fn an_early_error_never_leaves_an_earlier_pass_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let pass = |extra: &[&str]| {
        let mut args = vec![
            "compare",
            "--baseline",
            &fx("mlp_fp32.onnx") as &str,
            "--candidate",
            &fx("mlp_fp32.onnx") as &str,
            "--data",
            &fx("test.npz") as &str,
            "--out",
            o,
            "--no-progress",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        raw(&refs)
    };
    let verdict = || {
        let text = std::fs::read_to_string(out.join("report.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    for (bad, needle) in [
        (vec!["--batch-size", "0"], "--batch-size"),
        (vec!["--frobnicate"], "--frobnicate"),
        (
            vec!["--bootstrap-resamples", "1000000"],
            "--bootstrap-resamples",
        ),
    ] {
        let (code, _, err) = pass(&[]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(verdict()["verdict"], "pass");
        let (code, _, err) = pass(&bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
        let report = verdict();
        assert_eq!(report["verdict"], "error", "{bad:?}: {report}");
        assert!(
            report["error"].as_str().unwrap().contains(needle),
            "{report}"
        );
        assert!(
            !out.join("report.html").exists(),
            "{bad:?} left report.html"
        );
    }
    // The report folder named only by the run config.
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "baseline = \"{}\"\ncandidate = \"{}\"\ndata = \"{}\"\nout = \"out\"\nbatch-size = \"many\"\n",
            fx("mlp_fp32.onnx"),
            fx("mlp_fp32.onnx"),
            fx("test.npz")
        ),
    )
    .unwrap();
    let (code, _, _) = pass(&[]);
    assert_eq!(code, 0);
    let (code, _, err) = raw(&["compare", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(verdict()["verdict"], "error");
}

/// Reports are rendered beside `--out` and moved in whole: nothing of the staging folder
/// is left.
#[test]
fn reports_are_moved_into_place_whole() {
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("reports");
    let (code, _, err) = raw(&[
        "compare",
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &fx("mlp_int8_qdq.onnx"),
        "--data",
        &fx("test.npz"),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--no-runtime-check",
    ]);
    assert_eq!(code, 0, "{err}");
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(parent.path()), vec!["reports"]);
    assert_eq!(
        names(&out),
        vec!["junit.xml", "report.html", "report.json", "report.md"]
    );
}

/// `inspect` runs compare's load checks and lists what it finds, exiting 0 for a file it
/// could read.
#[test]
fn inspect_reports_load_problems_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let huge = mlp_with_fixed_batch(dir.path(), 1 << 40);
    let (code, out, err) = raw(&["inspect", &huge]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("runs in tract: no") && out.contains("--max-memory"),
        "{out}"
    );
    let (code, out, err) = raw(&["inspect", &fx("mlp_fp32.onnx")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("runs in tract: yes"), "{out}");
    let (code, out, _) = raw(&["inspect", "--json", &fx("cnn_int8_qop_contrib.onnx")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs_in_tract"]["runs"], false, "{v}");
    assert!(
        v["runs_in_tract"]["problem"]
            .as_str()
            .unwrap()
            .contains("QLinearAdd"),
        "{v}"
    );
    let (code, _, err) = raw(&["inspect", &fx("truncated.onnx")]);
    assert_eq!(code, 2, "{err}");
}

/// A TOML mistake's first line names the file, line, key and what was expected.
#[test]
fn toml_errors_name_the_key_on_the_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    for (text, first_line) in [
        (
            "batch-size = \"x\"\n",
            "line 1, key `batch-size`: invalid value 'x' for '--batch-size <N>': expected a whole number ≥ 1",
        ),
        (
            "[baseline]\ndevice = \"cpu\"\n",
            "line 1, table [baseline]: the table has no `spec`",
        ),
        (
            "baseline = 3\n",
            "line 1, key `baseline`: got an integer; expected a model spec",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let (code, _, err) = raw(&["compare", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        let first = err.lines().next().unwrap();
        assert!(
            first.contains("run.toml") && first.contains(first_line),
            "{text:?}: {first}"
        );
    }
}

/// A model of an opset from the future, an op of an unknown domain and an output nothing
/// writes: refused before tract guesses (it ran the first two and panicked on the third).
#[test]
fn graphs_onnxruntime_refuses_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = qgate_runtime::read_onnx(Path::new(&fx("mlp_fp32.onnx"))).unwrap();
    let mut future = base.clone();
    future.opset_import[0].version = 99;
    let mut foreign = base.clone();
    let n = foreign.graph.as_mut().unwrap().node.last_mut().unwrap();
    n.domain = "com.example".into();
    let mut orphan = base.clone();
    orphan.graph.as_mut().unwrap().output[0].name = "nowhere".into();
    for (model, name, needle) in [
        (future, "future.onnx", "opset 99 is newer"),
        (foreign, "foreign.onnx", "from com.example"),
        (
            orphan,
            "orphan.onnx",
            "graph output 'nowhere' is not written",
        ),
    ] {
        let path = dir.path().join(name);
        qgate_quant::write_model(&model, &path).unwrap();
        let run = qgate(
            "compare",
            &[
                "--baseline",
                &fx("mlp_fp32.onnx"),
                "--candidate",
                path.to_str().unwrap(),
                "--data",
                &fx("test.npz"),
            ],
            &[],
        );
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(name) && run.stderr.contains(needle),
            "{name}: {}",
            run.stderr
        );
    }
}

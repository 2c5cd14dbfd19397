//! The report contract. `docs/report.schema.json` is generated from qgate-report's own types
//! and must equal what they generate now: a field renamed in any crate whose results the
//! report carries breaks qgate-report's conversions at compile time, and a change to the
//! report types changes this file — a decision, made by regenerating it
//! (`QGATE_UPDATE_SNAPSHOTS=1 cargo test -p qgate --test report_schema`) and adding a line to
//! docs/report-schema.md's changelog. Every report a test writes is validated against it
//! (tests/common). The values of `report.json` and `report.md` for the bundled example and
//! a failing pair are insta snapshots (`cargo insta review`, or `INSTA_UPDATE=always`), with
//! what depends on the machine redacted: timings, the host, the checkout's path, and
//! floating-point figures rounded to 4 significant digits (CPUs differ in the last bits).

#![allow(clippy::unwrap_used)]

use serde_json::Value;

mod common;

use common::{ex, fx, qgate, root};

#[test]
fn published_schema_is_what_the_report_types_generate() {
    let text = serde_json::to_string_pretty(&qgate_report::json_schema()).unwrap() + "\n";
    let path = root().join("docs/report.schema.json");
    if std::env::var("QGATE_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let published = std::fs::read_to_string(&path).unwrap();
    assert!(
        published == text,
        "docs/report.schema.json differs from the schema the report types generate.\n\
         If the change is intended: QGATE_UPDATE_SNAPSHOTS=1 cargo test -p qgate --test \
         report_schema, and a changelog line in docs/report-schema.md"
    );
}

#[test]
fn the_schema_rejects_what_is_not_a_report() {
    // The validation in tests/common must be able to fail.
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        r#"{"schema_version": "1.5.0", "verdict": "pass"}"#,
        r#"{"schema_version": "1.5.0", "tool": {"name": "qgate", "version": "0"}, "command": "compare", "verdict": "maybe", "error": "x"}"#,
    ] {
        std::fs::write(dir.path().join("report.json"), bad).unwrap();
        let caught = std::panic::catch_unwind(|| common::assert_valid_report(dir.path()));
        assert!(caught.is_err(), "accepted: {bad}");
    }
}

/// Machine-dependent values replaced; floats rounded to 4 significant digits.
fn redact(v: &mut Value, checkout: &[String]) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                match k.as_str() {
                    "host" => *x = Value::String("[host]".into()),
                    "inference_seconds" => *x = Value::String("[seconds]".into()),
                    "version" | "runtime_version" if x.is_string() => {
                        *x = Value::String("[version]".into())
                    }
                    _ => redact(x, checkout),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| redact(x, checkout)),
        Value::Number(n) if n.is_f64() => {
            let rounded: f64 = format!("{:.3e}", n.as_f64().unwrap()).parse().unwrap();
            *v = serde_json::json!(rounded);
        }
        Value::String(s) => *s = strip_checkout(s, checkout),
        _ => {}
    }
}

/// The checkout's location (as given and canonical) replaced by `<root>`.
fn strip_checkout(s: &str, checkout: &[String]) -> String {
    checkout
        .iter()
        .fold(s.to_string(), |s, c| s.replace(c.as_str(), "<root>"))
}

fn checkout() -> Vec<String> {
    let given = root().display().to_string();
    let canonical = root().canonicalize().unwrap().display().to_string();
    vec![given, canonical]
}

#[test]
fn reports_of_the_bundled_example_and_a_failing_pair_keep_their_values() {
    let checkout = checkout();
    for (name, baseline, candidate, data, expected) in [
        (
            "bundled_example",
            ex("model_fp32.onnx"),
            ex("model_int8.onnx"),
            ex("test.npz"),
            0,
        ),
        (
            "failing_pair",
            fx("mlp_fp32.onnx"),
            fx("mlp_pruned.onnx"),
            fx("test.npz"),
            1,
        ),
    ] {
        let run = qgate(
            "compare",
            &[
                "--baseline",
                &baseline,
                "--candidate",
                &candidate,
                "--data",
                &data,
                "--no-runtime-check",
            ],
            &[],
        );
        assert_eq!(run.code, expected, "{name}: {}", run.stderr);
        let mut json = run.json();
        redact(&mut json, &checkout);
        insta::assert_json_snapshot!(format!("{name}.report.json"), json);
        let md = strip_checkout(&run.file("report.md"), &checkout);
        let md = md.replace(
            &format!("tract {}", json_version(&run.json())),
            "tract [version]",
        );
        insta::assert_snapshot!(format!("{name}.report.md"), md);
    }
}

/// The runtime version the report names (Markdown prints it beside the model).
fn json_version(report: &Value) -> String {
    report["baseline"]["runtime"]["runtime_version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

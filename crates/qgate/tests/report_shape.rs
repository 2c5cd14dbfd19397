//! The shape of `report.json` — every field path — for a passing pair, a failing pair and
//! a benchmark, against committed snapshots. A field renamed or moved in any crate whose
//! results the report carries changes the schema; this test makes that a decision: update
//! the snapshot (`QGATE_UPDATE_SNAPSHOTS=1 cargo test -p qgate --test report_shape`) and add a
//! line to docs/report-schema.md's changelog. Values are not compared (figures differ
//! between CPUs); subtrees that depend on the machine (host, environment, energy meters,
//! GPUs) are left out.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

mod common;

use common::{ex, fx, qgate};

/// Machine-dependent subtrees: their own key stays, what is below it does not.
const MACHINE: &[&str] = &[".host.", ".environment.", ".energy.", ".gpus[]"];

fn paths(v: &Value, at: String, out: &mut BTreeSet<String>) {
    if MACHINE.iter().any(|m| at.contains(m)) {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                paths(x, format!("{at}.{k}"), out);
            }
        }
        Value::Array(items) => {
            out.insert(format!("{at}[]"));
            if let Some(first) = items.first() {
                paths(first, format!("{at}[]"), out);
            }
        }
        _ => {
            out.insert(at);
        }
    }
}

fn check(name: &str, report: &Value) {
    let mut found = BTreeSet::new();
    paths(report, String::new(), &mut found);
    let text: String = found.iter().map(|p| format!("{p}\n")).collect();
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.paths"));
    if std::env::var("QGATE_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        std::fs::write(&file, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (QGATE_UPDATE_SNAPSHOTS=1 writes it)",
            file.display()
        )
    });
    let want: BTreeSet<&str> = want.lines().collect();
    let got: BTreeSet<&str> = text.lines().collect();
    let added: Vec<_> = got.difference(&want).collect();
    let removed: Vec<_> = want.difference(&got).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "report.json of {name} changed shape.\n  added: {added:?}\n  removed: {removed:?}\n\
         If intended: QGATE_UPDATE_SNAPSHOTS=1 cargo test -p qgate --test report_shape, and a \
         changelog line in docs/report-schema.md"
    );
}

#[test]
fn compare_reports_keep_their_shape() {
    for (name, baseline, candidate, data, expected) in [
        (
            "compare_pass",
            ex("model_fp32.onnx"),
            ex("model_int8.onnx"),
            ex("test.npz"),
            0,
        ),
        (
            "compare_fail",
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
        check(name, &run.json());
    }
}

#[test]
fn bench_reports_keep_their_shape() {
    let run = qgate(
        "bench",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_int8_qdq.onnx"),
            "--data",
            &fx("test.npz"),
            "--duration",
            "0.2",
            "--rounds",
            "2",
            "--sweep-duration",
            "0.1",
            "--batch-sizes",
            "1,4",
            "--concurrency",
            "1",
            "--load-fractions",
            "0.5",
            "--no-nvml",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    check("bench", &run.json());
}

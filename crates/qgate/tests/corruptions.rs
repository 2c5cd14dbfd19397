//! `--corruptions` end to end: the digits CNN with a gain control (FP32 answers a darkened
//! digit as a clean one) against its INT8 QDQ model, whose first activation keeps few levels
//! for dark inputs (fixtures/gen/corruptions_reference.py): they agree on clean digits and
//! part ways on dark ones, and `[slices."corruption=dark:5"]` catches it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fx, policy, qgate, root};
use serde_json::Value;

fn reference() -> Value {
    let p = root().join("fixtures/corruptions/reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn gain(extra: &[&str]) -> common::Run {
    let (b, c, d) = (
        fx("cnn_gain_fp32.onnx"),
        fx("cnn_gain_int8_qdq.onnx"),
        fx("test.npz"),
    );
    let mut args = vec!["--baseline", &b, "--candidate", &c, "--data", &d];
    args.extend_from_slice(extra);
    qgate("compare", &args, &[])
}

#[test]
fn fp32_and_int8_agree_on_clean_digits_and_part_on_dark_ones() {
    let (_d, p) = policy("[slices.\"corruption=dark:5\"]\nmax_accuracy_drop_pp = 2\n");
    let r = gain(&[
        "--corruptions",
        "dark",
        "--input-range",
        "0,1",
        "--policy",
        &p,
    ]);
    assert_eq!(r.code, 1, "the dark:5 table fails: {}", r.stderr);
    let j = r.json();
    let want = &reference()["gain_pair"];
    let clean = &j["comparison"];
    assert!(clean["negative_flips"].as_u64().unwrap() <= 3, "{clean}");
    assert_eq!(
        j["baseline"]["accuracy"], want["clean_baseline_accuracy"],
        "tract's FP32 equals onnxruntime's"
    );
    let c = &j["corruptions"];
    assert_eq!(c["array"], "image");
    let cells = c["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 5);
    for (cell, acc) in cells
        .iter()
        .zip(want["dark_baseline_accuracy"].as_array().unwrap())
    {
        // FP32 divides the brightness out: on every darkened copy it is what onnxruntime is.
        assert_eq!(&cell["baseline_accuracy"], acc, "{}", cell["slice"]);
    }
    let dark5 = &cells[4];
    assert_eq!(dark5["slice"], "corruption=dark:5");
    assert_eq!(dark5["significance"], "significant_drop", "{dark5}");
    assert!(dark5["extra_drop"].as_f64().unwrap() > 0.05, "{dark5}");
    assert!(
        dark5["negative_flips"].as_u64().unwrap() > 3 * clean["negative_flips"].as_u64().unwrap()
    );
    let crit = j["gate"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["slice"] == "corruption=dark:5")
        .unwrap()
        .clone();
    assert_eq!(crit["status"], "fail");
    assert!(
        c["mce"].as_f64().unwrap() > 1.0,
        "the candidate errs more: {}",
        c["mce"]
    );
    let html = r.file("report.html");
    assert!(
        html.contains("extra accuracy drop") && html.contains("· dark:5"),
        "heat map and thumbnails"
    );
    let md = r.file("report.md");
    assert!(
        md.contains("**Corruptions**") && md.contains("| dark |"),
        "{md}"
    );
}

#[test]
fn random_corruptions_are_reproducible_by_seed_and_every_cell_is_a_slice() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--corruptions",
            "noise,occlusion,blur,jpeg,rotate,contrast",
            "--severities",
            "1,5",
            "--input-range",
            "0,1",
            "--corruption-seed",
            "3",
        ];
        args.extend_from_slice(extra);
        gain(&args).json()
    };
    let (a, b) = (run(&[]), run(&[]));
    assert_eq!(a["corruptions"]["cells"], b["corruptions"]["cells"]);
    // A sample is corrupted by its own seed: the batch it falls in changes nothing.
    let other_batches = run(&["--batch-size", "7"]);
    let accs = |j: &Value| -> Vec<(Value, Value)> {
        j["corruptions"]["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["baseline_accuracy"].clone(), c["negative_flips"].clone()))
            .collect()
    };
    assert_eq!(accs(&a), accs(&other_batches));
    let names: Vec<&str> = a["corruptions"]["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["slice"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 12);
    assert!(names.contains(&"corruption=jpeg:5") && names.contains(&"corruption=noise:1"));
}

#[test]
fn corruptions_refuse_what_they_cannot_read_as_images() {
    let (b, c, d) = (fx("cnn_fp32.onnx"), fx("cnn_int8_qdq.onnx"), fx("test.npz"));
    let base = [
        "--baseline",
        b.as_str(),
        "--candidate",
        c.as_str(),
        "--data",
        d.as_str(),
    ];
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        qgate("compare", &args, &[])
    };
    with(&["--corruptions", "dark"]).assert_error(&["--input-range", "black and white"]);
    with(&["--corruptions", "fog", "--input-range", "0,1"]).assert_error(&["fog", "dark"]);
    with(&[
        "--corruptions",
        "dark",
        "--severities",
        "0",
        "--input-range",
        "0,1",
    ])
    .assert_error(&["--severities", "1 to 5"]);
    with(&["--severities", "2"]).assert_error(&["--severities", "--corruptions"]);
    // A declared normalisation the values cannot have come from.
    with(&[
        "--corruptions",
        "dark",
        "--input-range",
        "0,1",
        "--image-mean",
        "5",
    ])
    .assert_error(&["array 'image'", "outside [0, 1]"]);
    // The MLP reads a flat vector: not an image.
    let (mb, mc) = (fx("mlp_fp32.onnx"), fx("mlp_int8_qdq.onnx"));
    qgate(
        "compare",
        &[
            "--baseline",
            &mb,
            "--candidate",
            &mc,
            "--data",
            &d,
            "--corruptions",
            "dark",
            "--input-range",
            "0,1",
        ],
        &[],
    )
    .assert_error(&["array 'x'", "[N, C, H, W]"]);
    // Saved outputs answer the clean inputs.
    let preds = root()
        .join("fixtures/slices/base.npz")
        .display()
        .to_string();
    qgate(
        "compare",
        &[
            "--baseline",
            &format!("preds:{preds}"),
            "--candidate",
            &format!("preds:{preds}"),
            "--data",
            &d,
            "--corruptions",
            "dark",
            "--input-range",
            "0,1",
        ],
        &[],
    )
    .assert_error(&["cannot be corrupted"]);
    // An image folder knows its pixels.
    let folder = |extra: &[&str]| {
        let images = fx("images");
        let mut args = vec![
            "--baseline",
            b.as_str(),
            "--candidate",
            c.as_str(),
            "--data",
            images.as_str(),
            "--image-color",
            "gray",
            "--image-scale",
            "0.004166667",
        ];
        args.extend_from_slice(extra);
        qgate("compare", &args, &[])
    };
    folder(&["--corruptions", "dark", "--input-range", "0,1"])
        .assert_error(&["image folder", "--input-range"]);
    let folder = folder(&["--corruptions", "dark,jpeg", "--severities", "5"]);
    assert!(folder.code == 0 || folder.code == 1, "{}", folder.stderr);
    assert_eq!(
        folder.json()["corruptions"]["cells"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

//! The `qgate` binary end to end on the committed fixtures: pass, fail and error exits, the
//! report files, and bad inputs that must give a clear error (exit 2) and never a panic.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

mod common;

use assert_cmd::Command;
use common::{ex, fx, Run};
use serde_json::Value;

/// Runs `qgate compare` with `args` plus `--out` in a fresh temporary directory.
fn compare(args: &[&str]) -> Run {
    common::qgate("compare", args, &[])
}

/// An error run: exit 2 and a message containing every `needle`.
fn check_error(args: &[&str], needles: &[&str]) {
    compare(args).assert_error(needles);
}

#[test]
fn bundled_example_passes_with_every_report() {
    let run = compare(&[
        "--baseline",
        &ex("model_fp32.onnx"),
        "--candidate",
        &ex("model_int8.onnx"),
        "--data",
        &ex("test.npz"),
        "--policy",
        &ex("policy.toml"),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["schema_version"], qgate_report::SCHEMA_VERSION);
    assert_eq!(r["data"]["batch_size"], 32);
    assert_eq!(r["baseline"]["model"]["sha256"].as_str().unwrap().len(), 64);
    assert!(!r["host"]["cpu"].as_str().unwrap().is_empty());
    assert_eq!(r["verdict"], "pass");
    for side in ["baseline", "candidate"] {
        assert_eq!(r[side]["n_samples"], 540);
        let acc = r[side]["accuracy"].as_f64().unwrap();
        assert!((0.9..=1.0).contains(&acc), "{acc}");
        let pc = r[side]["per_class"].as_array().unwrap();
        assert_eq!(pc.len(), 10);
        for key in ["class", "name", "precision", "recall", "f1", "support"] {
            assert!(pc[3].get(key).is_some(), "per_class lacks {key}");
        }
        let cm = r[side]["confusion_matrix"].as_array().unwrap();
        let total: u64 = cm
            .iter()
            .flat_map(|row| row.as_array().unwrap())
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(total, 540);
    }
    let c = &r["comparison"];
    let delta = c["accuracy_delta"].as_f64().unwrap();
    let base = r["baseline"]["accuracy"].as_f64().unwrap();
    let cand = r["candidate"]["accuracy"].as_f64().unwrap();
    assert!((delta - (cand - base)).abs() < 1e-15);
    let ci = c["accuracy_delta_ci"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= delta && delta <= ci[1].as_f64().unwrap());
    let neg = c["negative_flips"].as_u64().unwrap();
    assert_eq!(c["flips"]["negative"].as_array().unwrap().len() as u64, neg);
    assert!(c["mcnemar_p"].as_f64().unwrap() > 0.0);
    assert!(c["top1_agreement"].as_f64().unwrap() > 0.97);
    for key in [
        "max_abs",
        "mean_abs",
        "cosine_mean",
        "sqnr_db",
        "kl_mean",
        "kl_p99",
    ] {
        assert!(
            c["divergence"]["logits"].get(key).is_some(),
            "divergence lacks {key}"
        );
    }
    // Thresholds say where they came from.
    let thresholds = r["gate"]["thresholds"].as_array().unwrap();
    let kl = thresholds
        .iter()
        .find(|t| t["key"] == "max_kl_mean")
        .unwrap();
    assert!(kl["source"]["path"]
        .as_str()
        .unwrap()
        .ends_with("policy.toml"));
    let f1 = thresholds
        .iter()
        .find(|t| t["key"] == "max_class_f1_drop_pp")
        .unwrap();
    assert_eq!(f1["source"]["kind"], "default");
    // The other reports.
    let md = run.file("report.md");
    assert!(
        md.contains("PASS") && md.contains("max_accuracy_drop_pp"),
        "{md}"
    );
    let html = run.file("report.html");
    assert!(html.contains("<svg") && html.contains("Confusion matrices"));
    for remote in ["src=\"http", "href=\"http", "@import", "<script"] {
        assert!(
            !html.contains(remote),
            "report must be self-contained and work offline: {remote}"
        );
    }
    let junit = run.file("junit.xml");
    assert!(
        junit.contains("<testcase") && junit.contains("failures=\"0\""),
        "{junit}"
    );
    assert_eq!(
        junit.matches("<testcase").count(),
        r["gate"]["criteria"].as_array().unwrap().len()
    );
    assert!(run.stdout.contains("PASS"));
}

#[test]
fn pruned_candidate_fails_with_the_reasons() {
    let run = compare(&[
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &fx("mlp_pruned.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["verdict"], "fail");
    let failed: Vec<&str> = r["gate"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(
        failed.contains(&"max_accuracy_drop_pp") && failed.contains(&"max_negative_flip_rate"),
        "{failed:?}"
    );
    let junit = run.file("junit.xml");
    assert!(junit.contains("<failure"), "{junit}");
    assert!(r["comparison"]["mcnemar_p"].as_f64().unwrap() < 1e-10);
    assert!(run.file("report.md").contains("FAIL"));
}

#[test]
fn nan_outputs_fail_never_pass() {
    let run = compare(&[
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &fx("mlp_nan.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    let finite = r["gate"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "finite_outputs")
        .unwrap()
        .clone();
    assert_eq!(finite["status"], "fail");
    assert!(
        finite["message"]
            .as_str()
            .unwrap()
            .contains("candidate on 540"),
        "{finite}"
    );
}

#[test]
fn a_strict_policy_fails_a_good_model() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("strict.toml");
    std::fs::write(
        &policy,
        "max_negative_flip_rate = 0.0\nmin_top1_agreement = 1.0\n",
    )
    .unwrap();
    let run = compare(&[
        "--baseline",
        &ex("model_fp32.onnx"),
        "--candidate",
        &ex("model_int8.onnx"),
        "--data",
        &ex("test.npz"),
        "--policy",
        policy.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
}

#[test]
fn same_model_twice_passes_with_zero_deltas() {
    let run = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_fp32.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["comparison"]["accuracy_delta"], 0.0);
    assert_eq!(r["comparison"]["mcnemar_p"], 1.0);
    assert_eq!(
        r["comparison"]["divergence"]["logits"]["sqnr_db"],
        Value::Null
    );
}

#[test]
fn run_config_file_with_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["model_fp32.onnx", "model_int8.onnx", "test.npz"] {
        std::fs::copy(ex(f), dir.path().join(f)).unwrap();
    }
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "baseline = \"model_fp32.onnx\"\ncandidate = \"model_int8.onnx\"\ndata = \"test.npz\"\nbatch-size = 64\ntop-k = 3\nlimit = 200\nseed = 4\n\n[policy]\nmax_accuracy_drop_pp = 2.0\n",
    )
    .unwrap();
    let run = compare(&["--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["data"]["n_samples"], 200);
    assert_eq!(r["baseline"]["top_k"], 3);
    let t = r["gate"]["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "max_accuracy_drop_pp")
        .unwrap()
        .clone();
    assert_eq!(t["value"], 2.0);
}

/// One run config for `check`, `bench` and `sensitivity`: every command reads its own
/// options from it (the benchmark's too), paths resolve against the file's folder, flags
/// win over the file, and another command's option is skipped with a note.
#[test]
fn one_run_config_serves_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "mlp_fp32.onnx",
        "mlp_int8_qdq.onnx",
        "test.npz",
        "calib.npz",
    ] {
        std::fs::copy(fx(f), dir.path().join(f)).unwrap();
    }
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "baseline = \"mlp_fp32.onnx\"\ncandidate = { spec = \"mlp_int8_qdq.onnx\" }\n\
         data = \"test.npz\"\nmodel = \"mlp_fp32.onnx\"\ncalibration = \"calib.npz\"\n\
         limit = 300\nlabel-key = \"label\"\nno-runtime-check = true\n\
         duration = 0.2\nrounds = 3\nno-sweeps = true\nlatency-batch = 2\nbench-seconds = 0\n\
         batch-sizes = [1, 4]\n\n[policy]\nmax_accuracy_drop_pp = 2.5\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let check = common::qgate("check", &["--config", config, "--rounds", "4"], &[]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    let r = check.json();
    assert_eq!(r["data"]["n_samples"], 300);
    // the benchmark's keys reached `check`; the flag beat the file's `rounds = 3`
    assert_eq!(r["performance"]["rounds"], 4, "{}", r["performance"]);
    assert_eq!(r["performance"]["batch_size"], 2);
    let threshold = |r: &Value| {
        r["gate"]["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == "max_accuracy_drop_pp")
            .map(|t| t["value"].clone())
    };
    assert_eq!(threshold(&r), Some(2.5.into()));
    for skipped in ["model", "calibration", "bench-seconds"] {
        assert!(
            check
                .stderr
                .contains(&format!("`{skipped}` is an option of `qgate sensitivity`")),
            "{skipped}: {}",
            check.stderr
        );
    }

    let bench = common::qgate("bench", &["--config", config], &[]);
    assert_eq!(bench.code, 0, "{}", bench.stderr);
    let b = bench.json();
    assert_eq!(b["performance"]["rounds"], 3);
    assert!(b["performance"]["baseline"]["runtime"]["spec"]
        .as_str()
        .unwrap()
        .ends_with("mlp_fp32.onnx"));
    assert!(bench
        .stderr
        .contains("`no-runtime-check` is an option of `qgate compare, check`"));

    let sens = common::qgate("sensitivity", &["--config", config], &[]);
    assert_eq!(sens.code, 0, "{}", sens.stderr);
    let s = sens.json();
    let calib = s["sensitivity"]["calibration"]["source"].as_str().unwrap();
    assert!(
        calib.starts_with(dir.path().join("calib.npz").to_str().unwrap()),
        "{calib}"
    );
    assert_eq!(threshold(&s), Some(2.5.into()));
}

/// `--help` prints the defaults the libraries use, not numbers typed beside the flags.
#[test]
fn help_shows_the_defaults_the_libraries_use() {
    let help = |cmd: &str| common::exec(&[cmd, "--help"]).stdout;
    // The help of `flag`: from its line to the next flag's.
    let entry = |text: &str, flag: &str| -> String {
        let start = text
            .find(&format!("      {flag} "))
            .unwrap_or_else(|| panic!("{flag} not in help"));
        let rest = &text[start + flag.len() + 6..];
        let end = rest.find("\n  -").unwrap_or(rest.len());
        rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let plan = qgate_bench::Plan::default();
    let eval = qgate_eval::EvalOptions::default();
    let sens = qgate_app::sensitivity::DEFAULT_BATCH_SIZE;
    for (cmd, flag, value) in [
        ("bench", "--rounds", plan.rounds.to_string()),
        ("bench", "--duration", plan.seconds.to_string()),
        ("check", "--warmup-max", plan.warmup_max_seconds.to_string()),
        ("bench", "--sweep-duration", plan.sweep_seconds.to_string()),
        ("compare", "--batch-size", eval.batch_size.to_string()),
        ("check", "--top-k", eval.top_k.to_string()),
        (
            "compare",
            "--bootstrap-resamples",
            eval.bootstrap.resamples.to_string(),
        ),
        ("sensitivity", "--batch-size", sens.to_string()),
    ] {
        let text = entry(&help(cmd), flag);
        assert!(
            text.contains(&format!("[default: {value}]")),
            "qgate {cmd} {flag}: {text}"
        );
    }
}

#[test]
fn a_run_config_key_is_checked_like_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (text, needles) in [
        (
            "rounds = \"many\"\n",
            vec!["line 1, key `rounds`", "invalid value 'many'"],
        ),
        (
            "no-sweeps = 1\n",
            vec!["`no-sweeps`", "expected true or false"],
        ),
        (
            "latency_batch = 2\n",
            vec!["unknown key", "did you mean `latency-batch`"],
        ),
        (
            "config = \"other.toml\"\n",
            vec!["`config`", "cannot name another run config"],
        ),
        (
            "[image]\nsize = [1]\n",
            vec!["table [image]", "expected [width, height]"],
        ),
        ("[image]\nsize = [0, 224]\n", vec!["table [image]", "≥ 1"]),
        (
            "batch-sizes = [\"a\"]\n",
            vec!["key `batch-sizes`", "'a' is not a valid value"],
        ),
        (
            "load-fractions = [0.5, -1]\n",
            vec!["key `load-fractions`", "positive numbers"],
        ),
        // A value starting with `-` is a value, not a flag: the run gets as far as the
        // missing models (and the note about compare's option names the file).
        (
            "image-mean = [-0.5, 0.2]\noutput-kind = \"odds\"\n",
            vec![
                "`output-kind` is an option of `qgate compare, check`",
                "missing --baseline",
            ],
        ),
    ] {
        let config = dir.path().join("run.toml");
        std::fs::write(&config, text).unwrap();
        let r = common::exec(&[
            "bench",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(r.code, Some(2), "{text}: {}", r.stderr);
        assert!(r.stderr.contains("run.toml"), "{text}: {}", r.stderr);
        for n in needles {
            assert!(r.stderr.contains(n), "{text}: no {n:?} in {}", r.stderr);
        }
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(report["verdict"], "error");
    }
}

#[test]
fn image_folder_data_gets_thumbnails_of_flips() {
    let run = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_int8_dynamic.onnx"),
        "--data",
        &fx("images"),
        "--image-color",
        "gray",
        "--image-scale",
        "0.004166667",
    ]);
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["data"]["n_samples"], 50);
    let flips = r["comparison"]["flip_details"].as_array().unwrap().len();
    let html = run.file("report.html");
    assert_eq!(html.matches("data:image/png;base64,").count(), flips);
}

#[test]
fn flipped_image_samples_get_thumbnails() {
    let run = compare(&[
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &fx("mlp_pruned.onnx"),
        "--data",
        &fx("test.npz"),
        "--input-key",
        "x",
    ]);
    let r = run.json();
    assert_eq!(
        r["comparison"]["flip_details"].as_array().unwrap().len(),
        216
    );
    // `x` is [N, 64]: not an image, so no thumbnail.
    assert_eq!(
        run.file("report.html")
            .matches("data:image/png;base64,")
            .count(),
        0
    );
    let run = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_int8_qdq.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    let r = run.json();
    let flips = r["comparison"]["flip_details"].as_array().unwrap().len();
    assert!(flips >= 1);
    assert_eq!(
        run.file("report.html")
            .matches("data:image/png;base64,")
            .count(),
        flips.min(48)
    );
}

#[test]
fn output_kind_and_output_name_are_honoured() {
    let run = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_fp32.onnx"),
        "--data",
        &fx("test.npz"),
        "--output",
        "probs",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["baseline"]["score_output"]["name"], "probs");
    assert_eq!(r["baseline"]["score_output"]["kind"], "probs");
    let run = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_fp32.onnx"),
        "--data",
        &fx("test.npz"),
    ]);
    let r = run.json();
    assert_eq!(r["baseline"]["score_output"]["name"], "logits");
    assert_eq!(r["baseline"]["score_output"]["kind"], "logits");
}

#[test]
fn truncated_model_is_an_error_naming_the_file() {
    check_error(
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("truncated.onnx"),
            "--data",
            &fx("test.npz"),
        ],
        &["truncated.onnx", "not a valid ONNX model"],
    );
}

#[test]
fn contrib_op_model_is_an_error_naming_node_and_op() {
    check_error(
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_int8_qop_contrib.onnx"),
            "--data",
            &fx("test.npz"),
        ],
        &["candidate", "QLinearAdd", "com.microsoft"],
    );
}

#[test]
fn missing_label_key_is_an_error_naming_it() {
    check_error(
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--label-key",
            "klass",
        ],
        &["klass", "test.npz"],
    );
}

#[test]
fn wrong_input_shape_is_an_error_naming_input_and_array() {
    // The CNN wants [N, 1, 8, 8]; the CSV holds [N, 64].
    check_error(
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_fp32.onnx"),
            "--data",
            &fx("test.csv"),
        ],
        &["'image'", "[N, 1, 8, 8]", "'features'"],
    );
}

#[test]
fn missing_input_array_is_an_error_listing_the_arrays() {
    check_error(
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--input-key",
            "pixels",
        ],
        &["pixels", "image", "x"],
    );
}

fn write_csv(dir: &Path, label: i64) -> PathBuf {
    let path = dir.join("one.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    let header: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
    writeln!(f, "id,{},label", header.join(",")).unwrap();
    writeln!(f, "a,{},{label}", vec!["0.5"; 64].join(",")).unwrap();
    path
}

#[test]
fn label_out_of_range_is_an_error_naming_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_csv(dir.path(), 12);
    check_error(
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            csv.to_str().unwrap(),
        ],
        &["label 12", "sample 'a'", "10 classes"],
    );
}

#[test]
fn non_numeric_cell_is_an_error_naming_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    // A numeric column with one text cell is a broken file.
    std::fs::write(&path, "p0,p1,label\n0.1,0.2,0\n0.1,zero,1\n").unwrap();
    let args = [
        "--baseline",
        &fx("mlp_fp32.onnx"),
        "--candidate",
        &fx("mlp_fp32.onnx"),
        "--data",
        path.to_str().unwrap(),
    ];
    check_error(&args, &["bad.csv", "line 3", "'p1'", "'zero'"]);
    // A column with no number at all is text, set aside; the shape error then says so.
    std::fs::write(&path, "p0,p1,label\n0.1,zero,1\n").unwrap();
    check_error(
        &args,
        &["expects shape", "'p1' is a text column", "bad.csv"],
    );
}

/// Writes an `.npz` holding `x` as a unicode array (wrong dtype for a model input) and int
/// labels.
fn write_string_npz(path: &Path) {
    use qgate_core::{Array, ArrayData};
    let x = Array::new(vec![2], ArrayData::Str(vec!["a".into(), "b".into()])).unwrap();
    let label = Array::new(vec![2], ArrayData::I64(vec![0, 1])).unwrap();
    let file = std::fs::File::create(path).unwrap();
    qgate_data::npy::write_npz(file, &[("x", &x), ("label", &label)]).unwrap();
}

#[test]
fn wrong_dtype_is_an_error_naming_the_array() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strings.npz");
    write_string_npz(&path);
    check_error(
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            path.to_str().unwrap(),
        ],
        &["'x'", "string", "expected numbers"],
    );
}

#[test]
fn malformed_policies_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("max_acc_drop = 1.0\n", "max_acc_drop"),
        ("max_accuracy_drop_pp = \"one\"\n", "max_accuracy_drop_pp"),
        ("max_negative_flip_rate = 3\n", "max_negative_flip_rate"),
        ("min_speedup = -1\n", "min_speedup"),
        ("max_accuracy_drop_pp = [\n", "policy"),
    ] {
        let p = dir.path().join("policy.toml");
        std::fs::write(&p, text).unwrap();
        check_error(
            &[
                "--baseline",
                &ex("model_fp32.onnx"),
                "--candidate",
                &ex("model_int8.onnx"),
                "--data",
                &ex("test.npz"),
                "--policy",
                p.to_str().unwrap(),
            ],
            &[needle, "policy.toml"],
        );
    }
}

/// `--limit 0` would leave no sample: refused by the flag's range (a data file with zero
/// samples is the corpus case data/zero-samples).
#[test]
fn a_limit_of_zero_is_an_error_naming_the_flag() {
    check_error(
        &[
            "--baseline",
            &ex("model_fp32.onnx"),
            "--candidate",
            &ex("model_int8.onnx"),
            "--data",
            &ex("test.npz"),
            "--limit",
            "0",
        ],
        &["--limit", "a whole number ≥ 1"],
    );
}

#[test]
fn a_missing_onnxruntime_library_says_how_to_get_one() {
    check_error(
        &[
            "--baseline",
            &ex("model_fp32.onnx"),
            "--candidate",
            &format!("ort:{}", ex("model_int8.onnx")),
            "--data",
            &ex("test.npz"),
            "--ort-lib",
            "/nonexistent/libonnxruntime.so.1.31.1",
        ],
        &[
            "candidate",
            "/nonexistent/libonnxruntime.so.1.31.1",
            "pip install onnxruntime==",
        ],
    );
}

#[test]
fn missing_required_option_is_an_error() {
    check_error(
        &[
            "--baseline",
            &ex("model_fp32.onnx"),
            "--data",
            &ex("test.npz"),
        ],
        &["--candidate"],
    );
}

#[test]
fn inspect_lists_io_ops_and_unsupported_nodes() {
    let o = Command::cargo_bin("qgate")
        .unwrap()
        .args(["inspect", &fx("cnn_int8_qop_contrib.onnx")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("image") && s.contains("[N, 1, 8, 8]"), "{s}");
    assert!(
        s.contains("QLinearConv") && s.contains("tract cannot run") && s.contains("QLinearAdd"),
        "{s}"
    );
    let o = Command::cargo_bin("qgate")
        .unwrap()
        .args(["inspect", "--json", &fx("mlp_fp32.onnx")])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["model"]["inputs"][0]["name"], "x");
    assert_eq!(v["tract_unsupported"].as_array().unwrap().len(), 0);
    let o = Command::cargo_bin("qgate")
        .unwrap()
        .args(["inspect", &fx("truncated.onnx")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn arrays_the_run_does_not_read_are_not_checked_but_listed() {
    // A file that also holds a second split, texts and indices of other lengths.
    let test = qgate_data::load_npz(
        std::path::Path::new(&fx("test.npz")),
        &qgate_data::ArrayKeys::default(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.npz");
    let other = test.arrays["x"].slice_rows(0, 100);
    let mask = qgate_core::Array::new(
        vec![100, 128],
        qgate_core::ArrayData::I64(vec![1; 100 * 128]),
    )
    .unwrap();
    let labels = qgate_core::Array::new(
        vec![540],
        qgate_core::ArrayData::I64(test.labels.clone().unwrap()),
    )
    .unwrap();
    let ids =
        qgate_core::Array::new(vec![540], qgate_core::ArrayData::Str(test.ids.to_vec())).unwrap();
    let file = std::fs::File::create(&path).unwrap();
    qgate_data::npy::write_npz(
        file,
        &[
            ("image", &test.arrays["image"]),
            ("x", &test.arrays["x"]),
            ("label", &labels),
            ("id", &ids),
            ("val_x", &other),
            ("sent_attention_mask", &mask),
        ],
    )
    .unwrap();
    let run = compare(&[
        "--baseline",
        &fx("cnn_fp32.onnx"),
        "--candidate",
        &fx("cnn_int8_qdq.onnx"),
        "--data",
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["data"]["n_samples"], 540);
    let ignored: Vec<(String, String)> = r["data"]["ignored_arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = ignored.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["sent_attention_mask", "val_x", "x"], "{ignored:?}");
    assert!(ignored[0].1.contains("[100, 128]"), "{ignored:?}");
    assert!(ignored[2].1.contains("not read"), "{ignored:?}");
    // Asked for, an unusable array is an error naming it and why.
    check_error(
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            path.to_str().unwrap(),
            "--input-key",
            "val_x",
        ],
        &["val_x", "100", "540"],
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `qgate inspect model.onnx | head -2`: stdout closed before qgate writes.
    use std::process::{Command, Stdio};
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("qgate"))
        .args(["inspect", &fx("cnn_fp32.onnx")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// Runs `qgate ARGS` with a 30 s limit (a hang fails instead of blocking CI); returns the
/// exit code (None when killed) and stderr.
fn run_limited(args: &[&str]) -> (Option<i32>, String) {
    let r = common::exec(args);
    (r.code, r.stderr)
}

#[test]
fn out_of_range_flags_name_the_flag_and_the_range() {
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap();
    let (base, data) = (fx("mlp_fp32.onnx"), fx("test.npz"));
    let compare = |extra: &[&str]| {
        let mut a = vec![
            "compare",
            "--baseline",
            &base,
            "--candidate",
            &base,
            "--data",
            &data,
            "--out",
            out,
        ];
        a.extend_from_slice(extra);
        run_limited(&a)
    };
    for (extra, needles) in [
        (
            vec!["--bootstrap-resamples", "0"],
            vec!["--bootstrap-resamples", "a whole number ≥ 1"],
        ),
        (
            vec!["--bootstrap-resamples", "1000000000"],
            vec!["--bootstrap-resamples", "1 to 100000"],
        ),
        (vec!["--timeout", "1e300"], vec!["--timeout", "86400"]),
        (
            vec!["--deployment-runtime", "bogus"],
            vec!["bogus", "tract, onnxruntime, kserve-v2"],
        ),
    ] {
        let (code, err) = compare(&extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{extra:?}: '{n}' missing from {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, err) = run_limited(&[
        "bench",
        "--baseline",
        &base,
        "--candidate",
        &base,
        "--out",
        out,
        "--duration",
        "1e300",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--duration") && err.contains("86400"), "{err}");
    let (code, err) = run_limited(&[
        "sensitivity",
        "--model",
        &fx("cnn_fp32.onnx"),
        "--data",
        &data,
        "--out",
        out,
        "--batch-size",
        "0",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--batch-size"), "{err}");
}

#[test]
fn a_named_pipe_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.onnx");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipping: mkfifo is not available");
        return;
    }
    let data_fifo = dir.path().join("data.npz");
    std::process::Command::new("mkfifo")
        .arg(&data_fifo)
        .status()
        .unwrap();
    let out = dir.path().join("out");
    let (fifo, data_fifo, out) = (
        fifo.to_str().unwrap(),
        data_fifo.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let (base, data) = (fx("mlp_fp32.onnx"), fx("test.npz"));
    for args in [
        vec![
            "compare",
            "--baseline",
            fifo,
            "--candidate",
            &base,
            "--data",
            &data,
            "--out",
            out,
        ],
        vec![
            "compare",
            "--baseline",
            &base,
            "--candidate",
            &base,
            "--data",
            data_fifo,
            "--out",
            out,
        ],
        vec!["inspect", fifo],
    ] {
        let (code, err) = run_limited(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
}

#[test]
fn a_runtime_panic_is_an_error_naming_the_model() {
    // ConstantOfShape of 2^40 floats: tract panics allocating it. Built here with the ONNX
    // protobuf types (no Python in tests).
    use qgate_runtime::onnx_pb as pb;
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("bomb.onnx");
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimParam(
                                "N".into(),
                            )),
                        },
                        pb::tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(64)),
                        },
                    ],
                }),
            })),
        }),
        ..Default::default()
    };
    let node = |op: &str, inputs: &[&str], out: &str| pb::NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            node: vec![
                node("ConstantOfShape", &["shape"], "big"),
                node("ReduceSum", &["big"], "s"),
                node("Add", &["x", "s"], "y"),
            ],
            initializer: vec![pb::TensorProto {
                name: "shape".into(),
                data_type: 7,
                dims: vec![2],
                int64_data: vec![1 << 20, 1 << 20],
                ..Default::default()
            }],
            input: vec![vi("x")],
            output: vec![vi("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    qgate_quant::write_model(&model, &model_path).unwrap();
    let m = model_path.to_str().unwrap();
    let (code, err) = run_limited(&[
        "compare",
        "--baseline",
        m,
        "--candidate",
        m,
        "--data",
        &fx("test.npz"),
        "--input-key",
        "x",
        "--limit",
        "4",
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bomb.onnx") && err.contains("internal panic") && !err.contains("panicked at"),
        "{err}"
    );
}

#[test]
fn an_error_never_leaves_an_earlier_pass_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let keep = out.join("notes.txt");
    let run = |candidate: &str| {
        run_limited(&[
            "compare",
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            candidate,
            "--data",
            &fx("test.npz"),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ])
    };
    let (code, err) = run(&fx("cnn_int8_qdq.onnx"));
    assert_eq!(code, Some(0), "{err}");
    std::fs::write(&keep, "the user's own file").unwrap();
    let (code, err) = run(&fx("truncated.onnx"));
    assert_eq!(code, Some(2), "{err}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "error");
    assert!(
        report["error"].as_str().unwrap().contains("truncated.onnx"),
        "{report}"
    );
    for stale in ["report.html", "report.md", "junit.xml"] {
        assert!(
            !out.join(stale).exists(),
            "{stale} from the passing run is still there"
        );
    }
    assert!(keep.exists(), "qgate removed a file that is not its own");
}

#[test]
fn an_empty_class_folder_is_an_error_unless_allowed() {
    // An empty `00` folder takes class index 0 and shifts every digit by one: both models
    // scored 11 % and the gate passed. Now it is an error naming the folder.
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    for entry in std::fs::read_dir(fx("images")).unwrap() {
        let class = entry.unwrap().path();
        let to = images.join(class.file_name().unwrap());
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&class).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(images.join("00")).unwrap();
    let out = dir.path().join("out");
    let args = |extra: &[&'static str]| {
        let mut a: Vec<String> = [
            "compare",
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_fp32.onnx"),
            "--data",
            images.to_str().unwrap(),
            "--image-color",
            "gray",
            "--image-scale",
            "0.004166667",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let a = args(&[]);
    let (code, err) = run_limited(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("00") && err.contains("--allow-empty-classes"),
        "{err}"
    );
    // Allowed, an empty class that sorts last shifts nothing: it is a class of zero samples.
    std::fs::remove_dir(images.join("00")).unwrap();
    std::fs::create_dir_all(images.join("zz_unused")).unwrap();
    let (code, err) = run_limited(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("zz_unused"), "{err}");
    let a = args(&["--allow-empty-classes"]);
    let (code, err) = run_limited(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{err}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["data"]["class_names"][10], "zz_unused", "{}", r["data"]);
}

#[test]
fn an_empty_out_in_a_run_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "baseline = {:?}\ncandidate = {:?}\ndata = {:?}\nout = \"\"\n",
            ex("model_fp32.onnx"),
            ex("model_int8.onnx"),
            ex("test.npz")
        ),
    )
    .unwrap();
    let (code, err) = run_limited(&["compare", "--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("out") && err.contains("empty"), "{err}");
    assert!(!dir.path().join("report.json").exists());
}

#[test]
fn two_producers_of_one_tensor_are_refused() {
    // The MLP with a second node writing `fc1`: onnxruntime refuses it, tract ran it.
    use qgate_runtime::onnx_pb as pb;
    let mut m = qgate_runtime::read_onnx(std::path::Path::new(&fx("mlp_fp32.onnx"))).unwrap();
    let g = m.graph.as_mut().unwrap();
    let mut dup = g
        .node
        .iter()
        .find(|n| n.output[0] == "fc1")
        .unwrap()
        .clone();
    dup.name = "fc1_add_again".into();
    let at = g.node.iter().position(|n| n.output[0] == "fc1").unwrap();
    g.node.insert(at + 1, pb::NodeProto { ..dup });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.onnx");
    qgate_quant::write_model(&m, &path).unwrap();
    let p = path.to_str().unwrap();
    let (code, err) = run_limited(&[
        "compare",
        "--baseline",
        p,
        "--candidate",
        p,
        "--data",
        &fx("test.npz"),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("'fc1'") && err.contains("fc1_add_again"),
        "{err}"
    );
}

//! `qgate bench` and `qgate check` end to end on tract with the committed fixtures: an A/A
//! run passes, a really slower candidate fails, the report carries the promised fields,
//! the worker's memory figures agree with the kernel's accounting, energy comes from a fake
//! RAPL tree, and bad input gives a clear error. Durations are short: these tests check
//! behaviour, not speed (speed figures come from `qgate bench` runs and `cargo bench`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod common;

use common::{fx, Run};

/// Short measurement so a run takes seconds.
const QUICK: &[&str] = &[
    "--duration",
    "0.6",
    "--rounds",
    "6",
    "--warmup-time",
    "0.1",
    "--warmup-max",
    "1",
    "--sweep-duration",
    "0.15",
    "--batch-sizes",
    "1,4",
    "--concurrency",
    "1,2",
    "--load-fractions",
    "0.5",
    "--offline-batch",
    "8",
    "--no-nvml",
];

fn qgate(cmd: &str, args: &[&str], quick: bool) -> Run {
    common::qgate(cmd, args, if quick { QUICK } else { &[] })
}

fn policy(dir: &Path, text: &str) -> String {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn an_a_a_bench_passes_and_reports_every_promised_field() {
    let tmp = tempfile::tempdir().unwrap();
    let pol = policy(
        tmp.path(),
        "min_speedup = 1.0\nmax_p99_ms = 1000\nmax_peak_rss_mb = 4000\nmax_joules_per_inference = 10\n",
    );
    let model = fx("cnn_fp32.onnx");
    let run = qgate(
        "bench",
        &[
            "--baseline",
            &model,
            "--candidate",
            &model,
            "--data",
            &fx("test.npz"),
            "--policy",
            &pol,
        ],
        true,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["command"], "bench");
    assert!(
        r.get("comparison").is_none(),
        "no accuracy section in a bench report"
    );
    let p = &r["performance"];
    for side in ["baseline", "candidate"] {
        let s = &p[side];
        let l = &s["latency_ms"];
        for k in ["mean", "std", "p50", "p90", "p95", "p99"] {
            assert!(l[k].as_f64().unwrap() > 0.0, "{side}.latency_ms.{k}: {l}");
        }
        assert!(l["p50"].as_f64() <= l["p99"].as_f64());
        assert!(s["throughput_per_s"].as_f64().unwrap() > 0.0);
        let file_bytes = std::fs::metadata(&model).unwrap().len();
        assert_eq!(s["model_bytes"].as_u64().unwrap(), file_bytes);
        let peak = s["peak_rss_bytes"].as_u64().unwrap();
        let after = s["memory"]["rss_after_load_bytes"].as_u64().unwrap();
        let before = s["memory"]["rss_before_load_bytes"].as_u64().unwrap();
        assert!(
            before > 0 && after >= before && peak >= after,
            "{}",
            s["memory"]
        );
        assert!(s["startup"]["load_ms"].as_f64().unwrap() > 0.0);
        assert!(s["startup"]["first_inference_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(s["output_check"]["mismatched_batches"], 0);
        assert!(s["utilisation"]["cores_busy"].as_f64().unwrap() > 0.0);
        assert_eq!(s["round_medians_ms"].as_array().unwrap().len(), 6);
        // Energy: not measurable in this container, said plainly, no figure.
        assert!(s["energy"]["joules_per_inference"].is_null());
        assert!(!s["energy"]["unavailable"].as_array().unwrap().is_empty());
    }
    let c = &p["comparison"];
    let sp = c["speedup"].as_f64().unwrap();
    let ci: Vec<f64> = c["speedup_ci"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(sp > 0.7 && sp < 1.4, "A/A speed-up {sp}");
    assert!(ci[0] <= sp && sp <= ci[1], "{ci:?}");
    assert_eq!(run.criterion("min_speedup")["status"], "pass");
    assert_eq!(run.criterion("max_p99_ms")["status"], "pass");
    assert_eq!(run.criterion("max_peak_rss_mb")["status"], "pass");
    assert_eq!(
        run.criterion("max_joules_per_inference")["status"],
        "skipped"
    );
    assert_eq!(run.criterion("same_outputs")["status"], "pass");
    // Sweeps as asked.
    let sw = &p["sweeps"];
    assert_eq!(sw["batch"].as_array().unwrap().len(), 2);
    assert_eq!(sw["concurrency"].as_array().unwrap().len(), 2);
    assert_eq!(sw["load"].as_array().unwrap().len(), 1);
    assert_eq!(sw["offline"]["batch"], 8);
    let b4 = &sw["batch"][1]["baseline"];
    assert!(b4["samples_per_s"].as_f64().unwrap() > b4["requests_per_s"].as_f64().unwrap());
    assert!(p["environment"]["logical_cores"].as_u64().unwrap() >= 1);
    assert!(p["baseline"]["timer_overhead"]["read_ns"].as_f64().unwrap() > 0.0);
    // Raw timings: one line per timed call and side.
    let csv = run.file("latencies.csv");
    let n = p["baseline"]["latency_ms"]["n"].as_u64().unwrap()
        + p["candidate"]["latency_ms"]["n"].as_u64().unwrap();
    assert_eq!(csv.lines().count() as u64, n + 1);
    assert!(csv.starts_with("side,round,call,latency_ms\nbaseline,0,0,"));
    let html = run.file("report.html");
    for needle in [
        "Latency CDF",
        "Latency histogram",
        "Throughput vs concurrency",
        "p99 latency vs offered load",
        "Environment",
    ] {
        assert!(html.contains(needle), "{needle} missing from the HTML");
    }
    assert!(run.file("report.md").contains("**Performance**"));
    assert!(run.file("junit.xml").contains("name=\"min_speedup\""));
}

#[test]
fn a_really_slower_candidate_fails_min_speedup() {
    let tmp = tempfile::tempdir().unwrap();
    let pol = policy(tmp.path(), "min_speedup = 1.0\n");
    // The wide CNN does several times the work of the small one on the same input.
    let run = qgate(
        "bench",
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_wide_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--policy",
            &pol,
            "--no-sweeps",
        ],
        false,
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let sp = run.json()["performance"]["comparison"]["speedup"]
        .as_f64()
        .unwrap();
    assert!(sp < 0.8, "speed-up {sp}");
    let c = run.criterion("min_speedup");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(run.stdout.contains("[FAIL] min_speedup"), "{}", run.stdout);
    assert!(run.file("junit.xml").contains("<failure"));
}

#[test]
fn synthetic_inputs_without_data_and_quantized_tract_note() {
    let run = qgate(
        "bench",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_int8_qdq.onnx"),
            "--no-sweeps",
            "--duration",
            "0.3",
            "--rounds",
            "3",
        ],
        false,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    let src = r["performance"]["candidate"]["workload"]["source"]
        .as_str()
        .unwrap();
    assert!(src.starts_with("synthetic"), "{src}");
    let kinds: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"tract_int8_speed"), "{kinds:?}");
}

#[test]
fn energy_comes_from_a_fake_rapl_tree_and_is_judged() {
    // A package drawing 40 W: the counter advances 200 000 µJ every 5 ms.
    let tree = tempfile::tempdir().unwrap();
    let zone = tree.path().join("class/powercap/intel-rapl:0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("name"), "package-0\n").unwrap();
    std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").unwrap();
    std::fs::write(zone.join("energy_uj"), "1000\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, file) = (stop.clone(), zone.join("energy_uj"));
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
                let uj = 1000 + (start.elapsed().as_secs_f64() * 40e6) as u64;
                let tmp = file.with_extension("tmp");
                std::fs::write(&tmp, format!("{uj}\n")).unwrap();
                std::fs::rename(&tmp, &file).unwrap();
            }
        })
    };
    let tmp = tempfile::tempdir().unwrap();
    let pol = policy(tmp.path(), "max_joules_per_inference = 1e-9\n");
    let run = qgate(
        "bench",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--policy",
            &pol,
            "--no-sweeps",
            "--no-nvml",
            "--duration",
            "1",
            "--rounds",
            "4",
            "--sysfs-root",
            tree.path().to_str().unwrap(),
        ],
        false,
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let e = &run.json()["performance"]["candidate"]["energy"];
    let src = &e["sources"][0];
    assert_eq!(src["source"], "rapl", "{e}");
    let w = src["mean_watts"].as_f64().unwrap();
    assert!(w > 28.0 && w < 52.0, "mean power {w} W, expected about 40");
    let jpi = e["joules_per_inference"].as_f64().unwrap();
    let calls = run.json()["performance"]["candidate"]["latency_ms"]["n"]
        .as_f64()
        .unwrap();
    let joules = src["joules"].as_f64().unwrap();
    assert!(
        ((jpi * calls) / joules - 1.0).abs() < 0.35,
        "{jpi} × {calls} vs {joules}"
    );
    assert_eq!(run.criterion("max_joules_per_inference")["status"], "fail");
}

#[test]
fn worker_memory_agrees_with_the_kernel() {
    use qgate_bench::protocol::{Init, LoadSpec, ProbeSpec, Request, Response};
    use qgate_bench::{ChildSide, Side, WorkloadSpec};
    let scratch = tempfile::tempdir().unwrap();
    let exe = assert_cmd::cargo::cargo_bin("qgate");
    let mut side = ChildSide::spawn(
        &exe,
        &["__worker"],
        Init {
            side: "candidate".into(),
            spec: fx("cnn_wide_fp32.onnx"),
            load: LoadSpec {
                python: "python3".into(),
                ..LoadSpec::default()
            },
            workload: WorkloadSpec::default(),
            probe: ProbeSpec {
                enable_nvml: false,
                ..ProbeSpec::default()
            },
        },
        1,
        scratch.path(),
    )
    .unwrap();
    let pid = side.startup().pid;
    assert_ne!(
        pid,
        std::process::id(),
        "the model must be measured in its own process"
    );
    let Response::Memory(m) = side.call(&Request::Memory).unwrap() else {
        panic!("expected a memory answer")
    };
    // The kernel's own accounting of that process, read from here.
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let kernel_rss = kb(&rollup, "Rss:");
    let rss = m.rss_bytes.unwrap();
    let ratio = rss as f64 / kernel_rss as f64;
    assert!(
        (0.95..1.05).contains(&ratio),
        "worker says {rss}, kernel {kernel_rss}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = kb(&status, "VmHWM:");
    assert!(
        m.peak_rss_bytes.unwrap() >= hwm.min(rss),
        "{m:?} vs VmHWM {hwm}"
    );
    assert!(m.peak_rss_bytes.unwrap() >= rss);
    drop(side);
    // The worker is gone after the side is dropped.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let gone = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| s.contains("State:\tZ"))
        .unwrap_or(true);
    assert!(gone, "worker {pid} still running");
}

#[test]
fn check_runs_accuracy_and_performance_into_one_verdict() {
    let ex = common::ex;
    let run = qgate(
        "check",
        &[
            "--baseline",
            &ex("model_fp32.onnx"),
            "--candidate",
            &ex("model_int8.onnx"),
            "--data",
            &ex("test.npz"),
            "--policy",
            &ex("policy.toml"),
            "--no-sweeps",
            "--duration",
            "0.4",
            "--rounds",
            "4",
            "--perf-samples",
            "64",
        ],
        false,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["command"], "check");
    assert!(r["comparison"]["accuracy_delta"].is_number());
    assert!(r["performance"]["comparison"]["speedup"].is_number());
    // The timed outputs were checked against the accuracy run's outputs.
    let oc = &r["performance"]["candidate"]["output_check"];
    assert_eq!(oc["reference_samples"], 64, "{oc}");
    assert_eq!(oc["reference_mismatches"], 0, "{oc}");
    assert_eq!(run.criterion("same_outputs")["status"], "pass");
    assert_eq!(run.criterion("max_accuracy_drop_pp")["status"], "pass");
    assert!(
        r["summary"].as_str().unwrap().contains("speed"),
        "{}",
        r["summary"]
    );
}

#[test]
fn check_measures_each_of_several_candidates_against_the_baseline() {
    let run = qgate(
        "check",
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_fp16.onnx"),
            "--candidate",
            &fx("cnn_int8_qdq.onnx"),
            "--data",
            &fx("test.npz"),
            "--no-sweeps",
            "--duration",
            "0.3",
            "--rounds",
            "4",
            "--perf-samples",
            "32",
        ],
        false,
    );
    assert!(run.code == 0 || run.code == 1, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["command"], "check");
    let cands = r["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 2);
    for c in cands {
        assert_eq!(c["command"], "check");
        let p = &c["performance"];
        assert!(p["comparison"]["speedup"].is_number(), "{p}");
        // Each pair's timed outputs were checked against its own accuracy run's outputs.
        let oc = &p["candidate"]["output_check"];
        assert_eq!(oc["reference_samples"], 32, "{oc}");
        assert_eq!(oc["reference_mismatches"], 0, "{oc}");
        assert!(c["candidate"]["runtime"]["spec"]
            .as_str()
            .unwrap()
            .ends_with(c["spec"].as_str().unwrap()));
    }
    let md = run.file("report.md");
    assert!(md.contains("× ["), "the ranking shows each speed-up: {md}");
    let csv = run.file("latencies.csv");
    for side in ["baseline-1,", "candidate-1,", "baseline-2,", "candidate-2,"] {
        assert!(csv.contains(side), "latencies.csv lacks {side}");
    }
}

#[test]
fn compare_lists_performance_keys_as_not_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let pol = policy(tmp.path(), "min_speedup = 1.2\n");
    let run = qgate(
        "compare",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_fp32.onnx"),
            "--data",
            &fx("test.npz"),
            "--policy",
            &pol,
        ],
        false,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let c = run.criterion("min_speedup");
    assert_eq!(c["status"], "skipped");
    assert!(
        c["message"].as_str().unwrap().contains("qgate bench"),
        "{c}"
    );
}

/// A model that answers NaN is as fast as one that answers: `bench` alone must not pass it.
#[test]
fn bench_fails_a_candidate_whose_outputs_are_nan() {
    let run = qgate(
        "bench",
        &[
            "--baseline",
            &fx("mlp_fp32.onnx"),
            "--candidate",
            &fx("mlp_nan.onnx"),
            "--no-sweeps",
            "--duration",
            "0.3",
            "--rounds",
            "3",
        ],
        false,
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let c = run.criterion("finite_timed_outputs");
    assert_eq!(c["status"], "fail", "{c}");
    let batches = run.json()["performance"]["candidate"]["output_check"]["batches"]
        .as_u64()
        .unwrap();
    assert!(batches > 0);
    // Every batch of mlp_nan holds NaN (its bias 3 is NaN); the baseline's none.
    assert_eq!(c["observed"].as_f64().unwrap(), batches as f64, "{c}");
}

#[test]
fn bad_bench_input_is_a_clear_error() {
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            vec![
                "--baseline".into(),
                fx("missing.onnx"),
                "--candidate".into(),
                fx("mlp_fp32.onnx"),
            ],
            vec!["baseline", "missing.onnx"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("truncated.onnx"),
            ],
            vec!["candidate", "truncated.onnx"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("cnn_int8_qop_contrib.onnx"),
            ],
            vec!["candidate", "QLinearAdd"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("cnn_fp32.onnx"),
                "--data".into(),
                fx("test.csv"),
            ],
            vec!["candidate", "expects shape"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("mlp_fp32.onnx"),
                "--batch-sizes".into(),
                "1,0".into(),
            ],
            vec!["--batch-sizes"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("mlp_fp32.onnx"),
                "--rounds".into(),
                "1".into(),
            ],
            vec!["--rounds"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("mlp_fp32.onnx"),
                "--output-tolerance".into(),
                "loose".into(),
            ],
            vec!["--output-tolerance", "loose"],
        ),
        (
            vec![
                "--baseline".into(),
                fx("mlp_fp32.onnx"),
                "--candidate".into(),
                fx("mlp_fp32.onnx"),
                "--shape".into(),
                "nope=1x64".into(),
            ],
            vec!["--shape nope", "no input 'nope'", "its inputs are"],
        ),
    ];
    for (args, needles) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        qgate("bench", &args, false).assert_error(&needles);
    }
}

#[test]
fn check_refuses_reference_outputs_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    for side in ["baseline", "candidate"] {
        std::fs::write(dir.path().join(format!("{side}.npz")), b"").unwrap();
    }
    let ex = common::ex;
    let run = qgate(
        "check",
        &[
            "--baseline",
            &ex("model_fp32.onnx"),
            "--candidate",
            &ex("model_int8.onnx"),
            "--data",
            &ex("test.npz"),
            "--reference-outputs",
            dir.path().to_str().unwrap(),
        ],
        false,
    );
    run.assert_error(&["--reference-outputs"]);
}

/// The data flags `compare` takes work for `bench` too (it reads no labels, but the same
/// command line must not be refused), and a key that does not exist is still named.
#[test]
fn bench_takes_the_data_flags_compare_takes() {
    let args = |label: &str| {
        vec![
            "--baseline".to_string(),
            fx("mlp_fp32.onnx"),
            "--candidate".into(),
            fx("mlp_fp32.onnx"),
            "--data".into(),
            fx("test.npz"),
            "--label-key".into(),
            label.into(),
            "--id-key".into(),
            "id".into(),
            "--no-sweeps".into(),
            "--duration".into(),
            "0.2".into(),
            "--rounds".into(),
            "2".into(),
        ]
    };
    let ok = args("label");
    let run = qgate(
        "bench",
        &ok.iter().map(String::as_str).collect::<Vec<_>>(),
        false,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bad = args("nolabel");
    let run = qgate(
        "bench",
        &bad.iter().map(String::as_str).collect::<Vec<_>>(),
        false,
    );
    run.assert_error(&["'nolabel'"]);
}

/// `bench` reads an image folder as `compare` does: a grayscale CNN needs `--image-color
/// gray`, which `bench` once lacked (it could only feed RGB and failed on the shape).
#[test]
fn bench_reads_image_folders_with_the_compare_image_options() {
    let args = |gray: bool| {
        let mut a = vec![
            "--baseline".to_string(),
            fx("cnn_fp32.onnx"),
            "--candidate".into(),
            fx("cnn_int8_qdq.onnx"),
            "--data".into(),
            fx("images"),
            "--image-scale".into(),
            (1.0f64 / 240.0).to_string(),
            "--no-sweeps".into(),
            "--duration".into(),
            "0.2".into(),
            "--rounds".into(),
            "2".into(),
        ];
        if gray {
            a.extend(["--image-color".into(), "gray".into()]);
        }
        a
    };
    let run = |a: Vec<String>| {
        qgate(
            "bench",
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            false,
        )
    };
    let ok = run(args(true));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let src = ok.json()["performance"]["candidate"]["workload"]["source"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        src.contains("images") && src.contains("50 samples"),
        "{src}"
    );
    let rgb = run(args(false));
    rgb.assert_error(&["expects shape"]);
}

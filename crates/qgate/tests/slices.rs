//! Slices, corrected tests and calibration end to end: `qgate compare --slices` on the saved
//! logits of two real fixture models (mlp_fp32 and mlp_pruned), every figure held to
//! fixtures/slices/reference.json (scikit-learn on the slice's rows, statsmodels'
//! McNemar and multipletests, numpy's ECE and Brier), written by
//! fixtures/gen/slices_reference.py.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fx, policy, qgate, root};
use serde_json::Value;

fn sl(name: &str) -> String {
    root()
        .join("fixtures/slices")
        .join(name)
        .display()
        .to_string()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(sl("reference.json")).unwrap()).unwrap()
}

fn pair() -> Vec<String> {
    vec![
        "--baseline".into(),
        format!("preds:{}", sl("base.npz")),
        "--candidate".into(),
        format!("preds:{}", sl("cand.npz")),
    ]
}

fn run(data: &str, extra: &[&str]) -> common::Run {
    let mut args = pair();
    args.extend(["--data".to_string(), data.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    qgate("compare", &args, extra)
}

fn close(a: &Value, b: &Value, what: &str) {
    let (x, y) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!((x - y).abs() <= 1e-9, "{what}: qgate {x}, reference {y}");
}

/// Each slice's figures against the reference's, side by side.
fn assert_slices_match(report: &Value, want: &Value) {
    let got = report["slices"]["slices"].as_array().unwrap();
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for w in want {
        let name = w["slice"].as_str().unwrap();
        let g = got
            .iter()
            .find(|g| g["slice"] == name)
            .unwrap_or_else(|| panic!("slice {name} missing"));
        assert_eq!(g["samples"], w["samples"], "{name}");
        assert_eq!(g["judged"], w["judged"], "{name}");
        assert_eq!(g["negative_flips"], w["negative_flips"], "{name}");
        assert_eq!(g["positive_flips"], w["positive_flips"], "{name}");
        close(
            &g["mcnemar_p"],
            &w["mcnemar_p"],
            &format!("{name} mcnemar_p"),
        );
        for key in ["ece_increase", "brier_increase"] {
            close(&g[key], &w[key], &format!("{name} {key}"));
        }
        for key in ["p_holm", "p_bh"] {
            match w.get(key) {
                Some(v) => close(&g[key], v, &format!("{name} {key}")),
                None => assert!(
                    g[key].is_null(),
                    "{name} {key}: a small slice is not tested"
                ),
            }
        }
        for side in ["baseline", "candidate"] {
            let (gs, ws) = (&g[side], &w[side]);
            let at = |k: &str| format!("{name} {side} {k}");
            close(&gs["accuracy"], &ws["accuracy"], &at("accuracy"));
            close(&gs["top_k_accuracy"], &ws["top_k_accuracy"], &at("top-5"));
            for avg in ["macro", "weighted"] {
                for m in ["precision", "recall", "f1"] {
                    close(
                        &gs[format!("{avg}_avg")][m],
                        &ws[format!("{avg}_{m}")],
                        &at(&format!("{avg} {m}")),
                    );
                }
            }
            for (c, class) in gs["per_class"].as_array().unwrap().iter().enumerate() {
                for m in ["precision", "recall", "f1"] {
                    close(&class[m], &ws[m][c], &at(&format!("class {c} {m}")));
                }
                assert_eq!(class["support"], ws["support"][c], "{}", at("support"));
            }
            assert_eq!(
                gs["confusion_matrix"],
                ws["confusion_matrix"],
                "{}",
                at("cm")
            );
        }
        let delta = g["candidate"]["accuracy"].as_f64().unwrap()
            - g["baseline"]["accuracy"].as_f64().unwrap();
        close(&g["accuracy_delta"], &Value::from(delta), name);
        let ci = g["accuracy_delta_ci"].as_array().unwrap();
        let d = g["accuracy_delta"].as_f64().unwrap();
        assert!(
            ci[0].as_f64().unwrap() <= d && d <= ci[1].as_f64().unwrap(),
            "{name}"
        );
    }
    // Worst first: judged slices, by accuracy change.
    let order: Vec<(bool, f64)> = got
        .iter()
        .map(|g| {
            (
                g["judged"].as_bool().unwrap(),
                g["accuracy_delta"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(order
        .windows(2)
        .all(|w| (w[0].0 && !w[1].0) || (w[0].0 == w[1].0 && w[0].1 <= w[1].1)));
}

#[test]
fn per_slice_figures_equal_sklearn_on_the_slice_rows_for_both_manifest_formats() {
    let want = reference();
    for manifest in ["digits_slices.csv", "digits_slices.jsonl"] {
        let r = run(&fx("test.npz"), &["--slices", &sl(manifest)]);
        assert_eq!(r.code, 1, "the pruned model fails the gate: {}", r.stderr);
        let j = r.json();
        assert_slices_match(&j, &want["slices"]);
        let s = &j["slices"];
        assert_eq!(s["unknown_ids"], want["manifest"]["unknown_ids"]);
        assert_eq!(s["unlisted_samples"], want["manifest"]["unlisted_samples"]);
        for t in s["tags"].as_array().unwrap() {
            let tag = t["tag"].as_str().unwrap();
            assert_eq!(t["untagged"], want["manifest"]["untagged"][tag], "{tag}");
        }
        let md = r.file("report.md");
        assert!(
            md.contains("3 manifest id(s) are not in the data") && md.contains("x9000"),
            "{md}"
        );
        assert!(
            md.contains("scanner=b") && md.contains("not judged"),
            "{md}"
        );
    }
}

#[test]
fn slice_arrays_of_the_archive_are_slices_too() {
    let r = run(&sl("test_tagged.npz"), &[]);
    let j = r.json();
    assert_slices_match(&j, &reference()["npz_slices"]);
    assert!(j["slices"]["source"]
        .as_str()
        .unwrap()
        .contains("slice_* arrays"));
    // A manifest defining a tag the archive already has is refused, naming it.
    run(
        &sl("test_tagged.npz"),
        &["--slices", &sl("digits_slices.csv")],
    )
    .assert_error(&["tag 'ink'", "slice_ink", "digits_slices.csv"]);
}

#[test]
fn classes_are_tested_with_holm_and_bh_and_calibration_equals_numpy() {
    let want = reference();
    let j = run(&fx("test.npz"), &[]).json();
    let classes = j["comparison"]["per_class"].as_array().unwrap();
    for w in want["classes"].as_array().unwrap() {
        let g = classes.iter().find(|c| c["class"] == w["class"]).unwrap();
        assert_eq!(g["negative_flips"], w["negative_flips"]);
        for key in ["mcnemar_p", "p_holm", "p_bh"] {
            close(&g[key], &w[key], &format!("class {} {key}", w["class"]));
        }
        let sig = g["significance"].as_str().unwrap();
        let holm = w["p_holm"].as_f64().unwrap();
        let worse = w["negative_flips"].as_u64() > w["positive_flips"].as_u64();
        assert_eq!(
            sig == "significant_drop",
            worse && holm < 0.05,
            "class {}",
            w["class"]
        );
    }
    for side in ["baseline", "candidate"] {
        let (g, w) = (&j["calibration"][side], &want["calibration"][side]);
        for key in ["ece", "ece_equal_mass", "mce", "brier"] {
            close(&g[key], &w[key], &format!("{side} {key}"));
        }
        let counts = |bins: &Value| -> Vec<u64> {
            bins.as_array()
                .unwrap()
                .iter()
                .map(|b| b["count"].as_u64().unwrap())
                .collect()
        };
        let wc = |k: &str| -> Vec<u64> {
            w[k].as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .collect()
        };
        assert_eq!(counts(&g["reliability"]), wc("width_counts"));
        assert_eq!(counts(&g["reliability_equal_mass"]), wc("mass_counts"));
        for (b, a) in g["reliability"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["width_accuracy"].as_array().unwrap())
        {
            if !a.is_null() {
                close(&b["accuracy"], a, &format!("{side} bin accuracy"));
            }
        }
    }
    close(
        &j["calibration"]["ece_increase"],
        &Value::from(
            want["calibration"]["candidate"]["ece"].as_f64().unwrap()
                - want["calibration"]["baseline"]["ece"].as_f64().unwrap(),
        ),
        "ece_increase",
    );
}

fn slice_criteria(r: &common::Run) -> Vec<Value> {
    r.json()["gate"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["slice"].is_null())
        .cloned()
        .collect()
}

#[test]
fn slice_tables_and_the_slice_default_judge_each_slice() {
    // Everything whole-set passes with loose keys; slices are judged on their own tables.
    let (_d, p) = policy(
        "max_accuracy_drop_pp = 100\nmin_relative_accuracy = 0\nmax_class_recall_drop_pp = 100\n\
         max_class_f1_drop_pp = 100\nmax_negative_flip_rate = 1\nmin_top1_agreement = 0\n\
         max_slice_accuracy_drop_pp = 45\nmax_ece_increase = 0.5\nmax_brier_increase = 1\n\
         [slices.\"ink=light\"]\nmax_accuracy_drop_pp = 40\nmax_negative_flip_rate = 0.5\n",
    );
    let r = run(
        &fx("test.npz"),
        &["--slices", &sl("digits_slices.csv"), "--policy", &p],
    );
    let crit = slice_criteria(&r);
    let find = |slice: &str, key: &str| {
        crit.iter()
            .find(|c| c["slice"] == slice && c["key"] == key)
            .unwrap_or_else(|| panic!("{slice} {key}: {crit:?}"))
            .clone()
    };
    // ink=medium drops 46.4 pp > 45 (the default); ink=light 35.4 pp ≤ its own 40.
    assert_eq!(find("ink=medium", "max_accuracy_drop_pp")["status"], "fail");
    assert_eq!(find("ink=light", "max_accuracy_drop_pp")["status"], "pass");
    assert_eq!(find("ink=light", "max_accuracy_drop_pp")["threshold"], 40.0);
    assert_eq!(
        find("ink=light", "max_negative_flip_rate")["status"],
        "pass"
    );
    assert_eq!(find("width=wide", "max_accuracy_drop_pp")["status"], "pass");
    let small = find("scanner=b", "max_accuracy_drop_pp");
    assert_eq!(small["status"], "skipped");
    assert!(small["message"]
        .as_str()
        .unwrap()
        .contains("26 sample(s), fewer than min_slice_samples = 30"));
    assert!(find("ink=medium", "max_accuracy_drop_pp")["message"]
        .as_str()
        .unwrap()
        .starts_with("slice ink=medium: "));
    assert_eq!(r.code, 1);
    assert_eq!(r.criterion("max_ece_increase")["status"], "pass");
    let junit = r.file("junit.xml");
    assert!(junit.contains("ink=medium"), "{junit}");

    // A lower min_slice_samples judges scanner=b too; a table naming no slice is an error.
    let (_d2, p2) = policy("min_slice_samples = 20\nmax_slice_accuracy_drop_pp = 50\n");
    let r = run(
        &fx("test.npz"),
        &["--slices", &sl("digits_slices.csv"), "--policy", &p2],
    );
    let crit = slice_criteria(&r);
    assert!(crit
        .iter()
        .any(|c| c["slice"] == "scanner=b" && c["status"] == "pass"));
    let (_d3, p3) = policy("[slices.\"ink=dark\"]\nmax_accuracy_drop_pp = 2\n");
    run(
        &fx("test.npz"),
        &["--slices", &sl("digits_slices.csv"), "--policy", &p3],
    )
    .assert_error(&["[slices.\"ink=dark\"]", "ink=light", "width=wide"]);
    run(&fx("test.npz"), &["--policy", &p3]).assert_error(&["ink=dark", "--slices"]);
}

#[test]
fn significant_slice_gate_fails_only_significant_drops() {
    // All five judged slices drop significantly; with a threshold of 40 pp, the two over it
    // fail under both rules, and scanner=b (not judged) is skipped.
    let (_d, p) = policy(
        "max_slice_accuracy_drop_pp = 40\nslice_gate = \"significant\"\nmin_slice_samples = 30\n",
    );
    let r = run(
        &fx("test.npz"),
        &["--slices", &sl("digits_slices.csv"), "--policy", &p],
    );
    let failed: Vec<String> = slice_criteria(&r)
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["slice"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed, vec!["ink=medium", "width=wide"]);
    // At a level no p-value here can reach, nothing is significant: over the threshold
    // but passing, and saying why.
    let (_d, p) = policy(
        "max_slice_accuracy_drop_pp = 40\nslice_gate = \"significant\"\nslice_alpha = 1e-40\n",
    );
    let r = run(
        &fx("test.npz"),
        &["--slices", &sl("digits_slices.csv"), "--policy", &p],
    );
    let crit = slice_criteria(&r);
    let medium = crit.iter().find(|c| c["slice"] == "ink=medium").unwrap();
    assert_eq!(medium["status"], "pass");
    assert!(medium["message"]
        .as_str()
        .unwrap()
        .contains("not significant after Holm's correction"));
    let slices = &r.json()["slices"]["slices"];
    assert!(slices
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["judged"] == true)
        .all(|s| s["significance"] == "could_be_noise"));
}

#[test]
fn bad_manifests_are_refused_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "noid.csv",
            "name,ink\n0,light\n",
            &["no `id` column", "name,ink"],
        ),
        (
            "dup.csv",
            "id,ink\n0,light\n0,heavy\n",
            &["line 3", "'0' is listed twice"],
        ),
        ("notag.csv", "id\n0\n", &["no tag column"]),
        (
            "bad.jsonl",
            "{\"id\": \"0\", \"ink\": \"light\"}\n[1,2]\n",
            &["line 2", "expected an object"],
        ),
        (
            "nested.jsonl",
            "{\"id\": \"0\", \"ink\": {\"a\": 1}}\n",
            &["line 1", "tag 'ink'"],
        ),
        ("eq.csv", "id,a=b\n0,x\n", &["a=b", "no `=`"]),
        ("x.txt", "id,ink\n", &["'.txt'", ".csv or .jsonl"]),
    ];
    for (name, text, needles) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let path = p.display().to_string();
        let r = run(&fx("test.npz"), &["--slices", &path]);
        let mut all = needles.to_vec();
        all.push(name);
        r.assert_error(&all);
    }
    run(&fx("test.npz"), &["--slices", "/nonexistent/m.csv"]).assert_error(&["/nonexistent/m.csv"]);
}

/// The three digits-CNN candidates of the fixtures against cnn_fp32, under a policy that
/// only the INT8 QDQ model fails (it turns 1 of 540 samples wrong: 0.00185 > 0.001).
fn three_candidates(p: &str, extra: &[&str]) -> common::Run {
    let (b, q, h, d) = (
        fx("cnn_fp32.onnx"),
        fx("cnn_int8_qdq.onnx"),
        fx("cnn_fp16.onnx"),
        fx("cnn_int8_dynamic.onnx"),
    );
    let data = fx("test.npz");
    let mut args = vec![
        "--baseline",
        &b,
        "--candidate",
        &q,
        "--candidate",
        &h,
        "--candidate",
        &d,
        "--data",
        &data,
        "--policy",
        p,
    ];
    args.extend_from_slice(extra);
    qgate("compare", &args, &[])
}

#[test]
fn three_digits_candidates_are_ranked_and_require_decides_the_exit_code() {
    let (_d, p) = policy("max_negative_flip_rate = 0.001\n");
    let all = three_candidates(&p, &[]);
    assert_eq!(
        all.code, 1,
        "--require all: the QDQ model fails\n{}",
        all.stderr
    );
    let any = three_candidates(&p, &["--require", "any"]);
    assert_eq!(any.code, 0, "--require any: two pass\n{}", any.stderr);
    let j = all.json();
    assert_eq!(j["require"], "all");
    assert!(j["candidate"].is_null() && j["comparison"].is_null());
    let crit = j["gate"]["criteria"].as_array().unwrap();
    assert_eq!(crit.len(), 1);
    assert_eq!(
        (&crit[0]["key"], &crit[0]["observed"], &crit[0]["threshold"]),
        (
            &Value::from("require_all"),
            &Value::from(2.0),
            &Value::from(3.0)
        )
    );
    assert_eq!(any.json()["gate"]["criteria"][0]["threshold"], 1.0);
    let cands = j["candidates"].as_array().unwrap();
    let ranked: Vec<(u64, u64, &str)> = cands
        .iter()
        .map(|c| {
            (
                c["rank"].as_u64().unwrap(),
                c["position"].as_u64().unwrap(),
                c["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    // Passing first (FP16 and INT8 dynamic, equal figures: command-line order), QDQ last.
    assert_eq!(ranked, vec![(1, 2, "pass"), (2, 3, "pass"), (3, 1, "fail")]);
    // Each entry is the single-candidate report of that pair, figure for figure.
    for c in cands {
        let spec = c["spec"].as_str().unwrap().to_string();
        let single = qgate(
            "compare",
            &[
                "--baseline",
                &fx("cnn_fp32.onnx"),
                "--candidate",
                &spec,
                "--data",
                &fx("test.npz"),
                "--policy",
                &p,
            ],
            &[],
        )
        .json();
        for key in ["comparison", "candidate", "gate", "calibration", "verdict"] {
            let (mut a, mut b) = (c[key].clone(), single[key].clone());
            // Wall time of inference differs between runs.
            for v in [&mut a, &mut b] {
                if let Some(o) = v.as_object_mut() {
                    o.remove("inference_seconds");
                }
            }
            assert_eq!(a, b, "{spec}: {key}");
        }
    }
    let junit = all.file("junit.xml");
    assert_eq!(junit.matches("<testsuite ").count(), 4, "{junit}");
    assert!(junit.contains("qgate.compare.candidate-1") && junit.contains("require_all"));
    let md = all.file("report.md");
    assert!(
        md.contains("3 candidates, require all") && md.contains("| 3 | `"),
        "{md}"
    );
    let html = all.file("report.html");
    assert!(html.contains("Candidates, best first") && html.contains("id=\"candidate-3\""));
}

#[test]
fn several_candidates_save_one_output_file_each_and_come_from_a_run_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "baseline = \"{}\"\ncandidate = [\"{}\", {{ spec = \"{}\" }}]\ndata = \"{}\"\nrequire = \"any\"\nsave-outputs = \"{}\"\n",
            fx("cnn_fp32.onnx"),
            fx("cnn_int8_qdq.onnx"),
            fx("cnn_fp16.onnx"),
            fx("test.npz"),
            dir.path().join("outs").display()
        ),
    )
    .unwrap();
    let r = qgate("compare", &["--config", &cfg.display().to_string()], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["candidates"].as_array().unwrap().len(), 2);
    for f in ["baseline.npz", "candidate-1.npz", "candidate-2.npz"] {
        assert!(dir.path().join("outs").join(f).is_file(), "{f}");
    }
    // Saved outputs replay as candidates.
    let replay = qgate(
        "compare",
        &[
            "--baseline",
            &format!("preds:{}", dir.path().join("outs/baseline.npz").display()),
            "--candidate",
            &format!(
                "preds:{}",
                dir.path().join("outs/candidate-2.npz").display()
            ),
            "--data",
            &fx("test.npz"),
        ],
        &[],
    );
    assert_eq!(replay.json()["comparison"]["negative_flips"], 0);
    // bench measures one candidate; --require needs several.
    qgate(
        "bench",
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_fp16.onnx"),
            "--candidate",
            &fx("cnn_int8_qdq.onnx"),
        ],
        &[],
    )
    .assert_error(&["--candidate given 2 times", "qgate check"]);
    qgate(
        "compare",
        &[
            "--baseline",
            &fx("cnn_fp32.onnx"),
            "--candidate",
            &fx("cnn_fp16.onnx"),
            "--data",
            &fx("test.npz"),
            "--require",
            "any",
        ],
        &[],
    )
    .assert_error(&["--require", "more than once"]);
}

#[test]
fn limit_keeps_the_files_slices_known_and_counts_the_selection() {
    // The first 5 samples: none tagged scanner=b, sample 0 not in the manifest.
    let (_d, p) = policy(
        "[slices.\"scanner=b\"]\nmax_accuracy_drop_pp = 1\nmin_speedup = 1.1\n[slices.\"ink=light\"]\nmin_speedup = 1.1\n",
    );
    let r = run(
        &fx("test.npz"),
        &[
            "--slices",
            &sl("digits_slices.csv"),
            "--policy",
            &p,
            "--limit",
            "5",
        ],
    );
    let crit = slice_criteria(&r);
    let scanner: Vec<&Value> = crit.iter().filter(|c| c["slice"] == "scanner=b").collect();
    assert_eq!(scanner.len(), 2, "{crit:?}");
    assert!(scanner.iter().all(|c| c["status"] == "skipped"));
    assert!(scanner[0]["message"]
        .as_str()
        .unwrap()
        .contains("0 sample(s)"));
    let speed = crit
        .iter()
        .find(|c| c["slice"] == "ink=light" && c["key"] == "min_speedup")
        .unwrap();
    assert!(speed["message"].as_str().unwrap().contains("not per slice"));
    assert_eq!(r.json()["slices"]["unlisted_samples"], 1);
    // A default for slices on data without any is said, not silently passed.
    let (_d, p) = policy("max_slice_accuracy_drop_pp = 2\n");
    let r = run(&fx("test.npz"), &["--policy", &p]);
    let c = slice_criteria(&r);
    assert!(c.is_empty());
    let skipped = r.criterion("max_slice_accuracy_drop_pp");
    assert_eq!(skipped["status"], "skipped");
    assert!(skipped["message"].as_str().unwrap().contains("no slices"));
}

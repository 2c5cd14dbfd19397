//! qgate's figures against the independent references in fixtures/digits/reference.json:
//! scikit-learn metrics, scipy's McNemar (binomtest) and paired bootstrap, and numpy/scipy
//! divergence, all computed by fixtures/gen/generate.py from onnxruntime's outputs.

#![allow(clippy::unwrap_used)]

use qgate_core::compare::{Comparison, PairInput, Predicted};
use qgate_core::divergence::tensor_divergence;
use qgate_core::metrics::{Metrics, Scores};
use qgate_core::policy::Policy;
use qgate_core::stats::BootstrapSettings;
use qgate_data::{load_npz, ArrayKeys, Dataset};
use qgate_eval::{evaluate_pair, EvalOptions};
use qgate_runtime::{load, LoadOptions, ModelSpec};
use serde_json::Value;

/// sklearn's and qgate's metric definitions agree to the last bits; 1e-9 leaves room for
/// summation order only.
const METRIC_TOL: f64 = 1e-9;
/// Two bootstraps with different generators (scipy 10 000 resamples, qgate 10 000) agree
/// within Monte-Carlo error: the interval ends are quantiles of a discrete distribution in
/// steps of 1/540; two steps.
const BOOTSTRAP_TOL: f64 = 2.0 / 540.0;

#[path = "../../../tests/reference/fixtures.rs"]
mod fixtures_dir;
use fixtures_dir::fixtures;

fn reference() -> Value {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn test_set() -> Dataset {
    load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap()
}

fn labels() -> Vec<usize> {
    test_set()
        .labels
        .unwrap()
        .iter()
        .map(|&y| y as usize)
        .collect()
}

fn logits(variant: &str) -> Scores {
    let refs = load_npz(&fixtures().join("ref_outputs.npz"), &ArrayKeys::default()).unwrap();
    let a = &refs.arrays[&format!("{variant}__logits")];
    Scores {
        n_samples: a.shape[0],
        n_classes: a.shape[1],
        values: a.to_f64().unwrap(),
    }
}

fn close(got: f64, want: &Value, what: &str) {
    let want = want
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: reference is {want}"));
    assert!(
        (got - want).abs() <= METRIC_TOL * (1.0 + want.abs()),
        "{what}: qgate {got}, reference {want}"
    );
}

fn metrics(variant: &str) -> Metrics {
    let s = logits(variant);
    let rows = qgate_core::rows::RowStats::from_scores(&s, &s.softmax(), &labels(), 3);
    Metrics::compute(&labels(), &s.argmax(), Some(&rows.top_k_hit), 10, 3, &[])
}

#[test]
fn every_metric_equals_sklearn() {
    let r = reference();
    for (variant, want) in r["models"].as_object().unwrap() {
        let m = metrics(variant);
        close(
            m.accuracy,
            &want["accuracy"],
            &format!("{variant} accuracy"),
        );
        close(
            m.top_k_accuracy.unwrap(),
            &want["top3_accuracy"],
            &format!("{variant} top3"),
        );
        for (c, w) in m
            .per_class
            .iter()
            .zip(want["per_class"].as_array().unwrap())
        {
            for key in ["precision", "recall", "f1"] {
                let got = match key {
                    "precision" => c.precision,
                    "recall" => c.recall,
                    _ => c.f1,
                };
                close(got, &w[key], &format!("{variant} class {} {key}", c.class));
            }
            assert_eq!(c.support, w["support"].as_u64().unwrap());
        }
        for (avg, w) in [
            (&m.macro_avg, &want["macro"]),
            (&m.weighted_avg, &want["weighted"]),
        ] {
            close(
                avg.precision,
                &w["precision"],
                &format!("{variant} avg precision"),
            );
            close(avg.recall, &w["recall"], &format!("{variant} avg recall"));
            close(avg.f1, &w["f1"], &format!("{variant} avg f1"));
        }
        let cm: Vec<Vec<u64>> = serde_json::from_value(want["confusion_matrix"].clone()).unwrap();
        assert_eq!(m.confusion_matrix, cm, "{variant} confusion matrix");
    }
}

fn pair(base: &str, cand: &str, resamples: usize) -> Comparison {
    let (sb, sc) = (logits(base), logits(cand));
    let labels = labels();
    let ids = test_set().ids;
    let (probs_b, probs_c) = (sb.softmax(), sc.softmax());
    let (pb, pc) = (
        Predicted::from_scores(&sb, &probs_b, &labels, 3),
        Predicted::from_scores(&sc, &probs_c, &labels, 3),
    );
    let kl = qgate_core::divergence::kl_summary(&probs_b, &probs_c).0;
    let same: Vec<bool> = (0..probs_b.n_samples)
        .map(|i| qgate_core::divergence::same_top_k(probs_b.row(i), probs_c.row(i), 3))
        .collect();
    let input = PairInput {
        labels: &labels,
        ids: &ids,
        n_classes: 10,
        top_k: 3,
        class_names: &[],
        baseline: &pb,
        candidate: &pc,
        kl: Some(&kl),
        top_k_same: Some(&same),
        bootstrap: BootstrapSettings {
            resamples,
            confidence: 0.95,
            seed: 1,
        },
        class_recall_drop_pp: 5.0,
        class_f1_drop_pp: 5.0,
        alpha: 0.05,
    };
    Comparison::compute(&input, &metrics(base), &metrics(cand))
}

#[test]
fn pair_statistics_equal_scipy() {
    let r = reference();
    for (name, want) in r["pairs"].as_object().unwrap() {
        let (b, c) = (
            want["baseline"].as_str().unwrap(),
            want["candidate"].as_str().unwrap(),
        );
        let cmp = pair(b, c, 10_000);
        close(
            cmp.accuracy_delta,
            &want["accuracy_delta"],
            &format!("{name} accuracy_delta"),
        );
        close(
            cmp.macro_f1_delta,
            &want["macro_f1_delta"],
            &format!("{name} macro_f1_delta"),
        );
        close(
            cmp.mcnemar_p,
            &want["mcnemar_p"],
            &format!("{name} mcnemar_p"),
        );
        assert_eq!(
            cmp.negative_flips,
            want["negative_flips"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            cmp.positive_flips,
            want["positive_flips"].as_u64().unwrap(),
            "{name}"
        );
        close(
            cmp.top1_agreement,
            &want["top1_agreement"],
            &format!("{name} top1_agreement"),
        );
        close(
            cmp.top_k_agreement.unwrap(),
            &want["top3_agreement"],
            &format!("{name} top3_agreement"),
        );
        for (got, key) in [
            (cmp.accuracy_delta_ci, "bootstrap_accuracy_delta_ci"),
            (cmp.macro_f1_delta_ci, "bootstrap_macro_f1_delta_ci"),
        ] {
            let w: [f64; 2] = serde_json::from_value(want[key].clone()).unwrap();
            for (g, w) in got.iter().zip(w) {
                assert!(
                    (g - w).abs() <= BOOTSTRAP_TOL,
                    "{name} {key}: qgate {got:?}, scipy {w}"
                );
            }
        }
        let kl = cmp.kl.unwrap();
        let d = &want["divergence"];
        close(kl.mean, &d["kl_mean"], &format!("{name} kl_mean"));
        close(kl.p95, &d["kl_p95"], &format!("{name} kl_p95"));
        close(kl.p99, &d["kl_p99"], &format!("{name} kl_p99"));
        close(kl.max, &d["kl_max"], &format!("{name} kl_max"));
        let (sb, sc) = (logits(b), logits(c));
        let t = tensor_divergence(&sb.values, &sc.values, 10);
        close(t.max_abs, &d["max_abs"], &format!("{name} max_abs"));
        close(t.mean_abs, &d["mean_abs"], &format!("{name} mean_abs"));
        close(
            t.cosine_mean,
            &d["cosine_mean"],
            &format!("{name} cosine_mean"),
        );
        match (t.sqnr_db, d["sqnr_db"].as_f64()) {
            (Some(g), Some(_)) => close(g, &d["sqnr_db"], &format!("{name} sqnr_db")),
            (None, None) => {}
            (g, w) => panic!("{name} sqnr_db: qgate {g:?}, reference {w:?}"),
        }
        let per_class: Vec<f64> =
            serde_json::from_value(want["class_recall_delta"].clone()).unwrap();
        let mut by_class = cmp.per_class.clone();
        by_class.sort_by_key(|d| d.class);
        for (d, w) in by_class.iter().zip(per_class) {
            close(
                d.recall_delta,
                &Value::from(w),
                &format!("{name} class {} recall delta", d.class),
            );
        }
    }
}

#[test]
fn bootstrap_is_reproducible_and_seed_dependent() {
    let a = pair("mlp_fp32", "mlp_pruned", 500);
    let b = pair("mlp_fp32", "mlp_pruned", 500);
    assert_eq!(a.accuracy_delta_ci, b.accuracy_delta_ci);
    assert!(a.accuracy_delta_ci[0] < a.accuracy_delta && a.accuracy_delta < a.accuracy_delta_ci[1]);
}

/// The whole evaluation through tract on a pair tract runs bit-exactly like onnxruntime
/// (dynamic INT8; one batch of all samples, since dynamic quantization depends on the batch).
#[test]
fn end_to_end_through_tract_equals_the_reference() {
    let r = reference();
    let want = &r["pairs"]["mlp_fp32__vs__mlp_int8_dynamic"];
    let (mut base, mut cand) = (fixture_model("mlp_fp32"), fixture_model("mlp_int8_dynamic"));
    let opts = EvalOptions {
        batch_size: 540,
        top_k: 3,
        ..EvalOptions::default()
    };
    let eval = evaluate_pair(
        base.as_mut(),
        cand.as_mut(),
        &test_set(),
        &Policy::default(),
        &opts,
        &mut |_, _, _| {},
    )
    .unwrap();
    close(
        eval.baseline.metrics.accuracy,
        &r["models"]["mlp_fp32"]["accuracy"],
        "baseline accuracy",
    );
    close(
        eval.candidate.metrics.accuracy,
        &r["models"]["mlp_int8_dynamic"]["accuracy"],
        "candidate accuracy",
    );
    close(eval.comparison.mcnemar_p, &want["mcnemar_p"], "mcnemar");
    close(
        eval.comparison.kl.as_ref().unwrap().mean,
        &want["divergence"]["kl_mean"],
        "kl mean",
    );
    let logits = eval
        .divergence
        .iter()
        .find(|d| d.output == "logits")
        .unwrap();
    close(
        logits.tensor.max_abs,
        &want["divergence"]["max_abs"],
        "max_abs",
    );
    assert_eq!(eval.baseline.scores.name, "logits");
    assert_eq!(eval.baseline.scores.kind, qgate_eval::OutputKind::Logits);
    assert_eq!(eval.n_samples, 540);
}

/// Reading the data from its file batch by batch (every array left in the file) and
/// reading it whole give the same evaluation, figure for figure, whatever the batch size;
/// and the lockstep's divergence sums equal the divergence of the whole output tensors.
#[test]
fn streamed_data_gives_the_same_evaluation() {
    let (mut base, mut cand) = (fixture_model("cnn_fp32"), fixture_model("cnn_int8_qdq"));
    let lazy =
        qgate_data::load_npz_streaming(&fixtures().join("test.npz"), &ArrayKeys::default(), 0)
            .unwrap();
    assert!(lazy.stored.contains_key("image") && lazy.arrays.is_empty());
    let mut figures = |data: &Dataset, batch_size: usize, keep: usize| {
        let (mut v, e) = evaluation_figures([base.as_mut(), cand.as_mut()], data, batch_size, keep);
        v["batch_size"] = Value::Null;
        (v, e)
    };
    let (whole, kept) = figures(&test_set(), 32, usize::MAX);
    assert_eq!(figures(&lazy, 32, 0).0, whole);
    // (tract's float sums depend on the batch size: each size against itself; 540 = 77·7 + 1)
    assert_eq!(figures(&lazy, 7, 0).0, figures(&test_set(), 7, 0).0);
    // The running sums against the divergence of the stacked outputs.
    let (b, c) = (&kept.baseline.outputs[0].1, &kept.candidate.outputs[0].1);
    let want = tensor_divergence(&b.to_f64().unwrap(), &c.to_f64().unwrap(), b.row_len());
    assert_eq!(kept.divergence[0].tensor, want);
    // KL and top-k agreement from the kept logits, the way they were computed whole.
    let scores = |a: &qgate_core::Array| Scores {
        n_samples: a.shape[0],
        n_classes: a.shape[1],
        values: a.to_f64().unwrap(),
    };
    let (pb, pc) = (scores(b).softmax(), scores(c).softmax());
    let kl = qgate_core::divergence::kl_summary(&pb, &pc).1;
    assert_eq!(kept.comparison.kl.as_ref().unwrap(), &kl);
    assert_eq!(
        kept.comparison.top_k_agreement.unwrap(),
        qgate_core::divergence::top_k_agreement(&pb, &pc, 5)
    );
}

/// An image folder left in its files (decoded a batch at a time) gives the evaluation the
/// folder decoded whole gives.
#[test]
fn streamed_image_folder_gives_the_same_evaluation() {
    let (mut base, mut cand) = (fixture_model("cnn_fp32"), fixture_model("cnn_int8_dynamic"));
    let pre = qgate_data::ImagePreprocess {
        color: qgate_data::ColorMode::Gray,
        scale: 0.004166667,
        ..qgate_data::ImagePreprocess::default()
    };
    let dir = fixtures().join("images");
    let whole = qgate_data::load_image_folder_streaming(&dir, &pre, u64::MAX).unwrap();
    let lazy = qgate_data::load_image_folder_streaming(&dir, &pre, 0).unwrap();
    assert!(lazy.stored.contains_key("image") && lazy.arrays.is_empty());
    let mut figures =
        |data: &Dataset| evaluation_figures([base.as_mut(), cand.as_mut()], data, 16, 0).0;
    let want = figures(&whole);
    assert_eq!(want["n_samples"], 50);
    assert_eq!(figures(&lazy), want);
}

/// A table left in its CSV file (records parsed a batch at a time) and an archive's
/// deflated members (decompressed forward a batch at a time) give the evaluation their data
/// read whole gives.
#[test]
fn streamed_csv_and_deflated_members_give_the_same_evaluation() {
    let (mut base, mut cand) = (fixture_model("mlp_fp32"), fixture_model("mlp_int8_dynamic"));
    let path = fixtures().join("test.csv");
    let whole = Dataset::load(&path, &ArrayKeys::default(), &Default::default()).unwrap();
    let lazy = qgate_data::load_csv_streaming(&path, &Default::default(), 0).unwrap();
    assert!(lazy.stored.contains_key("features") && lazy.arrays.is_empty());
    let mut figures =
        |data: &Dataset| evaluation_figures([base.as_mut(), cand.as_mut()], data, 32, 0).0;
    let want = figures(&whole);
    assert_eq!(want["n_samples"], 540);
    assert_eq!(figures(&lazy), want);

    let (mut base, mut cand) = (fixture_model("cnn_fp32"), fixture_model("cnn_int8_qdq"));
    let path = fixtures().join("test_compressed.npz");
    let mut lazy = qgate_data::load_npz_streaming(&path, &ArrayKeys::default(), 0).unwrap();
    assert!(lazy.stored.contains_key("image") && lazy.arrays.is_empty());
    let whole = test_set();
    lazy.source = whole.source.clone();
    let mut figures =
        |data: &Dataset| evaluation_figures([base.as_mut(), cand.as_mut()], data, 32, 0).0;
    assert_eq!(figures(&lazy), figures(&whole));
}

/// A probabilities output whose first batch holds no finite row (its samples' images are
/// infinite) is still read as probabilities once a batch with finite rows shows it: the same
/// kind, confidences and Brier score as when the first batch decides (one batch of all
/// 540), instead of a softmax over probabilities.
#[test]
fn a_first_batch_without_a_finite_row_does_not_decide_the_output_kind() {
    let (mut base, mut cand) = (
        fixture_model("cnn_probs_fp32"),
        fixture_model("cnn_probs_int8_qdq"),
    );
    let mut data = test_set();
    let image = data.arrays.get_mut("image").unwrap();
    let row = image.row_len();
    let qgate_core::ArrayData::F32(values) = &mut image.data else {
        panic!("image is float32");
    };
    values[..32 * row]
        .iter_mut()
        .for_each(|v| *v = f32::INFINITY);
    let mut run =
        |batch: usize| evaluation_figures([base.as_mut(), cand.as_mut()], &data, batch, 0).1;
    let (late, whole) = (run(32), run(540));
    // The FP32 model's infinite inputs give NaN rows; the INT8 model clips them when it
    // quantizes its input (and tract's quantized Softmax rows do not sum to 1: logits).
    assert_eq!(late.baseline.scores.kind, qgate_eval::OutputKind::Probs);
    assert_eq!(late.baseline.non_finite_samples, 32);
    for (side, want) in [
        (&late.baseline, &whole.baseline),
        (&late.candidate, &whole.candidate),
    ] {
        assert_eq!(side.scores.kind, want.scores.kind);
        assert_eq!(side.scores.kind_by, want.scores.kind_by);
        assert_eq!(side.metrics.accuracy, want.metrics.accuracy);
    }
    let (got, want) = (
        late.calibration.as_ref().unwrap(),
        whole.calibration.as_ref().unwrap(),
    );
    for (g, w) in [
        (&got.baseline, &want.baseline),
        (&got.candidate, &want.candidate),
    ] {
        assert_eq!(g.samples, 540 - 32);
        for (a, b) in [(g.brier, w.brier), (g.mean_confidence, w.mean_confidence)] {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}

/// A fixture model (`fixtures/digits/{variant}.onnx`) loaded with the default options.
fn fixture_model(variant: &str) -> Box<dyn qgate_runtime::Model> {
    let path = fixtures().join(format!("{variant}.onnx"));
    load(
        &ModelSpec::parse(path.to_str().unwrap()).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// `evaluate_pair` with the default policy, as JSON without the timings (which differ from
/// run to run), and the evaluation itself.
fn evaluation_figures(
    [base, cand]: [&mut dyn qgate_runtime::Model; 2],
    data: &Dataset,
    batch_size: usize,
    keep_outputs: usize,
) -> (Value, qgate_eval::Evaluation) {
    let opts = EvalOptions {
        batch_size,
        keep_outputs,
        ..EvalOptions::default()
    };
    let e = evaluate_pair(
        base,
        cand,
        data,
        &Policy::default(),
        &opts,
        &mut |_, _, _| {},
    )
    .unwrap();
    let mut v = serde_json::to_value(&e).unwrap();
    for side in ["baseline", "candidate"] {
        v[side]["inference_seconds"] = Value::Null;
    }
    (v, e)
}

//! Evaluation mechanics with mock models whose outputs are known: fixed batch sizes,
//! several inputs, label outputs, probability detection.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use qgate_core::policy::Policy;
use qgate_core::{Array, ArrayData, ElemType};
use qgate_data::Dataset;
use qgate_eval::{evaluate_pair, EvalOptions, InputMapping, OutputKind};
use qgate_runtime::mock::MockModel;
use qgate_runtime::{Dim, ModelInfo, TensorInfo};

fn info(inputs: &[(&str, Vec<Dim>)], outputs: &[(&str, ElemType, Vec<Dim>)]) -> ModelInfo {
    ModelInfo {
        inputs: inputs
            .iter()
            .map(|(n, s)| TensorInfo {
                name: n.to_string(),
                elem_type: Some(ElemType::F32),
                shape: s.clone(),
            })
            .collect(),
        outputs: outputs
            .iter()
            .map(|(n, t, s)| TensorInfo {
                name: n.to_string(),
                elem_type: Some(*t),
                shape: s.clone(),
            })
            .collect(),
        op_counts: BTreeMap::new(),
        opset: 17,
        producer: "mock".into(),
        file_bytes: 0,
        sha256: None,
    }
}

fn n() -> Dim {
    Dim::Symbolic("N".into())
}

/// 10 samples; feature `a` holds the label, `b` holds 0.
fn data() -> Dataset {
    let labels: Vec<i64> = (0..10).map(|i| i % 3).collect();
    let a = Array::new(
        vec![10, 1],
        ArrayData::F32(labels.iter().map(|&y| y as f32).collect()),
    )
    .unwrap();
    let b = Array::new(vec![10, 1], ArrayData::F32(vec![0.0; 10])).unwrap();
    Dataset::from_arrays(
        "mock.npz",
        vec![("a".into(), a), ("b".into(), b)],
        Some(labels),
        None,
    )
    .unwrap()
}

/// Logits with the true class (`a + b`) highest.
fn logits_of(inputs: &[Array]) -> Array {
    let a = inputs[0].to_f64().unwrap();
    let b = inputs
        .get(1)
        .map(|x| x.to_f64().unwrap())
        .unwrap_or_else(|| vec![0.0; a.len()]);
    let mut v = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        let c = (x + y) as usize;
        v.extend((0..3).map(|k| if k == c { 2.0f32 } else { 0.0 }));
    }
    Array::from_f32(vec![a.len(), 3], v).unwrap()
}

/// `evaluate_pair` of two mocks on [`data`] with the default policy.
fn evaluate(
    base: &mut MockModel,
    cand: &mut MockModel,
    opts: &EvalOptions,
) -> Result<qgate_eval::Evaluation, qgate_eval::EvalError> {
    evaluate_pair(
        base,
        cand,
        &data(),
        &Policy::default(),
        opts,
        &mut |_, _, _| {},
    )
}

#[test]
fn fixed_batch_models_get_padded_batches() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let fixed = info(
        &[("a", vec![Dim::Fixed(4), Dim::Fixed(1)])],
        &[("logits", ElemType::F32, vec![Dim::Fixed(4), Dim::Fixed(3)])],
    );
    let mut base = MockModel::new(fixed.clone(), move |inp| {
        seen2.lock().unwrap().push(inp[0].shape[0]);
        Ok(vec![logits_of(inp)])
    });
    let mut cand = MockModel::new(fixed, |inp| Ok(vec![logits_of(inp)]));
    let eval = evaluate_pair(
        &mut base,
        &mut cand,
        &data(),
        &Policy::default(),
        &EvalOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![4, 4, 4],
        "10 samples in batches of the fixed size 4"
    );
    assert_eq!(eval.n_samples, 10);
    assert_eq!(eval.baseline.metrics.accuracy, 1.0);
}

#[test]
fn several_inputs_are_bound_by_name_or_mapping() {
    let two = info(
        &[
            ("a", vec![n(), Dim::Fixed(1)]),
            ("other", vec![n(), Dim::Fixed(1)]),
        ],
        &[("logits", ElemType::F32, vec![n(), Dim::Fixed(3)])],
    );
    let mut base = MockModel::new(two.clone(), |inp| Ok(vec![logits_of(inp)]));
    let mut cand = MockModel::new(two, |inp| Ok(vec![logits_of(inp)]));
    // `other` matches no array: an error that says what to do.
    let err = evaluate_pair(
        &mut base,
        &mut cand,
        &data(),
        &Policy::default(),
        &EvalOptions::default(),
        &mut |_, _, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("'other'") && err.contains("--input NAME=KEY"),
        "{err}"
    );
    let opts = EvalOptions {
        inputs: InputMapping {
            single_key: None,
            pairs: vec![("other".into(), "b".into())],
        },
        ..EvalOptions::default()
    };
    let eval = evaluate_pair(
        &mut base,
        &mut cand,
        &data(),
        &Policy::default(),
        &opts,
        &mut |_, _, _| {},
    )
    .unwrap();
    let how: Vec<_> = eval
        .baseline
        .inputs
        .iter()
        .map(|b| (b.input.as_str(), b.array.as_str(), b.how.clone()))
        .collect();
    assert_eq!(
        how,
        vec![
            ("a", "a", qgate_eval::BoundBy::SameName),
            ("other", "b", qgate_eval::BoundBy::InputPair)
        ]
    );
    assert_eq!(eval.candidate.metrics.accuracy, 1.0);
}

#[test]
fn label_outputs_and_probability_outputs_are_detected() {
    let labels_info = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("label", ElemType::I64, vec![n()])],
    );
    let mut base = MockModel::new(labels_info.clone(), |inp| {
        let v: Vec<i64> = inp[0].to_f64().unwrap().iter().map(|&x| x as i64).collect();
        Ok(vec![Array::new(vec![v.len()], ArrayData::I64(v)).unwrap()])
    });
    // The candidate gets class 2 wrong (answers 0).
    let mut cand = MockModel::new(labels_info, |inp| {
        let v: Vec<i64> = inp[0]
            .to_f64()
            .unwrap()
            .iter()
            .map(|&x| if x == 2.0 { 0 } else { x as i64 })
            .collect();
        Ok(vec![Array::new(vec![v.len()], ArrayData::I64(v)).unwrap()])
    });
    let eval = evaluate_pair(
        &mut base,
        &mut cand,
        &data(),
        &Policy::default(),
        &EvalOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(eval.baseline.scores.kind, OutputKind::Labels);
    assert!(eval.comparison.kl.is_none() && eval.baseline.metrics.top_k_accuracy.is_none());
    assert_eq!(eval.comparison.negative_flips, 3);
    assert_eq!(eval.n_classes, 3);

    let probs_info = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("p", ElemType::F32, vec![n(), Dim::Fixed(3)])],
    );
    let softmaxed = |inp: &[Array]| {
        let l = logits_of(inp);
        let v: Vec<f32> = l
            .to_f64()
            .unwrap()
            .chunks(3)
            .flat_map(|r| {
                qgate_core::metrics::softmax(r)
                    .into_iter()
                    .map(|x| x as f32)
            })
            .collect();
        Ok(vec![Array::from_f32(l.shape, v).unwrap()])
    };
    let mut base = MockModel::new(probs_info.clone(), softmaxed);
    let mut cand = MockModel::new(probs_info, softmaxed);
    let eval = evaluate_pair(
        &mut base,
        &mut cand,
        &data(),
        &Policy::default(),
        &EvalOptions::default(),
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(eval.baseline.scores.kind, OutputKind::Probs);
    assert_eq!(eval.comparison.kl.as_ref().unwrap().max, 0.0);
}

#[test]
fn unlabelled_data_is_an_error() {
    let one = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("logits", ElemType::F32, vec![n(), Dim::Fixed(3)])],
    );
    let mut base = MockModel::new(one.clone(), |inp| Ok(vec![logits_of(inp)]));
    let mut cand = MockModel::new(one, |inp| Ok(vec![logits_of(inp)]));
    let mut d = data();
    d.labels = None;
    let err = evaluate_pair(
        &mut base,
        &mut cand,
        &d,
        &Policy::default(),
        &EvalOptions::default(),
        &mut |_, _, _| {},
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("--label-key"), "{err}");
}

#[test]
fn a_model_returning_another_row_count_is_an_error_not_a_score() {
    // Fewer rows used to panic in the metrics; more rows were truncated and scored.
    let one = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("logits", ElemType::F32, vec![n(), Dim::Fixed(3)])],
    );
    let fewer: fn(usize) -> usize = |k| k - 1;
    let more: fn(usize) -> usize = |k| 2 * k;
    for (rows, name) in [(fewer, "fewer"), (more, "more")] {
        let mut base = MockModel::new(one.clone(), |inp| Ok(vec![logits_of(inp)]));
        let mut cand = MockModel::new(one.clone(), move |inp| {
            let full = logits_of(inp);
            let k = rows(full.n_rows());
            let idx: Vec<usize> = (0..k).map(|i| i % full.n_rows()).collect();
            Ok(vec![full.select_rows(&idx)])
        });
        let err = evaluate_pair(
            &mut base,
            &mut cand,
            &data(),
            &Policy::default(),
            &EvalOptions::default(),
            &mut |_, _, _| {},
        )
        .err()
        .unwrap_or_else(|| panic!("{name} rows were scored"))
        .to_string();
        assert!(
            err.contains("candidate") && err.contains("'logits'") && err.contains("batch of 10"),
            "{name}: {err}"
        );
    }
}

/// Rows that sum to 1 in the first batch and not after it: the output is logits (every
/// row counts, as when outputs were read whole), so the pass restarts and every sample's
/// figures are softmax's.
#[test]
fn probabilities_disproved_by_a_later_batch_are_read_as_logits() {
    let out_info = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("s", ElemType::F32, vec![n(), Dim::Fixed(3)])],
    );
    let calls = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let seen = calls.clone();
    // Class 0 answers [1, 0, 0] (a distribution), classes 1 and 2 answer 3 for their class.
    let scores = move |inp: &[Array]| {
        *seen.lock().unwrap() += 1;
        let l = logits_of(inp);
        let v: Vec<f32> = l
            .to_f64()
            .unwrap()
            .chunks(3)
            .flat_map(|r| {
                let scale = if r[0] > 0.0 { 0.5 } else { 1.5 };
                r.iter()
                    .map(move |x| (x * scale) as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(vec![Array::from_f32(l.shape, v).unwrap()])
    };
    let mut base = MockModel::new(out_info.clone(), scores);
    let mut cand = MockModel::new(out_info, |inp: &[Array]| Ok(vec![logits_of(inp)]));
    let opts = EvalOptions {
        batch_size: 1,
        ..EvalOptions::default()
    };
    let eval = evaluate_pair(
        &mut base,
        &mut cand,
        &data(),
        &Policy::default(),
        &opts,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(eval.baseline.scores.kind, OutputKind::Logits);
    assert_eq!(
        eval.baseline.scores.kind_by,
        qgate_eval::KindBy::NotDistributions
    );
    // Sample 0 looked like probabilities, sample 1 did not: the first window of batches (all
    // 10 samples here), then all 10 again.
    assert_eq!(*calls.lock().unwrap(), 20);
    // Every confidence is softmax's: 4 samples of class 0 ([1, 0, 0]), 6 of [0, 3, 0].
    let one = qgate_core::metrics::softmax(&[1.0, 0.0, 0.0])[0];
    let three = qgate_core::metrics::softmax(&[0.0, 3.0, 0.0])[1];
    let want = (4.0 * one + 6.0 * three) / 10.0;
    let cal = eval.calibration.as_ref().unwrap();
    assert!((cal.baseline.mean_confidence - want).abs() < 1e-12);
}

/// Outputs are kept only when asked, and only for the samples asked.
#[test]
fn outputs_are_kept_only_on_request() {
    let out_info = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("logits", ElemType::F32, vec![n(), Dim::Fixed(3)])],
    );
    let run = |keep: usize| {
        let mut base = MockModel::new(out_info.clone(), |inp: &[Array]| Ok(vec![logits_of(inp)]));
        let mut cand = MockModel::new(out_info.clone(), |inp: &[Array]| Ok(vec![logits_of(inp)]));
        let opts = EvalOptions {
            batch_size: 4,
            keep_outputs: keep,
            ..EvalOptions::default()
        };
        evaluate(&mut base, &mut cand, &opts).unwrap()
    };
    assert!(run(0).baseline.outputs.is_empty());
    let some = run(6);
    assert_eq!(some.candidate.outputs[0].1.shape, vec![6, 3]);
    let all = run(usize::MAX);
    let want = logits_of(&[data().arrays["a"].clone()]);
    assert_eq!(all.baseline.outputs[0].1, want);
    // The figures do not depend on what was kept.
    assert_eq!(run(0).comparison.kl, all.comparison.kl);
    assert_eq!(
        serde_json::to_value(&run(0).divergence).unwrap(),
        serde_json::to_value(&all.divergence).unwrap()
    );
}

/// Batches are reduced on their own thread while the models run on: an output the
/// reduction refuses (a label of -1 at sample 2) stops the models, and its error comes
/// before a model's failure at a later batch (from sample 3 on, which the models reach
/// before the reducer has looked at sample 2), every time.
#[test]
fn a_refused_output_comes_before_a_later_failure_of_the_model() {
    let labels_info = info(
        &[("a", vec![n(), Dim::Fixed(1)])],
        &[("label", ElemType::I64, vec![n()])],
    );
    let opts = EvalOptions {
        batch_size: 1,
        ..EvalOptions::default()
    };
    for round in 0..50 {
        let labels = |inp: &[Array]| {
            let v: Vec<i64> = inp[0].to_f64().unwrap().iter().map(|&x| x as i64).collect();
            Ok(vec![Array::new(vec![v.len()], ArrayData::I64(v)).unwrap()])
        };
        let mut base = MockModel::new(labels_info.clone(), labels);
        let mut calls = 0usize;
        let mut cand = MockModel::new(labels_info.clone(), move |inp: &[Array]| {
            calls += 1;
            match calls {
                3 => Ok(vec![Array::new(vec![1], ArrayData::I64(vec![-1])).unwrap()]),
                4.. => Err(qgate_runtime::RuntimeError::Run {
                    path: "mock".into(),
                    message: "the device went away".into(),
                }),
                _ => labels(inp),
            }
        });
        let err = evaluate(&mut base, &mut cand, &opts)
            .err()
            .unwrap_or_else(|| panic!("round {round}: a label of -1 was scored"))
            .to_string();
        assert!(
            err.contains("sample 2 has -1") && !err.contains("went away"),
            "round {round}: {err}"
        );
    }
}

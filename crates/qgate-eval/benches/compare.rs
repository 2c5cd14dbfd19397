//! Benchmarks of `qgate compare`'s work: the statistics on a million synthetic predictions,
//! and a whole evaluation against bare tract loops over the same models and data.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use qgate_core::compare::{Comparison, PairInput, Predicted};
use qgate_core::metrics::Metrics;
use qgate_core::policy::Policy;
use qgate_core::stats::{BootstrapSettings, Rng};
use qgate_data::{load_npz, ArrayKeys};
use qgate_eval::{evaluate_pair, EvalOptions};
use qgate_runtime::{load, LoadOptions, ModelSpec};
use tract_onnx::prelude::*;

/// Metrics of both models, McNemar, flips and a 1 000-resample paired bootstrap over
/// 1 000 000 predictions of 100 classes.
fn statistics(c: &mut Criterion) {
    const N: usize = 1_000_000;
    const CLASSES: usize = 100;
    let mut rng = Rng::new(42);
    let labels: Vec<usize> = (0..N).map(|_| rng.below(CLASSES)).collect();
    let noisy = |rng: &mut Rng, y: usize, p_wrong: f64| {
        if rng.unit() < p_wrong {
            Some(rng.below(CLASSES))
        } else {
            Some(y)
        }
    };
    let base = Predicted {
        predictions: labels.iter().map(|&y| noisy(&mut rng, y, 0.10)).collect(),
        probs: None,
    };
    let cand = Predicted {
        predictions: base
            .predictions
            .iter()
            .zip(&labels)
            .map(|(p, &y)| {
                if rng.unit() < 0.02 {
                    noisy(&mut rng, y, 0.5)
                } else {
                    *p
                }
            })
            .collect(),
        probs: None,
    };
    let ids: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    let mut group = c.benchmark_group("statistics");
    group.sample_size(10);
    group.bench_function("1M predictions, 100 classes, 1000 resamples", |b| {
        b.iter(|| {
            let bm = Metrics::compute(&labels, &base.predictions, None, CLASSES, 5, &[]);
            let cm = Metrics::compute(&labels, &cand.predictions, None, CLASSES, 5, &[]);
            let input = PairInput {
                labels: &labels,
                ids: &ids,
                n_classes: CLASSES,
                top_k: 5,
                class_names: &[],
                baseline: &base,
                candidate: &cand,
                bootstrap: BootstrapSettings {
                    resamples: 1000,
                    confidence: 0.95,
                    seed: 0,
                },
                class_recall_drop_pp: 5.0,
                class_f1_drop_pp: 5.0,
                alpha: 0.05,
            };
            Comparison::compute(&input, &bm, &cm)
        })
    });
    group.finish();
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

/// A bare tract loop: the optimised plan of one model run over the data in batches.
struct Bare {
    plans: Vec<Arc<TypedRunnableModel>>,
}

impl Bare {
    fn new(model: &Path, batch_shapes: &[Vec<usize>]) -> Bare {
        let plans = batch_shapes
            .iter()
            .map(|shape| {
                tract_onnx::onnx()
                    .with_ignore_value_info(true)
                    .model_for_path(model)
                    .unwrap()
                    .with_input_fact(0, f32::fact(shape).into())
                    .unwrap()
                    .into_optimized()
                    .unwrap()
                    .into_runnable()
                    .unwrap()
            })
            .collect();
        Bare { plans }
    }
}

/// `qgate compare`'s evaluation (both models, metrics, statistics with a 2 000-resample
/// bootstrap, divergence, gate) against bare tract loops running the same two models over
/// the same data in the same batches.
fn compare_against_bare_loops(c: &mut Criterion) {
    let (base_name, cand_name) = if fixtures().join("cnn_wide_fp32.onnx").exists() {
        ("cnn_wide_fp32", "cnn_wide_int8_qdq")
    } else {
        ("cnn_fp32", "cnn_int8_qdq")
    };
    let data = load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap();
    let images = data.arrays["image"].clone();
    let batch = 32;
    let n = images.n_rows();
    let batches: Vec<Tensor> = (0..n)
        .step_by(batch)
        .map(|s| {
            let part = images.slice_rows(s, (s + batch).min(n));
            Tensor::from_shape(&part.shape, &part.to_f32().unwrap()).unwrap()
        })
        .collect();
    let shapes: Vec<Vec<usize>> = vec![vec![batch, 1, 8, 8], vec![n % batch, 1, 8, 8]];
    let path = |v: &str| fixtures().join(format!("{v}.onnx"));
    let bare: Vec<Bare> = [base_name, cand_name]
        .iter()
        .map(|v| Bare::new(&path(v), &shapes))
        .collect();
    let spec = |v: &str| ModelSpec::parse(path(v).to_str().unwrap()).unwrap();
    let mut qb = load(&spec(base_name), &LoadOptions::default()).unwrap();
    let mut qc = load(&spec(cand_name), &LoadOptions::default()).unwrap();
    let opts = EvalOptions {
        batch_size: batch,
        ..EvalOptions::default()
    };
    let policy = Policy::default();
    let mut group = c.benchmark_group(format!("compare {base_name} vs {cand_name}, 540 samples"));
    group.sample_size(20);
    group.bench_function("bare tract loops", |b| {
        b.iter(|| {
            for model in &bare {
                for t in &batches {
                    let plan = if t.shape()[0] == batch {
                        &model.plans[0]
                    } else {
                        &model.plans[1]
                    };
                    std::hint::black_box(plan.run(tvec![t.clone().into_tvalue()]).unwrap());
                }
            }
        })
    });
    group.bench_function("qgate evaluate_pair", |b| {
        b.iter(|| {
            evaluate_pair(
                qb.as_mut(),
                qc.as_mut(),
                &data,
                &policy,
                &opts,
                &mut |_, _, _| {},
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, statistics, compare_against_bare_loops);
criterion_main!(benches);

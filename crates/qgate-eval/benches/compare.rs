//! Benchmarks of `qgate compare`'s work: the statistics on a million synthetic predictions,
//! and a whole evaluation against bare tract loops (and bare `ort` loops) over the same
//! models and data; an interleaved arm prints the speed ratio of each pair of runs.

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

/// Metrics of both models, McNemar, flips and a paired bootstrap: 1 000 resamples over
/// 1 000 000 predictions of 100 classes, and the default 2 000 over 540 predictions of 10
/// classes (the size of the evaluation benchmark below, where it runs after inference).
fn statistics(c: &mut Criterion) {
    let mut group = c.benchmark_group("statistics");
    group.sample_size(10);
    pair_statistics(&mut group, 1_000_000, 100, 5, 1000);
    group.sample_size(50);
    pair_statistics(&mut group, 540, 10, 3, 2000);
    group.finish();
}

/// Synthetic labels and two models' predictions (10 % wrong, the candidate changing 2 %
/// of them), compared as `qgate compare` does.
fn pair_statistics(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    n: usize,
    classes: usize,
    top_k: usize,
    resamples: usize,
) {
    let mut rng = Rng::new(42);
    let labels: Vec<usize> = (0..n).map(|_| rng.below(classes)).collect();
    let noisy = |rng: &mut Rng, y: usize, p_wrong: f64| {
        if rng.unit() < p_wrong {
            Some(rng.below(classes))
        } else {
            Some(y)
        }
    };
    let base = Predicted {
        predictions: labels.iter().map(|&y| noisy(&mut rng, y, 0.10)).collect(),
        rows: None,
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
        rows: None,
    };
    let ids = qgate_core::Ids::indices(n);
    let name = format!("{n} predictions, {classes} classes, {resamples} resamples");
    group.bench_function(name, |b| {
        b.iter(|| {
            let bm = Metrics::compute(&labels, &base.predictions, None, classes, top_k, &[]);
            let cm = Metrics::compute(&labels, &cand.predictions, None, classes, top_k, &[]);
            let input = PairInput {
                labels: &labels,
                ids: &ids,
                n_classes: classes,
                top_k,
                class_names: &[],
                baseline: &base,
                candidate: &cand,
                kl: None,
                top_k_same: None,
                bootstrap: BootstrapSettings {
                    resamples,
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
    let mut group = c.benchmark_group(format!("compare {base_name} vs {cand_name}, 540 samples"));
    group.sample_size(20);
    let bare_loops = || {
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
    };
    group.bench_function("bare tract loops", |b| b.iter(bare_loops));
    evaluate_arms(
        &mut group,
        [qb.as_mut(), qc.as_mut()],
        &data,
        batch,
        bare_loops,
    );
    group.finish();
}

/// qgate's two models (its `Model::run`: inputs in, outputs copied out) in the bare loops'
/// order over the same batches: the wrapper's share of the gap, without the evaluation.
fn models_arm(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    models: [&mut dyn qgate_runtime::Model; 2],
    images: &qgate_core::Array,
    batch: usize,
) {
    let n = images.n_rows();
    let arrays: Vec<qgate_core::Array> = (0..n)
        .step_by(batch)
        .map(|s| images.slice_rows(s, (s + batch).min(n)))
        .collect();
    let mut models = models;
    group.bench_function("qgate models in a bare loop", |b| {
        b.iter(|| {
            for m in models.iter_mut() {
                for a in &arrays {
                    std::hint::black_box(m.run(std::slice::from_ref(a)).unwrap());
                }
            }
        })
    });
}

/// qgate's arms of `group`: its two models alone over `data`'s images (see [`models_arm`]),
/// then `qgate compare`'s evaluation of the pair (default policy, `batch` samples per call),
/// then that evaluation interleaved with `bare` (see [`Interleaved`]).
fn evaluate_arms(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    [qb, qc]: [&mut dyn qgate_runtime::Model; 2],
    data: &qgate_data::Dataset,
    batch: usize,
    mut bare: impl FnMut(),
) {
    models_arm(group, [&mut *qb, &mut *qc], &data.arrays["image"], batch);
    let opts = EvalOptions {
        batch_size: batch,
        ..EvalOptions::default()
    };
    let policy = Policy::default();
    let mut evaluate = || evaluate_pair(qb, qc, data, &policy, &opts, &mut |_, _, _| {}).unwrap();
    group.bench_function("qgate evaluate_pair", |b| b.iter(&mut evaluate));
    let mut paired = Interleaved::default();
    group.bench_function(
        "qgate evaluate_pair, interleaved with the bare loops",
        |b| b.iter_custom(|iters| paired.rounds(iters, &mut bare, &mut evaluate)),
    );
    paired.report();
}

/// The speed ratio measured in rounds that run the bare loop and qgate back to back,
/// alternating which goes first, so that both see the same state of the machine (clock,
/// caches, neighbours). Separate criterion arms run seconds apart and drift by a few per
/// cent on a shared machine; the per-round ratios do not. Criterion times qgate's runs;
/// [`Interleaved::report`] prints the median ratio and its quartiles.
#[derive(Default)]
struct Interleaved {
    /// bare seconds ÷ qgate seconds, one per round (warm-up rounds included).
    ratios: Vec<f64>,
}

impl Interleaved {
    fn rounds<R>(
        &mut self,
        iters: u64,
        bare: &mut impl FnMut(),
        qgate: &mut impl FnMut() -> R,
    ) -> std::time::Duration {
        fn timed<R>(f: &mut impl FnMut() -> R) -> std::time::Duration {
            let start = std::time::Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        }
        let mut total = std::time::Duration::ZERO;
        for _ in 0..iters {
            let (b, q) = if self.ratios.len().is_multiple_of(2) {
                let b = timed(bare);
                (b, timed(qgate))
            } else {
                let q = timed(qgate);
                (timed(bare), q)
            };
            total += q;
            self.ratios.push(b.as_secs_f64() / q.as_secs_f64());
        }
        total
    }

    fn report(&self) {
        if self.ratios.is_empty() {
            return;
        }
        let q = |p: f64| qgate_core::stats::percentile(&self.ratios, p);
        println!(
            "qgate's speed against the bare loops, interleaved: median {:.3}× (quartiles {:.3}–{:.3}) over {} rounds",
            q(50.0),
            q(25.0),
            q(75.0),
            self.ratios.len()
        );
    }
}

/// The same evaluation with both models in ONNX Runtime (1 intra-op thread, full graph
/// optimisation: qgate's defaults) against a bare `ort` loop: one session per model, built
/// with the same settings in the same environment, run over the same batches from borrowed
/// buffers. Skipped, with a line saying why, where no ONNX Runtime library is found.
fn compare_ort_against_bare_loop(c: &mut Criterion) {
    use ort::session::builder::GraphOptimizationLevel;
    use ort::session::Session;
    use ort::value::TensorRef;
    // As the binary does: ORT_DYLIB_PATH names the library, else Python's onnxruntime.
    let load_opts = LoadOptions {
        ort_env_path: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
        ..LoadOptions::default()
    };
    let env = match qgate_runtime::ort_environment(&load_opts) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("skipping the ONNX Runtime comparison: {e}");
            return;
        }
    };
    let (base_name, cand_name) = ("cnn_wide_fp32", "cnn_wide_int8_qdq");
    let path = |v: &str| fixtures().join(format!("{v}.onnx"));
    let data = load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap();
    let images = data.arrays["image"].clone();
    let batch = 32;
    let n = images.n_rows();
    let batches: Vec<(Vec<i64>, Vec<f32>)> = (0..n)
        .step_by(batch)
        .map(|s| {
            let part = images.slice_rows(s, (s + batch).min(n));
            let shape = part.shape.iter().map(|&d| d as i64).collect();
            (shape, part.to_f32().unwrap())
        })
        .collect();
    let mut bare: Vec<Session> = [base_name, cand_name]
        .iter()
        .map(|v| {
            Session::builder(env)
                .unwrap()
                .with_intra_threads(1)
                .unwrap()
                .with_inter_threads(1)
                .unwrap()
                .with_optimization_level(GraphOptimizationLevel::All)
                .unwrap()
                .commit_from_file(path(v))
                .unwrap()
        })
        .collect();
    let spec = |v: &str| ModelSpec::parse(&format!("ort:{}", path(v).display())).unwrap();
    let mut qb = load(&spec(base_name), &load_opts).unwrap();
    let mut qc = load(&spec(cand_name), &load_opts).unwrap();
    let mut group = c.benchmark_group(format!(
        "compare ort {base_name} vs {cand_name}, 540 samples"
    ));
    group.sample_size(20);
    let mut bare_loop = || {
        for session in &mut bare {
            for (shape, values) in &batches {
                let input = TensorRef::from_array_view((shape.clone(), values.as_slice())).unwrap();
                let out = session.run(ort::inputs!["image" => input]).unwrap();
                std::hint::black_box(&out);
            }
        }
    };
    group.bench_function("bare ort loop", |b| b.iter(&mut bare_loop));
    evaluate_arms(
        &mut group,
        [qb.as_mut(), qc.as_mut()],
        &data,
        batch,
        bare_loop,
    );
    // The order qgate runs in: both models on each batch before the next batch is read.
    group.bench_function("bare ort loop, models alternating per batch", |b| {
        b.iter(|| {
            for (shape, values) in &batches {
                for session in &mut bare {
                    let input =
                        TensorRef::from_array_view((shape.clone(), values.as_slice())).unwrap();
                    let out = session.run(ort::inputs!["image" => input]).unwrap();
                    std::hint::black_box(&out);
                }
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    statistics,
    compare_against_bare_loops,
    compare_ort_against_bare_loop
);
criterion_main!(benches);

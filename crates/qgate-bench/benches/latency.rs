//! qgate's latency loop against a bare tract loop over the same model and inputs: the
//! loop's own cost (clock reads, recording each latency, the meters around a round) must
//! stay negligible next to inference. Also the cost of one clock read.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use qgate_bench::clock::{timer_overhead, Clock, SystemClock};
use qgate_bench::protocol::{Init, LoadSpec, ProbeSpec, Request, Response};
use qgate_bench::{LocalSide, Side, WorkloadSpec};
use qgate_data::{load_npz, ArrayKeys};
use qgate_runtime::{load, LoadOptions, ModelSpec};
use tract_onnx::prelude::*;

const CALLS: u64 = 200;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

fn latency_loop(c: &mut Criterion) {
    let model_path = fixtures().join("cnn_wide_fp32.onnx");
    let data = load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap();
    let images = data.arrays["image"].clone();
    // Batch 1, cycling through the samples as the latency test does.
    let inputs: Vec<Tensor> = (0..images.n_rows())
        .map(|i| {
            let row = images.slice_rows(i, i + 1);
            Tensor::from_shape(&row.shape, &row.to_f32().unwrap()).unwrap()
        })
        .collect();
    let plan = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(&model_path)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 1, 8, 8]).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let spec = ModelSpec::parse(model_path.to_str().unwrap()).unwrap();
    let mut side = LocalSide::new(
        "baseline",
        Box::new(move || load(&spec, &LoadOptions::default())),
        Some(&data),
        &Init {
            side: "baseline".into(),
            spec: String::new(),
            load: LoadSpec::default(),
            workload: WorkloadSpec::default(),
            probe: ProbeSpec {
                enable_nvml: false,
                ..ProbeSpec::default()
            },
        },
        1,
        Arc::new(SystemClock::new()),
    )
    .unwrap();
    let mut group = c.benchmark_group(format!("cnn_wide_fp32, batch 1, {CALLS} calls"));
    group.sample_size(30);
    group.bench_function("bare tract loop", |b| {
        let mut i = 0;
        b.iter(|| {
            for _ in 0..CALLS {
                let t = inputs[i % inputs.len()].clone();
                i += 1;
                std::hint::black_box(plan.run(tvec![t.into_tvalue()]).unwrap());
            }
        })
    });
    group.bench_function("qgate latency loop", |b| {
        b.iter(|| {
            let r = side
                .call(&Request::Measure {
                    batch: 1,
                    iterations: Some(CALLS),
                    seconds: None,
                    min_iterations: 1,
                    capture: false,
                })
                .unwrap();
            assert!(matches!(r, Response::Measured(_)));
        })
    });
    group.finish();
    let clock = SystemClock::new();
    c.bench_function("one clock read", |b| {
        b.iter(|| std::hint::black_box(clock.now()))
    });
    let o = timer_overhead(&clock);
    eprintln!(
        "timer overhead as qgate reports it: {:.1} ns per read, resolution {:.0} ns",
        o.read_ns, o.resolution_ns
    );
}

criterion_group!(benches, latency_loop);
criterion_main!(benches);

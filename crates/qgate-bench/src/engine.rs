//! The measuring loop of one side: owns the model instances, the prepared batches and the
//! meters, and answers [`Request`]s. Runs in a worker process for real benchmarks and
//! in-process for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qgate_core::stats::Rng;
use qgate_core::{Array, Tolerance};
use qgate_data::Dataset;
use qgate_probe::{cpu_seconds, mem_status, reset_peak, Monitor, ProbeConfig, Roots};
use qgate_runtime::{Model, ModelSpec, PredsModel, RuntimeError};

use crate::clock::{timer_overhead, Clock};
use crate::protocol::{
    Measured, MemoryReading, OutputCheck, ProbeSpec, Request, Response, Served, Startup, Warmed,
};
use crate::workload::{Batch, Workload, WorkloadSpec};
use crate::BenchError;

/// Makes one more instance of the model (concurrency needs one per stream).
pub type Factory = Box<dyn FnMut() -> Result<Box<dyn Model>, RuntimeError> + Send>;

/// Outputs kept for the same-artifact check, at most this many bytes (so keeping them does
/// not distort the memory figures of large models).
const CAPTURE_BYTES: usize = 64 << 20;

/// One side's measuring state.
pub struct Engine {
    clock: Arc<dyn Clock>,
    factory: Factory,
    instances: Vec<Box<dyn Model>>,
    workload: Workload,
    batches: HashMap<usize, Arc<Vec<Batch>>>,
    cursor: usize,
    captured: BTreeMap<usize, Vec<Array>>,
    capture_batch: Option<usize>,
    capture_left: usize,
    monitor: Monitor,
    roots: Roots,
    peak_load: Option<u64>,
    peak_reset: bool,
    startup: Startup,
}

impl Engine {
    /// Loads the model (timed), builds the workload, runs the first inference (timed) at
    /// `first_batch`, and reads memory before and after.
    pub fn start(
        mut factory: Factory,
        data: Option<&Dataset>,
        spec: &WorkloadSpec,
        first_batch: usize,
        clock: Arc<dyn Clock>,
        probe: &ProbeSpec,
    ) -> Result<Engine, BenchError> {
        let roots = probe.roots();
        let rss_before = mem_status(&roots, None).ok().map(|m| m.rss_bytes);
        let t0 = clock.now();
        let mut model = factory().map_err(BenchError::Runtime)?;
        let load_ms = ms(clock.now().saturating_sub(t0));
        let info = model.info().clone();
        if model.keyed_by_sample() {
            return Err(BenchError::Workload(format!(
                "{}: saved predictions cannot be benchmarked (nothing runs)",
                model.provenance().spec
            )));
        }
        let workload = Workload::build(&info, data, spec)?;
        let first = workload
            .batches(first_batch)?
            .into_iter()
            .next()
            .ok_or_else(|| BenchError::Workload("no sample to feed".into()))?;
        let t0 = clock.now();
        let outputs = model.run(&first.inputs).map_err(BenchError::Runtime)?;
        let first_inference_ms = ms(clock.now().saturating_sub(t0));
        check_rows(model.as_ref(), &outputs, first.rows.len())?;
        let after = mem_status(&roots, None).ok();
        let peak_reset = reset_peak(&roots).unwrap_or(false);
        let monitor = Monitor::new(&ProbeConfig {
            roots: roots.clone(),
            nvml_lib: probe.nvml_lib.clone(),
            enable_nvml: probe.enable_nvml,
            ..ProbeConfig::default()
        });
        let startup = Startup {
            provenance: model.provenance(),
            model_bytes: info.sha256.as_ref().map(|_| info.file_bytes),
            info,
            load_ms,
            first_inference_ms,
            rss_before_load_bytes: rss_before,
            rss_after_load_bytes: after.map(|m| m.rss_bytes),
            timer: timer_overhead(clock.as_ref()),
            workload: workload.info.clone(),
            meters: monitor.sources(),
            meters_unavailable: monitor.unavailable().to_vec(),
            pid: std::process::id(),
        };
        Ok(Engine {
            clock,
            factory,
            instances: vec![model],
            workload,
            batches: HashMap::new(),
            cursor: 0,
            captured: BTreeMap::new(),
            capture_batch: None,
            capture_left: CAPTURE_BYTES,
            monitor,
            roots,
            peak_load: after.map(|m| m.peak_rss_bytes),
            peak_reset,
            startup,
        })
    }

    /// What loading cost.
    pub fn startup(&self) -> &Startup {
        &self.startup
    }

    /// Answers one request; failures become [`Response::Error`].
    pub fn handle(&mut self, req: &Request) -> Response {
        let r = match req {
            Request::Warmup {
                batch,
                min_iterations,
                min_seconds,
                max_seconds,
            } => self
                .warmup(*batch, *min_iterations, *min_seconds, *max_seconds)
                .map(Response::Warmed),
            Request::Measure {
                batch,
                iterations,
                seconds,
                min_iterations,
                capture,
            } => self
                .measure(*batch, *iterations, *seconds, *min_iterations, *capture)
                .map(Response::Measured),
            Request::Closed {
                batch,
                streams,
                seconds,
            } => self
                .closed(*batch, *streams, *seconds)
                .map(Response::Measured),
            Request::Poisson {
                rate,
                seconds,
                servers,
                seed,
            } => self
                .poisson(*rate, *seconds, *servers, *seed)
                .map(Response::Served),
            Request::CheckOutputs {
                tolerance,
                reference,
                reference_tolerance,
            } => self
                .check_outputs(*tolerance, reference.as_deref(), *reference_tolerance)
                .map(Response::Outputs),
            Request::Memory => Ok(Response::Memory(self.memory())),
            Request::Quit => Ok(Response::Bye),
        };
        r.unwrap_or_else(|e| Response::Error {
            message: e.to_string(),
        })
    }

    fn batches(&mut self, batch: usize) -> Result<Arc<Vec<Batch>>, BenchError> {
        if let Some(b) = self.batches.get(&batch) {
            return Ok(b.clone());
        }
        let b = Arc::new(self.workload.batches(batch)?);
        self.batches.insert(batch, b.clone());
        Ok(b)
    }

    fn warmup(
        &mut self,
        batch: usize,
        min_iterations: u64,
        min_seconds: f64,
        max_seconds: f64,
    ) -> Result<Warmed, BenchError> {
        const WINDOW: usize = 10;
        let batches = self.batches(batch)?;
        let clock = self.clock.clone();
        let model = &mut self.instances[0];
        let start = clock.now();
        let mut window = Vec::with_capacity(WINDOW);
        let mut medians: Vec<f64> = Vec::new();
        let mut iterations = 0u64;
        let mut steady = false;
        loop {
            let b = &batches[self.cursor % batches.len()];
            self.cursor += 1;
            let t0 = clock.now();
            let outputs = model.run(&b.inputs).map_err(BenchError::Runtime)?;
            window.push(ms(clock.now().saturating_sub(t0)));
            if iterations == 0 {
                check_rows(model.as_ref(), &outputs, b.rows.len())?;
            }
            iterations += 1;
            if window.len() == WINDOW {
                window.sort_by(f64::total_cmp);
                medians.push(window[WINDOW / 2]);
                window.clear();
                if let [.., prev, last] = medians.as_slice() {
                    steady = (last - prev).abs() <= 0.05 * prev;
                }
            }
            let elapsed = clock.now().saturating_sub(start).as_secs_f64();
            if elapsed >= max_seconds
                || (iterations >= min_iterations && elapsed >= min_seconds && steady)
            {
                break;
            }
        }
        Ok(Warmed {
            iterations,
            seconds: clock.now().saturating_sub(start).as_secs_f64(),
            steady,
            last_window_median_ms: medians.last().copied().unwrap_or(f64::NAN),
        })
    }

    fn measure(
        &mut self,
        batch: usize,
        iterations: Option<u64>,
        seconds: Option<f64>,
        min_iterations: u64,
        capture: bool,
    ) -> Result<Measured, BenchError> {
        let batches = self.batches(batch)?;
        if capture {
            if self.capture_batch.is_some_and(|b| b != batch) {
                self.captured.clear();
            }
            self.capture_batch = Some(batch);
        }
        let clock = self.clock.clone();
        let deadline = seconds.map(|s| clock.now() + Duration::from_secs_f64(s.max(0.0)));
        let mut latencies = Vec::new();
        let phase = self.begin_phase();
        let model = &mut self.instances[0];
        loop {
            let slot = self.cursor % batches.len();
            self.cursor += 1;
            let b = &batches[slot];
            let t0 = clock.now();
            let out = model.run(&b.inputs).map_err(BenchError::Runtime)?;
            let t1 = clock.now();
            latencies.push(ms(t1.saturating_sub(t0)));
            if capture && self.capture_left > 0 && !self.captured.contains_key(&slot) {
                let bytes: usize = out.iter().map(|a| a.len() * 8).sum();
                self.capture_left = self.capture_left.saturating_sub(bytes);
                self.captured.insert(slot, out);
            }
            let n = latencies.len() as u64;
            let done = match (iterations, deadline) {
                (Some(i), _) => n >= i,
                (None, Some(d)) => t1 >= d && n >= min_iterations,
                (None, None) => n >= min_iterations.max(1),
            };
            if done {
                break;
            }
        }
        Ok(self.end_phase(phase, latencies, batch))
    }

    /// Starts the meters and notes the clock and CPU time at the start of a phase.
    fn begin_phase(&mut self) -> (Duration, Option<f64>) {
        self.monitor.start();
        let cpu0 = cpu_seconds(&self.roots, None).ok();
        (self.clock.now(), cpu0)
    }

    /// Stops the meters and wraps a phase's timings.
    fn end_phase(
        &mut self,
        (start, cpu0): (Duration, Option<f64>),
        latencies: Vec<f64>,
        batch: usize,
    ) -> Measured {
        let wall_s = self.clock.now().saturating_sub(start).as_secs_f64();
        let cpu_s = match (cpu0, cpu_seconds(&self.roots, None).ok()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let phase = self.monitor.stop();
        Measured {
            samples: latencies.len() as u64 * batch as u64,
            latencies_ms: latencies,
            wall_s,
            cpu_s,
            phase,
        }
    }

    fn ensure_instances(&mut self, n: usize) -> Result<(), BenchError> {
        while self.instances.len() < n {
            let m = (self.factory)().map_err(BenchError::Runtime)?;
            self.instances.push(m);
        }
        Ok(())
    }

    fn closed(
        &mut self,
        batch: usize,
        streams: usize,
        seconds: f64,
    ) -> Result<Measured, BenchError> {
        let streams = streams.max(1);
        let batches = self.batches(batch)?;
        self.ensure_instances(streams)?;
        let clock = self.clock.clone();
        let phase = self.begin_phase();
        let deadline = phase.0 + Duration::from_secs_f64(seconds.max(0.0));
        let results: Vec<Result<Vec<f64>, RuntimeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = self.instances[..streams]
                .iter_mut()
                .enumerate()
                .map(|(k, model)| {
                    let batches = batches.clone();
                    let clock = clock.clone();
                    s.spawn(move || {
                        let mut lat = Vec::new();
                        let mut i = k * batches.len() / streams;
                        loop {
                            let b = &batches[i % batches.len()];
                            i += 1;
                            let t0 = clock.now();
                            model.run(&b.inputs)?;
                            let t1 = clock.now();
                            lat.push(ms(t1.saturating_sub(t0)));
                            if t1 >= deadline {
                                return Ok(lat);
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(RuntimeError::Run {
                            path: "stream".into(),
                            message: "a measuring thread panicked".into(),
                        })
                    })
                })
                .collect()
        });
        let mut latencies = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(l) => latencies.extend(l),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        let measured = self.end_phase(phase, latencies, batch);
        match failure {
            Some(e) => Err(BenchError::Runtime(e)),
            None => Ok(measured),
        }
    }

    fn poisson(
        &mut self,
        rate: f64,
        seconds: f64,
        servers: usize,
        seed: u64,
    ) -> Result<Served, BenchError> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(BenchError::Workload(format!(
                "arrival rate {rate}: expected a positive number of queries per second"
            )));
        }
        let servers = servers.max(1);
        let batches = self.batches(1)?;
        self.ensure_instances(servers)?;
        let clock = self.clock.clone();
        // Exponential gaps (inverse CDF of seeded uniforms): a Poisson process.
        let mut rng = Rng::new(seed);
        let start = clock.now() + Duration::from_millis(1);
        let mut arrivals = Vec::new();
        let mut t = 0.0;
        loop {
            t += -(1.0 - rng.unit()).ln() / rate;
            if t > seconds && !arrivals.is_empty() {
                break;
            }
            arrivals.push(start + Duration::from_secs_f64(t));
        }
        // An overloaded server never catches up; stop serving at a cut-off and count the
        // queries still waiting at their waiting time so far (a lower bound).
        let cutoff = start + Duration::from_secs_f64(seconds * 3.0 + 1.0);
        let next = AtomicUsize::new(0);
        let latencies = Mutex::new(vec![f64::NAN; arrivals.len()]);
        let failure: Mutex<Option<RuntimeError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for (k, model) in self.instances[..servers].iter_mut().enumerate() {
                let (batches, clock, arrivals) = (batches.clone(), clock.clone(), &arrivals);
                let (next, latencies, failure) = (&next, &latencies, &failure);
                s.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= arrivals.len() || clock.now() > cutoff {
                        return;
                    }
                    clock.sleep_until(arrivals[i]);
                    let b = &batches[(i + k) % batches.len()];
                    if let Err(e) = model.run(&b.inputs) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                        return;
                    }
                    let done = clock.now();
                    if let Ok(mut l) = latencies.lock() {
                        l[i] = ms(done.saturating_sub(arrivals[i]));
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(BenchError::Runtime(e));
        }
        let end = clock.now();
        let mut latencies = latencies.into_inner().unwrap_or_default();
        let mut unserved = 0;
        for (l, a) in latencies.iter_mut().zip(&arrivals) {
            if l.is_nan() {
                *l = ms(end.saturating_sub(*a));
                unserved += 1;
            }
        }
        Ok(Served {
            queries: arrivals.len() as u64,
            unserved,
            wall_s: end.saturating_sub(start).as_secs_f64(),
            latencies_ms: latencies,
        })
    }

    fn check_outputs(
        &mut self,
        tolerance: Tolerance,
        reference: Option<&std::path::Path>,
        reference_tolerance: Tolerance,
    ) -> Result<OutputCheck, BenchError> {
        let batch = self.capture_batch.ok_or_else(|| {
            BenchError::Workload("no outputs were captured during the timed runs".into())
        })?;
        let batches = self.batches(batch)?;
        let names: Vec<String> = self.instances[0]
            .info()
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let mut check = OutputCheck {
            tolerance,
            batches: 0,
            mismatched_batches: 0,
            non_finite_batches: 0,
            max_abs_diff: 0.0,
            reference_samples: None,
            reference_mismatches: None,
            reference_tolerance: reference.map(|_| reference_tolerance),
            first_mismatch: None,
        };
        let captured = std::mem::take(&mut self.captured);
        for (slot, timed) in &captured {
            let b = &batches[*slot];
            let again = self.instances[0]
                .run(&b.inputs)
                .map_err(BenchError::Runtime)?;
            check.batches += 1;
            let non_finite = timed
                .iter()
                .any(|t| t.to_f64().is_some_and(|v| v.iter().any(|x| !x.is_finite())));
            check.non_finite_batches += u64::from(non_finite);
            let mut bad = false;
            for ((name, t), u) in names.iter().zip(timed).zip(&again) {
                let (equal, diff) = compare(t, u, tolerance);
                check.max_abs_diff = check.max_abs_diff.max(diff);
                if !equal {
                    bad = true;
                    check.first_mismatch.get_or_insert_with(|| {
                        format!(
                            "output '{name}' of batch {slot} (samples {}…) differs from an untimed \
                             rerun by up to {diff:.3e} (tolerance {tolerance:?})",
                            self.workload.ids[b.rows[0]]
                        )
                    });
                }
            }
            check.mismatched_batches += u64::from(bad);
        }
        if let Some(path) = reference {
            let (samples, bad) = self.check_reference(
                &captured,
                &batches,
                &names,
                path,
                reference_tolerance,
                &mut check,
            )?;
            check.reference_samples = Some(samples);
            check.reference_mismatches = Some(bad);
        }
        self.captured = captured;
        Ok(check)
    }

    /// Compares each captured timed batch, sample by sample, with the saved outputs at
    /// `path` (`--reference-outputs`): (samples compared, samples that differ).
    fn check_reference(
        &self,
        captured: &BTreeMap<usize, Vec<Array>>,
        batches: &[Batch],
        names: &[String],
        path: &std::path::Path,
        reference_tolerance: Tolerance,
        check: &mut OutputCheck,
    ) -> Result<(u64, u64), BenchError> {
        let spec =
            ModelSpec::parse(&format!("preds:{}", path.display())).map_err(BenchError::Runtime)?;
        let mut saved = PredsModel::load(path, &spec).map_err(BenchError::Runtime)?;
        let saved_names: Vec<String> = saved
            .info()
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let (mut samples, mut bad) = (0u64, 0u64);
        for (slot, timed) in captured {
            let b = &batches[*slot];
            let ids: Vec<String> = b
                .rows
                .iter()
                .map(|&r| self.workload.ids[r].clone())
                .collect();
            let expected = saved
                .run_samples(&ids, &b.rows)
                .map_err(BenchError::Runtime)?;
            for (j, id) in ids.iter().enumerate() {
                samples += 1;
                let mut differs = false;
                for (name, t) in names.iter().zip(timed) {
                    let Some(k) = saved_names.iter().position(|n| n == name) else {
                        continue;
                    };
                    let (equal, diff) = compare(
                        &t.slice_rows(j, j + 1),
                        &expected[k].slice_rows(j, j + 1),
                        reference_tolerance,
                    );
                    if !equal {
                        differs = true;
                        check.first_mismatch.get_or_insert_with(|| {
                            format!(
                                "output '{name}' of sample {id} differs from {} by up to \
                                 {diff:.3e} (tolerance {reference_tolerance:?})",
                                path.display()
                            )
                        });
                    }
                }
                bad += u64::from(differs);
            }
        }
        Ok((samples, bad))
    }

    fn memory(&self) -> MemoryReading {
        let now = mem_status(&self.roots, None).ok();
        let run_peak = now.map(|m| m.peak_rss_bytes);
        let peak = match (self.peak_load, run_peak) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        MemoryReading {
            rss_bytes: now.map(|m| m.rss_bytes),
            peak_rss_bytes: peak,
            peak_rss_run_bytes: if self.peak_reset { run_peak } else { None },
        }
    }
}

/// One row per sample fed (`qgate_runtime::check_batch_outputs`, as the accuracy path
/// checks): a model or server answering with fewer or more rows is broken, however fast.
fn check_rows(model: &dyn Model, outputs: &[Array], batch: usize) -> Result<(), BenchError> {
    qgate_runtime::check_batch_outputs(model.info(), outputs, Some(batch))
        .map_err(|m| BenchError::Workload(format!("{}: {m}", model.provenance().spec)))
}

/// Compares two arrays under a tolerance: `(equal, largest absolute difference)`. NaNs in
/// the same place count as equal; different shapes or types are unequal.
fn compare(a: &Array, b: &Array, tol: Tolerance) -> (bool, f64) {
    if a.shape != b.shape {
        return (false, f64::INFINITY);
    }
    let (Some(x), Some(y)) = (a.to_f64(), b.to_f64()) else {
        return (a == b, if a == b { 0.0 } else { f64::INFINITY });
    };
    let mut equal = true;
    let mut max = 0.0f64;
    for (p, q) in x.iter().zip(&y) {
        if p.is_nan() && q.is_nan() {
            continue;
        }
        let d = (p - q).abs();
        max = max.max(if d.is_nan() { f64::INFINITY } else { d });
        if !tol.close(*p, *q) {
            equal = false;
        }
    }
    (equal, max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

//! The `qgate` binary: argv → validated config → library calls → exit code
//! (0 pass, 1 fail, 2 error).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use qgate_bench::protocol::{Init, LoadSpec};
use qgate_bench::{run_pair, ChildSide, WorkloadSpec};
use qgate_core::policy::{Gate, Status, Verdict};
use qgate_data::Dataset;
use qgate_eval::evaluate_pair;
use qgate_report::{exporters, Report};
use qgate_runtime::{inspect_onnx, load, tract_unsupported, LoadOptions, ModelSpec, SpecKind};

use cli::{BenchConfig, Cli, Command, CompareConfig, InspectArgs, PerfConfig};

fn main() -> ExitCode {
    qgate_runtime::install_panic_hook();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            // A flag error still must not leave an earlier run's PASS in --out.
            if e.use_stderr() {
                settle_error(&argv, &e.to_string());
            }
            e.exit();
        }
    };
    let interactive = std::io::stderr().is_terminal();
    let result = match cli.command {
        Command::Compare(args) => resolved(&argv, (*args).resolve(interactive), |cfg| {
            limit_memory(&cfg.load);
            guarded(&cfg.out.clone(), "compare", || compare(cfg))
        }),
        Command::Bench(args) => resolved(&argv, (*args).resolve(interactive), |cfg| {
            limit_memory(&cfg.load);
            guarded(&cfg.out.clone(), "bench", || bench(cfg))
        }),
        Command::Check(args) => {
            let args = *args;
            let both = args
                .perf
                .resolve()
                .and_then(|perf| Ok((args.compare.resolve(interactive)?, perf)));
            resolved(&argv, both, |(cfg, perf)| {
                limit_memory(&cfg.load);
                guarded(&cfg.out.clone(), "check", || check(cfg, perf))
            })
        }
        Command::Sensitivity(args) => match args.out.clone() {
            Some(out) => guarded(&out, "sensitivity", || sensitivity(*args, interactive)),
            None => sensitivity(*args, interactive),
        },
        Command::Inspect(args) => inspect(args).map(|()| Verdict::Pass),
        Command::Worker => {
            return match qgate_bench::serve_worker(std::io::stdin(), std::io::stdout()) {
                Ok(()) => ExitCode::from(0),
                Err(e) => {
                    eprintln!("qgate worker: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(Verdict::Pass) => ExitCode::from(0),
        Ok(Verdict::Fail) => ExitCode::from(1),
        Err(e) => {
            eprintln!("qgate: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// Runs `run` on a resolved config; when resolving failed, the error is settled in the
/// report folder the command line names (see [`settle_error`]) and returned.
fn resolved<C>(
    argv: &[std::ffi::OsString],
    config: Result<C>,
    run: impl FnOnce(C) -> Result<Verdict>,
) -> Result<Verdict> {
    match config {
        Ok(cfg) => run(cfg),
        Err(e) => {
            settle_error(argv, &error_text(&e));
            Err(e)
        }
    }
}

/// For an error found before the config was complete: the report folder named by `--out`
/// (or by `out` in the `--config` file, when that file can be read) gets the same treatment
/// as a run that failed — qgate's earlier report files removed, `report.json` saying
/// `"error"`.
fn settle_error(argv: &[std::ffi::OsString], message: &str) {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = args.get(1).cloned().unwrap_or_default();
    let value_of = |flag: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{flag}="))
                .map(str::to_string)
                .or_else(|| (a == flag).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let out = value_of("--out").map(std::path::PathBuf::from).or_else(|| {
        let config = std::path::PathBuf::from(value_of("--config")?);
        let text = std::fs::read_to_string(&config).ok()?;
        let table: toml::Table = toml::from_str(&text).ok()?;
        let out = std::path::PathBuf::from(table.get("out")?.as_str()?);
        if out.as_os_str().is_empty() {
            // `out = ""` would name the config's own folder.
            return None;
        }
        Some(match config.parent() {
            Some(dir) if out.is_relative() => dir.join(out),
            _ => out,
        })
    });
    if let Some(out) = out.filter(|o| !o.as_os_str().is_empty()) {
        let _ = clear_reports(&out);
        write_error_report(&out, &command, message);
    }
}

/// Applies `--max-memory` to this process (bench workers get it through their load spec).
fn limit_memory(load: &LoadOptions) {
    if let Some(bytes) = load.max_memory {
        qgate_core::memory::set_limit(bytes);
    }
}

/// Writes one line to stdout. A reader that went away (`qgate … | head -2`: broken pipe)
/// ends the output quietly, as ripgrep does; the exit code stays the verdict. Other write
/// errors are errors.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        match writeln!(std::io::stdout().lock(), $($arg)*) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.context("cannot write to standard output")?,
        }
    }};
}

/// Runs `command` writing into `out` so that a reader of `out` never sees a verdict from
/// another run: qgate's own report files there are removed first (never other files), and a
/// run that ends in an error (exit 2) leaves a `report.json` whose verdict is `"error"`, with
/// the message.
fn guarded(
    out: &std::path::Path,
    command: &str,
    run: impl FnOnce() -> Result<Verdict>,
) -> Result<Verdict> {
    clear_reports(out)?;
    let result = run();
    if let Err(e) = &result {
        write_error_report(out, command, &error_text(e));
    }
    result
}

/// Removes qgate's own report files from `out` (never other files).
fn clear_reports(out: &std::path::Path) -> Result<()> {
    for e in exporters() {
        let stale = out.join(e.file_name());
        if stale.is_file() {
            std::fs::remove_file(&stale)
                .with_context(|| format!("cannot remove the earlier {}", stale.display()))?;
        }
    }
    Ok(())
}

/// Writes `report.json` with verdict `"error"` and the message (docs/report-schema.md).
/// Best effort: the error itself is what the user must see.
fn write_error_report(out: &std::path::Path, command: &str, message: &str) {
    let report = serde_json::json!({
        "schema_version": qgate_report::SCHEMA_VERSION,
        "tool": { "name": "qgate", "version": env!("CARGO_PKG_VERSION") },
        "command": command,
        "verdict": "error",
        "error": message,
    });
    if std::fs::create_dir_all(out).is_ok() {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        let _ = std::fs::write(out.join("report.json"), text);
    }
}

/// The error and its causes, joined with ": ", skipping a cause whose text the message
/// already quotes (library messages often include their OS error).
fn error_text(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn compare(cfg: CompareConfig) -> Result<Verdict> {
    let (report, _, _) = accuracy(&cfg)?;
    write_report(&report, &cfg.out)
}

/// The accuracy half: evaluates the pair and builds its report; returns the data set and
/// the evaluation too (`check` benchmarks on the same data and compares outputs).
fn accuracy(cfg: &CompareConfig) -> Result<(Report, Dataset, qgate_eval::Evaluation)> {
    let mut data = Dataset::load(&cfg.data, &cfg.keys, &cfg.images)?;
    data.subset(cfg.limit, cfg.seed);
    let mut baseline = load(&cfg.baseline, &cfg.load).context("baseline")?;
    let mut candidate = load(&cfg.candidate, &cfg.load).context("candidate")?;
    let bar = if cfg.progress {
        let bar = ProgressBar::new((2 * data.len()) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:>9} [{bar:30}] {pos}/{len} samples ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let runtime_checks = qgate_eval::guard_tract_sides(
        [
            ("baseline", &cfg.baseline, baseline.as_mut()),
            ("candidate", &cfg.candidate, candidate.as_mut()),
        ],
        &data,
        &cfg.eval,
        &cfg.runtime_check,
        scratch.path(),
    )?;
    let n = data.len() as u64;
    let mut progress = |side: &str, done: usize, _all: usize| {
        let offset = if side == "candidate" { n } else { 0 };
        bar.set_message(side.to_string());
        bar.set_position(offset + done as u64);
    };
    let mut eval = evaluate_pair(
        baseline.as_mut(),
        candidate.as_mut(),
        &data,
        &cfg.policy,
        &cfg.eval,
        &mut progress,
    )?;
    eval.runtime_checks = runtime_checks;
    bar.finish_and_clear();
    if let Some(dir) = &cfg.save_outputs {
        save_outputs(dir, &data, &eval)?;
    }
    let host = qgate_runtime::host_info();
    let report = Report::from_evaluation(&eval, "compare", cfg.deployment_runtime.as_deref(), host);
    Ok((report, data, eval))
}

/// Writes every report file and prints the verdict, criteria and notes.
fn write_report(report: &Report, out: &std::path::Path) -> Result<Verdict> {
    qgate_report::write_reports(report, out).context("cannot write the reports")?;
    out!("{}", report.summary);
    for c in &report.gate.criteria {
        let mark = match c.status {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        };
        out!("  [{mark}] {}: {}", c.key, c.message);
    }
    for w in &report.warnings {
        out!("  note: {}", w.message);
    }
    out!("reports: {}", out.join("report.html").display());
    Ok(report.verdict)
}

fn bench(cfg: BenchConfig) -> Result<Verdict> {
    let data = match &cfg.data {
        Some(path) => {
            let mut d = Dataset::load(path, &Default::default(), &cfg.images)?;
            d.subset(Some(cfg.perf.perf_samples), None);
            Some(d)
        }
        None => None,
    };
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let (perf, criteria) = measure(
        &cfg.baseline,
        &cfg.candidate,
        data.as_ref(),
        &cfg.mapping,
        &cfg.load,
        &cfg.perf,
        &cfg.policy,
        scratch.path(),
        cfg.progress,
    )?;
    let report = Report::from_performance(
        perf,
        &cfg.policy,
        criteria,
        "bench",
        cfg.deployment_runtime.as_deref(),
        qgate_runtime::host_info(),
    );
    write_report(&report, &cfg.out)
}

fn check(cfg: CompareConfig, mut perf_cfg: PerfConfig) -> Result<Verdict> {
    if perf_cfg.plan.reference_outputs.iter().any(Option::is_some) {
        anyhow::bail!(
            "--reference-outputs: `qgate check` compares the timed outputs with its own accuracy run's outputs; give saved outputs to `qgate bench` instead"
        );
    }
    let (report, mut data, eval) = accuracy(&cfg)?;
    // The timed outputs must be the outputs whose accuracy was just measured.
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    save_outputs(scratch.path(), &data, &eval)?;
    perf_cfg.plan.reference_outputs = [
        Some(scratch.path().join("baseline.npz")),
        Some(scratch.path().join("candidate.npz")),
    ];
    data.subset(Some(perf_cfg.perf_samples), None);
    let (perf, criteria) = measure(
        &cfg.baseline,
        &cfg.candidate,
        Some(&data),
        &cfg.eval.inputs,
        &cfg.load,
        &perf_cfg,
        &cfg.policy,
        scratch.path(),
        cfg.progress,
    )?;
    let mut report = report.with_performance(perf, criteria);
    report.command = "check".into();
    write_report(&report, &cfg.out)
}

/// Output tolerance of the same-artifact check: exact where the runtime is deterministic
/// on the CPU, float32 reordering on GPUs and behind servers (batching, kernels chosen at
/// run time).
fn output_tolerance(spec: &ModelSpec, load: &LoadOptions) -> qgate_core::Tolerance {
    let device = spec.options.device.as_deref().or(load.device.as_deref());
    match (&spec.kind, device) {
        (SpecKind::Remote(_), _) => qgate_core::Tolerance::Float32Reordering,
        (_, Some(d)) if d != "cpu" => qgate_core::Tolerance::Float32Reordering,
        _ => qgate_core::Tolerance::Exact,
    }
}

/// Runs the benchmark, each side in a worker process of this binary, and judges the
/// policy's performance keys. Inputs and worker logs go to `scratch`.
#[allow(clippy::too_many_arguments)]
fn measure(
    baseline: &ModelSpec,
    candidate: &ModelSpec,
    data: Option<&Dataset>,
    mapping: &qgate_eval::InputMapping,
    load: &LoadOptions,
    perf: &PerfConfig,
    policy: &qgate_core::policy::Policy,
    scratch: &std::path::Path,
    progress: bool,
) -> Result<(
    qgate_bench::Performance,
    Vec<qgate_core::policy::CriterionResult>,
)> {
    let data_npz = match data {
        Some(d) => {
            let path = scratch.join("inputs.npz");
            let arrays = d.arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
            write_with_ids(&path, arrays, &d.ids)?;
            Some(path)
        }
        None => None,
    };
    let exe =
        std::env::current_exe().context("cannot locate the qgate executable for its workers")?;
    let mut plan = perf.plan.clone();
    plan.output_tolerance = [
        perf.tolerance
            .unwrap_or_else(|| output_tolerance(baseline, load)),
        perf.tolerance
            .unwrap_or_else(|| output_tolerance(candidate, load)),
    ];
    let init = |side: &str, spec: &ModelSpec| Init {
        side: side.into(),
        spec: spec.raw.clone(),
        load: LoadSpec::from(load),
        workload: WorkloadSpec {
            data: data_npz.clone(),
            data_source: data.map(|d| d.source.clone()),
            single_key: mapping.single_key.clone(),
            pairs: mapping.pairs.clone(),
            shapes: perf.shapes.clone(),
            seed: perf.plan.seed,
        },
        probe: perf.probe.clone(),
    };
    let spinner = spinner(progress);
    spinner.set_message("loading baseline");
    let mut b = ChildSide::spawn(
        &exe,
        &["__worker"],
        init("baseline", baseline),
        plan.batch,
        scratch,
    )?;
    spinner.set_message("loading candidate");
    let mut c = ChildSide::spawn(
        &exe,
        &["__worker"],
        init("candidate", candidate),
        plan.batch,
        scratch,
    )?;
    let env = qgate_probe::Fingerprint::read(&perf.probe.roots());
    let perf = run_pair(&mut b, &mut c, &plan, env, &mut |m: &str| {
        spinner.set_message(m.to_string())
    })?;
    spinner.finish_and_clear();
    let criteria = Gate::evaluate_performance(policy, &qgate_bench::observations(&perf));
    Ok((perf, criteria))
}

/// A spinner on a terminal, nothing otherwise.
fn spinner(show: bool) -> ProgressBar {
    if show {
        let s = ProgressBar::new_spinner();
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    } else {
        ProgressBar::hidden()
    }
}

/// Writes each side's outputs with the sample ids, as `preds:` reads them back.
fn save_outputs(
    dir: &std::path::Path,
    data: &Dataset,
    eval: &qgate_eval::Evaluation,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, side) in [("baseline", &eval.baseline), ("candidate", &eval.candidate)] {
        let arrays: Vec<(&str, &qgate_core::Array)> =
            side.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        write_with_ids(&dir.join(format!("{name}.npz")), arrays, &data.ids)?;
    }
    Ok(())
}

/// Writes `arrays` plus an `id` array to an `.npz` (the layout `preds:` and the bench
/// workers read).
fn write_with_ids(
    path: &std::path::Path,
    arrays: Vec<(&str, &qgate_core::Array)>,
    ids: &[String],
) -> Result<()> {
    let ids = qgate_core::Array {
        shape: vec![ids.len()],
        data: qgate_core::ArrayData::Str(ids.to_vec()),
    };
    let mut arrays = arrays;
    arrays.push(("id", &ids));
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sensitivity(args: cli::SensitivityArgs, interactive: bool) -> Result<Verdict> {
    use qgate_quant::{
        analyze, calibrate, quantizable_layers, quantize_layers, strip_qdq, CalibMethod,
    };
    let started = std::time::Instant::now();
    let model_path = args
        .model
        .context("missing --model (the FP32 ONNX model)")?;
    let data_path = args
        .data
        .context("missing --data (labelled evaluation data)")?;
    let out = args.out.context("missing --out (the report directory)")?;
    let policy = cli::policy_or_default(args.policy.as_deref())?;
    let method: CalibMethod = args
        .calibration_method
        .as_deref()
        .unwrap_or("minmax")
        .parse()
        .map_err(|e| anyhow::anyhow!("--calibration-method {e}"))?;
    let calib_n = args.calib_samples.unwrap_or(200);
    if calib_n == 0 {
        anyhow::bail!("--calib-samples 0: expected 1 or more calibration samples");
    }
    if args.limit == Some(0) {
        anyhow::bail!("--limit 0: expected 1 or more evaluation samples");
    }
    let fp16 = match args.float_type.as_deref() {
        None | Some("fp32") => false,
        Some("fp16") => true,
        Some(o) => anyhow::bail!("--float-type {o}: expected fp32 or fp16"),
    };
    if fp16 && args.quantized.is_some() {
        anyhow::bail!(
            "--float-type fp16 applies to qgate's own quantization; with --quantized the kept layers get their FP32 weights back"
        );
    }
    let batch_size = args.batch_size.unwrap_or(64);
    if batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let bench_seconds = args.bench_seconds.unwrap_or(1.0);
    if !(bench_seconds >= 0.0 && bench_seconds.is_finite()) {
        anyhow::bail!("--bench-seconds {bench_seconds:?}: expected 0 (no latency) or more seconds");
    }
    let latency_runtime = args.latency_runtime.as_deref().unwrap_or("tract");
    if !matches!(latency_runtime, "tract" | "ort") {
        anyhow::bail!("--latency-runtime {latency_runtime}: expected tract or ort");
    }
    let bench_load = cli::RuntimeFlags {
        ort_lib: args.ort_lib.clone(),
        max_memory: args.max_memory,
        ..Default::default()
    }
    .load_options(cli::RuntimeFlags::default())?;
    limit_memory(&bench_load);
    let model_dir = model_path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let (fp32, normalization) =
        qgate_quant::normalize(qgate_runtime::read_onnx(&model_path)?, &model_dir)
            .with_context(|| model_path.display().to_string())?;
    let layers = quantizable_layers(&fp32)?;
    if layers.is_empty() {
        anyhow::bail!(
            "{}: no quantizable layer (Conv, Gemm or MatMul with a float weight, as an initializer or a Constant node)",
            model_path.display()
        );
    }
    let keys = qgate_data::ArrayKeys {
        label_key: args.label_key.clone(),
        id_key: None,
    };
    let mut data = Dataset::load(&data_path, &keys, &Default::default())?;
    let (calib, calib_source) = match (&args.quantized, &args.calibration) {
        // A given quantized model brings its own calibration: evaluate on every sample.
        (Some(q), _) => (None, q.display().to_string()),
        (None, Some(p)) => {
            let mut c = Dataset::load(p, &qgate_data::ArrayKeys::default(), &Default::default())?;
            if args.calib_samples.is_some_and(|k| k > c.len()) {
                anyhow::bail!(
                    "--calib-samples {calib_n}: {} holds {} samples; give at most {}",
                    p.display(),
                    c.len(),
                    c.len()
                );
            }
            c.subset(Some(calib_n), None);
            let src = format!("{} (first {} samples)", p.display(), c.len());
            (Some(c), src)
        }
        (None, None) => {
            // No calibration set: the first samples calibrate, the rest evaluate, so no
            // sample is both.
            let n = data.len();
            if args.calib_samples.is_some_and(|k| k > n / 3) {
                anyhow::bail!(
                    "--calib-samples {calib_n}: without --calibration at most a third of {}'s {n} \
                     samples ({}) calibrate so that the rest evaluate; give at most {} or a \
                     separate --calibration file",
                    data_path.display(),
                    n / 3,
                    n / 3
                );
            }
            let k = calib_n.min(n / 3);
            let mut c = data.clone();
            c.select(&(0..k).collect::<Vec<_>>());
            data.select(&(k..n).collect::<Vec<_>>());
            let src = format!(
                "the first {k} samples of {} (no --calibration given; evaluation uses the other {})",
                data_path.display(),
                n - k
            );
            (Some(c), src)
        }
    };
    data.subset(args.limit, None);
    let mapping = qgate_eval::InputMapping {
        single_key: args.input_key.clone(),
        pairs: Vec::new(),
    };
    let load_opts = LoadOptions::default();
    let spinner = spinner(interactive && !args.no_progress);
    let quantized = match &args.quantized {
        Some(p) => {
            let dir = p.parent().unwrap_or(std::path::Path::new("."));
            let (q, _) = qgate_quant::normalize(qgate_runtime::read_onnx(p)?, dir)
                .with_context(|| p.display().to_string())?;
            let qdq = q.graph.as_ref().map_or(0, |g| {
                g.node
                    .iter()
                    .filter(|n| n.op_type == "DequantizeLinear")
                    .count()
            });
            if qdq == 0 {
                anyhow::bail!(
                    "--quantized {}: no DequantizeLinear node; expected a QDQ model (e.g. from \
                     onnxruntime.quantization.quantize_static with QuantFormat.QDQ), not a float \
                     or QOperator one",
                    p.display()
                );
            }
            Some(q)
        }
        None => None,
    };
    let ranges = if let Some(calib) = &calib {
        spinner.set_message("calibrating");
        let spec = ModelSpec::parse(&model_path.display().to_string())?;
        let mut m = load(&spec, &load_opts)?;
        let bindings = qgate_eval::resolve_inputs(m.info(), calib, &mapping)
            .map_err(|e| anyhow::anyhow!("calibration data: {e}"))?;
        let arrays: Vec<&qgate_core::Array> = bindings
            .iter()
            .filter_map(|b| calib.arrays.get(&b.array))
            .collect();
        let batches: Vec<Vec<qgate_core::Array>> = (0..calib.len())
            .step_by(batch_size)
            .map(|s| {
                let idx: Vec<usize> = (s..(s + batch_size).min(calib.len())).collect();
                arrays.iter().map(|a| a.select_rows(&idx)).collect()
            })
            .collect();
        let all: Vec<&qgate_quant::Layer> = layers.iter().collect();
        let tensors = qgate_quant::quantized_tensors(&fp32, &all)?;
        calibrate(m.as_mut(), &batches, &tensors, method)?
    } else {
        Default::default()
    };
    let build = |keep: &[String]| -> Result<_, qgate_quant::QuantError> {
        match &quantized {
            Some(q) => strip_qdq(q, keep, Some(&fp32)),
            None => {
                let chosen: Vec<&qgate_quant::Layer> =
                    layers.iter().filter(|l| !keep.contains(&l.node)).collect();
                let q = quantize_layers(&fp32, &chosen, &ranges)?;
                if fp16 {
                    let kept: Vec<&qgate_quant::Layer> =
                        layers.iter().filter(|l| keep.contains(&l.node)).collect();
                    qgate_quant::layers_to_fp16(&q, &kept)
                } else {
                    Ok(q)
                }
            }
        }
    };
    let scratch = tempfile::tempdir().context("cannot create a temporary directory")?;
    let eval_opts = qgate_eval::EvalOptions {
        batch_size,
        inputs: mapping.clone(),
        bootstrap: qgate_core::stats::BootstrapSettings {
            resamples: 200,
            ..Default::default()
        },
        ..Default::default()
    };
    let n_eval = data.len();
    let bench_data = {
        let mut d = data.clone();
        d.subset(Some(64), None);
        d
    };
    let mut evaluator = qgate_eval::SubsetEvaluator::new(
        data,
        policy.clone(),
        eval_opts,
        load_opts,
        scratch.path(),
    );
    // With qgate's own quantization, "only this layer" models start at the layer's inputs
    // and are fed cached FP32 activations (everything before the layer is FP32 anyway).
    let build_only = |l: &qgate_quant::Layer,
                      feeds: &[(String, Vec<usize>)]|
     -> Result<_, qgate_quant::QuantError> {
        let cut = qgate_quant::cut_at(&fp32, feeds)?;
        let cut_layers = quantizable_layers(&cut)?;
        let chosen = qgate_quant::select(&cut_layers, std::slice::from_ref(&l.node))?;
        quantize_layers(&cut, &chosen, &ranges)
    };
    let mut analysis = analyze(
        &fp32,
        quantized.as_ref(),
        &layers,
        qgate_quant::Builders {
            full: &build,
            only: if quantized.is_none() {
                Some(&build_only)
            } else {
                None
            },
            float_type: if fp16 { "fp16" } else { "fp32" },
        },
        &mut evaluator,
        scratch.path(),
        &mut |m: &str| spinner.set_message(m.to_string()),
    )?;
    let latency = if bench_seconds > 0.0 {
        Some(time_front(
            &mut analysis,
            &model_path,
            &FrontTiming {
                data: &bench_data,
                mapping: &mapping,
                runtime: latency_runtime,
                load: &bench_load,
                seconds: bench_seconds,
            },
            scratch.path(),
            &mut |m: &str| spinner.set_message(m.to_string()),
        )?)
    } else {
        None
    };
    spinner.finish_and_clear();
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create output directory {}", out.display()))?;
    let mixed_path = out.join("mixed.onnx");
    let rec_model = &analysis.recommendation.model;
    std::fs::copy(rec_model, &mixed_path).with_context(|| {
        format!(
            "cannot copy {} to {}",
            rec_model.display(),
            mixed_path.display()
        )
    })?;
    // The exclusion lists name nodes of the model as qgate read it (generated names
    // included): write that model when it differs from the file.
    let normalized_model = if normalization.changed() {
        let p = out.join("model_normalized.onnx");
        qgate_quant::write_model(&fp32, &p)?;
        Some(p.display().to_string())
    } else {
        None
    };
    let rec = &analysis.recommendation;
    std::fs::write(
        out.join("exclusions.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "onnxruntime_nodes_to_exclude": rec.ort_nodes_to_exclude,
            "tensorrt_layer_precisions": rec.tensorrt_layer_precisions,
            "nncf_ignored_scope": rec.nncf_ignored_scope,
        }))? + "\n",
    )
    .with_context(|| format!("cannot write {}", out.join("exclusions.json").display()))?;
    let report = Report::from_sensitivity(
        qgate_report::SensitivityReport {
            model: model_path.display().to_string(),
            quantized: args.quantized.as_ref().map(|p| p.display().to_string()),
            calibration: qgate_report::CalibrationInfo {
                method: if quantized.is_some() {
                    "the given quantized model's own".into()
                } else {
                    serde_json::to_value(method)
                        .ok()
                        .and_then(|v| v["method"].as_str().map(str::to_string))
                        .unwrap_or_default()
                },
                source: calib_source,
                samples: calib.as_ref().map_or(0, Dataset::len),
            },
            evaluation: qgate_report::SubsetInfo {
                source: data_path.display().to_string(),
                samples: n_eval,
            },
            analysis,
            normalization,
            normalized_model,
            mixed_model: mixed_path.display().to_string(),
            latency,
            seconds: started.elapsed().as_secs_f64(),
        },
        &policy,
        qgate_runtime::host_info(),
    );
    write_report(&report, &out)
}

/// How the trade-off front is timed.
struct FrontTiming<'a> {
    data: &'a Dataset,
    mapping: &'a qgate_eval::InputMapping,
    runtime: &'a str,
    load: &'a LoadOptions,
    seconds: f64,
}

/// Times every configuration of the trade-off front against the FP32 model: batch 1,
/// interleaved rounds, each pair in its own worker processes, as `qgate bench` measures.
fn time_front(
    analysis: &mut qgate_quant::Analysis,
    fp32: &std::path::Path,
    t: &FrontTiming,
    scratch: &std::path::Path,
    progress: &mut dyn FnMut(&str),
) -> Result<qgate_report::FrontLatencyInfo> {
    let spec = |p: &std::path::Path| -> Result<ModelSpec> {
        let raw = match t.runtime {
            "ort" => format!("ort:{}", p.display()),
            _ => p.display().to_string(),
        };
        Ok(ModelSpec::parse(&raw)?)
    };
    let base = spec(fp32)?;
    let perf = PerfConfig {
        plan: qgate_bench::Plan {
            batch: 1,
            warmup_seconds: 0.2,
            warmup_max_seconds: 2.0,
            seconds: t.seconds,
            rounds: 10,
            batch_sweep: Vec::new(),
            concurrency_sweep: Vec::new(),
            load_fractions: Vec::new(),
            offline_batch: None,
            output_check: false,
            ..Default::default()
        },
        perf_samples: t.data.len(),
        shapes: Default::default(),
        probe: Default::default(),
        tolerance: None,
    };
    let none = qgate_core::policy::Policy::default();
    let mut fp32_median = None;
    let mut runtime = String::new();
    let n = analysis.front.len();
    for (i, point) in analysis.front.iter_mut().enumerate() {
        progress(&format!(
            "timing the front {}/{n}: {} layer(s) in float against FP32",
            i + 1,
            point.n_float_layers
        ));
        let path = &point.model;
        let (p, _) = measure(
            &base,
            &spec(path)?,
            Some(t.data),
            t.mapping,
            t.load,
            &perf,
            &none,
            scratch,
            false,
        )
        .with_context(|| format!("timing {} against {}", path.display(), fp32.display()))?;
        fp32_median.get_or_insert(p.baseline.latency_ms.p50);
        if runtime.is_empty() {
            runtime = format!(
                "{} {}",
                p.candidate.runtime.runtime, p.candidate.runtime.runtime_version
            );
        }
        point.latency = Some(qgate_quant::FrontLatency {
            median_ms: p.candidate.latency_ms.p50,
            p99_ms: p.candidate.latency_ms.p99,
            speedup_vs_fp32: p.comparison.speedup,
            speedup_ci: p.comparison.speedup_ci,
        });
    }
    let mut notes = vec![
        "each configuration is timed in a pair with the FP32 model (its own worker processes, interleaved rounds); the speed-up is paired within that pair".to_string(),
    ];
    if t.runtime == "tract" {
        notes.push(
            "tract simulates INT8 (QDQ) in float and runs it slower than FP32: these are tract's latencies, not your deployment runtime's; use --latency-runtime ort or `qgate bench` with the runtime you ship"
                .into(),
        );
    }
    Ok(qgate_report::FrontLatencyInfo {
        runtime,
        seconds_per_side: t.seconds,
        batch_size: 1,
        fp32_median_ms: fp32_median.unwrap_or(f64::NAN),
        notes,
    })
}

fn inspect(args: InspectArgs) -> Result<()> {
    let spec = ModelSpec::parse(&args.model)?;
    let path = spec
        .path()
        .with_context(|| format!("{}: inspect reads model files, not servers", spec.raw))?;
    let info = inspect_onnx(path)?;
    let unsupported = tract_unsupported(path)?;
    // The checks compare runs before evaluating (parse, graph checks, plan, one batch), so
    // "runs in tract: yes" means compare will not refuse the model for the runtime's sake.
    let tract_spec = ModelSpec::parse(&format!("tract:{}", path.display()))?;
    let runs_in_tract = qgate_runtime::smoke_test(&tract_spec, &LoadOptions::default())
        .map_err(|e| error_text(&anyhow::Error::new(e)));
    // How `qgate sensitivity` reads it: weights in Constant nodes, unnamed nodes, external
    // data, the opset and weight scales.
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let normalization = qgate_quant::normalize(qgate_runtime::read_onnx(path)?, dir)
        .map(|(_, n)| n)
        .map_err(|e| e.to_string());
    if args.json {
        let v = serde_json::json!({
            "model": info,
            "tract_unsupported": unsupported,
            "runs_in_tract": match &runs_in_tract {
                Ok(()) => serde_json::json!({ "runs": true }),
                Err(e) => serde_json::json!({ "runs": false, "problem": e }),
            },
            "quantization_reading": match &normalization {
                Ok(n) => serde_json::to_value(n)?,
                Err(e) => serde_json::json!({ "error": e }),
            },
        });
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    out!(
        "{}  ({} bytes, opset {}, {})",
        path.display(),
        info.file_bytes,
        info.opset,
        info.producer
    );
    out!("inputs:");
    for t in &info.inputs {
        let ty = t
            .elem_type
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into());
        out!("  {:<24} {:<8} {}", t.name, ty, t.shape_text());
    }
    out!("outputs:");
    for t in &info.outputs {
        let ty = t
            .elem_type
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into());
        out!("  {:<24} {:<8} {}", t.name, ty, t.shape_text());
    }
    out!("ops ({} nodes):", info.op_counts.values().sum::<usize>());
    for (op, n) in &info.op_counts {
        out!("  {op:<32} {n}");
    }
    match &normalization {
        Ok(n) => out!("for quantization: {}", n.notes().join("; ")),
        Err(e) => out!("for quantization: {e}"),
    }
    match &runs_in_tract {
        Ok(()) => out!("runs in tract: yes (loaded and ran one zero-filled batch)"),
        Err(e) => out!("runs in tract: no — {e}"),
    }
    if unsupported.is_empty() {
        out!("tract: every op is supported");
    } else {
        out!("tract cannot run {} node(s):", unsupported.len());
        for u in &unsupported {
            let dom = if u.domain.is_empty() {
                String::new()
            } else {
                format!(" (domain {})", u.domain)
            };
            out!("  {} : {}{dom}", u.node, u.op_type);
        }
    }
    Ok(())
}

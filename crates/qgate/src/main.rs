//! The `qgate` binary: argv → validated config → library calls → exit code
//! (0 pass, 1 fail, 2 error).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use qgate_core::policy::{Status, Verdict};
use qgate_report::{exporters, Report};
use qgate_runtime::{inspect_onnx, tract_unsupported, LoadOptions, ModelSpec};

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
        Command::Sensitivity(args) => {
            let progress = interactive && !args.no_progress;
            resolved(
                &argv,
                worker_exe().and_then(|exe| (*args).resolve(exe)),
                |cfg| {
                    limit_memory(&cfg.bench_load);
                    guarded(&cfg.out.clone(), "sensitivity", || {
                        sensitivity(cfg, progress)
                    })
                },
            )
        }
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
    let bar = progress_bar(cfg.progress);
    let accuracy =
        qgate_app::compare::run(&cfg, &mut |side, done, all| bar.advance(side, done, all))?;
    bar.0.finish_and_clear();
    write_report(&accuracy.report, &cfg.out)
}

/// The evaluation's progress bar: both sides' samples on one bar.
struct SamplesBar(ProgressBar);

impl SamplesBar {
    fn advance(&self, side: &str, done: usize, all: usize) {
        let all = all as u64;
        if self.0.length() != Some(2 * all) {
            self.0.set_length(2 * all);
        }
        let offset = if side == "candidate" { all } else { 0 };
        self.0.set_message(side.to_string());
        self.0.set_position(offset + done as u64);
    }
}

fn progress_bar(show: bool) -> SamplesBar {
    if !show {
        return SamplesBar(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:>9} [{bar:30}] {pos}/{len} samples ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    SamplesBar(bar)
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
    let exe = worker_exe()?;
    let spinner = spinner(cfg.progress);
    let report = qgate_app::bench::run(&cfg, &exe, &mut |m: &str| {
        spinner.set_message(m.to_string())
    })?;
    spinner.finish_and_clear();
    write_report(&report, &cfg.out)
}

fn check(cfg: CompareConfig, perf: PerfConfig) -> Result<Verdict> {
    let exe = worker_exe()?;
    let bar = progress_bar(cfg.progress);
    let spinner = spinner(cfg.progress);
    let report = qgate_app::bench::check(
        &cfg,
        &perf,
        &exe,
        &mut |side, done, all| bar.advance(side, done, all),
        &mut |m: &str| {
            bar.0.finish_and_clear();
            spinner.set_message(m.to_string())
        },
    )?;
    spinner.finish_and_clear();
    write_report(&report, &cfg.out)
}

/// This binary, whose `__worker` runs each measured side.
fn worker_exe() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("cannot locate the qgate executable for its workers")
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
/// `qgate sensitivity`: the analysis in `qgate_app`, a spinner here.
fn sensitivity(cfg: qgate_app::sensitivity::SensitivityConfig, progress: bool) -> Result<Verdict> {
    let spinner = spinner(progress);
    let report =
        qgate_app::sensitivity::run(&cfg, &mut |m: &str| spinner.set_message(m.to_string()))?;
    spinner.finish_and_clear();
    write_report(&report, &cfg.out)
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

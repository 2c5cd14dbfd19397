//! The `qgate` binary: argv → validated config → library calls → exit code
//! (0 pass, 1 fail, 2 error).

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use qgate_core::policy::{Status, Verdict};
use qgate_report::Report;
use qgate_runtime::LoadOptions;

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
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut public_command(), "qgate", &mut text);
            print_bytes(&text).map(|()| Verdict::Pass)
        }
        Command::Man { command } => man(command.as_deref()).map(|()| Verdict::Pass),
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
        let _ = qgate_report::clear_reports(&out);
        qgate_report::write_error_report(&out, &command, message);
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
    qgate_report::clear_reports(out).context("cannot clear the report folder")?;
    let result = run();
    if let Err(e) = &result {
        qgate_report::write_error_report(out, command, &error_text(e));
    }
    result
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
    // The benchmark's spinner replaces the accuracy bar when measuring starts.
    let mut spin: Option<ProgressBar> = None;
    let report = qgate_app::bench::check(
        &cfg,
        &perf,
        &exe,
        &mut |side, done, all| bar.advance(side, done, all),
        &mut |m: &str| {
            spin.get_or_insert_with(|| {
                bar.0.finish_and_clear();
                spinner(cfg.progress)
            })
            .set_message(m.to_string())
        },
    )?;
    bar.0.finish_and_clear();
    if let Some(s) = spin {
        s.finish_and_clear();
    }
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

/// qgate's command line without its hidden `__worker` (clap_complete would offer it).
fn public_command() -> clap::Command {
    let cmd = <Cli as clap::CommandFactory>::command();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let about = cmd.get_about().cloned().unwrap_or_default();
    clap::Command::new("qgate")
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .subcommand_required(true)
        .subcommands(subs)
}

/// Writes generated text to stdout; a reader that went away ends it quietly.
fn print_bytes(bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}

/// `qgate man [COMMAND]`: the roff page of qgate or of one of its commands.
fn man(command: Option<&str>) -> Result<()> {
    let mut cmd = public_command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => cmd
            .get_subcommands()
            .find(|c| c.get_name() == name && !c.is_hide_set())
            .cloned()
            .map(|c| {
                c.display_name(format!("qgate-{name}"))
                    .version(env!("CARGO_PKG_VERSION"))
            })
            .with_context(|| {
                let names: Vec<&str> = cmd
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| c.get_name())
                    .collect();
                format!("man {name}: no such command; one of {}", names.join(", "))
            })?,
    };
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut text)
        .context("cannot render the man page")?;
    print_bytes(&text)
}

fn inspect(args: InspectArgs) -> Result<()> {
    let found = qgate_app::inspect::run(&args.model)?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&found.json()?)?);
    } else {
        for line in found.lines() {
            out!("{line}");
        }
    }
    Ok(())
}

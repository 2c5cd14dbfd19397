//! The `qgate` binary: argv → validated config → library calls → exit code
//! (0 pass, 1 fail, 2 error). `main` only dispatches: `cli` resolves flags into configs,
//! `commands` calls qgate-app with the terminal's progress (`ui`) and writes the reports,
//! `settle` keeps `--out` honest when a run fails, `shell` prints completions and man pages.

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

mod cli;
mod commands;
mod defaults;
mod runconfig;
mod serve;
mod settle;
mod shell;
mod ui;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use qgate_report::Verdict;

use cli::{Cli, Command};
use commands::{analyze, bench, check, compare, inspect, sensitivity, worker_exe};
use settle::{error_text, guarded, limit_memory, resolved, settle_error};
use shell::{man, print_bytes, public_command};

/// The command line, with `--config run.toml` expanded into the flags it holds (placed
/// before the given ones, which win), parsed; or the exit code of a refused one, whose
/// error is settled in the report folder it names.
fn parse(given: Vec<OsString>) -> Result<(Cli, Vec<OsString>), ExitCode> {
    // One command definition: the run config is read against it, argv is parsed with it.
    let cmd = defaults::documented(<Cli as clap::CommandFactory>::command());
    let argv = match runconfig::expand(&given, &cmd) {
        Ok(argv) => argv,
        Err(e) => {
            settle_error(&given, &error_text(&e));
            eprintln!("qgate: error: {}", error_text(&e));
            return Err(ExitCode::from(2));
        }
    };
    let parsed = cmd
        .try_get_matches_from(&argv)
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m));
    match parsed {
        Ok(cli) => Ok((cli, argv)),
        Err(e) => {
            // A flag error still must not leave an earlier run's PASS in --out.
            if e.use_stderr() {
                settle_error(&argv, &e.to_string());
            }
            e.exit();
        }
    }
}

fn main() -> ExitCode {
    qgate_runtime::install_panic_hook();
    let (cli, argv) = match parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(code) => return code,
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
            let progress = interactive && !args.report.no_progress;
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
        Command::Serve(args) => serve::serve(*args),
        Command::Analyze(args) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            resolved(&argv, (*args).resolve(interactive, now), |cfg| {
                guarded(&cfg.out.clone(), "analyze", || analyze(cfg))
            })
        }
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
        Ok(v) => ExitCode::from(v.exit_code()),
        Err(e) => {
            eprintln!("qgate: error: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

//! Keeping `--out` honest: a run that fails — also before its config is complete — leaves
//! no earlier run's report there, only `report.json` with verdict `"error"`.

use anyhow::{Context, Result};
use qgate_report::Verdict;
use qgate_runtime::LoadOptions;

/// Runs `run` on a resolved config; when resolving failed, the error is settled in the
/// report folder the command line names (see [`settle_error`]) and returned.
pub(crate) fn resolved<C>(
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
pub(crate) fn settle_error(argv: &[std::ffi::OsString], message: &str) {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = args.get(1).cloned().unwrap_or_default();
    let value_of =
        |flag: &str| crate::runconfig::last_value(args.get(1..).unwrap_or_default(), flag);
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

/// Runs `command` writing into `out` so that a reader of `out` never sees a verdict from
/// another run: qgate's own report files there are removed first (never other files), and a
/// run that ends in an error (exit 2) leaves a `report.json` whose verdict is `"error"`, with
/// the message.
pub(crate) fn guarded(
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
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    qgate_app::chain_text(e.as_ref())
}

/// Applies `--max-memory` to this process (bench workers get it through their load spec).
pub(crate) fn limit_memory(load: &LoadOptions) {
    if let Some(bytes) = load.max_memory {
        qgate_core::memory::set_limit(bytes);
    }
}

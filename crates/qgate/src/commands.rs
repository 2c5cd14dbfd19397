//! Each command: its config to qgate-app with the terminal's progress, then the reports.

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use qgate_report::Verdict;

use crate::cli::{AnalyzeConfig, BenchConfig, CompareConfig, InspectArgs, PerfConfig};
use crate::ui::{progress_bar, spinner, write_report};

pub(crate) fn compare(cfg: CompareConfig) -> Result<Verdict> {
    let bar = progress_bar(cfg.progress);
    let accuracy =
        qgate_app::compare::run(&cfg, &mut |side, done, all| bar.advance(side, done, all))?;
    bar.0.finish_and_clear();
    let report = qgate_app::compare::combine(&cfg, accuracy.reports);
    write_report(&report, &cfg.out)
}

pub(crate) fn bench(cfg: BenchConfig) -> Result<Verdict> {
    let exe = worker_exe()?;
    let spinner = spinner(cfg.progress);
    let report = qgate_app::bench::run(&cfg, &exe, &mut |m: &str| {
        spinner.set_message(m.to_string())
    })?;
    spinner.finish_and_clear();
    write_report(&report, &cfg.out)
}

pub(crate) fn check(cfg: CompareConfig, perf: PerfConfig) -> Result<Verdict> {
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
pub(crate) fn worker_exe() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("cannot locate the qgate executable for its workers")
}

/// `qgate sensitivity`: the analysis in `qgate_app`, a spinner here.
pub(crate) fn sensitivity(
    cfg: qgate_app::sensitivity::SensitivityConfig,
    progress: bool,
) -> Result<Verdict> {
    let spinner = spinner(progress);
    let report =
        qgate_app::sensitivity::run(&cfg, &mut |m: &str| spinner.set_message(m.to_string()))?;
    spinner.finish_and_clear();
    write_report(&report, &cfg.out)
}

pub(crate) fn inspect(args: InspectArgs) -> Result<()> {
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

/// `qgate analyze`: the log read and judged by qgate-online, the reports written here.
pub(crate) fn analyze(cfg: AnalyzeConfig) -> Result<Verdict> {
    let spin = spinner(cfg.progress);
    spin.set_message(format!("reading {}", qgate_online::redact(&cfg.log)));
    let mut reader = qgate_serve::open_log(&cfg.log)?;
    let online = qgate_online::analyze(reader.as_mut(), &cfg.analysis, cfg.export.as_deref())?;
    spin.finish_and_clear();
    let report = qgate_report::OnlineReport::new(online);
    qgate_report::write_online_reports(&report, &cfg.out).context("cannot write the reports")?;
    out!("{}", report.summary);
    for line in report.criterion_lines() {
        out!("  {line}");
    }
    for n in &report.online.notes {
        out!("  note: {n}");
    }
    if let Some(e) = &report.exported {
        out!(
            "exported {} samples to {} ({} labelled, {} shadow disagreements)",
            e.samples,
            e.path,
            e.labelled,
            e.disagreements
        );
    }
    out!("reports: {}", cfg.out.join("report.html").display());
    Ok(report.verdict)
}

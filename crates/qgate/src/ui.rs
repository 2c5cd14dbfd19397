//! What the terminal shows: progress, and the verdict's lines after the reports are written.

use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use qgate_report::Report;
use qgate_report::{Status, Verdict};

/// The evaluation's progress bar: every model's samples on one bar (the baseline, then
/// each candidate).
pub(crate) struct SamplesBar(pub(crate) ProgressBar);

impl SamplesBar {
    /// Every model runs each batch in turn: one bar of samples per pass over the data
    /// (the clean data, then each corrupted copy), labelled by the pass.
    pub(crate) fn advance(&self, pass: &str, done: usize, all: usize) {
        let all = all as u64;
        if self.0.length() != Some(all) {
            self.0.set_length(all);
        }
        self.0.set_message(pass.to_string());
        self.0.set_position(done as u64);
    }
}

pub(crate) fn progress_bar(show: bool) -> SamplesBar {
    if !show {
        return SamplesBar(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:>20} [{bar:30}] {pos}/{len} samples ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    SamplesBar(bar)
}

/// Writes every report file and prints the verdict, criteria and notes.
pub(crate) fn write_report(report: &Report, out: &Path) -> Result<Verdict> {
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

/// A spinner on a terminal, nothing otherwise.
pub(crate) fn spinner(show: bool) -> ProgressBar {
    if show {
        let s = ProgressBar::new_spinner();
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    } else {
        ProgressBar::hidden()
    }
}

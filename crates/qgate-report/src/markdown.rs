//! A Markdown summary that fits a pull-request comment.

use std::fmt::Write;

use crate::Status;

use crate::{num, pct, pval, Exporter, Report, ReportError};

pub(crate) struct Markdown;

/// Classes listed in the Markdown per-class table (worst first); the rest is in the HTML.
const MAX_CLASS_ROWS: usize = 10;

impl Exporter for Markdown {
    fn file_name(&self) -> &'static str {
        "report.md"
    }

    fn render(&self, r: &Report) -> Result<String, ReportError> {
        if !r.candidates.is_empty() {
            return crate::candidates::markdown(self, r);
        }
        let mut m = String::new();
        let badge = r.verdict.badge();
        let _ = writeln!(m, "## qgate {}: {badge}\n", r.command);
        let _ = writeln!(m, "{}\n", r.summary);
        if let Some((b, c)) = r.sides() {
            let _ = writeln!(
                m,
                "Baseline `{}` ({} {}) · candidate `{}` ({} {}){}\n",
                b.spec,
                b.runtime,
                b.runtime_version,
                c.spec,
                c.runtime,
                c.runtime_version,
                data_note(r)
            );
        }
        criteria_table(&mut m, r);
        if let Some(acc) = r.accuracy() {
            accuracy(&mut m, &acc);
        }
        if let Some(c) = &r.calibration {
            crate::slices::calibration_markdown(&mut m, c);
        }
        if let Some(s) = &r.slices {
            crate::slices::markdown(&mut m, s);
        }
        if let Some(c) = &r.corruptions {
            crate::corruptions::markdown(&mut m, c);
        }
        if let Some(p) = &r.performance {
            crate::perf::markdown(&mut m, p);
        }
        if let Some(s) = &r.sensitivity {
            crate::sens::markdown(&mut m, s);
        }
        let checks = crate::runtime_check_lines(r);
        if !r.warnings.is_empty() || !checks.is_empty() {
            m.push_str("\n**Notes**\n\n");
            for w in &r.warnings {
                let _ = writeln!(m, "- {}", w.message);
            }
            for c in checks {
                let _ = writeln!(m, "- {c}");
            }
        }
        let _ = writeln!(
            m,
            "\n<sub>qgate {} · schema {} · full report: report.html, report.json</sub>",
            r.tool.version, r.schema_version
        );
        Ok(m)
    }
}

/// ` · data `PATH` (N samples, C classes)` of an accuracy run, else nothing.
pub(crate) fn data_note(r: &Report) -> String {
    r.data
        .as_ref()
        .map(|d| {
            format!(
                " · data `{}` ({} samples, {} classes)",
                d.source, d.n_samples, d.n_classes
            )
        })
        .unwrap_or_default()
}

/// The gate's criteria, one row each.
fn criteria_table(m: &mut String, r: &Report) {
    m.push_str("| criterion | observed | 95% CI | threshold | source | result |\n|---|---:|---:|---:|---|---|\n");
    for c in &r.gate.criteria {
        let result = match c.status {
            Status::Pass => "✅ pass",
            Status::Fail => "❌ fail",
            Status::Skipped => "➖ skipped",
        };
        let op = c.direction.symbol();
        let _ = writeln!(
            m,
            "| `{}`{} | {} | {} | {op} {} | {} | {result} |",
            c.key,
            c.slice
                .as_ref()
                .map(|s| format!(" · `{}`", crate::md_code(s)))
                .unwrap_or_default(),
            c.observed.map(num).unwrap_or_else(|| "—".into()),
            c.interval
                .map(|[a, b]| format!("[{}, {}]", num(a), num(b)))
                .unwrap_or_else(|| "—".into()),
            num(c.threshold),
            c.source
        );
    }
}

/// Accuracy of both sides, the paired statistics and the classes that lost.
fn accuracy(m: &mut String, acc: &crate::schema::Accuracy) {
    let c = &acc.comparison;
    let _ = writeln!(
        m,
        "\n| | baseline | candidate | Δ | 95% CI of Δ |\n|---|---:|---:|---:|---:|"
    );
    let _ = writeln!(
        m,
        "| top-1 accuracy | {} | {} | {:+.2} pp | [{:+.2}, {:+.2}] pp{} |",
        pct(acc.baseline.accuracy),
        pct(acc.candidate.accuracy),
        c.accuracy_delta * 100.0,
        c.accuracy_delta_ci[0] * 100.0,
        c.accuracy_delta_ci[1] * 100.0,
        crate::ci_note(c.accuracy_delta, c.accuracy_delta_ci)
    );
    if let (Some(a), Some(b)) = (acc.baseline.top_k_accuracy, acc.candidate.top_k_accuracy) {
        let _ = writeln!(
            m,
            "| top-{} accuracy | {} | {} | {:+.2} pp | |",
            acc.baseline.top_k,
            pct(a),
            pct(b),
            (b - a) * 100.0
        );
    }
    let _ = writeln!(
        m,
        "| macro F1 | {} | {} | {:+.4} | [{:+.4}, {:+.4}]{} |",
        num(acc.baseline.macro_avg.f1),
        num(acc.candidate.macro_avg.f1),
        c.macro_f1_delta,
        c.macro_f1_delta_ci[0],
        c.macro_f1_delta_ci[1],
        crate::ci_note(c.macro_f1_delta, c.macro_f1_delta_ci)
    );
    let _ = writeln!(
        m,
        "\nMcNemar exact p = {} · flips: {} correct→wrong, {} wrong→correct · top-1 agreement {}{}",
        pval(c.mcnemar_p),
        c.negative_flips,
        c.positive_flips,
        pct(c.top1_agreement),
        c.kl.as_ref()
            .map(|k| format!(" · KL mean {} (p99 {})", num(k.mean), num(k.p99)))
            .unwrap_or_default()
    );
    let mut worst = c.per_class.clone();
    worst.sort_by(|a, b| {
        a.recall_delta
            .total_cmp(&b.recall_delta)
            .then(a.support.cmp(&b.support))
    });
    let worst: Vec<_> = worst
        .into_iter()
        .filter(|d| d.recall_delta < 0.0 || d.f1_delta < 0.0)
        .take(MAX_CLASS_ROWS)
        .collect();
    if !worst.is_empty() {
        let alpha = c.alpha;
        let _ = writeln!(
            m,
            "\n**Classes that lost** (worst recall first). {}\n",
            crate::slices::class_sentence(&c.per_class, alpha)
        );
        m.push_str("| class | support | recall | Δ recall | Δ F1 | correct→wrong | p (Holm) | finding |\n|---|---:|---:|---:|---:|---:|---:|---|\n");
        for d in worst {
            let _ = writeln!(
                m,
                "| {}{} | {} | {} → {} | {:+.2} pp | {:+.2} pp | {} | {} | {} |",
                d.name,
                if d.flagged { " ⚠️" } else { "" },
                d.support,
                pct(d.baseline_recall),
                pct(d.candidate_recall),
                d.recall_delta * 100.0,
                d.f1_delta * 100.0,
                d.negative_flips,
                d.p_holm.map(pval).unwrap_or_else(|| "—".into()),
                crate::slices::significance_words(d.significance)
            );
        }
    }
}

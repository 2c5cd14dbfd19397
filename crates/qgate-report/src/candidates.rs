//! Several candidates in one report: the ranking table (Markdown, HTML) and each
//! candidate's own sections.

use std::fmt::Write;

use crate::schema::CandidateReport;
use crate::svg::esc;
use crate::{num, Exporter, Report, ReportError};

/// `(speed-up, its 95 % interval)` when the candidate's performance was measured.
fn speed(c: &CandidateReport) -> Option<(f64, [f64; 2])> {
    c.report
        .performance
        .as_ref()
        .map(|p| (p.comparison.speedup, p.comparison.speedup_ci))
}

fn failed(c: &CandidateReport) -> String {
    let keys = crate::schema::failed_labels(&c.report.gate.criteria);
    if keys.is_empty() {
        "—".into()
    } else {
        keys.join(", ")
    }
}

/// Cells of one ranking row: accuracy, Δ with its CI, correct→wrong, speed-up with its CI.
fn cells(c: &CandidateReport) -> [String; 4] {
    let r = &c.report;
    let acc = r
        .candidate
        .as_ref()
        .map(|s| crate::pct(s.accuracy))
        .unwrap_or_else(|| "—".into());
    let delta = r
        .comparison
        .as_ref()
        .map(|k| {
            format!(
                "{:+.2} pp [{:+.2}, {:+.2}]",
                k.accuracy_delta * 100.0,
                k.accuracy_delta_ci[0] * 100.0,
                k.accuracy_delta_ci[1] * 100.0
            )
        })
        .unwrap_or_else(|| "—".into());
    let flips = r
        .comparison
        .as_ref()
        .map(|k| k.negative_flips.to_string())
        .unwrap_or_else(|| "—".into());
    let speedup = speed(c)
        .map(|(s, ci)| format!("{}× [{}, {}]", num(s), num(ci[0]), num(ci[1])))
        .unwrap_or_else(|| "not measured".into());
    [acc, delta, flips, speedup]
}

/// The Markdown of a run with several candidates: the ranking, then each candidate's own
/// report one heading level down.
pub(crate) fn markdown(md: &dyn Exporter, r: &Report) -> Result<String, ReportError> {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "## qgate {}: {} — {} candidates, require {}\n\n{}\n",
        r.command,
        r.verdict.badge(),
        r.candidates.len(),
        r.require.map_or("all", |q| q.as_str()),
        r.summary
    );
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            m,
            "Baseline `{}` ({} {}){}\n",
            b.runtime.spec,
            b.runtime.runtime,
            b.runtime.runtime_version,
            crate::markdown::data_note(r)
        );
    }
    m.push_str("| rank | candidate | verdict | top-1 accuracy | Δ accuracy [95% CI] | correct→wrong | speed-up [95% CI] | failed criteria |\n|---:|---|---|---:|---:|---:|---:|---|\n");
    for c in &r.candidates {
        let [acc, delta, flips, speedup] = cells(c);
        let _ = writeln!(
            m,
            "| {} | `{}` | {} | {acc} | {delta} | {flips} | {speedup} | {} |",
            c.rank,
            crate::md_code(&c.spec),
            c.report.verdict.badge(),
            failed(c).replace('|', "\\|")
        );
    }
    for c in &r.candidates {
        let sub = md.render(&c.report)?;
        let body: Vec<&str> = sub
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("<sub>"))
            .collect();
        let _ = writeln!(
            m,
            "\n---\n\n### #{} `{}`: {}\n{}",
            c.rank,
            c.spec,
            c.report.verdict.badge(),
            body.join("\n")
        );
    }
    let _ = writeln!(
        m,
        "\n<sub>qgate {} · schema {} · full report: report.html, report.json</sub>",
        r.tool.version, r.schema_version
    );
    Ok(m)
}

/// The HTML ranking table (the candidates' sections follow it).
pub(crate) fn html(h: &mut String, r: &Report) {
    h.push_str("<h2>Candidates, best first</h2><p>Ranked by their own gate (passing first, then fewer failed criteria), then by speed-up where it was measured, then by accuracy change.</p><table><tr><th>rank</th><th class=l>candidate</th><th class=l>verdict</th><th>top-1 accuracy</th><th>Δ accuracy [95% CI]</th><th>correct → wrong</th><th>speed-up [95% CI]</th><th class=l>failed criteria</th></tr>");
    for c in &r.candidates {
        let [acc, delta, flips, speedup] = cells(c);
        let verdict = c.report.verdict.as_str();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=l><a href=\"#candidate-{}\"><code>{}</code></a></td><td class=\"l {verdict}\">{verdict}</td><td>{acc}</td><td>{delta}</td><td>{flips}</td><td>{speedup}</td><td class=l>{}</td></tr>",
            c.rank,
            c.rank,
            esc(&c.spec),
            esc(&failed(c))
        );
    }
    h.push_str("</table>");
}

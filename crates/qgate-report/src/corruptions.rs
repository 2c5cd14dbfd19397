//! The corruptions section of the Markdown and HTML reports: accuracy per corruption and
//! severity, the candidate's extra drop as a heat map, ImageNet-C's corruption error and the
//! corrupted samples that flipped.

use std::fmt::Write;

use crate::schema::{CorruptionCell, CorruptionReport};
use crate::svg::{esc, grid_heatmap};
use crate::{num, pct, pval};

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "—".into())
}

fn cell<'a>(r: &'a CorruptionReport, c: &str, s: u8) -> Option<&'a CorruptionCell> {
    r.cells
        .iter()
        .find(|x| x.corruption == c && x.severity == s)
}

/// Why the relative mCE is missing, when it is: the corruptions under which only the
/// candidate degrades (an infinite ratio), or neither.
fn relative_note(r: &CorruptionReport) -> String {
    if r.relative_mce.is_some() {
        return String::new();
    }
    let only: Vec<&str> = r
        .summary
        .iter()
        .filter(|s| !s.baseline_degrades && s.candidate_degrades)
        .map(|s| s.corruption.as_str())
        .collect();
    let neither: Vec<&str> = r
        .summary
        .iter()
        .filter(|s| !s.baseline_degrades && !s.candidate_degrades)
        .map(|s| s.corruption.as_str())
        .collect();
    let mut parts = Vec::new();
    if !only.is_empty() {
        parts.push(format!(
            "under {} the baseline does not degrade and the candidate does",
            only.join(", ")
        ));
    }
    if !neither.is_empty() {
        parts.push(format!("under {} neither degrades", neither.join(", ")));
    }
    format!(" (undefined: {})", parts.join("; "))
}

/// The headline: mCE and the worst cell.
fn headline(r: &CorruptionReport) -> String {
    let worst = r
        .cells
        .iter()
        .max_by(|a, b| a.extra_drop.total_cmp(&b.extra_drop));
    format!(
        "{} corruption(s) × {} severit(ies) of array '{}' (seed {}). Corruption error of the candidate relative to the baseline (ImageNet-C mCE, 1 = as robust): {}; relative mCE (degradation beyond each model's clean error): {}{}.{}",
        r.corruptions.len(),
        r.severities.len(),
        r.array,
        r.seed,
        opt(r.mce),
        opt(r.relative_mce),
        relative_note(r),
        worst
            .filter(|w| w.extra_drop > 0.0)
            .map(|w| format!(
                " Largest extra drop: {} at {} (candidate {} → {}, baseline {} → {}).",
                format_args!("{:+.2} pp", w.extra_drop * 100.0),
                w.slice,
                pct(r.clean_accuracy[1]),
                pct(w.candidate_accuracy),
                pct(r.clean_accuracy[0]),
                pct(w.baseline_accuracy)
            ))
            .unwrap_or_default()
    )
}

/// The Markdown section.
pub(crate) fn markdown(m: &mut String, r: &CorruptionReport) {
    let _ = writeln!(m, "\n**Corruptions** — {}\n", headline(r));
    let _ = write!(m, "| corruption | CE |");
    for s in &r.severities {
        let _ = write!(m, " severity {s}: baseline → candidate (extra drop) |");
    }
    let _ = write!(m, "\n|---|---:|");
    for _ in &r.severities {
        m.push_str("---:|");
    }
    m.push('\n');
    for (c, summary) in r.corruptions.iter().zip(&r.summary) {
        let _ = write!(m, "| {c} | {} |", opt(summary.ce));
        for &s in &r.severities {
            match cell(r, c, s) {
                Some(x) => {
                    let _ = write!(
                        m,
                        " {} → {} ({:+.2} pp) |",
                        pct(x.baseline_accuracy),
                        pct(x.candidate_accuracy),
                        x.extra_drop * 100.0
                    );
                }
                None => m.push_str(" — |"),
            }
        }
        m.push('\n');
    }
}

/// The HTML section.
pub(crate) fn html(h: &mut String, r: &CorruptionReport) {
    let _ = write!(
        h,
        "<h2>Corruptions</h2><p>{}</p><p>Clean accuracy: baseline {}, candidate {}. Each cell is a slice <code>corruption=NAME:SEVERITY</code> of every sample, corrupted in pixel space (docs/corruptions.md); McNemar's test on its flips is corrected over all cells (Holm, BH).</p><div class=charts>",
        esc(&headline(r)),
        pct(r.clean_accuracy[0]),
        pct(r.clean_accuracy[1])
    );
    let cols: Vec<String> = r.severities.iter().map(|s| format!("sev {s}")).collect();
    let values: Vec<Vec<Option<f64>>> = r
        .corruptions
        .iter()
        .map(|c| {
            r.severities
                .iter()
                .map(|&s| cell(r, c, s).map(|x| x.extra_drop * 100.0))
                .collect()
        })
        .collect();
    h.push_str(&grid_heatmap(
        "Candidate's extra accuracy drop (pp; red: it degrades faster)",
        &r.corruptions,
        &cols,
        &values,
        "pp",
    ));
    h.push_str("</div><div style=\"overflow-x:auto\"><table><tr><th class=l>slice</th><th>baseline</th><th>candidate</th><th>Δ accuracy<br><small>95% CI</small></th><th>extra drop</th><th>correct → wrong<br>/ wrong → correct</th><th>p (Holm)</th><th>p (BH)</th></tr>");
    for x in &r.cells {
        let flag = x.significance.is_drop();
        let _ = write!(
            h,
            "<tr{}><td class=l><code>{}</code></td><td>{}<br><small>[{}, {}]</small></td><td>{}<br><small>[{}, {}]</small></td><td>{:+.2} pp<br><small>[{:+.2}, {:+.2}]</small></td><td>{:+.2} pp</td><td>{} / {}</td><td title=\"McNemar p = {}\">{}</td><td>{}</td></tr>",
            if flag { " class=flag" } else { "" },
            esc(&x.slice),
            pct(x.baseline_accuracy),
            pct(x.baseline_accuracy_ci[0]),
            pct(x.baseline_accuracy_ci[1]),
            pct(x.candidate_accuracy),
            pct(x.candidate_accuracy_ci[0]),
            pct(x.candidate_accuracy_ci[1]),
            x.accuracy_delta * 100.0,
            x.accuracy_delta_ci[0] * 100.0,
            x.accuracy_delta_ci[1] * 100.0,
            x.extra_drop * 100.0,
            x.negative_flips,
            x.positive_flips,
            pval(x.mcnemar_p),
            x.p_holm.map(pval).unwrap_or_else(|| "—".into()),
            x.p_bh.map(pval).unwrap_or_else(|| "—".into()),
        );
    }
    h.push_str("</table></div>");
    if !r.thumbnails.is_empty() {
        h.push_str("<p>Corrupted samples the baseline got right and the candidate wrong, as the models saw them:</p><div class=thumbs>");
        for t in &r.thumbnails {
            let data = crate::png::base64(&crate::png::encode(
                t.width, t.height, t.channels, &t.pixels,
            ));
            let _ = write!(
                h,
                "<div class=thumb><img alt=\"{id}\" src=\"data:image/png;base64,{data}\"><b>{id}</b></div>",
                id = esc(&t.id)
            );
        }
        h.push_str("</div>");
    }
}

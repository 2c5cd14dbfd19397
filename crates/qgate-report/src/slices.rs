//! The slices and calibration sections of the Markdown and HTML reports, and the words for
//! a corrected test's outcome.

use std::fmt::Write;

use crate::schema::{CalibrationReport, ClassDelta, Significance, SliceEntry, SliceReport};
use crate::svg::{esc, line_chart, Series};
use crate::{num, pct, pval};

/// Slices listed in the Markdown table (worst first); every slice is in the HTML.
const MAX_SLICE_ROWS: usize = 15;

/// What a corrected test found, for a table cell.
pub(crate) fn significance_words(s: Significance) -> &'static str {
    match s {
        Significance::SignificantDrop => "worse: significant after Holm",
        Significance::FdrDrop => "worse: significant after BH only",
        Significance::CouldBeNoise => "looks worse, could be noise",
        Significance::NoDrop => "no drop",
        Significance::NotJudged => "not judged (too few samples)",
    }
}

/// One sentence counting a family's outcomes: `3 of 10 classes worse after Holm …`.
fn family_sentence(what: &str, all: &[Significance], alpha: f64) -> String {
    let count = |s: Significance| all.iter().filter(|x| **x == s).count();
    let tested = all.len() - count(Significance::NotJudged);
    format!(
        "McNemar's exact test on each of {tested} {what}, corrected over all of them at α = {}: \
         {} significantly worse after Holm (family-wise error), {} more after Benjamini–Hochberg \
         only (false discovery rate), {} look worse but could be noise.",
        num(alpha),
        count(Significance::SignificantDrop),
        count(Significance::FdrDrop),
        count(Significance::CouldBeNoise)
    )
}

/// The sentence about the classes' corrected tests.
pub(crate) fn class_sentence(classes: &[ClassDelta], alpha: f64) -> String {
    let all: Vec<Significance> = classes.iter().map(|c| c.significance).collect();
    family_sentence("classes with samples", &all, alpha)
}

fn slice_notes(s: &SliceReport) -> Vec<String> {
    let mut notes = Vec::new();
    if s.unknown_ids > 0 {
        notes.push(format!(
            "{} manifest id(s) are not in the data (e.g. {}); they are ignored.",
            s.unknown_ids,
            s.unknown_id_examples.join(", ")
        ));
    }
    if s.unlisted_samples > 0 {
        notes.push(format!(
            "{} sample(s) of the data are not in the manifest: they belong to no slice.",
            s.unlisted_samples
        ));
    }
    for t in s.tags.iter().filter(|t| t.untagged > 0) {
        notes.push(format!(
            "{} sample(s) have no `{}` value: they are in no `{}=…` slice.",
            t.untagged, t.tag, t.tag
        ));
    }
    let small = s.slices.iter().filter(|x| !x.judged).count();
    if small > 0 {
        notes.push(format!(
            "{small} slice(s) have fewer than {} samples: shown, not judged and not tested.",
            s.min_samples
        ));
    }
    notes
}

fn delta_cell(e: &SliceEntry) -> String {
    format!(
        "{:+.2} pp [{:+.2}, {:+.2}]",
        e.accuracy_delta * 100.0,
        e.accuracy_delta_ci[0] * 100.0,
        e.accuracy_delta_ci[1] * 100.0
    )
}

fn opt_p(p: Option<f64>) -> String {
    p.map(pval).unwrap_or_else(|| "—".into())
}

/// The Markdown slices section.
pub(crate) fn markdown(m: &mut String, s: &SliceReport) {
    let all: Vec<Significance> = s.slices.iter().map(|x| x.significance).collect();
    let _ = writeln!(
        m,
        "\n**Slices** from `{}` (worst first; accuracy Δ with its paired bootstrap 95% CI)\n\n{}\n",
        crate::md_code(&s.source),
        family_sentence("slices", &all, s.alpha)
    );
    m.push_str("| slice | samples | baseline | candidate | Δ accuracy [95% CI] | correct→wrong / wrong→correct | p (Holm) | p (BH) | finding |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for e in s.slices.iter().take(MAX_SLICE_ROWS) {
        let _ = writeln!(
            m,
            "| `{}` | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            crate::md_code(&e.slice),
            e.samples,
            pct(e.baseline.accuracy),
            pct(e.candidate.accuracy),
            delta_cell(e),
            e.negative_flips,
            e.positive_flips,
            opt_p(e.p_holm),
            opt_p(e.p_bh),
            significance_words(e.significance)
        );
    }
    if s.slices.len() > MAX_SLICE_ROWS {
        let _ = writeln!(
            m,
            "\n{} more slice(s) in report.html.",
            s.slices.len() - MAX_SLICE_ROWS
        );
    }
    let notes = slice_notes(s);
    if !notes.is_empty() {
        m.push('\n');
    }
    for n in notes {
        let _ = writeln!(m, "- {n}");
    }
}

/// `(figure, baseline, candidate)` rows of the calibration tables.
fn calibration_rows(c: &CalibrationReport) -> [(&'static str, f64, f64); 5] {
    [
        ("ECE, equal-width bins", c.baseline.ece, c.candidate.ece),
        (
            "ECE, equal-mass bins",
            c.baseline.ece_equal_mass,
            c.candidate.ece_equal_mass,
        ),
        ("max calibration error", c.baseline.mce, c.candidate.mce),
        ("Brier score", c.baseline.brier, c.candidate.brier),
        (
            "mean confidence",
            c.baseline.mean_confidence,
            c.candidate.mean_confidence,
        ),
    ]
}

/// The Markdown calibration rows.
pub(crate) fn calibration_markdown(m: &mut String, c: &CalibrationReport) {
    let _ = writeln!(
        m,
        "\n**Calibration** ({} bins)\n\n| | baseline | candidate | Δ |\n|---|---:|---:|---:|",
        c.bins
    );
    let rows = calibration_rows(c);
    for (name, b, k) in rows {
        let _ = writeln!(m, "| {name} | {} | {} | {:+.4} |", num(b), num(k), k - b);
    }
}

/// The HTML slices section: every slice.
pub(crate) fn html(h: &mut String, s: &SliceReport) {
    let all: Vec<Significance> = s.slices.iter().map(|x| x.significance).collect();
    let _ = write!(
        h,
        "<h2>Slices</h2><p>From <code>{}</code>, worst first. {}</p>",
        esc(&s.source),
        esc(&family_sentence("slices", &all, s.alpha))
    );
    h.push_str("<div style=\"overflow-x:auto\"><table><tr><th class=l>slice</th><th>samples</th><th>accuracy base</th><th>accuracy cand</th><th>Δ accuracy<br><small>95% CI</small></th><th>Δ macro F1<br><small>95% CI</small></th><th>correct → wrong<br>/ wrong → correct</th><th>p (Holm)</th><th>p (BH)</th><th class=l>finding</th></tr>");
    for e in &s.slices {
        let flag = e.significance.is_drop();
        let _ = write!(
            h,
            "<tr{}><td class=l><code>{}</code></td><td>{}</td><td>{}<br><small>[{}, {}]</small></td><td>{}<br><small>[{}, {}]</small></td><td>{:+.2} pp<br><small>[{:+.2}, {:+.2}]</small></td><td>{:+.4}<br><small>[{:+.4}, {:+.4}]</small></td><td>{} / {}</td><td title=\"McNemar p = {}\">{}</td><td>{}</td><td class=l>{}</td></tr>",
            if flag { " class=flag" } else { "" },
            esc(&e.slice),
            e.samples,
            pct(e.baseline.accuracy),
            pct(e.baseline.accuracy_ci[0]),
            pct(e.baseline.accuracy_ci[1]),
            pct(e.candidate.accuracy),
            pct(e.candidate.accuracy_ci[0]),
            pct(e.candidate.accuracy_ci[1]),
            e.accuracy_delta * 100.0,
            e.accuracy_delta_ci[0] * 100.0,
            e.accuracy_delta_ci[1] * 100.0,
            e.macro_f1_delta,
            e.macro_f1_delta_ci[0],
            e.macro_f1_delta_ci[1],
            e.negative_flips,
            e.positive_flips,
            pval(e.mcnemar_p),
            opt_p(e.p_holm),
            opt_p(e.p_bh),
            significance_words(e.significance)
        );
    }
    h.push_str("</table></div><ul>");
    for n in slice_notes(s) {
        let _ = write!(h, "<li>{}</li>", esc(&n.replace('`', "")));
    }
    h.push_str("</ul>");
}

/// The HTML calibration section: figures and both reliability diagrams.
pub(crate) fn calibration_html(h: &mut String, c: &CalibrationReport) {
    let _ = write!(
        h,
        "<h2>Calibration</h2><p>A sample's confidence is its top class probability. ECE = Σ (bin share) · |accuracy − confidence| over {} bins; the Brier score sums squared probability errors over classes (0 is perfect). Quantization can keep top-1 and still shift confidence, which thresholds downstream depend on.</p>",
        c.bins
    );
    h.push_str("<table><tr><th class=l></th><th>baseline</th><th>candidate</th><th>Δ</th></tr>");
    let rows = calibration_rows(c);
    for (name, b, k) in rows {
        let _ = write!(
            h,
            "<tr><td class=l>{name}</td><td>{}</td><td>{}</td><td>{:+.4}</td></tr>",
            num(b),
            num(k),
            k - b
        );
    }
    h.push_str("</table><div class=charts>");
    let points = |bins: &[crate::schema::ReliabilityBin]| -> Vec<(f64, f64)> {
        bins.iter()
            .filter_map(|b| Some((b.confidence?, b.accuracy?)))
            .collect()
    };
    for (title, b, k) in [
        (
            "Reliability, equal-width bins",
            &c.baseline.reliability,
            &c.candidate.reliability,
        ),
        (
            "Reliability, equal-mass bins",
            &c.baseline.reliability_equal_mass,
            &c.candidate.reliability_equal_mass,
        ),
    ] {
        h.push_str(&line_chart(
            title,
            "mean confidence of the bin",
            "accuracy of the bin",
            &[
                Series {
                    name: "perfect calibration",
                    class: "ideal",
                    points: vec![(0.0, 0.0), (1.0, 1.0)],
                },
                Series {
                    name: "baseline",
                    class: "base",
                    points: points(b),
                },
                Series {
                    name: "candidate",
                    class: "cand",
                    points: points(k),
                },
            ],
            false,
        ));
    }
    h.push_str("</div>");
}

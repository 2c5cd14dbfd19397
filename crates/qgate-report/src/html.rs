//! One self-contained HTML page: no script, no external asset, works offline.

use std::fmt::Write;

use crate::Status;

use crate::png;
use crate::svg::{esc, heatmap, histogram, paired_bars};
use crate::{num, pct, pval, Exporter, Report, ReportError, SideReport};

pub(crate) struct Html;

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}td:not(.l){white-space:nowrap}th{background:#f6f6f6}
td.l,th.l{text-align:left}.pass{color:#11772d;font-weight:600}.fail{color:#b3261e;font-weight:600}.skipped{color:#777}
.verdict{display:inline-block;padding:4px 14px;border-radius:4px;color:#fff;font-weight:700;font-size:18px}
.verdict.pass{background:#1a7f37;color:#fff}.verdict.fail{background:#c62828;color:#fff}
.warn{background:#fff8e1;border-left:4px solid #f9a825;padding:6px 10px;margin:6px 0}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}svg{max-width:100%;height:auto}
@media (max-width:960px){table{font-size:12.5px}td,th{padding:2px 5px}td:not(.l){white-space:normal}td code,td small{word-break:break-all}}
svg .ttl{font-size:13px;font-weight:600}svg .lbl{font-size:10px;fill:#444}svg .ax{font-size:11px;fill:#444}svg .cell{font-size:9px;fill:#111}
svg .base{fill:#9ecae1}svg .cand{fill:#2166ac}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.cand{border-left:4px solid #ccc;padding-left:14px;margin-top:28px}.flag{background:#fdecea}.thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{text-align:center;font-size:11px}
.thumb img{width:64px;height:64px;image-rendering:pixelated;border:1px solid #ccc;display:block}
code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"#;

impl Exporter for Html {
    fn file_name(&self) -> &'static str {
        "report.html"
    }

    fn render(&self, r: &Report) -> Result<String, ReportError> {
        let mut h = String::new();
        let verdict = r.verdict.as_str();
        let _ = write!(
            h,
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>qgate: {}</title><style>{STYLE}</style></head><body>",
            verdict.to_uppercase()
        );
        let _ = write!(
            h,
            "<h1>qgate {} <span class=\"verdict {verdict}\">{}</span></h1><p>{}</p>",
            esc(&r.command),
            verdict.to_uppercase(),
            esc(&r.summary)
        );
        if let Some((b, c)) = r.sides() {
            let _ = write!(
                h,
                "<p>Baseline <code>{}</code> ({} {}) vs candidate <code>{}</code> ({} {}){}.</p>",
                esc(&b.spec),
                esc(&b.runtime),
                esc(&b.runtime_version),
                esc(&c.spec),
                esc(&c.runtime),
                esc(&c.runtime_version),
                r.data
                    .as_ref()
                    .map(|d| format!(
                        " on <code>{}</code>, {} samples, {} classes",
                        esc(&d.source),
                        d.n_samples,
                        d.n_classes
                    ))
                    .unwrap_or_default()
            );
        }
        for w in &r.warnings {
            let _ = write!(h, "<div class=\"warn\">{}</div>", esc(&w.message));
        }
        if r.candidates.is_empty() {
            sections(&mut h, r);
        } else {
            gate(&mut h, r);
            crate::candidates::html(&mut h, r);
            for c in &r.candidates {
                let verdict = c.report.verdict.as_str();
                let _ = write!(
                    h,
                    "<section class=cand id=\"candidate-{}\"><h2>#{} <code>{}</code> <span class=\"verdict {verdict}\">{}</span></h2><p>{}</p>",
                    c.rank,
                    c.rank,
                    esc(&c.spec),
                    verdict.to_uppercase(),
                    esc(&c.report.summary)
                );
                sections(&mut h, &c.report);
                h.push_str("</section>");
            }
        }
        h.push_str("</body></html>\n");
        Ok(h)
    }
}

/// The sections of one pair's report, gate first.
fn sections(h: &mut String, r: &Report) {
    gate(h, r);
    headline(h, r);
    per_class(h, r);
    if let Some(s) = &r.slices {
        crate::slices::html(h, s);
    }
    if let Some(c) = &r.calibration {
        crate::slices::calibration_html(h, c);
    }
    if let Some(c) = &r.corruptions {
        crate::corruptions::html(h, c);
    }
    confusion(h, r);
    divergence(h, r);
    flips(h, r);
    if let Some(p) = &r.performance {
        crate::perf::html(h, p);
    }
    if let Some(s) = &r.sensitivity {
        crate::sens::html(h, s);
    }
    provenance(h, r);
}

fn gate(h: &mut String, r: &Report) {
    h.push_str("<h2>Gate</h2><table><tr><th class=l>criterion</th><th>observed</th><th>95% CI</th><th>threshold</th><th class=l>source</th><th class=l>result</th></tr>");
    for c in &r.gate.criteria {
        let status = match c.status {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        };
        let op = c.direction.symbol();
        let _ = write!(
            h,
            "<tr><td class=l><code>{}</code>{}<br><small>{}</small></td><td>{}</td><td>{}</td><td>{op} {}</td><td class=l>{}</td><td class=\"l {status}\" title=\"{}\">{status}</td></tr>",
            esc(&c.key),
            c.slice
                .as_ref()
                .map(|s| format!(" · <code>{}</code>", esc(s)))
                .unwrap_or_default(),
            esc(&c.message),
            c.observed.map(num).unwrap_or_else(|| "—".into()),
            c.interval
                .map(|[a, b]| format!("[{}, {}]", num(a), num(b)))
                .unwrap_or_else(|| "—".into()),
            num(c.threshold),
            esc(&c.source.to_string()),
            esc(&c.message)
        );
    }
    h.push_str("</table>");
}

fn headline(h: &mut String, r: &Report) {
    let Some(a) = r.accuracy() else {
        return;
    };
    let c = &a.comparison;
    let (b, k) = (&a.baseline, &a.candidate);
    h.push_str("<h2>Accuracy</h2><table><tr><th class=l></th><th>baseline</th><th>candidate</th><th>Δ (cand − base)</th><th>95% CI of Δ</th></tr>");
    let _ = write!(
        h,
        "<tr><td class=l>top-1 accuracy</td><td>{}<br><small>[{}, {}]</small></td><td>{}<br><small>[{}, {}]</small></td><td>{:+.2} pp</td><td>[{:+.2}, {:+.2}] pp{}</td></tr>",
        pct(b.accuracy), pct(b.accuracy_ci[0]), pct(b.accuracy_ci[1]),
        pct(k.accuracy), pct(k.accuracy_ci[0]), pct(k.accuracy_ci[1]),
        c.accuracy_delta * 100.0, c.accuracy_delta_ci[0] * 100.0, c.accuracy_delta_ci[1] * 100.0,
        crate::ci_note(c.accuracy_delta, c.accuracy_delta_ci)
    );
    if let (Some(tb), Some(tk)) = (b.top_k_accuracy, k.top_k_accuracy) {
        let _ = write!(
            h,
            "<tr><td class=l>top-{} accuracy</td><td>{}</td><td>{}</td><td>{:+.2} pp</td><td>—</td></tr>",
            b.top_k, pct(tb), pct(tk), (tk - tb) * 100.0
        );
    }
    let _ = write!(
        h,
        "<tr><td class=l>macro F1</td><td>{}</td><td>{}</td><td>{:+.4}</td><td>[{:+.4}, {:+.4}]{}</td></tr>",
        num(b.macro_avg.f1), num(k.macro_avg.f1), c.macro_f1_delta, c.macro_f1_delta_ci[0], c.macro_f1_delta_ci[1],
        crate::ci_note(c.macro_f1_delta, c.macro_f1_delta_ci)
    );
    let _ = write!(
        h,
        "<tr><td class=l>weighted F1</td><td>{}</td><td>{}</td><td>{:+.4}</td><td>—</td></tr></table>",
        num(b.weighted_avg.f1), num(k.weighted_avg.f1), k.weighted_avg.f1 - b.weighted_avg.f1
    );
    let _ = write!(
        h,
        "<p>McNemar exact p = <b>{}</b> ({} correct→wrong, {} wrong→correct; {} both wrong with different answers). Intervals: paired percentile bootstrap, {} resamples, seed {}; per-model accuracy: Wilson.</p>",
        pval(c.mcnemar_p), c.negative_flips, c.positive_flips, c.changed_wrong_answers, c.bootstrap.resamples, c.bootstrap.seed
    );
}

fn per_class(h: &mut String, r: &Report) {
    let Some(a) = r.accuracy() else {
        return;
    };
    let c = &a.comparison;
    let mut by_class = c.per_class.clone();
    by_class.sort_by_key(|d| d.class);
    let cats: Vec<String> = by_class.iter().map(|d| d.name.clone()).collect();
    let br: Vec<f64> = by_class.iter().map(|d| d.baseline_recall).collect();
    let cr: Vec<f64> = by_class.iter().map(|d| d.candidate_recall).collect();
    let bf: Vec<f64> = by_class.iter().map(|d| d.baseline_f1).collect();
    let cf: Vec<f64> = by_class.iter().map(|d| d.candidate_f1).collect();
    h.push_str("<h2>Per class</h2><p class=legend><span style=\"background:#9ecae1\"></span>baseline<span style=\"background:#2166ac\"></span>candidate</p><div class=charts>");
    h.push_str(&paired_bars("Recall per class", &cats, &br, &cr));
    h.push_str(&paired_bars("F1 per class", &cats, &bf, &cf));
    let _ = write!(
        h,
        "</div><p>Smallest classes first — quantization damage hides there. Highlighted rows drop beyond the policy's per-class tolerance. {}</p>",
        esc(&crate::slices::class_sentence(&c.per_class, c.alpha))
    );
    h.push_str("<table><tr><th class=l>class</th><th>support</th><th>recall base</th><th>recall cand</th><th>Δ recall</th><th>Δ precision</th><th>F1 base</th><th>F1 cand</th><th>Δ F1</th><th>correct → wrong</th><th>wrong → correct</th><th>McNemar p</th><th>p (Holm)</th><th>p (BH)</th><th class=l>finding</th></tr>");
    for d in &c.per_class {
        let _ = write!(
            h,
            "<tr{}><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:+.2} pp</td><td>{:+.2} pp</td><td>{}</td><td>{}</td><td>{:+.2} pp</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
            if d.flagged { " class=flag" } else { "" },
            esc(&d.name), d.support, pct(d.baseline_recall), pct(d.candidate_recall), d.recall_delta * 100.0,
            d.precision_delta * 100.0, num(d.baseline_f1), num(d.candidate_f1), d.f1_delta * 100.0,
            d.negative_flips, d.positive_flips, pval(d.mcnemar_p),
            d.p_holm.map(pval).unwrap_or_else(|| "—".into()),
            d.p_bh.map(pval).unwrap_or_else(|| "—".into()),
            crate::slices::significance_words(d.significance)
        );
    }
    h.push_str("</table>");
}

fn to_i64(m: &[Vec<u64>]) -> Vec<Vec<i64>> {
    m.iter()
        .map(|r| r.iter().map(|&v| v as i64).collect())
        .collect()
}

fn confusion(h: &mut String, r: &Report) {
    let Some(a) = r.accuracy() else {
        return;
    };
    let names = &a.data.class_names;
    let b = to_i64(&a.baseline.confusion_matrix);
    let k = to_i64(&a.candidate.confusion_matrix);
    let diff: Vec<Vec<i64>> = b
        .iter()
        .zip(&k)
        .map(|(rb, rk)| rb.iter().zip(rk).map(|(x, y)| y - x).collect())
        .collect();
    h.push_str("<h2>Confusion matrices</h2><p>Rows: true class; columns: predicted class. The difference is candidate − baseline: red cells lost samples, blue cells gained them.</p><div class=charts>");
    h.push_str(&heatmap("Baseline", &b, names, false));
    h.push_str(&heatmap("Candidate", &k, names, false));
    h.push_str(&heatmap(
        "Difference (candidate − baseline)",
        &diff,
        names,
        true,
    ));
    h.push_str("</div>");
}

fn divergence(h: &mut String, r: &Report) {
    let Some(a) = r.accuracy() else {
        return;
    };
    let c = &a.comparison;
    h.push_str("<h2>Output divergence</h2><table><tr><th class=l>output</th><th>max |Δ|</th><th>mean |Δ|</th><th>cosine mean</th><th>cosine min</th><th>SQNR dB</th><th>KL mean</th><th>KL p95</th><th>KL p99</th><th>KL max</th></tr>");
    let opt = |v: Option<f64>| v.map(num).unwrap_or_else(|| "—".into());
    for (name, d) in &c.divergence {
        let _ = write!(
            h,
            "<tr><td class=l><code>{}</code>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            if d.is_score_output { " (scores)" } else { "" },
            num(d.max_abs), num(d.mean_abs), num(d.cosine_mean), num(d.cosine_min),
            d.sqnr_db.map(num).unwrap_or_else(|| "∞ (identical)".into()),
            opt(d.kl_mean), opt(d.kl_p95), opt(d.kl_p99), opt(d.kl_max)
        );
    }
    h.push_str("</table>");
    for (name, why) in &c.divergence_skipped {
        let _ = write!(
            h,
            "<p>Output <code>{}</code> not compared: {}</p>",
            esc(name),
            esc(why)
        );
    }
    let _ = write!(
        h,
        "<p>Top-1 agreement <b>{}</b>{}.</p>",
        pct(c.top1_agreement),
        c.top_k_agreement
            .map(|a| format!(", top-{} agreement (same set) <b>{}</b>", c.top_k, pct(a)))
            .unwrap_or_default()
    );
    if let Some(hist) = r.kl_histogram() {
        if !hist.counts.is_empty() {
            h.push_str(&histogram(
                "Per-sample KL(baseline ‖ candidate)",
                "KL (nats)",
                &hist.edges,
                &hist.counts,
            ));
        }
    }
}

fn flips(h: &mut String, r: &Report) {
    let Some(a) = r.accuracy() else {
        return;
    };
    let c = &a.comparison;
    let name = |k: Option<usize>| {
        k.map(|k| {
            a.data
                .class_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| k.to_string())
        })
        .unwrap_or_else(|| "invalid".into())
    };
    let _ = write!(
        h,
        "<h2>Flipped samples</h2><p>{} correct→wrong, {} wrong→correct (ids listed in report.json).</p>",
        c.negative_flips, c.positive_flips
    );
    if !r.thumbnails.is_empty() {
        h.push_str("<div class=thumbs>");
        for t in &r.thumbnails {
            let Some(f) = c.flip_details.iter().find(|f| f.id == t.id) else {
                continue;
            };
            let data = png::base64(&png::encode(t.width, t.height, t.channels, &t.pixels));
            let _ = write!(
                h,
                "<div class=thumb><img alt=\"{id}\" src=\"data:image/png;base64,{data}\"><b>{id}</b><br>true {}<br>{} → <span class={}>{}</span></div>",
                esc(&name(Some(f.label))),
                esc(&name(f.baseline)),
                if f.candidate == Some(f.label) { "pass" } else { "fail" },
                esc(&name(f.candidate)),
                id = esc(&t.id),
            );
        }
        h.push_str("</div>");
    }
    if !c.flip_details.is_empty() {
        h.push_str("<table><tr><th class=l>id</th><th class=l>true</th><th class=l>baseline</th><th class=l>candidate</th><th class=l>direction</th></tr>");
        for f in c.flip_details.iter().take(200) {
            let neg = f.baseline == Some(f.label);
            let _ = write!(
                h,
                "<tr><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=\"l {}\">{}</td></tr>",
                esc(&f.id), esc(&name(Some(f.label))), esc(&name(f.baseline)), esc(&name(f.candidate)),
                if neg { "fail" } else { "pass" },
                if neg { "correct → wrong" } else { "wrong → correct" }
            );
        }
        h.push_str("</table>");
        if c.flip_details.len() > 200 {
            let _ = write!(
                h,
                "<p>… and {} more in report.json.</p>",
                c.flip_details.len() - 200
            );
        }
    }
}

fn side_rows(h: &mut String, label: &str, s: &SideReport) {
    let settings: Vec<String> = s
        .runtime
        .settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let inputs: Vec<String> = s
        .inputs
        .iter()
        .map(|b| format!("{} ← {} ({})", b.input, b.array, b.how))
        .collect();
    let ops: Vec<String> = s
        .model
        .op_counts
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    let _ = write!(
        h,
        "<tr><td class=l>{label}</td><td class=l><code>{}</code></td><td class=l>{} {}<br><small>{}</small></td><td class=l>{}</td><td class=l><code>{}</code> ({}, {}; chosen: {})</td><td>{} B</td><td>{:.3} s</td><td class=l><small>{}</small></td></tr>",
        esc(&s.runtime.spec), esc(&s.runtime.runtime), esc(&s.runtime.runtime_version), esc(&settings.join(", ")),
        esc(&inputs.join("; ")), esc(&s.score_output.name), s.score_output.kind, esc(&s.score_output.kind_by),
        esc(&s.score_output.chosen_by), s.model.file_bytes, s.inference_seconds, esc(&ops.join(" "))
    );
}

fn provenance(h: &mut String, r: &Report) {
    let Some(a) = r.accuracy() else {
        return;
    };
    h.push_str("<h2>Provenance</h2><table><tr><th class=l>side</th><th class=l>model</th><th class=l>runtime</th><th class=l>inputs</th><th class=l>score output</th><th>file</th><th>inference</th><th class=l>ops</th></tr>");
    side_rows(h, "baseline", a.baseline);
    side_rows(h, "candidate", a.candidate);
    h.push_str("</table>");
    for line in crate::runtime_check_lines(r) {
        let _ = write!(h, "<p>{}</p>", esc(&line));
    }
    let _ = write!(
        h,
        "<p>Host: {} ({} cores, {}){}. Model digests: baseline <code>{}</code>, candidate <code>{}</code>.</p><p><small>qgate {} · report schema {} · inference times are wall-clock over the whole data set, not a benchmark.</small></p>",
        esc(&r.host.cpu), r.host.cores, esc(&r.host.os),
        r.deployment_runtime.as_deref().map(|d| format!("; deployment runtime: {}", esc(d))).unwrap_or_default(),
        a.baseline.model.sha256.as_deref().unwrap_or("—"),
        a.candidate.model.sha256.as_deref().unwrap_or("—"),
        r.tool.version, r.schema_version
    );
}

//! The sensitivity sections of the HTML and Markdown reports.

use std::fmt::Write;

use crate::svg::{esc, line_chart, line_chart_x, Series, XAxis};
use crate::{num, pct, SensitivityReport};

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "—".into())
}

/// How the ranking was ordered, in prose: which signals decided it, and why when it is not
/// the metric alone.
fn ranked_by_text(a: &crate::Analysis) -> String {
    let by: Vec<&str> = a.ranked_by.iter().map(|s| s.label()).collect();
    let mut t = by.join(", then ");
    if a.ranked_by.len() > 1 {
        t.push_str(
            " (the metric drops of the first layers tie, so the next signal decides their order)",
        );
    }
    t
}

/// Appends the sensitivity sections to the HTML page.
pub(crate) fn html(h: &mut String, s: &SensitivityReport) {
    let a = &s.analysis;
    let rec = &a.recommendation;
    intro_html(h, s);
    layer_table(h, a);
    let _ = write!(
        h,
        "</table><p>One-at-a-time analysis: {} — {:.3} s against {:.3} s for one full evaluation, i.e. {:.2} full evaluations per layer (the FP32 reference pass that records the activations took {:.3} s). \"All but this layer\" ran on the {} proxy samples in {:.3} s. Rows marked <small>(proxy)</small> were measured on the proxy samples only.</p><div class=charts>",
        esc(&a.cost.method),
        a.cost.one_at_a_time_s,
        a.cost.full_evaluation_s,
        a.cost.full_evaluations_per_layer,
        a.cost.reference_s,
        a.proxy_samples,
        a.cost.all_but_s
    );
    charts(h, a);
    front_table(h, a);
    if a.monotone == Some(false) {
        h.push_str("<p class=fail>The verdict went from pass to fail as more layers of the ranking were kept in float: the ranking is not monotone here, so the bisection's answer may not be the smallest; the greedy and pruned sets were evaluated directly.</p>");
    }
    if let Some(l) = &s.latency {
        latency_html(h, l);
    }
    let _ = write!(
        h,
        "<p>Mixed model: <code>{}</code>. Exclusions for other toolchains:</p><ul><li>onnxruntime: <code>quantize_static(…, nodes_to_exclude={})</code></li><li>TensorRT: <code>trtexec --precisionConstraints=obey --layerPrecisions={}</code></li><li>NNCF: <code>IgnoredScope(names={})</code></li></ul>",
        esc(&s.mixed_model),
        esc(&serde_json::to_string(&rec.ort_nodes_to_exclude).unwrap_or_default()),
        esc(&rec.tensorrt_layer_precisions),
        esc(&serde_json::to_string(&rec.keep_float).unwrap_or_default()),
    );
    if let Some(l) = &a.localisation {
        localisation_html(h, l);
    }
}

/// The opening paragraphs: headline metrics, data, how the model was read and ranked.
fn intro_html(h: &mut String, s: &SensitivityReport) {
    let a = &s.analysis;
    let rec = &a.recommendation;
    let _ = write!(
        h,
        "<h2>Sensitivity</h2><p>FP32 <b>{}</b> · all layers INT8 <b>{}</b> · recommended mixed precision <b>{}</b> with <b>{}</b> of {} layers in float. Calibration: {} on {} ({} samples); evaluation: {} ({} samples); {} models evaluated in {:.1} s.</p>",
        pct(a.fp32_metric),
        pct(a.all_int8.metric),
        pct(rec.metric),
        rec.n_float_layers,
        a.layers.len(),
        esc(&s.calibration.method),
        esc(&s.calibration.source),
        s.calibration.samples,
        esc(&s.evaluation.source),
        s.evaluation.samples,
        a.evaluations,
        s.seconds
    );
    let _ = write!(
        h,
        "<p>Model as read: {}.{}</p><p>Ranked by {}.</p>",
        esc(&s.normalization.notes().join("; ")),
        s.normalized_model
            .as_deref()
            .map(|p| format!(
                " The exclusion lists name nodes of <code>{}</code>, the model as qgate read it.",
                esc(p)
            ))
            .unwrap_or_default(),
        ranked_by_text(a)
    );
}

/// Closes the charts block and appends the table of configurations evaluated (the front),
/// one row each, with latency where measured.
fn front_table(h: &mut String, a: &crate::Analysis) {
    h.push_str("</div><table><tr><th class=l>found by</th><th>layers in float</th><th>metric</th><th>KL</th><th>model bytes</th><th>median ms</th><th>p99 ms</th><th>speed-up vs FP32 (95 % CI)</th><th class=l>passes</th><th class=l>kept float</th></tr>");
    for f in &a.front {
        let (median, p99, speedup) = match &f.latency {
            Some(l) => (
                num(l.median_ms),
                num(l.p99_ms),
                format!(
                    "{:.2}× ({:.2}–{:.2})",
                    l.speedup_vs_fp32, l.speedup_ci[0], l.speedup_ci[1]
                ),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let _ = write!(
            h,
            "<tr><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l {}\">{}</td><td class=l>{}</td></tr>",
            esc(&f.method),
            f.n_float_layers,
            pct(f.metric),
            opt(f.kl),
            f.model_bytes,
            median,
            p99,
            speedup,
            if f.passes { "pass" } else { "fail" },
            if f.passes { "pass" } else { "fail" },
            esc(&f.keep_float.join(", "))
        );
    }
    h.push_str("</table>");
}

/// How latency was measured and its notes, as a paragraph and a list.
fn latency_html(h: &mut String, l: &crate::FrontLatencyInfo) {
    let _ = write!(
        h,
        "<p>Latency: {} at batch {}, {:.1} s per side and pair; FP32 median {} ms.</p><ul>",
        esc(&l.runtime),
        l.batch_size,
        l.seconds_per_side,
        num(l.fp32_median_ms)
    );
    for n in &l.notes {
        let _ = write!(h, "<li>{}</li>", esc(n));
    }
    h.push_str("</ul>");
}

/// One row per layer, most sensitive first.
fn layer_table(h: &mut String, a: &crate::Analysis) {
    let rec = &a.recommendation;
    h.push_str("<table><tr><th>rank</th><th class=l>layer</th><th class=l>op</th><th>drop, only this layer INT8 (pp)</th><th>KL</th><th>logit MSE</th><th>output SQNR dB</th><th>weight SQNR dB</th><th>drop, all but this layer INT8 (pp)</th><th>KL, all but this layer</th><th class=l>kept float</th></tr>");
    for (i, l) in a.layers.iter().enumerate() {
        let kept = rec.keep_float.contains(&l.node);
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=l><code>{}</code></td><td class=l>{}</td><td>{:.2}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{}</td></tr>",
            if kept { " class=flag" } else { "" },
            i + 1,
            esc(&l.node),
            esc(&l.op_type),
            l.metric_drop,
            if l.confirmed { "" } else { " <small>(proxy)</small>" },
            opt(l.kl),
            opt(l.mse),
            opt(l.sqnr_db),
            opt(l.weight_sqnr_db),
            l.all_but_metric_drop
                .map(|d| format!("{d:.2}"))
                .unwrap_or_else(|| "—".into()),
            opt(l.all_but_kl),
            if kept { "yes" } else { "" }
        );
    }
}

/// The drop by rank and the trade-off charts.
fn charts(h: &mut String, a: &crate::Analysis) {
    let drops = Series {
        name: "drop (pp), only this layer INT8",
        class: "cand",
        points: a
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| ((i + 1) as f64, l.metric_drop))
            .collect(),
    };
    h.push_str(&line_chart_x(
        "Metric drop by sensitivity rank",
        "rank (table above)",
        "drop (pp)",
        &[drops],
        false,
        XAxis::Categories,
    ));
    let front = |method: &'static str, class: &'static str| Series {
        name: method,
        class,
        points: {
            let mut p: Vec<(f64, f64)> = a
                .front
                .iter()
                .filter(|f| f.method.split('+').any(|m| m == method || m == "none"))
                .map(|f| (f.n_float_layers as f64, f.metric * 100.0))
                .collect();
            p.sort_by(|x, y| x.0.total_cmp(&y.0));
            p
        },
    };
    h.push_str(&line_chart_x(
        "Trade-off: metric vs layers kept in float",
        "layers in float",
        "metric (%)",
        &[front("greedy", "cand"), front("bisection", "base")],
        false,
        XAxis::Categories,
    ));
    let timed: Vec<(f64, f64)> = {
        let mut p: Vec<(f64, f64)> = a
            .front
            .iter()
            .filter_map(|f| f.latency.as_ref().map(|l| (l.median_ms, f.metric * 100.0)))
            .collect();
        p.sort_by(|x, y| x.0.total_cmp(&y.0));
        p
    };
    if !timed.is_empty() {
        h.push_str(&line_chart(
            "Trade-off: metric vs median latency (batch 1)",
            "median latency (ms)",
            "metric (%)",
            &[Series {
                name: "front configurations",
                class: "cand",
                points: timed,
            }],
            false,
        ));
    }
}

/// Where the given quantized model's error appears, tensor by tensor.
fn localisation_html(h: &mut String, l: &crate::Localisation) {
    let _ = write!(
        h,
        "<h2>Error localisation of the given quantized model</h2><p>Largest fall of SQNR from one tensor to the next: <b>{}</b>.</p><table><tr><th class=l>tensor</th><th class=l>op</th><th>SQNR dB</th><th>cosine</th><th>max |Δ|</th></tr>",
        esc(l.first_jump.as_deref().unwrap_or("—"))
    );
    for t in &l.activations {
        let _ = write!(
            h,
            "<tr{}><td class=l><code>{}</code></td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if l.first_jump.as_deref() == Some(t.tensor.as_str()) { " class=flag" } else { "" },
            esc(&t.tensor),
            esc(&t.op_type),
            opt(t.sqnr_db),
            num(t.cosine),
            num(t.max_abs)
        );
    }
    h.push_str("</table><table><tr><th class=l>layer</th><th>weight SQNR dB</th></tr>");
    for (n, db) in &l.weights {
        let _ = write!(
            h,
            "<tr><td class=l><code>{}</code></td><td>{}</td></tr>",
            esc(n),
            opt(*db)
        );
    }
    h.push_str("</table>");
}

/// Appends the sensitivity summary to the Markdown report.
pub(crate) fn markdown(m: &mut String, s: &SensitivityReport) {
    let a = &s.analysis;
    let rec = &a.recommendation;
    let _ = writeln!(
        m,
        "\n**Sensitivity** — FP32 {} · all INT8 {} · mixed {} with {} of {} layers in float (`{}`)\n",
        pct(a.fp32_metric),
        pct(a.all_int8.metric),
        pct(rec.metric),
        rec.n_float_layers,
        a.layers.len(),
        rec.keep_float.join("`, `")
    );
    let _ = writeln!(
        m,
        "Model as read: {}.\n\nRanked by {}.\n",
        s.normalization.notes().join("; "),
        ranked_by_text(a)
    );
    m.push_str("| rank | layer | op | drop (pp) | KL | logit MSE | output SQNR dB | weight SQNR dB | all-but drop (pp) |\n|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (i, l) in a.layers.iter().take(10).enumerate() {
        let _ = writeln!(
            m,
            "| {} | `{}` | {} | {:.2} | {} | {} | {} | {} | {} |",
            i + 1,
            l.node,
            l.op_type,
            l.metric_drop,
            opt(l.kl),
            opt(l.mse),
            opt(l.sqnr_db),
            opt(l.weight_sqnr_db),
            opt(l.all_but_metric_drop)
        );
    }
    if a.front.iter().any(|f| f.latency.is_some()) {
        m.push_str("\n| layers in float | metric | median ms | speed-up vs FP32 | passes |\n|---:|---:|---:|---:|---|\n");
        for f in &a.front {
            if let Some(l) = &f.latency {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {:.2}× | {} |",
                    f.n_float_layers,
                    pct(f.metric),
                    num(l.median_ms),
                    l.speedup_vs_fp32,
                    if f.passes { "pass" } else { "fail" }
                );
            }
        }
    }
    let _ = writeln!(
        m,
        "\nonnxruntime `nodes_to_exclude={}` · TensorRT `--layerPrecisions={}` · NNCF `IgnoredScope(names={})`",
        serde_json::to_string(&rec.ort_nodes_to_exclude).unwrap_or_default(),
        rec.tensorrt_layer_precisions,
        serde_json::to_string(&rec.keep_float).unwrap_or_default()
    );
}

//! The performance sections of the HTML and Markdown reports, and the raw latency CSV.

use std::fmt::Write;

use crate::{LoadFigures, Performance, PointFigures, SidePerformance};
use qgate_core::stats::percentile;

use crate::svg::{esc, histogram_pair, line_chart, line_chart_x, Series, XAxis};
use crate::{num, Exporter, Report, ReportError};

fn mib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
        .unwrap_or_else(|| "n/a".into())
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && a != 0.0 {
        format!("{:.2}×", b / a)
    } else {
        "—".into()
    }
}

fn opt_ratio(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a as f64, b as f64),
        _ => "—".into(),
    }
}

fn energy_text(s: &SidePerformance) -> String {
    match (
        s.energy.joules_per_inference,
        s.energy.joules_per_inference_ci,
    ) {
        (Some(j), Some(ci)) => format!("{} J [{}, {}]", num(j), num(ci[0]), num(ci[1])),
        (Some(j), None) => format!("{} J", num(j)),
        _ => "not available on this machine".into(),
    }
}

/// One table row: label, baseline, candidate, candidate ÷ baseline.
type Row = (String, String, String, String);

/// The side-by-side table of a benchmark.
fn rows(p: &Performance) -> Vec<Row> {
    let (b, c) = (&p.baseline, &p.candidate);
    let (lb, lc) = (&b.latency_ms, &c.latency_ms);
    let mut v = Vec::new();
    let mut lat = |name: &str, x: f64, y: f64| {
        v.push((format!("latency {name} (ms)"), num(x), num(y), ratio(x, y)))
    };
    lat("mean", lb.mean, lc.mean);
    lat("std", lb.std, lc.std);
    lat("min", lb.min, lc.min);
    lat("p50", lb.p50, lc.p50);
    lat("p90", lb.p90, lc.p90);
    lat("p95", lb.p95, lc.p95);
    lat("p99", lb.p99, lc.p99);
    lat("p99.9", lb.p999, lc.p999);
    lat("max", lb.max, lc.max);
    let ci = |a: [f64; 2]| format!("[{}, {}]", num(a[0]), num(a[1]));
    v.push((
        "95% CI of mean / median (ms)".into(),
        format!("{} / {}", ci(lb.mean_ci), ci(lb.median_ci)),
        format!("{} / {}", ci(lc.mean_ci), ci(lc.median_ci)),
        String::new(),
    ));
    v.push((
        "timed calls (outliers)".into(),
        format!("{} ({})", lb.n, lb.outliers),
        format!("{} ({})", lc.n, lc.outliers),
        String::new(),
    ));
    v.push((
        "throughput (samples/s)".into(),
        num(b.throughput_per_s),
        num(c.throughput_per_s),
        ratio(b.throughput_per_s, c.throughput_per_s),
    ));
    v.push((
        "load time (ms)".into(),
        num(b.startup.load_ms),
        num(c.startup.load_ms),
        ratio(b.startup.load_ms, c.startup.load_ms),
    ));
    v.push((
        "first inference (ms)".into(),
        num(b.startup.first_inference_ms),
        num(c.startup.first_inference_ms),
        ratio(b.startup.first_inference_ms, c.startup.first_inference_ms),
    ));
    v.push((
        "warm-up".into(),
        format!(
            "{} calls, {:.2} s{}",
            b.warmup.iterations,
            b.warmup.seconds,
            if b.warmup.steady { "" } else { ", not steady" }
        ),
        format!(
            "{} calls, {:.2} s{}",
            c.warmup.iterations,
            c.warmup.seconds,
            if c.warmup.steady { "" } else { ", not steady" }
        ),
        String::new(),
    ));
    memory_rows(&mut v, b, c);
    resource_rows(&mut v, b, c);
    v
}

/// Model size and resident memory rows.
fn memory_rows(v: &mut Vec<Row>, b: &SidePerformance, c: &SidePerformance) {
    v.push((
        "model file".into(),
        b.model_bytes
            .map(|x| format!("{x} B"))
            .unwrap_or_else(|| "remote".into()),
        c.model_bytes
            .map(|x| format!("{x} B"))
            .unwrap_or_else(|| "remote".into()),
        opt_ratio(b.model_bytes, c.model_bytes),
    ));
    v.push((
        "RSS before → after load".into(),
        format!(
            "{} → {}",
            mib(b.memory.rss_before_load_bytes),
            mib(b.memory.rss_after_load_bytes)
        ),
        format!(
            "{} → {}",
            mib(c.memory.rss_before_load_bytes),
            mib(c.memory.rss_after_load_bytes)
        ),
        String::new(),
    ));
    v.push((
        "peak RSS (load + latency rounds)".into(),
        mib(b.peak_rss_bytes),
        mib(c.peak_rss_bytes),
        opt_ratio(b.peak_rss_bytes, c.peak_rss_bytes),
    ));
    v.push((
        "peak RSS incl. sweeps".into(),
        mib(b.memory.peak_rss_with_sweeps_bytes),
        mib(c.memory.peak_rss_with_sweeps_bytes),
        String::new(),
    ));
}

/// CPU, energy, GPU and output-check rows.
fn resource_rows(v: &mut Vec<Row>, b: &SidePerformance, c: &SidePerformance) {
    let util = |s: &SidePerformance| match (s.utilisation.cores_busy, s.utilisation.per_core_pct) {
        (Some(c), Some(p)) => format!("{c:.2} cores ({p:.0}% of all)"),
        _ => "n/a".into(),
    };
    v.push(("CPU busy".into(), util(b), util(c), String::new()));
    v.push((
        "energy per inference".into(),
        energy_text(b),
        energy_text(c),
        match (b.energy.joules_per_inference, c.energy.joules_per_inference) {
            (Some(x), Some(y)) => ratio(x, y),
            _ => "—".into(),
        },
    ));
    let gpu = |s: &SidePerformance| {
        if s.gpus.is_empty() {
            return "none".to_string();
        }
        s.gpus
            .iter()
            .map(|g| {
                format!(
                    "{} {}: util {}, peak used {}",
                    g.index,
                    g.name,
                    g.mean_util_pct
                        .map(|u| format!("{u:.0}%"))
                        .unwrap_or_else(|| "n/a".into()),
                    mib(g.peak_mem_used_bytes)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    v.push(("GPU".into(), gpu(b), gpu(c), String::new()));
    let check = |s: &SidePerformance| match &s.output_check {
        Some(o) => {
            let mut t = format!(
                "{}/{} batches equal ({:?})",
                o.batches - o.mismatched_batches,
                o.batches,
                o.tolerance
            );
            if let (Some(n), Some(bad)) = (o.reference_samples, o.reference_mismatches) {
                t.push_str(&format!("; {}/{n} equal saved outputs", n - bad));
            }
            t
        }
        None => "not checked".into(),
    };
    v.push((
        "timed outputs = untimed pass".into(),
        check(b),
        check(c),
        String::new(),
    ));
}

/// Appends the performance sections to the HTML page.
pub(crate) fn html(h: &mut String, p: &Performance) {
    let cmp = &p.comparison;
    let _ = write!(
        h,
        "<h2>Performance</h2><p><b>{}</b>. Speed-up = geometric mean over the interleaved rounds of (baseline median ÷ candidate median latency) = <b>{:.3}</b>, 95% CI [{:.3}, {:.3}], 99% CI [{:.3}, {:.3}] (paired Student-t on the log ratios of {} rounds; speed criteria fail only when the whole 99% interval is on the wrong side).</p><p>Scenario: {}. Inputs: {}.</p>",
        esc(&cmp.summary),
        cmp.speedup,
        cmp.speedup_ci[0],
        cmp.speedup_ci[1],
        cmp.speedup_decision_ci[0],
        cmp.speedup_decision_ci[1],
        p.rounds,
        esc(&p.scenario),
        esc(&p.candidate.workload.source)
    );
    h.push_str(
        "<table><tr><th class=l></th><th>baseline</th><th>candidate</th><th>cand ÷ base</th></tr>",
    );
    for (label, b, c, r) in rows(p) {
        let _ = write!(
            h,
            "<tr><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&label),
            esc(&b),
            esc(&c),
            esc(&r)
        );
    }
    h.push_str("</table>");
    for (name, s) in [("baseline", &p.baseline), ("candidate", &p.candidate)] {
        if let Some(m) = s
            .output_check
            .as_ref()
            .and_then(|o| o.first_mismatch.as_ref())
        {
            let _ = write!(h, "<div class=warn>{name}: {}</div>", esc(m));
        }
        for u in &s.energy.unavailable {
            let _ = write!(
                h,
                "<p><small>{name}: {} not available — {}</small></p>",
                u.source,
                esc(&u.reason)
            );
        }
    }
    h.push_str("<div class=charts>");
    latency_charts(h, p);
    sweep_charts(h, p);
    h.push_str("</div>");
    sweep_tables(h, p);
    environment(h, p);
}

/// Latency histogram and CDF of both sides, drawn to p99.9 with the tail stated.
fn latency_charts(h: &mut String, p: &Performance) {
    let (rb, rc) = (&p.baseline.raw_latencies_ms, &p.candidate.raw_latencies_ms);
    if !rb.is_empty() && !rc.is_empty() {
        // Both charts stop at the larger p99.9: one slow call must not squeeze the curves
        // into a vertical line. The tail is stated in the title.
        let lo = percentile(rb, 0.5).min(percentile(rc, 0.5));
        let hi = percentile(rb, 99.9).max(percentile(rc, 99.9));
        let beyond = rb.iter().chain(rc).filter(|&&x| x > hi).count();
        let max = rb
            .iter()
            .chain(rc)
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let x_label = if beyond > 0 {
            format!(
                "latency (ms) — {beyond} calls above p99.9, up to {} ms, not drawn",
                num(max)
            )
        } else {
            "latency (ms)".to_string()
        };
        if hi > lo {
            latency_histogram(h, rb, rc, lo, hi, &x_label);
        }
        h.push_str(&line_chart(
            "Latency CDF (to p99.9)",
            &x_label,
            "share of calls ≤ x",
            &[
                Series {
                    name: "baseline",
                    class: "base",
                    points: cdf_to(rb, hi),
                },
                Series {
                    name: "candidate",
                    class: "cand",
                    points: cdf_to(rc, hi),
                },
            ],
            true,
        ));
    }
}

/// The latency histogram of both sides in 40 bins over `[lo, hi]` (`hi > lo`).
fn latency_histogram(h: &mut String, rb: &[f64], rc: &[f64], lo: f64, hi: f64, x_label: &str) {
    let bins = 40;
    let edges: Vec<f64> = (0..=bins)
        .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
        .collect();
    let count = |v: &[f64]| {
        let mut c = vec![0u64; bins];
        for &x in v {
            if x >= lo && x <= hi {
                let i = (((x - lo) / (hi - lo)) * bins as f64) as usize;
                c[i.min(bins - 1)] += 1;
            }
        }
        c
    };
    h.push_str(&histogram_pair(
        "Latency histogram (p0.5 to p99.9)",
        x_label,
        &edges,
        &count(rb),
        &count(rc),
    ));
}

/// Empirical CDF points of `v` up to `hi`, thinned to about 400, ending at the last value
/// ≤ `hi`.
fn cdf_to(v: &[f64], hi: f64) -> Vec<(f64, f64)> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let step = (n / 400).max(1);
    let mut pts: Vec<(f64, f64)> = s
        .iter()
        .enumerate()
        .step_by(step)
        .filter(|(_, &x)| x <= hi)
        .map(|(i, &x)| (x, (i + 1) as f64 / n as f64))
        .collect();
    let below = s.iter().filter(|&&x| x <= hi).count();
    if let Some(&last) = s.get(below.wrapping_sub(1)) {
        pts.push((last, below as f64 / n as f64));
    }
    pts
}

/// Throughput and p99 against batch size, concurrency and offered Poisson load.
fn sweep_charts(h: &mut String, p: &Performance) {
    let sw = &p.sweeps;
    if !sw.batch.is_empty() {
        h.push_str(&line_chart_x(
            "Throughput vs batch size (one request in flight)",
            "batch size",
            "samples/s",
            &closed_series(&sw.batch, |s| s.batch as f64, |f| f.samples_per_s),
            false,
            XAxis::Categories,
        ));
    }
    if !sw.concurrency.is_empty() {
        h.push_str(&line_chart_x(
            "Throughput vs concurrency (closed loop)",
            "requests in flight",
            "samples/s",
            &closed_series(&sw.concurrency, |s| s.streams as f64, |f| f.samples_per_s),
            false,
            XAxis::Categories,
        ));
        h.push_str(&line_chart_x(
            "p99 latency vs concurrency",
            "requests in flight",
            "p99 (ms)",
            &closed_series(&sw.concurrency, |s| s.streams as f64, |f| f.p99_ms),
            false,
            XAxis::Categories,
        ));
    }
    if !sw.load.is_empty() {
        h.push_str(&line_chart(
            "p99 latency vs offered load (Poisson arrivals)",
            "offered queries/s",
            "p99 from arrival (ms)",
            &load_series(&sw.load, |f| f.p99_ms),
            false,
        ));
    }
}

/// Baseline and candidate series of a closed-loop sweep: `x` of each point against `y` of
/// each side's figures, skipping points a side did not measure.
fn closed_series(
    pts: &[crate::SweepPoint],
    x: fn(&crate::SweepPoint) -> f64,
    y: fn(&PointFigures) -> f64,
) -> [Series<'static>; 2] {
    [
        Series {
            name: "baseline",
            class: "base",
            points: pts
                .iter()
                .filter_map(|s| s.baseline.as_ref().map(|f| (x(s), y(f))))
                .collect(),
        },
        Series {
            name: "candidate",
            class: "cand",
            points: pts
                .iter()
                .filter_map(|s| s.candidate.as_ref().map(|f| (x(s), y(f))))
                .collect(),
        },
    ]
}

/// Baseline and candidate series of the offered-load sweep: `y` of each side's figures
/// against the offered rate, skipping points a side did not measure.
fn load_series(load: &[crate::LoadPoint], y: fn(&LoadFigures) -> f64) -> [Series<'static>; 2] {
    [
        Series {
            name: "baseline",
            class: "base",
            points: load
                .iter()
                .filter_map(|l| l.baseline.as_ref().map(|f| (l.offered_per_s, y(f))))
                .collect(),
        },
        Series {
            name: "candidate",
            class: "cand",
            points: load
                .iter()
                .filter_map(|l| l.candidate.as_ref().map(|f| (l.offered_per_s, y(f))))
                .collect(),
        },
    ]
}

fn point_cell(f: Option<&PointFigures>) -> String {
    f.map(|f| {
        format!(
            "{} /s<br><small>p50 {} · p99 {} ms</small>",
            num(f.samples_per_s),
            num(f.p50_ms),
            num(f.p99_ms)
        )
    })
    .unwrap_or_else(|| "—".into())
}

fn sweep_tables(h: &mut String, p: &Performance) {
    let sw = &p.sweeps;
    // Each row says which sweep measured it: the same batch and concurrency can appear in
    // two sweeps (batch 1 with one request in flight opens both closed-loop sweeps).
    let closed: Vec<(&str, &crate::SweepPoint)> = sw
        .batch
        .iter()
        .map(|s| ("batch sweep (1 in flight)", s))
        .chain(
            sw.concurrency
                .iter()
                .map(|s| ("concurrency sweep (closed loop)", s)),
        )
        .chain(
            sw.offline
                .as_ref()
                .map(|s| ("offline (maximum throughput)", s)),
        )
        .collect();
    if !closed.is_empty() {
        h.push_str("<h2>Throughput</h2><table><tr><th class=l>sweep</th><th>batch</th><th>in flight</th><th>baseline</th><th>candidate</th><th>cand ÷ base</th></tr>");
        for (sweep, s) in closed {
            let r = match (&s.baseline, &s.candidate) {
                (Some(a), Some(b)) => ratio(a.samples_per_s, b.samples_per_s),
                _ => "—".into(),
            };
            let _ = write!(
                h,
                "<tr><td class=l>{sweep}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{r}</td></tr>",
                s.batch,
                s.streams,
                point_cell(s.baseline.as_ref()),
                point_cell(s.candidate.as_ref())
            );
        }
        h.push_str("</table>");
    }
    if !sw.load.is_empty() {
        h.push_str("<h2>Latency under load (Poisson arrivals, latency from arrival)</h2><table><tr><th>offered /s</th><th>baseline achieved /s</th><th>p50</th><th>p99</th><th>candidate achieved /s</th><th>p50</th><th>p99</th></tr>");
        let cells = |f: Option<&LoadFigures>| {
            f.map(|f| {
                format!(
                    "<td>{}{}</td><td>{}</td><td>{}</td>",
                    num(f.achieved_per_s),
                    if f.unserved > 0 {
                        format!(" <small>({} unserved)</small>", f.unserved)
                    } else {
                        String::new()
                    },
                    num(f.p50_ms),
                    num(f.p99_ms)
                )
            })
            .unwrap_or_else(|| "<td>—</td><td>—</td><td>—</td>".into())
        };
        for l in &sw.load {
            let _ = write!(
                h,
                "<tr><td>{}</td>{}{}</tr>",
                num(l.offered_per_s),
                cells(l.baseline.as_ref()),
                cells(l.candidate.as_ref())
            );
        }
        h.push_str("</table>");
    }
    if let Some(s) = &sw.slo {
        let _ = write!(
            h,
            "<p>Highest Poisson rate with p99 ≤ {} ms: baseline <b>{}</b>/s, candidate <b>{}</b>/s ({} trials).</p>",
            num(s.slo_p99_ms),
            num(s.baseline_max_per_s),
            num(s.candidate_max_per_s),
            s.trials.len()
        );
    }
    for why in &sw.skipped {
        let _ = write!(h, "<p><small>skipped: {}</small></p>", esc(why));
    }
}

fn environment(h: &mut String, p: &Performance) {
    let e = &p.environment;
    let settings = |s: &SidePerformance| {
        s.runtime
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        h,
        "<h2>Environment</h2><table><tr><td class=l>CPU</td><td class=l>{} ({}), {} logical / {} physical cores{}</td></tr><tr><td class=l>ISA features</td><td class=l>{}</td></tr><tr><td class=l>memory</td><td class=l>{}</td></tr><tr><td class=l>OS</td><td class=l>{} · kernel {}</td></tr><tr><td class=l>frequency governor</td><td class=l>{}{}</td></tr><tr><td class=l>baseline runtime</td><td class=l>{} {} ({})</td></tr><tr><td class=l>candidate runtime</td><td class=l>{} {} ({})</td></tr><tr><td class=l>timer</td><td class=l>a clock read costs {} ns (resolution {} ns) — included once in every latency</td></tr></table>",
        esc(&e.cpu_model),
        esc(&e.arch),
        e.logical_cores,
        e.physical_cores.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        e.smt.map(|s| if s { ", SMT on" } else { ", SMT off" }).unwrap_or(""),
        esc(&e.cpu_features.join(" ")),
        mib(e.memory_total_bytes),
        esc(&e.os),
        esc(e.kernel.as_deref().unwrap_or("?")),
        esc(e.governor.as_deref().unwrap_or("unknown")),
        e.max_freq_mhz.map(|f| format!(", max {f:.0} MHz")).unwrap_or_default(),
        esc(&p.baseline.runtime.runtime),
        esc(&p.baseline.runtime.runtime_version),
        esc(&settings(&p.baseline)),
        esc(&p.candidate.runtime.runtime),
        esc(&p.candidate.runtime.runtime_version),
        esc(&settings(&p.candidate)),
        num(p.candidate.timer_overhead.read_ns),
        num(p.candidate.timer_overhead.resolution_ns),
    );
}

/// Appends the performance table to the Markdown summary.
pub(crate) fn markdown(m: &mut String, p: &Performance) {
    let c = &p.comparison;
    let _ = writeln!(
        m,
        "\n**Performance** — {} (99% CI [{:.2}, {:.2}], {} rounds; {})\n",
        c.summary, c.speedup_decision_ci[0], c.speedup_decision_ci[1], p.rounds, p.scenario
    );
    m.push_str("| | baseline | candidate | cand ÷ base |\n|---|---:|---:|---:|\n");
    for (label, b, k, r) in rows(p) {
        let _ = writeln!(m, "| {label} | {b} | {k} | {r} |");
    }
    if let Some(s) = &p.sweeps.slo {
        let _ = writeln!(
            m,
            "\nHighest Poisson rate with p99 ≤ {} ms: baseline {}/s, candidate {}/s",
            num(s.slo_p99_ms),
            num(s.baseline_max_per_s),
            num(s.candidate_max_per_s)
        );
    }
}

/// `latencies.csv`: every timed call of the latency rounds, for plotting elsewhere.
pub(crate) struct LatencyCsv;

impl Exporter for LatencyCsv {
    fn file_name(&self) -> &'static str {
        "latencies.csv"
    }

    fn applies(&self, r: &Report) -> bool {
        r.performance.is_some() || r.candidates.iter().any(|c| c.report.performance.is_some())
    }

    /// One row per timed call; with several candidates, each pair's sides are named
    /// `baseline-K` and `candidate-K` (K = the candidate's position on the command line).
    fn render(&self, r: &Report) -> Result<String, ReportError> {
        let mut s = String::from("side,round,call,latency_ms\n");
        let mut pairs: Vec<(String, &Performance)> =
            r.performance.iter().map(|p| (String::new(), p)).collect();
        for c in &r.candidates {
            if let Some(p) = &c.report.performance {
                pairs.push((format!("-{}", c.position), p));
            }
        }
        for (suffix, p) in pairs {
            latency_rows(&mut s, &suffix, p);
        }
        Ok(s)
    }
}

/// The rows of one pair's sides, `suffix` appended to their names.
fn latency_rows(s: &mut String, suffix: &str, p: &Performance) {
    for (name, side) in [("baseline", &p.baseline), ("candidate", &p.candidate)] {
        // Calls are stored in order; rounds are recovered from the per-round counts.
        let mut round = 0;
        let mut in_round = 0;
        let counts = &side.round_calls;
        for (i, l) in side.raw_latencies_ms.iter().enumerate() {
            while round < counts.len() && in_round >= counts[round] {
                round += 1;
                in_round = 0;
            }
            let _ = writeln!(s, "{name}{suffix},{round},{i},{l}");
            in_round += 1;
        }
    }
}

//! The report of `qgate analyze`: live traffic judged. report.json holds the analysis as
//! its `online` section; Markdown, HTML (per-window charts with confidence sequences) and
//! JUnit say the same for people and CI.

use std::fmt::Write;

use qgate_online::{
    Analysis, Exported, Finding, IntervalKind, Online, OnlineCriterion, OnlineGate, OnlineStatus,
    Sequential, WindowFigures,
};
use schemars::JsonSchema;
use serde::Serialize;

use crate::svg::{band_chart, esc, Series};
use crate::{num, pct, pval, ReportError, Tool, Verdict, SCHEMA_VERSION};

/// Which figures of `online` are sequential (always valid, however often read) and which
/// are fixed-horizon (valid once, at their sample size), as JSON paths.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FigureKinds {
    pub sequential: Vec<&'static str>,
    pub fixed_horizon: Vec<&'static str>,
}

impl FigureKinds {
    fn new() -> FigureKinds {
        FigureKinds {
            sequential: vec![
                "shadow.top1_agreement_sequential",
                "shadow.kl.mean_sequential",
                "shadow.error_rate_increase.sequential",
                "shadow.labels.sequential",
                "error_rate.sequential",
                "outcomes[].sequential",
                "windows[].shadow.top1_agreement_sequential",
                "windows[].shadow.kl_mean_sequential",
                "windows[].arms.error_rate_sequential",
                "windows[].outcomes[].sequential",
            ],
            fixed_horizon: vec![
                "shadow.top1_agreement_ci",
                "shadow.latency",
                "shadow.labels.mcnemar_p",
                "arms.*.error_rate_ci",
                "srm",
                "error_rate.fixed",
                "latency",
                "outcomes[].fixed",
                "outcomes[].bootstrap_ci",
            ],
        }
    }
}

/// The whole report of one `qgate analyze` run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OnlineReport {
    pub schema_version: &'static str,
    pub tool: Tool,
    /// `analyze`.
    pub command: String,
    /// `pass`, `fail`, `invalid` or `inconclusive`.
    pub verdict: Verdict,
    /// One-line summary a reviewer reads first.
    pub summary: String,
    /// Every figure over the log.
    pub online: Analysis,
    pub figure_kinds: FigureKinds,
    /// Thresholds in force and each criterion judged.
    pub gate: OnlineGate,
    /// What `--export-inputs` wrote.
    pub exported: Option<Exported>,
}

fn verdict_of(v: qgate_online::OnlineVerdict) -> Verdict {
    match v {
        qgate_online::OnlineVerdict::Pass => Verdict::Pass,
        qgate_online::OnlineVerdict::Fail => Verdict::Fail,
        qgate_online::OnlineVerdict::Invalid => Verdict::Invalid,
        qgate_online::OnlineVerdict::Inconclusive => Verdict::Inconclusive,
    }
}

fn interval_text(i: Option<[f64; 2]>) -> String {
    match i {
        Some([lo, hi]) if lo.is_finite() && hi.is_finite() => format!("[{}, {}]", num(lo), num(hi)),
        Some(_) => "unbounded (no look yet)".into(),
        None => "n/a".into(),
    }
}

fn kind_text(k: IntervalKind) -> &'static str {
    match k {
        IntervalKind::Sequential => "confidence sequence",
        IntervalKind::FixedHorizon => "fixed-horizon interval",
    }
}

/// One sentence per criterion.
pub(crate) fn criterion_sentence(c: &OnlineCriterion) -> String {
    let dir = if c.direction == "at_most" {
        "≤"
    } else {
        "≥"
    };
    let obs = c.observed.map(num).unwrap_or_else(|| "n/a".into());
    let head = format!(
        "{} {obs} ({} {})",
        c.description,
        kind_text(c.interval_kind),
        interval_text(c.interval)
    );
    match &c.finding {
        Finding::Within => format!(
            "{head}: the whole interval meets {dir} {} over {} observations",
            num(c.threshold),
            c.n
        ),
        Finding::Beyond => format!(
            "{head}: the whole interval misses {dir} {} — evidence against the candidate",
            num(c.threshold)
        ),
        Finding::Straddles => format!(
            "{head}: the interval holds the threshold {} — not enough evidence yet either way",
            num(c.threshold)
        ),
        Finding::TooFew { have, need } => format!(
            "{head}: meets {dir} {} so far, but {have} observations are fewer than min_requests = {need}",
            num(c.threshold)
        ),
        Finding::NoData { what } => format!("{}: not judged — {what}", c.key),
    }
}

fn summary(a: &Analysis, g: &OnlineGate) -> String {
    let keys = |s: OnlineStatus| {
        g.criteria
            .iter()
            .filter(|c| c.status == s)
            .map(|c| format!("{} ({})", c.key, c.scope))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let over = format!("{} requests of model '{}'", a.requests, a.model);
    match g.verdict {
        qgate_online::OnlineVerdict::Invalid => format!(
            "INVALID: {} — no verdict on the candidate can be drawn from these {over}.",
            a.invalid.join("; ")
        ),
        qgate_online::OnlineVerdict::Fail => format!(
            "FAIL: evidence the candidate is worse on {} over {over}.",
            keys(OnlineStatus::Fail)
        ),
        qgate_online::OnlineVerdict::Inconclusive if g.criteria.is_empty() => {
            format!("INCONCLUSIVE: no criterion applies to these {over}.")
        }
        qgate_online::OnlineVerdict::Inconclusive => format!(
            "INCONCLUSIVE: not enough evidence yet on {} over {over}; retry when more traffic has arrived.",
            keys(OnlineStatus::Inconclusive)
        ),
        qgate_online::OnlineVerdict::Pass => format!(
            "PASS: every criterion met with evidence over {over}."
        ),
    }
}

impl OnlineReport {
    /// The report of an analysis.
    pub fn new(online: Online) -> OnlineReport {
        let Online {
            analysis,
            gate,
            exported,
        } = online;
        OnlineReport {
            schema_version: SCHEMA_VERSION,
            tool: Tool::qgate(),
            command: "analyze".into(),
            verdict: verdict_of(gate.verdict),
            summary: summary(&analysis, &gate),
            online: analysis,
            figure_kinds: FigureKinds::new(),
            gate,
            exported,
        }
    }

    /// One line per criterion for the terminal: `[pass] key (scope): sentence`.
    pub fn criterion_lines(&self) -> Vec<String> {
        self.gate
            .criteria
            .iter()
            .map(|c| {
                let mark = match c.status {
                    OnlineStatus::Pass => "pass",
                    OnlineStatus::Fail => "FAIL",
                    OnlineStatus::Inconclusive => "wait",
                };
                format!(
                    "[{mark}] {} ({}): {}",
                    c.key,
                    c.scope,
                    criterion_sentence(c)
                )
            })
            .collect()
    }
}

/// Writes report.json, report.md, report.html and junit.xml of an analysis into `out`, all
/// or none.
pub fn write_online_reports(r: &OnlineReport, out: &std::path::Path) -> Result<(), ReportError> {
    let files = [
        ("report.json", serde_json::to_string_pretty(r)? + "\n"),
        ("report.md", markdown(r)),
        ("report.html", html(r)),
        ("junit.xml", junit(r)),
    ];
    crate::write_files(out, &files)
}

fn status_text(s: OnlineStatus) -> &'static str {
    match s {
        OnlineStatus::Pass => "pass",
        OnlineStatus::Fail => "fail",
        OnlineStatus::Inconclusive => "inconclusive",
    }
}

fn seq_text(s: &Sequential) -> String {
    format!(
        "{} (always-valid p {})",
        interval_text(Some(s.interval)),
        pval(s.p_value)
    )
}

/// Rows of `(figure, value, interval, kind)` for the headline tables. The value beside an
/// interval is always the statistic that interval is for.
fn figure_rows(a: &Analysis) -> Vec<[String; 4]> {
    let mut v = Rows::default();
    if let Some(s) = &a.shadow {
        shadow_rows(&mut v, s);
    }
    if let (Some(arms), Some(d)) = (&a.arms, &a.error_rate) {
        arm_rows(&mut v, arms, d);
    }
    if let Some(srm) = &a.srm {
        v.plain(
            "sample-ratio mismatch: routed baseline / candidate vs expected by the weights".into(),
            format!(
                "{} / {} vs {:.1} / {:.1} (chi-square p {}){}",
                srm.observed[0],
                srm.observed[1],
                srm.expected[0],
                srm.expected[1],
                pval(srm.p_value),
                if srm.mismatch { " — MISMATCH" } else { "" }
            ),
        );
    }
    if let Some(l) = &a.latency {
        v.fixed(
            "latency p99 increase (candidate − baseline arm), ms, bootstrap".into(),
            num(l.p99_increase_ms),
            Some(l.p99_increase_ci),
        );
    }
    for o in &a.outcomes {
        outcome_rows(&mut v, o);
    }
    v.0
}

/// The table being built.
#[derive(Default)]
struct Rows(Vec<[String; 4]>);

impl Rows {
    fn plain(&mut self, figure: String, value: String) {
        self.0.push([figure, value, String::new(), String::new()]);
    }
    fn fixed(&mut self, figure: String, value: String, interval: Option<[f64; 2]>) {
        self.0.push([
            figure,
            value,
            interval_text(interval),
            "fixed-horizon".into(),
        ]);
    }
    fn seq(&mut self, figure: String, value: String, s: &Sequential) {
        self.0
            .push([figure, value, seq_text(s), "sequential".into()]);
    }
}

fn shadow_rows(v: &mut Rows, s: &qgate_online::Shadow) {
    v.plain(
        "shadow: requests mirrored / paired / rows compared".into(),
        format!("{} / {} / {}", s.requests, s.paired, s.rows),
    );
    let out = format!(
        "output `{}`, logged {}",
        s.output.clone().unwrap_or_default(),
        s.outputs_logged
    );
    v.seq(
        format!("shadow: top-1 agreement ({out})"),
        pct(s.top1_agreement),
        &s.top1_agreement_sequential,
    );
    v.fixed(
        "shadow: top-1 agreement, Wilson".into(),
        pct(s.top1_agreement),
        Some(s.top1_agreement_ci),
    );
    if let Some(k) = s.top_k_agreement {
        v.plain(format!("shadow: top-{} agreement", s.top_k), pct(k));
    }
    match &s.kl {
        Some(kl) => v.seq(
            format!(
                "shadow: mean KL(baseline ‖ candidate), nats (p99 {}, max {})",
                num(kl.p99),
                num(kl.max)
            ),
            num(kl.mean),
            &kl.mean_sequential,
        ),
        None => v.plain(
            "shadow: KL".into(),
            format!("n/a — {}", s.kl_unavailable.clone().unwrap_or_default()),
        ),
    }
    v.plain(
        "shadow: candidate error / timeout / dropped / missing rate of copies".into(),
        format!(
            "{} / {} / {} / {}",
            pct(s.error_rate),
            pct(s.timeout_rate),
            pct(s.drop_rate),
            pct(s.missing_rate)
        ),
    );
    if let Some(e) = &s.error_rate_increase {
        v.seq(
            format!(
                "shadow: error-rate increase on the same {} requests (candidate − baseline)",
                e.n
            ),
            pct(e.increase),
            &e.sequential,
        );
    }
    if let Some(l) = &s.latency {
        v.plain(
            "shadow: latency p50 / p99, baseline → candidate, ms".into(),
            format!(
                "{} / {} → {} / {}",
                num(l.baseline.p50),
                num(l.baseline.p99),
                num(l.candidate.p50),
                num(l.candidate.p99)
            ),
        );
        v.fixed(
            "shadow: p99 latency increase, ms, paired bootstrap".into(),
            num(l.p99_difference_ms),
            Some(l.p99_difference_ci),
        );
        v.fixed(
            "shadow: mean latency increase, ms, paired t".into(),
            num(l.mean_difference_ms),
            Some(l.mean_difference.interval),
        );
    }
    if let Some(l) = &s.labels {
        v.seq(
            format!(
                "shadow: accuracy change on {} labelled requests ({} → {}; McNemar p {})",
                l.n,
                pct(l.baseline_accuracy),
                pct(l.candidate_accuracy),
                pval(l.mcnemar_p)
            ),
            pct(l.difference),
            &l.sequential,
        );
    }
}

fn arm_rows(v: &mut Rows, arms: &qgate_online::Arms, d: &qgate_online::RateDifference) {
    for (name, arm) in [("baseline", &arms.baseline), ("candidate", &arms.candidate)] {
        v.fixed(
            format!(
                "{name} arm: error rate of {} requests, Wilson",
                arm.requests
            ),
            pct(arm.error_rate),
            Some(arm.error_rate_ci),
        );
        v.plain(
            format!("{name} arm: latency p50 / p99, ms"),
            format!("{} / {}", num(arm.latency.p50), num(arm.latency.p99)),
        );
        if let Some(acc) = &arm.accuracy {
            v.plain(
                format!("{name} arm: accuracy / macro-F1 on {} labels", acc.n),
                format!("{} / {}", pct(acc.accuracy), num(acc.macro_f1)),
            );
        }
    }
    v.seq(
        "error-rate increase (candidate − baseline arm)".into(),
        pct(d.increase),
        &d.sequential,
    );
    v.fixed(
        format!(
            "error-rate increase, Newcombe (z test p {})",
            d.fixed.p_value.map(pval).unwrap_or("n/a".into())
        ),
        pct(d.increase),
        Some(d.fixed.interval),
    );
}

fn outcome_rows(v: &mut Rows, o: &qgate_online::Outcome) {
    let what = format!(
        "outcome `{}` ({}), candidate − baseline: {} (n {}) → {} (n {})",
        o.name,
        o.kind,
        num(o.baseline.mean),
        o.baseline.n,
        num(o.candidate.mean),
        o.candidate.n
    );
    let d = num(o.difference);
    v.seq(what, d.clone(), &o.sequential);
    let (method, test) = if o.fixed.test == "welch_t" {
        ("Welch", "Welch's t")
    } else {
        ("Newcombe", "two-proportion z")
    };
    v.fixed(
        format!(
            "outcome `{}`: {method} interval ({test} p {})",
            o.name,
            o.fixed.p_value.map(pval).unwrap_or("n/a".into())
        ),
        d.clone(),
        Some(o.fixed.interval),
    );
    if let Some(b) = o.bootstrap_ci {
        v.fixed(
            format!("outcome `{}`: bootstrap interval of the difference", o.name),
            d,
            Some(b),
        );
    }
}

fn markdown(r: &OnlineReport) -> String {
    let a = &r.online;
    let mut m = String::new();
    let badge = r.verdict.badge();
    let _ = writeln!(m, "## qgate analyze: {badge}\n\n{}\n", r.summary);
    let _ = writeln!(
        m,
        "Log `{}` (schema {}), model `{}`, {} requests from {} to {}; modes: {}.\n",
        a.source,
        a.schema_version,
        a.model,
        a.requests,
        a.first.as_deref().unwrap_or("—"),
        a.last.as_deref().unwrap_or("—"),
        a.modes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for why in &a.invalid {
        let _ = writeln!(m, "- ⛔ {why}");
    }
    if !r.gate.criteria.is_empty() {
        let _ = writeln!(
            m,
            "\n| criterion | scope | status | finding |\n|---|---|---|---|"
        );
        for c in &r.gate.criteria {
            let _ = writeln!(
                m,
                "| `{}` | {} | {} | {} |",
                c.key,
                c.scope,
                status_text(c.status),
                criterion_sentence(c)
            );
        }
    }
    if !a.decisions.is_empty() {
        let _ = writeln!(m, "\n| time | decision | by | reason |\n|---|---|---|---|");
        for d in &a.decisions {
            let _ = writeln!(
                m,
                "| {} | `{}` | {} | {} |",
                d.ts,
                d.action,
                d.by,
                d.reason.as_deref().unwrap_or("")
            );
        }
    }
    let _ = writeln!(
        m,
        "\n| figure | value | interval | kind |\n|---|---|---|---|"
    );
    for [f, v, i, k] in figure_rows(a) {
        let _ = writeln!(m, "| {f} | {v} | {i} | {k} |");
    }
    let _ = writeln!(
        m,
        "\nSequential figures are mSPRT confidence sequences and always-valid p-values (τ = {}, α = {}): valid however often they are read. Fixed-horizon figures are valid once, at this sample size.",
        num(a.settings.msprt_tau),
        num(a.settings.alpha)
    );
    for n in &a.notes {
        let _ = writeln!(m, "\n> {n}");
    }
    if let Some(e) = &r.exported {
        let _ = writeln!(
            m,
            "\nExported {} samples to `{}` ({} labelled, {} shadow disagreements; {} requests without stored inputs).",
            e.samples, e.path, e.labelled, e.disagreements, e.without_inputs
        );
    }
    m
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}th{background:#f6f6f6}
td.l,th.l{text-align:left}.pass{color:#11772d;font-weight:600}.fail{color:#b3261e;font-weight:600}.inconclusive{color:#8a6d00;font-weight:600}
.verdict{display:inline-block;padding:4px 14px;border-radius:4px;color:#fff;font-weight:700;font-size:18px}
.verdict.pass{background:#1a7f37}.verdict.fail{background:#c62828}.verdict.invalid{background:#6a1b9a}.verdict.inconclusive{background:#b7791f}
.warn{background:#fff8e1;border-left:4px solid #f9a825;padding:6px 10px;margin:6px 0}.bad{background:#fdecea;border-left:4px solid #c62828;padding:6px 10px;margin:6px 0}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}svg{max-width:100%;height:auto}
svg .ttl{font-size:13px;font-weight:600}svg .lbl{font-size:10px;fill:#444}svg .ax{font-size:11px;fill:#444}
code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"#;

fn html(r: &OnlineReport) -> String {
    let a = &r.online;
    let mut h = String::new();
    let v = r.verdict.as_str();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>qgate analyze: {}</title><style>{STYLE}</style></head><body>",
        v.to_uppercase()
    );
    let _ = write!(
        h,
        "<h1>qgate analyze <span class=\"verdict {v}\">{}</span></h1><p>{}</p>",
        v.to_uppercase(),
        esc(&r.summary)
    );
    let _ = write!(
        h,
        "<p>Log <code>{}</code> (schema {}), model <code>{}</code>: {} requests from {} to {}.</p>",
        esc(&a.source),
        a.schema_version,
        esc(&a.model),
        a.requests,
        esc(a.first.as_deref().unwrap_or("—")),
        esc(a.last.as_deref().unwrap_or("—"))
    );
    for why in &a.invalid {
        let _ = write!(h, "<div class=\"bad\">{}</div>", esc(why));
    }
    for n in &a.notes {
        let _ = write!(h, "<div class=\"warn\">{}</div>", esc(n));
    }
    h.push_str("<h2>Gate</h2><table><tr><th class=\"l\">criterion</th><th class=\"l\">scope</th><th>threshold</th><th>observed</th><th>interval</th><th class=\"l\">status</th><th class=\"l\">finding</th></tr>");
    for c in &r.gate.criteria {
        let st = status_text(c.status);
        let _ = write!(
            h,
            "<tr><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td>{} {} <small>({})</small></td><td>{}</td><td>{}<br><small>{}</small></td><td class=\"l {st}\">{st}</td><td class=\"l\">{}</td></tr>",
            esc(&c.key),
            esc(&c.scope),
            if c.direction == "at_most" { "≤" } else { "≥" },
            num(c.threshold),
            esc(&c.source),
            c.observed.map(num).unwrap_or("n/a".into()),
            interval_text(c.interval),
            kind_text(c.interval_kind),
            esc(&criterion_sentence(c))
        );
    }
    h.push_str("</table>");
    h.push_str("<h2>Figures</h2><table><tr><th class=\"l\">figure</th><th>value</th><th>interval</th><th class=\"l\">kind</th></tr>");
    for [f, v, i, k] in figure_rows(a) {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(&f),
            esc(&v),
            esc(&i),
            esc(&k)
        );
    }
    let _ = write!(
        h,
        "</table><p><small>Sequential: mSPRT confidence sequences and always-valid p-values (τ = {} × the per-observation standard deviation, α = {}, first look after {} observations per side), valid however often they are read. Fixed-horizon: valid once, at this sample size; read repeatedly they raise false alarms.</small></p>",
        num(a.settings.msprt_tau),
        num(a.settings.alpha),
        a.settings.burn_in
    );
    decisions_table(&mut h, a);
    charts(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn minutes(a: &Analysis, w: &WindowFigures) -> f64 {
    let first = a.windows.first().map_or(w.start_ms, |f| f.start_ms);
    (w.end_ms - first) as f64 / 60_000.0
}

fn threshold(r: &OnlineReport, key: &str) -> Option<f64> {
    r.gate
        .thresholds
        .iter()
        .find(|t| t.key == key)
        .map(|t| t.value)
}

fn charts(h: &mut String, r: &OnlineReport) {
    let a = &r.online;
    if a.windows.is_empty() {
        return;
    }
    let x = "minutes since the first request (window end)";
    let mut c = Vec::new();
    shadow_charts(&mut c, r, x);
    arm_charts(&mut c, r, x);
    timeline(&mut c, a, x);
    outcome_charts(&mut c, r, x);
    let _ = write!(
        h,
        "<h2>Over time</h2><p><small>Windows: {}. The band is the confidence sequence up to the window's end (cumulative, always valid); the dots are each window's own figure.</small></p><div class=\"charts\">{}</div>",
        match a.window {
            qgate_online::Window::Millis(ms) => format!("{} s each", num(ms as f64 / 1000.0)),
            qgate_online::Window::Requests(n) => format!("{n} requests each"),
        },
        c.join("")
    );
}

/// Agreement, KL, error rate, p99 and accuracy of the shadow windows.
fn shadow_charts(c: &mut Vec<String>, r: &OnlineReport, x: &str) {
    let a = &r.online;
    let shadow: Vec<(&WindowFigures, &qgate_online::WindowShadow)> = a
        .windows
        .iter()
        .filter_map(|w| w.shadow.as_ref().map(|s| (w, s)))
        .collect();
    if shadow.is_empty() {
        return;
    }
    {
        let pts: Vec<_> = shadow
            .iter()
            .filter_map(|(w, s)| {
                Some((
                    minutes(a, w),
                    s.top1_agreement,
                    s.top1_agreement_sequential?.interval,
                ))
            })
            .collect();
        c.push(band_chart(
            "Shadow top-1 agreement per window",
            x,
            "agreement",
            &pts,
            &[],
            threshold(r, "min_shadow_agreement"),
        ));
        let kl: Vec<_> = shadow
            .iter()
            .filter_map(|(w, s)| Some((minutes(a, w), s.kl_mean?, s.kl_mean_sequential?.interval)))
            .collect();
        if !kl.is_empty() {
            c.push(band_chart(
                "Shadow mean KL per window",
                x,
                "nats",
                &kl,
                &[],
                threshold(r, "max_shadow_kl_mean"),
            ));
        }
        let err = Series {
            name: "candidate error rate",
            class: "cand",
            points: shadow
                .iter()
                .map(|(w, s)| (minutes(a, w), s.candidate_error_rate))
                .collect(),
        };
        c.push(band_chart(
            "Shadow: candidate error rate per window",
            x,
            "rate",
            &[],
            &[err],
            None,
        ));
        let series =
            |name: &'static str,
             class: &'static str,
             f: &dyn Fn(&qgate_online::WindowShadow) -> Option<f64>| Series {
                name,
                class,
                points: shadow
                    .iter()
                    .filter_map(|(w, s)| Some((minutes(a, w), f(s)?)))
                    .collect(),
            };
        c.push(band_chart(
            "Shadow: p99 latency per window",
            x,
            "ms",
            &[],
            &[
                series("baseline p99", "base", &|s| Some(s.baseline_p99_ms)),
                series("candidate p99", "cand", &|s| Some(s.candidate_p99_ms)),
            ],
            None,
        ));
        if shadow.iter().any(|(_, s)| s.accuracy.is_some()) {
            c.push(band_chart(
                "Shadow: accuracy on labelled requests per window",
                x,
                "accuracy",
                &[],
                &[
                    series("baseline", "base", &|s| s.accuracy.map(|a| a[0])),
                    series("candidate", "cand", &|s| s.accuracy.map(|a| a[1])),
                ],
                None,
            ));
        }
    }
}

/// Error rates, their increase, p99, requests and weight of the arms' windows.
fn arm_charts(c: &mut Vec<String>, r: &OnlineReport, x: &str) {
    let a = &r.online;
    let arms: Vec<(&WindowFigures, &qgate_online::WindowArms)> = a
        .windows
        .iter()
        .filter_map(|w| w.arms.as_ref().map(|s| (w, s)))
        .collect();
    if arms.is_empty() {
        return;
    }
    {
        let side = |name: &'static str,
                    class: &'static str,
                    f: fn(&qgate_online::WindowArms) -> f64| Series {
            name,
            class,
            points: arms.iter().map(|(w, s)| (minutes(a, w), f(s))).collect(),
        };
        c.push(band_chart(
            "Error rate per window and arm",
            x,
            "rate",
            &[],
            &[
                side("baseline", "base", |s| s.baseline_error_rate),
                side("candidate", "cand", |s| s.candidate_error_rate),
            ],
            None,
        ));
        let inc: Vec<_> = arms
            .iter()
            .map(|(w, s)| {
                (
                    minutes(a, w),
                    s.candidate_error_rate - s.baseline_error_rate,
                    s.error_rate_sequential.interval,
                )
            })
            .collect();
        c.push(band_chart(
            "Error-rate increase (band: cumulative confidence sequence)",
            x,
            "candidate − baseline",
            &inc,
            &[],
            threshold(r, "max_error_rate_increase"),
        ));
        c.push(band_chart(
            "Latency p99 per window and arm",
            x,
            "ms",
            &[],
            &[
                side("baseline p99", "base", |s| s.baseline_p99_ms),
                side("candidate p99", "cand", |s| s.candidate_p99_ms),
            ],
            None,
        ));
        c.push(band_chart(
            "Requests per window and arm",
            x,
            "requests",
            &[],
            &[
                side("baseline", "base", |s| s.baseline_requests as f64),
                side("candidate", "cand", |s| s.candidate_requests as f64),
            ],
            None,
        ));
        c.push(band_chart(
            "Candidate weight per window",
            x,
            "share",
            &[],
            &[side("candidate weight", "cand", |s| s.weight)],
            None,
        ));
    }
}

/// Each outcome's difference per window, with its limit on the difference's scale.
fn outcome_charts(c: &mut Vec<String>, r: &OnlineReport, x: &str) {
    let a = &r.online;
    for o in &a.outcomes {
        let pts: Vec<_> = a
            .windows
            .iter()
            .filter_map(|w| {
                let wo = w.outcomes.iter().find(|x| x.name == o.name)?;
                Some((minutes(a, w), wo.difference, wo.sequential.interval))
            })
            .collect();
        // A drop limit, drawn on the difference's scale: −max_drop when higher is better.
        let limit = threshold(r, &format!("outcomes.{}.max_drop", o.name))
            .or(threshold(r, "max_outcome_drop"))
            .map(|t| if o.better == "lower" { t } else { -t });
        c.push(band_chart(
            &format!("Outcome `{}`: candidate − baseline per window", o.name),
            x,
            "difference",
            &pts,
            &[],
            limit,
        ));
    }
}

/// The canary's timeline: the weight per window with every decision as a marker.
fn timeline(c: &mut Vec<String>, a: &Analysis, x: &str) {
    if a.decisions.is_empty() {
        return;
    }
    let first = a.windows.first().map_or(0, |w| w.start_ms);
    let minutes = |ms: i64| (ms - first) as f64 / 60_000.0;
    let weight = Series {
        name: "candidate weight",
        class: "cand",
        points: a
            .windows
            .iter()
            .filter_map(|w| Some((minutes(w.end_ms), w.arms.as_ref()?.weight)))
            .collect(),
    };
    let markers: Vec<(f64, String)> = a
        .decisions
        .iter()
        .map(|d| {
            (
                minutes(d.ts_ms),
                format!(
                    "{} {} ({}): {}",
                    d.ts,
                    d.action,
                    d.by,
                    d.reason.clone().unwrap_or_default()
                ),
            )
        })
        .collect();
    c.insert(
        0,
        crate::svg::band_chart_marked(
            "Canary: weight per window and decisions (hover a marker)",
            x,
            "candidate weight",
            &[],
            &[weight],
            None,
            &markers,
        ),
    );
}

/// The decisions of the window as a table.
fn decisions_table(h: &mut String, a: &Analysis) {
    if a.decisions.is_empty() {
        return;
    }
    h.push_str("<h2>Decisions</h2><table><tr><th class=\"l\">time</th><th class=\"l\">action</th><th class=\"l\">by</th><th class=\"l\">verdict</th><th>weight after</th><th class=\"l\">reason</th></tr>");
    for d in &a.decisions {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            esc(&d.ts),
            esc(&d.action),
            esc(&d.by),
            esc(d.verdict.as_deref().unwrap_or("")),
            d.weight_after.map(num).unwrap_or_default(),
            esc(d.reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
}

fn junit(r: &OnlineReport) -> String {
    let crit = &r.gate.criteria;
    let invalid = !r.online.invalid.is_empty();
    let failures = crit
        .iter()
        .filter(|c| c.status == OnlineStatus::Fail)
        .count()
        + usize::from(invalid);
    let skipped = crit
        .iter()
        .filter(|c| c.status == OnlineStatus::Inconclusive)
        .count();
    let tests = crit.len() + 1;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"qgate\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">\n  <testsuite name=\"qgate.analyze\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">"
    );
    let _ = writeln!(
        x,
        "    <properties><property name=\"log\" value=\"{}\"/><property name=\"model\" value=\"{}\"/><property name=\"requests\" value=\"{}\"/></properties>",
        esc(&r.online.source),
        esc(&r.online.model),
        r.online.requests
    );
    x.push_str("    <testcase classname=\"qgate.analyze.validity\" name=\"valid data\">");
    if invalid {
        let _ = write!(
            x,
            "<failure message=\"invalid\" type=\"validity\">{}</failure>",
            esc(&r.online.invalid.join("; "))
        );
    }
    x.push_str("</testcase>\n");
    for c in crit {
        let _ = write!(
            x,
            "    <testcase classname=\"qgate.analyze.{}\" name=\"{}\">",
            esc(&c.scope),
            esc(&c.key)
        );
        let sentence = esc(&criterion_sentence(c));
        match c.status {
            OnlineStatus::Pass => {}
            OnlineStatus::Fail => {
                let _ = write!(
                    x,
                    "<failure message=\"{sentence}\" type=\"threshold\">{sentence}</failure>"
                );
            }
            OnlineStatus::Inconclusive => {
                let _ = write!(x, "<skipped message=\"{sentence}\"/>");
            }
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// What the automatic canary did, for its decision record's sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CanaryAction {
    /// To the next step (1-based) at this weight (percent).
    Promote { to: usize, percent: f64 },
    /// The rollout is complete.
    Complete,
    /// Inconclusive: hold `hold` of `max`.
    Hold { hold: u32, max: u32 },
    /// Weight 0 from the next request.
    Rollback,
    /// Held for an operator after `max` holds.
    HoldForOperator { max: u32 },
}

/// The one-sentence reason of a canary decision at `step` (1-based, `percent` of users),
/// from the gate that decided it.
pub fn decision_reason(
    action: CanaryAction,
    step: usize,
    percent: f64,
    gate: &OnlineGate,
    invalid: &[String],
    requests: u64,
) -> String {
    let at = format!("step {step} ({} %)", num(percent));
    let first = |s: OnlineStatus| gate.criteria.iter().find(|c| c.status == s);
    let why_not = || match (invalid.first(), first(OnlineStatus::Fail)) {
        (Some(i), _) => format!("the data is invalid — {i}"),
        (None, Some(c)) => format!("`{}` failed — {}", c.key, criterion_sentence(c)),
        (None, None) => match first(OnlineStatus::Inconclusive) {
            Some(c) => format!("`{}` is inconclusive — {}", c.key, criterion_sentence(c)),
            None => "no criterion applies".into(),
        },
    };
    match action {
        CanaryAction::Promote { to, percent: p } => format!(
            "Promoted from {at} to step {to} ({} %): every criterion met with evidence over {requests} requests.",
            num(p)
        ),
        CanaryAction::Complete => format!(
            "Completed at {at}: every criterion met with evidence over {requests} requests; the candidate keeps serving."
        ),
        CanaryAction::Hold { hold, max } => {
            format!("Held at {at} (hold {hold} of {max}): {}.", why_not())
        }
        CanaryAction::Rollback => format!("Rolled back at {at}: {}.", why_not()),
        CanaryAction::HoldForOperator { max } => format!(
            "Held at {at} for an operator after {max} inconclusive judgements: {}.",
            why_not()
        ),
    }
}

/// The one-sentence reason of an operator's admin action in an automatic canary.
pub fn operator_reason(action: &str, weight_before: f64, weight_after: f64) -> String {
    format!(
        "An operator called {action}: the candidate's weight went from {} % to {} %.",
        num(weight_before * 100.0),
        num(weight_after * 100.0)
    )
}

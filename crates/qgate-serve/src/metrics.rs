//! Prometheus metrics, kept as plain counters and written in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if s <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += s;
    }
}

/// The gateway's counters.
#[derive(Default)]
pub struct Metrics {
    /// (arm, HTTP status) → requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// (what, arm) → latency histogram; `what` is `request` (through the gateway) or `backend`.
    latency: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    /// shadow status → copies.
    shadow: Mutex<BTreeMap<&'static str, u64>>,
    pub duplicate_ids: AtomicU64,
    pub unsticky: AtomicU64,
    pub log_errors: AtomicU64,
    /// Requests answered although their record could not be committed (`serve_unlogged`).
    pub unlogged: AtomicU64,
    /// Rows of paired shadow answers compared, and those whose top-1 agreed.
    pub paired_rows: AtomicU64,
    pub agreed_rows: AtomicU64,
}

impl Metrics {
    pub fn request(&self, arm: &str, status: u16, total: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((arm.to_string(), status)).or_default() += 1;
        }
        let arm: &'static str = match arm {
            "baseline" => "baseline",
            "candidate" => "candidate",
            _ => "none",
        };
        if let Ok(mut m) = self.latency.lock() {
            m.entry(("request", arm)).or_default().observe(total);
        }
    }

    pub fn backend(&self, role: &'static str, d: Duration) {
        if let Ok(mut m) = self.latency.lock() {
            m.entry(("backend", role)).or_default().observe(d);
        }
    }

    pub fn shadow(&self, status: &'static str) {
        if let Ok(mut m) = self.shadow.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// Adds paired rows and how many agreed on the top-1 class.
    pub fn agreement(&self, rows: u64, agreed: u64) {
        self.paired_rows.fetch_add(rows, Ordering::Relaxed);
        self.agreed_rows.fetch_add(agreed, Ordering::Relaxed);
    }
}

/// One model's figures for the exposition: its counters and the admin state now.
pub struct ModelView<'a> {
    pub name: &'a str,
    pub metrics: &'a Metrics,
    pub mode: &'a str,
    /// The candidate's share of users now (0 in shadow mode).
    pub weight: f64,
    /// The canary step in canary mode.
    pub step: Option<usize>,
    /// Shadow copies waiting.
    pub queue_depth: usize,
}

/// Writes one metric family: its HELP and TYPE once, then one line per model (`labels` are
/// extra labels after `model`, already formatted, and the value).
fn family(s: &mut String, name: &str, kind: &str, help: &str, lines: Vec<(String, String)>) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in lines {
        let _ = writeln!(s, "{name}{{{labels}}} {value}");
    }
}

/// The exposition text of every model (each line labelled `model="NAME"`) and of the log.
pub fn render(models: &[ModelView<'_>], health: &crate::store::LogHealth) -> String {
    let mut s = String::new();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let per = |f: &dyn Fn(&ModelView<'_>) -> String| -> Vec<(String, String)> {
        models
            .iter()
            .map(|m| (format!("model=\"{}\"", m.name), f(m)))
            .collect()
    };
    let mut requests = Vec::new();
    for m in models {
        if let Ok(r) = m.metrics.requests.lock() {
            for ((arm, code), n) in r.iter() {
                requests.push((
                    format!("model=\"{}\",arm=\"{arm}\",code=\"{code}\"", m.name),
                    n.to_string(),
                ));
            }
        }
    }
    family(
        &mut s,
        "qgate_requests_total",
        "counter",
        "Inference requests answered, by model, arm and HTTP status.",
        requests,
    );
    let _ = writeln!(
        s,
        "# HELP qgate_latency_seconds Time through the gateway (what=\"request\") and in each \
         model (what=\"backend\").\n# TYPE qgate_latency_seconds histogram"
    );
    for m in models {
        m.metrics.render_latency(&mut s, m.name);
    }
    let mut shadow = Vec::new();
    for m in models {
        if let Ok(r) = m.metrics.shadow.lock() {
            for (status, n) in r.iter() {
                shadow.push((
                    format!("model=\"{}\",status=\"{status}\"", m.name),
                    n.to_string(),
                ));
            }
        }
    }
    family(
        &mut s,
        "qgate_shadow_total",
        "counter",
        "Shadow copies by how they ended.",
        shadow,
    );
    let dropped = |m: &ModelView<'_>| {
        m.metrics
            .shadow
            .lock()
            .map(|r| r.get("dropped").copied().unwrap_or(0))
            .unwrap_or(0)
            .to_string()
    };
    let agreement = |m: &ModelView<'_>| {
        let paired = load(&m.metrics.paired_rows);
        if paired == 0 {
            "NaN".to_string()
        } else {
            format!("{}", load(&m.metrics.agreed_rows) as f64 / paired as f64)
        }
    };
    type Of<'f> = &'f dyn Fn(&ModelView<'_>) -> String;
    let families: [(&str, &str, &str, Of<'_>); 10] = [
        ("qgate_shadow_queue_depth", "gauge", "Shadow copies waiting for the candidate.",
         &|m| m.queue_depth.to_string()),
        ("qgate_shadow_dropped_total", "counter", "Shadow copies dropped because the queue was full.",
         &dropped),
        ("qgate_duplicate_request_ids_total", "counter",
         "Requests whose id was already logged (logged with a suffix).",
         &|m| load(&m.metrics.duplicate_ids).to_string()),
        ("qgate_unsticky_requests_total", "counter",
         "Split requests without the sticky header (split per request).",
         &|m| load(&m.metrics.unsticky).to_string()),
        ("qgate_log_errors_total", "counter",
         "Records the log could not commit (their clients got 503).",
         &|m| load(&m.metrics.log_errors).to_string()),
        ("qgate_log_unlogged_total", "counter",
         "Requests answered although their record could not be committed (on_log_failure = serve_unlogged).",
         &|m| load(&m.metrics.unlogged).to_string()),
        ("qgate_paired_rows_total", "counter", "Rows answered by both models (shadow mode).",
         &|m| load(&m.metrics.paired_rows).to_string()),
        ("qgate_top1_agreement", "gauge",
         "Share of paired rows whose top-1 class agreed (NaN before the first pair).",
         &agreement),
        ("qgate_candidate_weight", "gauge", "The candidate's share of users now (0 in shadow mode).",
         &|m| format!("{}", m.weight)),
        ("qgate_canary_step", "gauge", "The canary step index now (-1 after a rollback or outside canary mode).",
         &|m| m.step.map_or(-1, |i| i as i64).to_string()),
    ];
    for (name, kind, help, f) in families {
        family(&mut s, name, kind, help, per(f));
    }
    family(
        &mut s,
        "qgate_mode",
        "gauge",
        "The traffic mode now.",
        models
            .iter()
            .map(|m| {
                (
                    format!("model=\"{}\",mode=\"{}\"", m.name, m.mode),
                    "1".to_string(),
                )
            })
            .collect(),
    );
    render_log(&mut s, health);
    s
}

/// The log's health (shared by every model): up, backlog, written late and lost.
fn render_log(s: &mut String, health: &crate::store::LogHealth) {
    let lines: [(&str, &str, &str, String); 4] = [
        (
            "qgate_log_up",
            "gauge",
            "1 while the log commits, 0 from a failed commit until it is back.",
            u8::from(health.up()).to_string(),
        ),
        (
            "qgate_log_backlog",
            "gauge",
            "Records served unlogged, waiting to be written once the log is back.",
            health.backlog.load(Ordering::Relaxed).to_string(),
        ),
        (
            "qgate_log_written_late_total",
            "counter",
            "Records served unlogged and written later from the backlog.",
            health.written_late.load(Ordering::Relaxed).to_string(),
        ),
        (
            "qgate_log_lost_total",
            "counter",
            "Records served unlogged and lost because the backlog was full.",
            health.lost.load(Ordering::Relaxed).to_string(),
        ),
    ];
    for (name, kind, help, value) in lines {
        let _ = writeln!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

impl Metrics {
    fn render_latency(&self, s: &mut String, model: &str) {
        if let Ok(m) = self.latency.lock() {
            for ((what, arm), h) in m.iter() {
                let l = format!("model=\"{model}\",what=\"{what}\",arm=\"{arm}\"");
                for (c, b) in h.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(*s, "qgate_latency_seconds_bucket{{{l},le=\"{b}\"}} {c}");
                }
                let _ = writeln!(
                    *s,
                    "qgate_latency_seconds_bucket{{{l},le=\"+Inf\"}} {}\n\
                     qgate_latency_seconds_sum{{{l}}} {}\n\
                     qgate_latency_seconds_count{{{l}}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
    }
}

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

    /// The exposition text. `weight` and `step` describe the admin state now, `queue_depth`
    /// the shadow copies waiting.
    pub fn render(
        &self,
        mode: &str,
        weight: f64,
        step: Option<usize>,
        queue_depth: usize,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP qgate_requests_total Inference requests answered, by arm and HTTP status.\n\
             # TYPE qgate_requests_total counter"
        );
        if let Ok(m) = self.requests.lock() {
            for ((arm, code), n) in m.iter() {
                let _ = writeln!(
                    s,
                    "qgate_requests_total{{arm=\"{arm}\",code=\"{code}\"}} {n}"
                );
            }
        }
        self.render_latency(&mut s);
        let _ = writeln!(
            s,
            "# HELP qgate_shadow_total Shadow copies by how they ended.\n# TYPE qgate_shadow_total counter"
        );
        let mut dropped = 0;
        if let Ok(m) = self.shadow.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(s, "qgate_shadow_total{{status=\"{status}\"}} {n}");
            }
            dropped = m.get("dropped").copied().unwrap_or(0);
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let paired = load(&self.paired_rows);
        let agreed = load(&self.agreed_rows);
        let gauges: [(&str, &str, &str, String); 8] = [
            (
                "qgate_shadow_queue_depth",
                "gauge",
                "Shadow copies waiting for the candidate.",
                queue_depth.to_string(),
            ),
            (
                "qgate_shadow_dropped_total",
                "counter",
                "Shadow copies dropped because the queue was full.",
                dropped.to_string(),
            ),
            (
                "qgate_duplicate_request_ids_total",
                "counter",
                "Requests whose id was already logged (logged with a suffix).",
                load(&self.duplicate_ids).to_string(),
            ),
            (
                "qgate_unsticky_requests_total",
                "counter",
                "Split requests without the sticky header (split per request).",
                load(&self.unsticky).to_string(),
            ),
            (
                "qgate_log_errors_total",
                "counter",
                "Records the log could not commit (their clients got 503).",
                load(&self.log_errors).to_string(),
            ),
            (
                "qgate_paired_rows_total",
                "counter",
                "Rows answered by both models (shadow mode).",
                paired.to_string(),
            ),
            (
                "qgate_top1_agreement",
                "gauge",
                "Share of paired rows whose top-1 class agreed (NaN before the first pair).",
                if paired == 0 {
                    "NaN".into()
                } else {
                    format!("{}", agreed as f64 / paired as f64)
                },
            ),
            (
                "qgate_candidate_weight",
                "gauge",
                "The candidate's share of users now (0 in shadow mode).",
                format!("{weight}"),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP qgate_canary_step The canary step index now (-1 after a rollback).\n\
             # TYPE qgate_canary_step gauge\nqgate_canary_step {}",
            step.map_or(-1, |i| i as i64)
        );
        let _ = writeln!(
            s,
            "# HELP qgate_mode The traffic mode now.\n# TYPE qgate_mode gauge\nqgate_mode{{mode=\"{mode}\"}} 1"
        );
        s
    }

    /// The log's health: up, backlog, records served unlogged, written late and lost.
    pub fn render_log(&self, s: &mut String, health: &crate::store::LogHealth) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let lines: [(&str, &str, &str, String); 5] = [
            (
                "qgate_log_up",
                "gauge",
                "1 while the log commits, 0 from a failed commit until it is back.",
                u8::from(health.up()).to_string(),
            ),
            (
                "qgate_log_unlogged_total",
                "counter",
                "Requests answered although their record could not be committed (on_log_failure = serve_unlogged).",
                load(&self.unlogged).to_string(),
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
                load(&health.written_late).to_string(),
            ),
            (
                "qgate_log_lost_total",
                "counter",
                "Records served unlogged and lost because the backlog was full.",
                load(&health.lost).to_string(),
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }

    fn render_latency(&self, s: &mut String) {
        let _ = writeln!(
            *s,
            "# HELP qgate_latency_seconds Time through the gateway (what=\"request\") and in each \
             model (what=\"backend\").\n# TYPE qgate_latency_seconds histogram"
        );
        if let Ok(m) = self.latency.lock() {
            for ((what, arm), h) in m.iter() {
                for (c, b) in h.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(
                        *s,
                        "qgate_latency_seconds_bucket{{what=\"{what}\",arm=\"{arm}\",le=\"{b}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    *s,
                    "qgate_latency_seconds_bucket{{what=\"{what}\",arm=\"{arm}\",le=\"+Inf\"}} {}\n\
                     qgate_latency_seconds_sum{{what=\"{what}\",arm=\"{arm}\"}} {}\n\
                     qgate_latency_seconds_count{{what=\"{what}\",arm=\"{arm}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
    }
}

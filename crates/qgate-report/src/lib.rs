//! The versioned qgate report and its exporters: JSON (machines), Markdown (pull-request
//! comments), HTML (one self-contained page with charts), JUnit (CI test tabs).
//!
//! Each exporter implements [`Exporter`] and renders a [`Report`] to text; writing files is
//! the caller's business.
//!
//! ```
//! use qgate_report::{exporters, SCHEMA_VERSION};
//! let names: Vec<&str> = exporters().iter().map(|e| e.file_name()).collect();
//! assert_eq!(names, ["report.json", "report.md", "report.html", "junit.xml", "latencies.csv"]);
//! assert!(SCHEMA_VERSION.starts_with("1."));
//! ```

mod html;
mod junit;
mod markdown;
mod perf;
mod png;
mod schema;
mod sens;
mod svg;

pub use schema::*;

/// Errors while rendering.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// JSON serialisation failed.
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Renders a report in one format.
pub trait Exporter {
    /// File name in the output directory.
    fn file_name(&self) -> &'static str;
    /// The rendered text.
    fn render(&self, report: &Report) -> Result<String, ReportError>;
    /// Whether this file belongs to this report (raw latencies only exist for benchmarks).
    fn applies(&self, report: &Report) -> bool {
        let _ = report;
        true
    }
}

struct Json;

impl Exporter for Json {
    fn file_name(&self) -> &'static str {
        "report.json"
    }
    fn render(&self, report: &Report) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(report)? + "\n")
    }
}

/// Every exporter, in the order files are written.
pub fn exporters() -> Vec<Box<dyn Exporter>> {
    vec![
        Box::new(Json),
        Box::new(markdown::Markdown),
        Box::new(html::Html),
        Box::new(junit::Junit),
        Box::new(perf::LatencyCsv),
    ]
}

/// Formats a fraction as a percentage with two decimals.
pub(crate) fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}%", v * 100.0)
    } else {
        "n/a".into()
    }
}

/// Formats a number compactly.
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "n/a".into()
        } else {
            "∞".into()
        };
    }
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e-3 && v.abs() < 1e5 {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// Formats a p-value.
pub(crate) fn pval(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

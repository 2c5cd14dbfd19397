//! The versioned qgate report and its exporters: JSON (machines), Markdown (pull-request
//! comments), HTML (one self-contained page with charts), JUnit (CI test tabs), the raw
//! latencies of a benchmark and the exclusion lists of a sensitivity analysis.
//!
//! Each exporter implements [`Exporter`] and renders a [`Report`] to text;
//! [`write_reports`] writes those that apply, all or none.
//!
//! ```
//! use qgate_report::{exporters, SCHEMA_VERSION};
//! let names: Vec<&str> = exporters().iter().map(|e| e.file_name()).collect();
//! assert_eq!(
//!     names,
//!     ["report.json", "report.md", "report.html", "junit.xml", "latencies.csv", "exclusions.json"]
//! );
//! assert!(SCHEMA_VERSION.starts_with("1."));
//! ```

mod candidates;
mod corruptions;
mod html;
mod junit;
mod markdown;
mod online;
mod perf;
mod png;
mod schema;
mod sens;
mod slices;
mod svg;
mod words;

pub use online::{
    decision_reason, operator_reason, write_online_reports, CanaryAction, FigureKinds, OnlineReport,
};
pub use schema::*;

/// Errors while rendering.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// JSON serialisation failed.
    #[error("cannot serialise the report: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing a report file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Removes qgate's own report files from `out` (never other files), so that a reader of
/// `out` never sees a verdict from an earlier run.
pub fn clear_reports(out: &std::path::Path) -> Result<(), ReportError> {
    for e in exporters() {
        let stale = out.join(e.file_name());
        if stale.is_file() {
            std::fs::remove_file(&stale).map_err(|source| ReportError::Io {
                path: stale.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// The `report.json` of a run that ended in an error (exit 2).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct ErrorReport {
    pub schema_version: &'static str,
    pub tool: Tool,
    pub command: String,
    pub verdict: ErrorVerdict,
    /// The error, as printed on stderr (without the `qgate: error: ` prefix).
    pub error: String,
}

/// The verdict of a run that could not judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorVerdict {
    Error,
}

/// What a `report.json` holds: a judged run or an error.
#[derive(serde::Serialize, schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ReportFile {
    Judged(Box<Report>),
    Online(Box<OnlineReport>),
    Error(ErrorReport),
}

/// The JSON Schema (draft 2020-12) of `report.json`, generated from the report types;
/// published as docs/report.schema.json.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(ReportFile);
    schema.insert("title".into(), "qgate report.json".into());
    schema.insert(
        "description".into(),
        format!("report.json of qgate compare, check, bench, sensitivity and analyze, schema version {SCHEMA_VERSION}; docs/report-schema.md documents each field").into(),
    );
    let mut value = schema.to_value();
    nullable_floats(&mut value);
    value
}

/// The JSON Schema of `GET /v2/models/{name}/analysis`'s answer (the gateway's type is
/// given, as this crate cannot see it): floats nullable as in report.json.
pub fn endpoint_schema<T: schemars::JsonSchema>(
    title: &str,
    description: &str,
) -> serde_json::Value {
    let mut schema = schemars::schema_for!(T);
    schema.insert("title".into(), title.into());
    schema.insert("description".into(), description.into());
    let mut value = schema.to_value();
    nullable_floats(&mut value);
    value
}

/// serde_json writes a non-finite float (NaN, ±∞) as `null`: every float may be null.
fn nullable_floats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let float = matches!(
                map.get("format").and_then(|f| f.as_str()),
                Some("double" | "float")
            );
            if float && map.get("type").and_then(|t| t.as_str()) == Some("number") {
                map.insert("type".into(), serde_json::json!(["number", "null"]));
            }
            map.values_mut().for_each(nullable_floats);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(nullable_floats),
        _ => {}
    }
}

/// Writes the `report.json` of a run that ended in an error (exit 2): verdict `"error"` and
/// the message (docs/report-schema.md). Best effort: the error itself is what the user must
/// see.
pub fn write_error_report(out: &std::path::Path, command: &str, message: &str) {
    let report = ErrorReport {
        schema_version: SCHEMA_VERSION,
        tool: Tool::qgate(),
        command: command.into(),
        verdict: ErrorVerdict::Error,
        error: message.into(),
    };
    if std::fs::create_dir_all(out).is_ok() {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        let _ = std::fs::write(out.join("report.json"), text);
    }
}

/// Writes every report file that applies into `out`, all or none: the files are rendered
/// into a temporary folder beside `out` (same file system) and then renamed into place, so a
/// reader of `out` never sees a half-written report or a mix of two runs' files.
pub fn write_reports(report: &Report, out: &std::path::Path) -> Result<(), ReportError> {
    let mut files = Vec::new();
    for exporter in exporters() {
        if exporter.applies(report) {
            files.push((exporter.file_name(), exporter.render(report)?));
        }
    }
    write_files(out, &files)
}

/// Writes rendered `(file name, text)` pairs into `out`, all or none (see [`write_reports`]).
pub(crate) fn write_files(
    out: &std::path::Path,
    files: &[(&'static str, String)],
) -> Result<(), ReportError> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".qgate-report-")
        .tempdir_in(parent)
        .map_err(io(parent))?;
    for (name, text) in files {
        let path = staging.path().join(name);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    for (name, _) in files {
        let to = out.join(name);
        let from = staging.path().join(name);
        // `out` may be a mount point of its own: then copy.
        if std::fs::rename(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    Ok(())
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
        Box::new(Exclusions),
    ]
}

/// `exclusions.json` of a sensitivity report: the recommended float layers in the forms
/// onnxruntime's quantizer, TensorRT and NNCF take.
struct Exclusions;

impl Exporter for Exclusions {
    fn file_name(&self) -> &'static str {
        "exclusions.json"
    }

    fn applies(&self, r: &Report) -> bool {
        r.sensitivity.is_some()
    }

    fn render(&self, r: &Report) -> Result<String, ReportError> {
        let Some(s) = &r.sensitivity else {
            return Ok("{}\n".into());
        };
        let rec = &s.analysis.recommendation;
        Ok(serde_json::to_string_pretty(&serde_json::json!({
            "onnxruntime_nodes_to_exclude": rec.ort_nodes_to_exclude,
            "tensorrt_layer_precisions": rec.tensorrt_layer_precisions,
            "nncf_ignored_scope": rec.nncf_ignored_scope,
        }))? + "\n")
    }
}

/// One sentence per runtime check, for people.
pub(crate) fn runtime_check_lines(r: &Report) -> Vec<String> {
    r.runtime_checks
        .iter()
        .map(|c| match c {
            crate::RuntimeCheckOutcome::Passed(c) => format!(
                "Runtime check ({}): tract agrees with {} on the first {} samples — top-1 agreement {}, largest difference of '{}' {} (tolerance {}: {}).",
                c.side,
                c.reference,
                c.samples,
                sig(c.top1_agreement, 3),
                c.output,
                num(c.max_abs_diff),
                num(c.tolerance),
                c.tolerance_basis
            ),
            crate::RuntimeCheckOutcome::Skipped { side, reason } => {
                format!("Runtime check ({side}): skipped — {reason}.")
            }
        })
        .collect()
}

/// Said beside a percentile-bootstrap interval that does not contain its own point (rare,
/// for skewed resampling distributions, e.g. a macro-F1 delta driven by a few samples of a
/// small class): the figure is still the statistic the interval is for.
pub(crate) fn ci_note(point: f64, ci: [f64; 2]) -> &'static str {
    if point < ci[0] || point > ci[1] {
        " (the percentile bootstrap interval excludes the observed Δ: its resampling distribution is skewed)"
    } else {
        ""
    }
}

/// Formats a fraction as a percentage with two decimals.
pub(crate) fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.2}%", v * 100.0)
    } else {
        "n/a".into()
    }
}

/// Formats a number compactly: four significant digits (see [`sig`]).
pub(crate) fn num(v: f64) -> String {
    sig(v, 4)
}

/// Formats `v` for people: `digits` significant digits, thousands separated by commas from
/// 1 000 on (no decimals there: `41,124` for 41124.0994), trailing zeros dropped, scientific
/// notation below 0.001 and from 10¹⁵. JSON keeps full precision; this is for prose and tables.
pub(crate) fn sig(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "n/a".into()
        } else if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    let digits = digits.max(1);
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e15).contains(&a) {
        return format!("{v:.*e}", digits - 1);
    }
    if a >= 999.5 {
        return thousands(v.round());
    }
    let magnitude = a.log10().floor() as i32;
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A whole number with thousands separated by commas: `-1,234,567`.
pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        format!("-{out}")
    } else {
        out
    }
}

/// Formats a p-value.
/// Text for a Markdown table cell inside a code span: `|` would end the cell and a backtick
/// the span.
pub(crate) fn md_code(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'")
}

pub(crate) fn pval(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::{num, sig, thousands};

    #[test]
    fn numbers_for_people() {
        let cases = [
            (41124.0994, "41,124"),
            (10628.3479, "10,628"),
            (1_234_567.0, "1,234,567"),
            (999.4, "999.4"),
            (999.96, "1,000"),
            (12.3456, "12.35"),
            (0.0123456, "0.01235"),
            (1.0, "1"),
            (0.5, "0.5"),
            (-0.00001, "-1.000e-5"),
            (-2500.0, "-2,500"),
            (0.0, "0"),
            (f64::NAN, "n/a"),
        ];
        for (v, want) in cases {
            assert_eq!(num(v), want, "{v}");
        }
        assert_eq!(sig(0.012345, 2), "0.012");
        assert_eq!(thousands(-0.2), "0");
        assert_eq!(thousands(100.0), "100");
    }

    #[test]
    fn an_interval_that_excludes_its_point_is_said_so() {
        assert_eq!(super::ci_note(-0.01, [-0.02, 0.0]), "");
        assert!(super::ci_note(0.01, [-0.02, 0.0]).contains("excludes"));
    }
}

//! The gate policy: thresholds read from TOML, with defaults, and their evaluation into a
//! verdict. One namespace of keys serves every qgate command.

use std::fmt;

use serde::Serialize;

use crate::tolerance::Tolerance;

/// The thresholds a policy file sets, by key. The keys, their ranges and meanings are
/// declared once, in [`ACCURACY_KEYS`] and [`PERFORMANCE_KEYS`]; a key not declared there is
/// an error that names it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyFile {
    /// `key → threshold`, for the keys the file sets.
    pub values: std::collections::BTreeMap<&'static str, f64>,
    /// `[outcomes.NAME]` tables (live traffic).
    pub outcomes: std::collections::BTreeMap<String, OutcomePolicy>,
    /// `[slices."tag=value"]` tables: `slice → key → threshold`.
    pub slices: std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, f64>>,
    /// `slice_gate = "point" | "significant"`.
    pub slice_gate: Option<SliceGate>,
}

/// Errors in a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The TOML did not parse or named an unknown key.
    #[error("policy {origin}: {message}")]
    Parse {
        /// Where the policy came from.
        origin: String,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of its range.
    #[error("policy {origin}: `{key}` = {value} is out of range: {expected}")]
    Range {
        /// Where the policy came from.
        origin: String,
        key: &'static str,
        /// The value given.
        value: f64,
        /// What was expected.
        expected: &'static str,
    },
}

/// Where a threshold came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum Source {
    /// qgate's built-in default.
    Default,
    /// A policy file (or the `[policy]` table of a run config) at this path.
    File(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "{p}"),
        }
    }
}

/// Whether a criterion asks for "at most" or "at least".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// observed ≤ threshold passes.
    AtMost,
    /// observed ≥ threshold passes.
    AtLeast,
}

/// One key's definition: name, default, range and meaning.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The TOML key.
    pub key: &'static str,
    /// Default threshold; `None` = not judged unless set.
    pub default: Option<f64>,
    /// Direction of the comparison.
    pub direction: Direction,
    /// Valid range.
    pub range: (f64, f64),
    /// Range in words, for errors.
    pub range_text: &'static str,
    /// What the key judges, for reports.
    pub description: &'static str,
    /// How its figure is read from what was measured.
    pub reading: Reading,
}

/// A key's figure as read: the value, its 95 % interval where one exists and the classes
/// over the threshold (per-class keys); or why it cannot be judged here.
pub type Observed = Result<(f64, Option<[f64; 2]>, Vec<(String, f64)>), Skip>;

/// Where a key's figure comes from.
#[derive(Debug, Clone, Copy)]
pub enum Reading {
    /// An accuracy comparison; the threshold is given for details (which classes exceed it).
    Accuracy(fn(&Observations, f64) -> Observed),
    /// A benchmark.
    Performance(fn(&PerfObservations) -> PerfReading),
    /// A figure of live traffic, judged by `qgate analyze` (qgate-online).
    Online,
    /// Not a threshold: a setting of the live-traffic statistics (`alpha`, `msprt_tau` …).
    Setting,
}

/// A benchmark figure as a key judges it.
pub enum PerfReading {
    /// A point with its 99 % decision interval: fails only when the whole interval is on
    /// the wrong side.
    Interval(f64, [f64; 2]),
    /// A point value (forgiving rounding).
    Point(f64),
    /// Not measurable here, and why.
    Skipped(Skip),
}

/// Why a criterion was not judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "why", rename_all = "snake_case")]
pub enum Skip {
    /// The models output labels, not class scores (KL needs scores).
    LabelsOnly,
    /// Resident memory cannot be read on this system.
    MemoryUnmeasurable,
    /// No energy figure: the meters' own explanation (which file or library failed).
    NoEnergy(String),
    /// A performance key in an accuracy-only run (`qgate compare`).
    PerformanceNotMeasured,
    /// A slice smaller than `min_slice_samples`.
    TooFewSamples { samples: u64, min: u64 },
    /// A performance key in a slice table: speed is not measured per slice.
    NotPerSlice,
    /// `max_slice_accuracy_drop_pp` on data without slices.
    NoSlices,
}

/// What a criterion found, typed; qgate-report puts it in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Judged against its threshold: the classes over it (per-class keys) and the 99 %
    /// interval it was judged on (speed and energy keys).
    Judged {
        classes_over: Vec<(String, f64)>,
        decision_ci: Option<[f64; 2]>,
    },
    /// Not judged.
    Skipped { skip: Skip },
    /// A slice's figure is over its threshold but its drop is not significant after
    /// Holm's correction (`slice_gate = "significant"`): it passes, and says so.
    NotSignificant {
        /// Holm-adjusted McNemar p-value of the slice.
        p_holm: f64,
        alpha: f64,
        /// The slice has no fewer correct answers than the baseline's.
        no_drop: bool,
    },
    /// `finite_outputs`: samples with a NaN or infinite score output per side, of `samples`.
    FiniteOutputs {
        baseline: u64,
        candidate: u64,
        samples: u64,
    },
    /// `finite_timed_outputs`: `[batches with a non-finite output, batches checked]` per side.
    FiniteTimedOutputs {
        baseline: [u64; 2],
        candidate: [u64; 2],
    },
    /// `same_outputs`: the output check of each side.
    SameOutputs {
        baseline: OutputCheckCounts,
        candidate: OutputCheckCounts,
    },
}

/// One side's comparison of timed outputs with an untimed rerun (and saved outputs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputCheckCounts {
    /// Timed batches compared.
    pub batches: u64,
    /// Batches that differed beyond `tolerance`.
    pub mismatched: u64,
    pub tolerance: Tolerance,
    /// `(samples compared, samples that differ, tolerance)` against saved outputs.
    pub reference: Option<(u64, u64, Tolerance)>,
    /// Where the first difference was found.
    pub first_mismatch: Option<String>,
}

impl OutputCheckCounts {
    /// Whether every comparison agreed.
    pub fn all_equal(&self) -> bool {
        self.mismatched == 0 && self.reference.is_none_or(|(_, bad, _)| bad == 0)
    }
}

/// Every accuracy key, in report order.
pub const ACCURACY_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "max_accuracy_drop_pp",
        default: Some(1.0),
        direction: Direction::AtMost,
        range: (0.0, 100.0),
        range_text: "percentage points between 0 and 100",
        description: "top-1 accuracy drop (pp)",
        reading: Reading::Accuracy(read_accuracy_drop),
    },
    KeySpec {
        key: "min_relative_accuracy",
        default: Some(0.99),
        direction: Direction::AtLeast,
        range: (0.0, 10.0),
        range_text: "a ratio ≥ 0 (0.99 = candidate keeps 99 % of baseline accuracy)",
        description: "candidate accuracy ÷ baseline accuracy",
        reading: Reading::Accuracy(read_relative_accuracy),
    },
    KeySpec {
        key: "max_class_recall_drop_pp",
        default: Some(5.0),
        direction: Direction::AtMost,
        range: (0.0, 100.0),
        range_text: "percentage points between 0 and 100",
        description: "worst per-class recall drop (pp)",
        reading: Reading::Accuracy(read_class_recall_drop),
    },
    KeySpec {
        key: "max_class_f1_drop_pp",
        default: Some(5.0),
        direction: Direction::AtMost,
        range: (0.0, 100.0),
        range_text: "percentage points between 0 and 100",
        description: "worst per-class F1 drop (pp)",
        reading: Reading::Accuracy(read_class_f1_drop),
    },
    KeySpec {
        key: "max_negative_flip_rate",
        default: Some(0.02),
        direction: Direction::AtMost,
        range: (0.0, 1.0),
        range_text: "a fraction between 0 and 1",
        description: "share of samples correct → wrong",
        reading: Reading::Accuracy(|o, _| Ok((o.negative_flip_rate, None, Vec::new()))),
    },
    KeySpec {
        key: "max_kl_mean",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, f64::INFINITY),
        range_text: "nats ≥ 0",
        description: "mean KL(baseline ‖ candidate) of class probabilities (nats)",
        reading: Reading::Accuracy(read_kl_mean),
    },
    KeySpec {
        key: "min_top1_agreement",
        default: Some(0.95),
        direction: Direction::AtLeast,
        range: (0.0, 1.0),
        range_text: "a fraction between 0 and 1",
        description: "share of samples with the same top-1 class",
        reading: Reading::Accuracy(|o, _| Ok((o.top1_agreement, None, Vec::new()))),
    },
    KeySpec {
        key: "max_ece_increase",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, 1.0),
        range_text: "a fraction between 0 and 1",
        description: "increase of the expected calibration error (equal-width bins)",
        reading: Reading::Accuracy(|o, _| {
            o.ece_increase
                .map(|v| (v, None, Vec::new()))
                .ok_or(Skip::LabelsOnly)
        }),
    },
    KeySpec {
        key: "max_brier_increase",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, 2.0),
        range_text: "a number between 0 and 2",
        description: "increase of the multi-class Brier score",
        reading: Reading::Accuracy(|o, _| {
            o.brier_increase
                .map(|v| (v, None, Vec::new()))
                .ok_or(Skip::LabelsOnly)
        }),
    },
    KeySpec {
        key: "max_slice_accuracy_drop_pp",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, 100.0),
        range_text: "percentage points between 0 and 100",
        description: "top-1 accuracy drop of every judged slice (pp), unless its own table sets `max_accuracy_drop_pp`",
        reading: Reading::Setting,
    },
    KeySpec {
        key: "min_slice_samples",
        default: Some(30.0),
        direction: Direction::AtLeast,
        range: (1.0, 1e12),
        range_text: "a count ≥ 1",
        description: "samples a slice needs to be judged (smaller slices are shown, not judged)",
        reading: Reading::Setting,
    },
    KeySpec {
        key: "slice_alpha",
        default: Some(0.05),
        direction: Direction::AtMost,
        range: (f64::MIN_POSITIVE, 0.5),
        range_text: "a level above 0 and at most 0.5",
        description: "level of the corrected McNemar tests of classes and slices",
        reading: Reading::Setting,
    },
];

/// Keys that judge the whole data set and may also appear in a `[slices."tag=value"]`
/// table.
pub fn slice_keys() -> impl Iterator<Item = &'static KeySpec> {
    ACCURACY_KEYS
        .iter()
        .filter(|s| matches!(s.reading, Reading::Accuracy(_)))
}

/// How a slice's criteria fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SliceGate {
    /// On the point figure, like the whole-set keys.
    #[default]
    Point,
    /// Only when the slice's drop is also significant after Holm's correction over every
    /// judged slice (McNemar, at `slice_alpha`).
    Significant,
}

/// The thresholds of one `[slices."tag=value"]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceThresholds {
    /// `tag=value`.
    pub slice: String,
    /// The policy file that holds the table.
    pub source: Source,
    pub thresholds: Vec<Threshold>,
}

/// Every performance key (judged by `qgate bench` and `qgate check`), in report order. None
/// has a default: speed and memory goals depend on the deployment, so they are judged only
/// when a policy sets them. Each fails only when its whole interval lies on the wrong side
/// (see `latency::fails_at_least`).
pub const PERFORMANCE_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "min_speedup",
        default: None,
        direction: Direction::AtLeast,
        range: (0.0, 1e6),
        range_text: "a ratio > 0 (1.5 = candidate at least 1.5× faster at the median)",
        description:
            "speed-up, geometric mean over rounds of baseline median ÷ candidate median latency",
        reading: Reading::Performance(|o| PerfReading::Interval(o.speedup, o.speedup_decision_ci)),
    },
    KeySpec {
        key: "max_p99_ms",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, f64::INFINITY),
        range_text: "milliseconds ≥ 0",
        description: "candidate p99 latency (ms)",
        reading: Reading::Performance(|o| PerfReading::Interval(o.p99_ms, o.p99_decision_ci)),
    },
    KeySpec {
        key: "max_peak_rss_mb",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, f64::INFINITY),
        range_text: "MiB ≥ 0",
        description: "candidate peak resident memory (MiB)",
        reading: Reading::Performance(read_peak_rss),
    },
    KeySpec {
        key: "max_joules_per_inference",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, f64::INFINITY),
        range_text: "joules ≥ 0",
        description: "candidate energy per inference (J)",
        reading: Reading::Performance(read_joules),
    },
];

/// Every key for live traffic (`qgate analyze` and the canary), in report order. Each
/// threshold is judged on its always-valid confidence sequence where one exists
/// (docs/analyze.md): it passes when the whole sequence is on the right side, fails when the
/// whole sequence is on the wrong side, and is inconclusive in between.
pub const ONLINE_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "min_shadow_agreement",
        default: Some(0.95),
        direction: Direction::AtLeast,
        range: (0.0, 1.0),
        range_text: "a fraction between 0 and 1",
        description: "share of mirrored rows with the same top-1 class (shadow)",
        reading: Reading::Online,
    },
    KeySpec {
        key: "max_shadow_kl_mean",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, 1e6),
        range_text: "nats ≥ 0",
        description: "mean KL(baseline ‖ candidate) of the class probabilities (shadow)",
        reading: Reading::Online,
    },
    KeySpec {
        key: "max_error_rate_increase",
        default: Some(0.01),
        direction: Direction::AtMost,
        range: (0.0, 1.0),
        range_text: "a fraction between 0 and 1 (0.01 = one point)",
        description: "candidate error rate − baseline error rate",
        reading: Reading::Online,
    },
    KeySpec {
        key: "max_p99_ms_increase",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, 1e9),
        range_text: "milliseconds ≥ 0",
        description: "candidate p99 latency − baseline p99 latency (ms, fixed-horizon)",
        reading: Reading::Online,
    },
    KeySpec {
        key: "max_outcome_drop",
        default: None,
        direction: Direction::AtMost,
        range: (0.0, 1e12),
        range_text: "a number ≥ 0 in the outcome's units",
        description: "drop of each outcome's mean, baseline − candidate (all outcomes without their own max_drop)",
        reading: Reading::Online,
    },
    KeySpec {
        key: "min_requests",
        default: Some(100.0),
        direction: Direction::AtLeast,
        range: (1.0, 1e12),
        range_text: "a count ≥ 1",
        description: "observations each side needs before a criterion may pass",
        reading: Reading::Setting,
    },
    KeySpec {
        key: "srm_alpha",
        default: Some(0.001),
        direction: Direction::AtMost,
        range: (1e-12, 0.5),
        range_text: "a probability in (0, 0.5]",
        description: "p-value below which the arm counts mismatch their weights (SRM)",
        reading: Reading::Setting,
    },
    KeySpec {
        key: "alpha",
        default: Some(0.05),
        direction: Direction::AtMost,
        range: (1e-12, 0.5),
        range_text: "a probability in (0, 0.5]",
        description: "error level of the tests, intervals and confidence sequences",
        reading: Reading::Setting,
    },
    KeySpec {
        key: "msprt_tau",
        default: Some(crate::online::DEFAULT_MSPRT_TAU),
        direction: Direction::AtMost,
        range: (1e-6, 100.0),
        range_text: "a number > 0, in units of the per-observation standard deviation",
        description: "mixing standard deviation of the mSPRT",
        reading: Reading::Setting,
    },
];

/// Every key, accuracy, performance then live traffic.
pub fn all_keys() -> impl Iterator<Item = &'static KeySpec> {
    ACCURACY_KEYS
        .iter()
        .chain(PERFORMANCE_KEYS)
        .chain(ONLINE_KEYS)
}

/// Whether an outcome is a 0/1 event or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// 0/1 values: a proportion per arm.
    Binary,
    /// Any number: a mean per arm.
    Continuous,
}

/// Which direction of an outcome is good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Larger is better (conversions, clicks, ratings): a drop is candidate below baseline.
    #[default]
    Higher,
    /// Smaller is better (complaints, returns): a drop is candidate above baseline.
    Lower,
}

/// `[outcomes.NAME]` of a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OutcomePolicy {
    /// Declared kind; else read from the values (all 0/1 → binary).
    pub kind: Option<OutcomeKind>,
    /// Largest drop that passes, in the outcome's units; else `max_outcome_drop`.
    pub max_drop: Option<f64>,
    pub better: Better,
}

/// A threshold in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub key: &'static str,
    pub value: f64,
    /// Where it came from.
    pub source: Source,
}

/// The thresholds in force for one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Every threshold that will be judged.
    pub thresholds: Vec<Threshold>,
    /// The `[slices."tag=value"]` tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slices: Vec<SliceThresholds>,
    /// How slice criteria fail.
    pub slice_gate: SliceGate,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::resolve(&PolicyFile::default(), &Source::Default)
    }
}

/// A TOML value's kind for a sentence: "a string", "an integer", "a table".
pub fn toml_kind(v: &toml::Value) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {t}")
}

/// `line L, ` of the line where `key` is set (a key or a `[key]` table), or nothing.
pub fn key_line(text: &str, key: &str) -> String {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix('[').unwrap_or(l);
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(['=', ']']))
        })
        .map(|i| format!("line {}, ", i + 1))
        .unwrap_or_default()
}

/// A TOML error for people: the first line names the line, the key (or `[table]`) and what
/// was expected (`line 1, key `batch-size`: invalid type: string "x", expected usize`); the
/// parser's excerpt of the file follows. toml's own first line says only where.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
    let what = if line.starts_with('[') {
        format!(
            "table {}",
            line.split(']').next().unwrap_or(line).to_string() + "]"
        )
    } else if let Some((key, _)) = line.split_once('=') {
        format!("key `{}`", key.trim())
    } else {
        String::new()
    };
    let head = if what.is_empty() {
        format!("line {line_no}: {message}")
    } else {
        format!("line {line_no}, {what}: {message}")
    };
    let full = e.to_string();
    // The excerpt: toml's message without its first line (position) and last (message).
    let excerpt: Vec<&str> = full.lines().skip(1).collect();
    let excerpt = excerpt
        .iter()
        .take(excerpt.len().saturating_sub(1))
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if excerpt.trim().is_empty() {
        head
    } else {
        format!("{head}\n{excerpt}")
    }
}

/// `[outcomes.NAME]` tables: `kind = "binary" | "continuous"`, `max_drop = N`,
/// `better = "higher" | "lower"`; anything else is an error naming the table and key.
fn parse_outcomes(
    text: &str,
    origin: &str,
    value: &toml::Value,
) -> Result<std::collections::BTreeMap<String, OutcomePolicy>, PolicyError> {
    let err = |message: String| PolicyError::Parse {
        origin: origin.to_string(),
        message,
    };
    let line = key_line(text, "outcomes");
    let toml::Value::Table(t) = value else {
        return Err(err(format!(
            "{line}key `outcomes`: expected tables `[outcomes.NAME]`, found {}",
            toml_kind(value)
        )));
    };
    let mut out = std::collections::BTreeMap::new();
    for (name, v) in t {
        let at = format!(
            "{}table `[outcomes.{name}]`",
            key_line(text, &format!("outcomes.{name}"))
        );
        let toml::Value::Table(o) = v else {
            return Err(err(format!(
                "{at}: expected a table, found {}",
                toml_kind(v)
            )));
        };
        let mut p = OutcomePolicy::default();
        for (k, x) in o {
            match (k.as_str(), x) {
                ("kind", toml::Value::String(s)) if s == "binary" => {
                    p.kind = Some(OutcomeKind::Binary)
                }
                ("kind", toml::Value::String(s)) if s == "continuous" => {
                    p.kind = Some(OutcomeKind::Continuous)
                }
                ("better", toml::Value::String(s)) if s == "higher" => p.better = Better::Higher,
                ("better", toml::Value::String(s)) if s == "lower" => p.better = Better::Lower,
                ("max_drop", toml::Value::Integer(i)) if *i >= 0 => p.max_drop = Some(*i as f64),
                ("max_drop", toml::Value::Float(f)) if *f >= 0.0 && f.is_finite() => {
                    p.max_drop = Some(*f)
                }
                ("kind", _) => {
                    return Err(err(format!(
                        "{at}, key `kind`: expected \"binary\" or \"continuous\", found {x}"
                    )))
                }
                ("better", _) => {
                    return Err(err(format!(
                        "{at}, key `better`: expected \"higher\" or \"lower\", found {x}"
                    )))
                }
                ("max_drop", _) => {
                    return Err(err(format!(
                        "{at}, key `max_drop`: expected a number ≥ 0, found {x}"
                    )))
                }
                _ => {
                    return Err(err(format!(
                        "{at}: unknown key `{k}`, expected `kind`, `max_drop` or `better`"
                    )))
                }
            }
        }
        out.insert(name.clone(), p);
    }
    Ok(out)
}

/// `[slices."tag=value"]` tables: any key of [`slice_keys`], each in its range; anything
/// else is an error naming the table and key.
fn parse_slices(
    text: &str,
    origin: &str,
    value: &toml::Value,
) -> Result<
    std::collections::BTreeMap<String, std::collections::BTreeMap<&'static str, f64>>,
    PolicyError,
> {
    let err = |message: String| PolicyError::Parse {
        origin: origin.to_string(),
        message,
    };
    let toml::Value::Table(t) = value else {
        return Err(err(format!(
            "{}key `slices`: expected tables `[slices.\"tag=value\"]`, found {}",
            key_line(text, "slices"),
            toml_kind(value)
        )));
    };
    let mut out = std::collections::BTreeMap::new();
    for (name, v) in t {
        let at = format!("table `[slices.\"{name}\"]`");
        let Some((tag, val)) = name
            .split_once('=')
            .filter(|(t, v)| !t.is_empty() && !v.is_empty())
        else {
            return Err(err(format!(
                "{at}: a slice is named `tag=value` (e.g. [slices.\"lighting=dark\"])"
            )));
        };
        let name = format!("{}={}", tag.trim(), val.trim());
        if out.contains_key(&name) {
            return Err(err(format!(
                "{at}: names the slice `{name}` again (names are compared without spaces around `=`)"
            )));
        }
        let toml::Value::Table(o) = v else {
            return Err(err(format!(
                "{at}: expected a table, found {}",
                toml_kind(v)
            )));
        };
        let mut keys = std::collections::BTreeMap::new();
        for (k, x) in o {
            let Some(spec) = slice_keys().chain(PERFORMANCE_KEYS).find(|s| s.key == k) else {
                let known: Vec<String> = slice_keys()
                    .chain(PERFORMANCE_KEYS)
                    .map(|s| format!("`{}`", s.key))
                    .collect();
                return Err(err(format!(
                    "{at}: key `{k}` is not judged per slice; expected one of {}",
                    known.join(", ")
                )));
            };
            let f = match x {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                other => {
                    return Err(err(format!(
                        "{at}, key `{k}`: expected a number, found {}",
                        toml_kind(other)
                    )))
                }
            };
            if !(f >= spec.range.0 && f <= spec.range.1) {
                return Err(err(format!(
                    "{at}, key `{k}` = {f} is out of range: {}",
                    spec.range_text
                )));
            }
            keys.insert(spec.key, f);
        }
        out.insert(name, keys);
    }
    Ok(out)
}

impl PolicyFile {
    /// Parses a policy from TOML text; `origin` (a path) is named in errors.
    pub fn parse(text: &str, origin: &str) -> Result<PolicyFile, PolicyError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Parse {
            origin: origin.to_string(),
            message: toml_error(text, &e),
        })?;
        let mut values = std::collections::BTreeMap::new();
        let mut outcomes = std::collections::BTreeMap::new();
        let mut slices = std::collections::BTreeMap::new();
        let mut slice_gate = None;
        for (key, value) in &table {
            if key == "outcomes" {
                outcomes = parse_outcomes(text, origin, value)?;
                continue;
            }
            if key == "slices" {
                slices = parse_slices(text, origin, value)?;
                continue;
            }
            if key == "slice_gate" {
                slice_gate = Some(match value.as_str() {
                    Some("point") => SliceGate::Point,
                    Some("significant") => SliceGate::Significant,
                    _ => {
                        return Err(PolicyError::Parse {
                            origin: origin.to_string(),
                            message: format!(
                                "{}key `slice_gate`: expected \"point\" or \"significant\", found {value}",
                                key_line(text, key)
                            ),
                        })
                    }
                });
                continue;
            }
            let Some(spec) = all_keys().find(|s| s.key == key) else {
                let known: Vec<String> = all_keys()
                    .map(|s| format!("`{}`", s.key))
                    .chain([
                        "`slice_gate`".to_string(),
                        "`[slices.\"tag=value\"]`".to_string(),
                        "`[outcomes.NAME]`".to_string(),
                    ])
                    .collect();
                return Err(PolicyError::Parse {
                    origin: origin.to_string(),
                    message: format!(
                        "{}key `{key}`: unknown key, expected one of {}",
                        key_line(text, key),
                        known.join(", ")
                    ),
                });
            };
            let v = match value {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                other => {
                    return Err(PolicyError::Parse {
                        origin: origin.to_string(),
                        message: format!(
                            "{}key `{key}`: expected a number, found {}",
                            key_line(text, key),
                            toml_kind(other)
                        ),
                    })
                }
            };
            values.insert(spec.key, v);
        }
        let file = PolicyFile {
            values,
            outcomes,
            slices,
            slice_gate,
        };
        file.validate(origin)?;
        Ok(file)
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// Checks every value against its key's range.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        for spec in all_keys() {
            if let Some(v) = self.get(spec.key) {
                if !(v >= spec.range.0 && v <= spec.range.1) {
                    return Err(PolicyError::Range {
                        origin: origin.to_string(),
                        key: spec.key,
                        value: v,
                        expected: spec.range_text,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Policy {
    /// The value in force for `key`, `None` when the key is not judged.
    pub fn value(&self, key: &str) -> Option<f64> {
        self.thresholds
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value)
    }

    /// Whether any performance key is in force.
    pub fn has_performance_keys(&self) -> bool {
        self.thresholds
            .iter()
            .any(|t| PERFORMANCE_KEYS.iter().any(|s| s.key == t.key))
    }

    /// The thresholds in force for an offline run (accuracy and performance keys): each
    /// key from `file` where set, else its default. Live-traffic keys are left to
    /// [`Policy::resolve_online`].
    pub fn resolve(file: &PolicyFile, source: &Source) -> Policy {
        let mut p =
            Policy::resolve_keys(ACCURACY_KEYS.iter().chain(PERFORMANCE_KEYS), file, source);
        p.slice_gate = file.slice_gate.unwrap_or_default();
        p.slices = file
            .slices
            .iter()
            .map(|(slice, keys)| SliceThresholds {
                slice: slice.clone(),
                source: source.clone(),
                thresholds: slice_keys()
                    .chain(PERFORMANCE_KEYS)
                    .filter_map(|spec| {
                        keys.get(spec.key).map(|&value| Threshold {
                            key: spec.key,
                            value,
                            source: source.clone(),
                        })
                    })
                    .collect(),
            })
            .collect();
        p
    }

    /// The live-traffic keys in force ([`ONLINE_KEYS`]), thresholds and settings.
    pub fn resolve_online(file: &PolicyFile, source: &Source) -> Policy {
        Policy::resolve_keys(ONLINE_KEYS.iter(), file, source)
    }

    fn resolve_keys<'a>(
        keys: impl Iterator<Item = &'a KeySpec>,
        file: &PolicyFile,
        source: &Source,
    ) -> Policy {
        let thresholds = keys
            .filter_map(|spec| match (file.get(spec.key), spec.default) {
                (Some(v), _) => Some(Threshold {
                    key: spec.key,
                    value: v,
                    source: source.clone(),
                }),
                (None, Some(d)) => Some(Threshold {
                    key: spec.key,
                    value: d,
                    source: Source::Default,
                }),
                (None, None) => None,
            })
            .collect();
        Policy {
            thresholds,
            slices: Vec::new(),
            slice_gate: SliceGate::Point,
        }
    }
}

/// What the gate looks at, measured beforehand.
#[derive(Debug, Clone, PartialEq)]
pub struct Observations {
    pub baseline_accuracy: f64,
    pub candidate_accuracy: f64,
    /// Interval of candidate − baseline accuracy.
    pub accuracy_delta_ci: [f64; 2],
    /// `(class name, recall delta, f1 delta)` per class.
    pub class_deltas: Vec<(String, f64, f64)>,
    /// Negative flips ÷ samples.
    pub negative_flip_rate: f64,
    /// Mean KL, when class probabilities exist.
    pub kl_mean: Option<f64>,
    pub top1_agreement: f64,
    /// Samples with non-finite outputs, baseline.
    pub baseline_non_finite: u64,
    /// Samples with non-finite outputs, candidate.
    pub candidate_non_finite: u64,
    pub n_samples: u64,
    /// Candidate − baseline ECE (equal-width bins), when both give probabilities.
    pub ece_increase: Option<f64>,
    /// Candidate − baseline Brier score, when both give probabilities.
    pub brier_increase: Option<f64>,
}

/// Outcome of one criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Could not be judged (e.g. KL of a model that outputs labels); does not fail the gate.
    Skipped,
}

/// One judged criterion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionResult {
    /// The policy key (or `finite_outputs`, which is always judged).
    pub key: String,
    /// What it judges.
    pub description: String,
    /// `at_most` / `at_least`.
    pub direction: Direction,
    pub threshold: f64,
    /// Where the threshold came from.
    pub source: Source,
    /// The observed value, when measurable.
    pub observed: Option<f64>,
    /// The observed value's 95 % interval, where one exists.
    pub interval: Option<[f64; 2]>,
    pub status: Status,
    /// What it found; qgate-report words it.
    pub reason: Reason,
    /// The slice (`tag=value`) it judges; `None` for the whole data set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
}

/// Pass or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every criterion met.
    Pass,
    /// At least one criterion failed.
    Fail,
}

/// The judged gate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    pub verdict: Verdict,
    pub criteria: Vec<CriterionResult>,
}

impl Gate {
    /// Judges `obs` against `policy`. Comparisons forgive [`Tolerance::Rounding`] only.
    pub fn evaluate(policy: &Policy, obs: &Observations) -> Gate {
        let mut criteria = vec![finite_outputs(obs)];
        for t in &policy.thresholds {
            let Some(spec) = ACCURACY_KEYS.iter().find(|s| s.key == t.key) else {
                continue;
            };
            let Reading::Accuracy(read) = spec.reading else {
                continue;
            };
            criteria.push(match read(obs, t.value) {
                Ok((v, ci, classes_over)) => judge(spec, t, v, ci, classes_over),
                Err(skip) => skipped(spec, t, skip),
            });
        }
        Gate::from_criteria(criteria)
    }

    /// A gate over already judged criteria: fails when any fails.
    pub fn from_criteria(criteria: Vec<CriterionResult>) -> Gate {
        let verdict = if criteria.iter().any(|c| c.status == Status::Fail) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        Gate { verdict, criteria }
    }

    /// Criteria for performance keys set in `policy` that this command does not measure:
    /// listed as skipped so a reader sees they were not judged, and why.
    pub fn unmeasured_performance(policy: &Policy) -> Vec<CriterionResult> {
        policy
            .thresholds
            .iter()
            .filter_map(|t| {
                let spec = PERFORMANCE_KEYS.iter().find(|s| s.key == t.key)?;
                Some(skipped(spec, t, Skip::PerformanceNotMeasured))
            })
            .collect()
    }
}

/// Judges one observation against its threshold: it fails when on the wrong side
/// (forgiving [`Tolerance::Rounding`]); NaN fails.
pub fn judge(
    spec: &KeySpec,
    t: &Threshold,
    observed: f64,
    interval: Option<[f64; 2]>,
    classes_over: Vec<(String, f64)>,
) -> CriterionResult {
    let passes = match spec.direction {
        Direction::AtMost => Tolerance::Rounding.at_most(observed, t.value),
        Direction::AtLeast => Tolerance::Rounding.at_least(observed, t.value),
    };
    let reason = Reason::Judged {
        classes_over,
        decision_ci: None,
    };
    criterion(
        spec,
        t,
        Some(observed),
        interval,
        pass_or_fail(observed, passes),
        reason,
    )
}

/// Judges a point by its 99 % decision interval `ci`: it fails only when the whole interval
/// lies on the wrong side of the threshold (performance keys), so noise alone cannot fail.
pub fn judge_interval(
    spec: &KeySpec,
    t: &Threshold,
    observed: f64,
    ci: [f64; 2],
) -> CriterionResult {
    use crate::latency::{fails_at_least, fails_at_most};
    let fails = match spec.direction {
        Direction::AtLeast => fails_at_least(observed, ci, t.value),
        Direction::AtMost => fails_at_most(observed, ci, t.value),
    };
    let reason = Reason::Judged {
        classes_over: Vec::new(),
        decision_ci: Some(ci),
    };
    criterion(
        spec,
        t,
        Some(observed),
        Some(ci),
        pass_or_fail(observed, !fails),
        reason,
    )
}

/// A criterion that could not be judged, and why (it does not fail the gate).
pub fn skipped(spec: &KeySpec, t: &Threshold, skip: Skip) -> CriterionResult {
    criterion(
        spec,
        t,
        None,
        None,
        Status::Skipped,
        Reason::Skipped { skip },
    )
}

fn pass_or_fail(observed: f64, passes: bool) -> Status {
    if !observed.is_nan() && passes {
        Status::Pass
    } else {
        Status::Fail
    }
}

fn criterion(
    spec: &KeySpec,
    t: &Threshold,
    observed: Option<f64>,
    interval: Option<[f64; 2]>,
    status: Status,
    reason: Reason,
) -> CriterionResult {
    CriterionResult {
        key: spec.key.to_string(),
        description: spec.description.to_string(),
        direction: spec.direction,
        threshold: t.value,
        source: t.source.clone(),
        observed,
        interval,
        status,
        reason,
        slice: None,
    }
}

/// What the performance criteria look at, measured by `qgate bench`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfObservations {
    /// Geometric mean over rounds of baseline median ÷ candidate median latency.
    pub speedup: f64,
    /// Its interval at [`crate::latency::DECISION_CONFIDENCE`] (the rule judges this one).
    pub speedup_decision_ci: [f64; 2],
    /// Candidate p99 latency, ms.
    pub p99_ms: f64,
    /// Its interval at the decision confidence.
    pub p99_decision_ci: [f64; 2],
    /// Candidate peak resident memory, bytes, when measurable.
    pub peak_rss_bytes: Option<u64>,
    /// Candidate joules per inference and its decision interval, or why there is none.
    pub joules_per_inference: Result<(f64, [f64; 2]), String>,
    /// Outputs of timed runs against an untimed pass, baseline then candidate.
    pub same_outputs: Option<[OutputCheckCounts; 2]>,
    /// `[batches with a NaN or infinite output, batches checked]` of the timed runs,
    /// baseline then candidate, when the check ran.
    pub non_finite_batches: Option<[[u64; 2]; 2]>,
}

impl Gate {
    /// Judges the performance keys set in `policy`, plus `same_outputs` (always judged
    /// when the check ran). Interval rule: a criterion fails only when its whole
    /// decision interval lies on the wrong side of the threshold, so noise alone cannot
    /// fail an A/A run.
    pub fn evaluate_performance(policy: &Policy, obs: &PerfObservations) -> Vec<CriterionResult> {
        let mut criteria = Vec::new();
        if let Some([baseline, candidate]) = &obs.same_outputs {
            let same = baseline.all_equal() && candidate.all_equal();
            criteria.push(CriterionResult {
                key: "same_outputs".into(),
                description: "outputs of the timed runs equal an untimed pass (always judged)"
                    .into(),
                direction: Direction::AtMost,
                threshold: 0.0,
                source: Source::Default,
                observed: Some(if same { 0.0 } else { 1.0 }),
                interval: None,
                status: if same { Status::Pass } else { Status::Fail },
                reason: Reason::SameOutputs {
                    baseline: baseline.clone(),
                    candidate: candidate.clone(),
                },
                slice: None,
            });
        }
        if let Some(counts) = obs.non_finite_batches {
            criteria.push(finite_timed_outputs(counts));
        }
        for t in &policy.thresholds {
            let Some(spec) = PERFORMANCE_KEYS.iter().find(|s| s.key == t.key) else {
                continue;
            };
            let Reading::Performance(read) = spec.reading else {
                continue;
            };
            criteria.push(match read(obs) {
                // Speed and energy: judged on their 99 % interval.
                PerfReading::Interval(v, ci) => judge_interval(spec, t, v, ci),
                PerfReading::Point(v) => judge(spec, t, v, None, Vec::new()),
                PerfReading::Skipped(skip) => skipped(spec, t, skip),
            });
        }
        criteria
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `finite_timed_outputs`: a model that answers NaN runs as fast as one that answers, so a
/// benchmark alone must not pass it.
fn finite_timed_outputs([b, c]: [[u64; 2]; 2]) -> CriterionResult {
    let bad = b[0] + c[0];
    CriterionResult {
        key: "finite_timed_outputs".to_string(),
        description: "timed batches with NaN or infinite outputs (always judged)".to_string(),
        direction: Direction::AtMost,
        threshold: 0.0,
        source: Source::Default,
        observed: Some(bad as f64),
        interval: None,
        status: if bad == 0 { Status::Pass } else { Status::Fail },
        reason: Reason::FiniteTimedOutputs {
            baseline: b,
            candidate: c,
        },
        slice: None,
    }
}

fn finite_outputs(obs: &Observations) -> CriterionResult {
    let bad = obs.baseline_non_finite + obs.candidate_non_finite;
    CriterionResult {
        key: "finite_outputs".to_string(),
        description: "samples with NaN or infinite outputs (always judged)".to_string(),
        direction: Direction::AtMost,
        threshold: 0.0,
        source: Source::Default,
        observed: Some(bad as f64),
        interval: None,
        status: if bad == 0 { Status::Pass } else { Status::Fail },
        reason: Reason::FiniteOutputs {
            baseline: obs.baseline_non_finite,
            candidate: obs.candidate_non_finite,
            samples: obs.n_samples,
        },
        slice: None,
    }
}

fn read_accuracy_drop(obs: &Observations, _: f64) -> Observed {
    let drop_pp = (obs.baseline_accuracy - obs.candidate_accuracy) * 100.0;
    let ci = [
        -obs.accuracy_delta_ci[1] * 100.0,
        -obs.accuracy_delta_ci[0] * 100.0,
    ];
    Ok((drop_pp, Some(ci), Vec::new()))
}

fn read_relative_accuracy(obs: &Observations, _: f64) -> Observed {
    // A baseline with no correct answer (a hard slice) cannot be done worse than: 1.
    let r = if obs.baseline_accuracy > 0.0 {
        obs.candidate_accuracy / obs.baseline_accuracy
    } else {
        1.0
    };
    Ok((r, None, Vec::new()))
}

fn read_class_recall_drop(obs: &Observations, threshold: f64) -> Observed {
    worst_class_drop(obs, threshold, |(_, recall, _)| *recall)
}

fn read_class_f1_drop(obs: &Observations, threshold: f64) -> Observed {
    worst_class_drop(obs, threshold, |(_, _, f1)| *f1)
}

/// The worst per-class drop (pp) of the delta `delta` picks, naming the classes whose drop
/// exceeds `threshold`.
fn worst_class_drop(
    obs: &Observations,
    threshold: f64,
    delta: fn(&(String, f64, f64)) -> f64,
) -> Observed {
    let drops: Vec<(&str, f64)> = obs
        .class_deltas
        .iter()
        .map(|d| (d.0.as_str(), -delta(d) * 100.0))
        .collect();
    let worst = drops.iter().map(|d| d.1).fold(f64::NEG_INFINITY, f64::max);
    let over: Vec<(String, f64)> = drops
        .iter()
        .filter(|d| !Tolerance::Rounding.at_most(d.1, threshold))
        .map(|d| (d.0.to_string(), d.1))
        .collect();
    // `+ 0.0` turns a −0 (no class dropped) into 0.
    Ok((worst.max(0.0) + 0.0, None, over))
}

fn read_kl_mean(obs: &Observations, _: f64) -> Observed {
    obs.kl_mean
        .map(|k| (k, None, Vec::new()))
        .ok_or(Skip::LabelsOnly)
}

fn read_peak_rss(obs: &PerfObservations) -> PerfReading {
    match obs.peak_rss_bytes {
        Some(b) => PerfReading::Point(b as f64 / MIB),
        None => PerfReading::Skipped(Skip::MemoryUnmeasurable),
    }
}

fn read_joules(obs: &PerfObservations) -> PerfReading {
    match &obs.joules_per_inference {
        Ok((v, ci)) => PerfReading::Interval(*v, *ci),
        Err(why) => PerfReading::Skipped(Skip::NoEnergy(why.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/config.md's policy table lists every key of the table with its default: the
    /// documentation follows the one declaration.
    #[test]
    fn the_documented_policy_keys_are_the_declared_ones() {
        let doc = include_str!("../../../docs/config.md");
        let rows: Vec<(&str, &str)> = doc
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split(" | ");
                let key = cells.next()?.strip_suffix('`')?;
                Some((key, cells.next()?))
            })
            .filter(|(k, _)| {
                k.starts_with("max_") || k.starts_with("min_") || k.starts_with("slice_")
            })
            .collect();
        let offline = || ACCURACY_KEYS.iter().chain(PERFORMANCE_KEYS);
        let declared: Vec<&str> = offline().map(|k| k.key).collect();
        let documented: Vec<&str> = rows.iter().map(|r| r.0).collect();
        assert_eq!(documented, declared);
        for (spec, (_, default)) in offline().zip(&rows) {
            let want = spec
                .default
                .map_or("not judged".to_string(), |d| format!("{d:?}"));
            assert_eq!(*default, want, "{}", spec.key);
        }
    }

    /// docs/analyze.md's table of live-traffic keys lists [`ONLINE_KEYS`] in order, with
    /// their defaults.
    #[test]
    fn the_documented_live_traffic_keys_are_the_declared_ones() {
        let doc = include_str!("../../../docs/analyze.md");
        let section = doc
            .split("## Policy keys for live traffic")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/analyze.md has the section");
        let rows: Vec<(&str, &str)> = section
            .lines()
            .filter_map(|l| {
                let mut cells = l.strip_prefix("| `")?.split(" | ");
                let key = cells.next()?.strip_suffix('`')?;
                let plain = key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit());
                plain.then_some((key, cells.next()?))
            })
            .collect();
        let declared: Vec<&str> = ONLINE_KEYS.iter().map(|k| k.key).collect();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), declared);
        for (spec, (_, default)) in ONLINE_KEYS.iter().zip(&rows) {
            let want = spec
                .default
                .map_or("not judged".to_string(), |d| format!("{d}"));
            assert_eq!(*default, want, "{}", spec.key);
        }
    }

    #[test]
    fn outcome_tables_are_read_and_their_errors_name_the_table() {
        let f = PolicyFile::parse(
            "max_error_rate_increase = 0.02\n[outcomes.purchase]\nkind = \"binary\"\nmax_drop = 0.01\n[outcomes.complaints]\nbetter = \"lower\"\n",
            "p.toml",
        )
        .unwrap();
        let p = &f.outcomes["purchase"];
        assert_eq!(
            (p.kind, p.max_drop, p.better),
            (Some(OutcomeKind::Binary), Some(0.01), Better::Higher)
        );
        assert_eq!(f.outcomes["complaints"].better, Better::Lower);
        let online = Policy::resolve_online(&f, &Source::File("p.toml".into()));
        assert_eq!(online.value("max_error_rate_increase"), Some(0.02));
        assert_eq!(
            online.value("msprt_tau"),
            Some(crate::online::DEFAULT_MSPRT_TAU)
        );
        // Offline runs judge none of the live keys.
        let offline = Policy::resolve(&f, &Source::File("p.toml".into()));
        assert!(offline.value("max_error_rate_increase").is_none());
        let e = PolicyFile::parse("[outcomes.buy]\nmax_dorp = 1\n", "p.toml").unwrap_err();
        assert!(
            e.to_string().contains("line 1, table `[outcomes.buy]`")
                && e.to_string().contains("max_dorp"),
            "{e}"
        );
    }

    fn obs() -> Observations {
        Observations {
            baseline_accuracy: 0.95,
            candidate_accuracy: 0.94,
            accuracy_delta_ci: [-0.02, 0.0],
            class_deltas: vec![("3".into(), -0.08, -0.03), ("4".into(), 0.0, 0.0)],
            negative_flip_rate: 0.015,
            kl_mean: Some(0.01),
            top1_agreement: 0.98,
            baseline_non_finite: 0,
            candidate_non_finite: 0,
            n_samples: 100,
            ece_increase: Some(0.01),
            brier_increase: Some(0.002),
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = PolicyFile::parse("max_acc_drop = 1\n", "gate.toml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("gate.toml") && msg.contains("max_acc_drop"),
            "{msg}"
        );
    }

    #[test]
    fn out_of_range_value_is_named() {
        let err = PolicyFile::parse("max_negative_flip_rate = 2\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("max_negative_flip_rate"), "{err}");
    }

    #[test]
    fn boundary_drop_passes_and_class_drop_fails() {
        let policy = Policy::default();
        let gate = Gate::evaluate(&policy, &obs());
        let get = |k: &str| gate.criteria.iter().find(|c| c.key == k).unwrap().clone();
        // 1.0 pp drop against a 1.0 pp limit passes despite rounding in 0.95 − 0.94.
        assert_eq!(get("max_accuracy_drop_pp").status, Status::Pass);
        let recall = get("max_class_recall_drop_pp");
        assert_eq!(recall.status, Status::Fail);
        let Reason::Judged { classes_over, .. } = &recall.reason else {
            panic!("{:?}", recall.reason)
        };
        assert_eq!(
            classes_over
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>(),
            ["3"]
        );
        assert_eq!(gate.verdict, Verdict::Fail);
    }

    #[test]
    fn non_finite_outputs_always_fail() {
        let mut o = obs();
        o.class_deltas.clear();
        o.candidate_non_finite = 3;
        let gate = Gate::evaluate(&Policy::default(), &o);
        assert_eq!(gate.criteria[0].status, Status::Fail);
        assert_eq!(gate.verdict, Verdict::Fail);
    }

    fn perf() -> PerfObservations {
        PerfObservations {
            speedup: 0.97,
            speedup_decision_ci: [0.9, 1.04],
            p99_ms: 12.0,
            p99_decision_ci: [10.5, 13.0],
            peak_rss_bytes: Some(300 * 1024 * 1024),
            joules_per_inference: Err("no energy counter on this machine".into()),
            same_outputs: Some([checked(0), checked(0)]),
            non_finite_batches: Some([[0, 540], [0, 540]]),
        }
    }

    /// An output check of 540 batches, `bad` of which differ.
    fn checked(bad: u64) -> OutputCheckCounts {
        OutputCheckCounts {
            batches: 540,
            mismatched: bad,
            tolerance: Tolerance::Exact,
            reference: None,
            first_mismatch: None,
        }
    }

    fn perf_policy(text: &str) -> Policy {
        Policy::resolve(
            &PolicyFile::parse(text, "p.toml").unwrap(),
            &Source::Default,
        )
    }

    #[test]
    fn speed_criteria_fail_only_when_the_whole_interval_is_wrong() {
        let policy = perf_policy(
            "min_speedup = 1.0\nmax_p99_ms = 11\nmax_peak_rss_mb = 200\nmax_joules_per_inference = 1\n",
        );
        let c = Gate::evaluate_performance(&policy, &perf());
        let get = |k: &str| c.iter().find(|x| x.key == k).unwrap().clone();
        // 0.97 < 1.0 but the interval reaches 1.04: not proven slower.
        assert_eq!(get("min_speedup").status, Status::Pass);
        // p99 12 > 11 but the interval starts at 10.5.
        assert_eq!(get("max_p99_ms").status, Status::Pass);
        // Memory is a point value: 300 MiB > 200 MiB fails.
        assert_eq!(get("max_peak_rss_mb").status, Status::Fail);
        let j = get("max_joules_per_inference");
        assert_eq!(j.status, Status::Skipped);
        assert_eq!(
            j.reason,
            Reason::Skipped {
                skip: Skip::NoEnergy("no energy counter on this machine".into())
            }
        );
        assert_eq!(get("same_outputs").status, Status::Pass);
        assert_eq!(get("finite_timed_outputs").status, Status::Pass);
        let mut nan = perf();
        nan.non_finite_batches = Some([[0, 540], [2, 540]]);
        let c = Gate::evaluate_performance(&policy, &nan);
        let f = c.iter().find(|x| x.key == "finite_timed_outputs").unwrap();
        assert_eq!(f.status, Status::Fail);
        assert_eq!(
            f.reason,
            Reason::FiniteTimedOutputs {
                baseline: [0, 540],
                candidate: [2, 540]
            }
        );
        let mut slow = perf();
        slow.speedup_decision_ci = [0.45, 0.55];
        slow.same_outputs = Some([checked(0), checked(3)]);
        let c = Gate::evaluate_performance(&policy, &slow);
        assert_eq!(
            c.iter().find(|x| x.key == "min_speedup").unwrap().status,
            Status::Fail
        );
        assert_eq!(c[0].status, Status::Fail);
    }

    #[test]
    fn accuracy_gate_ignores_performance_keys() {
        let policy = perf_policy("min_speedup = 2\n");
        assert!(policy.has_performance_keys());
        let gate = Gate::evaluate(&policy, &obs());
        assert!(gate.criteria.iter().all(|c| c.key != "min_speedup"));
        let skipped = Gate::unmeasured_performance(&policy);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].status, Status::Skipped);
    }

    #[test]
    fn file_values_override_defaults_and_say_so() {
        let file = PolicyFile::parse("max_kl_mean = 0.5\n", "p.toml").unwrap();
        let policy = Policy::resolve(&file, &Source::File("p.toml".into()));
        let kl = policy
            .thresholds
            .iter()
            .find(|t| t.key == "max_kl_mean")
            .unwrap();
        assert_eq!(kl.source, Source::File("p.toml".into()));
        let acc = policy
            .thresholds
            .iter()
            .find(|t| t.key == "max_accuracy_drop_pp")
            .unwrap();
        assert_eq!(acc.source, Source::Default);
    }
}

//! Several candidates against one baseline: each candidate's own report, ranked, and one
//! verdict for the run (`--require all|any`).

use schemars::JsonSchema;
use serde::Serialize;

use super::{
    CriterionResult, Direction, GateReport, Report, Source, Status, Tool, Verdict, SCHEMA_VERSION,
};

/// Whether every candidate must pass, or one is enough.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    /// The run passes when every candidate passes its gate.
    #[default]
    All,
    /// The run passes when at least one candidate passes its gate.
    Any,
}

impl Require {
    /// `all` or `any`.
    pub fn as_str(self) -> &'static str {
        match self {
            Require::All => "all",
            Require::Any => "any",
        }
    }
}

impl std::str::FromStr for Require {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Require::All),
            "any" => Ok(Require::Any),
            other => Err(format!("'{other}': expected `all` or `any`")),
        }
    }
}

/// One candidate of a run with several: its rank and its own report (the fields of a
/// single-candidate report).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CandidateReport {
    /// 1 is the best: candidates that pass their gate first, then fewer failed criteria, then
    /// the larger speed-up (when `check` measured it), then the larger accuracy change.
    pub rank: usize,
    /// Position on the command line, from 1.
    pub position: usize,
    /// The candidate's model spec as given.
    pub spec: String,
    #[serde(flatten)]
    pub report: Report,
}

fn failed(r: &Report) -> usize {
    r.gate
        .criteria
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count()
}

fn speedup(r: &Report) -> Option<f64> {
    r.performance.as_ref().map(|p| p.comparison.speedup)
}

fn accuracy_delta(r: &Report) -> f64 {
    r.comparison
        .as_ref()
        .map_or(f64::NEG_INFINITY, |c| c.accuracy_delta)
}

/// Indices of `reports`, best first.
fn ranking(reports: &[Report]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..reports.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&reports[a], &reports[b]);
        (ra.verdict != Verdict::Pass)
            .cmp(&(rb.verdict != Verdict::Pass))
            .then(failed(ra).cmp(&failed(rb)))
            .then(
                speedup(rb)
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&speedup(ra).unwrap_or(f64::NEG_INFINITY)),
            )
            .then(accuracy_delta(rb).total_cmp(&accuracy_delta(ra)))
            .then(a.cmp(&b))
    });
    order
}

/// One candidate in a sentence: `#1 cnn_fp16.onnx PASS (−0.00 pp, speed-up 1.92×)`.
fn line(c: &CandidateReport) -> String {
    let r = &c.report;
    let mut facts = vec![format!("{:+.2} pp", accuracy_delta(r) * 100.0)];
    if let Some(s) = speedup(r) {
        facts.push(format!("speed-up {s:.2}×"));
    }
    if failed(r) > 0 {
        facts.push(format!(
            "failed: {}",
            super::failed_labels(&r.gate.criteria).join(", ")
        ));
    }
    format!(
        "#{} `{}` {} ({})",
        c.rank,
        c.spec,
        r.verdict.as_str().to_uppercase(),
        facts.join("; ")
    )
}

impl Report {
    /// The report of a run: with one candidate its own report; with several, the shared
    /// data and baseline, each candidate's report ranked in `candidates`, and one gate
    /// criterion, `require_all` or `require_any`, that decides the verdict. `specs` are the
    /// candidates' specs in the order of `reports` (command-line order).
    pub fn of_candidates(mut reports: Vec<Report>, specs: &[String], require: Require) -> Report {
        if reports.len() == 1 {
            return reports.remove(0);
        }
        let order = ranking(&reports);
        let n = reports.len();
        let passing = reports
            .iter()
            .filter(|r| r.verdict == Verdict::Pass)
            .count();
        let needed = match require {
            Require::All => n,
            Require::Any => 1,
        };
        let verdict = if passing >= needed {
            Verdict::Pass
        } else {
            Verdict::Fail
        };
        let mut slots: Vec<Option<Report>> = reports.into_iter().map(Some).collect();
        let candidates: Vec<CandidateReport> = order
            .iter()
            .enumerate()
            .filter_map(|(rank, &i)| {
                Some(CandidateReport {
                    rank: rank + 1,
                    position: i + 1,
                    spec: specs.get(i).cloned().unwrap_or_default(),
                    report: slots[i].take()?,
                })
            })
            .collect();
        let lines: Vec<String> = candidates.iter().map(line).collect();
        let message = format!(
            "{passing} of {n} candidates pass their gate; `--require {}` needs {}: {}",
            require.as_str(),
            if require == Require::All {
                "all of them".to_string()
            } else {
                "one".to_string()
            },
            lines.join("; ")
        );
        let criterion = CriterionResult {
            key: format!("require_{}", require.as_str()),
            description: format!("candidates that pass their own gate (of {n})"),
            direction: Direction::AtLeast,
            threshold: needed as f64,
            source: Source::Default,
            observed: Some(passing as f64),
            interval: None,
            status: if verdict == Verdict::Pass {
                Status::Pass
            } else {
                Status::Fail
            },
            message: message.clone(),
            slice: None,
        };
        let best = &candidates[0].report;
        let mut warnings = Vec::new();
        for c in &candidates {
            for w in &c.report.warnings {
                if !warnings
                    .iter()
                    .any(|x: &super::Warning| x.message == w.message)
                {
                    warnings.push(w.clone());
                }
            }
        }
        Report {
            schema_version: SCHEMA_VERSION,
            tool: Tool::qgate(),
            command: best.command.clone(),
            verdict,
            summary: format!(
                "{} (require {}): {message}",
                verdict.as_str().to_uppercase(),
                require.as_str()
            ),
            data: best.data.clone(),
            baseline: best.baseline.clone(),
            candidate: None,
            comparison: None,
            calibration: None,
            slices: None,
            corruptions: None,
            performance: None,
            sensitivity: None,
            gate: GateReport {
                verdict,
                thresholds: best.gate.thresholds.clone(),
                criteria: vec![criterion],
            },
            host: best.host.clone(),
            deployment_runtime: best.deployment_runtime.clone(),
            warnings,
            runtime_checks: Vec::new(),
            thumbnails: Vec::new(),
            require: Some(require),
            candidates,
        }
    }
}

//! The verdict on live traffic: validity first (sample-ratio mismatch, no data, every request
//! errored, a side without data), then each criterion on its interval.

use qgate_core::policy::{Better, Direction, Policy, PolicyFile, Source, ONLINE_KEYS};
use schemars::JsonSchema;
use serde::Serialize;

use crate::figures::{Analysis, Sequential};
use crate::OnlineError;

/// The verdict of `qgate analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnlineVerdict {
    /// Every criterion met with evidence (exit 0).
    Pass,
    /// Evidence that a criterion is not met (exit 1).
    Fail,
    /// The data cannot be judged: SRM, no data, every request errored, a side without data
    /// (exit 1).
    Invalid,
    /// Not enough evidence yet either way (exit 3): a pipeline may retry later.
    Inconclusive,
}

impl OnlineVerdict {
    /// The process exit code (docs/report-schema.md).
    pub fn exit_code(self) -> u8 {
        match self {
            OnlineVerdict::Pass => 0,
            OnlineVerdict::Fail | OnlineVerdict::Invalid => 1,
            OnlineVerdict::Inconclusive => 3,
        }
    }
}

/// A criterion's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnlineStatus {
    Pass,
    Fail,
    Inconclusive,
}

/// What a criterion found, typed; qgate-report puts it in words.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The whole interval is on the passing side, with enough observations.
    Within,
    /// The whole interval is on the failing side: evidence against the candidate.
    Beyond,
    /// The interval holds the threshold: not enough evidence either way.
    Straddles,
    /// The interval is on the passing side but a side has fewer than `min_requests`.
    TooFew { have: u64, need: u64 },
    /// Nothing to judge: what is missing.
    NoData { what: String },
}

/// Which kind of interval a criterion was judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntervalKind {
    /// An always-valid mSPRT confidence sequence.
    Sequential,
    /// A fixed-horizon interval (valid once at this sample size).
    FixedHorizon,
}

/// One judged criterion.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OnlineCriterion {
    /// The policy key (`outcomes.NAME.max_drop` for an outcome's own limit).
    pub key: String,
    /// `shadow`, `ab` (arms of an A/B test or canary) or `outcome:NAME`.
    pub scope: String,
    pub description: String,
    /// `at_most` or `at_least`.
    pub direction: String,
    pub threshold: f64,
    /// `default` or the policy file.
    pub source: String,
    pub observed: Option<f64>,
    /// The interval it was judged on.
    pub interval: Option<[f64; 2]>,
    pub interval_kind: IntervalKind,
    /// Observations on the smaller side.
    pub n: u64,
    pub status: OnlineStatus,
    pub finding: Finding,
}

/// A threshold or setting in force.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OnlineThreshold {
    pub key: String,
    pub value: f64,
    pub source: String,
}

/// The judged gate.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct OnlineGate {
    pub verdict: OnlineVerdict,
    pub thresholds: Vec<OnlineThreshold>,
    pub criteria: Vec<OnlineCriterion>,
}

/// The thresholds and settings in force for live traffic.
pub(crate) struct Resolved {
    pub policy: Policy,
    pub file: PolicyFile,
    /// Where the file came from (the source of its `[outcomes.NAME]` limits).
    origin: String,
}

impl Resolved {
    pub fn new(file: &PolicyFile, source: &Source) -> Resolved {
        Resolved {
            policy: Policy::resolve_online(file, source),
            file: file.clone(),
            origin: source.to_string(),
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.policy.value(key)
    }

    fn source(&self, key: &str) -> String {
        self.policy
            .thresholds
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.source.to_string())
            .unwrap_or_else(|| "default".into())
    }

    pub fn thresholds(&self) -> Vec<OnlineThreshold> {
        let mut v: Vec<OnlineThreshold> = self
            .policy
            .thresholds
            .iter()
            .map(|t| OnlineThreshold {
                key: t.key.into(),
                value: t.value,
                source: t.source.to_string(),
            })
            .collect();
        for (name, o) in &self.file.outcomes {
            if let Some(d) = o.max_drop {
                v.push(OnlineThreshold {
                    key: format!("outcomes.{name}.max_drop"),
                    value: d,
                    source: self.origin.clone(),
                });
            }
        }
        v
    }
}

struct Judge<'a> {
    r: &'a Resolved,
    min: u64,
    out: Vec<OnlineCriterion>,
}

/// A figure to judge: observed value, interval, observations on the smaller side.
struct Figure {
    observed: Option<f64>,
    interval: Option<[f64; 2]>,
    kind: IntervalKind,
    n: u64,
}

impl Figure {
    /// A sequential figure. An infinite value (a KL of +∞: the candidate gives a class
    /// probability 0) is its own interval: nothing can bring it back.
    fn seq(observed: f64, s: &Sequential, n: u64) -> Figure {
        let interval = if observed.is_infinite() {
            [observed, observed]
        } else {
            s.interval
        };
        Figure {
            observed: Some(observed),
            interval: Some(interval),
            kind: IntervalKind::Sequential,
            n,
        }
    }
}

impl Judge<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        key: &str,
        scope: &str,
        description: String,
        direction: Direction,
        threshold: f64,
        source: String,
        f: Figure,
        missing: Option<String>,
    ) {
        let tol = 1e-9 + 1e-9 * threshold.abs();
        let (status, finding) = match (&missing, f.interval) {
            (Some(what), _) => (
                OnlineStatus::Inconclusive,
                Finding::NoData { what: what.clone() },
            ),
            (None, None) => (
                OnlineStatus::Inconclusive,
                Finding::NoData {
                    what: "no interval".into(),
                },
            ),
            (None, Some([lo, hi])) => {
                let (ok, bad) = match direction {
                    Direction::AtMost => (hi <= threshold + tol, lo > threshold + tol),
                    Direction::AtLeast => (lo >= threshold - tol, hi < threshold - tol),
                };
                // A sequence is valid at every sample size, so it may fail early; a
                // fixed-horizon interval only from `min_requests` on (one cold request must
                // not fail a canary).
                let may_fail = f.kind == IntervalKind::Sequential || f.n >= self.min;
                if bad && may_fail {
                    (OnlineStatus::Fail, Finding::Beyond)
                } else if bad {
                    (
                        OnlineStatus::Inconclusive,
                        Finding::TooFew {
                            have: f.n,
                            need: self.min,
                        },
                    )
                } else if ok && f.n >= self.min {
                    (OnlineStatus::Pass, Finding::Within)
                } else if ok {
                    (
                        OnlineStatus::Inconclusive,
                        Finding::TooFew {
                            have: f.n,
                            need: self.min,
                        },
                    )
                } else {
                    (OnlineStatus::Inconclusive, Finding::Straddles)
                }
            }
        };
        self.out.push(OnlineCriterion {
            key: key.into(),
            scope: scope.into(),
            description,
            direction: match direction {
                Direction::AtMost => "at_most",
                Direction::AtLeast => "at_least",
            }
            .into(),
            threshold,
            source,
            observed: f.observed.filter(|v| v.is_finite()),
            interval: f.interval,
            interval_kind: f.kind,
            n: f.n,
            status,
            finding,
        });
    }

    fn key(&mut self, key: &str, scope: &str, f: Figure, missing: Option<String>) {
        let Some(spec) = ONLINE_KEYS.iter().find(|s| s.key == key) else {
            return;
        };
        let Some(t) = self.r.get(key) else { return };
        let source = self.r.source(key);
        self.push(
            key,
            scope,
            spec.description.into(),
            spec.direction,
            t,
            source,
            f,
            missing,
        );
    }
}

fn no_figure() -> Figure {
    Figure {
        observed: None,
        interval: None,
        kind: IntervalKind::Sequential,
        n: 0,
    }
}

/// Why the analysis cannot be judged.
pub(crate) fn invalid_reasons(a: &Analysis, errored: u64) -> Vec<String> {
    let mut why = Vec::new();
    if a.requests == 0 {
        why.push(format!(
            "no requests for model '{}' in the window read",
            a.model
        ));
        return why;
    }
    if errored == a.requests {
        why.push(format!(
            "every request errored ({errored} of {})",
            a.requests
        ));
    }
    if a.shadow.is_none() && a.arms.is_none() {
        why.push(format!(
            "none of the {} requests was routed to a model (all refused before routing)",
            a.requests
        ));
    }
    if let Some(s) = &a.shadow {
        if s.paired == 0 {
            let copies: Vec<String> = s.copies.iter().map(|(k, v)| format!("{v} {k}")).collect();
            why.push(format!(
                "no mirrored request was answered by both models (copies: {})",
                copies.join(", ")
            ));
        }
    }
    if let Some(arms) = &a.arms {
        for (name, arm) in [("baseline", &arms.baseline), ("candidate", &arms.candidate)] {
            if arm.requests == 0 {
                why.push(format!("the {name} arm has no requests"));
            }
        }
    }
    if let Some(srm) = a.srm.as_ref().filter(|s| s.mismatch) {
        why.push(format!(
            "sample-ratio mismatch: {} baseline / {} candidate requests where the weights expect {:.1} / {:.1} (chi-square p = {:.3e} < srm_alpha {})",
            srm.observed[0], srm.observed[1], srm.expected[0], srm.expected[1], srm.p_value, srm.alpha
        ));
    }
    why
}

/// Judges every criterion that applies to `a`. A KL threshold on a log without full outputs
/// is an error: it can never be judged there.
pub(crate) fn criteria(a: &Analysis, r: &Resolved) -> Result<Vec<OnlineCriterion>, OnlineError> {
    let mut j = Judge {
        r,
        min: r.get("min_requests").unwrap_or(100.0) as u64,
        out: Vec::new(),
    };
    if let Some(s) = &a.shadow {
        j.key(
            "min_shadow_agreement",
            "shadow",
            Figure::seq(s.top1_agreement, &s.top1_agreement_sequential, s.rows),
            (s.rows == 0).then(|| "no paired rows".into()),
        );
        if r.get("max_shadow_kl_mean").is_some() {
            match &s.kl {
                Some(kl) => j.key(
                    "max_shadow_kl_mean",
                    "shadow",
                    Figure::seq(kl.mean, &kl.mean_sequential, kl.n),
                    (kl.n == 0).then(|| "no finite KL value".into()),
                ),
                None if s.paired == 0 => j.key(
                    "max_shadow_kl_mean",
                    "shadow",
                    no_figure(),
                    Some("no paired rows".into()),
                ),
                None => {
                    return Err(OnlineError::Config(format!(
                        "policy key `max_shadow_kl_mean` cannot be judged on this log: {}",
                        s.kl_unavailable.clone().unwrap_or_default()
                    )))
                }
            }
        }
        match &s.error_rate_increase {
            Some(e) => j.key(
                "max_error_rate_increase",
                "shadow",
                Figure::seq(e.increase, &e.sequential, e.n),
                None,
            ),
            None => j.key(
                "max_error_rate_increase",
                "shadow",
                no_figure(),
                Some("no mirrored copy was answered or failed".into()),
            ),
        }
        if r.get("max_p99_ms_increase").is_some() {
            match &s.latency {
                Some(l) => j.key(
                    "max_p99_ms_increase",
                    "shadow",
                    Figure {
                        observed: Some(l.p99_difference_ms),
                        interval: Some(l.p99_difference_ci),
                        kind: IntervalKind::FixedHorizon,
                        n: l.baseline.n,
                    },
                    None,
                ),
                None => j.key(
                    "max_p99_ms_increase",
                    "shadow",
                    no_figure(),
                    Some("no paired latencies".into()),
                ),
            }
        }
    }
    if let (Some(arms), Some(diff)) = (&a.arms, &a.error_rate) {
        let n = arms.baseline.requests.min(arms.candidate.requests);
        j.key(
            "max_error_rate_increase",
            "ab",
            Figure::seq(diff.increase, &diff.sequential, n),
            (n == 0).then(|| "an arm has no requests".into()),
        );
        if let (Some(_), Some(l)) = (r.get("max_p99_ms_increase"), &a.latency) {
            let n = arms.baseline.latency.n.min(arms.candidate.latency.n);
            j.key(
                "max_p99_ms_increase",
                "ab",
                Figure {
                    observed: Some(l.p99_increase_ms),
                    interval: Some(l.p99_increase_ci),
                    kind: IntervalKind::FixedHorizon,
                    n,
                },
                (n == 0).then(|| "an arm has no answered request".into()),
            );
        }
    }
    outcome_criteria(a, r, &mut j);
    Ok(j.out)
}

fn outcome_criteria(a: &Analysis, r: &Resolved, j: &mut Judge<'_>) {
    let default = r.get("max_outcome_drop");
    for o in &a.outcomes {
        let own = r.file.outcomes.get(&o.name).and_then(|p| p.max_drop);
        let Some(limit) = own.or(default) else {
            continue;
        };
        let (key, source) = match own {
            Some(_) => (format!("outcomes.{}.max_drop", o.name), r.origin.clone()),
            None => ("max_outcome_drop".to_string(), r.source("max_outcome_drop")),
        };
        let lower_better = o.better == "lower";
        let sign = if lower_better { 1.0 } else { -1.0 };
        let [lo, hi] = o.sequential.interval;
        let interval = if lower_better { [lo, hi] } else { [-hi, -lo] };
        let n = o.baseline.n.min(o.candidate.n);
        j.push(
            &key,
            &format!("outcome:{}", o.name),
            format!(
                "drop of `{}` ({}), {}",
                o.name,
                o.kind,
                if lower_better {
                    "candidate − baseline (lower is better)"
                } else {
                    "baseline − candidate"
                }
            ),
            Direction::AtMost,
            limit,
            source,
            Figure {
                observed: Some(sign * o.difference),
                interval: Some(interval),
                kind: IntervalKind::Sequential,
                n,
            },
            (n == 0).then(|| format!("no `{}` outcome on one arm", o.name)),
        );
    }
    // Limits on outcomes that never arrived cannot pass.
    for (name, p) in &r.file.outcomes {
        if a.outcomes.iter().any(|o| &o.name == name) {
            continue;
        }
        if let Some(limit) = p.max_drop {
            j.push(
                &format!("outcomes.{name}.max_drop"),
                &format!("outcome:{name}"),
                format!(
                    "drop of `{name}`{}",
                    if p.better == Better::Lower {
                        " (lower is better)"
                    } else {
                        ""
                    }
                ),
                Direction::AtMost,
                limit,
                r.origin.clone(),
                no_figure(),
                Some(format!("no `{name}` outcome arrived for a routed request")),
            );
        }
    }
}

/// Validity first, then the criteria.
pub(crate) fn verdict(invalid: &[String], criteria: &[OnlineCriterion]) -> OnlineVerdict {
    if !invalid.is_empty() {
        OnlineVerdict::Invalid
    } else if criteria.iter().any(|c| c.status == OnlineStatus::Fail) {
        OnlineVerdict::Fail
    } else if criteria.is_empty()
        || criteria
            .iter()
            .any(|c| c.status == OnlineStatus::Inconclusive)
    {
        OnlineVerdict::Inconclusive
    } else {
        OnlineVerdict::Pass
    }
}

//! The automatic canary's decision (issue 16, work in progress): given the state of the
//! ramp, the time and traffic of the current step and `qgate analyze`'s verdict on the
//! step's requests, what to do. Pure: the controller task around it reads the log, applies
//! the decision through the admin compare-and-set and writes the decision record.

use std::time::Duration;

use qgate_online::OnlineVerdict;

use crate::config::{CanaryAuto, OnMaxHolds};

/// What the controller does at one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not time to judge yet: the step is younger than `min_step_seconds` or has fewer
    /// than `min_requests_per_step` requests.
    Wait(String),
    /// `pass`: to the next step (its index).
    Promote(usize),
    /// `pass` at the last step: the rollout is complete and the candidate keeps serving.
    Complete,
    /// `inconclusive`: stay; the count of holds at this step after this one.
    Hold(u32),
    /// Weight 0 from the next request: `fail`, `invalid`, or too many holds with
    /// `on_max_holds = "rollback"`.
    Rollback(String),
    /// Too many holds with `on_max_holds = "hold"`: stay and hold the ramp for an operator.
    HoldForOperator(String),
}

/// The state of the ramp the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// The current step; `None` after a rollback.
    pub step: Option<usize>,
    /// Steps in the ramp.
    pub steps: usize,
    /// Held by an operator (or by `on_max_holds = "hold"`).
    pub held: bool,
    /// The rollout completed.
    pub promoted: bool,
    /// Inconclusive judgements of this step so far.
    pub holds: u32,
}

/// Whether anything is left to decide: a rolled-back, completed or held ramp is left alone
/// (a rolled-back candidate is never re-promoted by the controller).
pub fn active(r: &Ramp) -> bool {
    r.step.is_some() && !r.promoted && !r.held
}

/// The decision at one check of an active ramp: `age` of the step, `requests` in it, and
/// the verdict on them (`None` when not yet analysed).
pub fn decide(
    r: &Ramp,
    auto: &CanaryAuto,
    age: Duration,
    requests: u64,
    verdict: Option<OnlineVerdict>,
) -> Decision {
    let Some(step) = r.step else {
        return Decision::Wait("rolled back".into());
    };
    if age < auto.min_step {
        return Decision::Wait(format!(
            "the step is {:.0} s old, min_step_seconds is {:.0}",
            age.as_secs_f64(),
            auto.min_step.as_secs_f64()
        ));
    }
    if requests < auto.min_requests_per_step {
        return Decision::Wait(format!(
            "{requests} requests in the step, min_requests_per_step is {}",
            auto.min_requests_per_step
        ));
    }
    match verdict {
        None => Decision::Wait("not analysed yet".into()),
        Some(OnlineVerdict::Pass) if step + 1 < r.steps => Decision::Promote(step + 1),
        Some(OnlineVerdict::Pass) => Decision::Complete,
        Some(OnlineVerdict::Fail) => Decision::Rollback("the analysis failed".into()),
        Some(OnlineVerdict::Invalid) => {
            Decision::Rollback("the step's data is invalid (no verdict can be drawn)".into())
        }
        Some(OnlineVerdict::Inconclusive) if r.holds < auto.max_holds => {
            Decision::Hold(r.holds + 1)
        }
        Some(OnlineVerdict::Inconclusive) => {
            let why = format!(
                "still inconclusive after {} holds (max_holds)",
                auto.max_holds
            );
            match auto.on_max_holds {
                OnMaxHolds::Rollback => Decision::Rollback(why),
                OnMaxHolds::Hold => Decision::HoldForOperator(why),
            }
        }
    }
}

/// The log as `open_log` takes it.
fn log_spec(target: &crate::config::LogTarget) -> String {
    match target {
        crate::config::LogTarget::Sqlite(p) => p.display().to_string(),
        crate::config::LogTarget::Postgres { url } => url.clone(),
    }
}

/// How often the controller looks at an active ramp.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Starts the controller of `app` when its config asks for the automatic canary: every
/// second it judges the current step (in canary mode, not held, rolled back or complete)
/// with the same analysis `qgate analyze` runs, on the step's requests, and applies the
/// decision through the admin compare-and-set, so that of several replicas exactly one
/// applies each decision.
pub fn spawn(
    app: std::sync::Arc<crate::app::App>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let auto = app.model.split.canary_auto.clone()?;
    let spec = log_spec(&app.cfg.log.target);
    Some(tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(CHECK_EVERY.min(auto.min_step.max(Duration::from_millis(50))));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = check(&app, &auto, &spec).await {
                tracing::warn!(model = %app.model.name, error = %e, "canary controller");
            }
        }
    }))
}

/// `qgate analyze`'s analysis of `app`'s requests since `since_ms`, with the canary's
/// policy (the defaults without `[canary] auto`), on a blocking thread.
pub async fn analyse(
    app: &crate::app::App,
    spec: &str,
    since_ms: i64,
) -> Result<qgate_online::Online, String> {
    let (policy, policy_source) = match &app.model.split.canary_auto {
        Some(a) => (a.policy.clone(), a.policy_source.clone()),
        None => (Default::default(), qgate_core::policy::Source::Default),
    };
    let cfg = qgate_online::AnalyzeConfig {
        model: Some(app.model.name.clone()),
        since_ms: Some(since_ms),
        until_ms: None,
        window: None,
        output: None,
        output_kind: None,
        policy,
        policy_source,
        top_k: 5,
        seed: 0,
        with_inputs: false,
    };
    let spec = spec.to_string();
    tokio::task::spawn_blocking(move || {
        let mut reader = crate::reader::open_log(&spec).map_err(|e| e.to_string())?;
        qgate_online::analyze(reader.as_mut(), &cfg, None).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the analysis panicked: {e}"))?
}

/// The answer of `GET /v2/models/{name}/analysis` (docs/analysis.schema.json).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct AnalysisAnswer {
    pub model: String,
    /// `shadow`, `ab` or `canary`.
    pub mode: String,
    /// The canary step (0-based); null after a rollback or outside canary mode.
    pub canary_step: Option<usize>,
    /// The candidate's share in force.
    pub weight: f64,
    /// The automatic canary completed its rollout.
    pub promoted: bool,
    /// The start of the window judged: the current step (or mode), RFC 3339.
    pub since: String,
    /// `pass`, `fail`, `invalid` or `inconclusive`: what a rollout tool reads.
    pub verdict: qgate_online::OnlineVerdict,
    /// Requests in the window.
    pub requests: u64,
    /// Why the window cannot be judged, when `invalid`.
    pub invalid: Vec<String>,
    pub criteria: Vec<qgate_online::OnlineCriterion>,
    /// Every figure, as report.json's `online` section.
    pub analysis: qgate_online::Analysis,
}

/// `GET /v2/models/{name}/analysis`: the analysis of the current step (or mode) —
/// `verdict` first, for rollout tools' web metric providers (Argo Rollouts, Flagger).
pub async fn current(app: &crate::app::App) -> Result<AnalysisAnswer, String> {
    let (state, _) = app.versioned_state();
    let spec = log_spec(&app.cfg.log.target);
    let online = analyse(app, &spec, state.step_started_ms).await?;
    Ok(AnalysisAnswer {
        model: app.model.name.clone(),
        mode: state.mode.as_str().into(),
        canary_step: state.canary_step,
        weight: state.weight(&app.model.split),
        promoted: state.promoted,
        since: crate::store::iso_ms(state.step_started_ms),
        verdict: online.gate.verdict,
        requests: online.analysis.requests,
        invalid: online.analysis.invalid.clone(),
        criteria: online.gate.criteria,
        analysis: online.analysis,
    })
}

/// The JSON Schema of [`AnalysisAnswer`], published as docs/analysis.schema.json.
pub fn answer_schema() -> serde_json::Value {
    qgate_report::endpoint_schema::<AnalysisAnswer>(
        "qgate GET /v2/models/{name}/analysis",
        "The current step's analysis (docs/serve.md, \"The automatic canary\")",
    )
}

/// One check of `app`'s ramp.
async fn check(app: &crate::app::App, auto: &CanaryAuto, spec: &str) -> Result<(), String> {
    use crate::config::Mode;
    let (state, version) = app.versioned_state();
    let ramp = Ramp {
        step: state.canary_step,
        steps: app.model.split.canary_steps.len(),
        held: state.held,
        promoted: state.promoted,
        holds: state.holds,
    };
    if state.mode != Mode::Canary || !active(&ramp) {
        return Ok(());
    }
    let now = crate::store::now_ms();
    // After a hold, the next judgement waits for another step's time and traffic.
    let since = state.step_started_ms.max(state.held_at_ms);
    let age = Duration::from_millis((now - since).max(0) as u64);
    if age < auto.min_step {
        return Ok(());
    }
    let online = analyse(app, spec, state.step_started_ms).await?;
    let routed = online
        .analysis
        .arms
        .as_ref()
        .map_or(0, |a| a.baseline.requests + a.candidate.requests);
    let new_requests = routed.saturating_sub(state.held_at_requests);
    let decision = decide(&ramp, auto, age, new_requests, Some(online.gate.verdict));
    let mut next = state.clone();
    let action = match &decision {
        Decision::Wait(_) => return Ok(()),
        Decision::Promote(i) => {
            next.canary_step = Some(*i);
            next.new_step();
            // A step of 100 % has no baseline arm left to compare with: reaching it is the
            // end of the rollout.
            if app.model.split.canary_steps[*i] >= 100.0 {
                next.promoted = true;
                "canary/auto-complete"
            } else {
                "canary/auto-promote"
            }
        }
        Decision::Complete => {
            next.promoted = true;
            "canary/auto-complete"
        }
        Decision::Hold(n) => {
            next.holds = *n;
            next.held_at_ms = now;
            next.held_at_requests = routed;
            "canary/auto-hold"
        }
        Decision::Rollback(_) => {
            next.canary_step = None;
            next.new_step();
            "canary/auto-rollback"
        }
        Decision::HoldForOperator(_) => {
            next.held = true;
            "canary/auto-hold-for-operator"
        }
    };
    let record = record(app, action, &state, &next, &decision, &online, now);
    let _guard = app.admin_lock.lock().await;
    if app.versioned_state().1 != version {
        // An operator or another replica acted meanwhile: judge again at the next check.
        return Ok(());
    }
    let write = crate::store::AdminWrite {
        model: app.model.name.clone(),
        action: action.into(),
        detail: record.to_string(),
        change: Some((next.clone(), version)),
    };
    match app.store.admin(write).await {
        Ok(v) => app.store.board().put(&app.model.name, next, v),
        Err(crate::store::AdminRefused::Conflict(now, v)) => {
            app.store.board().offer(&app.model.name, now, v);
            return Ok(());
        }
        Err(crate::store::AdminRefused::Store(e)) => return Err(format!("not applied: {e}")),
    }
    publish(auto, &app.model.name, action, &record).await;
    Ok(())
}

/// The decision record: what was judged, on which window, with which figures, tests and
/// thresholds, what was done and why.
fn record(
    app: &crate::app::App,
    action: &str,
    before: &crate::route::AdminState,
    after: &crate::route::AdminState,
    decision: &Decision,
    online: &qgate_online::Online,
    now: i64,
) -> serde_json::Value {
    let split = &app.model.split;
    let max = split.canary_auto.as_ref().map_or(0, |a| a.max_holds);
    let action_kind = match decision {
        Decision::Promote(i) => qgate_report::CanaryAction::Promote {
            to: i + 1,
            percent: split.canary_steps[*i],
        },
        Decision::Complete => qgate_report::CanaryAction::Complete,
        Decision::Hold(n) => qgate_report::CanaryAction::Hold { hold: *n, max },
        Decision::HoldForOperator(_) => qgate_report::CanaryAction::HoldForOperator { max },
        Decision::Rollback(_) | Decision::Wait(_) => qgate_report::CanaryAction::Rollback,
    };
    let step = before.canary_step.unwrap_or(0);
    let reason = qgate_report::decision_reason(
        action_kind,
        step + 1,
        split.canary_steps.get(step).copied().unwrap_or(0.0),
        &online.gate,
        &online.analysis.invalid,
        online.analysis.requests,
    );
    serde_json::json!({
        "ts": crate::store::iso_ms(now),
        "model": app.model.name,
        "action": action,
        "step": before.canary_step,
        "step_after": after.canary_step,
        "weight_before": before.weight(split),
        "weight_after": after.weight(split),
        "window": {
            "since": crate::store::iso_ms(before.step_started_ms),
            "until": crate::store::iso_ms(now),
        },
        "verdict": online.gate.verdict,
        "reason": reason,
        "requests": online.analysis.requests,
        "invalid": online.analysis.invalid,
        "criteria": online.gate.criteria,
        "thresholds": online.gate.thresholds,
    })
}

/// Writes the record into `decisions_dir` and POSTs it to `notify_url`, each best effort
/// (the decision is in the log already).
pub(crate) async fn publish(
    auto: &CanaryAuto,
    model: &str,
    action: &str,
    record: &serde_json::Value,
) {
    let text = serde_json::to_string_pretty(record).unwrap_or_default() + "\n";
    if let Some(dir) = &auto.decisions_dir {
        let name = format!(
            "{}-{model}-{}.json",
            record["ts"].as_str().unwrap_or_default().replace(':', ""),
            action.replace('/', "-")
        );
        if let Err(e) =
            std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(&name), &text))
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the decision record");
        }
    }
    if let Some(url) = auto.notify_url.clone() {
        let _ = tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            if let Err(e) = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(text)
            {
                tracing::warn!(url = %url, error = %e, "cannot notify the decision");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto() -> CanaryAuto {
        CanaryAuto {
            policy: Default::default(),
            policy_source: qgate_core::policy::Source::Default,
            min_requests_per_step: 200,
            min_step: Duration::from_secs(60),
            max_holds: 2,
            on_max_holds: OnMaxHolds::Rollback,
            decisions_dir: None,
            notify_url: None,
        }
    }

    fn ramp(step: usize, holds: u32) -> Ramp {
        Ramp {
            step: Some(step),
            steps: 3,
            held: false,
            promoted: false,
            holds,
        }
    }

    #[test]
    fn evidence_moves_the_ramp_and_its_absence_never_promotes() {
        let a = auto();
        let old = Duration::from_secs(61);
        let pass = Some(OnlineVerdict::Pass);
        assert_eq!(
            decide(&ramp(0, 0), &a, old, 500, pass),
            Decision::Promote(1)
        );
        assert_eq!(decide(&ramp(2, 0), &a, old, 500, pass), Decision::Complete);
        // Too young or too little traffic: wait, whatever the verdict.
        assert!(matches!(
            decide(&ramp(0, 0), &a, Duration::from_secs(5), 500, pass),
            Decision::Wait(_)
        ));
        assert!(matches!(
            decide(&ramp(0, 0), &a, old, 10, pass),
            Decision::Wait(_)
        ));
        assert!(matches!(
            decide(&ramp(1, 0), &a, old, 500, Some(OnlineVerdict::Invalid)),
            Decision::Rollback(_)
        ));
        assert!(matches!(
            decide(&ramp(1, 0), &a, old, 500, Some(OnlineVerdict::Fail)),
            Decision::Rollback(_)
        ));
    }

    #[test]
    fn holds_end_as_the_policy_says() {
        let mut a = auto();
        let old = Duration::from_secs(61);
        let inc = Some(OnlineVerdict::Inconclusive);
        assert_eq!(decide(&ramp(1, 0), &a, old, 500, inc), Decision::Hold(1));
        assert_eq!(decide(&ramp(1, 1), &a, old, 500, inc), Decision::Hold(2));
        assert!(matches!(
            decide(&ramp(1, 2), &a, old, 500, inc),
            Decision::Rollback(_)
        ));
        a.on_max_holds = OnMaxHolds::Hold;
        assert!(matches!(
            decide(&ramp(1, 2), &a, old, 500, inc),
            Decision::HoldForOperator(_)
        ));
    }

    #[test]
    fn a_rolled_back_or_completed_ramp_is_left_alone() {
        let mut r = ramp(1, 0);
        assert!(active(&r));
        r.step = None;
        assert!(!active(&r));
        let mut r = ramp(2, 0);
        r.promoted = true;
        assert!(!active(&r));
    }
}

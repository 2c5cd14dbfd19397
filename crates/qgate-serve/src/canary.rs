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

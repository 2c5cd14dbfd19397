//! Which arm answers a request, and the admin state that decides it.
//!
//! A user is sticky through a fixed keyed hash: `u = SHA-256(seed ‖ 0x00 ‖ key)`, its first
//! eight bytes read as a big-endian integer and divided by 2⁶⁴, so `u` is uniform in [0, 1)
//! and the same on every machine, build and restart. The user gets the candidate when
//! `u < weight`: raising the weight only adds users to the candidate, never moves one back.

use sha2::{Digest, Sha256};

use crate::config::{Mode, SplitConfig};

/// An arm of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Baseline,
    Candidate,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Baseline => "baseline",
            Arm::Candidate => "candidate",
        }
    }
}

/// The sticky hash of `key` under `seed`: its position in [0, 1) and its first eight bytes
/// as hex (what the log keeps instead of the key).
pub fn sticky_hash(seed: &str, key: &str) -> (f64, String) {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    let n = u64::from_be_bytes(first);
    let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
    (n as f64 / 18_446_744_073_709_551_616.0, hex)
}

/// The admin state: what the operator last set (or the config, before any admin call).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdminState {
    pub mode: Mode,
    /// The candidate's share in `ab` mode, in [0, 1].
    pub candidate_weight: f64,
    /// Index into the canary steps; `None` after a rollback.
    pub canary_step: Option<usize>,
    /// The ramp is held: `advance` is refused until it is released by an `advance` with
    /// `{"force": true}` or a new mode.
    pub held: bool,
    /// When the current canary step (or mode) began, Unix ms: the automatic canary judges
    /// the requests from then on. 0 in states written before it was kept.
    #[serde(default)]
    pub step_started_ms: i64,
    /// Inconclusive judgements of the current step (automatic canary).
    #[serde(default)]
    pub holds: u32,
    /// The automatic canary passed its last step: the rollout is complete.
    #[serde(default)]
    pub promoted: bool,
    /// When the current step was last judged inconclusive (a hold), and how many routed
    /// requests it had then: the next judgement waits for another `min_step_seconds` and
    /// `min_requests_per_step` of new requests.
    #[serde(default)]
    pub held_at_ms: i64,
    #[serde(default)]
    pub held_at_requests: u64,
}

impl AdminState {
    /// The state a fresh log starts with.
    pub fn from_config(mode: Mode, split: &SplitConfig) -> AdminState {
        AdminState {
            mode,
            candidate_weight: split.candidate_weight,
            canary_step: Some(0),
            held: false,
            step_started_ms: crate::store::now_ms(),
            holds: 0,
            promoted: false,
            held_at_ms: 0,
            held_at_requests: 0,
        }
    }

    /// A new step (or mode) begins now: its clock, holds and completion start again.
    pub fn new_step(&mut self) {
        self.step_started_ms = crate::store::now_ms();
        self.holds = 0;
        self.promoted = false;
        self.held_at_ms = 0;
        self.held_at_requests = 0;
    }

    /// The candidate's share now: 0 in shadow mode (the baseline answers every client).
    pub fn weight(&self, split: &SplitConfig) -> f64 {
        match self.mode {
            Mode::Shadow => 0.0,
            Mode::Ab => self.candidate_weight,
            Mode::Canary => self
                .canary_step
                .and_then(|i| split.canary_steps.get(i))
                .map_or(0.0, |p| p / 100.0),
        }
    }
}

/// The arm chosen for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub arm: Arm,
    /// The candidate's share in force.
    pub weight: f64,
    /// The sticky key's hash, when the request had the header.
    pub key_hash: Option<String>,
}

/// Chooses the arm: sticky by `key` when given, else by `fallback` (any text unique to the
/// request, e.g. its id), which splits per request.
pub fn choose(
    state: &AdminState,
    split: &SplitConfig,
    key: Option<&str>,
    fallback: &str,
) -> Choice {
    let weight = state.weight(split);
    if state.mode == Mode::Shadow {
        return Choice {
            arm: Arm::Baseline,
            weight,
            key_hash: key.map(|k| sticky_hash(&split.hash_seed, k).1),
        };
    }
    let (u, key_hash) = match key {
        Some(k) => {
            let (u, h) = sticky_hash(&split.hash_seed, k);
            (u, Some(h))
        }
        None => (
            sticky_hash(&split.hash_seed, &format!("\u{1}request:{fallback}")).0,
            None,
        ),
    };
    Choice {
        arm: if u < weight {
            Arm::Candidate
        } else {
            Arm::Baseline
        },
        weight,
        key_hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> SplitConfig {
        SplitConfig {
            candidate_weight: 0.1,
            sticky_header: "x-user-id".into(),
            hash_seed: "qgate".into(),
            canary_steps: vec![1.0, 5.0, 25.0, 50.0, 100.0],
            canary_auto: None,
        }
    }

    #[test]
    fn hundred_thousand_keys_split_within_one_point_of_the_weight() {
        let s = split();
        for w in [0.01, 0.1, 0.25, 0.5, 0.9] {
            let state = AdminState {
                mode: Mode::Ab,
                candidate_weight: w,
                canary_step: None,
                held: false,
                step_started_ms: 0,
                holds: 0,
                promoted: false,
                held_at_ms: 0,
                held_at_requests: 0,
            };
            let n = 100_000;
            let hits = (0..n)
                .filter(|i| {
                    choose(&state, &s, Some(&format!("user-{i}")), "").arm == Arm::Candidate
                })
                .count();
            let share = hits as f64 / n as f64;
            assert!((share - w).abs() < 0.01, "weight {w}: {share}");
        }
    }

    #[test]
    fn raising_the_weight_keeps_every_candidate_user() {
        let s = split();
        let mut state = AdminState::from_config(Mode::Canary, &s);
        let mut before: Vec<bool> = vec![false; 20_000];
        for step in 0..s.canary_steps.len() {
            state.canary_step = Some(step);
            for (i, had) in before.iter_mut().enumerate() {
                let now = choose(&state, &s, Some(&format!("u{i}")), "").arm == Arm::Candidate;
                assert!(!*had || now, "user u{i} left the candidate at step {step}");
                *had = now;
            }
        }
        assert!(
            before.iter().all(|x| *x),
            "100 % sends everyone to the candidate"
        );
        state.canary_step = None;
        assert_eq!(choose(&state, &s, Some("u1"), "").arm, Arm::Baseline);
    }

    #[test]
    fn the_hash_is_fixed() {
        // SHA-256("qgate\0alice")[..8], computed independently:
        // python3 -c "import hashlib;print(hashlib.sha256(b'qgate\x00alice').hexdigest()[:16])"
        let (_, hex) = sticky_hash("qgate", "alice");
        assert_eq!(hex, EXPECTED_ALICE);
    }

    const EXPECTED_ALICE: &str = "8f3923cf7deca354";
}

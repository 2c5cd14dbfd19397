//! Statistics over the gateway's log of live traffic, valid while people watch: the pure,
//! synchronous analysis behind `qgate analyze` and the gateway's canary controller.
//!
//! Rows come through a [`LogReader`] (SQLite or PostgreSQL); [`analyze`] reads them once
//! into compact per-request events and returns every figure ([`Analysis`]) with its
//! judgement ([`OnlineGate`]): validity first (sample-ratio mismatch, no data, every request
//! errored, a side without data → `invalid`), then each policy criterion on its
//! always-valid confidence sequence (`pass`, `fail` or `inconclusive`). No async runtime,
//! no threads.
//!
//! ```
//! use qgate_online::{window::parse_window, Window};
//! assert_eq!(parse_window("1000req"), Ok(Window::Requests(1000)));
//! ```

mod analysis;
pub mod export;
mod figures;
mod judge;
pub mod outputs;
pub mod reader;
pub mod window;

pub use analysis::{AnalyzeConfig, BURN_IN};
pub use export::Exported;
pub use figures::*;
pub use judge::{
    Finding, IntervalKind, OnlineCriterion, OnlineGate, OnlineStatus, OnlineThreshold,
    OnlineVerdict,
};
pub use reader::{open, redact, LogReader, OutcomeRow, Query, RequestRow};
pub use window::Window;

/// Errors of an analysis.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The log cannot be read (missing, not a qgate log, newer schema, connection).
    #[error("log {0}")]
    Log(String),
    /// The request says something this log cannot answer (several models and no
    /// `--model`, a KL threshold on a top-k log).
    #[error("{0}")]
    Config(String),
    /// A logged row cannot be read (malformed outputs or inputs).
    #[error("log data: {0}")]
    Data(String),
}

/// An analysis and its judgement.
#[derive(Debug, Clone)]
pub struct Online {
    pub analysis: Analysis,
    pub gate: OnlineGate,
    /// What `--export-inputs` wrote.
    pub exported: Option<Exported>,
}

/// Reads the log through `reader` and judges it: the one entry point `qgate analyze` and
/// the canary controller share. `export` writes the logged inputs there (needs
/// `cfg.with_inputs`).
pub fn analyze(
    reader: &mut dyn LogReader,
    cfg: &AnalyzeConfig,
    export: Option<&std::path::Path>,
) -> Result<Online, OnlineError> {
    let schema_version = reader.schema_version()?;
    let model = match &cfg.model {
        Some(m) => m.clone(),
        None => {
            let models = reader.models()?;
            match models.as_slice() {
                [] => String::new(),
                [one] => one.clone(),
                many => {
                    return Err(OnlineError::Config(format!(
                        "{} holds requests for several models ({}): choose one with --model",
                        reader.describe(),
                        many.join(", ")
                    )))
                }
            }
        }
    };
    let q = Query {
        model: model.clone(),
        since_ms: cfg.since_ms,
        until_ms: cfg.until_ms,
        with_inputs: cfg.with_inputs || export.is_some(),
    };
    let collected = analysis::collect(reader, &q, cfg)?;
    let mut decisions = Vec::new();
    reader.actions(&q, &mut |a| {
        let detail: serde_json::Value = serde_json::from_str(&a.detail).unwrap_or_default();
        let auto = a.action.starts_with("canary/auto");
        decisions.push(DecisionMark {
            ts: window::format_ms(a.ts_ms),
            ts_ms: a.ts_ms,
            by: if auto { "controller" } else { "operator" }.into(),
            reason: detail["reason"].as_str().map(str::to_string),
            verdict: detail["verdict"].as_str().map(str::to_string),
            weight_after: detail["weight_after"].as_f64(),
            action: a.action,
        });
        Ok(())
    })?;
    let resolved = judge::Resolved::new(&cfg.policy, &cfg.policy_source);
    let get = |k: &str, d: f64| resolved.get(k).unwrap_or(d);
    let stat = analysis::Stat {
        alpha: get("alpha", 0.05),
        tau: get("msprt_tau", qgate_core::online::DEFAULT_MSPRT_TAU),
        seed: cfg.seed,
    };
    let th = analysis::OnlineThresholds {
        agreement: get("min_shadow_agreement", 1.0),
        kl: get("max_shadow_kl_mean", 0.0),
        srm_alpha: get("srm_alpha", 0.001),
    };
    let span = analysis::span(&collected);
    let window = cfg
        .window
        .unwrap_or_else(|| Window::auto(span.map_or(0, |(a, b)| b - a)));
    let (windows, set) = analysis::figures(&collected, cfg, &stat, window, &th)?;
    let (modes, refused) = analysis::modes(&collected);
    let (errored, requests) = analysis::error_counts(&collected);
    let (arms, srm, error_rate, latency) = match set.arms {
        Some((a, mut s, d, l)) => {
            s.alpha = th.srm_alpha;
            // A NaN p (a NaN weight in the log) cannot vouch for the split either.
            s.mismatch = s.p_value.is_nan() || s.p_value < th.srm_alpha;
            (Some(a), Some(s), Some(d), Some(l))
        }
        None => (None, None, None, None),
    };
    let mut notes = collected.notes.clone();
    notes.extend(set.notes);
    let fmt = |ms: Option<i64>| ms.map(window::format_ms);
    let mut analysis = Analysis {
        source: reader.describe(),
        schema_version,
        model,
        since: fmt(cfg.since_ms),
        until: fmt(cfg.until_ms),
        first: fmt(span.map(|s| s.0)),
        last: fmt(span.map(|s| s.1)),
        requests,
        refused,
        modes,
        window,
        settings: Settings {
            alpha: stat.alpha,
            srm_alpha: th.srm_alpha,
            msprt_tau: stat.tau,
            min_requests: get("min_requests", 100.0) as u64,
            burn_in: BURN_IN,
        },
        shadow: set.shadow,
        arms,
        srm,
        error_rate,
        latency,
        outcomes: set.outcomes,
        windows,
        decisions,
        invalid: Vec::new(),
        notes,
    };
    analysis.invalid = judge::invalid_reasons(&analysis, errored);
    let criteria = judge::criteria(&analysis, &resolved)?;
    let gate = OnlineGate {
        verdict: judge::verdict(&analysis.invalid, &criteria),
        thresholds: resolved.thresholds(),
        criteria,
    };
    let exported = match export {
        Some(path) if collected.rows_with_inputs.is_empty() => {
            return Err(OnlineError::Config(format!(
                "--export-inputs {}: none of the {requests} requests read has stored inputs; the gateway keeps them with [log] store_inputs = true (up to max_input_bytes)",
                path.display()
            )))
        }
        Some(path) => {
            let with = collected.rows_with_inputs.len() as u64;
            Some(export::write(
                path,
                &collected.rows_with_inputs,
                requests - with,
            )?)
        }
        None => None,
    };
    Ok(Online {
        analysis,
        gate,
        exported,
    })
}

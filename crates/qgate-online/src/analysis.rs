//! Reading a log once into compact per-request events, then every figure from them.

use std::collections::{BTreeMap, HashMap};

use qgate_core::online::{
    bootstrap_difference, newcombe_interval, normal_quantile, smoothed_bernoulli_variance,
    two_proportion_z, welch, Moments, Msprt,
};
use qgate_core::policy::{Better, OutcomeKind, PolicyFile, Source};
use qgate_core::stats::{mcnemar_exact, percentile, percentile_select, wilson_interval, Rng};
use qgate_core::Array;
use qgate_eval::{select_scores, ModelRun, OutputKind};

use crate::figures::*;
use crate::outputs::{self, Logged};
use crate::reader::{LogReader, Query, RequestRow};
use crate::window::{format_ms, Window};
use crate::OnlineError;

/// Observations each side needs before the first sequential look: the plug-in variance of
/// a handful of values is too noisy to look at.
pub const BURN_IN: u64 = 30;

/// Resamples of the bootstrap intervals.
const RESAMPLES: usize = 400;

/// What to analyse.
#[derive(Debug, Clone)]
pub struct AnalyzeConfig {
    /// The model (`model_name`); `None` = the log's only model.
    pub model: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// `None` = about 20 windows over the span.
    pub window: Option<Window>,
    /// The score output (`--output`); `None` = chosen as `qgate compare` chooses.
    pub output: Option<String>,
    pub output_kind: Option<OutputKind>,
    pub policy: PolicyFile,
    /// Where the policy came from.
    pub policy_source: Source,
    /// `k` of the top-k agreement.
    pub top_k: usize,
    /// Seed of the bootstrap intervals.
    pub seed: u64,
    /// Read the stored inputs (for `--export-inputs`).
    pub with_inputs: bool,
}

/// A mirrored copy's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copy {
    Ok,
    Error,
    Timeout,
    Dropped,
    Missing,
    Pending,
}

impl Copy {
    fn parse(s: &str) -> Copy {
        match s {
            "ok" => Copy::Ok,
            "error" => Copy::Error,
            "timeout" => Copy::Timeout,
            "dropped" => Copy::Dropped,
            "pending" => Copy::Pending,
            _ => Copy::Missing,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Copy::Ok => "ok",
            Copy::Error => "error",
            Copy::Timeout => "timeout",
            Copy::Dropped => "dropped",
            Copy::Missing => "missing",
            Copy::Pending => "pending",
        }
    }
}

struct ShadowEvent {
    req: u32,
    copy: Copy,
    base_error: bool,
    base_ms: Option<f64>,
    cand_ms: Option<f64>,
}

struct PairedOutputs {
    req: u32,
    base: Vec<(String, Logged)>,
    cand: Vec<(String, Logged)>,
    label: Option<i64>,
}

struct ArmEvent {
    req: u32,
    candidate: bool,
    error: bool,
    ms: Option<f64>,
    weight: f64,
}

struct OutcomeEvent {
    req: u32,
    name: u32,
    candidate: bool,
    value: f64,
}

/// One read of the log, compact.
#[derive(Default)]
pub(crate) struct Collected {
    ts: Vec<i64>,
    modes: BTreeMap<String, u64>,
    refused: u64,
    errored: u64,
    shadow: Vec<ShadowEvent>,
    paired: Vec<PairedOutputs>,
    arms: Vec<ArmEvent>,
    outcome_names: Vec<String>,
    outcomes: Vec<OutcomeEvent>,
    /// Arm label predictions: (candidate, label, top-1).
    arm_labels: Vec<(bool, usize, Option<usize>)>,
    pub(crate) notes: Vec<String>,
    pub(crate) rows_with_inputs: Vec<(String, String, Option<i64>, Option<bool>)>,
}

fn ms(us: Option<i64>) -> Option<f64> {
    us.map(|u| u as f64 / 1000.0)
}

/// The score output of a parsed answer: `wanted`, else the first output of rank ≥ 2.
fn score_output<'a>(outs: &'a [(String, Logged)], wanted: Option<&str>) -> Option<&'a Logged> {
    outs.iter()
        .find(|(n, o)| match wanted {
            Some(w) => n == w,
            None => match o {
                Logged::TopK { shape, .. } => shape.len() >= 2,
                Logged::Full(a) => a.shape.len() >= 2,
            },
        })
        .map(|(_, o)| o)
}

impl Collected {
    fn outcome_id(&mut self, name: &str) -> u32 {
        match self.outcome_names.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                self.outcome_names.push(name.to_string());
                (self.outcome_names.len() - 1) as u32
            }
        }
    }

    fn push(
        &mut self,
        row: RequestRow,
        outcomes: &HashMap<String, BTreeMap<String, f64>>,
        cfg: &AnalyzeConfig,
    ) -> Result<(), OnlineError> {
        let req = self.ts.len() as u32;
        self.ts.push(row.ts_ms);
        *self.modes.entry(row.mode.clone()).or_default() += 1;
        if row.status != 200 {
            self.errored += 1;
        }
        let posted = outcomes.get(&row.request_id);
        let label = posted.and_then(|o| o.get("label")).map(|&v| v as i64);
        let parse = |text: &Option<String>,
                     side: &str|
         -> Result<Vec<(String, Logged)>, OnlineError> {
            match text {
                Some(t) => outputs::parse(t).map_err(|e| {
                    OnlineError::Data(format!("request '{}': {side} outputs: {e}", row.request_id))
                }),
                None => Ok(Vec::new()),
            }
        };
        if let Some(status) = &row.shadow_status {
            let copy = Copy::parse(status);
            self.shadow.push(ShadowEvent {
                req,
                copy,
                base_error: row.status != 200,
                base_ms: ms(row.baseline_us),
                cand_ms: ms(row.shadow_us),
            });
            if copy == Copy::Ok && row.status == 200 {
                self.paired.push(PairedOutputs {
                    req,
                    base: parse(&row.outputs, "baseline")?,
                    cand: parse(&row.shadow_outputs, "candidate")?,
                    label,
                });
            }
        } else if matches!(row.mode.as_str(), "ab" | "canary") && row.arm.is_some() {
            let candidate = row.arm.as_deref() == Some("candidate");
            self.arms.push(ArmEvent {
                req,
                candidate,
                error: row.status != 200,
                ms: ms(if candidate {
                    row.candidate_us
                } else {
                    row.baseline_us
                }),
                weight: row.weight,
            });
            if let Some(posted) = posted {
                for (name, &value) in posted {
                    if name == "label" {
                        continue;
                    }
                    let name = self.outcome_id(name);
                    self.outcomes.push(OutcomeEvent {
                        req,
                        name,
                        candidate,
                        value,
                    });
                }
            }
            if let (Some(label), 200) = (label, row.status) {
                let outs = parse(&row.outputs, "arm")?;
                if let Some(o) = score_output(&outs, cfg.output.as_deref()) {
                    let top = outputs::top1(o);
                    if top.len() == 1 && label >= 0 {
                        self.arm_labels.push((candidate, label as usize, top[0]));
                        let name = self.outcome_id("accuracy");
                        self.outcomes.push(OutcomeEvent {
                            req,
                            name,
                            candidate,
                            value: f64::from(u8::from(top[0] == Some(label as usize))),
                        });
                    }
                }
            }
        } else if row.arm.is_none() {
            self.refused += 1;
        }
        // Inputs are read only for an export.
        if let Some(inputs) = row.inputs {
            let disagrees = self.paired.last().filter(|p| p.req == req).and_then(|p| {
                let b = score_output(&p.base, cfg.output.as_deref()).map(outputs::top1)?;
                let c = score_output(&p.cand, cfg.output.as_deref()).map(outputs::top1)?;
                Some(b != c)
            });
            self.rows_with_inputs
                .push((row.request_id, inputs, label, disagrees));
        }
        Ok(())
    }
}

/// Reads what `cfg` selects from `reader`: outcomes first (joined by request id), then
/// the requests in arrival order.
pub(crate) fn collect(
    reader: &mut dyn LogReader,
    q: &Query,
    cfg: &AnalyzeConfig,
) -> Result<Collected, OnlineError> {
    let mut outcomes: HashMap<String, BTreeMap<String, f64>> = HashMap::new();
    reader.outcomes(q, &mut |o| {
        outcomes
            .entry(o.request_id)
            .or_default()
            .insert(o.name, o.value);
        Ok(())
    })?;
    let mut c = Collected::default();
    reader.requests(q, &mut |row| c.push(row, &outcomes, cfg))?;
    // The log is in commit order; the sequential looks and the windows go by arrival.
    let ts = std::mem::take(&mut c.ts);
    let at = |req: u32| ts[req as usize];
    c.shadow.sort_by_key(|e| at(e.req));
    c.paired.sort_by_key(|e| at(e.req));
    c.arms.sort_by_key(|e| at(e.req));
    c.outcomes.sort_by_key(|e| at(e.req));
    c.ts = ts;
    Ok(c)
}

/// The windows: for each request its window index, and per window `(first, last)` request
/// time and request count, in time order. Windows without requests are left out. Requests
/// are committed (and read) in about, not exactly, arrival order: a time window is found
/// by its key, never by adjacency.
fn cut(ts: &[i64], window: Window, origin: i64) -> (Vec<u32>, Vec<(i64, i64, u64)>) {
    let key = |i: usize, t: i64| match window {
        Window::Millis(w) => (t - origin).div_euclid(w.max(1)),
        Window::Requests(n) => i as i64 / n.max(1) as i64,
    };
    let keys: std::collections::BTreeSet<i64> =
        ts.iter().enumerate().map(|(i, &t)| key(i, t)).collect();
    let index: HashMap<i64, u32> = keys
        .iter()
        .enumerate()
        .map(|(k, &key)| (key, k as u32))
        .collect();
    let mut spans = vec![(i64::MAX, i64::MIN, 0u64); keys.len()];
    let of = ts
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let w = index[&key(i, t)];
            let s = &mut spans[w as usize];
            *s = (s.0.min(t), s.1.max(t), s.2 + 1);
            w
        })
        .collect();
    (of, spans)
}

/// The statistics' settings.
pub(crate) struct Stat {
    pub alpha: f64,
    pub tau: f64,
    pub seed: u64,
}

impl Stat {
    fn msprt(&self, null: f64) -> Msprt {
        Msprt::new(null, self.tau, self.alpha)
    }
}

/// A running two-sample test of proportions: one look per observation after the burn-in.
struct TwoRates {
    x: [u64; 2],
    n: [u64; 2],
    m: Msprt,
}

impl TwoRates {
    fn new(s: &Stat) -> TwoRates {
        TwoRates {
            x: [0; 2],
            n: [0; 2],
            m: s.msprt(0.0),
        }
    }
    fn push(&mut self, candidate: bool, success: bool) {
        let i = usize::from(candidate);
        self.n[i] += 1;
        self.x[i] += u64::from(success);
        if self.n[0] >= BURN_IN && self.n[1] >= BURN_IN {
            let (vb, vc) = (
                smoothed_bernoulli_variance(self.x[0], self.n[0]),
                smoothed_bernoulli_variance(self.x[1], self.n[1]),
            );
            let est = self.x[1] as f64 / self.n[1] as f64 - self.x[0] as f64 / self.n[0] as f64;
            self.m.look(
                est,
                vb / self.n[0] as f64 + vc / self.n[1] as f64,
                ((vb + vc) / 2.0).sqrt(),
            );
            self.m.clamp(-1.0, 1.0);
        }
    }
}

/// A running two-sample test of means.
struct TwoMeans {
    m: [Moments; 2],
    s: Msprt,
}

impl TwoMeans {
    fn new(s: &Stat) -> TwoMeans {
        TwoMeans {
            m: [Moments::default(); 2],
            s: Msprt::per_look(0.0, s.tau, s.alpha),
        }
    }
    fn push(&mut self, candidate: bool, x: f64) {
        self.m[usize::from(candidate)].push(x);
        let [b, c] = &self.m;
        if b.n >= BURN_IN && c.n >= BURN_IN {
            let (vb, vc) = (b.variance(), c.variance());
            self.s.look(
                c.mean - b.mean,
                vb / b.n as f64 + vc / c.n as f64,
                ((vb + vc) / 2.0).sqrt(),
            );
        }
    }
}

/// A running one-sample test of a mean (a proportion when `binary`).
struct OneMean {
    m: Moments,
    x: f64,
    binary: bool,
    s: Msprt,
}

impl OneMean {
    fn new(s: &Stat, null: f64, binary: bool) -> OneMean {
        OneMean {
            m: Moments::default(),
            x: 0.0,
            binary,
            s: if binary {
                s.msprt(null)
            } else {
                Msprt::per_look(null, s.tau, s.alpha)
            },
        }
    }
    /// A paired difference of 0/1 values (−1, 0, 1) around 0, pushed and looked at by the
    /// caller: bounded, so the running forms.
    fn paired(s: &Stat) -> OneMean {
        OneMean {
            s: s.msprt(0.0),
            ..OneMean::new(s, 0.0, false)
        }
    }

    fn push(&mut self, v: f64) {
        self.m.push(v);
        self.x += v;
        let n = self.m.n;
        if n >= BURN_IN {
            let var = if self.binary {
                smoothed_bernoulli_variance(self.x.round() as u64, n)
            } else {
                self.m.variance()
            };
            self.s.look(self.m.mean, var / n as f64, var.sqrt());
            if self.binary {
                self.s.clamp(0.0, 1.0);
            }
        }
    }
}

/// Everything read, computed: the [`Analysis`] without its judgement.
pub(crate) fn figures(
    c: &Collected,
    cfg: &AnalyzeConfig,
    stat: &Stat,
    window: Window,
    online: &OnlineThresholds,
) -> Result<(Vec<WindowFigures>, FigureSet), OnlineError> {
    let origin = cfg
        .since_ms
        .or(c.ts.iter().min().copied())
        .unwrap_or_default();
    let (win, spans) = cut(&c.ts, window, origin);
    let mut windows: Vec<WindowFigures> = spans
        .iter()
        .map(|&(a, b, n)| WindowFigures {
            start: format_ms(a),
            end: format_ms(b),
            start_ms: a,
            end_ms: b,
            requests: n,
            shadow: None,
            arms: None,
            outcomes: Vec::new(),
        })
        .collect();
    let mut notes = Vec::new();
    let shadow = if c.shadow.is_empty() {
        None
    } else {
        Some(shadow_figures(
            c,
            cfg,
            stat,
            &win,
            &mut windows,
            online,
            &mut notes,
        )?)
    };
    let arms = if c.arms.is_empty() {
        None
    } else {
        Some(arm_figures(c, stat, &win, &mut windows))
    };
    let outcomes = outcome_figures(c, cfg, stat, &win, &mut windows, &mut notes);
    Ok((
        windows,
        FigureSet {
            shadow,
            arms,
            outcomes,
            notes,
        },
    ))
}

/// The figures of one read.
pub(crate) struct FigureSet {
    pub shadow: Option<Shadow>,
    pub arms: Option<(Arms, Srm, RateDifference, LatencyDifference)>,
    pub outcomes: Vec<Outcome>,
    pub notes: Vec<String>,
}

/// Thresholds the sequential nulls of one-sample figures are taken from.
pub(crate) struct OnlineThresholds {
    pub agreement: f64,
    pub kl: f64,
    pub srm_alpha: f64,
}

fn rate(x: u64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        x as f64 / n as f64
    }
}

/// Per-row agreement and KL of the paired requests: from full outputs as `qgate compare`
/// computes them, else from the logged top-k.
struct RowFigures {
    /// Request ordinal of each compared row.
    req: Vec<u32>,
    agree: Vec<bool>,
    kl: Option<Vec<f64>>,
    top_k_agreement: Option<f64>,
    top_k: usize,
    output: Option<String>,
    output_kind: Option<String>,
    logged: &'static str,
    kl_unavailable: Option<String>,
    divergence: Vec<Divergence>,
}

fn full_side(p: &[PairedOutputs], cand: bool) -> Option<Vec<(String, Vec<Array>)>> {
    let mut by_name: Vec<(String, Vec<Array>)> = Vec::new();
    for (i, pair) in p.iter().enumerate() {
        let outs = if cand { &pair.cand } else { &pair.base };
        for (name, o) in outs {
            let Logged::Full(a) = o else { return None };
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(a.clone()),
                None if i == 0 => by_name.push((name.clone(), vec![a.clone()])),
                None => return None,
            }
        }
    }
    by_name
        .iter()
        .all(|(_, v)| v.len() == p.len())
        .then_some(by_name)
}

fn run_of(parts: Vec<(String, Vec<Array>)>) -> Result<ModelRun, String> {
    let mut outputs = Vec::new();
    for (name, arrays) in parts {
        let a = Array::concat_rows(&arrays)
            .ok_or_else(|| format!("output '{name}' changed shape or type between requests"))?;
        outputs.push((name, a));
    }
    Ok(ModelRun {
        outputs,
        seconds: 0.0,
    })
}

fn rows_from_full(
    p: &[PairedOutputs],
    cfg: &AnalyzeConfig,
) -> Result<Option<RowFigures>, OnlineError> {
    let (Some(b), Some(c)) = (full_side(p, false), full_side(p, true)) else {
        return Ok(None);
    };
    let data = |e: String| OnlineError::Data(format!("shadow outputs: {e}"));
    let (rb, rc) = (run_of(b).map_err(data)?, run_of(c).map_err(data)?);
    let sb = select_scores(&rb, cfg.output.as_deref(), cfg.output_kind).map_err(data)?;
    let sc = select_scores(&rc, Some(&sb.name), Some(sb.kind)).map_err(data)?;
    if sb.predictions.len() != sc.predictions.len() {
        return Err(data(format!(
            "output '{}' holds {} rows from the baseline and {} from the candidate",
            sb.name,
            sb.predictions.len(),
            sc.predictions.len()
        )));
    }
    let mut req = Vec::with_capacity(sb.predictions.len());
    for pair in p {
        let rows = pair
            .base
            .iter()
            .find(|(n, _)| *n == sb.name)
            .map_or(0, |(_, o)| o.rows());
        req.extend(std::iter::repeat_n(pair.req, rows));
    }
    let agree = sb
        .predictions
        .iter()
        .zip(&sc.predictions)
        .map(|(x, y)| x.is_some() && x == y)
        .collect();
    let top_k = cfg.top_k.min(sb.n_classes.max(1));
    let (kl, top_k_agreement) = match (&sb.scores, &sc.scores, &sb.probs, &sc.probs) {
        (Some(xs), Some(ys), Some(xp), Some(yp)) => (
            Some(qgate_core::divergence::kl_summary(xp, yp).0),
            Some(qgate_core::divergence::top_k_agreement(xs, ys, top_k)),
        ),
        _ => (None, None),
    };
    let divergence = rb
        .outputs
        .iter()
        .filter_map(|(name, a)| {
            let (_, b) = rc.outputs.iter().find(|(n, _)| n == name)?;
            if a.shape != b.shape {
                return None;
            }
            let t =
                qgate_core::divergence::tensor_divergence(&a.to_f64()?, &b.to_f64()?, a.row_len());
            Some(Divergence {
                output: name.clone(),
                n_values: t.n_values,
                max_abs: t.max_abs,
                mean_abs: t.mean_abs,
                cosine_mean: t.cosine_mean,
                cosine_min: t.cosine_min,
                sqnr_db: t.sqnr_db,
            })
        })
        .collect();
    let kl_unavailable = kl
        .is_none()
        .then(|| format!("output '{}' holds labels, not class scores", sb.name));
    Ok(Some(RowFigures {
        req,
        agree,
        kl,
        top_k_agreement,
        top_k,
        output: Some(sb.name.clone()),
        output_kind: Some(sb.kind.to_string()),
        logged: "full",
        kl_unavailable,
        divergence,
    }))
}

fn rows_from_topk(p: &[PairedOutputs], cfg: &AnalyzeConfig) -> RowFigures {
    let wanted = cfg.output.as_deref();
    let mut f = RowFigures {
        req: Vec::new(),
        agree: Vec::new(),
        kl: None,
        top_k_agreement: None,
        top_k: cfg.top_k,
        output: None,
        output_kind: None,
        logged: "topk",
        kl_unavailable: Some(
            "the log keeps each row's top-k only: KL needs the gateway's [log] outputs = \"full\""
                .into(),
        ),
        divergence: Vec::new(),
    };
    let (mut same_k, mut k_rows, mut logged_k) = (0u64, 0u64, usize::MAX);
    for pair in p {
        let (Some(b), Some(c)) = (
            score_output(&pair.base, wanted),
            score_output(&pair.cand, wanted),
        ) else {
            continue;
        };
        if f.output.is_none() {
            f.output = pair
                .base
                .iter()
                .find(|(_, o)| std::ptr::eq(o, b))
                .map(|(n, _)| n.clone());
        }
        let (tb, tc) = (outputs::top1(b), outputs::top1(c));
        for (x, y) in tb.iter().zip(&tc) {
            f.req.push(pair.req);
            f.agree.push(x.is_some() && x == y);
        }
        if let (Logged::TopK { top_k: kb, .. }, Logged::TopK { top_k: kc, .. }) = (b, c) {
            for (rb, rc) in kb.iter().zip(kc) {
                logged_k = logged_k.min(rb.len()).min(rc.len());
                let k = cfg.top_k.min(rb.len()).min(rc.len());
                let (mut x, mut y) = (rb[..k].to_vec(), rc[..k].to_vec());
                x.sort_unstable();
                y.sort_unstable();
                same_k += u64::from(x == y);
                k_rows += 1;
            }
        }
    }
    if k_rows > 0 {
        f.top_k = cfg.top_k.min(logged_k);
        f.top_k_agreement = Some(rate(same_k, k_rows));
    }
    f
}

/// Agreement and KL of the compared rows: the cumulative sequences, and per window the rows,
/// agreeing rows and KL moments with each sequence as of the window's last row.
struct RowSeries {
    agree_seq: OneMean,
    kl_seq: OneMean,
    per_window: BTreeMap<u32, (u64, u64, Moments)>,
    agree_snap: BTreeMap<u32, Sequential>,
    kl_snap: BTreeMap<u32, Sequential>,
}

fn row_series(rows: &RowFigures, win: &[u32], stat: &Stat, th: &OnlineThresholds) -> RowSeries {
    let mut r = RowSeries {
        agree_seq: OneMean::new(stat, th.agreement, true),
        kl_seq: OneMean::new(stat, th.kl, false),
        per_window: BTreeMap::new(),
        agree_snap: BTreeMap::new(),
        kl_snap: BTreeMap::new(),
    };
    for (i, &req) in rows.req.iter().enumerate() {
        let w = win[req as usize];
        let a = rows.agree[i];
        r.agree_seq.push(f64::from(u8::from(a)));
        let e = r.per_window.entry(w).or_default();
        e.0 += 1;
        e.1 += u64::from(a);
        if let Some(kl) = rows.kl.as_ref().map(|k| k[i]).filter(|k| !k.is_nan()) {
            r.kl_seq.push(kl);
            e.2.push(kl);
            r.kl_snap.insert(w, Sequential::from(&r.kl_seq.s));
        }
        r.agree_snap.insert(w, Sequential::from(&r.agree_seq.s));
    }
    r
}

fn shadow_figures(
    c: &Collected,
    cfg: &AnalyzeConfig,
    stat: &Stat,
    win: &[u32],
    windows: &mut [WindowFigures],
    th: &OnlineThresholds,
    notes: &mut Vec<String>,
) -> Result<Shadow, OnlineError> {
    let full = if c.paired.is_empty() {
        None
    } else {
        rows_from_full(&c.paired, cfg)?
    };
    let rows = match full {
        Some(r) => r,
        None => rows_from_topk(&c.paired, cfg),
    };
    let mut copies: BTreeMap<String, u64> = BTreeMap::new();
    for e in &c.shadow {
        *copies.entry(e.copy.name().into()).or_default() += 1;
    }
    let count = |k: Copy| copies.get(k.name()).copied().unwrap_or(0);
    let n_copies = c.shadow.len() as u64;

    let RowSeries {
        agree_seq,
        kl_seq,
        per_window,
        agree_snap,
        kl_snap,
    } = row_series(&rows, win, stat, th);
    // Error rates on the same requests, and latency of the paired ones.
    // A paired difference of 0/1 values: bounded, so the running forms with a clamp.
    let mut err_seq = OneMean::paired(stat);
    let (mut n_err, mut base_err, mut cand_err, mut discordant) = (0u64, 0u64, 0u64, 0u64);
    let mut lat: (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    let mut win_err: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut win_lat: BTreeMap<u32, [Vec<f64>; 2]> = BTreeMap::new();
    for e in &c.shadow {
        let w = win[e.req as usize];
        let cand_failed = matches!(e.copy, Copy::Error | Copy::Timeout);
        let we = win_err.entry(w).or_default();
        we.0 += 1;
        we.1 += u64::from(cand_failed);
        if matches!(e.copy, Copy::Ok | Copy::Error | Copy::Timeout) {
            n_err += 1;
            base_err += u64::from(e.base_error);
            cand_err += u64::from(cand_failed);
            discordant += u64::from(e.base_error != cand_failed);
            let d = f64::from(u8::from(cand_failed)) - f64::from(u8::from(e.base_error));
            err_seq.m.push(d);
            if err_seq.m.n >= BURN_IN {
                let var = err_seq
                    .m
                    .variance()
                    .max(smoothed_bernoulli_variance(discordant, err_seq.m.n));
                let n = err_seq.m.n as f64;
                err_seq.s.look(err_seq.m.mean, var / n, var.sqrt());
                err_seq.s.clamp(-1.0, 1.0);
            }
        }
        if e.copy == Copy::Ok && !e.base_error {
            if let (Some(b), Some(x)) = (e.base_ms, e.cand_ms) {
                lat.0.push(b);
                lat.1.push(x);
                let wl = win_lat.entry(w).or_default();
                wl[0].push(b);
                wl[1].push(x);
            }
        }
    }
    let mut win_labels = BTreeMap::new();
    let labels = paired_labels(c, cfg, stat, win, &mut win_labels, notes);
    let keys: std::collections::BTreeSet<u32> =
        per_window.keys().chain(win_err.keys()).copied().collect();
    for w in &keys {
        let (rows_w, agree_w, kl_w) = per_window.get(w).cloned().unwrap_or_default();
        let (copies_w, failed_w) = win_err.get(w).copied().unwrap_or_default();
        let p99 = |i: usize| win_lat.get(w).map_or(f64::NAN, |l| percentile(&l[i], 99.0));
        let accuracy = win_labels
            .get(w)
            .map(|&(n, b, c): &(u64, u64, u64)| [rate(b, n), rate(c, n)]);
        windows[*w as usize].shadow = Some(WindowShadow {
            rows: rows_w,
            top1_agreement: rate(agree_w, rows_w),
            kl_mean: (kl_w.n > 0).then_some(kl_w.mean),
            candidate_error_rate: rate(failed_w, copies_w),
            top1_agreement_sequential: agree_snap.get(w).copied(),
            kl_mean_sequential: kl_snap.get(w).copied(),
            baseline_p99_ms: p99(0),
            candidate_p99_ms: p99(1),
            accuracy,
        });
    }
    let n_rows = rows.agree.len() as u64;
    let agreed = rows.agree.iter().filter(|&&a| a).count() as u64;
    let z = normal_quantile(1.0 - stat.alpha / 2.0);
    let (lo, hi) = wilson_interval(agreed, n_rows, z);
    let kl = rows.kl.as_ref().map(|all| {
        // As `qgate compare`: NaN rows are left out, +∞ rows (a class the candidate gives
        // probability 0) are kept.
        let mut v: Vec<f64> = all.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let p = |q| qgate_core::stats::percentile_sorted(&v, q);
        KlFigures {
            n: v.len() as u64,
            mean: qgate_core::stats::mean(&v),
            median: p(50.0),
            p95: p(95.0),
            p99: p(99.0),
            max: v.last().copied().unwrap_or(f64::NAN),
            mean_sequential: Sequential::from(&kl_seq.s),
        }
    });
    Ok(Shadow {
        requests: n_copies,
        paired: c.paired.len() as u64,
        rows: n_rows,
        error_rate: rate(count(Copy::Error), n_copies),
        timeout_rate: rate(count(Copy::Timeout), n_copies),
        drop_rate: rate(count(Copy::Dropped), n_copies),
        missing_rate: rate(count(Copy::Missing), n_copies),
        copies,
        output: rows.output.clone(),
        outputs_logged: rows.logged.into(),
        output_kind: rows.output_kind.clone(),
        top1_agreement: rate(agreed, n_rows),
        top1_agreement_ci: [lo, hi],
        top1_agreement_sequential: Sequential::from(&agree_seq.s),
        top_k: rows.top_k,
        top_k_agreement: rows.top_k_agreement,
        kl_mean: kl.as_ref().map(|k| k.mean),
        kl,
        kl_unavailable: rows.kl_unavailable.clone(),
        divergence: rows.divergence,
        latency: paired_latency(&lat.0, &lat.1, stat),
        error_rate_increase: (n_err > 0).then(|| PairedRates {
            n: n_err,
            baseline_errors: base_err,
            candidate_errors: cand_err,
            increase: rate(cand_err, n_err) - rate(base_err, n_err),
            sequential: Sequential::from(&err_seq.s),
        }),
        labels,
    })
}

fn paired_latency(b: &[f64], c: &[f64], stat: &Stat) -> Option<PairedLatency> {
    if b.len() < 2 {
        return None;
    }
    let d: Vec<f64> = c.iter().zip(b).map(|(x, y)| x - y).collect();
    let m = Moments::of(&d);
    let (t, p, ci) = qgate_core::online::one_sample_t(&m, stat.alpha);
    let mean = m.mean;
    // Paired bootstrap of p99(candidate) − p99(baseline): pairs resampled together.
    let mut rng = Rng::new(stat.seed);
    let n = b.len();
    let (mut xb, mut xc) = (vec![0.0; n], vec![0.0; n]);
    let draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            for k in 0..n {
                let j = rng.below(n);
                xb[k] = b[j];
                xc[k] = c[j];
            }
            percentile_select(&mut xc, 99.0) - percentile_select(&mut xb, 99.0)
        })
        .collect();
    let (pb, pc) = (Percentiles::of(b), Percentiles::of(c));
    Some(PairedLatency {
        mean_difference_ms: mean,
        mean_difference: Fixed {
            test: "paired_t".into(),
            statistic: t.is_finite().then_some(t),
            p_value: p.is_finite().then_some(p),
            interval: ci,
            interval_method: "paired_t".into(),
        },
        p99_difference_ms: pc.p99 - pb.p99,
        p99_difference_ci: qgate_core::stats::percentile_interval(draws, 1.0 - stat.alpha),
        baseline: pb,
        candidate: pc,
    })
}

/// Both models' accuracy on the labelled mirrored requests; per window `(n, baseline
/// correct, candidate correct)` into `per_window`.
fn paired_labels(
    c: &Collected,
    cfg: &AnalyzeConfig,
    stat: &Stat,
    win: &[u32],
    per_window: &mut BTreeMap<u32, (u64, u64, u64)>,
    notes: &mut Vec<String>,
) -> Option<PairedLabels> {
    let (mut n, mut bc, mut cc, mut lost, mut gained) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut seq = OneMean::paired(stat);
    let mut batched = 0u64;
    for p in c.paired.iter().filter(|p| p.label.is_some()) {
        let label = p.label.and_then(|l| usize::try_from(l).ok());
        let (Some(b), Some(x)) = (
            score_output(&p.base, cfg.output.as_deref()).map(outputs::top1),
            score_output(&p.cand, cfg.output.as_deref()).map(outputs::top1),
        ) else {
            continue;
        };
        if b.len() != 1 || x.len() != 1 {
            batched += 1;
            continue;
        }
        let (rb, rc) = (
            b[0].is_some() && b[0] == label,
            x[0].is_some() && x[0] == label,
        );
        n += 1;
        bc += u64::from(rb);
        cc += u64::from(rc);
        let pw = per_window.entry(win[p.req as usize]).or_default();
        pw.0 += 1;
        pw.1 += u64::from(rb);
        pw.2 += u64::from(rc);
        lost += u64::from(rb && !rc);
        gained += u64::from(!rb && rc);
        seq.m
            .push(f64::from(u8::from(rc)) - f64::from(u8::from(rb)));
        if seq.m.n >= BURN_IN {
            let var = seq
                .m
                .variance()
                .max(smoothed_bernoulli_variance(lost + gained, seq.m.n));
            seq.s.look(seq.m.mean, var / seq.m.n as f64, var.sqrt());
            seq.s.clamp(-1.0, 1.0);
        }
    }
    if batched > 0 {
        notes.push(format!(
            "{batched} labelled requests hold several rows: a label names one class, so they are left out of the accuracy"
        ));
    }
    (n > 0).then(|| PairedLabels {
        n,
        baseline_accuracy: rate(bc, n),
        candidate_accuracy: rate(cc, n),
        difference: rate(cc, n) - rate(bc, n),
        mcnemar_p: mcnemar_exact(lost, gained),
        sequential: Sequential::from(&seq.s),
    })
}

fn arm_figures(
    c: &Collected,
    stat: &Stat,
    win: &[u32],
    windows: &mut [WindowFigures],
) -> (Arms, Srm, RateDifference, LatencyDifference) {
    let mut seq = TwoRates::new(stat);
    let (mut n, mut err) = ([0u64; 2], [0u64; 2]);
    let mut lat: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut expected = [0.0f64; 2];
    #[derive(Default)]
    struct W {
        n: [u64; 2],
        err: [u64; 2],
        lat: [Vec<f64>; 2],
        weight: f64,
        seq: Option<Sequential>,
    }
    let mut per: BTreeMap<u32, W> = BTreeMap::new();
    for e in &c.arms {
        let i = usize::from(e.candidate);
        n[i] += 1;
        err[i] += u64::from(e.error);
        expected[0] += 1.0 - e.weight;
        expected[1] += e.weight;
        seq.push(e.candidate, e.error);
        let w = per.entry(win[e.req as usize]).or_default();
        w.n[i] += 1;
        w.err[i] += u64::from(e.error);
        w.weight += e.weight;
        if let (Some(ms), false) = (e.ms, e.error) {
            lat[i].push(ms);
            w.lat[i].push(ms);
        }
        w.seq = Some(Sequential::from(&seq.m));
    }
    for (k, w) in per {
        let total = (w.n[0] + w.n[1]).max(1) as f64;
        windows[k as usize].arms = Some(WindowArms {
            baseline_requests: w.n[0],
            candidate_requests: w.n[1],
            baseline_error_rate: rate(w.err[0], w.n[0]),
            candidate_error_rate: rate(w.err[1], w.n[1]),
            baseline_p99_ms: percentile(&w.lat[0], 99.0),
            candidate_p99_ms: percentile(&w.lat[1], 99.0),
            weight: w.weight / total,
            srm_p_value: qgate_core::online::chi_square_gof(
                &[w.n[0] as f64, w.n[1] as f64],
                &[total - w.weight, w.weight],
            )
            .p_value,
            error_rate_sequential: w.seq.unwrap_or_else(|| Sequential::from(&seq.m)),
        });
    }
    let z = normal_quantile(1.0 - stat.alpha / 2.0);
    let arm = |i: usize| {
        let (lo, hi) = wilson_interval(err[i], n[i], z);
        Arm {
            requests: n[i],
            errors: err[i],
            error_rate: rate(err[i], n[i]),
            error_rate_ci: [lo, hi],
            latency: Percentiles::of(&lat[i]),
            accuracy: arm_accuracy(&c.arm_labels, i == 1),
        }
    };
    let chi = qgate_core::online::chi_square_gof(&[n[0] as f64, n[1] as f64], &expected);
    let srm = Srm {
        observed: n,
        expected,
        statistic: chi.statistic,
        p_value: chi.p_value,
        alpha: f64::NAN,
        mismatch: false,
    };
    let zt = two_proportion_z(err[1], n[1], err[0], n[0]);
    let diff = RateDifference {
        increase: rate(err[1], n[1]) - rate(err[0], n[0]),
        fixed: Fixed {
            test: "two_proportion_z".into(),
            statistic: zt.statistic.is_finite().then_some(zt.statistic),
            p_value: zt.p_value.is_finite().then_some(zt.p_value),
            interval: newcombe_interval(err[1], n[1], err[0], n[0], stat.alpha),
            interval_method: "newcombe".into(),
        },
        sequential: Sequential::from(&seq.m),
    };
    let (mb, mc) = (Moments::of(&lat[0]), Moments::of(&lat[1]));
    let w = welch(&mc, &mb, stat.alpha);
    let latency = LatencyDifference {
        p99_increase_ms: percentile(&lat[1], 99.0) - percentile(&lat[0], 99.0),
        p99_increase_ci: bootstrap_difference(
            &lat[1],
            &lat[0],
            |v| percentile_select(v, 99.0),
            RESAMPLES,
            1.0 - stat.alpha,
            stat.seed,
        ),
        mean_increase_ms: w.difference,
        mean: welch_fixed(&w),
    };
    (
        Arms {
            baseline: arm(0),
            candidate: arm(1),
        },
        srm,
        diff,
        latency,
    )
}

fn welch_fixed(w: &qgate_core::online::Welch) -> Fixed {
    Fixed {
        test: "welch_t".into(),
        statistic: w.statistic.is_finite().then_some(w.statistic),
        p_value: w.p_value.is_finite().then_some(w.p_value),
        interval: w.interval,
        interval_method: "welch_t".into(),
    }
}

fn arm_accuracy(labels: &[(bool, usize, Option<usize>)], candidate: bool) -> Option<ArmAccuracy> {
    let mine: Vec<&(bool, usize, Option<usize>)> =
        labels.iter().filter(|l| l.0 == candidate).collect();
    if mine.is_empty() {
        return None;
    }
    // Classes are the labels and predictions present (scikit-learn's macro average), counted
    // in a map: a label is whatever number a client posted.
    let mut counts: BTreeMap<usize, [u64; 3]> = BTreeMap::new();
    let mut correct = 0u64;
    for &&(_, y, p) in &mine {
        counts.entry(y).or_default()[2] += 1;
        if let Some(p) = p {
            counts.entry(p).or_default()[1] += 1;
            if p == y {
                counts.entry(y).or_default()[0] += 1;
                correct += 1;
            }
        }
    }
    let col = |k: usize| counts.values().map(|c| c[k]).collect::<Vec<u64>>();
    let (tp, pred, sup) = (col(0), col(1), col(2));
    Some(ArmAccuracy {
        n: mine.len() as u64,
        accuracy: rate(correct, mine.len() as u64),
        macro_f1: qgate_core::metrics::macro_f1_from_counts(&tp, &pred, &sup),
    })
}

fn outcome_figures(
    c: &Collected,
    cfg: &AnalyzeConfig,
    stat: &Stat,
    win: &[u32],
    windows: &mut [WindowFigures],
    notes: &mut Vec<String>,
) -> Vec<Outcome> {
    let routed = [
        c.arms.iter().filter(|e| !e.candidate).count() as u64,
        c.arms.iter().filter(|e| e.candidate).count() as u64,
    ];
    let mut names: Vec<(u32, &String)> = c
        .outcome_names
        .iter()
        .enumerate()
        .map(|(i, n)| (i as u32, n))
        .collect();
    names.sort_by(|a, b| a.1.cmp(b.1));
    let mut out = Vec::new();
    for (id, name) in names {
        let events: Vec<&OutcomeEvent> = c.outcomes.iter().filter(|e| e.name == id).collect();
        let declared = cfg.policy.outcomes.get(name.as_str());
        let all01 = events.iter().all(|e| e.value == 0.0 || e.value == 1.0);
        let (kind, kind_from) = match declared.and_then(|d| d.kind) {
            Some(k) => (k, "policy"),
            None if name == "accuracy" => (OutcomeKind::Binary, "labels"),
            None if all01 => (OutcomeKind::Binary, "values"),
            None => (OutcomeKind::Continuous, "values"),
        };
        let better = declared.map(|d| d.better).unwrap_or_default();
        let mut rates = TwoRates::new(stat);
        let mut means = TwoMeans::new(stat);
        let mut vals: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut per: BTreeMap<u32, ([Moments; 2], Sequential)> = BTreeMap::new();
        let mut not01 = 0u64;
        for e in &events {
            let i = usize::from(e.candidate);
            // A binary outcome is a proportion: a declared-binary value other than 0/1
            // counts as 1 from 0.5 on (and is said).
            let value = match kind {
                OutcomeKind::Binary => {
                    not01 += u64::from(e.value != 0.0 && e.value != 1.0);
                    f64::from(u8::from(e.value >= 0.5))
                }
                OutcomeKind::Continuous => e.value,
            };
            vals[i].push(value);
            let seq = match kind {
                OutcomeKind::Binary => {
                    rates.push(e.candidate, e.value >= 0.5);
                    Sequential::from(&rates.m)
                }
                OutcomeKind::Continuous => {
                    means.push(e.candidate, e.value);
                    Sequential::from(&means.s)
                }
            };
            let w = per
                .entry(win[e.req as usize])
                .or_insert_with(|| ([Moments::default(); 2], seq));
            w.0[i].push(value);
            w.1 = seq;
        }
        if not01 > 0 {
            notes.push(format!(
                "outcome `{name}` is binary, but {not01} of its values were neither 0 nor 1: each counted as 1 from 0.5 on"
            ));
        }
        for (w, (m, seq)) in per {
            windows[w as usize].outcomes.push(WindowOutcome {
                name: name.clone(),
                difference: if m[0].n > 0 && m[1].n > 0 {
                    m[1].mean - m[0].mean
                } else {
                    f64::NAN
                },
                n: [m[0].n, m[1].n],
                sequential: seq,
            });
        }
        let (mb, mc) = (Moments::of(&vals[0]), Moments::of(&vals[1]));
        let (fixed, boot, seq) = match kind {
            OutcomeKind::Binary => {
                let x = |v: &[f64]| v.iter().filter(|&&x| x >= 0.5).count() as u64;
                let (xb, xc) = (x(&vals[0]), x(&vals[1]));
                let (nb, nc) = (mb.n, mc.n);
                let t = two_proportion_z(xc, nc, xb, nb);
                (
                    Fixed {
                        test: "two_proportion_z".into(),
                        statistic: t.statistic.is_finite().then_some(t.statistic),
                        p_value: t.p_value.is_finite().then_some(t.p_value),
                        interval: newcombe_interval(xc, nc, xb, nb, stat.alpha),
                        interval_method: "newcombe".into(),
                    },
                    None,
                    Sequential::from(&rates.m),
                )
            }
            OutcomeKind::Continuous => (
                welch_fixed(&welch(&mc, &mb, stat.alpha)),
                Some(bootstrap_difference(
                    &vals[1],
                    &vals[0],
                    |v| qgate_core::stats::mean(v),
                    RESAMPLES,
                    1.0 - stat.alpha,
                    stat.seed ^ u64::from(id),
                )),
                Sequential::from(&means.s),
            ),
        };
        out.push(Outcome {
            name: name.clone(),
            kind: match kind {
                OutcomeKind::Binary => "binary",
                OutcomeKind::Continuous => "continuous",
            }
            .into(),
            kind_from: kind_from.into(),
            better: match better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            }
            .into(),
            baseline: OutcomeSide {
                n: mb.n,
                mean: if mb.n > 0 { mb.mean } else { f64::NAN },
                missing: routed[0].saturating_sub(mb.n),
            },
            candidate: OutcomeSide {
                n: mc.n,
                mean: if mc.n > 0 { mc.mean } else { f64::NAN },
                missing: routed[1].saturating_sub(mc.n),
            },
            difference: if mb.n > 0 && mc.n > 0 {
                mc.mean - mb.mean
            } else {
                f64::NAN
            },
            fixed,
            bootstrap_ci: boot,
            sequential: seq,
        });
    }
    out
}

/// The number of requests that errored, and the number read.
pub(crate) fn error_counts(c: &Collected) -> (u64, u64) {
    (c.errored, c.ts.len() as u64)
}

/// First and last request time.
pub(crate) fn span(c: &Collected) -> Option<(i64, i64)> {
    Some((*c.ts.iter().min()?, *c.ts.iter().max()?))
}

/// Requests per mode and refused requests.
pub(crate) fn modes(c: &Collected) -> (BTreeMap<String, u64>, u64) {
    (c.modes.clone(), c.refused)
}

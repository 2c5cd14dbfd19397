//! `gateway.toml`: read once, validated into a [`GatewayConfig`] whose every field is usable
//! as is (paths resolved against the file's folder, tokens read from the environment the
//! caller passes in, ranges checked). Errors name the file, the key and what was expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qgate_runtime::{ModelSpec, SpecKind};
use serde::Deserialize;

use crate::ServeError;

/// How traffic is split between the two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The baseline answers every request; the candidate gets a copy whose answer is only logged.
    Shadow,
    /// A fixed weighted split, sticky per user.
    Ab,
    /// The split follows a ramp of steps an operator advances, holds or rolls back.
    Canary,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shadow => "shadow",
            Mode::Ab => "ab",
            Mode::Canary => "canary",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "shadow" => Some(Mode::Shadow),
            "ab" => Some(Mode::Ab),
            "canary" => Some(Mode::Canary),
            _ => None,
        }
    }
}

/// When a committed record is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`: survives a crash of the gateway process (`kill -9`);
    /// the last commits may be lost if the machine loses power.
    Normal,
    /// WAL with `synchronous = FULL`: every group commit is fsynced; survives power loss.
    Fsync,
}

/// What the log keeps of each output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputLog {
    /// The top-k class indices and scores of each row of floating-point outputs; integer and
    /// text outputs in full.
    Topk,
    /// Every value.
    Full,
}

/// Largest count a config may give (queue lengths, workers, byte limits stay far below).
const MAX_COUNT: usize = 1 << 40;
/// Most model instances (threads) an arm may have.
const MAX_THREADS: usize = 256;
/// Longest time a config may give: one day.
const MAX_MILLIS: u64 = 86_400_000;

/// Defaults, one place (the docs and `--help` quote them).
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const SHADOW_QUEUE: usize = 1000;
    pub const SHADOW_CONCURRENCY: usize = 1;
    pub const SHADOW_TIMEOUT_MS: u64 = 30_000;
    pub const STICKY_HEADER: &str = "x-user-id";
    pub const CANARY_STEPS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];
    pub const CANARY_MIN_REQUESTS: u64 = 200;
    pub const CANARY_MIN_STEP_SECONDS: f64 = 60.0;
    pub const CANARY_MAX_HOLDS: u32 = 10;
    pub const LOG_URL: &str = "sqlite://qgate-log.db";
    pub const TOP_K: usize = 5;
    pub const MAX_INPUT_BYTES: usize = 64 * 1024;
    pub const BODY_LIMIT_BYTES: usize = 64 * 1024 * 1024;
    pub const BACKEND_TIMEOUT_MS: u64 = 30_000;
    pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
    pub const GROUP_COMMIT_MAX: usize = 512;
    pub const PG_POOL: usize = 2;
    pub const STATE_POLL_MS: u64 = 500;
    pub const CONNECT_TIMEOUT_MS: u64 = 5000;
    pub const BACKLOG: usize = 100_000;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    grpc_listen: Option<String>,
    allow_non_loopback: Option<bool>,
    model_name: Option<String>,
    mode: Option<Mode>,
    baseline: Option<String>,
    candidate: Option<String>,
    workers: Option<usize>,
    models: Option<Vec<RawModel>>,
    backend_timeout_ms: Option<u64>,
    body_limit_bytes: Option<usize>,
    shutdown_grace_ms: Option<u64>,
    outcome_token_env: Option<String>,
    shadow: Option<RawShadow>,
    ab: Option<RawAb>,
    canary: Option<RawCanary>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    admin: RawAdmin,
    tls: Option<RawTls>,
}

/// One `[[models]]` table: a model the gateway serves, with its own pair, mode and split.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    model_name: String,
    mode: Mode,
    baseline: String,
    candidate: String,
    workers: Option<usize>,
    #[serde(default)]
    shadow: RawShadow,
    #[serde(default)]
    ab: RawAb,
    #[serde(default)]
    canary: RawCanary,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: String,
    key: String,
    client_ca: Option<String>,
}

/// TLS on the listener: PEM files, resolved against the config's folder (read at start and
/// by `--check-config`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With mutual TLS: the CA that signs the client certificates the admin and outcome
    /// endpoints require.
    pub client_ca: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShadow {
    queue: Option<usize>,
    concurrency: Option<usize>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAb {
    candidate_weight: Option<f64>,
    sticky_header: Option<String>,
    hash_seed: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    steps: Option<Vec<f64>>,
    auto: Option<bool>,
    policy: Option<String>,
    min_requests_per_step: Option<u64>,
    min_step_seconds: Option<f64>,
    max_holds: Option<u32>,
    on_max_holds: Option<OnMaxHolds>,
    decisions_dir: Option<String>,
    notify_url: Option<String>,
}

/// What the canary controller does when a step stayed inconclusive `max_holds` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMaxHolds {
    /// Weight 0 from the next request: no evidence in time is not a pass.
    Rollback,
    /// Stay at the step, and hold the ramp for an operator.
    Hold,
}

/// `[canary] auto = true`: the controller that promotes, holds or rolls back on the
/// evidence of `qgate analyze`'s statistics over each step's requests.
#[derive(Debug, Clone)]
pub struct CanaryAuto {
    /// The live-traffic policy each step is judged with (`[canary] policy`, relative to the
    /// config file; the defaults otherwise).
    pub policy: qgate_core::policy::PolicyFile,
    pub policy_source: qgate_core::policy::Source,
    /// Requests a step needs before it is judged.
    pub min_requests_per_step: u64,
    /// Time a step lasts at least.
    pub min_step: Duration,
    /// Inconclusive judgements a step may take before `on_max_holds`.
    pub max_holds: u32,
    pub on_max_holds: OnMaxHolds,
    /// Where each decision is written as JSON (relative to the config file).
    pub decisions_dir: Option<PathBuf>,
    /// Each decision record is POSTed here.
    pub notify_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    url: Option<String>,
    url_env: Option<String>,
    on_log_failure: Option<OnLogFailure>,
    pool: Option<usize>,
    state_poll_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    backlog: Option<usize>,
    durability: Option<Durability>,
    outputs: Option<OutputLog>,
    top_k: Option<usize>,
    store_inputs: Option<bool>,
    max_input_bytes: Option<usize>,
    retain_days: Option<f64>,
    retain_max_mb: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token_env: Option<String>,
}

/// The split between the arms.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// The fraction of users sent to the candidate in `ab` mode, in [0, 1].
    pub candidate_weight: f64,
    /// The header whose value keeps a user on one arm (lower case).
    pub sticky_header: String,
    /// Keys the sticky hash; changing it reshuffles every user.
    pub hash_seed: String,
    /// Canary ramp, percent of users, strictly increasing, each in (0, 100].
    pub canary_steps: Vec<f64>,
    /// The automatic canary, when `[canary] auto = true`.
    pub canary_auto: Option<CanaryAuto>,
}

/// What the gateway does with a request whose record cannot be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLogFailure {
    /// Answer 503 (and turn unready): the gateway answers only what it logged.
    Reject,
    /// Answer anyway, count it, and keep the record in a bounded backlog that is written
    /// once the database is back.
    ServeUnlogged,
}

/// The log's database.
#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    /// A SQLite file (one gateway).
    Sqlite(PathBuf),
    /// A PostgreSQL database several replicas share; `url` may hold a password.
    Postgres { url: String },
}

impl std::fmt::Display for LogTarget {
    /// The file, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogTarget::Sqlite(p) => write!(f, "{}", p.display()),
            LogTarget::Postgres { url } => f.write_str(&redact(url)),
        }
    }
}

pub use qgate_online::redact;

/// Where and how requests are logged.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// The database.
    pub target: LogTarget,
    pub on_failure: OnLogFailure,
    /// Writer connections (PostgreSQL; SQLite has one writer). The watcher has one more.
    pub pool: usize,
    /// How often the watcher reads the shared admin state (the longest a replica acts on a
    /// state another replica has replaced).
    pub state_poll: Duration,
    pub connect_timeout: Duration,
    /// Records served unlogged (`serve_unlogged`) kept for writing once the database is back.
    pub backlog: usize,
    pub durability: Durability,
    pub outputs: OutputLog,
    pub top_k: usize,
    /// Keep request inputs (as V2 JSON) when they are at most `max_input_bytes`.
    pub store_inputs: bool,
    pub max_input_bytes: usize,
    /// Delete records older than this.
    pub retain: Option<Duration>,
    /// Delete the oldest records while the database is larger than this.
    pub retain_max_bytes: Option<u64>,
    /// Most records written in one transaction.
    pub group_commit_max: usize,
}

/// One model the gateway serves: its name, pair, mode, pools and split.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// What clients call: `/v2/models/NAME/infer`.
    pub name: String,
    /// The mode a new log starts with (afterwards the admin state in the log rules).
    pub mode: Mode,
    pub baseline: ModelSpec,
    pub candidate: ModelSpec,
    /// Model instances per arm, each on its own thread (`None`: the number of cores).
    pub workers: Option<usize>,
    pub shadow_queue: usize,
    pub shadow_concurrency: usize,
    pub shadow_timeout: Duration,
    pub split: SplitConfig,
}

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The file it came from (for messages).
    pub source: PathBuf,
    pub listen: SocketAddr,
    /// The V2 gRPC service's address; `None`: no gRPC.
    pub grpc_listen: Option<SocketAddr>,
    /// The models served: the top-level keys' one, or each `[[models]]` table's.
    pub models: Vec<ModelConfig>,
    pub backend_timeout: Duration,
    pub body_limit_bytes: usize,
    pub shutdown_grace: Duration,
    pub log: LogConfig,
    /// The admin bearer token; `None` disables the admin endpoints (404).
    pub admin_token: Option<String>,
    /// The token `POST …/outcome` needs; `None`: outcomes need none.
    pub outcome_token: Option<String>,
    /// TLS on the listener; `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
}

fn bad(source: &Path, key: &str, message: impl std::fmt::Display) -> ServeError {
    ServeError::Config {
        path: source.to_path_buf(),
        message: format!("`{key}`: {message}"),
    }
}

impl GatewayConfig {
    /// Reads and validates `path`. `env` looks up environment variables (the tokens named by
    /// `token_env` keys); `listen` (the `--listen` flag) replaces the file's address.
    pub fn load(
        path: &Path,
        listen: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ServeError> {
        let text = read_regular(path)?;
        GatewayConfig::parse(&text, path, listen, env)
    }

    /// Validates the text of a gateway config that came from `path`.
    pub fn parse(
        text: &str,
        path: &Path,
        listen: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, ServeError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ServeError::Config {
            path: path.to_path_buf(),
            message: qgate_core::policy::toml_error(text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let listen = listen_addr(path, &raw, listen)?;
        let grpc_listen = match &raw.grpc_listen {
            Some(text) => Some(address(path, &raw, "grpc_listen", text)?),
            None => None,
        };
        let token = |key: &str, var: &Option<String>| -> Result<Option<String>, ServeError> {
            let Some(var) = var else { return Ok(None) };
            match env(var) {
                Some(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
                _ => Err(bad(
                    path,
                    key,
                    format!("names the environment variable {var}, which is not set or empty"),
                )),
            }
        };
        let count = |key: &str, v: Option<usize>, default: usize| count(path, key, v, default);
        let millis = |key: &str, v: Option<u64>, default: u64| millis(path, key, v, default);
        let models = model_tables(path, &mut raw)?
            .into_iter()
            .map(|(prefix, m)| model_config(path, base, &prefix, m))
            .collect::<Result<Vec<_>, ServeError>>()?;
        for (i, m) in models.iter().enumerate() {
            if models[..i].iter().any(|o| o.name == m.name) {
                return Err(bad(
                    path,
                    "models",
                    format!(
                        "two models are named '{}'; each needs its own model_name",
                        m.name
                    ),
                ));
            }
        }
        Ok(GatewayConfig {
            source: path.to_path_buf(),
            listen,
            grpc_listen,
            models,
            backend_timeout: millis(
                "backend_timeout_ms",
                raw.backend_timeout_ms,
                defaults::BACKEND_TIMEOUT_MS,
            )?,
            body_limit_bytes: count(
                "body_limit_bytes",
                raw.body_limit_bytes,
                defaults::BODY_LIMIT_BYTES,
            )?,
            shutdown_grace: match raw.shutdown_grace_ms {
                Some(n) if n > MAX_MILLIS => {
                    return Err(bad(
                        path,
                        "shutdown_grace_ms",
                        format!("expected at most {MAX_MILLIS} ms"),
                    ))
                }
                n => Duration::from_millis(n.unwrap_or(defaults::SHUTDOWN_GRACE_MS)),
            },
            log: log_config(path, base, raw.log, env)?,
            admin_token: token("admin.token_env", &raw.admin.token_env)?,
            outcome_token: token("outcome_token_env", &raw.outcome_token_env)?,
            tls: raw.tls.map(|t| {
                let at = |p: String| {
                    let p = PathBuf::from(p);
                    if p.is_relative() {
                        base.join(p)
                    } else {
                        p
                    }
                };
                TlsConfig {
                    cert: at(t.cert),
                    key: at(t.key),
                    client_ca: t.client_ca.map(at),
                }
            }),
        })
    }
}

/// One model's validated config; `prefix` names its table in messages (`models[1].`).
fn model_config(
    path: &Path,
    base: &Path,
    prefix: &str,
    m: RawModel,
) -> Result<ModelConfig, ServeError> {
    let key = |k: &str| format!("{prefix}{k}");
    let count = |key: &str, v: Option<usize>, default: usize| count(path, key, v, default);
    let name = m.model_name.trim().to_string();
    if name.is_empty() || name.contains('/') || name.contains(char::is_whitespace) {
        return Err(bad(
            path,
            &key("model_name"),
            "expected a name without '/' or spaces, as clients use it in \
             /v2/models/NAME",
        ));
    }
    for (k, v) in [
        ("workers", m.workers),
        ("shadow.concurrency", m.shadow.concurrency),
    ] {
        if v.is_some_and(|n| n > MAX_THREADS) {
            return Err(bad(
                path,
                &key(k),
                format!("expected at most {MAX_THREADS} threads"),
            ));
        }
    }
    Ok(ModelConfig {
        name,
        mode: m.mode,
        baseline: spec(path, base, &key("baseline"), &m.baseline)?,
        candidate: spec(path, base, &key("candidate"), &m.candidate)?,
        workers: m
            .workers
            .map(|w| count(&key("workers"), Some(w), 1))
            .transpose()?,
        shadow_queue: count(&key("shadow.queue"), m.shadow.queue, defaults::SHADOW_QUEUE)?,
        shadow_concurrency: count(
            &key("shadow.concurrency"),
            m.shadow.concurrency,
            defaults::SHADOW_CONCURRENCY,
        )?,
        shadow_timeout: millis(
            path,
            &key("shadow.timeout_ms"),
            m.shadow.timeout_ms,
            defaults::SHADOW_TIMEOUT_MS,
        )?,
        split: split_config(path, base, prefix, m.ab, m.canary)?,
    })
}

/// A count in 1..=MAX_COUNT, else `default` when not given.
fn count(path: &Path, key: &str, v: Option<usize>, default: usize) -> Result<usize, ServeError> {
    match v {
        Some(n) if !(1..=MAX_COUNT).contains(&n) => Err(bad(
            path,
            key,
            format!("expected a whole number from 1 to {MAX_COUNT}"),
        )),
        v => Ok(v.unwrap_or(default)),
    }
}

/// Milliseconds in 1..=MAX_MILLIS, else `default` when not given.
fn millis(path: &Path, key: &str, v: Option<u64>, default: u64) -> Result<Duration, ServeError> {
    match v {
        Some(n) if !(1..=MAX_MILLIS).contains(&n) => Err(bad(
            path,
            key,
            format!("expected milliseconds from 1 to {MAX_MILLIS} (one day)"),
        )),
        v => Ok(Duration::from_millis(v.unwrap_or(default))),
    }
}

/// The address to bind: `--listen`, else the file's `listen`, else the default; beyond
/// loopback only with `allow_non_loopback`.
fn listen_addr(path: &Path, raw: &RawConfig, flag: Option<&str>) -> Result<SocketAddr, ServeError> {
    let (key, text) = match flag {
        Some(l) => ("--listen", l.to_string()),
        None => (
            "listen",
            raw.listen.clone().unwrap_or(defaults::LISTEN.into()),
        ),
    };
    address(path, raw, key, &text)
}

/// An address to bind; beyond loopback only with `allow_non_loopback`.
fn address(path: &Path, raw: &RawConfig, key: &str, text: &str) -> Result<SocketAddr, ServeError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        bad(
            path,
            key,
            format!("'{text}' is not an address such as 127.0.0.1:8080"),
        )
    })?;
    if !addr.ip().is_loopback() && !raw.allow_non_loopback.unwrap_or(false) {
        return Err(bad(
            path,
            key,
            format!(
                "{addr} is reachable from other machines; set `allow_non_loopback = true` \
                 to serve beyond this host"
            ),
        ));
    }
    Ok(addr)
}

/// The model tables: `[[models]]`, or the top-level keys as one model (not both). Each with
/// the prefix its keys are named by in messages (`models[1].` or nothing).
fn model_tables(path: &Path, raw: &mut RawConfig) -> Result<Vec<(String, RawModel)>, ServeError> {
    let top_level = raw.model_name.is_some()
        || raw.mode.is_some()
        || raw.baseline.is_some()
        || raw.candidate.is_some()
        || raw.workers.is_some()
        || raw.shadow.is_some()
        || raw.ab.is_some()
        || raw.canary.is_some();
    match raw.models.take() {
        Some(_) if top_level => Err(bad(
            path,
            "models",
            "give each model's keys (model_name, mode, baseline, candidate, workers, shadow, \
             ab, canary) in its [[models]] table, none at the top level",
        )),
        Some(ms) if ms.is_empty() => Err(bad(path, "models", "lists no model")),
        Some(ms) => Ok(ms
            .into_iter()
            .enumerate()
            .map(|(i, m)| (format!("models[{i}]."), m))
            .collect()),
        None => {
            let missing = |k: &str| bad(path, k, "missing (or give [[models]] tables)");
            Ok(vec![(
                String::new(),
                RawModel {
                    model_name: raw.model_name.take().ok_or_else(|| missing("model_name"))?,
                    mode: raw.mode.take().ok_or_else(|| missing("mode"))?,
                    baseline: raw.baseline.take().ok_or_else(|| missing("baseline"))?,
                    candidate: raw.candidate.take().ok_or_else(|| missing("candidate"))?,
                    workers: raw.workers.take(),
                    shadow: raw.shadow.take().unwrap_or_default(),
                    ab: raw.ab.take().unwrap_or_default(),
                    canary: raw.canary.take().unwrap_or_default(),
                },
            )])
        }
    }
}

fn split_config(
    path: &Path,
    base: &Path,
    prefix: &str,
    ab: RawAb,
    mut canary: RawCanary,
) -> Result<SplitConfig, ServeError> {
    let canary_auto = canary_auto(path, base, prefix, &mut canary)?;
    let weight = ab.candidate_weight.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&weight) {
        return Err(bad(
            path,
            &format!("{prefix}ab.candidate_weight"),
            format!("{weight} is not a fraction in [0, 1] (0.1 sends 10 % of users)"),
        ));
    }
    let steps = canary
        .steps
        .unwrap_or_else(|| defaults::CANARY_STEPS.to_vec());
    check_steps(path, prefix, &steps)?;
    let sticky_header = ab
        .sticky_header
        .unwrap_or(defaults::STICKY_HEADER.into())
        .to_ascii_lowercase();
    if sticky_header.is_empty()
        || axum::http::HeaderName::from_bytes(sticky_header.as_bytes()).is_err()
    {
        return Err(bad(
            path,
            &format!("{prefix}ab.sticky_header"),
            "expected an HTTP header name",
        ));
    }
    Ok(SplitConfig {
        candidate_weight: weight,
        sticky_header,
        hash_seed: ab.hash_seed.unwrap_or_else(|| "qgate".into()),
        canary_steps: steps,
        canary_auto,
    })
}

/// `[canary]`'s controller keys: all of them only with `auto = true`, each checked.
fn canary_auto(
    path: &Path,
    base: &Path,
    prefix: &str,
    c: &mut RawCanary,
) -> Result<Option<CanaryAuto>, ServeError> {
    let key = |k: &str| format!("{prefix}canary.{k}");
    if c.auto != Some(true) {
        let set = [
            ("policy", c.policy.is_some()),
            ("min_requests_per_step", c.min_requests_per_step.is_some()),
            ("min_step_seconds", c.min_step_seconds.is_some()),
            ("max_holds", c.max_holds.is_some()),
            ("on_max_holds", c.on_max_holds.is_some()),
            ("decisions_dir", c.decisions_dir.is_some()),
            ("notify_url", c.notify_url.is_some()),
        ];
        if let Some((k, _)) = set.iter().find(|(_, s)| *s) {
            return Err(bad(
                path,
                &key(k),
                "is a setting of the automatic canary: set `auto = true` too",
            ));
        }
        return Ok(None);
    }
    let (policy, policy_source) = match c.policy.take() {
        Some(p) => {
            let file = base.join(&p);
            let text = read_regular(&file).map_err(|e| bad(path, &key("policy"), e))?;
            let origin = file.display().to_string();
            let parsed = qgate_core::policy::PolicyFile::parse(&text, &origin)
                .map_err(|e| bad(path, &key("policy"), e))?;
            (parsed, qgate_core::policy::Source::File(origin))
        }
        None => (
            qgate_core::policy::PolicyFile::default(),
            qgate_core::policy::Source::Default,
        ),
    };
    let min_requests_per_step = c
        .min_requests_per_step
        .unwrap_or(defaults::CANARY_MIN_REQUESTS);
    if min_requests_per_step == 0 {
        return Err(bad(
            path,
            &key("min_requests_per_step"),
            "must be at least 1: a step without traffic is never promoted",
        ));
    }
    let secs = c
        .min_step_seconds
        .unwrap_or(defaults::CANARY_MIN_STEP_SECONDS);
    if !(0.0..=86_400.0 * 30.0).contains(&secs) {
        return Err(bad(
            path,
            &key("min_step_seconds"),
            format!("{secs} is not a number of seconds in [0, 2592000]"),
        ));
    }
    let notify_url = c.notify_url.take();
    if let Some(u) = &notify_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(bad(
                path,
                &key("notify_url"),
                format!("'{u}' is not an http(s):// URL"),
            ));
        }
    }
    Ok(Some(CanaryAuto {
        policy,
        policy_source,
        min_requests_per_step,
        min_step: Duration::from_secs_f64(secs),
        max_holds: c.max_holds.unwrap_or(defaults::CANARY_MAX_HOLDS),
        on_max_holds: c.on_max_holds.unwrap_or(OnMaxHolds::Rollback),
        decisions_dir: c.decisions_dir.take().map(|d| base.join(d)),
        notify_url,
    }))
}

fn read_regular(path: &Path) -> Result<String, ServeError> {
    let cannot = |message: String| ServeError::Config {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| cannot(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(cannot("is not a regular file".into()));
    }
    std::fs::read_to_string(path).map_err(|e| cannot(format!("cannot read: {e}")))
}

/// A model spec with its file resolved against the config's folder.
fn spec(path: &Path, base: &Path, key: &str, raw: &str) -> Result<ModelSpec, ServeError> {
    let mut s = ModelSpec::parse(raw).map_err(|e| bad(path, key, e))?;
    let resolve = |p: &PathBuf| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.clone()
        }
    };
    s.kind = match &s.kind {
        SpecKind::Tract(p) => SpecKind::Tract(resolve(p)),
        SpecKind::Ort(p) => SpecKind::Ort(resolve(p)),
        SpecKind::Preds(_) => {
            return Err(bad(
                path,
                key,
                "saved predictions (preds:) cannot answer live requests; name a model file \
                 or a V2 server URL",
            ))
        }
        other => other.clone(),
    };
    Ok(s)
}

fn check_steps(path: &Path, prefix: &str, steps: &[f64]) -> Result<(), ServeError> {
    let ok = !steps.is_empty()
        && steps.iter().all(|s| *s > 0.0 && *s <= 100.0)
        && steps.windows(2).all(|w| w[0] < w[1]);
    if !ok {
        return Err(bad(
            path,
            &format!("{prefix}canary.steps"),
            format!(
                "{steps:?}: expected increasing percentages in (0, 100], e.g. [1, 5, 25, 50, 100]"
            ),
        ));
    }
    Ok(())
}

/// The log's database: `url`, or the URL in the variable `url_env` names.
fn log_target(
    path: &Path,
    base: &Path,
    url: Option<String>,
    url_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LogTarget, ServeError> {
    let (key, url) = match (url, url_env) {
        (Some(_), Some(_)) => {
            return Err(bad(
                path,
                "log.url_env",
                "give `log.url` or `log.url_env`, not both",
            ))
        }
        (None, Some(var)) => match env(&var) {
            Some(u) if !u.trim().is_empty() => ("log.url_env", u.trim().to_string()),
            _ => {
                return Err(bad(
                    path,
                    "log.url_env",
                    format!("names the environment variable {var}, which is not set or empty"),
                ))
            }
        },
        (u, None) => ("log.url", u.unwrap_or(defaults::LOG_URL.into())),
    };
    let target = if let Some(file) = url.strip_prefix("sqlite://") {
        if file.is_empty() {
            return Err(bad(path, key, "names no file"));
        }
        let file = PathBuf::from(file);
        LogTarget::Sqlite(if file.is_relative() {
            base.join(file)
        } else {
            file
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        use std::str::FromStr;
        postgres::Config::from_str(&url).map_err(|e| {
            bad(
                path,
                key,
                format!("'{}' is not a PostgreSQL URL: {e}", redact(&url)),
            )
        })?;
        LogTarget::Postgres { url }
    } else {
        return Err(bad(
            path,
            key,
            format!(
                "'{}': expected sqlite://FILE (relative to this config file) or \
                 postgres://USER@HOST:PORT/DATABASE",
                redact(&url)
            ),
        ));
    };
    Ok(target)
}

fn log_config(
    path: &Path,
    base: &Path,
    mut raw: RawLog,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LogConfig, ServeError> {
    let target = log_target(path, base, raw.url.take(), raw.url_env.take(), env)?;
    let pg = matches!(target, LogTarget::Postgres { .. });
    if pg && raw.durability.is_some() {
        return Err(bad(
            path,
            "log.durability",
            "applies to SQLite logs; a PostgreSQL commit is as durable as the server's \
             synchronous_commit setting (on by default) makes it",
        ));
    }
    if pg && raw.retain_max_mb.is_some() {
        return Err(bad(
            path,
            "log.retain_max_mb",
            "applies to SQLite logs; use log.retain_days with PostgreSQL",
        ));
    }
    let pool = match raw.pool {
        Some(n) if !(1..=64).contains(&n) => {
            return Err(bad(path, "log.pool", "expected 1 to 64 connections"))
        }
        Some(n) if n > 1 && !pg => {
            return Err(bad(
                path,
                "log.pool",
                "a SQLite log has one writer; pool applies to PostgreSQL",
            ))
        }
        Some(n) => n,
        None if pg => defaults::PG_POOL,
        None => 1,
    };
    let state_poll = match raw.state_poll_ms {
        Some(n) if !(10..=60_000).contains(&n) => {
            return Err(bad(
                path,
                "log.state_poll_ms",
                "expected 10 to 60000 milliseconds",
            ))
        }
        n => Duration::from_millis(n.unwrap_or(defaults::STATE_POLL_MS)),
    };
    let connect_timeout = match raw.connect_timeout_ms {
        Some(n) if !(1..=MAX_MILLIS).contains(&n) => {
            return Err(bad(
                path,
                "log.connect_timeout_ms",
                format!("expected milliseconds from 1 to {MAX_MILLIS}"),
            ))
        }
        n => Duration::from_millis(n.unwrap_or(defaults::CONNECT_TIMEOUT_MS)),
    };
    let backlog = match raw.backlog {
        Some(n) if n > 10_000_000 => {
            return Err(bad(
                path,
                "log.backlog",
                "expected at most 10000000 records",
            ))
        }
        n => n.unwrap_or(defaults::BACKLOG),
    };
    let top_k = match raw.top_k {
        Some(0) => return Err(bad(path, "log.top_k", "expected a whole number ≥ 1")),
        k => k.unwrap_or(defaults::TOP_K),
    };
    let retain = match raw.retain_days {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            return Err(bad(
                path,
                "log.retain_days",
                "expected a number of days > 0",
            ))
        }
        d => d.map(|d| Duration::from_secs_f64(d * 86_400.0)),
    };
    let retain_max_bytes = match raw.retain_max_mb {
        Some(m) if !(m.is_finite() && (1.0..=1e9).contains(&m)) => {
            return Err(bad(
                path,
                "log.retain_max_mb",
                "expected a size in MB from 1 to 1e9",
            ))
        }
        m => m.map(|m| (m * 1e6) as u64),
    };
    Ok(LogConfig {
        target,
        on_failure: raw.on_log_failure.unwrap_or(OnLogFailure::Reject),
        pool,
        state_poll,
        connect_timeout,
        backlog,
        durability: raw.durability.unwrap_or(Durability::Normal),
        outputs: raw.outputs.unwrap_or(OutputLog::Topk),
        top_k,
        store_inputs: raw.store_inputs.unwrap_or(false),
        max_input_bytes: raw.max_input_bytes.unwrap_or(defaults::MAX_INPUT_BYTES),
        retain,
        retain_max_bytes,
        group_commit_max: defaults::GROUP_COMMIT_MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayConfig, ServeError> {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
        GatewayConfig::parse(text, Path::new("/cfg/gateway.toml"), None, &env)
    }

    const MIN: &str = "model_name = \"digits\"\nmode = \"shadow\"\nbaseline = \"m.onnx\"\ncandidate = \"ort:/abs/c.onnx\"\n";

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(MIN).expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.models[0].baseline.path(), Some(Path::new("/cfg/m.onnx")));
        assert_eq!(c.models[0].candidate.path(), Some(Path::new("/abs/c.onnx")));
        assert_eq!(
            c.log.target,
            LogTarget::Sqlite(PathBuf::from("/cfg/qgate-log.db"))
        );
        assert_eq!(c.models[0].shadow_queue, 1000);
        assert_eq!(c.models[0].shadow_concurrency, 1);
        assert_eq!(c.models[0].shadow_timeout, Duration::from_secs(30));
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("listen = \"0.0.0.0:80\"\n", "allow_non_loopback"),
            ("listen = \"nowhere\"\n", "`listen`"),
            ("[ab]\ncandidate_weight = 1.5\n", "ab.candidate_weight"),
            ("[canary]\nsteps = [5, 1]\n", "canary.steps"),
            ("[canary]\nmax_holds = 3\n", "canary.max_holds"),
            (
                "[canary]\nauto = true\nmin_requests_per_step = 0\n",
                "canary.min_requests_per_step",
            ),
            (
                "[canary]\nauto = true\nmin_step_seconds = -1\n",
                "canary.min_step_seconds",
            ),
            (
                "[canary]\nauto = true\nnotify_url = \"ftp://x\"\n",
                "canary.notify_url",
            ),
            (
                "[canary]\nauto = true\npolicy = \"no-such.toml\"\n",
                "canary.policy",
            ),
            (
                "[canary]\nauto = true\non_max_holds = \"pray\"\n",
                "on_max_holds",
            ),
            ("[admin]\ntoken_env = \"UNSET\"\n", "UNSET"),
            ("[log]\nurl = \"mysql://x\"\n", "log.url"),
            ("[log]\nurl_env = \"UNSET\"\n", "log.url_env"),
            (
                "[log]\nurl = \"postgres://u@h/db\"\nretain_max_mb = 5\n",
                "log.retain_max_mb",
            ),
            ("[log]\npool = 3\n", "log.pool"),
            ("[shadow]\nqueue = 0\n", "shadow.queue"),
            ("[shadow]\nqueues = 3\n", "queues"),
        ];
        for (extra, needle) in cases {
            let (top, table) = if extra.starts_with('[') {
                (MIN.to_string(), extra)
            } else {
                (format!("{extra}{MIN}"), "")
            };
            let err = parse(&format!("{top}{table}"))
                .expect_err(extra)
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
            assert!(err.contains("/cfg/gateway.toml"), "{err}");
        }
    }

    #[test]
    fn several_models_each_with_their_own_keys() {
        let two = "[[models]]\nmodel_name = \"a\"\nmode = \"shadow\"\nbaseline = \"a.onnx\"\n\
                   candidate = \"b.onnx\"\n[[models]]\nmodel_name = \"b\"\nmode = \"ab\"\n\
                   baseline = \"c.onnx\"\ncandidate = \"d.onnx\"\n[models.ab]\ncandidate_weight = 0.3\n\
                   [models.shadow]\nqueue = 7\n";
        let c = parse(two).expect("valid");
        assert_eq!(c.models.len(), 2);
        assert_eq!(c.models[0].name, "a");
        assert_eq!(c.models[0].split.candidate_weight, 0.0);
        assert_eq!(c.models[1].split.candidate_weight, 0.3);
        assert_eq!(c.models[1].shadow_queue, 7);
        assert_eq!(c.models[1].baseline.path(), Some(Path::new("/cfg/c.onnx")));
        let cases = [
            (format!("{MIN}{two}"), "give each model's keys"),
            (
                two.replace("\"b\"\nmode", "\"a\"\nmode"),
                "two models are named 'a'",
            ),
            (
                two.replace("candidate_weight = 0.3", "candidate_weight = 3"),
                "models[1].ab.candidate_weight",
            ),
            ("models = []\n".into(), "lists no model"),
            ("mode = \"ab\"\n".into(), "model_name"),
        ];
        for (text, needle) in cases {
            let err = parse(&text).expect_err(needle).to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn tokens_come_from_the_environment() {
        let c = parse(&format!("{MIN}[admin]\ntoken_env = \"TOKEN\"\n")).expect("valid");
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
        let open = parse(&format!(
            "allow_non_loopback = true\nlisten = \"0.0.0.0:0\"\n{MIN}"
        ));
        assert!(open.is_ok());
    }
}

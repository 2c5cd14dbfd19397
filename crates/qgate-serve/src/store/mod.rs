//! The log: SQLite (one file, WAL) or PostgreSQL (one database that several gateway replicas
//! share), behind one writer design. Writer threads each own a connection, take whatever has
//! queued up and commit it in one transaction (group commit), and only then answer the
//! requests waiting on it, so a client never gets an answer whose record is not committed.
//! A watcher thread on a connection of its own reads the shared admin state (so an action
//! taken on one replica holds on all of them), marks shadow copies that never came back
//! `missing`, applies retention and probes a lost database until it is back.
//!
//! The schema is versioned in `meta.schema_version`; older logs are migrated at start, one
//! numbered step at a time ([`MIGRATIONS`](sqlite) per dialect), under a lock so replicas
//! starting together migrate once. Schema and semantics: docs/serve.md.

pub(crate) mod pg;
mod sqlite;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::{LogConfig, LogTarget, OnLogFailure};
use crate::route::AdminState;
use crate::ServeError;

/// The log schema this build writes (older ones are migrated at start).
pub const SCHEMA_VERSION: i64 = 2;

/// Version 1 → 2, the same SQL in both dialects: which replica wrote a record and its own
/// key (a record written again is recognised), and one versioned admin state per model
/// (compare-and-set across replicas). The caller copies the single-model `admin_state` row
/// into `model_state` under the first model's name, then drops `admin_state`.
pub(super) const MIGRATE_V2: &str = "
ALTER TABLE requests ADD COLUMN replica TEXT;
ALTER TABLE requests ADD COLUMN record_key TEXT;
CREATE UNIQUE INDEX requests_record_key ON requests (record_key);
ALTER TABLE admin_actions ADD COLUMN model TEXT;
ALTER TABLE admin_actions ADD COLUMN replica TEXT;
CREATE TABLE model_state (
    model TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    version BIGINT NOT NULL
);
";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `ms` since the epoch as an ISO 8601 UTC time with milliseconds, as the log's `ts` columns
/// hold it (the same text `qgate analyze` prints).
pub use qgate_online::window::format_ms as iso_ms;

/// One request's record, as the handler knows it before answering.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub request_id: String,
    /// This record's own key (`replica/sequence`, set by [`Store::record`]): a record
    /// written again after a commit whose answer was lost is recognised, never logged twice.
    pub key: String,
    /// The id the client gave, when it differs from `request_id` (a duplicate) or was given.
    pub client_request_id: Option<String>,
    pub ts_ms: i64,
    pub model: String,
    pub mode: &'static str,
    /// `None` when the request was refused before an arm was chosen.
    pub arm: Option<&'static str>,
    pub weight: f64,
    pub canary_step: Option<i64>,
    pub sticky_hash: Option<String>,
    pub input_digest: Option<String>,
    pub input_bytes: i64,
    pub inputs: Option<String>,
    pub status: u16,
    pub error: Option<String>,
    pub outputs: Option<String>,
    /// `pending` or `dropped` in shadow mode, else `None`.
    pub shadow_status: Option<&'static str>,
    pub gateway_us: i64,
    pub total_us: i64,
    pub baseline_us: Option<i64>,
    pub candidate_us: Option<i64>,
}

/// The shadow copy's result, joined to its request.
#[derive(Debug, Clone)]
pub struct ShadowResult {
    pub request_id: String,
    /// `ok`, `error`, `timeout` or `missing`.
    pub status: &'static str,
    pub error: Option<String>,
    pub outputs: Option<String>,
    pub candidate_us: Option<i64>,
}

/// Why an outcome was not recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeRefused {
    UnknownRequest,
    Store(String),
}

/// Why an admin action was not recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRefused {
    /// Another replica changed the state first: the state and version now in force.
    Conflict(AdminState, i64),
    Store(String),
}

/// An admin action to record: its row, and the state it sets when the state is still at
/// `expected` (compare-and-set, so two replicas never both apply an action to one state).
#[derive(Debug, Clone)]
pub struct AdminWrite {
    pub model: String,
    pub action: String,
    pub detail: String,
    /// The new state and the version it was derived from; `None` records the row only.
    pub change: Option<(AdminState, i64)>,
}

type Ack<T> = oneshot::Sender<Result<T, String>>;

enum Op {
    Request(Box<RequestRecord>, Ack<String>),
    Shadow(ShadowResult),
    Outcome {
        request_id: String,
        name: String,
        value: f64,
        ack: oneshot::Sender<Result<(), OutcomeRefused>>,
    },
    Admin(Box<AdminWrite>, oneshot::Sender<Result<i64, AdminRefused>>),
    /// Marks this gateway's pending shadow copies missing, then stops the writers.
    Close(Ack<u64>),
}

/// A record whose commit failed, kept to be written once the database is back.
enum Deferred {
    Request(Box<RequestRecord>),
    Shadow(ShadowResult),
}

/// What the log's database does, in either dialect.
trait LogDb: Send {
    /// Reconnects a lost connection; an error when the database is still out of reach.
    fn ensure_connected(&mut self) -> Result<(), String>;
    fn begin(&mut self) -> Result<(), String>;
    /// Whether the transaction begun is intact: no statement failed in a way that ended or
    /// poisoned it (a statement run now would commit on its own, or fail).
    fn intact(&self) -> bool;
    fn commit(&mut self) -> Result<(), String>;
    fn rollback(&mut self);
    /// Inserts the record; a duplicate id gets a `~N` suffix. Answers the id logged.
    fn insert_request(&mut self, r: &RequestRecord) -> Result<String, String>;
    fn update_shadow(&mut self, s: &ShadowResult) -> Result<(), String>;
    fn insert_outcome(
        &mut self,
        request_id: &str,
        name: &str,
        value: f64,
    ) -> Result<(), OutcomeRefused>;
    /// The model's state (JSON) and version.
    fn state_row(&mut self, model: &str) -> Result<Option<(String, i64)>, String>;
    /// Sets the model's state if its version is still `expected`; the new version, or
    /// `None` when another writer changed it first.
    fn swap_state(
        &mut self,
        model: &str,
        json: &str,
        ts_ms: i64,
        expected: i64,
    ) -> Result<Option<i64>, String>;
    /// Inserts the model's first state (version 1) unless it has one; whether it inserted.
    fn insert_state(&mut self, model: &str, json: &str, ts_ms: i64) -> Result<bool, String>;
    /// Adds an `admin_actions` row carrying the state it left.
    fn insert_action(&mut self, a: &AdminWrite, state: &str, ts_ms: i64) -> Result<(), String>;

    /// Records the action; with a change, compare-and-sets the model's state. Answers the
    /// state's version after it.
    fn admin(&mut self, a: &AdminWrite) -> Result<i64, AdminRefused> {
        let ts = now_ms();
        let current = |db: &mut Self| -> Result<(String, i64), AdminRefused> {
            Ok(db
                .state_row(&a.model)
                .map_err(AdminRefused::Store)?
                .unwrap_or_else(|| ("{}".into(), 0)))
        };
        let (state, version) = match &a.change {
            Some((next, expected)) => {
                let json = serde_json::to_string(next).unwrap_or_default();
                match self
                    .swap_state(&a.model, &json, ts, *expected)
                    .map_err(AdminRefused::Store)?
                {
                    Some(v) => (json, v),
                    None => {
                        let (now, v) = current(self)?;
                        let state = serde_json::from_str(&now)
                            .map_err(|e| AdminRefused::Store(e.to_string()))?;
                        return Err(AdminRefused::Conflict(state, v));
                    }
                }
            }
            None => current(self)?,
        };
        self.insert_action(a, &state, ts)
            .map_err(AdminRefused::Store)?;
        Ok(version)
    }

    /// Seeds the model's state when the log has none; answers the state in force, its
    /// version and whether it was already there.
    fn seed_state(
        &mut self,
        model: &str,
        state: &AdminState,
    ) -> Result<(AdminState, i64, bool), String> {
        let json = serde_json::to_string(state).map_err(|e| e.to_string())?;
        let inserted = self.insert_state(model, &json, now_ms())?;
        let (s, v) = self
            .state_row(model)?
            .ok_or("the model's admin state vanished")?;
        let s = serde_json::from_str(&s)
            .map_err(|e| format!("its admin state is not readable: {e}"))?;
        Ok((s, v, !inserted))
    }
    /// Every model's state and version.
    fn states(&mut self) -> Result<Vec<(String, AdminState, i64)>, String>;
    /// Marks pending shadow copies missing: those older than `before_ms`, or (`None`) this
    /// gateway's own. Answers how many.
    fn sweep(&mut self, before_ms: Option<i64>) -> Result<u64, String>;
    /// One retention step; answers whether more is due.
    fn retention_chunk(&mut self, cfg: &LogConfig, young_ms: i64) -> Result<bool, String>;
    /// Flushes what the database keeps outside its main file (SQLite's WAL), at shutdown.
    fn checkpoint(&mut self) {}
    /// Whether the last failure was the data's (a value the database refuses), not the
    /// database's: such a record is dropped from the backlog instead of retried for ever.
    fn last_error_was_data(&self) -> bool {
        false
    }
}

/// Opens one connection of the configured dialect, migrating the schema (once, under a lock)
/// when `migrate` is set.
fn connect(
    cfg: &LogConfig,
    replica: &str,
    model: &str,
    migrate: bool,
) -> Result<Box<dyn LogDb>, ServeError> {
    match &cfg.target {
        LogTarget::Sqlite(_) => Ok(Box::new(sqlite::Db::open(cfg, replica, model, migrate)?)),
        LogTarget::Postgres { .. } => Ok(Box::new(pg::Db::open(cfg, replica, model, migrate)?)),
    }
}

/// Checks, without creating or changing anything, that the log can be used.
pub fn check(cfg: &LogConfig) -> Result<(), ServeError> {
    match &cfg.target {
        LogTarget::Sqlite(_) => sqlite::check(cfg),
        LogTarget::Postgres { .. } => pg::check(cfg),
    }
}

pub(crate) fn log_err(cfg: &LogConfig, e: impl std::fmt::Display) -> ServeError {
    ServeError::Log {
        log: cfg.target.to_string(),
        message: e.to_string(),
    }
}

/// The message for a log holding a schema this build cannot use.
fn newer_schema(version: &str) -> String {
    format!(
        "holds log schema version {version}; this qgate writes version {SCHEMA_VERSION} and \
         migrates only older logs (use a newer qgate, or a new log)"
    )
}

/// The admin state of every model, as this gateway knows it: set by its own admin calls and
/// by the watcher when another replica changed it (a higher version).
#[derive(Default)]
pub struct StateBoard {
    map: RwLock<HashMap<String, (AdminState, i64)>>,
}

impl StateBoard {
    pub fn get(&self, model: &str) -> Option<(AdminState, i64)> {
        let map = match self.map.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.get(model).cloned()
    }

    /// Sets the model's state whatever the version known (a clamp made at start).
    pub fn put(&self, model: &str, state: AdminState, version: i64) {
        let mut map = match self.map.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.insert(model.to_string(), (state, version));
    }

    /// Sets the model's state when `version` is newer than the one known; answers whether it
    /// changed.
    pub fn offer(&self, model: &str, state: AdminState, version: i64) -> bool {
        let mut map = match self.map.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        match map.get(model) {
            Some((_, v)) if *v >= version => false,
            _ => {
                map.insert(model.to_string(), (state, version));
                true
            }
        }
    }
}

/// How the log is doing, for readiness and the metrics.
#[derive(Default)]
pub struct LogHealth {
    /// The last write reached the database (false from a failed commit until a write or a
    /// probe succeeds).
    up: AtomicBool,
    /// Records served unlogged and written later from the backlog.
    pub written_late: AtomicU64,
    /// Records lost: served unlogged when the backlog was full.
    pub lost: AtomicU64,
    /// Records waiting in the backlog now.
    pub backlog: AtomicUsize,
}

impl LogHealth {
    pub fn up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }
}

struct Shared {
    rx: Mutex<mpsc::Receiver<Op>>,
    cfg: LogConfig,
    shadow_timeout: Duration,
    closing: AtomicBool,
    /// Writers still running.
    active: AtomicUsize,
    health: Arc<LogHealth>,
    /// Set by the watcher when the database answers again while the log is down: the next
    /// idle writer probes with an empty transaction.
    probe: AtomicBool,
    backlog: Mutex<VecDeque<Deferred>>,
    board: Arc<StateBoard>,
    /// This gateway's name in the log, and the sequence of its record keys.
    replica: String,
    next_key: AtomicU64,
    /// Set when the writers have stopped: later calls fail at once instead of waiting.
    closed: AtomicBool,
}

/// Longest a request waits for its record's commit before it is answered 503 (a database
/// that accepts connections but never commits must not hold requests, or shutdown, for ever).
pub const COMMIT_WAIT: Duration = Duration::from_secs(60);

/// Waits for a writer's answer, at most [`COMMIT_WAIT`].
async fn answer<T>(rx: oneshot::Receiver<T>) -> Result<T, String> {
    match tokio::time::timeout(COMMIT_WAIT, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err("the log writer stopped before committing".into()),
        Err(_) => Err(format!(
            "the log did not commit within {} s",
            COMMIT_WAIT.as_secs()
        )),
    }
}

/// The handle the server writes through.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    shared: Arc<Shared>,
    /// Where the log is, for messages (a PostgreSQL URL without its password).
    pub location: String,
}

/// A model's admin state as opening the log found it.
pub struct Restored {
    pub state: AdminState,
    /// Its version in the log.
    pub version: i64,
    /// Whether it came from the log (an earlier run, or another replica) rather than the
    /// seed.
    pub restored: bool,
}

/// What opening the log found.
pub struct Opened {
    pub store: Store,
    /// Each model's admin state in force, in the order given.
    pub states: Vec<Restored>,
    /// Shadow copies a previous run left pending (it crashed), now marked missing.
    pub recovered_missing: u64,
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

/// This gateway's name in the log's `replica` columns: host, process and start time.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}-{:x}", std::process::id(), now_ms())
}

/// Opens the log (migrating it; a schema-1 log's single admin state becomes the first
/// model's), seeds or restores each model's admin state from its seed, and starts the
/// writers and the watcher. `shadow_timeout`: the longest of the models'.
pub fn open(
    cfg: &LogConfig,
    models: &[(String, AdminState)],
    shadow_timeout: Duration,
) -> Result<Opened, ServeError> {
    let replica = replica_name();
    let model = models.first().map_or("", |(m, _)| m.as_str());
    let mut first = connect(cfg, &replica, model, true)?;
    let board = Arc::new(StateBoard::default());
    let mut states = Vec::with_capacity(models.len());
    for (name, seed) in models {
        let (state, version, restored) =
            first.seed_state(name, seed).map_err(|e| log_err(cfg, e))?;
        board.offer(name, state.clone(), version);
        states.push(Restored {
            state,
            version,
            restored,
        });
    }
    // SQLite has one gateway: every pending copy is an earlier run's. PostgreSQL may have
    // live replicas: only copies older than the shadow timeout are surely lost.
    let before = match cfg.target {
        LogTarget::Sqlite(_) => i64::MAX,
        LogTarget::Postgres { .. } => now_ms() - shadow_timeout.as_millis() as i64,
    };
    let recovered_missing = first.sweep(Some(before)).map_err(|e| log_err(cfg, e))?;
    let health = Arc::new(LogHealth::default());
    health.up.store(true, Ordering::SeqCst);
    let (tx, rx) = mpsc::channel();
    let writers = cfg.pool.max(1);
    let shared = Arc::new(Shared {
        rx: Mutex::new(rx),
        cfg: cfg.clone(),
        shadow_timeout,
        closing: AtomicBool::new(false),
        active: AtomicUsize::new(writers),
        health,
        probe: AtomicBool::new(false),
        backlog: Mutex::new(VecDeque::new()),
        board,
        replica: replica.clone(),
        next_key: AtomicU64::new(1),
        closed: AtomicBool::new(false),
    });
    let mut dbs = vec![first];
    for _ in 1..writers {
        dbs.push(connect(cfg, &replica, model, false)?);
    }
    let watcher_db = connect(cfg, &replica, model, false)?;
    let mut threads = Vec::new();
    for (i, db) in dbs.into_iter().enumerate() {
        let w = Writer {
            db,
            shared: Arc::clone(&shared),
        };
        threads.push(spawn(cfg, &format!("qgate-log-{i}"), move || w.run())?);
    }
    let watcher = Watcher {
        db: watcher_db,
        shared: Arc::clone(&shared),
    };
    threads.push(spawn(cfg, "qgate-log-watch", move || watcher.run())?);
    Ok(Opened {
        store: Store {
            tx,
            shared,
            location: cfg.target.to_string(),
        },
        states,
        recovered_missing,
        threads,
    })
}

fn spawn(
    cfg: &LogConfig,
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, ServeError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| log_err(cfg, format!("cannot start the thread {name}: {e}")))
}

impl Store {
    fn send(&self, op: Op) -> Result<(), String> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err("the log is closed".into());
        }
        self.tx
            .send(op)
            .map_err(|_| "the log writer has stopped".to_string())
    }

    /// Commits `record`; answers with the id it was logged under (a duplicate gets a suffix).
    pub async fn record(&self, mut record: RequestRecord) -> Result<String, String> {
        let n = self.shared.next_key.fetch_add(1, Ordering::Relaxed);
        record.key = format!("{}/{n}", self.shared.replica);
        let (ack, rx) = oneshot::channel();
        self.send(Op::Request(Box::new(record), ack))?;
        answer(rx).await?
    }

    /// Joins a shadow result to its request (not waited for).
    pub fn shadow(&self, result: ShadowResult) {
        let _ = self.send(Op::Shadow(result));
    }

    pub async fn outcome(
        &self,
        request_id: String,
        name: String,
        value: f64,
    ) -> Result<(), OutcomeRefused> {
        let (ack, rx) = oneshot::channel();
        self.send(Op::Outcome {
            request_id,
            name,
            value,
            ack,
        })
        .map_err(OutcomeRefused::Store)?;
        answer(rx).await.map_err(OutcomeRefused::Store)?
    }

    /// Records an admin action (and, with a change, the new state), committed before
    /// returning; answers the state's version.
    pub async fn admin(&self, write: AdminWrite) -> Result<i64, AdminRefused> {
        let (ack, rx) = oneshot::channel();
        self.send(Op::Admin(Box::new(write), ack))
            .map_err(AdminRefused::Store)?;
        answer(rx).await.map_err(AdminRefused::Store)?
    }

    /// Marks this gateway's pending shadow copies missing and stops the writers and the
    /// watcher; answers how many copies were marked.
    pub async fn close(&self) -> Result<u64, String> {
        let (ack, rx) = oneshot::channel();
        self.send(Op::Close(ack))?;
        answer(rx).await?
    }

    pub fn health(&self) -> &LogHealth {
        &self.shared.health
    }

    /// The admin states this gateway knows (its own actions and other replicas').
    pub fn board(&self) -> &Arc<StateBoard> {
        &self.shared.board
    }

    pub fn on_failure(&self) -> OnLogFailure {
        self.shared.cfg.on_failure
    }
}

struct Writer {
    db: Box<dyn LogDb>,
    shared: Arc<Shared>,
}

enum Done {
    Request(Ack<String>, Result<String, String>, Box<RequestRecord>),
    Outcome(
        oneshot::Sender<Result<(), OutcomeRefused>>,
        Result<(), OutcomeRefused>,
    ),
    Admin(
        oneshot::Sender<Result<i64, AdminRefused>>,
        Result<i64, AdminRefused>,
    ),
    Shadow(ShadowResult),
}

impl Writer {
    fn run(mut self) {
        loop {
            let mut batch: Vec<Op> = Vec::new();
            {
                let rx = match self.shared.rx.lock() {
                    Ok(rx) => rx,
                    Err(p) => p.into_inner(),
                };
                let first = match rx.recv_timeout(Duration::from_millis(250)) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // Every handle is gone (a start that failed after opening the
                        // log): stop the watcher too.
                        self.shared.closing.store(true, Ordering::SeqCst);
                        self.shared.active.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                };
                batch.extend(first);
                while batch.len() < self.shared.cfg.group_commit_max {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
            }
            let close = batch
                .iter()
                .position(|op| matches!(op, Op::Close(_)))
                .map(|i| batch.remove(i));
            if !batch.is_empty() {
                self.commit(batch);
            } else if self.shared.probe.swap(false, Ordering::SeqCst) {
                self.commit(Vec::new());
            }
            // The backlog drains a chunk after each commit while the log is up, so steady
            // traffic cannot hold it back.
            if self.shared.health.up() && self.shared.health.backlog.load(Ordering::Relaxed) > 0 {
                self.flush_backlog();
            }
            if let Some(Op::Close(ack)) = close {
                self.finish(ack);
                return;
            }
            if self.shared.closing.load(Ordering::SeqCst) {
                self.shared.active.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }

    /// The close: wait for the other writers to finish their batches, write what queued
    /// behind the close (late shadow results) and the backlog, mark this gateway's pending
    /// copies missing.
    fn finish(&mut self, ack: Ack<u64>) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.active.load(Ordering::SeqCst) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let rest: Vec<Op> = match self.shared.rx.lock() {
            Ok(rx) => rx.try_iter().collect(),
            Err(p) => p.into_inner().try_iter().collect(),
        };
        if !rest.is_empty() {
            self.commit(rest);
        }
        // The whole backlog, chunk by chunk, while the database takes it; what it cannot
        // take now is lost with the process, and counted.
        while self.flush_backlog() {}
        if let Ok(mut q) = self.shared.backlog.lock() {
            self.shared
                .health
                .lost
                .fetch_add(q.len() as u64, Ordering::Relaxed);
            q.clear();
        }
        let marked = self.db.sweep(None);
        self.db.checkpoint();
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.active.fetch_sub(1, Ordering::SeqCst);
        let _ = ack.send(marked);
    }

    /// Writes a batch in one transaction; acknowledges each op only after the commit. An
    /// empty batch probes the database.
    fn commit(&mut self, batch: Vec<Op>) {
        let mut done = Vec::with_capacity(batch.len());
        let begun = self.db.ensure_connected().and_then(|_| self.db.begin());
        for op in batch {
            // Without an intact transaction a statement would commit on its own or fail:
            // refuse the rest instead, so no client is told "not logged" about a record
            // that is.
            if begun.is_err() || !self.db.intact() {
                let why = begun
                    .clone()
                    .err()
                    .unwrap_or_else(|| "the log transaction was rolled back".into());
                done.extend(refused(op, &why));
                continue;
            }
            done.push(match op {
                Op::Request(r, ack) => {
                    let res = self.db.insert_request(&r);
                    Done::Request(ack, res, r)
                }
                Op::Shadow(s) => match self.db.update_shadow(&s) {
                    Ok(()) => Done::Shadow(s),
                    Err(e) => {
                        tracing::warn!("cannot log the shadow result of {}: {e}", s.request_id);
                        Done::Shadow(s)
                    }
                },
                Op::Outcome {
                    request_id,
                    name,
                    value,
                    ack,
                } => {
                    let res = self.db.insert_outcome(&request_id, &name, value);
                    Done::Outcome(ack, res)
                }
                Op::Admin(a, ack) => {
                    let res = self.db.admin(&a);
                    Done::Admin(ack, res)
                }
                Op::Close(ack) => {
                    let _ = ack.send(Err("closed twice".into()));
                    continue;
                }
            });
        }
        let committed = match begun {
            Err(e) => Err(e),
            Ok(()) if !self.db.intact() => Err("the log transaction was rolled back".into()),
            Ok(()) => self.db.commit(),
        };
        if committed.is_err() {
            self.db.rollback();
        }
        self.settle(done, committed);
    }

    /// Answers each op of a batch with its own result and the commit's; a failed commit
    /// marks the log down and keeps what must not be lost in the backlog.
    fn settle(&self, done: Vec<Done>, committed: Result<(), String>) {
        let health = &self.shared.health;
        let was_up = health.up.swap(committed.is_ok(), Ordering::SeqCst);
        match (&committed, was_up) {
            (Err(e), true) => tracing::error!("the log is down: {e}"),
            (Ok(()), false) => tracing::info!("the log is back"),
            _ => {}
        }
        let keep = self.shared.cfg.on_failure == OnLogFailure::ServeUnlogged;
        for d in done {
            match d {
                Done::Request(ack, r, rec) => {
                    let res = committed.clone().and(r);
                    // Served unlogged: written once the database is back. Its shadow copy is
                    // never made (the handler drops it): the record says so.
                    if keep && committed.is_err() {
                        let mut rec = rec;
                        if rec.shadow_status == Some("pending") {
                            rec.shadow_status = Some("dropped");
                        }
                        self.defer(Deferred::Request(rec));
                    }
                    let _ = ack.send(res);
                }
                Done::Outcome(ack, r) => {
                    let c = committed.clone().map_err(OutcomeRefused::Store);
                    let _ = ack.send(c.and(r));
                }
                Done::Admin(ack, r) => {
                    let c = committed.clone().map_err(AdminRefused::Store);
                    let _ = ack.send(c.and(r));
                }
                // A shadow result belongs to a committed request: never dropped for an
                // outage.
                Done::Shadow(s) => {
                    if committed.is_err() {
                        self.defer(Deferred::Shadow(s));
                    }
                }
            }
        }
    }

    fn defer(&self, d: Deferred) {
        let mut q = match self.shared.backlog.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        if q.len() >= self.shared.cfg.backlog {
            self.shared.health.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(d);
        self.shared.health.backlog.store(q.len(), Ordering::Relaxed);
    }

    /// Writes a chunk of the backlog in one transaction (put back when the database fails;
    /// a chunk the database refuses for its data is written one record at a time, and the
    /// refused records are dropped and counted lost). Answers whether it wrote anything.
    fn flush_backlog(&mut self) -> bool {
        let chunk: Vec<Deferred> = {
            let mut q = match self.shared.backlog.lock() {
                Ok(q) => q,
                Err(p) => p.into_inner(),
            };
            let n = q.len().min(self.shared.cfg.group_commit_max);
            q.drain(..n).collect()
        };
        if chunk.is_empty() {
            return false;
        }
        let progress = match self.write_deferred(&chunk) {
            Ok(written) => {
                self.count_late(written);
                true
            }
            Err(_) if self.db.last_error_was_data() => {
                // One at a time: only the records the database refuses are lost.
                for d in &chunk {
                    match self.write_deferred(std::slice::from_ref(d)) {
                        Ok(written) => self.count_late(written),
                        Err(e) => {
                            tracing::warn!("a deferred record is refused by the log and lost: {e}");
                            self.shared.health.lost.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!("the log's backlog waits: {e}");
                let mut q = match self.shared.backlog.lock() {
                    Ok(q) => q,
                    Err(p) => p.into_inner(),
                };
                for d in chunk.into_iter().rev() {
                    q.push_front(d);
                }
                false
            }
        };
        if let Ok(q) = self.shared.backlog.lock() {
            self.shared.health.backlog.store(q.len(), Ordering::Relaxed);
        }
        progress
    }

    fn count_late(&self, written: u64) {
        self.shared
            .health
            .written_late
            .fetch_add(written, Ordering::Relaxed);
    }

    /// Writes deferred records in one transaction; answers how many requests it wrote.
    fn write_deferred(&mut self, chunk: &[Deferred]) -> Result<u64, String> {
        let mut written = 0u64;
        let res = self.db.ensure_connected().and_then(|_| self.db.begin());
        let res = res.and_then(|_| {
            for d in chunk {
                let r = match d {
                    Deferred::Request(r) => self.db.insert_request(r).map(|_| written += 1),
                    Deferred::Shadow(s) => self.db.update_shadow(s),
                };
                if let Err(e) = r {
                    if !self.db.intact() {
                        return Err(e);
                    }
                    tracing::warn!("a deferred record cannot be written: {e}");
                }
            }
            self.db.commit()
        });
        if res.is_err() {
            self.db.rollback();
        }
        res.map(|_| written)
    }
}

/// An op that was not written, to be answered with `why` (a second close is answered now).
fn refused(op: Op, why: &str) -> Option<Done> {
    let why = why.to_string();
    Some(match op {
        Op::Request(r, ack) => Done::Request(ack, Err(why), r),
        Op::Admin(_, ack) => Done::Admin(ack, Err(AdminRefused::Store(why))),
        Op::Outcome { ack, .. } => Done::Outcome(ack, Err(OutcomeRefused::Store(why))),
        Op::Shadow(s) => Done::Shadow(s),
        Op::Close(ack) => {
            let _ = ack.send(Err(why));
            return None;
        }
    })
}

/// Reads other replicas' admin actions, sweeps lost shadow copies, applies retention and
/// probes a lost database.
struct Watcher {
    db: Box<dyn LogDb>,
    shared: Arc<Shared>,
}

impl Watcher {
    fn run(mut self) {
        let poll = self.shared.cfg.state_poll;
        let mut last_sweep = Instant::now();
        let mut last_retention = Instant::now() - Duration::from_secs(3600);
        let mut retention_due = false;
        let mut next = Instant::now() + poll;
        loop {
            while Instant::now() < next {
                if self.shared.closing.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20).min(poll));
            }
            next = Instant::now() + poll;
            let polled = self.db.ensure_connected().and_then(|_| self.db.states());
            match polled {
                Ok(states) => {
                    for (model, state, version) in states {
                        if self.shared.board.offer(&model, state, version) {
                            tracing::info!(
                                model,
                                version,
                                "admin state changed by another replica"
                            );
                        }
                    }
                    if !self.shared.health.up() {
                        self.shared.probe.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    tracing::debug!("the log's state poll failed: {e}");
                    continue;
                }
            }
            // Not while records wait in the backlog: their shadow results are in it too, and
            // would find their copies already marked missing.
            let backlog = self.shared.health.backlog.load(Ordering::Relaxed) > 0;
            if last_sweep.elapsed() >= Duration::from_secs(1) && self.shared.health.up() && !backlog
            {
                last_sweep = Instant::now();
                let before = now_ms() - self.shared.shadow_timeout.as_millis() as i64;
                let _ = self.db.sweep(Some(before));
            }
            if retention_due || last_retention.elapsed() >= Duration::from_secs(60) {
                last_retention = Instant::now();
                let young = now_ms() - self.shared.shadow_timeout.as_millis() as i64;
                retention_due = match self.db.retention_chunk(&self.shared.cfg, young) {
                    Ok(more) => more,
                    Err(e) => {
                        tracing::warn!("log retention failed: {e}");
                        false
                    }
                };
            }
        }
    }
}

//! The log: one SQLite database (WAL), written by one thread that commits whatever has
//! queued up in one transaction (group commit) and only then answers the requests waiting on
//! it, so a client never gets an answer whose record is not committed. The schema is
//! versioned in `meta.schema_version` and documented in docs/serve.md.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use tokio::sync::oneshot;

use crate::config::{Durability, LogConfig};
use crate::route::AdminState;
use crate::ServeError;

/// Records one retention step deletes (a step runs between group commits).
const RETENTION_CHUNK: usize = 2000;

/// The log schema this build writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    client_request_id TEXT,
    ts TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    arm TEXT,
    weight REAL NOT NULL,
    canary_step INTEGER,
    sticky_hash TEXT,
    input_digest TEXT,
    input_bytes INTEGER NOT NULL,
    inputs TEXT,
    status INTEGER NOT NULL,
    error TEXT,
    outputs TEXT,
    shadow_status TEXT,
    shadow_error TEXT,
    shadow_outputs TEXT,
    gateway_us INTEGER NOT NULL,
    total_us INTEGER NOT NULL,
    baseline_us INTEGER,
    candidate_us INTEGER,
    shadow_us INTEGER
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts_ms);
CREATE INDEX IF NOT EXISTS requests_pending ON requests (shadow_status) WHERE shadow_status = 'pending';
CREATE TABLE IF NOT EXISTS outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_request ON outcomes (request_id);
CREATE TABLE IF NOT EXISTS admin_actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);
";

const ISO: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One request's record, as the handler knows it before answering.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord {
    pub request_id: String,
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
    Admin {
        action: String,
        detail: String,
        state: AdminState,
        ack: Ack<()>,
    },
    /// Marks every pending shadow copy missing, then stops the writer.
    Close(Ack<u64>),
}

/// The handle the server writes through.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Op>,
    pub path: PathBuf,
}

/// What opening the log found.
pub struct Opened {
    pub store: Store,
    /// The admin state a previous run left, if any.
    pub state: Option<AdminState>,
    /// Shadow copies a previous run left pending (it crashed), now marked missing.
    pub recovered_missing: u64,
    pub writer: std::thread::JoinHandle<()>,
}

fn store_err(path: &Path, e: impl std::fmt::Display) -> ServeError {
    ServeError::Log {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Opens (or creates) the database and checks its schema version.
fn open_connection(cfg: &LogConfig) -> Result<Connection, ServeError> {
    let path = &cfg.path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(store_err(
                path,
                format!("its folder {} does not exist", dir.display()),
            ));
        }
    }
    let conn = Connection::open(path).map_err(|e| store_err(path, e))?;
    let sync = match cfg.durability {
        Durability::Normal => "NORMAL",
        Durability::Fsync => "FULL",
    };
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| store_err(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| {
            store_err(
                path,
                format!("is not a SQLite database this build can use: {e}"),
            )
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(store_err(
            path,
            format!("cannot use WAL (journal mode is {mode})"),
        ));
    }
    conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
        .map_err(|e| store_err(path, e))?;
    match log_version(&conn, path)? {
        Some(v) => same_version(path, &v)?,
        None => {
            conn.execute_batch(SCHEMA).map_err(|e| store_err(path, e))?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(|e| store_err(path, e))?;
        }
    }
    Ok(conn)
}

/// Checks, without creating or changing anything, that the log can be used: an existing
/// file must be a qgate log of this schema version; a new one needs an existing folder.
pub fn check(cfg: &LogConfig) -> Result<(), ServeError> {
    let path = &cfg.path;
    if !path.exists() {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
            Ok(m) if m.is_dir() => Err(store_err(
                path,
                format!("its folder {} is read-only", dir.display()),
            )),
            _ => Err(store_err(
                path,
                format!("its folder {} does not exist", dir.display()),
            )),
        };
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| store_err(path, e))?;
    match log_version(&conn, path)? {
        Some(v) => same_version(path, &v),
        None => Err(store_err(path, NOT_A_LOG)),
    }
}

const NOT_A_LOG: &str = "is a SQLite database but not a qgate log (no meta table); name a new file";

/// The schema version of the qgate log in `conn`; `None` for a database without tables (a
/// new log). Another application's database is an error.
fn log_version(conn: &Connection, path: &Path) -> Result<Option<String>, ServeError> {
    let (tables, meta): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE name = 'meta') FROM sqlite_master \
             WHERE type = 'table'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| store_err(path, format!("is not a SQLite database: {e}")))?;
    match (tables, meta) {
        (0, _) => Ok(None),
        (_, 0) => Err(store_err(path, NOT_A_LOG)),
        _ => conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|v| Some(v.unwrap_or_else(|| "(none)".into())))
            .map_err(|e| store_err(path, e)),
    }
}

fn same_version(path: &Path, version: &str) -> Result<(), ServeError> {
    if version == SCHEMA_VERSION.to_string() {
        return Ok(());
    }
    Err(store_err(
        path,
        format!(
            "holds log schema version {version}; this qgate writes version {SCHEMA_VERSION} \
             (use a new log file)"
        ),
    ))
}

/// Opens the log and starts its writer thread. `shadow_timeout`: pending shadow copies older
/// than this are marked missing.
pub fn open(cfg: &LogConfig, shadow_timeout: Duration) -> Result<Opened, ServeError> {
    let conn = open_connection(cfg)?;
    let path = cfg.path.clone();
    let state: Option<String> = conn
        .query_row("SELECT state FROM admin_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| store_err(&path, e))?;
    let state =
        match state {
            Some(s) => Some(serde_json::from_str(&s).map_err(|e| {
                store_err(&path, format!("its admin_state row is not readable: {e}"))
            })?),
            None => None,
        };
    let recovered_missing = conn
        .execute(
            "UPDATE requests SET shadow_status = 'missing' WHERE shadow_status = 'pending'",
            [],
        )
        .map_err(|e| store_err(&path, e))? as u64;
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        conn,
        rx,
        cfg: cfg.clone(),
        shadow_timeout,
    };
    let handle = std::thread::Builder::new()
        .name("qgate-log".into())
        .spawn(move || writer.run())
        .map_err(|e| store_err(&path, format!("cannot start the writer thread: {e}")))?;
    Ok(Opened {
        store: Store { tx, path },
        state,
        recovered_missing,
        writer: handle,
    })
}

impl Store {
    /// Commits `record`; answers with the id it was logged under (a duplicate gets a suffix).
    pub async fn record(&self, record: RequestRecord) -> Result<String, String> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Op::Request(Box::new(record), ack))
            .map_err(|_| "the log writer has stopped".to_string())?;
        rx.await
            .map_err(|_| "the log writer stopped before committing".to_string())?
    }

    /// Joins a shadow result to its request (not waited for).
    pub fn shadow(&self, result: ShadowResult) {
        let _ = self.tx.send(Op::Shadow(result));
    }

    pub async fn outcome(
        &self,
        request_id: String,
        name: String,
        value: f64,
    ) -> Result<(), OutcomeRefused> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Op::Outcome {
                request_id,
                name,
                value,
                ack,
            })
            .map_err(|_| OutcomeRefused::Store("the log writer has stopped".into()))?;
        rx.await
            .map_err(|_| OutcomeRefused::Store("the log writer stopped".into()))?
    }

    /// Records an admin action and the state it left, committed before returning.
    pub async fn admin(
        &self,
        action: &str,
        detail: String,
        state: AdminState,
    ) -> Result<(), String> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Op::Admin {
                action: action.to_string(),
                detail,
                state,
                ack,
            })
            .map_err(|_| "the log writer has stopped".to_string())?;
        rx.await.map_err(|_| "the log writer stopped".to_string())?
    }

    /// Marks pending shadow copies missing and stops the writer; answers how many were marked.
    pub async fn close(&self) -> Result<u64, String> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Op::Close(ack))
            .map_err(|_| "the log writer has stopped".to_string())?;
        rx.await.map_err(|_| "the log writer stopped".to_string())?
    }
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Op>,
    cfg: LogConfig,
    shadow_timeout: Duration,
}

enum Done {
    Request(Ack<String>, Result<String, String>),
    Outcome(
        oneshot::Sender<Result<(), OutcomeRefused>>,
        Result<(), OutcomeRefused>,
    ),
    Admin(Ack<()>, Result<(), String>),
}

impl Writer {
    fn run(mut self) {
        let mut last_sweep = Instant::now();
        let mut last_retention = Instant::now() - Duration::from_secs(3600);
        let mut retention_due = false;
        loop {
            let first = match self.rx.recv_timeout(Duration::from_millis(250)) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch: Vec<Op> = first.into_iter().collect();
            while batch.len() < self.cfg.group_commit_max {
                match self.rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let close = batch
                .iter()
                .position(|op| matches!(op, Op::Close(_)))
                .map(|i| batch.remove(i));
            if !batch.is_empty() {
                self.commit(batch);
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                let cutoff = now_ms() - self.shadow_timeout.as_millis() as i64;
                let _ = self.conn.execute(
                    "UPDATE requests SET shadow_status = 'missing' \
                     WHERE shadow_status = 'pending' AND ts_ms < ?1",
                    params![cutoff],
                );
            }
            if retention_due || last_retention.elapsed() >= Duration::from_secs(60) {
                last_retention = Instant::now();
                retention_due = match self.retention_chunk() {
                    Ok(more) => more,
                    Err(e) => {
                        tracing::warn!("log retention failed: {e}");
                        false
                    }
                };
            }
            if let Some(Op::Close(ack)) = close {
                // Whatever queued behind the close (late shadow results) is written first.
                let rest: Vec<Op> = self.rx.try_iter().collect();
                if !rest.is_empty() {
                    self.commit(rest);
                }
                let marked = self
                    .conn
                    .execute(
                        "UPDATE requests SET shadow_status = 'missing' WHERE shadow_status = 'pending'",
                        [],
                    )
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string());
                let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                let _ = ack.send(marked);
                return;
            }
        }
    }

    /// Writes a batch in one transaction; acknowledges each op only after the commit.
    fn commit(&mut self, batch: Vec<Op>) {
        self.no_open_transaction();
        let mut done = Vec::with_capacity(batch.len());
        let begun = self
            .conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| format!("cannot write to the log {}: {e}", self.cfg.path.display()));
        for op in batch {
            // Without a transaction (BEGIN failed, or SQLite rolled it back after an I/O or
            // disk-full error) a statement would commit on its own: refuse the rest instead,
            // so no client is told "not logged" about a record that is.
            let lost = begun.is_err() || self.conn.is_autocommit();
            if lost {
                let why = begun
                    .clone()
                    .err()
                    .unwrap_or_else(|| "the log transaction was rolled back".into());
                refuse_op(op, &why);
                continue;
            }
            match op {
                Op::Request(r, ack) => {
                    let res = insert_request(&self.conn, &r);
                    done.push(Done::Request(ack, res.map_err(|e| e.to_string())));
                }
                Op::Shadow(s) => {
                    if let Err(e) = update_shadow(&self.conn, &s) {
                        tracing::warn!("cannot log the shadow result of {}: {e}", s.request_id);
                    }
                }
                Op::Outcome {
                    request_id,
                    name,
                    value,
                    ack,
                } => {
                    let res = insert_outcome(&self.conn, &request_id, &name, value);
                    done.push(Done::Outcome(ack, res));
                }
                Op::Admin {
                    action,
                    detail,
                    state,
                    ack,
                } => {
                    let res = insert_admin(&self.conn, &action, &detail, &state)
                        .map_err(|e| e.to_string());
                    done.push(Done::Admin(ack, res));
                }
                Op::Close(ack) => {
                    let _ = ack.send(Err("closed twice".into()));
                }
            }
        }
        let committed = match begun {
            Err(e) => Err(e),
            Ok(()) if self.conn.is_autocommit() => {
                Err("the log transaction was rolled back".into())
            }
            Ok(()) => self
                .conn
                .execute_batch("COMMIT")
                .map_err(|e| format!("cannot commit to the log {}: {e}", self.cfg.path.display())),
        };
        if committed.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        for d in done {
            match d {
                Done::Request(ack, r) => {
                    let _ = ack.send(committed.clone().and(r));
                }
                Done::Outcome(ack, r) => {
                    let c = committed.clone().map_err(OutcomeRefused::Store);
                    let _ = ack.send(c.and(r));
                }
                Done::Admin(ack, r) => {
                    let _ = ack.send(committed.clone().and(r));
                }
            }
        }
    }

    /// A transaction left open (a ROLLBACK that failed) would swallow every later statement
    /// and refuse every BEGIN: end it first.
    fn no_open_transaction(&self) {
        if !self.conn.is_autocommit() {
            tracing::warn!("log: a transaction was left open; rolling it back");
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    /// One chunk of retention: deletes at most `RETENTION_CHUNK` records past the configured
    /// age, else as many of the oldest while the database's used pages exceed the size limit
    /// (never records younger than the shadow timeout, whose copies may still be pending).
    /// Answers whether more is due. Run between group commits, so requests wait for one
    /// chunk at most.
    fn retention_chunk(&self) -> rusqlite::Result<bool> {
        self.no_open_transaction();
        let now = now_ms();
        if let Some(age) = self.cfg.retain {
            let cutoff = now - age.as_millis() as i64;
            let n = self.conn.execute(
                "DELETE FROM requests WHERE seq IN \
                 (SELECT seq FROM requests WHERE ts_ms < ?1 ORDER BY seq LIMIT ?2)",
                params![cutoff, RETENTION_CHUNK],
            )?;
            self.conn
                .execute("DELETE FROM outcomes WHERE ts_ms < ?1", params![cutoff])?;
            if n == RETENTION_CHUNK {
                return Ok(true);
            }
        }
        if let Some(max) = self.cfg.retain_max_bytes {
            let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let free: i64 = self
                .conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
            let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            if ((pages - free) * size) as u64 > max {
                let young = now - self.shadow_timeout.as_millis() as i64;
                let n = self.conn.execute(
                    "DELETE FROM requests WHERE seq IN \
                     (SELECT seq FROM requests WHERE ts_ms < ?1 ORDER BY seq LIMIT ?2)",
                    params![young, RETENTION_CHUNK],
                )?;
                return Ok(n == RETENTION_CHUNK);
            }
        }
        Ok(false)
    }
}

/// Answers an op that was not written.
fn refuse_op(op: Op, why: &str) {
    match op {
        Op::Request(_, ack) => {
            let _ = ack.send(Err(why.to_string()));
        }
        Op::Admin { ack, .. } => {
            let _ = ack.send(Err(why.to_string()));
        }
        Op::Outcome { ack, .. } => {
            let _ = ack.send(Err(OutcomeRefused::Store(why.to_string())));
        }
        Op::Shadow(s) => tracing::warn!("cannot log the shadow result of {}: {why}", s.request_id),
        Op::Close(ack) => {
            let _ = ack.send(Err(why.to_string()));
        }
    }
}

fn insert_request(conn: &Connection, r: &RequestRecord) -> rusqlite::Result<String> {
    let mut id = r.request_id.clone();
    for n in 2.. {
        let res = conn.execute(
            &format!(
                "INSERT INTO requests (request_id, client_request_id, ts, ts_ms, model, mode, arm, \
                 weight, canary_step, sticky_hash, input_digest, input_bytes, inputs, status, \
                 error, outputs, shadow_status, gateway_us, total_us, baseline_us, candidate_us) \
                 VALUES (?2, ?3, {ISO}, ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                 ?16, ?17, ?18, ?19, ?20)"
            ),
            params![
                r.ts_ms,
                id,
                r.client_request_id,
                r.model,
                r.mode,
                r.arm,
                r.weight,
                r.canary_step,
                r.sticky_hash,
                r.input_digest,
                r.input_bytes,
                r.inputs,
                r.status,
                r.error,
                r.outputs,
                r.shadow_status,
                r.gateway_us,
                r.total_us,
                r.baseline_us,
                r.candidate_us,
            ],
        );
        match res {
            Ok(_) => return Ok(id),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation && n < 10_000 =>
            {
                id = format!("{}~{n}", r.request_id);
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

fn update_shadow(conn: &Connection, s: &ShadowResult) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE requests SET shadow_status = ?2, shadow_error = ?3, shadow_outputs = ?4, \
         shadow_us = ?5 WHERE request_id = ?1 AND shadow_status = 'pending'",
        params![s.request_id, s.status, s.error, s.outputs, s.candidate_us],
    )
}

fn insert_outcome(
    conn: &Connection,
    request_id: &str,
    name: &str,
    value: f64,
) -> Result<(), OutcomeRefused> {
    let store = |e: rusqlite::Error| OutcomeRefused::Store(e.to_string());
    let known: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM requests WHERE request_id = ?1",
            params![request_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(store)?;
    if known.is_none() {
        return Err(OutcomeRefused::UnknownRequest);
    }
    conn.execute(
        &format!(
            "INSERT INTO outcomes (request_id, ts, ts_ms, name, value) VALUES (?2, {ISO}, ?1, ?3, ?4)"
        ),
        params![now_ms(), request_id, name, value],
    )
    .map_err(store)?;
    Ok(())
}

fn insert_admin(
    conn: &Connection,
    action: &str,
    detail: &str,
    state: &AdminState,
) -> rusqlite::Result<()> {
    let state = serde_json::to_string(state).unwrap_or_default();
    let ts = now_ms();
    conn.execute(
        &format!(
            "INSERT INTO admin_actions (ts, ts_ms, action, detail, state) VALUES ({ISO}, ?1, ?2, ?3, ?4)"
        ),
        params![ts, action, detail, state],
    )?;
    conn.execute(
        "INSERT INTO admin_state (id, state, ts_ms) VALUES (1, ?1, ?2) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, ts_ms = excluded.ts_ms",
        params![state, ts],
    )?;
    Ok(())
}

//! The SQLite dialect of the log: one file in WAL mode, written by one gateway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

use super::{
    log_err, newer_schema, AdminWrite, LogDb, OutcomeRefused, RequestRecord, ShadowResult,
    MIGRATE_V2, SCHEMA_VERSION,
};
use crate::config::{Durability, LogConfig, LogTarget};
use crate::route::AdminState;
use crate::ServeError;

/// Records one retention step deletes.
const RETENTION_CHUNK: usize = 2000;

/// Version 1: the first gateway's log.
const SCHEMA_V1: &str = "
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
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
";

const ISO: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch')";

pub struct Db {
    conn: Connection,
    replica: String,
    path: PathBuf,
}

fn sql_err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

impl Db {
    /// Opens (or creates) the database; with `migrate`, brings its schema to this build's
    /// version, else requires it.
    pub fn open(
        cfg: &LogConfig,
        replica: &str,
        model: &str,
        migrate: bool,
    ) -> Result<Db, ServeError> {
        let LogTarget::Sqlite(path) = &cfg.target else {
            return Err(log_err(cfg, "not a SQLite log"));
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(log_err(
                    cfg,
                    format!("its folder {} does not exist", dir.display()),
                ));
            }
        }
        let conn = Connection::open(path).map_err(|e| log_err(cfg, e))?;
        let sync = match cfg.durability {
            Durability::Normal => "NORMAL",
            Durability::Fsync => "FULL",
        };
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| log_err(cfg, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| {
                log_err(
                    cfg,
                    format!("is not a SQLite database this build can use: {e}"),
                )
            })?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(log_err(
                cfg,
                format!("cannot use WAL (journal mode is {mode})"),
            ));
        }
        conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
            .map_err(|e| log_err(cfg, e))?;
        if migrate {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| log_err(cfg, e))?;
            let migrated = migrate_schema(&conn, model).map_err(|e| log_err(cfg, e));
            let end = if migrated.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            let ended = conn.execute_batch(end).map_err(|e| log_err(cfg, e));
            migrated.and(ended)?;
        } else {
            match log_version(&conn).map_err(|e| log_err(cfg, e))? {
                Some(v) if v == SCHEMA_VERSION.to_string() => {}
                Some(v) => return Err(log_err(cfg, newer_schema(&v))),
                None => return Err(log_err(cfg, NOT_A_LOG)),
            }
        }
        Ok(Db {
            conn,
            replica: replica.to_string(),
            path: path.clone(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> String {
        sql_err(&self.path, e)
    }

    fn state_of(&self, model: &str) -> rusqlite::Result<Option<(String, i64)>> {
        self.conn
            .query_row(
                "SELECT state, version FROM model_state WHERE model = ?1",
                params![model],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
    }
}

/// Creates a new log, or migrates an older one step by step (inside the caller's
/// transaction). A newer log is refused.
fn migrate_schema(conn: &Connection, model: &str) -> Result<(), String> {
    let mut version: i64 = match log_version(conn)? {
        None => {
            conn.execute_batch(SCHEMA_V1).map_err(|e| e.to_string())?;
            1
        }
        Some(v) => v.parse().map_err(|_| newer_schema(&v))?,
    };
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(newer_schema(&version.to_string()));
    }
    if version == 1 {
        conn.execute_batch(MIGRATE_V2).map_err(|e| e.to_string())?;
        conn.execute(
            "INSERT INTO model_state (model, state, ts_ms, version) \
             SELECT ?1, state, ts_ms, 1 FROM admin_state",
            params![model],
        )
        .map_err(|e| e.to_string())?;
        conn.execute_batch("DROP TABLE admin_state;")
            .map_err(|e| e.to_string())?;
        version = 2;
    }
    conn.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema_version'",
        params![version.to_string()],
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}

const NOT_A_LOG: &str = "is a SQLite database but not a qgate log (no meta table); name a new file";

/// The schema version of the qgate log in `conn`; `None` for a database without tables (a
/// new log). Another application's database is an error.
fn log_version(conn: &Connection) -> Result<Option<String>, String> {
    let (tables, meta): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE name = 'meta') FROM sqlite_master \
             WHERE type = 'table'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| format!("is not a SQLite database: {e}"))?;
    match (tables, meta) {
        (0, _) => Ok(None),
        (_, 0) => Err(NOT_A_LOG.into()),
        _ => conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|v| Some(v.unwrap_or_else(|| "(none)".into())))
            .map_err(|e| e.to_string()),
    }
}

/// Checks, without creating or changing anything, that the log can be used: an existing
/// file must be a qgate log of this schema version or an older one (migrated at start); a
/// new one needs an existing, writable folder.
pub fn check(cfg: &LogConfig) -> Result<(), ServeError> {
    let LogTarget::Sqlite(path) = &cfg.target else {
        return Err(log_err(cfg, "not a SQLite log"));
    };
    if !path.exists() {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
            Ok(m) if m.is_dir() => Err(log_err(
                cfg,
                format!("its folder {} is read-only", dir.display()),
            )),
            _ => Err(log_err(
                cfg,
                format!("its folder {} does not exist", dir.display()),
            )),
        };
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| log_err(cfg, e))?;
    match log_version(&conn).map_err(|e| log_err(cfg, e))? {
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=SCHEMA_VERSION).contains(&n) => Ok(()),
            _ => Err(log_err(cfg, newer_schema(&v))),
        },
        None => Err(log_err(cfg, NOT_A_LOG)),
    }
}

impl LogDb for Db {
    fn ensure_connected(&mut self) -> Result<(), String> {
        Ok(())
    }

    fn begin(&mut self) -> Result<(), String> {
        // A transaction left open (a ROLLBACK that failed) would swallow every later
        // statement and refuse every BEGIN: end it first.
        if !self.conn.is_autocommit() {
            tracing::warn!("log: a transaction was left open; rolling it back");
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| format!("cannot write to the log {}: {e}", self.path.display()))
    }

    fn intact(&self) -> bool {
        // SQLite rolls a transaction back by itself after an I/O or disk-full error.
        !self.conn.is_autocommit()
    }

    fn commit(&mut self) -> Result<(), String> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| format!("cannot commit to the log {}: {e}", self.path.display()))
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn insert_request(&mut self, r: &RequestRecord) -> Result<String, String> {
        let mut id = r.request_id.clone();
        for n in 2.. {
            let res = self.conn.execute(
                &format!(
                    "INSERT INTO requests (request_id, client_request_id, ts, ts_ms, model, mode, \
                     arm, weight, canary_step, sticky_hash, input_digest, input_bytes, inputs, \
                     status, error, outputs, shadow_status, gateway_us, total_us, baseline_us, \
                     candidate_us, replica, record_key) \
                     VALUES (?2, ?3, {ISO}, ?1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                     ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
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
                    self.replica,
                    r.key,
                ],
            );
            match res {
                Ok(_) => return Ok(id),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation && n < 10_000 =>
                {
                    // This very record, written before (a commit whose answer was lost).
                    let written: Option<String> = self
                        .conn
                        .query_row(
                            "SELECT request_id FROM requests WHERE record_key = ?1",
                            params![r.key],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(|e| self.err(e))?;
                    if let Some(id) = written {
                        return Ok(id);
                    }
                    id = format!("{}~{n}", r.request_id);
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        unreachable!("the loop returns")
    }

    fn update_shadow(&mut self, s: &ShadowResult) -> Result<(), String> {
        self.conn
            .execute(
                "UPDATE requests SET shadow_status = ?2, shadow_error = ?3, shadow_outputs = ?4, \
                 shadow_us = ?5 WHERE request_id = ?1 AND shadow_status = 'pending'",
                params![s.request_id, s.status, s.error, s.outputs, s.candidate_us],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn insert_outcome(
        &mut self,
        request_id: &str,
        name: &str,
        value: f64,
    ) -> Result<(), OutcomeRefused> {
        let store = |e: rusqlite::Error| OutcomeRefused::Store(e.to_string());
        let known: Option<i64> = self
            .conn
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
        self.conn
            .execute(
                &format!(
                    "INSERT INTO outcomes (request_id, ts, ts_ms, name, value) \
                     VALUES (?2, {ISO}, ?1, ?3, ?4)"
                ),
                params![super::now_ms(), request_id, name, value],
            )
            .map_err(store)?;
        Ok(())
    }

    fn state_row(&mut self, model: &str) -> Result<Option<(String, i64)>, String> {
        self.state_of(model).map_err(|e| self.err(e))
    }

    fn swap_state(
        &mut self,
        model: &str,
        json: &str,
        ts_ms: i64,
        expected: i64,
    ) -> Result<Option<i64>, String> {
        let n = self
            .conn
            .execute(
                "UPDATE model_state SET state = ?1, ts_ms = ?2, version = version + 1 \
                 WHERE model = ?3 AND version = ?4",
                params![json, ts_ms, model, expected],
            )
            .map_err(|e| self.err(e))?;
        Ok((n == 1).then_some(expected + 1))
    }

    fn insert_state(&mut self, model: &str, json: &str, ts_ms: i64) -> Result<bool, String> {
        self.conn
            .execute(
                "INSERT INTO model_state (model, state, ts_ms, version) VALUES (?1, ?2, ?3, 1) \
                 ON CONFLICT (model) DO NOTHING",
                params![model, json, ts_ms],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    fn insert_action(&mut self, a: &AdminWrite, state: &str, ts_ms: i64) -> Result<(), String> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO admin_actions (ts, ts_ms, action, detail, state, model, replica) \
                     VALUES ({ISO}, ?1, ?2, ?3, ?4, ?5, ?6)"
                ),
                params![ts_ms, a.action, a.detail, state, a.model, self.replica],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn states(&mut self) -> Result<Vec<(String, AdminState, i64)>, String> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT model, state, version FROM model_state")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| sql_err(&self.path, e))?;
        let mut out = Vec::new();
        for row in rows {
            let (m, s, v) = row.map_err(|e| sql_err(&self.path, e))?;
            if let Ok(s) = serde_json::from_str(&s) {
                out.push((m, s, v));
            }
        }
        Ok(out)
    }

    fn sweep(&mut self, before_ms: Option<i64>) -> Result<u64, String> {
        let n = match before_ms {
            Some(t) => self.conn.execute(
                "UPDATE requests SET shadow_status = 'missing' \
                 WHERE shadow_status = 'pending' AND ts_ms < ?1",
                params![t],
            ),
            None => self.conn.execute(
                "UPDATE requests SET shadow_status = 'missing' \
                 WHERE shadow_status = 'pending' AND replica = ?1",
                params![self.replica],
            ),
        };
        n.map(|n| n as u64).map_err(|e| self.err(e))
    }

    /// Deletes at most `RETENTION_CHUNK` records past the configured age, else as many of
    /// the oldest while the database's used pages exceed the size limit (never records
    /// younger than `young_ms`, whose shadow copies may still be pending).
    fn retention_chunk(&mut self, cfg: &LogConfig, young_ms: i64) -> Result<bool, String> {
        let run = || -> rusqlite::Result<bool> {
            if let Some(age) = cfg.retain {
                let cutoff = super::now_ms() - age.as_millis() as i64;
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
            if let Some(max) = cfg.retain_max_bytes {
                let pages: i64 = self.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                let free: i64 = self
                    .conn
                    .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                let size: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
                if ((pages - free) * size) as u64 > max {
                    let n = self.conn.execute(
                        "DELETE FROM requests WHERE seq IN \
                         (SELECT seq FROM requests WHERE ts_ms < ?1 ORDER BY seq LIMIT ?2)",
                        params![young_ms, RETENTION_CHUNK],
                    )?;
                    return Ok(n == RETENTION_CHUNK);
                }
            }
            Ok(false)
        };
        run().map_err(|e| sql_err(&self.path, e))
    }

    fn checkpoint(&mut self) {
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    }
}

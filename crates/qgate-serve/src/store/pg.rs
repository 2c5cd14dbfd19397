//! The PostgreSQL dialect of the log: one database (or schema, through the URL's
//! `options=-c search_path=…`) that every replica writes. Each writer and the watcher own a
//! connection; a lost one is reconnected before the next batch.

use std::str::FromStr;
use std::time::Duration;

use postgres::{Client, GenericClient, NoTls};

use super::{
    iso_ms, log_err, newer_schema, now_ms, AdminWrite, LogDb, OutcomeRefused, RequestRecord,
    ShadowResult, MIGRATE_V2, SCHEMA_VERSION,
};
use crate::config::{LogConfig, LogTarget};
use crate::route::AdminState;
use crate::ServeError;

/// Records one retention step deletes.
const RETENTION_CHUNK: i64 = 2000;

/// Key of the advisory lock that serialises migrations between replicas.
const MIGRATION_LOCK: i64 = 0x7167_6174_6500; // "qgate\0"

/// Version 1, in PostgreSQL's types (a new database goes through the same steps as SQLite).
const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE requests (
    seq BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    client_request_id TEXT,
    ts TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL,
    arm TEXT,
    weight DOUBLE PRECISION NOT NULL,
    canary_step BIGINT,
    sticky_hash TEXT,
    input_digest TEXT,
    input_bytes BIGINT NOT NULL,
    inputs TEXT,
    status INTEGER NOT NULL,
    error TEXT,
    outputs TEXT,
    shadow_status TEXT,
    shadow_error TEXT,
    shadow_outputs TEXT,
    gateway_us BIGINT NOT NULL,
    total_us BIGINT NOT NULL,
    baseline_us BIGINT,
    candidate_us BIGINT,
    shadow_us BIGINT
);
CREATE INDEX requests_ts ON requests (ts_ms);
CREATE INDEX requests_pending ON requests (shadow_status) WHERE shadow_status = 'pending';
CREATE TABLE outcomes (
    seq BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    name TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL
);
CREATE INDEX outcomes_request ON outcomes (request_id);
CREATE TABLE admin_actions (
    seq BIGSERIAL PRIMARY KEY,
    ts TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE admin_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL,
    ts_ms BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('schema_version', '1');
";

pub struct Db {
    client: Option<Client>,
    config: postgres::Config,
    replica: String,
    in_txn: bool,
    /// A statement failed inside the transaction: PostgreSQL refuses the rest of it (and
    /// would answer COMMIT with a rollback).
    poisoned: bool,
    /// The SQLSTATE of the last failure, when the server gave one.
    last_sqlstate: Option<String>,
}

/// Text as PostgreSQL stores it: it refuses NUL in `text`, and a NUL echoed from a hostile
/// request (an input name in an error message) must not fail the batch it is committed in.
fn text(s: &Option<String>) -> Option<std::borrow::Cow<'_, str>> {
    s.as_deref().map(|t| {
        if t.contains('\0') {
            std::borrow::Cow::Owned(t.replace('\0', "\u{FFFD}"))
        } else {
            std::borrow::Cow::Borrowed(t)
        }
    })
}

fn pg_config(cfg: &LogConfig) -> Result<postgres::Config, ServeError> {
    let LogTarget::Postgres { url } = &cfg.target else {
        return Err(log_err(cfg, "not a PostgreSQL log"));
    };
    let mut c = postgres::Config::from_str(url)
        .map_err(|e| log_err(cfg, format!("is not a PostgreSQL connection URL: {e}")))?;
    c.application_name("qgate-serve");
    c.connect_timeout(cfg.connect_timeout);
    // A database that stops answering (a partition, not a refusal) fails the connection
    // instead of holding a commit, and the requests waiting on it, forever.
    c.keepalives(true);
    c.keepalives_idle(Duration::from_secs(10));
    c.tcp_user_timeout(cfg.connect_timeout.max(Duration::from_secs(5)));
    Ok(c)
}

/// Longest a statement (COMMIT included) or a lock wait may take on the server: a database
/// that is up but stuck fails the batch instead of holding its requests.
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

fn connect_with(config: &postgres::Config) -> Result<Client, String> {
    let mut c = config.connect(NoTls).map_err(|e| describe(&e))?;
    c.batch_execute(&format!(
        "SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {STATEMENT_TIMEOUT_MS}"
    ))
    .map_err(|e| describe(&e))?;
    Ok(c)
}

/// A PostgreSQL error with the server's message when there is one.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// The log's schema version; `None` for a database (schema) without a qgate log.
fn log_version(client: &mut impl GenericClient) -> Result<Option<String>, String> {
    let row = client
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE table_name = 'meta'), \
             COUNT(*) FILTER (WHERE table_name = 'requests') \
             FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )
        .map_err(|e| describe(&e))?;
    let (meta, requests): (i64, i64) = (row.get(0), row.get(1));
    match (meta, requests) {
        (0, 0) => Ok(None),
        (0, _) => Err(NOT_A_LOG.into()),
        _ => client
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .map(|r| Some(r.map_or_else(|| "(none)".into(), |r| r.get(0))))
            .map_err(|e| describe(&e)),
    }
}

const NOT_A_LOG: &str = "holds a `requests` table but no qgate `meta` table; name another \
                         database, or a schema of its own with ?options=-c%20search_path%3DNAME";

fn migrate(client: &mut Client, model: &str) -> Result<(), String> {
    let mut tx = client.transaction().map_err(|e| describe(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(|e| describe(&e))?;
    let mut version: i64 = match log_version(&mut tx)? {
        None => {
            tx.batch_execute(SCHEMA_V1).map_err(|e| describe(&e))?;
            1
        }
        Some(v) => v.parse().map_err(|_| newer_schema(&v))?,
    };
    if !(1..=SCHEMA_VERSION).contains(&version) {
        return Err(newer_schema(&version.to_string()));
    }
    if version == 1 {
        tx.batch_execute(MIGRATE_V2).map_err(|e| describe(&e))?;
        tx.execute(
            "INSERT INTO model_state (model, state, ts_ms, version) \
             SELECT $1, state, ts_ms, 1 FROM admin_state",
            &[&model],
        )
        .map_err(|e| describe(&e))?;
        tx.batch_execute("DROP TABLE admin_state;")
            .map_err(|e| describe(&e))?;
        version = 2;
    }
    tx.execute(
        "UPDATE meta SET value = $1 WHERE key = 'schema_version'",
        &[&version.to_string()],
    )
    .map_err(|e| describe(&e))?;
    tx.commit().map_err(|e| describe(&e))
}

impl Db {
    pub fn open(
        cfg: &LogConfig,
        replica: &str,
        model: &str,
        migrate_schema: bool,
    ) -> Result<Db, ServeError> {
        let config = pg_config(cfg)?;
        let mut client =
            connect_with(&config).map_err(|e| log_err(cfg, format!("cannot connect: {e}")))?;
        if migrate_schema {
            migrate(&mut client, model).map_err(|e| log_err(cfg, e))?;
        } else {
            match log_version(&mut client).map_err(|e| log_err(cfg, e))? {
                Some(v) if v == SCHEMA_VERSION.to_string() => {}
                Some(v) => return Err(log_err(cfg, newer_schema(&v))),
                None => return Err(log_err(cfg, "holds no qgate log")),
            }
        }
        Ok(Db {
            client: Some(client),
            config,
            replica: replica.to_string(),
            in_txn: false,
            poisoned: false,
            last_sqlstate: None,
        })
    }

    fn client(&mut self) -> Result<&mut Client, String> {
        self.client
            .as_mut()
            .ok_or_else(|| "the connection to the log database is lost".to_string())
    }

    /// Runs `f` on the connection; a failure inside a transaction poisons it.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, String> {
        let res = f(self.client()?);
        if let Err(e) = &res {
            self.last_sqlstate = e.code().map(|c| c.code().to_string());
            if self.in_txn {
                self.poisoned = true;
            }
        }
        res.map_err(|e| describe(&e))
    }

    fn state_of(&mut self, model: &str) -> Result<Option<(String, i64)>, String> {
        self.run(|c| {
            c.query_opt(
                "SELECT state, version FROM model_state WHERE model = $1",
                &[&model],
            )
            .map(|r| r.map(|r| (r.get(0), r.get(1))))
        })
    }
}

/// Checks, without creating or changing anything, that the database can be reached and
/// holds no log, or a log of this or an older schema version.
pub fn check(cfg: &LogConfig) -> Result<(), ServeError> {
    let config = pg_config(cfg)?;
    let mut client =
        connect_with(&config).map_err(|e| log_err(cfg, format!("cannot connect: {e}")))?;
    match log_version(&mut client).map_err(|e| log_err(cfg, e))? {
        None => Ok(()),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=SCHEMA_VERSION).contains(&n) => Ok(()),
            _ => Err(log_err(cfg, newer_schema(&v))),
        },
    }
}

impl LogDb for Db {
    fn ensure_connected(&mut self) -> Result<(), String> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        self.in_txn = false;
        let c = connect_with(&self.config)
            .map_err(|e| format!("cannot reconnect to the log database: {e}"))?;
        self.client = Some(c);
        Ok(())
    }

    fn begin(&mut self) -> Result<(), String> {
        if self.in_txn {
            self.rollback();
        }
        self.run(|c| c.batch_execute("BEGIN"))
            .map_err(|e| format!("cannot write to the log: {e}"))?;
        self.in_txn = true;
        self.poisoned = false;
        Ok(())
    }

    fn intact(&self) -> bool {
        self.in_txn && !self.poisoned && self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    fn commit(&mut self) -> Result<(), String> {
        let res = self.run(|c| c.batch_execute("COMMIT"));
        self.in_txn = false;
        res.map_err(|e| format!("cannot commit to the log: {e}"))
    }

    fn rollback(&mut self) {
        if self.in_txn {
            self.in_txn = false;
            if let Some(c) = self.client.as_mut() {
                let _ = c.batch_execute("ROLLBACK");
            }
        }
    }

    fn insert_request(&mut self, r: &RequestRecord) -> Result<String, String> {
        let ts = iso_ms(r.ts_ms);
        let status = i32::from(r.status);
        let replica = self.replica.clone();
        let mut id = r.request_id.clone();
        for n in 2..10_000 {
            let inserted = self.run(|c| {
                c.execute(
                    "INSERT INTO requests (request_id, client_request_id, ts, ts_ms, model, mode, \
                     arm, weight, canary_step, sticky_hash, input_digest, input_bytes, inputs, \
                     status, error, outputs, shadow_status, gateway_us, total_us, baseline_us, \
                     candidate_us, replica, record_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
                     ON CONFLICT DO NOTHING",
                    &[
                        &id,
                        &r.client_request_id,
                        &ts,
                        &r.ts_ms,
                        &r.model,
                        &r.mode,
                        &r.arm,
                        &r.weight,
                        &r.canary_step,
                        &r.sticky_hash,
                        &r.input_digest,
                        &r.input_bytes,
                        &text(&r.inputs),
                        &status,
                        &text(&r.error),
                        &text(&r.outputs),
                        &r.shadow_status,
                        &r.gateway_us,
                        &r.total_us,
                        &r.baseline_us,
                        &r.candidate_us,
                        &replica,
                        &r.key,
                    ],
                )
            })?;
            if inserted == 1 {
                return Ok(id);
            }
            // This very record, written before (a commit whose answer was lost)?
            let written = self.run(|c| {
                c.query_opt(
                    "SELECT request_id FROM requests WHERE record_key = $1",
                    &[&r.key],
                )
            })?;
            if let Some(row) = written {
                return Ok(row.get(0));
            }
            id = format!("{}~{n}", r.request_id);
        }
        Err(format!(
            "the request id {} is logged 10 000 times",
            r.request_id
        ))
    }

    fn update_shadow(&mut self, s: &ShadowResult) -> Result<(), String> {
        self.run(|c| {
            c.execute(
                "UPDATE requests SET shadow_status = $2, shadow_error = $3, shadow_outputs = $4, \
                 shadow_us = $5 WHERE request_id = $1 AND shadow_status = 'pending'",
                &[
                    &s.request_id,
                    &s.status,
                    &text(&s.error),
                    &text(&s.outputs),
                    &s.candidate_us,
                ],
            )
        })
        .map(|_| ())
    }

    fn insert_outcome(
        &mut self,
        request_id: &str,
        name: &str,
        value: f64,
    ) -> Result<(), OutcomeRefused> {
        let known = self
            .run(|c| {
                c.query_opt(
                    "SELECT 1 FROM requests WHERE request_id = $1",
                    &[&request_id],
                )
            })
            .map_err(OutcomeRefused::Store)?;
        if known.is_none() {
            return Err(OutcomeRefused::UnknownRequest);
        }
        let ts = now_ms();
        self.run(|c| {
            c.execute(
                "INSERT INTO outcomes (request_id, ts, ts_ms, name, value) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &request_id,
                    &iso_ms(ts),
                    &ts,
                    &text(&Some(name.to_string())),
                    &value,
                ],
            )
        })
        .map_err(OutcomeRefused::Store)?;
        Ok(())
    }

    fn state_row(&mut self, model: &str) -> Result<Option<(String, i64)>, String> {
        self.state_of(model)
    }

    fn swap_state(
        &mut self,
        model: &str,
        json: &str,
        ts_ms: i64,
        expected: i64,
    ) -> Result<Option<i64>, String> {
        let row = self.run(|c| {
            c.query_opt(
                "UPDATE model_state SET state = $1, ts_ms = $2, version = version + 1 \
                 WHERE model = $3 AND version = $4 RETURNING version",
                &[&json, &ts_ms, &model, &expected],
            )
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn insert_state(&mut self, model: &str, json: &str, ts_ms: i64) -> Result<bool, String> {
        self.run(|c| {
            c.execute(
                "INSERT INTO model_state (model, state, ts_ms, version) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (model) DO NOTHING",
                &[&model, &json, &ts_ms],
            )
        })
        .map(|n| n == 1)
    }

    fn insert_action(&mut self, a: &AdminWrite, state: &str, ts_ms: i64) -> Result<(), String> {
        let replica = self.replica.clone();
        self.run(|c| {
            c.execute(
                "INSERT INTO admin_actions (ts, ts_ms, action, detail, state, model, replica) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &iso_ms(ts_ms),
                    &ts_ms,
                    &a.action,
                    &text(&Some(a.detail.clone())),
                    &state,
                    &a.model,
                    &replica,
                ],
            )
        })
        .map(|_| ())
    }

    fn states(&mut self) -> Result<Vec<(String, AdminState, i64)>, String> {
        let rows = self.run(|c| c.query("SELECT model, state, version FROM model_state", &[]))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let state: String = r.get(1);
                serde_json::from_str(&state)
                    .ok()
                    .map(|s| (r.get(0), s, r.get(2)))
            })
            .collect())
    }

    fn sweep(&mut self, before_ms: Option<i64>) -> Result<u64, String> {
        let replica = self.replica.clone();
        self.run(|c| match before_ms {
            Some(t) => c.execute(
                "UPDATE requests SET shadow_status = 'missing' \
                 WHERE shadow_status = 'pending' AND ts_ms < $1",
                &[&t],
            ),
            None => c.execute(
                "UPDATE requests SET shadow_status = 'missing' \
                 WHERE shadow_status = 'pending' AND replica = $1",
                &[&replica],
            ),
        })
    }

    fn last_error_was_data(&self) -> bool {
        // Class 22: data exceptions (a value the server refuses), 23: integrity.
        self.last_sqlstate
            .as_deref()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
    }

    fn retention_chunk(&mut self, cfg: &LogConfig, _young_ms: i64) -> Result<bool, String> {
        let Some(age) = cfg.retain else {
            return Ok(false);
        };
        let cutoff = now_ms() - age.as_millis() as i64;
        let mut more = false;
        for table in ["requests", "outcomes"] {
            let n = self.run(|c| {
                c.execute(
                    &format!(
                        "DELETE FROM {table} WHERE seq IN \
                         (SELECT seq FROM {table} WHERE ts_ms < $1 ORDER BY seq LIMIT $2)"
                    ),
                    &[&cutoff, &RETENTION_CHUNK],
                )
            })?;
            more |= n as i64 == RETENTION_CHUNK;
        }
        Ok(more)
    }
}

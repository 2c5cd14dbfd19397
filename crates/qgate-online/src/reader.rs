//! Reading the gateway's log: the [`LogReader`] trait and its SQLite implementation (the
//! PostgreSQL one is qgate-serve's `PgReader`, beside its PostgreSQL writer, so that this
//! crate needs no async runtime). Rows are handed to a visitor in arrival order, one at a time, so a log
//! of millions of requests is never held in memory as rows.

use std::path::{Path, PathBuf};

use crate::OnlineError;

/// Log schema versions this build reads (docs/serve.md, "The log").
pub const READABLE_SCHEMAS: [u32; 2] = [1, 2];

/// Which rows to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub model: String,
    /// Arrival time from (Unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Arrival time until (Unix ms, exclusive).
    pub until_ms: Option<i64>,
    /// Read the stored inputs too (`--export-inputs`).
    pub with_inputs: bool,
}

/// One logged request, as the analysis needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRow {
    pub seq: i64,
    pub request_id: String,
    pub ts_ms: i64,
    pub mode: String,
    /// `baseline` / `candidate`; `None` when refused before routing.
    pub arm: Option<String>,
    /// The candidate's share in force when it arrived.
    pub weight: f64,
    pub canary_step: Option<i64>,
    /// HTTP status sent to the client.
    pub status: i64,
    pub outputs: Option<String>,
    pub shadow_status: Option<String>,
    pub shadow_outputs: Option<String>,
    pub baseline_us: Option<i64>,
    pub candidate_us: Option<i64>,
    pub shadow_us: Option<i64>,
    /// The V2 `inputs` list, when stored and asked for.
    pub inputs: Option<String>,
}

/// One outcome posted to `/outcome`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRow {
    pub request_id: String,
    pub name: String,
    pub value: f64,
    pub ts_ms: i64,
}

/// One admin action (an operator's or the automatic canary's decision).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub ts_ms: i64,
    pub action: String,
    /// The call's JSON body, or the controller's decision record.
    pub detail: String,
}

/// A read-only view of a gateway log.
pub trait LogReader {
    /// The log, for reports (a PostgreSQL password is hidden).
    fn describe(&self) -> String;
    /// `meta.schema_version`.
    fn schema_version(&mut self) -> Result<u32, OnlineError>;
    /// The model names with at least one request.
    fn models(&mut self) -> Result<Vec<String>, OnlineError>;
    /// The requests `q` selects, in arrival order (`seq`).
    fn requests(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(RequestRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError>;
    /// The admin actions on `q`'s model in `q`'s window, in order (a schema-1 log does not
    /// name the model of an action: all of them).
    fn actions(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(ActionRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError>;
    /// The outcomes of the requests `q` selects (whenever the outcome arrived), in arrival
    /// order: a later value of the same name for the same request replaces an earlier one.
    fn outcomes(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(OutcomeRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError>;
}

/// Whether `spec` names a PostgreSQL log.
pub fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// Opens an SQLite log: `sqlite:PATH` or a path. A PostgreSQL log is read by qgate-serve's
/// reader (`qgate_serve::open_log`), which owns the PostgreSQL client: this crate stays
/// free of any async runtime.
pub fn open(spec: &str) -> Result<Box<dyn LogReader>, OnlineError> {
    if is_postgres(spec) {
        return Err(OnlineError::Log(format!(
            "{}: a PostgreSQL log is read through qgate_serve::open_log",
            redact(spec)
        )));
    }
    let path = spec.strip_prefix("sqlite:").unwrap_or(spec);
    Ok(Box::new(SqliteReader::open(Path::new(path))?))
}

/// A connection URL with its password replaced by `***` (in `user:pass@` and in
/// `password=` parameters), for every message and report.
pub fn redact(url: &str) -> String {
    let mut out = match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => match rest[..at].find(':') {
                    Some(colon) => format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]),
                    None => url.to_string(),
                },
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    while let Some(i) = out
        .find("password=")
        .filter(|i| !out[i + 9..].starts_with("***"))
    {
        let start = i + 9;
        let end = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |e| start + e);
        out.replace_range(start..end, "***");
    }
    out
}

/// The request columns the analysis reads, in [`RequestRow`] order.
pub const COLUMNS: &str =
    "seq, request_id, ts_ms, mode, arm, weight, canary_step, status, outputs, \
     shadow_status, shadow_outputs, baseline_us, candidate_us, shadow_us";

/// A query parameter, for either dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlParam {
    Text(String),
    Int(i64),
}

/// The two queries of a [`Query`], written with `placeholder(i)` for the i-th parameter
/// (`?1` in SQLite, `$1` in PostgreSQL) and `columns` for the request columns (PostgreSQL
/// widens its INTEGER columns): `(requests SQL, outcomes SQL, parameters)`.
pub fn queries(
    q: &Query,
    columns: &str,
    placeholder: fn(usize) -> String,
) -> (String, String, Vec<SqlParam>) {
    let mut w = format!("model = {}", placeholder(1));
    let mut params = vec![SqlParam::Text(q.model.clone())];
    for (bound, op) in [(q.since_ms, ">="), (q.until_ms, "<")] {
        if let Some(t) = bound {
            params.push(SqlParam::Int(t));
            w += &format!(" AND ts_ms {op} {}", placeholder(params.len()));
        }
    }
    let inputs = if q.with_inputs { ", inputs" } else { "" };
    (
        format!("SELECT {columns}{inputs} FROM requests WHERE {w} ORDER BY seq"),
        format!(
            "SELECT o.request_id, o.name, o.value, o.ts_ms FROM outcomes o \
             WHERE o.request_id IN (SELECT request_id FROM requests WHERE {w}) ORDER BY o.seq"
        ),
        params,
    )
}

/// The admin actions' SQL of a [`Query`] (see [`queries`]); `by_model` is false for a
/// schema-1 log, whose actions name no model.
pub fn actions_query(
    q: &Query,
    by_model: bool,
    placeholder: fn(usize) -> String,
) -> (String, Vec<SqlParam>) {
    let mut w = vec![];
    let mut params = vec![];
    if by_model {
        params.push(SqlParam::Text(q.model.clone()));
        w.push(format!("model = {}", placeholder(1)));
    }
    for (bound, op) in [(q.since_ms, ">="), (q.until_ms, "<")] {
        if let Some(t) = bound {
            params.push(SqlParam::Int(t));
            w.push(format!("ts_ms {op} {}", placeholder(params.len())));
        }
    }
    let w = if w.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", w.join(" AND "))
    };
    (
        format!("SELECT ts_ms, action, detail FROM admin_actions{w} ORDER BY seq"),
        params,
    )
}

/// An [`ActionRow`] from a result row of [`actions_query`]'s SQL.
#[macro_export]
macro_rules! action_row {
    ($r:expr, $get:ident) => {
        $crate::reader::ActionRow {
            ts_ms: $r.$get(0)?,
            action: $r.$get(1)?,
            detail: $r.$get(2)?,
        }
    };
}

/// A [`RequestRow`] from a result row of [`queries`]' request SQL: `$get` is the row's
/// fallible getter by column index (`get` in rusqlite, `try_get` in postgres).
#[macro_export]
macro_rules! request_row {
    ($r:expr, $get:ident, $with_inputs:expr) => {
        $crate::RequestRow {
            seq: $r.$get(0)?,
            request_id: $r.$get(1)?,
            ts_ms: $r.$get(2)?,
            mode: $r.$get(3)?,
            arm: $r.$get(4)?,
            weight: $r.$get(5)?,
            canary_step: $r.$get(6)?,
            status: $r.$get(7)?,
            outputs: $r.$get(8)?,
            shadow_status: $r.$get(9)?,
            shadow_outputs: $r.$get(10)?,
            baseline_us: $r.$get(11)?,
            candidate_us: $r.$get(12)?,
            shadow_us: $r.$get(13)?,
            inputs: if $with_inputs { $r.$get(14)? } else { None },
        }
    };
}

/// An [`OutcomeRow`] from a result row of [`queries`]' outcome SQL.
#[macro_export]
macro_rules! outcome_row {
    ($r:expr, $get:ident) => {
        $crate::OutcomeRow {
            request_id: $r.$get(0)?,
            name: $r.$get(1)?,
            value: $r.$get(2)?,
            ts_ms: $r.$get(3)?,
        }
    };
}

/// Refuses a schema version this build does not read.
pub fn check_schema(version: u32, what: &str) -> Result<u32, OnlineError> {
    if READABLE_SCHEMAS.contains(&version) {
        Ok(version)
    } else {
        Err(OnlineError::Log(format!(
            "{what}: log schema version {version} is newer than this qgate reads ({}); use the qgate that wrote it",
            READABLE_SCHEMAS.map(|v| v.to_string()).join(", ")
        )))
    }
}

/// A gateway's SQLite log, opened read-only (the gateway may be writing it).
pub struct SqliteReader {
    conn: rusqlite::Connection,
    path: PathBuf,
}

impl SqliteReader {
    /// Opens `path` read-only; a missing file or one that is not a qgate log is an error
    /// naming it.
    pub fn open(path: &Path) -> Result<SqliteReader, OnlineError> {
        if path.is_dir() {
            return Err(OnlineError::Log(format!(
                "{}: a folder, not a log file (give the gateway's [log] path, sqlite:PATH or a postgres:// URL)",
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(OnlineError::Log(format!(
                "{}: no such log file (give the gateway's [log] path, sqlite:PATH or a postgres:// URL)",
                path.display()
            )));
        }
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| OnlineError::Log(format!("{}: {e}", path.display())))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
        let mut r = SqliteReader {
            conn,
            path: path.to_path_buf(),
        };
        r.schema_version()?;
        Ok(r)
    }

    fn err(&self, e: impl std::fmt::Display) -> OnlineError {
        OnlineError::Log(format!("{}: {e}", self.path.display()))
    }

    /// Runs `sql` and hands each row, as `map` reads it, to `visit`.
    fn each<T>(
        &self,
        sql: &str,
        params: Vec<SqlParam>,
        map: fn(&rusqlite::Row<'_>, bool) -> rusqlite::Result<T>,
        with_inputs: bool,
        visit: &mut dyn FnMut(T) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        use rusqlite::types::Value;
        let params = params.into_iter().map(|p| match p {
            SqlParam::Text(t) => Value::Text(t),
            SqlParam::Int(i) => Value::Integer(i),
        });
        let mut st = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let mut rows = st
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            visit(map(r, with_inputs).map_err(|e| self.err(e))?)?;
        }
        Ok(())
    }
}

fn placeholder(i: usize) -> String {
    format!("?{i}")
}

impl LogReader for SqliteReader {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn schema_version(&mut self) -> Result<u32, OnlineError> {
        let v: String = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| {
                let damaged = matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
                );
                self.err(if damaged {
                    format!("damaged or not an SQLite database ({e})")
                } else {
                    format!("not a qgate gateway log (no meta.schema_version: {e})")
                })
            })?;
        let v = v
            .parse::<u32>()
            .map_err(|_| self.err(format!("meta.schema_version '{v}' is not a number")))?;
        check_schema(v, &self.path.display().to_string())
    }

    fn models(&mut self) -> Result<Vec<String>, OnlineError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT model FROM requests ORDER BY model")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    fn requests(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(RequestRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let (sql, _, params) = queries(q, COLUMNS, placeholder);
        self.each(
            &sql,
            params,
            |r, inputs| Ok(request_row!(r, get, inputs)),
            q.with_inputs,
            visit,
        )
    }

    fn actions(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(ActionRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let by_model = self.schema_version()? >= 2;
        let (sql, params) = actions_query(q, by_model, placeholder);
        self.each(&sql, params, |r, _| Ok(action_row!(r, get)), false, visit)
    }

    fn outcomes(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(OutcomeRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let (_, sql, params) = queries(q, COLUMNS, placeholder);
        self.each(&sql, params, |r, _| Ok(outcome_row!(r, get)), false, visit)
    }
}

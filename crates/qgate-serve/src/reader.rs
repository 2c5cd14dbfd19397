//! `qgate analyze` on a PostgreSQL log: qgate-online's [`LogReader`] over the same
//! `postgres` client the gateway writes with (it runs a small tokio runtime inside, which is
//! why it lives here and not in the synchronous analysis crate).

use qgate_online::reader::{
    actions_query, check_schema, is_postgres, queries, redact, ActionRow, SqlParam, COLUMNS,
};
use qgate_online::{
    action_row, outcome_row, request_row, LogReader, OnlineError, OutcomeRow, Query, RequestRow,
};

/// [`COLUMNS`] in PostgreSQL's types: its INTEGER columns widened to the row's i64.
fn pg_columns() -> String {
    COLUMNS
        .split(", ")
        .map(|c| match c.trim() {
            "canary_step" | "status" => format!("{}::BIGINT", c.trim()),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens the log at `spec` for reading: a `postgres://` URL here, anything else as
/// qgate-online's SQLite log.
pub fn open_log(spec: &str) -> Result<Box<dyn LogReader>, OnlineError> {
    if is_postgres(spec) {
        Ok(Box::new(PgReader::open(spec)?))
    } else {
        qgate_online::open(spec)
    }
}

/// A PostgreSQL log shared by several gateways (each query reads one snapshot, so a busy
/// gateway cannot tear a read).
pub struct PgReader {
    client: postgres::Client,
    shown: String,
}

impl PgReader {
    /// Connects to `url` (10 s connect timeout).
    pub fn open(url: &str) -> Result<PgReader, OnlineError> {
        use std::str::FromStr;
        let shown = redact(url);
        let mut config = postgres::Config::from_str(url)
            .map_err(|e| OnlineError::Log(format!("{shown}: not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        let client = config.connect(postgres::NoTls).map_err(|e| {
            OnlineError::Log(format!(
                "{shown}: cannot connect: {}",
                crate::store::pg::describe(&e)
            ))
        })?;
        let mut r = PgReader { client, shown };
        r.schema_version()?;
        Ok(r)
    }

    fn err(&self, e: impl std::fmt::Display) -> OnlineError {
        OnlineError::Log(format!("{}: {e}", self.shown))
    }

    /// Runs `sql` (streaming its rows) and hands each, as `map` reads it, to `visit`.
    fn each<T>(
        &mut self,
        sql: &str,
        params: Vec<SqlParam>,
        map: fn(&postgres::Row, bool) -> Result<T, postgres::Error>,
        with_inputs: bool,
        visit: &mut dyn FnMut(T) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        use postgres::fallible_iterator::FallibleIterator;
        let shown = self.shown.clone();
        let e = |e: postgres::Error| {
            OnlineError::Log(format!("{shown}: {}", crate::store::pg::describe(&e)))
        };
        let params: Vec<Box<dyn postgres::types::ToSql + Sync>> = params
            .into_iter()
            .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
                match p {
                    SqlParam::Text(t) => Box::new(t),
                    SqlParam::Int(i) => Box::new(i),
                }
            })
            .collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        let mut it = self.client.query_raw(sql, refs).map_err(e)?;
        while let Some(r) = it.next().map_err(e)? {
            visit(map(&r, with_inputs).map_err(e)?)?;
        }
        Ok(())
    }
}

fn placeholder(i: usize) -> String {
    format!("${i}")
}

impl LogReader for PgReader {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn schema_version(&mut self) -> Result<u32, OnlineError> {
        let row = self
            .client
            .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
            .map_err(|e| {
                self.err(format!(
                    "not a qgate gateway log (no meta.schema_version: {e})"
                ))
            })?
            .ok_or_else(|| self.err("not a qgate gateway log (no meta.schema_version)"))?;
        let v: String = row.get(0);
        let v = v
            .parse::<u32>()
            .map_err(|_| self.err(format!("meta.schema_version '{v}' is not a number")))?;
        check_schema(v, &self.shown)
    }

    fn models(&mut self) -> Result<Vec<String>, OnlineError> {
        let rows = self
            .client
            .query("SELECT DISTINCT model FROM requests ORDER BY model", &[])
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn requests(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(RequestRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let (sql, _, params) = queries(q, &pg_columns(), placeholder);
        self.each(
            &sql,
            params,
            |r, inputs| Ok(request_row!(r, try_get, inputs)),
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
        self.each(
            &sql,
            params,
            |r, _| Ok(action_row!(r, try_get)),
            false,
            visit,
        )
    }

    fn outcomes(
        &mut self,
        q: &Query,
        visit: &mut dyn FnMut(OutcomeRow) -> Result<(), OnlineError>,
    ) -> Result<(), OnlineError> {
        let (_, sql, params) = queries(q, COLUMNS, placeholder);
        self.each(
            &sql,
            params,
            |r, _| Ok(outcome_row!(r, try_get)),
            false,
            visit,
        )
    }
}

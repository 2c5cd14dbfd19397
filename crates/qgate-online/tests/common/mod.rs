//! What the tests and the benchmark of qgate-online share: a log's schema as the gateway
//! writes it (docs/serve.md, "The log", version 2), the columns the analysis reads.

/// The tables of a version-2 log, reduced to the columns the reader reads.
pub const LOG_SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '2');
CREATE TABLE requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL UNIQUE,
   ts_ms INTEGER NOT NULL, model TEXT NOT NULL, mode TEXT NOT NULL, arm TEXT, weight REAL NOT NULL,
   canary_step INTEGER, status INTEGER NOT NULL, outputs TEXT, shadow_status TEXT,
   shadow_outputs TEXT, baseline_us INTEGER, candidate_us INTEGER, shadow_us INTEGER, inputs TEXT);
CREATE TABLE outcomes (seq INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
   ts_ms INTEGER NOT NULL, name TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX outcomes_request ON outcomes (request_id);
CREATE TABLE admin_actions (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL DEFAULT '',
   ts_ms INTEGER NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, state TEXT NOT NULL DEFAULT '',
   model TEXT, replica TEXT);
";

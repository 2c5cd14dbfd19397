//! Helpers shared by the binary's integration tests: fixture paths and one way to run
//! `qgate` in a temporary output directory.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of fixtures/digits.
pub fn fx(name: &str) -> String {
    root()
        .join("fixtures/digits")
        .join(name)
        .display()
        .to_string()
}

/// A file of examples/digits.
pub fn ex(name: &str) -> String {
    root()
        .join("examples/digits")
        .join(name)
        .display()
        .to_string()
}

/// docs/report.schema.json, compiled once per test binary.
fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = root().join("docs/report.schema.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
    })
}

/// Fails the test when `dir/report.json` exists and does not validate against the
/// published schema: every report a test makes is checked.
pub fn assert_valid_report(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("report.json")) else {
        return;
    };
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}/report.json is not JSON: {e}", dir.display()));
    let errors: Vec<String> = schema()
        .iter_errors(&report)
        .take(5)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{}/report.json does not match docs/report.schema.json:\n{}",
        dir.display(),
        errors.join("\n")
    );
}

/// One finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub out: tempfile::TempDir,
}

impl Run {
    pub fn json(&self) -> Value {
        let text = std::fs::read_to_string(self.out.path().join("report.json"))
            .unwrap_or_else(|e| panic!("{e}\nstdout {}\nstderr {}", self.stdout, self.stderr));
        serde_json::from_str(&text).unwrap()
    }

    /// report.json, or null when none was written (error runs).
    pub fn json_or_null(&self) -> Value {
        std::fs::read_to_string(self.out.path().join("report.json"))
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null)
    }

    /// Another file of the output directory.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.path().join(name)).unwrap()
    }

    /// Asserts an error run: exit 2 and every needle on stderr.
    pub fn assert_error(&self, needles: &[&str]) {
        assert_eq!(
            self.code, 2,
            "expected exit 2\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "'{n}' missing from: {}",
                self.stderr
            );
        }
    }

    /// The gate criterion `key` (null when absent).
    pub fn criterion(&self, key: &str) -> Value {
        self.json()["gate"]["criteria"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// A policy file holding `text`, in a temporary folder kept alive by the returned guard.
pub fn policy(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, text).unwrap();
    let s = p.display().to_string();
    (dir, s)
}

/// Runs `qgate CMD ARGS EXTRA --out TMP --no-progress`; a panic in stderr fails the test.
pub fn qgate(cmd: &str, args: &[&str], extra: &[&str]) -> Run {
    let out = tempfile::tempdir().unwrap();
    let o = Command::cargo_bin("qgate")
        .unwrap()
        .arg(cmd)
        .args(args)
        .args(extra)
        .arg("--out")
        .arg(out.path())
        .arg("--no-progress")
        .output()
        .unwrap();
    let run = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        out,
    };
    assert!(!run.stderr.contains("panicked"), "panic: {}", run.stderr);
    assert_valid_report(run.out.path());
    run
}

/// What a run of the binary with exactly the given arguments printed.
pub struct Exec {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `qgate ARGS` as given (no `--out` added), at most 30 s: a hang fails the test instead
/// of stalling it.
pub fn exec(args: &[&str]) -> Exec {
    let o = Command::cargo_bin("qgate")
        .unwrap()
        .args(args)
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    if let Some(i) = args.iter().position(|a| *a == "--out") {
        if let Some(dir) = args.get(i + 1) {
            assert_valid_report(Path::new(dir));
        }
    }
    Exec {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A new database on the PostgreSQL server of `QGATE_PG_URL` (`.ci/run` starts one with
/// tests/servers/pg.sh and requires it with `QGATE_REQUIRE_PG=1`); its URL.
pub fn pg_database(tag: &str) -> Option<String> {
    let server = match std::env::var("QGATE_PG_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("QGATE_REQUIRE_PG").is_ok() => panic!("QGATE_PG_URL is not set"),
        _ => {
            eprintln!("skipping: QGATE_PG_URL (a PostgreSQL server) is not set");
            return None;
        }
    };
    let name = format!("qgate_bin_{tag}_{}", std::process::id());
    let mut c = postgres::Client::connect(&server, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    Some(format!("{}/{name}", server.rsplit_once('/').unwrap().0))
}

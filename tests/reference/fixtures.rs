//! Where the committed fixtures are, for the tests of every crate (included with
//! `#[path = "../../../tests/reference/fixtures.rs"] mod fixtures_dir;`).

use std::path::{Path, PathBuf};

/// The workspace's `fixtures/digits`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits")
}

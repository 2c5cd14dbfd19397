//! Helpers shared by the integration tests: fake /proc and /sys trees.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

/// Writes `text` to `root/rel`, creating the folders on the way.
pub fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Whether the tests run as root, who reads files whatever their mode.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    // Real, effective, saved, filesystem: permission checks use the filesystem uid.
    uid_line.split_whitespace().nth(4) == Some("0")
}

/// Asserts `got` is within `rel` (a fraction) of `want`.
pub fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: got {got}, want {want} ± {:.0} %",
        rel * 100.0
    );
}

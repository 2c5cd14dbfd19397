//! Memory and CPU time of one process, from `/proc/<pid>/{status,stat,smaps_rollup}`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{read_file, ProbeError, Roots};

/// Clock ticks per second of `/proc/<pid>/stat` times. The kernel fixes USER_HZ at 100 on
/// every Linux ABI Rust targets; reading `sysconf(_SC_CLK_TCK)` would need libc.
pub const USER_HZ: f64 = 100.0;

/// Resident memory of a process now and at its peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemStatus {
    /// Resident set size now (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`) since start or the last [`reset_peak`], in bytes.
    pub peak_rss_bytes: u64,
}

fn proc_dir(roots: &Roots, pid: Option<u32>) -> PathBuf {
    match pid {
        Some(pid) => roots.proc.join(pid.to_string()),
        None => roots.proc.join("self"),
    }
}

/// The value of a `Key:   <n> kB` line, in bytes.
pub(crate) fn kb_line(text: &str, key: &str, path: &Path) -> Result<u64, ProbeError> {
    let bad = || ProbeError::Parse {
        path: path.to_path_buf(),
        expected: format!("a line \"{key}: <number> kB\""),
    };
    let rest = text
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .ok_or_else(bad)?;
    let mut words = rest.split_whitespace();
    let kb: u64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
    if words.next() != Some("kB") {
        return Err(bad());
    }
    kb.checked_mul(1024).ok_or_else(bad)
}

/// `VmRSS` and `VmHWM` of `/proc/<pid>/status` (`/proc/self` when `pid` is `None`).
pub fn mem_status(roots: &Roots, pid: Option<u32>) -> Result<MemStatus, ProbeError> {
    let path = proc_dir(roots, pid).join("status");
    let text = read_file(&path)?;
    Ok(MemStatus {
        rss_bytes: kb_line(&text, "VmRSS", &path)?,
        peak_rss_bytes: kb_line(&text, "VmHWM", &path)?,
    })
}

/// Resets the peak (VmHWM) of this process by writing "5" to /proc/self/clear_refs;
/// `Ok(false)` where the kernel refuses (permission, a kernel older than 4.0 that rejects
/// "5", or one built without `clear_refs`).
pub fn reset_peak(roots: &Roots) -> Result<bool, ProbeError> {
    let path = roots.proc.join("self").join("clear_refs");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(b"5"));
    match written {
        Ok(()) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::NotFound
            ) =>
        {
            Ok(false)
        }
        Err(source) => Err(ProbeError::Write { path, source }),
    }
}

/// User + system CPU seconds of the process (all threads): fields 14 and 15 of
/// `/proc/<pid|self>/stat` divided by [`USER_HZ`].
pub fn cpu_seconds(roots: &Roots, pid: Option<u32>) -> Result<f64, ProbeError> {
    let path = proc_dir(roots, pid).join("stat");
    let text = read_file(&path)?;
    let bad = || ProbeError::Parse {
        path: path.clone(),
        expected: "\"pid (comm) state ...\" with utime and stime as fields 14 and 15".into(),
    };
    // comm (field 2) may hold spaces and parentheses, so fields are counted from its last ')'.
    let after_comm = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3].
    let tick = |n: usize| -> Result<u64, ProbeError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(bad)
    };
    let ticks = tick(14)?.checked_add(tick(15)?).ok_or_else(bad)?;
    Ok(ticks as f64 / USER_HZ)
}

/// `Rss` of `/proc/<pid|self>/smaps_rollup`, in bytes: the kernel's page-table walk, an
/// accounting independent of the counters behind `VmRSS`.
pub fn smaps_rollup_rss(roots: &Roots, pid: Option<u32>) -> Result<u64, ProbeError> {
    let path = proc_dir(roots, pid).join("smaps_rollup");
    let text = read_file(&path)?;
    kb_line(&text, "Rss", &path)
}

//! The memory limit. Sizes that come from a declared shape, an archive header or a flag are
//! checked against it before anything is allocated, so a hostile file or a typo is an error
//! that names its source rather than an abort ("memory allocation of … failed").
//!
//! The limit is one setting of the process (like its allocator): the binary sets it once from
//! `--max-memory`, and every crate checks against it with [`check`]. Unset, it is 75 % of the
//! smaller of physical memory, the process's cgroup memory limit and its address-space limit
//! (`RLIMIT_AS`).

use std::sync::OnceLock;

/// Share of the detected memory used as the default limit.
pub const DEFAULT_SHARE: f64 = 0.75;

/// The memory limit and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes qgate may allocate for one buffer.
    pub bytes: u64,
    /// Where the figure comes from, for messages: "--max-memory" or "75 % of …".
    pub origin: String,
}

static LIMIT: OnceLock<MemoryLimit> = OnceLock::new();

/// Sets the process's limit (from `--max-memory`). Only the first call counts; returns
/// whether this one did.
pub fn set_limit(bytes: u64) -> bool {
    LIMIT
        .set(MemoryLimit {
            bytes,
            origin: "--max-memory".into(),
        })
        .is_ok()
}

/// The limit in force: the one set, else the detected default.
pub fn limit() -> &'static MemoryLimit {
    LIMIT.get_or_init(detect)
}

/// Checks that a buffer of `bytes` (computed before allocating, as `u128` so that the
/// product of hostile dimensions cannot overflow) fits the limit. `what` names the tensor,
/// file or flag the size comes from.
pub fn check(bytes: u128, what: &str) -> Result<(), String> {
    let l = limit();
    if bytes <= u128::from(l.bytes) {
        return Ok(());
    }
    Err(format!(
        "{what} needs {}, more than the memory limit of {} ({}); if this machine has the \
         memory, raise the limit with --max-memory SIZE (e.g. --max-memory 64GiB)",
        format_bytes(bytes),
        format_bytes(u128::from(l.bytes)),
        l.origin
    ))
}

/// Bytes of `dims` elements of `element_bytes` each, without overflow.
pub fn bytes_of(dims: &[usize], element_bytes: usize) -> u128 {
    dims.iter().fold(element_bytes as u128, |acc, &d| {
        acc.saturating_mul(d as u128)
    })
}

/// Parses a size: bytes (`1000000`), or a number with a unit: `K`, `M`, `G`, `T` (powers
/// of 1000), `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); `B` optional, case ignored.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    // The unit is the trailing letters; the number before it may use an exponent (1e9).
    let unit_len = t
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphabetic() || *c == ' ')
        .count();
    let (num, unit) = t.split_at(t.len() - unit_len);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size; expected e.g. 8GiB, 512MiB or 2000000000"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => {
            return Err(format!(
                "'{s}': unknown unit '{other}'; expected B, K, M, G, T, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = value * mult;
    if !(bytes >= 1.0 && bytes < 2f64.powi(63)) {
        return Err(format!("'{s}': expected a size from 1 byte to 8 EiB"));
    }
    Ok(bytes as u64)
}

/// `1.5 GiB`, `640 MiB`, `12 KiB`, `100 B`.
pub fn format_bytes(b: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 1024.0 {
        return format!("{:.3e} B", b as f64);
    }
    let digits = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// The default limit: [`DEFAULT_SHARE`] of the smallest of physical memory, the cgroup
/// limit and `RLIMIT_AS`. Where none can be read (not Linux), no limit.
fn detect() -> MemoryLimit {
    let mut found: Vec<(u64, &str)> = Vec::new();
    if let Some(b) = physical() {
        found.push((b, "physical memory"));
    }
    if let Some(b) = cgroup_limit() {
        found.push((b, "the cgroup's memory limit"));
    }
    if let Some(b) = address_space_limit() {
        found.push((b, "the address-space limit (ulimit -v)"));
    }
    match found.into_iter().min_by_key(|(b, _)| *b) {
        Some((b, what)) => MemoryLimit {
            bytes: (b as f64 * DEFAULT_SHARE) as u64,
            origin: format!(
                "{:.0} % of {what}, {}",
                DEFAULT_SHARE * 100.0,
                format_bytes(u128::from(b))
            ),
        },
        None => MemoryLimit {
            bytes: u64::MAX,
            origin: "no limit detected".into(),
        },
    }
}

fn physical() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// cgroup v2 (`memory.max` of this process's group, walking up) or v1
/// (`memory.limit_in_bytes`); `None` when unlimited or unreadable.
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut candidates = Vec::new();
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut p = std::path::PathBuf::from("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        loop {
            candidates.push(p.join("memory.max"));
            if !p.pop() || p == std::path::Path::new("/sys/fs") {
                break;
            }
        }
    }
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| t.trim().parse::<u64>().ok())
        // v1 writes "no limit" as a huge page-aligned number.
        .filter(|&b| b < 1 << 60)
        .min()
}

fn address_space_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    let soft = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2K").unwrap(), 2000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("512 mib").unwrap(), 512 << 20);
        assert_eq!(parse_size("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_size("2e9").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1.5e3 KiB").unwrap(), 1_536_000);
        for bad in [
            "",
            "-1",
            "0",
            "1e400",
            "12 parsecs",
            "GiB",
            "1e30TiB",
            "nan",
            "inf",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(format_bytes(100), "100 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(24105 << 20), "23.5 GiB");
        assert_eq!(format_bytes(1 << 40), "1.00 TiB");
    }

    #[test]
    fn hostile_dimensions_do_not_overflow() {
        let huge = bytes_of(&[usize::MAX, usize::MAX, 4], 8);
        assert!(huge > u128::from(u64::MAX));
        assert_eq!(bytes_of(&[2, 3], 4), 24);
        assert_eq!(bytes_of(&[], 4), 4);
    }

    #[test]
    fn the_default_is_a_share_of_what_this_machine_has() {
        let l = detect();
        if let Some(p) = physical() {
            assert!(l.bytes <= (p as f64 * DEFAULT_SHARE) as u64 + 1, "{l:?}");
            assert!(l.bytes > 0);
            assert!(l.origin.contains("75 %"), "{}", l.origin);
        }
        let e = check(u128::MAX, "input 'x' (batch 2^40)").unwrap_err();
        assert!(e.contains("input 'x'") && e.contains("--max-memory"), "{e}");
        assert!(check(1, "one byte").is_ok());
    }
}

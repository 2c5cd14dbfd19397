#![allow(clippy::unwrap_used)]
//! Process memory and CPU time, on the real /proc and on fake files.

mod common;

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{assert_close, write};
use qgate_probe::{
    cpu_seconds, mem_status, reset_peak, smaps_rollup_rss, Fingerprint, ProbeError, Roots,
};

/// Tests that read this process's real memory must not overlap with each other.
static REAL_PROC: Mutex<()> = Mutex::new(());

const MIB: u64 = 1 << 20;

#[test]
fn rss_grows_by_a_touched_allocation_and_agrees_with_smaps_rollup() {
    let _guard = REAL_PROC.lock().unwrap_or_else(|e| e.into_inner());
    let roots = Roots::default();
    let before = mem_status(&roots, None).unwrap();

    // Non-zero fill writes every page, so all 256 MiB become resident (zeroed memory
    // from the allocator could stay unbacked).
    let block = vec![1u8; (256 * MIB) as usize];
    black_box(&block);
    let after = mem_status(&roots, None).unwrap();
    let smaps = smaps_rollup_rss(&roots, None).unwrap();

    let grown = after.rss_bytes as f64 - before.rss_bytes as f64;
    assert_close(grown, (256 * MIB) as f64, 0.10, "VmRSS growth");
    assert!(after.peak_rss_bytes >= after.rss_bytes, "{after:?}");
    assert_close(
        smaps as f64,
        after.rss_bytes as f64,
        0.05,
        "smaps_rollup Rss vs VmRSS",
    );

    drop(black_box(block));
    let freed = mem_status(&roots, None).unwrap();
    assert!(
        freed.rss_bytes + 200 * MIB < after.rss_bytes,
        "freeing 256 MiB did not lower VmRSS: {after:?} → {freed:?}"
    );
    if reset_peak(&roots).unwrap() {
        let reset = mem_status(&roots, None).unwrap();
        assert!(
            reset.peak_rss_bytes + 200 * MIB < after.peak_rss_bytes,
            "peak not reset: {after:?} → {reset:?}"
        );
        assert!(reset.peak_rss_bytes >= reset.rss_bytes, "{reset:?}");
    } else {
        eprintln!("this kernel refuses to reset VmHWM; reset assertion skipped");
    }
}

#[test]
fn cpu_seconds_follow_busy_spinning() {
    let _guard = REAL_PROC.lock().unwrap_or_else(|e| e.into_inner());
    let roots = Roots::default();
    let cores = Fingerprint::read(&roots).logical_cores as f64;
    let c0 = cpu_seconds(&roots, None).unwrap();
    let t0 = Instant::now();
    let mut x = 0u64;
    // Spin 0.3 s of wall time; on a loaded machine keep going (up to 10 s) until the
    // scheduler has given this thread the CPU time the assertion needs.
    loop {
        for i in 0..10_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        let elapsed = t0.elapsed();
        if elapsed >= Duration::from_millis(300)
            && (cpu_seconds(&roots, None).unwrap() - c0 >= 0.25
                || elapsed >= Duration::from_secs(10))
        {
            break;
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let used = cpu_seconds(&roots, None).unwrap() - c0;
    assert!(
        used >= 0.2,
        "only {used} CPU seconds after {wall} s of spinning"
    );
    // Two ticks of slack: the kernel charges time in whole ticks.
    assert!(
        used <= wall * cores + 2.0 / qgate_probe::USER_HZ,
        "{used} CPU seconds in {wall} s on {cores} cores"
    );
}

#[test]
fn fake_proc_files_parse_to_exact_figures() {
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots::under(dir.path());
    write(
        dir.path(),
        "proc/123/status",
        "Name:\tqgate\nUmask:\t0022\nState:\tR (running)\nVmPeak:\t  999999 kB\n\
         VmHWM:\t    5678 kB\nVmRSS:\t    1234 kB\nRssAnon:\t     100 kB\nThreads:\t4\n",
    );
    assert_eq!(
        mem_status(&roots, Some(123)).unwrap(),
        qgate_probe::MemStatus {
            rss_bytes: 1234 * 1024,
            peak_rss_bytes: 5678 * 1024,
        }
    );

    // comm may hold spaces and parentheses; utime = 250, stime = 50 ticks.
    write(
        dir.path(),
        "proc/123/stat",
        "123 (my (odd) prog) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1000 \
         1000000 300 18446744073709551615\n",
    );
    assert_eq!(cpu_seconds(&roots, Some(123)).unwrap(), 3.0);

    write(
        dir.path(),
        "proc/123/smaps_rollup",
        "00400000-7fffffffffff ---p 00000000 00:00 0    [rollup]\nRss:              4321 kB\n\
         Pss:              4000 kB\n",
    );
    assert_eq!(smaps_rollup_rss(&roots, Some(123)).unwrap(), 4321 * 1024);

    // The self link is used when no pid is given.
    write(
        dir.path(),
        "proc/self/status",
        "VmHWM:\t 2 kB\nVmRSS:\t 1 kB\n",
    );
    assert_eq!(mem_status(&roots, None).unwrap().rss_bytes, 1024);
}

#[test]
fn malformed_or_missing_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots::under(dir.path());
    let check = |err: ProbeError, file: &str, words: &str| {
        let msg = err.to_string();
        assert!(msg.contains(file), "{msg:?} should name {file}");
        assert!(msg.contains(words), "{msg:?} should say {words:?}");
    };

    write(
        dir.path(),
        "proc/124/status",
        "VmHWM:\t 10 kB\nVmRSS:\t many kB\n",
    );
    check(
        mem_status(&roots, Some(124)).unwrap_err(),
        "proc/124/status",
        "VmRSS",
    );
    write(dir.path(), "proc/125/status", "VmRSS:\t 10 kB\n");
    check(
        mem_status(&roots, Some(125)).unwrap_err(),
        "proc/125/status",
        "VmHWM",
    );
    write(
        dir.path(),
        "proc/126/status",
        "VmHWM:\t 10 MB\nVmRSS:\t 10 kB\n",
    );
    check(
        mem_status(&roots, Some(126)).unwrap_err(),
        "proc/126/status",
        "kB",
    );
    write(dir.path(), "proc/124/stat", "124 (short) S 1 2 3\n");
    check(
        cpu_seconds(&roots, Some(124)).unwrap_err(),
        "proc/124/stat",
        "fields 14 and 15",
    );
    check(
        mem_status(&roots, Some(999)).unwrap_err(),
        "proc/999/status",
        "cannot read",
    );
    // Kernels without clear_refs refuse the reset rather than fail.
    assert!(!reset_peak(&roots).unwrap());
}

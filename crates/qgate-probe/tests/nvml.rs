#![allow(clippy::unwrap_used)]
//! NVML through a fake libnvidia-ml built from C at test time, so the nvml-wrapper calls,
//! struct versions and energy arithmetic are checked without a GPU.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::assert_close;
use qgate_probe::{GpuDeviceReading, Meter, Monitor, ProbeConfig, Roots};

/// Two GPUs. GPU 0 has an energy counter rising at 300 W; GPU 1 has none (NOT_SUPPORTED),
/// only a power reading of 150 W. Memory info checks the v2 struct version nvml-wrapper
/// 0.13 sets, as the real library does.
const FAKE_NVML: &str = r#"
#include <string.h>
#include <time.h>
#include <unistd.h>

/* GPU 0 is "lost" (NVML_ERROR_GPU_IS_LOST) while the file FAIL_FLAG exists. */
static int lost(int i) { return i == 0 && access(FAIL_FLAG, F_OK) == 0; }

typedef struct { unsigned int version; unsigned long long total, reserved, free, used; } mem_v2;
typedef struct { unsigned int gpu, memory; } util_t;

static struct timespec t0;
static double elapsed_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6;
}
static int idx(void *d) { return (int)(unsigned long)d - 1; }

int nvmlInit_v2(void) { clock_gettime(CLOCK_MONOTONIC, &t0); return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d) {
    if (i >= 2) return 2;
    *d = (void *)(unsigned long)(i + 1);
    return 0;
}
int nvmlDeviceGetName(void *d, char *name, unsigned int len) {
    const char *n = idx(d) == 0 ? "Fake H100" : "Fake L4";
    if (strlen(n) + 1 > len) return 7;
    strcpy(name, n);
    return 0;
}
int nvmlDeviceGetMemoryInfo_v2(void *d, mem_v2 *m) {
    if (m->version != (sizeof(mem_v2) | (2u << 24))) return 2;
    m->total = idx(d) == 0 ? 80ULL << 30 : 24ULL << 30;
    m->used = idx(d) == 0 ? 3ULL << 30 : 1ULL << 30;
    m->reserved = 0;
    m->free = m->total - m->used;
    return 0;
}
int nvmlDeviceGetUtilizationRates(void *d, util_t *u) {
    if (lost(idx(d))) return 15;
    u->gpu = idx(d) == 0 ? 40 : 70;
    u->memory = 10;
    return 0;
}
int nvmlDeviceGetTotalEnergyConsumption(void *d, unsigned long long *mj) {
    if (idx(d) != 0) return 3;
    if (lost(idx(d))) return 15;
    *mj = 1000000ULL + (unsigned long long)(elapsed_ms() * 300.0);
    return 0;
}
int nvmlDeviceGetPowerUsage(void *d, unsigned int *mw) {
    *mw = idx(d) == 0 ? 300000 : 150000;
    return 0;
}
"#;

/// Builds the fake library in `dir`; `None` (with the reason printed) where there is no C
/// compiler. GPU 0 fails while `dir/fail` exists.
fn build_fake(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("fake_nvml.c");
    let lib = dir.join("libfake-nvidia-ml.so");
    std::fs::write(&src, FAKE_NVML).unwrap();
    let out = match Command::new("cc")
        .args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-DFAIL_FLAG=\"{}\"", dir.join("fail").display()))
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("no C compiler (`cc`: {e}); fake NVML test skipped");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(lib)
}

fn config(dir: &Path, lib: PathBuf) -> ProbeConfig {
    ProbeConfig {
        // An empty tree: only NVML is there.
        roots: Roots::under(dir),
        nvml_lib: Some(lib),
        sample_interval: Duration::from_millis(10),
        enable_nvml: true,
    }
}

#[test]
fn fake_nvml_energy_use_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lib) = build_fake(dir.path()) else {
        return;
    };
    let mut monitor = Monitor::new(&config(dir.path(), lib));
    assert_eq!(monitor.sources(), vec![Meter::Nvml]);
    assert!(
        !monitor
            .unavailable()
            .iter()
            .any(|u| u.source == Meter::Nvml),
        "{:?}",
        monitor.unavailable()
    );
    // Two phases: the second must start from fresh counters and samples.
    for millis in [300, 200] {
        monitor.start();
        assert_eq!(monitor.sources(), vec![Meter::Nvml]);
        std::thread::sleep(Duration::from_millis(millis));
        let phase = monitor.stop();
        assert_eq!(phase.energy.len(), 1, "{phase:?}");
        let nvml = &phase.energy[0];
        let t = phase.wall_s;
        assert!(t >= millis as f64 / 1e3);
        assert_eq!(nvml.source, Meter::Nvml);
        assert_eq!(
            nvml.scope,
            "GPU(s) 0 Fake H100, 1 Fake L4 (whole device, includes other processes)"
        );
        assert_eq!(nvml.domains[0].0, "gpu0");
        assert_eq!(nvml.domains[1].0, "gpu1");
        assert_close(nvml.domains[0].1, 300.0 * t, 0.15, "gpu0 counter joules");
        assert_close(nvml.domains[1].1, 150.0 * t, 0.15, "gpu1 integrated joules");
        assert_close(nvml.joules, 450.0 * t, 0.15, "total joules");
        assert_close(nvml.mean_watts, 450.0, 0.15, "mean watts");
        assert_eq!(nvml.seconds, t);
        assert_eq!(
            phase.gpus,
            vec![
                GpuDeviceReading {
                    index: 0,
                    name: "Fake H100".into(),
                    mean_util_pct: Some(40.0),
                    peak_mem_used_bytes: Some(3 << 30),
                    mem_total_bytes: Some(80 << 30),
                },
                GpuDeviceReading {
                    index: 1,
                    name: "Fake L4".into(),
                    mean_util_pct: Some(70.0),
                    peak_mem_used_bytes: Some(1 << 30),
                    mem_total_bytes: Some(24 << 30),
                },
            ]
        );
    }
    assert!(monitor
        .unavailable()
        .iter()
        .all(|u| u.source != Meter::Nvml));
}

#[test]
fn missing_nvml_library_is_unavailable_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("nowhere/libnvidia-ml.so.1");
    let mut monitor = Monitor::new(&config(dir.path(), lib.clone()));
    assert!(monitor.sources().is_empty());
    let nvml: Vec<_> = monitor
        .unavailable()
        .iter()
        .filter(|u| u.source == Meter::Nvml)
        .collect();
    assert_eq!(nvml.len(), 1, "{nvml:?}");
    assert_eq!(
        nvml[0].reason,
        format!("NVML library {} does not exist", lib.display())
    );
    monitor.start();
    assert!(monitor.stop().gpus.is_empty());
}

#[test]
fn a_file_that_is_not_a_library_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libnvidia-ml.so.1");
    std::fs::write(&lib, "not an ELF file").unwrap();
    let monitor = Monitor::new(&config(dir.path(), lib.clone()));
    let reason = &monitor
        .unavailable()
        .iter()
        .find(|u| u.source == Meter::Nvml)
        .unwrap()
        .reason;
    assert!(
        reason.starts_with(&format!(
            "{} could not be loaded as the NVML library",
            lib.display()
        )),
        "{reason}"
    );
}

#[test]
fn gpu_failing_mid_run_is_dropped_not_made_up() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lib) = build_fake(dir.path()) else {
        return;
    };
    let mut monitor = Monitor::new(&config(dir.path(), lib));
    monitor.start();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(dir.path().join("fail"), "").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let phase = monitor.stop();
    // GPU 0's energy could not be read at stop: no energy figure at all for this phase.
    assert!(phase.energy.is_empty(), "{phase:?}");
    assert_eq!(phase.gpus[0].mean_util_pct, None);
    assert_eq!(phase.gpus[1].mean_util_pct, Some(70.0));
    let reasons: Vec<&str> = monitor
        .unavailable()
        .iter()
        .filter(|u| u.source == Meter::Nvml)
        .map(|u| u.reason.as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("GPU 0 total energy could not be read at stop")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("GPU 0 utilisation stopped reading")),
        "{reasons:?}"
    );

    // GPU 0 stays dropped once it recovers; GPU 1 is still measured.
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    monitor.start();
    std::thread::sleep(Duration::from_millis(100));
    let phase = monitor.stop();
    assert_eq!(phase.energy.len(), 1, "{phase:?}");
    assert_eq!(phase.energy[0].domains.len(), 1);
    assert_eq!(phase.energy[0].domains[0].0, "gpu1");
    assert!(phase.energy[0].scope.starts_with("GPU(s) 1 Fake L4 "));
    assert_close(
        phase.energy[0].joules,
        150.0 * phase.wall_s,
        0.15,
        "gpu1 joules",
    );
}

/// The real driver, where there is one: `cargo test -p qgate-probe -- --ignored`.
#[test]
#[ignore = "needs an NVIDIA GPU and its driver"]
fn real_nvml_reads_a_gpu() {
    let mut monitor = Monitor::new(&ProbeConfig::default());
    if !monitor.sources().contains(&Meter::Nvml) {
        eprintln!("no NVML here: {:?}", monitor.unavailable());
        return;
    }
    monitor.start();
    std::thread::sleep(Duration::from_millis(1000));
    let phase = monitor.stop();
    println!("{phase:#?}\nunavailable: {:#?}", monitor.unavailable());
    assert!(!phase.gpus.is_empty());
    for gpu in &phase.gpus {
        assert!(gpu.mem_total_bytes.is_some_and(|t| t > 0), "{gpu:?}");
        assert!(gpu.peak_mem_used_bytes <= gpu.mem_total_bytes, "{gpu:?}");
    }
    if let Some(e) = phase.energy.iter().find(|e| e.source == Meter::Nvml) {
        // An idle data-centre GPU draws tens of watts; none draws over 2 kW.
        assert!(e.mean_watts > 1.0 && e.mean_watts < 2000.0, "{e:?}");
    }
}

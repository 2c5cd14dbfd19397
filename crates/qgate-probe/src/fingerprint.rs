//! What machine a measurement was taken on: CPU model and ISA features, cores, memory, OS,
//! kernel and frequency policy — the facts that explain why two runs' timings differ.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::Roots;

/// x86 flags that change which inference kernels a runtime can use.
const X86_FEATURES: &[&str] = &[
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
];

/// Arm `Features` that change which inference kernels a runtime can use.
const ARM_FEATURES: &[&str] = &[
    "asimd", "asimdhp", "asimddp", "fphp", "sve", "sve2", "i8mm", "bf16",
];

/// A description of the host; missing figures are `None` or `"unknown"`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// `model name` (x86), else `Model`, `Hardware` or the `CPU part` (Arm).
    pub cpu_model: String,
    /// `std::env::consts::ARCH` of this build.
    pub arch: String,
    /// The ISA features that matter for inference, sorted.
    pub cpu_features: Vec<String>,
    /// Logical CPUs (`processor` entries of cpuinfo).
    pub logical_cores: usize,
    /// Distinct (physical id, core id) pairs; `None` where cpuinfo has no topology (Arm).
    pub physical_cores: Option<usize>,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_total_bytes: Option<u64>,
    /// `PRETTY_NAME` of `etc/os-release` beside the proc root, or `"unknown"`.
    pub os: String,
    /// /proc/sys/kernel/osrelease.
    pub kernel: Option<String>,
    /// cpufreq scaling governor of cpu0 (`performance`, `powersave`, …).
    pub governor: Option<String>,
    /// cpu0's `cpuinfo_max_freq`, in MHz.
    pub max_freq_mhz: Option<f64>,
    /// Whether simultaneous multithreading is active.
    pub smt: Option<bool>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The value of a `key<tabs>: value` cpuinfo line.
fn cpuinfo_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let (k, v) = line.split_once(':')?;
    (k.trim() == key).then(|| v.trim())
}

/// Names Arm's own cores; other implementers' parts are shown as numbers.
fn arm_part_name(implementer: Option<&str>, part: &str) -> Option<&'static str> {
    if implementer.is_some_and(|i| i != "0x41") {
        return None;
    }
    Some(match part {
        "0xd03" => "Cortex-A53",
        "0xd05" => "Cortex-A55",
        "0xd07" => "Cortex-A57",
        "0xd08" => "Cortex-A72",
        "0xd0b" => "Cortex-A76",
        "0xd0c" => "Neoverse-N1",
        "0xd40" => "Neoverse-V1",
        "0xd41" => "Cortex-A78",
        "0xd42" => "Cortex-A78AE",
        "0xd49" => "Neoverse-N2",
        "0xd4f" => "Neoverse-V2",
        _ => return None,
    })
}

struct CpuInfo {
    model: Option<String>,
    features: Vec<String>,
    logical: usize,
    physical: Option<usize>,
}

fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut model_name = None;
    let mut board_model = None;
    let mut hardware = None;
    let mut part = None;
    let mut implementer = None;
    let mut flags: Option<BTreeSet<&str>> = None;
    let mut is_arm_flags = false;
    let mut logical = 0;
    let mut cores = BTreeSet::new();
    let mut physical_id = None;
    for line in text.lines() {
        if cpuinfo_value(line, "processor").is_some() {
            logical += 1;
            physical_id = None;
        } else if let Some(v) = cpuinfo_value(line, "model name") {
            model_name.get_or_insert(v);
        } else if let Some(v) = cpuinfo_value(line, "Model") {
            board_model.get_or_insert(v);
        } else if let Some(v) = cpuinfo_value(line, "Hardware") {
            hardware.get_or_insert(v);
        } else if let Some(v) = cpuinfo_value(line, "CPU part") {
            part.get_or_insert(v);
        } else if let Some(v) = cpuinfo_value(line, "CPU implementer") {
            implementer.get_or_insert(v);
        } else if let Some(v) = cpuinfo_value(line, "flags") {
            // cpu0's flags: a feature missing on any core is unusable by a pinned runtime
            // anyway, and hybrid x86 parts report the same flags on every core.
            flags.get_or_insert_with(|| v.split_whitespace().collect());
        } else if let Some(v) = cpuinfo_value(line, "Features") {
            is_arm_flags = flags.is_none() || is_arm_flags;
            flags.get_or_insert_with(|| v.split_whitespace().collect());
        } else if let Some(v) = cpuinfo_value(line, "physical id") {
            physical_id = Some(v.to_string());
        } else if let Some(v) = cpuinfo_value(line, "core id") {
            cores.insert((physical_id.clone(), v.to_string()));
        }
    }
    let wanted = if is_arm_flags {
        ARM_FEATURES
    } else {
        X86_FEATURES
    };
    let mut features: Vec<String> = flags
        .map(|f| {
            wanted
                .iter()
                .filter(|w| f.contains(**w))
                .map(|w| w.to_string())
                .collect()
        })
        .unwrap_or_default();
    features.sort();
    let part_model = part.map(|p| match arm_part_name(implementer, p) {
        Some(name) => format!("{name} (CPU part {p})"),
        None => match implementer {
            Some(i) => format!("CPU implementer {i} part {p}"),
            None => format!("CPU part {p}"),
        },
    });
    let model = model_name
        .or(board_model)
        .or(hardware)
        .map(str::to_string)
        .or(part_model);
    CpuInfo {
        model,
        features,
        logical,
        physical: (!cores.is_empty()).then_some(cores.len()),
    }
}

/// Counts CPUs in a sysfs list such as `0-3,8-11`.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    (n > 0).then_some(n)
}

fn os_pretty_name(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix("PRETTY_NAME=")?.trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// `/proc/cpuinfo` parsed (empty when unreadable).
fn read_cpuinfo(roots: &Roots) -> CpuInfo {
    std::fs::read_to_string(roots.proc.join("cpuinfo"))
        .map(|t| parse_cpuinfo(&t))
        .unwrap_or(CpuInfo {
            model: None,
            features: Vec::new(),
            logical: 0,
            physical: None,
        })
}

/// The CPU model name, as [`Fingerprint::read`] reports it, reading `cpuinfo` only.
pub fn cpu_model(roots: &Roots) -> String {
    read_cpuinfo(roots)
        .model
        .unwrap_or_else(|| "unknown".into())
}

impl Fingerprint {
    /// Reads the host; never fails.
    pub fn read(roots: &Roots) -> Fingerprint {
        let cpuinfo = read_cpuinfo(roots);
        let cpu = roots.sys.join("devices/system/cpu");
        let logical_cores = if cpuinfo.logical > 0 {
            cpuinfo.logical
        } else {
            // Some kernels (e.g. in emulators) list no `processor` lines; sysfs still knows.
            read_trimmed(&cpu.join("online"))
                .and_then(|l| count_cpu_list(&l))
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1)
        };
        let meminfo = roots.proc.join("meminfo");
        let memory_total_bytes = std::fs::read_to_string(&meminfo)
            .ok()
            .and_then(|t| crate::memory::kb_line(&t, "MemTotal", &meminfo).ok());
        let os_release = roots
            .proc
            .parent()
            .map(|p| p.join("etc/os-release"))
            .and_then(|p| os_pretty_name(&p));
        let freq = cpu.join("cpu0/cpufreq");
        Fingerprint {
            cpu_model: cpuinfo.model.unwrap_or_else(|| "unknown".into()),
            arch: std::env::consts::ARCH.to_string(),
            cpu_features: cpuinfo.features,
            logical_cores,
            physical_cores: cpuinfo.physical,
            memory_total_bytes,
            os: os_release.unwrap_or_else(|| "unknown".into()),
            kernel: read_trimmed(&roots.proc.join("sys/kernel/osrelease")),
            governor: read_trimmed(&freq.join("scaling_governor")),
            max_freq_mhz: read_trimmed(&freq.join("cpuinfo_max_freq"))
                .and_then(|k| k.parse::<f64>().ok())
                .map(|khz| khz / 1000.0),
            smt: read_trimmed(&cpu.join("smt/active")).and_then(|s| match s.as_str() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            }),
        }
    }
}

//! Energy and GPU meters for one measured phase: RAPL (powercap), NVIDIA NVML and Jetson
//! INA3221 rails.
//!
//! Every meter here measures a whole socket, device or board, so its figures include
//! other processes; each [`EnergyReading`] says so in its `scope`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;
use serde::Serialize;

use crate::Roots;

/// What to probe and how often to sample.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Where /proc and /sys are.
    pub roots: Roots,
    /// The NVML library to load; `None` loads `libnvidia-ml.so.1` from the linker path.
    pub nvml_lib: Option<PathBuf>,
    /// How often the sampler thread reads Jetson rails and NVML power, use and memory.
    pub sample_interval: Duration,
    /// Whether to look for NVIDIA GPUs at all.
    pub enable_nvml: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            roots: Roots::default(),
            nvml_lib: None,
            sample_interval: Duration::from_millis(50),
            enable_nvml: true,
        }
    }
}

/// An energy or GPU meter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Meter {
    /// Intel/AMD RAPL through powercap.
    Rapl,
    /// Jetson INA3221 power rails.
    Jetson,
    /// NVIDIA's management library.
    Nvml,
}

impl std::fmt::Display for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Meter::Rapl => "rapl",
            Meter::Jetson => "jetson",
            Meter::Nvml => "nvml",
        })
    }
}

/// Energy one meter counted over a phase.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EnergyReading {
    pub source: Meter,
    /// What was measured, in plain words, including whether other processes count too.
    pub scope: String,
    /// Energy over the phase, in joules.
    pub joules: f64,
    /// Seconds the meter covered.
    pub seconds: f64,
    /// `joules / seconds`.
    pub mean_watts: f64,
    /// Joules per RAPL zone, GPU (`gpu0`, …) or rail.
    pub domains: Vec<(String, f64)>,
}

/// Use and memory of one GPU over a phase.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GpuDeviceReading {
    /// NVML device index.
    pub index: u32,
    /// Device name as NVML reports it.
    pub name: String,
    /// Mean of NVML's GPU utilisation samples, in percent; `None` where unsupported.
    pub mean_util_pct: Option<f64>,
    /// Highest device memory in use seen by the samples (all processes), in bytes.
    pub peak_mem_used_bytes: Option<u64>,
    /// Device memory installed, in bytes.
    pub mem_total_bytes: Option<u64>,
}

/// A meter that is absent, unreadable, or failed during a phase.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Unavailable {
    pub source: Meter,
    /// Why, in plain words, naming the file or library at fault.
    pub reason: String,
}

/// What the meters saw during one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct PhaseReading {
    /// Seconds from [`Monitor::start`] to [`Monitor::stop`].
    pub wall_s: f64,
    /// One reading per available energy meter.
    pub energy: Vec<EnergyReading>,
    /// One reading per NVIDIA GPU.
    pub gpus: Vec<GpuDeviceReading>,
}

fn unavailable(source: Meter, reason: impl Into<String>) -> Unavailable {
    Unavailable {
        source,
        reason: reason.into(),
    }
}

fn io_reason(path: &Path, err: &std::io::Error) -> String {
    match err.kind() {
        ErrorKind::PermissionDenied => format!(
            "{} is not readable by this user (permission denied); run as root or make it readable",
            path.display()
        ),
        _ => format!("cannot read {}: {err}", path.display()),
    }
}

fn read_trim(path: &Path) -> Result<String, String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| io_reason(path, &e))
}

fn read_number<T: std::str::FromStr>(path: &Path) -> Result<T, String> {
    let text = read_trim(path)?;
    text.parse()
        .map_err(|_| format!("{} holds {text:?}, expected a whole number", path.display()))
}

/// Directory entries sorted by name, so meters come out in a stable order.
fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

fn mean_watts(joules: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        joules / seconds
    } else {
        0.0
    }
}

/// Energy from power samples by the trapezoid rule, built up one sample at a time so a
/// long phase needs no memory.
#[derive(Debug, Default, Clone)]
struct Trapezoid {
    first: Option<Instant>,
    last: Option<(Instant, f64)>,
    joules: f64,
}

impl Trapezoid {
    fn add(&mut self, at: Instant, watts: f64) {
        match self.last {
            Some((t0, w0)) => {
                self.joules += (w0 + watts) / 2.0 * at.saturating_duration_since(t0).as_secs_f64()
            }
            None => self.first = Some(at),
        }
        self.last = Some((at, watts));
    }

    fn seconds(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some((b, _))) => b.saturating_duration_since(a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// RAPL

struct RaplZone {
    name: String,
    energy: PathBuf,
    /// The counter wraps to 0 after this value; `None` where the file is missing.
    max_range_uj: Option<u64>,
}

struct Rapl {
    zones: Vec<RaplZone>,
    scope: String,
    start: Option<(Instant, Vec<u64>)>,
}

fn counter_delta(start: u64, end: u64, max: Option<u64>) -> Option<u64> {
    if end >= start {
        Some(end - start)
    } else {
        max.filter(|&m| m >= start).map(|m| m - start + end)
    }
}

/// The top-level RAPL zones under the powercap directory `dir`, as `(index, name, zone
/// directory)` sorted by index; sub-zones are left out. An error when a zone's `name`
/// cannot be read.
fn top_level_zones(dir: &Path) -> Result<Vec<(u64, String, PathBuf)>, String> {
    let mut top = Vec::new();
    for (file_name, path) in sorted_entries(dir) {
        let Some(index) = file_name.strip_prefix("intel-rapl:") else {
            continue;
        };
        // Sub-zones (intel-rapl:0:0, core/uncore/dram) are parts of their package:
        // adding them would count the same joules twice.
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let name = read_trim(&path.join("name"))?;
        top.push((index.parse::<u64>().unwrap_or(u64::MAX), name, path));
    }
    top.sort();
    Ok(top)
}

/// The meters of the `chosen` zones, each checked to be readable now; `max_range_uj` is
/// `None` where the zone has no readable `max_energy_range_uj`.
fn readable_zones(chosen: &[&(u64, String, PathBuf)]) -> Result<Vec<RaplZone>, String> {
    let mut zones = Vec::new();
    for (_, name, path) in chosen {
        let energy = path.join("energy_uj");
        // Kernels since 5.10 make energy_uj root-only (a power side channel), so a
        // meter that cannot be read now is reported as absent rather than failing later.
        read_number::<u64>(&energy)?;
        zones.push(RaplZone {
            name: name.clone(),
            energy,
            max_range_uj: read_number(&path.join("max_energy_range_uj")).ok(),
        });
    }
    Ok(zones)
}

impl Rapl {
    fn detect(roots: &Roots) -> Result<Rapl, String> {
        let dir = roots.sys.join("class/powercap");
        if let Err(e) = fs::read_dir(&dir) {
            return Err(match e.kind() {
                ErrorKind::NotFound => format!(
                    "no {} directory on this machine (kernel without powercap)",
                    dir.display()
                ),
                _ => io_reason(&dir, &e),
            });
        }
        let top = top_level_zones(&dir)?;
        if top.is_empty() {
            return Err(format!(
                "no {}/intel-rapl:* zone on this machine",
                dir.display()
            ));
        }
        let packages: Vec<_> = top
            .iter()
            .filter(|(_, name, _)| name.starts_with("package"))
            .collect();
        // psys covers the whole platform including the packages, so it is only a fallback.
        let psys: Vec<_> = top.iter().filter(|(_, name, _)| name == "psys").collect();
        let names = |zones: &[&(u64, String, PathBuf)]| {
            zones
                .iter()
                .map(|(_, n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (chosen, scope) = if !packages.is_empty() {
            let scope = format!(
                "CPU package(s) {} (whole socket, includes other processes)",
                names(&packages)
            );
            (packages, scope)
        } else if !psys.is_empty() {
            let scope =
                "platform psys (whole platform as the firmware counts it, includes other processes)"
                    .to_string();
            (psys, scope)
        } else {
            let all: Vec<_> = top.iter().collect();
            return Err(format!(
                "{} has zones ({}) but no package or psys zone",
                dir.display(),
                names(&all)
            ));
        };
        Ok(Rapl {
            zones: readable_zones(&chosen)?,
            scope,
            start: None,
        })
    }

    fn read_all(&self) -> Result<Vec<u64>, String> {
        self.zones.iter().map(|z| read_number(&z.energy)).collect()
    }

    fn start(&mut self, at: Instant) -> Result<(), String> {
        let values = self.read_all()?;
        self.start = Some((at, values));
        Ok(())
    }

    fn stop(&mut self, now: Instant) -> Result<EnergyReading, String> {
        let end = self.read_all()?;
        let (t0, start) = self
            .start
            .take()
            .ok_or_else(|| "RAPL was not started".to_string())?;
        let mut domains = Vec::new();
        for ((zone, a), b) in self.zones.iter().zip(start).zip(end) {
            let delta = counter_delta(a, b, zone.max_range_uj).ok_or_else(|| {
                format!(
                    "{} went from {a} to {b} and its max_energy_range_uj is unknown, so the wrap cannot be undone",
                    zone.energy.display()
                )
            })?;
            domains.push((zone.name.clone(), delta as f64 / 1e6));
        }
        let joules = domains.iter().map(|(_, j)| j).sum();
        let seconds = now.saturating_duration_since(t0).as_secs_f64();
        Ok(EnergyReading {
            source: Meter::Rapl,
            scope: self.scope.clone(),
            joules,
            seconds,
            mean_watts: mean_watts(joules, seconds),
            domains,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Jetson

enum RailSource {
    /// JetPack ≤ 4 (`ina3221x` iio driver): power in mW.
    Power(PathBuf),
    /// JetPack ≥ 5 (`ina3221` hwmon driver): bus voltage in mV and current in mA.
    VoltCurr { volt: PathBuf, curr: PathBuf },
}

struct Rail {
    name: String,
    source: RailSource,
    energy: Trapezoid,
}

impl Rail {
    fn read_watts(&self) -> Result<f64, String> {
        match &self.source {
            RailSource::Power(p) => Ok(read_number::<f64>(p)? / 1e3),
            RailSource::VoltCurr { volt, curr } => {
                Ok(read_number::<f64>(volt)? * read_number::<f64>(curr)? / 1e6)
            }
        }
    }
}

struct Jetson {
    rails: Vec<Rail>,
    /// The rail that feeds the whole board, when there is one.
    total: Option<usize>,
}

/// `prefix<K>suffix` → K.
fn numbered<'a>(name: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let k = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    (!k.is_empty() && k.bytes().all(|b| b.is_ascii_digit())).then_some(k)
}

impl Jetson {
    fn detect(roots: &Roots) -> Result<Jetson, String> {
        let drivers = roots.sys.join("bus/i2c/drivers");
        let mut rails = Vec::new();
        for (_, device) in sorted_entries(&drivers.join("ina3221x")) {
            for (dir_name, iio) in sorted_entries(&device) {
                if !dir_name.starts_with("iio:device") {
                    continue;
                }
                for (file, path) in sorted_entries(&iio) {
                    let Some(k) = numbered(&file, "rail_name_", "") else {
                        continue;
                    };
                    let power = iio.join(format!("in_power{k}_input"));
                    let power = if power.exists() {
                        power
                    } else {
                        iio.join(format!("in_power_{k}_input"))
                    };
                    rails.push(Rail {
                        name: read_trim(&path)?,
                        source: RailSource::Power(power),
                        energy: Trapezoid::default(),
                    });
                }
            }
        }
        for (_, device) in sorted_entries(&drivers.join("ina3221")) {
            for (_, hwmon) in sorted_entries(&device.join("hwmon")) {
                for (file, path) in sorted_entries(&hwmon) {
                    let Some(k) = numbered(&file, "in", "_label") else {
                        continue;
                    };
                    let name = read_trim(&path)?;
                    let curr = hwmon.join(format!("curr{k}_input"));
                    // The INA3221's summing channel has a label but no current of its own.
                    if name.to_ascii_lowercase().starts_with("sum of") || !curr.exists() {
                        continue;
                    }
                    rails.push(Rail {
                        name,
                        source: RailSource::VoltCurr {
                            volt: hwmon.join(format!("in{k}_input")),
                            curr,
                        },
                        energy: Trapezoid::default(),
                    });
                }
            }
        }
        if rails.is_empty() {
            return Err(format!(
                "no INA3221 power monitor under {} or {} (not a Jetson)",
                drivers.join("ina3221x").display(),
                drivers.join("ina3221").display()
            ));
        }
        for rail in &rails {
            rail.read_watts()?;
        }
        let total = rails.iter().position(|r| {
            r.name.eq_ignore_ascii_case("VDD_IN") || r.name.eq_ignore_ascii_case("POM_5V_IN")
        });
        Ok(Jetson { rails, total })
    }

    fn start(&mut self, at: Instant) -> Result<(), String> {
        for rail in &mut self.rails {
            rail.energy = Trapezoid::default();
        }
        self.sample(at)
    }

    fn sample(&mut self, at: Instant) -> Result<(), String> {
        for rail in &mut self.rails {
            let watts = rail.read_watts()?;
            rail.energy.add(at, watts);
        }
        Ok(())
    }

    fn reading(&self) -> EnergyReading {
        let domains: Vec<(String, f64)> = self
            .rails
            .iter()
            .map(|r| (r.name.clone(), r.energy.joules))
            .collect();
        let (joules, scope) = match self.total {
            Some(i) => (
                domains[i].1,
                format!("Jetson rail {} (whole board)", self.rails[i].name),
            ),
            None => (
                domains.iter().map(|(_, j)| j).sum(),
                format!(
                    "Jetson rails {} (sum of the monitored rails; parts of the board may be missing)",
                    self.rails
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        };
        let seconds = self.rails.first().map_or(0.0, |r| r.energy.seconds());
        EnergyReading {
            source: Meter::Jetson,
            scope,
            joules,
            seconds,
            mean_watts: mean_watts(joules, seconds),
            domains,
        }
    }
}

// ---------------------------------------------------------------------------------------
// NVML

enum GpuEnergy {
    /// `nvmlDeviceGetTotalEnergyConsumption` (Volta and later): mJ since driver load.
    Counter {
        start: Option<u64>,
        end: Option<u64>,
    },
    /// Older GPUs: `nvmlDeviceGetPowerUsage` samples, integrated.
    Power(Trapezoid),
    /// Neither call is supported.
    None,
}

struct Gpu {
    index: u32,
    name: String,
    mem_total: Option<u64>,
    energy: GpuEnergy,
    util: Option<(f64, u64)>,
    util_ok: bool,
    peak_used: Option<u64>,
    mem_ok: bool,
}

struct NvmlMeter {
    nvml: Nvml,
    gpus: Vec<Gpu>,
    phase: Option<Instant>,
    /// Why a figure stopped being measured during the current phase.
    problems: Vec<String>,
}

fn nvml_init_reason(err: &NvmlError, lib: Option<&Path>) -> String {
    match (err, lib) {
        (NvmlError::LibloadingError(e), None) => {
            format!("libnvidia-ml.so.1 not found (no NVIDIA driver): {e}")
        }
        (NvmlError::LibloadingError(_), Some(p)) if !p.exists() => {
            format!("NVML library {} does not exist", p.display())
        }
        (NvmlError::LibloadingError(e), Some(p)) => format!(
            "{} could not be loaded as the NVML library: {e}",
            p.display()
        ),
        (NvmlError::DriverNotLoaded, _) => {
            "the NVML library loaded but the NVIDIA driver is not running".into()
        }
        (NvmlError::NoPermission, _) => {
            "NVML refused this user (no permission to talk to the NVIDIA driver)".into()
        }
        (NvmlError::FailedToLoadSymbol(s), _) => {
            format!("the NVML library lacks {s} (driver too old?)")
        }
        (e, _) => format!("NVML failed to start: {e}"),
    }
}

impl NvmlMeter {
    fn detect(lib: Option<&Path>) -> Result<(NvmlMeter, Vec<String>), String> {
        let nvml = match lib {
            Some(p) => Nvml::builder().lib_path(p.as_os_str()).init(),
            None => Nvml::init(),
        }
        .map_err(|e| nvml_init_reason(&e, lib))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML could not count the GPUs: {e}"))?;
        if count == 0 {
            return Err("NVML loaded but reports no GPU".into());
        }
        let mut gpus = Vec::new();
        let mut notes = Vec::new();
        for index in 0..count {
            let device = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML could not open GPU {index}: {e}"))?;
            let name = device.name().unwrap_or_else(|_| format!("GPU {index}"));
            let energy = if device.total_energy_consumption().is_ok() {
                GpuEnergy::Counter {
                    start: None,
                    end: None,
                }
            } else if device.power_usage().is_ok() {
                GpuEnergy::Power(Trapezoid::default())
            } else {
                notes.push(format!(
                    "GPU {index} {name} reports neither total energy nor power draw (not supported)"
                ));
                GpuEnergy::None
            };
            gpus.push(Gpu {
                index,
                mem_total: device.memory_info().ok().map(|m| m.total),
                name,
                energy,
                util: None,
                util_ok: true,
                peak_used: None,
                mem_ok: true,
            });
        }
        Ok((
            NvmlMeter {
                nvml,
                gpus,
                phase: None,
                problems: Vec::new(),
            },
            notes,
        ))
    }

    fn start(&mut self, at: Instant) {
        self.problems.clear();
        self.phase = Some(at);
        for gpu in &mut self.gpus {
            gpu.util = None;
            gpu.peak_used = None;
            match &mut gpu.energy {
                GpuEnergy::Counter { start, end } => {
                    *end = None;
                    *start = match self.nvml.device_by_index(gpu.index) {
                        Ok(d) => match d.total_energy_consumption() {
                            Ok(mj) => Some(mj),
                            Err(e) => {
                                self.problems.push(format!(
                                    "GPU {} total energy could not be read at start: {e}",
                                    gpu.index
                                ));
                                None
                            }
                        },
                        Err(e) => {
                            self.problems
                                .push(format!("GPU {} could not be opened: {e}", gpu.index));
                            None
                        }
                    };
                }
                GpuEnergy::Power(t) => *t = Trapezoid::default(),
                GpuEnergy::None => {}
            }
        }
        self.sample(at);
    }

    fn sample(&mut self, at: Instant) {
        for gpu in &mut self.gpus {
            let device = match self.nvml.device_by_index(gpu.index) {
                Ok(d) => d,
                Err(e) => {
                    self.problems
                        .push(format!("GPU {} could not be opened: {e}", gpu.index));
                    continue;
                }
            };
            if gpu.util_ok {
                match device.utilization_rates() {
                    Ok(u) => {
                        let (sum, n) = gpu.util.unwrap_or((0.0, 0));
                        gpu.util = Some((sum + f64::from(u.gpu), n + 1));
                    }
                    // Unsupported (e.g. MIG instances) is a fact of the device, not a failure.
                    Err(NvmlError::NotSupported) => gpu.util_ok = false,
                    Err(e) => {
                        gpu.util_ok = false;
                        gpu.util = None;
                        self.problems.push(format!(
                            "GPU {} utilisation stopped reading: {e}",
                            gpu.index
                        ));
                    }
                }
            }
            if gpu.mem_ok {
                match device.memory_info() {
                    Ok(m) => gpu.peak_used = Some(gpu.peak_used.unwrap_or(0).max(m.used)),
                    Err(NvmlError::NotSupported) => gpu.mem_ok = false,
                    Err(e) => {
                        gpu.mem_ok = false;
                        gpu.peak_used = None;
                        self.problems
                            .push(format!("GPU {} memory use stopped reading: {e}", gpu.index));
                    }
                }
            }
            if let GpuEnergy::Power(t) = &mut gpu.energy {
                match device.power_usage() {
                    Ok(mw) => t.add(at, f64::from(mw) / 1e3),
                    Err(e) => {
                        self.problems
                            .push(format!("GPU {} power draw stopped reading: {e}", gpu.index));
                        gpu.energy = GpuEnergy::None;
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        for gpu in &mut self.gpus {
            if let GpuEnergy::Counter { end, .. } = &mut gpu.energy {
                *end = match self
                    .nvml
                    .device_by_index(gpu.index)
                    .and_then(|d| d.total_energy_consumption())
                {
                    Ok(mj) => Some(mj),
                    Err(e) => {
                        self.problems.push(format!(
                            "GPU {} total energy could not be read at stop: {e}",
                            gpu.index
                        ));
                        None
                    }
                };
            }
        }
    }

    /// The phase's energy, or why there is none; a GPU whose meter failed is dropped for
    /// good, and the whole reading for this phase, since a partial sum would mislead.
    fn energy_reading(&mut self, at: Instant) -> Option<Result<EnergyReading, String>> {
        let seconds = self
            .phase
            .map_or(0.0, |t0| at.saturating_duration_since(t0).as_secs_f64());
        let mut domains = Vec::new();
        let mut names = Vec::new();
        let mut failed = Vec::new();
        for gpu in &mut self.gpus {
            let joules = match &gpu.energy {
                GpuEnergy::Counter {
                    start: Some(a),
                    end: Some(b),
                } if b >= a => Some((b - a) as f64 / 1e3),
                GpuEnergy::Counter { start, end } => {
                    if let (Some(a), Some(b)) = (start, end) {
                        failed.push(format!(
                            "GPU {} total energy went backwards ({a} → {b} mJ; driver reloaded?)",
                            gpu.index
                        ));
                    }
                    gpu.energy = GpuEnergy::None;
                    failed.push(format!(
                        "GPU {} energy dropped from this and later phases",
                        gpu.index
                    ));
                    None
                }
                GpuEnergy::Power(t) if t.seconds() > 0.0 => Some(t.joules),
                GpuEnergy::Power(_) | GpuEnergy::None => None,
            };
            if let Some(j) = joules {
                domains.push((format!("gpu{}", gpu.index), j));
                names.push(format!("{} {}", gpu.index, gpu.name));
            }
        }
        if !failed.is_empty() {
            return Some(Err(failed.join("; ")));
        }
        if domains.is_empty() {
            return None;
        }
        let joules = domains.iter().map(|(_, j)| j).sum();
        Some(Ok(EnergyReading {
            source: Meter::Nvml,
            scope: format!(
                "GPU(s) {} (whole device, includes other processes)",
                names.join(", ")
            ),
            joules,
            seconds,
            mean_watts: mean_watts(joules, seconds),
            domains,
        }))
    }

    fn gpu_readings(&self) -> Vec<GpuDeviceReading> {
        self.gpus
            .iter()
            .map(|g| GpuDeviceReading {
                index: g.index,
                name: g.name.clone(),
                mean_util_pct: g.util.filter(|(_, n)| *n > 0).map(|(s, n)| s / n as f64),
                peak_mem_used_bytes: g.peak_used,
                mem_total_bytes: g.mem_total,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Monitor

/// The meters that need samples during a phase; they move to the sampler thread and back.
#[derive(Default)]
struct Samplers {
    jetson: Option<Jetson>,
    nvml: Option<NvmlMeter>,
}

impl Samplers {
    fn any(&self) -> bool {
        self.jetson.is_some() || self.nvml.is_some()
    }

    fn sample(&mut self, at: Instant, dropped: &mut Vec<Unavailable>) {
        if let Some(j) = &mut self.jetson {
            if let Err(reason) = j.sample(at) {
                dropped.push(unavailable(Meter::Jetson, reason));
                self.jetson = None;
            }
        }
        if let Some(n) = &mut self.nvml {
            n.sample(at);
        }
    }
}

/// The sampler thread hands its meters back, with those it dropped, when it ends.
type SamplerThread = JoinHandle<(Samplers, Vec<Unavailable>)>;

struct Running {
    started: Instant,
    /// The meters that went to the sampler thread.
    on_thread: Vec<Meter>,
    sampler: Option<(mpsc::Sender<()>, SamplerThread)>,
}

/// Energy and GPU meters for one measured phase at a time.
///
/// [`Monitor::new`] finds the meters; [`Monitor::start`] and [`Monitor::stop`] bracket a
/// phase. Meters that sample (Jetson rails, NVML) run on a thread of their own so the
/// measured work is not interrupted.
pub struct Monitor {
    interval: Duration,
    unavailable: Vec<Unavailable>,
    rapl: Option<Rapl>,
    samplers: Samplers,
    running: Option<Running>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("sources", &self.sources())
            .field("unavailable", &self.unavailable)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl Monitor {
    /// Detects every meter; never fails: absent ones go to [`Monitor::unavailable`].
    pub fn new(config: &ProbeConfig) -> Monitor {
        let mut missing = Vec::new();
        let rapl = Rapl::detect(&config.roots)
            .map_err(|r| missing.push(unavailable(Meter::Rapl, r)))
            .ok();
        let jetson = Jetson::detect(&config.roots)
            .map_err(|r| missing.push(unavailable(Meter::Jetson, r)))
            .ok();
        let nvml = if config.enable_nvml {
            match NvmlMeter::detect(config.nvml_lib.as_deref()) {
                Ok((meter, notes)) => {
                    missing.extend(notes.into_iter().map(|n| unavailable(Meter::Nvml, n)));
                    Some(meter)
                }
                Err(r) => {
                    missing.push(unavailable(Meter::Nvml, r));
                    None
                }
            }
        } else {
            missing.push(unavailable(
                Meter::Nvml,
                "NVML not queried (disabled in the probe configuration)",
            ));
            None
        };
        Monitor {
            // A zero interval would spin the sampler thread on a core the work needs.
            interval: config.sample_interval.max(Duration::from_millis(1)),
            unavailable: missing,
            rapl,
            samplers: Samplers { jetson, nvml },
            running: None,
        }
    }

    /// Meters that are absent, unreadable, or were dropped after failing, with reasons.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// The meters available now.
    pub fn sources(&self) -> Vec<Meter> {
        let mut out = Vec::new();
        if self.rapl.is_some() {
            out.push(Meter::Rapl);
        }
        // While a phase runs the samplers live on their thread.
        let on_thread = |m: Meter| {
            self.running
                .as_ref()
                .is_some_and(|r| r.on_thread.contains(&m))
        };
        if self.samplers.jetson.is_some() || on_thread(Meter::Jetson) {
            out.push(Meter::Jetson);
        }
        if self.samplers.nvml.is_some() || on_thread(Meter::Nvml) {
            out.push(Meter::Nvml);
        }
        out
    }

    /// Begins a phase: reads the counters and starts the sampler thread if any meter
    /// samples. A phase already running is discarded.
    pub fn start(&mut self) {
        if self.running.is_some() {
            let _ = self.stop();
        }
        let now = Instant::now();
        if let Some(rapl) = &mut self.rapl {
            if let Err(reason) = rapl.start(now) {
                self.unavailable.push(unavailable(Meter::Rapl, reason));
                self.rapl = None;
            }
        }
        if let Some(j) = &mut self.samplers.jetson {
            if let Err(reason) = j.start(now) {
                self.unavailable.push(unavailable(Meter::Jetson, reason));
                self.samplers.jetson = None;
            }
        }
        if let Some(n) = &mut self.samplers.nvml {
            n.start(now);
        }
        let on_thread = [
            (Meter::Jetson, self.samplers.jetson.is_some()),
            (Meter::Nvml, self.samplers.nvml.is_some()),
        ]
        .into_iter()
        .filter_map(|(m, on)| on.then_some(m))
        .collect();
        let sampler = self.samplers.any().then(|| {
            let mut samplers = std::mem::take(&mut self.samplers);
            let interval = self.interval;
            let (tx, rx) = mpsc::channel::<()>();
            let handle = std::thread::spawn(move || {
                let mut dropped = Vec::new();
                // A message or a dropped Monitor (disconnected) both end the phase.
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    samplers.sample(Instant::now(), &mut dropped);
                }
                (samplers, dropped)
            });
            (tx, handle)
        });
        self.running = Some(Running {
            started: now,
            on_thread,
            sampler,
        });
    }

    /// Ends the phase and returns what the meters saw; a meter that failed is dropped
    /// from the reading and added to [`Monitor::unavailable`] with the reason.
    /// Without a running phase it returns an empty reading.
    pub fn stop(&mut self) -> PhaseReading {
        let Some(running) = self.running.take() else {
            return PhaseReading::default();
        };
        if let Some((tx, handle)) = running.sampler {
            let _ = tx.send(());
            match handle.join() {
                Ok((samplers, dropped)) => {
                    self.samplers = samplers;
                    self.unavailable.extend(dropped);
                }
                Err(_) => {
                    self.unavailable.push(unavailable(
                        Meter::Jetson,
                        "the sampler thread panicked; its meters were lost",
                    ));
                    self.unavailable.push(unavailable(
                        Meter::Nvml,
                        "the sampler thread panicked; its meters were lost",
                    ));
                }
            }
        }
        let now = Instant::now();
        let mut reading = PhaseReading {
            wall_s: now.saturating_duration_since(running.started).as_secs_f64(),
            ..PhaseReading::default()
        };
        if let Some(rapl) = &mut self.rapl {
            match rapl.stop(now) {
                Ok(r) => reading.energy.push(r),
                Err(reason) => {
                    self.unavailable.push(unavailable(Meter::Rapl, reason));
                    self.rapl = None;
                }
            }
        }
        let mut dropped = Vec::new();
        self.samplers.sample(now, &mut dropped);
        self.unavailable.extend(dropped);
        if let Some(j) = &self.samplers.jetson {
            reading.energy.push(j.reading());
        }
        if let Some(n) = &mut self.samplers.nvml {
            n.stop();
            match n.energy_reading(now) {
                Some(Ok(r)) => reading.energy.push(r),
                Some(Err(reason)) => self.unavailable.push(unavailable(Meter::Nvml, reason)),
                None => {}
            }
            reading.gpus = n.gpu_readings();
            let problems = std::mem::take(&mut n.problems);
            self.unavailable
                .extend(problems.into_iter().map(|p| unavailable(Meter::Nvml, p)));
        }
        reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_delta_undoes_one_wrap() {
        assert_eq!(counter_delta(5, 9, None), Some(4));
        assert_eq!(counter_delta(90, 10, Some(100)), Some(20));
        assert_eq!(counter_delta(90, 10, None), None);
        assert_eq!(counter_delta(190, 10, Some(100)), None);
    }

    #[test]
    fn monitor_is_send() {
        fn send<T: Send>() {}
        send::<Monitor>();
    }

    #[test]
    fn trapezoid_integrates_a_ramp() {
        let t0 = Instant::now();
        let mut t = Trapezoid::default();
        t.add(t0, 0.0);
        t.add(t0 + Duration::from_secs(2), 10.0);
        assert_eq!(t.joules, 10.0);
        assert_eq!(t.seconds(), 2.0);
    }
}

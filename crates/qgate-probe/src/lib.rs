//! Reads the machine for `qgate bench`: process memory and CPU time ([`memory`]), energy
//! and GPU meters for one measured phase ([`power`]: Intel/AMD RAPL, NVIDIA NVML, Jetson
//! INA3221 rails) and a fingerprint of the host ([`fingerprint`]).
//!
//! Everything is read from the kernel's `/proc` and `/sys` files (no `unsafe`, no libc), so
//! every reader takes a [`Roots`] that tests point at a fake tree. A meter that is absent or
//! unreadable is never an error: it is listed as [`Unavailable`] with a reason in plain
//! words, and a meter that fails during a phase is dropped rather than reported with a
//! made-up figure.
//!
//! ```
//! use qgate_probe::{mem_status, Fingerprint, Monitor, ProbeConfig, Roots};
//!
//! let roots = Roots::default();
//! let fp = Fingerprint::read(&roots);
//! assert!(fp.logical_cores >= 1);
//!
//! let mut monitor = Monitor::new(&ProbeConfig { enable_nvml: false, ..ProbeConfig::default() });
//! monitor.start();
//! let work: u64 = (0..100_000u64).sum();
//! let phase = monitor.stop();
//! assert!(work > 0 && phase.wall_s > 0.0);
//! for reading in &phase.energy {
//!     println!("{}: {:.3} J over {:.3} s ({})", reading.source, reading.joules, reading.seconds, reading.scope);
//! }
//! for missing in monitor.unavailable() {
//!     println!("{} unavailable: {}", missing.source, missing.reason);
//! }
//! # #[cfg(target_os = "linux")]
//! assert!(mem_status(&roots, None).unwrap().rss_bytes > 0);
//! ```

use std::path::{Path, PathBuf};

pub mod fingerprint;
pub mod memory;
pub mod power;

pub use fingerprint::Fingerprint;
pub use memory::{cpu_seconds, mem_status, reset_peak, smaps_rollup_rss, MemStatus, USER_HZ};
pub use power::{
    EnergyReading, GpuDeviceReading, Meter, Monitor, PhaseReading, ProbeConfig, Unavailable,
};

/// Where the kernel's files are; tests point both at a fake tree in a temp dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// The procfs mount, normally `/proc`.
    pub proc: PathBuf,
    /// The sysfs mount, normally `/sys`.
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

impl Roots {
    /// `dir/proc` and `dir/sys`: a fake tree laid out like the real one.
    pub fn under(dir: &Path) -> Roots {
        Roots {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
        }
    }
}

/// Why a kernel file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The file could not be read (missing, permission, process gone).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but does not hold what the kernel documents.
    #[error("{}: expected {expected}", path.display())]
    Parse {
        path: PathBuf,
        /// What was expected there, in words.
        expected: String,
    },
}

pub(crate) fn read_file(path: &Path) -> Result<String, ProbeError> {
    std::fs::read_to_string(path).map_err(|source| ProbeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

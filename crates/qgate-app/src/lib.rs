//! qgate's commands as library calls: a validated config in, a typed result out. The binary
//! parses flags into these configs, calls them, hands the results to the exporters and turns
//! the verdict into an exit code; nothing here reads argv, the environment or the terminal.

pub mod bench;
pub mod compare;
mod error;
pub mod inspect;
pub mod measure;
pub mod outputs;
pub mod sensitivity;

pub use error::{chain_text, AppError, Context};

/// The machine in a report's `host`, from the probe's fingerprint (one describer of the
/// machine: the benchmark's environment and the report's host read the same source).
pub fn host() -> qgate_runtime::HostInfo {
    qgate_runtime::HostInfo {
        cpu: qgate_probe::fingerprint::cpu_model(&qgate_probe::Roots::default()),
        // What this process may use (cgroup and affinity aware), not the cpuinfo count.
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

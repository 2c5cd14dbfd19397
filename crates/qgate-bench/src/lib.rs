//! Inference performance of a baseline/candidate pair, measured like trtexec and MLPerf
//! LoadGen: warm-up until steady, latency in interleaved rounds (A B, B A, …) with a paired
//! speed-up interval, throughput over batch sizes and in-flight requests, Poisson arrivals
//! with a search for the highest rate meeting a p99 bound, start-up, memory, CPU use and
//! energy — each model in its own worker process — and a check that the outputs of the
//! timed runs are the outputs an untimed pass gives.
//!
//! Measuring returns plain data ([`Performance`]); statistics come from
//! `qgate_core::latency`; formatting belongs to `qgate-report`.
//!
//! ```
//! use qgate_bench::{speed_verdict, Plan, SpeedVerdict};
//! assert_eq!(Plan::default().batch, 1);
//! assert_eq!(speed_verdict(0.5, [0.45, 0.55]), SpeedVerdict::Slower);
//! ```

pub mod clock;
mod engine;
mod pair;
pub mod protocol;
mod results;
mod side;
mod workload;

pub use engine::{Engine, Factory};
pub use pair::*;
/// Probe types that [`Performance`] carries, so that its readers need not depend on the probe.
pub use qgate_probe::{EnergyReading, Fingerprint, GpuDeviceReading, Meter, Unavailable};
pub use results::*;
pub use side::{serve_worker, ChildSide, LocalSide, Side};
pub use workload::{Batch, Workload, WorkloadInfo, WorkloadSpec, SYNTHETIC_SAMPLES};

/// Errors while benchmarking. Each names the side, tensor or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The runtime failed.
    #[error(transparent)]
    Runtime(qgate_runtime::RuntimeError),
    /// The inputs cannot be prepared.
    #[error("{0}")]
    Workload(String),
    /// A side (worker) failed.
    #[error("{side}: {message}")]
    Side {
        /// `baseline` or `candidate`.
        side: String,
        /// What happened.
        message: String,
    },
}

impl BenchError {
    /// The error, attributed to a side.
    pub fn on(self, side: &str) -> BenchError {
        match self {
            BenchError::Side { .. } => self,
            other => BenchError::Side {
                side: side.to_string(),
                message: other.to_string(),
            },
        }
    }
}

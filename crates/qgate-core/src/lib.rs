//! The pure core of qgate: tensors as plain data, classification metrics, paired
//! statistics, output divergence, named tolerances and the gate policy.
//!
//! Nothing here does I/O, spawns threads or knows a runtime: every function takes plain data
//! and returns plain data, so each figure in a report can be checked against an independent
//! implementation (scikit-learn, scipy). One exception: [`memory`] reads the machine's
//! memory limit from `/proc` and `/sys`, the one setting every crate checks sizes against.
//!
//! ```
//! use qgate_core::stats::mcnemar_exact;
//! // 1 sample lost, 5 gained: two-sided exact p = 2 · (1 + 6) / 64
//! assert!((mcnemar_exact(1, 5) - 0.21875).abs() < 1e-15);
//! ```

pub mod array;
pub mod calibration;
pub mod compare;
pub mod divergence;
pub mod ids;
pub mod latency;
pub mod memory;
pub mod metrics;
pub mod online;
pub mod policy;
pub mod rows;
pub mod slices;
pub mod stats;
pub mod tolerance;

pub use array::{Array, ArrayData, ElemType, NotIntegers};
pub use ids::Ids;
pub use tolerance::Tolerance;

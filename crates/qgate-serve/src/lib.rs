//! qgate's gateway: the production half of the check. Clients speak the Open Inference
//! Protocol V2 REST API (JSON or the binary tensor data extension) to it; it sends each
//! request where the mode says — `shadow` (the baseline answers, the candidate gets a copy
//! whose answer is only logged), `ab` (a weighted split, sticky per user) or `canary` (the
//! same split following an operator-driven ramp) — and commits one record per request to a
//! SQLite log before the client gets its answer.
//!
//! This is the only crate with tokio. The models stay synchronous (`qgate-runtime`): each
//! arm is a pool of threads owning model instances ([`backend`]).
//!
//! ```
//! use qgate_serve::route::{sticky_hash, choose, AdminState, Arm};
//! use qgate_serve::config::{Mode, SplitConfig};
//! let split = SplitConfig {
//!     candidate_weight: 0.5,
//!     sticky_header: "x-user-id".into(),
//!     hash_seed: "qgate".into(),
//!     canary_steps: vec![1.0, 100.0],
//!     canary_auto: None,
//! };
//! let state = AdminState::from_config(Mode::Ab, &split);
//! let (u, _) = sticky_hash("qgate", "alice");
//! let arm = choose(&state, &split, Some("alice"), "req-1").arm;
//! assert_eq!(arm == Arm::Candidate, u < 0.5);
//! ```

pub mod admin;
pub mod app;
pub mod backend;
pub mod canary;
pub mod config;
pub mod gateway;
pub mod grpc;
pub mod metrics;
pub mod reader;
pub mod record;
pub mod route;
pub mod shadow;
pub mod store;
pub mod tls;
pub mod v2;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use backend::Factory;
pub use config::GatewayConfig;
pub use gateway::{check, Backends, CheckReport, Gateway, ServeSummary, StopHandle};
pub use reader::open_log;

/// Why the gateway cannot start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gateway config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("the {role} model ({spec}) cannot be served: {message}")]
    Backend {
        role: &'static str,
        spec: String,
        message: String,
    },
    #[error("the candidate cannot take the baseline's requests: {0}")]
    Incompatible(String),
    #[error("log {log}: {message}")]
    Log { log: String, message: String },
    #[error("cannot listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Internal(String),
}

/// Model factories for the specs of each model of `cfg`, in its order, loaded with `opts`
/// (`grpc://` specs by the gateway's own gRPC client, which waits `backend_timeout_ms`).
pub fn spec_backends(cfg: &GatewayConfig, opts: &qgate_runtime::LoadOptions) -> Vec<Backends> {
    let timeout = cfg.backend_timeout;
    let make = |spec: qgate_runtime::ModelSpec| -> Factory {
        let opts = opts.clone();
        std::sync::Arc::new(move || match &spec.kind {
            qgate_runtime::SpecKind::Grpc(url) => grpc::GrpcModel::load(url, timeout)
                .map(|m| Box::new(m) as Box<dyn qgate_runtime::Model>),
            _ => qgate_runtime::load(&spec, &opts),
        })
    };
    cfg.models
        .iter()
        .map(|m| Backends {
            baseline: make(m.baseline.clone()),
            candidate: make(m.candidate.clone()),
        })
        .collect()
}

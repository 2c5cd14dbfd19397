//! Starting, running and stopping a gateway: load both models, open the log, restore the
//! admin state, bind, serve; on shutdown stop accepting, drain in-flight requests and shadow
//! copies for up to `shutdown_grace_ms`, mark the rest missing, flush and return.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qgate_runtime::ModelInfo;
use tokio::sync::{mpsc, watch};

use crate::app::{router, App, Apps};
use crate::backend::{Backend, Factory};
use crate::config::{GatewayConfig, ModelConfig};
use crate::route::AdminState;
use crate::tls::{Peer, TlsListener};
use crate::{shadow, store, ServeError};

/// How to make each arm's model instances.
pub struct Backends {
    pub baseline: Factory,
    pub candidate: Factory,
}

/// What a run did, returned when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSummary {
    /// Shadow copies still pending at the end of the grace period, marked missing.
    pub marked_missing: u64,
    /// Whether in-flight requests were all answered within the grace period.
    pub drained: bool,
}

/// A running gateway.
pub struct Gateway {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<Result<ServeSummary, ServeError>>,
    /// Shadow copies a crashed earlier run left pending, marked missing at start.
    pub recovered_missing: u64,
    /// Whether the admin state came from the log (an earlier run) instead of the config.
    pub state_restored: bool,
}

/// Stops a gateway from another thread or a signal.
#[derive(Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

fn threads(cfg: &ModelConfig) -> usize {
    cfg.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    })
}

/// How the candidate's tensors line up with the baseline's.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// For each candidate input, the index of the baseline input it takes.
    pub inputs: Vec<usize>,
    /// For each baseline output, the index of the candidate output that answers it.
    pub outputs: Vec<usize>,
}

/// Lines the candidate's inputs and outputs up with the baseline's: by name when every name
/// matches, else by position when the counts do (re-exports often rename tensors).
pub fn map_tensors(baseline: &ModelInfo, candidate: &ModelInfo) -> Result<Mapping, String> {
    fn by_name(
        from: &[qgate_runtime::TensorInfo],
        to: &[qgate_runtime::TensorInfo],
    ) -> Option<Vec<usize>> {
        if from.len() != to.len() {
            return None;
        }
        from.iter()
            .map(|t| to.iter().position(|u| u.name == t.name))
            .collect()
    }
    let list = |ts: &[qgate_runtime::TensorInfo]| {
        ts.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Position stands in for names only when no name is shared: a partial match is a
    // different model, not a renamed one.
    let shares = |a: &[qgate_runtime::TensorInfo], b: &[qgate_runtime::TensorInfo]| {
        a.iter().any(|t| b.iter().any(|u| u.name == t.name))
    };
    let inputs = match by_name(&candidate.inputs, &baseline.inputs) {
        Some(v) => v,
        None if candidate.inputs.len() == baseline.inputs.len()
            && !shares(&candidate.inputs, &baseline.inputs) =>
        {
            (0..candidate.inputs.len()).collect()
        }
        None => {
            return Err(format!(
                "the candidate takes {} input(s) ({}), the baseline {} ({})",
                candidate.inputs.len(),
                list(&candidate.inputs),
                baseline.inputs.len(),
                list(&baseline.inputs)
            ))
        }
    };
    let outputs = match by_name(&baseline.outputs, &candidate.outputs) {
        Some(v) => v,
        None if candidate.outputs.len() == baseline.outputs.len()
            && !shares(&candidate.outputs, &baseline.outputs) =>
        {
            (0..baseline.outputs.len()).collect()
        }
        None => {
            return Err(format!(
                "the candidate has {} output(s) ({}), the baseline {} ({})",
                candidate.outputs.len(),
                list(&candidate.outputs),
                baseline.outputs.len(),
                list(&baseline.outputs)
            ))
        }
    };
    Ok(Mapping { inputs, outputs })
}

/// Loads one instance of each model and checks the log, without serving or writing
/// anything: what `qgate serve --check-config` reports.
pub fn check(cfg: &GatewayConfig, backends: &[Backends]) -> Result<CheckReport, ServeError> {
    let load = |role: &'static str, f: &Factory, spec: &str| {
        f().map_err(|e| ServeError::Backend {
            role,
            spec: spec.to_string(),
            message: e.to_string(),
        })
    };
    let mut models = Vec::new();
    for (m, backends) in cfg.models.iter().zip(backends) {
        let b = load("baseline", &backends.baseline, &m.baseline.raw)?;
        let c = load("candidate", &backends.candidate, &m.candidate.raw)?;
        map_tensors(b.info(), c.info())
            .map_err(|e| ServeError::Incompatible(format!("model '{}': {e}", m.name)))?;
        models.push(ModelCheck {
            name: m.name.clone(),
            baseline: b.provenance().runtime,
            candidate: c.provenance().runtime,
            inputs: b.info().inputs.iter().map(|t| t.name.clone()).collect(),
            outputs: b.info().outputs.iter().map(|t| t.name.clone()).collect(),
        });
    }
    if let Some(t) = &cfg.tls {
        crate::tls::server_config(t)?;
    }
    store::check(&cfg.log)?;
    Ok(CheckReport { models })
}

/// What `check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    pub models: Vec<ModelCheck>,
}

/// What `check` found of one model.
#[derive(Debug, Clone)]
pub struct ModelCheck {
    pub name: String,
    pub baseline: String,
    pub candidate: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// One model's pools, started.
fn start_arms(m: &ModelConfig, backends: &Backends) -> Result<crate::app::Arms, ServeError> {
    let n = threads(m);
    let start = |role: &'static str, f: &Factory, spec: &str, n: usize| {
        Backend::start(role, spec, f, n).map_err(|e| ServeError::Backend {
            role,
            spec: spec.to_string(),
            message: e.to_string(),
        })
    };
    let baseline = start("baseline", &backends.baseline, &m.baseline.raw, n)?;
    let candidate = start("candidate", &backends.candidate, &m.candidate.raw, n)?;
    // Shadow copies get threads of their own, exactly `shadow.concurrency` of them, so a
    // slow candidate can never run more copies at once than that.
    let shadow_candidate = start(
        "candidate",
        &backends.candidate,
        &m.candidate.raw,
        m.shadow_concurrency,
    )?;
    let mapping = map_tensors(&baseline.info, &candidate.info)
        .map_err(|e| ServeError::Incompatible(format!("model '{}': {e}", m.name)))?;
    Ok(crate::app::Arms {
        baseline,
        candidate,
        shadow_candidate,
        mapping,
    })
}

/// Opens the log, seeding or restoring each model's admin state; a restored canary step
/// past a ramp the config has since shortened is held at its end.
fn open_log(cfg: &GatewayConfig) -> Result<store::Opened, ServeError> {
    let seeds: Vec<(String, AdminState)> = cfg
        .models
        .iter()
        .map(|m| (m.name.clone(), AdminState::from_config(m.mode, &m.split)))
        .collect();
    let longest = cfg
        .models
        .iter()
        .map(|m| m.shadow_timeout)
        .max()
        .unwrap_or_default();
    let opened = store::open(&cfg.log, &seeds, longest)?;
    for (m, r) in cfg.models.iter().zip(&opened.states) {
        let last = m.split.canary_steps.len() - 1;
        if r.state.canary_step.is_some_and(|i| i > last) {
            tracing::warn!(
                model = m.name,
                "the restored canary step {:?} is past the configured ramp; using its last step",
                r.state.canary_step
            );
            let mut state = r.state.clone();
            state.canary_step = Some(last);
            opened.store.board().put(&m.name, state, r.version);
        }
    }
    Ok(opened)
}

/// One `start` row per model for `admin_actions`.
fn start_actions(
    cfg: &GatewayConfig,
    states: &[store::Restored],
    addr: SocketAddr,
) -> Vec<store::AdminWrite> {
    cfg.models
        .iter()
        .zip(states)
        .map(|(m, r)| store::AdminWrite {
            model: m.name.clone(),
            action: "start".into(),
            detail: serde_json::json!({
                "restored": r.restored,
                "config": cfg.source.display().to_string(),
                "listen": addr.to_string(),
            })
            .to_string(),
            change: None,
        })
        .collect()
}

impl Gateway {
    /// Loads the models (one `Backends` per model of the config, in its order), opens the
    /// log, binds and starts serving.
    pub fn start(cfg: GatewayConfig, backends: Vec<Backends>) -> Result<Gateway, ServeError> {
        if backends.len() != cfg.models.len() {
            return Err(ServeError::Internal(format!(
                "{} model factories for {} models",
                backends.len(),
                cfg.models.len()
            )));
        }
        let arms = cfg
            .models
            .iter()
            .zip(&backends)
            .map(|(m, b)| start_arms(m, b))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = cfg
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        // Bound before the log is opened: a second gateway started on a busy address by
        // mistake stops here, before it could touch the running one's log.
        let listener = bind(cfg.listen)?;
        let addr = listener.local_addr().map_err(|e| ServeError::Bind {
            addr: cfg.listen,
            message: e.to_string(),
        })?;
        let grpc_listener = cfg.grpc_listen.map(bind).transpose()?;
        let grpc_addr = match (&grpc_listener, cfg.grpc_listen) {
            (Some(l), Some(want)) => Some(l.local_addr().map_err(|e| ServeError::Bind {
                addr: want,
                message: e.to_string(),
            })?),
            _ => None,
        };
        let opened = open_log(&cfg)?;
        let state_restored = opened.states.iter().any(|r| r.restored);
        let n = cfg.models.iter().map(threads).max().unwrap_or(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.clamp(1, 4))
            .thread_name("qgate-serve")
            .enable_all()
            .build()
            .map_err(|e| ServeError::Bind {
                addr,
                message: format!("cannot start the async runtime: {e}"),
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let grace = cfg.shutdown_grace;
        let starts = start_actions(&cfg, &opened.states, addr);
        let cfg = Arc::new(cfg);
        let common = Arc::new(crate::app::Common::default());
        let mut queues = Vec::new();
        let models: Vec<Arc<App>> = cfg
            .models
            .iter()
            .zip(arms)
            .map(|(m, arms)| {
                let (tx, rx) = mpsc::channel(m.shadow_queue);
                let app = Arc::new(App::new(
                    Arc::clone(&cfg),
                    m.clone(),
                    Arc::clone(&common),
                    arms,
                    opened.store.clone(),
                    tx,
                ));
                queues.push((Arc::clone(&app), rx, m.shadow_concurrency));
                app
            })
            .collect();
        let app = Arc::new(Apps {
            cfg: Arc::clone(&cfg),
            models,
            store: opened.store.clone(),
            common,
        });
        let log_threads = opened.threads;
        let grpc_tls = match (&grpc_listener, &app.cfg.tls) {
            (Some(_), Some(t)) => Some(crate::tls::grpc_config(t)?),
            _ => None,
        };
        let done = runtime.block_on(async {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| ServeError::Bind {
                    addr,
                    message: e.to_string(),
                })?;
            let grpc = match grpc_listener {
                Some(l) => Some(serve_grpc(Arc::clone(&app), l, grpc_tls, stop_rx.clone())?),
                None => None,
            };
            for start in starts {
                app.store.admin(start).await.map_err(|e| ServeError::Log {
                    log: app.store.location.clone(),
                    message: format!("{e:?}"),
                })?;
            }
            let shadow_tasks = queues
                .into_iter()
                .flat_map(|(m, rx, workers)| shadow::spawn_workers(m, rx, workers))
                .collect();
            // The automatic canaries: each stops with the gateway's stop signal.
            for m in &app.models {
                let _ = crate::canary::spawn(Arc::clone(m), stop_rx.clone());
            }
            let running = Running {
                listener,
                tls,
                grpc,
                shadow_tasks,
                log_threads,
            };
            Ok::<_, ServeError>(tokio::spawn(run(app, running, stop_rx, grace)))
        })?;
        Ok(Gateway {
            runtime,
            addr,
            grpc_addr,
            stop,
            done,
            recovered_missing: opened.recovered_missing,
            state_restored,
        })
    }

    /// The address it listens on (the port chosen when the config said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gRPC service's address, when `grpc_listen` is set.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Stops on SIGTERM or SIGINT (Ctrl-C) as well as on the stop handle. The handlers are
    /// in place when this returns, so a signal sent after the `listening on` line is never
    /// met by the default action (which would kill the process without draining).
    pub fn stop_on_signals(&self) -> Result<(), ServeError> {
        let stop = self.stop.clone();
        let _entered = self.runtime.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let failed = |e: std::io::Error| {
                ServeError::Internal(format!("cannot install the signal handlers: {e}"))
            };
            let mut term = signal(SignalKind::terminate()).map_err(failed)?;
            let mut int = signal(SignalKind::interrupt()).map_err(failed)?;
            self.runtime.spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("shutting down: no new connections; draining");
                let _ = stop.send(true);
            });
        }
        #[cfg(not(unix))]
        self.runtime.spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = stop.send(true);
        });
        Ok(())
    }

    /// Blocks until the gateway has stopped (see [`StopHandle`]) and flushed its log.
    pub fn wait(self) -> Result<ServeSummary, ServeError> {
        let Gateway { runtime, done, .. } = self;
        let out = runtime.block_on(done).unwrap_or_else(|e| {
            Err(ServeError::Internal(format!(
                "the gateway task failed: {e}"
            )))
        });
        runtime.shutdown_timeout(Duration::from_millis(100));
        out
    }
}

/// Binds a listening socket (non-blocking, for tokio).
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| ServeError::Bind {
            addr,
            message: e.to_string(),
        })
}

/// Serves the V2 gRPC service on `listener` until the stop signal; in-flight calls finish.
fn serve_grpc(
    app: Arc<Apps>,
    listener: std::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Internal(e.to_string()))?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| ServeError::Bind {
        addr,
        message: e.to_string(),
    })?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = tls {
        builder = builder
            .tls_config(t)
            .map_err(|e| ServeError::Tls(format!("gRPC: {e}")))?;
    }
    let router = builder.add_service(crate::grpc::service(app));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(tokio::spawn(async move {
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
            tracing::error!("the gRPC service stopped: {e}");
        }
    }))
}

/// What a started gateway runs, and what its stop waits for.
struct Running {
    listener: tokio::net::TcpListener,
    /// TLS on the REST listener.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The gRPC service, when configured.
    grpc: Option<tokio::task::JoinHandle<()>>,
    shadow_tasks: Vec<tokio::task::JoinHandle<()>>,
    log_threads: Vec<std::thread::JoinHandle<()>>,
}

async fn run(
    app: Arc<Apps>,
    running: Running,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<ServeSummary, ServeError> {
    let Running {
        listener,
        tls,
        grpc,
        shadow_tasks,
        log_threads,
    } = running;
    let mut stop2 = stop.clone();
    let signal = async move {
        let _ = stop2.wait_for(|s| *s).await;
    };
    let service = router(Arc::clone(&app)).into_make_service_with_connect_info::<Peer>();
    let server = match tls {
        None => tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(signal)
                .await
        }),
        Some(config) => {
            let listener = TlsListener::new(listener, config)
                .map_err(|e| ServeError::Internal(format!("cannot start the TLS listener: {e}")))?;
            tokio::spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(signal)
                    .await
            })
        }
    };
    let _ = stop.wait_for(|s| *s).await;
    app.common.draining.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + grace;
    let drained = tokio::time::timeout(grace, async {
        let _ = server.await;
        if let Some(g) = grpc {
            let _ = g.await;
        }
    })
    .await
    .is_ok();
    // Requests whose client went away run on as tasks of their own: let them finish and
    // log before the queue and the log close.
    let _ = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), async {
        loop {
            let idle = app.common.idle.notified();
            if app.common.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            idle.await;
        }
    })
    .await;
    // No request can queue a copy any more: close the queue and let the workers empty it.
    for m in &app.models {
        if let Ok(mut tx) = m.shadow_tx.lock() {
            tx.take();
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = tokio::time::timeout(left, async {
        for t in shadow_tasks {
            let _ = t.await;
        }
    })
    .await;
    // `close` answers within the log's commit wait even when the database is stuck.
    let marked_missing = app.store.close().await.map_err(|m| ServeError::Log {
        log: app.store.location.clone(),
        message: m,
    })?;
    let joined = tokio::task::spawn_blocking(move || {
        for t in log_threads {
            let _ = t.join();
        }
    });
    if tokio::time::timeout(Duration::from_secs(15), joined)
        .await
        .is_err()
    {
        tracing::warn!("the log's threads did not stop within 15 s; leaving them");
    }
    tracing::info!(marked_missing, drained, "stopped");
    Ok(ServeSummary {
        marked_missing,
        drained,
    })
}

//! A model behind the gateway: `qgate-runtime` stays synchronous, so each backend is a pool
//! of OS threads, each owning one loaded instance (a local model, or a V2 upstream whose
//! `ureq` agent keeps its connection alive), fed by one queue. The async side waits on a
//! oneshot with a timeout; a call that times out keeps its thread until the model returns
//! (a runtime cannot be interrupted), which is why the shadow copies get a pool of their
//! own size (`shadow.concurrency`) and never share the baseline's threads.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qgate_core::Array;
use qgate_runtime::{Model, ModelInfo, RuntimeError};
use tokio::sync::oneshot;

/// Makes one instance of a model.
pub type Factory = Arc<dyn Fn() -> Result<Box<dyn Model>, RuntimeError> + Send + Sync>;

/// Why a backend call gave no outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// No answer within the timeout.
    Timeout(Duration),
    /// The model (or its server) failed; the message names it.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no answer within {} ms", d.as_millis()),
            CallError::Failed(m) => f.write_str(m),
        }
    }
}

struct Job {
    inputs: Vec<Array>,
    reply: oneshot::Sender<Result<Vec<Array>, String>>,
}

/// A pool of model instances.
pub struct Backend {
    /// `baseline` or `candidate`, for messages.
    pub role: &'static str,
    /// The model spec, for messages.
    pub spec: String,
    pub info: ModelInfo,
    queue: mpsc::Sender<Job>,
}

impl Backend {
    /// Loads `threads` instances (the first one's error is the backend's error).
    pub fn start(
        role: &'static str,
        spec: &str,
        factory: &Factory,
        threads: usize,
    ) -> Result<Backend, RuntimeError> {
        let first = factory()?;
        let info = first.info().clone();
        let mut models = vec![first];
        for _ in 1..threads.max(1) {
            models.push(factory()?);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for (i, mut model) in models.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            let factory = Arc::clone(factory);
            std::thread::Builder::new()
                .name(format!("qgate-{role}-{i}"))
                .spawn(move || loop {
                    let job = {
                        let Ok(guard) = rx.lock() else { return };
                        match guard.recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        }
                    };
                    // Its caller gave up (timeout, client gone): running it would only delay
                    // the calls queued behind it.
                    if job.reply.is_closed() {
                        continue;
                    }
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        model.run(&job.inputs).map_err(|e| e.to_string())
                    }));
                    match run {
                        Ok(r) => {
                            let _ = job.reply.send(r);
                        }
                        Err(p) => {
                            let what = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "a panic".into());
                            // Answer first (the caller must not wait for the reload), then
                            // replace the instance, which may be left broken.
                            let _ = job.reply.send(Err(format!("the model panicked: {what}")));
                            let fresh =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    factory()
                                }));
                            match fresh {
                                Ok(Ok(m)) => model = m,
                                Ok(Err(e)) => {
                                    tracing::error!(
                                        "{role} model: cannot reload after a panic: {e}"
                                    )
                                }
                                Err(_) => tracing::error!("{role} model: the reload panicked too"),
                            }
                        }
                    }
                })
                .map_err(|e| RuntimeError::Remote {
                    url: spec.to_string(),
                    message: format!("cannot start a worker thread: {e}"),
                })?;
        }
        Ok(Backend {
            role,
            spec: spec.to_string(),
            info,
            queue: tx,
        })
    }

    /// Queues one batch (`inputs` in the model's declaration order); the receiver gets the
    /// outputs when a thread has run it.
    pub fn submit(
        &self,
        inputs: Vec<Array>,
    ) -> Result<oneshot::Receiver<Result<Vec<Array>, String>>, CallError> {
        let (reply, rx) = oneshot::channel();
        if self.queue.send(Job { inputs, reply }).is_err() {
            return Err(CallError::Failed(format!(
                "the {} model's workers have stopped",
                self.role
            )));
        }
        Ok(rx)
    }

    /// Runs one batch, waiting at most `timeout`.
    pub async fn call(
        &self,
        inputs: Vec<Array>,
        timeout: Duration,
    ) -> Result<(Vec<Array>, Duration), CallError> {
        let start = Instant::now();
        let rx = self.submit(inputs)?;
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(r) => self.outcome(r).map(|out| (out, start.elapsed())),
        }
    }

    /// What a thread's answer means.
    pub fn outcome(
        &self,
        r: Result<Result<Vec<Array>, String>, oneshot::error::RecvError>,
    ) -> Result<Vec<Array>, CallError> {
        match r {
            Err(_) => Err(CallError::Failed(format!(
                "the {} model's worker stopped during the call",
                self.role
            ))),
            Ok(Err(m)) => Err(CallError::Failed(m)),
            Ok(Ok(out)) => Ok(out),
        }
    }
}

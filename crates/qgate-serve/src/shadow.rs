//! Shadow copies: the candidate gets each request the baseline answered through a bounded
//! queue (`shadow.queue`) served by `shadow.concurrency` workers, so a slow candidate fills
//! the queue (and copies are dropped and counted) instead of taking threads, time or answers
//! from the clients. A copy still queued or running at its deadline (`shadow.timeout_ms`
//! after its request arrived) is `missing` or `timeout`; its result is joined to the
//! request's record when it arrives.

use std::sync::Arc;
use std::time::Instant;

use qgate_core::Array;
use tokio::sync::{mpsc, Mutex};

use crate::app::App;
use crate::record;
use crate::route::Arm;
use crate::store::ShadowResult;

/// One request's copy for the candidate.
pub struct ShadowJob {
    /// The id the request was logged under.
    pub request_id: String,
    /// In the baseline's input order.
    pub inputs: Vec<Array>,
    /// What the client got (for the agreement figure); `None` when the baseline failed.
    pub baseline_outputs: Option<Vec<Array>>,
    pub deadline: Instant,
}

/// Starts the workers; they end when the queue is closed and empty.
pub fn spawn_workers(
    app: Arc<App>,
    rx: mpsc::Receiver<ShadowJob>,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let rx = Arc::new(Mutex::new(rx));
    (0..workers)
        .map(|_| {
            let app = Arc::clone(&app);
            let rx = Arc::clone(&rx);
            tokio::spawn(async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { return };
                    run_one(&app, job).await;
                }
            })
        })
        .collect()
}

async fn run_one(app: &App, job: ShadowJob) {
    let now = Instant::now();
    let result = |status: &'static str, error: Option<String>| ShadowResult {
        request_id: job.request_id.clone(),
        status,
        error,
        outputs: None,
        candidate_us: None,
    };
    if now >= job.deadline {
        app.metrics.shadow("missing");
        app.store.shadow(result(
            "missing",
            Some("still queued at shadow.timeout_ms".into()),
        ));
        return;
    }
    let timeout = (job.deadline - now).min(app.cfg.backend_timeout);
    let inputs: Vec<Array> = app
        .candidate_inputs
        .iter()
        .map(|&i| job.inputs[i].clone())
        .collect();
    let started = Instant::now();
    let out = match app.shadow_candidate.submit(inputs) {
        Err(e) => Err(e),
        Ok(rx) => {
            tokio::pin!(rx);
            tokio::select! {
                r = &mut rx => app.shadow_candidate.outcome(r).map(|o| (o, started.elapsed())),
                _ = tokio::time::sleep(timeout) => {
                    // Record the timeout now, but keep this worker until the model returns:
                    // a runtime cannot be interrupted, and taking the next copy would put
                    // more than `shadow.concurrency` candidate calls on the cores.
                    app.metrics.shadow("timeout");
                    app.store.shadow(result(
                        "timeout",
                        Some(format!("the candidate gave no answer within {} ms", timeout.as_millis())),
                    ));
                    let _ = rx.await;
                    return;
                }
            }
        }
    };
    let shadow = match out {
        Ok((outputs, took)) => match app.in_baseline_order(Arm::Candidate, outputs) {
            Err(m) => result("error", Some(m)),
            Ok(outputs) => {
                app.metrics.backend("candidate", took);
                if let Some((rows, agreed)) = job
                    .baseline_outputs
                    .as_deref()
                    .and_then(|b| record::top1_agreement(b, &outputs))
                {
                    app.metrics.agreement(rows, agreed);
                }
                ShadowResult {
                    outputs: Some(record::outputs_json(&app.named(outputs), &app.cfg.log)),
                    candidate_us: Some(took.as_micros() as i64),
                    ..result("ok", None)
                }
            }
        },
        // A timeout was recorded in the select above; what is left is a failure.
        Err(e) => result("error", Some(e.to_string())),
    };
    app.metrics.shadow(shadow.status);
    app.store.shadow(shadow);
}

//! The HTTP surface: the V2 routes, `/metrics`, and the shared state the handlers read.
//! `router(app)` is apart from the listener so tests call it over a real socket on port 0.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use qgate_core::Array;
use qgate_core::ElemType;
use qgate_runtime::{Dim, ModelInfo};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::backend::{Backend, CallError};
use crate::config::{GatewayConfig, Mode, ModelConfig, OnLogFailure};
use crate::metrics::Metrics;
use crate::record;
use crate::route::{self, AdminState, Arm};
use crate::shadow::ShadowJob;
use crate::store::{now_ms, RequestRecord, Store};
use crate::v2::{self, BadRequest, InferRequest};

/// The model pools of both arms and how their tensors line up.
pub struct Arms {
    pub baseline: Backend,
    pub candidate: Backend,
    pub shadow_candidate: Backend,
    pub mapping: crate::gateway::Mapping,
}

/// What every model of a gateway shares: the drain flag and the requests in flight.
pub struct Common {
    pub draining: AtomicBool,
    /// Requests past reading their body and not yet answered (they may outlive their
    /// connection); shutdown waits for them before it closes the log.
    pub in_flight: std::sync::atomic::AtomicUsize,
    pub idle: tokio::sync::Notify,
    next_id: AtomicU64,
    id_prefix: String,
}

impl Default for Common {
    fn default() -> Common {
        Common {
            draining: AtomicBool::new(false),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:x}-{:x}", now_ms(), std::process::id()),
        }
    }
}

/// The gateway: its models (each an [`App`]), the log and what they share. The routes'
/// state.
pub struct Apps {
    pub cfg: Arc<GatewayConfig>,
    pub models: Vec<Arc<App>>,
    pub store: Store,
    pub common: Arc<Common>,
}

impl Apps {
    /// The model clients call `name`, or the V2 404 answer.
    pub fn get(&self, name: &str) -> Result<Arc<App>, String> {
        self.models
            .iter()
            .find(|m| m.model.name == name)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = self.models.iter().map(|m| m.model.name.as_str()).collect();
                format!(
                    "no model '{name}' here; this gateway serves {}",
                    names
                        .iter()
                        .map(|n| format!("'{n}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// Ready unless draining or, when records that cannot be logged are refused, the log
    /// is down; the reason when not.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.common.draining.load(Ordering::SeqCst) {
            return Err("draining");
        }
        let log_ok =
            self.store.health().up() || self.store.on_failure() == OnLogFailure::ServeUnlogged;
        if !log_ok {
            return Err("the log is down");
        }
        Ok(())
    }
}

/// One served model: its config, both arms' pools, its metrics and shadow queue.
pub struct App {
    /// The gateway's config (listeners, log, tokens: what the models share).
    pub cfg: Arc<GatewayConfig>,
    pub model: ModelConfig,
    pub common: Arc<Common>,
    pub baseline: Backend,
    /// The candidate's instances that answer clients (ab, canary).
    pub candidate: Backend,
    /// The candidate's instances that answer shadow copies (`shadow.concurrency` threads).
    pub shadow_candidate: Backend,
    /// For each candidate input, the index of the baseline input it takes.
    pub candidate_inputs: Vec<usize>,
    /// For each baseline output, the index of the candidate output that answers it.
    pub candidate_outputs: Vec<usize>,
    /// The log; its board holds the admin state in force (this gateway's actions and,
    /// read by its watcher, other replicas').
    pub store: Store,
    /// Serialises admin actions (each is committed before it takes effect).
    pub admin_lock: tokio::sync::Mutex<()>,
    pub metrics: Metrics,
    /// Taken (closed) at shutdown so the shadow workers finish.
    pub shadow_tx: Mutex<Option<mpsc::Sender<ShadowJob>>>,
}

impl App {
    pub fn new(
        cfg: Arc<GatewayConfig>,
        model: ModelConfig,
        common: Arc<Common>,
        arms: Arms,
        store: Store,
        shadow_tx: mpsc::Sender<ShadowJob>,
    ) -> App {
        App {
            cfg,
            model,
            common,
            baseline: arms.baseline,
            candidate: arms.candidate,
            shadow_candidate: arms.shadow_candidate,
            candidate_inputs: arms.mapping.inputs,
            candidate_outputs: arms.mapping.outputs,
            store,
            admin_lock: tokio::sync::Mutex::new(()),
            metrics: Metrics::default(),
            shadow_tx: Mutex::new(Some(shadow_tx)),
        }
    }

    pub fn admin_state(&self) -> AdminState {
        self.versioned_state().0
    }

    /// The admin state in force and its version in the log.
    pub fn versioned_state(&self) -> (AdminState, i64) {
        self.store.board().get(&self.model.name).unwrap_or_else(|| {
            (
                AdminState::from_config(self.model.mode, &self.model.split),
                0,
            )
        })
    }

    /// A model's answer in the baseline's output order: the candidate's outputs are matched
    /// to the baseline's by name (`candidate_outputs`, a permutation).
    pub fn in_baseline_order(&self, arm: Arm, out: Vec<Array>) -> Result<Vec<Array>, String> {
        let declared = match arm {
            Arm::Baseline => self.baseline.info.outputs.len(),
            Arm::Candidate => self.candidate.info.outputs.len(),
        };
        if out.len() != declared {
            return Err(format!(
                "the {} model answered {} outputs; it declares {declared}",
                arm.as_str(),
                out.len()
            ));
        }
        Ok(match arm {
            Arm::Baseline => out,
            Arm::Candidate => {
                let mut slots: Vec<Option<Array>> = out.into_iter().map(Some).collect();
                self.candidate_outputs
                    .iter()
                    .filter_map(|&j| slots[j].take())
                    .collect()
            }
        })
    }

    /// Outputs in the baseline's order, under the baseline's names.
    pub fn named(&self, out: Vec<Array>) -> Vec<(String, Array)> {
        self.baseline
            .info
            .outputs
            .iter()
            .map(|t| t.name.clone())
            .zip(out)
            .collect()
    }

    fn new_id(&self) -> String {
        format!(
            "qg-{}-{}",
            self.common.id_prefix,
            self.common.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The gateway's routes.
pub fn router(app: Arc<Apps>) -> Router {
    // With mutual TLS, outcomes and the admin API need a verified client certificate.
    let mtls = app.cfg.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let guarded = Router::new()
        .route("/v2/models/{name}/outcome", post(crate::admin::outcome))
        .route(
            "/v2/models/{name}/analysis",
            get(crate::admin::analysis).post(crate::admin::analysis_gate),
        )
        .merge(crate::admin::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            mtls,
            crate::tls::require_client_cert,
        ));
    Router::new()
        .route("/v2", get(server_meta))
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({"live": true})) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_meta))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}", get(model_meta))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/metrics", get(metrics))
        .merge(guarded)
        .fallback(|| async { v2_error(StatusCode::NOT_FOUND, "no such route".into()) })
        .with_state(app)
}

/// A V2 error answer: `{"error": "…"}`.
pub fn v2_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn server_meta() -> Response {
    axum::Json(json!({
        "name": "qgate",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
    .into_response()
}

async fn ready(State(apps): State<Arc<Apps>>) -> Response {
    readiness(&apps, json!({}))
}

/// Ready unless draining or, when records that cannot be logged are refused, the log is
/// down: 200 with `"ready": true`, else 503 with `false`, added to `body`.
fn readiness(apps: &Apps, mut body: Value) -> Response {
    let ready = apps.ready();
    if let Err(reason) = ready {
        body["reason"] = json!(reason);
    }
    let ready = ready.is_ok();
    body["ready"] = json!(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The model clients call `name`, or the V2 404 answer naming the models served.
fn lookup(apps: &Apps, name: &str) -> Result<Arc<App>, Box<Response>> {
    apps.get(name)
        .map_err(|m| Box::new(v2_error(StatusCode::NOT_FOUND, m)))
}

/// The V2 datatype of a declared element type (FP32 when undeclared).
pub(crate) fn declared_datatype(t: Option<ElemType>) -> &'static str {
    t.map_or("FP32", qgate_runtime::v2_datatype)
}

fn tensor_meta(info: &ModelInfo, outputs: bool) -> Vec<Value> {
    let list = if outputs { &info.outputs } else { &info.inputs };
    list.iter()
        .map(|t| {
            let shape: Vec<i64> = t
                .shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n as i64,
                    Dim::Symbolic(_) => -1,
                })
                .collect();
            json!({"name": t.name, "datatype": declared_datatype(t.elem_type), "shape": shape})
        })
        .collect()
}

async fn model_meta(
    State(apps): State<Arc<Apps>>,
    Path(p): Path<std::collections::HashMap<String, String>>,
) -> Response {
    let name = p.get("name").map(String::as_str).unwrap_or_default();
    let app = match lookup(&apps, name) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let info = &app.baseline.info;
    axum::Json(json!({
        "name": app.model.name,
        "versions": ["1"],
        "platform": "qgate-gateway",
        "inputs": tensor_meta(info, false),
        "outputs": tensor_meta(info, true),
    }))
    .into_response()
}

async fn model_ready(
    State(apps): State<Arc<Apps>>,
    Path(p): Path<std::collections::HashMap<String, String>>,
) -> Response {
    let name = p.get("name").map(String::as_str).unwrap_or_default();
    if let Err(r) = lookup(&apps, name) {
        return *r;
    }
    // The Open Inference Protocol's model-ready answer: `{"name", "ready"}`.
    readiness(&apps, json!({ "name": name }))
}

async fn metrics(State(apps): State<Arc<Apps>>) -> Response {
    let states: Vec<AdminState> = apps.models.iter().map(|m| m.admin_state()).collect();
    let views: Vec<crate::metrics::ModelView<'_>> = apps
        .models
        .iter()
        .zip(&states)
        .map(|(m, state)| crate::metrics::ModelView {
            name: &m.model.name,
            metrics: &m.metrics,
            mode: state.mode.as_str(),
            weight: state.weight(&m.model.split),
            step: (state.mode == Mode::Canary)
                .then_some(state.canary_step)
                .flatten(),
            queue_depth: m
                .shadow_tx
                .lock()
                .ok()
                .and_then(|t| t.as_ref().map(|t| t.max_capacity() - t.capacity()))
                .unwrap_or(0),
        })
        .collect();
    let body = crate::metrics::render(&views, apps.store.health());
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// The request's inputs in the baseline's declaration order, checked against what it
/// declares (names, datatypes, ranks and fixed sizes).
fn bind_inputs(info: &ModelInfo, req: &InferRequest) -> Result<Vec<Array>, BadRequest> {
    let names: Vec<&str> = info.inputs.iter().map(|t| t.name.as_str()).collect();
    if let Some(extra) = req
        .inputs
        .iter()
        .find(|t| !names.contains(&t.name.as_str()))
    {
        return Err(BadRequest(format!(
            "the model has no input '{}' (it takes: {})",
            extra.name,
            names.join(", ")
        )));
    }
    info.inputs
        .iter()
        .map(|decl| {
            let Some(t) = req.inputs.iter().find(|t| t.name == decl.name) else {
                return Err(BadRequest(format!("input '{}' is missing", decl.name)));
            };
            let given = t.array.elem_type();
            if let Some(want) = decl.elem_type {
                let ok = given == want || (want == ElemType::F16 && given == ElemType::F32);
                if !ok {
                    return Err(BadRequest(format!(
                        "input '{}': datatype {}, the model expects {}",
                        decl.name,
                        v2::datatype(&t.array.data),
                        declared_datatype(Some(want))
                    )));
                }
            }
            if !decl.shape.is_empty() {
                let fits = decl.shape.len() == t.array.shape.len()
                    && decl.shape.iter().zip(&t.array.shape).all(|(d, n)| match d {
                        Dim::Fixed(f) => f == n,
                        Dim::Symbolic(_) => true,
                    });
                if !fits {
                    return Err(BadRequest(format!(
                        "input '{}': shape {:?}, the model expects {}",
                        decl.name,
                        t.array.shape,
                        decl.shape_text()
                    )));
                }
            }
            Ok(t.array.clone())
        })
        .collect()
}

/// Builds the answer with the gateway's headers.
fn respond(status: StatusCode, id: &str, arm: &str, body: Response) -> Response {
    let mut r = body;
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        "x-qgate-arm",
        HeaderValue::from_static(match arm {
            "baseline" => "baseline",
            "candidate" => "candidate",
            _ => "none",
        }),
    );
    r
}

/// What the serving arm answered.
enum Served {
    Ok(Vec<Array>),
    Failed(StatusCode, String),
}

/// A request's record as it starts: time, mode and the weight in force.
fn new_record(app: &App, state: &AdminState, ts_ms: i64) -> RequestRecord {
    RequestRecord {
        ts_ms,
        model: app.model.name.clone(),
        mode: state.mode.as_str(),
        weight: state.weight(&app.model.split),
        canary_step: (state.mode == Mode::Canary)
            .then_some(state.canary_step)
            .flatten()
            .map(|s| s as i64),
        ..RequestRecord::default()
    }
}

/// Digests the inputs into the record and binds them to the baseline's declaration.
fn prepare(
    app: &App,
    req: &InferRequest,
    rec: &mut RequestRecord,
) -> Result<Vec<Array>, BadRequest> {
    let named: Vec<(&str, &Array)> = req
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), &t.array))
        .collect();
    let (digest, bytes) = record::input_digest(&named);
    rec.input_digest = Some(digest);
    rec.input_bytes = bytes as i64;
    rec.inputs = record::inputs_json(&named, bytes, &app.cfg.log);
    let inputs = bind_inputs(&app.baseline.info, req)?;
    v2::check_requested(
        req,
        app.baseline.info.outputs.iter().map(|t| t.name.as_str()),
    )?;
    Ok(inputs)
}

/// Chooses the arm (sticky by the configured header) and notes it in the record.
fn choose_arm(app: &App, state: &AdminState, headers: &HeaderMap, rec: &mut RequestRecord) -> Arm {
    let key = headers
        .get(app.model.split.sticky_header.as_str())
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty());
    let choice = route::choose(state, &app.model.split, key, &rec.request_id);
    if key.is_none() && state.mode != Mode::Shadow {
        app.metrics.unsticky.fetch_add(1, Ordering::Relaxed);
    }
    rec.arm = Some(choice.arm.as_str());
    rec.sticky_hash = choice.key_hash;
    choice.arm
}

/// Notes the serving model's answer in the record; the named outputs when it succeeded.
fn note_served(
    app: &App,
    rec: &mut RequestRecord,
    arm: Arm,
    served: Served,
    took: Option<std::time::Duration>,
) -> Option<Vec<(String, Array)>> {
    let us = took.map(|d| d.as_micros() as i64);
    match arm {
        Arm::Baseline => rec.baseline_us = us,
        Arm::Candidate => rec.candidate_us = us,
    }
    match served {
        Served::Failed(status, m) => {
            rec.status = status.as_u16();
            rec.error = Some(m);
            None
        }
        Served::Ok(out) => {
            let named = app.named(out);
            rec.status = 200;
            rec.outputs = Some(record::outputs_json(&named, &app.cfg.log));
            Some(named)
        }
    }
}

/// In shadow mode, reserves the copy's place in the queue before the record is written, so
/// the record says `dropped` exactly when the copy was not queued, and the copy is queued
/// only after its record.
fn reserve_shadow(
    app: &App,
    mode: Mode,
    rec: &mut RequestRecord,
) -> Option<mpsc::OwnedPermit<ShadowJob>> {
    if mode != Mode::Shadow {
        return None;
    }
    let tx = app.shadow_tx.lock().ok().and_then(|t| t.clone());
    // A queue closed at shutdown cannot take the copy either.
    let reserved = tx.and_then(|tx| tx.try_reserve_owned().ok());
    match reserved.ok_or(()) {
        Ok(permit) => {
            rec.shadow_status = Some("pending");
            Some(permit)
        }
        Err(_) => {
            rec.shadow_status = Some("dropped");
            app.metrics.shadow("dropped");
            None
        }
    }
}

/// What the gateway answered one inference request, before it is written as REST or gRPC.
pub struct Answered {
    /// The id the request was logged under (the client's, suffixed when it was a duplicate).
    pub id: String,
    /// `baseline`, `candidate`, or `none` for a request refused before routing.
    pub arm: &'static str,
    pub status: StatusCode,
    /// The served outputs in the baseline's order, under its names; `None` on errors.
    pub outputs: Option<Vec<(String, Array)>>,
    pub error: Option<String>,
    /// The parsed request (which outputs it asked for, and how); `None` when refused
    /// before it was read.
    pub request: Option<InferRequest>,
}

impl Answered {
    fn refused(id: &str, arm: &'static str, status: StatusCode, message: String) -> Answered {
        Answered {
            id: id.to_string(),
            arm,
            status,
            outputs: None,
            error: Some(message),
            request: None,
        }
    }
}

/// The REST answer: the outputs as the client asked (JSON or binary), or the V2 error.
fn rest_answer(a: Answered, name: &str, version: Option<&str>) -> Response {
    let (id, arm, status) = (a.id, a.arm, a.status);
    let (Some(outputs), Some(req)) = (a.outputs, a.request) else {
        let message = a.error.unwrap_or_default();
        return respond(status, &id, arm, v2_error(status, message));
    };
    let enc = match v2::encode_response(name, version, &id, &outputs, &req) {
        Ok(e) => e,
        Err(BadRequest(m)) => {
            return respond(
                StatusCode::BAD_REQUEST,
                &id,
                arm,
                v2_error(StatusCode::BAD_REQUEST, m),
            )
        }
    };
    let mut r = Response::new(Body::from(enc.body));
    let h = r.headers_mut();
    match enc.header_len {
        Some(n) => {
            h.insert(
                "content-type",
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert("inference-header-content-length", HeaderValue::from(n));
        }
        None => {
            h.insert("content-type", HeaderValue::from_static("application/json"));
        }
    }
    respond(StatusCode::OK, &id, arm, r)
}

/// `POST …/infer`: read the body, then the rest in a task of its own — parse → bind →
/// route → call → record (committed) → queue the shadow copy → answer — which runs to the
/// end even when the client goes away, so no request is left without its record or with
/// its shadow copy cut off.
async fn infer(
    State(apps): State<Arc<Apps>>,
    Path(p): Path<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let ts_ms = now_ms();
    let name = p.get("name").cloned().unwrap_or_default();
    let version = p.get("version").cloned();
    let app = match lookup(&apps, &name) {
        Ok(a) => a,
        Err(r) => {
            let id = headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v2::check_id(v).ok())
                .unwrap_or_else(|| apps.models[0].new_id());
            return respond(StatusCode::NOT_FOUND, &id, "none", *r);
        }
    };
    let parsed = read_request(&app, &headers, body).await;
    let call = Call {
        started,
        ts_ms,
        headers,
    };
    match run_to_the_end(app, call, parsed).await {
        Ok(a) => rest_answer(a, &name, version.as_deref()),
        Err(message) => v2_error(StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

/// Handles a parsed request in a task of its own, counted in flight, which runs to the end
/// even when the client goes away (REST and gRPC alike).
pub(crate) async fn run_to_the_end(
    app: Arc<App>,
    call: Call,
    parsed: Result<InferRequest, (StatusCode, String)>,
) -> Result<Answered, String> {
    let guard = InFlight::new(app);
    let task = tokio::spawn(async move {
        let r = handle(Arc::clone(&guard.0), call, parsed).await;
        drop(guard);
        r
    });
    task.await
        .map_err(|e| format!("the request's task failed: {e}"))
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<App>);

impl InFlight {
    fn new(app: Arc<App>) -> InFlight {
        app.common.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(app)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.common.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.common.idle.notify_waiters();
        }
    }
}

/// What the handler knew before the body was read.
pub(crate) struct Call {
    pub started: Instant,
    pub ts_ms: i64,
    /// The request's headers (gRPC: its metadata): the sticky key and `x-request-id`.
    pub headers: HeaderMap,
}

/// The request id the client gave: the body's `id`, else a valid `x-request-id` header.
fn given_id(
    headers: &HeaderMap,
    parsed: &Result<InferRequest, (StatusCode, String)>,
) -> Result<Option<String>, BadRequest> {
    if let Some(id) = parsed.as_ref().ok().and_then(|r| r.id.clone()) {
        return Ok(Some(id));
    }
    match headers.get("x-request-id").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok("")) => Ok(None),
        Some(Ok(v)) => v2::check_id(v).map(Some),
        Some(Err(_)) => Err(BadRequest("x-request-id is not visible ASCII text".into())),
    }
}

async fn handle(
    app: Arc<App>,
    call: Call,
    parsed: Result<InferRequest, (StatusCode, String)>,
) -> Answered {
    let Call {
        started,
        ts_ms,
        headers,
    } = call;
    // The admin state is read once the body is in: a rollback answered before then is in force.
    let state = app.admin_state();
    let mut rec = new_record(&app, &state, ts_ms);
    let id_given = match given_id(&headers, &parsed) {
        Ok(id) => id,
        Err(BadRequest(m)) => {
            rec.request_id = app.new_id();
            return refuse(&app, rec, started, StatusCode::BAD_REQUEST, m).await;
        }
    };
    rec.request_id = id_given.clone().unwrap_or_else(|| app.new_id());
    rec.client_request_id = id_given;
    let req = match parsed {
        Ok(r) => r,
        Err((status, message)) => return refuse(&app, rec, started, status, message).await,
    };
    let inputs = match prepare(&app, &req, &mut rec) {
        Ok(i) => i,
        Err(BadRequest(m)) => return refuse(&app, rec, started, StatusCode::BAD_REQUEST, m).await,
    };
    let arm = choose_arm(&app, &state, &headers, &mut rec);
    let (served, took) = serve(&app, arm, &inputs).await;
    let outputs = note_served(&app, &mut rec, arm, served, took);
    let permit = reserve_shadow(&app, state.mode, &mut rec);
    rec.total_us = started.elapsed().as_micros() as i64;
    rec.gateway_us = rec.total_us - took.map_or(0, |d| d.as_micros() as i64);
    // The record goes to the log; the answer needs only these of it.
    let (request_id, status, error) = (rec.request_id.clone(), rec.status, rec.error.clone());
    let (logged, permit) = match app.store.record(rec).await {
        Ok(id) => (id, permit),
        // Served unlogged: the record waits in the log's backlog; no shadow copy is made
        // (its result could reach the log before the record).
        Err(e) if serves_unlogged(&app, &request_id, &e) => (request_id.clone(), None),
        Err(e) => return unlogged(&app, &request_id, arm.as_str(), &e),
    };
    if logged != request_id {
        app.metrics.duplicate_ids.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(permit) = permit {
        permit.send(ShadowJob {
            request_id: logged.clone(),
            inputs,
            // Only shadow mode copies the answer, for the agreement figure.
            baseline_outputs: outputs
                .as_ref()
                .map(|o| o.iter().map(|(_, a)| a.clone()).collect()),
            deadline: started + app.model.shadow_timeout,
        });
    }
    app.metrics.request(arm.as_str(), status, started.elapsed());
    Answered {
        id: logged,
        arm: arm.as_str(),
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        outputs,
        error,
        request: Some(req),
    }
}

/// Whether a request whose record failed is answered anyway (`on_log_failure =
/// "serve_unlogged"`); counts it.
fn serves_unlogged(app: &App, id: &str, e: &str) -> bool {
    if app.store.on_failure() != OnLogFailure::ServeUnlogged {
        return false;
    }
    app.metrics.unlogged.fetch_add(1, Ordering::Relaxed);
    tracing::warn!("request {id} served unlogged: {e}");
    true
}

/// The answer when the record could not be committed: 503, since the gateway answers only
/// what it logged.
fn unlogged(app: &App, id: &str, arm: &'static str, e: &str) -> Answered {
    app.metrics.log_errors.fetch_add(1, Ordering::Relaxed);
    tracing::error!("request {id}: {e}");
    let message = "the gateway cannot log this request; it answers only what it logs";
    Answered::refused(id, arm, StatusCode::SERVICE_UNAVAILABLE, message.into())
}

/// Reads and parses the body, refusing it with 413 beyond the limit and 400 when malformed.
async fn read_request(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<InferRequest, (StatusCode, String)> {
    let limit = app.cfg.body_limit_bytes;
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the gateway's limit of {limit} bytes (body_limit_bytes)"),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
        }
    })?;
    let header_len = match headers.get("inference-header-content-length") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    (
                        StatusCode::BAD_REQUEST,
                        "Inference-Header-Content-Length must be a byte count".to_string(),
                    )
                })?,
        ),
    };
    v2::parse_request(&bytes, header_len).map_err(|BadRequest(m)| (StatusCode::BAD_REQUEST, m))
}

/// Logs a refused request and answers the refusal.
async fn refuse(
    app: &App,
    mut rec: RequestRecord,
    started: Instant,
    status: StatusCode,
    message: String,
) -> Answered {
    rec.status = status.as_u16();
    rec.error = Some(message.clone());
    rec.total_us = started.elapsed().as_micros() as i64;
    rec.gateway_us = rec.total_us;
    let request_id = rec.request_id.clone();
    let id = match app.store.record(rec).await {
        Ok(id) => id,
        Err(e) if serves_unlogged(app, &request_id, &e) => request_id,
        Err(e) => return unlogged(app, &request_id, "none", &e),
    };
    app.metrics
        .request("none", status.as_u16(), started.elapsed());
    Answered::refused(&id, "none", status, message)
}

/// Calls the arm's model; a failure becomes 502 (the model failed) or 504 (no answer in time).
async fn serve(app: &App, arm: Arm, inputs: &[Array]) -> (Served, Option<std::time::Duration>) {
    let (backend, inputs) = match arm {
        Arm::Baseline => (&app.baseline, inputs.to_vec()),
        Arm::Candidate => (
            &app.candidate,
            app.candidate_inputs
                .iter()
                .map(|&i| inputs[i].clone())
                .collect(),
        ),
    };
    let started = Instant::now();
    match backend.call(inputs, app.cfg.backend_timeout).await {
        Ok((out, d)) => {
            app.metrics.backend(backend.role, d);
            match app.in_baseline_order(arm, out) {
                Ok(out) => (Served::Ok(out), Some(d)),
                Err(m) => (Served::Failed(StatusCode::BAD_GATEWAY, m), Some(d)),
            }
        }
        Err(CallError::Timeout(t)) => (
            Served::Failed(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the {} model gave no answer within {} ms (backend_timeout_ms)",
                    backend.role,
                    t.as_millis()
                ),
            ),
            Some(started.elapsed()),
        ),
        Err(CallError::Failed(m)) => (
            Served::Failed(
                StatusCode::BAD_GATEWAY,
                format!("the {} model failed: {m}", backend.role),
            ),
            Some(started.elapsed()),
        ),
    }
}

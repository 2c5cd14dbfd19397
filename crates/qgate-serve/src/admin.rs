//! Admin endpoints (mode, weights, the canary ramp) and business outcomes. Admin calls need
//! the bearer token of `admin.token_env` (compared in constant time); with no token
//! configured they answer 404, as if absent. Each action is committed to the log (a row of
//! its own and the new state) before it takes effect, so a restart restores it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use std::collections::HashMap;

use crate::app::{v2_error, App, Apps};
use crate::config::{GatewayConfig, Mode};
use crate::route::AdminState;
use crate::store::{AdminRefused, AdminWrite, OutcomeRefused};

/// The admin routes: `/admin/models/{name}/…` for any model, and `/admin/…` for the model
/// of a one-model gateway.
pub fn routes() -> Router<Arc<Apps>> {
    Router::new()
        .route("/admin/state", get(state))
        .route("/admin/mode", post(mode))
        .route("/admin/weights", post(weights))
        .route("/admin/canary/{action}", post(canary))
        .route("/admin/models/{name}/state", get(state))
        .route("/admin/models/{name}/mode", post(mode))
        .route("/admin/models/{name}/weights", post(weights))
        .route("/admin/models/{name}/canary/{action}", post(canary))
}

type Params = Path<HashMap<String, String>>;

/// The model an admin call is for, once its token is good: the path's `{name}`, else the
/// only model.
fn target(
    apps: &Apps,
    p: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Arc<App>, Box<Response>> {
    if let Some(r) = refuse_admin(&apps.cfg, headers) {
        return Err(Box::new(r));
    }
    match p.get("name") {
        Some(name) => apps
            .get(name)
            .map_err(|m| Box::new(v2_error(StatusCode::NOT_FOUND, m))),
        None if apps.models.len() == 1 => Ok(Arc::clone(&apps.models[0])),
        None => Err(Box::new(v2_error(
            StatusCode::BAD_REQUEST,
            format!(
                "this gateway serves {} models ({}): name one, /admin/models/NAME/…",
                apps.models.len(),
                apps.models
                    .iter()
                    .map(|m| m.model.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))),
    }
}

/// Whether the `Authorization: Bearer …` header carries `token`.
fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// `None` when the caller may use the admin API, else the refusal.
fn refuse_admin(cfg: &GatewayConfig, headers: &HeaderMap) -> Option<Response> {
    match &cfg.admin_token {
        None => Some(v2_error(
            StatusCode::NOT_FOUND,
            "the admin API is disabled (no admin.token_env in the gateway config)".into(),
        )),
        Some(t) if !bearer_ok(headers, t) => Some(
            (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Bearer")],
                axum::Json(json!({"error": "a valid admin bearer token is required"})),
            )
                .into_response(),
        ),
        Some(_) => None,
    }
}

fn state_json(app: &App, s: &AdminState) -> Value {
    json!({
        "mode": s.mode,
        "candidate_weight": s.candidate_weight,
        "canary_step": s.canary_step,
        "canary_steps": app.model.split.canary_steps,
        "held": s.held,
        "step_started_ms": s.step_started_ms,
        "holds": s.holds,
        "promoted": s.promoted,
        "weight_in_force": s.weight(&app.model.split),
    })
}

/// `GET /admin/state`: the model's state; on a gateway of several models without a name,
/// every model's, keyed by name.
async fn state(State(apps): State<Arc<Apps>>, Path(p): Params, headers: HeaderMap) -> Response {
    if !p.contains_key("name") && apps.models.len() > 1 {
        if let Some(r) = refuse_admin(&apps.cfg, &headers) {
            return r;
        }
        let all: serde_json::Map<String, Value> = apps
            .models
            .iter()
            .map(|m| (m.model.name.clone(), state_json(m, &m.admin_state())))
            .collect();
        return axum::Json(json!({ "models": all })).into_response();
    }
    match target(&apps, &p, &headers) {
        Ok(app) => axum::Json(state_json(&app, &app.admin_state())).into_response(),
        Err(r) => *r,
    }
}

fn body_json(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(v2_error(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        ))
    })
}

/// Commits `next` with its action row if the state in the log is still at `version` (no
/// other replica changed it meanwhile), then makes it the state in force.
async fn apply(
    app: &App,
    action: &str,
    detail: Value,
    (before, version): (AdminState, i64),
    next: AdminState,
) -> Response {
    let model = &app.model.name;
    let write = AdminWrite {
        model: model.clone(),
        action: action.to_string(),
        detail: detail.to_string(),
        change: Some((next.clone(), version)),
    };
    match app.store.admin(write).await {
        Ok(v) => app.store.board().put(model, next.clone(), v),
        Err(AdminRefused::Conflict(now, v)) => {
            app.store.board().offer(model, now.clone(), v);
            return v2_error(
                StatusCode::CONFLICT,
                format!(
                    "another replica changed the admin state first (now {}); nothing was \
                     applied: read GET /admin/state and retry",
                    state_json(app, &now)
                ),
            );
        }
        Err(AdminRefused::Store(e)) => {
            return v2_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the action was not applied: {e}"),
            )
        }
    }
    // With the automatic canary, an operator's action is a decision record too.
    if let Some(auto) = &app.model.split.canary_auto {
        let record = json!({
            "ts": crate::store::iso_ms(crate::store::now_ms()),
            "model": app.model.name,
            "action": format!("admin/{action}"),
            "by": "admin",
            "detail": detail,
            "weight_before": before.weight(&app.model.split),
            "weight_after": next.weight(&app.model.split),
            "step": before.canary_step,
            "step_after": next.canary_step,
            "reason": qgate_report::operator_reason(
                action,
                before.weight(&app.model.split),
                next.weight(&app.model.split),
            ),
        });
        crate::canary::publish(auto, &app.model.name, action, &record).await;
    }
    tracing::info!(
        action,
        detail = %detail,
        mode = next.mode.as_str(),
        weight = next.weight(&app.model.split),
        before_weight = before.weight(&app.model.split),
        "admin action"
    );
    axum::Json(state_json(app, &next)).into_response()
}

/// One admin call: the token, the JSON body (`{}` when empty), then — under the admin lock
/// — `change` on the state in force; a change it accepts is committed, then applied, one it
/// refuses is answered with its status and message.
async fn admin_call(
    apps: &Apps,
    p: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    action: &str,
    change: impl FnOnce(&App, &Value, &mut AdminState) -> Result<(), (StatusCode, String)>,
) -> Response {
    let app = match target(apps, p, headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let app = &*app;
    let v = if body.is_empty() {
        json!({})
    } else {
        match body_json(body) {
            Ok(v) => v,
            Err(r) => return *r,
        }
    };
    let _guard = app.admin_lock.lock().await;
    let current = app.versioned_state();
    let mut next = current.0.clone();
    if let Err((status, message)) = change(app, &v, &mut next) {
        return v2_error(status, message);
    }
    apply(app, action, v, current, next).await
}

async fn mode(
    State(apps): State<Arc<Apps>>,
    Path(p): Params,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    admin_call(&apps, &p, &headers, &body, "mode", |_, v, next| {
        let Some(m) = v["mode"].as_str().and_then(Mode::parse) else {
            return Err((
                StatusCode::BAD_REQUEST,
                "expected {\"mode\": \"shadow\" | \"ab\" | \"canary\"}".into(),
            ));
        };
        next.mode = m;
        next.held = false;
        next.new_step();
        Ok(())
    })
    .await
}

async fn weights(
    State(apps): State<Arc<Apps>>,
    Path(p): Params,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    admin_call(&apps, &p, &headers, &body, "weights", |_, v, next| {
        let Some(w) = v["candidate_weight"]
            .as_f64()
            .filter(|w| (0.0..=1.0).contains(w))
        else {
            return Err((
                StatusCode::BAD_REQUEST,
                "expected {\"candidate_weight\": a fraction in [0, 1]}".into(),
            ));
        };
        next.candidate_weight = w;
        Ok(())
    })
    .await
}

async fn canary(
    State(apps): State<Arc<Apps>>,
    Path(p): Params,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let action = p.get("action").cloned().unwrap_or_default();
    if !["advance", "hold", "rollback"].contains(&action.as_str()) {
        return v2_error(
            StatusCode::NOT_FOUND,
            format!("no canary action '{action}' (advance, hold, rollback)"),
        );
    }
    let conflict = |m: String| Err((StatusCode::CONFLICT, m));
    let name = format!("canary/{action}");
    admin_call(&apps, &p, &headers, &body, &name, |app, v, next| {
        let steps = app.model.split.canary_steps.len();
        if next.mode != Mode::Canary {
            // In ab mode a rollback here would change nothing in force: say so instead.
            return conflict(format!(
                "the mode is {}; the canary actions act in canary mode (POST /admin/mode), \
                 set the ab weight with POST /admin/weights",
                next.mode.as_str()
            ));
        }
        match action.as_str() {
            "advance" => {
                if next.held && v["force"] != json!(true) {
                    return conflict(
                        "the ramp is held; advance with {\"force\": true} to release it".into(),
                    );
                }
                next.canary_step = match next.canary_step {
                    None => Some(0),
                    Some(i) if i + 1 < steps => Some(i + 1),
                    Some(_) => return conflict("the ramp is at its last step".into()),
                };
                next.held = false;
                next.new_step();
            }
            "hold" => next.held = true,
            _ => {
                next.canary_step = None;
                next.held = false;
                next.new_step();
            }
        }
        Ok(())
    })
    .await
}

/// `GET /v2/models/{name}/analysis` (admin token): the current step's analysis.
pub async fn analysis(
    State(apps): State<Arc<Apps>>,
    Path(p): Params,
    headers: HeaderMap,
) -> Response {
    let app = match target(&apps, &p, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match crate::canary::current(&app).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => v2_error(StatusCode::SERVICE_UNAVAILABLE, format!("no analysis: {e}")),
    }
}

/// `POST /v2/models/{name}/analysis`: the same analysis as a gate for webhooks (Flagger):
/// 200 when the verdict is `pass`, 409 otherwise. The admin token may come in the
/// `Authorization` header or, as Flagger sends its webhook metadata, in the body's
/// `metadata.authorization` (`"Bearer …"`).
pub async fn analysis_gate(
    State(apps): State<Arc<Apps>>,
    Path(p): Params,
    mut headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let meta = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["metadata"]["authorization"].as_str().map(str::to_string));
    if let (None, Some(auth)) = (headers.get("authorization"), meta) {
        if let Ok(v) = auth.parse() {
            headers.insert("authorization", v);
        }
    }
    let app = match target(&apps, &p, &headers) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    match crate::canary::current(&app).await {
        Ok(v) if v.verdict == qgate_online::OnlineVerdict::Pass => axum::Json(v).into_response(),
        Ok(v) => (StatusCode::CONFLICT, axum::Json(v)).into_response(),
        Err(e) => v2_error(StatusCode::SERVICE_UNAVAILABLE, format!("no analysis: {e}")),
    }
}

/// `POST /v2/models/{name}/outcome` with `{"request_id", "name", "value"}`.
pub async fn outcome(
    State(apps): State<Arc<Apps>>,
    Path(p): Params,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let name = p.get("name").map(String::as_str).unwrap_or_default();
    let app = match apps.get(name) {
        Ok(a) => a,
        Err(m) => return v2_error(StatusCode::NOT_FOUND, m),
    };
    if let Some(t) = &app.cfg.outcome_token {
        if !bearer_ok(&headers, t) {
            return v2_error(
                StatusCode::UNAUTHORIZED,
                "a valid outcome bearer token is required".into(),
            );
        }
    }
    let v = match body_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let (Some(id), Some(what)) = (v["request_id"].as_str(), v["name"].as_str()) else {
        return v2_error(
            StatusCode::BAD_REQUEST,
            "expected {\"request_id\": \"…\", \"name\": \"…\", \"value\": number}".into(),
        );
    };
    let value = match &v["value"] {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    let Some(value) = value.filter(|x| x.is_finite()) else {
        return v2_error(
            StatusCode::BAD_REQUEST,
            "`value` must be a finite number or true/false".into(),
        );
    };
    match app.store.outcome(id.into(), what.into(), value).await {
        Ok(()) => axum::Json(json!({"recorded": true})).into_response(),
        Err(OutcomeRefused::UnknownRequest) => v2_error(
            StatusCode::NOT_FOUND,
            format!("no request '{id}' in the log"),
        ),
        Err(OutcomeRefused::Store(e)) => v2_error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

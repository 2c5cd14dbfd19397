//! A client of the Open Inference Protocol V2 (KServe V2 REST), spoken by Triton, KServe,
//! MLServer, TorchServe and others: `GET /v2` (server metadata), `GET /v2/models/{m}`
//! (model metadata), `GET /v2/models/{m}/ready`, `POST /v2/models/{m}/infer`.
//!
//! Blocking (`ureq`) so the runtime crate stays free of async. Metadata and readiness
//! requests are retried on connection failures; an inference is retried only when the
//! connection could not be made (nothing was sent) or the server answered 503, never after
//! a timeout or a server error, so a request is never counted twice by a server that logs.

use std::collections::BTreeMap;
use std::time::Duration;

use qgate_core::{Array, ArrayData, ElemType};
use serde_json::{json, Value};

use crate::{Dim, LoadOptions, Model, ModelInfo, ModelSpec, Provenance, RuntimeError, TensorInfo};

/// Attempts for a request that may be retried.
const ATTEMPTS: u32 = 3;
/// First pause between attempts; doubled each time.
const BACKOFF: Duration = Duration::from_millis(200);
/// Largest response body read (outputs of big batches are large).
const MAX_BODY: u64 = 1 << 30;

/// A model served by a V2 inference server.
pub struct RemoteModel {
    url: String,
    spec: String,
    agent: ureq::Agent,
    info: ModelInfo,
    server: String,
    timeout: Duration,
}

fn err(url: &str, message: String) -> RuntimeError {
    RuntimeError::Remote {
        url: url.to_string(),
        message,
    }
}

enum Failure {
    /// Nothing reached the server: safe to retry.
    NotSent(String),
    /// The server answered 503 (not ready): safe to retry.
    Unavailable(String),
    /// Anything else: final.
    Final(String),
}

impl RemoteModel {
    /// Connects to the model at `url` (`http(s)://host:port/v2/models/NAME`, optionally
    /// `/versions/V`), checks that it is ready and reads its metadata.
    pub fn load(
        url: &str,
        spec: &ModelSpec,
        opts: &LoadOptions,
    ) -> Result<RemoteModel, RuntimeError> {
        let url = url.trim_end_matches('/').to_string();
        let Some(idx) = url.find("/v2/models/") else {
            return Err(err(
                &url,
                "expected a V2 model URL such as http://127.0.0.1:8080/v2/models/NAME".into(),
            ));
        };
        let base = url[..idx].to_string();
        let timeout = opts
            .timeout
            .unwrap_or(Duration::from_secs_f64(crate::DEFAULT_REMOTE_TIMEOUT_S));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(5).min(timeout)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut model = RemoteModel {
            url: url.clone(),
            spec: spec.raw.clone(),
            agent,
            info: ModelInfo::default(),
            server: String::from("unknown"),
            timeout,
        };
        let server = model.get_json(&format!("{base}/v2"), true).ok();
        if let Some(s) = server {
            model.server = format!(
                "{} {}",
                s["name"].as_str().unwrap_or("unknown"),
                s["version"].as_str().unwrap_or("")
            )
            .trim()
            .to_string();
        }
        model.get(&format!("{url}/ready"), true)?;
        let meta = model.get_json(&url, true)?;
        model.info = metadata_info(&url, &meta)?;
        model.info.producer = model.server.clone();
        Ok(model)
    }

    fn request(&self, url: &str, body: Option<&str>) -> Result<(u16, String), Failure> {
        let result = match body {
            None => self.agent.get(url).call(),
            Some(b) => self
                .agent
                .post(url)
                .header("Content-Type", "application/json")
                .send(b),
        };
        match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(MAX_BODY)
                    .read_to_string()
                    .map_err(|e| Failure::Final(format!("cannot read the response body: {e}")))?;
                if status == 503 {
                    return Err(Failure::Unavailable(format!(
                        "HTTP 503: {}",
                        error_text(&text)
                    )));
                }
                Ok((status, text))
            }
            Err(ureq::Error::Timeout(_)) => Err(Failure::Final(format!(
                "no answer within the {:.1} s timeout (raise it with --timeout)",
                self.timeout.as_secs_f64()
            ))),
            Err(e @ (ureq::Error::ConnectionFailed | ureq::Error::HostNotFound)) => {
                Err(Failure::NotSent(format!("cannot connect: {e}")))
            }
            Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(Failure::NotSent(format!("cannot connect: {e}")))
            }
            Err(e) => Err(Failure::Final(e.to_string())),
        }
    }

    /// A request with retries where they are safe; `idempotent` requests also retry after a
    /// connection failure mid-way.
    fn send(
        &self,
        url: &str,
        body: Option<&str>,
        idempotent: bool,
    ) -> Result<(u16, String), RuntimeError> {
        let mut pause = BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            match self.request(url, body) {
                Ok(r) => return Ok(r),
                Err(Failure::NotSent(m) | Failure::Unavailable(m)) => last = m,
                Err(Failure::Final(m))
                    if idempotent && attempt == 1 && m.starts_with("cannot read") =>
                {
                    last = m
                }
                Err(Failure::Final(m)) => return Err(err(url, m)),
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
        Err(err(url, format!("{last} (after {ATTEMPTS} attempts)")))
    }

    fn get(&self, url: &str, idempotent: bool) -> Result<String, RuntimeError> {
        let (status, text) = self.send(url, None, idempotent)?;
        if !(200..300).contains(&status) {
            return Err(err(url, format!("HTTP {status}: {}", error_text(&text))));
        }
        Ok(text)
    }

    fn get_json(&self, url: &str, idempotent: bool) -> Result<Value, RuntimeError> {
        let text = self.get(url, idempotent)?;
        serde_json::from_str(&text).map_err(|e| {
            err(
                url,
                format!("the answer is not JSON ({e}): {}", snippet(&text)),
            )
        })
    }
}

/// The server's error message: V2 servers answer `{"error": "…"}`.
fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) if v["error"].is_string() => v["error"].as_str().unwrap_or_default().to_string(),
        _ => snippet(body),
    }
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The element type a V2 `datatype` names (`FP32`, `INT64`, `BYTES`, …).
pub fn v2_elem_type(t: &str) -> Option<ElemType> {
    Some(match t {
        "FP32" => ElemType::F32,
        "FP64" => ElemType::F64,
        "FP16" => ElemType::F16,
        "INT8" => ElemType::I8,
        "INT16" => ElemType::I16,
        "INT32" => ElemType::I32,
        "INT64" => ElemType::I64,
        "UINT8" => ElemType::U8,
        "UINT16" => ElemType::U16,
        "UINT32" => ElemType::U32,
        "UINT64" => ElemType::U64,
        "BOOL" => ElemType::Bool,
        "BYTES" => ElemType::Str,
        _ => return None,
    })
}

/// The V2 `datatype` of an element type.
pub fn v2_datatype(t: ElemType) -> &'static str {
    match t {
        ElemType::F16 => "FP16",
        ElemType::F32 => "FP32",
        ElemType::F64 => "FP64",
        ElemType::I8 => "INT8",
        ElemType::I16 => "INT16",
        ElemType::I32 => "INT32",
        ElemType::I64 => "INT64",
        ElemType::U8 => "UINT8",
        ElemType::U16 => "UINT16",
        ElemType::U32 => "UINT32",
        ElemType::U64 => "UINT64",
        ElemType::Bool => "BOOL",
        ElemType::Str => "BYTES",
    }
}

fn metadata_info(url: &str, meta: &Value) -> Result<ModelInfo, RuntimeError> {
    let tensors = |key: &str| -> Result<Vec<TensorInfo>, RuntimeError> {
        let list = meta[key].as_array().ok_or_else(|| {
            err(
                url,
                format!(
                    "model metadata has no `{key}` list: {}",
                    snippet(&meta.to_string())
                ),
            )
        })?;
        list.iter()
            .map(|t| {
                let name = t["name"]
                    .as_str()
                    .ok_or_else(|| err(url, format!("a metadata `{key}` entry has no name")))?;
                let shape = t["shape"]
                    .as_array()
                    .map(|dims| {
                        dims.iter()
                            .map(|d| match d.as_i64() {
                                Some(n) if n >= 0 => Dim::Fixed(n as usize),
                                _ => Dim::Symbolic("?".into()),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(TensorInfo {
                    name: name.to_string(),
                    elem_type: t["datatype"].as_str().and_then(v2_elem_type),
                    shape,
                })
            })
            .collect()
    };
    Ok(ModelInfo {
        inputs: tensors("inputs")?,
        outputs: tensors("outputs")?,
        ..ModelInfo::default()
    })
}

fn flatten(v: &Value, out: &mut Vec<f64>) -> bool {
    match v {
        Value::Array(items) => items.iter().all(|x| flatten(x, out)),
        Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
        Value::Bool(b) => {
            out.push(if *b { 1.0 } else { 0.0 });
            true
        }
        // NaN and infinities travel as strings in some servers.
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => {
                out.push(f64::NAN);
                true
            }
            "Infinity" | "inf" => {
                out.push(f64::INFINITY);
                true
            }
            "-Infinity" | "-inf" => {
                out.push(f64::NEG_INFINITY);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn flatten_text(v: &Value, out: &mut Vec<String>) -> bool {
    match v {
        Value::Array(items) => items.iter().all(|x| flatten_text(x, out)),
        Value::String(s) => {
            out.push(s.clone());
            true
        }
        _ => false,
    }
}

fn to_json_data(a: &Array) -> Result<Value, String> {
    Ok(match &a.data {
        ArrayData::F32(v) => json!(v),
        ArrayData::F64(v) => json!(v),
        ArrayData::I8(v) => json!(v),
        ArrayData::I16(v) => json!(v),
        ArrayData::I32(v) => json!(v),
        ArrayData::I64(v) => json!(v),
        ArrayData::U8(v) => json!(v),
        ArrayData::U16(v) => json!(v),
        ArrayData::U32(v) => json!(v),
        ArrayData::U64(v) => json!(v),
        ArrayData::Bool(v) => json!(v),
        ArrayData::Str(v) => json!(v),
    })
}

/// Converts the data to the declared input type (the server checks it strictly).
fn cast(a: &Array, t: Option<ElemType>) -> Result<Array, String> {
    let Some(t) = t else { return Ok(a.clone()) };
    if a.elem_type() == t {
        return Ok(a.clone());
    }
    let v = a
        .to_f64()
        .ok_or_else(|| format!("the data holds {}, the server expects {t}", a.elem_type()))?;
    let data = match t {
        ElemType::F32 | ElemType::F16 => ArrayData::F32(v.iter().map(|&x| x as f32).collect()),
        ElemType::F64 => ArrayData::F64(v),
        ElemType::Bool => ArrayData::Bool(v.iter().map(|&x| x != 0.0).collect()),
        ElemType::Str => {
            return Err(format!(
                "the server expects strings, the data holds {}",
                a.elem_type()
            ))
        }
        _ => ArrayData::I64(
            a.data
                .to_i64_whole()
                .map_err(|e| format!("the server expects {t} but {e}"))?,
        ),
    };
    // Integer types other than int64 travel as JSON numbers too; only the datatype differs.
    Ok(Array {
        shape: a.shape.clone(),
        data,
    })
}

impl Model for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn provenance(&self) -> Provenance {
        let mut settings = BTreeMap::new();
        settings.insert(
            "protocol".into(),
            "Open Inference Protocol V2 (REST/JSON)".into(),
        );
        settings.insert(
            "timeout_s".into(),
            format!("{}", self.timeout.as_secs_f64()),
        );
        settings.insert("url".into(), self.url.clone());
        Provenance {
            spec: self.spec.clone(),
            runtime: "kserve-v2".into(),
            runtime_version: self.server.clone(),
            settings,
        }
    }

    fn run(&mut self, inputs: &[Array]) -> Result<Vec<Array>, RuntimeError> {
        if inputs.len() != self.info.inputs.len() {
            return Err(err(
                &self.url,
                format!(
                    "{} input(s) given, the model declares {}",
                    inputs.len(),
                    self.info.inputs.len()
                ),
            ));
        }
        let mut body_inputs = Vec::new();
        for (a, info) in inputs.iter().zip(&self.info.inputs) {
            let a = cast(a, info.elem_type).map_err(|message| RuntimeError::Input {
                path: self.url.clone().into(),
                name: info.name.clone(),
                message,
            })?;
            let datatype = info
                .elem_type
                // Float16 data is held widened and travels as FP32 numbers.
                .map(|t| if t == ElemType::F16 { ElemType::F32 } else { t })
                .map_or(v2_datatype(a.elem_type()), v2_datatype);
            body_inputs.push(json!({
                "name": info.name,
                "shape": a.shape,
                "datatype": datatype,
                "data": to_json_data(&a).map_err(|m| err(&self.url, m))?,
            }));
        }
        let outputs: Vec<Value> = self
            .info
            .outputs
            .iter()
            .map(|o| json!({ "name": o.name }))
            .collect();
        let body = json!({ "inputs": body_inputs, "outputs": outputs }).to_string();
        let infer = format!("{}/infer", self.url);
        let (status, text) = self.send(&infer, Some(&body), false)?;
        if !(200..300).contains(&status) {
            return Err(err(&infer, format!("HTTP {status}: {}", error_text(&text))));
        }
        let answer: Value = serde_json::from_str(&text).map_err(|e| {
            err(
                &infer,
                format!("the answer is not JSON ({e}): {}", snippet(&text)),
            )
        })?;
        let list = answer["outputs"].as_array().ok_or_else(|| {
            err(
                &infer,
                format!("the answer has no `outputs` list: {}", snippet(&text)),
            )
        })?;
        self.info
            .outputs
            .iter()
            .map(|o| {
                let out = list
                    .iter()
                    .find(|x| x["name"] == o.name.as_str())
                    .ok_or_else(|| err(&infer, format!("the answer lacks output '{}'", o.name)))?;
                let shape: Vec<usize> = out["shape"]
                    .as_array()
                    .and_then(|s| s.iter().map(|d| d.as_u64().map(|x| x as usize)).collect())
                    .ok_or_else(|| {
                        err(&infer, format!("output '{}' has no valid `shape`", o.name))
                    })?;
                let dt = match out["datatype"].as_str() {
                    Some(d) => v2_elem_type(d).ok_or_else(|| {
                        err(
                            &infer,
                            format!("output '{}' has an unknown `datatype` \"{d}\"", o.name),
                        )
                    })?,
                    None => {
                        return Err(err(
                            &infer,
                            format!("output '{}' has no `datatype`", o.name),
                        ))
                    }
                };
                let expected: usize = shape.iter().product();
                let count_error = |n: usize| {
                    err(
                        &infer,
                        format!("output '{}' has shape {shape:?} but {n} values", o.name),
                    )
                };
                // Text stays text: a BYTES output is never read as numbers.
                if dt == ElemType::Str {
                    let mut texts = Vec::new();
                    if !flatten_text(&out["data"], &mut texts) {
                        return Err(err(
                            &infer,
                            format!("output '{}' (BYTES) has non-text `data`", o.name),
                        ));
                    }
                    if texts.len() != expected {
                        return Err(count_error(texts.len()));
                    }
                    return Ok(Array {
                        shape,
                        data: ArrayData::Str(texts),
                    });
                }
                let mut values = Vec::new();
                if !flatten(&out["data"], &mut values) {
                    return Err(err(
                        &infer,
                        format!(
                            "output '{}' ({}) has non-numeric `data`",
                            o.name,
                            out["datatype"].as_str().unwrap_or_default()
                        ),
                    ));
                }
                if values.len() != expected {
                    return Err(count_error(values.len()));
                }
                // Each datatype keeps its own type, so an answer relayed by the gateway
                // (qgate serve) has the datatype the server gave.
                let data = match dt {
                    ElemType::F64 => ArrayData::F64(values),
                    ElemType::I8 => ArrayData::I8(values.iter().map(|&x| x as i8).collect()),
                    ElemType::I16 => ArrayData::I16(values.iter().map(|&x| x as i16).collect()),
                    ElemType::I32 => ArrayData::I32(values.iter().map(|&x| x as i32).collect()),
                    ElemType::U8 => ArrayData::U8(values.iter().map(|&x| x as u8).collect()),
                    ElemType::U16 => ArrayData::U16(values.iter().map(|&x| x as u16).collect()),
                    ElemType::U32 => ArrayData::U32(values.iter().map(|&x| x as u32).collect()),
                    ElemType::U64 => ArrayData::U64(values.iter().map(|&x| x as u64).collect()),
                    ElemType::Bool => ArrayData::Bool(values.iter().map(|&x| x != 0.0).collect()),
                    t if t.is_integer() => {
                        ArrayData::I64(values.iter().map(|&x| x as i64).collect())
                    }
                    _ => ArrayData::F32(values.iter().map(|&x| x as f32).collect()),
                };
                Ok(Array { shape, data })
            })
            .collect()
    }
}

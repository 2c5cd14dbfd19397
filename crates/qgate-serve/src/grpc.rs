//! The Open Inference Protocol V2 gRPC service (`inference.GRPCInferenceService`) beside
//! REST, on a port of its own (`grpc_listen`), and the upstream gRPC backend
//! (`grpc://HOST:PORT/NAME` model specs). Inference goes through the same path as REST
//! (checks, routing, shadow copy, the record committed before the answer); only the
//! encoding differs. Answers carry raw little-endian contents, as Triton's do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use qgate_core::{Array, ArrayData, ElemType};
use qgate_runtime::{v2_elem_type, Dim, Model, ModelInfo, Provenance, RuntimeError, TensorInfo};
use tonic::{Request, Response, Status};

use crate::app::{declared_datatype, run_to_the_end, Answered, App, Apps, Call};
use crate::store::now_ms;
use crate::v2::{self, BadRequest, InferRequest, NamedTensor, RequestedOutput};

/// The protocol's messages and service, generated from `proto/grpc_predict_v2.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// The service over a gateway.
pub struct Service {
    apps: Arc<Apps>,
}

/// The tonic service for `apps`, taking messages up to the REST body limit.
pub fn service(apps: Arc<Apps>) -> GrpcInferenceServiceServer<Service> {
    let limit = apps.cfg.body_limit_bytes;
    GrpcInferenceServiceServer::new(Service { apps })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
}

/// The gRPC status for an HTTP status the REST side would answer.
fn status_of(code: StatusCode, message: String) -> Status {
    let c = match code.as_u16() {
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        413 => tonic::Code::ResourceExhausted,
        503 => tonic::Code::Unavailable,
        504 => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Internal,
    };
    Status::new(c, message)
}

/// Adds the gateway's request id and arm to a reply's metadata.
fn tag(meta: &mut tonic::metadata::MetadataMap, id: &str, arm: &str) {
    if let Ok(v) = id.parse() {
        meta.insert("x-request-id", v);
    }
    if let Ok(v) = arm.parse() {
        meta.insert("x-qgate-arm", v);
    }
}

fn shape_of(t: &TensorInfo) -> Vec<i64> {
    t.shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n as i64,
            Dim::Symbolic(_) => -1,
        })
        .collect()
}

impl Service {
    fn known(&self, name: &str) -> Result<Arc<App>, Status> {
        self.apps.get(name).map_err(Status::not_found)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.apps.ready().is_ok(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        self.known(&req.get_ref().name)?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: self.apps.ready().is_ok(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "qgate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec![],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let app = self.known(&req.get_ref().name)?;
        let meta = |ts: &[TensorInfo]| {
            ts.iter()
                .map(|t| pb::model_metadata_response::TensorMetadata {
                    name: t.name.clone(),
                    datatype: declared_datatype(t.elem_type).into(),
                    shape: shape_of(t),
                })
                .collect()
        };
        let info = &app.baseline.info;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: app.model.name.clone(),
            versions: vec!["1".into()],
            platform: "qgate-gateway".into(),
            inputs: meta(&info.inputs),
            outputs: meta(&info.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (started, ts_ms) = (Instant::now(), now_ms());
        let (meta, _, msg) = req.into_parts();
        let app = self.known(&msg.model_name)?;
        let (name, version) = (msg.model_name.clone(), msg.model_version.clone());
        let parsed = infer_request(msg).map_err(|BadRequest(m)| (StatusCode::BAD_REQUEST, m));
        let call = Call {
            started,
            ts_ms,
            headers: meta.into_headers(),
        };
        let answered = run_to_the_end(app, call, parsed)
            .await
            .map_err(Status::internal)?;
        reply(answered, name, version)
    }
}

/// The gRPC answer: the requested outputs (all, in declaration order, when none is named)
/// with raw contents, or the error status; both tagged with the request id and arm.
fn reply(
    a: Answered,
    model_name: String,
    model_version: String,
) -> Result<Response<pb::ModelInferResponse>, Status> {
    let (Some(outputs), Some(req)) = (a.outputs, a.request) else {
        let mut s = status_of(a.status, a.error.unwrap_or_default());
        tag(s.metadata_mut(), &a.id, a.arm);
        return Err(s);
    };
    let chosen: Vec<&(String, Array)> = if req.outputs.is_empty() {
        outputs.iter().collect()
    } else {
        req.outputs
            .iter()
            .filter_map(|o| outputs.iter().find(|(n, _)| *n == o.name))
            .collect()
    };
    let mut resp = pb::ModelInferResponse {
        model_name,
        model_version,
        id: a.id.clone(),
        ..Default::default()
    };
    for (name, array) in chosen {
        resp.outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: name.clone(),
                datatype: v2::datatype(&array.data).into(),
                shape: array.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            });
        resp.raw_output_contents.push(v2::raw_bytes(&array.data));
    }
    let mut r = Response::new(resp);
    tag(r.metadata_mut(), &a.id, a.arm);
    Ok(r)
}

/// A gRPC inference request as the REST side's parsed request.
fn infer_request(m: pb::ModelInferRequest) -> Result<InferRequest, BadRequest> {
    let raw = !m.raw_input_contents.is_empty();
    if raw && m.raw_input_contents.len() != m.inputs.len() {
        return Err(BadRequest(format!(
            "raw_input_contents has {} entries for {} inputs (one per input, in order)",
            m.raw_input_contents.len(),
            m.inputs.len()
        )));
    }
    let mut inputs = Vec::with_capacity(m.inputs.len());
    for (i, t) in m.inputs.into_iter().enumerate() {
        let what = |msg: String| BadRequest(format!("input '{}': {msg}", t.name));
        let (shape, count) = dims(&t.shape).map_err(what)?;
        let data = if raw {
            if t.contents
                .as_ref()
                .is_some_and(|c| *c != pb::InferTensorContents::default())
            {
                return Err(what(
                    "gives `contents` while the request gives raw_input_contents".into(),
                ));
            }
            v2::from_bytes(&t.datatype, &m.raw_input_contents[i], count).map_err(what)?
        } else {
            from_contents(&t.datatype, t.contents.unwrap_or_default(), count).map_err(what)?
        };
        let array = Array::new(shape, data).map_err(|e| what(e.to_string()))?;
        inputs.push(NamedTensor {
            name: t.name.clone(),
            array,
        });
    }
    let id = match m.id.as_str() {
        "" => None,
        id => Some(v2::check_id(id)?),
    };
    Ok(InferRequest {
        id,
        inputs,
        outputs: m
            .outputs
            .into_iter()
            .map(|o| RequestedOutput {
                name: o.name,
                binary: None,
            })
            .collect(),
        binary_output: false,
    })
}

/// A V2 shape as sizes, and the count of values it holds.
fn dims(shape: &[i64]) -> Result<(Vec<usize>, usize), String> {
    let sizes: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("shape {shape:?} has a negative size")))
        .collect::<Result<_, _>>()?;
    let count = sizes
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    Ok((sizes, count))
}

/// Typed values from `InferTensorContents`, checked against the shape's count.
fn from_contents(dt: &str, c: pb::InferTensorContents, count: usize) -> Result<ArrayData, String> {
    let t = v2_elem_type(dt).ok_or_else(|| format!("unknown datatype \"{dt}\""))?;
    let len = |n: usize, field: &str| {
        if n == count {
            Ok(())
        } else {
            Err(format!(
                "the shape holds {count} values but contents.{field} has {n}"
            ))
        }
    };
    macro_rules! narrow {
        ($src:expr, $field:literal, $t:ty, $variant:ident) => {{
            len($src.len(), $field)?;
            ArrayData::$variant(
                $src.into_iter()
                    .map(|x| <$t>::try_from(x).map_err(|_| format!("{x} is not a {dt} value")))
                    .collect::<Result<_, _>>()?,
            )
        }};
    }
    Ok(match t {
        ElemType::F32 => {
            len(c.fp32_contents.len(), "fp32_contents")?;
            ArrayData::F32(c.fp32_contents)
        }
        ElemType::F64 => {
            len(c.fp64_contents.len(), "fp64_contents")?;
            ArrayData::F64(c.fp64_contents)
        }
        ElemType::F16 => {
            return Err(
                "FP16 values have no typed contents field; send them in raw_input_contents".into(),
            )
        }
        ElemType::I8 => narrow!(c.int_contents, "int_contents", i8, I8),
        ElemType::I16 => narrow!(c.int_contents, "int_contents", i16, I16),
        ElemType::I32 => {
            len(c.int_contents.len(), "int_contents")?;
            ArrayData::I32(c.int_contents)
        }
        ElemType::I64 => {
            len(c.int64_contents.len(), "int64_contents")?;
            ArrayData::I64(c.int64_contents)
        }
        ElemType::U8 => narrow!(c.uint_contents, "uint_contents", u8, U8),
        ElemType::U16 => narrow!(c.uint_contents, "uint_contents", u16, U16),
        ElemType::U32 => {
            len(c.uint_contents.len(), "uint_contents")?;
            ArrayData::U32(c.uint_contents)
        }
        ElemType::U64 => {
            len(c.uint64_contents.len(), "uint64_contents")?;
            ArrayData::U64(c.uint64_contents)
        }
        ElemType::Bool => {
            len(c.bool_contents.len(), "bool_contents")?;
            ArrayData::Bool(c.bool_contents)
        }
        ElemType::Str => {
            len(c.bytes_contents.len(), "bytes_contents")?;
            ArrayData::Str(
                c.bytes_contents
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| {
                        String::from_utf8(b).map_err(|_| {
                            format!("BYTES element {i} is not UTF-8 text; qgate relays text tensors only")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
    })
}

/// An upstream model behind a V2 gRPC server (`grpc://HOST:PORT/NAME`): its metadata read
/// at load, each batch one `ModelInfer` with raw contents. Each instance owns a small
/// runtime of its own, since models run on the gateway's plain worker threads.
pub struct GrpcModel {
    spec: String,
    name: String,
    info: ModelInfo,
    client: GrpcInferenceServiceClient<tonic::transport::Channel>,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
}

fn remote(spec: &str, message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Remote {
        url: spec.to_string(),
        message: message.to_string(),
    }
}

impl GrpcModel {
    /// Connects to `grpc://HOST:PORT/NAME` and reads the model's metadata; calls give up
    /// after `timeout`.
    pub fn load(spec: &str, timeout: Duration) -> Result<GrpcModel, RuntimeError> {
        let bad = |m: &str| RuntimeError::Spec {
            spec: spec.to_string(),
            message: m.to_string(),
        };
        let rest = spec
            .strip_prefix("grpc://")
            .ok_or_else(|| bad("expected grpc://HOST:PORT/NAME"))?;
        let (host, name) = rest
            .split_once('/')
            .filter(|(h, n)| !h.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                bad("expected grpc://HOST:PORT/NAME (the model's name after the port)")
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| remote(spec, format!("cannot start a runtime: {e}")))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}"))
            .map_err(|e| bad(&format!("'{host}' is not HOST:PORT: {e}")))?
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout);
        let channel = runtime
            .block_on(endpoint.connect())
            .map_err(|e| remote(spec, format!("cannot connect: {}", chain(&e))))?;
        let mut client =
            GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX);
        let meta = runtime
            .block_on(client.model_metadata(pb::ModelMetadataRequest {
                name: name.to_string(),
                version: String::new(),
            }))
            .map_err(|s| {
                remote(
                    spec,
                    format!("model metadata: {} ({:?})", s.message(), s.code()),
                )
            })?
            .into_inner();
        let tensors = |ts: Vec<pb::model_metadata_response::TensorMetadata>| {
            ts.into_iter()
                .map(|t| TensorInfo {
                    elem_type: v2_elem_type(&t.datatype),
                    shape: t
                        .shape
                        .iter()
                        .map(|&d| {
                            if d < 0 {
                                Dim::Symbolic("?".into())
                            } else {
                                Dim::Fixed(d as usize)
                            }
                        })
                        .collect(),
                    name: t.name,
                })
                .collect()
        };
        let info = ModelInfo {
            inputs: tensors(meta.inputs),
            outputs: tensors(meta.outputs),
            producer: meta.platform,
            ..ModelInfo::default()
        };
        Ok(GrpcModel {
            spec: spec.to_string(),
            name: name.to_string(),
            info,
            client,
            runtime,
            timeout,
        })
    }
}

/// An error with its sources, for transport errors whose top line says little.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

impl Model for GrpcModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn provenance(&self) -> Provenance {
        let mut settings = std::collections::BTreeMap::new();
        settings.insert("timeout_ms".into(), self.timeout.as_millis().to_string());
        Provenance {
            spec: self.spec.clone(),
            runtime: "V2 gRPC server".into(),
            runtime_version: self.info.producer.clone(),
            settings,
        }
    }

    fn run(&mut self, inputs: &[Array]) -> Result<Vec<Array>, RuntimeError> {
        let mut req = pb::ModelInferRequest {
            model_name: self.name.clone(),
            ..Default::default()
        };
        for (t, a) in self.info.inputs.iter().zip(inputs) {
            req.inputs.push(pb::model_infer_request::InferInputTensor {
                name: t.name.clone(),
                datatype: v2::datatype(&a.data).into(),
                shape: a.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            });
            req.raw_input_contents.push(v2::raw_bytes(&a.data));
        }
        let spec = self.spec.clone();
        let resp = self
            .runtime
            .block_on(self.client.model_infer(req))
            .map_err(|s| remote(&spec, format!("{} ({:?})", s.message(), s.code())))?
            .into_inner();
        let raw = !resp.raw_output_contents.is_empty();
        if raw && resp.raw_output_contents.len() != resp.outputs.len() {
            return Err(remote(
                &spec,
                format!(
                    "the answer has {} raw contents for {} outputs",
                    resp.raw_output_contents.len(),
                    resp.outputs.len()
                ),
            ));
        }
        let mut by_name: Vec<Option<Array>> = vec![None; self.info.outputs.len()];
        for (i, o) in resp.outputs.into_iter().enumerate() {
            let what = |m: String| remote(&spec, format!("output '{}': {m}", o.name));
            let Some(slot) = self.info.outputs.iter().position(|t| t.name == o.name) else {
                continue;
            };
            let (shape, count) = dims(&o.shape).map_err(what)?;
            let data = if raw {
                v2::from_bytes(&o.datatype, &resp.raw_output_contents[i], count).map_err(what)?
            } else {
                from_contents(&o.datatype, o.contents.unwrap_or_default(), count).map_err(what)?
            };
            by_name[slot] = Some(Array::new(shape, data).map_err(|e| what(e.to_string()))?);
        }
        by_name
            .into_iter()
            .zip(&self.info.outputs)
            .map(|(a, t)| {
                a.ok_or_else(|| remote(&spec, format!("the answer has no output '{}'", t.name)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::model_infer_request::InferInputTensor;

    fn input(
        name: &str,
        dt: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape,
            contents,
            ..Default::default()
        }
    }

    fn req(inputs: Vec<InferInputTensor>, raw: Vec<Vec<u8>>) -> pb::ModelInferRequest {
        pb::ModelInferRequest {
            model_name: "m".into(),
            inputs,
            raw_input_contents: raw,
            ..Default::default()
        }
    }

    #[test]
    fn typed_and_raw_contents_read_the_same() {
        let typed = pb::InferTensorContents {
            fp32_contents: vec![1.5, -2.0, 0.25, 4.0],
            ..Default::default()
        };
        let a = infer_request(req(
            vec![input("x", "FP32", vec![2, 2], Some(typed))],
            vec![],
        ))
        .expect("typed");
        let raw: Vec<u8> = [1.5f32, -2.0, 0.25, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b =
            infer_request(req(vec![input("x", "FP32", vec![2, 2], None)], vec![raw])).expect("raw");
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(a.inputs[0].array.shape, vec![2, 2]);
        // Narrow integer types through int_contents, range-checked.
        let ints = pb::InferTensorContents {
            int_contents: vec![1, -3, 127],
            ..Default::default()
        };
        let c = infer_request(req(vec![input("i", "INT8", vec![3], Some(ints))], vec![]))
            .expect("int8");
        assert_eq!(c.inputs[0].array.data, ArrayData::I8(vec![1, -3, 127]));
    }

    #[test]
    fn malformed_messages_are_refused_naming_the_input() {
        let raw4 = vec![0u8; 16];
        let contents = |v: Vec<f32>| {
            Some(pb::InferTensorContents {
                fp32_contents: v,
                ..Default::default()
            })
        };
        let cases: Vec<(pb::ModelInferRequest, &str)> = vec![
            (
                req(
                    vec![input("x", "FP32", vec![-1, 4], None)],
                    vec![raw4.clone()],
                ),
                "negative",
            ),
            (
                req(
                    vec![input("x", "FP32", vec![1, 4], None)],
                    vec![raw4.clone(), raw4.clone()],
                ),
                "2 entries for 1 inputs",
            ),
            (
                req(
                    vec![input("x", "FP32", vec![1, 4], contents(vec![1.0; 4]))],
                    vec![raw4.clone()],
                ),
                "gives `contents`",
            ),
            (
                req(
                    vec![input("x", "FP32", vec![i64::MAX, i64::MAX], None)],
                    vec![raw4.clone()],
                ),
                "too large",
            ),
            (
                req(
                    vec![input("x", "FP32", vec![1, 4], None)],
                    vec![vec![0u8; 15]],
                ),
                "input 'x'",
            ),
            (
                req(
                    vec![input("x", "FP32", vec![1, 4], contents(vec![1.0; 3]))],
                    vec![],
                ),
                "fp32_contents has 3",
            ),
            (
                req(vec![input("x", "FP16", vec![1], contents(vec![]))], vec![]),
                "raw_input_contents",
            ),
            (
                req(
                    vec![input(
                        "x",
                        "INT8",
                        vec![1],
                        Some(pb::InferTensorContents {
                            int_contents: vec![300],
                            ..Default::default()
                        }),
                    )],
                    vec![],
                ),
                "300 is not a INT8",
            ),
            (
                req(
                    vec![input(
                        "s",
                        "BYTES",
                        vec![1],
                        Some(pb::InferTensorContents {
                            bytes_contents: vec![vec![0xff, 0xfe]],
                            ..Default::default()
                        }),
                    )],
                    vec![],
                ),
                "not UTF-8",
            ),
            (
                req(
                    vec![input("x", "COMPLEX", vec![1], None)],
                    vec![vec![0u8; 8]],
                ),
                "COMPLEX",
            ),
        ];
        for (r, needle) in cases {
            let BadRequest(m) = infer_request(r).expect_err(needle);
            assert!(m.contains(needle), "{needle}: {m}");
        }
        let mut bad_id = req(vec![input("x", "FP32", vec![1, 4], None)], vec![raw4]);
        bad_id.id = "a\nb".into();
        assert!(infer_request(bad_id).is_err());
    }
}

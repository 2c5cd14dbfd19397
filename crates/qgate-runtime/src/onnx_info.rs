//! Reading what an ONNX file declares, straight from its protobuf: inputs, outputs, op
//! counts, and the nodes a runtime cannot run. No graph is built, so a model tract cannot
//! run can still be inspected.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use qgate_core::ElemType;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use crate::{Dim, ModelInfo, RuntimeError, TensorInfo, UnsupportedNode};

/// Decodes the ONNX file at `path`.
pub(crate) fn read_proto(path: &Path) -> Result<(pb::ModelProto, FileFacts), RuntimeError> {
    regular_file(path)?;
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| RuntimeError::NotOnnx {
            path: path.to_path_buf(),
            message: format!("{e}"),
        })?;
    let graph_ok = proto
        .graph
        .as_ref()
        .is_some_and(|g| !g.node.is_empty() && !g.output.is_empty());
    if !graph_ok {
        return Err(RuntimeError::NotOnnx {
            path: path.to_path_buf(),
            message: "it holds no graph with nodes and outputs".into(),
        });
    }
    Ok((
        proto,
        FileFacts {
            bytes: bytes.len() as u64,
            sha256: crate::host::sha256_hex(&bytes),
        },
    ))
}

/// Only regular files are read: a named pipe would block for ever, a device never ends.
pub(crate) fn regular_file(path: &Path) -> Result<(), RuntimeError> {
    let err = |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a folder, named pipe or device); give the path of a file",
        ))),
        Err(e) => Err(err(e)),
    }
}

/// Size and digest of a model file.
pub(crate) struct FileFacts {
    pub bytes: u64,
    pub sha256: String,
}

/// Decodes the ONNX file at `path` (errors name the file: unreadable, truncated, no graph).
pub fn read_onnx(path: &Path) -> Result<pb::ModelProto, RuntimeError> {
    read_proto(path).map(|(proto, _)| proto)
}

/// Inputs, outputs and op counts of the ONNX file at `path`.
pub fn inspect_onnx(path: &Path) -> Result<ModelInfo, RuntimeError> {
    let (proto, file) = read_proto(path)?;
    Ok(model_info(&proto, &file))
}

pub(crate) fn model_info(proto: &pb::ModelProto, file: &FileFacts) -> ModelInfo {
    let empty = pb::GraphProto::default();
    let graph = proto.graph.as_ref().unwrap_or(&empty);
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(tensor_info)
        .collect();
    let outputs = graph.output.iter().map(tensor_info).collect();
    let mut op_counts = BTreeMap::new();
    for node in &graph.node {
        *op_counts.entry(op_key(node)).or_insert(0) += 1;
    }
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    let producer = format!("{} {}", proto.producer_name, proto.producer_version)
        .trim()
        .to_string();
    ModelInfo {
        inputs,
        outputs,
        op_counts,
        opset,
        producer,
        file_bytes: file.bytes,
        sha256: Some(file.sha256.clone()),
    }
}

fn op_key(node: &pb::NodeProto) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}:{}", node.domain, node.op_type)
    }
}

fn tensor_info(v: &pb::ValueInfoProto) -> TensorInfo {
    let (elem_type, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            let shape = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(pb::tensor_shape_proto::dimension::Value::DimValue(n))
                                if *n >= 0 =>
                            {
                                Dim::Fixed(*n as usize)
                            }
                            Some(pb::tensor_shape_proto::dimension::Value::DimParam(p))
                                if !p.is_empty() =>
                            {
                                Dim::Symbolic(p.clone())
                            }
                            _ => Dim::Symbolic("?".into()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (onnx_elem_type(t.elem_type), shape)
        }
        None => (None, Vec::new()),
    };
    TensorInfo {
        name: v.name.clone(),
        elem_type,
        shape,
    }
}

/// Maps an ONNX `TensorProto.DataType` code to qgate's element type.
pub(crate) fn onnx_elem_type(code: i32) -> Option<ElemType> {
    Some(match code {
        1 => ElemType::F32,
        2 => ElemType::U8,
        3 => ElemType::I8,
        4 => ElemType::U16,
        5 => ElemType::I16,
        6 => ElemType::I32,
        7 => ElemType::I64,
        8 => ElemType::Str,
        9 => ElemType::Bool,
        10 => ElemType::F16,
        11 => ElemType::F64,
        12 => ElemType::U32,
        13 => ElemType::U64,
        _ => return None,
    })
}

/// Nodes whose op is not in `known` (an op registry keyed by op type). Ops of a foreign
/// domain (e.g. `com.microsoft`) count as unknown unless registered under their name.
pub(crate) fn unsupported_nodes(
    proto: &pb::ModelProto,
    known: impl Fn(&str) -> bool,
) -> Vec<UnsupportedNode> {
    let Some(graph) = proto.graph.as_ref() else {
        return Vec::new();
    };
    graph
        .node
        .iter()
        // tract's registry is keyed by op name alone: an op of another domain
        // (`com.example:Gelu`) must not run as the ONNX op of the same name.
        .filter(|n| !known(&n.op_type) || !matches!(n.domain.as_str(), "" | "ai.onnx"))
        .map(|n| UnsupportedNode {
            node: if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            },
            op_type: n.op_type.clone(),
            domain: n.domain.clone(),
        })
        .collect()
}

/// The newest default-domain opset qgate knows the meaning of (onnx 1.20).
pub const MAX_OPSET: i64 = 25;

/// The first structural problem of a graph that onnxruntime refuses while tract would run
/// it (or panic on it): no default-domain opset, an opset newer than [`MAX_OPSET`], a graph
/// output nothing produces, two nodes writing one tensor.
pub(crate) fn graph_problem(proto: &pb::ModelProto) -> Option<String> {
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    match opset {
        None => {
            return Some(
                "the model imports no opset of the ONNX domain (opset_import is empty); \
                 exporters always write one"
                    .into(),
            )
        }
        Some(v) if v > MAX_OPSET => {
            return Some(format!(
                "opset {v} is newer than any opset qgate knows (at most {MAX_OPSET}): the \
                 meaning of its ops cannot be checked"
            ))
        }
        Some(v) if v < 1 => return Some(format!("opset {v} does not exist")),
        _ => {}
    }
    let g = proto.graph.as_ref()?;
    let mut producer: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for n in &g.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if let Some(first) = producer.insert(o, &n.name) {
                return Some(format!(
                    "two nodes write tensor '{o}' ('{first}' and '{}'); an ONNX graph gives each \
                     tensor one producer",
                    n.name
                ));
            }
        }
    }
    let known = |t: &str| {
        producer.contains_key(t)
            || g.input.iter().any(|i| i.name == t)
            || g.initializer.iter().any(|i| i.name == t)
    };
    if let Some(o) = g.output.iter().find(|o| !known(&o.name)) {
        return Some(format!(
            "graph output '{}' is not written by any node, input or initializer",
            o.name
        ));
    }
    if g.output.is_empty() {
        return Some("the graph declares no output".into());
    }
    None
}

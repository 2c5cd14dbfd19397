//! Reading an ONNX graph for quantization: float initializers, the layers that can be
//! quantized, and their weight layouts.

use std::collections::{HashMap, HashSet};

use qgate_runtime::onnx_pb as pb;
use serde::Serialize;

use crate::QuantError;

/// ONNX `TensorProto.DataType` codes used here.
pub(crate) mod dt {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
    pub const FLOAT16: i32 = 10;
}

/// A layer whose weight and activation inputs can be quantized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Node name (the name every toolchain's exclusion list uses).
    pub node: String,
    /// `Conv`, `Gemm` or `MatMul`.
    pub op_type: String,
    /// Position of the node in the graph.
    pub index: usize,
    /// The weight initializer.
    pub weight: String,
    /// Input slot of the weight.
    pub weight_slot: usize,
    /// Axis of the weight's output channels (per-channel quantization axis).
    pub weight_axis: usize,
    /// Activation inputs (not initializers) that get quantized with the layer.
    pub activations: Vec<String>,
    /// The layer's output after the Relu/Clip that alone follows it, if any (the tensor
    /// onnxruntime quantizes as the layer's output).
    pub output: String,
    /// What the graph from this layer on reads that earlier nodes or the graph's inputs
    /// produce — the inputs of a model cut at this layer ([`cut_at`]): the layer's own
    /// activations first, then e.g. the skip tensor a later residual Add reads.
    pub cut_inputs: Vec<String>,
}

/// A float initializer, decoded.
#[derive(Debug, Clone)]
pub struct FloatTensor {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
}

/// The graph of `model`, or an error naming what is missing.
pub(crate) fn graph(model: &pb::ModelProto) -> Result<&pb::GraphProto, QuantError> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| QuantError::Model("the model holds no graph".into()))
}

/// Decodes float initializer `name`.
pub fn float_initializer(g: &pb::GraphProto, name: &str) -> Option<FloatTensor> {
    let t = g.initializer.iter().find(|t| t.name == name)?;
    let dims = float_dims(t)?;
    let values: Vec<f32> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    Some(FloatTensor { dims, values })
}

/// The dimensions of a float tensor whose data holds exactly that many values (without
/// decoding them).
fn float_dims(t: &pb::TensorProto) -> Option<Vec<usize>> {
    if t.data_type != dt::FLOAT {
        return None;
    }
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let values = if t.raw_data.is_empty() {
        t.float_data.len()
    } else {
        t.raw_data.len() / 4
    };
    (values == dims.iter().product::<usize>()).then_some(dims)
}

pub(crate) fn attr_i(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// Conv, Gemm and MatMul nodes with a float initializer as weight, in graph order.
pub fn quantizable_layers(model: &pb::ModelProto) -> Result<Vec<Layer>, QuantError> {
    let g = graph(model)?;
    let inits: HashMap<&str, &pb::TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    // Nodes are in topological order (ONNX requires it). `live`: the tensors produced so
    // far (graph inputs first) that a node from here on still reads, in production order.
    let mut last_read: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for t in n.input.iter().filter(|t| !t.is_empty()) {
            last_read.insert(t.as_str(), i);
        }
    }
    let mut live: Vec<&str> = g
        .input
        .iter()
        .map(|i| i.name.as_str())
        .filter(|t| !inits.contains_key(t))
        .collect();
    let mut out = Vec::new();
    for (index, n) in g.node.iter().enumerate() {
        if let Some(prev) = index.checked_sub(1) {
            live.extend(g.node[prev].output.iter().map(String::as_str));
        }
        live.retain(|t| last_read.get(t).is_some_and(|&r| r >= index));
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            continue;
        }
        let (slot, axis) = match n.op_type.as_str() {
            "Conv" => (1, 0),
            "Gemm" => (1, if attr_i(n, "transB") == Some(1) { 0 } else { 1 }),
            "MatMul" => (1, 1),
            _ => continue,
        };
        let Some(w) = n.input.get(slot) else { continue };
        let Some(dims) = inits.get(w.as_str()).and_then(|t| float_dims(t)) else {
            continue;
        };
        let rank_ok = match n.op_type.as_str() {
            "Conv" => dims.len() >= 3,
            _ => dims.len() == 2,
        };
        if !rank_ok {
            continue;
        }
        let name = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name.clone()
        };
        let activations: Vec<String> = n
            .input
            .iter()
            .take(1)
            .filter(|i| !i.is_empty() && !inits.contains_key(i.as_str()))
            .cloned()
            .collect();
        let mut cut_inputs = activations.clone();
        for t in &live {
            if !cut_inputs.iter().any(|c| c == t) {
                cut_inputs.push(t.to_string());
            }
        }
        out.push(Layer {
            node: name,
            op_type: n.op_type.clone(),
            index,
            weight: w.clone(),
            weight_slot: slot,
            weight_axis: axis,
            activations,
            cut_inputs,
            output: activation_output(g, n.output.first().map(String::as_str).unwrap_or("")),
        });
    }
    Ok(out)
}

/// Every node output in graph order (for activation matching and error localisation).
pub fn node_outputs(model: &pb::ModelProto) -> Result<Vec<(String, String)>, QuantError> {
    let g = graph(model)?;
    Ok(g.node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(move |o| (o.clone(), n.op_type.clone()))
        })
        .collect())
}

/// Looks layers up by node name; an unknown name is an error listing the known ones.
pub fn select<'a>(layers: &'a [Layer], names: &[String]) -> Result<Vec<&'a Layer>, QuantError> {
    let by_name: HashMap<&str, &Layer> = layers.iter().map(|l| (l.node.as_str(), l)).collect();
    names
        .iter()
        .map(|n| {
            by_name.get(n.as_str()).copied().ok_or_else(|| {
                QuantError::Model(format!(
                    "no quantizable layer named '{n}' (they are: {})",
                    layers
                        .iter()
                        .map(|l| l.node.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
        })
        .collect()
}

/// The part of `model` computed from `feeds` (tensor name, per-sample dims): the feeds
/// become float graph inputs `[N, dims…]`, and every node whose inputs are all fed,
/// initializers or outputs of included nodes is kept. Used to rerun only the graph after a
/// layer on cached FP32 activations. An error when no graph output can be computed.
pub fn cut_at(
    model: &pb::ModelProto,
    feeds: &[(String, Vec<usize>)],
) -> Result<pb::ModelProto, QuantError> {
    use pb::tensor_shape_proto::{dimension, Dimension};
    let g = graph(model)?;
    let mut available: HashSet<String> = feeds.iter().map(|(n, _)| n.clone()).collect();
    available.extend(g.initializer.iter().map(|t| t.name.clone()));
    let fed: HashSet<&str> = feeds.iter().map(|(n, _)| n.as_str()).collect();
    let mut nodes = Vec::new();
    for n in &g.node {
        // A node whose outputs are all fed is not recomputed: its value comes in as a graph
        // input. Keeping it would give the tensor two producers (the input and the node),
        // which onnxruntime refuses and which quantizing doubles (two Q/DQ pairs).
        let outs: Vec<&String> = n.output.iter().filter(|o| !o.is_empty()).collect();
        if !outs.is_empty() && outs.iter().all(|o| fed.contains(o.as_str())) {
            continue;
        }
        if n.input
            .iter()
            .filter(|i| !i.is_empty())
            .all(|i| available.contains(i))
        {
            available.extend(n.output.iter().cloned());
            nodes.push(n.clone());
        }
    }
    let outputs: Vec<pb::ValueInfoProto> = g
        .output
        .iter()
        .filter(|o| available.contains(&o.name))
        .cloned()
        .collect();
    if outputs.is_empty() {
        return Err(QuantError::Model(format!(
            "no graph output can be computed from {}",
            feeds
                .iter()
                .map(|f| f.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let inputs = feeds
        .iter()
        .map(|(name, dims)| {
            let mut dim = vec![Dimension {
                value: Some(dimension::Value::DimParam("N".into())),
                ..Default::default()
            }];
            dim.extend(dims.iter().map(|&d| Dimension {
                value: Some(dimension::Value::DimValue(d as i64)),
                ..Default::default()
            }));
            pb::ValueInfoProto {
                name: name.clone(),
                r#type: Some(pb::TypeProto {
                    value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                        elem_type: dt::FLOAT,
                        shape: Some(pb::TensorShapeProto { dim }),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let used: HashSet<String> = nodes.iter().flat_map(|n| n.input.iter().cloned()).collect();
    let mut out = model.clone();
    if let Some(gm) = out.graph.as_mut() {
        gm.node = nodes;
        gm.input = inputs;
        gm.output = outputs;
        gm.initializer.retain(|t| used.contains(&t.name));
        gm.value_info.clear();
    }
    Ok(out)
}

/// The quantization step of tensor `t`: the scalar scale of the `DequantizeLinear` that
/// produces it (float values on a grid of that step), or 1 for the output of a
/// `QuantizeLinear` (integer codes). `None` for other tensors and per-channel scales.
pub fn quant_step(model: &pb::ModelProto, t: &str) -> Option<f64> {
    let g = model.graph.as_ref()?;
    let n = g
        .node
        .iter()
        .find(|n| n.output.first().is_some_and(|o| o == t))?;
    match n.op_type.as_str() {
        "QuantizeLinear" => Some(1.0),
        "DequantizeLinear" => {
            let s = n.input.get(1)?;
            let scale = float_initializer(g, s)?;
            (scale.values.len() == 1).then(|| scale.values[0] as f64)
        }
        _ => None,
    }
}

/// A copy of `model` whose graph outputs are its declared outputs followed by every tensor
/// in `tensors` (by name only: runtimes infer their types), for reading intermediate
/// tensors from a runtime that returns only graph outputs.
pub fn with_outputs(
    model: &pb::ModelProto,
    tensors: &[String],
) -> Result<pb::ModelProto, QuantError> {
    let mut out = model.clone();
    let g = out
        .graph
        .as_mut()
        .ok_or_else(|| QuantError::Model("the model holds no graph".into()))?;
    let declared: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    for t in tensors.iter().filter(|t| !declared.contains(*t)) {
        g.output.push(pb::ValueInfoProto {
            name: t.clone(),
            ..Default::default()
        });
    }
    Ok(out)
}

/// A layer output, or the output of the Relu/Clip that alone reads it.
pub(crate) fn activation_output(g: &pb::GraphProto, output: &str) -> String {
    let readers: Vec<&pb::NodeProto> = g
        .node
        .iter()
        .filter(|n| n.input.iter().any(|i| i == output))
        .collect();
    match readers.as_slice() {
        [r] if matches!(r.op_type.as_str(), "Relu" | "Clip") => r
            .output
            .first()
            .cloned()
            .unwrap_or_else(|| output.to_string()),
        _ => output.to_string(),
    }
}

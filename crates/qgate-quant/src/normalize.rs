//! Models as toolchains export them, brought to the one form the quantizer edits.
//!
//! paddle2onnx, tf2onnx and `torch.onnx.export(..., do_constant_folding=False)` write weights
//! as `Constant` nodes instead of initializers; opset 10–12 exports are common; some
//! exporters leave nodes unnamed; torch writes models over 2 GB with their tensors in a
//! `.data` file beside the `.onnx` (external data). [`normalize`] turns each of these into
//! the form [`crate::quantizable_layers`] and [`crate::quantize_layers`] read — weights as
//! initializers, every node named, every tensor inline — and decides how weights are scaled:
//! per channel from opset 13 (per-channel `DequantizeLinear` needs it), after upgrading an
//! older model's opset only when no op in its graph changes meaning on the way; per tensor
//! otherwise, as `onnxruntime.quantization.quantize_static(..., per_channel=False)` would.
//! What was done is recorded in [`Normalization`] for the report.

use std::collections::HashSet;
use std::path::{Component, Path};

use qgate_runtime::onnx_pb as pb;
use serde::Serialize;

use crate::graph::dt;
use crate::QuantError;

/// The opset from which `DequantizeLinear` takes a per-channel `axis`.
pub const PER_CHANNEL_OPSET: i64 = 13;
/// The opset that introduced `QuantizeLinear`/`DequantizeLinear`.
pub const QDQ_OPSET: i64 = 10;

/// How weights are scaled when quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightScales {
    /// One scale per output channel (opset ≥ 13).
    PerChannel,
    /// One scale per weight tensor (opset 10–12).
    PerTensor,
}

/// What [`normalize`] changed, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalization {
    /// `Constant` nodes whose tensors became initializers.
    pub constants_lifted: usize,
    /// Nodes that had no name and got a generated one (`{op}_{index}`).
    pub names_generated: usize,
    /// Initializers read from external data files.
    pub external_tensors: usize,
    /// The default-domain opset of the file.
    pub opset_in: i64,
    /// The opset of the normalised model (equal to `opset_in` unless upgraded).
    pub opset_out: i64,
    /// How weights are scaled.
    pub weight_scales: WeightScales,
    /// Why the opset is what it is: already per-channel, upgraded, or kept and why.
    pub opset_reason: OpsetReason,
}

/// Why the normalised model has its opset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpsetReason {
    /// Opset 13 or later: per-channel weight scales as it is.
    PerChannel,
    /// Raised to 13: no op in the graph changes meaning on the way.
    Upgraded,
    /// Kept below 13 because of this node: per-tensor weight scales.
    Kept { blocker: OpsetBlocker },
}

/// The node that keeps a model at its opset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpsetBlocker {
    /// An op holding a subgraph (If, Loop, Scan).
    Subgraph { op: String, node: String },
    /// An op whose meaning changes at opset `at`.
    ChangesMeaning { op: String, node: String, at: i64 },
}

impl Normalization {
    /// Whether the normalised model differs from the file.
    pub fn changed(&self) -> bool {
        self.constants_lifted > 0
            || self.names_generated > 0
            || self.external_tensors > 0
            || self.opset_in != self.opset_out
    }
}

/// Ops whose meaning changes at an opset version in `(from, to]`: a model holding one keeps
/// its opset. `(op, versions at which its semantics changed)` — inputs that became
/// attributes or the reverse, or a different definition of the same attribute.
const CHANGES: &[(&str, &[i64])] = &[
    ("Softmax", &[13]),
    ("LogSoftmax", &[13]),
    ("Hardmax", &[13]),
    ("ReduceSum", &[13]),
    ("Split", &[13]),
    ("Squeeze", &[13]),
    ("Unsqueeze", &[13]),
    ("Clip", &[11]),
    ("Pad", &[11]),
    ("Resize", &[11]),
    ("Upsample", &[10]),
    ("Scatter", &[11]),
    ("Dropout", &[12]),
    ("TopK", &[10]),
    ("Slice", &[10]),
];

/// The default-domain opset of `model` (0 when absent).
pub fn default_opset(model: &pb::ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0)
}

/// How a model at this opset gets its weights scaled by [`crate::quantize_layers`].
pub fn weight_scales(model: &pb::ModelProto) -> Result<WeightScales, QuantError> {
    match default_opset(model) {
        v if v >= PER_CHANNEL_OPSET => Ok(WeightScales::PerChannel),
        v if v >= QDQ_OPSET => Ok(WeightScales::PerTensor),
        v => Err(QuantError::Model(format!(
            "the model uses opset {v}; QuantizeLinear/DequantizeLinear need opset {QDQ_OPSET} or later (convert it with onnx.version_converter)"
        ))),
    }
}

/// `model` (read from a file in `model_dir`) in the form the quantizer edits. See the
/// module documentation.
pub fn normalize(
    mut model: pb::ModelProto,
    model_dir: &Path,
) -> Result<(pb::ModelProto, Normalization), QuantError> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| QuantError::Model("the model holds no graph".into()))?;
    let external_tensors = inline_external_data(g, model_dir)?;
    let constants_lifted = lift_constants(g);
    let names_generated = name_nodes(g);
    let opset_in = default_opset(&model);
    let (opset_out, opset_reason) = upgrade_opset(&mut model, opset_in)?;
    let weight_scales = weight_scales(&model)?;
    Ok((
        model,
        Normalization {
            constants_lifted,
            names_generated,
            external_tensors,
            opset_in,
            opset_out,
            weight_scales,
            opset_reason,
        },
    ))
}

/// Reads every externally stored initializer into `raw_data`. A location must be a relative
/// path inside the model's folder.
fn inline_external_data(g: &mut pb::GraphProto, dir: &Path) -> Result<usize, QuantError> {
    const EXTERNAL: i32 = 1;
    let mut count = 0;
    for t in g
        .initializer
        .iter_mut()
        .filter(|t| t.data_location == Some(EXTERNAL))
    {
        let err = |message: String| QuantError::Model(format!("tensor '{}': {message}", t.name));
        let key = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.clone())
        };
        let location =
            key("location").ok_or_else(|| err("external data without a 'location'".into()))?;
        let rel = Path::new(&location);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(err(format!(
                "external data location '{location}' must be a relative path inside the model's folder"
            )));
        }
        let path = dir.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| QuantError::Io {
            path: path.clone(),
            message: format!("external data of tensor '{}': {e}", t.name),
        })?;
        let number = |k: &str| -> Result<Option<usize>, QuantError> {
            key(k)
                .map(|v| {
                    v.parse::<usize>().map_err(|_| {
                        err(format!(
                            "external data '{k}' is '{v}', expected a byte count"
                        ))
                    })
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let length = number("length")?.unwrap_or(bytes.len().saturating_sub(offset));
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                err(format!(
                    "external data bytes {offset}..{} lie past the end of {} ({} bytes)",
                    offset.saturating_add(length),
                    path.display(),
                    bytes.len()
                ))
            })?;
        t.raw_data = bytes[offset..end].to_vec();
        t.external_data.clear();
        t.data_location = None;
        count += 1;
    }
    Ok(count)
}

/// Turns `Constant` nodes holding a tensor (or a float/int scalar or list) into
/// initializers of the same name. Constants that are graph outputs stay nodes.
fn lift_constants(g: &mut pb::GraphProto) -> usize {
    let outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut lifted = Vec::new();
    g.node.retain(|n| {
        if n.op_type != "Constant" || !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return true;
        }
        let Some(out) = n.output.first().filter(|o| !outputs.contains(*o)) else {
            return true;
        };
        match constant_tensor(n) {
            Some(mut t) => {
                t.name = out.clone();
                lifted.push(t);
                false
            }
            None => true,
        }
    });
    let count = lifted.len();
    g.initializer.extend(lifted);
    count
}

/// The tensor a `Constant` node produces, for the attribute forms that hold numbers.
fn constant_tensor(n: &pb::NodeProto) -> Option<pb::TensorProto> {
    let a = n.attribute.first()?;
    let t = |data_type: i32, dims: Vec<i64>| pb::TensorProto {
        data_type,
        dims,
        ..Default::default()
    };
    match a.name.as_str() {
        "value" => a.t.clone(),
        "value_float" => Some(pb::TensorProto {
            float_data: vec![a.f],
            ..t(dt::FLOAT, vec![])
        }),
        "value_floats" => Some(pb::TensorProto {
            float_data: a.floats.clone(),
            ..t(dt::FLOAT, vec![a.floats.len() as i64])
        }),
        "value_int" => Some(pb::TensorProto {
            int64_data: vec![a.i],
            ..t(dt::INT64, vec![])
        }),
        "value_ints" => Some(pb::TensorProto {
            int64_data: a.ints.clone(),
            ..t(dt::INT64, vec![a.ints.len() as i64])
        }),
        _ => None,
    }
}

/// Gives every unnamed node the name `{op_type}_{index}` (index in graph order; `_2`, `_3`
/// … appended if another node already has it). Deterministic: the same file always gets
/// the same names.
fn name_nodes(g: &mut pb::GraphProto) -> usize {
    let mut taken: HashSet<String> = g
        .node
        .iter()
        .filter(|n| !n.name.is_empty())
        .map(|n| n.name.clone())
        .collect();
    let mut count = 0;
    for (i, n) in g.node.iter_mut().enumerate() {
        if !n.name.is_empty() {
            continue;
        }
        let base = format!("{}_{i}", n.op_type);
        let mut name = base.clone();
        let mut k = 2;
        while taken.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        taken.insert(name.clone());
        n.name = name;
        count += 1;
    }
    count
}

/// Raises an opset 10–12 model to 13 when no op in its graph changes meaning on the way;
/// returns the opset in force and why.
fn upgrade_opset(model: &mut pb::ModelProto, from: i64) -> Result<(i64, OpsetReason), QuantError> {
    if from >= PER_CHANNEL_OPSET {
        return Ok((from, OpsetReason::PerChannel));
    }
    if from < QDQ_OPSET {
        return Err(QuantError::Model(format!(
            "the model uses opset {from}; QuantizeLinear/DequantizeLinear need opset {QDQ_OPSET} or later (convert it with onnx.version_converter)"
        )));
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| QuantError::Model("the model holds no graph".into()))?;
    let blocker = g.node.iter().find_map(|n| {
        if n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
        {
            return Some(OpsetBlocker::Subgraph {
                op: n.op_type.clone(),
                node: n.name.clone(),
            });
        }
        let default = n.domain.is_empty() || n.domain == "ai.onnx";
        CHANGES
            .iter()
            .find(|(op, at)| {
                default
                    && *op == n.op_type
                    && at.iter().any(|&v| v > from && v <= PER_CHANNEL_OPSET)
            })
            .map(|(op, at)| {
                let v = at
                    .iter()
                    .find(|&&v| v > from)
                    .copied()
                    .unwrap_or(PER_CHANNEL_OPSET);
                OpsetBlocker::ChangesMeaning {
                    op: op.to_string(),
                    node: n.name.clone(),
                    at: v,
                }
            })
    });
    if let Some(blocker) = blocker {
        return Ok((from, OpsetReason::Kept { blocker }));
    }
    for o in model
        .opset_import
        .iter_mut()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
    {
        o.version = PER_CHANNEL_OPSET;
    }
    // Opset 13 needs IR version 7.
    model.ir_version = model.ir_version.max(7);
    Ok((PER_CHANNEL_OPSET, OpsetReason::Upgraded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn model(opset: i64, nodes: Vec<pb::NodeProto>) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 6,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(pb::GraphProto {
                node: nodes,
                output: vec![pb::ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn unnamed_nodes_get_stable_unique_names() {
        let m = model(
            13,
            vec![
                node("Relu", "", &["x"], "a"),
                node("Relu", "Relu_0", &["a"], "b"),
                node("Relu", "", &["b"], "y"),
            ],
        );
        let (n, facts) = normalize(m.clone(), Path::new(".")).unwrap();
        let names: Vec<&str> = n
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["Relu_0_2", "Relu_0", "Relu_2"]);
        assert_eq!(facts.names_generated, 2);
        assert_eq!(normalize(m, Path::new(".")).unwrap().0, n);
    }

    #[test]
    fn opset_is_upgraded_only_when_no_op_changes_meaning() {
        let (m, f) = normalize(
            model(11, vec![node("Relu", "r", &["x"], "y")]),
            Path::new("."),
        )
        .unwrap();
        assert_eq!((f.opset_in, f.opset_out), (11, 13));
        assert_eq!(f.weight_scales, WeightScales::PerChannel);
        assert_eq!(default_opset(&m), 13);
        assert_eq!(m.ir_version, 7);
        let (m, f) = normalize(
            model(11, vec![node("Softmax", "sm", &["x"], "y")]),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            (f.opset_out, f.weight_scales),
            (11, WeightScales::PerTensor)
        );
        assert_eq!(
            f.opset_reason,
            OpsetReason::Kept {
                blocker: OpsetBlocker::ChangesMeaning {
                    op: "Softmax".into(),
                    node: "sm".into(),
                    at: 13
                }
            }
        );
        assert_eq!(default_opset(&m), 11);
        let err = normalize(
            model(9, vec![node("Relu", "r", &["x"], "y")]),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("opset 9"), "{err}");
    }

    #[test]
    fn constant_nodes_become_initializers() {
        let mut c = node("Constant", "w_const", &[], "w");
        c.attribute.push(pb::AttributeProto {
            name: "value".into(),
            t: Some(pb::TensorProto {
                data_type: dt::FLOAT,
                dims: vec![2],
                float_data: vec![1.0, 2.0],
                ..Default::default()
            }),
            ..Default::default()
        });
        let (m, f) = normalize(
            model(13, vec![c, node("MatMul", "mm", &["x", "w"], "y")]),
            Path::new("."),
        )
        .unwrap();
        let g = m.graph.unwrap();
        assert_eq!(f.constants_lifted, 1);
        assert_eq!(g.node.len(), 1);
        assert_eq!(g.initializer[0].name, "w");
        assert_eq!(g.initializer[0].float_data, [1.0, 2.0]);
    }
}

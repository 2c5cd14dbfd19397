//! Simulated quantization on the ONNX graph: QuantizeLinear/DequantizeLinear pairs on
//! chosen layers (weights per-channel symmetric INT8, activations per-tensor asymmetric
//! UINT8, as onnxruntime's `quantize_static` QDQ defaults with `per_channel=True`), and the
//! reverse: removing the pairs of given layers from an existing QDQ model.

use std::collections::{BTreeMap, HashMap, HashSet};

use qgate_runtime::onnx_pb as pb;

use crate::calib::Range;
use crate::graph::{activation_output, attr_i, dt, float_initializer, graph, FloatTensor, Layer};
use crate::normalize::{weight_scales, WeightScales};
use crate::QuantError;

/// Activation quantization: UINT8, asymmetric.
pub const ACT_QMIN: f64 = 0.0;
/// Upper end of the activation range.
pub const ACT_QMAX: f64 = 255.0;
/// Weight quantization: INT8, symmetric, restricted to ±127 so zero is exact and the
/// range is symmetric (onnxruntime's symmetric INT8).
pub const W_QMAX: f64 = 127.0;

/// Scale and zero point of an activation range, as onnxruntime's `compute_scale_zp`:
/// the range is widened to include 0; a degenerate range gets scale 1.
pub fn act_qparams(r: Range) -> (f32, u8) {
    let rmin = r.min.min(0.0);
    let rmax = r.max.max(0.0);
    let scale = (rmax - rmin) / (ACT_QMAX - ACT_QMIN);
    if scale < f32::MIN_POSITIVE as f64 {
        return (1.0, 0);
    }
    let scale32 = scale as f32;
    let zp = (ACT_QMIN - rmin / scale32 as f64).round_ties_even();
    (scale32, zp.clamp(ACT_QMIN, ACT_QMAX) as u8)
}

/// Per-channel symmetric INT8 quantization of a weight along `axis`: scales (one per
/// channel, absmax / 127) and the quantized values (round half to even, as numpy).
pub fn quantize_weight(w: &FloatTensor, axis: usize) -> (Vec<f32>, Vec<i8>) {
    let channels = w.dims.get(axis).copied().unwrap_or(1).max(1);
    let inner: usize = w.dims.iter().skip(axis + 1).product();
    let channel_of = |i: usize| (i / inner.max(1)) % channels;
    let mut absmax = vec![0.0f32; channels];
    for (i, v) in w.values.iter().enumerate() {
        let c = channel_of(i);
        absmax[c] = absmax[c].max(v.abs());
    }
    let scales: Vec<f32> = absmax
        .iter()
        .map(|&m| {
            let s = m as f64 / W_QMAX;
            if s < f32::MIN_POSITIVE as f64 {
                1.0
            } else {
                s as f32
            }
        })
        .collect();
    let q = w
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = scales[channel_of(i)];
            (*v as f64 / s as f64)
                .round_ties_even()
                .clamp(-W_QMAX, W_QMAX) as i8
        })
        .collect();
    (scales, q)
}

/// Per-tensor symmetric INT8 quantization of a weight (opset 10–12, or
/// `quantize_static(per_channel=False)`): one scale, absmax / 127, for the whole tensor.
pub fn quantize_weight_per_tensor(w: &FloatTensor) -> (Vec<f32>, Vec<i8>) {
    let flat = FloatTensor {
        dims: vec![1, w.values.len()],
        values: w.values.clone(),
    };
    quantize_weight(&flat, 0)
}

/// SQNR (dB) of a weight quantized per channel: 10·log10(Σw² / Σ(w − ŵ)²); `None` when
/// exact.
pub fn weight_sqnr_db(w: &FloatTensor, axis: usize) -> Option<f64> {
    let (scales, q) = quantize_weight(w, axis);
    let channels = scales.len();
    let inner: usize = w.dims.iter().skip(axis + 1).product::<usize>().max(1);
    let dequantized = q
        .iter()
        .enumerate()
        .map(|(i, qi)| *qi as f64 * scales[(i / inner) % channels] as f64);
    sqnr_db(&w.values, dequantized)
}

/// SQNR (dB) of `approx` against `exact`: 10·log10(Σx² / Σ(x − x̂)²); `None` when equal.
pub(crate) fn sqnr_db(exact: &[f32], approx: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (v, a) in exact.iter().zip(approx) {
        signal += (*v as f64).powi(2);
        noise += (*v as f64 - a).powi(2);
    }
    (noise > 0.0).then(|| 10.0 * (signal / noise).log10())
}

fn tensor(name: &str, data_type: i32, dims: Vec<i64>, raw: Vec<u8>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        data_type,
        dims,
        raw_data: raw,
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: Vec<String>,
    output: &str,
    axis: Option<i64>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs,
        output: vec![output.to_string()],
        attribute: axis
            .map(|a| {
                vec![pb::AttributeProto {
                    name: "axis".into(),
                    r#type: 2,
                    i: a,
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The activation tensors quantizing `layers` puts Q/DQ pairs on, as onnxruntime's QDQ
/// quantizer does: every activation input of a quantized layer and its output — after the
/// Relu/Clip that follows it, which onnxruntime folds into the layer's output range. A
/// tensor is quantized for every reader once any quantized layer touches it.
pub fn quantized_tensors(
    model: &pb::ModelProto,
    layers: &[&Layer],
) -> Result<Vec<String>, QuantError> {
    let g = graph(model)?;
    let mut out: Vec<String> = Vec::new();
    let mut push = |t: &str| {
        if !t.is_empty() && !out.iter().any(|x| x == t) {
            out.push(t.to_string());
        }
    };
    for l in layers {
        for x in &l.activations {
            push(x);
        }
        push(&activation_output(g, &l.output));
    }
    Ok(out)
}

/// A copy of `model` with `layers` quantized: each tensor of [`quantized_tensors`] gets a
/// QuantizeLinear → DequantizeLinear pair with its calibrated range right after it is
/// produced (every reader then reads the dequantized values; a graph output keeps its
/// name), each weight is stored as INT8 with per-channel scales and a DequantizeLinear.
/// A float bias of a Conv/Gemm becomes INT32 with scale = input scale × weight scale, as
/// onnxruntime stores it. Every other layer computes in float.
pub fn quantize_layers(
    model: &pb::ModelProto,
    layers: &[&Layer],
    ranges: &BTreeMap<String, Range>,
) -> Result<pb::ModelProto, QuantError> {
    let per_channel = weight_scales(model)? == WeightScales::PerChannel;
    let out = model.clone();
    let g0 = graph(model)?;
    let tensors = quantized_tensors(model, layers)?;
    let graph_outputs: HashSet<&str> = g0.output.iter().map(|o| o.name.as_str()).collect();
    let by_index: HashMap<usize, &Layer> = layers.iter().map(|l| (l.index, *l)).collect();
    let mut inits = g0.initializer.clone();
    let qdq = |x: &str, inits: &mut Vec<pb::TensorProto>| {
        activation_qdq(x, ranges, &graph_outputs, inits)
    };
    let mut renamed: HashMap<String, String> = HashMap::new(); // tensor → what readers read
    let mut nodes = Vec::with_capacity(g0.node.len() + 4 * layers.len());
    let inputs: HashSet<&str> = g0.input.iter().map(|i| i.name.as_str()).collect();
    for x in tensors.iter().filter(|t| inputs.contains(t.as_str())) {
        let (qd, _, dq_out) = qdq(x, &mut inits)?;
        nodes.extend(qd);
        renamed.insert(x.clone(), dq_out);
    }
    // Weight → (the name layers read, its per-channel scales).
    let mut weight_done: HashMap<String, (String, Vec<f32>)> = HashMap::new();
    for (i, n) in g0.node.iter().enumerate() {
        let mut n = n.clone();
        for inp in n.input.iter_mut() {
            if let Some(r) = renamed.get(inp.as_str()) {
                *inp = r.clone();
            }
        }
        if let Some(layer) = by_index.get(&i) {
            let w_name = &layer.weight;
            let (dq, w_scales) = match weight_done.get(w_name) {
                Some(done) => done.clone(),
                None => {
                    let done = quantize_weight_of(g0, layer, per_channel, &mut inits, &mut nodes)?;
                    weight_done.insert(w_name.clone(), done.clone());
                    done
                }
            };
            n.input[layer.weight_slot] = dq;
            if let Some(b) =
                quantize_bias(g0, layer, &n, &w_scales, ranges, &mut inits, &mut nodes)?
            {
                n.input[2] = b;
            }
        }
        let produced: Vec<String> = n
            .output
            .iter()
            .filter(|o| tensors.contains(o))
            .cloned()
            .collect();
        let mut after = Vec::new();
        for x in produced {
            let (qd, src, dq_out) = qdq(&x, &mut inits)?;
            for o in n.output.iter_mut().filter(|o| **o == x) {
                *o = src.clone();
            }
            after.extend(qd);
            renamed.insert(x, dq_out);
        }
        nodes.push(n);
        nodes.extend(after);
    }
    replace_graph(out, nodes, inits)
}

/// The QuantizeLinear → DequantizeLinear pair of activation `x` with its calibrated range
/// (scale and zero point added to `inits`): the nodes, the name the producer writes and the
/// name readers read afterwards. A graph output keeps its name: the producer then writes
/// `{x}_QuantizeLinear_Input`.
fn activation_qdq(
    x: &str,
    ranges: &BTreeMap<String, Range>,
    graph_outputs: &HashSet<&str>,
    inits: &mut Vec<pb::TensorProto>,
) -> Result<(Vec<pb::NodeProto>, String, String), QuantError> {
    let r = ranges
        .get(x)
        .ok_or_else(|| QuantError::Model(format!("no calibrated range for tensor '{x}'")))?;
    let (scale, zp) = act_qparams(*r);
    let (s_name, z_name) = (format!("{x}_scale"), format!("{x}_zero_point"));
    inits.push(tensor(
        &s_name,
        dt::FLOAT,
        vec![],
        scale.to_le_bytes().to_vec(),
    ));
    inits.push(tensor(&z_name, dt::UINT8, vec![], vec![zp]));
    // A graph output keeps its name: the producer writes `{x}_QuantizeLinear_Input`.
    let (src, dq_out) = if graph_outputs.contains(x) {
        (format!("{x}_QuantizeLinear_Input"), x.to_string())
    } else {
        (x.to_string(), format!("{x}_DequantizeLinear_Output"))
    };
    let q_out = format!("{x}_QuantizeLinear_Output");
    Ok((
        vec![
            node(
                "QuantizeLinear",
                &format!("{x}_QuantizeLinear"),
                vec![src.clone(), s_name.clone(), z_name.clone()],
                &q_out,
                None,
            ),
            node(
                "DequantizeLinear",
                &format!("{x}_DequantizeLinear"),
                vec![q_out, s_name, z_name],
                &dq_out,
                None,
            ),
        ],
        src,
        dq_out,
    ))
}

/// The INT8 weight of `layer` (per channel, or per tensor before opset 13) as initializers
/// and a DequantizeLinear node; returns the name the layer reads and the scales.
fn quantize_weight_of(
    g0: &pb::GraphProto,
    layer: &Layer,
    per_channel: bool,
    inits: &mut Vec<pb::TensorProto>,
    nodes: &mut Vec<pb::NodeProto>,
) -> Result<(String, Vec<f32>), QuantError> {
    let w_name = &layer.weight;
    let w = float_initializer(g0, w_name).ok_or_else(|| {
        QuantError::Model(format!("weight '{w_name}' is not a float initializer"))
    })?;
    let (scales, q) = if per_channel {
        quantize_weight(&w, layer.weight_axis)
    } else {
        quantize_weight_per_tensor(&w)
    };
    let dims: Vec<i64> = w.dims.iter().map(|&d| d as i64).collect();
    let c = scales.len() as i64;
    // Per tensor (opset < 13): scalar scale and zero point, no axis.
    let (s_dims, axis) = if per_channel {
        (vec![c], Some(layer.weight_axis as i64))
    } else {
        (vec![], None)
    };
    let (q_name, s_name, z_name) = (
        format!("{w_name}_quantized"),
        format!("{w_name}_scale"),
        format!("{w_name}_zero_point"),
    );
    inits.push(tensor(
        &q_name,
        dt::INT8,
        dims,
        q.iter().map(|&v| v as u8).collect(),
    ));
    inits.push(tensor(
        &s_name,
        dt::FLOAT,
        s_dims.clone(),
        scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
    ));
    inits.push(tensor(&z_name, dt::INT8, s_dims, vec![0; c as usize]));
    let dq_out = format!("{w_name}_DequantizeLinear_Output");
    nodes.push(node(
        "DequantizeLinear",
        &format!("{w_name}_DequantizeLinear"),
        vec![q_name, s_name, z_name],
        &dq_out,
        axis,
    ));
    Ok((dq_out, scales))
}

/// INT32 bias of a quantized Conv/Gemm, as onnxruntime stores it: scale = input scale ×
/// weight scale (per output channel), zero point 0, values round(b / scale). Returns the
/// name the layer reads, or `None` when the layer has no float bias.
fn quantize_bias(
    g: &pb::GraphProto,
    layer: &Layer,
    n: &pb::NodeProto,
    sw: &[f32],
    ranges: &BTreeMap<String, Range>,
    inits: &mut Vec<pb::TensorProto>,
    nodes: &mut Vec<pb::NodeProto>,
) -> Result<Option<String>, QuantError> {
    if !matches!(layer.op_type.as_str(), "Conv" | "Gemm") {
        return Ok(None);
    }
    let Some(b_name) = n.input.get(2).filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let Some(bias) = float_initializer(g, b_name) else {
        return Ok(None);
    };
    let Some(x) = layer.activations.first().and_then(|x| ranges.get(x)) else {
        return Ok(None);
    };
    let (sx, _) = act_qparams(*x);
    if sw.len() != bias.values.len() && sw.len() != 1 {
        return Ok(None);
    }
    // One weight scale (per tensor, opset < 13): one bias scale, a scalar without axis.
    let per_tensor = sw.len() == 1;
    let scales: Vec<f32> = (0..bias.values.len())
        .map(|c| sx * sw[c.min(sw.len() - 1)])
        .collect();
    let q: Vec<i32> = bias
        .values
        .iter()
        .zip(&scales)
        .map(|(v, s)| (*v as f64 / *s as f64).round_ties_even() as i32)
        .collect();
    let (q_name, s_name) = (format!("{b_name}_quantized"), format!("{b_name}_scale"));
    let c = q.len() as i64;
    if !inits.iter().any(|t| t.name == q_name) {
        inits.push(tensor(
            &q_name,
            dt::INT32,
            vec![c],
            q.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        let (s_dims, s_values) = if per_tensor {
            (vec![], &scales[..1])
        } else {
            (vec![c], &scales[..])
        };
        inits.push(tensor(
            &s_name,
            dt::FLOAT,
            s_dims,
            s_values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let out = format!("{b_name}_DequantizeLinear_Output");
    if !nodes.iter().any(|n| n.output.first() == Some(&out)) {
        nodes.push(node(
            "DequantizeLinear",
            &format!("{b_name}_DequantizeLinear"),
            vec![q_name, s_name],
            &out,
            (!per_tensor).then_some(0),
        ));
    }
    Ok(Some(out))
}

/// `model` with these nodes and initializers (unread initializers dropped).
fn replace_graph(
    mut model: pb::ModelProto,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
) -> Result<pb::ModelProto, QuantError> {
    let g = model
        .graph
        .as_mut()
        .ok_or_else(|| QuantError::Model("the model holds no graph".into()))?;
    g.node = nodes;
    g.initializer = initializers;
    prune_initializers(g);
    Ok(model)
}

/// Drops initializers no node reads and no graph output names.
fn prune_initializers(g: &mut pb::GraphProto) {
    let used: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().map(|o| o.name.clone()))
        .collect();
    g.initializer.retain(|t| used.contains(&t.name));
}

fn raw_values(t: &pb::TensorProto) -> Option<Vec<f64>> {
    let raw = &t.raw_data;
    Some(match t.data_type {
        dt::FLOAT if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        dt::FLOAT => t.float_data.iter().map(|&v| v as f64).collect(),
        dt::INT8 if !raw.is_empty() => raw.iter().map(|&b| b as i8 as f64).collect(),
        dt::UINT8 if !raw.is_empty() => raw.iter().map(|&b| b as f64).collect(),
        dt::INT8 | dt::UINT8 => t.int32_data.iter().map(|&v| v as f64).collect(),
        6 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        6 => t.int32_data.iter().map(|&v| v as f64).collect(),
        _ => return None,
    })
}

/// Dequantizes a DequantizeLinear of initializers back to a float tensor.
fn dequantize_initializer(g: &pb::GraphProto, dq: &pb::NodeProto) -> Option<(Vec<i64>, Vec<f32>)> {
    let init = |name: &str| g.initializer.iter().find(|t| t.name == name);
    let x = init(dq.input.first()?)?;
    let scale = raw_values(init(dq.input.get(1)?)?)?;
    let zp = match dq.input.get(2).filter(|s| !s.is_empty()) {
        Some(z) => raw_values(init(z)?)?,
        None => vec![0.0; scale.len()],
    };
    let xv = raw_values(x)?;
    let axis = dq
        .attribute
        .iter()
        .find(|a| a.name == "axis")
        .map(|a| a.i)
        .unwrap_or(1);
    let dims = x.dims.clone();
    let rank = dims.len() as i64;
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    let inner: usize = dims.iter().skip(axis + 1).map(|&d| d as usize).product();
    let values = xv
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = if scale.len() == 1 {
                0
            } else {
                (i / inner.max(1)) % scale.len()
            };
            ((v - zp[c.min(zp.len() - 1)]) * scale[c]) as f32
        })
        .collect();
    Some((dims, values))
}

/// A copy of an existing QDQ model with the Q/DQ pairs in front of the `keep` nodes
/// removed: activation inputs read the float tensor again, quantized weights and biases
/// are dequantized back to float initializers. The user's calibration of every other
/// layer is kept. Q/DQ nodes nothing reads any more are dropped.
pub fn strip_qdq(
    quantized: &pb::ModelProto,
    keep: &[String],
    fp32: Option<&pb::ModelProto>,
) -> Result<pb::ModelProto, QuantError> {
    let out = quantized.clone();
    let g0 = graph(quantized)?.clone();
    let producer: HashMap<&str, &pb::NodeProto> = g0
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let f = fp32.and_then(|m| m.graph.as_ref());
    // Who produces each tensor in the FP32 graph: quantizers fold a Relu/Clip into the
    // clipping of the Q/DQ pair after a layer, so removing the pair must restore it.
    let fp32_producer: HashMap<&str, &pb::NodeProto> = f
        .map(|g| {
            g.node
                .iter()
                .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
                .collect()
        })
        .unwrap_or_default();
    let keep: HashSet<&str> = keep.iter().map(String::as_str).collect();
    let found: HashSet<&str> = g0.node.iter().map(|n| n.name.as_str()).collect();
    if let Some(missing) = keep.iter().find(|k| !found.contains(*k)) {
        return Err(QuantError::Model(format!(
            "the quantized model has no node named '{missing}'"
        )));
    }
    let mut new_inits: Vec<pb::TensorProto> = Vec::new();
    let mut nodes: Vec<pb::NodeProto> = Vec::new();
    for n in &g0.node {
        let mut n = n.clone();
        if keep.contains(n.name.as_str()) {
            let fp32_node = f.and_then(|g| g.node.iter().find(|m| m.name == n.name));
            let mut before = Vec::new();
            for (slot, inp) in n.input.iter_mut().enumerate() {
                let Some(dq) = producer
                    .get(inp.as_str())
                    .filter(|d| d.op_type == "DequantizeLinear")
                else {
                    continue;
                };
                let src = dq.input.first().cloned().unwrap_or_default();
                let q = producer
                    .get(src.as_str())
                    .filter(|q| q.op_type == "QuantizeLinear");
                if let Some(q) = q {
                    let t = q.input.first().cloned().unwrap_or_default();
                    let folded = fp32_producer.get(t.as_str()).filter(|p| {
                        matches!(p.op_type.as_str(), "Relu" | "Clip")
                            && producer.get(t.as_str()).map(|x| x.op_type.as_str())
                                != Some(p.op_type.as_str())
                    });
                    *inp = match folded {
                        Some(act) => {
                            let restored = format!("{t}_{}_restored", act.op_type);
                            let exists = nodes
                                .iter()
                                .chain(&before)
                                .any(|m| m.output.first() == Some(&restored));
                            if !exists {
                                let mut r = (*act).clone();
                                r.name = format!("{}_restored", act.name);
                                if let Some(first) = r.input.first_mut() {
                                    *first = t.clone();
                                }
                                r.output = vec![restored.clone()];
                                for extra in r.input.iter().skip(1).filter(|x| !x.is_empty()) {
                                    let init = f.and_then(|g| {
                                        g.initializer.iter().find(|i| &i.name == extra)
                                    });
                                    if let Some(init) = init {
                                        if !g0.initializer.iter().any(|i| &i.name == extra) {
                                            new_inits.push(init.clone());
                                        }
                                    }
                                }
                                before.push(r);
                            }
                            restored
                        }
                        None => t,
                    };
                    continue;
                }
                let orig = fp32_node.and_then(|m| m.input.get(slot)).and_then(|name| {
                    f.and_then(|g| g.initializer.iter().find(|i| &i.name == name))
                });
                if let Some(orig) = orig {
                    // The FP32 model's own weight or bias, not its quantized approximation.
                    let name = format!("{}_float", orig.name);
                    if !new_inits.iter().any(|t| t.name == name) {
                        let mut t = orig.clone();
                        t.name = name.clone();
                        new_inits.push(t);
                    }
                    *inp = name;
                } else if let Some((dims, values)) = dequantize_initializer(&g0, dq) {
                    let name = format!("{src}_float");
                    if !new_inits.iter().any(|t| t.name == name) {
                        new_inits.push(tensor(
                            &name,
                            dt::FLOAT,
                            dims,
                            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                        ));
                    }
                    *inp = name;
                }
            }
            nodes.extend(before);
        }
        nodes.push(n);
    }
    // Drop Q/DQ nodes whose outputs nobody reads any more (repeat: a Q feeds only its DQ).
    let outputs: HashSet<String> = g0.output.iter().map(|o| o.name.clone()).collect();
    loop {
        let read: HashSet<String> = nodes
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(outputs.iter().cloned())
            .collect();
        let before = nodes.len();
        nodes.retain(|n| {
            !(matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear")
                && n.output.iter().all(|o| !read.contains(o)))
        });
        if nodes.len() == before {
            break;
        }
    }
    let mut inits = g0.initializer.clone();
    inits.extend(new_inits);
    replace_graph(out, nodes, inits)
}

/// The float weights a QDQ model's layer effectively uses (its weight DequantizeLinear
/// applied), for weight-error figures.
pub fn effective_weight(model: &pb::ModelProto, node: &str, slot: usize) -> Option<Vec<f32>> {
    let g = model.graph.as_ref()?;
    let n = g.node.iter().find(|n| n.name == node)?;
    let w = n.input.get(slot)?;
    if let Some(t) = float_initializer(g, w) {
        return Some(t.values);
    }
    let dq = g
        .node
        .iter()
        .find(|d| d.op_type == "DequantizeLinear" && d.output.first() == Some(w))?;
    dequantize_initializer(g, dq).map(|(_, v)| v)
}

/// A Gemm that is `A·B (+ C)`: alpha = beta = 1 and A not transposed.
fn plain_gemm(n: &pb::NodeProto) -> bool {
    let f = |name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.f);
    f("alpha").is_none_or(|a| a == 1.0)
        && f("beta").is_none_or(|b| b == 1.0)
        && attr_i(n, "transA").is_none_or(|t| t == 0)
}

fn transpose(t: &FloatTensor) -> FloatTensor {
    let (r, c) = (t.dims[0], t.dims[1]);
    let mut values = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            values[j * r + i] = t.values[i * c + j];
        }
    }
    FloatTensor {
        dims: vec![c, r],
        values,
    }
}

/// IEEE binary16 bits of `x`, rounded to nearest even (overflow to ±∞, NaN kept).
pub fn f32_to_f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let mant = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal (or zero): shift the implicit bit in, round to nearest even.
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1u32 << shift) - 1);
        let mut h = m >> shift;
        if rest > half || (rest == half && h & 1 == 1) {
            h += 1;
        }
        return sign | h as u16;
    }
    let mut h = ((e as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        h += 1; // may carry into the exponent, which is the right result
    }
    sign | h as u16
}

/// A copy of `model` where the named layers compute in FP16: their float weights and
/// biases are stored as FLOAT16, their activation inputs are cast to FLOAT16 in front of
/// them and their output is cast back to FLOAT after them.
pub fn layers_to_fp16(
    model: &pb::ModelProto,
    layers: &[&Layer],
) -> Result<pb::ModelProto, QuantError> {
    let out = model.clone();
    let g0 = graph(model)?;
    let names: HashSet<&str> = layers.iter().map(|l| l.node.as_str()).collect();
    let mut inits = g0.initializer.clone();
    let mut nodes = Vec::with_capacity(g0.node.len() + 3 * layers.len());
    let cast = |name: String, input: String, output: String, to: i64| pb::NodeProto {
        op_type: "Cast".into(),
        name,
        input: vec![input],
        output: vec![output],
        attribute: vec![pb::AttributeProto {
            name: "to".into(),
            r#type: 2,
            i: to,
            ..Default::default()
        }],
        ..Default::default()
    };
    for n in &g0.node {
        let node_name = if n.name.is_empty() {
            n.output.first().cloned().unwrap_or_default()
        } else {
            n.name.clone()
        };
        if !names.contains(node_name.as_str()) {
            nodes.push(n.clone());
            continue;
        }
        let mut n = n.clone();
        // tract cannot run an FP16 Gemm; a plain one (alpha = beta = 1, no transA) is the
        // same MatMul + Add, which it runs in FP16.
        let gemm_as_matmul = n.op_type == "Gemm" && plain_gemm(&n);
        let trans_b = attr_i(&n, "transB") == Some(1);
        let mut transposed_b = false;
        for (slot, inp) in n.input.iter_mut().enumerate() {
            if inp.is_empty() {
                continue;
            }
            if let Some(mut t) = float_initializer(g0, inp) {
                if gemm_as_matmul && slot == 1 && trans_b && t.dims.len() == 2 {
                    t = transpose(&t);
                    transposed_b = true;
                }
                let name = format!(
                    "{inp}_fp16{}",
                    if transposed_b && slot == 1 { "_t" } else { "" }
                );
                if !inits.iter().any(|i| i.name == name) {
                    inits.push(tensor(
                        &name,
                        dt::FLOAT16,
                        t.dims.iter().map(|&d| d as i64).collect(),
                        t.values
                            .iter()
                            .flat_map(|v| f32_to_f16_bits(*v).to_le_bytes())
                            .collect(),
                    ));
                }
                *inp = name;
            } else {
                let casted = format!("{inp}_to_fp16_{node_name}_{slot}");
                nodes.push(cast(
                    format!("{node_name}_cast_input_{slot}"),
                    inp.clone(),
                    casted.clone(),
                    dt::FLOAT16 as i64,
                ));
                *inp = casted;
            }
        }
        let mut after = Vec::new();
        if gemm_as_matmul {
            let y = n.output.first().cloned().unwrap_or_default();
            let mm = format!("{y}_matmul_fp16");
            let mut matmul = pb::NodeProto {
                op_type: "MatMul".into(),
                name: format!("{node_name}_matmul"),
                input: n.input.iter().take(2).cloned().collect(),
                output: vec![mm.clone()],
                ..Default::default()
            };
            let mut last = mm;
            if let Some(bias) = n.input.get(2).filter(|b| !b.is_empty()) {
                let added = format!("{y}_add_fp16");
                nodes.push(std::mem::take(&mut matmul));
                nodes.push(pb::NodeProto {
                    op_type: "Add".into(),
                    name: format!("{node_name}_add"),
                    input: vec![last, bias.clone()],
                    output: vec![added.clone()],
                    ..Default::default()
                });
                last = added;
            } else {
                nodes.push(matmul);
            }
            nodes.push(cast(
                format!("{node_name}_cast_output_0"),
                last,
                y,
                dt::FLOAT as i64,
            ));
            continue;
        }
        for (k, o) in n.output.iter_mut().enumerate() {
            let y = o.clone();
            *o = format!("{y}_fp16");
            after.push(cast(
                format!("{node_name}_cast_output_{k}"),
                o.clone(),
                y,
                dt::FLOAT as i64,
            ));
        }
        nodes.push(n);
        nodes.extend(after);
    }
    replace_graph(out, nodes, inits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_qparams_follow_onnxruntime() {
        // compute_scale_zp(0, 6, 0, 255): scale 6/255, zero point 0.
        let (s, z) = act_qparams(Range { min: 0.0, max: 6.0 });
        assert_eq!((s, z), ((6.0f64 / 255.0) as f32, 0));
        // (-1, 3): scale 4/255, zp round(1 / (4/255)) = round(63.75) = 64.
        let (s, z) = act_qparams(Range {
            min: -1.0,
            max: 3.0,
        });
        assert_eq!(z, 64);
        assert!((s as f64 - 4.0 / 255.0).abs() < 1e-9);
        // Degenerate range.
        assert_eq!(act_qparams(Range { min: 0.0, max: 0.0 }), (1.0, 0));
    }

    #[test]
    fn f16_rounding_matches_ieee() {
        // Exact values, round-to-nearest-even at a tie, overflow, subnormals.
        for (x, h) in [
            (1.0f32, 0x3c00u16),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (1e6, 0x7c00),
            (0.0, 0),
            (1.0 + 1.0 / 2048.0, 0x3c00), // tie → even (down)
            (1.0 + 3.0 / 2048.0, 0x3c02), // tie → even (up)
            (5.960_464_5e-8, 0x0001),     // smallest subnormal
            (6.103_515_6e-5, 0x0400),     // smallest normal
        ] {
            assert_eq!(f32_to_f16_bits(x), h, "{x}");
        }
        assert!(f32_to_f16_bits(f32::NAN) & 0x7c00 == 0x7c00);
    }

    #[test]
    fn weights_quantize_per_output_channel() {
        let w = FloatTensor {
            dims: vec![2, 3],
            values: vec![1.0, -0.5, 0.25, 100.0, 50.0, -25.0],
        };
        let (scales, q) = quantize_weight(&w, 0);
        assert_eq!(scales, vec![1.0 / 127.0, 100.0 / 127.0]);
        assert_eq!(q, vec![127, -64, 32, 127, 64, -32]);
        // A per-tensor scale would have zeroed the first row; per channel keeps ~42 dB.
        let db = weight_sqnr_db(&w, 0).unwrap();
        assert!(db > 40.0, "{db}");
    }
}

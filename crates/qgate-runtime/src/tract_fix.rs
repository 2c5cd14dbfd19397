//! Graph rewrites that make tract compute what the ONNX specification defines where tract
//! 0.23 does not. Each rewrite is exact (onnxruntime gives the same outputs before and
//! after) and is recorded in the model's provenance.
//!
//! **Quantized Softmax.** tract's declutter pass folds `DequantizeLinear → … →
//! QuantizeLinear` chains of element-wise ops into a 256-entry lookup table, and it takes
//! `Softmax`/`LogSoftmax`/`Hardmax` for element-wise (their axes map one to one). A table
//! built one code at a time normalises each code alone: every class gets Q(1.0) (Softmax)
//! or the zero point (LogSoftmax), so argmax answers class 0 for every sample. onnxruntime's
//! QDQ quantizer writes exactly that chain around a final Softmax (PaddleClas exports add
//! one by default). The rewrite replaces such a `QuantizeLinear` by its definition in float
//! ops — `Cast(Min(Max(Round(x / scale) + zp, lo), hi))`, Round being half to even as in
//! QuantizeLinear — under the same output name, so tract no longer sees a chain to fold
//! and runs the Softmax in float.

use std::collections::HashMap;

use tract_onnx::pb;

/// Ops whose output element depends on a whole row, which tract 0.23 folds as if element-wise.
const ROW_OPS: &[&str] = &["Softmax", "LogSoftmax", "Hardmax"];

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
/// `Round` exists from opset 11.
const ROUND_OPSET: i64 = 11;

/// Applies the rewrites to `model`; returns one sentence per rewrite kind applied (empty:
/// nothing to change).
pub fn rewrite_for_tract(model: &mut pb::ModelProto) -> Vec<String> {
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    let Some(g) = model.graph.as_mut() else {
        return Vec::new();
    };
    let rewritten = emulate_quantize_after_softmax(g, opset);
    if rewritten.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} QuantizeLinear after a Softmax computed in float ops ({}): tract 0.23 would fold it into a per-element lookup table that loses the normalisation",
        rewritten.len(),
        rewritten.join(", ")
    )]
}

/// A scalar constant: initializer or `Constant` node output, as f64, with its data type.
fn scalar_constants(g: &pb::GraphProto) -> HashMap<String, (i32, f64)> {
    let mut out = HashMap::new();
    for t in &g.initializer {
        if let Some(v) = scalar(t) {
            out.insert(t.name.clone(), (t.data_type, v));
        }
    }
    for n in g.node.iter().filter(|n| n.op_type == "Constant") {
        let t = n
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref());
        if let (Some(t), Some(o)) = (t, n.output.first()) {
            if let Some(v) = scalar(t) {
                out.insert(o.clone(), (t.data_type, v));
            }
        }
    }
    out
}

/// The value of a one-element float, uint8 or int8 tensor.
fn scalar(t: &pb::TensorProto) -> Option<f64> {
    if t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    let raw = &t.raw_data;
    match t.data_type {
        FLOAT if raw.len() == 4 => {
            Some(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as f64)
        }
        FLOAT => t.float_data.first().map(|&v| v as f64),
        UINT8 if raw.len() == 1 => Some(raw[0] as f64),
        INT8 if raw.len() == 1 => Some(raw[0] as i8 as f64),
        UINT8 | INT8 => t.int32_data.first().map(|&v| v as f64),
        _ => None,
    }
}

/// A QuantizeLinear to rewrite: its index, input, output, scale, zero-point type and value.
struct Plan {
    index: usize,
    x: String,
    y: String,
    scale: f64,
    zp_type: i32,
    zp: f64,
}

/// Rewrites every per-tensor QuantizeLinear that a row op feeds (directly or through ops
/// with one non-constant input); returns the rewritten nodes' names.
fn emulate_quantize_after_softmax(g: &mut pb::GraphProto, opset: i64) -> Vec<String> {
    if opset < ROUND_OPSET {
        return Vec::new();
    }
    let plans = find_quantize_after_row_ops(g);
    let mut names = Vec::new();
    // Back to front, so earlier indices stay valid while nodes are spliced in.
    for plan in plans.into_iter().rev() {
        names.push(emulate(g, plan));
    }
    names.reverse();
    names
}

/// The QuantizeLinear nodes a row op feeds, with constant per-tensor scale and zero point.
fn find_quantize_after_row_ops(g: &pb::GraphProto) -> Vec<Plan> {
    let consts = scalar_constants(g);
    let is_const = |t: &str| consts.contains_key(t) || g.initializer.iter().any(|i| i.name == t);
    let producer: HashMap<&str, &pb::NodeProto> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let fed_by_row_op = |start: &str| -> bool {
        let mut t = start;
        for _ in 0..g.node.len() {
            let Some(p) = producer.get(t) else {
                return false;
            };
            if ROW_OPS.contains(&p.op_type.as_str()) {
                return true;
            }
            if p.op_type == "DequantizeLinear" {
                return false;
            }
            let dynamic: Vec<&String> = p
                .input
                .iter()
                .filter(|i| !i.is_empty() && !is_const(i))
                .collect();
            match dynamic.as_slice() {
                [one] => t = one.as_str(),
                _ => return false,
            }
        }
        false
    };
    let mut plans = Vec::new();
    for (index, n) in g.node.iter().enumerate() {
        if n.op_type != "QuantizeLinear" || !(n.domain.is_empty() || n.domain == "ai.onnx") {
            continue;
        }
        let (Some(x), Some(y)) = (n.input.first(), n.output.first()) else {
            continue;
        };
        let Some(&(FLOAT, scale)) = n.input.get(1).and_then(|s| consts.get(s)) else {
            continue;
        };
        let zp = match n.input.get(2).filter(|z| !z.is_empty()) {
            None => Some((UINT8, 0.0)),
            Some(z) => consts.get(z).copied(),
        };
        let Some((zp_type @ (UINT8 | INT8), zp)) = zp else {
            continue;
        };
        if scale > 0.0 && fed_by_row_op(x) {
            plans.push(Plan {
                index,
                x: x.clone(),
                y: y.clone(),
                scale,
                zp_type,
                zp,
            });
        }
    }
    plans
}

/// Replaces the planned QuantizeLinear by its float definition; returns its name.
fn emulate(g: &mut pb::GraphProto, plan: Plan) -> String {
    let q = &g.node[plan.index];
    let p = if q.name.is_empty() {
        plan.y.clone()
    } else {
        q.name.clone()
    };
    let (lo, hi) = if plan.zp_type == UINT8 {
        (0.0, 255.0)
    } else {
        (-128.0, 127.0)
    };
    let t = |s: &str| format!("{p}_qgate_{s}");
    let c = |suffix: &str, v: f64| pb::TensorProto {
        name: t(suffix),
        data_type: FLOAT,
        raw_data: (v as f32).to_le_bytes().to_vec(),
        ..Default::default()
    };
    let node = |op: &str, inputs: Vec<String>, out: String| pb::NodeProto {
        op_type: op.into(),
        name: t(&op.to_ascii_lowercase()),
        input: inputs,
        output: vec![out],
        ..Default::default()
    };
    let mut cast = node("Cast", vec![t("min_out")], plan.y);
    cast.attribute.push(pb::AttributeProto {
        name: "to".into(),
        r#type: 2, // INT
        i: plan.zp_type as i64,
        ..Default::default()
    });
    let nodes = vec![
        node("Div", vec![plan.x, t("scale")], t("div_out")),
        node("Round", vec![t("div_out")], t("round_out")),
        node("Add", vec![t("round_out"), t("zero_point")], t("add_out")),
        node("Max", vec![t("add_out"), t("lo")], t("max_out")),
        node("Min", vec![t("max_out"), t("hi")], t("min_out")),
        cast,
    ];
    g.initializer.extend([
        c("scale", plan.scale),
        c("zero_point", plan.zp),
        c("lo", lo),
        c("hi", hi),
    ]);
    g.node.splice(plan.index..=plan.index, nodes);
    p
}

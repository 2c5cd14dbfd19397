//! What the log keeps of a request's tensors: a digest of the inputs (and the inputs
//! themselves when asked, size-capped), the outputs as top-k indices and scores or in full,
//! and the top-1 agreement of a paired answer.

use qgate_core::{Array, ArrayData};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{LogConfig, OutputLog};
use crate::v2;

/// SHA-256 over each input's name, datatype, shape and little-endian bytes, in request
/// order: equal digests mean byte-identical inputs.
pub fn input_digest(inputs: &[(&str, &Array)]) -> (String, usize) {
    let mut h = Sha256::new();
    let mut bytes = 0;
    for (name, a) in inputs {
        let raw = v2::raw_bytes(&a.data);
        bytes += raw.len();
        h.update(name.as_bytes());
        h.update([0u8]);
        h.update(v2::datatype(&a.data).as_bytes());
        for d in &a.shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update((raw.len() as u64).to_le_bytes());
        h.update(&raw);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    (hex, bytes)
}

/// The inputs as a V2 `inputs` list, when asked for and not larger than the cap.
pub fn inputs_json(inputs: &[(&str, &Array)], bytes: usize, cfg: &LogConfig) -> Option<String> {
    if !cfg.store_inputs || bytes > cfg.max_input_bytes {
        return None;
    }
    let list: Vec<Value> = inputs.iter().map(|(n, a)| v2::tensor_json(n, a)).collect();
    Some(Value::Array(list).to_string())
}

/// Outputs as the log keeps them: `{"NAME": {"datatype", "shape", …}}` with either `data`
/// (full, or any integer/text output) or `top_k` and `scores` (per row, best first).
pub fn outputs_json(outputs: &[(String, Array)], cfg: &LogConfig) -> String {
    let mut m = Map::new();
    for (name, a) in outputs {
        let mut o = Map::new();
        o.insert("datatype".into(), json!(v2::datatype(&a.data)));
        o.insert("shape".into(), json!(a.shape));
        let floats = matches!(a.data, ArrayData::F32(_) | ArrayData::F64(_));
        match (cfg.outputs, floats, a.to_f64()) {
            (OutputLog::Topk, true, Some(v)) if !a.shape.is_empty() => {
                let (idx, scores) = top_k(&v, a.row_len().max(1), cfg.top_k);
                o.insert("top_k".into(), json!(idx));
                o.insert(
                    "scores".into(),
                    Value::Array(
                        scores
                            .iter()
                            .map(|r| v2::json_data(&ArrayData::F64(r.clone())))
                            .collect(),
                    ),
                );
            }
            _ => {
                o.insert("data".into(), v2::json_data(&a.data));
            }
        }
        m.insert(name.clone(), Value::Object(o));
    }
    Value::Object(m).to_string()
}

/// Per row of `row` values: the indices of the `k` largest (NaN last) and their values.
fn top_k(values: &[f64], row: usize, k: usize) -> (Vec<Vec<usize>>, Vec<Vec<f64>>) {
    let mut idx = Vec::new();
    let mut scores = Vec::new();
    for r in values.chunks(row) {
        let mut order: Vec<usize> = (0..r.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (r[a], r[b]);
            match (x.is_nan(), y.is_nan()) {
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
            }
        });
        order.truncate(k);
        scores.push(order.iter().map(|&i| r[i]).collect());
        idx.push(order);
    }
    (idx, scores)
}

/// Rows compared and rows whose argmax agreed, on the first floating-point output of rank
/// ≥ 2 both answers share (the class scores); `None` when there is none.
pub fn top1_agreement(a: &[Array], b: &[Array]) -> Option<(u64, u64)> {
    let (x, y) = a.iter().zip(b).find(|(x, y)| {
        x.shape.len() >= 2
            && x.shape == y.shape
            && matches!(x.data, ArrayData::F32(_) | ArrayData::F64(_))
    })?;
    let (xv, yv) = (x.to_f64()?, y.to_f64()?);
    let row = x.row_len().max(1);
    let argmax = |r: &[f64]| {
        r.iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0
    };
    let mut rows = 0;
    let mut agreed = 0;
    for (p, q) in xv.chunks(row).zip(yv.chunks(row)) {
        rows += 1;
        if argmax(p) == argmax(q) {
            agreed += 1;
        }
    }
    Some((rows, agreed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_rows_and_puts_nan_last() {
        let (i, s) = top_k(&[0.1, f64::NAN, 0.7, 0.2, 3.0, 1.0, 2.0, 0.0], 4, 2);
        assert_eq!(i, vec![vec![2, 3], vec![0, 2]]);
        assert_eq!(s, vec![vec![0.7, 0.2], vec![3.0, 2.0]]);
    }

    #[test]
    fn agreement_counts_rows() {
        let a = Array::from_f32(vec![2, 2], vec![1.0, 0.0, 0.0, 1.0]).expect("shape");
        let b = Array::from_f32(vec![2, 2], vec![0.9, 0.1, 0.8, 0.2]).expect("shape");
        assert_eq!(top1_agreement(&[a], &[b]), Some((2, 1)));
    }
}

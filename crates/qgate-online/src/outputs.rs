//! The log's `outputs` / `shadow_outputs` JSON read back: each output either in full
//! (`data`) or as per-row `top_k` indices and `scores` (docs/serve.md, "The log").

use qgate_core::{Array, ArrayData};
use serde_json::Value;

/// One logged output.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    /// Every value (`outputs = "full"`, or an integer output).
    Full(Array),
    /// The `k` best classes of each row, best first, and their scores.
    TopK {
        shape: Vec<usize>,
        top_k: Vec<Vec<usize>>,
    },
}

impl Logged {
    /// Rows (the first axis).
    pub fn rows(&self) -> usize {
        match self {
            Logged::Full(a) => a.n_rows(),
            Logged::TopK { top_k, .. } => top_k.len(),
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Parses one `outputs` column: `(name, output)` in the order logged. A text output
/// (`BYTES`) is left out; anything malformed is an error naming the output.
pub fn parse(text: &str) -> Result<Vec<(String, Logged)>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("expected an object keyed by output name".into());
    };
    let mut out = Vec::new();
    for (name, o) in m {
        let shape: Vec<usize> = o["shape"]
            .as_array()
            .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
            .ok_or_else(|| format!("output '{name}': no integer `shape`"))?;
        let datatype = o["datatype"].as_str().unwrap_or_default();
        if datatype == "BYTES" {
            continue;
        }
        if let Some(top) = o.get("top_k") {
            let top_k: Vec<Vec<usize>> = top
                .as_array()
                .and_then(|rows| {
                    rows.iter()
                        .map(|r| {
                            r.as_array()?
                                .iter()
                                .map(|i| i.as_u64().map(|i| i as usize))
                                .collect()
                        })
                        .collect()
                })
                .ok_or_else(|| format!("output '{name}': `top_k` is not rows of indices"))?;
            out.push((name, Logged::TopK { shape, top_k }));
            continue;
        }
        let data = o["data"]
            .as_array()
            .ok_or_else(|| format!("output '{name}': neither `data` nor `top_k`"))?;
        let values: Vec<f64> = data
            .iter()
            .map(number)
            .collect::<Option<_>>()
            .ok_or_else(|| format!("output '{name}': `data` holds a value that is not a number"))?;
        let integer = datatype.starts_with("INT") || datatype.starts_with("UINT");
        // A float32 value is written as its shortest decimal: rounding that back to f32
        // recovers the model's value exactly, as `qgate compare` reads it.
        let data = if integer {
            ArrayData::I64(values.iter().map(|&v| v as i64).collect())
        } else if datatype == "FP32" || datatype == "FP16" {
            ArrayData::F32(values.iter().map(|&v| v as f32).collect())
        } else {
            ArrayData::F64(values)
        };
        let a = Array::new(shape.clone(), data)
            .map_err(|e| format!("output '{name}': shape {shape:?}: {e}"))?;
        out.push((name, Logged::Full(a)));
    }
    Ok(out)
}

/// The top-1 class of each row of a logged score output (first on ties; `None` for a row
/// with a non-finite score).
pub fn top1(o: &Logged) -> Vec<Option<usize>> {
    match o {
        Logged::TopK { top_k, .. } => top_k.iter().map(|r| r.first().copied()).collect(),
        Logged::Full(a) => match a.to_f64() {
            Some(v) if a.shape.len() >= 2 => v
                .chunks(a.row_len().max(1))
                .map(qgate_core::metrics::argmax)
                .collect(),
            Some(v) if a.shape.len() == 1 && matches!(a.data, ArrayData::I64(_)) => v
                .iter()
                .map(|&x| (x >= 0.0).then_some(x as usize))
                .collect(),
            _ => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms() {
        let o = parse(
            r#"{"logits": {"datatype": "FP32", "shape": [2, 3], "top_k": [[2, 0], [1, 2]], "scores": [[3.0, 1.0], [2.0, "NaN"]]},
                "full": {"datatype": "FP32", "shape": [1, 3], "data": [0.1, "Infinity", 0.3]},
                "label": {"datatype": "INT64", "shape": [1], "data": [4]}}"#,
        )
        .expect("parses");
        let get = |n: &str| &o.iter().find(|(k, _)| k == n).expect("present").1;
        assert_eq!(top1(get("logits")), vec![Some(2), Some(1)]);
        assert_eq!(top1(get("full")), vec![None]);
        assert_eq!(top1(get("label")), vec![Some(4)]);
        assert!(parse(r#"{"x": {"shape": [1], "data": ["a"]}}"#).is_err());
    }
}

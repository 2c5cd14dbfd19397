//! From production back to the lab: the logged inputs as an `.npz` data set that
//! `qgate compare`, `check` and `sensitivity` read (`qgate analyze --export-inputs`).

use std::path::Path;

use qgate_core::{Array, ArrayData};
use serde::Serialize;
use serde_json::Value;

use crate::OnlineError;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Exported {
    pub path: String,
    /// Samples written (rows of every input).
    pub samples: u64,
    /// Requests whose inputs the log did not keep (`store_inputs` off or over
    /// `max_input_bytes`), left out.
    pub without_inputs: u64,
    /// Samples with a joined label; `labels` is written only when every sample has one
    /// (else `label_outcome`, −1 where none arrived).
    pub labelled: u64,
    /// Samples whose mirrored answer disagreed at top-1 (`shadow_disagrees` = 1).
    pub disagreements: u64,
    /// The arrays written.
    pub arrays: Vec<String>,
}

fn tensor(t: &Value) -> Result<(String, Array), String> {
    let name = t["name"]
        .as_str()
        .ok_or("an input without a name")?
        .to_string();
    let shape: Vec<usize> = t["shape"]
        .as_array()
        .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect())
        .ok_or_else(|| format!("input '{name}': no shape"))?;
    let data = t["data"]
        .as_array()
        .ok_or_else(|| format!("input '{name}': no data"))?;
    let f = |v: &Value| -> Option<f64> {
        match v {
            Value::String(s) if s == "NaN" => Some(f64::NAN),
            Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
            Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => v.as_f64(),
        }
    };
    let nums = || -> Result<Vec<f64>, String> {
        data.iter()
            .map(f)
            .collect::<Option<_>>()
            .ok_or_else(|| format!("input '{name}': a value is not a number"))
    };
    let dt = t["datatype"].as_str().unwrap_or("FP32");
    let d = match dt {
        "FP32" | "FP16" => ArrayData::F32(nums()?.iter().map(|&v| v as f32).collect()),
        "FP64" => ArrayData::F64(nums()?),
        "INT8" => ArrayData::I8(nums()?.iter().map(|&v| v as i8).collect()),
        "INT16" => ArrayData::I16(nums()?.iter().map(|&v| v as i16).collect()),
        "INT32" => ArrayData::I32(nums()?.iter().map(|&v| v as i32).collect()),
        "INT64" => ArrayData::I64(nums()?.iter().map(|&v| v as i64).collect()),
        "UINT8" => ArrayData::U8(nums()?.iter().map(|&v| v as u8).collect()),
        "BOOL" => ArrayData::Bool(nums()?.iter().map(|&v| v != 0.0).collect()),
        "BYTES" => ArrayData::Str(
            data.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("input '{name}': BYTES data must be strings"))?,
        ),
        other => return Err(format!("input '{name}': datatype {other} is not exported")),
    };
    let a = Array::new(shape, d).map_err(|e| format!("input '{name}': {e}"))?;
    Ok((name, a))
}

/// Writes `rows` — `(request id, inputs JSON, label, shadow disagreed)` — to `path`.
pub fn write(
    path: &Path,
    rows: &[(String, String, Option<i64>, Option<bool>)],
    without_inputs: u64,
) -> Result<Exported, OnlineError> {
    let mut names: Vec<String> = Vec::new();
    let mut parts: Vec<Vec<Array>> = Vec::new();
    let (mut ids, mut labels, mut disagree) = (Vec::new(), Vec::new(), Vec::new());
    for (id, text, label, dis) in rows {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| OnlineError::Data(format!("request '{id}': stored inputs: {e}")))?;
        let list = v.as_array().ok_or_else(|| {
            OnlineError::Data(format!("request '{id}': stored inputs are not a V2 list"))
        })?;
        let mut rows_here = None;
        let mut names_here: Vec<String> = Vec::new();
        for t in list {
            let (name, a) =
                tensor(t).map_err(|e| OnlineError::Data(format!("request '{id}': {e}")))?;
            let r = a.n_rows();
            if names_here.contains(&name) {
                return Err(OnlineError::Data(format!(
                    "request '{id}': input '{name}' is stored twice"
                )));
            }
            names_here.push(name.clone());
            if *rows_here.get_or_insert(r) != r {
                return Err(OnlineError::Data(format!(
                    "request '{id}': inputs hold different numbers of rows"
                )));
            }
            match names.iter().position(|n| *n == name) {
                Some(i) => parts[i].push(a),
                None if ids.is_empty() => {
                    names.push(name);
                    parts.push(vec![a]);
                }
                None => {
                    return Err(OnlineError::Data(format!(
                        "request '{id}': input '{name}' is not in the earlier requests"
                    )))
                }
            }
        }
        if names_here.len() != names.len() {
            let missing: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| !names_here.iter().any(|h| h == n))
                .collect();
            return Err(OnlineError::Data(format!(
                "request '{id}': its stored inputs lack {} that earlier requests hold: the requests cannot form one data set",
                missing.join(", ")
            )));
        }
        let r = rows_here.unwrap_or(0);
        for k in 0..r {
            ids.push(if r == 1 {
                id.clone()
            } else {
                format!("{id}#{k}")
            });
            labels.push(if r == 1 { label.unwrap_or(-1) } else { -1 });
            disagree.push(match dis {
                Some(true) => 1i64,
                Some(false) => 0,
                None => -1,
            });
        }
    }
    let mut arrays: Vec<(String, Array)> = Vec::new();
    for (name, p) in names.iter().zip(&parts) {
        let a = Array::concat_rows(p).ok_or_else(|| {
            OnlineError::Data(format!(
                "input '{name}' changed shape or type between requests: cannot stack"
            ))
        })?;
        arrays.push((name.clone(), a));
    }
    let n = ids.len();
    let labelled = labels.iter().filter(|&&l| l >= 0).count() as u64;
    let label_key = if labelled == n as u64 && n > 0 {
        "labels"
    } else {
        "label_outcome"
    };
    let col = |v: Vec<i64>| Array::new(vec![n], ArrayData::I64(v)).expect("one value per sample");
    arrays.push((
        "ids".into(),
        Array::new(vec![n], ArrayData::Str(ids)).expect("ids"),
    ));
    arrays.push((label_key.into(), col(labels)));
    let disagreements = disagree.iter().filter(|&&d| d == 1).count() as u64;
    arrays.push(("shadow_disagrees".into(), col(disagree)));
    let file = std::fs::File::create(path)
        .map_err(|e| OnlineError::Data(format!("{}: {e}", path.display())))?;
    let refs: Vec<(&str, &Array)> = arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    qgate_data::npy::write_npz(std::io::BufWriter::new(file), &refs)
        .map_err(|e| OnlineError::Data(format!("{}: {e}", path.display())))?;
    Ok(Exported {
        path: path.display().to_string(),
        samples: n as u64,
        without_inputs,
        labelled,
        disagreements,
        arrays: arrays.into_iter().map(|(k, _)| k).collect(),
    })
}

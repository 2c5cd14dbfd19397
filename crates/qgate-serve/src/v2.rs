//! The Open Inference Protocol V2 REST bodies: an inference request read from JSON or from
//! the binary tensor data extension (a JSON header of `Inference-Header-Content-Length`
//! bytes followed by the raw tensors, little-endian, in the order of the inputs that carry
//! `parameters.binary_data_size`), and an answer written the way the client asked (an
//! output is binary when its `parameters.binary_data` says so, else when the request's
//! `parameters.binary_data_output` does).

use qgate_core::{Array, ArrayData, ElemType};
use qgate_data::npy::f16_to_f32;
use qgate_runtime::{v2_datatype, v2_elem_type};
use serde_json::{json, Map, Value};

/// A request the gateway refuses, with the reason the client reads in `{"error": …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest(pub String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(message: impl Into<String>) -> Result<T, BadRequest> {
    Err(BadRequest(message.into()))
}

/// One input tensor of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub array: Array,
}

/// One output the client asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data` when given.
    pub binary: Option<bool>,
}

/// A parsed `POST …/infer` body.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The body's `id`, when given.
    pub id: Option<String>,
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for, in order; empty: every output.
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`: answer every output in binary unless it says otherwise.
    pub binary_output: bool,
}

/// The V2 name of an array's element type. Float16 data is held widened to float32 and
/// answered as FP32.
pub fn datatype(a: &ArrayData) -> &'static str {
    v2_datatype(a.elem_type())
}

/// Reads a request body. `header_len` is the `Inference-Header-Content-Length` header.
pub fn parse_request(body: &[u8], header_len: Option<usize>) -> Result<InferRequest, BadRequest> {
    let (head, mut binary) = match header_len {
        Some(n) if n > body.len() => {
            return bad(format!(
                "Inference-Header-Content-Length is {n} but the body has {} bytes",
                body.len()
            ))
        }
        Some(n) => (&body[..n], &body[n..]),
        None => (body, &body[body.len()..]),
    };
    let v: Value = serde_json::from_slice(head)
        .map_err(|e| BadRequest(format!("the request body is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object() else {
        return bad("the request body must be a JSON object with an `inputs` list");
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(check_id(s)?),
        Some(other) => return bad(format!("`id` must be a string, not {other}")),
    };
    let Some(list) = obj.get("inputs").and_then(Value::as_array) else {
        return bad("the request has no `inputs` list");
    };
    if list.is_empty() {
        return bad("`inputs` is empty");
    }
    let mut inputs: Vec<NamedTensor> = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let tensor = parse_input(i, t, &mut binary)?;
        if inputs.iter().any(|x| x.name == tensor.name) {
            return bad(format!("input '{}' is given twice", tensor.name));
        }
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return bad(format!(
            "{} bytes of binary data follow the inputs that declare binary_data_size",
            binary.len()
        ));
    }
    let mut outputs = Vec::new();
    if let Some(list) = obj.get("outputs") {
        let Some(list) = list.as_array() else {
            return bad("`outputs` must be a list");
        };
        for o in list {
            let Some(name) = o.get("name").and_then(Value::as_str) else {
                return bad("an entry of `outputs` has no `name`");
            };
            let binary = match o.pointer("/parameters/binary_data") {
                None => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => {
                    return bad(format!(
                        "output '{name}': binary_data must be true or false"
                    ))
                }
            };
            if o.pointer("/parameters/classification").is_some() {
                return bad(format!(
                    "output '{name}': the classification extension is not supported; ask for the \
                     tensor"
                ));
            }
            outputs.push(RequestedOutput {
                name: name.to_string(),
                binary,
            });
        }
    }
    let binary_output = match obj
        .get("parameters")
        .and_then(|p| p.get("binary_data_output"))
    {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return bad("parameters.binary_data_output must be true or false"),
    };
    Ok(InferRequest {
        id,
        inputs,
        outputs,
        binary_output,
    })
}

/// A request id must travel unchanged in the `x-request-id` header: 1 to 256 visible
/// ASCII characters (spaces inside only), or a client would read back another id than the
/// one logged and its outcomes would not join.
pub fn check_id(id: &str) -> Result<String, BadRequest> {
    let visible = id.bytes().all(|b| (0x21..=0x7e).contains(&b) || b == b' ');
    if id.is_empty() || id.len() > 256 || !visible || id.trim() != id {
        return bad(format!(
            "request id {id:?}: expected 1 to 256 visible ASCII characters (spaces only inside)"
        ));
    }
    Ok(id.to_string())
}

fn parse_input(i: usize, t: &Value, binary: &mut &[u8]) -> Result<NamedTensor, BadRequest> {
    let Some(name) = t.get("name").and_then(Value::as_str) else {
        return bad(format!("input #{i} has no `name`"));
    };
    let what = |m: String| BadRequest(format!("input '{name}': {m}"));
    let shape: Vec<usize> = t
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().map(|d| d.as_u64().map(|x| x as usize)).collect())
        .ok_or_else(|| what("`shape` must be a list of sizes ≥ 0".into()))?;
    let Some(dt) = t.get("datatype").and_then(Value::as_str) else {
        return Err(what("no `datatype`".into()));
    };
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| what(format!("shape {shape:?} is too large")))?;
    let size = t.pointer("/parameters/binary_data_size");
    let data = match (size, t.get("data")) {
        (Some(_), Some(_)) => {
            return Err(what(
                "gives both `data` and parameters.binary_data_size".into(),
            ))
        }
        (Some(n), None) => {
            let n = n
                .as_u64()
                .ok_or_else(|| what("binary_data_size must be a byte count".into()))?
                as usize;
            if n > binary.len() {
                return Err(what(format!(
                    "binary_data_size is {n} but only {} bytes of binary data remain",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(n);
            *binary = rest;
            from_bytes(dt, mine, count).map_err(what)?
        }
        (None, Some(v)) => from_json(dt, v, count).map_err(what)?,
        (None, None) => return Err(what("no `data` and no binary_data_size".into())),
    };
    let array = Array::new(shape, data).map_err(|e| what(e.to_string()))?;
    Ok(NamedTensor {
        name: name.to_string(),
        array,
    })
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flatten(x, out)),
        other => out.push(other),
    }
}

/// Typed values from JSON `data` (nested or flat), checked against the shape's count.
fn from_json(dt: &str, v: &Value, count: usize) -> Result<ArrayData, String> {
    let mut flat = Vec::new();
    flatten(v, &mut flat);
    if flat.len() != count {
        return Err(format!(
            "the shape holds {count} values but `data` has {}",
            flat.len()
        ));
    }
    let float = |x: &Value| -> Result<f64, String> {
        match x {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            Value::String(s) if s == "NaN" || s == "nan" => Ok(f64::NAN),
            Value::String(s) if s == "Infinity" || s == "inf" => Ok(f64::INFINITY),
            Value::String(s) if s == "-Infinity" || s == "-inf" => Ok(f64::NEG_INFINITY),
            other => Err(format!("{other} is not a number ({dt})")),
        }
    };
    macro_rules! ints {
        ($t:ty, $variant:ident) => {
            ArrayData::$variant(
                flat.iter()
                    .map(|x| {
                        let n = x.as_i64().map(i128::from).or(x.as_u64().map(i128::from));
                        n.and_then(|n| <$t>::try_from(n).ok())
                            .ok_or_else(|| format!("{x} is not a {dt} value"))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    let t = v2_elem_type(dt).ok_or_else(|| format!("unknown datatype \"{dt}\""))?;
    Ok(match t {
        ElemType::F32 | ElemType::F16 => ArrayData::F32(
            flat.iter()
                .map(|x| float(x).map(|f| f as f32))
                .collect::<Result<_, _>>()?,
        ),
        ElemType::F64 => ArrayData::F64(flat.iter().map(|x| float(x)).collect::<Result<_, _>>()?),
        ElemType::I8 => ints!(i8, I8),
        ElemType::I16 => ints!(i16, I16),
        ElemType::I32 => ints!(i32, I32),
        ElemType::I64 => ints!(i64, I64),
        ElemType::U8 => ints!(u8, U8),
        ElemType::U16 => ints!(u16, U16),
        ElemType::U32 => ints!(u32, U32),
        ElemType::U64 => ints!(u64, U64),
        ElemType::Bool => ArrayData::Bool(
            flat.iter()
                .map(|x| {
                    x.as_bool()
                        .ok_or_else(|| format!("{x} is not true or false"))
                })
                .collect::<Result<_, _>>()?,
        ),
        ElemType::Str => ArrayData::Str(
            flat.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{x} is not a string (BYTES)"))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Typed values from raw little-endian bytes.
pub(crate) fn from_bytes(dt: &str, b: &[u8], count: usize) -> Result<ArrayData, String> {
    macro_rules! le {
        ($t:ty, $variant:ident) => {{
            let size = std::mem::size_of::<$t>();
            if count.checked_mul(size) != Some(b.len()) {
                return Err(format!(
                    "binary_data_size is {} bytes; the shape needs {count} × {size}",
                    b.len()
                ));
            }
            ArrayData::$variant(
                b.chunks_exact(size)
                    .map(|c| {
                        let mut a = [0u8; std::mem::size_of::<$t>()];
                        a.copy_from_slice(c);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }
    let t = v2_elem_type(dt).ok_or_else(|| format!("unknown datatype \"{dt}\""))?;
    Ok(match t {
        ElemType::F32 => le!(f32, F32),
        ElemType::F64 => le!(f64, F64),
        ElemType::F16 => {
            if count.checked_mul(2) != Some(b.len()) {
                return Err(format!(
                    "binary_data_size is {} bytes; the shape needs {count} × 2",
                    b.len()
                ));
            }
            ArrayData::F32(
                b.chunks_exact(2)
                    .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            )
        }
        ElemType::I8 => le!(i8, I8),
        ElemType::I16 => le!(i16, I16),
        ElemType::I32 => le!(i32, I32),
        ElemType::I64 => le!(i64, I64),
        ElemType::U8 => le!(u8, U8),
        ElemType::U16 => le!(u16, U16),
        ElemType::U32 => le!(u32, U32),
        ElemType::U64 => le!(u64, U64),
        ElemType::Bool => {
            if b.len() != count {
                return Err(format!(
                    "binary_data_size is {} bytes; the shape needs {count}",
                    b.len()
                ));
            }
            ArrayData::Bool(b.iter().map(|&x| x != 0).collect())
        }
        ElemType::Str => {
            // Each element takes at least its 4-byte length: more than that many is a lie.
            if count > b.len() / 4 {
                return Err(format!(
                    "the shape needs {count} BYTES elements; {} bytes cannot hold them",
                    b.len()
                ));
            }
            let mut out = Vec::with_capacity(count);
            let mut rest = b;
            while rest.len() >= 4 {
                let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if rest.len() < 4 + n {
                    return Err("a BYTES element runs past its binary data".into());
                }
                let text = std::str::from_utf8(&rest[4..4 + n]).map_err(|_| {
                    format!(
                        "BYTES element {} is not UTF-8 text; qgate relays text tensors only",
                        out.len()
                    )
                })?;
                out.push(text.to_string());
                rest = &rest[4 + n..];
            }
            if !rest.is_empty() || out.len() != count {
                return Err(format!(
                    "the binary data holds {} BYTES elements; the shape needs {count}",
                    out.len()
                ));
            }
            ArrayData::Str(out)
        }
    })
}

/// The raw little-endian bytes of an array, as the binary extension sends them.
pub fn raw_bytes(a: &ArrayData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match a {
        ArrayData::F32(v) => le!(v),
        ArrayData::F64(v) => le!(v),
        ArrayData::I8(v) => le!(v),
        ArrayData::I16(v) => le!(v),
        ArrayData::I32(v) => le!(v),
        ArrayData::I64(v) => le!(v),
        ArrayData::U8(v) => v.clone(),
        ArrayData::U16(v) => le!(v),
        ArrayData::U32(v) => le!(v),
        ArrayData::U64(v) => le!(v),
        ArrayData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        ArrayData::Str(v) => v
            .iter()
            .flat_map(|s| {
                let mut e = (s.len() as u32).to_le_bytes().to_vec();
                e.extend_from_slice(s.as_bytes());
                e
            })
            .collect(),
    }
}

/// The values as a flat JSON list (non-finite floats as the strings "NaN", "Infinity",
/// "-Infinity", which JSON cannot hold as numbers).
pub fn json_data(a: &ArrayData) -> Value {
    fn float(x: f64) -> Value {
        if x.is_nan() {
            json!("NaN")
        } else if x.is_infinite() {
            json!(if x > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            json!(x)
        }
    }
    match a {
        ArrayData::F32(v) => {
            if v.iter().all(|x| x.is_finite()) {
                json!(v)
            } else {
                Value::Array(
                    v.iter()
                        .map(|&x| {
                            if x.is_finite() {
                                json!(x)
                            } else {
                                float(x as f64)
                            }
                        })
                        .collect(),
                )
            }
        }
        ArrayData::F64(v) => Value::Array(v.iter().map(|&x| float(x)).collect()),
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
    }
}

/// A tensor as a V2 JSON object with its data inline.
pub fn tensor_json(name: &str, a: &Array) -> Value {
    json!({
        "name": name,
        "datatype": datatype(&a.data),
        "shape": a.shape,
        "data": json_data(&a.data),
    })
}

/// Every output `req` asks for must be one of `names` (checked before the model runs, so a
/// record of a 200 is never followed by a refusal).
pub fn check_requested<'a>(
    req: &InferRequest,
    names: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), BadRequest> {
    match req
        .outputs
        .iter()
        .find(|o| !names.clone().any(|n| n == o.name))
    {
        Some(o) => Err(no_such_output(&o.name, names)),
        None => Ok(()),
    }
}

fn no_such_output<'a>(name: &str, names: impl Iterator<Item = &'a str>) -> BadRequest {
    let known: Vec<&str> = names.collect();
    BadRequest(format!(
        "the model has no output '{name}' (it has: {})",
        known.join(", ")
    ))
}

/// An encoded answer: the body and, for a binary answer, the JSON header's length.
pub struct Encoded {
    pub body: Vec<u8>,
    pub header_len: Option<usize>,
}

/// The answer to `req`: `outputs` are every output of the model, in declaration order.
pub fn encode_response(
    model_name: &str,
    model_version: Option<&str>,
    id: &str,
    outputs: &[(String, Array)],
    req: &InferRequest,
) -> Result<Encoded, BadRequest> {
    let chosen: Vec<(&str, &Array, bool)> = if req.outputs.is_empty() {
        outputs
            .iter()
            .map(|(n, a)| (n.as_str(), a, req.binary_output))
            .collect()
    } else {
        req.outputs
            .iter()
            .map(|o| {
                let Some((n, a)) = outputs.iter().find(|(n, _)| *n == o.name) else {
                    return Err(no_such_output(
                        &o.name,
                        outputs.iter().map(|(n, _)| n.as_str()),
                    ));
                };
                Ok((n.as_str(), a, o.binary.unwrap_or(req.binary_output)))
            })
            .collect::<Result<_, _>>()?
    };
    let mut tail = Vec::new();
    let mut list = Vec::with_capacity(chosen.len());
    for (name, a, binary) in chosen {
        if binary {
            let bytes = raw_bytes(&a.data);
            list.push(json!({
                "name": name,
                "datatype": datatype(&a.data),
                "shape": a.shape,
                "parameters": {"binary_data_size": bytes.len()},
            }));
            tail.extend_from_slice(&bytes);
        } else {
            list.push(tensor_json(name, a));
        }
    }
    let mut head = Map::new();
    head.insert("model_name".into(), json!(model_name));
    if let Some(v) = model_version {
        head.insert("model_version".into(), json!(v));
    }
    head.insert("id".into(), json!(id));
    head.insert("outputs".into(), Value::Array(list));
    let mut body = serde_json::to_vec(&Value::Object(head)).unwrap_or_default();
    if tail.is_empty() {
        return Ok(Encoded {
            body,
            header_len: None,
        });
    }
    let n = body.len();
    body.extend_from_slice(&tail);
    Ok(Encoded {
        body,
        header_len: Some(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(shape: Vec<usize>, data: ArrayData) -> Array {
        Array::new(shape, data).expect("shape")
    }

    #[test]
    fn json_and_binary_requests_read_the_same() {
        let json_body = br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]},
            {"name":"k","shape":[2],"datatype":"INT64","data":[7,-1]}]}"#;
        let j = parse_request(json_body, None).expect("json");
        let head = br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","parameters":{"binary_data_size":16}},
            {"name":"k","shape":[2],"datatype":"INT64","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = head.to_vec();
        body.extend(raw_bytes(&ArrayData::F32(vec![1.0, 2.0, 3.0, 4.5])));
        body.extend(raw_bytes(&ArrayData::I64(vec![7, -1])));
        let b = parse_request(&body, Some(head.len())).expect("binary");
        assert_eq!(j.inputs, b.inputs);
        assert_eq!(j.id.as_deref(), Some("a"));
        assert!(b.binary_output && !j.binary_output);
    }

    #[test]
    fn refusals_name_the_tensor() {
        let cases: [(&[u8], Option<usize>, &str); 7] = [
            (b"{", None, "not valid JSON"),
            (b"[]", None, "JSON object"),
            (br#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}]}"#, None, "input 'x': the shape holds 3"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#, None, "300 is not a INT8"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP8","data":[1]}]}"#, None, "unknown datatype"),
            (br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#, Some(9000), "Inference-Header-Content-Length is 9000"),
            (br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]},{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}"#, None, "given twice"),
        ];
        for (body, len, needle) in cases {
            let e = parse_request(body, len).expect_err(needle).0;
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn answers_keep_types_and_follow_binary_requests() {
        let outs = vec![
            (
                "p".to_string(),
                arr(vec![1, 2], ArrayData::F32(vec![0.25, f32::NAN])),
            ),
            ("l".to_string(), arr(vec![1], ArrayData::I32(vec![3]))),
        ];
        let mut req = parse_request(
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"l"},{"name":"p","parameters":{"binary_data":true}}]}"#,
            None,
        )
        .expect("req");
        let e = encode_response("m", None, "r1", &outs, &req).expect("encode");
        let n = e.header_len.expect("binary");
        let head: Value = serde_json::from_slice(&e.body[..n]).expect("json");
        assert_eq!(head["outputs"][0]["datatype"], "INT32");
        assert_eq!(head["outputs"][0]["data"], json!([3]));
        assert_eq!(head["outputs"][1]["parameters"]["binary_data_size"], 8);
        let tail = &e.body[n..];
        assert_eq!(
            f32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]),
            0.25
        );
        req.outputs.clear();
        let e = encode_response("m", None, "r1", &outs, &req).expect("encode");
        assert!(e.header_len.is_none());
        let v: Value = serde_json::from_slice(&e.body).expect("json");
        assert_eq!(v["outputs"][0]["data"], json!([0.25, "NaN"]));
        req.outputs = vec![RequestedOutput {
            name: "zz".into(),
            binary: None,
        }];
        assert!(encode_response("m", None, "r", &outs, &req).is_err());
    }
}

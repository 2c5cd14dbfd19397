//! The embedded default runtime: tract (pure Rust, builds offline).
//!
//! Models are parsed once; a plan is optimised per distinct set of input shapes (in a
//! comparison: the batch size and the last, smaller batch) so that every plan sees concrete
//! shapes. `with_ignore_value_info(true)` is needed because quantized models carry symbolic
//! intermediate shapes that fail to unify; input facts then come from the data.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qgate_core::{Array, ArrayData, ElemType};
use tract_onnx::prelude::*;

use crate::onnx_info::{model_info, read_proto, unsupported_nodes};
use crate::{LoadOptions, Model, ModelInfo, ModelSpec, Provenance, RuntimeError};

/// The tract version qgate is built with (checked against Cargo.lock by a test).
pub const TRACT_VERSION: &str = "0.23.9";

type Plan = Arc<TypedRunnableModel>;

/// The nodes of the ONNX file at `path` that tract cannot run.
pub fn tract_unsupported(path: &Path) -> Result<Vec<crate::UnsupportedNode>, RuntimeError> {
    let (proto, _) = read_proto(path)?;
    let onnx = tract_onnx::onnx();
    Ok(unsupported_nodes(&proto, |op| {
        onnx.op_register.0.contains_key(op)
    }))
}

/// A model loaded in tract.
pub struct TractModel {
    path: PathBuf,
    spec: String,
    info: ModelInfo,
    model: InferenceModel,
    input_types: Vec<DatumType>,
    plans: HashMap<(Vec<Vec<usize>>, Vec<String>), Plan>,
    /// Graph rewrites applied before tract saw the model ([`crate::tract_fix`]).
    rewrites: Vec<String>,
}

impl TractModel {
    /// Parses the model and checks that tract implements every op.
    pub fn load(
        path: &Path,
        spec: &ModelSpec,
        opts: &LoadOptions,
    ) -> Result<TractModel, RuntimeError> {
        let (mut proto, file) = read_proto(path)?;
        let info = model_info(&proto, &file);
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let missing = unsupported_nodes(&proto, |op| onnx.op_register.0.contains_key(op));
        if !missing.is_empty() {
            return Err(RuntimeError::UnsupportedOps {
                path: path.to_path_buf(),
                runtime: "tract".into(),
                nodes: missing,
            });
        }
        let load_err = |e: TractError| RuntimeError::Load {
            path: path.to_path_buf(),
            runtime: "tract".into(),
            message: format!("{e:#}"),
        };
        // Graphs onnxruntime refuses and tract runs anyway (one value silently lost, an
        // opset's meaning guessed) or panics on.
        if let Some(message) = crate::onnx_info::graph_problem(&proto) {
            return Err(RuntimeError::Load {
                path: path.to_path_buf(),
                runtime: "tract".into(),
                message,
            });
        }
        let rewrites = if opts.tract_rewrites {
            crate::tract_fix::rewrite_for_tract(&mut proto)
        } else {
            Vec::new()
        };
        let dir = path.parent().and_then(|p| p.to_str());
        let parsed = crate::catch_panic(|| onnx.parse(&proto, dir))
            .map_err(|p| RuntimeError::Load {
                path: path.to_path_buf(),
                runtime: "tract".into(),
                message: format!(
                    "tract failed with an internal panic while parsing the model: {p}"
                ),
            })?
            .map_err(load_err)?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(RuntimeError::Load {
                path: path.to_path_buf(),
                runtime: "tract".into(),
                message: format!("unresolved inputs {:?}", parsed.unresolved_inputs),
            });
        }
        let model = parsed.model;
        let input_types = info
            .inputs
            .iter()
            .map(|i| {
                let t = i.elem_type.ok_or_else(|| RuntimeError::Input {
                    path: path.to_path_buf(),
                    name: i.name.clone(),
                    message: "the model does not declare this input's element type".into(),
                })?;
                datum_type(t).ok_or_else(|| RuntimeError::Input {
                    path: path.to_path_buf(),
                    name: i.name.clone(),
                    message: format!("element type {t} is not supported"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TractModel {
            path: path.to_path_buf(),
            spec: spec.raw.clone(),
            info,
            model,
            input_types,
            plans: HashMap::new(),
            rewrites,
        })
    }

    /// The optimised plan for these input shapes, returning `outputs` (empty = the model's
    /// declared outputs).
    fn plan(
        &mut self,
        shapes: Vec<Vec<usize>>,
        outputs: Vec<String>,
    ) -> Result<Plan, RuntimeError> {
        let key = (shapes, outputs);
        if let Some(p) = self.plans.get(&key) {
            return Ok(p.clone());
        }
        let (shapes, outputs) = &key;
        let err = |e: TractError| RuntimeError::Load {
            path: self.path.clone(),
            runtime: "tract".into(),
            message: format!("{e:#}"),
        };
        let mut model = self.model.clone();
        if !outputs.is_empty() {
            let outlets = outputs
                .iter()
                .map(|name| {
                    model
                        .find_outlet_label(name)
                        .ok_or_else(|| RuntimeError::Input {
                            path: self.path.clone(),
                            name: name.clone(),
                            message: "no tensor of this name in the graph".into(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            model.select_output_outlets(&outlets).map_err(err)?;
        }
        for (i, (shape, dt)) in shapes.iter().zip(&self.input_types).enumerate() {
            model = model
                .with_input_fact(i, InferenceFact::dt_shape(*dt, shape.clone()))
                .map_err(err)?;
        }
        let plan = model
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        self.plans.insert(key, plan.clone());
        Ok(plan)
    }

    fn execute(
        &mut self,
        inputs: &[Array],
        outputs: Vec<String>,
    ) -> Result<Vec<Array>, RuntimeError> {
        if inputs.len() != self.input_types.len() {
            return Err(RuntimeError::Run {
                path: self.path.clone(),
                message: format!(
                    "{} input(s) given, the model declares {}",
                    inputs.len(),
                    self.input_types.len()
                ),
            });
        }
        let mut tensors = TVec::new();
        for ((a, dt), info) in inputs.iter().zip(&self.input_types).zip(&self.info.inputs) {
            tensors.push(to_tensor(a, *dt).map_err(|message| RuntimeError::Input {
                path: self.path.clone(),
                name: info.name.clone(),
                message,
            })?);
        }
        let names: Vec<String> = if outputs.is_empty() {
            self.info.outputs.iter().map(|o| o.name.clone()).collect()
        } else {
            outputs.clone()
        };
        let shapes = inputs.iter().map(|a| a.shape.clone()).collect();
        // tract panics on some hostile graphs (a ConstantOfShape of 2^40 elements divides by
        // zero inside it): caught at this boundary, it becomes an error naming the model.
        let path = self.path.clone();
        let caught = |what: &str, text: String| RuntimeError::Run {
            path: path.clone(),
            message: format!("tract failed with an internal panic while {what}: {text}"),
        };
        let plan = crate::catch_panic(|| self.plan(shapes, outputs))
            .map_err(|p| caught("optimising the model", p))??;
        let results =
            crate::catch_panic(|| plan.run(tensors.into_iter().map(|t| t.into_tvalue()).collect()))
                .map_err(|p| caught("running the model", p))?
                .map_err(|e| RuntimeError::Run {
                    path: self.path.clone(),
                    message: format!("{e:#}"),
                })?;
        results
            .into_iter()
            .zip(&names)
            .map(|(t, name)| {
                from_tensor(&t).map_err(|message| RuntimeError::Run {
                    path: self.path.clone(),
                    message: format!("tensor '{name}': {message}"),
                })
            })
            .collect()
    }
}

impl Model for TractModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn provenance(&self) -> Provenance {
        let mut settings = BTreeMap::new();
        settings.insert("optimisation".into(), "into_optimized".into());
        settings.insert("threads".into(), "1 (tract runs single-threaded)".into());
        if !self.rewrites.is_empty() {
            settings.insert("graph_rewrites".into(), self.rewrites.join("; "));
        }
        Provenance {
            spec: self.spec.clone(),
            runtime: "tract".into(),
            runtime_version: TRACT_VERSION.into(),
            settings,
        }
    }

    fn run(&mut self, inputs: &[Array]) -> Result<Vec<Array>, RuntimeError> {
        self.execute(inputs, Vec::new())
    }

    fn run_tensors(
        &mut self,
        inputs: &[Array],
        names: &[String],
    ) -> Result<Vec<Array>, RuntimeError> {
        // Graph inputs are not computed: they are the arrays given.
        let input_names: Vec<String> = self.info.inputs.iter().map(|i| i.name.clone()).collect();
        let position = |n: &String| input_names.iter().position(|i| i == n);
        let computed: Vec<String> = names
            .iter()
            .filter(|n| position(n).is_none())
            .cloned()
            .collect();
        let mut out = if computed.is_empty() {
            Vec::new()
        } else {
            self.execute(inputs, computed)?
        }
        .into_iter();
        names
            .iter()
            .map(|n| match position(n) {
                Some(k) => inputs.get(k).cloned().ok_or_else(|| RuntimeError::Input {
                    path: self.path.clone(),
                    name: n.clone(),
                    message: "no array given for this input".into(),
                }),
                None => out.next().ok_or_else(|| RuntimeError::Run {
                    path: self.path.clone(),
                    message: format!("tract returned no tensor '{n}'"),
                }),
            })
            .collect()
    }
}

fn datum_type(t: ElemType) -> Option<DatumType> {
    Some(match t {
        ElemType::F16 => DatumType::F16,
        ElemType::F32 => DatumType::F32,
        ElemType::F64 => DatumType::F64,
        ElemType::I8 => DatumType::I8,
        ElemType::I16 => DatumType::I16,
        ElemType::I32 => DatumType::I32,
        ElemType::I64 => DatumType::I64,
        ElemType::U8 => DatumType::U8,
        ElemType::U16 => DatumType::U16,
        ElemType::U32 => DatumType::U32,
        ElemType::U64 => DatumType::U64,
        ElemType::Bool => DatumType::Bool,
        ElemType::Str => return None,
    })
}

/// Converts data to the declared input type. Floats become integers only when whole.
fn to_tensor(a: &Array, dt: DatumType) -> Result<Tensor, String> {
    let shape = &a.shape;
    let mk = |r: TractResult<Tensor>| r.map_err(|e| format!("{e}"));
    if let ArrayData::Str(_) = a.data {
        return Err(format!("the data holds strings; the model expects {dt:?}"));
    }
    match (dt, &a.data) {
        (DatumType::F32, ArrayData::F32(v)) => mk(Tensor::from_shape(shape, v)),
        (DatumType::F32, d) => {
            let v: Vec<f32> = d
                .to_f64()
                .unwrap_or_default()
                .iter()
                .map(|&x| x as f32)
                .collect();
            mk(Tensor::from_shape(shape, &v))
        }
        (DatumType::F64, d) => mk(Tensor::from_shape(shape, &d.to_f64().unwrap_or_default())),
        (DatumType::F16, d) => {
            let v: Vec<f32> = d
                .to_f64()
                .unwrap_or_default()
                .iter()
                .map(|&x| x as f32)
                .collect();
            let t = mk(Tensor::from_shape(shape, &v))?;
            t.cast_to::<f16>()
                .map(|c| c.into_owned())
                .map_err(|e| format!("{e}"))
        }
        (DatumType::Bool, ArrayData::Bool(v)) => mk(Tensor::from_shape(shape, v)),
        (dt, d) => {
            let ints = d
                .to_i64_whole()
                .map_err(|e| format!("the model expects {dt:?} but {e}"))?;
            let t = mk(Tensor::from_shape(shape, &ints))?;
            t.cast_to_dt(dt)
                .map(|c| c.into_owned())
                .map_err(|e| format!("{e}"))
        }
    }
}

/// A tensor's values, row-major.
fn values<T: Datum + Clone>(t: &Tensor) -> Result<Vec<T>, String> {
    Ok(t.to_plain_array_view::<T>()
        .map_err(|e| format!("{e}"))?
        .iter()
        .cloned()
        .collect())
}

fn from_tensor(t: &Tensor) -> Result<Array, String> {
    let shape = t.shape().to_vec();
    let as_f32 = |t: &Tensor| -> Result<Vec<f32>, String> {
        let c = t.cast_to::<f32>().map_err(|e| format!("{e}"))?;
        values(&c)
    };
    let data = match t.datum_type() {
        DatumType::F32 => ArrayData::F32(values(t)?),
        DatumType::F64 => ArrayData::F64(values(t)?),
        DatumType::F16 => ArrayData::F32(as_f32(t)?),
        DatumType::I64 => ArrayData::I64(values(t)?),
        DatumType::I32 => ArrayData::I32(values(t)?),
        DatumType::I16 => ArrayData::I16(values(t)?),
        DatumType::I8 => ArrayData::I8(values(t)?),
        DatumType::U8 => ArrayData::U8(values(t)?),
        DatumType::U16 => ArrayData::U16(values(t)?),
        DatumType::U32 => ArrayData::U32(values(t)?),
        DatumType::U64 => ArrayData::U64(values(t)?),
        DatumType::Bool => ArrayData::Bool(values(t)?),
        other => {
            let c = t
                .cast_to::<f32>()
                .map_err(|_| format!("unsupported output type {other:?}"))?;
            ArrayData::F32(values(&c)?)
        }
    };
    Ok(Array { shape, data })
}

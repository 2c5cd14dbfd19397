//! The inputs a benchmark feeds: samples of a data set bound to the model's inputs, or
//! seeded synthetic tensors shaped like the declared inputs (as trtexec does without
//! `--loadInputs`). Batches are cut before timing starts, so the timed loop only runs.

use std::collections::BTreeMap;

use qgate_core::stats::Rng;
use qgate_core::{Array, ArrayData, ElemType};
use qgate_data::Dataset;
use qgate_runtime::{resolve_inputs, InputMapping};
use qgate_runtime::{Dim, ModelInfo};
use serde::{Deserialize, Serialize};

use crate::BenchError;

/// Samples used when inputs are synthetic.
pub const SYNTHETIC_SAMPLES: usize = 64;

/// Where inputs come from, as sent to a worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Data arrays to read (an `.npz` written by the parent), or synthetic inputs.
    pub data: Option<std::path::PathBuf>,
    /// The user's data file those arrays come from, named in the report instead of the
    /// parent's scratch copy.
    #[serde(default)]
    pub data_source: Option<String>,
    /// Which array feeds which input.
    pub single_key: Option<String>,
    /// `NAME=KEY` pairs.
    pub pairs: Vec<(String, String)>,
    /// Shapes of synthetic inputs, per input name, for inputs with symbolic dimensions
    /// other than the batch (e.g. a sequence length).
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// Seed of synthetic values.
    pub seed: u64,
}

/// What the benchmark feeds, described for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// `data FILE (N samples)` or `synthetic (seeded uniform [0, 1))`.
    pub source: String,
    /// Distinct samples cycled through.
    pub samples: usize,
    /// Batch size the model fixes, if it does.
    pub fixed_batch: Option<usize>,
}

/// One prepared batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// One array per model input, in declaration order.
    pub inputs: Vec<Array>,
    /// Sample positions in the workload.
    pub rows: Vec<usize>,
}

/// Samples ready to be cut into batches.
#[derive(Debug, Clone)]
pub struct Workload {
    /// One array per model input (all samples stacked).
    inputs: Vec<Array>,
    pub ids: Vec<String>,
    /// For the report.
    pub info: WorkloadInfo,
}

impl Workload {
    /// Binds `data` to the model's inputs, or makes synthetic inputs when there is none.
    pub fn build(
        model: &ModelInfo,
        data: Option<&Dataset>,
        spec: &WorkloadSpec,
    ) -> Result<Workload, BenchError> {
        if let Some(name) = spec
            .shapes
            .keys()
            .find(|n| !model.inputs.iter().any(|t| &t.name == *n))
        {
            let names: Vec<&str> = model.inputs.iter().map(|t| t.name.as_str()).collect();
            return Err(BenchError::Workload(format!(
                "--shape {name}=…: the model has no input '{name}'; its inputs are {}",
                names.join(", ")
            )));
        }
        if data.is_some() && !spec.shapes.is_empty() {
            return Err(BenchError::Workload(
                "--shape sets the shape of synthetic inputs; with --data the data's shapes are \
                 used: drop --shape or --data"
                    .into(),
            ));
        }
        let fixed_batch = model.inputs.first().and_then(|i| match i.shape.first() {
            Some(Dim::Fixed(n)) => Some(*n),
            _ => None,
        });
        match data {
            Some(data) => Self::from_data(model, data, spec, fixed_batch),
            None => Self::synthetic(model, spec, fixed_batch),
        }
    }

    /// The data's arrays bound to the model's inputs.
    fn from_data(
        model: &ModelInfo,
        data: &Dataset,
        spec: &WorkloadSpec,
        fixed_batch: Option<usize>,
    ) -> Result<Workload, BenchError> {
        let mapping = InputMapping {
            single_key: spec.single_key.clone(),
            pairs: spec.pairs.clone(),
        };
        let bindings = resolve_inputs(model, data, &mapping).map_err(BenchError::Workload)?;
        let inputs = bindings
            .iter()
            .filter_map(|b| data.arrays.get(&b.array).cloned())
            .collect();
        if data.is_empty() {
            return Err(BenchError::Workload(format!(
                "{}: no sample to feed",
                data.source
            )));
        }
        Ok(Workload {
            inputs,
            ids: data.ids.to_vec(),
            info: WorkloadInfo {
                source: format!(
                    "data {} ({} samples)",
                    spec.data_source.as_deref().unwrap_or(&data.source),
                    data.len()
                ),
                samples: data.len(),
                fixed_batch,
            },
        })
    }

    /// Seeded synthetic inputs shaped like the model's (or `--shape`): uniform [0, 1) floats,
    /// uniform bytes, zero integers and `false`.
    fn synthetic(
        model: &ModelInfo,
        spec: &WorkloadSpec,
        fixed_batch: Option<usize>,
    ) -> Result<Workload, BenchError> {
        let mut rng = Rng::new(spec.seed);
        let mut inputs = Vec::new();
        for t in &model.inputs {
            let shape = synthetic_shape(t, spec.shapes.get(&t.name))?;
            let et = t.elem_type.unwrap_or(ElemType::F32);
            qgate_core::memory::check(
                qgate_core::memory::bytes_of(&shape, et.size_bytes()),
                &format!(
                    "synthetic input '{}' shaped {shape:?} (from the model or --shape)",
                    t.name
                ),
            )
            .map_err(BenchError::Workload)?;
            let n: usize = shape.iter().product();
            let data = match et {
                ElemType::F32 | ElemType::F16 => {
                    ArrayData::F32((0..n).map(|_| rng.unit() as f32).collect())
                }
                ElemType::F64 => ArrayData::F64((0..n).map(|_| rng.unit()).collect()),
                ElemType::I64 => ArrayData::I64(vec![0; n]),
                ElemType::I32 => ArrayData::I32(vec![0; n]),
                ElemType::U8 => ArrayData::U8((0..n).map(|_| rng.below(256) as u8).collect()),
                ElemType::I8 => ArrayData::I8(vec![0; n]),
                ElemType::Bool => ArrayData::Bool(vec![false; n]),
                other => {
                    return Err(BenchError::Workload(format!(
                        "input '{}' has type {other}, for which qgate makes no synthetic \
                         values; give --data",
                        t.name
                    )))
                }
            };
            inputs.push(Array { shape, data });
        }
        Ok(Workload {
            inputs,
            ids: (0..SYNTHETIC_SAMPLES)
                .map(|i| format!("synthetic-{i}"))
                .collect(),
            info: WorkloadInfo {
                source: format!(
                    "synthetic inputs ({SYNTHETIC_SAMPLES} samples, seeded uniform [0, 1))"
                ),
                samples: SYNTHETIC_SAMPLES,
                fixed_batch,
            },
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The workload cut into batches of `batch`, cycling through the samples:
    /// batch k holds samples `k·batch … k·batch + batch − 1` modulo the sample count.
    pub fn batches(&self, batch: usize) -> Result<Vec<Batch>, BenchError> {
        if batch == 0 {
            return Err(BenchError::Workload("batch size 0".into()));
        }
        if let Some(f) = self.info.fixed_batch {
            if f != batch {
                return Err(BenchError::Workload(format!(
                    "the model fixes its batch dimension to {f}; batch size {batch} cannot run"
                )));
            }
        }
        let n = self.len();
        let count = n.div_ceil(batch);
        Ok((0..count)
            .map(|k| {
                let rows: Vec<usize> = (0..batch).map(|j| (k * batch + j) % n).collect();
                Batch {
                    inputs: self.inputs.iter().map(|a| a.select_rows(&rows)).collect(),
                    rows,
                }
            })
            .collect())
    }
}

/// A synthetic input's shape: the batch dimension is the sample count, other dimensions
/// come from the declaration or `--shape`.
fn synthetic_shape(
    t: &qgate_runtime::TensorInfo,
    given: Option<&Vec<usize>>,
) -> Result<Vec<usize>, BenchError> {
    if let Some(s) = given {
        let mut s = s.clone();
        if let Some(first) = s.first_mut() {
            *first = SYNTHETIC_SAMPLES;
        }
        return Ok(s);
    }
    if t.shape.is_empty() {
        return Err(BenchError::Workload(format!(
            "input '{}' declares no shape; give --data or --shape {}=1x…",
            t.name, t.name
        )));
    }
    let mut shape = vec![SYNTHETIC_SAMPLES];
    for (i, d) in t.shape.iter().enumerate().skip(1) {
        match d {
            Dim::Fixed(n) => shape.push(*n),
            Dim::Symbolic(s) => {
                return Err(BenchError::Workload(format!(
                "input '{}' {}: dimension {i} ('{s}') is not fixed; give --data or --shape {}=…",
                t.name,
                t.shape_text(),
                t.name
            )))
            }
        }
    }
    Ok(shape)
}

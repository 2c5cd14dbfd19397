//! Running a model over a whole data set in batches.

use std::time::Instant;

use qgate_core::Array;
use qgate_data::Dataset;
use qgate_runtime::{Dim, Model, ModelInfo, RuntimeError};

use crate::InputBinding;

/// A model's outputs over the whole data set, stacked along the sample axis.
#[derive(Debug, Clone)]
pub struct ModelRun {
    /// `(output name, values)` in declaration order.
    pub outputs: Vec<(String, Array)>,
    /// Wall time spent in inference, seconds.
    pub seconds: f64,
}

/// Why saved outputs cannot be fed transformed inputs.
pub(crate) const SAVED_OUTPUTS_UNCORRUPTED: &str = "saved outputs are answers to the clean inputs: they cannot be corrupted; run the model itself with --corruptions";

/// Changes a batch before the model sees it: `(array name, the batch's rows of it, the
/// samples' rows in the data file)` → the batch to feed instead (`None`: as it is).
pub type BatchTransform<'a> =
    dyn Fn(&str, &Array, &[usize]) -> Result<Option<Array>, String> + Sync + 'a;

/// Runs `model` over `data` in batches of `batch_size`, keeping every output (for the
/// runtime check's few samples; evaluations stream instead). A model whose batch
/// dimension is fixed gets batches of that size; a last, short batch is padded with copies
/// of its last sample whose outputs are dropped.
pub fn run_model(
    model: &mut dyn Model,
    data: &Dataset,
    bindings: &[InputBinding],
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ModelRun, RuntimeError> {
    let info = model.info().clone();
    let fixed_batch = fixed_batch_of(&info);
    let batch = fixed_batch.unwrap_or(batch_size).max(1);
    let n = data.len();
    let names: Vec<&str> = bindings
        .iter()
        .filter(|b| data.has_array(&b.array))
        .map(|b| b.array.as_str())
        .collect();
    if let Some(f) = fixed_batch {
        check_fixed_batch_memory(model, &info, data, &names, f)?;
    }
    check_rows_by_position(model, data)?;
    let mut parts: Vec<Vec<Array>> = vec![Vec::new(); info.outputs.len()];
    let mut seconds = 0.0;
    progress(0, n);
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let mut idx: Vec<usize> = (start..end).collect();
        if fixed_batch.is_some() {
            idx.resize(batch, end - 1);
        }
        let t = Instant::now();
        let outputs = if model.keyed_by_sample() {
            let ids: Vec<String> = idx.iter().map(|&i| data.ids[i].to_string()).collect();
            let rows = data.rows.file_rows(&idx);
            model.run_samples(&ids, &rows)?
        } else {
            let inputs = read_batch(data, &names, &idx, None)?;
            model.run(&inputs)?
        };
        seconds += t.elapsed().as_secs_f64();
        qgate_runtime::check_batch_outputs(&info, &outputs, Some(idx.len())).map_err(
            |message| RuntimeError::Run {
                path: model.provenance().spec.into(),
                message,
            },
        )?;
        for (slot, out) in parts.iter_mut().zip(outputs) {
            slot.push(if end - start < idx.len() {
                out.slice_rows(0, end - start)
            } else {
                out
            });
        }
        progress(end, n);
    }
    let outputs = stack_outputs(&info, parts)?;
    Ok(ModelRun { outputs, seconds })
}

/// The batch size the first input declares as a fixed leading dimension; `None` when the
/// model has no input or its batch dimension is symbolic or undeclared.
pub(crate) fn fixed_batch_of(info: &ModelInfo) -> Option<usize> {
    info.inputs.first().and_then(|i| match i.shape.first() {
        Some(Dim::Fixed(n)) => Some(*n),
        _ => None,
    })
}

/// Checks that one padded batch of `fixed` samples of `arrays` (plus a row index per
/// sample) fits the memory limit; the error names the model's first input.
pub(crate) fn check_fixed_batch_memory(
    model: &dyn Model,
    info: &ModelInfo,
    data: &Dataset,
    names: &[&str],
    fixed: usize,
) -> Result<(), RuntimeError> {
    // A declared batch of 2^40 would otherwise abort on allocating the padded batch.
    let row_bytes: u128 = names
        .iter()
        .filter_map(|name| data.array_meta(name))
        .map(|(shape, elem)| {
            qgate_core::memory::bytes_of(&shape[1.min(shape.len())..], elem.size_bytes())
        })
        .sum::<u128>()
        + std::mem::size_of::<usize>() as u128;
    qgate_core::memory::check(
        row_bytes.saturating_mul(fixed as u128),
        &format!(
            "input '{}' declares a fixed batch of {fixed}: one batch",
            info.inputs[0].name
        ),
    )
    .map_err(|message| RuntimeError::Run {
        path: model.provenance().spec.into(),
        message,
    })
}

/// For saved outputs matched to samples by row position, checks that they hold one row
/// per sample of the data file; models without such outputs pass.
pub(crate) fn check_rows_by_position(
    model: &dyn Model,
    data: &Dataset,
) -> Result<(), RuntimeError> {
    if let Some(rows) = model.rows_by_position() {
        if rows != data.file_rows {
            return Err(RuntimeError::Run {
                path: model.provenance().spec.into(),
                message: format!(
                    "holds {rows} rows of saved outputs matched to samples by position, but the data set {} has {} samples; save the outputs of every sample in data order (or save an `id` array with them)",
                    data.source, data.file_rows
                ),
            });
        }
    }
    Ok(())
}

/// One batch of model inputs: the rows at positions `idx` of each array `names` (read
/// from memory or the file), each passed through `transform`.
pub(crate) fn read_batch(
    data: &Dataset,
    names: &[&str],
    idx: &[usize],
    transform: Option<&BatchTransform<'_>>,
) -> Result<Vec<Array>, RuntimeError> {
    let mut out = Vec::new();
    read_batch_into(data, names, idx, transform, &mut out, &mut Vec::new())?;
    Ok(out)
}

/// [`read_batch`] into `out`, reusing its arrays' buffers (and `scratch` for the bytes
/// read from files).
pub(crate) fn read_batch_into(
    data: &Dataset,
    names: &[&str],
    idx: &[usize],
    transform: Option<&BatchTransform<'_>>,
    out: &mut Vec<Array>,
    scratch: &mut Vec<u8>,
) -> Result<(), RuntimeError> {
    let err = |message: String| RuntimeError::Run {
        path: data.source.clone().into(),
        message,
    };
    let rows: Vec<usize> = match transform {
        Some(_) => data.rows.file_rows(idx),
        None => Vec::new(),
    };
    out.resize_with(names.len(), Array::empty_f32);
    for (name, input) in names.iter().zip(out.iter_mut()) {
        data.read_rows_into(name, idx, scratch, input)
            .map_err(|e| err(e.to_string()))?;
        if let Some(t) = transform {
            if let Some(changed) = t(name, input, &rows).map_err(err)? {
                *input = changed;
            }
        }
    }
    Ok(())
}

/// Concatenates each output's batches along the sample axis, as `(output name, values)`
/// in declaration order.
fn stack_outputs(
    info: &ModelInfo,
    parts: Vec<Vec<Array>>,
) -> Result<Vec<(String, Array)>, RuntimeError> {
    let mut outputs = Vec::new();
    for (info, part) in info.outputs.iter().zip(parts) {
        let stacked = Array::concat_rows(&part).ok_or_else(|| RuntimeError::Run {
            path: info.name.clone().into(),
            message: format!(
                "output '{}' changes shape or type between batches; qgate needs a sample axis first",
                info.name
            ),
        })?;
        outputs.push((info.name.clone(), stacked));
    }
    Ok(outputs)
}

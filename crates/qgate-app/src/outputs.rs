//! Saved outputs: the `.npz` layout `preds:` and the bench workers read.

use std::path::Path;

use qgate_core::{Array, ArrayData};
use qgate_data::Dataset;

use crate::error::{io, AppError};

/// Writes each side's outputs to `dir/baseline.npz` and `dir/candidate.npz`, with the
/// samples' ids (reusable as `preds:dir/baseline.npz`).
pub fn save_outputs(
    dir: &Path,
    data: &Dataset,
    eval: &qgate_eval::Evaluation,
) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    for (name, side) in [("baseline", &eval.baseline), ("candidate", &eval.candidate)] {
        let arrays: Vec<(&str, &Array)> =
            side.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        write_with_ids(&dir.join(format!("{name}.npz")), arrays, &data.ids)?;
    }
    Ok(())
}

/// Writes `arrays` plus an `id` array to an `.npz`.
pub fn write_with_ids(
    path: &Path,
    arrays: Vec<(&str, &Array)>,
    ids: &[String],
) -> Result<(), AppError> {
    let ids = Array {
        shape: vec![ids.len()],
        data: ArrayData::Str(ids.to_vec()),
    };
    let mut arrays = arrays;
    arrays.push(("id", &ids));
    let what = || format!("cannot write {}", path.display());
    let file = std::fs::File::create(path).map_err(io(what()))?;
    qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays).map_err(io(what()))
}

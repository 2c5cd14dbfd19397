//! Saved outputs: the `.npz` layout `preds:` and the bench workers read.

use std::path::Path;

use qgate_core::{Array, ArrayData};
use qgate_data::Dataset;

use crate::error::{io, AppError};

/// Writes each model's kept outputs with the samples' ids (reusable as `preds:dir/…`):
/// `dir/baseline.npz`, and `dir/candidate.npz` for one candidate or `dir/candidate-K.npz`
/// (K = its position on the command line, from 1) for several.
pub fn save_outputs(
    dir: &Path,
    data: &Dataset,
    evals: &[qgate_eval::Evaluation],
) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let Some(first) = evals.first() else {
        return Ok(());
    };
    let mut sides = vec![("baseline".to_string(), &first.baseline)];
    for (k, e) in evals.iter().enumerate() {
        let name = if evals.len() == 1 {
            "candidate".to_string()
        } else {
            format!("candidate-{}", k + 1)
        };
        sides.push((name, &e.candidate));
    }
    for (name, side) in sides {
        let arrays: Vec<(&str, &Array)> =
            side.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        // Outputs kept for the first samples only (`qgate check`) go with their ids.
        let rows = arrays
            .first()
            .map_or(data.len(), |(_, a)| a.n_rows())
            .min(data.len());
        let ids = data.ids.iter().take(rows).map(str::to_string).collect();
        write_with_ids(&dir.join(format!("{name}.npz")), arrays, ids)?;
    }
    Ok(())
}

/// Writes `arrays` plus an `id` array to an `.npz`.
pub fn write_with_ids(
    path: &Path,
    arrays: Vec<(&str, &Array)>,
    ids: Vec<String>,
) -> Result<(), AppError> {
    let ids = Array {
        shape: vec![ids.len()],
        data: ArrayData::Str(ids),
    };
    let mut arrays = arrays;
    arrays.push(("id", &ids));
    let what = || format!("cannot write {}", path.display());
    let file = std::fs::File::create(path).map_err(io(what()))?;
    qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays).map_err(io(what()))
}

//! Saved predictions as a model: outputs computed elsewhere (PyTorch, TFLite, a phone, an
//! earlier `--save-outputs` run), stored in an `.npz` with one array per output (first axis
//! = samples) and optionally an `id` array that keys rows by sample id, or in an `.npy`
//! holding one array: the scores, named after the file stem (`np.save("logits.npy", out)`).
//! Without ids, row *i* is the data file's sample *i* (before `--limit`/`--seed`), and the
//! row count must equal the data's.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use qgate_core::{Array, ArrayData};
use qgate_data::npy::{parse_npy, read_npz};

use crate::{Dim, Model, ModelInfo, ModelSpec, Provenance, RuntimeError, TensorInfo};

/// Names of the array holding sample ids.
const ID_KEYS: &[&str] = &["id", "ids"];

/// Saved outputs looked up by sample.
pub struct PredsModel {
    path: PathBuf,
    spec: String,
    info: ModelInfo,
    outputs: Vec<Array>,
    rows: usize,
    by_id: Option<HashMap<String, usize>>,
    producer: String,
}

impl PredsModel {
    /// Reads the saved outputs at `path`.
    pub fn load(path: &Path, spec: &ModelSpec) -> Result<PredsModel, RuntimeError> {
        let bad = |message: String| RuntimeError::Load {
            path: path.to_path_buf(),
            runtime: "saved predictions".into(),
            message,
        };
        crate::onnx_info::regular_file(path)?;
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let members = match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("npz") => read_npz(std::io::Cursor::new(&bytes)).map_err(bad)?,
            Some("npy") => {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("scores")
                    .to_string();
                vec![(stem, parse_npy(&bytes))]
            }
            _ => {
                return Err(bad(
                    "saved predictions must be an .npy file (one array: the scores) or an .npz archive (one array per output, optionally `id`)".into(),
                ))
            }
        };
        let mut ids: Option<Vec<String>> = None;
        let mut producer = String::new();
        let mut outputs = Vec::new();
        let mut infos = Vec::new();
        for (name, array) in members {
            let array = array.map_err(|e| bad(format!("array '{name}': {e}")))?;
            if ID_KEYS.contains(&name.as_str()) {
                ids = Some(match &array.data {
                    ArrayData::Str(v) => v.clone(),
                    d => match d.to_i64() {
                        Some(v) => v.iter().map(i64::to_string).collect(),
                        None => {
                            return Err(bad(format!("ids '{name}' must be strings or integers")))
                        }
                    },
                });
                continue;
            }
            if name == "__producer__" {
                if let ArrayData::Str(v) = &array.data {
                    producer = v.join(" ");
                }
                continue;
            }
            if array.shape.is_empty() || !array.elem_type().is_numeric() {
                return Err(bad(format!(
                    "array '{name}' must be numeric with samples along the first axis, found {} {:?}",
                    array.elem_type(),
                    array.shape
                )));
            }
            infos.push(TensorInfo {
                name: name.clone(),
                elem_type: Some(array.elem_type()),
                shape: std::iter::once(Dim::Symbolic("N".into()))
                    .chain(array.shape.iter().skip(1).map(|&d| Dim::Fixed(d)))
                    .collect(),
            });
            outputs.push(array);
        }
        let rows = outputs
            .first()
            .map(Array::n_rows)
            .ok_or_else(|| bad("holds no output array".into()))?;
        for (o, i) in outputs.iter().zip(&infos) {
            if o.n_rows() != rows {
                return Err(bad(format!(
                    "output '{}' has {} rows, '{}' has {rows}",
                    i.name,
                    o.n_rows(),
                    infos[0].name
                )));
            }
        }
        let by_id = match ids {
            Some(ids) if ids.len() != rows => {
                return Err(bad(format!("{} ids for {rows} rows", ids.len())));
            }
            Some(ids) => {
                if let Some((first, i)) = qgate_data::first_duplicate(&ids) {
                    return Err(bad(format!(
                        "sample id '{}' appears twice (rows {first} and {i}); saved outputs need one row per id",
                        ids[i]
                    )));
                }
                Some(ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect())
            }
            None => None,
        };
        Ok(PredsModel {
            path: path.to_path_buf(),
            spec: spec.raw.clone(),
            info: ModelInfo {
                outputs: infos,
                producer: producer.clone(),
                file_bytes: bytes.len() as u64,
                sha256: Some(crate::host::sha256_hex(&bytes)),
                ..ModelInfo::default()
            },
            outputs,
            rows,
            by_id,
            producer,
        })
    }
}

impl Model for PredsModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn provenance(&self) -> Provenance {
        let mut settings = BTreeMap::new();
        settings.insert(
            "keyed_by".into(),
            if self.by_id.is_some() {
                "sample id"
            } else {
                "data order"
            }
            .into(),
        );
        if !self.producer.is_empty() {
            settings.insert("produced_by".into(), self.producer.clone());
        }
        Provenance {
            spec: self.spec.clone(),
            runtime: "saved predictions".into(),
            runtime_version: "-".into(),
            settings,
        }
    }

    fn run(&mut self, _inputs: &[Array]) -> Result<Vec<Array>, RuntimeError> {
        Err(RuntimeError::Run {
            path: self.path.clone(),
            message: "saved predictions are looked up by sample, not computed".into(),
        })
    }

    fn keyed_by_sample(&self) -> bool {
        true
    }

    fn rows_by_position(&self) -> Option<usize> {
        self.by_id.is_none().then_some(self.rows)
    }

    fn run_samples(
        &mut self,
        ids: &[String],
        positions: &[usize],
    ) -> Result<Vec<Array>, RuntimeError> {
        let rows: Vec<usize> = match &self.by_id {
            Some(map) => ids
                .iter()
                .map(|id| {
                    map.get(id).copied().ok_or_else(|| RuntimeError::Run {
                        path: self.path.clone(),
                        message: format!("no saved output for sample id '{id}'"),
                    })
                })
                .collect::<Result<_, _>>()?,
            None => positions
                .iter()
                .map(|&p| {
                    if p < self.rows {
                        Ok(p)
                    } else {
                        Err(RuntimeError::Run {
                            path: self.path.clone(),
                            message: format!(
                                "holds {} rows and no `id` array, but the data has more samples; save ids with the outputs",
                                self.rows
                            ),
                        })
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(self.outputs.iter().map(|o| o.select_rows(&rows)).collect())
    }
}

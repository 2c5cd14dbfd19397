//! Data sets for qgate: `.npz`/`.npy` archives, folders of images (one subfolder per
//! class) with declared preprocessing, and CSV tables. Every sample keeps an id.
//!
//! A [`Dataset`] is plain data: named feature arrays whose first axis is the sample axis,
//! optional integer labels and class names. Which array feeds which model input is decided
//! by the caller.
//!
//! ```
//! use qgate_data::Dataset;
//! use qgate_core::{Array, ArrayData};
//! let x = Array::new(vec![3, 2], ArrayData::F32(vec![0.0; 6])).unwrap();
//! let ds = Dataset::from_arrays("memory", vec![("x".into(), x)], Some(vec![0, 1, 1]), None).unwrap();
//! assert_eq!(ds.len(), 3);
//! assert_eq!(&ds.ids[2], "2");
//! ```

pub mod corrupt;
mod csv_table;
mod images;
pub mod npy;
mod row_map;
pub mod slices;
mod stored;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qgate_core::stats::Rng;
pub use qgate_core::Ids;
use qgate_core::{Array, ArrayData, ElemType, NotIntegers};

pub use csv_table::{load_csv_streaming, CsvOptions};
pub use images::{load_image_folder_streaming, ColorMode, ImagePreprocess, Layout};
pub use row_map::RowMap;
pub use slices::{SliceTag, Slices};
use stored::Member;
pub use stored::{StoredArray, STREAM_MIN_BYTES};

/// Errors while loading data. Each names the file and the array, column or sample at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's content is not what its type promises.
    #[error("{path}: {message}")]
    Format {
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An array has the wrong shape or type.
    #[error("{path}: array '{key}': {message}")]
    Array {
        path: PathBuf,
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A key asked for is missing.
    #[error("{path}: no array '{key}' (it holds: {available})")]
    MissingKey {
        path: PathBuf,
        /// The key asked for.
        key: String,
        /// The keys present.
        available: String,
    },
    /// No sample.
    #[error("{path}: the data set holds no sample")]
    Empty { path: PathBuf },
}

/// Which arrays of an archive hold labels and ids.
#[derive(Debug, Clone, Default)]
pub struct ArrayKeys {
    /// Array of integer labels; default: the first of `label`, `labels`, `y`, `target`.
    pub label_key: Option<String>,
    /// Array of sample ids; default: `id` or `ids` when present, else the sample index.
    pub id_key: Option<String>,
}

/// Default names of a label array, in order of preference.
pub const LABEL_KEYS: &[&str] = &["label", "labels", "y", "target"];
const ID_KEYS: &[&str] = &["id", "ids"];
const CLASS_NAME_KEYS: &[&str] = &["class_names"];

/// A labelled (or unlabelled) data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where it came from (a path), for reports and errors.
    pub source: String,
    /// One id per sample (packed: [`Ids`]).
    pub ids: Ids,
    /// Feature arrays held in memory, by name; the first axis of each is the sample axis.
    pub arrays: BTreeMap<String, Array>,
    /// Feature arrays left in their file (large `.npy` arrays and stored `.npz` members),
    /// read a batch of rows at a time: their rows are the file's, [`Dataset::rows`] maps
    /// samples to them. Read them with [`Dataset::read_rows`].
    pub stored: BTreeMap<String, StoredArray>,
    /// Class index per sample, when labelled.
    pub labels: Option<Vec<i64>>,
    /// The name of the label array or column, when labelled.
    pub label_key: Option<String>,
    /// Class names, index = class.
    pub class_names: Vec<String>,
    /// Arrays of the file that cannot feed a model (another sample count, an unreadable
    /// dtype), with the reason. They are checked only if a run asks for one, so a file that
    /// also holds a second split, texts or indices still serves the arrays that fit.
    pub unusable: BTreeMap<String, String>,
    /// Each sample's row in the file, which `--limit`/`--seed` keep while they select rows:
    /// saved outputs without ids are matched to samples by it.
    pub rows: RowMap,
    /// Samples in the file before any selection.
    pub file_rows: usize,
    /// Tags of samples (`slice_*` arrays of an archive, or a manifest attached with
    /// [`Dataset::attach_slices`]).
    pub slices: Slices,
}

impl Dataset {
    /// Builds a data set from arrays; ids default to the sample index. The sample count is
    /// the first array's, else the labels', else the ids'.
    pub fn from_arrays(
        source: &str,
        arrays: Vec<(String, Array)>,
        labels: Option<Vec<i64>>,
        ids: Option<Vec<String>>,
    ) -> Result<Dataset, DataError> {
        let path = PathBuf::from(source);
        let n = arrays
            .first()
            .map(|(_, a)| a.n_rows())
            .or(labels.as_ref().map(Vec::len))
            .or(ids.as_ref().map(Vec::len))
            .unwrap_or(0);
        let mut map = BTreeMap::new();
        for (k, a) in arrays {
            if a.shape.is_empty() || a.n_rows() != n {
                return Err(DataError::Array {
                    path,
                    key: k,
                    message: format!(
                        "has shape {:?}, expected {n} samples along the first axis",
                        a.shape
                    ),
                });
            }
            map.insert(k, a);
        }
        if let Some(l) = &labels {
            if l.len() != n {
                return Err(DataError::Array {
                    path,
                    key: "labels".into(),
                    message: format!("holds {} labels for {n} samples", l.len()),
                });
            }
        }
        let ids = packed_ids(&path, "id", ids, n)?;
        Ok(Dataset {
            arrays: map,
            labels,
            ..Dataset::of_samples(source.to_string(), ids)
        })
    }

    /// A data set of the samples `ids`, in file order, with no arrays, labels or tags yet.
    fn of_samples(source: String, ids: Ids) -> Dataset {
        let n = ids.len();
        Dataset {
            source,
            ids,
            arrays: BTreeMap::new(),
            stored: BTreeMap::new(),
            labels: None,
            label_key: None,
            class_names: Vec::new(),
            unusable: BTreeMap::new(),
            rows: RowMap::Identity(n),
            file_rows: n,
            slices: Slices::default(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set holds no sample.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Loads a data set, choosing the reader by the path: a directory is an image folder,
    /// `.npz`, `.npy` and `.csv` files by their extension.
    pub fn load(
        path: &Path,
        keys: &ArrayKeys,
        images: &ImagePreprocess,
    ) -> Result<Dataset, DataError> {
        if path.is_dir() {
            return images::load_image_folder(path, images);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        regular_file(path, "a data file")?;
        match ext.as_str() {
            "npz" => load_npz(path, keys),
            "npy" => load_npy(path),
            "csv" => csv_table::load_csv(
                path,
                &CsvOptions {
                    label_column: keys.label_key.clone(),
                    id_column: keys.id_key.clone(),
                },
            ),
            _ if !path.exists() => Err(DataError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            }),
            other => Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "unknown data format '.{other}': expected .npz, .npy, .csv or a folder of images"
                ),
            }),
        }
    }

    /// Keeps `limit` samples: the first ones, or with `seed` a seeded random subset kept in
    /// data order.
    pub fn subset(&mut self, limit: Option<usize>, seed: Option<u64>) {
        let n = self.len();
        let Some(limit) = limit.filter(|&l| l < n) else {
            return;
        };
        let mut idx: Vec<usize> = (0..n).collect();
        if let Some(seed) = seed {
            Rng::new(seed).shuffle(&mut idx);
            idx.truncate(limit);
            idx.sort_unstable();
        } else {
            idx.truncate(limit);
        }
        self.select(&idx);
    }

    /// Whether the data set has a feature array `name` (in memory or in its file).
    pub fn has_array(&self, name: &str) -> bool {
        self.arrays.contains_key(name) || self.stored.contains_key(name)
    }

    /// Names of every feature array, in memory or in its file, sorted.
    pub fn array_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .arrays
            .keys()
            .chain(self.stored.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    /// `(shape, element type)` of feature array `name` over the selected samples (the
    /// first axis is the sample count).
    pub fn array_meta(&self, name: &str) -> Option<(Vec<usize>, ElemType)> {
        if let Some(a) = self.arrays.get(name) {
            return Some((a.shape.clone(), a.elem_type()));
        }
        self.stored.get(name).map(|s| {
            let mut shape = s.shape().to_vec();
            shape[0] = self.len();
            (shape, s.elem_type())
        })
    }

    /// The rows of feature array `name` for the samples at positions `idx`, in that order:
    /// copied from memory, or read from the file.
    pub fn read_rows(&self, name: &str, idx: &[usize]) -> Result<Array, DataError> {
        let mut out = Array::empty_f32();
        self.read_rows_into(name, idx, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// [`Dataset::read_rows`] into `out`, reusing its buffer (and `scratch` for the bytes
    /// read from the file): a loop over batches that hands the same buffers back allocates
    /// nothing once warm.
    pub fn read_rows_into(
        &self,
        name: &str,
        idx: &[usize],
        scratch: &mut Vec<u8>,
        out: &mut Array,
    ) -> Result<(), DataError> {
        if let Some(a) = self.arrays.get(name) {
            a.select_rows_into(idx, out);
            return Ok(());
        }
        let s = self.stored.get(name).ok_or_else(|| DataError::MissingKey {
            path: PathBuf::from(&self.source),
            key: name.to_string(),
            available: self.array_names().join(", "),
        })?;
        let rows = self.rows.file_rows(idx);
        s.read_rows_into(&rows, scratch, out)
            .map_err(|message| DataError::Array {
                path: s.path().to_path_buf(),
                key: name.to_string(),
                message,
            })
    }

    /// Reads every array left in its file into memory (for work that runs a few samples
    /// many times: benchmarks, calibration subsets).
    pub fn materialize(&mut self) -> Result<(), DataError> {
        let all: Vec<usize> = (0..self.len()).collect();
        for name in self.stored.keys().cloned().collect::<Vec<_>>() {
            let a = self.read_rows(&name, &all)?;
            self.stored.remove(&name);
            self.arrays.insert(name, a);
        }
        Ok(())
    }

    /// Keeps the samples at `idx`, in that order.
    pub fn select(&mut self, idx: &[usize]) {
        for a in self.arrays.values_mut() {
            *a = a.select_rows(idx);
        }
        self.ids = self.ids.select(idx);
        self.rows = self.rows.select(idx);
        if let Some(l) = &self.labels {
            self.labels = Some(idx.iter().map(|&i| l[i]).collect());
        }
        self.slices.select(idx);
    }

    /// Reads a slice manifest (`--slices FILE`) and adds its tags to the data set's own
    /// (`slice_*` arrays); call it before selecting samples, so ids the manifest names are
    /// matched against the whole file. A tag both define is an error naming it.
    pub fn attach_slices(&mut self, path: &Path) -> Result<(), DataError> {
        let manifest = slices::load_manifest(path, self)?;
        if let Some(t) = manifest
            .tags
            .iter()
            .find(|t| self.slices.tags.iter().any(|o| o.tag == t.tag))
        {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "tag '{}' is also an array `slice_{}` of {}; name it once",
                    t.tag, t.tag, self.source
                ),
            });
        }
        if !self.slices.file_slices.is_empty() {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: "a slice manifest is attached before samples are selected".into(),
            });
        }
        let mut tags = std::mem::take(&mut self.slices.tags);
        tags.extend(manifest.tags.iter().cloned());
        let source = if self.slices.source.is_empty() {
            manifest.source.clone()
        } else {
            format!("{} and {}", self.slices.source, manifest.source)
        };
        self.slices = Slices {
            source,
            tags,
            ..manifest
        };
        Ok(())
    }
}

/// An error unless `path` is a regular file or absent (its reader names a missing one): a
/// named pipe would block for ever, a device never end. `what` names what was expected.
pub(crate) fn regular_file(path: &Path, what: &str) -> Result<(), DataError> {
    if path.exists() && !path.is_file() {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!(
                "not a regular file ({}); give the path of {what}",
                if path.is_dir() {
                    "a folder"
                } else {
                    "a named pipe or device"
                }
            ),
        });
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads a single `.npy` array as an unlabelled data set with one array named after the
/// file stem.
pub fn load_npy(path: &Path) -> Result<Dataset, DataError> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let size = file.metadata().map_err(io_err(path))?.len();
    let member = stored::read_member(path, &mut file, 0, size, STREAM_MIN_BYTES)
        .map_err(io_err(path))?
        .map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("x")
        .to_string();
    let ds = match member {
        Member::Loaded(array) => {
            Dataset::from_arrays(&path.display().to_string(), vec![(stem, array)], None, None)?
        }
        Member::Stored(s) => {
            let ids = Ids::indices(s.shape()[0]);
            let mut ds = Dataset::of_samples(path.display().to_string(), ids);
            ds.stored.insert(stem, s);
            ds
        }
    };
    non_empty(ds, path)
}

fn non_empty(ds: Dataset, path: &Path) -> Result<Dataset, DataError> {
    if ds.is_empty() {
        Err(DataError::Empty {
            path: path.to_path_buf(),
        })
    } else {
        Ok(ds)
    }
}

/// Loads an `.npz` archive: labels and ids from `keys` (or their default names), class
/// names from a string array `class_names`, every other array a feature array.
pub fn load_npz(path: &Path, keys: &ArrayKeys) -> Result<Dataset, DataError> {
    load_npz_streaming(path, keys, STREAM_MIN_BYTES)
}

/// [`load_npz`], leaving in the file every uncompressed feature array of at least
/// `min_bytes` bytes (`0`: all of them).
pub fn load_npz_streaming(
    path: &Path,
    keys: &ArrayKeys,
    min_bytes: u64,
) -> Result<Dataset, DataError> {
    std::fs::metadata(path).map_err(io_err(path))?;
    let members = stored::read_npz_file(path, min_bytes).map_err(|message| DataError::Format {
        path: path.to_path_buf(),
        message,
    })?;
    let (mut arrays, mut stored, mut unusable) = sort_members(members, keys);
    let listing = arrays
        .keys()
        .chain(unusable.keys())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let available = || listing.clone();
    let find = |wanted: &Option<String>, defaults: &[&str]| -> Result<Option<String>, DataError> {
        match wanted {
            Some(k) if arrays.contains_key(k) => Ok(Some(k.clone())),
            Some(k) => Err(DataError::MissingKey {
                path: path.to_path_buf(),
                key: k.clone(),
                available: available(),
            }),
            None => Ok(defaults
                .iter()
                .find(|d| arrays.contains_key(**d))
                .map(|d| d.to_string())),
        }
    };
    let label_key = find(&keys.label_key, LABEL_KEYS)?;
    let id_key = find(&keys.id_key, ID_KEYS)?;
    let class_key = find(&None, CLASS_NAME_KEYS)?;
    let class_names = match class_key.and_then(|k| arrays.remove(&k)) {
        Some(Array {
            data: ArrayData::Str(names),
            ..
        }) => names,
        Some(_) => {
            return Err(DataError::Array {
                path: path.to_path_buf(),
                key: "class_names".into(),
                message: "must be an array of strings".into(),
            })
        }
        None => Vec::new(),
    };
    let labels = match &label_key {
        Some(k) => {
            let a = arrays.remove(k).ok_or_else(|| DataError::MissingKey {
                path: path.to_path_buf(),
                key: k.clone(),
                available: available(),
            })?;
            Some(labels_from_array(path, k, &a)?)
        }
        None => None,
    };
    let ids = match &id_key {
        Some(k) => {
            let a = arrays.remove(k).ok_or_else(|| DataError::MissingKey {
                path: path.to_path_buf(),
                key: k.clone(),
                available: available(),
            })?;
            Some(ids_from_array(path, k, &a)?)
        }
        None => None,
    };
    let n = labels
        .as_ref()
        .map(Vec::len)
        .or(ids.as_ref().map(Vec::len))
        .unwrap_or_else(|| {
            most_common_rows(
                arrays
                    .values()
                    .map(|a| a.shape.as_slice())
                    .chain(stored.values().map(StoredArray::shape)),
            )
        });
    let counted_from = match (&label_key, &id_key) {
        (Some(k), _) | (None, Some(k)) => format!("'{k}' holds {n}"),
        (None, None) => format!("most arrays hold {n}"),
    };
    let slices = slices::take_slice_arrays(path, &mut arrays, n)?;
    let misfits: Vec<String> = arrays
        .iter()
        .filter(|(_, a)| a.shape.is_empty() || a.n_rows() != n)
        .map(|(k, _)| k.clone())
        .collect();
    let stored_misfits: Vec<String> = stored
        .iter()
        .filter(|(_, s)| s.shape()[0] != n)
        .map(|(k, _)| k.clone())
        .collect();
    for k in stored_misfits {
        if let Some(s) = stored.remove(&k) {
            unusable.insert(
                k,
                format!(
                    "has shape {:?}, but the data set has {n} samples ({counted_from}; the first axis must be the sample axis)",
                    s.shape()
                ),
            );
        }
    }
    for k in misfits {
        if let Some(a) = arrays.remove(&k) {
            unusable.insert(
                k,
                format!(
                    "has shape {:?}, but the data set has {n} samples ({counted_from}; the first axis must be the sample axis)",
                    a.shape
                ),
            );
        }
    }
    if let Some(ids) = &ids {
        if ids.len() != n {
            return Err(DataError::Array {
                path: path.to_path_buf(),
                key: id_key.unwrap_or_default(),
                message: format!("holds {} ids for {n} samples", ids.len()),
            });
        }
    }
    let ids = packed_ids(path, id_key.as_deref().unwrap_or("id"), ids, n)?;
    let ds = Dataset {
        arrays,
        stored,
        labels,
        label_key,
        class_names,
        unusable,
        slices,
        ..Dataset::of_samples(path.display().to_string(), ids)
    };
    non_empty(ds, path)
}

/// The arrays of an archive: read whole, left in the file, and unreadable (with why).
/// Labels, ids, class names and slice tags are read whole whatever their size.
fn sort_members(
    members: stored::Members,
    keys: &ArrayKeys,
) -> (
    BTreeMap<String, Array>,
    BTreeMap<String, StoredArray>,
    BTreeMap<String, String>,
) {
    let mut arrays = BTreeMap::new();
    let mut stored = BTreeMap::new();
    let mut unusable = BTreeMap::new();
    let whole = |k: &str| {
        keys.label_key.as_deref() == Some(k)
            || keys.id_key.as_deref() == Some(k)
            || LABEL_KEYS.contains(&k)
            || ID_KEYS.contains(&k)
            || CLASS_NAME_KEYS.contains(&k)
            || k.starts_with(slices::SLICE_ARRAY_PREFIX)
    };
    for (key, parsed) in members {
        match parsed {
            Ok(Member::Loaded(a)) => {
                arrays.insert(key, a);
            }
            Ok(Member::Stored(s)) if whole(&key) => match s.read_all() {
                Ok(a) => {
                    arrays.insert(key, a);
                }
                Err(e) => {
                    unusable.insert(key, format!("is not a readable array: {e}"));
                }
            },
            Ok(Member::Stored(s)) => {
                stored.insert(key, s);
            }
            Err(e) => {
                unusable.insert(key, format!("is not a readable array: {e}"));
            }
        }
    }
    (arrays, stored, unusable)
}

/// The row count shared by the most arrays (ties: the larger count), for a file without
/// labels or ids to count samples by.
fn most_common_rows<'a>(shapes: impl Iterator<Item = &'a [usize]>) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for s in shapes.filter(|s| !s.is_empty()) {
        *counts.entry(s[0]).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(rows, count)| (count, rows))
        .map_or(0, |(rows, _)| rows)
}

/// Integer labels from an array of shape `[N]` or `[N, 1]`; floats must hold whole numbers.
pub fn labels_from_array(path: &Path, key: &str, a: &Array) -> Result<Vec<i64>, DataError> {
    let err = |message: String| DataError::Array {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    if !(a.shape.len() == 1 || (a.shape.len() == 2 && a.shape[1] == 1)) {
        return Err(err(format!(
            "labels must have shape [N] or [N, 1], found {:?} (one-hot labels: store the class index)",
            a.shape
        )));
    }
    a.data.to_i64_whole().map_err(|e| match e {
        NotIntegers::Fraction { index, value } => err(format!(
            "label of sample {index} is {value}, expected a whole class index"
        )),
        NotIntegers::NotNumeric(t) => err(format!(
            "labels must be integers, found {t} (map class names to indices first)"
        )),
    })
}

/// The data's own ids (array `key`), checked unique, or the sample indices of `n` samples.
fn packed_ids(
    path: &Path,
    key: &str,
    ids: Option<Vec<String>>,
    n: usize,
) -> Result<Ids, DataError> {
    match ids {
        Some(ids) => {
            unique_ids(path, key, &ids)?;
            Ok(Ids::from(ids))
        }
        None => Ok(Ids::indices(n)),
    }
}

/// Ids key flips, saved outputs and reports: two samples with one id would be confused
/// with each other.
fn unique_ids(path: &Path, key: &str, ids: &[String]) -> Result<(), DataError> {
    match first_duplicate(ids) {
        Some((first, i)) => Err(DataError::Array {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: format!(
                "sample id '{}' appears twice (samples {first} and {i}); ids must be unique",
                ids[i]
            ),
        }),
        None => Ok(()),
    }
}

/// The positions `(first, second)` of the first id that appears twice.
pub fn first_duplicate(ids: &[String]) -> Option<(usize, usize)> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    ids.iter()
        .enumerate()
        .find_map(|(i, id)| seen.insert(id.as_str(), i).map(|first| (first, i)))
}

fn ids_from_array(path: &Path, key: &str, a: &Array) -> Result<Vec<String>, DataError> {
    if a.shape.len() != 1 {
        return Err(DataError::Array {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: format!("ids must have shape [N], found {:?}", a.shape),
        });
    }
    Ok(match &a.data {
        ArrayData::Str(v) => v.clone(),
        other => match other.to_i64() {
            Some(v) => v.iter().map(|x| x.to_string()).collect(),
            None => other
                .to_f64()
                .unwrap_or_default()
                .iter()
                .map(|x| x.to_string())
                .collect(),
        },
    })
}

//! Slices of a data set: tags such as `lighting=dark` or `size=small` attached to samples,
//! from a manifest (`--slices FILE`: CSV or JSON lines with an `id` column and one column
//! per tag) or from `slice_<tag>` arrays of an `.npz`. A sample may carry no value of a
//! tag; it then belongs to no slice of that tag.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use qgate_core::{Array, ArrayData};
use serde::Serialize;

use crate::{DataError, Dataset};

/// Prefix of `.npz` arrays that tag samples.
pub const SLICE_ARRAY_PREFIX: &str = "slice_";

/// One tag: its value per sample (`None` = untagged).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceTag {
    /// The tag's name (`lighting`).
    pub tag: String,
    /// The value of every sample, in data order.
    #[serde(skip)]
    pub values: Vec<Option<String>>,
}

impl SliceTag {
    /// Samples without a value of this tag.
    pub fn untagged(&self) -> u64 {
        self.values.iter().filter(|v| v.is_none()).count() as u64
    }
}

/// Every tag of a data set, and how the tags were matched to its samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Slices {
    /// Where the tags came from: the manifest's path, or the archive's `slice_*` arrays.
    pub source: String,
    /// The tags, in manifest column order (arrays: by name).
    pub tags: Vec<SliceTag>,
    /// Rows of the manifest whose id is not a sample of the data file.
    pub unknown_ids: u64,
    /// The first few of them, for the report.
    pub unknown_id_examples: Vec<String>,
    /// Whether each sample is listed by the manifest (all true without one); kept aligned
    /// with the samples by [`Dataset::select`].
    #[serde(skip)]
    pub listed: Vec<bool>,
    /// Every `tag=value` of the whole file, before `--limit` selects samples: a policy
    /// table may name a slice the selection left empty.
    #[serde(skip)]
    pub file_slices: Vec<String>,
}

impl Slices {
    /// Whether there is no tag.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Keeps the samples at `idx` (as [`Dataset::select`]).
    pub(crate) fn select(&mut self, idx: &[usize]) {
        if self.file_slices.is_empty() {
            self.file_slices = self.slice_names();
        }
        for t in &mut self.tags {
            t.values = idx.iter().map(|&i| t.values[i].clone()).collect();
        }
        if !self.listed.is_empty() {
            self.listed = idx.iter().map(|&i| self.listed[i]).collect();
        }
    }

    /// Samples the manifest does not list (tagged by no tag); 0 without a manifest.
    pub fn unlisted_samples(&self) -> u64 {
        self.listed.iter().filter(|l| !**l).count() as u64
    }

    /// Every `tag=value` the samples hold now, sorted.
    pub fn slice_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tags
            .iter()
            .flat_map(|t| {
                t.values
                    .iter()
                    .flatten()
                    .map(move |v| format!("{}={v}", t.tag))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every `tag=value` of the whole file (before any selection).
    pub fn all_slice_names(&self) -> Vec<String> {
        if self.file_slices.is_empty() {
            self.slice_names()
        } else {
            self.file_slices.clone()
        }
    }
}

fn format_err(path: &Path, message: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Moves the archive's `slice_<tag>` arrays out of `arrays` into tags (so no model is fed
/// one and none is listed as ignored). Numbers become their decimal text; an empty string
/// or a NaN is untagged. An array that is not one value per sample is an error naming it.
pub(crate) fn take_slice_arrays(
    path: &Path,
    arrays: &mut BTreeMap<String, Array>,
    n: usize,
) -> Result<Slices, DataError> {
    let keys: Vec<String> = arrays
        .keys()
        .filter(|k| k.starts_with(SLICE_ARRAY_PREFIX))
        .cloned()
        .collect();
    let mut tags = Vec::new();
    for key in keys {
        let Some(a) = arrays.remove(&key) else {
            continue;
        };
        let tag = key[SLICE_ARRAY_PREFIX.len()..].to_string();
        let bad = |message: String| DataError::Array {
            path: path.to_path_buf(),
            key: key.clone(),
            message,
        };
        if tag.is_empty() || tag.contains(['=', '"']) {
            return Err(bad(
                "a slice array is named `slice_<tag>`, with a tag free of `=` and `\"`".into(),
            ));
        }
        if a.shape.len() != 1 || a.shape[0] != n {
            return Err(bad(format!(
                "has shape {:?}; a slice array holds one value per sample: shape [{n}]",
                a.shape
            )));
        }
        let values = array_values(&a.data);
        if values.len() != n {
            return Err(bad(format!(
                "holds {} values for {n} samples; a slice array holds one value per sample",
                values.len()
            )));
        }
        tags.push(SliceTag { tag, values });
    }
    Ok(Slices {
        source: if tags.is_empty() {
            String::new()
        } else {
            format!("{} (slice_* arrays)", path.display())
        },
        tags,
        ..Slices::default()
    })
}

/// A number as a tag value: integers without a decimal point, others as the shortest
/// decimal that reads back (`0.1`, not `0.10000000149011612` for a float32), so one value
/// is spelled the same from an archive, a CSV or JSON; NaN and infinities are untagged.
fn number_text(x: f64) -> Option<String> {
    x.is_finite().then(|| format!("{x}"))
}

/// Each element of a one-value-per-sample array as a tag value (`None`: untagged).
fn array_values(data: &ArrayData) -> Vec<Option<String>> {
    fn all<T: ToString>(v: &[T]) -> Vec<Option<String>> {
        v.iter().map(|x| Some(x.to_string())).collect()
    }
    match data {
        ArrayData::Str(v) => v
            .iter()
            .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
            .collect(),
        ArrayData::F32(v) => v
            .iter()
            .map(|x| x.is_finite().then(|| x.to_string()))
            .collect(),
        ArrayData::F64(v) => v.iter().map(|&x| number_text(x)).collect(),
        ArrayData::I8(v) => all(v),
        ArrayData::I16(v) => all(v),
        ArrayData::I32(v) => all(v),
        ArrayData::I64(v) => all(v),
        ArrayData::U8(v) => all(v),
        ArrayData::U16(v) => all(v),
        ArrayData::U32(v) => all(v),
        ArrayData::U64(v) => all(v),
        ArrayData::Bool(v) => all(v),
    }
}

/// Reads a slice manifest (`.csv`, or `.jsonl`/`.json` with one object per line) and
/// matches its rows to `data`'s samples by id.
pub fn load_manifest(path: &Path, data: &Dataset) -> Result<Slices, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    crate::regular_file(path, "a slice manifest")?;
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (columns, rows) = match ext.as_str() {
        "csv" => read_csv(path, &text)?,
        "jsonl" | "json" | "ndjson" => read_json_lines(path, &text)?,
        other => {
            return Err(format_err(
                path,
                format!("unknown slice manifest format '.{other}': expected .csv or .jsonl (one JSON object per line), each row an `id` and one column per tag"),
            ))
        }
    };
    if columns.is_empty() {
        return Err(format_err(
            path,
            "the manifest has an `id` column but no tag column: add one column per tag, e.g. `id,lighting,size`".into(),
        ));
    }
    let position: HashMap<&str, usize> =
        data.ids.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let mut tags: Vec<SliceTag> = columns
        .iter()
        .map(|c| SliceTag {
            tag: c.clone(),
            values: vec![None; data.len()],
        })
        .collect();
    let mut listed = vec![false; data.len()];
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Slices {
        source: path.display().to_string(),
        ..Slices::default()
    };
    for (line, id, values) in rows {
        if let Some(first) = seen.insert(id.clone(), line) {
            return Err(format_err(
                path,
                format!("line {line}: id '{id}' is listed twice (first on line {first}); list each sample once"),
            ));
        }
        let Some(&i) = position.get(id.as_str()) else {
            out.unknown_ids += 1;
            if out.unknown_id_examples.len() < 5 {
                out.unknown_id_examples.push(id);
            }
            continue;
        };
        listed[i] = true;
        for (t, v) in tags.iter_mut().zip(values) {
            t.values[i] = v;
        }
    }
    out.listed = listed;
    out.tags = tags;
    Ok(out)
}

/// `(line, id, value per tag column)` rows of a manifest.
type Rows = Vec<(usize, String, Vec<Option<String>>)>;

fn check_tag_names(path: &Path, columns: &[String]) -> Result<(), DataError> {
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() || c.contains(['=', '"']) {
            return Err(format_err(
                path,
                format!(
                    "tag column {} is named '{c}'; a tag name is not empty and has no `=` or `\"`",
                    i + 2
                ),
            ));
        }
        if columns[..i].contains(c) {
            return Err(format_err(
                path,
                format!("tag column '{c}' appears twice; name every column once"),
            ));
        }
    }
    Ok(())
}

fn read_csv(path: &Path, text: &str) -> Result<(Vec<String>, Rows), DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format_err(path, format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let id_col = headers.iter().position(|h| h == "id").ok_or_else(|| {
        format_err(
            path,
            format!(
                "no `id` column (the header is: {}); a slice manifest has an `id` column naming each sample and one column per tag",
                headers.join(",")
            ),
        )
    })?;
    let columns: Vec<String> = headers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != id_col)
        .map(|(_, h)| h.clone())
        .collect();
    check_tag_names(path, &columns)?;
    let mut rows = Vec::new();
    for (k, record) in reader.records().enumerate() {
        let line = k + 2;
        let record = record.map_err(|e| format_err(path, format!("line {line}: {e}")))?;
        let id = record.get(id_col).unwrap_or_default().to_string();
        if id.is_empty() {
            return Err(format_err(path, format!("line {line}: the `id` is empty")));
        }
        let values = (0..headers.len())
            .filter(|i| *i != id_col)
            .map(|i| record.get(i).map(str::to_string).filter(|s| !s.is_empty()))
            .collect();
        rows.push((line, id, values));
    }
    Ok((columns, rows))
}

fn json_text(v: &serde_json::Value) -> Option<Option<String>> {
    match v {
        serde_json::Value::Null => Some(None),
        serde_json::Value::String(s) if s.trim().is_empty() => Some(None),
        serde_json::Value::String(s) => Some(Some(s.trim().to_string())),
        serde_json::Value::Number(n) => Some(match n.as_f64() {
            // Integers as written; other numbers in the shortest form that reads back.
            Some(_) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            Some(x) => number_text(x),
            None => Some(n.to_string()),
        }),
        serde_json::Value::Bool(b) => Some(Some(b.to_string())),
        _ => None,
    }
}

fn read_json_lines(path: &Path, text: &str) -> Result<(Vec<String>, Rows), DataError> {
    let mut columns: Vec<String> = Vec::new();
    let mut parsed = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| format_err(path, format!("line {line}: not JSON: {e}")))?;
        let serde_json::Value::Object(obj) = value else {
            return Err(format_err(
                path,
                format!("line {line}: expected an object like {{\"id\": \"s1\", \"lighting\": \"dark\"}}"),
            ));
        };
        let id = match obj.get("id") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(format_err(
                    path,
                    format!("line {line}: no `id` (a non-empty string or a number)"),
                ))
            }
        };
        let mut row = BTreeMap::new();
        for (raw_key, v) in &obj {
            let key = raw_key.trim().to_string();
            if key == "id" {
                continue;
            }
            let key = &key;
            let text = json_text(v).ok_or_else(|| {
                format_err(
                    path,
                    format!("line {line}: tag '{key}' is {v}; a tag value is a string, a number, a boolean or null"),
                )
            })?;
            if row.contains_key(key) {
                return Err(format_err(
                    path,
                    format!("line {line}: tag '{key}' appears twice (names are compared without surrounding spaces)"),
                ));
            }
            if !columns.contains(key) {
                columns.push(key.clone());
            }
            row.insert(key.clone(), text);
        }
        parsed.push((line, id, row));
    }
    check_tag_names(path, &columns)?;
    let rows = parsed
        .into_iter()
        .map(|(line, id, mut row)| {
            let values = columns.iter().map(|c| row.remove(c).flatten()).collect();
            (line, id, values)
        })
        .collect();
    Ok((columns, rows))
}

//! CSV tables for tabular models: one row per sample, numeric feature columns, a label
//! column and an optional id column.

use std::collections::BTreeMap;
use std::path::Path;

use qgate_core::{Array, ArrayData};

use crate::{DataError, Dataset, LABEL_KEYS};

/// Which columns hold labels and ids.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// Label column; default: the first of `label`, `labels`, `y`, `target`, `class`.
    pub label_column: Option<String>,
    /// Id column; default `id` when present.
    pub id_column: Option<String>,
}

/// Loads a CSV table. Feature columns (all but id, label and text columns) become one
/// float32 array `features` of shape `[N, F]`; text columns are listed in
/// [`Dataset::unusable`]. Non-numeric labels are treated as class names, indexed in
/// sorted order.
pub(crate) fn load_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("cannot read CSV: {e}"),
        })?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("cannot read the CSV header: {e}"),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    for (i, h) in headers.iter().enumerate() {
        if let Some(j) = headers[..i].iter().position(|x| x == h) {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "column '{h}' appears twice in the header (columns {} and {}); name every column once",
                    j + 1,
                    i + 1
                ),
            });
        }
    }
    let find = |wanted: &Option<String>, defaults: &[&str]| -> Result<Option<usize>, DataError> {
        match wanted {
            Some(w) => headers
                .iter()
                .position(|h| h == w)
                .map(Some)
                .ok_or_else(|| DataError::MissingKey {
                    path: path.to_path_buf(),
                    key: w.clone(),
                    available: headers.join(", "),
                }),
            None => Ok(defaults
                .iter()
                .find_map(|d| headers.iter().position(|h| h == d))),
        }
    };
    let mut label_defaults = LABEL_KEYS.to_vec();
    label_defaults.push("class");
    let label_col = find(&opts.label_column, &label_defaults)?;
    let id_col = find(&opts.id_column, &["id"])?;
    let mut records: Vec<csv::StringRecord> = Vec::new();
    for (row, record) in reader.records().enumerate() {
        records.push(record.map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("line {}: {e}", row + 2),
        })?);
    }
    // A column where no cell is a number (file names, comments) is text, not a feature: it
    // is set aside and listed, never checked. A column mixing numbers and text is a broken
    // feature column: that stays an error naming the cell.
    let numeric = |c: usize| {
        records
            .iter()
            .any(|r| r.get(c).unwrap_or("").parse::<f32>().is_ok())
    };
    let mut unusable = BTreeMap::new();
    let feature_cols: Vec<usize> = (0..headers.len())
        .filter(|&i| Some(i) != label_col && Some(i) != id_col)
        .filter(|&i| {
            let keep = records.is_empty() || numeric(i);
            if !keep {
                unusable.insert(
                    headers[i].clone(),
                    "is a text column (no cell is a number), not a feature".to_string(),
                );
            }
            keep
        })
        .collect();
    let mut values: Vec<f32> = Vec::new();
    let mut raw_labels: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    for (row, record) in records.iter().enumerate() {
        let line = row + 2;
        for &c in &feature_cols {
            let cell = record.get(c).unwrap_or("");
            let v: f32 = cell.parse().map_err(|_| DataError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "line {line}, column '{}': '{cell}' is not a number",
                    headers[c]
                ),
            })?;
            values.push(v);
        }
        if let Some(c) = label_col {
            raw_labels.push(record.get(c).unwrap_or("").to_string());
        }
        ids.push(match id_col {
            Some(c) => record.get(c).unwrap_or("").to_string(),
            None => row.to_string(),
        });
    }
    if ids.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    let (labels, class_names) = match label_col {
        Some(col) => {
            let (l, names) = labels_and_names(path, &headers[col], &raw_labels)?;
            (Some(l), names)
        }
        None => (None, Vec::new()),
    };
    let n = ids.len();
    let features = Array {
        shape: vec![n, feature_cols.len()],
        data: ArrayData::F32(values),
    };
    let mut ds = Dataset::from_arrays(
        &path.display().to_string(),
        vec![("features".into(), features)],
        labels,
        Some(ids),
    )?;
    ds.class_names = class_names;
    ds.label_key = label_col.map(|c| headers[c].clone());
    ds.unusable = unusable;
    Ok(ds)
}

/// Labels from the label column's cells: integers (whole floats too), or all text as class
/// names (indexed in sorted order). A number that is not whole, or numbers mixed with text,
/// is a typo that would otherwise turn every label into a class name sorted as text (and
/// score both models near chance): an error naming the line and value.
fn labels_and_names(
    path: &Path,
    column: &str,
    raw_labels: &[String],
) -> Result<(Vec<i64>, Vec<String>), DataError> {
    let bad = |line: usize, value: &str, why: &str| DataError::Format {
        path: path.to_path_buf(),
        message: format!("line {line}, label column '{column}': '{value}' {why}"),
    };
    let as_number: Vec<Option<f64>> = raw_labels.iter().map(|s| s.parse().ok()).collect();
    let numbers = as_number.iter().filter(|v| v.is_some()).count();
    if let Some(i) = as_number
        .iter()
        .position(|v| v.is_some_and(|x| x.fract() != 0.0 || !x.is_finite()))
    {
        return Err(bad(i + 2, &raw_labels[i], "is not a whole class index"));
    }
    if numbers == raw_labels.len() {
        let labels = as_number.iter().map(|v| v.unwrap_or(0.0) as i64).collect();
        return Ok((labels, Vec::new()));
    }
    if numbers > 0 {
        let i = as_number.iter().position(Option::is_none).unwrap_or(0);
        return Err(bad(
            i + 2,
            &raw_labels[i],
            "is text among numeric labels (use class indices or class names, not both)",
        ));
    }
    let mut names: Vec<String> = raw_labels.to_vec();
    names.sort();
    names.dedup();
    let index: BTreeMap<&str, i64> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as i64))
        .collect();
    let labels = raw_labels.iter().map(|s| index[s.as_str()]).collect();
    Ok((labels, names))
}

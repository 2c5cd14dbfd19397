//! CSV tables for tabular models: one row per sample, numeric feature columns, a label
//! column and an optional id column.
//!
//! The file is read once at load, record by record: labels, ids, which columns are
//! features, every feature cell checked, and each record's byte offset kept. A table whose
//! features take [`STREAM_MIN_BYTES`] or more as float32 stays in its file and a batch's
//! rows are parsed when it is read (seeking to the first record of each run of rows);
//! a smaller one is read into memory through the same reader.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use qgate_core::{Array, Ids};

use crate::stored::{fill_f32_rows, runs, StoredArray};
use crate::{DataError, Dataset, LABEL_KEYS, STREAM_MIN_BYTES};

/// Which columns hold labels and ids.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// Label column; default: the first of `label`, `labels`, `y`, `target`, `class`.
    pub label_column: Option<String>,
    /// Id column; default `id` when present.
    pub id_column: Option<String>,
}

/// The feature columns of a CSV table, parsed from the records asked for.
#[derive(Debug, PartialEq)]
pub(crate) struct CsvRows {
    pub(crate) path: PathBuf,
    /// Byte offset of each record (row) in the file.
    offsets: Vec<u64>,
    /// Fields a record has (the header's count).
    fields: usize,
    /// The feature columns' positions among the fields, and their names.
    columns: Vec<(usize, String)>,
    /// `[N, F]`.
    pub(crate) shape: Vec<usize>,
}

/// Loads a CSV table. Feature columns (all but id, label and text columns) become one
/// float32 array `features` of shape `[N, F]`; text columns are listed in
/// [`Dataset::unusable`]. Non-numeric labels are treated as class names, indexed in
/// sorted order.
pub(crate) fn load_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset, DataError> {
    load_csv_streaming(path, opts, STREAM_MIN_BYTES)
}

/// [`load_csv`], leaving the features in the file when they take `min_bytes` or more as
/// float32.
pub fn load_csv_streaming(
    path: &Path,
    opts: &CsvOptions,
    min_bytes: u64,
) -> Result<Dataset, DataError> {
    let format = |message: String| DataError::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| format(format!("cannot read CSV: {e}")))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format(format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let (label_col, id_col) = label_and_id_columns(path, &headers, opts)?;
    let mut columns: Vec<Column> = (0..headers.len())
        .filter(|&i| Some(i) != label_col && Some(i) != id_col)
        .map(|at| Column {
            at,
            any_number: false,
            first_bad: None,
        })
        .collect();
    let mut labels = Labels::default();
    let mut ids: Option<Vec<String>> = id_col.map(|_| Vec::new());
    let mut offsets = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut row = 0usize;
    loop {
        let offset = reader.position().byte();
        let more = reader
            .read_record(&mut record)
            .map_err(|e| format(format!("line {}: {e}", row + 2)))?;
        if !more {
            break;
        }
        offsets.push(offset);
        for c in &mut columns {
            let cell = record.get(c.at).unwrap_or("");
            if cell.parse::<f32>().is_ok() {
                c.any_number = true;
            } else if c.first_bad.is_none() {
                c.first_bad = Some((row + 2, cell.to_string()));
            }
        }
        if let Some(c) = label_col {
            labels.push(record.get(c).unwrap_or(""));
        }
        if let (Some(c), Some(ids)) = (id_col, ids.as_mut()) {
            ids.push(record.get(c).unwrap_or("").to_string());
        }
        row += 1;
    }
    let n = row;
    if n == 0 {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
        });
    }
    // A column where no cell is a number (file names, comments) is text, not a feature: it
    // is set aside and listed, never checked. A column mixing numbers and text is a broken
    // feature column: that stays an error naming the first such cell.
    let mut unusable = BTreeMap::new();
    for c in columns.iter().filter(|c| !c.any_number) {
        unusable.insert(
            headers[c.at].clone(),
            "is a text column (no cell is a number), not a feature".to_string(),
        );
    }
    columns.retain(|c| c.any_number);
    if let Some(((line, cell), at)) = columns
        .iter()
        .filter_map(|c| c.first_bad.clone().map(|bad| (bad, c.at)))
        .min_by_key(|((line, _), at)| (*line, *at))
    {
        return Err(format(format!(
            "line {line}, column '{}': '{cell}' is not a number",
            headers[at]
        )));
    }
    let (labels, class_names) = match label_col {
        Some(col) => {
            let (l, names) = labels.finish(path, &headers[col])?;
            (Some(l), names)
        }
        None => (None, Vec::new()),
    };
    let ids = match ids {
        Some(ids) => {
            crate::unique_ids(path, "id", &ids)?;
            Ids::from(ids)
        }
        None => Ids::indices(n),
    };
    let rows = CsvRows {
        path: path.to_path_buf(),
        offsets,
        fields: headers.len(),
        shape: vec![n, columns.len()],
        columns: columns
            .iter()
            .map(|c| (c.at, headers[c.at].clone()))
            .collect(),
    };
    let stored = StoredArray::csv(rows);
    let mut ds = Dataset::of_samples(path.display().to_string(), ids);
    if qgate_core::memory::bytes_of(stored.shape(), 4) < u128::from(min_bytes) {
        let features = stored.read_all().map_err(format)?;
        ds.arrays.insert("features".into(), features);
    } else {
        ds.stored.insert("features".into(), stored);
    }
    ds.labels = labels;
    ds.class_names = class_names;
    ds.label_key = label_col.map(|c| headers[c].clone());
    ds.unusable = unusable;
    Ok(ds)
}

/// A column other than the label and id: whether any cell is a number, and the first cell
/// that is not (line, text).
struct Column {
    at: usize,
    any_number: bool,
    first_bad: Option<(usize, String)>,
}

/// The label and id columns' positions; an error for a header naming a column twice or a
/// column asked for that the header lacks.
fn label_and_id_columns(
    path: &Path,
    headers: &[String],
    opts: &CsvOptions,
) -> Result<(Option<usize>, Option<usize>), DataError> {
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
    Ok((
        find(&opts.label_column, &label_defaults)?,
        find(&opts.id_column, &["id"])?,
    ))
}

/// The label column's cells, each distinct text kept once: 4 bytes a row.
#[derive(Default)]
struct Labels {
    /// Distinct cell → (its index in `texts`, the first row holding it).
    index: HashMap<String, (u32, usize)>,
    texts: Vec<String>,
    rows: Vec<u32>,
}

impl Labels {
    fn push(&mut self, cell: &str) {
        let next = self.texts.len() as u32;
        let row = self.rows.len();
        let code = match self.index.get(cell) {
            Some(&(code, _)) => code,
            None => {
                self.index.insert(cell.to_string(), (next, row));
                self.texts.push(cell.to_string());
                next
            }
        };
        self.rows.push(code);
    }

    /// Labels from the cells: integers (whole floats too), or all text as class names
    /// (indexed in sorted order). A number that is not whole, or numbers mixed with text,
    /// is a typo that would otherwise turn every label into a class name sorted as text (and
    /// score both models near chance): an error naming the line and value.
    fn finish(self, path: &Path, column: &str) -> Result<(Vec<i64>, Vec<String>), DataError> {
        let bad = |row: usize, value: &str, why: &str| DataError::Format {
            path: path.to_path_buf(),
            message: format!("line {}, label column '{column}': '{value}' {why}", row + 2),
        };
        let first_row = |text: &str| self.index.get(text).map_or(0, |&(_, row)| row);
        let as_number: Vec<Option<f64>> = self.texts.iter().map(|s| s.parse().ok()).collect();
        let first_where = |keep: &dyn Fn(Option<f64>) -> bool| {
            self.texts
                .iter()
                .zip(&as_number)
                .filter(|(_, v)| keep(**v))
                .map(|(t, _)| (first_row(t), t))
                .min()
        };
        if let Some((row, text)) =
            first_where(&|v| v.is_some_and(|x| x.fract() != 0.0 || !x.is_finite()))
        {
            return Err(bad(row, text, "is not a whole class index"));
        }
        let numbers = as_number.iter().filter(|v| v.is_some()).count();
        if numbers == self.texts.len() {
            let labels = self
                .rows
                .iter()
                .map(|&c| as_number[c as usize].unwrap_or(0.0) as i64)
                .collect();
            return Ok((labels, Vec::new()));
        }
        if let Some((row, text)) = first_where(&|v| v.is_none()).filter(|_| numbers > 0) {
            return Err(bad(
                row,
                text,
                "is text among numeric labels (use class indices or class names, not both)",
            ));
        }
        let mut names = self.texts.clone();
        names.sort();
        let class_of_code: Vec<i64> = self
            .texts
            .iter()
            .map(|t| names.binary_search(t).map_or(0, |i| i as i64))
            .collect();
        let labels = self
            .rows
            .iter()
            .map(|&c| class_of_code[c as usize])
            .collect();
        Ok((labels, names))
    }
}

impl CsvRows {
    /// Parses the feature cells of records `rows` (in that order) into `out` as float32,
    /// reusing its buffer when it holds float32 already.
    pub(crate) fn read_rows_into(&self, rows: &[usize], out: &mut Array) -> Result<(), String> {
        let what = format!("a batch of {} rows of {}", rows.len(), self.path.display());
        fill_f32_rows(out, rows.len(), &self.shape[1..], &what, |values| {
            self.parse_rows(rows, values)
        })
    }

    /// Appends the feature cells of records `rows` (in that order) to `values`.
    fn parse_rows(&self, rows: &[usize], values: &mut Vec<f32>) -> Result<(), String> {
        let file =
            File::open(&self.path).map_err(|e| format!("cannot reopen to read rows: {e}"))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(file);
        let mut record = csv::StringRecord::new();
        for run in runs(rows) {
            let first = rows[run.start];
            let mut at = csv::Position::new();
            at.set_byte(self.offsets[first])
                .set_line(first as u64 + 2)
                .set_record(first as u64);
            reader
                .seek(at)
                .map_err(|e| format!("cannot seek to line {}: {e}", first + 2))?;
            for &r in &rows[run] {
                let line = r + 2;
                let changed = "; did the file change since it was loaded?";
                match reader.read_record(&mut record) {
                    Ok(true) if record.len() == self.fields => {}
                    Ok(true) => {
                        return Err(format!(
                            "line {line} has {} fields, the header {}{changed}",
                            record.len(),
                            self.fields
                        ))
                    }
                    Ok(false) => return Err(format!("line {line} is past the end{changed}")),
                    Err(e) => return Err(format!("line {line}: {e}")),
                }
                for (c, name) in &self.columns {
                    let cell = record.get(*c).unwrap_or("");
                    let v: f32 = cell.parse().map_err(|_| {
                        format!("line {line}, column '{name}': '{cell}' is not a number{changed}")
                    })?;
                    values.push(v);
                }
            }
        }
        Ok(())
    }
}

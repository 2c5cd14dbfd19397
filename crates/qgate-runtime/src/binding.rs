//! Which data array feeds which model input.

use crate::{Dim, ModelInfo, TensorInfo};
use qgate_data::Dataset;
use serde::Serialize;

/// The user's mapping of model inputs to data arrays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputMapping {
    /// `--input-key KEY`: the array feeding a model's single input.
    pub single_key: Option<String>,
    /// `--input NAME=KEY`, repeatable: explicit pairs for several inputs.
    pub pairs: Vec<(String, String)>,
}

/// One model input and the array that feeds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputBinding {
    /// Model input name.
    pub input: String,
    /// Data array name.
    pub array: String,
    /// How the binding was chosen.
    pub how: BoundBy,
}

/// Which rule bound a data array to a model input (in the order they are tried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundBy {
    /// `--input NAME=KEY`.
    InputPair,
    /// `--input-key KEY` (single-input models).
    InputKey,
    /// The array has the input's name.
    SameName,
    /// The data set's only array (single-input models).
    OnlyArray,
}

/// Binds every model input to a data array and checks shapes and types.
///
/// Order: an explicit `NAME=KEY` pair; `--input-key` for a single-input model; an array
/// named like the input; for a single-input model, the data set's only feature array.
pub fn resolve_inputs(
    info: &ModelInfo,
    data: &Dataset,
    mapping: &InputMapping,
) -> Result<Vec<InputBinding>, String> {
    check_pair_names(info, mapping)?;
    let single = info.inputs.len() == 1;
    let mut out = Vec::new();
    for input in &info.inputs {
        let (array, how) = choose_array(input, single, data, mapping)?;
        check_array(input, data, &array)?;
        out.push(InputBinding {
            input: input.name.clone(),
            array,
            how,
        });
    }
    Ok(out)
}

/// The data set's array names, comma-separated, for error messages.
fn available(data: &Dataset) -> String {
    data.array_names().join(", ")
}

/// Checks that every `--input NAME=KEY` pair names an input of the model.
fn check_pair_names(info: &ModelInfo, mapping: &InputMapping) -> Result<(), String> {
    for (name, _) in &mapping.pairs {
        if !info.inputs.iter().any(|i| &i.name == name) {
            return Err(format!(
                "--input {name}=…: the model has no input '{name}' (its inputs: {})",
                info.inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// `(array name, how it was chosen)` for `input`, by the order [`resolve_inputs`] documents;
/// `single` says whether the model has one input. The array is not yet checked to exist.
fn choose_array(
    input: &TensorInfo,
    single: bool,
    data: &Dataset,
    mapping: &InputMapping,
) -> Result<(String, BoundBy), String> {
    if let Some((_, k)) = mapping.pairs.iter().find(|(n, _)| n == &input.name) {
        return Ok((k.clone(), BoundBy::InputPair));
    }
    if let (true, Some(k)) = (single, &mapping.single_key) {
        return Ok((k.clone(), BoundBy::InputKey));
    }
    if data.has_array(&input.name) || data.unusable.contains_key(&input.name) {
        return Ok((input.name.clone(), BoundBy::SameName));
    }
    let names = data.array_names();
    if single && names.len() == 1 {
        let k = names[0].to_string();
        return Ok((k, BoundBy::OnlyArray));
    }
    Err(format!(
        "no data array for model input '{}' {}: the data set {} holds {}; choose one with {}",
        input.name,
        input.shape_text(),
        data.source,
        available(data),
        if single {
            "--input-key KEY"
        } else {
            "--input NAME=KEY"
        }
    ))
}

/// Checks that data array `array` exists, is usable, holds numbers and fits the shape
/// `input` declares.
fn check_array(input: &TensorInfo, data: &Dataset, array: &str) -> Result<(), String> {
    if let Some(why) = data.unusable.get(array) {
        return Err(format!(
            "model input '{}': data array '{array}' of {} cannot be used: it {why}",
            input.name, data.source
        ));
    }
    let (shape, elem) = data.array_meta(array).ok_or_else(|| {
        format!(
            "model input '{}': the data set {} has no array '{array}' (it holds {})",
            input.name,
            data.source,
            available(data)
        )
    })?;
    if !elem.is_numeric() {
        return Err(format!(
            "model input '{}': data array '{array}' holds {elem}, expected numbers",
            input.name,
        ));
    }
    check_shape(input, data, array, &shape)
}

/// Checks that array `a` (named `array`) has the rank `input` declares and matches every
/// fixed dimension after the sample axis; an undeclared shape fits anything.
fn check_shape(
    input: &TensorInfo,
    data: &Dataset,
    array: &str,
    shape: &[usize],
) -> Result<(), String> {
    if input.shape.is_empty() {
        return Ok(());
    }
    let fits = input.shape.len() == shape.len()
        && input
            .shape
            .iter()
            .zip(shape)
            .skip(1)
            .all(|(d, &s)| !matches!(d, Dim::Fixed(n) if *n != s));
    if !fits {
        let data_shape: Vec<String> = std::iter::once("N".to_string())
            .chain(shape.iter().skip(1).map(usize::to_string))
            .collect();
        return Err(format!(
            "model input '{}' expects shape {} but data array '{array}' has [{}] ({} samples); \
             reshape the data or pick another array{}",
            input.name,
            input.shape_text(),
            data_shape.join(", "),
            shape.first().copied().unwrap_or(0),
            set_aside(data)
        ));
    }
    Ok(())
}

/// What the loader set aside, for an error about a shape that may be short because of it.
fn set_aside(data: &Dataset) -> String {
    if data.unusable.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = data
        .unusable
        .iter()
        .map(|(k, why)| format!("'{k}' {why}"))
        .collect();
    format!(
        " (set aside when loading {}: {})",
        data.source,
        parts.join("; ")
    )
}

/// The data set's arrays that no binding reads, with the reason each was left aside: the
/// unusable ones with why they could not be used, the rest as not read by the model(s).
pub fn ignored_arrays(data: &Dataset, bindings: &[&[InputBinding]]) -> Vec<IgnoredArray> {
    let read = |k: &str| bindings.iter().any(|bs| bs.iter().any(|b| b.array == k));
    let unread = data
        .array_names()
        .into_iter()
        .filter(|k| !read(k))
        .map(|k| IgnoredArray {
            name: k.to_string(),
            reason: Ignored::NotRead,
        });
    let unusable = data.unusable.iter().map(|(k, why)| IgnoredArray {
        name: k.clone(),
        reason: Ignored::Unusable(why.clone()),
    });
    let mut all: Vec<IgnoredArray> = unread.chain(unusable).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// A data array the run did not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredArray {
    pub name: String,
    /// Why it was not read.
    pub reason: Ignored,
}

/// Why a data array was left aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "why", rename_all = "snake_case")]
pub enum Ignored {
    /// No model input is bound to it.
    NotRead,
    /// It could not be read as an array; the reader's explanation ("has 3 rows, not 540").
    Unusable(String),
}

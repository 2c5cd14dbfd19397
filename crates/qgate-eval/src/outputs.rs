//! Reading class scores or labels from a model's outputs.

use std::fmt;
use std::str::FromStr;

use qgate_core::metrics::{argmax, Scores};
use qgate_core::Array;
use serde::Serialize;

use crate::ModelRun;

/// What an output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores: softmax gives probabilities.
    Logits,
    /// Probabilities (rows sum to 1).
    Probs,
    /// Class indices, one per sample.
    Labels,
}

impl FromStr for OutputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logits" => Ok(OutputKind::Logits),
            "probs" | "probabilities" => Ok(OutputKind::Probs),
            "labels" => Ok(OutputKind::Labels),
            other => Err(format!(
                "unknown output kind '{other}': expected logits, probs or labels"
            )),
        }
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputKind::Logits => "logits",
            OutputKind::Probs => "probs",
            OutputKind::Labels => "labels",
        })
    }
}

/// Which rule chose the output read as predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBy {
    /// `--output`.
    OutputFlag,
    /// The first output shaped `[N, C]`.
    FirstScores,
    /// The first integer output shaped `[N]` (labels).
    FirstLabels,
}

/// Which rule decided what the output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KindBy {
    /// `--output-kind`.
    KindFlag,
    /// An integer output with one value per sample: labels.
    IntegerPerSample,
    /// Every finite row lies in [0, 1] and sums to 1: probabilities.
    RowsSumToOne,
    /// Rows are not probability distributions: logits (softmax applied).
    NotDistributions,
}

/// The output read as predictions.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreOutput {
    pub name: String,
    /// What it holds.
    pub kind: OutputKind,
    /// How the output was chosen.
    pub chosen_by: ChosenBy,
    /// How the kind was decided.
    pub kind_by: KindBy,
    /// Columns (classes) of the output; 0 for labels.
    pub n_classes: usize,
    /// Top-1 class per sample (`None` = non-finite output).
    #[serde(skip)]
    pub predictions: Vec<Option<usize>>,
    /// Raw scores, for top-k accuracy.
    #[serde(skip)]
    pub scores: Option<Scores>,
    /// Class probabilities (softmax of logits, or the probabilities).
    #[serde(skip)]
    pub probs: Option<Scores>,
}

impl ScoreOutput {
    /// A copy without the per-sample values (for reports).
    pub fn without_values(&self) -> ScoreOutput {
        ScoreOutput {
            predictions: Vec::new(),
            scores: None,
            probs: None,
            ..self.clone()
        }
    }
}

/// Tolerance on row sums when detecting probabilities: float32 softmax rows sum to 1 within
/// a few ulps times the class count; 1e-3 also admits quantized probabilities.
const PROB_ROW_SUM_TOLERANCE: f64 = 1e-3;

/// Picks the output holding class scores and reads predictions from it.
pub fn select_scores(
    run: &ModelRun,
    output: Option<&str>,
    kind: Option<OutputKind>,
) -> Result<ScoreOutput, String> {
    let named: Vec<(String, &Array)> = run.outputs.iter().map(|(n, a)| (n.clone(), a)).collect();
    let (index, chosen_by) = choose_output(&named, output)?;
    let (name, array) = (named[index].0.clone(), named[index].1);
    let n = array.n_rows();
    let values = array
        .to_f64()
        .ok_or_else(|| format!("output '{name}' is not numeric"))?;
    let is_labels_shape = array.shape.len() == 1 || (array.shape.len() == 2 && array.shape[1] == 1);
    let (kind, kind_by) = match kind {
        Some(k) => (k, KindBy::KindFlag),
        None if is_labels_shape && array.elem_type().is_integer() => {
            (OutputKind::Labels, KindBy::IntegerPerSample)
        }
        None => detect_kind(&values, array.row_len()),
    };
    if kind == OutputKind::Labels {
        if !is_labels_shape {
            return Err(format!(
                "output '{name}' has shape {:?}; labels need one value per sample ([N] or [N, 1])",
                array.shape
            ));
        }
        // NaN or infinite: a non-finite answer (judged by `finite_outputs`). A finite value
        // that is no class index is a broken output, not a wrong answer.
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_finite() && (**v < 0.0 || v.fract() != 0.0))
        {
            return Err(format!(
                "output '{name}' holds predicted labels, but sample {i} has {v}; expected class \
                 indices 0, 1, 2, …"
            ));
        }
        let predictions = values
            .iter()
            .map(|&v| v.is_finite().then_some(v as usize))
            .collect();
        return Ok(ScoreOutput {
            name,
            kind,
            chosen_by,
            kind_by,
            n_classes: 0,
            predictions,
            scores: None,
            probs: None,
        });
    }
    if array.shape.len() != 2 {
        return Err(format!(
            "output '{name}' has shape {:?}; class scores need shape [N, C]",
            array.shape
        ));
    }
    let scores = Scores {
        n_samples: n,
        n_classes: array.shape[1],
        values,
    };
    let predictions = (0..n).map(|i| argmax(scores.row(i))).collect();
    let probs = match kind {
        OutputKind::Logits => scores.softmax(),
        _ => normalise_rows(&scores),
    };
    Ok(ScoreOutput {
        name,
        kind,
        chosen_by,
        kind_by,
        n_classes: scores.n_classes,
        predictions,
        scores: Some(scores),
        probs: Some(probs),
    })
}

/// `(index, how)` of the output read as predictions among `outputs`: `wanted` by name, else
/// the first shaped `[N, C]`, else the first integer one shaped `[N]` or `[N, 1]`.
pub(crate) fn choose_output(
    outputs: &[(String, &Array)],
    wanted: Option<&str>,
) -> Result<(usize, ChosenBy), String> {
    let listing = || {
        outputs
            .iter()
            .map(|(n, a)| format!("'{n}' {:?} {}", a.shape, a.elem_type()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(o) = wanted {
        return outputs
            .iter()
            .position(|(n, _)| n == o)
            .map(|i| (i, ChosenBy::OutputFlag))
            .ok_or_else(|| {
                format!(
                    "--output {o}: the model has no such output (its outputs: {})",
                    listing()
                )
            });
    }
    let first_nc = outputs
        .iter()
        .position(|(_, a)| a.shape.len() == 2 && a.shape[1] >= 2 && a.elem_type().is_numeric());
    let first_labels = outputs.iter().position(|(_, a)| {
        a.elem_type().is_integer()
            && (a.shape.len() == 1 || (a.shape.len() == 2 && a.shape[1] == 1))
    });
    match (first_nc, first_labels) {
        (Some(i), _) => Ok((i, ChosenBy::FirstScores)),
        (None, Some(i)) => Ok((i, ChosenBy::FirstLabels)),
        _ => Err(format!(
            "no output holds class scores [N, C] or labels [N] (outputs: {}); pick one with --output",
            listing()
        )),
    }
}

/// Whether a finite row is a probability distribution: values in [0, 1] summing to 1.
pub(crate) fn is_distribution(r: &[f64]) -> bool {
    r.iter().all(|&v| (0.0..=1.0).contains(&v))
        && (r.iter().sum::<f64>() - 1.0).abs() <= PROB_ROW_SUM_TOLERANCE
}

/// A row divided by its sum (unchanged when the sum is not positive).
pub(crate) fn normalise(row: &[f64]) -> Vec<f64> {
    let sum: f64 = row.iter().sum();
    if sum > 0.0 {
        row.iter().map(|v| v / sum).collect()
    } else {
        row.to_vec()
    }
}

/// Probabilities when every finite row is a distribution (and there is one), else logits.
pub(crate) fn detect_kind(values: &[f64], row: usize) -> (OutputKind, KindBy) {
    let finite_rows: Vec<&[f64]> = values
        .chunks(row.max(1))
        .filter(|r| r.iter().all(|v| v.is_finite()))
        .collect();
    let probs = !finite_rows.is_empty() && finite_rows.iter().all(|r| is_distribution(r));
    if probs {
        (OutputKind::Probs, KindBy::RowsSumToOne)
    } else {
        (OutputKind::Logits, KindBy::NotDistributions)
    }
}

fn normalise_rows(s: &Scores) -> Scores {
    Scores {
        values: s
            .values
            .chunks(s.n_classes.max(1))
            .flat_map(normalise)
            .collect(),
        ..s.clone()
    }
}

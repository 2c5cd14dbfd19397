//! Report types copied from the crate that computes them; src/schema/convert.rs fills them.

#![allow(clippy::wildcard_imports)]

use schemars::JsonSchema;
use serde::Serialize;

/// A tensor where tract and the reference part.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DivergingTensor {
    pub name: String,
    /// The op that produces it.
    pub op_type: String,
    /// Largest absolute difference.
    pub max_abs_diff: f64,
    /// The difference allowed there.
    pub tolerance: f64,
}

/// A data array the run did not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct IgnoredArray {
    pub name: String,
    /// Why it was not read.
    pub reason: String,
}

/// One model input and the array that feeds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct InputBinding {
    /// Model input name.
    pub input: String,
    /// Data array name.
    pub array: String,
    /// How the binding was chosen.
    pub how: String,
}

/// What an output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores: softmax gives probabilities.
    Logits,
    /// Probabilities (rows sum to 1).
    Probs,
    /// Class indices, one per sample.
    Labels,
}

/// What the check found for one side.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RuntimeCheck {
    /// `baseline` or `candidate`.
    pub side: String,
    /// The model file.
    pub model: String,
    /// The reference: runtime, version and settings.
    pub reference: String,
    /// Samples compared (the first ones of the data).
    pub samples: usize,
    /// The output compared (the score output).
    pub output: String,
    /// Fraction of samples with the same top-1 class.
    pub top1_agreement: f64,
    /// Largest absolute difference of the output.
    pub max_abs_diff: f64,
    /// The difference allowed.
    pub tolerance: f64,
    /// Where the tolerance comes from.
    pub tolerance_basis: String,
    /// Whether tract's outputs can be trusted for this model.
    pub passed: bool,
    /// The first tensor, in graph order, that differs beyond its tolerance (when the check
    /// failed and the tensors could be compared).
    pub first_diverging_tensor: Option<DivergingTensor>,
}

/// The runtime check of one side, as the report records it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RuntimeCheckOutcome {
    /// tract agreed with the reference.
    Passed(RuntimeCheck),
    /// Not run, and why (`--no-runtime-check`, no onnxruntime library).
    Skipped {
        /// `baseline` or `candidate`.
        side: String,
        reason: String,
    },
}

/// The output read as predictions.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ScoreOutput {
    pub name: String,
    /// What it holds.
    pub kind: OutputKind,
    /// How the output was chosen (`--output`, or the first `[N, C]` output).
    pub chosen_by: String,
    /// How the kind was decided (`--output-kind`, or the detection rule that matched).
    pub kind_by: String,
    /// Columns (classes) of the output; 0 for labels.
    pub n_classes: usize,
}

/// An 8-bit image, row-major, grey (1 channel) or RGB (3 channels).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Thumbnail {
    pub id: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 or 3.
    pub channels: usize,
    /// `width × height × channels` bytes, min–max scaled per image.
    #[serde(skip)]
    pub pixels: Vec<u8>,
}

impl std::fmt::Display for OutputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputKind::Logits => "logits",
            OutputKind::Probs => "probs",
            OutputKind::Labels => "labels",
        })
    }
}

//! Report types copied from the crate that computes them; src/schema/convert.rs fills them.

#![allow(clippy::wildcard_imports)]

use schemars::JsonSchema;
use serde::Serialize;
use std::collections::BTreeMap;

use super::*;

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named or unknown size (batch, sequence length).
    Symbolic(String),
}

/// CPU, cores and OS of this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct HostInfo {
    /// CPU model name (from /proc/cpuinfo where available).
    pub cpu: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Operating system and architecture.
    pub os: String,
}

/// What a model declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ModelInfo {
    /// Inputs fed by data (initializers excluded).
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// Node count per op type (`domain:op` for non-standard domains).
    pub op_counts: BTreeMap<String, usize>,
    /// ONNX opset of the default domain.
    pub opset: i64,
    /// Producer name and version.
    pub producer: String,
    /// Model file size in bytes.
    pub file_bytes: u64,
    /// SHA-256 of the model file (`None` for a remote model).
    pub sha256: Option<String>,
}

/// Where a model's figures come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Provenance {
    /// The spec as given.
    pub spec: String,
    /// Runtime name (`tract`, `onnxruntime`, …).
    pub runtime: String,
    pub runtime_version: String,
    /// Runtime settings that affect results or speed (threads, optimisation level, …).
    pub settings: BTreeMap<String, String>,
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TensorInfo {
    pub name: String,
    /// Element type, when declared and known to qgate.
    pub elem_type: Option<ElemType>,
    /// Declared shape (may be empty when undeclared).
    pub shape: Vec<Dim>,
}

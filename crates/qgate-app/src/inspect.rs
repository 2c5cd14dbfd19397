//! `qgate inspect`: what a model file holds, how `sensitivity` reads it, and whether tract
//! runs it — the load checks `compare` runs, reported instead of refused.

use std::path::{Path, PathBuf};

use qgate_quant::Normalization;
use qgate_runtime::UnsupportedNode;
use qgate_runtime::{inspect_onnx, tract_unsupported, LoadOptions, ModelInfo, ModelSpec};

use crate::error::AppError;

/// What `qgate inspect` found in a readable model file.
#[derive(Debug)]
pub struct Inspection {
    pub path: PathBuf,
    /// Inputs, outputs, op counts, opset, producer, size and hash.
    pub model: ModelInfo,
    /// Nodes whose op tract's registry lacks.
    pub tract_unsupported: Vec<UnsupportedNode>,
    /// `Ok` when tract loads the model and runs one zero-filled batch as `compare` would;
    /// else the problem.
    pub runs_in_tract: Result<(), String>,
    /// How `qgate sensitivity` reads the file (Constant-node weights, names, opset), or why
    /// it cannot.
    pub quantization_reading: Result<Normalization, String>,
}

/// Inspects the model file of `spec` (`PATH`, `tract:PATH` or `ort:PATH`). An unreadable
/// file is an error; a readable one that fails the load checks is an [`Inspection`] that
/// says why.
pub fn run(spec: &str) -> Result<Inspection, AppError> {
    let spec = ModelSpec::parse(spec)?;
    let path = spec.path().ok_or_else(|| {
        AppError::Invalid(format!(
            "{}: inspect reads model files, not servers",
            spec.raw
        ))
    })?;
    let model = inspect_onnx(path)?;
    let unsupported = tract_unsupported(path)?;
    let tract_spec = ModelSpec::parse(&format!("tract:{}", path.display()))?;
    let runs_in_tract = qgate_runtime::smoke_test(&tract_spec, &LoadOptions::default())
        .map_err(|e| crate::chain_text(&e));
    let dir = path.parent().unwrap_or(Path::new("."));
    let quantization_reading = qgate_quant::normalize(qgate_runtime::read_onnx(path)?, dir)
        .map(|(_, n)| n)
        .map_err(|e| e.to_string());
    Ok(Inspection {
        path: path.to_path_buf(),
        model,
        tract_unsupported: unsupported,
        runs_in_tract,
        quantization_reading,
    })
}

impl Inspection {
    /// The `--json` form.
    pub fn json(&self) -> Result<serde_json::Value, AppError> {
        Ok(serde_json::json!({
            "model": self.model,
            "tract_unsupported": self.tract_unsupported,
            "runs_in_tract": match &self.runs_in_tract {
                Ok(()) => serde_json::json!({ "runs": true }),
                Err(e) => serde_json::json!({ "runs": false, "problem": e }),
            },
            "quantization_reading": match &self.quantization_reading {
                Ok(n) => serde_json::to_value(n)?,
                Err(e) => serde_json::json!({ "error": e }),
            },
        }))
    }

    /// The text form, one line each.
    pub fn lines(&self) -> Vec<String> {
        let m = &self.model;
        let mut out = vec![format!(
            "{}  ({} bytes, opset {}, {})",
            self.path.display(),
            m.file_bytes,
            m.opset,
            m.producer
        )];
        for (title, tensors) in [("inputs:", &m.inputs), ("outputs:", &m.outputs)] {
            out.push(title.to_string());
            for t in tensors {
                let ty = t.elem_type.map_or_else(|| "?".into(), |e| e.to_string());
                out.push(format!("  {:<24} {:<8} {}", t.name, ty, t.shape_text()));
            }
        }
        out.push(format!(
            "ops ({} nodes):",
            m.op_counts.values().sum::<usize>()
        ));
        for (op, n) in &m.op_counts {
            out.push(format!("  {op:<32} {n}"));
        }
        out.push(match &self.quantization_reading {
            Ok(n) => format!(
                "for quantization: {}",
                qgate_report::Normalization::from(n).notes().join("; ")
            ),
            Err(e) => format!("for quantization: {e}"),
        });
        out.push(match &self.runs_in_tract {
            Ok(()) => "runs in tract: yes (loaded and ran one zero-filled batch)".into(),
            Err(e) => format!("runs in tract: no — {e}"),
        });
        if self.tract_unsupported.is_empty() {
            out.push("tract: every op is supported".into());
        } else {
            out.push(format!(
                "tract cannot run {} node(s):",
                self.tract_unsupported.len()
            ));
            for u in &self.tract_unsupported {
                let dom = if u.domain.is_empty() {
                    String::new()
                } else {
                    format!(" (domain {})", u.domain)
                };
                out.push(format!("  {} : {}{dom}", u.node, u.op_type));
            }
        }
        out
    }
}

//! ONNX graph editing for quantization: simulated INT8 quantization with
//! QuantizeLinear/DequantizeLinear pairs on chosen layers (weights per-channel symmetric,
//! activations per-tensor asymmetric UINT8 calibrated by min-max, percentile or entropy),
//! removal of the pairs of given layers from an existing QDQ model, per-layer sensitivity,
//! error localisation and the mixed-precision search. Evaluating a model is the caller's
//! business ([`Evaluator`]); this crate reads and writes graphs.
//!
//! ```
//! use qgate_quant::{act_qparams, Range};
//! // onnxruntime's compute_scale_zp for UINT8: the range is widened to include 0.
//! assert_eq!(act_qparams(Range { min: 0.0, max: 2.55 }).1, 0);
//! ```

mod calib;
mod graph;
mod normalize;
mod qdq;
mod sensitivity;

pub use calib::{calibrate, CalibMethod, Range};
pub use graph::{
    cut_at, float_initializer, node_outputs, quant_step, quantizable_layers, select, with_outputs,
    FloatTensor, Layer,
};
pub use normalize::{
    default_opset, normalize, weight_scales, Normalization, OpsetBlocker, OpsetReason,
    WeightScales, PER_CHANNEL_OPSET,
};
pub use qdq::{
    act_qparams, effective_weight, f32_to_f16_bits, layers_to_fp16, quantize_layers,
    quantize_weight, quantize_weight_per_tensor, quantized_tensors, strip_qdq, weight_sqnr_db,
};
pub use sensitivity::{
    analyze, write_model, Analysis, Builder, Builders, Cost, CostMethod, EvalResult, Evaluator,
    FrontLatency, FrontPoint, LayerSensitivity, Localisation, OnlyBuilder, Probe, Recommendation,
    Signal, TensorError,
};

/// Errors of graph editing. Each names the node, tensor or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The model cannot be edited as asked.
    #[error("{0}")]
    Model(String),
    /// A runtime failed (calibration, evaluation).
    #[error(transparent)]
    Runtime(qgate_runtime::RuntimeError),
    /// A file could not be written.
    #[error("{path}: {message}")]
    Io {
        path: std::path::PathBuf,
        /// What happened.
        message: String,
    },
    /// Evaluation failed.
    #[error("evaluation: {0}")]
    Eval(String),
}

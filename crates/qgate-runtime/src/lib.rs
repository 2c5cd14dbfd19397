//! Inference runtimes behind one small trait.
//!
//! A model is named by a [`ModelSpec`]: a plain path runs in the embedded tract runtime,
//! `ort:PATH` in ONNX Runtime (loaded at run time), `http(s)://…` on a KServe V2 server and
//! `preds:PATH` replays saved predictions. Every backend implements [`Model`]: describe inputs and outputs, say where its
//! figures come from ([`Provenance`]), and run a batch. [`mock::MockModel`] serves tests.
//!
//! ```
//! use qgate_runtime::{ModelSpec, SpecKind};
//! let spec = ModelSpec::parse("ort:model.onnx").unwrap();
//! assert!(matches!(spec.kind, SpecKind::Ort(_)));
//! assert!(matches!(ModelSpec::parse("m.onnx").unwrap().kind, SpecKind::Tract(_)));
//! ```

mod binding;
mod host;
pub mod mock;
mod onnx_info;
mod ort_rt;
mod preds;
mod remote;
mod tract_fix;
mod tract_rt;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use qgate_core::{Array, ArrayData, ElemType};
use serde::{Deserialize, Serialize};

pub use binding::{
    ignored_arrays, resolve_inputs, BoundBy, Ignored, IgnoredArray, InputBinding, InputMapping,
};
pub use host::{sha256_hex, HostInfo};
pub use onnx_info::{inspect_onnx, read_onnx};
pub use ort_rt::{
    locate_onnxruntime, ort_environment, OrtLibrary, OrtModel, MIN_ORT_MINOR, TESTED_ORT_VERSION,
};
pub use preds::PredsModel;
pub use remote::{v2_datatype, v2_elem_type, RemoteModel};
/// The ONNX protobuf types (prost), for crates that edit graphs.
pub use tract_onnx::pb as onnx_pb;
pub use tract_rt::{tract_unsupported, TractModel, TRACT_VERSION};

/// Errors from loading or running a model. Each names the model file, node or tensor.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model file could not be read.
    #[error("{path}: cannot read model: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid ONNX model.
    #[error(
        "{path}: not a valid ONNX model ({message}); is the file truncated or of another format?"
    )]
    NotOnnx { path: PathBuf, message: String },
    /// Nodes whose op the runtime does not implement.
    #[error("{path}: {runtime} cannot run {n} node(s): {list}", n = nodes.len(), list = list_nodes(nodes))]
    UnsupportedOps {
        path: PathBuf,
        runtime: String,
        /// The offending nodes.
        nodes: Vec<UnsupportedNode>,
    },
    /// The spec asks for something this runtime, library or build cannot do.
    #[error("{spec}: {runtime} is not available ({hint})")]
    NotAvailable {
        /// The spec as given.
        spec: String,
        runtime: String,
        /// What to do instead.
        hint: String,
    },
    /// The ONNX Runtime library cannot be found or used.
    #[error("ONNX Runtime: {reason}; {hint}")]
    OrtLibrary {
        /// What is wrong.
        reason: String,
        /// How to get a working library.
        hint: String,
    },
    /// A remote inference server failed or answered outside the protocol.
    #[error("{url}: {message}")]
    Remote {
        /// The URL requested.
        url: String,
        /// What happened.
        message: String,
    },
    /// A spec's options are malformed.
    #[error("model spec `{spec}`: {message}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// The runtime failed to prepare the model.
    #[error("{path}: {runtime} could not prepare the model: {message}")]
    Load {
        path: PathBuf,
        runtime: String,
        message: String,
    },
    /// An input tensor does not fit the model.
    #[error("{path}: input '{name}': {message}")]
    Input {
        path: PathBuf,
        name: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Inference failed.
    #[error("{path}: inference failed: {message}")]
    Run { path: PathBuf, message: String },
}

fn list_nodes(nodes: &[UnsupportedNode]) -> String {
    let mut s: Vec<String> = nodes
        .iter()
        .take(8)
        .map(|n| {
            if n.domain.is_empty() {
                format!("'{}' ({})", n.node, n.op_type)
            } else {
                format!("'{}' ({} from {})", n.node, n.op_type, n.domain)
            }
        })
        .collect();
    if nodes.len() > 8 {
        s.push(format!("and {} more", nodes.len() - 8));
    }
    s.join(", ")
}

/// A node the runtime cannot execute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsupportedNode {
    /// Node name (or its first output when unnamed).
    pub node: String,
    pub op_type: String,
    /// Op domain (`""` for standard ONNX, `com.microsoft` for ONNX Runtime contrib ops).
    pub domain: String,
}

/// Which runtime a spec selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "runtime", content = "target", rename_all = "snake_case")]
pub enum SpecKind {
    /// The embedded tract runtime (a plain path).
    Tract(PathBuf),
    /// ONNX Runtime (`ort:PATH`).
    Ort(PathBuf),
    /// A KServe V2 / Open Inference Protocol server (`http://…`, `https://…`).
    Remote(String),
    /// The same protocol over gRPC (`grpc://HOST:PORT/NAME`); only `qgate serve` has the
    /// async client it needs.
    Grpc(String),
    /// Saved predictions (`preds:PATH`).
    Preds(PathBuf),
}

/// A model as named on the command line or in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelSpec {
    /// The text as given.
    pub raw: String,
    /// What it selects.
    pub kind: SpecKind,
    /// Per-side options given in the spec after `?` (`device=cuda&threads=4`).
    pub options: SpecOptions,
}

/// Options that may differ between the two sides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpecOptions {
    /// Execution device (`cpu`, `cuda`, `tensorrt`, `openvino`).
    pub device: Option<String>,
    pub threads: Option<usize>,
}

impl ModelSpec {
    /// Parses `PATH`, `tract:PATH`, `ort:PATH`, `http(s)://…` or `preds:PATH`, each
    /// optionally followed by `?device=…&threads=…` (file specs only; a URL keeps its query).
    pub fn parse(raw: &str) -> Result<ModelSpec, RuntimeError> {
        let is_url =
            raw.starts_with("http://") || raw.starts_with("https://") || raw.starts_with("grpc://");
        let (s, query) = match raw.split_once('?') {
            Some((s, q)) if !is_url => (s, Some(q)),
            _ => (raw, None),
        };
        let mut options = SpecOptions::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let bad = |message: String| RuntimeError::Spec {
                spec: raw.to_string(),
                message,
            };
            match pair.split_once('=') {
                Some(("device", v)) => options.device = Some(v.to_string()),
                Some(("threads", v)) => {
                    options.threads = Some(
                        v.parse()
                            .map_err(|_| bad(format!("threads={v} is not a count")))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option '{pair}' (expected device=… or threads=…)"
                    )))
                }
            }
        }
        let kind = if let Some(p) = s.strip_prefix("tract:") {
            SpecKind::Tract(PathBuf::from(p))
        } else if let Some(p) = s.strip_prefix("ort:") {
            SpecKind::Ort(PathBuf::from(p))
        } else if let Some(p) = s.strip_prefix("preds:") {
            SpecKind::Preds(PathBuf::from(p))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            SpecKind::Remote(s.to_string())
        } else if s.starts_with("grpc://") {
            SpecKind::Grpc(s.to_string())
        } else {
            SpecKind::Tract(PathBuf::from(s))
        };
        let empty = match &kind {
            SpecKind::Tract(p) | SpecKind::Ort(p) | SpecKind::Preds(p) => p.as_os_str().is_empty(),
            SpecKind::Remote(u) | SpecKind::Grpc(u) => u.ends_with("://"),
        };
        if empty {
            return Err(RuntimeError::Spec {
                spec: raw.to_string(),
                message: "names no model; expected PATH, ort:PATH, preds:PATH or \
                          http(s)://HOST/v2/models/NAME"
                    .into(),
            });
        }
        Ok(ModelSpec {
            raw: raw.to_string(),
            kind,
            options,
        })
    }

    /// The model file, for file-based specs.
    pub fn path(&self) -> Option<&Path> {
        match &self.kind {
            SpecKind::Tract(p) | SpecKind::Ort(p) | SpecKind::Preds(p) => Some(p),
            SpecKind::Remote(_) | SpecKind::Grpc(_) => None,
        }
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named or unknown size (batch, sequence length).
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    /// Element type, when declared and known to qgate.
    pub elem_type: Option<ElemType>,
    /// Declared shape (may be empty when undeclared).
    pub shape: Vec<Dim>,
}

impl TensorInfo {
    /// The shape as text, e.g. `[N, 64]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// What a model declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

impl ModelInfo {
    /// Whether the model computes in integers anywhere: Q/DQ pairs, QOperator or dynamic
    /// quantization ops (contrib ops included).
    pub fn is_quantized(&self) -> bool {
        self.op_counts.keys().any(|op| {
            let op = op.rsplit(':').next().unwrap_or(op);
            op.starts_with("QLinear")
                || op.starts_with("QuantizeLinear")
                || op.starts_with("DynamicQuantize")
                || op.ends_with("Integer")
                || op == "QGemm"
        })
    }
}

/// Where a model's figures come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The spec as given.
    pub spec: String,
    /// Runtime name (`tract`, `onnxruntime`, …).
    pub runtime: String,
    pub runtime_version: String,
    /// Runtime settings that affect results or speed (threads, optimisation level, …).
    pub settings: BTreeMap<String, String>,
}

/// Options common to every runtime. Values in the spec (`?device=…&threads=…`) win.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Intra-op threads; `None` = runtime default (1 for ONNX Runtime, for reproducible figures).
    pub threads: Option<usize>,
    /// Execution device; `None` = CPU.
    pub device: Option<String>,
    /// `--ort-lib`: the ONNX Runtime shared library.
    pub ort_lib: Option<PathBuf>,
    /// The value of `ORT_DYLIB_PATH`, read by the binary.
    pub ort_env_path: Option<PathBuf>,
    /// The Python interpreter whose `onnxruntime` package is the fallback library.
    pub python: String,
    /// Timeout of one remote request; `None` = 60 s.
    pub timeout: Option<std::time::Duration>,
    /// Apply the graph rewrites that make tract follow the ONNX specification where tract
    /// 0.23 does not (`tract_fix`); off only to test the runtime check on a model tract
    /// gets wrong.
    pub tract_rewrites: bool,
    /// ONNX Runtime's graph optimisations (default: all, as deployments run); off runs
    /// node by node as the operator specs define the graph (the runtime check's reference
    /// for locating a divergence).
    pub ort_optimize: bool,
    /// `--max-memory`: the process's memory limit in bytes (`qgate_core::memory`); `None`
    /// keeps the detected default. Carried here so that bench workers get it too.
    pub max_memory: Option<u64>,
}

/// Seconds one request to a remote inference server may take unless `LoadOptions::timeout`
/// says otherwise.
pub const DEFAULT_REMOTE_TIMEOUT_S: f64 = 60.0;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: None,
            device: None,
            ort_lib: None,
            ort_env_path: None,
            python: "python3".into(),
            timeout: None,
            tract_rewrites: true,
            ort_optimize: true,
            max_memory: None,
        }
    }
}

/// A loaded model.
pub trait Model: Send {
    /// Declared inputs and outputs.
    fn info(&self) -> &ModelInfo;
    /// Runtime, version and settings.
    fn provenance(&self) -> Provenance;
    /// Runs one batch. `inputs` holds one array per declared input, in declaration order;
    /// returns every declared output, in declaration order.
    fn run(&mut self, inputs: &[Array]) -> Result<Vec<Array>, RuntimeError>;

    /// Whether outputs are looked up by sample (saved predictions) instead of computed from
    /// inputs; such a model declares no input and is called through [`Model::run_samples`].
    fn keyed_by_sample(&self) -> bool {
        false
    }

    /// For saved outputs matched to samples by row position (no ids): how many rows they
    /// hold, which must equal the data file's sample count.
    fn rows_by_position(&self) -> Option<usize> {
        None
    }

    /// The outputs of the samples with these ids (at these rows of the data file, before
    /// `--limit`/`--seed` selected samples).
    fn run_samples(
        &mut self,
        ids: &[String],
        positions: &[usize],
    ) -> Result<Vec<Array>, RuntimeError> {
        let _ = (ids, positions);
        Err(RuntimeError::NotAvailable {
            spec: self.provenance().spec,
            runtime: self.provenance().runtime,
            hint: "this runtime computes outputs from inputs".into(),
        })
    }

    /// Runs one batch and returns the named tensors of the graph (intermediate activations,
    /// outputs, or inputs — returned as given), in the order asked. Backends that cannot
    /// expose intermediates say so.
    fn run_tensors(
        &mut self,
        inputs: &[Array],
        names: &[String],
    ) -> Result<Vec<Array>, RuntimeError> {
        let _ = (inputs, names);
        Err(RuntimeError::NotAvailable {
            spec: self.provenance().spec,
            runtime: self.provenance().runtime,
            hint: "this runtime cannot return intermediate tensors".into(),
        })
    }
}

/// Loads the model named by `spec`.
pub fn load(spec: &ModelSpec, opts: &LoadOptions) -> Result<Box<dyn Model>, RuntimeError> {
    let mut opts = opts.clone();
    if spec.options.device.is_some() {
        opts.device = spec.options.device.clone();
    }
    if spec.options.threads.is_some() {
        opts.threads = spec.options.threads;
    }
    let opts = &opts;
    match &spec.kind {
        SpecKind::Tract(path) => {
            if let Some(d) = opts.device.as_deref().filter(|d| *d != "cpu") {
                return Err(RuntimeError::NotAvailable {
                    spec: spec.raw.clone(),
                    runtime: format!("tract on device '{d}'"),
                    hint: "tract runs on the CPU; use ort:PATH for other devices".into(),
                });
            }
            Ok(Box::new(TractModel::load(path, spec, opts)?))
        }
        SpecKind::Ort(path) => Ok(Box::new(OrtModel::load(path, spec, opts)?)),
        SpecKind::Remote(url) => Ok(Box::new(RemoteModel::load(url, spec, opts)?)),
        SpecKind::Grpc(_) => Err(RuntimeError::NotAvailable {
            spec: spec.raw.clone(),
            runtime: "a gRPC model".into(),
            hint: "grpc:// specs are for `qgate serve`; give this command the server's \
                   http://HOST/v2/models/NAME URL"
                .into(),
        }),
        SpecKind::Preds(path) => Ok(Box::new(PredsModel::load(path, spec)?)),
    }
}

thread_local! {
    static CATCHING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static LAST_PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` at a runtime boundary: a panic inside (tract panics on some hostile graphs)
/// becomes `Err(message)` for the caller to turn into an error naming the model. The hook
/// of [`install_panic_hook`] prints nothing for such a panic and keeps its message and place.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    CATCHING.with(|c| c.set(c.get() + 1));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get() - 1));
    r.map_err(|payload| {
        // The hook's text has the place too; without the hook, the payload's own text.
        LAST_PANIC
            .with(|l| l.borrow_mut().take())
            .or_else(|| payload_text(payload.as_ref()))
            .unwrap_or_else(|| "no message".into())
    })
}

/// Installs a panic hook that stays quiet for panics caught at a runtime boundary (they come
/// back as errors) and prints every other panic as the default hook does.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if CATCHING.with(|c| c.get()) == 0 {
            default(info);
            return;
        }
        let message = payload_text(info.payload()).unwrap_or_else(|| "no message".into());
        let place = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        LAST_PANIC.with(|l| *l.borrow_mut() = Some(format!("{message}{place}")));
    }));
}

/// One answer per declared output, each with one row per sample of the batch fed. Every
/// caller of [`Model::run`] that scores or times the answer checks it here: a model, server
/// or saved file answering with fewer or more rows would be scored against the wrong samples.
/// `batch` `None` (a model without inputs to take a batch from) checks the count only.
pub fn check_batch_outputs(
    info: &ModelInfo,
    outputs: &[Array],
    batch: Option<usize>,
) -> Result<(), String> {
    if outputs.len() != info.outputs.len() {
        return Err(format!(
            "returned {} outputs, but declares {}",
            outputs.len(),
            info.outputs.len()
        ));
    }
    let Some(batch) = batch else {
        return Ok(());
    };
    for (t, o) in info.outputs.iter().zip(outputs) {
        if o.shape.first() != Some(&batch) {
            return Err(format!(
                "output '{}' has shape {:?} for a batch of {batch} samples; a model must return \
                 one row per sample (samples along the first axis)",
                t.name, o.shape
            ));
        }
    }
    Ok(())
}

/// The text of a panic's payload (`panic!` with a literal or a formatted message).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// Loads the model as `compare` would and runs one batch of zeros (every symbolic dimension
/// 2, the batch included), checking the output count and rows: the checks `qgate inspect` reports as
/// "runs in tract: yes/no". Inputs of a type qgate cannot make are an error naming them.
pub fn smoke_test(spec: &ModelSpec, opts: &LoadOptions) -> Result<(), RuntimeError> {
    let mut model = load(spec, opts)?;
    let info = model.info().clone();
    let path = || PathBuf::from(spec.raw.clone());
    let mut inputs = Vec::new();
    for t in &info.inputs {
        let shape: Vec<usize> = t
            .shape
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                // 2, not 1: a model that answers one row whatever it is fed shows here.
                Dim::Symbolic(_) => 2,
            })
            .collect();
        let n: u128 = shape.iter().map(|&d| d as u128).product();
        let et = t.elem_type.unwrap_or(ElemType::F32);
        qgate_core::memory::check(
            n.saturating_mul(et.size_bytes() as u128),
            &format!("input '{}' declared {:?}", t.name, shape),
        )
        .map_err(|message| RuntimeError::Run {
            path: path(),
            message,
        })?;
        let n = n as usize;
        let data = match et {
            ElemType::F32 | ElemType::F16 => ArrayData::F32(vec![0.0; n]),
            ElemType::F64 => ArrayData::F64(vec![0.0; n]),
            ElemType::I8 => ArrayData::I8(vec![0; n]),
            ElemType::I16 => ArrayData::I16(vec![0; n]),
            ElemType::I32 => ArrayData::I32(vec![0; n]),
            ElemType::I64 => ArrayData::I64(vec![0; n]),
            ElemType::U8 => ArrayData::U8(vec![0; n]),
            ElemType::U16 => ArrayData::U16(vec![0; n]),
            ElemType::U32 => ArrayData::U32(vec![0; n]),
            ElemType::U64 => ArrayData::U64(vec![0; n]),
            ElemType::Bool => ArrayData::Bool(vec![false; n]),
            ElemType::Str => ArrayData::Str(vec![String::new(); n]),
        };
        inputs.push(Array { shape, data });
    }
    let outputs = model.run(&inputs)?;
    // No input to take a batch from: the output count is all there is to check.
    let batch = inputs.first().and_then(|a| a.shape.first().copied());
    check_batch_outputs(&info, &outputs, batch).map_err(|message| RuntimeError::Run {
        path: path(),
        message,
    })
}

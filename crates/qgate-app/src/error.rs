//! The commands' error: a library error, a setting refused, or either with what was being
//! done when it happened.

/// Why a command stopped. Every message names the file, tensor, key or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is out of range or names something that does not exist.
    #[error("{0}")]
    Invalid(String),
    /// A file or folder could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// The file or folder, and what was being done with it.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Running a model failed.
    #[error(transparent)]
    Runtime(#[from] qgate_runtime::RuntimeError),
    /// Reading data failed.
    #[error(transparent)]
    Data(#[from] qgate_data::DataError),
    /// Evaluating failed.
    #[error(transparent)]
    Eval(#[from] qgate_eval::EvalError),
    /// Measuring failed.
    #[error(transparent)]
    Bench(#[from] qgate_bench::BenchError),
    /// Editing or analysing a graph failed.
    #[error(transparent)]
    Quant(#[from] qgate_quant::QuantError),
    /// Rendering or writing reports failed.
    #[error(transparent)]
    Report(#[from] qgate_report::ReportError),
    /// Serialising JSON failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// An error, with what was being done (`baseline`, `timing mixed.onnx against …`).
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        source: Box<AppError>,
    },
}

/// `.context("baseline")` for any error that converts into [`AppError`].
pub trait Context<T> {
    /// Prefixes the error with `context`.
    fn context(self, context: impl Into<String>) -> Result<T, AppError>;
    /// Prefixes the error with what `f` says (computed only on error).
    fn with_context(self, f: impl FnOnce() -> String) -> Result<T, AppError>;
}

impl<T, E: Into<AppError>> Context<T> for Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T, AppError> {
        self.map_err(|e| AppError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context(self, f: impl FnOnce() -> String) -> Result<T, AppError> {
        self.map_err(|e| AppError::Context {
            context: f(),
            source: Box::new(e.into()),
        })
    }
}

/// An I/O error naming what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AppError {
    let what = what.into();
    move |source| AppError::Io { what, source }
}

/// An error and its sources joined with ": ", skipping a source the text already quotes.
pub fn chain_text(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

/// A scratch folder, removed when dropped.
pub(crate) fn scratch() -> Result<tempfile::TempDir, AppError> {
    tempfile::tempdir().map_err(io("cannot create a temporary directory"))
}

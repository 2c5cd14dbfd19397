//! qgate's commands as library calls: a validated config in, a typed result out. The binary
//! parses flags into these configs, calls them, hands the results to the exporters and turns
//! the verdict into an exit code; nothing here reads argv, the environment or the terminal.

pub mod bench;
pub mod compare;
mod error;
pub mod inspect;
pub mod measure;
pub mod outputs;
pub mod sensitivity;

pub use error::{AppError, Context};

//! A model whose outputs are computed by a closure: for tests of everything above the
//! runtime.

use std::collections::BTreeMap;

use qgate_core::Array;

use crate::{Model, ModelInfo, Provenance, RuntimeError};

type Forward = Box<dyn FnMut(&[Array]) -> Result<Vec<Array>, RuntimeError> + Send>;

/// A model computed by a closure.
pub struct MockModel {
    info: ModelInfo,
    forward: Forward,
}

impl MockModel {
    /// A mock declaring `info`, computing outputs with `forward`.
    pub fn new(
        info: ModelInfo,
        forward: impl FnMut(&[Array]) -> Result<Vec<Array>, RuntimeError> + Send + 'static,
    ) -> MockModel {
        MockModel {
            info,
            forward: Box::new(forward),
        }
    }
}

impl Model for MockModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn provenance(&self) -> Provenance {
        Provenance {
            spec: "mock".into(),
            runtime: "mock".into(),
            runtime_version: "0".into(),
            settings: BTreeMap::new(),
        }
    }

    fn run(&mut self, inputs: &[Array]) -> Result<Vec<Array>, RuntimeError> {
        (self.forward)(inputs)
    }
}

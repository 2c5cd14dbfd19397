//! Evaluating the many model variants of `qgate sensitivity` on one evaluation subset: the
//! FP32 model's outputs are computed once and replayed as the baseline of every comparison,
//! so each variant costs one run, and the policy is judged as `qgate compare` judges it.

use std::path::{Path, PathBuf};

use qgate_core::policy::{Policy, Status, Verdict};
use qgate_core::{Array, ArrayData};
use qgate_data::Dataset;
use qgate_quant::{EvalResult, Evaluator, QuantError};
use qgate_runtime::{load, LoadOptions, Model, ModelSpec, PredsModel};

use crate::{evaluate_pair, resolve_inputs, run_model, EvalOptions};

/// Evaluates model files on `data` against the first model evaluated (the FP32 model).
pub struct SubsetEvaluator {
    data: Dataset,
    policy: Policy,
    opts: EvalOptions,
    load: LoadOptions,
    scratch: PathBuf,
    baseline: Option<PathBuf>,
    /// Samples used for intermediate tensors (activation SQNR, error localisation).
    pub tensor_samples: usize,
}

impl SubsetEvaluator {
    /// An evaluator over `data`; files go to `scratch`.
    pub fn new(
        data: Dataset,
        policy: Policy,
        opts: EvalOptions,
        load: LoadOptions,
        scratch: &Path,
    ) -> SubsetEvaluator {
        SubsetEvaluator {
            data,
            policy,
            opts,
            load,
            scratch: scratch.to_path_buf(),
            baseline: None,
            tensor_samples: 128,
        }
    }

    fn model(&self, path: &Path) -> Result<Box<dyn Model>, QuantError> {
        let spec = ModelSpec::parse(&path.display().to_string()).map_err(QuantError::Runtime)?;
        load(&spec, &self.load).map_err(QuantError::Runtime)
    }

    /// Runs the FP32 model once and saves its outputs as the replayed baseline.
    fn save_baseline(&mut self, path: &Path) -> Result<PathBuf, QuantError> {
        let mut m = self.model(path)?;
        let bindings =
            resolve_inputs(m.info(), &self.data, &self.opts.inputs).map_err(QuantError::Eval)?;
        let run = run_model(
            m.as_mut(),
            &self.data,
            &bindings,
            self.opts.batch_size,
            &mut |_, _| {},
        )
        .map_err(QuantError::Runtime)?;
        let ids = Array {
            shape: vec![self.data.len()],
            data: ArrayData::Str(self.data.ids.clone()),
        };
        let mut arrays: Vec<(&str, &Array)> =
            run.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        arrays.push(("id", &ids));
        let out = self.scratch.join("fp32_outputs.npz");
        let file = std::fs::File::create(&out).map_err(|e| QuantError::Io {
            path: out.clone(),
            message: e.to_string(),
        })?;
        qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays).map_err(|e| {
            QuantError::Io {
                path: out.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(out)
    }
}

impl Evaluator for SubsetEvaluator {
    fn evaluate(&mut self, path: &Path) -> Result<EvalResult, QuantError> {
        let baseline = match &self.baseline {
            Some(b) => b.clone(),
            None => {
                let b = self.save_baseline(path)?;
                self.baseline = Some(b.clone());
                b
            }
        };
        let spec = ModelSpec::parse(&format!("preds:{}", baseline.display()))
            .map_err(QuantError::Runtime)?;
        let mut base = PredsModel::load(&baseline, &spec).map_err(QuantError::Runtime)?;
        let mut cand = self.model(path)?;
        let eval = evaluate_pair(
            &mut base,
            cand.as_mut(),
            &self.data,
            &self.policy,
            &self.opts,
            &mut |_, _, _| {},
        )
        .map_err(|e| QuantError::Eval(e.to_string()))?;
        Ok(EvalResult {
            metric: eval.candidate.metrics.accuracy,
            kl_mean: eval.comparison.kl.as_ref().map(|k| k.mean),
            passes: eval.gate.verdict == Verdict::Pass,
            failed: eval
                .gate
                .criteria
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.key.clone())
                .collect(),
        })
    }

    fn tensors(&mut self, path: &Path, names: &[String]) -> Result<Vec<Array>, QuantError> {
        let mut m = self.model(path)?;
        let bindings =
            resolve_inputs(m.info(), &self.data, &self.opts.inputs).map_err(QuantError::Eval)?;
        let n = self.data.len().min(self.tensor_samples);
        let batch = self.opts.batch_size.max(1);
        let mut parts: Vec<Vec<Array>> = vec![Vec::new(); names.len()];
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let idx: Vec<usize> = (start..end).collect();
            let inputs: Vec<Array> = bindings
                .iter()
                .filter_map(|b| self.data.arrays.get(&b.array))
                .map(|a| a.select_rows(&idx))
                .collect();
            let outs = m.run_tensors(&inputs, names).map_err(QuantError::Runtime)?;
            for (p, o) in parts.iter_mut().zip(outs) {
                p.push(o);
            }
            start = end;
        }
        parts
            .iter()
            .zip(names)
            .map(|(p, name)| {
                Array::concat_rows(p).ok_or_else(|| {
                    QuantError::Eval(format!("tensor '{name}' changes shape between batches"))
                })
            })
            .collect()
    }
}

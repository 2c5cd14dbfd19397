//! Evaluating the many model variants of `qgate sensitivity` on one evaluation set: the
//! FP32 model's outputs are computed once and replayed as the baseline of every comparison,
//! so each variant costs one run, and the policy is judged as `qgate compare` judges it.
//! Variants cut to start at a layer are fed cached FP32 activations instead of the data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use qgate_core::policy::{Policy, Status, Verdict};
use qgate_core::{Array, ArrayData};
use qgate_data::Dataset;
use qgate_quant::{EvalResult, Evaluator, QuantError};
use qgate_runtime::{load, LoadOptions, Model, ModelSpec, PredsModel};

use crate::{evaluate_pair, resolve_inputs, run_model, EvalOptions, InputMapping};

/// Evaluates model files on `data` against the first model evaluated (the FP32 model).
pub struct SubsetEvaluator {
    /// Shared, so each evaluation borrows it while `self` keeps its model cache.
    data: Arc<Dataset>,
    policy: Policy,
    opts: EvalOptions,
    load: LoadOptions,
    scratch: PathBuf,
    baseline: Option<PathBuf>,
    /// The last model loaded: a variant is often evaluated and then asked for tensors.
    last: Option<(PathBuf, Box<dyn Model>)>,
    /// The replayed FP32 outputs, loaded once.
    replay: Option<PredsModel>,
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
            data: Arc::new(data),
            policy,
            opts,
            load,
            scratch: scratch.to_path_buf(),
            baseline: None,
            last: None,
            replay: None,
        }
    }

    fn model(&mut self, path: &Path) -> Result<Box<dyn Model>, QuantError> {
        if let Some((p, m)) = self.last.take() {
            if p == path {
                return Ok(m);
            }
        }
        let spec = ModelSpec::parse(&path.display().to_string()).map_err(QuantError::Runtime)?;
        load(&spec, &self.load).map_err(QuantError::Runtime)
    }

    /// Keeps `model` for the next call on the same file.
    fn keep(&mut self, path: &Path, model: Box<dyn Model>) {
        self.last = Some((path.to_path_buf(), model));
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
        self.keep(path, m);
        let ids = Array {
            shape: vec![self.data.len()],
            data: ArrayData::Str(self.data.ids.clone()),
        };
        let mut arrays: Vec<(&str, &Array)> =
            run.outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        arrays.push(("id", &ids));
        let out = self.scratch.join("fp32_outputs.npz");
        let io = |e: String| QuantError::Io {
            path: out.clone(),
            message: e,
        };
        let file = std::fs::File::create(&out).map_err(|e| io(e.to_string()))?;
        qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays)
            .map_err(|e| io(e.to_string()))?;
        Ok(out)
    }

    /// Evaluates the model at `path` on `data` against the replayed FP32 outputs.
    fn judge(
        &mut self,
        path: &Path,
        data: &Dataset,
        opts: &EvalOptions,
    ) -> Result<EvalResult, QuantError> {
        let baseline = self
            .baseline
            .clone()
            .ok_or_else(|| QuantError::Eval("the FP32 model must be evaluated first".into()))?;
        let mut base = match self.replay.take() {
            Some(b) => b,
            None => {
                let spec = ModelSpec::parse(&format!("preds:{}", baseline.display()))
                    .map_err(QuantError::Runtime)?;
                PredsModel::load(&baseline, &spec).map_err(QuantError::Runtime)?
            }
        };
        let mut cand = self.model(path)?;
        let eval = evaluate_pair(
            &mut base,
            cand.as_mut(),
            data,
            &self.policy,
            opts,
            &mut |_, _, _| {},
        )
        .map_err(|e| QuantError::Eval(e.to_string()))?;
        self.keep(path, cand);
        self.replay = Some(base);
        Ok(EvalResult {
            metric: eval.candidate.metrics.accuracy,
            baseline_metric: eval.baseline.metrics.accuracy,
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

    /// The first samples (as many as `inputs` hold), with `inputs` as their only arrays.
    fn fed(&self, inputs: &[(String, Array)]) -> Result<Dataset, QuantError> {
        let rows = inputs
            .first()
            .map(|(_, a)| a.n_rows())
            .unwrap_or(0)
            .min(self.data.len());
        let mut d = Dataset::from_arrays(
            "cached FP32 activations",
            inputs
                .iter()
                .map(|(n, a)| (n.clone(), a.slice_rows(0, rows)))
                .collect(),
            self.data.labels.as_ref().map(|l| l[..rows].to_vec()),
            Some(self.data.ids[..rows].to_vec()),
        )
        .map_err(|e| QuantError::Eval(e.to_string()))?;
        d.class_names = self.data.class_names.clone();
        Ok(d)
    }

    /// Named tensors of the model at `path` over the first `n` samples of `data`.
    fn run_tensors_over(
        &mut self,
        path: &Path,
        data: &Dataset,
        mapping: &InputMapping,
        names: &[String],
        n: usize,
    ) -> Result<Vec<Array>, QuantError> {
        let mut m = self.model(path)?;
        let bindings = resolve_inputs(m.info(), data, mapping).map_err(QuantError::Eval)?;
        let n = data.len().min(n);
        let batch = self.opts.batch_size.max(1);
        let mut parts: Vec<Vec<Array>> = vec![Vec::new(); names.len()];
        let mut start = 0;
        while start < n {
            let end = (start + batch).min(n);
            let idx: Vec<usize> = (start..end).collect();
            let inputs: Vec<Array> = bindings
                .iter()
                .filter_map(|b| data.arrays.get(&b.array))
                .map(|a| a.select_rows(&idx))
                .collect();
            let outs = m.run_tensors(&inputs, names).map_err(QuantError::Runtime)?;
            for (p, o) in parts.iter_mut().zip(outs) {
                p.push(o);
            }
            start = end;
        }
        self.keep(path, m);
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

impl Evaluator for SubsetEvaluator {
    fn samples(&self) -> usize {
        self.data.len()
    }

    fn evaluate(&mut self, path: &Path) -> Result<EvalResult, QuantError> {
        if self.baseline.is_none() {
            let b = self.save_baseline(path)?;
            self.baseline = Some(b);
        }
        let (data, opts) = (Arc::clone(&self.data), self.opts.clone());
        self.judge(path, &data, &opts)
    }

    fn evaluate_fed(
        &mut self,
        path: &Path,
        inputs: &[(String, Array)],
    ) -> Result<EvalResult, QuantError> {
        let data = self.fed(inputs)?;
        let opts = EvalOptions {
            inputs: InputMapping::default(),
            ..self.opts.clone()
        };
        self.judge(path, &data, &opts)
    }

    fn tensors(
        &mut self,
        path: &Path,
        names: &[String],
        n: usize,
    ) -> Result<Vec<Array>, QuantError> {
        let (data, mapping) = (Arc::clone(&self.data), self.opts.inputs.clone());
        self.run_tensors_over(path, &data, &mapping, names, n)
    }

    fn tensors_fed(
        &mut self,
        path: &Path,
        inputs: &[(String, Array)],
        names: &[String],
    ) -> Result<Vec<Array>, QuantError> {
        let data = self.fed(inputs)?;
        self.run_tensors_over(path, &data, &InputMapping::default(), names, usize::MAX)
    }
}

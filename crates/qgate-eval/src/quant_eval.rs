//! Evaluating the many model variants of `qgate sensitivity` on one evaluation set: the
//! FP32 model's outputs are computed once and replayed as the baseline of every comparison,
//! so each variant costs one run, and the policy is judged as `qgate compare` judges it.
//! Variants cut to start at a layer are fed cached FP32 activations instead of the data.
//! A probe (the task metric, KL and MSE against FP32, no verdict) runs every batch at the
//! same size, padding the last one, so one compiled plan serves a model however many rows
//! it is asked for; the models of the current top candidates stay loaded.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qgate_core::divergence::kl_divergence;
use qgate_core::policy::{Policy, Status, Verdict};
use qgate_core::{Array, ArrayData};
use qgate_data::Dataset;
use qgate_quant::{EvalResult, Evaluator, Probe, QuantError};
use qgate_runtime::{load, Dim, LoadOptions, Model, ModelSpec, PredsModel};

use crate::{evaluate_pair, resolve_inputs, select_scores, EvalOptions, ModelRun, ScoreOutput};

/// Evaluates model files on `data` against the first model evaluated (the FP32 model).
pub struct SubsetEvaluator {
    /// Shared, so each evaluation borrows it while `self` keeps its model cache.
    data: Arc<Dataset>,
    policy: Policy,
    opts: EvalOptions,
    load: LoadOptions,
    scratch: PathBuf,
    baseline: Option<PathBuf>,
    /// The FP32 model's scores on every sample (the probes' reference).
    fp32_scores: Option<ScoreOutput>,
    /// Loaded models: the pinned ones and the last one used.
    models: Vec<(PathBuf, Box<dyn Model>)>,
    pinned: Vec<PathBuf>,
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
    ) -> Result<SubsetEvaluator, QuantError> {
        // Subsets are run many times: their arrays are held in memory.
        let mut data = data;
        data.materialize()
            .map_err(|e| QuantError::Eval(e.to_string()))?;
        Ok(SubsetEvaluator {
            data: Arc::new(data),
            policy,
            opts,
            load,
            scratch: scratch.to_path_buf(),
            baseline: None,
            fp32_scores: None,
            models: Vec::new(),
            pinned: Vec::new(),
            replay: None,
        })
    }

    fn model(&mut self, path: &Path) -> Result<Box<dyn Model>, QuantError> {
        if let Some(k) = self.models.iter().position(|(p, _)| p == path) {
            return Ok(self.models.swap_remove(k).1);
        }
        let spec = ModelSpec::parse(&path.display().to_string()).map_err(QuantError::Runtime)?;
        load(&spec, &self.load).map_err(QuantError::Runtime)
    }

    /// Keeps `model` for the next call on the same file; drops the others not pinned.
    fn keep(&mut self, path: &Path, model: Box<dyn Model>) {
        let pinned = &self.pinned;
        self.models.retain(|(p, _)| pinned.contains(p));
        self.models.push((path.to_path_buf(), model));
    }

    /// Saves the FP32 model's outputs as the replayed baseline of every later evaluation.
    fn save_baseline(&mut self, outputs: &[(String, Array)]) -> Result<(), QuantError> {
        let ids = Array {
            shape: vec![self.data.len()],
            data: ArrayData::Str(self.data.ids.to_vec()),
        };
        let mut arrays: Vec<(&str, &Array)> =
            outputs.iter().map(|(n, a)| (n.as_str(), a)).collect();
        arrays.push(("id", &ids));
        let out = self.scratch.join("fp32_outputs.npz");
        let io = |e: String| QuantError::Io {
            path: out.clone(),
            message: e,
        };
        let file = std::fs::File::create(&out).map_err(|e| io(e.to_string()))?;
        qgate_data::npy::write_npz(std::io::BufWriter::new(file), &arrays)
            .map_err(|e| io(e.to_string()))?;
        self.baseline = Some(out);
        Ok(())
    }

    /// Evaluates the model at `path` on every sample against the replayed FP32 outputs.
    fn judge(&mut self, path: &Path) -> Result<EvalResult, QuantError> {
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
        let data = Arc::clone(&self.data);
        let eval = evaluate_pair(
            &mut base,
            cand.as_mut(),
            &data,
            &self.policy,
            &self.opts,
            &mut |_, _, _| {},
        )
        .map_err(|e| QuantError::Eval(e.to_string()))?;
        self.keep(path, cand);
        self.replay = Some(base);
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

    /// The named tensors of `model` over `rows` of `inputs` (arrays in the model's input
    /// order), in batches of one size: a short last batch is padded with copies of its
    /// last row, whose results are dropped. The tensors after the first `always` are kept
    /// for every row only while they take at most `budget.1` bytes, else for the first
    /// `budget.0` rows.
    fn run_rows(
        &self,
        model: &mut dyn Model,
        inputs: &[&Array],
        rows: Range<usize>,
        names: &[String],
        always: usize,
        budget: Option<(usize, usize)>,
    ) -> Result<Vec<Array>, QuantError> {
        let mut keep_rows = rows.end;
        let fixed = model
            .info()
            .inputs
            .first()
            .and_then(|i| match i.shape.first() {
                Some(Dim::Fixed(n)) => Some(*n),
                _ => None,
            });
        let batch = fixed.unwrap_or(self.opts.batch_size).max(1);
        let mut parts: Vec<Vec<Array>> = vec![Vec::new(); names.len()];
        let mut start = rows.start;
        while start < rows.end {
            let end = (start + batch).min(rows.end);
            let mut idx: Vec<usize> = (start..end).collect();
            let real = idx.len();
            // Pad only when a full batch exists to share its plan.
            if rows.len() >= batch || fixed.is_some() {
                idx.resize(batch, end - 1);
            }
            let batch_inputs: Vec<Array> = inputs.iter().map(|a| a.select_rows(&idx)).collect();
            let outs = model
                .run_tensors(&batch_inputs, names)
                .map_err(QuantError::Runtime)?;
            if let (Some((min_rows, bytes)), true) = (budget, start == rows.start) {
                let row_bytes: usize = outs[always..].iter().map(|a| a.row_len() * 4).sum();
                if row_bytes.saturating_mul(rows.len()) > bytes {
                    keep_rows = rows.start + min_rows;
                }
            }
            for (k, (p, o)) in parts.iter_mut().zip(outs).enumerate() {
                let take = if k < always {
                    real
                } else {
                    keep_rows.saturating_sub(start).min(real)
                };
                if take == 0 {
                    continue;
                }
                let o = if o.shape.first() == Some(&idx.len()) && take < idx.len() {
                    o.slice_rows(0, take)
                } else {
                    o
                };
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

    /// The model's declared outputs and the tensors `names` over `rows` (the latter kept
    /// within `budget`, see [`Self::run_rows`]).
    fn outputs_and(
        &mut self,
        path: &Path,
        feed: Option<&[(&str, &Array)]>,
        rows: Range<usize>,
        names: &[String],
        budget: Option<(usize, usize)>,
    ) -> Result<(ModelRun, Vec<Array>), QuantError> {
        let mut m = self.model(path)?;
        let declared: Vec<String> = m.info().outputs.iter().map(|o| o.name.clone()).collect();
        let mut all = declared.clone();
        all.extend(names.iter().cloned());
        let result = self.inputs_of(m.as_ref(), feed).and_then(|inputs| {
            self.run_rows(m.as_mut(), &inputs, rows, &all, declared.len(), budget)
        });
        self.keep(path, m);
        let mut outs = result?;
        let tensors = outs.split_off(declared.len());
        let run = ModelRun {
            outputs: declared.into_iter().zip(outs).collect(),
            seconds: 0.0,
        };
        Ok((run, tensors))
    }

    fn labels(&self) -> Result<&[i64], QuantError> {
        self.data
            .labels
            .as_deref()
            .ok_or_else(|| QuantError::Eval("the evaluation data has no labels".into()))
    }

    /// The arrays feeding `model`: the data's (through the input mapping) or `feed` (by
    /// input name), in the model's input order.
    fn inputs_of<'a>(
        &'a self,
        model: &dyn Model,
        feed: Option<&[(&str, &'a Array)]>,
    ) -> Result<Vec<&'a Array>, QuantError> {
        match feed {
            None => {
                let bindings = resolve_inputs(model.info(), &self.data, &self.opts.inputs)
                    .map_err(QuantError::Eval)?;
                Ok(bindings
                    .iter()
                    .filter_map(|b| self.data.arrays.get(&b.array))
                    .collect())
            }
            Some(feed) => model
                .info()
                .inputs
                .iter()
                .map(|i| {
                    feed.iter()
                        .find(|(n, _)| *n == i.name)
                        .map(|(_, a)| *a)
                        .ok_or_else(|| {
                            QuantError::Eval(format!(
                                "no cached activation for the cut model's input '{}'",
                                i.name
                            ))
                        })
                })
                .collect(),
        }
    }
}

impl Evaluator for SubsetEvaluator {
    fn samples(&self) -> usize {
        self.data.len()
    }

    fn batch_size(&self) -> usize {
        self.opts.batch_size.max(1)
    }

    fn reference(
        &mut self,
        path: &Path,
        names: &[String],
        min_rows: usize,
        budget: usize,
    ) -> Result<(f64, Vec<Array>), QuantError> {
        let n = self.data.len();
        let (run, tensors) = self.outputs_and(path, None, 0..n, names, Some((min_rows, budget)))?;
        let scores = select_scores(&run, self.opts.output.as_deref(), self.opts.output_kind)
            .map_err(|e| QuantError::Eval(format!("the FP32 model: {e}")))?;
        self.save_baseline(&run.outputs)?;
        let metric = accuracy(&scores.predictions, self.labels()?);
        self.fp32_scores = Some(scores);
        Ok((metric, tensors))
    }

    fn evaluate(&mut self, path: &Path) -> Result<EvalResult, QuantError> {
        self.judge(path)
    }

    fn probe(
        &mut self,
        path: &Path,
        feed: Option<&[(&str, &Array)]>,
        rows: Range<usize>,
        names: &[String],
    ) -> Result<Probe, QuantError> {
        let rows = rows.start.min(self.data.len())..rows.end.min(self.data.len());
        let (run, tensors) = self.outputs_and(path, feed, rows.clone(), names, None)?;
        let base = self
            .fp32_scores
            .as_ref()
            .ok_or_else(|| QuantError::Eval("the FP32 model must be evaluated first".into()))?;
        // The FP32 model's score output, read the same way.
        let cand = select_scores(&run, Some(&base.name), Some(base.kind))
            .map_err(|e| QuantError::Eval(format!("{}: {e}", path.display())))?;
        let labels = self.labels()?;

        // Candidate row i is sample `rows.start + i`.
        let (start, len) = (rows.start, rows.len());
        let kl_mean = match (&base.probs, &cand.probs) {
            (Some(b), Some(c)) if b.n_classes == c.n_classes => {
                let kl: Vec<f64> = (0..len)
                    .map(|i| kl_divergence(b.row(start + i), c.row(i)))
                    .filter(|v| !v.is_nan())
                    .collect();
                Some(qgate_core::stats::mean(&kl))
            }
            _ => None,
        };
        let mse = match (&base.scores, &cand.scores) {
            (Some(b), Some(c)) if b.n_classes == c.n_classes => {
                let k = b.n_classes;
                let sum: f64 = b.values[start * k..(start + len) * k]
                    .iter()
                    .zip(&c.values[..len * k])
                    .map(|(x, y)| (x - y) * (x - y))
                    .sum();
                Some(sum / (len * k).max(1) as f64)
            }
            _ => None,
        };
        let labels = &labels[rows.clone()];
        Ok(Probe {
            rows: len,
            metric: accuracy(&cand.predictions, labels),
            baseline_metric: accuracy(&base.predictions[rows], labels),
            kl_mean,
            mse,
            tensors,
        })
    }

    fn tensors(
        &mut self,
        path: &Path,
        names: &[String],
        rows: Range<usize>,
    ) -> Result<Vec<Array>, QuantError> {
        let rows = rows.start.min(self.data.len())..rows.end.min(self.data.len());
        Ok(self.outputs_and(path, None, rows, names, None)?.1)
    }

    fn pin(&mut self, paths: &[PathBuf]) {
        self.pinned = paths.to_vec();
        let pinned = &self.pinned;
        let last = self.models.len().saturating_sub(1);
        let mut k = 0;
        self.models.retain(|(p, _)| {
            let keep = k == last || pinned.contains(p);
            k += 1;
            keep
        });
    }
}

/// Top-1 accuracy of `predictions` against `labels` (same samples).
fn accuracy(predictions: &[Option<usize>], labels: &[i64]) -> f64 {
    let hits = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p.map(|p| p as i64) == Some(**l))
        .count();
    hits as f64 / labels.len().max(1) as f64
}

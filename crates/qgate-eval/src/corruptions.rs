//! Synthetic edge cases: both models on corrupted copies of the test set, one corruption
//! and severity at a time, the copies made batch by batch. Each corruption × severity is a
//! slice (`corruption=dark:5`) with the figures, intervals, corrected tests and gates of
//! every slice, plus the candidate's extra drop beyond the baseline's and an ImageNet-C
//! style corruption error of the candidate relative to the baseline.

use serde::Serialize;

use qgate_core::compare::{PairInput, Predicted};
use qgate_core::slices::{one_slice, test_family, SliceResult};
use qgate_data::corrupt::{apply, corrupt_batch, sample_rng, Corruption, CorruptionPlan};
use qgate_data::Dataset;
use qgate_runtime::Model;

use crate::run::run_model_with;
use crate::thumbnails::{pixel_thumbnail, Thumbnail};
use crate::{select_scores, EvalError, EvalOptions, InputBinding, Progress, ScoreOutput};

/// Thumbnails of flipped corrupted samples per corruption × severity, and in all.
const THUMBS_PER_SLICE: usize = 2;
const MAX_THUMBS: usize = 48;

/// The pair on one corruption at one severity.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptionEntry {
    pub corruption: Corruption,
    pub severity: u8,
    /// The pair on the corrupted samples, named `corruption=dark:5`.
    pub slice: SliceResult,
    /// The candidate's accuracy drop from clean minus the baseline's (fraction; positive:
    /// the candidate degrades faster).
    pub extra_drop: f64,
}

/// One corruption over its severities, as ImageNet-C summarises it.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptionSummary {
    pub corruption: Corruption,
    /// Σ candidate error ÷ Σ baseline error over the severities (`None`: the baseline made
    /// no error).
    pub ce: Option<f64>,
    /// Σ (candidate error − its clean error) ÷ Σ (baseline error − its clean error)
    /// (`None`: the baseline did not degrade).
    pub relative_ce: Option<f64>,
}

/// Both models on every corrupted copy.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptionEvaluation {
    pub plan: CorruptionPlan,
    /// The array corrupted.
    pub array: String,
    /// Clean accuracy, baseline then candidate.
    pub clean_accuracy: [f64; 2],
    /// Corruption-major, severities ascending.
    pub entries: Vec<CorruptionEntry>,
    pub summary: Vec<CorruptionSummary>,
    /// Mean of `ce` over the corruptions (ImageNet-C's mCE with the baseline as reference).
    pub mce: Option<f64>,
    /// Mean of `relative_ce`.
    pub relative_mce: Option<f64>,
    /// Corrupted samples the candidate got wrong and the baseline right, as corrupted.
    #[serde(skip)]
    pub thumbnails: Vec<Thumbnail>,
}

/// Every `(corruption, severity)` of `plan`, corruption-major.
pub(crate) fn cells(plan: &CorruptionPlan) -> Vec<(Corruption, u8)> {
    plan.corruptions
        .iter()
        .flat_map(|&c| plan.severities.iter().map(move |&s| (c, s)))
        .collect()
}

/// The slice name of a corruption at a severity.
pub fn slice_name(c: Corruption, s: u8) -> String {
    format!("corruption={c}:{s}")
}

/// The array to corrupt: the one image array both sides read. An error says why none is.
pub(crate) fn pick_array(
    plan: &CorruptionPlan,
    data: &Dataset,
    sides: &[&[InputBinding]],
) -> Result<String, EvalError> {
    let err = |message: String| EvalError::Inputs {
        side: "corruptions".into(),
        message,
    };
    let first = sides.first().copied().unwrap_or_default();
    let mut images = Vec::new();
    let mut why = Vec::new();
    for b in first {
        let Some(a) = data.arrays.get(&b.array) else {
            continue;
        };
        match plan.pixels.image_shape(&b.array, a) {
            Ok(_) => images.push(b.array.clone()),
            Err(e) => why.push(e),
        }
    }
    let array = match images.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(err(format!(
                "{}: no input of the model is an image qgate can corrupt: {}",
                data.source,
                if why.is_empty() {
                    "the model reads no array".to_string()
                } else {
                    why.join("; ")
                }
            )))
        }
        many => {
            return Err(err(format!(
                "{}: the model reads {} image arrays ({}); corruptions change one: feed the others from arrays that are not images",
                data.source,
                many.len(),
                many.join(", ")
            )))
        }
    };
    for (k, side) in sides.iter().enumerate().skip(1) {
        if !side.iter().any(|b| b.array == array) {
            return Err(err(format!(
                "{}: the baseline reads the image array '{array}' but candidate {k} does not; corrupted inputs must feed both",
                data.source
            )));
        }
    }
    Ok(array)
}

/// One side of a corrupted run: its name, what it reads and the clean run's score output.
pub(crate) struct SideRun<'a> {
    pub side: &'a str,
    pub bindings: &'a [InputBinding],
    pub clean: &'a ScoreOutput,
}

/// One model's predictions on every corrupted copy of `array`, in [`cells`] order; the
/// score output and its kind are the clean run's.
pub(crate) fn run_corrupted(
    run: SideRun<'_>,
    model: &mut dyn Model,
    data: &Dataset,
    array: &str,
    opts: &EvalOptions,
    progress: Progress<'_>,
) -> Result<Vec<Predicted>, EvalError> {
    let SideRun {
        side,
        bindings,
        clean,
    } = run;
    let Some(plan) = &opts.corruptions else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (c, s) in cells(plan) {
        let transform = |name: &str, batch: &qgate_core::Array, rows: &[usize]| {
            if name == array {
                corrupt_batch(plan, name, batch, rows, c, s).map(Some)
            } else {
                Ok(None)
            }
        };
        let label = format!("{side} {c}:{s}");
        let run = run_model_with(
            model,
            data,
            bindings,
            opts.batch_size,
            &mut |done, all| progress(&label, done, all),
            Some(&transform),
        )
        .map_err(|source| EvalError::Runtime {
            side: side.to_string(),
            source,
        })?;
        let scores =
            select_scores(&run, Some(&clean.name), Some(clean.kind)).map_err(|message| {
                EvalError::Outputs {
                    side: side.to_string(),
                    message,
                }
            })?;
        out.push(Predicted {
            predictions: scores.predictions,
            probs: scores.probs,
        });
    }
    Ok(out)
}

/// The evaluation of every corrupted copy of one pair. `input` is the clean pair (its
/// predictions are replaced per copy); `runs` are each side's [`run_corrupted`].
pub(crate) fn evaluate(
    plan: &CorruptionPlan,
    array: &str,
    input: &PairInput<'_>,
    runs: [&[Predicted]; 2],
    clean_accuracy: [f64; 2],
    data: &Dataset,
    min_samples: u64,
) -> CorruptionEvaluation {
    let all: Vec<usize> = (0..input.labels.len()).collect();
    let bad = |p: &Predicted| -> Vec<bool> { p.predictions.iter().map(Option::is_none).collect() };
    let mut slices: Vec<SliceResult> = Vec::new();
    for (k, (c, s)) in cells(plan).into_iter().enumerate() {
        let pair = PairInput {
            baseline: &runs[0][k],
            candidate: &runs[1][k],
            ..*input
        };
        let (nb, nc) = (bad(&runs[0][k]), bad(&runs[1][k]));
        slices.push(one_slice(
            &pair,
            "corruption",
            &format!("{c}:{s}"),
            &all,
            [&nb, &nc],
            min_samples,
        ));
    }
    test_family(&mut slices, input.alpha);
    let entries: Vec<CorruptionEntry> = cells(plan)
        .into_iter()
        .zip(slices)
        .map(|((c, s), slice)| CorruptionEntry {
            corruption: c,
            severity: s,
            extra_drop: (clean_accuracy[1] - slice.candidate.accuracy)
                - (clean_accuracy[0] - slice.baseline.accuracy),
            slice,
        })
        .collect();
    let summary = summarise(plan, &entries, clean_accuracy);
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    CorruptionEvaluation {
        mce: mean(summary.iter().filter_map(|s| s.ce).collect()),
        relative_mce: mean(summary.iter().filter_map(|s| s.relative_ce).collect()),
        thumbnails: thumbnails(plan, array, runs, input.labels, data),
        plan: plan.clone(),
        array: array.to_string(),
        clean_accuracy,
        entries,
        summary,
    }
}

fn summarise(
    plan: &CorruptionPlan,
    entries: &[CorruptionEntry],
    [clean_b, clean_c]: [f64; 2],
) -> Vec<CorruptionSummary> {
    plan.corruptions
        .iter()
        .map(|&c| {
            let of: Vec<&CorruptionEntry> = entries.iter().filter(|e| e.corruption == c).collect();
            let err = |f: fn(&CorruptionEntry) -> f64| of.iter().map(|e| 1.0 - f(e)).sum::<f64>();
            let (eb, ec) = (
                err(|e| e.slice.baseline.accuracy),
                err(|e| e.slice.candidate.accuracy),
            );
            let n = of.len() as f64;
            let (rb, rc) = (eb - n * (1.0 - clean_b), ec - n * (1.0 - clean_c));
            CorruptionSummary {
                corruption: c,
                ce: (eb > 0.0).then(|| ec / eb),
                relative_ce: (rb > 0.0).then(|| rc / rb),
            }
        })
        .collect()
}

/// Pictures of corrupted samples that the baseline got right and the candidate wrong, made
/// again from their seeds (at most [`THUMBS_PER_SLICE`] per cell).
fn thumbnails(
    plan: &CorruptionPlan,
    array: &str,
    runs: [&[Predicted]; 2],
    labels: &[usize],
    data: &Dataset,
) -> Vec<Thumbnail> {
    let Some(a) = data.arrays.get(array) else {
        return Vec::new();
    };
    let Ok(shape) = plan.pixels.image_shape(array, a) else {
        return Vec::new();
    };
    let qgate_core::ArrayData::F32(values) = &a.data else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, (c, s)) in cells(plan).into_iter().enumerate() {
        let flipped = (0..labels.len()).filter(|&i| {
            runs[0][k].predictions[i] == Some(labels[i])
                && runs[1][k].predictions[i] != Some(labels[i])
        });
        for i in flipped.take(THUMBS_PER_SLICE) {
            if out.len() >= MAX_THUMBS {
                return out;
            }
            let mut img = plan.pixels.to_image(values, shape, i);
            img.pixels.iter_mut().for_each(|p| *p = p.clamp(0.0, 1.0));
            let mut rng = sample_rng(plan.seed, c, s, data.rows[i]);
            if apply(&mut img, c, s, &mut rng).is_ok() {
                if let Some(t) = pixel_thumbnail(&img, &format!("{} · {c}:{s}", data.ids[i])) {
                    out.push(t);
                }
            }
        }
    }
    out
}

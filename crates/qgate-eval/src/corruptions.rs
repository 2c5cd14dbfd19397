//! Synthetic edge cases: both models on corrupted copies of the test set, one corruption
//! and severity at a time, the copies made batch by batch. Each corruption × severity is a
//! slice (`corruption=dark:5`) with the figures, intervals, corrected tests and gates of
//! every slice, plus the candidate's extra drop beyond the baseline's and an ImageNet-C
//! style corruption error of the candidate relative to the baseline.

use serde::Serialize;

use qgate_core::compare::Predicted;
use qgate_core::slices::{one_slice, test_family, SliceResult};
use qgate_data::corrupt::{apply, corrupt_batch, sample_rng, Corruption, CorruptionPlan};
use qgate_data::Dataset;
use qgate_runtime::Model;

use crate::thumbnails::{pixel_thumbnail, Thumbnail};
use crate::{EvalError, EvalOptions, InputBinding, Progress, Side};

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
    /// Whether the baseline's error grew under this corruption.
    pub baseline_degrades: bool,
    /// Whether the candidate's error grew under this corruption.
    pub candidate_degrades: bool,
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
    /// Mean of `ce` over the corruptions (ImageNet-C's mCE with the baseline as reference);
    /// `None` when any corruption has no `ce`.
    pub mce: Option<f64>,
    /// Mean of `relative_ce`; `None` when any corruption has none (a baseline that does not
    /// degrade: see `summary`).
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
    // The image arrays each side reads: they must be the same one for every side.
    let images_of = |side: &[InputBinding]| -> (Vec<String>, Vec<String>) {
        let (mut images, mut why) = (Vec::new(), Vec::new());
        for b in side {
            let Ok(a) = data.read_rows(&b.array, &[0]) else {
                continue;
            };
            match plan.pixels.image_shape(&b.array, &a) {
                Ok(_) if !images.contains(&b.array) => images.push(b.array.clone()),
                Ok(_) => {}
                Err(e) => why.push(e),
            }
        }
        (images, why)
    };
    let (images, why) = images_of(sides.first().copied().unwrap_or_default());
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
        let (theirs, _) = images_of(side);
        if theirs != images {
            return Err(err(format!(
                "{}: the baseline reads the image array '{array}' but candidate {k} reads {}; corrupted inputs must feed every model alike",
                data.source,
                if theirs.is_empty() {
                    "none".to_string()
                } else {
                    theirs.join(", ")
                }
            )));
        }
    }
    // Read a chunk at a time: the array may be left in its file.
    let mut brightest = f32::NEG_INFINITY;
    let n = data.len();
    for start in (0..n).step_by(CHECK_CHUNK) {
        let idx: Vec<usize> = (start..(start + CHECK_CHUNK).min(n)).collect();
        let a = data
            .read_rows(&array, &idx)
            .map_err(|e| err(e.to_string()))?;
        let b = plan
            .pixels
            .check_chunk(&array, &a, &data.ids, start)
            .map_err(|e| err(format!("{}: {e}", data.source)))?;
        brightest = brightest.max(b);
    }
    plan.pixels
        .check_brightest(&array, n, brightest)
        .map_err(|e| err(format!("{}: {e}", data.source)))?;
    Ok(array)
}

/// Samples read at a time when checking an image array's pixels.
const CHECK_CHUNK: usize = 256;

/// What every pair of a corrupted run shares: the data, the array corrupted, the labels
/// and the settings.
pub(crate) struct CellRun<'a> {
    pub data: &'a Dataset,
    pub array: &'a str,
    pub labels: &'a [usize],
    pub opts: &'a EvalOptions,
    pub policy: &'a qgate_core::policy::Policy,
}

/// Each corruption cell of one pair, as run: its slice (not yet tested with its family)
/// and thumbnails of its corrupted flips.
#[derive(Debug, Clone, Default)]
pub(crate) struct CorruptedCells {
    pub slices: Vec<SliceResult>,
    pub thumbnails: Vec<Thumbnail>,
}

/// Every model on one corrupted copy, in lockstep: each side's predictions and each
/// pair's per-sample KL. The score output and its kind are the clean run's.
fn run_cell(
    run: &CellRun<'_>,
    (baseline, base_side): (&mut dyn Model, &Side),
    candidates: &mut [&mut dyn Model],
    cand_sides: &[Side],
    cell: (Corruption, u8),
    progress: Progress<'_>,
) -> Result<crate::stream::Streamed, EvalError> {
    let Some(plan) = &run.opts.corruptions else {
        return Ok(crate::stream::Streamed {
            sides: Vec::new(),
            pairs: Vec::new(),
        });
    };
    let (c, s) = cell;
    let array = run.array;
    let transform = |name: &str, batch: &qgate_core::Array, rows: &[usize]| {
        if name == array {
            corrupt_batch(plan, name, batch, rows, c, s).map(Some)
        } else {
            Ok(None)
        }
    };
    fn member<'a>(model: &'a mut dyn Model, side: &'a Side) -> crate::stream::Member<'a> {
        crate::stream::Member {
            side: side.name.clone(),
            model,
            bindings: &side.bindings,
            forced: Some((side.scores.name.clone(), side.scores.kind)),
        }
    }
    let mut members = vec![member(baseline, base_side)];
    for (m, side) in candidates.iter_mut().zip(cand_sides) {
        members.push(member(&mut **m, side));
    }
    let opts = crate::stream::StreamOptions {
        batch_size: run.opts.batch_size,
        top_k: run.opts.top_k,
        output: None,
        output_kind: None,
        keep_outputs: 0,
        divergence: false,
        transform: Some(&transform),
    };
    let labels: Vec<i64> = run.labels.iter().map(|&y| y as i64).collect();
    crate::stream::stream(
        &mut members,
        run.data,
        &labels,
        &opts,
        &format!("{c}:{s}"),
        progress,
    )
}

/// Runs every corruption cell, one at a time: every model on it in lockstep, each pair
/// reduced to its slice and thumbnails at once, so only one cell's predictions are held.
/// Returns one [`CorruptedCells`] per candidate.
pub(crate) fn run_cells(
    run: &CellRun<'_>,
    (baseline, base_side): (&mut dyn Model, &Side),
    candidates: &mut [&mut dyn Model],
    cand_sides: &[Side],
    progress: Progress<'_>,
) -> Result<Vec<CorruptedCells>, EvalError> {
    let Some(plan) = &run.opts.corruptions else {
        return Ok(Vec::new());
    };
    let mut out = vec![CorruptedCells::default(); cand_sides.len()];
    let all: Vec<usize> = (0..run.labels.len()).collect();
    let min_samples = run.policy.value("min_slice_samples").unwrap_or(30.0).ceil() as u64;
    for cell in cells(plan) {
        let streamed = run_cell(
            run,
            (&mut *baseline, base_side),
            candidates,
            cand_sides,
            cell,
            progress,
        )?;
        let b = &streamed.sides[0].predicted;
        for (k, side) in cand_sides.iter().enumerate() {
            let p = &streamed.sides[k + 1].predicted;
            let n_classes = crate::pair_classes([base_side, side], run.data, run.labels);
            let input = crate::pair_input(
                run.labels,
                run.data,
                n_classes,
                [b, p],
                &streamed.pairs[k],
                run.opts,
                run.policy,
            );
            out[k].slices.push(one_slice(
                &input,
                "corruption",
                &format!("{}:{}", cell.0, cell.1),
                &all,
                min_samples,
            ));
            let room = MAX_THUMBS.saturating_sub(out[k].thumbnails.len());
            let thumbs = cell_thumbnails(plan, run, cell, [b, p], room);
            out[k].thumbnails.extend(thumbs);
        }
    }
    Ok(out)
}

/// The evaluation of every corrupted copy of one pair from its cells.
pub(crate) fn evaluate(
    plan: &CorruptionPlan,
    array: &str,
    cells_run: CorruptedCells,
    clean_accuracy: [f64; 2],
    alpha: f64,
) -> CorruptionEvaluation {
    let CorruptedCells {
        mut slices,
        thumbnails,
    } = cells_run;
    test_family(&mut slices, alpha);
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
    // A mean over only some corruptions would hide the ones left out: none unless all count.
    let mean = |v: Vec<Option<f64>>| -> Option<f64> {
        let all: Option<Vec<f64>> = v.into_iter().collect();
        all.filter(|a| !a.is_empty())
            .map(|a| a.iter().sum::<f64>() / a.len() as f64)
    };
    CorruptionEvaluation {
        mce: mean(summary.iter().map(|s| s.ce).collect()),
        relative_mce: mean(summary.iter().map(|s| s.relative_ce).collect()),
        thumbnails,
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
                baseline_degrades: rb > 0.0,
                candidate_degrades: rc > 0.0,
            }
        })
        .collect()
}

/// Pictures of one cell's corrupted samples that the baseline got right and the candidate
/// wrong, made again from their seeds (at most [`THUMBS_PER_SLICE`], and `room`).
fn cell_thumbnails(
    plan: &CorruptionPlan,
    run: &CellRun<'_>,
    (c, s): (Corruption, u8),
    [b, p]: [&Predicted; 2],
    room: usize,
) -> Vec<Thumbnail> {
    let data = run.data;
    let labels = run.labels;
    (0..labels.len())
        .filter(|&i| b.predictions[i] == Some(labels[i]) && p.predictions[i] != Some(labels[i]))
        .take(THUMBS_PER_SLICE.min(room))
        .filter_map(|i| {
            let a = data.read_rows(run.array, &[i]).ok()?;
            let shape = plan.pixels.image_shape(run.array, &a).ok()?;
            let qgate_core::ArrayData::F32(values) = &a.data else {
                return None;
            };
            let mut img = plan.pixels.to_image(values, shape, 0);
            img.pixels.iter_mut().for_each(|x| *x = x.clamp(0.0, 1.0));
            let mut rng = sample_rng(plan.seed, c, s, data.rows.file_row(i));
            apply(&mut img, c, s, &mut rng).ok()?;
            pixel_thumbnail(&img, &format!("{} · {c}:{s}", &data.ids[i]))
        })
        .collect()
}

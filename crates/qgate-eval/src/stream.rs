//! Every model of an evaluation run over the data in lockstep, batch by batch: each batch
//! is read once (on another thread, while the models run the previous one), fed to every
//! model, and reduced at once to the per-sample figures the statistics read (top-1, top-k,
//! confidence, Brier, KL) and to running sums of every output's divergence. Output rows are
//! then dropped, unless the caller keeps them (`--save-outputs`, `qgate check`'s reference
//! outputs), so memory does not grow with the outputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use qgate_core::compare::Predicted;
use qgate_core::divergence::{kl_divergence, top_k_set_into, DivergenceSums};
use qgate_core::metrics::{argmax, softmax_into};
use qgate_core::rows::RowStats;
use qgate_core::{Array, ArrayData, ElemType};
use qgate_data::Dataset;
use qgate_runtime::{Model, RuntimeError};

use crate::outputs::{choose_output, detect_kind, is_distribution, normalise, ChosenBy, KindBy};
use crate::run::{
    check_fixed_batch_memory, check_rows_by_position, fixed_batch_of, BatchTransform,
};
use crate::{EvalError, InputBinding, OutputDivergence, OutputKind, ScoreOutput};

/// One model of a lockstep run.
pub(crate) struct Member<'m> {
    /// `baseline`, `candidate`, `candidate 2`: names it in errors.
    pub side: String,
    pub model: &'m mut dyn Model,
    /// Which data array feeds which input.
    pub bindings: &'m [InputBinding],
    /// The score output and its kind, when fixed (a corrupted copy reads the clean run's).
    pub forced: Option<(String, OutputKind)>,
}

/// What the reduction needs of a member (it runs on its own thread, apart from the model).
struct Facts {
    side: String,
    /// Output names, in declaration order.
    outputs: Vec<String>,
    forced: Option<(String, OutputKind)>,
}

impl Facts {
    fn of(m: &Member<'_>) -> Facts {
        Facts {
            side: m.side.clone(),
            outputs: m
                .model
                .info()
                .outputs
                .iter()
                .map(|o| o.name.clone())
                .collect(),
            forced: m.forced.clone(),
        }
    }
}

/// What a run asks for beyond the per-sample figures.
pub(crate) struct StreamOptions<'a> {
    /// Samples per lockstep batch (a model with a fixed batch dimension runs it in its own).
    pub batch_size: usize,
    /// `k` of the top-k figures.
    pub top_k: usize,
    /// `--output`.
    pub output: Option<&'a str>,
    /// `--output-kind`.
    pub output_kind: Option<OutputKind>,
    /// Keep every output of every model for the first this many samples (for
    /// `--save-outputs` and `qgate check`).
    pub keep_outputs: usize,
    /// Whether to sum each candidate's output divergence from the baseline.
    pub divergence: bool,
    /// Changes each batch of an array before the models see it (corruptions).
    pub transform: Option<&'a BatchTransform<'a>>,
}

/// One model's run, reduced.
pub(crate) struct StreamedSide {
    /// The output read as predictions (without per-sample values).
    pub scores: ScoreOutput,
    pub predicted: Predicted,
    /// Wall time of this model's inference, seconds.
    pub seconds: f64,
    /// Every output, stacked, when kept; else empty.
    pub outputs: Arc<Vec<(String, Array)>>,
}

/// The baseline (member 0) against one candidate.
pub(crate) struct StreamedPair {
    /// KL(baseline ‖ candidate) per sample, when both give probabilities.
    pub kl: Option<Vec<f64>>,
    /// Whether both give the same top-k classes, per sample, when both give probabilities.
    pub top_k_same: Option<Vec<bool>>,
    pub divergence: Vec<OutputDivergence>,
    pub divergence_skipped: Vec<(String, String)>,
}

/// The reduced run of every member.
pub(crate) struct Streamed {
    pub sides: Vec<StreamedSide>,
    /// One per candidate (members after the first).
    pub pairs: Vec<StreamedPair>,
}

/// How a side reads its score output, decided on the first batch.
#[derive(Clone)]
struct Reading {
    name: String,
    index: usize,
    kind: OutputKind,
    chosen_by: ChosenBy,
    kind_by: KindBy,
    n_classes: usize,
    /// Detected as probabilities: every later row must be a distribution too, else the
    /// run restarts reading the output as logits.
    verify: bool,
    /// No row seen so far could tell logits from probabilities (every one held a NaN or a
    /// +∞): read as logits until a batch with such a row decides (the rows before it are
    /// non-finite samples whatever the kind).
    undecided: bool,
}

/// A probabilities-looking output that turned out not to be: the run restarts with this
/// member's output read as logits.
struct Restart(usize);

/// Runs every member over `data` in lockstep and reduces the outputs; `labels` are the
/// raw labels (one per sample). `progress(label, done, all)`.
pub(crate) fn stream(
    members: &mut [Member<'_>],
    data: &Dataset,
    labels: &[i64],
    opts: &StreamOptions<'_>,
    label: &str,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Streamed, EvalError> {
    for m in members.iter() {
        let runtime = |source| EvalError::Runtime {
            side: m.side.clone(),
            source,
        };
        if let Some(f) = fixed_batch_of(m.model.info()) {
            let names: Vec<&str> = m.bindings.iter().map(|b| b.array.as_str()).collect();
            check_fixed_batch_memory(&*m.model, m.model.info(), data, &names, f)
                .map_err(runtime)?;
        }
        check_rows_by_position(&*m.model, data).map_err(runtime)?;
    }
    let mut logits_after_all: Vec<bool> = vec![false; members.len()];
    loop {
        match pass(
            members,
            data,
            labels,
            opts,
            &logits_after_all,
            label,
            progress,
        )? {
            Ok(done) => return Ok(done),
            Err(Restart(k)) => logits_after_all[k] = true,
        }
    }
}

/// Predicted classes while the stream runs, 4 bytes each instead of 16 (`u32::MAX` for
/// none): the stream's peak memory is reached at its end, with a window of inputs still
/// held; [`PackedPredictions::unpack`] widens them once the windows are gone.
struct PackedPredictions(Vec<u32>);

impl PackedPredictions {
    const NONE: u32 = u32::MAX;

    /// A class index beyond `u32::MAX − 1` (which no model has) is kept as `u32::MAX − 1`:
    /// still no class, so still a wrong answer.
    fn push(&mut self, p: Option<usize>) {
        self.0
            .push(p.map_or(Self::NONE, |c| c.min(Self::NONE as usize - 1) as u32));
    }

    fn unpack(self) -> Vec<Option<usize>> {
        self.0
            .into_iter()
            .map(|c| (c != Self::NONE).then_some(c as usize))
            .collect()
    }
}

/// Empty arrays with room for the rows of each batch of window `w`, in the element type
/// each array is read as (other types start empty and are allocated by the reader).
fn reserved_window(data: &Dataset, arrays: &[&str], w: &[(usize, usize)]) -> Buffers {
    w.iter()
        .map(|&(start, end)| {
            arrays
                .iter()
                .map(|name| {
                    let Some((shape, elem)) = data.array_meta(name) else {
                        return Array::empty_f32();
                    };
                    let row: usize = shape.iter().skip(1).product();
                    let len = (end - start) * row;
                    // A batch past the memory limit: the reader names it.
                    let bytes =
                        qgate_core::memory::bytes_of(&[end - start, row], elem.size_bytes());
                    if qgate_core::memory::check(bytes, name).is_err() {
                        return Array::empty_f32();
                    }
                    let values = match elem {
                        ElemType::F32 => ArrayData::F32(Vec::with_capacity(len)),
                        ElemType::F64 => ArrayData::F64(Vec::with_capacity(len)),
                        ElemType::U8 => ArrayData::U8(Vec::with_capacity(len)),
                        ElemType::I64 => ArrayData::I64(Vec::with_capacity(len)),
                        _ => return Array::empty_f32(),
                    };
                    Array {
                        shape: vec![0],
                        data: values,
                    }
                })
                .collect()
        })
        .collect()
}

/// Room for the file bytes of one batch of the largest array read from its file as bytes.
fn reserved_scratch(data: &Dataset, arrays: &[&str], batch: usize) -> Vec<u8> {
    let most = arrays
        .iter()
        .filter_map(|name| data.stored.get(*name)?.row_file_bytes())
        .map(|row| qgate_core::memory::bytes_of(&[batch.min(data.len()), row], 1))
        .max()
        .unwrap_or(0);
    // Past the memory limit: left for the reader, which names the batch.
    match qgate_core::memory::check(most, "scratch") {
        Ok(()) => Vec::with_capacity(most as usize),
        Err(_) => Vec::new(),
    }
}

/// Per-member state of one pass.
struct SideState {
    reading: Option<Reading>,
    predictions: PackedPredictions,
    rows: Option<RowStats>,
    parts: Vec<Vec<Array>>,
}

/// Per-candidate state of one pass.
struct PairState {
    kl: Option<Vec<f64>>,
    top_k_same: Option<Vec<bool>>,
    /// Running sums per compared output, in the baseline's declaration order.
    sums: Vec<(String, DivergenceSums)>,
    skipped: Vec<(String, String)>,
    decided: bool,
}

fn pass(
    members: &mut [Member<'_>],
    data: &Dataset,
    labels: &[i64],
    opts: &StreamOptions<'_>,
    as_logits: &[bool],
    label: &str,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Result<Streamed, Restart>, EvalError> {
    let n = data.len();
    let (arrays, batches, per_window) = plan(members, data, opts.batch_size);
    let windows: Vec<&[(usize, usize)]> = batches.chunks(per_window).collect();
    let facts: Vec<Facts> = members.iter().map(Facts::of).collect();
    progress(label, 0, n);
    let (reduced, seconds) = std::thread::scope(|scope| -> Result<_, EvalError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Window>(0);
        // Windows the models are done with come back to the reader, which reads the next
        // ones into the same buffers: once two windows exist, no batch allocates.
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Buffers>();
        // The first two windows' buffers (and the reader's scratch) are allocated here, on
        // this thread: glibc keeps freed memory in the arena of the thread that allocated
        // it, so once the pass ends the statistics that follow reuse the windows' memory
        // instead of growing this thread's heap past it (about 2.5 MiB at 50 000 samples).
        for w in windows.iter().take(2) {
            let _ = back_tx.send(reserved_window(data, &arrays, w));
        }
        let mut scratch = reserved_scratch(data, &arrays, opts.batch_size);
        {
            let (windows, arrays) = (&windows, &arrays);
            let transform = opts.transform;
            scope.spawn(move || {
                for w in windows {
                    let mut buffers = back_rx.try_recv().unwrap_or_default();
                    buffers.resize_with(w.len(), Vec::new);
                    let read: Window = w
                        .iter()
                        .zip(buffers.iter_mut())
                        .try_for_each(|(&(s, e), batch)| {
                            let idx: Vec<usize> = (s..e).collect();
                            crate::run::read_batch_into(
                                data,
                                arrays,
                                &idx,
                                transform,
                                batch,
                                &mut scratch,
                            )
                            .map_err(|e| e.to_string())
                        })
                        .map(|()| buffers);
                    if tx.send(read).is_err() {
                        break;
                    }
                }
            });
        }
        // Each batch every member has run goes to the reducer thread, which reduces it while
        // the models run the next ones (two batches may wait: the outputs held stay about
        // one window's).
        let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Finished>(2);
        let facts = &facts;
        let reducer = scope.spawn(move || reduce_all(facts, out_rx, labels, opts, as_logits, n));
        let lanes = Lanes {
            inputs: rx,
            spent: back_tx,
            finished: out_tx,
        };
        let ran = run_windows(members, data, &windows, &arrays, lanes, label, progress);
        let reduced = reducer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // A restart or an error the reducer met concerns an earlier batch than any the
        // models could have failed on since (they stop at the next batch it refuses), so it
        // comes first: the outcome does not depend on timing.
        match reduced {
            Ok(Ok(state)) => ran.map(|seconds| (Ok(state), seconds)),
            Ok(Err(restart)) => Ok((Err(restart), Vec::new())),
            Err(e) => Err(e),
        }
    })?;
    let (sides, pairs) = match reduced {
        Ok(state) => state,
        Err(restart) => return Ok(Err(restart)),
    };
    finish(members, sides, pairs, &seconds, opts.keep_outputs).map(Ok)
}

/// The arrays of each batch of a window, in `plan`'s order of arrays.
type Buffers = Vec<Vec<Array>>;

/// A window read by the reader thread, or why it could not be.
type Window = Result<Buffers, String>;

/// One batch every member has run: `(start, end, outputs[member])`.
type Finished = (usize, usize, Vec<Vec<Array>>);

/// The models' thread's channels: windows in from the reader, their buffers back to it,
/// finished batches out to the reducer.
struct Lanes {
    inputs: std::sync::mpsc::Receiver<Window>,
    spent: std::sync::mpsc::Sender<Buffers>,
    finished: std::sync::mpsc::SyncSender<Finished>,
}

/// Every member's and every pair's reduced state after a whole pass, or the restart a
/// member's output asks for.
type Reduced = Result<(Vec<SideState>, Vec<PairState>), Restart>;

/// Runs the members over every window, each member a whole window before the next (its
/// weights stay in cache), and sends each batch on once every member has run it; returns
/// each member's inference seconds. Stops early, with `Ok`, when the reducer stops taking
/// batches.
fn run_windows(
    members: &mut [Member<'_>],
    data: &Dataset,
    windows: &[&[(usize, usize)]],
    arrays: &[&str],
    lanes: Lanes,
    label: &str,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<f64>, EvalError> {
    let n = data.len();
    let last = members.len() - 1;
    let mut seconds = vec![0.0; members.len()];
    for w in windows {
        let read = lanes.inputs.recv().map_err(|_| EvalError::Inputs {
            side: data.source.clone(),
            message: "the thread reading batches stopped".into(),
        })?;
        let read = read.map_err(|message| EvalError::Inputs {
            side: data.source.clone(),
            message,
        })?;
        let by_name: Vec<BTreeMap<&str, &Array>> = read
            .iter()
            .map(|batch| arrays.iter().copied().zip(batch.iter()).collect())
            .collect();
        // [member][batch of the window]; the last member's batches go out as they finish.
        let mut outs: Vec<Vec<Vec<Array>>> = Vec::with_capacity(last);
        for (k, m) in members.iter_mut().enumerate() {
            let mut mine = Vec::with_capacity(w.len());
            for (b, (&(start, end), inputs)) in w.iter().zip(&by_name).enumerate() {
                let t = Instant::now();
                let ran = run_member(m, data, inputs, start, end)?;
                seconds[k] += t.elapsed().as_secs_f64();
                if k < last {
                    mine.push(ran);
                    continue;
                }
                let batch: Vec<Vec<Array>> = outs
                    .iter_mut()
                    .map(|per_batch| std::mem::take(&mut per_batch[b]))
                    .chain(std::iter::once(ran))
                    .collect();
                if lanes.finished.send((start, end, batch)).is_err() {
                    return Ok(seconds);
                }
            }
            if k < last {
                outs.push(mine);
            }
        }
        drop(by_name);
        // The reader may have finished: then the buffers are simply dropped.
        let _ = lanes.spent.send(read);
        progress(label, w.last().map_or(0, |b| b.1), n);
    }
    Ok(seconds)
}

/// The reducer thread: reduces each finished batch in order until the models are done.
fn reduce_all(
    facts: &[Facts],
    batches: std::sync::mpsc::Receiver<Finished>,
    labels: &[i64],
    opts: &StreamOptions<'_>,
    as_logits: &[bool],
    n: usize,
) -> Result<Reduced, EvalError> {
    let mut sides: Vec<SideState> = facts
        .iter()
        .map(|f| SideState {
            reading: None,
            predictions: PackedPredictions(Vec::with_capacity(n)),
            rows: None,
            parts: vec![Vec::new(); f.outputs.len()],
        })
        .collect();
    let mut pairs: Vec<PairState> = (1..facts.len())
        .map(|_| PairState {
            kl: None,
            top_k_same: None,
            sums: Vec::new(),
            skipped: Vec::new(),
            decided: false,
        })
        .collect();
    for (start, end, batch) in batches {
        let ctx = BatchContext {
            labels,
            opts,
            as_logits,
            start,
            end,
            n,
        };
        if let Some(restart) = reduce_batch(facts, &mut sides, &mut pairs, batch, &ctx)? {
            return Ok(Err(restart));
        }
    }
    Ok(Ok((sides, pairs)))
}

/// The arrays any member reads (each read once per batch), the lockstep batches
/// `(start, end)`, and how many batches make a window.
///
/// Batches are grouped in windows of about [`WINDOW_BYTES`] of input: each model runs a
/// whole window before the next model (its weights stay in cache, as in a loop over one
/// model), and only one window's inputs and outputs are held, plus the next window's
/// inputs, which the reader thread prepares meanwhile (a rendezvous channel: it hands one
/// over only when the models are ready for it).
fn plan<'b>(
    members: &[Member<'b>],
    data: &Dataset,
    batch_size: usize,
) -> (Vec<&'b str>, Vec<(usize, usize)>, usize) {
    let n = data.len();
    let batch = members
        .iter()
        .find_map(|m| fixed_batch_of(m.model.info()))
        .unwrap_or(batch_size)
        .max(1);
    let mut arrays: Vec<&'b str> = Vec::new();
    for m in members {
        let bindings: &'b [InputBinding] = m.bindings;
        for b in bindings {
            if data.has_array(&b.array) && !arrays.contains(&b.array.as_str()) {
                arrays.push(&b.array);
            }
        }
    }
    let batches = (0..n)
        .step_by(batch)
        .map(|s| (s, (s + batch).min(n)))
        .collect();
    let row_bytes: usize = arrays
        .iter()
        .filter_map(|a| data.array_meta(a))
        .map(|(shape, elem)| shape.iter().skip(1).product::<usize>() * elem.size_bytes())
        .sum::<usize>()
        .max(1);
    (arrays, batches, (WINDOW_BYTES / (row_bytes * batch)).max(1))
}

/// Every member's reduced run and every pair's figures, once all batches are in.
fn finish(
    members: &[Member<'_>],
    sides: Vec<SideState>,
    pairs: Vec<PairState>,
    seconds: &[f64],
    keep_outputs: usize,
) -> Result<Streamed, EvalError> {
    let score_name = sides[0]
        .reading
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let pairs = pairs
        .into_iter()
        .map(|p| StreamedPair {
            kl: p.kl,
            top_k_same: p.top_k_same,
            divergence: p
                .sums
                .into_iter()
                .map(|(output, sums)| OutputDivergence {
                    is_score_output: output == score_name,
                    tensor: sums.finish(),
                    output,
                })
                .collect(),
            divergence_skipped: p.skipped,
        })
        .collect();
    let mut out = Vec::with_capacity(sides.len());
    for ((m, st), &seconds) in members.iter().zip(sides).zip(seconds) {
        let reading = st.reading.unwrap_or(Reading {
            name: String::new(),
            index: 0,
            kind: OutputKind::Logits,
            chosen_by: ChosenBy::FirstScores,
            kind_by: KindBy::NotDistributions,
            n_classes: 0,
            verify: false,
            undecided: false,
        });
        let outputs = if keep_outputs > 0 {
            stack(m, st.parts)?
        } else {
            Vec::new()
        };
        out.push(StreamedSide {
            scores: ScoreOutput {
                name: reading.name,
                kind: reading.kind,
                chosen_by: reading.chosen_by,
                kind_by: reading.kind_by,
                n_classes: reading.n_classes,
                predictions: Vec::new(),
                scores: None,
                probs: None,
            },
            predicted: Predicted {
                predictions: st.predictions.unpack(),
                rows: st.rows,
            },
            seconds,
            outputs: Arc::new(outputs),
        });
    }
    Ok(Streamed { sides: out, pairs })
}

/// Input bytes of a window of batches (see [`pass`]).
const WINDOW_BYTES: usize = 8 << 20;

/// Where a batch sits and what the reduction needs besides the outputs.
struct BatchContext<'a> {
    labels: &'a [i64],
    opts: &'a StreamOptions<'a>,
    as_logits: &'a [bool],
    start: usize,
    end: usize,
    /// Samples in all.
    n: usize,
}

/// Reduces one batch's outputs of every member (`outs[member]`): per-sample figures, KL
/// and divergence per pair, and the outputs kept. `Some(Restart)` when a member's output
/// read as probabilities turns out not to be.
fn reduce_batch(
    members: &[Facts],
    sides: &mut [SideState],
    pairs: &mut [PairState],
    outs: Vec<Vec<Array>>,
    ctx: &BatchContext<'_>,
) -> Result<Option<Restart>, EvalError> {
    let (start, end, n) = (ctx.start, ctx.end, ctx.n);
    for (k, (m, st)) in members.iter().zip(sides.iter_mut()).enumerate() {
        let again = st
            .reading
            .as_ref()
            .is_none_or(|r| r.undecided && has_deciding_row(&outs[k][r.index]));
        if again {
            st.reading = Some(decide(m, &outs[k], ctx.opts, ctx.as_logits[k])?);
        }
    }
    // Probabilities of each member's rows, for the per-sample figures and KL.
    let mut probs: Vec<Option<(Vec<f64>, usize)>> = Vec::with_capacity(members.len());
    for (k, (m, st)) in members.iter().zip(sides.iter_mut()).enumerate() {
        let Some(reading) = st.reading.clone() else {
            probs.push(None);
            continue;
        };
        let score = &outs[k][reading.index];
        match reduce(m, st, &reading, score, ctx.labels, start, ctx.opts.top_k)? {
            Ok(p) => probs.push(p),
            Err(()) => return Ok(Some(Restart(k))),
        }
    }
    // The baseline's top-k sets, once for every candidate: `None` for a row that is not
    // finite, else its set's range in `flat`.
    let mut set = Vec::new();
    type Sets = (Vec<usize>, Vec<Option<(usize, usize)>>);
    let base_top: Option<Sets> = probs[0].as_ref().map(|(pb, wb)| {
        let mut flat = Vec::with_capacity(pb.len());
        let spans = pb
            .chunks(*wb)
            .map(|r| {
                top_k_set_into(r, ctx.opts.top_k, &mut set).then(|| {
                    flat.extend_from_slice(&set);
                    (flat.len() - set.len(), flat.len())
                })
            })
            .collect();
        (flat, spans)
    });
    for (c, pair) in pairs.iter_mut().enumerate() {
        let k = c + 1;
        if let (Some((pb, wb)), Some((pc, wc)), Some((flat, spans))) =
            (&probs[0], &probs[k], &base_top)
        {
            let kl = pair.kl.get_or_insert_with(|| Vec::with_capacity(n));
            let same = pair.top_k_same.get_or_insert_with(|| Vec::with_capacity(n));
            for ((p, q), span) in pb.chunks(*wb).zip(pc.chunks(*wc)).zip(spans) {
                kl.push(kl_divergence(p, q));
                same.push(span.is_some_and(|(a, b)| {
                    top_k_set_into(q, ctx.opts.top_k, &mut set) && set == flat[a..b]
                }));
            }
        }
        if ctx.opts.divergence {
            sum_divergence(pair, &members[0], &members[k], &outs[0], &outs[k], n)?;
        }
    }
    if start < ctx.opts.keep_outputs {
        let keep = (ctx.opts.keep_outputs - start).min(end - start);
        for (st, out) in sides.iter_mut().zip(outs) {
            for (slot, a) in st.parts.iter_mut().zip(out) {
                slot.push(if keep < end - start {
                    a.slice_rows(0, keep)
                } else {
                    a
                });
            }
        }
    }
    Ok(None)
}

/// Runs one member on samples `start..end`: by id for saved outputs, else on the batch's
/// arrays (in chunks of its fixed batch, the last padded with its last sample).
fn run_member(
    m: &mut Member<'_>,
    data: &Dataset,
    by_name: &BTreeMap<&str, &Array>,
    start: usize,
    end: usize,
) -> Result<Vec<Array>, EvalError> {
    let runtime = |source| EvalError::Runtime {
        side: m.side.clone(),
        source,
    };
    let real = end - start;
    if m.model.keyed_by_sample() {
        let ids: Vec<String> = (start..end).map(|i| data.ids[i].to_string()).collect();
        let rows: Vec<usize> = (start..end).map(|i| data.rows.file_row(i)).collect();
        let out = m.model.run_samples(&ids, &rows).map_err(runtime)?;
        check_outputs(m, &out, real)?;
        return Ok(out);
    }
    let inputs: Vec<&Array> = m
        .bindings
        .iter()
        .filter_map(|b| by_name.get(b.array.as_str()).copied())
        .collect();
    let Some(fixed) = fixed_batch_of(m.model.info()).filter(|&f| f != real) else {
        let owned: Vec<Array>;
        let out = if inputs.len() == 1 {
            m.model.run(std::slice::from_ref(inputs[0]))
        } else {
            owned = inputs.iter().map(|a| (*a).clone()).collect();
            m.model.run(&owned)
        }
        .map_err(runtime)?;
        check_outputs(m, &out, real)?;
        return Ok(out);
    };
    let mut parts: Vec<Vec<Array>> = vec![Vec::new(); m.model.info().outputs.len()];
    for s in (0..real).step_by(fixed) {
        let e = (s + fixed).min(real);
        let mut idx: Vec<usize> = (s..e).collect();
        idx.resize(fixed, e - 1);
        let chunk: Vec<Array> = inputs.iter().map(|a| a.select_rows(&idx)).collect();
        let out = m.model.run(&chunk).map_err(runtime)?;
        check_outputs(m, &out, fixed)?;
        for (slot, o) in parts.iter_mut().zip(out) {
            slot.push(if e - s < fixed {
                o.slice_rows(0, e - s)
            } else {
                o
            });
        }
    }
    stack_parts(m, parts)
}

fn check_outputs(m: &Member<'_>, out: &[Array], rows: usize) -> Result<(), EvalError> {
    qgate_runtime::check_batch_outputs(m.model.info(), out, Some(rows)).map_err(|message| {
        EvalError::Runtime {
            side: m.side.clone(),
            source: RuntimeError::Run {
                path: m.model.provenance().spec.into(),
                message,
            },
        }
    })
}

fn stack_parts(m: &Member<'_>, parts: Vec<Vec<Array>>) -> Result<Vec<Array>, EvalError> {
    m.model
        .info()
        .outputs
        .iter()
        .zip(parts)
        .map(|(o, part)| {
            Array::concat_rows(&part).ok_or_else(|| EvalError::Outputs {
                side: m.side.clone(),
                message: format!(
                    "output '{}' changes shape or type between batches; qgate needs a sample axis first",
                    o.name
                ),
            })
        })
        .collect()
}

/// Every kept output of a member, stacked over the batches.
fn stack(m: &Member<'_>, parts: Vec<Vec<Array>>) -> Result<Vec<(String, Array)>, EvalError> {
    let stacked = stack_parts(m, parts)?;
    Ok(m.model
        .info()
        .outputs
        .iter()
        .map(|o| o.name.clone())
        .zip(stacked)
        .collect())
}

/// Chooses the score output and its kind from the first batch's outputs.
fn decide(
    m: &Facts,
    outs: &[Array],
    opts: &StreamOptions<'_>,
    as_logits: bool,
) -> Result<Reading, EvalError> {
    let err = |message: String| EvalError::Outputs {
        side: m.side.clone(),
        message,
    };
    let named: Vec<(String, &Array)> = m.outputs.iter().cloned().zip(outs.iter()).collect();
    let (wanted, kind) = match &m.forced {
        Some((name, kind)) => (Some(name.as_str()), Some(*kind)),
        None => (opts.output, opts.output_kind),
    };
    let (index, chosen_by) = choose_output(&named, wanted).map_err(err)?;
    let (name, array) = (&named[index].0, named[index].1);
    let is_labels_shape = array.shape.len() == 1 || (array.shape.len() == 2 && array.shape[1] == 1);
    let mut undecided = false;
    let (kind, kind_by) = match kind {
        Some(k) => (k, KindBy::KindFlag),
        None if is_labels_shape && array.elem_type().is_integer() => {
            (OutputKind::Labels, KindBy::IntegerPerSample)
        }
        None if as_logits => (OutputKind::Logits, KindBy::NotDistributions),
        None => {
            let values = array
                .to_f64()
                .ok_or_else(|| err(format!("output '{name}' is not numeric")))?;
            undecided = !deciding_row_in(&values, array.row_len());
            detect_kind(&values, array.row_len())
        }
    };
    if kind == OutputKind::Labels && !is_labels_shape {
        return Err(err(format!(
            "output '{name}' has shape {:?}; labels need one value per sample ([N] or [N, 1])",
            array.shape
        )));
    }
    if kind != OutputKind::Labels && array.shape.len() != 2 {
        return Err(err(format!(
            "output '{name}' has shape {:?}; class scores need shape [N, C]",
            array.shape
        )));
    }
    Ok(Reading {
        name: name.clone(),
        index,
        kind,
        chosen_by,
        kind_by,
        n_classes: if kind == OutputKind::Labels {
            0
        } else {
            array.shape[1]
        },
        verify: kind_by == KindBy::RowsSumToOne,
        undecided,
    })
}

/// Whether any row of a `[N, C]` (or `[N]`) output can tell logits from probabilities: one
/// with no NaN and no +∞. (A −∞ is a masked logit, never a probability: such a row decides
/// for logits, as its softmax is a finite row.)
fn has_deciding_row(array: &Array) -> bool {
    array
        .to_f64()
        .is_some_and(|values| deciding_row_in(&values, array.row_len()))
}

/// [`has_deciding_row`] of an output's values, `row_len` to a row.
fn deciding_row_in(values: &[f64], row_len: usize) -> bool {
    values
        .chunks(row_len.max(1))
        .any(|r| r.iter().all(|v| !v.is_nan() && *v != f64::INFINITY))
}

/// Adds one batch of a member's score output (samples from `start`) to its per-sample
/// figures; returns its probability rows (`None` for labels), or `Err(())` when an output
/// read as probabilities holds a row that is not a distribution.
#[allow(clippy::type_complexity)]
fn reduce(
    m: &Facts,
    st: &mut SideState,
    reading: &Reading,
    array: &Array,
    labels: &[i64],
    start: usize,
    top_k: usize,
) -> Result<Result<Option<(Vec<f64>, usize)>, ()>, EvalError> {
    let name = &reading.name;
    let values = array.to_f64().ok_or_else(|| EvalError::Outputs {
        side: m.side.clone(),
        message: format!("output '{name}' is not numeric"),
    })?;
    if reading.kind == OutputKind::Labels {
        // NaN or infinite: a non-finite answer. A finite value that is no class index is a
        // broken output, not a wrong answer.
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_finite() && (**v < 0.0 || v.fract() != 0.0))
        {
            return Err(EvalError::Outputs {
                side: m.side.clone(),
                message: format!(
                    "output '{name}' holds predicted labels, but sample {} has {v}; expected class indices 0, 1, 2, …",
                    start + i
                ),
            });
        }
        for &v in &values {
            st.predictions.push(v.is_finite().then_some(v as usize));
        }
        return Ok(Ok(None));
    }
    let w = reading.n_classes.max(1);
    if reading.verify
        && !values
            .chunks(w)
            .filter(|r| r.iter().all(|v| v.is_finite()))
            .all(is_distribution)
    {
        return Ok(Err(()));
    }
    let rows = st
        .rows
        .get_or_insert_with(|| RowStats::with_capacity(top_k, labels.len()));
    let mut probs = Vec::with_capacity(values.len());
    for (i, row) in values.chunks(w).enumerate() {
        st.predictions.push(argmax(row));
        let from = probs.len();
        match reading.kind {
            OutputKind::Logits => softmax_into(row, &mut probs),
            _ => probs.extend(normalise(row)),
        }
        let y = labels
            .get(start + i)
            .and_then(|&y| usize::try_from(y).ok())
            .filter(|&y| y < reading.n_classes);
        rows.push(row, &probs[from..], y);
    }
    Ok(Ok(Some((probs, w))))
}

/// Adds one batch to the running divergence of every output the baseline and a candidate
/// share; the first batch decides which outputs are compared (`n`: samples in all, for
/// the shapes named in a skip reason).
fn sum_divergence(
    pair: &mut PairState,
    base: &Facts,
    cand: &Facts,
    base_out: &[Array],
    cand_out: &[Array],
    n: usize,
) -> Result<(), EvalError> {
    let cand_names = &cand.outputs;
    let full = |a: &Array| {
        let mut s = a.shape.clone();
        if let Some(f) = s.first_mut() {
            *f = n;
        }
        s
    };
    for (name, a) in base.outputs.iter().zip(base_out) {
        let name = name.as_str();
        let Some(j) = cand_names.iter().position(|c| *c == name) else {
            if !pair.decided {
                pair.skipped.push((
                    name.to_string(),
                    "the candidate has no output of this name".into(),
                ));
            }
            continue;
        };
        let b = &cand_out[j];
        if !pair.decided {
            if a.shape.get(1..) != b.shape.get(1..) {
                pair.skipped.push((
                    name.to_string(),
                    format!(
                        "shapes differ: baseline {:?}, candidate {:?}",
                        full(a),
                        full(b)
                    ),
                ));
                continue;
            }
            if !(a.elem_type().is_numeric() && b.elem_type().is_numeric()) {
                pair.skipped.push((name.to_string(), "not numeric".into()));
                continue;
            }
            pair.sums
                .push((name.to_string(), DivergenceSums::default()));
        }
        let Some((_, sums)) = pair.sums.iter_mut().find(|(n, _)| n == name) else {
            continue;
        };
        if let (Some(x), Some(y)) = (a.to_f64(), b.to_f64()) {
            sums.add(&x, &y, a.row_len());
        }
    }
    pair.decided = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::has_deciding_row;
    use qgate_core::{Array, ArrayData};

    fn rows(values: Vec<f32>) -> Array {
        Array {
            shape: vec![values.len() / 3, 3],
            data: ArrayData::F32(values),
        }
    }

    #[test]
    fn a_row_with_nan_or_plus_infinity_cannot_decide_the_kind_but_a_masked_logit_can() {
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        assert!(!has_deciding_row(&rows(vec![nan, 0.5, 0.5, 0.2, inf, 0.1])));
        assert!(has_deciding_row(&rows(vec![nan, 0.5, 0.5, 0.0, -inf, 5.0])));
        assert!(has_deciding_row(&rows(vec![0.2, 0.3, 0.5])));
        assert!(!has_deciding_row(&rows(Vec::new())));
    }
}

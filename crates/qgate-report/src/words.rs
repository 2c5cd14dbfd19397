//! Sentences for people about other crates' typed results. The libraries return what
//! happened (a verdict, a note with its figures); the words are chosen here, once, so the
//! same result reads the same in every report.

use qgate_bench::{MeasurementNote, SpeedVerdict};
use qgate_core::policy::{CriterionResult, Direction, OutputCheckCounts, Reason, Skip, Status};

/// The latency scenario of a benchmark (`single stream: batch 1, …`).
pub(crate) fn scenario(batch: usize, rounds: usize) -> String {
    format!(
        "single stream: batch {batch}, one request in flight, {rounds} interleaved rounds per side"
    )
}

/// The speed-up, its 95 % interval and its verdict in words.
pub(crate) fn speed_sentence(ratio: f64, ci: [f64; 2], verdict: SpeedVerdict) -> String {
    let margin = qgate_core::latency::LAYOUT_MARGIN * 100.0;
    let verdict = match verdict {
        SpeedVerdict::Unmeasured => return "speed-up could not be measured".into(),
        SpeedVerdict::Faster => "faster".to_string(),
        SpeedVerdict::Slower => "slower".to_string(),
        SpeedVerdict::WithinMargin => format!("within {margin:.0} %, no material difference"),
        SpeedVerdict::Unclear => "no clear difference".to_string(),
    };
    format!(
        "candidate {ratio:.2}× the baseline's speed (95 % CI {:.2}–{:.2}): {verdict}",
        ci[0], ci[1]
    )
}

/// A measurement note and what to do about it.
pub(crate) fn note(n: &MeasurementNote) -> String {
    match n {
        MeasurementNote::NotSteady {
            spec,
            seconds,
            iterations,
        } => format!(
            "{spec}: latency had not settled after {seconds:.1} s of warm-up ({iterations} calls); \
             figures may include warm-up effects — raise --warmup-time"
        ),
        MeasurementNote::Outliers { spec, outliers, n } => format!(
            "{spec}: {outliers} of {n} timings are outliers (modified z-score > 3.5): other \
             processes or frequency changes interfered; the paired rounds keep the speed-up \
             fair, but close other programs for tighter intervals"
        ),
        MeasurementNote::Governor { governor } => format!(
            "CPU frequency governor is '{governor}': clock speed changes with load; for steadier \
             figures set it to 'performance'"
        ),
    }
}

/// How a data array came to feed a model input.
pub(crate) fn bound_by(b: &qgate_eval::InputBinding) -> String {
    use qgate_eval::BoundBy;
    match b.how {
        BoundBy::InputPair => format!("--input {}={}", b.input, b.array),
        BoundBy::InputKey => "--input-key".into(),
        BoundBy::SameName => "same name".into(),
        BoundBy::OnlyArray => "the data set's only array".into(),
    }
}

/// Why a data array was left aside.
pub(crate) fn ignored(i: &qgate_eval::Ignored) -> String {
    match i {
        qgate_eval::Ignored::NotRead => "not read by the model".into(),
        qgate_eval::Ignored::Unusable(why) => format!("not checked: it {why}"),
    }
}

/// Why the model's opset is what it is, and what it means for weight scales.
pub(crate) fn opset_note(n: &qgate_quant::Normalization) -> String {
    use qgate_quant::{OpsetBlocker, OpsetReason};
    let (from, to) = (n.opset_in, n.opset_out);
    match &n.opset_reason {
        OpsetReason::PerChannel => format!("opset {from}: weights quantized per channel"),
        OpsetReason::Upgraded => format!(
            "opset {from} upgraded to {to} (no op in the graph changes meaning between them), \
             so weights are quantized per channel"
        ),
        OpsetReason::Kept { blocker } => {
            let why = match blocker {
                OpsetBlocker::Subgraph { op, node } => format!("{op} '{node}' holds a subgraph"),
                OpsetBlocker::ChangesMeaning { op, node, at } => {
                    format!("{op} '{node}' changes meaning at opset {at}")
                }
            };
            format!(
                "opset {from} kept ({why}), so weights are quantized per tensor, as \
                 onnxruntime's quantize_static(per_channel=False)"
            )
        }
    }
}

/// How the one-at-a-time analysis ran, for the sensitivity report.
pub(crate) fn cost_method(m: qgate_quant::CostMethod) -> String {
    let (proxy, n, top) = (m.proxy, m.samples, m.confirmed);
    if m.cut_graphs {
        format!(
            "FP32 activations recorded by the reference pass, each layer's graph from its inputs \
             on; proxy on {proxy} of {n} samples, top {top} confirmed on all"
        )
    } else {
        format!(
            "whole models (the given quantized model with one layer's Q/DQ kept); proxy on \
             {proxy} of {n} samples, top {top} confirmed on all"
        )
    }
}

/// How the score output was chosen.
pub(crate) fn chosen_by(c: qgate_eval::ChosenBy) -> &'static str {
    use qgate_eval::ChosenBy;
    match c {
        ChosenBy::OutputFlag => "--output",
        ChosenBy::FirstScores => "the first output shaped [N, C]",
        ChosenBy::FirstLabels => "the first integer output shaped [N]",
    }
}

/// How the score output's kind was decided.
pub(crate) fn kind_by(k: qgate_eval::KindBy) -> &'static str {
    use qgate_eval::KindBy;
    match k {
        KindBy::KindFlag => "--output-kind",
        KindBy::IntegerPerSample => "integer output with one value per sample",
        KindBy::RowsSumToOne => "every row lies in [0, 1] and sums to 1",
        KindBy::NotDistributions => "rows are not probability distributions; softmax applied",
    }
}

/// A criterion's finding in one sentence a reviewer can act on.
pub(crate) fn criterion_message(c: &CriterionResult) -> String {
    let message = reason_message(c);
    match &c.slice {
        Some(slice) => format!("slice {slice}: {message}"),
        None => message,
    }
}

fn reason_message(c: &CriterionResult) -> String {
    match &c.reason {
        Reason::NotSignificant {
            p_holm,
            alpha,
            no_drop,
        } => {
            let op = op(c.direction);
            let why = if *no_drop {
                "the slice has no fewer correct answers than the baseline's".to_string()
            } else {
                format!(
                    "its accuracy drop is not significant after Holm's correction (adjusted \
                     McNemar p = {} ≥ {}): looks worse, could be noise",
                    fmt_num(*p_holm),
                    fmt_num(*alpha)
                )
            };
            format!(
                "{} = {} misses {op} {}, but {why}; passed under slice_gate = \"significant\"",
                c.description,
                c.observed.map_or("—".to_string(), fmt_num),
                fmt_num(c.threshold),
            )
        }
        Reason::Judged {
            classes_over,
            decision_ci,
        } => judged(c, classes_over, *decision_ci),
        Reason::Skipped { skip } => skipped(skip),
        Reason::FiniteOutputs {
            baseline,
            candidate,
            samples,
        } => {
            if baseline + candidate == 0 {
                "every output of both models is finite".to_string()
            } else {
                format!(
                    "non-finite (NaN or infinite) outputs: baseline on {baseline} sample(s), \
                     candidate on {candidate} sample(s) of {samples}; those samples count as wrong"
                )
            }
        }
        Reason::FiniteTimedOutputs {
            baseline: b,
            candidate: c,
        } => {
            if b[0] + c[0] == 0 {
                format!(
                    "every output of the timed runs is finite ({} baseline and {} candidate batches)",
                    b[1], c[1]
                )
            } else {
                format!(
                    "non-finite (NaN or infinite) outputs in the timed runs: baseline in {} of {} \
                     batch(es), candidate in {} of {}",
                    b[0], b[1], c[0], c[1]
                )
            }
        }
        Reason::SameOutputs {
            baseline,
            candidate,
        } => format!(
            "{}; {}",
            output_check("baseline", baseline),
            output_check("candidate", candidate)
        ),
    }
}

/// `≤` or `≥`.
fn op(d: Direction) -> &'static str {
    match d {
        Direction::AtMost => "≤",
        Direction::AtLeast => "≥",
    }
}

/// `description = observed meets|fails op threshold (details)`.
fn judged(c: &CriterionResult, classes_over: &[(String, f64)], ci: Option<[f64; 2]>) -> String {
    let Some(v) = c.observed else {
        return String::new();
    };
    let op = op(c.direction);
    let verb = if c.status == Status::Pass {
        "meets"
    } else {
        "fails"
    };
    let mut m = format!(
        "{} = {} {verb} {op} {}",
        c.description,
        fmt_num(v),
        fmt_num(c.threshold)
    );
    let detail = if !classes_over.is_empty() {
        classes_over
            .iter()
            .map(|(name, drop)| format!("class {name} −{drop:.2} pp"))
            .collect::<Vec<_>>()
            .join(", ")
    } else if let Some(ci) = ci {
        format!("99 % interval [{}, {}]", fmt_num(ci[0]), fmt_num(ci[1]))
    } else {
        String::new()
    };
    if !detail.is_empty() {
        m.push_str(&format!(" ({detail})"));
    }
    m
}

fn skipped(skip: &Skip) -> String {
    match skip {
        Skip::LabelsOnly => "skipped: the models output labels, not class scores".into(),
        Skip::MemoryUnmeasurable => {
            "skipped: resident memory is not measurable on this system".into()
        }
        Skip::NoEnergy(why) => format!("skipped: {why}"),
        Skip::NotPerSlice => {
            "skipped: speed, memory and energy are measured for the whole model, not per slice"
                .into()
        }
        Skip::NoSlices => {
            "skipped: the data has no slices (give --slices FILE or slice_<tag> arrays)".into()
        }
        Skip::TooFewSamples { samples, min } => format!(
            "skipped: the slice has {samples} sample(s), fewer than min_slice_samples = {min}"
        ),
        Skip::PerformanceNotMeasured => {
            "skipped: performance is measured by `qgate bench` and `qgate check`, not `qgate compare`"
                .into()
        }
    }
}

/// One side's output check: batches equal to an untimed rerun, samples equal to saved
/// outputs, where the first difference was.
fn output_check(side: &str, c: &OutputCheckCounts) -> String {
    let mut s = format!(
        "{side}: {}/{} timed batches equal an untimed rerun ({:?})",
        c.batches - c.mismatched,
        c.batches,
        c.tolerance
    );
    if let Some((n, bad, tolerance)) = c.reference {
        s.push_str(&format!(
            ", {}/{n} samples equal the saved outputs ({tolerance:?})",
            n - bad
        ));
    }
    if let Some(m) = &c.first_mismatch {
        s.push_str(&format!(" — {m}"));
    }
    s
}

/// A criterion's number: up to four decimals without trailing zeros, else scientific.
pub(crate) fn fmt_num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e6) {
        format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(status: Status, observed: Option<f64>, reason: Reason) -> CriterionResult {
        CriterionResult {
            key: "min_speedup".into(),
            description: "speed-up".into(),
            direction: Direction::AtLeast,
            threshold: 1.5,
            source: qgate_core::policy::Source::Default,
            observed,
            interval: None,
            status,
            reason,
            slice: None,
        }
    }

    #[test]
    fn each_reason_reads_as_one_sentence() {
        let judged = criterion(
            Status::Fail,
            Some(1.2),
            Reason::Judged {
                classes_over: Vec::new(),
                decision_ci: Some([1.05, 1.35]),
            },
        );
        assert_eq!(
            criterion_message(&judged),
            "speed-up = 1.2 fails ≥ 1.5 (99 % interval [1.05, 1.35])"
        );
        let skipped = criterion(
            Status::Skipped,
            None,
            Reason::Skipped {
                skip: Skip::NoEnergy("no energy meter".into()),
            },
        );
        assert_eq!(criterion_message(&skipped), "skipped: no energy meter");
        let side =
            |bad: u64, reference: Option<(u64, u64, qgate_core::Tolerance)>| OutputCheckCounts {
                batches: 10,
                mismatched: bad,
                tolerance: qgate_core::Tolerance::Exact,
                reference,
                first_mismatch: (bad > 0).then(|| "batch 3".to_string()),
            };
        let same = criterion(
            Status::Fail,
            Some(1.0),
            Reason::SameOutputs {
                baseline: side(0, None),
                candidate: side(2, Some((40, 1, qgate_core::Tolerance::Float32Reordering))),
            },
        );
        assert_eq!(
            criterion_message(&same),
            "baseline: 10/10 timed batches equal an untimed rerun (Exact); candidate: 8/10 timed \
             batches equal an untimed rerun (Exact), 39/40 samples equal the saved outputs \
             (Float32Reordering) — batch 3"
        );
    }

    #[test]
    fn the_margin_in_words_is_the_constant() {
        let s = speed_sentence(1.01, [1.005, 1.02], SpeedVerdict::WithinMargin);
        let pct = qgate_core::latency::LAYOUT_MARGIN * 100.0;
        assert!(
            s.ends_with(&format!("within {pct:.0} %, no material difference")),
            "{s}"
        );
        assert_eq!(
            speed_sentence(f64::NAN, [f64::NAN; 2], SpeedVerdict::Unmeasured),
            "speed-up could not be measured"
        );
    }
}

//! Sentences for people about other crates' typed results. The libraries return what
//! happened (a verdict, a note with its figures); the words are chosen here, once, so the
//! same result reads the same in every report.

use qgate_bench::{MeasurementNote, SpeedVerdict};

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

#[cfg(test)]
mod tests {
    use super::*;

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

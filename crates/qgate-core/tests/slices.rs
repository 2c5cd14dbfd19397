//! Many comparisons, honestly: Holm and Benjamini–Hochberg against statsmodels'
//! `multipletests` (fixtures/slices/reference.json, written by
//! fixtures/gen/slices_reference.py), and simulations through [`compare_slices`] that show
//! what the correction is for — 40 slices without a real difference rarely raise an alarm,
//! and one slice of 500 where 25 samples really flip is found.

use qgate_core::compare::{PairInput, Predicted, Significance};
use qgate_core::slices::compare_slices;
use qgate_core::stats::{bh_adjusted, holm_adjusted, BootstrapSettings, Rng};
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/slices/reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference file")).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn holm_and_bh_equal_statsmodels_multipletests() {
    let r = reference();
    let cases = r["multipletests"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let p = floats(&case["p"]);
        for (got, want, what) in [
            (holm_adjusted(&p), floats(&case["holm"]), "holm"),
            (bh_adjusted(&p), floats(&case["bh"]), "fdr_bh"),
        ] {
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-12, "{what} {p:?}[{i}]: {g} vs {w}");
            }
        }
    }
    // NaN is no test: it stays NaN and does not count in m.
    let h = holm_adjusted(&[0.01, f64::NAN, 0.04]);
    assert!(h[1].is_nan() && (h[0] - 0.02).abs() < 1e-15 && (h[2] - 0.04).abs() < 1e-15);
}

/// One simulated comparison: `sizes.len()` slices of one tag; in every slice each sample is
/// discordant with probability `discordant`, equally often correct→wrong and wrong→correct
/// (no real difference); with `real_flips` > 0, slice 0 instead has exactly that many samples
/// that go correct → wrong and none back. Returns each slice's significance, by slice index.
fn simulate(
    rng: &mut Rng,
    sizes: &[usize],
    discordant: f64,
    real_flips: usize,
) -> Vec<Significance> {
    let n: usize = sizes.iter().sum();
    let labels = vec![0usize; n];
    let ids = qgate_core::Ids::indices(n);
    let (mut base, mut cand) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut tag = Vec::with_capacity(n);
    for (s, &size) in sizes.iter().enumerate() {
        for i in 0..size {
            let (b, c) = if s == 0 && i < real_flips {
                (true, false)
            } else if !(s == 0 && real_flips > 0) && rng.unit() < discordant {
                if rng.unit() < 0.5 {
                    (true, false)
                } else {
                    (false, true)
                }
            } else {
                let ok = rng.unit() < 0.9;
                (ok, ok)
            };
            base.push(Some(if b { 0 } else { 1 }));
            cand.push(Some(if c { 0 } else { 1 }));
            tag.push(Some(format!("s{s:02}")));
        }
    }
    let (pb, pc) = (
        Predicted {
            predictions: base,
            rows: None,
        },
        Predicted {
            predictions: cand,
            rows: None,
        },
    );
    let input = PairInput {
        labels: &labels,
        ids: &ids,
        n_classes: 2,
        top_k: 1,
        class_names: &[],
        baseline: &pb,
        candidate: &pc,
        kl: None,
        top_k_same: None,
        bootstrap: BootstrapSettings {
            resamples: 2,
            confidence: 0.95,
            seed: 1,
        },
        class_recall_drop_pp: f64::INFINITY,
        class_f1_drop_pp: f64::INFINITY,
        alpha: 0.05,
    };
    let slices = compare_slices(&input, &[("region", &tag)], 30);
    let mut out = vec![Significance::NotJudged; sizes.len()];
    for s in slices {
        let k: usize = s.value[1..].parse().expect("index");
        out[k] = s.significance;
    }
    out
}

#[test]
fn forty_slices_without_a_real_difference_keep_family_wise_false_alarms_under_alpha() {
    let mut rng = Rng::new(20261130);
    let runs = 600;
    let (mut holm_alarms, mut bh_alarms) = (0, 0);
    for _ in 0..runs {
        let sizes: Vec<usize> = (0..40).map(|_| 60 + rng.below(240)).collect();
        let sig = simulate(&mut rng, &sizes, 0.06, 0);
        holm_alarms += usize::from(sig.contains(&Significance::SignificantDrop));
        bh_alarms += usize::from(
            sig.iter()
                .any(|s| matches!(s, Significance::SignificantDrop | Significance::FdrDrop)),
        );
    }
    let (holm, bh) = (
        holm_alarms as f64 / runs as f64,
        bh_alarms as f64 / runs as f64,
    );
    eprintln!("40 null slices, {runs} runs: false alarms Holm {holm}, BH {bh}");
    assert!(holm <= 0.05, "Holm family-wise false alarms {holm} > α");
    // With no real difference anywhere every discovery is false, so BH's FDR is its FWER.
    assert!(
        bh <= 0.05,
        "BH false alarms {bh} > α under the complete null"
    );
}

#[test]
fn uncorrected_tests_over_forty_slices_would_raise_false_alarms() {
    // Why the correction: the same null data, each slice tested alone at 5 %.
    let mut rng = Rng::new(7);
    let runs = 200;
    let mut alarms = 0;
    for _ in 0..runs {
        let mut any = false;
        for _ in 0..40 {
            let size = 60 + rng.below(240);
            let (mut neg, mut pos) = (0u64, 0u64);
            for _ in 0..size {
                if rng.unit() < 0.06 {
                    if rng.unit() < 0.5 {
                        neg += 1
                    } else {
                        pos += 1
                    }
                }
            }
            any |= neg > pos && qgate_core::stats::mcnemar_exact(neg, pos) < 0.05;
        }
        alarms += usize::from(any);
    }
    let rate = alarms as f64 / runs as f64;
    eprintln!("40 null slices tested alone: false alarms in {rate} of {runs} runs");
    assert!(rate > 0.2, "uncorrected false alarms {rate}");
}

#[test]
fn one_slice_of_500_with_25_real_flips_is_flagged_among_40() {
    let mut rng = Rng::new(99);
    let runs = 200;
    let mut found = 0;
    let mut others = 0;
    for _ in 0..runs {
        let mut sizes: Vec<usize> = (0..40).map(|_| 60 + rng.below(240)).collect();
        sizes[0] = 500;
        let sig = simulate(&mut rng, &sizes, 0.06, 25);
        if sig[0] == Significance::SignificantDrop {
            found += 1;
        }
        others += sig[1..]
            .iter()
            .filter(|s| **s == Significance::SignificantDrop)
            .count();
    }
    let power = found as f64 / runs as f64;
    eprintln!("25 real flips in a slice of 500 among 40: flagged in {power} of {runs} runs, {others} null slices flagged");
    assert_eq!(found, runs, "the real drop was flagged in {power} of runs");
    assert!(
        (others as f64 / runs as f64) < 0.05,
        "null slices flagged {others} times in {runs} runs"
    );
}

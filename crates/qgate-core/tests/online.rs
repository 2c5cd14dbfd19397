//! The live-traffic statistics against scipy / statsmodels figures and a reference
//! implementation of the mSPRT written by fixtures/gen/online_reference.py, and the
//! simulations that show what the sequential figures are for.

use qgate_core::online::{
    chi_square_gof, newcombe_interval, smoothed_bernoulli_variance, two_proportion_z, welch,
    Moments, Msprt, DEFAULT_MSPRT_TAU,
};
use qgate_core::stats::Rng;
use serde_json::Value;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/online/stats_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("reference file")).expect("json")
}

fn close(got: f64, want: f64, what: &str) {
    let tol = 1e-9 * want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, reference {want}"
    );
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

#[test]
fn chi_square_equals_scipy() {
    for case in reference()["chi_square"].as_array().expect("cases") {
        let t = chi_square_gof(&floats(&case["observed"]), &floats(&case["expected"]));
        close(
            t.statistic,
            case["statistic"].as_f64().expect("f"),
            "statistic",
        );
        close(t.p_value, case["p_value"].as_f64().expect("f"), "p");
    }
}

#[test]
fn two_proportion_test_and_newcombe_equal_statsmodels() {
    for c in reference()["two_proportion"].as_array().expect("cases") {
        let n = |k: &str| c[k].as_u64().expect("count");
        let (x1, n1, x2, n2) = (n("x1"), n("n1"), n("x2"), n("n2"));
        let t = two_proportion_z(x1, n1, x2, n2);
        close(t.statistic, c["z"].as_f64().expect("f"), "z");
        close(t.p_value, c["p_value"].as_f64().expect("f"), "p");
        let ci = newcombe_interval(x1, n1, x2, n2, 0.05);
        let want = floats(&c["newcombe_95"]);
        close(ci[0], want[0], "newcombe low");
        close(ci[1], want[1], "newcombe high");
    }
}

#[test]
fn welch_equals_scipy() {
    for c in reference()["welch"].as_array().expect("cases") {
        let (a, b) = (Moments::of(&floats(&c["a"])), Moments::of(&floats(&c["b"])));
        let w = welch(&a, &b, 0.05);
        close(w.statistic, c["statistic"].as_f64().expect("f"), "t");
        close(w.df, c["df"].as_f64().expect("f"), "df");
        close(w.p_value, c["p_value"].as_f64().expect("f"), "p");
        let want = floats(&c["interval_95"]);
        close(w.interval[0], want[0], "low");
        close(w.interval[1], want[1], "high");
    }
}

#[test]
fn msprt_equals_the_papers_formula() {
    for c in reference()["msprt"].as_array().expect("cases") {
        let mut m = Msprt::new(
            0.0,
            c["tau"].as_f64().expect("tau"),
            c["alpha"].as_f64().expect("alpha"),
        );
        for look in c["looks"].as_array().expect("looks") {
            let f = |k: &str| look[k].as_f64().expect("number");
            m.look(f("theta_hat"), f("variance"), f("sd"));
            close(m.p_value, f("p_value"), "always-valid p");
            let want = floats(&look["interval"]);
            // the reference finds the edges by bisection: equal to ~1e-12
            close(m.interval[0], want[0], "sequence low");
            close(m.interval[1], want[1], "sequence high");
        }
    }
}

/// One simulated A/B stream of 0/1 outcomes, looked at every `step` requests per arm:
/// whether the mSPRT p-value and a fixed-horizon z test ever fell below α.
fn stream(rng: &mut Rng, pa: f64, pb: f64, n: u64, step: u64, alpha: f64) -> (bool, bool) {
    let (mut xa, mut xb) = (0u64, 0u64);
    let mut m = Msprt::new(0.0, DEFAULT_MSPRT_TAU, alpha);
    let mut fixed = false;
    for i in 1..=n {
        xa += u64::from(rng.unit() < pa);
        xb += u64::from(rng.unit() < pb);
        if i % step == 0 {
            let (va, vb) = (
                smoothed_bernoulli_variance(xa, i),
                smoothed_bernoulli_variance(xb, i),
            );
            let theta = xa as f64 / i as f64 - xb as f64 / i as f64;
            m.look(theta, (va + vb) / i as f64, ((va + vb) / 2.0).sqrt());
            fixed |= two_proportion_z(xa, i, xb, i).p_value < alpha;
        }
    }
    (m.p_value < alpha, fixed)
}

#[test]
fn sequential_false_alarms_stay_below_alpha_where_repeated_fixed_tests_do_not() {
    // 500 A/A runs of a 10 % rate, looked at after every 100 requests per arm (20 looks).
    let mut rng = Rng::new(2026);
    let (mut seq, mut fixed) = (0, 0);
    let runs = 500;
    for _ in 0..runs {
        let (s, f) = stream(&mut rng, 0.10, 0.10, 2_000, 100, 0.05);
        seq += usize::from(s);
        fixed += usize::from(f);
    }
    let (seq_rate, fixed_rate) = (seq as f64 / runs as f64, fixed as f64 / runs as f64);
    eprintln!("A/A false alarms over 20 looks: sequential {seq_rate}, fixed-horizon {fixed_rate}");
    assert!(seq_rate <= 0.05, "sequential false alarms {seq_rate}");
    assert!(fixed_rate > 0.1, "fixed-horizon false alarms {fixed_rate}");
}

#[test]
fn a_two_point_drop_in_a_ten_percent_rate_is_found_at_the_documented_sample_size() {
    // docs/analyze.md: 8 000 requests per arm give power ≥ 0.8 with the default τ.
    let mut rng = Rng::new(7);
    let runs = 200;
    let found = (0..runs)
        .filter(|_| stream(&mut rng, 0.10, 0.08, 8_000, 100, 0.05).0)
        .count();
    let power = found as f64 / runs as f64;
    eprintln!("power at 8 000 per arm: {power}");
    assert!(power >= 0.8, "power {power}");
}

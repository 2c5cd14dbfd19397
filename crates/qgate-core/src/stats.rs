//! Statistics: a seeded generator, percentiles, McNemar's exact test, Wilson and paired
//! bootstrap intervals. Pure functions; each cites the method it implements.

/// A small, fast, seeded generator (xoshiro256**, Blackman & Vigna 2018) seeded through
/// SplitMix64, so that every interval qgate reports is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform index in `0..n` (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A Binomial(`n`, `p`) variate, exact: inversion from 0 while the mean is below 10
    /// (Devroye 1986, X.4), else Hörmann's transformed rejection with squeeze, BTRS
    /// (Hörmann 1993, "The generation of binomial random variates"). `p` outside [0, 1]
    /// or NaN counts as 0 or 1, whichever is nearer.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        self.binomial_with(n, p, &[])
    }

    /// [`Rng::binomial`] with `ln_fact[k] = ln k!` for every k ≤ n (else computed).
    fn binomial_with(&mut self, n: u64, p: f64, ln_fact: &[f64]) -> u64 {
        if n == 0 || p.is_nan() || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        if p > 0.5 {
            return n - self.binomial_with(n, 1.0 - p, ln_fact);
        }
        if n as f64 * p < 10.0 {
            self.binomial_inversion(n, p)
        } else {
            self.binomial_btrs(n, p, ln_fact)
        }
    }

    /// Sequential search from 0 with P(x) / P(x − 1) = ((n + 1) / x − 1) · p / q; about
    /// n·p + 1 steps. A uniform left over by rounding past x = n is drawn again.
    fn binomial_inversion(&mut self, n: u64, p: f64) -> u64 {
        let q = 1.0 - p;
        let s = p / q;
        let a = (n as f64 + 1.0) * s;
        let p0 = match i32::try_from(n) {
            Ok(k) => q.powi(k),
            Err(_) => (n as f64 * (-p).ln_1p()).exp(),
        };
        loop {
            let mut u = self.unit();
            let mut px = p0;
            let mut x = 0u64;
            loop {
                if u < px {
                    return x;
                }
                u -= px;
                x += 1;
                if x > n {
                    break;
                }
                px *= a / x as f64 - s;
            }
        }
    }

    /// BTRS for n·p ≥ 10 and p ≤ 1/2: a uniform pair proposes k from the transformed hat;
    /// most are accepted by the squeeze, the rest against the exact log-density ratio.
    fn binomial_btrs(&mut self, n: u64, p: f64, table: &[f64]) -> u64 {
        let nf = n as f64;
        let q = 1.0 - p;
        let spq = (nf * p * q).sqrt();
        let b = 1.15 + 2.53 * spq;
        let a = -0.0873 + 0.0248 * b + 0.01 * p;
        let c = nf * p + 0.5;
        let v_r = 0.92 - 4.2 / b;
        let alpha = (2.83 + 5.1 / b) * spq;
        let m = floor((nf + 1.0) * p);
        let table = if (n as usize) < table.len() {
            table
        } else {
            &[]
        };
        let ln_fact = |k: f64| {
            table
                .get(k as usize)
                .copied()
                .unwrap_or_else(|| libm::lgamma(k + 1.0))
        };
        // Only proposals the squeeze does not accept need these (computed once).
        let mut exact: Option<(f64, f64)> = None;
        loop {
            let u = self.unit() - 0.5;
            let v = self.unit();
            let us = 0.5 - u.abs();
            if us <= 0.0 {
                continue;
            }
            let k = floor((2.0 * a / us + b) * u + c);
            if k < 0.0 || k > nf {
                continue;
            }
            if us >= 0.07 && v <= v_r {
                return k as u64;
            }
            let v = v * alpha / (a / (us * us) + b);
            let (h, lpq) =
                *exact.get_or_insert_with(|| (ln_fact(m) + ln_fact(nf - m), (p / q).ln()));
            if v.ln() <= h - ln_fact(k) - ln_fact(nf - k) + (k - m) * lpq {
                return k as u64;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The q-th percentile (0–100) of `values` with linear interpolation between closest ranks,
/// numpy's default (`method="linear"`, Hyndman & Fan type 7). NaN for an empty slice.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, q)
}

/// [`percentile`] on data already sorted ascending.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    if lo == hi {
        sorted[lo]
    } else {
        sorted[lo] + (sorted[hi] - sorted[lo]) * frac
    }
}

/// [`percentile`] by selection instead of a sort (O(n)); reorders `values`. For the
/// thousands of resamples of a bootstrap.
pub fn percentile_select(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut a, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if frac == 0.0 || above.is_empty() {
        return a;
    }
    // The next value in the same total order as the sort's (NaN last).
    let b = above.iter().copied().min_by(f64::total_cmp).unwrap_or(a);
    a + (b - a) * frac
}

/// Arithmetic mean; NaN when empty.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// McNemar's exact test (McNemar 1947; exact conditional form, Fagerland et al. 2013):
/// two-sided p-value that the discordant counts `b` (baseline right, candidate wrong) and `c`
/// (baseline wrong, candidate right) come from Binomial(b + c, 1/2).
///
/// Equals `scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue`; 1 when there is no
/// discordant pair.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // log pmf(0) = -n ln 2; pmf(i+1) = pmf(i) (n - i) / (i + 1). Summed in log space so that
    // neither tiny terms underflow nor large n loses precision.
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut log_cdf = log_pmf;
    for i in 0..k {
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
        log_cdf = log_add_exp(log_cdf, log_pmf);
    }
    (2.0 * log_cdf.exp()).min(1.0)
}

/// Holm's step-down adjusted p-values (Holm 1979), which keep the family-wise error rate
/// at the level they are compared with: sorted ascending, `p_(i)` becomes
/// `max_{j ≤ i} min(1, (m − j) p_(j))` (0-based `j`). Equals statsmodels'
/// `multipletests(p, method="holm")[1]`. NaN entries are no test: they stay NaN and do not
/// count in `m`.
pub fn holm_adjusted(p: &[f64]) -> Vec<f64> {
    adjust(p, |sorted, m| {
        let mut running: f64 = 0.0;
        sorted
            .iter()
            .enumerate()
            .map(|(j, &q)| {
                running = running.max(((m - j) as f64 * q).min(1.0));
                running
            })
            .collect()
    })
}

/// Benjamini–Hochberg adjusted p-values (1995), which keep the false discovery rate at the
/// level they are compared with: sorted ascending, `p_(i)` becomes
/// `min_{j ≥ i} min(1, m p_(j) / (j + 1))`. Equals statsmodels'
/// `multipletests(p, method="fdr_bh")[1]`. NaN entries stay NaN and do not count in `m`.
pub fn bh_adjusted(p: &[f64]) -> Vec<f64> {
    adjust(p, |sorted, m| {
        let mut out = vec![0.0; sorted.len()];
        let mut running: f64 = 1.0;
        for j in (0..sorted.len()).rev() {
            running = running.min((m as f64 * sorted[j] / (j + 1) as f64).min(1.0));
            out[j] = running;
        }
        out
    })
}

/// Sorts the finite p-values, adjusts them with `rule(sorted, m)` and puts them back.
fn adjust(p: &[f64], rule: impl Fn(&[f64], usize) -> Vec<f64>) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let sorted: Vec<f64> = order.iter().map(|&i| p[i].clamp(0.0, 1.0)).collect();
    let adjusted = rule(&sorted, sorted.len());
    let mut out = vec![f64::NAN; p.len()];
    for (k, &i) in order.iter().enumerate() {
        out[i] = adjusted[k];
    }
    out
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// Wilson score interval (Wilson 1927) of a proportion `successes / n` at the two-sided
/// level given by `z` (1.959964 for 95 %). `(NaN, NaN)` when `n` is 0.
pub fn wilson_interval(successes: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let n = n as f64;
    let p = successes as f64 / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * ((p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// z for a two-sided 95 % interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Settings of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BootstrapSettings {
    /// Number of resamples.
    pub resamples: usize,
    /// Confidence level, e.g. 0.95.
    pub confidence: f64,
    /// Seed of the generator: the same seed gives the same interval.
    pub seed: u64,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        BootstrapSettings {
            resamples: 2000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// Paired percentile bootstrap (Efron & Tibshirani 1993, ch. 13) over samples that have
/// been reduced to a small alphabet of `codes` (e.g. one code per distinct
/// `(label, baseline prediction, candidate prediction)` triple).
///
/// Each resample draws `codes.len()` samples with replacement, counts how often each code
/// was drawn and hands the counts to `statistics`, which returns one value per statistic
/// (its second argument is scratch space, kept from one resample to the next).
/// Drawing n samples uniformly and counting their codes draws the counts from the
/// multinomial distribution with n trials and code probabilities (frequency ÷ n). The
/// counts of codes seen more than 32 times are drawn directly, one binomial per code
/// conditioned on the codes before it (most frequent first); the count left over is spread
/// over the rarer codes by single draws, each picking a code by Walker's alias method
/// (Vose 1991) in O(1). A resample thus costs one binomial per frequent code plus one
/// draw per sample of a rare code, and follows the multinomial exactly. Every
/// resample has its own generator derived from `(seed, resample index)`, so resamples run
/// on all cores and the result does not depend on the number of threads. Returns one
/// `(low, high)` interval per statistic: the `(1 − confidence) / 2` and
/// `(1 + confidence) / 2` percentiles of the resampled values (numpy's linear
/// interpolation, as `scipy.stats.bootstrap(..., method="percentile")`); NaN where there
/// is nothing to resample.
pub fn paired_bootstrap<const S: usize, F>(
    codes: &[u32],
    n_codes: usize,
    settings: BootstrapSettings,
    statistics: F,
) -> [(f64, f64); S]
where
    F: Fn(&[u64], &mut Vec<u64>) -> [f64; S] + Sync,
{
    if codes.is_empty() || settings.resamples == 0 || n_codes == 0 {
        return [(f64::NAN, f64::NAN); S];
    }
    let mut freq = vec![0u64; n_codes];
    for &c in codes {
        freq[c as usize] += 1;
    }
    let n = codes.len();
    let draw = CountDraw::new(&freq, n);
    let resamples = |range: std::ops::Range<usize>| -> Vec<[f64; S]> {
        let mut counts = vec![0u64; n_codes];
        let mut scratch = Vec::new();
        range
            .map(|r| {
                let mut rng =
                    Rng::new(settings.seed ^ (r as u64).wrapping_mul(0xA24B_AED4_963E_E407));
                counts.fill(0);
                draw.fill(&mut rng, &mut counts);
                statistics(&counts, &mut scratch)
            })
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(settings.resamples);
    let values: Vec<[f64; S]> = if threads <= 1 || n * settings.resamples < 1 << 16 {
        resamples(0..settings.resamples)
    } else {
        // The calling thread takes the first share; one spawned thread per other share.
        let chunk = settings.resamples.div_ceil(threads);
        let share = |t: usize| t * chunk..((t + 1) * chunk).min(settings.resamples);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..threads)
                .map(|t| {
                    let resamples = &resamples;
                    scope.spawn(move || resamples(share(t)))
                })
                .collect();
            let mut values = resamples(share(0));
            for h in handles {
                match h.join() {
                    Ok(v) => values.extend(v),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            values
        })
    };
    std::array::from_fn(|k| {
        let [lo, hi] = percentile_interval(
            values.iter().map(|row| row[k]).collect(),
            settings.confidence,
        );
        (lo, hi)
    })
}

/// The central `confidence` interval of resampled values: their `(1 − confidence) / 2` and
/// `(1 + confidence) / 2` percentiles (the percentile bootstrap interval).
pub fn percentile_interval(mut values: Vec<f64>, confidence: f64) -> [f64; 2] {
    let alpha = (1.0 - confidence) / 2.0;
    [
        percentile_select(&mut values, alpha * 100.0),
        percentile_select(&mut values, (1.0 - alpha) * 100.0),
    ]
}

/// How a resample's code counts are drawn: multinomial(n, frequency ÷ n), split in two
/// exact stages. Codes frequent enough to repay a binomial draw get one each, conditioned
/// on those before them (most frequent first); whatever count is left over is spread over
/// the other codes by single draws from an alias table of their frequencies, which is the
/// multinomial of the remainder.
struct CountDraw {
    n: u64,
    /// `(code, frequency)` of the codes drawn by binomials, most frequent first.
    binomials: Vec<(usize, u64)>,
    /// ln k! for k = 0..=n; empty when no code is drawn by a binomial.
    ln_fact: Vec<f64>,
    /// Alias table over the other codes, and the code of each of its slots.
    rest: Alias,
    rest_codes: Vec<u32>,
}

impl CountDraw {
    /// A binomial draw by BTRS costs about as much as 32 alias draws (about 50 ns against
    /// 1.5 ns, measured on an AMD EPYC): codes seen more often than this are drawn by
    /// binomials; each rarer code's samples cost less as alias draws.
    const BINOMIAL_COST: u64 = 32;

    fn new(freq: &[u64], n: usize) -> CountDraw {
        CountDraw::with_cutoff(freq, n, Self::BINOMIAL_COST)
    }

    /// Binomials for the codes seen more than `cutoff` times, alias draws for the rest.
    fn with_cutoff(freq: &[u64], n: usize, cutoff: u64) -> CountDraw {
        let mut binomials: Vec<(usize, u64)> = Vec::new();
        let (mut rest_codes, mut rest_freq) = (Vec::new(), Vec::new());
        for (k, &f) in freq.iter().enumerate().filter(|(_, &f)| f > 0) {
            if f > cutoff {
                binomials.push((k, f));
            } else {
                rest_codes.push(k as u32);
                rest_freq.push(f);
            }
        }
        binomials.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        CountDraw {
            n: n as u64,
            ln_fact: if binomials.is_empty() {
                Vec::new()
            } else {
                ln_factorials(n)
            },
            binomials,
            rest: Alias::new(&rest_freq),
            rest_codes,
        }
    }

    /// Adds one resample's counts to `counts` (zeroed by the caller).
    fn fill(&self, rng: &mut Rng, counts: &mut [u64]) {
        let (mut left, mut mass) = (self.n, self.n);
        for &(k, f) in &self.binomials {
            if left == 0 {
                return;
            }
            let c = if f >= mass {
                left
            } else {
                rng.binomial_with(left, f as f64 / mass as f64, &self.ln_fact)
            };
            counts[k] = c;
            left -= c;
            mass -= f;
        }
        for _ in 0..left {
            counts[self.rest_codes[self.rest.draw(rng)] as usize] += 1;
        }
    }
}

/// ⌊x⌋ for |x| < 2^63 without a libm call (`f64::floor` is one on baseline x86-64);
/// larger values saturate, which BTRS rejects as out of range anyway.
#[inline]
fn floor(x: f64) -> f64 {
    let t = x as i64 as f64;
    if t > x {
        t - 1.0
    } else {
        t
    }
}

/// `ln k!` for k = 0..=n, by running sums of logarithms.
fn ln_factorials(n: usize) -> Vec<f64> {
    std::iter::once(0.0)
        .chain((1..=n).scan(0.0, |sum, k| {
            *sum += (k as f64).ln();
            Some(*sum)
        }))
        .collect()
}

/// Walker/Vose alias table: draws index `i` with probability `weights[i] / Σ weights`.
/// Each slot packs its acceptance threshold (a 32-bit fraction) and its alias, so a draw
/// costs one random word and one table read.
struct Alias {
    slots: Vec<(u32, u32)>,
}

impl Alias {
    fn new(weights: &[u64]) -> Alias {
        let k = weights.len();
        let total: u64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights
            .iter()
            .map(|&w| w as f64 * k as f64 / total as f64)
            .collect();
        let mut prob = vec![1.0; k];
        let mut alias: Vec<usize> = (0..k).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..k).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // What is left has probability 1 up to rounding and is its own alias: always `i`.
        let slots = prob
            .iter()
            .zip(&alias)
            .map(|(&p, &a)| ((p.min(1.0) * 4_294_967_296.0) as u32, a as u32))
            .collect();
        Alias { slots }
    }

    #[inline]
    fn draw(&self, rng: &mut Rng) -> usize {
        // Lemire: the high half of r·k is a uniform slot; the low half's top bits are a
        // uniform fraction, independent of the slot up to 2^-32.
        let m = rng.next_u64() as u128 * self.slots.len() as u128;
        let i = (m >> 64) as usize;
        let frac = ((m as u64) >> 32) as u32;
        let (threshold, alias) = self.slots[i];
        // Branch-free: the choice is a coin flip the predictor cannot learn.
        let to_alias = ((frac >= threshold) as usize).wrapping_neg();
        i ^ ((i ^ alias as usize) & to_alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_gives_the_sorted_percentile() {
        let mut rng = Rng::new(3);
        for n in [1usize, 2, 7, 100, 1001] {
            let v: Vec<f64> = (0..n).map(|_| rng.unit()).collect();
            for q in [0.0, 2.5, 50.0, 90.0, 97.5, 99.0, 100.0] {
                let mut w = v.clone();
                assert_eq!(
                    percentile_select(&mut w, q),
                    percentile(&v, q),
                    "n {n} q {q}"
                );
            }
        }
        // Ties and NaN (sorted last) select what the sort gives, bit for bit.
        let v = vec![0.5, f64::NAN, 0.25, 0.5, -0.0, 0.0, f64::NAN, 0.75];
        for q in [0.0, 10.0, 50.0, 70.0, 80.0, 100.0] {
            let (a, b) = (percentile_select(&mut v.clone(), q), percentile(&v, q));
            assert!(a.to_bits() == b.to_bits(), "q {q}: {a} against {b}");
        }
        let interval = percentile_interval(v.clone(), 0.5);
        assert_eq!(
            interval.map(f64::to_bits),
            [25.0, 75.0].map(|q| percentile(&v, q).to_bits())
        );
    }

    #[test]
    fn mcnemar_matches_hand_computed_binomial() {
        // b=1, c=5: 2 * (1 + 6) / 64 = 0.21875
        assert!((mcnemar_exact(1, 5) - 0.21875).abs() < 1e-15);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // b=0, c=10: 2 / 1024
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-15);
    }

    #[test]
    fn mcnemar_is_stable_for_large_counts() {
        let p = mcnemar_exact(50_000, 50_000);
        assert_eq!(p, 1.0);
        let p = mcnemar_exact(49_000, 51_000);
        assert!(p > 0.0 && p < 1e-9, "{p}");
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 25) == 1.75
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 25.0), 1.75);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }

    #[test]
    fn wilson_interval_known_value() {
        // 8 of 10: statsmodels proportion_confint(8, 10, method="wilson")
        let (lo, hi) = wilson_interval(8, 10, Z_95);
        assert!((lo - 0.490_162_1).abs() < 1e-6, "{lo}");
        assert!((hi - 0.943_317_8).abs() < 1e-6, "{hi}");
    }

    #[test]
    fn alias_draws_follow_the_weights() {
        let alias = Alias::new(&[1, 0, 3]);
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..40_000 {
            counts[alias.draw(&mut rng)] += 1;
        }
        assert_eq!(counts[1], 0);
        // expected 10 000 / 30 000; sd ≈ 87
        assert!((counts[0] as i64 - 10_000).abs() < 500, "{counts:?}");
    }

    /// Pearson's χ² of `draws` variates of Binomial(n, p) against statrs' pmf, cells
    /// merged until each expects at least 5; passes below the 1 − 1e-6 quantile. With
    /// `table`, ln k! comes from a table as in the bootstrap, else from lgamma.
    fn assert_binomial(n: u64, p: f64, draws: usize, seed: u64, table: bool) {
        use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, Discrete};
        let mut rng = Rng::new(seed);
        let ln_fact = if table {
            ln_factorials(n as usize)
        } else {
            Vec::new()
        };
        let mut seen = vec![0u64; n as usize + 1];
        let mut sum = 0.0;
        for _ in 0..draws {
            let k = rng.binomial_with(n, p, &ln_fact);
            assert!(k <= n, "Binomial({n}, {p}) gave {k}");
            seen[k as usize] += 1;
            sum += k as f64;
        }
        let pmf = Binomial::new(p, n).unwrap();
        let (mut chi2, mut cells) = (0.0, 0usize);
        let (mut obs, mut exp) = (0.0, 0.0);
        for k in 0..=n {
            obs += seen[k as usize] as f64;
            exp += pmf.pmf(k) * draws as f64;
            if exp >= 5.0 {
                chi2 += (obs - exp) * (obs - exp) / exp;
                cells += 1;
                (obs, exp) = (0.0, 0.0);
            }
        }
        if exp > 0.0 || obs > 0.0 {
            chi2 += (obs - exp) * (obs - exp) / exp.max(1e-300);
            cells += 1;
        }
        let limit = ChiSquared::new((cells.max(2) - 1) as f64)
            .unwrap()
            .inverse_cdf(1.0 - 1e-6);
        assert!(
            chi2 < limit,
            "Binomial({n}, {p}): chi2 {chi2:.1} over {cells} cells, limit {limit:.1}"
        );
        let mean = sum / draws as f64;
        let se = (n as f64 * p * (1.0 - p) / draws as f64).sqrt();
        assert!(
            (mean - n as f64 * p).abs() < 6.0 * se + 1e-12,
            "{n} {p}: mean {mean}"
        );
    }

    #[test]
    fn binomial_variates_follow_the_binomial_pmf() {
        // Inversion (mean < 10), BTRS (mean ≥ 10), and p > 1/2 through n − Binomial(n, 1 − p).
        for (i, &(n, p)) in [
            (1u64, 0.5),
            (5, 0.3),
            (40, 0.2),
            (50_000, 0.0001),
            (100, 0.3),
            (540, 0.5),
            (1000, 0.02),
            (50_000, 0.37),
            (540, 0.97),
            (3, 0.999),
        ]
        .iter()
        .enumerate()
        {
            assert_binomial(n, p, 200_000, 11 + i as u64, false);
            assert_binomial(n, p, 200_000, 31 + i as u64, true);
        }
        let mut rng = Rng::new(1);
        assert_eq!(rng.binomial(0, 0.5), 0);
        assert_eq!(rng.binomial(9, 0.0), 0);
        assert_eq!(rng.binomial(9, 1.0), 9);
        assert_eq!(rng.binomial(9, f64::NAN), 0);
    }

    /// Every split between binomials and alias draws gives counts with the multinomial's
    /// moments: E = n·p, Var = n·p·(1 − p), Cov = −n·p·q, and the counts sum to n.
    #[test]
    fn count_draws_follow_the_multinomial() {
        let freq = [400u64, 100, 0, 60, 13, 12, 5, 3, 3, 2, 1, 1];
        let n: u64 = freq.iter().sum();
        let draws = 40_000;
        // All binomials, the default split (codes above 32), all alias draws.
        for cutoff in [0, CountDraw::BINOMIAL_COST, u64::MAX] {
            let draw = CountDraw::with_cutoff(&freq, n as usize, cutoff);
            assert_eq!(
                draw.binomials.len(),
                freq.iter().filter(|&&f| f > cutoff && f > 0).count()
            );
            let mut rng = Rng::new(5 + cutoff % 97);
            let samples: Vec<Vec<u64>> = (0..draws)
                .map(|_| {
                    let mut counts = vec![0u64; freq.len()];
                    draw.fill(&mut rng, &mut counts);
                    assert_eq!(counts.iter().sum::<u64>(), n);
                    counts
                })
                .collect();
            let mean = |k: usize| samples.iter().map(|c| c[k] as f64).sum::<f64>() / draws as f64;
            let cov = |j: usize, k: usize| {
                let (mj, mk) = (mean(j), mean(k));
                samples
                    .iter()
                    .map(|c| (c[j] as f64 - mj) * (c[k] as f64 - mk))
                    .sum::<f64>()
                    / (draws - 1) as f64
            };
            let p = |k: usize| freq[k] as f64 / n as f64;
            for k in 0..freq.len() {
                let var = n as f64 * p(k) * (1.0 - p(k));
                let se = (var / draws as f64).sqrt();
                assert!(
                    (mean(k) - n as f64 * p(k)).abs() <= 5.0 * se + 1e-12,
                    "cutoff {cutoff}, code {k}: mean {} against {}",
                    mean(k),
                    n as f64 * p(k)
                );
                if var > 0.0 {
                    assert!(
                        (cov(k, k) / var - 1.0).abs() < 0.05,
                        "cutoff {cutoff}, code {k}: variance {} against {var}",
                        cov(k, k)
                    );
                }
            }
            for (j, k) in [(0, 1), (1, 4), (3, 6), (7, 8)] {
                let want = -(n as f64) * p(j) * p(k);
                let var = |k: usize| n as f64 * p(k) * (1.0 - p(k));
                let se = (var(j) * var(k) / draws as f64).sqrt();
                assert!(
                    (cov(j, k) - want).abs() <= 5.0 * se,
                    "cutoff {cutoff}, codes {j} and {k}: covariance {} against {want}",
                    cov(j, k)
                );
            }
        }
    }

    /// The default split and all-alias draws give the same bootstrap interval up to
    /// Monte-Carlo error, and its half-width is the normal one.
    #[test]
    fn split_and_alias_draws_give_the_same_bootstrap() {
        // 3 codes: correct on both, baseline only, candidate only.
        let codes: Vec<u32> = (0..600).map(|i| [0, 0, 0, 0, 1, 2][i % 6]).collect();
        let stat = |c: &[u64], _: &mut Vec<u64>| {
            [(c[2] as f64 - c[1] as f64) / c.iter().sum::<u64>() as f64]
        };
        let s = BootstrapSettings {
            resamples: 20_000,
            confidence: 0.95,
            seed: 3,
        };
        let freq = [400u64, 100, 100];
        let split = paired_bootstrap(&codes, 3, s, stat)[0];
        let alias = {
            let draw = CountDraw::with_cutoff(&freq, 600, u64::MAX);
            let values: Vec<f64> = (0..20_000)
                .map(|r| {
                    let mut rng = Rng::new(99 + r as u64);
                    let mut counts = vec![0u64; 3];
                    draw.fill(&mut rng, &mut counts);
                    stat(&counts, &mut Vec::new())[0]
                })
                .collect();
            percentile_interval(values, 0.95)
        };
        // Exact: ±1.96·sqrt(Var(d)/n) with Var(d) = 2/6 − 0 → half-width 0.0462.
        for (b, a) in [split.0, split.1].iter().zip(alias) {
            assert!((b - a).abs() < 0.004, "split {split:?}, alias {a}");
        }
        assert!(
            ((split.1 - split.0) / 2.0 - 0.0462).abs() < 0.003,
            "{split:?}"
        );
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_and_is_reproducible() {
        let codes: Vec<u32> = (0..1000).map(|i| (i % 4 == 0) as u32).collect();
        let stat = |c: &[u64], _: &mut Vec<u64>| [c[1] as f64 / (c[0] + c[1]) as f64];
        let s = BootstrapSettings {
            resamples: 500,
            confidence: 0.95,
            seed: 7,
        };
        let a = paired_bootstrap(&codes, 2, s, stat);
        let b = paired_bootstrap(&codes, 2, s, stat);
        assert_eq!(a, b);
        let (lo, hi) = a[0];
        assert!(lo < 0.25 && 0.25 < hi, "{lo} {hi}");
        // normal approximation half-width: 1.96 * sqrt(.25*.75/1000) = 0.0268
        assert!(((hi - lo) / 2.0 - 0.0268).abs() < 0.005, "{lo} {hi}");
    }
}

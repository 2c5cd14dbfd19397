//! Time sources. Measurement reads time only through [`Clock`], so tests can replace the
//! machine's clock with a [`FakeClock`] that a mock model advances by known latencies (as
//! hyperfine tests its statistics with a mock executor).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A monotonic time source.
pub trait Clock: Send + Sync {
    /// Time since an arbitrary origin.
    fn now(&self) -> Duration;
    /// Returns once `now() >= t`.
    fn sleep_until(&self, t: Duration);
}

/// The machine's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep_until(&self, t: Duration) {
        loop {
            let now = self.now();
            if now >= t {
                return;
            }
            let left = t - now;
            // The OS oversleeps by up to a scheduler tick; sleep short of the target and
            // spin the rest so open-loop arrivals keep their schedule.
            if left > Duration::from_micros(1500) {
                std::thread::sleep(left - Duration::from_millis(1));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// A clock that moves only when told to: tests advance it from a mock model by the
/// latency they want measured.
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
}

impl FakeClock {
    /// A fake clock at zero.
    pub fn new() -> FakeClock {
        FakeClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.nanos
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, t: Duration) {
        self.nanos
            .fetch_max(t.as_nanos().min(u64::MAX as u128) as u64, Ordering::SeqCst);
    }
}

/// What reading the clock costs: the overhead every latency figure carries once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimerOverhead {
    /// Mean cost of one clock read, nanoseconds.
    pub read_ns: f64,
    /// Smallest non-zero difference between two consecutive reads, nanoseconds.
    pub resolution_ns: f64,
}

/// Measures [`TimerOverhead`] with 20 000 back-to-back reads.
pub fn timer_overhead(clock: &dyn Clock) -> TimerOverhead {
    const N: usize = 20_000;
    let mut reads = Vec::with_capacity(N);
    for _ in 0..N {
        reads.push(clock.now());
    }
    let total = reads[N - 1].saturating_sub(reads[0]);
    let resolution = reads
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or_default();
    TimerOverhead {
        read_ns: total.as_nanos() as f64 / (N - 1) as f64,
        resolution_ns: resolution.as_nanos() as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::new();
        assert_eq!(c.now(), Duration::ZERO);
        c.advance(Duration::from_millis(3));
        c.sleep_until(Duration::from_millis(2));
        assert_eq!(c.now(), Duration::from_millis(3));
        c.sleep_until(Duration::from_millis(5));
        assert_eq!(c.now(), Duration::from_millis(5));
    }

    #[test]
    fn system_clock_sleeps_until_the_target() {
        let c = SystemClock::new();
        let t = c.now() + Duration::from_millis(5);
        c.sleep_until(t);
        assert!(c.now() >= t);
        let o = timer_overhead(&c);
        assert!(o.read_ns > 0.0 && o.read_ns < 1e6, "{o:?}");
    }
}

//! A host's clock, which may run fast or slow against simulated time: the engine's hosts
//! read it, and the turmoil runs give cplbd's driver the same clock, so a drifting node
//! times out at the same instant under both drivers.

use core::time::Duration;

use cplb_core::time::Instant;

/// Local time as a linear function of simulated time, from its last change of rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    base_sim: Instant,
    base_local: Instant,
    rate: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::exact()
    }
}

impl Clock {
    /// Reads simulated time.
    pub fn exact() -> Self {
        Self { base_sim: Instant::ZERO, base_local: Instant::ZERO, rate: 1.0 }
    }

    /// The local reading at simulated time `t`.
    pub fn local(&self, t: Instant) -> Instant {
        let elapsed = t.saturating_duration_since(self.base_sim);
        if self.rate == 1.0 {
            return self.base_local + elapsed;
        }
        self.base_local + Duration::from_nanos((elapsed.as_nanos() as f64 * self.rate) as u64)
    }

    /// The first simulated time at which the local clock reads at least `local`.
    pub fn sim(&self, local: Instant) -> Instant {
        let ahead = local.saturating_duration_since(self.base_local);
        if self.rate == 1.0 {
            return self.base_sim + ahead;
        }
        let mut t = self.base_sim
            + Duration::from_nanos((ahead.as_nanos() as f64 / self.rate).ceil() as u64);
        while self.local(t) < local {
            t += Duration::from_nanos(1);
        }
        t
    }

    /// From simulated time `now` on, runs `ppm` parts per million fast (negative: slow),
    /// continuous at `now`.
    pub fn set_drift(&mut self, now: Instant, ppm: f64) {
        let local = self.local(now);
        *self = Self { base_sim: now, base_local: local, rate: 1.0 + ppm / 1e6 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_clock_converts_both_ways() {
        let mut c = Clock::exact();
        c.set_drift(Instant::from_secs(10), 100_000.0); // 10% fast
        assert_eq!(c.local(Instant::from_secs(10)), Instant::from_secs(10));
        assert_eq!(c.local(Instant::from_secs(20)), Instant::from_secs(21));
        let wake = c.sim(Instant::from_secs(21));
        assert!(c.local(wake) >= Instant::from_secs(21) && wake <= Instant::from_secs(20));
        c.set_drift(Instant::from_secs(20), -100_000.0); // then 10% slow
        assert_eq!(c.local(Instant::from_secs(30)), Instant::from_secs(30));
    }
}

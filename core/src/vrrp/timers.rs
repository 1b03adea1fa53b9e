//! The timers of one instance, as data: the driver sleeps, the core only records deadlines.

use core::time::Duration;

use super::advertisement::{Priority, Version};
use crate::time::Instant;

/// Nanoseconds in a centisecond.
const CS: u64 = 10_000_000;

/// RFC 9568 §6.1 Skew_Time: `((256 - priority) × Active_Adver_Interval) / 256`; VRRPv2
/// counts it in seconds (RFC 3768 §6.1), whatever the interval.
pub fn skew_time(version: Version, master_interval_cs: u16, priority: Priority) -> Duration {
    let cs = match version {
        Version::V2 => 100,
        Version::V3 => u64::from(master_interval_cs),
    };
    Duration::from_nanos((256 - u64::from(priority.0)) * cs * CS / 256)
}

/// RFC 9568 §6.1 Active_Down_Interval: `3 × Active_Adver_Interval + Skew_Time`.
pub fn master_down_interval(
    version: Version,
    master_interval_cs: u16,
    priority: Priority,
) -> Duration {
    Duration::from_nanos(3 * u64::from(master_interval_cs) * CS)
        + skew_time(version, master_interval_cs, priority)
}

/// Every timer an instance can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// Master: time to send the next advertisement (RFC 9568 Adver_Timer).
    Adver,
    /// Backup: the master is presumed down when this fires (RFC 9568 Active_Down_Timer).
    MasterDown,
    /// Master: the delayed second announcement burst.
    AnnounceRepeat,
    /// Master: the periodic announcement refresh.
    AnnounceRefresh,
    /// Master: the follow-up burst after winning a contention.
    ContentionAnnounce,
}

const ALL: [Timer; 5] = [
    Timer::Adver,
    Timer::MasterDown,
    Timer::AnnounceRepeat,
    Timer::AnnounceRefresh,
    Timer::ContentionAnnounce,
];

/// Deadlines by timer; a spurious expiry check does nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; ALL.len()],
}

// Indexing by `Timer as usize` is in bounds: the array has one slot per variant.
#[allow(clippy::indexing_slicing)]
impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = Default::default();
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    /// The earliest deadline and its timer.
    pub(crate) fn next(&self) -> Option<(Instant, Timer)> {
        ALL.iter().filter_map(|&t| self.get(t).map(|at| (at, t))).min()
    }

    /// Removes and returns the earliest timer due at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let (at, timer) = self.next()?;
        (at <= now).then(|| {
            self.stop(timer);
            timer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_expired_timers_in_deadline_order() {
        let mut t = TimerTable::default();
        t.set(Timer::MasterDown, Instant::from_millis(30));
        t.set(Timer::Adver, Instant::from_millis(20));
        t.set(Timer::AnnounceRepeat, Instant::from_millis(50));
        let now = Instant::from_millis(40);
        assert_eq!(t.pop_expired(now), Some(Timer::Adver));
        assert_eq!(t.pop_expired(now), Some(Timer::MasterDown));
        assert_eq!(t.pop_expired(now), None);
        assert_eq!(t.next(), Some((Instant::from_millis(50), Timer::AnnounceRepeat)));
    }
}

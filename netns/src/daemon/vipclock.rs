//! How long takeovers took and how long the VIP was held by nobody, as this node sees it.
//!
//! The core keeps no timestamps of adverts; the driver shows [`VipClock`] the router after
//! each round ([`VipClock::observe`]) and it notes, per instance, when an advert was last
//! accepted (the counter moved), when this node took over or let go, and when a master
//! resigned. Time comes from the driver's clock, as everything the core sees.
//!
//! What is counted:
//! - a **takeover** (this node becomes master from backup) took the time from the last
//!   advert this node accepted (the old master's, or its priority-0 resignation) to
//!   becoming master; a first election with no master ever heard is no takeover;
//! - the VIP was **unheld** from the moment it is known to be free (this node let it go
//!   without another master being heard at once, or the master resigned) to this node's
//!   takeover or the first advert of a master; and when a master just went silent, from its
//!   last advert less one advertisement interval (it may have held the VIP that long after
//!   its last advert) to this node's takeover or the first advert of a new master. Time in
//!   fault or initialize is not counted (this node hears nobody then), nor the start-up
//!   before the first master is heard.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use cplb_core::node::Node;
use cplb_core::time::Instant;
use cplb_core::vrrp::{InstanceId, State};

use crate::status::HistogramStatus;

/// Upper bounds of the takeover histogram in seconds. A backup takes over Skew_Time
/// (under 1 s) after a resignation and Master_Down_Interval (3 to 4 advertisement
/// intervals, 3 to 4 s at k0s's 1 s) after the master's last advert.
pub const TAKEOVER_BUCKETS: [f64; 12] =
    [0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 10.0, 30.0, 60.0];

/// Takeover times and unheld time per instance.
#[derive(Debug, Default)]
pub struct VipClock {
    instances: BTreeMap<InstanceId, Track>,
}

impl VipClock {
    /// Looks at every instance of the node now (after a round of the driver).
    pub fn observe(&mut self, now: Instant, node: &Node) {
        let router = node.router();
        for (id, config) in node.instances() {
            let (Some(state), Some(stats)) = (router.state(id), router.stats(id)) else {
                continue;
            };
            let seen = Seen {
                state,
                master: router.master(id),
                adverts: stats.adverts_received,
                resignations: stats.priority_zero_received,
                interval: Duration::from_millis(u64::from(config.advert_interval_cs) * 10),
            };
            self.instances.entry(id).or_default().update(now, seen);
        }
        if self.instances.len() > node.instances().count() {
            self.instances.retain(|id, _| router.state(*id).is_some());
        }
    }

    /// The takeovers of an instance.
    pub fn takeovers(&self, id: InstanceId) -> HistogramStatus {
        self.instances.get(&id).map_or_else(Track::empty_histogram, |t| t.takeovers.clone())
    }

    /// Seconds the VIP of an instance was held by nobody.
    pub fn unheld_s(&self, id: InstanceId) -> f64 {
        self.instances.get(&id).map_or(0.0, |t| t.unheld.as_secs_f64())
    }
}

/// What the router shows of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    state: State,
    master: Option<IpAddr>,
    adverts: u64,
    resignations: u64,
    interval: Duration,
}

#[derive(Debug)]
struct Track {
    seen: Option<Seen>,
    /// The last advert accepted while not master.
    last_heard: Option<Instant>,
    /// Since when the VIP is known to be free.
    free_since: Option<Instant>,
    takeovers: HistogramStatus,
    unheld: Duration,
}

impl Default for Track {
    fn default() -> Self {
        Self {
            seen: None,
            last_heard: None,
            free_since: None,
            takeovers: Self::empty_histogram(),
            unheld: Duration::ZERO,
        }
    }
}

impl Track {
    fn empty_histogram() -> HistogramStatus {
        HistogramStatus::new(&TAKEOVER_BUCKETS)
    }

    fn update(&mut self, now: Instant, seen: Seen) {
        let Some(prev) = self.seen.replace(seen) else { return };
        let resigned = seen.resignations > prev.resignations;
        let heard = seen.adverts > prev.adverts || resigned;
        if matches!(seen.state, State::Fault | State::Initialize) {
            // Deaf: what happens meanwhile is not this node's to tell.
            self.last_heard = None;
            self.free_since = None;
            return;
        }
        match (prev.state == State::Master, seen.state == State::Master) {
            (false, true) => {
                if let Some(t) = self.last_heard {
                    self.takeovers.observe(now.saturating_duration_since(t).as_secs_f64());
                }
                self.close_gap(now, seen.interval);
            }
            (true, false) => {
                if heard && !resigned && seen.master.is_some() {
                    // A better master's advert made this one step back: it holds the VIP.
                    self.last_heard = Some(now);
                } else {
                    self.free_since = Some(now);
                    self.last_heard = None;
                }
            }
            (false, false) if heard => {
                if resigned {
                    self.free_since.get_or_insert(now);
                } else if self.free_since.is_some()
                    || (prev.master.is_some() && seen.master != prev.master)
                {
                    self.close_gap(now, seen.interval);
                }
                self.last_heard = Some(now);
            }
            _ => {}
        }
    }

    /// Someone holds the VIP again (this node, or the master just heard).
    fn close_gap(&mut self, now: Instant, interval: Duration) {
        let gap = match (self.free_since.take(), self.last_heard.take()) {
            (Some(t), _) => now.saturating_duration_since(t),
            (None, Some(t)) => now.saturating_duration_since(t).saturating_sub(interval),
            (None, None) => Duration::ZERO,
        };
        self.unheld += gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    /// Drives one track through (time in ms, state, master, adverts, resignations).
    fn run(steps: &[(u64, State, Option<IpAddr>, u64, u64)]) -> Track {
        let mut t = Track::default();
        for &(ms, state, master, adverts, resignations) in steps {
            t.update(at(ms), Seen { state, master, adverts, resignations, interval: SECOND });
        }
        t
    }

    #[test]
    fn a_takeover_after_the_master_went_silent_counts_from_its_last_advert() {
        use State::*;
        let t = run(&[
            (0, Backup, None, 0, 0),
            // Start-up: the master is heard; no gap before it is counted.
            (500, Backup, ip(1), 1, 0),
            (1500, Backup, ip(1), 2, 0),
            // Silence, then Master_Down_Interval later this node takes over.
            (4719, Master, ip(2), 2, 0),
        ]);
        assert_eq!(t.takeovers.count, 1);
        assert!((t.takeovers.sum - 3.219).abs() < 1e-9, "{}", t.takeovers.sum);
        assert_eq!(t.takeovers.counts[TAKEOVER_BUCKETS.iter().position(|b| *b == 3.5).unwrap()], 1);
        // Less one advertisement interval: the master may have held the VIP that long.
        assert_eq!(t.unheld, Duration::from_millis(2219));
    }

    #[test]
    fn a_resignation_counts_in_full_and_a_first_election_is_no_takeover() {
        use State::*;
        let t = run(&[
            (0, Backup, None, 0, 0),
            // No master heard: the first election is not a takeover.
            (3219, Master, ip(2), 0, 0),
            // A better master preempts: it holds the VIP at once.
            (5000, Backup, ip(1), 1, 0),
            (6000, Backup, ip(1), 2, 0),
            // It resigns; this node takes over Skew_Time later.
            (7000, Backup, None, 3, 1),
            (7219, Master, ip(2), 3, 1),
        ]);
        assert_eq!(t.takeovers.count, 1);
        assert!((t.takeovers.sum - 0.219).abs() < 1e-9, "{}", t.takeovers.sum);
        assert_eq!(t.unheld, Duration::from_millis(219));
    }

    #[test]
    fn a_new_master_after_silence_and_deaf_time_are_counted_as_described() {
        use State::*;
        let t = run(&[
            (0, Backup, ip(1), 0, 0),
            (1000, Backup, ip(1), 1, 0),
            // Another backup took over 3.2 s after the master's last advert.
            (4200, Backup, ip(3), 2, 0),
            (5200, Backup, ip(3), 3, 0),
            // In fault nothing is counted, and after it neither.
            (6000, Fault, ip(3), 3, 0),
            (60_000, Backup, ip(3), 3, 0),
            (61_000, Backup, ip(1), 4, 0),
        ]);
        assert_eq!(t.takeovers.count, 0);
        assert_eq!(t.unheld, Duration::from_millis(2200));
    }

    #[test]
    fn letting_the_vip_go_counts_until_a_master_is_heard() {
        use State::*;
        let t = run(&[
            (0, Backup, None, 0, 0),
            (3000, Master, ip(2), 0, 0),
            // Its tracker fails: it steps back without anyone else advertising yet.
            (10_000, Backup, None, 0, 0),
            (13_300, Backup, ip(1), 1, 0),
        ]);
        assert_eq!(t.unheld, Duration::from_millis(3300));
    }
}

//! Which changes of master count as failovers, and when each was over: one rule for every
//! driver (the engine, and cplbd's own code under turmoil), fed with state changes, client
//! answers and the passing of time.
//!
//! A failover is a change from the settled master (one that held for a
//! Master_Down_Interval, or served a client) to a new sole master. Simultaneous takeovers
//! that resolve by contention count as one failover, to the winner; the old master back
//! before the new one served anyone is no failover at all.

use core::time::Duration;
use std::collections::BTreeSet;

use cplb_core::time::Instant;

use crate::outcome::Failover;

/// The masters of one instance.
#[derive(Debug, Clone, Default)]
struct Track {
    masters: BTreeSet<usize>,
    sole: Option<usize>,
    /// When the current sole master became one.
    sole_at: Instant,
    /// The last master that held for a Master_Down_Interval or served a client.
    settled: Option<usize>,
    master_down: Duration,
}

/// Every instance's masters and the failovers so far.
#[derive(Debug, Clone, Default)]
pub struct Failovers {
    tracks: Vec<Track>,
    list: Vec<Failover>,
}

impl Failovers {
    /// One instance per Master_Down_Interval given.
    pub fn new(master_downs: impl IntoIterator<Item = Duration>) -> Self {
        let tracks = master_downs
            .into_iter()
            .map(|master_down| Track { master_down, ..Track::default() })
            .collect();
        Self { tracks, list: Vec::new() }
    }

    /// Host `host` became master of `inst` (or stopped being one) at `now`.
    pub fn master_changed(
        &mut self,
        now: Instant,
        inst: usize,
        host: usize,
        is_master: bool,
        last_fault_at: Option<Instant>,
    ) {
        let Some(track) = self.tracks.get_mut(inst) else { return };
        if is_master {
            track.masters.insert(host);
        } else {
            track.masters.remove(&host);
        }
        let [new] = track.masters.iter().copied().collect::<Vec<_>>()[..] else {
            return;
        };
        if Some(new) == track.sole {
            return;
        }
        track.sole = Some(new);
        track.sole_at = now;
        let pending = self.list.iter().rposition(|f| {
            f.instance == inst && f.vip_answering_at.is_none() && track.settled != Some(f.to)
        });
        match (pending, track.settled) {
            (Some(i), Some(settled)) if settled == new => {
                self.list.remove(i);
            }
            (Some(i), _) => {
                if let Some(f) = self.list.get_mut(i) {
                    f.to = new;
                    f.new_master_at = now;
                }
            }
            (None, Some(from)) if from != new => self.list.push(Failover {
                instance: inst,
                from,
                to: new,
                fault_at: last_fault_at,
                new_master_at: now,
                vip_answering_at: None,
            }),
            _ => {}
        }
    }

    /// A client was answered through `via`, the master of `inst`, at `now`.
    pub fn answered(&mut self, now: Instant, inst: usize, via: usize) {
        if let Some(f) = self.list.iter_mut().rev().find(|f| f.instance == inst)
            && f.to == via
            && f.vip_answering_at.is_none()
            && now >= f.new_master_at
        {
            f.vip_answering_at = Some(now);
            if let Some(t) = self.tracks.get_mut(inst) {
                t.settled = Some(via);
            }
        }
    }

    /// Time passed: a sole master that held for a Master_Down_Interval is settled.
    pub fn settle(&mut self, now: Instant) {
        for t in &mut self.tracks {
            if t.masters.len() == 1 && t.sole.is_some() && now >= t.sole_at + t.master_down {
                t.settled = t.sole;
            }
        }
    }

    /// The masters of `inst` now.
    pub fn masters(&self, inst: usize) -> &BTreeSet<usize> {
        static NONE: BTreeSet<usize> = BTreeSet::new();
        self.tracks.get(inst).map_or(&NONE, |t| &t.masters)
    }

    /// The failovers, reported with host names.
    pub fn reports(&self, names: &[String]) -> Vec<crate::FailoverReport> {
        self.list.iter().map(|f| f.report(names)).collect()
    }
}

/// The groups of `members` that can talk to each other (directly or through another
/// member), by `connected`; each group sorted.
pub fn components(members: &[usize], connected: impl Fn(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &m in members {
        let joined: Vec<usize> =
            (0..groups.len()).filter(|&g| groups[g].iter().any(|&o| connected(m, o))).collect();
        let mut merged = vec![m];
        for g in joined.iter().rev() {
            merged.extend(groups.remove(*g));
        }
        merged.sort_unstable();
        groups.push(merged);
    }
    groups
}

//! The segment's state as the faults leave it: which hosts are powered, whose link is up,
//! partitions and one-way cuts, loss, delay and duplication. Both drivers carry it out (the
//! engine delivers frames by it, the turmoil runner sets turmoil's links by it) and the
//! checker reads it to know who can hear whom.

use core::time::Duration;
use std::collections::BTreeSet;

use crate::spec::Fault;

/// The segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    powered: Vec<bool>,
    link_up: Vec<bool>,
    /// Partition group of each host; equal groups can talk.
    group: Vec<usize>,
    /// One-way cuts `(from, to)`.
    cuts: BTreeSet<(usize, usize)>,
    loss: f64,
    delay: Option<(Duration, Duration)>,
    duplicate: f64,
}

impl Network {
    /// `hosts` hosts, powered, links up, nothing cut.
    pub fn new(hosts: usize) -> Self {
        Self {
            powered: vec![true; hosts],
            link_up: vec![true; hosts],
            group: vec![0; hosts],
            cuts: BTreeSet::new(),
            loss: 0.0,
            delay: None,
            duplicate: 0.0,
        }
    }

    /// Whether frames from `a` reach `b`.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        a == b
            || (self.is_up(a)
                && self.is_up(b)
                && self.group.get(a) == self.group.get(b)
                && !self.cuts.contains(&(a, b)))
    }

    /// Whether `a` and `b` hear each other.
    pub fn both_ways(&self, a: usize, b: usize) -> bool {
        self.connected(a, b) && self.connected(b, a)
    }

    /// Powered with its link up.
    fn is_up(&self, h: usize) -> bool {
        self.powered(h) && self.link_up(h)
    }

    /// Whether host `h` is powered.
    pub fn powered(&self, h: usize) -> bool {
        self.powered.get(h).copied().unwrap_or(false)
    }

    /// Whether host `h`'s link is up.
    pub fn link_up(&self, h: usize) -> bool {
        self.link_up.get(h).copied().unwrap_or(false)
    }

    /// Powers host `h` on or off.
    pub fn set_powered(&mut self, h: usize, on: bool) {
        if let Some(p) = self.powered.get_mut(h) {
            *p = on;
        }
    }

    /// Sets host `h`'s link.
    pub fn set_link(&mut self, h: usize, up: bool) {
        if let Some(l) = self.link_up.get_mut(h) {
            *l = up;
        }
    }

    /// The ratio of frames lost.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// The delay range, when frames are delayed (and so reordered).
    pub fn delay(&self) -> Option<(Duration, Duration)> {
        self.delay
    }

    /// The ratio of frames duplicated.
    pub fn duplicate(&self) -> f64 {
        self.duplicate
    }

    /// No loss and no delay: the protocol's bounds hold (they assume adverts arrive).
    pub fn clean(&self) -> bool {
        self.loss == 0.0 && self.delay.is_none()
    }

    /// The one-way pairs that cannot talk now (partitions and cuts), `(from, to)`.
    pub fn severed(&self) -> Vec<(usize, usize)> {
        let n = self.group.len();
        let mut out: Vec<(usize, usize)> = Vec::new();
        for a in 0..n {
            for b in 0..n {
                if a != b && (self.group[a] != self.group[b] || self.cuts.contains(&(a, b))) {
                    out.push((a, b));
                }
            }
        }
        out
    }

    /// Carries out a fault of the network itself (partitions, cuts, heal, loss, delay,
    /// duplication, links); the hosts whose link changed, with its state. Heal also brings
    /// every link back up.
    pub(crate) fn apply(&mut self, fault: &Fault) -> Vec<(usize, bool)> {
        match fault {
            Fault::Partition(groups) => {
                let mut group = vec![0; self.group.len()];
                for (g, members) in groups.iter().enumerate() {
                    for &m in members {
                        if let Some(x) = group.get_mut(m) {
                            *x = g + 1;
                        }
                    }
                }
                self.group = group;
            }
            Fault::Cut { from, to } => {
                self.cuts.insert((*from, *to));
            }
            Fault::Heal => {
                let hosts = self.group.len();
                let down: Vec<(usize, bool)> =
                    (0..hosts).filter(|&h| !self.link_up(h)).map(|h| (h, true)).collect();
                *self = Self { powered: std::mem::take(&mut self.powered), ..Self::new(hosts) };
                return down;
            }
            Fault::Loss(ratio) => self.loss = *ratio,
            Fault::Delay(min, max) => self.delay = Some((*min, (*max).max(*min))),
            Fault::Duplicate(ratio) => self.duplicate = *ratio,
            Fault::LinkDown(h) | Fault::LinkUp(h) => {
                let up = matches!(fault, Fault::LinkUp(_));
                if self.link_up(*h) != up {
                    self.set_link(*h, up);
                    return vec![(*h, up)];
                }
            }
            _ => {}
        }
        Vec::new()
    }
}

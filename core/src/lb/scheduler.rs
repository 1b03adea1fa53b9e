//! The IPVS schedulers k0s accepts, with the Linux kernel's semantics (net/netfilter/ipvs/
//! ip_vs_{rr,wrr,lc,wlc,lblc,dh,sh,sed,nq}.c), for the simulator's data plane and the
//! userspace proxy. Real-server "overload" (upper thresholds) is not modelled: k0s sets none.

use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;

use crate::config::LbAlgo;
use crate::time::Instant;

/// Hash buckets of the dh and sh schedulers (IP_VS_{DH,SH}_TAB_BITS = 8).
const TABLE_SIZE: usize = 256;
/// Knuth's multiplicative constant, as ip_vs_dh.c uses it.
const GOLDEN: u64 = 2_654_435_761;
/// hash_32's GOLDEN_RATIO_32, as ip_vs_sh.c uses it.
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
/// How long lblc remembers a destination (sysctl lblc_expiration, 24 h).
const LBLC_EXPIRATION_NS: u64 = 24 * 3600 * 1_000_000_000;

/// A real server as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Address and port.
    pub addr: SocketAddr,
    /// Weight; 0 takes the server out of new scheduling (quiesced).
    pub weight: u32,
    /// Established connections.
    pub active: u32,
    /// Other connections (TIME_WAIT and the like).
    pub inactive: u32,
}

impl Destination {
    /// ip_vs_dest_conn_overhead: active connections cost 256 times an inactive one.
    fn conn_overhead(&self) -> u64 {
        (u64::from(self.active) << 8) + u64::from(self.inactive)
    }
}

/// A scheduler's state between decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scheduler {
    algo: LbAlgo,
    /// rr: index of the last choice. wrr: current position.
    position: Option<usize>,
    /// wrr: current weight.
    current_weight: i64,
    /// dh/sh: bucket → destination index.
    buckets: Vec<Option<usize>>,
    /// lblc: destination address → (destination, last use).
    lblc: BTreeMap<IpAddr, (SocketAddr, Instant)>,
}

impl Scheduler {
    pub(crate) fn new(algo: LbAlgo) -> Self {
        Self { algo, position: None, current_weight: 0, buckets: Vec::new(), lblc: BTreeMap::new() }
    }

    pub(crate) fn algo(&self) -> LbAlgo {
        self.algo
    }

    /// The destination list changed: reset what depends on it (the kernel's update_service).
    pub(crate) fn reset(&mut self, dests: &[Destination]) {
        self.position = None;
        self.current_weight = 0;
        self.lblc.retain(|_, (addr, _)| dests.iter().any(|d| d.addr == *addr));
        self.buckets = match self.algo {
            LbAlgo::Dh => assign_buckets(dests, false),
            LbAlgo::Sh => assign_buckets(dests, true),
            _ => Vec::new(),
        };
    }

    /// Picks a destination for a new connection from `client` to `vip`.
    pub(crate) fn pick(
        &mut self,
        now: Instant,
        dests: &[Destination],
        client: IpAddr,
        vip: IpAddr,
    ) -> Option<usize> {
        match self.algo {
            LbAlgo::Rr => self.round_robin(dests),
            LbAlgo::Wrr => self.weighted_round_robin(dests),
            LbAlgo::Lc => least(dests, Destination::conn_overhead, false),
            LbAlgo::Wlc => least(dests, Destination::conn_overhead, true),
            LbAlgo::Sed => least(dests, |d| u64::from(d.active) + 1, true),
            LbAlgo::Nq => dests
                .iter()
                .position(|d| d.weight > 0 && d.active == 0)
                .or_else(|| least(dests, |d| u64::from(d.active) + 1, true)),
            LbAlgo::Lblc => self.locality_least_connection(now, dests, vip),
            LbAlgo::Dh => self.hashed(dests, hash_dh(vip)),
            LbAlgo::Sh => self.hashed(dests, hash_sh(client)),
        }
    }

    /// ip_vs_rr: the next available destination after the last one chosen.
    fn round_robin(&mut self, dests: &[Destination]) -> Option<usize> {
        let n = dests.len();
        let start = self.position.map_or(0, |p| p + 1);
        let found = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests.get(i).is_some_and(|d| d.weight > 0))?;
        self.position = Some(found);
        Some(found)
    }

    /// ip_vs_wrr: interleaved weighted round robin stepping the current weight down by the
    /// weights' gcd each time the list wraps.
    fn weighted_round_robin(&mut self, dests: &[Destination]) -> Option<usize> {
        let max = i64::from(dests.iter().map(|d| d.weight).max().unwrap_or(0));
        if max == 0 {
            return None;
        }
        let gcd = i64::from(dests.iter().map(|d| d.weight).filter(|w| *w > 0).fold(0, gcd));
        let n = dests.len();
        // Bounded: every destination is visited at most once per weight step.
        for _ in 0..=(n * (max / gcd.max(1) + 1) as usize) {
            let next = self.position.map_or(0, |p| p + 1);
            let next = if next >= n {
                self.current_weight -= gcd;
                if self.current_weight <= 0 {
                    self.current_weight = max;
                }
                0
            } else {
                if self.position.is_none() {
                    self.current_weight = max;
                }
                next
            };
            self.position = Some(next);
            if dests
                .get(next)
                .is_some_and(|d| i64::from(d.weight) >= self.current_weight && d.weight > 0)
            {
                return Some(next);
            }
        }
        None
    }

    /// ip_vs_lblc: stick to the destination last used for this destination address unless
    /// it is overloaded (more active connections than its weight while another server has
    /// fewer than half its weight); otherwise pick by weighted least connection.
    fn locality_least_connection(
        &mut self,
        now: Instant,
        dests: &[Destination],
        vip: IpAddr,
    ) -> Option<usize> {
        self.lblc.retain(|_, (_, used)| {
            now.saturating_duration_since(*used).as_nanos() < u128::from(LBLC_EXPIRATION_NS)
        });
        if let Some((addr, _)) = self.lblc.get(&vip)
            && let Some(i) = dests.iter().position(|d| d.addr == *addr)
            && dests.get(i).is_some_and(|d| d.weight > 0 && !lblc_overloaded(d, dests))
        {
            self.lblc.insert(vip, (*addr, now));
            return Some(i);
        }
        let i = least(dests, Destination::conn_overhead, true)?;
        let addr = dests.get(i)?.addr;
        self.lblc.insert(vip, (addr, now));
        Some(i)
    }

    /// dh / sh: the destination of the key's bucket, or none if it is unusable (the kernel
    /// has no fallback unless the sh-fallback flag is set, which k0s does not set).
    fn hashed(&self, dests: &[Destination], bucket: usize) -> Option<usize> {
        let i = (*self.buckets.get(bucket)?)?;
        dests.get(i).is_some_and(|d| d.weight > 0).then_some(i)
    }
}

fn lblc_overloaded(d: &Destination, dests: &[Destination]) -> bool {
    u64::from(d.active) > u64::from(d.weight)
        && dests.iter().any(|o| u64::from(o.active) * 2 < u64::from(o.weight))
}

/// Least `overhead` among destinations with weight; `weighted` compares overhead/weight
/// by cross-multiplying, as ip_vs_wlc/sed/nq do. Ties go to the earlier destination.
fn least(
    dests: &[Destination],
    overhead: impl Fn(&Destination) -> u64,
    weighted: bool,
) -> Option<usize> {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, d) in dests.iter().enumerate().filter(|(_, d)| d.weight > 0) {
        let (doh, dw) = (overhead(d), u64::from(d.weight));
        let better = match best {
            None => true,
            Some((_, loh, lw)) if weighted => {
                u128::from(loh) * u128::from(dw) > u128::from(doh) * u128::from(lw)
            }
            Some((_, loh, _)) => doh < loh,
        };
        if better {
            best = Some((i, doh, dw));
        }
    }
    best.map(|(i, _, _)| i)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Fills the 256 buckets round robin over the destinations; with `weighted`, each takes as
/// many consecutive buckets as its weight (ip_vs_sh_reassign; ip_vs_dh ignores weights).
fn assign_buckets(dests: &[Destination], weighted: bool) -> Vec<Option<usize>> {
    if dests.is_empty() {
        return vec![None; TABLE_SIZE];
    }
    let mut out = Vec::with_capacity(TABLE_SIZE);
    let (mut p, mut count) = (0usize, 0u32);
    for _ in 0..TABLE_SIZE {
        out.push(Some(p));
        count += 1;
        let weight = dests.get(p).map_or(1, |d| d.weight);
        if !weighted || count >= weight {
            p = (p + 1) % dests.len();
            count = 0;
        }
    }
    out
}

fn fold(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let x = a.to_bits();
            // The four 32-bit words, folded (truncating casts keep each word).
            (x >> 96) as u32 ^ (x >> 64) as u32 ^ (x >> 32) as u32 ^ x as u32
        }
    }
}

/// ip_vs_dh_hashkey.
fn hash_dh(addr: IpAddr) -> usize {
    ((u64::from(fold(addr)) * GOLDEN) & (TABLE_SIZE as u64 - 1)) as usize
}

/// ip_vs_sh_hashkey without the port: hash_32(addr, 8).
fn hash_sh(addr: IpAddr) -> usize {
    (fold(addr).wrapping_mul(GOLDEN_RATIO_32) >> (32 - 8)) as usize % TABLE_SIZE
}

//! The engine's invariants, checked on a `--driver daemon` run while it runs: from what the
//! daemons said (their state changes), what the simulated kernels hold (the VIPs on eth0)
//! and what the runner did to the network (power, links, partitions, loss and delay).
//!
//! The limits are the engine's with more slack: the real code acts on its commands a few
//! milliseconds after it changed state (a driver loop turn, a kernel call), where the
//! engine's daemon acts in the same instant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use super::controller::Change;
use super::kernel::{ETH0, Fabric};
use cplb_core::time::Instant;
use cplb_core::vrrp::State;
use cplb_sim::{InstanceInfo, SimSpec, Violation};

/// How long a state the invariants forbid may last before it counts: turmoil's latency
/// both ways plus the daemon's reaction (its loop turn and the kernel call).
const SLACK: Duration = Duration::from_millis(50);
/// The violations kept (the first ones tell the story).
const MAX_VIOLATIONS: usize = 10;

/// What the runner knows of the network at an instant.
pub(crate) struct Network<'a> {
    /// Hosts whose link is down.
    pub links_down: &'a [usize],
    /// Pairs cut (a partition both ways, or a one-way cut `from -> to`).
    pub cuts: &'a [(usize, usize)],
    /// Loss or delay is in force (the protocol's bounds need a clean network).
    pub degraded: bool,
}

/// The running checks of one daemon run.
pub(crate) struct Checks {
    instances: Vec<InstanceInfo>,
    hosts: Vec<IpAddr>,
    names: Vec<String>,
    /// The scenario's last fault (a refusal's when it ends): convergence is checked after it.
    last_fault: Option<Duration>,
    /// Changes already folded into `state`.
    seen: usize,
    state: BTreeMap<(usize, usize), State>,
    dual_since: Vec<Option<Duration>>,
    unconverged_since: Vec<Option<Duration>>,
    stray_since: BTreeMap<(usize, IpAddr), Duration>,
    /// When each host's kernel last stopped refusing (the simulated kernel forgets it at
    /// the first command after; the node's retries may still be catching up).
    refused_until: BTreeMap<usize, Duration>,
    /// Connections that looped between directors, so far.
    pub forwarding_loops: u64,
    /// Two masters in one connected group for longer than a round trip, ended.
    pub dual_master_episodes: u64,
    pub violations: Vec<Violation>,
}

impl Checks {
    pub(crate) fn new(spec: &SimSpec) -> Self {
        let instances = cplb_sim::instances(spec);
        let n = instances.len();
        Self {
            instances,
            hosts: spec.hosts.iter().map(|h| h.address).collect(),
            names: spec.hosts.iter().map(|h| h.name.clone()).collect(),
            last_fault: spec
                .faults
                .iter()
                .map(|f| match f.fault {
                    cplb_sim::Fault::KernelRefuses(_, d) => f.at + d,
                    _ => f.at,
                })
                .max(),
            seen: 0,
            state: BTreeMap::new(),
            dual_since: vec![None; n],
            unconverged_since: vec![None; n],
            stray_since: BTreeMap::new(),
            refused_until: BTreeMap::new(),
            forwarding_loops: 0,
            dual_master_episodes: 0,
            violations: Vec::new(),
        }
    }

    /// Evaluates the invariants at `now`.
    pub(crate) fn check(
        &mut self,
        now: Duration,
        changes: &[Change],
        fabric: &Fabric,
        net: &Network<'_>,
    ) {
        for c in changes.iter().skip(self.seen) {
            let (Some(h), Some(i)) = (
                self.hosts.iter().position(|a| *a == c.host),
                self.instances.iter().position(|i| i.vips.first() == Some(&c.vip)),
            ) else {
                continue;
            };
            self.state.insert((h, i), c.to);
        }
        self.seen = changes.len();
        // A daemon that is not running has no state (a crash, a power-off, a stop).
        let running: Vec<bool> = self.hosts.iter().map(|a| fabric.notify.contains_key(a)).collect();
        self.state.retain(|(h, _), _| running[*h]);
        let powered: Vec<bool> =
            self.hosts.iter().map(|a| fabric.kernels.contains_key(a)).collect();
        let connected = |a: usize, b: usize| {
            powered[a]
                && powered[b]
                && !net.links_down.contains(&a)
                && !net.links_down.contains(&b)
                && !net.cuts.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
        };
        for inst in 0..self.instances.len() {
            let masters = self.hosts_in(inst, |s| s == State::Master);
            let eligible = self.hosts_in(inst, |s| matches!(s, State::Master | State::Backup));
            let master_down = self.instances[inst].master_down;
            let dual = !net.degraded
                && cplb_sim::components(&masters, connected).iter().any(|g| g.len() > 1);
            match (dual, self.dual_since[inst]) {
                (true, None) => self.dual_since[inst] = Some(now),
                (true, Some(since)) if now - since > master_down + SLACK => {
                    self.dual_since[inst] = Some(now);
                    let names = self.named(&masters);
                    self.violate(now, changes, "single_master", format!("k0s-vip-{inst}: {names} masters in one connected group for over one Master_Down_Interval"));
                }
                (false, Some(since)) => {
                    if now - since > SLACK {
                        self.dual_master_episodes += 1;
                    }
                    self.dual_since[inst] = None;
                }
                _ => {}
            }
            let bound = master_down + self.instances[inst].advert + SLACK;
            let settled = now >= self.last_fault.unwrap_or_default() + bound;
            let bad = (settled && !net.degraded)
                .then(|| {
                    cplb_sim::components(&eligible, connected).into_iter().find_map(|group| {
                        let n = group.iter().filter(|h| masters.contains(h)).count();
                        (n != 1).then(|| {
                            format!(
                                "k0s-vip-{inst}: {n} masters among {} after the last fault",
                                self.named(&group)
                            )
                        })
                    })
                })
                .flatten();
            match (bad, self.unconverged_since[inst]) {
                (None, _) => self.unconverged_since[inst] = None,
                (Some(_), None) => self.unconverged_since[inst] = Some(now),
                (Some(what), Some(since)) if now - since > SLACK => {
                    self.unconverged_since[inst] = Some(now);
                    self.violate(now, changes, "converged", what);
                }
                _ => {}
            }
        }
        self.check_vip_holders(now, changes, fabric, &running);
        if fabric.loops > 0 && self.forwarding_loops == 0 {
            let service =
                fabric.last_loop.map_or_else(String::new, |k| format!("{}:{}", k.vip, k.port));
            let hops = super::kernel::MAX_HOPS;
            self.violate(
                now,
                changes,
                "no_forwarding_loop",
                format!("a packet to {service} was forwarded {hops} times"),
            );
        }
        self.forwarding_loops = fabric.loops;
    }

    /// A VIP on eth0 of a running daemon that is not its master, for longer than the slack
    /// (a kernel that refuses commands is given its retries first).
    fn check_vip_holders(
        &mut self,
        now: Duration,
        changes: &[Change],
        fabric: &Fabric,
        running: &[bool],
    ) {
        let mut stray = BTreeSet::new();
        for (h, addr) in self.hosts.iter().enumerate() {
            let Some(k) = fabric.kernels.get(addr) else { continue };
            if let Some(until) = k.refuse_until {
                let last = self.refused_until.entry(h).or_insert(until);
                *last = (*last).max(until);
            }
            let settling = self.refused_until.get(&h).is_some_and(|until| {
                now < *until + cplb_core::node::MAX_BACKOFF + Duration::from_millis(10)
            });
            if !running[h] || settling {
                continue;
            }
            for (_, vip, _) in k.addresses.iter().filter(|(i, _, _)| *i == ETH0) {
                let Some(inst) = self.instances.iter().position(|i| i.vips.contains(vip)) else {
                    continue;
                };
                if self.state.get(&(h, inst)) != Some(&State::Master) {
                    stray.insert((h, *vip));
                }
            }
        }
        self.stray_since.retain(|key, _| stray.contains(key));
        for key in stray {
            let since = *self.stray_since.entry(key).or_insert(now);
            if now - since > SLACK {
                self.stray_since.insert(key, now);
                let (h, vip) = key;
                let name = self.names[h].clone();
                self.violate(
                    now,
                    changes,
                    "vip_only_on_master",
                    format!("{name} holds {vip} on eth0 but is not its master"),
                );
            }
        }
    }

    fn hosts_in(&self, inst: usize, pred: impl Fn(State) -> bool) -> Vec<usize> {
        self.state
            .iter()
            .filter(|((_, i), s)| *i == inst && pred(**s))
            .map(|((h, _), _)| *h)
            .collect()
    }

    fn named(&self, hosts: &[usize]) -> String {
        hosts.iter().map(|h| self.names[*h].as_str()).collect::<Vec<_>>().join(" and ")
    }

    fn violate(&mut self, now: Duration, changes: &[Change], invariant: &str, detail: String) {
        if self.violations.len() >= MAX_VIOLATIONS {
            return;
        }
        let recent = changes
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(|c| {
                let host =
                    self.hosts.iter().position(|a| *a == c.host).map_or("?", |h| &self.names[h]);
                format!("{:>12.6} {host} {} {} -> {}", c.at.as_secs_f64(), c.vip, c.from, c.to)
            })
            .collect();
        self.violations.push(Violation {
            at: Instant::ZERO + now,
            invariant: invariant.to_owned(),
            detail,
            recent,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::daemon_driver::kernel::HostKernel;
    use cplb_core::vrrp::Cause;

    fn spec() -> SimSpec {
        let text = crate::catalog::get("seed-poweroff").expect("in the catalog");
        crate::scenario::parse("seed-poweroff.yaml", text).expect("parses").spec
    }

    /// Every controller powered, its daemon running, `vips` on the eth0 of those listed.
    fn fabric(spec: &SimSpec, vip_on: &[usize], vip: IpAddr) -> Fabric {
        let mut f = Fabric::default();
        for (i, h) in spec.hosts.iter().enumerate() {
            let mut k = HostKernel { link_up: true, ..HostKernel::default() };
            if vip_on.contains(&i) {
                k.addresses.insert((ETH0, vip, 24));
            }
            f.kernels.insert(h.address, k);
            f.notify.insert(h.address, tokio::sync::mpsc::channel(1).0);
        }
        f
    }

    fn change(spec: &SimSpec, at_ms: u64, host: usize, vip: IpAddr, to: State) -> Change {
        Change {
            at: Duration::from_millis(at_ms),
            host: spec.hosts[host].address,
            vip,
            from: State::Backup,
            to,
            cause: Cause::Startup,
        }
    }

    /// Runs the checks every 5 ms over `until_ms`.
    fn run(
        spec: &SimSpec,
        changes: &[Change],
        f: &Fabric,
        cuts: &[(usize, usize)],
        until_ms: u64,
    ) -> Checks {
        let mut c = Checks::new(spec);
        let net = Network { links_down: &[], cuts, degraded: false };
        for t in (0..until_ms).step_by(5) {
            let now = Duration::from_millis(t);
            let seen: Vec<Change> = changes.iter().filter(|c| c.at <= now).cloned().collect();
            c.check(now, &seen, f, &net);
        }
        c
    }

    #[test]
    fn two_masters_that_hear_each_other_break_single_master_unless_cut_apart() {
        let spec = spec();
        let vip = cplb_sim::instances(&spec)[0].vips[0];
        let changes =
            [change(&spec, 0, 0, vip, State::Master), change(&spec, 0, 1, vip, State::Master)];
        let f = fabric(&spec, &[0, 1], vip);
        let c = run(&spec, &changes, &f, &[], 5_000);
        assert!(c.violations.iter().any(|v| v.invariant == "single_master"), "{:?}", c.violations);
        let apart = run(&spec, &changes, &f, &[(0, 1)], 5_000);
        assert!(
            !apart.violations.iter().any(|v| v.invariant == "single_master"),
            "{:?}",
            apart.violations
        );
    }

    #[test]
    fn a_backup_holding_the_vip_breaks_vip_only_on_master() {
        let spec = spec();
        let vip = cplb_sim::instances(&spec)[0].vips[0];
        let changes =
            [change(&spec, 0, 0, vip, State::Master), change(&spec, 0, 1, vip, State::Backup)];
        let held_by_master = run(&spec, &changes, &fabric(&spec, &[0], vip), &[], 1_000);
        assert!(held_by_master.violations.is_empty(), "{:?}", held_by_master.violations);
        let stray = run(&spec, &changes, &fabric(&spec, &[0, 1], vip), &[], 1_000);
        let v = stray.violations.iter().find(|v| v.invariant == "vip_only_on_master");
        assert!(v.is_some_and(|v| v.detail.contains("controller-1")), "{:?}", stray.violations);
    }
}

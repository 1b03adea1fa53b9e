//! The invariants every run is held to, whichever driver ran it: one model of the hosts,
//! fed with what the drivers report (state changes, VIPs on eth0, data planes, kernel
//! refusals, daemons starting and going), read together with the [`World`] the faults
//! shaped, and evaluated as the run goes.
//!
//! - `single_master`: no two masters of an instance that hear each other for longer than a
//!   contention takes ([`Bounds::dual_master`]);
//! - `converged`: once the faults are over and the slowest takeover has passed, every
//!   connected group of eligible nodes has exactly one master;
//! - `vip_only_on_master`: a VIP is on the eth0 only of its master (a node whose kernel
//!   refuses, or did until lately, is given its retries first);
//! - `dataplane_follows_health`: a master's data plane lists the healthy reachable API
//!   servers of its cluster (all of them when none is healthy: k0s fails open);
//! - `no_forwarding_loop`: no connection goes round between directors.

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet};

use cplb_core::config::LoadBalancerMode;
use cplb_core::lb::{DataPlane, ServiceSpec};
use cplb_core::time::Instant;
use cplb_core::vrrp::State;

use crate::bounds::Bounds;
use crate::failover::components;
use crate::instances::InstanceInfo;
use crate::world::{ApiServer, World};

/// What the checker knows of one host's daemon and kernel.
#[derive(Debug, Clone, Default)]
struct Host {
    /// A daemon runs.
    running: bool,
    /// Per instance: the state its router is in.
    states: BTreeMap<usize, State>,
    /// The VIPs on its eth0.
    vips: BTreeSet<IpAddr>,
    /// Its node has kernel objects under refusal.
    refusing: bool,
    /// The data plane its node wants.
    dataplane: DataPlane,
    /// The IPVS services its kernel holds (what clients are balanced by, whatever the
    /// node wants).
    services: Vec<ServiceSpec>,
}

/// An invariant that did not hold: its name and what was seen.
pub(crate) type Breach = (&'static str, String);

/// The checks of one run.
#[derive(Debug)]
pub(crate) struct Checker {
    bounds: Bounds,
    instances: Vec<InstanceInfo>,
    names: Vec<String>,
    addresses: Vec<IpAddr>,
    hosts: Vec<Host>,
    dual_since: Vec<Option<Instant>>,
    unconverged_since: Vec<Option<Instant>>,
    stray_since: BTreeMap<(usize, IpAddr), Instant>,
    dataplane_mismatch: BTreeMap<usize, (Instant, String)>,
    /// When something the data plane's truth depends on last changed.
    truth_changed_at: Instant,
    loops: u64,
    /// Two masters that heard each other for longer than a round trip, ended.
    dual_master_episodes: u64,
    /// Something the state predicates read changed since they were last evaluated.
    dirty: bool,
    /// Moments at which a bound the state predicates read runs out (an instance's
    /// convergence deadline, the end of a kernel refusal's settling time): passing one
    /// re-evaluates them although nothing was reported.
    deadlines: BTreeSet<Instant>,
}

impl Checker {
    pub(crate) fn new(
        bounds: Bounds,
        instances: Vec<InstanceInfo>,
        names: Vec<String>,
        addresses: Vec<IpAddr>,
    ) -> Self {
        let n = instances.len();
        let deadlines = (0..n).map(|i| bounds.converged_at(i)).collect();
        Self {
            bounds,
            instances,
            hosts: vec![Host::default(); names.len()],
            names,
            addresses,
            dual_since: vec![None; n],
            unconverged_since: vec![None; n],
            stray_since: BTreeMap::new(),
            dataplane_mismatch: BTreeMap::new(),
            truth_changed_at: Instant::ZERO,
            loops: 0,
            dual_master_episodes: 0,
            dirty: true,
            deadlines,
        }
    }

    pub(crate) fn bounds(&self) -> &Bounds {
        &self.bounds
    }

    pub(crate) fn dual_master_episodes(&self) -> u64 {
        self.dual_master_episodes
    }

    pub(crate) fn forwarding_loops(&self) -> u64 {
        self.loops
    }

    // --- what the drivers report -----------------------------------------------------

    pub(crate) fn daemon_started(&mut self, h: usize) {
        if let Some(host) = self.hosts.get_mut(h) {
            host.running = true;
            self.dirty = true;
        }
    }

    pub(crate) fn daemon_gone(&mut self, h: usize) {
        if let Some(host) = self.hosts.get_mut(h) {
            host.running = false;
            host.states.clear();
            host.refusing = false;
            host.dataplane = DataPlane::default();
            self.dirty = true;
        }
    }

    /// A router's state change; one from a daemon that is already gone (reported late) is
    /// not the host's state.
    pub(crate) fn state(&mut self, h: usize, instance: usize, to: State) {
        if let Some(host) = self.hosts.get_mut(h)
            && host.running
        {
            host.states.insert(instance, to);
            self.dirty = true;
        }
    }

    pub(crate) fn vip(&mut self, h: usize, vip: IpAddr, present: bool) {
        if let Some(host) = self.hosts.get_mut(h) {
            let changed = if present { host.vips.insert(vip) } else { host.vips.remove(&vip) };
            self.dirty |= changed;
        }
    }

    /// Whether `vip` on host `h`'s eth0 is a left-over: a daemon runs there and has not
    /// put any instance the VIP belongs to in a state yet.
    pub(crate) fn left_over(&self, h: usize, vip: IpAddr) -> bool {
        let Some(host) = self.hosts.get(h) else { return false };
        host.running
            && host.vips.contains(&vip)
            && self
                .instances
                .iter()
                .enumerate()
                .all(|(i, info)| !info.vips.contains(&vip) || !host.states.contains_key(&i))
    }

    /// Host `h` was switched off: its kernel holds nothing.
    pub(crate) fn kernel_lost(&mut self, h: usize) {
        if let Some(host) = self.hosts.get_mut(h) {
            host.vips.clear();
            host.services.clear();
            self.dirty = true;
        }
    }

    pub(crate) fn kernel_services(&mut self, h: usize, services: &[ServiceSpec]) {
        if let Some(host) = self.hosts.get_mut(h)
            && host.services != services
        {
            host.services = services.to_vec();
            self.dirty = true;
        }
    }

    pub(crate) fn dataplane(&mut self, h: usize, dataplane: &DataPlane) {
        if let Some(host) = self.hosts.get_mut(h) {
            host.dataplane = dataplane.clone();
            self.dirty = true;
        }
    }

    pub(crate) fn refusing(&mut self, h: usize, refusing: bool) {
        if let Some(host) = self.hosts.get_mut(h)
            && host.refusing != refusing
        {
            host.refusing = refusing;
            self.dirty = true;
        }
    }

    pub(crate) fn world_changed(&mut self, now: Instant) {
        self.truth_changed_at = now;
        self.dirty = true;
    }

    /// A connection went round between directors; the first one breaks the invariant.
    pub(crate) fn forwarding_loop(&mut self, service: SocketAddr, hops: usize) -> Option<Breach> {
        self.loops += 1;
        (self.loops == 1).then(|| {
            ("no_forwarding_loop", format!("a packet to {service} was forwarded {hops} times"))
        })
    }

    // --- what the drivers read ---------------------------------------------------------

    /// The masters of `instance` now, by host index.
    pub(crate) fn masters(&self, instance: usize) -> Vec<usize> {
        self.hosts_in(instance, |s| s == State::Master)
    }

    /// The real servers (or proxy backends) host `h`'s data plane lists.
    pub(crate) fn listed(&self, h: usize) -> Vec<IpAddr> {
        let Some(host) = self.hosts.get(h) else { return Vec::new() };
        let dp = &host.dataplane;
        if dp.services.is_empty() {
            dp.proxy_backends.iter().map(SocketAddr::ip).collect()
        } else {
            dp.services.iter().flat_map(|s| s.real_servers.iter().map(|r| r.addr.ip())).collect()
        }
    }

    /// The host with address `ip`.
    pub(crate) fn host_of(&self, ip: IpAddr) -> Option<usize> {
        self.addresses.iter().position(|a| *a == ip)
    }

    // --- evaluation --------------------------------------------------------------------

    /// Evaluates the invariants at `now`. The state predicates are recomputed when
    /// something they read changed; how long a bad state has lasted is checked every time.
    pub(crate) fn check(&mut self, now: Instant, world: &World) -> Vec<Breach> {
        let mut out = Vec::new();
        let settling = self.bounds.kernel_settling();
        for h in 0..self.hosts.len() {
            if let Some(t) = world.refusing_until(h).map(|t| t + settling)
                && t > now
            {
                self.deadlines.insert(t);
            }
        }
        while self.deadlines.first().is_some_and(|t| *t <= now) {
            self.deadlines.pop_first();
            self.dirty = true;
        }
        let dirty = std::mem::take(&mut self.dirty);
        // With loss or delay, adverts may legitimately miss for longer than the protocol's
        // bounds; the protocol invariants apply on a clean network.
        let clean = world.network().clean();
        for inst in 0..self.instances.len() {
            self.check_single_master(now, world, inst, clean, dirty, &mut out);
        }
        if dirty || !self.stray_since.is_empty() {
            self.check_vip_holders(now, world, &mut out);
        }
        if clean && (dirty || self.unconverged_since.iter().any(Option::is_some)) {
            self.check_convergence(now, world, &mut out);
        }
        if dirty {
            self.check_dataplane(now, world);
        }
        self.check_dataplane_deadlines(now, &mut out);
        out
    }

    fn check_single_master(
        &mut self,
        now: Instant,
        world: &World,
        inst: usize,
        clean: bool,
        dirty: bool,
        out: &mut Vec<Breach>,
    ) {
        let dual = if !clean {
            false
        } else if dirty {
            let masters = self.masters(inst);
            masters.len() > 1
                && components(&masters, |a, b| world.network().both_ways(a, b))
                    .iter()
                    .any(|g| g.len() > 1)
        } else {
            self.dual_since[inst].is_some()
        };
        match (dual, self.dual_since[inst]) {
            (true, None) => self.dual_since[inst] = Some(now),
            (true, Some(since)) if now - since > self.bounds.dual_master(inst) => {
                self.dual_since[inst] = Some(now);
                let names = self.named(&self.masters(inst), " and ");
                let detail = format!(
                    "{}: {names} masters in one connected group for over one Master_Down_Interval",
                    self.instances[inst].name
                );
                out.push(("single_master", detail));
            }
            (false, Some(since)) => {
                // Simultaneous takeovers settle within a round trip; longer is a real
                // dual master.
                if now - since > self.bounds.reaction() {
                    self.dual_master_episodes += 1;
                }
                self.dual_since[inst] = None;
            }
            _ => {}
        }
    }

    /// After the faults and the slowest takeover, every connected group with an eligible
    /// node has exactly one master. A handover leaves two masters or none for a round trip;
    /// only a state that lasts longer is a violation.
    fn check_convergence(&mut self, now: Instant, world: &World, out: &mut Vec<Breach>) {
        for inst in 0..self.instances.len() {
            if now < self.bounds.converged_at(inst) {
                continue;
            }
            let eligible = self.hosts_in(inst, |s| matches!(s, State::Master | State::Backup));
            let masters = self.masters(inst);
            let groups = components(&eligible, |a, b| world.network().both_ways(a, b));
            let bad = groups.into_iter().find_map(|group| {
                let n = group.iter().filter(|h| masters.contains(h)).count();
                (n != 1).then(|| {
                    format!(
                        "{}: {n} masters among {} after the last fault",
                        self.instances[inst].name,
                        self.named(&group, ", ")
                    )
                })
            });
            match (bad, self.unconverged_since[inst]) {
                (None, _) => self.unconverged_since[inst] = None,
                (Some(_), None) => self.unconverged_since[inst] = Some(now),
                (Some(what), Some(since)) if now - since > self.bounds.reaction() => {
                    self.unconverged_since[inst] = Some(now);
                    out.push(("converged", what));
                }
                _ => {}
            }
        }
    }

    /// Whether host `h`'s node may still be acting on a kernel refusal: the kernel refuses,
    /// or did until lately, or the node reports objects refused.
    fn kernel_settling(&self, now: Instant, world: &World, h: usize) -> bool {
        let recent =
            world.refusing_until(h).is_some_and(|t| now < t + self.bounds.kernel_settling());
        recent || self.hosts.get(h).is_some_and(|host| host.refusing)
    }

    fn check_vip_holders(&mut self, now: Instant, world: &World, out: &mut Vec<Breach>) {
        let mut stray = BTreeSet::new();
        for (h, host) in self.hosts.iter().enumerate() {
            if !host.running || self.kernel_settling(now, world, h) {
                continue;
            }
            for vip in &host.vips {
                if !self.is_master_of(h, *vip) {
                    stray.insert((h, *vip));
                }
            }
        }
        self.stray_since.retain(|key, _| stray.contains(key));
        for key in stray {
            let since = *self.stray_since.entry(key).or_insert(now);
            if now - since > self.bounds.reaction() {
                self.stray_since.insert(key, now);
                let (h, vip) = key;
                let detail = format!("{} holds {vip} on eth0 but is not its master", self.names[h]);
                out.push(("vip_only_on_master", detail));
            }
        }
    }

    fn check_dataplane(&mut self, now: Instant, world: &World) {
        for h in 0..self.hosts.len() {
            match self.dataplane_wrong(now, world, h) {
                None => {
                    self.dataplane_mismatch.remove(&h);
                }
                Some(what) => {
                    self.dataplane_mismatch.entry(h).or_insert((now, what));
                }
            }
        }
    }

    /// What is wrong with master `h`'s data plane, if anything.
    fn dataplane_wrong(&self, now: Instant, world: &World, h: usize) -> Option<String> {
        let host = self.hosts.get(h)?;
        let keepalived = world.files().of(h)?.enabled_keepalived()?;
        let mode = keepalived.mode();
        let is_master = host.states.values().any(|s| *s == State::Master);
        if !host.running
            || mode == LoadBalancerMode::VipOnly
            || !is_master
            || self.kernel_settling(now, world, h)
        {
            return None;
        }
        let cluster = world.files().cluster(h);
        let mut truth: Vec<IpAddr> = cluster
            .iter()
            .filter(|&&c| world.api_server(c) == ApiServer::Up && world.network().both_ways(h, c))
            .map(|&c| self.addresses[c])
            .collect();
        if truth.is_empty() {
            truth = cluster.iter().map(|&c| self.addresses[c]).collect(); // fail open
        }
        truth.sort();
        if mode != LoadBalancerMode::Ipvs {
            let backends = sorted(host.dataplane.proxy_backends.iter().map(SocketAddr::ip));
            return (backends != truth).then(|| {
                format!("proxies to {backends:?}, the healthy reachable API servers are {truth:?}")
            });
        }
        // IPVS: what balances clients is the kernel's table; every virtual server on a VIP
        // this host is master of must be there, listing the truth.
        let mut wrong = Vec::new();
        for vs in keepalived.virtual_servers.iter().filter(|v| self.is_master_of(h, v.ip_address)) {
            let vip = vs.ip_address;
            match host.services.iter().find(|s| s.key.vip == vip) {
                None => wrong.push(format!("no IPVS service for {vip}")),
                Some(s) => {
                    let servers = sorted(s.real_servers.iter().map(|r| r.addr.ip()));
                    if servers != truth {
                        wrong.push(format!("{vip} balanced over {servers:?}"));
                    }
                }
            }
        }
        (!wrong.is_empty()).then(|| {
            format!("{}; the healthy reachable API servers are {truth:?}", wrong.join(", "))
        })
    }

    fn check_dataplane_deadlines(&mut self, now: Instant, out: &mut Vec<Breach>) {
        let bound = self.bounds.dataplane();
        let late: Vec<(usize, String)> = self
            .dataplane_mismatch
            .iter()
            .filter(|(_, (since, _))| {
                now.saturating_duration_since((*since).max(self.truth_changed_at)) > bound
            })
            .map(|(h, (_, what))| (*h, what.clone()))
            .collect();
        for (h, what) in late {
            out.push(("dataplane_follows_health", format!("{} {what}", self.names[h])));
            self.dataplane_mismatch.insert(h, (now, what));
        }
    }

    fn is_master_of(&self, h: usize, vip: IpAddr) -> bool {
        let Some(host) = self.hosts.get(h) else { return false };
        self.instances.iter().enumerate().any(|(i, info)| {
            info.vips.contains(&vip) && host.states.get(&i) == Some(&State::Master)
        })
    }

    fn hosts_in(&self, inst: usize, pred: impl Fn(State) -> bool) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&h| self.hosts[h].states.get(&inst).is_some_and(|s| pred(*s)))
            .collect()
    }

    fn named(&self, hosts: &[usize], sep: &str) -> String {
        hosts.iter().map(|h| self.names[*h].as_str()).collect::<Vec<_>>().join(sep)
    }
}

fn sorted(addresses: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = addresses.collect();
    v.sort();
    v
}

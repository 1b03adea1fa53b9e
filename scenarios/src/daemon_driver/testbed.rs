//! The faults carried out on turmoil's hosts: what the world leaves to the driver
//! ([`Testbed`]): power (turmoil's crash and bounce), daemons (controls to the hosts),
//! partitions, cuts, loss and delay as turmoil's links, the simulated kernels' links,
//! VIPs and refusals.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use cplb_core::config::ClusterConfig;
use cplb_core::lb::DataPlane;
use cplb_core::time::Instant;
use cplb_core::vrrp::VirtualIp;
use cplb_sim::{ApiServer, HostSpec, HostView, Observer, Role, SimSpec, Testbed, World};

use super::controller::{self, Control};
use super::fabric::{DUMMY, ETH0, lock};
use super::host::{HostControl, Shared, held};
use super::{LATENCY, dilated};

/// The turmoil simulation and what the runner shares with its hosts.
pub(super) struct Bed<'a> {
    pub(super) sim: turmoil::Sim<'a>,
    pub(super) shared: Shared,
    pub(super) addresses: Vec<IpAddr>,
    hosts: Vec<HostSpec>,
    /// The data plane each running daemon's node wants (its proxy's backends).
    pub(super) dataplanes: BTreeMap<usize, DataPlane>,
    /// The one-way links cut in turmoil now.
    severed: BTreeSet<(usize, usize)>,
}

impl<'a> Bed<'a> {
    pub(super) fn new(sim: turmoil::Sim<'a>, shared: Shared, spec: &SimSpec) -> Self {
        let addresses = spec.hosts.iter().map(|h| h.address).collect();
        let hosts = spec.hosts.clone();
        Self {
            sim,
            shared,
            addresses,
            hosts,
            dataplanes: BTreeMap::new(),
            severed: BTreeSet::new(),
        }
    }

    fn control(&self, h: usize, c: HostControl) {
        if let Some(tx) = held(&self.shared.controls).get(&self.addresses[h]) {
            let _ = tx.send(c);
        }
    }

    fn notify(&self, h: usize, input: cplb_netns::daemon::Input) {
        if let Some(tx) = lock(&self.shared.fabric).notify.get(&self.addresses[h]) {
            let _ = tx.try_send(input);
        }
    }

    /// Makes turmoil's links what the world's network says: a pair is cut one way when a
    /// partition, a cut or a link down separates it; loss and delay on every link.
    fn links(&mut self, world: &World) {
        let network = world.network();
        let n = self.addresses.len();
        let mut want: BTreeSet<(usize, usize)> = network.severed().into_iter().collect();
        for h in (0..n).filter(|&h| !network.link_up(h)) {
            for o in (0..n).filter(|&o| o != h) {
                want.insert((h, o));
                want.insert((o, h));
            }
        }
        let ip = |h: usize| self.addresses[h];
        for &(a, b) in want.difference(&self.severed) {
            self.sim.partition_oneway(ip(a), ip(b));
        }
        for &(a, b) in self.severed.difference(&want) {
            self.sim.repair_oneway(ip(a), ip(b));
        }
        self.severed = want;
        let (min, max) = network.delay().unwrap_or((LATENCY, LATENCY));
        for a in 0..n {
            for b in a + 1..n {
                self.sim.set_link_fail_rate(ip(a), ip(b), network.loss());
                self.sim.set_link_latency(ip(a), ip(b), dilated(min));
                self.sim.set_link_max_message_latency(ip(a), ip(b), dilated(max));
            }
        }
    }
}

impl Testbed for Bed<'_> {
    /// eth0's and `dummyvip0`'s addresses, the IPVS services and loop guards from the
    /// simulated kernels, and the proxy the daemon runs.
    fn views(&self, world: &World) -> Vec<HostView> {
        let fabric = lock(&self.shared.fabric);
        let controllers = self.hosts.iter().enumerate().filter(|(_, h)| h.role == Role::Controller);
        controllers
            .map(|(i, h)| {
                let mut view = HostView::off(h.name.clone(), h.address, h.prefix_len);
                let Some(k) = fabric.kernels.get(&h.address).filter(|_| world.network().powered(i))
                else {
                    return view;
                };
                let on = |ifindex| {
                    let held = k.addresses.iter().filter(|(i, _, _)| *i == ifindex);
                    held.map(|(_, a, p)| (*a, *p)).collect::<Vec<_>>()
                };
                view.powered = true;
                view.eth0_vips = on(ETH0);
                view.local_vips = on(DUMMY);
                view.services.clone_from(&k.services);
                view.loop_guards =
                    k.rules.as_ref().map(|r| r.loop_guards.clone()).unwrap_or_default();
                view.proxy = self
                    .dataplanes
                    .get(&i)
                    .filter(|_| fabric.notify.contains_key(&h.address))
                    .and_then(|d| d.proxy_port.map(|p| (p, d.proxy_backends.clone())));
                view
            })
            .collect()
    }

    fn power_on(&mut self, world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        if let Some(launch) = held(&self.shared.launches).get_mut(&self.addresses[h]) {
            launch.clock = world.clock(h);
            launch.refuse_until = world.refusing_until(h);
        }
        self.sim.bounce(self.addresses[h]);
    }

    fn power_off(&mut self, _world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        let ip = self.addresses[h];
        self.sim.crash(ip);
        let mut f = lock(&self.shared.fabric);
        f.kernels.remove(&ip);
        f.notify.remove(&ip);
        held(&self.shared.controls).remove(&ip);
    }

    fn stop(&mut self, _world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        self.control(h, HostControl::Daemon(Control::Stop));
    }

    fn start(&mut self, _world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        self.control(h, HostControl::Start);
    }

    fn crash(&mut self, _world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        // The observer takes the daemon for gone now; what it says until its host has
        // carried out the kill is not heard.
        lock(&self.shared.fabric).next_incarnation(self.addresses[h]);
        self.control(h, HostControl::Crash);
    }

    fn network_changed(&mut self, world: &World, _obs: &mut Observer, _now: Instant) {
        self.links(world);
    }

    fn link(&mut self, world: &World, _obs: &mut Observer, _now: Instant, h: usize, up: bool) {
        self.links(world);
        if let Some(k) = lock(&self.shared.fabric).kernels.get_mut(&self.addresses[h]) {
            k.link_up = up;
        }
        self.notify(h, controller::link_event(up));
    }

    fn api_server(&mut self, _: &World, _: &mut Observer, _: Instant, h: usize, api: ApiServer) {
        self.control(h, HostControl::Api(api));
    }

    fn clock_changed(&mut self, world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        let clock = world.clock(h);
        if let Some(launch) = held(&self.shared.launches).get_mut(&self.addresses[h]) {
            launch.clock = clock;
        }
        self.control(h, HostControl::Daemon(Control::Clock(clock)));
    }

    fn remove_vips(&mut self, _world: &World, _now: Instant, h: usize) -> Vec<VirtualIp> {
        let mut f = lock(&self.shared.fabric);
        let Some(k) = f.kernels.get_mut(&self.addresses[h]) else { return Vec::new() };
        let (gone, kept) = std::mem::take(&mut k.addresses).into_iter().partition(|a| a.0 == ETH0);
        k.addresses = kept;
        let gone: BTreeSet<_> = gone;
        gone.into_iter().map(|(_, addr, prefix_len)| VirtualIp { addr, prefix_len }).collect()
    }

    fn vips_removed(
        &mut self,
        _world: &World,
        _obs: &mut Observer,
        _now: Instant,
        h: usize,
        vips: &[VirtualIp],
    ) {
        for vip in vips {
            self.notify(h, controller::address_removed(vip.addr, vip.prefix_len));
        }
    }

    fn refuse_kernel(&mut self, world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        if let Some(k) = lock(&self.shared.fabric).kernels.get_mut(&self.addresses[h]) {
            k.refuse_until = world.refusing_until(h);
        }
    }

    fn reload(
        &mut self,
        _world: &World,
        _obs: &mut Observer,
        _now: Instant,
        h: usize,
        file: &ClusterConfig,
    ) {
        let Some(k) = file.enabled_keepalived().cloned() else { return };
        let port = file.spec.api.port;
        if let Some(launch) = held(&self.shared.launches).get_mut(&self.addresses[h]) {
            launch.keepalived = k.clone();
            launch.api_port = port;
        }
        self.control(h, HostControl::Daemon(Control::Reload(Box::new(k), port)));
    }
}

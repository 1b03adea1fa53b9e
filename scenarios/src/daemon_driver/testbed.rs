//! The faults carried out on turmoil's hosts: what the world leaves to the driver
//! ([`Testbed`]): power (turmoil's crash and bounce), daemons (controls to the hosts),
//! partitions, cuts, loss and delay as turmoil's links, the simulated kernels' links,
//! VIPs and refusals.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cplb_core::config::ClusterConfig;
use cplb_core::time::Instant;
use cplb_sim::{ApiServer, Observer, SimSpec, Testbed, World};

use super::controller::{self, Control};
use super::fabric::{ETH0, lock};
use super::host::{HostControl, Shared, held};
use super::{LATENCY, dilated};

/// The turmoil simulation and what the runner shares with its hosts.
pub(super) struct Bed<'a> {
    pub(super) sim: turmoil::Sim<'a>,
    pub(super) shared: Shared,
    pub(super) addresses: Vec<IpAddr>,
    names: Vec<String>,
    /// The one-way links cut in turmoil now.
    severed: BTreeSet<(usize, usize)>,
}

impl<'a> Bed<'a> {
    pub(super) fn new(sim: turmoil::Sim<'a>, shared: Shared, spec: &SimSpec) -> Self {
        let addresses = spec.hosts.iter().map(|h| h.address).collect();
        let names = spec.hosts.iter().map(|h| h.name.clone()).collect();
        Self { sim, shared, addresses, names, severed: BTreeSet::new() }
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
    fn power_on(&mut self, world: &World, _obs: &mut Observer, _now: Instant, h: usize) {
        if let Some(launch) = held(&self.shared.launches).get_mut(&self.addresses[h]) {
            launch.clock = world.clock(h);
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

    fn remove_vips(&mut self, _world: &World, obs: &mut Observer, now: Instant, h: usize) {
        let removed: Vec<(IpAddr, u8)> = {
            let mut f = lock(&self.shared.fabric);
            let Some(k) = f.kernels.get_mut(&self.addresses[h]) else { return };
            let gone = k.addresses.iter().filter(|(i, _, _)| *i == ETH0).map(|(_, a, p)| (*a, *p));
            let gone: Vec<(IpAddr, u8)> = gone.collect();
            k.addresses.retain(|(i, _, _)| *i != ETH0);
            gone
        };
        for (addr, prefix_len) in removed {
            obs.vip(h, addr, false);
            obs.note(now, format!("{} eth0: {addr} deleted by hand", self.names[h]));
            self.notify(h, controller::address_removed(addr, prefix_len));
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

//! The engine's daemon driver: it feeds each controller's `Node` and carries out what the
//! node asks on the host's kernel model, as cplbd's driver does on Linux (outputs drained
//! after every input, commands one at a time with their results fed back at once).

use core::net::SocketAddr;
use core::time::Duration;

use cplb_core::lb::ProbeId;
use cplb_core::node::{Command, Event, Node};
use cplb_core::time::Instant;

use super::host::{self, Daemon, ETH0};
use super::segment::Frame;
use super::{Ev, LATENCY, Lan};
use crate::observe::Observer;
use crate::world::{ApiServer, World};

impl Lan {
    /// Starts a daemon on controller `i` with its file.
    pub(super) fn start_daemon(&mut self, i: usize, world: &World, obs: &mut Observer) {
        let Some(file) = world.files().of(i) else { return };
        self.incarnations += 1;
        let local = world.clock(i).local(self.now);
        let cluster = world.files().cluster_addresses(i);
        let config = host::node_config(file, &self.hosts[i].spec, self.spec.vrrp, &cluster);
        let Some(node) = config.and_then(|c| Node::new(local, c).ok()) else { return };
        self.hosts[i].daemon = Some(Daemon { node, incarnation: self.incarnations });
        obs.daemon_started(i);
        self.pump(i, world, obs);
    }

    /// Host `i`'s timer fired (if it is still the one asked for).
    pub(super) fn wake(&mut self, i: usize, generation: u64, world: &World, obs: &mut Observer) {
        let h = &mut self.hosts[i];
        if h.wake.map(|(_, g)| g) != Some(generation) {
            return;
        }
        h.wake = None;
        let local = world.clock(i).local(self.now);
        if let Some(d) = h.daemon.as_mut() {
            d.node.handle_timeout(local);
        }
        self.pump(i, world, obs);
    }

    /// A probe's result, for the daemon that asked for it.
    pub(super) fn probe_result(
        &mut self,
        i: usize,
        incarnation: u64,
        id: ProbeId,
        ok: bool,
        world: &World,
        obs: &mut Observer,
    ) {
        let local = world.clock(i).local(self.now);
        let Some(d) = self.hosts[i].daemon.as_mut().filter(|d| d.incarnation == incarnation) else {
            return;
        };
        d.node.handle_probe_result(local, id, ok);
        self.pump(i, world, obs);
    }

    /// Carries out everything the host's daemon asks for, until it asks nothing more.
    pub(super) fn pump(&mut self, i: usize, world: &World, obs: &mut Observer) {
        loop {
            let local = world.clock(i).local(self.now);
            let Some(d) = self.hosts[i].daemon.as_mut() else {
                return;
            };
            let transmits: Vec<_> = std::iter::from_fn(|| d.node.poll_transmit()).collect();
            let incarnation = d.incarnation;
            for t in transmits {
                let frame = Frame::Vrrp { src: t.src, dst: t.dst, payload: t.payload };
                if t.dst.is_multicast() {
                    self.broadcast(i, &frame, world);
                } else if let Some(to) = self.host_by_addr(t.dst) {
                    self.send(i, to, &frame, world);
                }
            }
            // One at a time, as cplbd does: a result may withdraw the commands after it.
            let mut busy = false;
            while let Some(c) = self.hosts[i].daemon.as_mut().and_then(|d| d.node.poll_command()) {
                busy = true;
                self.command(i, incarnation, local, c, world, obs);
            }
            let Some(d) = self.hosts[i].daemon.as_mut() else { return };
            let events: Vec<_> = std::iter::from_fn(|| d.node.poll_event()).collect();
            if !busy && events.is_empty() {
                break;
            }
            for e in events {
                self.event(i, &e, obs);
            }
        }
        if let Some(d) = self.hosts[i].daemon.as_ref() {
            obs.node_refusing(i, !d.node.refusals().is_empty());
        }
        self.reschedule(i, world, obs);
    }

    /// Carries out one command of host `i`'s daemon and reports the result to it.
    fn command(
        &mut self,
        i: usize,
        incarnation: u64,
        local: Instant,
        c: Command,
        world: &World,
        obs: &mut Observer,
    ) {
        match &c {
            Command::Probe(p) => return self.probe(i, incarnation, p.id, p.server, world),
            Command::Announce { addresses, .. } => {
                let mac = self.hosts[i].mac;
                for ip in addresses.clone() {
                    self.broadcast(i, &Frame::Garp { mac, ip }, world);
                }
                return;
            }
            _ => {}
        }
        let refusing = world.refuses(i, self.now);
        let result = host::execute(&mut self.hosts[i], refusing, &c);
        if result.is_ok() {
            match &c {
                Command::AddAddress { ifindex: ETH0, vip, .. } => {
                    obs.vip(self.now, i, vip.addr, true);
                }
                Command::RemoveAddress { ifindex: ETH0, vip, .. } => {
                    obs.vip(self.now, i, vip.addr, false);
                }
                Command::SetServices { services, .. } => obs.kernel_services(i, services),
                _ => {}
            }
        }
        if let (Some(id), Some(d)) = (c.id(), self.hosts[i].daemon.as_mut()) {
            d.node.handle_command_result(local, id, result);
        }
    }

    /// Passes an event of host `i`'s node to the observer; a data-plane change also sets
    /// the proxy the daemon runs.
    fn event(&mut self, i: usize, e: &Event, obs: &mut Observer) {
        if let Event::DataPlaneChanged(dp) = e {
            let h = &mut self.hosts[i];
            h.dataplane.proxy_port = dp.proxy_port;
            h.dataplane.proxy_backends.clone_from(&dp.proxy_backends);
        }
        let node = self.hosts[i].daemon.as_ref().map(|d| &d.node);
        obs.node_event(self.now, i, e, |id| {
            node.and_then(|n| n.instance(id)).and_then(|c| c.virtual_ips.first()).map(|v| v.addr)
        });
    }

    fn reschedule(&mut self, i: usize, world: &World, obs: &mut Observer) {
        let clock = world.clock(i);
        let h = &mut self.hosts[i];
        let Some(local) = h.daemon.as_ref().and_then(|d| d.node.poll_timeout()) else {
            h.wake = None;
            return;
        };
        if local < clock.local(self.now) {
            let detail =
                format!("{}'s daemon asked to be woken at {local}, before its now", h.spec.name);
            obs.violate(self.now, "timeout_not_in_past", detail);
        }
        let at = clock.sim(local).max(self.now);
        if self.hosts[i].wake.map(|(t, _)| t) == Some(at) {
            return;
        }
        let generation = self.queue.generation();
        self.hosts[i].wake = Some((at, generation));
        self.push(at, Ev::Wake { host: i, generation });
    }

    /// A health probe: refused at once by a host whose API server is down, unanswered by a
    /// host that is off or cut off or whose API server hangs (the checker times it out).
    fn probe(
        &mut self,
        from: usize,
        incarnation: u64,
        id: ProbeId,
        server: SocketAddr,
        world: &World,
    ) {
        let Some(to) = self.host_by_addr(server.ip()) else {
            return;
        };
        let api = world.api_server(to);
        if !world.network().both_ways(from, to) || api == ApiServer::Hung {
            return;
        }
        let ok = api == ApiServer::Up;
        let rtt = if from == to { Duration::from_micros(50) } else { LATENCY * 2 };
        self.push(self.now + rtt, Ev::ProbeResult { host: from, incarnation, id, ok });
    }
}

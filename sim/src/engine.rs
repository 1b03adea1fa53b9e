//! The discrete-event engine: an event heap ordered by (time, insertion), time jumping from
//! event to event, one seeded RNG for every random choice, no wall clock.

use core::cmp::Reverse;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use cplb_core::config::{ClusterConfig, Keepalived, LoadBalancerMode};
use cplb_core::lb::{ProbeId, ServiceKey};
use cplb_core::node::{self, Command, Event as NodeEvent};
use cplb_core::time::Instant;
use cplb_core::vrrp::{self, Event, Incoming, InstanceId, IpHeader, Priority, State, Version};
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::failover::Failovers;
use crate::host::{self, ETH0, Host};
use crate::outcome::{AttemptRecord, ClientStats, Outcome, Sample, Transition, Violation};
use crate::spec::{Fault, ReloadConfig, SimSpec};
use crate::trace::Trace;

/// One-way latency on the segment when no delay fault is active.
const LATENCY: Duration = Duration::from_micros(100);
/// A host re-resolves an ARP entry not confirmed for this long (Linux base_reachable_time).
const ARP_REACHABLE: Duration = Duration::from_secs(30);
/// Hops a direct-routed packet may take before we call it a forwarding loop.
const MAX_HOPS: usize = 8;
/// Steps a run may take (a livelock guard).
const MAX_STEPS: u64 = 200_000_000;

#[derive(Debug, Clone)]
enum Frame {
    Vrrp { src: IpAddr, dst: IpAddr, payload: Vec<u8> },
    Garp { mac: u64, ip: IpAddr },
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        to: usize,
        frame: Frame,
    },
    Wake {
        host: usize,
        generation: u64,
    },
    ProbeResult {
        host: usize,
        incarnation: u64,
        id: ProbeId,
        ok: bool,
    },
    Connect {
        traffic: usize,
    },
    Fault(usize),
    Boot(usize),
    /// A kernel's refusal of commands ends.
    KernelAccepts(usize),
    End,
}

#[derive(Debug)]
struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Network conditions.
#[derive(Debug, Clone, Default)]
struct Net {
    /// Partition group of each host; equal groups can talk.
    group: Vec<usize>,
    cuts: BTreeSet<(usize, usize)>,
    loss: f64,
    delay: Option<(Duration, Duration)>,
    duplicate: f64,
}

/// Per-instance tracking for reports and invariants.
#[derive(Debug, Clone, Default)]
struct InstanceTrack {
    /// The instance's VIPs (the first identifies it across clusters).
    vips: Vec<IpAddr>,
    dual_since: Option<Instant>,
    master_down: Duration,
    advert: Duration,
}

/// A running simulation.
#[derive(Debug)]
pub struct Sim {
    spec: SimSpec,
    seed: u64,
    keepalived: Option<Keepalived>,
    api_port: u16,
    now: Instant,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    rng: Pcg64Mcg,
    hosts: Vec<Host>,
    net: Net,
    incarnations: u64,
    trace: Trace,
    instances: Vec<InstanceTrack>,
    /// Masters and failovers per instance.
    failovers: Failovers,
    clients: Vec<ClientStats>,
    violations: Vec<Violation>,
    last_fault_at: Option<Instant>,
    last_scheduled_fault: Option<Instant>,
    /// Per master host: since when its data plane has disagreed with the truth.
    dataplane_mismatch: BTreeMap<usize, (Instant, String)>,
    truth_changed_at: Instant,
    loops: u64,
    dual_master_episodes: u64,
    /// For the reports: every state change and connection attempt.
    transitions: Vec<Transition>,
    attempts: Vec<AttemptRecord>,
    /// The switch's MAC table: MAC → the host (port) it was last seen from.
    switch: BTreeMap<u64, usize>,
    /// Directors do not schedule frames from other directors (switchable to show the loop).
    loop_guard: bool,
    /// Per instance: since when the convergence predicate has been false.
    unconverged_since: Vec<Option<Instant>>,
    /// Instances whose VIP answered a client at least once.
    served: Vec<bool>,
    /// Something the invariants look at changed since they were last evaluated.
    dirty: bool,
    /// The convergence bound after the last fault has been passed.
    converging: bool,
    views_before: Option<String>,
    samples: Vec<Sample>,
    steps: u64,
}

impl Sim {
    /// Prepares a run of `spec` with `seed`. Every random choice comes from the seed.
    pub fn new(spec: SimSpec, seed: u64) -> Self {
        let keepalived = spec.config.enabled_keepalived().cloned();
        let hosts: Vec<Host> =
            spec.hosts.iter().enumerate().map(|(i, h)| Host::new(h.clone(), i)).collect();
        let instances: Vec<InstanceTrack> = instances(&spec)
            .into_iter()
            .map(|i| InstanceTrack {
                vips: i.vips,
                master_down: i.master_down,
                advert: i.advert,
                ..InstanceTrack::default()
            })
            .collect();
        let served = vec![false; instances.len()];
        let failovers = Failovers::new(instances.iter().map(|t| t.master_down));
        let clients = spec.traffic.iter().map(|_| ClientStats::default()).collect();
        let net = Net { group: vec![0; hosts.len()], ..Net::default() };
        let api_port = spec.config.spec.api.port;
        let last_scheduled_fault = spec
            .faults
            .iter()
            .map(|f| match f.fault {
                Fault::KernelRefuses(_, d) => Instant::ZERO + f.at + d,
                _ => Instant::ZERO + f.at,
            })
            .max();
        let mut sim = Self {
            seed,
            keepalived,
            api_port,
            now: Instant::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Pcg64Mcg::seed_from_u64(seed),
            hosts,
            net,
            incarnations: 0,
            trace: Trace::default(),
            instances,
            failovers,
            clients,
            violations: Vec::new(),
            last_fault_at: None,
            last_scheduled_fault,
            dataplane_mismatch: BTreeMap::new(),
            truth_changed_at: Instant::ZERO,
            loops: 0,
            dual_master_episodes: 0,
            transitions: Vec::new(),
            attempts: Vec::new(),
            switch: BTreeMap::new(),
            served,
            loop_guard: true,
            unconverged_since: Vec::new(),
            dirty: true,
            converging: false,
            views_before: None,
            samples: Vec::new(),
            steps: 0,
            spec,
        };
        sim.boot();
        sim
    }

    fn boot(&mut self) {
        for i in 0..self.hosts.len() {
            let up_at = self.hosts[i].spec.up_at;
            if up_at.is_zero() {
                if self.hosts[i].is_controller() {
                    self.start_daemon(i);
                }
            } else {
                self.hosts[i].power_off();
                self.push(Instant::ZERO + up_at, Ev::Boot(i));
            }
        }
        let faults: Vec<Instant> = self.spec.faults.iter().map(|f| Instant::ZERO + f.at).collect();
        for (i, at) in faults.into_iter().enumerate() {
            self.push(at, Ev::Fault(i));
        }
        let sources = self.spec.traffic.len() as f64;
        let starts: Vec<(f64, Duration)> =
            self.spec.traffic.iter().map(|t| (t.rate, t.start)).collect();
        for (i, (rate, start)) in starts.into_iter().enumerate() {
            if rate > 0.0 {
                // Spread the sources' first attempts over one period.
                let offset = (i as f64 + 1.0) / (rate * (sources + 1.0));
                self.push(
                    Instant::ZERO + start + Duration::from_secs_f64(offset),
                    Ev::Connect { traffic: i },
                );
            }
        }
        let end = Instant::ZERO + self.spec.duration;
        self.push(end, Ev::End);
    }

    /// Turns the direct-routing loop guard off (see `cplb_core::lb::ServiceSpec`), to show
    /// the loop k0s issue 5178 describes. On by default.
    pub fn set_loop_guard(&mut self, on: bool) {
        self.loop_guard = on;
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Outcome {
        while let Some(Reverse(q)) = self.queue.pop() {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                self.violate("livelock", format!("more than {MAX_STEPS} events"));
                break;
            }
            self.now = q.at;
            if matches!(q.ev, Ev::End) {
                break;
            }
            self.handle(q.ev);
            self.check_invariants();
        }
        self.finish()
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued { at, seq: self.seq, ev }));
    }

    fn random(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver { to, frame } => self.deliver(to, frame),
            Ev::Wake { host, generation } => {
                let h = &mut self.hosts[host];
                if h.wake.map(|(_, g)| g) != Some(generation) {
                    return;
                }
                h.wake = None;
                let local = h.clock.local(self.now);
                if let Some(d) = h.daemon.as_mut() {
                    d.node.handle_timeout(local);
                }
                self.pump(host);
            }
            Ev::ProbeResult { host, incarnation, id, ok } => {
                let h = &mut self.hosts[host];
                let local = h.clock.local(self.now);
                let Some(d) = h.daemon.as_mut().filter(|d| d.incarnation == incarnation) else {
                    return;
                };
                d.node.handle_probe_result(local, id, ok);
                self.pump(host);
            }
            Ev::Connect { traffic } => self.connect(traffic),
            Ev::Fault(i) => self.fault(i),
            Ev::Boot(h) => {
                let name = self.hosts[h].spec.name.clone();
                self.trace.push(self.now, format!("{name} boots"));
                self.power_on(h);
            }
            Ev::KernelAccepts(h) => {
                if self.hosts[h].refuse_until.is_some_and(|t| t <= self.now) {
                    let line = format!("{} kernel accepts commands again", self.hosts[h].spec.name);
                    self.trace.push(self.now, line);
                    self.truth_changed_at = self.now;
                    self.dirty = true;
                }
            }
            Ev::End => {}
        }
    }

    // --- the network --------------------------------------------------------------------

    fn connected(&self, a: usize, b: usize) -> bool {
        let (ha, hb) = (&self.hosts[a], &self.hosts[b]);
        a == b
            || (ha.powered
                && hb.powered
                && ha.link_up
                && hb.link_up
                && self.net.group[a] == self.net.group[b]
                && !self.net.cuts.contains(&(a, b)))
    }

    fn both_ways(&self, a: usize, b: usize) -> bool {
        self.connected(a, b) && self.connected(b, a)
    }

    fn send(&mut self, from: usize, to: usize, frame: &Frame) {
        if !self.hosts[from].link_up {
            return;
        }
        // The switch learns the sender's port from every frame it forwards.
        let mac = self.hosts[from].mac;
        if self.switch.get(&mac) != Some(&from) {
            self.switch.insert(mac, from);
        }
        if !self.connected(from, to) {
            return;
        }
        let copies =
            if self.net.duplicate > 0.0 && self.random() < self.net.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if self.net.loss > 0.0 && self.random() < self.net.loss {
                continue;
            }
            let latency = match self.net.delay {
                Some((min, max)) => min + (max - min).mul_f64(self.random()),
                None => LATENCY,
            };
            self.push(self.now + latency, Ev::Deliver { to, frame: frame.clone() });
        }
    }

    fn broadcast(&mut self, from: usize, frame: &Frame) {
        for to in 0..self.hosts.len() {
            if to != from {
                self.send(from, to, frame);
            }
        }
    }

    fn deliver(&mut self, to: usize, frame: Frame) {
        let h = &mut self.hosts[to];
        if !h.powered || !h.link_up {
            return;
        }
        match frame {
            Frame::Garp { mac, ip } => {
                // Linux (arp_accept=0) updates an existing entry from a gratuitous ARP.
                if let Some(entry) = h.arp.get_mut(&ip) {
                    *entry = (mac, self.now);
                }
            }
            Frame::Vrrp { src, dst, payload } => {
                let local = h.clock.local(self.now);
                if let Some(d) = h.daemon.as_mut() {
                    let header = IpHeader { src, dst, ttl: 255 };
                    d.node.handle_packet(
                        local,
                        Incoming { ifindex: ETH0, header, payload: &payload },
                    );
                    self.pump(to);
                }
            }
        }
    }

    // --- the daemon driver --------------------------------------------------------------

    fn start_daemon(&mut self, i: usize) {
        self.incarnations += 1;
        let local = self.hosts[i].clock.local(self.now);
        let spec = &self.hosts[i].spec;
        // Peers are the controllers of the same cluster (same original configuration: a
        // reload rolling out host by host does not split it).
        let original = spec.config.as_ref().unwrap_or(&self.spec.config);
        let cluster: Vec<IpAddr> = self
            .hosts
            .iter()
            .filter(|h| {
                h.is_controller() && h.spec.config.as_ref().unwrap_or(&self.spec.config) == original
            })
            .map(|h| h.spec.address)
            .collect();
        let config = self.config_of(i);
        let keepalived = config.enabled_keepalived().cloned();
        let api_port = config.spec.api.port;
        let daemon = host::node_config(config, spec, self.spec.vrrp, &cluster)
            .and_then(|c| host::start_daemon(c, local, self.incarnations));
        let h = &mut self.hosts[i];
        h.daemon = daemon;
        h.keepalived = keepalived;
        h.api_port = api_port;
        h.cluster = cluster;
        self.pump(i);
    }

    /// Carries out everything the host's daemon asks for, until it asks nothing more.
    fn pump(&mut self, i: usize) {
        loop {
            let now = self.now;
            let local = self.hosts[i].clock.local(now);
            let Some(d) = self.hosts[i].daemon.as_mut() else {
                return;
            };
            let transmits: Vec<_> = std::iter::from_fn(|| d.node.poll_transmit()).collect();
            let incarnation = d.incarnation;
            for t in transmits {
                let frame = Frame::Vrrp { src: t.src, dst: t.dst, payload: t.payload };
                if t.dst.is_multicast() {
                    self.broadcast(i, &frame);
                } else if let Some(to) = self.host_by_addr(t.dst) {
                    self.send(i, to, &frame);
                }
            }
            // One at a time, as cplbd does: a result may withdraw the commands after it.
            let mut busy = false;
            while let Some(c) = self.hosts[i].daemon.as_mut().and_then(|d| d.node.poll_command()) {
                busy = true;
                self.command(i, incarnation, local, c);
            }
            let Some(d) = self.hosts[i].daemon.as_mut() else { return };
            let events: Vec<_> = std::iter::from_fn(|| d.node.poll_event()).collect();
            if !busy && events.is_empty() {
                break;
            }
            for e in events {
                self.event(i, e);
            }
        }
        self.reschedule(i);
    }

    /// Carries out one command of host `i`'s daemon and reports the result to it.
    fn command(&mut self, i: usize, incarnation: u64, local: Instant, c: Command) {
        match &c {
            Command::Probe(p) => return self.probe(i, incarnation, p.id, p.server),
            Command::Announce { addresses, .. } => {
                let mac = self.hosts[i].mac;
                for ip in addresses.clone() {
                    self.broadcast(i, &Frame::Garp { mac, ip });
                }
                return;
            }
            Command::RemoveAddress { ifindex: ETH0, vip, .. } => {
                let h = &self.hosts[i];
                let stale = h.vips_on_eth0.contains(&vip.addr)
                    && h.daemon.as_ref().is_some_and(|d| !d.node.holds_address(ETH0, vip.addr));
                if stale && h.refuse_until.is_none_or(|t| self.now >= t) {
                    let line =
                        format!("{} reconcile: removed stale {} from eth0", h.spec.name, vip.addr);
                    self.trace.push(self.now, line);
                }
            }
            _ => {}
        }
        self.dirty = true;
        let now = self.now;
        let result = host::execute(&mut self.hosts[i], now, &c);
        if let Err(e) = &result {
            let line = format!("{} kernel refuses: {}", self.hosts[i].spec.name, command_text(&c));
            self.trace.push(self.now, format!("{line} ({e})"));
        }
        if let (Some(id), Some(d)) = (c.id(), self.hosts[i].daemon.as_mut()) {
            d.node.handle_command_result(local, id, result);
        }
    }

    /// Records what the trace, the reports and the invariants need of an event.
    fn event(&mut self, i: usize, e: NodeEvent) {
        match e {
            NodeEvent::Vrrp(Event::StateChanged { instance, from, to, cause }) => {
                self.dirty = true;
                let inst = self.instance_index(i, instance).unwrap_or(0);
                let name = &self.hosts[i].spec.name;
                let line = format!("{name} k0s-vip-{inst} {from} -> {to} ({})", cause_text(&cause));
                self.trace.push(self.now, line);
                self.transitions.push(Transition { at: self.now, host: i, instance: inst, to });
                self.master_changed(inst, i, to == State::Master);
            }
            NodeEvent::ServerHealth { server, healthy } => {
                let state = if healthy { "healthy" } else { "unhealthy" };
                let line = format!("{} health {} {state}", self.hosts[i].spec.name, server.ip());
                self.trace.push(self.now, line);
            }
            NodeEvent::DataPlaneChanged(dp) => {
                self.dirty = true;
                let h = &mut self.hosts[i];
                h.dataplane.proxy_port = dp.proxy_port;
                h.dataplane.proxy_backends.clone_from(&dp.proxy_backends);
                let servers: Vec<String> = match h.keepalived.as_ref().map(Keepalived::mode) {
                    Some(LoadBalancerMode::Ipvs) => dp
                        .services
                        .iter()
                        .map(|s| {
                            let ips: Vec<IpAddr> =
                                s.real_servers.iter().map(|r| r.addr.ip()).collect();
                            format!("{}:{ips:?}", s.key.vip)
                        })
                        .collect(),
                    _ => dp.proxy_backends.iter().map(|b| b.ip().to_string()).collect(),
                };
                let line = format!("{} dataplane {}", h.spec.name, servers.join(" "));
                self.trace.push(self.now, line);
            }
            NodeEvent::KernelDrift { object } => {
                let line = format!(
                    "{} reconcile: {object} changed by someone else, restoring",
                    self.hosts[i].spec.name
                );
                self.trace.push(self.now, line);
            }
            NodeEvent::KernelRecovered { object, attempts } => {
                let line = format!(
                    "{} reconcile: {object} set after {attempts} refusals",
                    self.hosts[i].spec.name
                );
                self.trace.push(self.now, line);
            }
            _ => {}
        }
    }

    /// The engine's index of a host's instance (instances are matched across hosts by
    /// their first VIP).
    fn instance_index(&self, i: usize, id: InstanceId) -> Option<usize> {
        let d = self.hosts[i].daemon.as_ref()?;
        let first = d.node.instances().find(|(x, _)| *x == id)?.1.virtual_ips.first()?.addr;
        self.instances.iter().position(|t| t.vips.first() == Some(&first))
    }

    fn reschedule(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        let Some(local) = h.daemon.as_ref().and_then(|d| d.node.poll_timeout()) else {
            h.wake = None;
            return;
        };
        if local < h.clock.local(self.now) {
            let name = h.spec.name.clone();
            self.violate(
                "timeout_not_in_past",
                format!("{name}'s daemon asked to be woken at {local}, before its now"),
            );
        }
        let h = &mut self.hosts[i];
        let at = h.clock.sim(local).max(self.now);
        if h.wake.map(|(t, _)| t) == Some(at) {
            return;
        }
        self.seq += 1;
        let generation = self.seq;
        self.hosts[i].wake = Some((at, generation));
        self.push(at, Ev::Wake { host: i, generation });
    }

    /// A health probe: refused at once by a host whose API server is down, unanswered by a
    /// host that is off or cut off or whose API server hangs (the checker times it out).
    fn probe(&mut self, from: usize, incarnation: u64, id: ProbeId, server: SocketAddr) {
        let Some(to) = self.host_by_addr(server.ip()) else {
            return;
        };
        if !self.both_ways(from, to) || self.hosts[to].apiserver_hung {
            return;
        }
        let ok = self.hosts[to].apiserver_up;
        let rtt = if from == to { Duration::from_micros(50) } else { LATENCY * 2 };
        self.push(self.now + rtt, Ev::ProbeResult { host: from, incarnation, id, ok });
    }

    fn host_by_addr(&self, ip: IpAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.spec.address == ip)
    }

    /// Tracks an instance's masters and records failovers (see [`Failovers`]).
    fn master_changed(&mut self, inst: usize, host: usize, is_master: bool) {
        self.failovers.master_changed(self.now, inst, host, is_master, self.last_fault_at);
    }

    // --- API traffic ---------------------------------------------------------------------

    fn connect(&mut self, traffic: usize) {
        let spec = self.spec.traffic[traffic].clone();
        let period = Duration::from_secs_f64(1.0 / spec.rate);
        self.push(self.now + period, Ev::Connect { traffic });
        let from = spec.from;
        if !self.hosts[from].powered {
            return;
        }
        let Some(vip) = spec.vip.or_else(|| self.first_vip()) else {
            return;
        };
        let result = self.try_connection(from, vip);
        self.attempts.push(AttemptRecord { at: self.now, source: traffic, ok: result.is_ok() });
        let stats = &mut self.clients[traffic];
        stats.attempts += 1;
        let name = &self.hosts[from].spec.name;
        match result {
            Ok(via) => {
                if let Some(start) = stats.outage_start.take() {
                    let outage = self.now - start;
                    stats.longest_outage = stats.longest_outage.max(outage);
                    self.trace.push(
                        self.now,
                        format!(
                            "{name} API via {vip} answers again (outage {:.3}s)",
                            outage.as_secs_f64()
                        ),
                    );
                }
                self.hosts[from].arp.entry(vip).and_modify(|e| e.1 = self.now);
                self.answered(vip, via);
            }
            Err(why) => {
                stats.failed += 1;
                stats.last_failure = Some(self.now);
                if stats.outage_start.is_none() {
                    stats.outage_start = Some(self.now);
                    self.trace.push(self.now, format!("{name} API via {vip} fails: {why}"));
                }
            }
        }
    }

    fn first_vip(&self) -> Option<IpAddr> {
        self.keepalived.as_ref()?.vrrp_instances.first()?.virtual_ips.first().map(|c| c.addr)
    }

    /// A TCP connection from host `from` to `vip`:port; returns the host that took it.
    fn try_connection(&mut self, from: usize, vip: IpAddr) -> Result<usize, &'static str> {
        let entry = self.hosts[from].arp.get(&vip).copied();
        let mac = match entry {
            Some((mac, confirmed))
                if self.now.saturating_duration_since(confirmed) < ARP_REACHABLE =>
            {
                mac
            }
            stale => {
                // Re-resolve: a stale entry is probed first (unicast), then a broadcast asks.
                let confirmed = stale.and_then(|(mac, _)| {
                    let t = self.hosts.iter().position(|h| h.mac == mac)?;
                    (self.both_ways(from, t) && self.hosts[t].vips_on_eth0.contains(&vip))
                        .then_some(mac)
                });
                let mac = match confirmed {
                    Some(mac) => mac,
                    None => {
                        let holders: Vec<usize> = (0..self.hosts.len())
                            .filter(|&t| {
                                self.hosts[t].vips_on_eth0.contains(&vip) && self.both_ways(from, t)
                            })
                            .collect();
                        if holders.is_empty() {
                            self.hosts[from].arp.remove(&vip);
                            return Err("no ARP answer for the VIP");
                        }
                        // Several answers race; the last one to arrive wins.
                        let pick = (self.random() * holders.len() as f64) as usize;
                        self.hosts[holders[pick.min(holders.len() - 1)]].mac
                    }
                };
                self.hosts[from].arp.insert(vip, (mac, self.now));
                mac
            }
        };
        // The switch forwards to the port it learned the MAC on, or floods (every port,
        // where only the owner of the MAC takes the frame) when it has not seen it.
        let learned = self.switch.get(&mac).copied().filter(|&p| self.hosts[p].mac == mac);
        let Some(t) = learned.or_else(|| self.hosts.iter().position(|h| h.mac == mac)) else {
            return Err("unknown MAC");
        };
        if !self.both_ways(from, t) {
            return Err("the ARP entry points at an unreachable host");
        }
        if !self.hosts[t].accepts(vip) {
            return Err("the ARP entry points at a host without the VIP");
        }
        let key = ServiceKey { vip, port: self.api_port };
        let client = self.hosts[from].spec.address;
        let h = &self.hosts[t];
        if h.ipvs.contains_key(&key) {
            return self.direct_route(from, t, key, client).map(|_| t);
        }
        let redirected = h.dataplane.redirects.contains(&SocketAddr::new(vip, self.api_port));
        if redirected {
            return self.proxy(t, client).map(|_| t);
        }
        if h.apiserver_up { Ok(t) } else { Err("the VIP holder's API server refuses") }
    }

    /// IPVS direct routing from `at`: schedule, forward to the real server's MAC; a host
    /// that also has the service schedules again (the k0s #5178 loop).
    fn direct_route(
        &mut self,
        client_host: usize,
        mut at: usize,
        key: ServiceKey,
        client: IpAddr,
    ) -> Result<(), &'static str> {
        for _ in 0..MAX_HOPS {
            let now = self.now;
            let Some(vs) = self.hosts[at].ipvs.get_mut(&key) else {
                // No service here: the VIP is local (dummy/lo), the API server answers directly.
                return self.local_answer(at, client_host);
            };
            let Some(server) = vs.schedule(now, client) else {
                return Err("no real server");
            };
            vs.connection_closed(now, client, server);
            let Some(next) = self.host_by_addr(server.ip()) else {
                return Err("unknown real server");
            };
            if next == at {
                return self.local_answer(at, client_host);
            }
            if !self.both_ways(at, next) || !self.hosts[next].accepts(key.vip) {
                return Err("real server unreachable");
            }
            // The loop guard (see cplb_core::lb::ServiceSpec): a frame from a real server's
            // MAC is not scheduled again; the VIP is local, the API server answers.
            if self.loop_guard {
                return self.local_answer(next, client_host);
            }
            at = next;
        }
        self.loops += 1;
        if self.loops == 1 {
            self.violate(
                "no_forwarding_loop",
                format!("a packet to {}:{} was forwarded {MAX_HOPS} times", key.vip, key.port),
            );
        }
        Err("forwarding loop")
    }

    /// The API server on `host` takes the connection and answers the client directly.
    fn local_answer(&self, host: usize, client_host: usize) -> Result<(), &'static str> {
        if !self.hosts[host].apiserver_up {
            return Err("real server's API server refuses");
        }
        if self.both_ways(host, client_host) { Ok(()) } else { Err("reply path cut") }
    }

    /// The userspace proxy on `at`: the node's scheduler picks, a failed dial tries the next.
    fn proxy(&mut self, at: usize, client: IpAddr) -> Result<(), &'static str> {
        let local = self.hosts[at].clock.local(self.now);
        let Some(d) = self.hosts[at].daemon.as_mut() else {
            return Err("connection refused: no proxy behind the redirect");
        };
        let backends = d.node.proxy_backends_for(local, client);
        if backends.is_empty() {
            return Err("proxy has no backend");
        }
        for server in backends {
            if let Some(b) = self.host_by_addr(server.ip())
                && self.both_ways(at, b)
                && self.hosts[b].apiserver_up
            {
                return Ok(());
            }
        }
        Err("proxy: every backend failed")
    }

    fn answered(&mut self, vip: IpAddr, via: usize) {
        let Some(inst) = self.instances.iter().position(|t| t.vips.contains(&vip)) else {
            return;
        };
        if let Some(s) = self.served.get_mut(inst) {
            *s = true;
        }
        self.failovers.answered(self.now, inst, via);
    }

    // --- faults ---------------------------------------------------------------------------

    fn fault(&mut self, index: usize) {
        if self.views_before.is_none() {
            self.views_before = Some(crate::views::render(self));
        }
        let fault = self.spec.faults[index].fault.clone();
        self.last_fault_at = Some(self.now);
        let names: Vec<String> = self.hosts.iter().map(|h| h.spec.name.clone()).collect();
        let text = crate::views::fault_text(&fault, &names);
        self.trace.push(self.now, format!("FAULT {text}"));
        match fault {
            Fault::PowerOff(h) => {
                self.hosts[h].power_off();
                self.forget_masters(h);
            }
            Fault::PowerOn(h) => self.power_on(h),
            Fault::Stop(h) => {
                let local = self.hosts[h].clock.local(self.now);
                if let Some(d) = self.hosts[h].daemon.as_mut() {
                    // cplbd resigns and removes every address and rule it set on SIGTERM.
                    d.node.shutdown(local);
                    self.pump(h);
                }
                self.daemon_gone(h);
            }
            Fault::Start(h) | Fault::Restart(h) => {
                if self.hosts[h].powered
                    && self.hosts[h].daemon.is_none()
                    && self.hosts[h].is_controller()
                {
                    self.start_daemon(h);
                }
            }
            Fault::Crash(h) => self.daemon_gone(h),
            Fault::Partition(groups) => {
                let mut group = vec![0; self.hosts.len()];
                for (g, members) in groups.iter().enumerate() {
                    for &m in members {
                        group[m] = g + 1;
                    }
                }
                self.net.group = group;
            }
            Fault::Cut { from, to } => {
                self.net.cuts.insert((from, to));
            }
            Fault::Heal => {
                self.net = Net { group: vec![0; self.hosts.len()], ..Net::default() };
                for h in &mut self.hosts {
                    h.link_up = true;
                }
                self.relink_all();
            }
            Fault::Loss(ratio) => self.net.loss = ratio,
            Fault::Delay(min, max) => self.net.delay = Some((min, max.max(min))),
            Fault::Duplicate(ratio) => self.net.duplicate = ratio,
            Fault::LinkDown(h) => {
                self.hosts[h].link_up = false;
                self.link_event(h, false);
            }
            Fault::LinkUp(h) => {
                self.hosts[h].link_up = true;
                self.link_event(h, true);
            }
            Fault::ApiserverDown(h) => self.hosts[h].apiserver_up = false,
            Fault::ApiserverUp(h) => {
                self.hosts[h].apiserver_up = true;
                self.hosts[h].apiserver_hung = false;
            }
            // Nothing is served, and a probe gets no answer: the checker times it out.
            Fault::ApiserverHang(h) => {
                self.hosts[h].apiserver_up = false;
                self.hosts[h].apiserver_hung = true;
            }
            Fault::ClockDrift(h, ppm) => {
                let now = self.now;
                self.hosts[h].clock.set_drift(now, ppm);
                self.reschedule(h);
            }
            Fault::VipRemoved(h) => {
                let vips: Vec<IpAddr> =
                    std::mem::take(&mut self.hosts[h].vips_on_eth0).into_iter().collect();
                let local = self.hosts[h].clock.local(self.now);
                for vip in vips {
                    let line = format!("{} eth0: {vip} deleted by hand", self.hosts[h].spec.name);
                    self.trace.push(self.now, line);
                    if let Some(d) = self.hosts[h].daemon.as_mut() {
                        d.node.handle_address(local, ETH0, vip, false);
                    }
                }
                self.pump(h);
            }
            Fault::KernelRefuses(h, d) => {
                let until = self.now + d;
                let host = &mut self.hosts[h];
                host.refuse_until = Some(host.refuse_until.map_or(until, |t| t.max(until)));
                self.push(until, Ev::KernelAccepts(h));
            }
            Fault::Reload(h, config) => self.reload(h, config),
        }
        self.truth_changed_at = self.now;
        self.dirty = true;
    }

    /// SIGHUP: the daemon reads its file again (a new one if the scenario wrote one).
    fn reload(&mut self, h: usize, config: ReloadConfig) {
        let name = self.hosts[h].spec.name.clone();
        match config {
            ReloadConfig::Invalid { error, .. } => {
                self.trace.push(self.now, format!("{name} reload refused: {error}"));
                return;
            }
            ReloadConfig::New(c) => self.hosts[h].file = Some(*c),
            ReloadConfig::Same => {}
        }
        let local = self.hosts[h].clock.local(self.now);
        let file = self.config_of(h).clone();
        let cluster = self.hosts[h].cluster.clone();
        let Some(config) = host::node_config(&file, &self.hosts[h].spec, self.spec.vrrp, &cluster)
        else {
            self.trace
                .push(self.now, format!("{name} reload refused: no load balancing configured"));
            return;
        };
        let h_ = &mut self.hosts[h];
        h_.keepalived = file.enabled_keepalived().cloned();
        h_.api_port = file.spec.api.port;
        let Some(d) = h_.daemon.as_mut() else { return };
        match d.node.handle_config(local, config) {
            Ok(r) => {
                let line = format!(
                    "{name} reload: {} kept, {} added, {} removed",
                    r.kept.len(),
                    r.added.len(),
                    r.removed.len()
                );
                self.trace.push(self.now, line);
            }
            Err(e) => self.trace.push(self.now, format!("{name} reload refused: {e}")),
        }
        self.pump(h);
    }

    /// The configuration file host `h` runs: the last reload's, its own, or the scenario's.
    fn config_of(&self, h: usize) -> &ClusterConfig {
        let host = &self.hosts[h];
        host.file.as_ref().or(host.spec.config.as_ref()).unwrap_or(&self.spec.config)
    }

    fn power_on(&mut self, h: usize) {
        if self.hosts[h].powered {
            return;
        }
        let host = &mut self.hosts[h];
        host.powered = true;
        host.clock = host::Clock::exact();
        host.clock.set_drift(self.now, 0.0);
        if host.is_controller() {
            host.apiserver_up = true;
            host.apiserver_hung = false;
            self.start_daemon(h);
        }
    }

    fn link_event(&mut self, h: usize, up: bool) {
        let local = self.hosts[h].clock.local(self.now);
        if let Some(d) = self.hosts[h].daemon.as_mut() {
            d.node.handle_link(local, ETH0, up);
            self.pump(h);
        }
    }

    fn relink_all(&mut self) {
        for h in 0..self.hosts.len() {
            self.link_event(h, true);
        }
    }

    /// The daemon process is gone (stopped or killed); the kernel keeps what it holds.
    fn daemon_gone(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        host.daemon = None;
        host.wake = None;
        host.dataplane.proxy_port = None;
        host.dataplane.proxy_backends.clear();
        self.forget_masters(h);
    }

    fn forget_masters(&mut self, h: usize) {
        for inst in 0..self.instances.len() {
            if self.failovers.masters(inst).contains(&h) {
                self.trace.push(
                    self.now,
                    format!("{} k0s-vip-{inst} gone (daemon not running)", self.hosts[h].spec.name),
                );
                self.master_changed(inst, h, false);
            }
        }
    }

    // --- invariants -------------------------------------------------------------------------

    fn violate(&mut self, invariant: &str, detail: String) {
        if self.violations.len() < 10 {
            self.violations.push(Violation {
                at: self.now,
                invariant: invariant.to_owned(),
                detail,
                recent: self.trace.tail(12),
            });
        }
    }

    /// Groups of hosts that can talk both ways, among those in `members`.
    fn components(&self, members: &[usize]) -> Vec<Vec<usize>> {
        crate::failover::components(members, |a, b| self.both_ways(a, b))
    }

    /// Evaluates the invariants. The state predicates are recomputed when something they
    /// read changed; the time limits (how long a dual master or a stale data plane has
    /// lasted) are checked after every event.
    fn check_invariants(&mut self) {
        let slack = self.net.delay.map_or(LATENCY, |(_, max)| max) * 2 + Duration::from_millis(1);
        let bound_passed = self.instances.iter().any(|t| {
            self.last_scheduled_fault.unwrap_or(Instant::ZERO)
                + t.master_down
                + t.advert
                + Duration::from_millis(5)
                <= self.now
        });
        if bound_passed && !self.converging {
            self.converging = true;
            self.dirty = true;
        }
        let dirty = std::mem::take(&mut self.dirty);
        // With loss or delay, adverts may legitimately miss for longer than the protocol's
        // bounds; the protocol invariants apply on a clean network (the last fault heals).
        let clean = self.net.loss == 0.0 && self.net.delay.is_none();
        self.failovers.settle(self.now);
        for inst in 0..self.instances.len() {
            let dual = if !clean {
                false
            } else if dirty {
                let masters = self.failovers.masters(inst);
                masters.len() > 1 && {
                    let masters: Vec<usize> = masters.iter().copied().collect();
                    self.components(&masters).iter().any(|g| g.len() > 1)
                }
            } else {
                self.instances[inst].dual_since.is_some()
            };
            let track = &mut self.instances[inst];
            match (dual, track.dual_since) {
                (true, None) => track.dual_since = Some(self.now),
                (true, Some(since)) if self.now - since > track.master_down + slack => {
                    track.dual_since = Some(self.now);
                    let names: Vec<String> = self
                        .failovers
                        .masters(inst)
                        .iter()
                        .map(|&m| self.hosts[m].spec.name.clone())
                        .collect();
                    self.violate("single_master", format!("k0s-vip-{inst}: {} masters in one connected group for over one Master_Down_Interval", names.join(" and ")));
                }
                (false, Some(since)) => {
                    // Simultaneous takeovers settle within a round trip; longer is a real
                    // dual master.
                    if self.now - since > slack {
                        self.dual_master_episodes += 1;
                    }
                    track.dual_since = None;
                }
                _ => {}
            }
        }
        if dirty {
            self.check_vip_holders();
            if clean {
                self.check_convergence();
            }
            self.check_dataplane();
        } else {
            if clean && self.unconverged_since.iter().any(Option::is_some) {
                self.check_convergence();
            }
            self.check_dataplane_deadlines();
        }
    }

    /// Whether host `h`'s kernel refuses commands, or did so recently enough that the
    /// node's retries (at most [`node::MAX_BACKOFF`] apart) may not have caught up.
    fn kernel_settling(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        let recent = host
            .refuse_until
            .is_some_and(|t| self.now < t + node::MAX_BACKOFF + Duration::from_millis(10));
        recent || host.daemon.as_ref().is_some_and(|d| !d.node.refusals().is_empty())
    }

    fn check_vip_holders(&mut self) {
        for h in 0..self.hosts.len() {
            let Some(d) = self.hosts[h].daemon.as_ref() else {
                continue;
            };
            if self.kernel_settling(h) {
                continue;
            }
            let bad: Vec<IpAddr> = self.hosts[h]
                .vips_on_eth0
                .iter()
                .copied()
                .filter(|v| !d.node.is_master_of(*v))
                .collect();
            if let Some(v) = bad.first() {
                let name = self.hosts[h].spec.name.clone();
                self.violate(
                    "vip_only_on_master",
                    format!("{name} holds {v} on eth0 but is not its master"),
                );
            }
        }
    }

    /// After the last fault's bound, every connected group with an eligible node has exactly
    /// one master. A handover (a preemption once health recovers, a contention) leaves two
    /// masters or none for a round trip; only a state that lasts longer is a violation.
    fn check_convergence(&mut self) {
        let last = self.last_scheduled_fault.unwrap_or(Instant::ZERO);
        let slack = self.net.delay.map_or(LATENCY, |(_, max)| max) * 2 + Duration::from_millis(1);
        if self.unconverged_since.len() != self.instances.len() {
            self.unconverged_since = vec![None; self.instances.len()];
        }
        for inst in 0..self.instances.len() {
            let bound = self.instances[inst].master_down
                + self.instances[inst].advert
                + Duration::from_millis(5);
            if self.now < last + bound {
                continue;
            }
            let key = self.instances[inst].vips.first().copied();
            let eligible: Vec<usize> = (0..self.hosts.len())
                .filter(|&h| {
                    self.hosts[h].daemon.as_ref().is_some_and(|d| {
                        d.node.instances().any(|(id, c)| {
                            c.virtual_ips.first().map(|v| v.addr) == key
                                && matches!(
                                    d.node.router().state(id),
                                    Some(State::Master | State::Backup)
                                )
                        })
                    })
                })
                .collect();
            let bad = self.components(&eligible).into_iter().find_map(|group| {
                let masters =
                    group.iter().filter(|h| self.failovers.masters(inst).contains(h)).count();
                (masters != 1).then(|| {
                    let names: Vec<String> =
                        group.iter().map(|&h| self.hosts[h].spec.name.clone()).collect();
                    format!(
                        "k0s-vip-{inst}: {masters} masters among {} after the last fault",
                        names.join(", ")
                    )
                })
            });
            match (bad, self.unconverged_since[inst]) {
                (None, _) => self.unconverged_since[inst] = None,
                (Some(_), None) => self.unconverged_since[inst] = Some(self.now),
                (Some(what), Some(since)) if self.now - since > slack => {
                    self.unconverged_since[inst] = Some(self.now);
                    self.violate("converged", what);
                }
                _ => {}
            }
        }
    }

    fn check_dataplane(&mut self) {
        for h in 0..self.hosts.len() {
            let (Some(k), Some(d)) =
                (self.hosts[h].keepalived.as_ref(), self.hosts[h].daemon.as_ref())
            else {
                self.dataplane_mismatch.remove(&h);
                continue;
            };
            let mode = k.mode();
            let masters: Vec<IpAddr> = k
                .virtual_servers
                .iter()
                .map(|vs| vs.ip_address)
                .filter(|v| d.node.is_master_of(*v))
                .collect();
            let is_master =
                d.node.instances().any(|(id, _)| d.node.router().state(id) == Some(State::Master));
            if mode == LoadBalancerMode::VipOnly || !is_master || self.kernel_settling(h) {
                self.dataplane_mismatch.remove(&h);
                continue;
            }
            let cluster = self.hosts[h].cluster.clone();
            let mut truth: Vec<IpAddr> = cluster
                .iter()
                .filter_map(|ip| self.host_by_addr(*ip))
                .filter(|&c| self.hosts[c].apiserver_up && self.both_ways(h, c))
                .map(|c| self.hosts[c].spec.address)
                .collect();
            if truth.is_empty() {
                truth = cluster; // fail open
            }
            truth.sort();
            let listed: Vec<Vec<IpAddr>> = match mode {
                LoadBalancerMode::Ipvs => self.hosts[h]
                    .dataplane
                    .services
                    .iter()
                    .filter(|s| masters.contains(&s.key.vip))
                    .map(|s| s.real_servers.iter().map(|r| r.addr.ip()).collect())
                    .collect(),
                _ => vec![
                    self.hosts[h].dataplane.proxy_backends.iter().map(SocketAddr::ip).collect(),
                ],
            };
            if listed.iter().all(|l| *l == truth) {
                self.dataplane_mismatch.remove(&h);
                continue;
            }
            self.dataplane_mismatch.entry(h).or_insert((
                self.now,
                format!("lists {listed:?}, the healthy reachable API servers are {truth:?}"),
            ));
        }
        self.check_dataplane_deadlines();
    }

    fn check_dataplane_deadlines(&mut self) {
        let late: Vec<(usize, String)> = self
            .dataplane_mismatch
            .iter()
            .filter(|(h, (since, _))| {
                let bound = self.hosts[**h].daemon.as_ref().map_or(Duration::MAX, |d| {
                    let c = d.node.health().config();
                    c.interval
                        + (c.interval + c.timeout) * c.fall
                        + c.interval
                        + Duration::from_millis(10)
                });
                self.now.saturating_duration_since((*since).max(self.truth_changed_at)) > bound
            })
            .map(|(h, (_, what))| (*h, what.clone()))
            .collect();
        for (h, what) in late {
            let name = self.hosts[h].spec.name.clone();
            self.violate("dataplane_follows_health", format!("{name} {what}"));
            self.dataplane_mismatch.insert(h, (self.now, what));
        }
    }

    // --- results ------------------------------------------------------------------------------

    fn finish(mut self) -> Outcome {
        let end = self.now;
        let recovery_bound = self.recovery_bound();
        for c in &mut self.clients {
            if let Some(start) = c.outage_start.take() {
                c.longest_outage = c.longest_outage.max(end - start);
            }
        }
        let views_after = crate::views::render(&self);
        let host_names: Vec<String> = self.hosts.iter().map(|h| h.spec.name.clone()).collect();
        let final_masters = (0..self.instances.len())
            .map(|i| {
                self.failovers.masters(i).iter().map(|&h| self.hosts[h].spec.name.clone()).collect()
            })
            .collect();
        Outcome {
            scenario: self.spec.name.clone(),
            seed: self.seed,
            simulated: end - Instant::ZERO,
            events: self.steps,
            violations: self.violations,
            failovers: self.failovers.reports(&host_names),
            clients: self.clients,
            final_masters,
            trace_hash: self.trace.hash(),
            timeline: self.trace.lines(),
            views_before: self.views_before.unwrap_or_default(),
            views_after,
            samples: std::mem::take(&mut self.samples),
            forwarding_loops: self.loops,
            dual_master_episodes: self.dual_master_episodes,
            served: self.served.clone(),
            last_fault_at: self.last_scheduled_fault,
            recovery_bound,
            host_names,
            transitions: std::mem::take(&mut self.transitions),
            attempts: std::mem::take(&mut self.attempts),
        }
    }

    fn recovery_bound(&self) -> Duration {
        let takeovers = self.instances.iter().map(|t| t.master_down + t.advert);
        recovery_bound(takeovers, self.hosts.iter().find_map(|h| h.keepalived.as_ref()))
    }

    // --- read access for views and expectations ----------------------------------------------

    pub(crate) fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub(crate) fn keepalived(&self) -> Option<&Keepalived> {
        self.keepalived.as_ref()
    }

    pub(crate) fn masters_of(&self, inst: usize) -> Vec<usize> {
        self.failovers.masters(inst).iter().copied().collect()
    }

    /// Runs until simulated time `t` (events at `t` included) and returns self, for probes
    /// in the middle of a run (expectations such as `master_at`).
    pub fn run_until(&mut self, t: Instant) {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > t || matches!(q.ev, Ev::End) {
                break;
            }
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            self.steps += 1;
            self.now = q.at;
            self.handle(q.ev);
            self.check_invariants();
        }
        self.now = self.now.max(t);
        self.sample();
    }

    fn sample(&mut self) {
        let masters: Vec<Vec<usize>> =
            (0..self.instances.len()).map(|i| self.masters_of(i)).collect();
        let servers: Vec<Vec<usize>> = (0..self.instances.len())
            .map(|i| {
                let Some(&m) = self.masters_of(i).first() else {
                    return Vec::new();
                };
                let dp = &self.hosts[m].dataplane;
                let ips: Vec<IpAddr> = if dp.services.is_empty() {
                    dp.proxy_backends.iter().map(SocketAddr::ip).collect()
                } else {
                    dp.services
                        .iter()
                        .flat_map(|s| s.real_servers.iter().map(|r| r.addr.ip()))
                        .collect()
                };
                ips.iter().filter_map(|ip| self.host_by_addr(*ip)).collect()
            })
            .collect();
        self.samples.push(Sample { at: self.now, masters, real_servers: servers });
    }
}

/// A command as the trace names it.
fn command_text(c: &Command) -> String {
    match c {
        Command::AddAddress { vip, .. } => format!("add {}/{}", vip.addr, vip.prefix_len),
        Command::RemoveAddress { vip, .. } => format!("remove {}/{}", vip.addr, vip.prefix_len),
        Command::SetRules { .. } => "NAT rules".to_owned(),
        Command::SetServices { .. } => "virtual services".to_owned(),
        Command::Announce { .. } | Command::Probe(_) => String::new(),
    }
}

/// One VRRP instance of a scenario, across every cluster on its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its VIPs (the first identifies it across clusters and reloads).
    pub vips: Vec<IpAddr>,
    /// The slowest takeover any node could make: at the lowest priority configured.
    pub master_down: Duration,
    /// The advertisement interval.
    pub advert: Duration,
}

/// The scenario's instances in the trace's numbering (`k0s-vip-N`): the scenario's
/// configuration's, then those of hosts' own configurations and of reloads not seen yet.
pub fn instances(spec: &SimSpec) -> Vec<InstanceInfo> {
    let mut instances: Vec<InstanceInfo> = Vec::new();
    let reloaded = spec.faults.iter().filter_map(|f| match &f.fault {
        Fault::Reload(_, ReloadConfig::New(c)) => Some(&**c),
        _ => None,
    });
    let configs = std::iter::once(&spec.config)
        .chain(spec.hosts.iter().filter_map(|h| h.config.as_ref()))
        .chain(reloaded);
    for config in configs {
        let Some(k) = config.enabled_keepalived() else {
            continue;
        };
        for i in &k.vrrp_instances {
            let vips: Vec<IpAddr> = i.virtual_ips.iter().map(|c| c.addr).collect();
            if vips.is_empty() || instances.iter().any(|t| t.vips.first() == vips.first()) {
                continue;
            }
            let v3 = spec.vrrp.v3 || vips.first().is_some_and(IpAddr::is_ipv6);
            let version = if v3 { Version::V3 } else { Version::V2 };
            let configured = u16::from(i.advert_interval_seconds) * 100;
            let cs = host::advert_interval_cs(spec.vrrp, version, configured);
            let advert = Duration::from_millis(u64::from(cs) * 10);
            let lowest = spec
                .hosts
                .iter()
                .filter(|h| h.role == crate::spec::Role::Controller)
                .map(|h| h.vrrp.priority.unwrap_or(host::K0S_PRIORITY).max(1))
                .min()
                .unwrap_or(host::K0S_PRIORITY);
            instances.push(InstanceInfo {
                vips,
                master_down: vrrp::master_down_interval(version, cs, Priority(lowest)),
                advert,
            });
        }
    }
    instances
}

/// How long after the last fault clients may still fail: the slowest takeover (a
/// Master_Down_Interval plus an advertisement interval, per instance), the announcement
/// refresh, the health checker's bound for `keepalived`, and a second.
pub fn recovery_bound(
    takeovers: impl Iterator<Item = Duration>,
    keepalived: Option<&Keepalived>,
) -> Duration {
    let health = keepalived
        .map(|k| {
            let c = cplb_core::lb::k0s_health_config(k);
            c.interval + (c.interval + c.timeout) * c.fall + c.interval
        })
        .unwrap_or_default();
    takeovers.max().unwrap_or_default() + node::ANNOUNCE_REFRESH + health + Duration::from_secs(1)
}

/// Why a state changed, in the trace's words.
pub fn cause_text(cause: &vrrp::Cause) -> String {
    use vrrp::Cause;
    match cause {
        Cause::Startup => "startup".into(),
        Cause::MasterDown => "master down".into(),
        Cause::MasterResigned => "master resigned".into(),
        Cause::HigherPriorityMaster { from, priority } => {
            format!("{from} priority {priority} wins")
        }
        Cause::Fault => "fault".into(),
        Cause::AddressRefused => "the kernel refused the VIP".into(),
        Cause::Recovered => "recovered".into(),
        Cause::Shutdown => "shutdown".into(),
    }
}

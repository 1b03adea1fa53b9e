//! One controller (`cplb_core::node::Node`) driven as both drivers drive it: a model kernel
//! that carries out its commands (and can be told to refuse them), a LAN that delivers its
//! adverts to the other nodes, and virtual time that jumps to `poll_timeout()`.
//!
//! Every node runs the instances `node::vrrp_instances` derives from a k0s configuration
//! read by `config::load`: k0s's userspace-proxy mode and its IPVS mode (`virtualServers`).
//! With k0s's settings (VRRPv2, 1 s, priority 200) Master_Down_Interval is 3.21875 s and
//! Skew_Time 0.21875 s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cplb_core::config::{self, LbAlgo, LbKind, LoadOptions};
use cplb_core::lb::{
    FWMARK_BASE, LoopGuard, NatBalancer, NatRules, Probe, ProbeId, RealServer, Redirect,
    ServiceKey, ServiceSpec, Spread,
};
use cplb_core::node::{
    self, API_TRACK_WEIGHT, Balancing, Command, CommandError, CommandId, Event, FIRST_BACKOFF,
    K0S_PRIORITY, MAX_BACKOFF, MAX_REFUSAL_HOLD, Node, NodeConfig, Object, REFUSAL_HOLD, Reload,
};
use cplb_core::time::Instant;
use cplb_core::vrrp::{
    self, Advertisement, AuthPass, Authentication, Cause, ConfigError, GROUP_V4, IfIndex, Incoming,
    InstanceId, IpHeader, Priority, State, Track, TrackerId, Transmit, V3Ipv4Checksum, Version,
    VirtualAddresses, VirtualIp, Vrid,
};
use proptest::prelude::*;

// --- the cluster -------------------------------------------------------------------------

/// The interface every instance runs on.
const IF: IfIndex = IfIndex(2);
/// Direct routing: the non-ARPing interface for local VIPs.
const LOCAL_IF: IfIndex = IfIndex(9);
const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200));
const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 201));
const API_PORT: u16 = 6443;
const PROXY_PORT: u16 = 6444;
const REFUSED: &str = "Operation not permitted";

fn vip24(addr: IpAddr) -> VirtualIp {
    VirtualIp { addr, prefix_len: 24 }
}

/// Controller `i`: 10.0.0.10 + i.
fn controller(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + u8::try_from(i).expect("small")))
}

fn api(i: usize) -> SocketAddr {
    SocketAddr::new(controller(i), API_PORT)
}

fn ms(n: u64) -> Instant {
    Instant::from_millis(n)
}

/// k0s's Master_Down_Interval: 3 × 1 s + (256 − 200) / 256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_218_750);
/// k0s's Skew_Time: (256 − 200) / 256 s.
const SKEW: Duration = Duration::from_micros(218_750);

/// A k0s configuration (a `spec:` fragment) with one VRRP instance per `vips` entry and,
/// with `ipvs`, one virtual server per instance's VIP.
fn k0s_yaml(vips: &[&str], ipvs: bool) -> String {
    let mut s = String::from(
        "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n",
    );
    for (i, vip) in vips.iter().enumerate() {
        s += &format!("        - virtualIPs: [\"{vip}\"]\n          authPass: pass{i}\n");
    }
    if ipvs {
        s += "        virtualServers:\n";
        for vip in vips {
            let ip = vip.split('/').next().expect("cidr");
            s += &format!("        - ipAddress: {ip}\n");
        }
    }
    s
}

/// Node `i` of `n` controllers for a k0s configuration text.
fn node_config(text: &str, i: usize, n: usize, balancing: Balancing) -> NodeConfig {
    let loaded = config::load(text, LoadOptions::default())
        .unwrap_or_else(|r| panic!("invalid test config: {:#?}", r.errors));
    let keepalived = loaded.config.enabled_keepalived().expect("CPLB enabled").clone();
    let api_port = loaded.config.spec.api.port;
    let controllers: Vec<IpAddr> = (0..n).map(controller).collect();
    let instances = node::vrrp_instances(
        &keepalived,
        controller(i),
        None,
        &controllers,
        IF,
        Some(node::API_TRACKER),
    )
    .into_iter()
    .map(|(_, c)| c)
    .collect();
    NodeConfig {
        keepalived,
        api_port,
        own_api: SocketAddr::new(controller(i), api_port),
        real_servers: controllers.iter().map(|a| SocketAddr::new(*a, api_port)).collect(),
        instances,
        local_vip_ifindex: None,
        balancing,
    }
}

/// k0s's default: the userspace proxy, one VIP.
fn proxy_config(i: usize, n: usize) -> NodeConfig {
    node_config(&k0s_yaml(&["10.0.0.200/24"], false), i, n, Balancing::Ipvs)
}

/// IPVS mode: a virtual server on the VIP (rr, DR, persistence 360: k0s's defaults).
fn ipvs_config(i: usize, n: usize, balancing: Balancing) -> NodeConfig {
    node_config(&k0s_yaml(&["10.0.0.200/24"], true), i, n, balancing)
}

fn the_redirect() -> NatRules {
    NatRules {
        redirects: vec![Redirect { vip: SocketAddr::new(VIP, API_PORT), to_port: PROXY_PORT }],
        ..NatRules::default()
    }
}

// --- the model kernel --------------------------------------------------------------------

/// A command the model kernel refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuse {
    Add(IpAddr),
    Remove(IpAddr),
    Rules,
    Services,
}

/// How the model answers a server's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeMode {
    Ok,
    Fail,
    /// Never answered (kept in `Host::hung`).
    Hang,
}

#[derive(Debug, Clone)]
enum Entry {
    Command(Command),
    Result(CommandId, bool),
    Event(Event),
    Transmit(Transmit),
}

/// A node with its kernel: what it holds, what it refuses, and everything that happened.
#[derive(Debug)]
struct Host {
    node: Node,
    addr: IpAddr,
    alive: bool,
    /// Frames go out and come in.
    link: bool,
    /// Answer commands at once; otherwise they wait in `waiting` for `ack`.
    auto: bool,
    refuse: Vec<Refuse>,
    reason: String,
    addresses: BTreeSet<(IfIndex, VirtualIp)>,
    rules: Option<NatRules>,
    services: Option<Vec<ServiceSpec>>,
    waiting: Vec<Command>,
    issued: BTreeSet<CommandId>,
    probe_modes: BTreeMap<SocketAddr, ProbeMode>,
    hung: Vec<Probe>,
    journal: Vec<(Instant, Entry)>,
}

impl Host {
    fn new(now: Instant, config: NodeConfig) -> Self {
        let addr = config.instances.first().map_or(config.own_api.ip(), |c| c.primary_address);
        Self {
            node: Node::new(now, config).expect("valid node config"),
            addr,
            alive: true,
            link: true,
            auto: true,
            refuse: Vec::new(),
            reason: REFUSED.into(),
            addresses: BTreeSet::new(),
            rules: None,
            services: None,
            waiting: Vec::new(),
            issued: BTreeSet::new(),
            probe_modes: BTreeMap::new(),
            hung: Vec::new(),
            journal: Vec::new(),
        }
    }

    fn log(&mut self, now: Instant, e: Entry) {
        self.journal.push((now, e));
    }

    /// Carries out a command on the model, or refuses it.
    fn execute(&mut self, c: &Command) -> Result<(), CommandError> {
        let refused = |r: Refuse| self.refuse.contains(&r);
        let refusal = || Err(CommandError(self.reason.clone()));
        match c {
            Command::AddAddress { ifindex, vip, .. } => {
                if refused(Refuse::Add(vip.addr)) {
                    return refusal();
                }
                self.addresses.insert((*ifindex, *vip));
            }
            Command::RemoveAddress { ifindex, vip, .. } => {
                if refused(Refuse::Remove(vip.addr)) {
                    return refusal();
                }
                self.addresses.remove(&(*ifindex, *vip));
            }
            Command::SetRules { rules, .. } => {
                if refused(Refuse::Rules) {
                    return refusal();
                }
                self.rules = Some(rules.clone());
            }
            Command::SetServices { services, .. } => {
                if refused(Refuse::Services) {
                    return refusal();
                }
                self.services = Some(services.clone());
            }
            Command::Announce { .. } | Command::Probe(_) => {}
        }
        Ok(())
    }

    fn answer(&mut self, now: Instant, c: &Command) {
        let id = c.id().expect("a command with a result");
        let result = self.execute(c);
        self.log(now, Entry::Result(id, result.is_ok()));
        self.node.handle_command_result(now, id, result);
    }

    /// Answers the waiting commands, in order.
    fn ack(&mut self, now: Instant) {
        for c in std::mem::take(&mut self.waiting) {
            self.answer(now, &c);
        }
    }

    fn probe_mode(&self, server: SocketAddr) -> ProbeMode {
        self.probe_modes.get(&server).copied().unwrap_or(ProbeMode::Ok)
    }

    /// Drains the node after a call, as a driver does; returns the transmits.
    fn drain(&mut self, now: Instant) -> Vec<Transmit> {
        let mut out = Vec::new();
        loop {
            let mut progress = false;
            while let Some(t) = self.node.poll_transmit() {
                progress = true;
                self.log(now, Entry::Transmit(t.clone()));
                out.push(t);
            }
            while let Some(c) = self.node.poll_command() {
                progress = true;
                self.log(now, Entry::Command(c.clone()));
                if let Some(id) = c.id() {
                    assert!(self.issued.insert(id), "command id {id:?} issued twice: {c:?}");
                }
                match c {
                    Command::Probe(p) => match self.probe_mode(p.server) {
                        ProbeMode::Ok => self.node.handle_probe_result(now, p.id, true),
                        ProbeMode::Fail => self.node.handle_probe_result(now, p.id, false),
                        ProbeMode::Hang => self.hung.push(p),
                    },
                    Command::Announce { .. } => {}
                    c if self.auto => self.answer(now, &c),
                    c => self.waiting.push(c),
                }
            }
            while let Some(e) = self.node.poll_event() {
                progress = true;
                self.log(now, Entry::Event(e));
            }
            if !progress {
                break;
            }
        }
        if let Some(t) = self.node.poll_timeout() {
            assert!(t > now, "poll_timeout {t} is not after now {now}");
        }
        out
    }

    // Journal queries, from a journal position (`mark()`).

    fn mark(&self) -> usize {
        self.journal.len()
    }

    fn commands(&self, from: usize) -> Vec<(Instant, Command)> {
        self.journal[from..]
            .iter()
            .filter_map(|(t, e)| match e {
                Entry::Command(c) => Some((*t, c.clone())),
                _ => None,
            })
            .collect()
    }

    /// Commands that change the kernel or announce (no probes).
    fn kernel_commands(&self, from: usize) -> Vec<(Instant, Command)> {
        self.commands(from).into_iter().filter(|(_, c)| !matches!(c, Command::Probe(_))).collect()
    }

    fn events(&self, from: usize) -> Vec<(Instant, Event)> {
        self.journal[from..]
            .iter()
            .filter_map(|(t, e)| match e {
                Entry::Event(ev) => Some((*t, ev.clone())),
                _ => None,
            })
            .collect()
    }

    fn count_events(&self, from: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.events(from).iter().filter(|(_, e)| f(e)).count()
    }

    /// State changes of every instance: (time, instance, from, to, cause).
    fn state_changes(&self, from: usize) -> Vec<(Instant, InstanceId, State, State, Cause)> {
        self.events(from)
            .into_iter()
            .filter_map(|(t, e)| match e {
                Event::Vrrp(vrrp::Event::StateChanged { instance, from, to, cause }) => {
                    Some((t, instance, from, to, cause))
                }
                _ => None,
            })
            .collect()
    }

    /// When the instance last entered `state`.
    fn entered(&self, instance: InstanceId, state: State) -> Option<Instant> {
        self.state_changes(0)
            .into_iter()
            .rev()
            .find(|(_, i, _, to, _)| *i == instance && *to == state)
            .map(|(t, ..)| t)
    }

    /// Adverts sent: (time, instance, priority).
    fn adverts(&self, from: usize) -> Vec<(Instant, InstanceId, u8)> {
        self.journal[from..]
            .iter()
            .filter_map(|(t, e)| match e {
                Entry::Transmit(tx) => Some((*t, tx.instance, *tx.payload.get(2)?)),
                _ => None,
            })
            .collect()
    }

    /// Journal position of the first entry matching `f`, from `from`.
    fn position(&self, from: usize, f: impl Fn(&Entry) -> bool) -> Option<usize> {
        self.journal[from..].iter().position(|(_, e)| f(e)).map(|p| p + from)
    }

    fn state(&self, instance: InstanceId) -> Option<State> {
        self.node.router().state(instance)
    }

    fn first(&self) -> InstanceId {
        self.node.instances().next().map(|(id, _)| id).expect("an instance")
    }
}

fn is_add(c: &Command, addr: IpAddr) -> bool {
    matches!(c, Command::AddAddress { vip, .. } if vip.addr == addr)
}

fn is_remove(c: &Command, addr: IpAddr) -> bool {
    matches!(c, Command::RemoveAddress { vip, .. } if vip.addr == addr)
}

fn announces(c: &Command, addr: IpAddr) -> bool {
    matches!(c, Command::Announce { addresses, .. } if addresses.contains(&addr))
}

// --- the LAN -----------------------------------------------------------------------------

#[derive(Debug)]
struct Frame {
    at: Instant,
    seq: u64,
    from: usize,
    tx: Transmit,
}

/// Nodes on one segment, in virtual time.
#[derive(Debug)]
struct World {
    now: Instant,
    hosts: Vec<Host>,
    frames: Vec<Frame>,
    seq: u64,
    steps: u64,
}

impl World {
    fn new() -> Self {
        Self { now: Instant::ZERO, hosts: Vec::new(), frames: Vec::new(), seq: 0, steps: 0 }
    }

    /// Starts a node now.
    fn add(&mut self, config: NodeConfig) -> usize {
        self.add_host(Host::new(self.now, config))
    }

    fn add_host(&mut self, host: Host) -> usize {
        self.hosts.push(host);
        let i = self.hosts.len() - 1;
        self.settle(i);
        i
    }

    /// A node that answers nothing until told (`ack`).
    fn add_manual(&mut self, config: NodeConfig) -> usize {
        let mut host = Host::new(self.now, config);
        host.auto = false;
        self.add_host(host)
    }

    fn h(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    fn hm(&mut self, i: usize) -> &mut Host {
        &mut self.hosts[i]
    }

    /// Calls the node now, then drains it.
    fn call<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.hosts[i].node, now);
        self.settle(i);
        r
    }

    fn ack(&mut self, i: usize) {
        let now = self.now;
        self.hosts[i].ack(now);
        self.settle(i);
    }

    /// The node's link goes up or down: it is told, and frames stop or flow again.
    fn link(&mut self, i: usize, up: bool) {
        self.hosts[i].link = up;
        self.call(i, |n, now| n.handle_link(now, IF, up));
    }

    /// Power loss: no goodbye.
    /// Frames already sent are still delivered.
    fn kill(&mut self, i: usize) {
        self.hosts[i].alive = false;
    }

    fn settle(&mut self, i: usize) {
        let now = self.now;
        let out = self.hosts[i].drain(now);
        if !self.hosts[i].link || !self.hosts[i].alive {
            return;
        }
        for tx in out {
            self.seq += 1;
            self.frames.push(Frame { at: now, seq: self.seq, from: i, tx });
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let frames = self.frames.iter().map(|f| f.at);
        let timers = self.hosts.iter().filter(|h| h.alive).filter_map(|h| h.node.poll_timeout());
        frames.chain(timers).min()
    }

    fn deliver(&mut self, frame: &Frame) {
        for j in 0..self.hosts.len() {
            let h = &self.hosts[j];
            let to_it = frame.tx.dst.is_multicast() || frame.tx.dst == h.addr;
            if j == frame.from || !h.alive || !h.link || !to_it {
                continue;
            }
            let now = self.now;
            let header = IpHeader { src: frame.tx.src, dst: frame.tx.dst, ttl: 255 };
            let payload = frame.tx.payload.clone();
            self.hosts[j]
                .node
                .handle_packet(now, Incoming { ifindex: IF, header, payload: &payload });
            self.settle(j);
        }
    }

    fn step(&mut self) -> bool {
        self.steps += 1;
        assert!(self.steps < 1_000_000, "livelock at {}", self.now);
        let Some(at) = self.next_event() else { return false };
        assert!(at >= self.now, "time went backwards");
        self.now = at;
        loop {
            let (mut due, rest): (Vec<Frame>, Vec<Frame>) =
                std::mem::take(&mut self.frames).into_iter().partition(|f| f.at <= at);
            self.frames = rest;
            due.sort_by_key(|f| f.seq);
            let mut busy = !due.is_empty();
            for f in &due {
                self.deliver(f);
            }
            for i in 0..self.hosts.len() {
                if self.hosts[i].alive && self.hosts[i].node.poll_timeout().is_some_and(|t| t <= at)
                {
                    self.hosts[i].node.handle_timeout(at);
                    self.settle(i);
                    busy = true;
                }
            }
            if !busy {
                break;
            }
        }
        true
    }

    /// Runs every event up to and including `t`, then sets the clock to `t`.
    fn run_until(&mut self, t: Instant) {
        while self.next_event().is_some_and(|at| at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }
}

/// A k0s advert for VRID 51 (instance 0's password) from `src` at `priority`.
fn advert(src: IpAddr, priority: u8, vips: &[IpAddr]) -> Vec<u8> {
    Advertisement {
        version: Version::V2,
        vrid: Vrid::new(51).expect("vrid"),
        priority: Priority(priority),
        interval_cs: 100,
        auth: Authentication::SimpleText(AuthPass::new(b"pass0").expect("pass")),
        addresses: VirtualAddresses::from_ips(vips).expect("addresses"),
    }
    .encode(src, IpAddr::V4(GROUP_V4), V3Ipv4Checksum::default())
    .expect("encodable")
}

// --- start-up ----------------------------------------------------------------------------

#[test]
fn start_up_removes_every_vip_sets_the_redirect_and_probes_every_server() {
    let text = k0s_yaml(&["10.0.0.200/24", "10.0.0.201/24"], false);
    let mut w = World::new();
    let a = w.add_manual(node_config(&text, 0, 3, Balancing::Ipvs));
    let first = w.h(a).commands(0);
    let probed: BTreeSet<SocketAddr> = first
        .iter()
        .filter_map(|(_, c)| match c {
            Command::Probe(p) => Some(p.server),
            _ => None,
        })
        .collect();
    assert_eq!(probed, [api(0), api(1), api(2)].into_iter().collect());
    let kernel: Vec<Command> = w.h(a).kernel_commands(0).into_iter().map(|(_, c)| c).collect();
    let removed: Vec<VirtualIp> = kernel
        .iter()
        .filter_map(|c| match c {
            Command::RemoveAddress { ifindex: IF, vip, .. } => Some(*vip),
            _ => None,
        })
        .collect();
    assert_eq!(removed, vec![vip24(VIP), vip24(VIP2)], "stale VIPs of a predecessor");
    let rules: Vec<&NatRules> = kernel
        .iter()
        .filter_map(|c| match c {
            Command::SetRules { rules, .. } => Some(rules),
            _ => None,
        })
        .collect();
    let both = NatRules {
        redirects: vec![
            Redirect { vip: SocketAddr::new(VIP, API_PORT), to_port: PROXY_PORT },
            Redirect { vip: SocketAddr::new(VIP2, API_PORT), to_port: PROXY_PORT },
        ],
        ..NatRules::default()
    };
    assert_eq!(rules, vec![&both], "the redirect VIP:6443 → the proxy port, on every node");
    assert!(
        kernel
            .iter()
            .any(|c| matches!(c, Command::SetServices { services, .. } if services.is_empty())),
        "a predecessor's virtual services are cleared: {kernel:?}"
    );
    assert!(!kernel.iter().any(|c| matches!(c, Command::AddAddress { .. })));
    assert!(kernel.iter().all(|c| c.id().is_some()), "{kernel:?}");
    assert!(!w.h(a).node.holds_address(IF, VIP));
    assert_eq!(w.h(a).node.held_rules(), None, "nothing acknowledged yet");
    w.ack(a);
    assert_eq!(w.h(a).node.held_rules(), Some(&both));
    assert_eq!(w.h(a).node.held_services(), Some(&[][..]));

    // Nothing is added before mastership: one tick before Master_Down_Interval, none.
    let mark = w.h(a).mark();
    w.run_until(Instant::ZERO + (MASTER_DOWN - Duration::from_nanos(1)));
    assert!(w.h(a).kernel_commands(mark).is_empty(), "{:?}", w.h(a).kernel_commands(mark));
    let id = w.h(a).first();
    assert_eq!(w.h(a).state(id), Some(State::Backup));
}

#[test]
fn start_up_in_ipvs_mode_sets_only_the_loop_guard_and_no_service_on_a_backup() {
    let mut w = World::new();
    let a = w.add_manual(ipvs_config(0, 2, Balancing::Ipvs));
    let kernel: Vec<Command> = w.h(a).kernel_commands(0).into_iter().map(|(_, c)| c).collect();
    assert!(kernel.iter().any(|c| is_remove(c, VIP)));
    let guard_only = |r: &NatRules| {
        r.redirects.is_empty()
            && r.balancers.is_empty()
            && r.loop_guards.len() == 1
            && r.loop_guards[0].real_servers == [api(0).ip(), api(1).ip()]
    };
    assert!(
        kernel.iter().any(|c| matches!(c, Command::SetRules { rules, .. } if guard_only(rules)))
    );
    assert!(
        kernel
            .iter()
            .any(|c| matches!(c, Command::SetServices { services, .. } if services.is_empty())),
        "a backup holds no virtual service"
    );
    assert!(!kernel.iter().any(|c| matches!(c, Command::AddAddress { .. })));
}

// --- mastership and the kernel's acknowledgement -----------------------------------------

#[test]
fn a_single_node_becomes_master_after_master_down_interval_and_announces_only_after_the_ack() {
    let mut w = World::new();
    let a = w.add_manual(proxy_config(0, 3));
    let id = w.h(a).first();
    assert_eq!(w.h(a).node.router().master_down_interval(id), Some(MASTER_DOWN));
    w.ack(a);
    w.run_until(Instant::ZERO + (MASTER_DOWN - Duration::from_nanos(1)));
    assert_eq!(w.h(a).state(id), Some(State::Backup));
    let mark = w.h(a).mark();
    w.run_until(Instant::ZERO + MASTER_DOWN);
    assert_eq!(w.h(a).state(id), Some(State::Master));
    assert_eq!(w.h(a).entered(id, State::Master), Some(Instant::ZERO + MASTER_DOWN));
    assert!(w.h(a).adverts(mark).iter().any(|(_, _, p)| *p == K0S_PRIORITY));
    assert!(w.h(a).node.is_master_of(VIP));
    let kernel = w.h(a).kernel_commands(mark);
    assert!(kernel.iter().any(|(_, c)| is_add(c, VIP)), "{kernel:?}");
    assert!(!kernel.iter().any(|(_, c)| announces(c, VIP)), "announced before the add: {kernel:?}");
    assert!(!w.h(a).node.holds_address(IF, VIP));

    // The kernel takes its time: adverts go on, still no announcement.
    w.run_for(Duration::from_millis(1500));
    assert!(!w.h(a).kernel_commands(mark).iter().any(|(_, c)| announces(c, VIP)));
    assert!(!w.h(a).node.holds_address(IF, VIP));
    assert!(w.h(a).adverts(mark).len() >= 2);

    // The acknowledgement announces it, at once.
    let before_ack = w.h(a).mark();
    w.ack(a);
    assert!(w.h(a).node.holds_address(IF, VIP));
    assert_eq!(w.h(a).node.held_addresses(), vec![(IF, vip24(VIP))]);
    let after = w.h(a).kernel_commands(before_ack);
    assert_eq!(
        after.iter().filter(|(_, c)| announces(c, VIP)).count(),
        1,
        "one announcement on the ack: {after:?}"
    );
    // In the journal: the ack of the add comes before any announcement of the VIP.
    let add_id = w.h(a).kernel_commands(mark).iter().find_map(|(_, c)| match c {
        Command::AddAddress { id, .. } => Some(*id),
        _ => None,
    });
    let ack = w.h(a).position(0, |e| matches!(e, Entry::Result(id, true) if Some(*id) == add_id));
    let announce = w.h(a).position(0, |e| matches!(e, Entry::Command(c) if announces(c, VIP)));
    assert!(ack.is_some() && announce.is_some() && ack < announce, "{ack:?} {announce:?}");

    // Later announcements (repeat, refresh) go out directly now that it is held.
    let mark = w.h(a).mark();
    w.run_for(Duration::from_secs(5));
    assert!(w.h(a).kernel_commands(mark).iter().any(|(_, c)| announces(c, VIP)));
}

#[test]
fn the_announcement_never_precedes_the_acknowledgement_in_a_running_cluster() {
    let mut w = World::new();
    for i in 0..3 {
        w.add(proxy_config(i, 3));
    }
    w.run_for(Duration::from_secs(20));
    // Contention at start-up: every node became master at 3.21875 s, the highest address won.
    let masters: Vec<usize> = (0..3).filter(|&i| w.h(i).node.is_master_of(VIP)).collect();
    assert_eq!(masters, vec![2]);
    for i in 0..3 {
        let h = w.h(i);
        for (p, (_, e)) in h.journal.iter().enumerate() {
            let Entry::Command(c) = e else { continue };
            if !announces(c, VIP) {
                continue;
            }
            // The last address command for the VIP before it was an acknowledged add.
            let last = h.journal[..p].iter().rev().find_map(|(_, e)| match e {
                Entry::Command(Command::AddAddress { id, vip, .. }) if vip.addr == VIP => Some(*id),
                Entry::Command(Command::RemoveAddress { vip, .. }) if vip.addr == VIP => None,
                _ => None,
            });
            let acked = last.is_some_and(|id| {
                h.journal[..p].iter().any(|(_, e)| matches!(e, Entry::Result(r, true) if *r == id))
            });
            assert!(acked, "node {i} announced at journal {p} without a held address");
        }
    }
    assert!(w.h(2).node.holds_address(IF, VIP));
    assert!(!w.h(0).node.holds_address(IF, VIP) && !w.h(1).node.holds_address(IF, VIP));
    assert!(!w.h(0).addresses.contains(&(IF, vip24(VIP))));
}

// --- refusals ----------------------------------------------------------------------------

#[test]
fn a_refused_vip_faults_the_new_master_and_a_backup_takes_over_within_skew_time() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 2));
    w.hm(a).refuse.push(Refuse::Add(VIP));
    w.run_until(ms(1000));
    let b = w.add(proxy_config(1, 2));
    let (ia, ib) = (w.h(a).first(), w.h(b).first());
    w.run_until(Instant::ZERO + MASTER_DOWN);
    let t0 = Instant::ZERO + MASTER_DOWN;

    let changes = w.h(a).state_changes(0);
    let at_t0: Vec<_> = changes.iter().filter(|c| c.0 == t0).map(|c| (c.2, c.3, c.4)).collect();
    assert_eq!(
        at_t0,
        vec![
            (State::Backup, State::Master, Cause::MasterDown),
            (State::Master, State::Fault, Cause::AddressRefused),
        ]
    );
    assert_eq!(w.h(a).state(ia), Some(State::Fault));
    let resign = w.h(a).adverts(0).into_iter().filter(|(t, _, p)| *t == t0 && *p == 0).count();
    assert_eq!(resign, 1, "the refused master resigns with priority 0");
    assert!(!w.h(a).node.holds_address(IF, VIP));
    assert!(w.h(a).kernel_commands(0).iter().all(|(_, c)| !announces(c, VIP)));

    // The backup takes over after Skew_Time, not Master_Down_Interval.
    w.run_until(t0 + SKEW);
    assert_eq!(w.h(b).state(ib), Some(State::Master));
    assert_eq!(w.h(b).entered(ib, State::Master), Some(t0 + SKEW));
    assert!(w.h(b).node.holds_address(IF, VIP));

    // After the hold the refused node is eligible again, as Backup, and stays one.
    w.run_until(t0 + (REFUSAL_HOLD - Duration::from_nanos(1)));
    assert_eq!(w.h(a).state(ia), Some(State::Fault));
    w.run_until(t0 + REFUSAL_HOLD);
    assert_eq!(w.h(a).state(ia), Some(State::Backup));
    assert_eq!(w.h(a).entered(ia, State::Backup), Some(t0 + REFUSAL_HOLD));
    w.run_until(ms(10_000));
    assert_eq!(w.h(a).state(ia), Some(State::Backup));
    assert_eq!(w.h(b).state(ib), Some(State::Master));

    let refused = |e: &Event| matches!(e, Event::KernelRefused { object: Object::Address { ifindex: IF, addr: VIP }, reason } if reason == REFUSED);
    let recovered = |e: &Event| matches!(e, Event::KernelRecovered { .. });
    assert_eq!(w.h(a).count_events(0, refused), 1);
    assert_eq!(w.h(a).count_events(0, recovered), 0, "the VIP was never added");
    // A backup does not want the VIP: nothing is refused now (status shows no refusal).
    assert!(w.h(a).node.refusals().is_empty(), "{:?}", w.h(a).node.refusals());

    // The kernel is mended and the other node goes away: the first node takes over and
    // this time the add works.
    w.hm(a).refuse.clear();
    let mark = w.h(a).mark();
    w.call(b, |n, now| n.shutdown(now));
    w.kill(b);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.h(a).state(ia), Some(State::Master));
    assert!(w.h(a).node.holds_address(IF, VIP));
    let events = w.h(a).events(mark);
    let rec: Vec<_> = events.iter().filter(|(_, e)| recovered(e)).collect();
    assert_eq!(rec.len(), 1, "{events:?}");
    assert!(matches!(
        &rec[0].1,
        Event::KernelRecovered { object: Object::Address { ifindex: IF, addr: VIP }, attempts: 1 }
    ));
    assert_eq!(w.h(a).count_events(0, refused), 1);
    assert!(w.h(a).node.refusals().is_empty());
    assert!(w.h(a).kernel_commands(mark).iter().any(|(_, c)| announces(c, VIP)));
}

#[test]
fn a_lone_node_whose_kernel_keeps_refusing_doubles_its_hold_and_reports_once() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    let id = w.h(a).first();
    w.hm(a).refuse.push(Refuse::Add(VIP));
    w.run_until(ms(120_000));
    let changes = w.h(a).state_changes(0);
    let faults: Vec<Instant> =
        changes.iter().filter(|c| c.3 == State::Fault).map(|c| c.0).collect();
    let recoveries: Vec<Instant> = changes
        .iter()
        .filter(|c| c.2 == State::Fault && c.3 == State::Backup)
        .map(|c| c.0)
        .collect();
    assert!(changes.iter().filter(|c| c.3 == State::Fault).all(|c| c.4 == Cause::AddressRefused));
    let holds: Vec<Duration> = faults.iter().zip(&recoveries).map(|(f, r)| *r - *f).collect();
    let mut want = Vec::new();
    let mut hold = REFUSAL_HOLD;
    for _ in 0..holds.len() {
        want.push(hold);
        hold = (hold * 2).min(MAX_REFUSAL_HOLD);
    }
    assert!(holds.len() >= 6, "{holds:?}");
    assert_eq!(holds, want);
    // Each cycle: Backup, then master again after Master_Down_Interval.
    for (r, f) in recoveries.iter().zip(faults.iter().skip(1)) {
        assert_eq!(*f - *r, MASTER_DOWN);
    }
    let refused = |e: &Event| matches!(e, Event::KernelRefused { .. });
    assert_eq!(w.h(a).count_events(0, refused), 1, "one condition, however many tries");
    assert_eq!(w.h(a).count_events(0, |e| matches!(e, Event::KernelRecovered { .. })), 0);

    // Mended: the next try works, and is reported once.
    w.hm(a).refuse.clear();
    w.run_for(MAX_REFUSAL_HOLD + MASTER_DOWN);
    assert_eq!(w.h(a).state(id), Some(State::Master));
    assert!(w.h(a).node.holds_address(IF, VIP));
    assert_eq!(w.h(a).count_events(0, |e| matches!(e, Event::KernelRecovered { .. })), 1);

    // A new refusal after a success starts over with the shortest hold.
    w.hm(a).refuse.push(Refuse::Add(VIP));
    let mark = w.h(a).mark();
    w.hm(a).addresses.clear();
    w.call(a, |n, now| n.handle_address(now, IF, VIP, false));
    let t = w.now;
    assert_eq!(w.h(a).state(id), Some(State::Fault));
    w.run_for(REFUSAL_HOLD);
    assert_eq!(w.h(a).entered(id, State::Backup), Some(t + REFUSAL_HOLD));
    assert_eq!(w.h(a).count_events(mark, refused), 1);
}

/// A kernel that keeps refusing one address's add, and keeps refusing the rules too (say
/// nftables is missing): the VIP's removals work, the rules never do, so nothing the kernel
/// refused recovers and the holds keep doubling; nothing ends them early to flap the
/// instance every Master_Down_Interval.
#[test]
fn holds_keep_doubling_while_nothing_the_kernel_refused_recovers() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.hm(a).refuse.extend([Refuse::Add(VIP), Refuse::Rules]);
    w.run_until(ms(120_000));
    let changes = w.h(a).state_changes(0);
    let faults: Vec<Instant> =
        changes.iter().filter(|c| c.3 == State::Fault).map(|c| c.0).collect();
    let recoveries: Vec<Instant> = changes
        .iter()
        .filter(|c| c.2 == State::Fault && c.3 == State::Backup)
        .map(|c| c.0)
        .collect();
    let holds: Vec<Duration> = faults.iter().zip(&recoveries).map(|(f, r)| *r - *f).collect();
    assert!(holds.len() >= 4, "{holds:?}");
    for pair in holds.windows(2) {
        assert_eq!(pair[1], (pair[0] * 2).min(MAX_REFUSAL_HOLD), "{holds:?}");
    }
}

/// A kernel that refuses everything (not only this address) and then mends: the node
/// notices at its next retry, and the Fault hold, there to keep a node from flapping on an
/// address its kernel will not take, ends then rather than keep a healthy node away from
/// the VIP for the rest of a long hold.
#[test]
fn a_hold_ends_when_a_kernel_that_refused_everything_accepts_again() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    let id = w.h(a).first();
    w.hm(a).refuse.extend([Refuse::Add(VIP), Refuse::Remove(VIP), Refuse::Rules]);
    // Refusals pile up: the holds grow (1, 2, 4, 8 s ...) and the retries slow down. Wait
    // for a hold that outlasts the slowest retry by a second.
    let (faulted, scheduled) = loop {
        w.run_for(Duration::from_millis(100));
        let changes = w.h(a).state_changes(0);
        let holds = changes.iter().filter(|c| c.3 == State::Fault).count();
        let last = changes.last().expect("state changes");
        if last.3 == State::Fault && holds >= 4 {
            let hold = REFUSAL_HOLD * 2u32.pow(u32::try_from(holds - 1).expect("a few"));
            break (last.0, last.0 + hold.min(MAX_REFUSAL_HOLD));
        }
        assert!(w.now < ms(120_000), "no long hold: {changes:?}");
    };
    let mended = w.now;
    assert!(scheduled > mended + MAX_BACKOFF + Duration::from_secs(1), "{faulted} {scheduled}");
    let mark = w.h(a).mark();
    w.hm(a).refuse.clear();
    w.run_for(MAX_BACKOFF);
    let changes = w.h(a).state_changes(mark);
    let back = changes.iter().find(|c| c.3 == State::Backup).map(|c| c.0);
    let back = back.unwrap_or_else(|| panic!("not eligible again within a retry: {changes:?}"));
    assert!(back > mended && back <= mended + MAX_BACKOFF, "back at {back}, mended at {mended}");
    w.run_for(MASTER_DOWN);
    assert_eq!(w.h(a).state(id), Some(State::Master));
    assert!(w.h(a).node.holds_address(IF, VIP));
}

/// A node whose start-up removal of its VIP the kernel refuses, and keeps refusing while
/// its retries back off, becomes master: its add goes out at once, not at the removal's
/// next retry, so it learns now whether it holds the VIP (and resigns at once if not)
/// rather than advertise an address it does not hold for a backoff.
#[test]
fn a_new_masters_add_goes_out_at_once_whatever_the_refused_removals_backoff() {
    let mut w = World::new();
    let mut host = Host::new(Instant::ZERO, proxy_config(0, 1));
    host.refuse.extend([Refuse::Remove(VIP), Refuse::Add(VIP)]);
    let a = w.add_host(host);
    let id = w.h(a).first();
    let t0 = Instant::ZERO + MASTER_DOWN;
    w.run_until(t0);
    assert_eq!(w.h(a).entered(id, State::Master), Some(t0));
    let adds: Vec<Instant> =
        w.h(a).kernel_commands(0).iter().filter(|(_, c)| is_add(c, VIP)).map(|(t, _)| *t).collect();
    assert_eq!(adds.first(), Some(&t0), "the add waited: {adds:?}");
    assert_eq!(w.h(a).state(id), Some(State::Fault), "refused at once, resigned at once");
}

#[test]
fn a_refused_command_is_retried_with_doubling_backoff_up_to_the_cap() {
    let mut w = World::new();
    let mut host = Host::new(Instant::ZERO, proxy_config(0, 1));
    host.refuse.push(Refuse::Rules);
    let a = w.add_host(host);
    w.run_until(ms(12_000));
    w.hm(a).reason = "No buffer space available".into();
    w.run_until(ms(30_000));
    let tries: Vec<(Instant, NatRules)> = w
        .h(a)
        .commands(0)
        .into_iter()
        .filter_map(|(t, c)| match c {
            Command::SetRules { rules, .. } => Some((t, rules)),
            _ => None,
        })
        .collect();
    assert!(tries.iter().all(|(_, r)| *r == the_redirect()));
    let gaps: Vec<Duration> = tries.windows(2).map(|p| p[1].0 - p[0].0).collect();
    let mut want = Vec::new();
    let mut wait = FIRST_BACKOFF;
    for _ in 0..gaps.len() {
        want.push(wait);
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    assert!(gaps.len() >= 8, "{gaps:?}");
    assert_eq!(gaps, want, "200 ms, doubling, at most {MAX_BACKOFF:?}");
    assert_eq!(tries[0].0, Instant::ZERO);
    let refusals: Vec<String> = w
        .h(a)
        .events(0)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::KernelRefused { object: Object::Rules, reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, vec![REFUSED.to_owned(), "No buffer space available".to_owned()]);
    let r = w.h(a).node.refusals();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].0, r[0].1.attempts, r[0].1.since),
        (Object::Rules, tries.len() as u32, Instant::ZERO)
    );
    assert_eq!(w.h(a).node.held_rules(), None);

    // Mended: the next retry works; then nothing more is sent.
    w.hm(a).refuse.clear();
    let attempts = tries.len() as u32;
    w.run_for(MAX_BACKOFF);
    assert_eq!(w.h(a).rules, Some(the_redirect()));
    assert_eq!(w.h(a).node.held_rules(), Some(&the_redirect()));
    let mark = w.h(a).mark();
    w.run_for(Duration::from_secs(30));
    assert!(!w.h(a).commands(mark).iter().any(|(_, c)| matches!(c, Command::SetRules { .. })));
    let recovered: Vec<Event> = w
        .h(a)
        .events(0)
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| matches!(e, Event::KernelRecovered { .. }))
        .collect();
    assert_eq!(recovered, vec![Event::KernelRecovered { object: Object::Rules, attempts }]);
    assert!(w.h(a).node.refusals().is_empty());
}

#[test]
fn results_for_unknown_or_answered_commands_are_ignored() {
    let mut w = World::new();
    let a = w.add_manual(proxy_config(0, 1));
    w.ack(a);
    let mark = w.h(a).mark();
    w.call(a, |n, now| {
        n.handle_command_result(now, CommandId(987_654), Err(CommandError("x".into())));
        n.handle_command_result(now, CommandId(1), Err(CommandError("answered".into())));
    });
    assert!(w.h(a).events(mark).is_empty());
    assert!(w.h(a).kernel_commands(mark).is_empty());
    assert!(w.h(a).node.refusals().is_empty());
    assert_eq!(w.h(a).node.held_rules(), Some(&the_redirect()));
}

// --- what someone else did to the kernel -------------------------------------------------

#[test]
fn a_vip_removed_by_hand_on_the_master_is_put_back_and_announced_after_the_ack() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.run_until(ms(10_000));
    assert!(w.h(a).node.holds_address(IF, VIP));
    // The echo of its own add changes nothing.
    let mark = w.h(a).mark();
    w.call(a, |n, now| n.handle_address(now, IF, VIP, true));
    assert!(w.h(a).events(mark).is_empty() && w.h(a).kernel_commands(mark).is_empty());

    w.hm(a).auto = false;
    w.hm(a).addresses.clear();
    let mark = w.h(a).mark();
    w.call(a, |n, now| n.handle_address(now, IF, VIP, false));
    let events: Vec<Event> = w.h(a).events(mark).into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        events,
        vec![Event::KernelDrift { object: Object::Address { ifindex: IF, addr: VIP } }]
    );
    let kernel = w.h(a).kernel_commands(mark);
    assert_eq!(kernel.len(), 1, "{kernel:?}");
    assert!(is_add(&kernel[0].1, VIP) && kernel[0].0 == w.now, "re-added at once");
    assert!(!w.h(a).node.holds_address(IF, VIP));
    w.run_for(Duration::from_millis(500));
    assert!(!w.h(a).kernel_commands(mark).iter().any(|(_, c)| announces(c, VIP)));
    let before = w.h(a).mark();
    w.ack(a);
    assert!(w.h(a).node.holds_address(IF, VIP));
    let after = w.h(a).kernel_commands(before);
    assert_eq!(after.iter().filter(|(_, c)| announces(c, VIP)).count(), 1, "{after:?}");
    assert_eq!(w.h(a).state(w.h(a).first()), Some(State::Master), "no state change");
}

#[test]
fn an_address_notification_on_a_backup_for_an_address_it_does_not_hold_changes_nothing() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 2));
    w.run_until(ms(1000));
    let b = w.add(proxy_config(1, 2));
    w.run_until(ms(10_000));
    assert!(w.h(a).node.is_master_of(VIP) && !w.h(b).node.is_master_of(VIP));
    let mark = w.h(b).mark();
    w.call(b, |n, now| n.handle_address(now, IF, VIP, false));
    w.call(b, |n, now| n.handle_address(now, IF, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99)), true));
    assert!(w.h(b).events(mark).is_empty(), "{:?}", w.h(b).events(mark));
    assert!(w.h(b).kernel_commands(mark).is_empty());

    // Someone adds the VIP on the backup: that is drift, and it is removed again.
    w.call(b, |n, now| n.handle_address(now, IF, VIP, true));
    let events: Vec<Event> = w.h(b).events(mark).into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        events,
        vec![Event::KernelDrift { object: Object::Address { ifindex: IF, addr: VIP } }]
    );
    let kernel = w.h(b).kernel_commands(mark);
    assert!(kernel.len() == 1 && is_remove(&kernel[0].1, VIP), "{kernel:?}");
    assert!(!kernel.iter().any(|(_, c)| announces(c, VIP)));
}

#[test]
fn lost_rules_are_set_again_and_an_object_never_set_is_not_drift() {
    let mut w = World::new();
    let a = w.add(node_config(&k0s_yaml(&["10.0.0.200/24"], false), 0, 1, Balancing::Nat));
    w.run_until(ms(5_000));
    let rules = w.h(a).rules.clone().expect("rules set");
    assert_eq!(rules, the_redirect());
    w.hm(a).rules = None;
    let mark = w.h(a).mark();
    w.call(a, |n, now| n.handle_kernel_lost(now, Object::Rules));
    let events: Vec<Event> = w.h(a).events(mark).into_iter().map(|(_, e)| e).collect();
    assert_eq!(events, vec![Event::KernelDrift { object: Object::Rules }]);
    let kernel = w.h(a).kernel_commands(mark);
    assert!(
        matches!(&kernel[..], [(t, Command::SetRules { rules: r, .. })] if *r == rules && *t == w.now),
        "{kernel:?}"
    );
    assert_eq!(w.h(a).rules, Some(rules.clone()));
    assert_eq!(w.h(a).node.held_rules(), Some(&rules));

    // Balancing by NAT: the node never sets virtual services, so none can be lost.
    let mark = w.h(a).mark();
    w.call(a, |n, now| n.handle_kernel_lost(now, Object::Services));
    w.call(a, |n, now| {
        n.handle_kernel_lost(
            now,
            Object::Address { ifindex: IF, addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99)) },
        );
    });
    assert!(w.h(a).events(mark).is_empty());
    assert!(w.h(a).kernel_commands(mark).is_empty());
    assert!(!w.h(a).commands(0).iter().any(|(_, c)| matches!(c, Command::SetServices { .. })));
}

#[test]
fn a_lost_vip_is_put_back() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.run_until(ms(5_000));
    w.hm(a).addresses.clear();
    let mark = w.h(a).mark();
    w.call(a, |n, now| n.handle_kernel_lost(now, Object::Address { ifindex: IF, addr: VIP }));
    assert_eq!(w.h(a).count_events(mark, |e| matches!(e, Event::KernelDrift { .. })), 1);
    assert!(w.h(a).kernel_commands(mark).iter().any(|(_, c)| is_add(c, VIP)));
    assert!(w.h(a).addresses.contains(&(IF, vip24(VIP))));
}

// --- links -------------------------------------------------------------------------------

#[test]
fn link_down_faults_and_a_master_resigns_link_up_returns_to_backup_without_a_flap() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 2));
    w.run_until(ms(1000));
    let b = w.add(proxy_config(1, 2));
    w.run_until(ms(10_000));
    let (ia, ib) = (w.h(a).first(), w.h(b).first());
    assert_eq!(w.h(a).state(ia), Some(State::Master));

    let mark = w.h(a).mark();
    w.link(a, false);
    let t = w.now;
    assert_eq!(w.h(a).state(ia), Some(State::Fault));
    let changes = w.h(a).state_changes(mark);
    assert_eq!(
        changes.iter().map(|c| (c.2, c.3, c.4)).collect::<Vec<_>>(),
        vec![(State::Master, State::Fault, Cause::Fault)]
    );
    assert_eq!(w.h(a).adverts(mark).iter().map(|(_, _, p)| *p).collect::<Vec<_>>(), vec![0]);
    assert!(w.h(a).kernel_commands(mark).iter().any(|(_, c)| is_remove(c, VIP)));
    assert!(!w.h(a).node.holds_address(IF, VIP));
    assert!(!w.h(a).addresses.contains(&(IF, vip24(VIP))));
    // The resignation never left the host: the backup notices after Master_Down_Interval.
    let last_advert = w.h(a).adverts(0).iter().rev().find(|(_, _, p)| *p != 0).map(|x| x.0);
    w.run_for(Duration::from_secs(5));
    assert_eq!(
        w.h(b).entered(ib, State::Master),
        Some(last_advert.expect("adverts") + MASTER_DOWN)
    );
    // Fault stays Fault, and no advert goes out while the link is down.
    let mark = w.h(a).mark();
    w.run_for(Duration::from_secs(5));
    assert!(w.h(a).adverts(mark).is_empty());
    assert!(w.h(a).state_changes(mark).is_empty());

    let mark_b = w.h(b).mark();
    w.link(a, true);
    assert_eq!(w.h(a).entered(ia, State::Backup), Some(w.now));
    w.link(a, true);
    w.run_for(Duration::from_secs(10));
    let changes = w.h(a).state_changes(mark);
    assert_eq!(
        changes.iter().map(|c| (c.2, c.3, c.4)).collect::<Vec<_>>(),
        vec![(State::Fault, State::Backup, Cause::Recovered)]
    );
    assert!(w.h(b).state_changes(mark_b).is_empty(), "the master is undisturbed");
    assert!(t < w.now);

    // A backup's link: Fault without a word on the wire.
    let mark = w.h(a).mark();
    w.link(a, false);
    assert_eq!(w.h(a).state(ia), Some(State::Fault));
    assert!(w.h(a).adverts(mark).is_empty());
    w.link(a, false);
    assert_eq!(w.h(a).state_changes(mark).len(), 1);
}

// --- health checks -----------------------------------------------------------------------

#[test]
fn two_failures_of_the_own_api_server_lower_the_priority_and_a_success_restores_it() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 3));
    w.run_until(ms(4_500));
    let id = w.h(a).first();
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(K0S_PRIORITY)));
    w.hm(a).probe_modes.insert(api(0), ProbeMode::Fail);
    let mark = w.h(a).mark();
    w.run_until(ms(5_999));
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(K0S_PRIORITY)), "one failure");
    w.run_until(ms(6_000));
    let lowered = |e: &Event| matches!(e, Event::Vrrp(vrrp::Event::PriorityChanged { .. }));
    let first = w.h(a).events(mark).into_iter().find(|(_, e)| lowered(e));
    assert_eq!(first.as_ref().map(|x| x.0), Some(ms(6_000)), "the second failure (5 s, 6 s)");
    let want = u8::try_from(i16::from(K0S_PRIORITY) + API_TRACK_WEIGHT).expect("priority");
    assert_eq!(
        first.map(|x| x.1),
        Some(Event::Vrrp(vrrp::Event::PriorityChanged { instance: id, priority: want }))
    );
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(want)));
    assert!(w.h(a).adverts(mark).iter().any(|(_, _, p)| *p == want), "the master says so");
    assert!(w.h(a).events(mark).iter().any(|(_, e)| *e
        == Event::Vrrp(vrrp::Event::TrackerChanged { tracker: node::API_TRACKER, up: false })));
    assert!(
        w.h(a)
            .events(mark)
            .iter()
            .any(|(_, e)| *e == Event::ServerHealth { server: api(0), healthy: false })
    );
    assert!(!w.h(a).node.desired().proxy_backends.contains(&api(0)));

    w.hm(a).probe_modes.insert(api(0), ProbeMode::Ok);
    let mark = w.h(a).mark();
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(K0S_PRIORITY)));
    assert_eq!(w.h(a).count_events(mark, lowered), 1);
    assert!(w.h(a).node.desired().proxy_backends.contains(&api(0)));
}

#[test]
fn another_servers_failures_leave_the_priority_and_drop_it_from_the_proxy_backends() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 3));
    w.run_until(ms(5_000));
    let id = w.h(a).first();
    assert_eq!(w.h(a).node.desired().proxy_backends, vec![api(0), api(1), api(2)]);
    w.hm(a).probe_modes.insert(api(1), ProbeMode::Fail);
    let mark = w.h(a).mark();
    w.run_for(Duration::from_secs(3));
    assert_eq!(w.h(a).node.desired().proxy_backends, vec![api(0), api(2)]);
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(K0S_PRIORITY)));
    assert_eq!(
        w.h(a).count_events(mark, |e| matches!(
            e,
            Event::Vrrp(vrrp::Event::PriorityChanged { .. } | vrrp::Event::TrackerChanged { .. })
        )),
        0
    );
    assert!(w.h(a).events(mark).iter().any(
        |(_, e)| matches!(e, Event::DataPlaneChanged(d) if d.proxy_backends == vec![api(0), api(2)])
    ));
    assert!(!w.h(a).node.health().is_healthy(api(1)));
    // The redirect does not depend on health: the rules are not touched.
    assert!(!w.h(a).commands(mark).iter().any(|(_, c)| matches!(c, Command::SetRules { .. })));
}

#[test]
fn unknown_probe_results_are_ignored() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 3));
    w.run_until(ms(5_000));
    let id = w.h(a).first();
    let mark = w.h(a).mark();
    for _ in 0..3 {
        w.call(a, |n, now| n.handle_probe_result(now, ProbeId(999_999), false));
    }
    assert!(w.h(a).events(mark).is_empty());
    assert!(w.h(a).commands(mark).is_empty());
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(K0S_PRIORITY)));
}

#[test]
fn unanswered_probes_of_the_own_api_server_count_as_failures_and_late_results_are_ignored() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 3));
    w.run_until(ms(5_000));
    let id = w.h(a).first();
    let lowered = Priority(u8::try_from(i16::from(K0S_PRIORITY) + API_TRACK_WEIGHT).expect("p"));

    // One probe hangs and times out (one failure); its late result "failed" does not
    // count again, and the next success clears the streak.
    w.hm(a).probe_modes.insert(api(0), ProbeMode::Hang);
    w.run_until(ms(7_001));
    let hung = std::mem::take(&mut w.hm(a).hung);
    assert_eq!(hung.len(), 1);
    assert!(hung[0].deadline <= w.now);
    w.call(a, |n, now| n.handle_probe_result(now, hung[0].id, false));
    w.hm(a).probe_modes.insert(api(0), ProbeMode::Ok);
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.h(a).node.router().priority(id), Some(Priority(K0S_PRIORITY)));
    assert_eq!(
        w.h(a).count_events(0, |e| matches!(e, Event::Vrrp(vrrp::Event::PriorityChanged { .. }))),
        0
    );

    // An API server that never answers is down.
    w.hm(a).probe_modes.insert(api(0), ProbeMode::Hang);
    w.run_for(Duration::from_secs(5));
    assert!(!w.h(a).node.health().is_healthy(api(0)));
    assert_eq!(w.h(a).node.router().priority(id), Some(lowered));
    // Its late answers ("fine!") change nothing.
    let hung = std::mem::take(&mut w.hm(a).hung);
    assert!(hung.len() >= 2);
    for p in &hung {
        if p.deadline <= w.now {
            w.call(a, |n, now| n.handle_probe_result(now, p.id, true));
        }
    }
    assert_eq!(w.h(a).node.router().priority(id), Some(lowered));
}

// --- the master's address ----------------------------------------------------------------

#[test]
fn a_backup_learns_the_master_from_its_adverts_and_forgets_it_when_it_resigns() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 2));
    w.run_until(ms(1000));
    let b = w.add(proxy_config(1, 2));
    let ib = w.h(b).first();
    w.run_until(ms(10_000));
    let masters = |h: &Host, from: usize| -> Vec<(Instant, Option<IpAddr>)> {
        h.events(from)
            .into_iter()
            .filter_map(|(t, e)| match e {
                Event::Vrrp(vrrp::Event::MasterChanged { master, .. }) => Some((t, master)),
                _ => None,
            })
            .collect()
    };
    let t0 = Instant::ZERO + MASTER_DOWN;
    assert_eq!(masters(w.h(b), 0), vec![(t0, Some(controller(0)))]);
    assert_eq!(masters(w.h(a), 0), vec![(t0, Some(controller(0)))]);
    assert_eq!(w.h(b).node.router().master(ib), Some(controller(0)));

    let mark = w.h(b).mark();
    w.call(a, |n, now| n.shutdown(now));
    w.kill(a);
    let t = w.now;
    w.run_for(Duration::from_secs(2));
    assert_eq!(masters(w.h(b), mark), vec![(t, None), (t + SKEW, Some(controller(1)))]);
    assert_eq!(w.h(b).state(ib), Some(State::Master));
}

// --- reloads -----------------------------------------------------------------------------

fn two_vips(i: usize, n: usize) -> NodeConfig {
    node_config(&k0s_yaml(&["10.0.0.200/24", "10.0.0.201/24"], false), i, n, Balancing::Ipvs)
}

#[test]
fn reloading_the_same_config_keeps_everything() {
    let mut w = World::new();
    let a = w.add(two_vips(0, 1));
    w.run_until(ms(10_000) + Duration::from_millis(300));
    let ids: Vec<InstanceId> = w.h(a).node.instances().map(|(id, _)| id).collect();
    let mark = w.h(a).mark();
    let reload = w.call(a, |n, now| n.handle_config(now, two_vips(0, 1))).expect("valid");
    assert_eq!(reload, Reload { kept: ids.clone(), added: Vec::new(), removed: Vec::new() });
    assert!(w.h(a).state_changes(mark).is_empty());
    assert!(w.h(a).kernel_commands(mark).is_empty(), "{:?}", w.h(a).kernel_commands(mark));
    assert!(w.h(a).adverts(mark).is_empty());
    assert!(
        !w.h(a).events(mark).iter().any(|(_, e)| matches!(
            e,
            Event::InstanceAdded(_) | Event::InstanceRemoved(_) | Event::DataPlaneChanged(_)
        )),
        "{:?}",
        w.h(a).events(mark)
    );
    assert!(ids.iter().all(|id| w.h(a).state(*id) == Some(State::Master)));
    assert_eq!(w.h(a).node.config(), &two_vips(0, 1));
}

#[test]
fn reloading_with_an_added_instance_starts_it_and_keeps_the_others() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.run_until(ms(10_000));
    let old = w.h(a).first();
    assert_eq!(w.h(a).state(old), Some(State::Master));
    let mark = w.h(a).mark();
    let reload = w.call(a, |n, now| n.handle_config(now, two_vips(0, 1))).expect("valid");
    let new = InstanceId(old.0 + 1);
    assert_eq!(reload, Reload { kept: vec![old], added: vec![new], removed: Vec::new() });
    assert!(w.h(a).events(mark).iter().any(|(_, e)| *e == Event::InstanceAdded(new)));
    assert!(w.h(a).events(mark).iter().any(|(_, e)| *e == Event::Reloaded(reload.clone())));
    let changes = w.h(a).state_changes(mark);
    assert_eq!(
        changes.iter().map(|c| (c.1, c.2, c.3, c.4)).collect::<Vec<_>>(),
        vec![(new, State::Initialize, State::Backup, Cause::Startup)]
    );
    assert_eq!(w.h(a).state(old), Some(State::Master));
    let kernel = w.h(a).kernel_commands(mark);
    assert!(kernel.iter().any(|(_, c)| is_remove(c, VIP2)), "the new VIP is unknown: removed");
    assert!(!kernel.iter().any(|(_, c)| is_add(c, VIP) || is_remove(c, VIP)));
    assert_eq!(w.h(a).rules.as_ref().map(|r| r.redirects.len()), Some(2));
    w.run_for(MASTER_DOWN);
    assert_eq!(w.h(a).state(new), Some(State::Master));
    assert!(w.h(a).node.holds_address(IF, VIP2) && w.h(a).node.holds_address(IF, VIP));
}

#[test]
fn reloading_without_a_master_instance_resigns_it_and_removes_its_vip() {
    let mut w = World::new();
    let a = w.add(two_vips(0, 1));
    w.run_until(ms(10_000));
    let ids: Vec<InstanceId> = w.h(a).node.instances().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    assert!(w.h(a).node.holds_address(IF, VIP2));
    let mark = w.h(a).mark();
    let reload = w.call(a, |n, now| n.handle_config(now, proxy_config(0, 1))).expect("valid");
    assert_eq!(reload, Reload { kept: vec![ids[0]], added: Vec::new(), removed: vec![ids[1]] });
    assert_eq!(w.h(a).adverts(mark), vec![(w.now, ids[1], 0)], "priority 0 from the removed one");
    assert!(w.h(a).kernel_commands(mark).iter().any(|(_, c)| is_remove(c, VIP2)));
    assert!(!w.h(a).node.holds_address(IF, VIP2));
    assert!(!w.h(a).addresses.contains(&(IF, vip24(VIP2))));
    assert!(w.h(a).events(mark).iter().any(|(_, e)| *e == Event::InstanceRemoved(ids[1])));
    assert_eq!(w.h(a).state(ids[1]), None);
    assert_eq!(w.h(a).state(ids[0]), Some(State::Master));
    assert!(w.h(a).node.holds_address(IF, VIP));
    assert_eq!(w.h(a).rules, Some(the_redirect()));
    assert!(!w.h(a).node.is_master_of(VIP2));
}

#[test]
fn an_invalid_reload_changes_nothing() {
    let mut w = World::new();
    let a = w.add(two_vips(0, 1));
    w.run_until(ms(10_000));
    let before = w.h(a).node.config().clone();
    let ids: Vec<InstanceId> = w.h(a).node.instances().map(|(id, _)| id).collect();

    // Two instances with one VRID.
    let mut dup = two_vips(0, 1);
    dup.instances[1].vrid = dup.instances[0].vrid;
    let mark = w.h(a).mark();
    let r = w.call(a, |n, now| n.handle_config(now, dup));
    assert!(matches!(r, Err(ConfigError::DuplicateVrid { vrid: 51, .. })), "{r:?}");

    // An instance tracking a tracker the node does not have, in place of a master.
    let mut unknown = two_vips(0, 1);
    unknown.instances[1].tracking.push(Track { tracker: TrackerId(7), weight: -10 });
    let r = w.call(a, |n, now| n.handle_config(now, unknown));
    assert!(matches!(r, Err(ConfigError::UnknownTracker { tracker: 7, .. })), "{r:?}");

    // The node tells of both refusals, and of nothing else.
    let events = w.h(a).events(mark);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|(_, e)| matches!(e, Event::ReloadRefused { .. })), "{events:?}");
    assert!(w.h(a).kernel_commands(mark).is_empty());
    assert!(w.h(a).adverts(mark).is_empty());
    assert_eq!(w.h(a).node.config(), &before);
    assert_eq!(w.h(a).node.instances().map(|(id, _)| id).collect::<Vec<_>>(), ids);
    assert!(ids.iter().all(|id| w.h(a).state(*id) == Some(State::Master)));
    assert!(w.h(a).node.holds_address(IF, VIP2));
}

#[test]
fn a_reload_that_needs_a_restart_is_refused_whole() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.run_until(ms(10_000));
    let before = w.h(a).node.config().clone();
    let mark = w.h(a).mark();

    // The proxy's listener was bound at start, with privileges since dropped.
    let mut moved = proxy_config(0, 1);
    moved.keepalived.user_space_proxy_bind_port += 1;
    assert!(matches!(w.h(a).node.check_config(&moved), Err(ConfigError::NeedsRestart { .. })));
    let r = w.call(a, |n, now| n.handle_config(now, moved));
    assert!(
        matches!(&r, Err(ConfigError::NeedsRestart { what }) if what.contains("userSpaceProxyBindPort")),
        "{r:?}"
    );

    // So was the kind of data plane.
    let r = w.call(a, |n, now| n.handle_config(now, ipvs_config(0, 1, Balancing::Ipvs)));
    assert!(
        matches!(&r, Err(ConfigError::NeedsRestart { what }) if what.contains("mode")),
        "{r:?}"
    );

    let events = w.h(a).events(mark);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|(_, e)| matches!(e, Event::ReloadRefused { .. })), "{events:?}");
    assert!(w.h(a).kernel_commands(mark).is_empty());
    assert_eq!(w.h(a).node.config(), &before);
    assert!(w.h(a).node.holds_address(IF, VIP));
}

#[test]
fn a_reload_that_changes_a_vip_prefix_moves_the_address() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.run_until(ms(10_000));
    let old = w.h(a).first();
    let narrower = node_config(&k0s_yaml(&["10.0.0.200/25"], false), 0, 1, Balancing::Ipvs);
    let reload = w.call(a, |n, now| n.handle_config(now, narrower)).expect("valid");
    assert_eq!(reload.removed, vec![old]);
    assert_eq!(reload.added.len(), 1);
    w.run_for(MASTER_DOWN + Duration::from_secs(1));
    let new = reload.added[0];
    assert_eq!(w.h(a).state(new), Some(State::Master));
    let narrow = VirtualIp { addr: VIP, prefix_len: 25 };
    assert_eq!(w.h(a).addresses, [(IF, narrow)].into_iter().collect());
    assert_eq!(w.h(a).node.held_addresses(), vec![(IF, narrow)]);
}

#[test]
fn after_a_prefix_reload_the_new_masters_own_address_notification_is_not_drift() {
    let mut w = World::new();
    let a = w.add(proxy_config(0, 1));
    w.run_until(ms(10_000));
    let narrower = node_config(&k0s_yaml(&["10.0.0.200/25"], false), 0, 1, Balancing::Ipvs);
    let reload = w.call(a, |n, now| n.handle_config(now, narrower)).expect("valid");
    w.run_for(MASTER_DOWN + Duration::from_secs(1));
    assert_eq!(w.h(a).state(reload.added[0]), Some(State::Master));
    // The kernel's notifications of the node's own changes arrive late, and repeatedly.
    let mark = w.h(a).mark();
    for _ in 0..3 {
        w.call(a, |n, now| n.handle_address(now, IF, VIP, true));
    }
    assert!(
        !w.h(a).kernel_commands(mark).iter().any(|(_, c)| is_remove(c, VIP)),
        "{:?}",
        w.h(a).kernel_commands(mark)
    );
    assert!(!w.h(a).events(mark).iter().any(|(_, e)| matches!(e, Event::KernelDrift { .. })));
    assert_eq!(
        w.h(a).addresses,
        [(IF, VirtualIp { addr: VIP, prefix_len: 25 })].into_iter().collect()
    );
}

#[test]
fn an_instance_whose_first_vip_is_refused_leaves_fault_after_the_hold_although_the_second_worked() {
    let text = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n        - virtualIPs: [\"10.0.0.200/24\", \"10.0.0.201/24\"]\n          authPass: pass\n";
    let mut w = World::new();
    let a = w.add(node_config(text, 0, 1, Balancing::Ipvs));
    w.hm(a).refuse.push(Refuse::Add(VIP));
    w.run_until(Instant::ZERO + MASTER_DOWN);
    let id = w.h(a).first();
    assert_eq!(w.h(a).state(id), Some(State::Fault));
    // The second VIP's add, queued behind the refused first, is withdrawn.
    assert!(!w.h(a).node.holds_address(IF, VIP2), "{:?}", w.h(a).addresses);
    w.run_until(Instant::ZERO + MASTER_DOWN + REFUSAL_HOLD);
    assert_ne!(w.h(a).state(id), Some(State::Fault), "stuck in Fault");
    // Mended: it takes both.
    w.hm(a).refuse.clear();
    w.run_for(Duration::from_secs(40));
    assert_eq!(w.h(a).state(id), Some(State::Master));
    assert!(w.h(a).node.holds_address(IF, VIP) && w.h(a).node.holds_address(IF, VIP2));
}

#[test]
fn an_instance_that_only_moved_in_the_list_is_kept_under_its_new_name() {
    let instance = |vip: &str, vrid: u8, pass: &str| {
        format!(
            "        - virtualIPs: [\"{vip}\"]\n          virtualRouterID: {vrid}\n          authPass: {pass}\n"
        )
    };
    let head = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n";
    let one = format!("{head}{}", instance("10.0.0.200/24", 60, "a"));
    let two = format!(
        "{head}{}{}",
        instance("10.0.0.201/24", 61, "b"),
        instance("10.0.0.200/24", 60, "a")
    );
    let mut w = World::new();
    let a = w.add(node_config(&one, 0, 1, Balancing::Ipvs));
    w.run_until(ms(10_000));
    let old = w.h(a).first();
    assert_eq!(w.h(a).state(old), Some(State::Master));
    let mark = w.h(a).mark();
    let reload = w.call(a, |n, now| n.handle_config(now, node_config(&two, 0, 1, Balancing::Ipvs)));
    let reload = reload.expect("valid");
    assert_eq!(reload.kept, vec![old], "{reload:?}");
    assert_eq!(reload.added.len(), 1);
    assert!(reload.removed.is_empty());
    assert_eq!(w.h(a).state(old), Some(State::Master));
    let name = w.h(a).node.instances().find(|(id, _)| *id == old).map(|(_, c)| c.name.clone());
    assert_eq!(name.as_deref(), Some("k0s-vip-1"));
    assert!(w.h(a).adverts(mark).iter().all(|(_, i, p)| *i != old || *p != 0), "it resigned");
    assert!(!w.h(a).kernel_commands(mark).iter().any(|(_, c)| is_remove(c, VIP)));
}

// --- the userspace proxy -----------------------------------------------------------------

#[test]
fn proxy_backends_go_round_robin_over_the_healthy_ones_each_listed_once() {
    let mut w = World::new();
    let mut host = Host::new(Instant::ZERO, proxy_config(0, 3));
    for i in 0..3 {
        host.probe_modes.insert(api(i), ProbeMode::Hang);
    }
    let a = w.add_host(host);
    let client = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5));
    // Before any result the servers are down: k0s fails open, to all of them.
    let all = w.call(a, |n, now| n.proxy_backends_for(now, client));
    assert_eq!(all.iter().copied().collect::<BTreeSet<_>>().len(), 3);
    w.hm(a).probe_modes.clear();
    w.run_until(ms(5_000));
    let lists: Vec<Vec<SocketAddr>> =
        (0..6).map(|_| w.call(a, |n, now| n.proxy_backends_for(now, client))).collect();
    let firsts: Vec<SocketAddr> = lists.iter().map(|l| l[0]).collect();
    assert_eq!(firsts, vec![api(0), api(1), api(2), api(0), api(1), api(2)]);
    for l in &lists {
        assert_eq!(l.len(), 3);
        assert_eq!(
            l.iter().copied().collect::<BTreeSet<_>>(),
            [api(0), api(1), api(2)].into_iter().collect()
        );
    }
    assert_eq!(lists[1], vec![api(1), api(2), api(0)], "then the others, in turn");

    w.hm(a).probe_modes.insert(api(1), ProbeMode::Fail);
    w.run_for(Duration::from_secs(3));
    for _ in 0..4 {
        let l = w.call(a, |n, now| n.proxy_backends_for(now, client));
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(!l.contains(&api(1)));
    }
}

#[test]
fn a_server_a_dial_failed_to_goes_last_until_a_later_probe_succeeds() {
    let mut w = World::new();
    let a = w.add_host(Host::new(Instant::ZERO, proxy_config(0, 3)));
    let client = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5));
    w.run_until(ms(5_000));
    let firsts = |w: &mut World| -> Vec<Vec<SocketAddr>> {
        (0..3).map(|_| w.call(a, |n, now| n.proxy_backends_for(now, client))).collect()
    };
    assert!(firsts(&mut w).iter().any(|l| l[0] == api(1)));
    // The proxy found api(1) dead (its probes have not noticed yet): no new client is
    // sent to it first, and it stays in the list as the last resort.
    w.call(a, |n, now| n.handle_dial_failure(now, api(1)));
    for l in firsts(&mut w) {
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(l[2], api(1), "{l:?}");
    }
    assert!(w.h(a).node.health().is_healthy(api(1)), "the health checks alone decide that");
    // A probe asked for after the failure answers: back in turn.
    w.run_for(Duration::from_secs(3));
    assert!(firsts(&mut w).iter().any(|l| l[0] == api(1)));
    // An unknown server is not remembered.
    let stranger: SocketAddr = "10.9.9.9:6443".parse().unwrap();
    w.call(a, |n, now| n.handle_dial_failure(now, stranger));
    assert!(firsts(&mut w).iter().all(|l| !l.contains(&stranger)));
}

// --- IPVS mode ---------------------------------------------------------------------------

#[test]
fn in_ipvs_mode_only_the_master_programs_the_virtual_service() {
    let mut w = World::new();
    let a = w.add(ipvs_config(0, 2, Balancing::Ipvs));
    w.run_until(ms(1000));
    let b = w.add(ipvs_config(1, 2, Balancing::Ipvs));
    w.run_until(ms(10_000));
    assert!(w.h(a).node.is_master_of(VIP));
    let service = ServiceSpec {
        key: ServiceKey { vip: VIP, port: API_PORT },
        fwmark: FWMARK_BASE,
        algo: LbAlgo::Rr,
        forwarding: LbKind::Dr,
        persistence_secs: 360,
        real_servers: vec![
            RealServer { addr: api(0), weight: 1 },
            RealServer { addr: api(1), weight: 1 },
        ],
    };
    assert_eq!(w.h(a).services, Some(vec![service.clone()]));
    assert_eq!(w.h(a).node.held_services(), Some(&[service][..]));
    assert_eq!(w.h(b).services, Some(Vec::new()));
    for (_, c) in w.h(b).commands(0) {
        if let Command::SetServices { services, .. } = c {
            assert!(services.is_empty(), "a backup programmed {services:?}");
        }
    }
    // The master's service came after it became master.
    let master_at = w.h(a).entered(w.h(a).first(), State::Master).expect("master");
    for (t, c) in w.h(a).commands(0) {
        if let Command::SetServices { services, .. } = c {
            assert!(services.is_empty() || t >= master_at);
        }
    }
    // Every controller marks the service's traffic except from the real servers (the loop
    // guard), master or not: no redirect in IPVS mode.
    let guard = LoopGuard {
        service: ServiceKey { vip: VIP, port: API_PORT },
        fwmark: FWMARK_BASE,
        real_servers: vec![api(0).ip(), api(1).ip()],
    };
    for h in [w.h(a), w.h(b)] {
        assert_eq!(
            h.rules,
            Some(NatRules { loop_guards: vec![guard.clone()], ..NatRules::default() })
        );
        assert!(h.node.desired().proxy_port.is_none());
    }
    assert!(
        w.call(a, |n, now| n.proxy_backends_for(now, IpAddr::V4(Ipv4Addr::LOCALHOST))).is_empty()
    );

    // The master fails over: the service moves with the VIP.
    w.call(a, |n, now| n.shutdown(now));
    w.kill(a);
    w.run_for(Duration::from_secs(1));
    assert_eq!(w.h(a).services, Some(Vec::new()));
    assert_eq!(w.h(b).services.as_ref().map(Vec::len), Some(1));
}

#[test]
fn balancing_by_nat_puts_the_virtual_service_into_the_rules() {
    let mut w = World::new();
    let a = w.add(ipvs_config(0, 2, Balancing::Nat));
    w.run_until(ms(1000));
    let b = w.add(ipvs_config(1, 2, Balancing::Nat));
    w.run_until(ms(10_000));
    assert!(w.h(a).node.is_master_of(VIP));
    let balancer = NatBalancer {
        vip: SocketAddr::new(VIP, API_PORT),
        backends: vec![api(0), api(1)],
        spread: Spread::SourceHash,
    };
    assert_eq!(w.h(a).rules, Some(NatRules { balancers: vec![balancer], ..NatRules::default() }));
    assert_eq!(w.h(b).rules, Some(NatRules::default()));
    for i in [a, b] {
        assert!(!w.h(i).commands(0).iter().any(|(_, c)| matches!(c, Command::SetServices { .. })));
        assert_eq!(w.h(i).services, None);
    }
}

#[test]
fn direct_routing_holds_the_vip_on_the_local_interface_of_every_controller() {
    let mut w = World::new();
    let mut configs: Vec<NodeConfig> = (0..2).map(|i| ipvs_config(i, 2, Balancing::Ipvs)).collect();
    for c in &mut configs {
        c.local_vip_ifindex = Some(LOCAL_IF);
    }
    let a = w.add(configs[0].clone());
    w.run_until(ms(1000));
    let b = w.add(configs[1].clone());
    w.run_until(ms(10_000));
    let local = VirtualIp { addr: VIP, prefix_len: 32 };
    assert!(w.h(a).addresses.contains(&(LOCAL_IF, local)));
    assert!(w.h(b).addresses.contains(&(LOCAL_IF, local)));
    assert!(w.h(b).node.holds_address(LOCAL_IF, VIP) && !w.h(b).node.holds_address(IF, VIP));
    // Removed by hand on the local interface: put back, and never announced.
    let mark = w.h(b).mark();
    w.hm(b).addresses.remove(&(LOCAL_IF, local));
    w.call(b, |n, now| n.handle_address(now, LOCAL_IF, VIP, false));
    assert!(w.h(b).addresses.contains(&(LOCAL_IF, local)));
    assert!(!w.h(b).kernel_commands(mark).iter().any(|(_, c)| announces(c, VIP)));
    // Moving the local interface in a reload moves the addresses.
    let mut moved = configs[1].clone();
    moved.local_vip_ifindex = Some(IfIndex(10));
    w.call(b, |n, now| n.handle_config(now, moved)).expect("valid");
    assert!(!w.h(b).addresses.contains(&(LOCAL_IF, local)), "{:?}", w.h(b).addresses);
    assert!(w.h(b).addresses.contains(&(IfIndex(10), local)));
    // Shutdown releases them with the rest: the host's ARP settings go back on stop, and a
    // VIP left on a non-ARPing interface would then be answered for by this node.
    w.call(b, |n, now| n.shutdown(now));
    assert!(w.h(b).addresses.is_empty(), "{:?}", w.h(b).addresses);
}

// --- shutdown ----------------------------------------------------------------------------

#[test]
fn shutdown_resigns_removes_the_held_vips_and_empties_the_rules() {
    let mut w = World::new();
    let a = w.add(two_vips(0, 1));
    w.run_until(ms(10_000));
    assert!(w.h(a).node.holds_address(IF, VIP) && w.h(a).node.holds_address(IF, VIP2));
    let mark = w.h(a).mark();
    w.call(a, |n, now| n.shutdown(now));
    let adverts = w.h(a).adverts(mark);
    assert_eq!(adverts.len(), 2, "{adverts:?}");
    assert!(adverts.iter().all(|(_, _, p)| *p == 0));
    let kernel = w.h(a).kernel_commands(mark);
    assert!(
        kernel.iter().any(|(_, c)| is_remove(c, VIP))
            && kernel.iter().any(|(_, c)| is_remove(c, VIP2))
    );
    assert!(
        kernel
            .iter()
            .any(|(_, c)| matches!(c, Command::SetRules { rules, .. } if rules.is_empty()))
    );
    assert!(
        !kernel
            .iter()
            .any(|(_, c)| matches!(c, Command::AddAddress { .. } | Command::Announce { .. }))
    );
    assert!(w.h(a).addresses.is_empty());
    assert_eq!(w.h(a).rules, Some(NatRules::default()));
    assert!(w.h(a).node.held_addresses().is_empty());
    for (id, _) in w.h(a).node.instances() {
        assert_eq!(w.h(a).state(id), Some(State::Initialize));
    }
    // And it stays quiet.
    let mark = w.h(a).mark();
    w.run_for(Duration::from_secs(30));
    assert!(w.h(a).adverts(mark).is_empty());
    assert!(w.h(a).kernel_commands(mark).is_empty());
}

// --- properties --------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Advance time and fire what is due.
    Wait(u64),
    /// Jump to the deadline.
    Deadline,
    /// Answer the n-th command in flight.
    Answer {
        pick: usize,
        ok: bool,
    },
    /// A result for an id never issued (or answered already).
    Stale(u64),
    /// An address appeared or went.
    Address {
        which: u8,
        present: bool,
    },
    Link(bool),
    /// Answer the n-th probe in flight.
    Probe {
        pick: usize,
        ok: bool,
    },
    UnknownProbe(u64),
    Lost(u8),
    /// An advert from the other controller.
    Advert(u8),
    Reload(u8),
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..3_000).prop_map(Op::Wait),
        3 => Just(Op::Deadline),
        6 => (any::<usize>(), proptest::bool::weighted(0.7)).prop_map(|(pick, ok)| Op::Answer { pick, ok }),
        1 => (0u64..50).prop_map(Op::Stale),
        2 => (0u8..3, any::<bool>()).prop_map(|(which, present)| Op::Address { which, present }),
        1 => any::<bool>().prop_map(Op::Link),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Op::Probe { pick, ok }),
        1 => (0u64..50).prop_map(Op::UnknownProbe),
        1 => (0u8..4).prop_map(Op::Lost),
        2 => prop_oneof![Just(0u8), Just(100), Just(200), Just(250), any::<u8>()].prop_map(Op::Advert),
        1 => (0u8..4).prop_map(Op::Reload),
        1 => Just(Op::Shutdown),
    ]
}

/// The configurations a random run moves between (index 3 is invalid).
fn fuzz_config(which: u8) -> NodeConfig {
    match which % 4 {
        0 => proxy_config(0, 2),
        1 => two_vips(0, 2),
        2 => {
            let mut c = ipvs_config(0, 2, Balancing::Ipvs);
            c.local_vip_ifindex = Some(LOCAL_IF);
            c
        }
        _ => {
            let mut c = two_vips(0, 2);
            c.instances[1].vrid = c.instances[0].vrid;
            c
        }
    }
}

/// The kernel object a command sets.
fn object_of(c: &Command) -> Option<(u8, IfIndex, IpAddr)> {
    match c {
        Command::AddAddress { ifindex, vip, .. } | Command::RemoveAddress { ifindex, vip, .. } => {
            Some((0, *ifindex, vip.addr))
        }
        Command::SetRules { .. } => Some((1, IfIndex(0), VIP)),
        Command::SetServices { .. } => Some((2, IfIndex(0), VIP)),
        _ => None,
    }
}

fn run_ops(start: u8, ops: &[(u64, Op)]) -> Result<(), TestCaseError> {
    let mut now = Instant::ZERO;
    let mut node = Node::new(now, fuzz_config(start)).expect("valid");
    let mut in_flight: Vec<Command> = Vec::new();
    let mut ever: BTreeSet<CommandId> = BTreeSet::new();
    let mut probes: Vec<Probe> = Vec::new();
    let peer = controller(1);
    let drain = |node: &mut Node,
                 now: Option<Instant>,
                 in_flight: &mut Vec<Command>,
                 ever: &mut BTreeSet<CommandId>,
                 probes: &mut Vec<Probe>|
     -> Result<(), TestCaseError> {
        while node.poll_transmit().is_some() {}
        while let Some(c) = node.poll_command() {
            if let Command::Probe(p) = c {
                probes.push(p);
                continue;
            }
            if let Command::Announce { ifindex, addresses } = &c {
                for a in addresses {
                    prop_assert!(
                        node.holds_address(*ifindex, *a),
                        "announced {} which the kernel has not acknowledged",
                        a
                    );
                }
            }
            let Some(id) = c.id() else { continue };
            prop_assert!(
                !in_flight.iter().any(|f| f.id() == Some(id)),
                "command id {:?} reported twice as in flight",
                id
            );
            prop_assert!(ever.insert(id), "command id {:?} reused", id);
            let obj = object_of(&c);
            prop_assert!(
                !in_flight.iter().any(|f| object_of(f) == obj),
                "two commands in flight for one object: {:?} and {:?}",
                c,
                in_flight
            );
            in_flight.push(c);
        }
        while node.poll_event().is_some() {}
        // After a call (not when the node was not called at all).
        if let (Some(now), Some(t)) = (now, node.poll_timeout()) {
            prop_assert!(t > now, "poll_timeout {} not after now {}", t, now);
        }
        Ok(())
    };
    drain(&mut node, Some(now), &mut in_flight, &mut ever, &mut probes)?;
    for (dt, op) in ops {
        // Inputs come at any time, not only at deadlines.
        now += Duration::from_millis(*dt);
        let mut called = true;
        match op {
            Op::Wait(ms) => {
                now += Duration::from_millis(*ms);
                node.handle_timeout(now);
            }
            Op::Deadline => {
                if let Some(t) = node.poll_timeout() {
                    now = now.max(t);
                }
                node.handle_timeout(now);
            }
            Op::Answer { pick, ok } => {
                if in_flight.is_empty() {
                    continue;
                }
                let c = in_flight.remove(pick % in_flight.len());
                let id = c.id().expect("id");
                let result = if *ok { Ok(()) } else { Err(CommandError(REFUSED.into())) };
                node.handle_command_result(now, id, result);
            }
            Op::Stale(back) => {
                let id = ever.iter().next_back().map_or(0, |i| i.0).saturating_sub(*back);
                if in_flight.iter().any(|c| c.id() == Some(CommandId(id))) {
                    called = false;
                } else {
                    node.handle_command_result(
                        now,
                        CommandId(id),
                        Err(CommandError("late".into())),
                    );
                }
            }
            Op::Address { which, present } => {
                let (ifindex, addr) = match which {
                    0 => (IF, VIP),
                    1 => (IF, VIP2),
                    _ => (LOCAL_IF, VIP),
                };
                node.handle_address(now, ifindex, addr, *present);
            }
            Op::Link(up) => node.handle_link(now, IF, *up),
            Op::Probe { pick, ok } => {
                if probes.is_empty() {
                    continue;
                }
                let p = probes.remove(pick % probes.len());
                node.handle_probe_result(now, p.id, *ok);
            }
            Op::UnknownProbe(id) => node.handle_probe_result(now, ProbeId(10_000 + id), false),
            Op::Lost(which) => {
                let object = match which {
                    0 => Object::Rules,
                    1 => Object::Services,
                    2 => Object::Address { ifindex: IF, addr: VIP },
                    _ => Object::Address { ifindex: LOCAL_IF, addr: VIP },
                };
                node.handle_kernel_lost(now, object);
            }
            Op::Advert(priority) => {
                let payload = advert(peer, *priority, &[VIP]);
                let header = IpHeader { src: peer, dst: IpAddr::V4(GROUP_V4), ttl: 255 };
                node.handle_packet(now, Incoming { ifindex: IF, header, payload: &payload });
            }
            Op::Reload(which) => {
                let before = node.config().clone();
                let r = node.handle_config(now, fuzz_config(*which));
                if r.is_err() {
                    prop_assert_eq!(node.config(), &before);
                }
            }
            Op::Shutdown => node.shutdown(now),
        }
        drain(&mut node, called.then_some(now), &mut in_flight, &mut ever, &mut probes)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn whatever_happens_the_deadline_is_ahead_no_command_is_in_flight_twice_and_only_held_addresses_are_announced(
        start in 0u8..3,
        ops in proptest::collection::vec((prop_oneof![3 => Just(0u64), 1 => 0u64..2_000], op()), 1..80),
    ) {
        run_ops(start, &ops)?;
    }
}

//! A small in-process LAN for behaviour tests: N routers on one segment, virtual time that
//! jumps to the next event (`step`), `drive_until` a time, and per-node state transcripts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cplb_core::time::Instant;
use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, Command, Event, IfIndex, Incoming, InstanceConfig,
    InstanceId, IpHeader, Priority, ReceiveRules, Router, State, Version, VirtualIp, Vrid,
};

pub const IF: IfIndex = IfIndex(1);
pub const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 200));

/// The address of node `i`: 10.200.0.10 + i.
pub fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 0, 10 + u8::try_from(i).expect("small")))
}

/// k0s's generated keepalived instance: v2, priority 200, 1 s, simple auth, VRID 51.
pub fn k0s_instance(i: usize) -> InstanceConfig {
    let mut cfg = InstanceConfig::new(
        "k0s-vip-0",
        IF,
        Vrid::new(51).expect("vrid"),
        addr(i),
        vec![VirtualIp { addr: VIP, prefix_len: 24 }],
    );
    cfg.priority = Priority(200);
    cfg.auth = Authentication::SimpleText(AuthPass::new(b"k0s-lab1").expect("pass"));
    cfg
}

/// A packet on the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub at: Instant,
    pub seq: u64,
    pub from: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub struct Node {
    pub router: Router,
    pub instances: Vec<InstanceId>,
    pub powered: bool,
    /// Addresses the node holds (from AddAddress / RemoveAddress).
    pub held: BTreeSet<IpAddr>,
    /// (time, state) for instance 0.
    pub transcript: Vec<(Instant, State)>,
    /// Every announcement command: (time, addresses).
    pub announces: Vec<(Instant, Vec<IpAddr>)>,
    /// Every event.
    pub events: Vec<(Instant, Event)>,
    /// Adverts this node received: (time, sender, priority).
    pub heard: Vec<(Instant, IpAddr, u8)>,
}

#[derive(Debug)]
pub struct Lan {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub latency: Duration,
    in_flight: Vec<Frame>,
    seq: u64,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(usize, usize)>,
    /// Every frame sent: (time, sender, advertisement).
    pub wire: Vec<(Instant, usize, Advertisement)>,
    steps: u64,
}

impl Lan {
    /// A LAN of nodes, each with the given instances, all started at time 0.
    pub fn new(configs: Vec<Vec<InstanceConfig>>) -> Self {
        let mut lan = Self {
            now: Instant::ZERO,
            nodes: Vec::new(),
            latency: Duration::ZERO,
            in_flight: Vec::new(),
            seq: 0,
            cut: BTreeSet::new(),
            wire: Vec::new(),
            steps: 0,
        };
        for cfgs in configs {
            lan.nodes.push(Node {
                router: Router::new(Instant::ZERO),
                instances: Vec::new(),
                powered: false,
                held: BTreeSet::new(),
                transcript: Vec::new(),
                announces: Vec::new(),
                events: Vec::new(),
                heard: Vec::new(),
            });
            let i = lan.nodes.len() - 1;
            if !cfgs.is_empty() {
                lan.power_on_with(i, cfgs);
            }
        }
        lan
    }

    /// One k0s-configured instance per node.
    pub fn k0s(n: usize) -> Self {
        Self::new((0..n).map(|i| vec![k0s_instance(i)]).collect())
    }

    /// Starts a node now with fresh routers (after `power_off`, or a late joiner).
    pub fn power_on_with(&mut self, i: usize, cfgs: Vec<InstanceConfig>) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.router = Router::new(now);
        node.instances = cfgs
            .into_iter()
            .map(|c| node.router.add_instance(now, c).expect("valid config"))
            .collect();
        node.powered = true;
        self.drain(i);
    }

    /// Power loss: no goodbye, frames to and from it are lost, addresses gone.
    pub fn power_off(&mut self, i: usize) {
        self.nodes[i].powered = false;
        self.nodes[i].held.clear();
        self.in_flight.retain(|f| f.from != i);
    }

    /// Graceful stop of node `i`.
    pub fn shutdown(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].router.shutdown(now);
        self.drain(i);
    }

    pub fn state(&self, i: usize) -> State {
        let node = &self.nodes[i];
        node.instances.first().and_then(|&id| node.router.state(id)).unwrap_or(State::Initialize)
    }

    pub fn states(&self) -> Vec<State> {
        (0..self.nodes.len()).map(|i| self.state(i)).collect()
    }

    /// Powered nodes in Master state.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].powered && self.state(i) == State::Master)
            .collect()
    }

    /// State names of node `i`'s transcript.
    pub fn transcript(&self, i: usize) -> Vec<&'static str> {
        self.nodes[i].transcript.iter().map(|(_, s)| s.as_str()).collect()
    }

    /// When node `i` last entered `state`.
    pub fn entered(&self, i: usize, state: State) -> Option<Instant> {
        self.nodes[i].transcript.iter().rev().find(|(_, s)| *s == state).map(|(t, _)| *t)
    }

    /// Time of the next event: a delivery or a router deadline.
    pub fn next_event(&self) -> Option<Instant> {
        let frames = self.in_flight.iter().map(|f| f.at);
        let timers =
            self.nodes.iter().filter(|n| n.powered).filter_map(|n| n.router.poll_timeout());
        frames.chain(timers).min()
    }

    /// Advances to the next event and handles everything due then. Returns false when idle.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        assert!(self.steps < 1_000_000, "livelock: over a million steps at {}", self.now);
        let Some(at) = self.next_event() else {
            return false;
        };
        assert!(at >= self.now, "time went backwards: {at} < {}", self.now);
        self.now = at;
        loop {
            let due: Vec<Frame> = {
                let (due, rest) =
                    std::mem::take(&mut self.in_flight).into_iter().partition(|f| f.at <= at);
                self.in_flight = rest;
                due
            };
            let mut due = due;
            due.sort_by_key(|f| (f.at, f.seq));
            for frame in &due {
                self.deliver(frame);
            }
            let mut fired = false;
            for i in 0..self.nodes.len() {
                if self.nodes[i].powered
                    && self.nodes[i].router.poll_timeout().is_some_and(|t| t <= at)
                {
                    self.nodes[i].router.handle_timeout(at);
                    self.drain(i);
                    fired = true;
                }
            }
            if due.is_empty() && !fired && !self.in_flight.iter().any(|f| f.at <= at) {
                break;
            }
        }
        true
    }

    /// Runs until `t` (events at `t` included), then sets the clock to `t`.
    pub fn drive_until(&mut self, t: Instant) {
        while self.next_event().is_some_and(|at| at <= t) {
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Runs for `d` from now.
    pub fn drive_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.drive_until(t);
    }

    /// Hands a raw packet to node `to` as if received now.
    pub fn inject(&mut self, to: usize, src: IpAddr, dst: IpAddr, ttl: u8, payload: &[u8]) {
        let now = self.now;
        let header = IpHeader { src, dst, ttl };
        self.nodes[to].router.handle_packet(now, Incoming { ifindex: IF, header, payload });
        self.drain(to);
    }

    /// Drains node `i` after a direct call on its router.
    pub fn settle(&mut self, i: usize) {
        self.drain(i);
    }

    fn deliver(&mut self, frame: &Frame) {
        let targets: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| {
                j != frame.from && self.nodes[j].powered && !self.cut.contains(&(frame.from, j))
            })
            .filter(|&j| {
                frame.dst.is_multicast()
                    || self.nodes[j].instances.iter().any(|&id| {
                        self.nodes[j]
                            .router
                            .config(id)
                            .is_some_and(|c| c.primary_address == frame.dst)
                    })
            })
            .collect();
        for j in targets {
            if let Ok((advert, _)) =
                Advertisement::decode(&frame.payload, frame.src, frame.dst, &lenient())
            {
                self.nodes[j].heard.push((self.now, frame.src, advert.priority.0));
            }
            self.inject(j, frame.src, frame.dst, frame.ttl, &frame.payload.clone());
        }
    }

    /// Drains node `i`'s router: transmits go on the wire, commands change the host.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let latency = self.latency;
        let node = &mut self.nodes[i];
        while let Some(t) = node.router.poll_transmit() {
            if let Ok((advert, _)) = Advertisement::decode(&t.payload, t.src, t.dst, &lenient()) {
                self.wire.push((now, i, advert));
            }
            self.seq += 1;
            self.in_flight.push(Frame {
                at: now + latency,
                seq: self.seq,
                from: i,
                src: t.src,
                dst: t.dst,
                ttl: 255,
                payload: t.payload,
            });
        }
        while let Some(c) = node.router.poll_command() {
            match c {
                Command::AddAddress { vip, .. } => {
                    node.held.insert(vip.addr);
                }
                Command::RemoveAddress { vip, .. } => {
                    node.held.remove(&vip.addr);
                }
                Command::Announce { addresses, .. } => node.announces.push((now, addresses)),
            }
        }
        while let Some(e) = node.router.poll_event() {
            if let Event::StateChanged { instance, to, .. } = &e
                && *instance == node.instances[0]
            {
                node.transcript.push((now, *to));
            }
            node.events.push((now, e));
        }
    }
}

fn lenient() -> ReceiveRules {
    ReceiveRules { allow_global_first_ipv6: true, ..ReceiveRules::default() }
}

/// Counts per key.
pub fn tally<K: Ord>(items: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for k in items {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// A v3 instance for node `i` with the given priority and interval.
pub fn v3_instance(i: usize, priority: u8, interval_cs: u16) -> InstanceConfig {
    let mut cfg = k0s_instance(i);
    cfg.version = Version::V3;
    cfg.auth = Authentication::None;
    cfg.priority = Priority(priority);
    cfg.advert_interval_cs = interval_cs;
    cfg
}

//! One controller: everything it decides, in one sans-IO object that both drivers (the
//! simulator's host and `cplbd`) feed and carry out. It owns the VRRP instances, the
//! health checker and its tie to tracking, the desired data plane (virtual servers, the
//! userspace proxy's backend choice by the core's schedulers) and what the kernel is known
//! to hold, so reconciling is the node's decision, not the driver's.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     while let Some(t) = node.poll_transmit() { send t (IP header with TTL/hop limit 255) }
//!     while let Some(c) = node.poll_command()  { carry out c; node.handle_command_result(now, id, r) }
//!     while let Some(e) = node.poll_event()    { log / count / trace e }
//!     wait for a packet, a probe result, a kernel notification, or node.poll_timeout()
//!     then call the matching handle_*(now, ..)
//! }
//! ```
//!
//! Drain after every `handle_*` call, transmits first. Time only moves forward; after any
//! call `poll_timeout()` is later than `now` (or `None`).

mod config;
mod k0s;
mod kernel;
mod output;

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

pub use config::{API_TRACKER, Balancing, NodeConfig, Reload};
pub use k0s::{
    ANNOUNCE_REFRESH, API_TRACK_WEIGHT, K0S_PRIORITY, VrrpTuning, instance_name, vrrp_instances,
};
pub use kernel::{FIRST_BACKOFF, MAX_BACKOFF, Refusal};
pub use output::{Command, CommandError, CommandId, Event, Object};

use config::{check_instances, needs_restart};

use crate::config::{LbAlgo, LbKind};
use crate::lb::{
    self, DataPlane, HealthChecker, Probe, ProbeId, RealServer, ServiceKey, VirtualService,
};
use crate::time::Instant;
use crate::vrrp::{
    self, ConfigError, IfIndex, Incoming, InstanceConfig, InstanceId, Router, State, TrackerConfig,
    Transmit, VirtualIp,
};
use kernel::{Kernel, Outcome};

/// How long an instance whose addresses the kernel refused stays in Fault the first
/// time; each refusal in a row doubles it, up to [`MAX_REFUSAL_HOLD`]. The hold keeps a
/// node whose kernel refuses this one address from flapping master every
/// Master_Down_Interval; it ends early when the kernel sets an object whose setting it had
/// refused (a removal, the rules, the services that failed with it): the kernel failed as
/// a whole and works again, and holding a healthy kernel away from the VIP serves nobody.
/// What the kernel never refused (the removal of an address only its add fails for) does
/// not end it.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(1);
/// The longest such hold.
pub const MAX_REFUSAL_HOLD: Duration = Duration::from_secs(30);

/// One controller.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    router: Router,
    health: HealthChecker,
    /// Probes in flight, by the id the driver was given.
    probes: BTreeMap<ProbeId, InFlightProbe>,
    /// The last probe id given out. The node numbers probes itself: a reload may replace
    /// the health checker, whose ids start again, and a late result for an old probe must
    /// not pass for a new one's.
    last_probe: u64,
    /// Instances by id, with their configuration.
    instances: BTreeMap<InstanceId, InstanceConfig>,
    /// Instances a reload removed, kept so that their last events (the resignation comes
    /// after the removal) can still be named. Ids are never reused.
    retired: BTreeMap<InstanceId, InstanceConfig>,
    /// The data plane wanted now.
    desired: DataPlane,
    /// The direct-routing local VIPs wanted now, with their interface.
    local_addresses: Vec<(IfIndex, VirtualIp)>,
    /// The userspace proxy's scheduler over `desired.proxy_backends`.
    proxy: Option<VirtualService>,
    /// Proxy backends a dial to failed since, not yet cleared by a probe asked for after.
    dial_failed: BTreeMap<SocketAddr, Instant>,
    kernel: Kernel,
    /// Announcements waiting for their address to be acknowledged.
    announce_after_add: Vec<(IfIndex, IpAddr)>,
    /// Instances whose addresses the kernel refused since they last held them.
    refused: BTreeMap<InstanceId, Refused>,
    /// The data plane must be recomputed (states, health or configuration changed).
    dirty: bool,
    last_now: Instant,
    transmits: VecDeque<Transmit>,
    commands: VecDeque<Command>,
    events: VecDeque<Event>,
}

impl Node {
    /// Starts a controller at `now`: its instances start as Backup, every probe is due,
    /// and the kernel's state is unknown, so the first commands set it (removing the VIPs
    /// and rules a dead predecessor left).
    pub fn new(now: Instant, config: NodeConfig) -> Result<Self, ConfigError> {
        let mut router = Router::new(now);
        let tracker = router.add_tracker(TrackerConfig::default())?;
        debug_assert_eq!(tracker, API_TRACKER);
        check_instances(&config.instances)?;
        let mut health = HealthChecker::new(lb::k0s_health_config(&config.keepalived));
        health.set_servers(now, &config.real_servers);
        let mut node = Self {
            router,
            health,
            probes: BTreeMap::new(),
            dial_failed: BTreeMap::new(),
            last_probe: 0,
            instances: BTreeMap::new(),
            retired: BTreeMap::new(),
            desired: DataPlane::default(),
            local_addresses: Vec::new(),
            proxy: None,
            kernel: Kernel::default(),
            announce_after_add: Vec::new(),
            refused: BTreeMap::new(),
            dirty: true,
            last_now: now,
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
            config: NodeConfig { instances: Vec::new(), ..config.clone() },
        };
        for cfg in &config.instances {
            node.add_instance(now, cfg.clone())?;
        }
        node.config.instances = config.instances;
        node.step(now);
        Ok(node)
    }

    // --- inputs ------------------------------------------------------------------------

    /// A VRRP packet from the wire.
    pub fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        let now = self.advance(now);
        self.router.handle_packet(now, packet);
        self.step(now);
    }

    /// A received IPv4 packet, its IP header included (what a raw IPv4 socket reads).
    pub fn handle_ip_packet(&mut self, now: Instant, ifindex: IfIndex, bytes: &[u8]) {
        let now = self.advance(now);
        self.router.handle_ip_packet(now, ifindex, bytes);
        self.step(now);
    }

    /// `n` VRRP packets the receive path lost to a full queue (counted as drops).
    pub fn handle_receive_overflow(&mut self, now: Instant, n: u64) {
        let now = self.advance(now);
        self.router.handle_receive_overflow(n);
        self.step(now);
    }

    /// Fires what is due by `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        self.step(now);
    }

    /// The result of a probe the node asked for. Late (after its deadline, when it has
    /// failed already) or unknown results are ignored.
    pub fn handle_probe_result(&mut self, now: Instant, probe: ProbeId, ok: bool) {
        let now = self.advance(now);
        if let Some(p) = self.probes.remove(&probe) {
            self.health.handle_probe_result(now, p.inner, ok);
            if ok && self.dial_failed.get(&p.server).is_some_and(|failed| p.issued >= *failed) {
                self.dial_failed.remove(&p.server);
            }
            if p.server == self.config.own_api {
                self.router.handle_health(now, API_TRACKER, ok);
            }
            self.expire_probes(now);
        }
        self.step(now);
    }

    /// An interface's link went up or down (down: carrier lost or set down). Instances on
    /// a down link go to Fault and come back as Backup.
    pub fn handle_link(&mut self, now: Instant, ifindex: IfIndex, up: bool) {
        let now = self.advance(now);
        self.router.handle_link(now, ifindex, up);
        self.step(now);
    }

    /// An address appeared on or disappeared from an interface (the kernel's notification).
    /// An address the node holds that someone removed is put back, and announced.
    pub fn handle_address(&mut self, now: Instant, ifindex: IfIndex, addr: IpAddr, present: bool) {
        let now = self.advance(now);
        if let Some(object) = self.kernel.observe_address(ifindex, addr, present) {
            self.events.push_back(Event::KernelDrift { object });
            if !present && self.is_instance_vip(ifindex, addr) {
                self.announce_after_add.push((ifindex, addr));
            }
        }
        self.step(now);
    }

    /// The driver found that the kernel no longer holds what the node set (the NAT table
    /// deleted or edited, virtual services changed); the node sets it again.
    pub fn handle_kernel_lost(&mut self, now: Instant, object: Object) {
        let now = self.advance(now);
        if self.kernel.lost(object) {
            self.events.push_back(Event::KernelDrift { object });
            if let Object::Address { ifindex, addr } = object
                && self.is_instance_vip(ifindex, addr)
                && !self.announce_after_add.contains(&(ifindex, addr))
            {
                self.announce_after_add.push((ifindex, addr));
            }
        }
        self.step(now);
    }

    /// The result of a command. A refusal is retried with backoff; a master whose address
    /// is refused goes to Fault rather than advertise an address it does not hold.
    pub fn handle_command_result(
        &mut self,
        now: Instant,
        id: CommandId,
        result: Result<(), CommandError>,
    ) {
        let now = self.advance(now);
        let result = result.as_ref().map(|_| ()).map_err(|e| e.0.as_str());
        match self.kernel.result(now, id, result, &mut self.events) {
            Outcome::AddressAdded(ifindex, vip, recovered) => {
                // The refusals end when the instance holds every VIP, not at the first that
                // goes in (and never while the Fault hold runs).
                if let Some(id) = self.instance_of(ifindex, vip.addr)
                    && self.refused.get(&id).is_some_and(|r| r.fault_until.is_none())
                    && self.instances.get(&id).is_some_and(|c| {
                        c.virtual_ips.iter().all(|v| self.kernel.holds_address(c.ifindex, v.addr))
                    })
                {
                    self.refused.remove(&id);
                }
                if recovered {
                    self.kernel_recovered(now);
                }
                let before = self.announce_after_add.len();
                self.announce_after_add.retain(|a| *a != (ifindex, vip.addr));
                if self.announce_after_add.len() != before
                    && self.is_instance_vip(ifindex, vip.addr)
                {
                    self.commands
                        .push_back(Command::Announce { ifindex, addresses: vec![vip.addr] });
                }
            }
            Outcome::AddressRefused(ifindex, vip, _) => {
                if let Some(id) = self.instance_of(ifindex, vip.addr)
                    && self.router.state(id) == Some(State::Master)
                {
                    let refused = self.refused.entry(id).or_default();
                    refused.count += 1;
                    let hold = kernel::backoff(refused.count, REFUSAL_HOLD, MAX_REFUSAL_HOLD);
                    refused.fault_until = Some(now + hold);
                    self.router.handle_addresses_held(now, id, false);
                }
            }
            Outcome::Recovered => self.kernel_recovered(now),
            Outcome::Settled | Outcome::Refused | Outcome::Ignored => {}
        }
        self.step(now);
    }

    /// Whether [`Self::handle_config`] would take `config` up: its instances are valid as a
    /// set, and nothing set up at start would have to change. A driver asks before it opens
    /// sockets for the new configuration.
    pub fn check_config(&self, config: &NodeConfig) -> Result<(), ConfigError> {
        match needs_restart(&self.config, config) {
            Some(what) => Err(ConfigError::NeedsRestart { what }),
            None => check_instances(&config.instances),
        }
    }

    /// Replaces the configuration (a reload). Instances whose configuration is unchanged
    /// keep running untouched; removed ones resign and release their addresses; new and
    /// changed ones start. An invalid configuration changes nothing.
    pub fn handle_config(
        &mut self,
        now: Instant,
        config: NodeConfig,
    ) -> Result<Reload, ConfigError> {
        let now = self.advance(now);
        // The instances a reload before this one removed have had their last events.
        self.retired.clear();
        if let Err(e) = self.check_config(&config) {
            self.events.push_back(Event::ReloadRefused { reason: e.to_string() });
            self.step(now);
            return Err(e);
        }
        let mut reload = Reload::default();
        let mut unmatched: Vec<InstanceConfig> = config.instances.clone();
        let current: Vec<(InstanceId, InstanceConfig)> =
            self.instances.iter().map(|(id, c)| (*id, c.clone())).collect();
        for (id, cfg) in current {
            // The name follows the instance's place in `vrrpInstances`: an instance that only
            // moved in the list is the same instance, renamed, not a new one.
            let same =
                |c: &InstanceConfig| InstanceConfig { name: cfg.name.clone(), ..c.clone() } == cfg;
            match unmatched
                .iter()
                .position(|c| *c == cfg)
                .or_else(|| unmatched.iter().position(same))
            {
                Some(i) => {
                    let renamed = unmatched.remove(i);
                    self.instances.insert(id, renamed);
                    reload.kept.push(id);
                }
                None => {
                    self.router.remove_instance(now, id);
                    if let Some(cfg) = self.instances.remove(&id) {
                        self.retired.insert(id, cfg);
                    }
                    self.refused.remove(&id);
                    self.events.push_back(Event::InstanceRemoved(id));
                    reload.removed.push(id);
                }
            }
        }
        // Drain the resignations before new instances may claim the same VRID.
        self.step(now);
        for cfg in unmatched {
            let id = self.add_instance(now, cfg)?;
            self.events.push_back(Event::InstanceAdded(id));
            reload.added.push(id);
        }
        if self.health.config() != &lb::k0s_health_config(&config.keepalived) {
            self.health = HealthChecker::new(lb::k0s_health_config(&config.keepalived));
            self.probes.clear();
        }
        self.health.set_servers(now, &config.real_servers);
        self.probes.retain(|_, p| config.real_servers.contains(&p.server));
        self.dial_failed.retain(|s, _| config.real_servers.contains(s));
        self.expire_probes(now);
        self.config = config;
        self.dirty = true;
        self.events.push_back(Event::Reloaded(reload.clone()));
        self.step(now);
        Ok(reload)
    }

    /// Graceful stop: masters resign (priority 0), the VIPs, rules and services the node
    /// set are removed, direct routing's local VIPs too. Drain, carry out, then exit.
    ///
    /// The local VIPs go because the host's ARP settings are put back on stop, and a VIP
    /// left on a non-ARPing interface would then be answered for by this node. A stopped
    /// node's API server, if it still runs, is dropped from the director's table by the
    /// director's health checks only when it fails them: stop cplbd with the controller,
    /// as k0s does.
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.advance(now);
        self.router.shutdown(now);
        self.config.keepalived.vrrp_instances.clear();
        self.config.keepalived.virtual_servers.clear();
        self.config.real_servers.clear();
        self.health.set_servers(now, &[]);
        self.dirty = true;
        self.step(now);
    }

    // --- outputs -----------------------------------------------------------------------

    /// The next VRRP message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next host change to carry out.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next: a VRRP timer, a probe, a retry.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let refused = self.refused.values().filter_map(|r| r.fault_until);
        [self.router.poll_timeout(), self.health.poll_timeout(), self.kernel.next_timeout()]
            .into_iter()
            .flatten()
            .chain(refused)
            .min()
    }

    /// The userspace proxy's backends for a new connection from `client`, in the order to
    /// try them: the scheduler's choice first, then the others (a failed dial goes on to the
    /// next), and last those a dial failed to since their last probe. Empty when this node
    /// runs no proxy.
    pub fn proxy_backends_for(&mut self, now: Instant, client: IpAddr) -> Vec<SocketAddr> {
        // Not an input: nothing fires here (its outputs would wait for the next drain).
        let now = self.clamp(now);
        let Some(proxy) = self.proxy.as_mut() else { return Vec::new() };
        let all: Vec<SocketAddr> = proxy.destinations().iter().map(|d| d.addr).collect();
        let Some(first) = proxy.schedule(now, client) else { return all };
        proxy.connection_closed(now, client, first);
        let start = all.iter().position(|a| *a == first).unwrap_or(0);
        let mut order = Vec::with_capacity(all.len());
        order.push(first);
        order.extend(all.iter().cycle().skip(start + 1).take(all.len().saturating_sub(1)));
        // A server that refused or timed out a dial is likely dead: until a probe says
        // otherwise, new clients do not wait a dial timeout for it (a last resort still).
        let (mut fresh, failed): (Vec<_>, Vec<_>) =
            order.into_iter().partition(|a| !self.dial_failed.contains_key(a));
        fresh.extend(failed);
        fresh
    }

    /// The userspace proxy could not reach `server` (refused or timed out): it goes to the
    /// end of [`Self::proxy_backends_for`]'s order until a probe asked for from now on
    /// succeeds. The health checks alone decide whether it is up (a dial fails for reasons
    /// of the moment too), and nothing else changes.
    pub fn handle_dial_failure(&mut self, now: Instant, server: SocketAddr) {
        let now = self.clamp(now);
        if self.health.servers().contains(&server) || server == self.config.own_api {
            self.dial_failed.insert(server, now);
        }
    }

    // --- getters -----------------------------------------------------------------------

    /// The VRRP instances (state, priority, master, counters by id).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The API servers' health.
    pub fn health(&self) -> &HealthChecker {
        &self.health
    }

    /// The configuration running.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// An instance's configuration by id, also after a reload removed it (its last events,
    /// the resignation among them, come after the removal).
    pub fn instance(&self, id: InstanceId) -> Option<&InstanceConfig> {
        self.instances.get(&id).or_else(|| self.retired.get(&id))
    }

    /// Instance ids with their configuration.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceId, &InstanceConfig)> + '_ {
        self.instances.iter().map(|(id, c)| (*id, c))
    }

    /// The data plane wanted now.
    pub fn desired(&self) -> &DataPlane {
        &self.desired
    }

    /// Whether the node is master of the instance holding `vip`.
    pub fn is_master_of(&self, vip: IpAddr) -> bool {
        self.instances.iter().any(|(id, c)| {
            c.virtual_ips.iter().any(|v| v.addr == vip)
                && self.router.state(*id) == Some(State::Master)
        })
    }

    /// Whether the kernel acknowledged holding the address.
    pub fn holds_address(&self, ifindex: IfIndex, addr: IpAddr) -> bool {
        self.kernel.holds_address(ifindex, addr)
    }

    /// The addresses the kernel acknowledged holding for this node.
    pub fn held_addresses(&self) -> Vec<(IfIndex, VirtualIp)> {
        self.kernel.held_addresses().collect()
    }

    /// The NAT rules the kernel acknowledged, if known.
    pub fn held_rules(&self) -> Option<&lb::NatRules> {
        self.kernel.held_rules()
    }

    /// The virtual services the kernel acknowledged, if known.
    pub fn held_services(&self) -> Option<&[lb::ServiceSpec]> {
        self.kernel.held_services()
    }

    /// Whether the kernel acknowledged everything the node wants now (addresses, rules,
    /// services): the data plane shown is the one in force.
    pub fn settled(&self) -> bool {
        self.kernel.settled()
    }

    /// Every kernel object under refusal, with its condition.
    pub fn refusals(&self) -> Vec<(Object, Refusal)> {
        self.kernel.refusals()
    }

    // --- internals ---------------------------------------------------------------------

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = now.max(self.last_now);
        self.last_now = now;
        now
    }

    /// Clamps `now` and fires everything due by then (every input does, so that after any
    /// `handle_*` call `poll_timeout()` is later than `now`): VRRP timers, probes and their
    /// deadlines, the end of refusal holds. Kernel retries are issued by `step`.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.clamp(now);
        self.router.handle_timeout(now);
        self.health.handle_timeout(now);
        self.expire_probes(now);
        let due: Vec<InstanceId> = self
            .refused
            .iter()
            .filter(|(_, r)| r.fault_until.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(refused) = self.refused.get_mut(&id) {
                // Eligible again (as Backup); the count stays until an add succeeds, so
                // a kernel that keeps refusing is tried less and less often.
                refused.fault_until = None;
            }
            self.router.handle_addresses_held(now, id, true);
        }
        now
    }

    /// Forgets the probes past their deadline: the health checker failed them when it
    /// saw the deadline (every call into it at `now` does), and so does the tracker for
    /// the own API server, so an API server that hangs is down, not healthy forever. Their
    /// late results are ignored.
    fn expire_probes(&mut self, now: Instant) {
        let own = self.config.own_api;
        let mut own_failed = 0;
        self.probes.retain(|_, p| {
            let alive = p.deadline > now;
            if !alive && p.server == own {
                own_failed += 1;
            }
            alive
        });
        for _ in 0..own_failed {
            self.router.handle_health(now, API_TRACKER, false);
        }
    }

    /// The kernel set an object whose setting it had refused, or added an address: it
    /// works again, and the Fault holds end now (see [`REFUSAL_HOLD`]): their instances
    /// are eligible again, as Backup.
    fn kernel_recovered(&mut self, now: Instant) {
        let held: Vec<InstanceId> = self
            .refused
            .iter_mut()
            .filter_map(|(id, r)| r.fault_until.take().map(|_| *id))
            .collect();
        for id in held {
            self.router.handle_addresses_held(now, id, true);
        }
    }

    fn add_instance(
        &mut self,
        now: Instant,
        cfg: InstanceConfig,
    ) -> Result<InstanceId, ConfigError> {
        // Unknown at first: removed unless this instance becomes master.
        for vip in &cfg.virtual_ips {
            self.kernel.want_address(cfg.ifindex, *vip, false);
        }
        let id = self.router.add_instance(now, cfg.clone())?;
        self.instances.insert(id, cfg);
        Ok(id)
    }

    fn instance_of(&self, ifindex: IfIndex, addr: IpAddr) -> Option<InstanceId> {
        self.instances
            .iter()
            .find(|(_, c)| c.ifindex == ifindex && c.virtual_ips.iter().any(|v| v.addr == addr))
            .map(|(id, _)| *id)
    }

    fn is_instance_vip(&self, ifindex: IfIndex, addr: IpAddr) -> bool {
        self.instance_of(ifindex, addr).is_some()
    }

    /// Moves every output of the parts into the node's queues, recomputes the data plane
    /// when its inputs changed, and issues the kernel commands that are due.
    fn step(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(t) = self.router.poll_transmit() {
                self.transmits.push_back(t);
            }
            while let Some(c) = self.router.poll_command() {
                busy = true;
                self.vrrp_command(c);
            }
            while let Some(e) = self.router.poll_event() {
                if matches!(e, vrrp::Event::StateChanged { .. }) {
                    self.dirty = true;
                }
                self.events.push_back(Event::Vrrp(e));
            }
            while let Some(p) = self.health.poll_probe() {
                self.last_probe += 1;
                let id = ProbeId(self.last_probe);
                let pending = InFlightProbe {
                    inner: p.id,
                    server: p.server,
                    issued: now,
                    deadline: p.deadline,
                };
                self.probes.insert(id, pending);
                self.commands.push_back(Command::Probe(Probe { id, ..p }));
            }
            while let Some(c) = self.health.poll_change() {
                self.dirty = true;
                self.events.push_back(Event::ServerHealth { server: c.server, healthy: c.healthy });
            }
            if self.dirty {
                self.dirty = false;
                busy = true;
                self.refresh_dataplane();
            }
            if !busy {
                break;
            }
        }
        self.withdraw_unwanted_address_commands();
        let (instances, local) = (&self.instances, &self.local_addresses);
        self.kernel.prune_addresses(|ifindex, vip| {
            local.contains(&(ifindex, vip))
                || instances.values().any(|c| c.ifindex == ifindex && c.virtual_ips.contains(&vip))
        });
        self.kernel.issue(now, &mut self.commands);
    }

    /// Address commands still queued that the node no longer wants (the instance went to
    /// Fault while the driver was carrying out the commands before them) are withdrawn, so
    /// a refused first VIP does not see the second one added regardless.
    fn withdraw_unwanted_address_commands(&mut self) {
        let kernel = &mut self.kernel;
        self.commands.retain(|c| {
            let (id, ifindex, vip, add) = match c {
                Command::AddAddress { id, ifindex, vip } => (*id, *ifindex, *vip, true),
                Command::RemoveAddress { id, ifindex, vip } => (*id, *ifindex, *vip, false),
                _ => return true,
            };
            let keep = kernel.wants_address(ifindex, vip) == add;
            if !keep {
                kernel.cancel(id);
            }
            keep
        });
    }

    fn vrrp_command(&mut self, command: vrrp::Command) {
        match command {
            vrrp::Command::AddAddress { ifindex, vip, .. } => {
                self.kernel.want_address(ifindex, vip, true);
                self.announce_after_add.retain(|a| *a != (ifindex, vip.addr));
            }
            vrrp::Command::RemoveAddress { ifindex, vip, .. } => {
                self.kernel.want_address(ifindex, vip, false);
                self.announce_after_add.retain(|a| *a != (ifindex, vip.addr));
            }
            vrrp::Command::Announce { ifindex, addresses, .. } => {
                // Never announce an address the kernel does not hold yet: the
                // acknowledgement of its add announces it.
                let (held, waiting): (Vec<IpAddr>, Vec<IpAddr>) =
                    addresses.into_iter().partition(|a| self.kernel.holds_address(ifindex, *a));
                for a in waiting {
                    if !self.announce_after_add.contains(&(ifindex, a)) {
                        self.announce_after_add.push((ifindex, a));
                    }
                }
                if !held.is_empty() {
                    self.commands.push_back(Command::Announce { ifindex, addresses: held });
                }
            }
        }
    }

    fn refresh_dataplane(&mut self) {
        let usable = self.health.usable();
        let servers = self.health.servers();
        let desired = {
            let instances = &self.instances;
            let router = &self.router;
            let (keepalived, port) = (&self.config.keepalived, self.config.api_port);
            lb::desired(keepalived, port, &servers, &usable, |vip| {
                instances.iter().any(|(id, c)| {
                    c.virtual_ips.iter().any(|v| v.addr == vip)
                        && router.state(*id) == Some(State::Master)
                })
            })
        };
        // Local VIPs (direct routing) are addresses on the non-ARPing interface. Those of
        // an interface a reload moved away from (or dropped) go too.
        let local: Vec<(IfIndex, VirtualIp)> = match self.config.local_vip_ifindex {
            Some(ifindex) => desired.local_vips.iter().map(|a| (ifindex, host_route(*a))).collect(),
            None => Vec::new(),
        };
        for &(ifindex, vip) in &self.local_addresses {
            if !local.contains(&(ifindex, vip)) {
                self.kernel.want_address(ifindex, vip, false);
            }
        }
        for &(ifindex, vip) in &local {
            self.kernel.want_address(ifindex, vip, true);
        }
        self.local_addresses = local;
        let balance_by_nat = self.config.balancing == Balancing::Nat;
        self.kernel.want_rules(lb::nat_rules(&desired, balance_by_nat));
        if !balance_by_nat {
            self.kernel.want_services(desired.services.clone());
        }
        self.proxy = desired.proxy_port.map(|port| {
            let mut backends: Vec<RealServer> =
                desired.proxy_backends.iter().map(|&addr| RealServer { addr, weight: 1 }).collect();
            if backends.is_empty() {
                // No server to check (none configured): the local API server, as k0s does.
                backends.push(RealServer { addr: self.config.own_api, weight: 1 });
            }
            let key = ServiceKey { vip: self.config.own_api.ip(), port };
            let mut vs = self
                .proxy
                .take()
                .unwrap_or_else(|| VirtualService::new(key, LbAlgo::Rr, LbKind::Nat, None));
            vs.set_real_servers(&backends);
            vs
        });
        if desired != self.desired {
            self.desired = desired;
            self.events.push_back(Event::DataPlaneChanged(self.desired.clone()));
        }
    }
}

/// A probe the driver runs.
#[derive(Debug, Clone, Copy)]
struct InFlightProbe {
    /// The health checker's id for it.
    inner: ProbeId,
    server: SocketAddr,
    /// When the node asked for it.
    issued: Instant,
    /// Failed by then.
    deadline: Instant,
}

/// An instance whose addresses the kernel refused.
#[derive(Debug, Clone, Copy, Default)]
struct Refused {
    /// In Fault until then; `None`: eligible again.
    fault_until: Option<Instant>,
    /// Refusals since it last held its addresses.
    count: u32,
}

/// A local VIP is held as a host route (/32, /128).
fn host_route(addr: IpAddr) -> VirtualIp {
    VirtualIp { addr, prefix_len: if addr.is_ipv4() { 32 } else { 128 } }
}

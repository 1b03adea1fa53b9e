//! The driver: one loop that feeds the [`Node`] what happens (packets, kernel
//! notifications, probe results, signals, time) and carries out what it asks through the
//! [`Kernel`] seam. It decides nothing; it is the only reader of the clock.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cplb_core::lb::ProbeId;
use cplb_core::node::{Command, CommandError, Event, Node, Object};
use cplb_core::time::Instant;
use cplb_core::vrrp::{self, IfIndex, Incoming, InstanceId};
use tokio::sync::{mpsc, oneshot};

use super::clock::{Clock, Monotonic};
use crate::kernel::vrrp_socket::{Datagram, Received};
use crate::kernel::watch::KernelEvent;
use crate::kernel::{Kernel, KernelError};
use crate::net::{Net, Os};
use crate::probe::Prober;
use crate::status::Snapshot;

/// How often the driver checks that the NAT table and the virtual services are still what
/// the node set (nftables and IPVS send no notification cplbd could rely on).
pub(super) const VERIFY_EVERY: Duration = Duration::from_secs(2);

/// Everything that wakes the driver, from the tasks around it.
#[derive(Debug)]
pub enum Input {
    /// A VRRP packet received on an interface, and how many were lost on the way before it
    /// (the kernel's full queue, or the daemon's).
    Packet {
        /// The interface.
        ifindex: IfIndex,
        /// What was read.
        datagram: Datagram,
        /// Packets lost since the previous one.
        lost: u64,
    },
    /// A link or address notification.
    Kernel(KernelEvent),
    /// A probe's result.
    Probe(ProbeId, bool),
    /// The proxy asks where a new connection from this client goes.
    ProxyPick(IpAddr, oneshot::Sender<Vec<SocketAddr>>),
    /// The proxy could not reach this API server.
    DialFailed(SocketAddr),
    /// The status socket or metrics endpoint asks for a snapshot.
    Snapshot(oneshot::Sender<Snapshot>),
}

/// The userspace proxy's director in `cplbd`: its questions are inputs of the driver,
/// answered by the node's scheduler.
#[derive(Debug, Clone)]
pub struct ProxyDirector(pub mpsc::Sender<Input>);

impl crate::proxy::Director for ProxyDirector {
    async fn backends_for(&self, client: IpAddr) -> Option<Vec<SocketAddr>> {
        let (tx, rx) = oneshot::channel();
        self.0.send(Input::ProxyPick(client, tx)).await.ok()?;
        Some(rx.await.unwrap_or_default())
    }

    fn dial_failed(&self, server: SocketAddr) {
        let _ = self.0.try_send(Input::DialFailed(server));
    }
}

/// What the driver carries besides the node: the kernel, the prober, the clock, and
/// counters the status shows.
#[derive(Debug)]
pub struct Driver<K, N = Os, C = Monotonic> {
    /// When the driver started (the status's uptime).
    pub started: tokio::time::Instant,
    /// The node's time.
    pub clock: C,
    /// The controller.
    pub node: Node,
    /// The kernel seam.
    pub kernel: K,
    /// Runs health probes.
    pub prober: Prober,
    /// Probe timeout.
    pub probe_timeout: Duration,
    /// For the tasks the driver spawns (probes).
    pub inputs: mpsc::Sender<Input>,
    /// State changes per instance since start.
    pub transitions: BTreeMap<InstanceId, u64>,
    /// Kernel objects refused now (for one log line per change of condition).
    pub refused: BTreeMap<Object, String>,
    /// When the kernel was last checked for rules and services someone else changed.
    pub last_verify: tokio::time::Instant,
    /// The last error sending adverts and announcing, logged once per change.
    pub send_error: Option<String>,
    /// Dropped packets, logged at a bounded rate.
    pub drops: DropLog,
    /// Takeover times and time the VIP was held by nobody (status and metrics).
    pub vip_clock: super::vipclock::VipClock,
    /// The network the probes go over.
    pub net: PhantomData<N>,
    /// Where every event of the node is also sent (a simulation's record), if anywhere.
    pub tap: Option<mpsc::UnboundedSender<Event>>,
}

/// How often at most a drop reason gets a log line.
pub(super) const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// The log of dropped packets: a flood of bad packets must not fill the disk. The first
/// drop of a reason is logged at once; later ones are counted and summed up in one line per
/// reason at most every [`DROP_LOG_EVERY`] (the counters in status and metrics stay exact).
#[derive(Debug, Default)]
pub struct DropLog {
    reasons: BTreeMap<&'static str, Pending>,
}

#[derive(Debug)]
struct Pending {
    /// Drops not logged yet.
    count: u64,
    /// The last one's source.
    from: IpAddr,
    /// When this reason was last logged.
    logged: tokio::time::Instant,
}

impl DropLog {
    fn note(&mut self, reason: &'static str, from: IpAddr, instance: impl FnOnce() -> String) {
        let now = tokio::time::Instant::now();
        match self.reasons.get_mut(reason) {
            Some(p) => {
                p.count += 1;
                p.from = from;
            }
            None => {
                let instance = instance();
                tracing::warn!(reason, %from, %instance, "VRRP packet dropped (further drops for this reason are summed up at most once a minute)");
                self.reasons.insert(reason, Pending { count: 0, from, logged: now });
            }
        }
    }

    /// Logs the sums that are due.
    fn flush(&mut self) {
        let now = tokio::time::Instant::now();
        for (reason, p) in &mut self.reasons {
            if p.count > 0 && now.duration_since(p.logged) >= DROP_LOG_EVERY {
                let secs = now.duration_since(p.logged).as_secs();
                tracing::warn!(reason, count = p.count, last_from = %p.from, "{} VRRP packets dropped in the last {secs} s", p.count);
                p.count = 0;
                p.logged = now;
            }
        }
    }
}

impl<K: Kernel, N: Net, C: Clock> Driver<K, N, C> {
    /// A driver for `node` on `clock`, with nothing seen yet.
    pub fn new(
        node: Node,
        kernel: K,
        clock: C,
        prober: Prober,
        probe_timeout: Duration,
        inputs: mpsc::Sender<Input>,
    ) -> Self {
        let started = tokio::time::Instant::now();
        Self {
            started,
            clock,
            node,
            kernel,
            prober,
            probe_timeout,
            inputs,
            transitions: BTreeMap::new(),
            refused: BTreeMap::new(),
            last_verify: started,
            send_error: None,
            drops: DropLog::default(),
            vip_clock: super::vipclock::VipClock::default(),
            net: PhantomData,
            tap: None,
        }
    }

    /// The node's clock now.
    pub fn now(&self) -> Instant {
        self.clock.node_time(tokio::time::Instant::now())
    }

    /// When the node next needs `handle_timeout`, or the next verification.
    pub fn deadline(&self) -> tokio::time::Instant {
        let verify = self.last_verify + VERIFY_EVERY;
        let Some(at) = self.node.poll_timeout() else { return verify };
        verify.min(self.clock.runtime_time(at))
    }

    /// Feeds one input to the node (snapshots and proxy picks are answered at once).
    pub async fn handle(&mut self, input: Input, snapshot: impl FnOnce(&Self) -> Snapshot) {
        let now = self.now();
        match input {
            Input::Packet { ifindex, datagram, lost } => {
                if lost > 0 {
                    self.node.handle_receive_overflow(now, lost);
                }
                match datagram.received {
                    Received::Ipv4(bytes) => {
                        self.node.handle_ip_packet(now, ifindex, &bytes);
                    }
                    Received::Ipv6(p) => self.node.handle_packet(
                        now,
                        Incoming { ifindex, header: p.header, payload: &p.payload },
                    ),
                }
            }
            Input::Kernel(KernelEvent::Link { index, up, .. }) => {
                self.node.handle_link(now, IfIndex(index), up);
            }
            Input::Kernel(KernelEvent::LinkRemoved { index, .. }) => {
                self.node.handle_link(now, IfIndex(index), false);
            }
            Input::Kernel(KernelEvent::Address { index, addr, present, .. }) => {
                // Notifications trail the commands that caused them: the node's own add and
                // remove come back after it moved on. What the kernel holds now is the news.
                let present =
                    self.kernel.has_address(IfIndex(index), addr).await.unwrap_or(present);
                let now = self.now();
                self.node.handle_address(now, IfIndex(index), addr, present);
            }
            Input::Probe(id, ok) => self.node.handle_probe_result(now, id, ok),
            Input::ProxyPick(client, reply) => {
                let _ = reply.send(self.node.proxy_backends_for(now, client));
            }
            Input::DialFailed(server) => self.node.handle_dial_failure(now, server),
            Input::Snapshot(reply) => {
                let _ = reply.send(snapshot(self));
            }
        }
    }

    /// The deadline passed: timers, and every [`VERIFY_EVERY`] a check that the kernel
    /// still holds the rules and services the node set.
    pub async fn handle_timeout(&mut self) {
        let now = self.now();
        self.node.handle_timeout(now);
        if self.last_verify.elapsed() < VERIFY_EVERY {
            return;
        }
        self.last_verify = tokio::time::Instant::now();
        self.drops.flush();
        if let Some(rules) = self.node.held_rules().cloned()
            && let Ok(false) = self.kernel.rules_intact(&rules).await
        {
            self.node.handle_kernel_lost(now, Object::Rules);
        }
        if let Some(services) = self.node.held_services().map(<[_]>::to_vec)
            && let Ok(false) = self.kernel.services_intact(&services).await
        {
            self.node.handle_kernel_lost(now, Object::Services);
        }
    }

    /// Carries out everything the node wants until it wants nothing more.
    pub async fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(t) = self.node.poll_transmit() {
                let result = self.kernel.send(&t);
                self.note_send(result, "sending an advertisement");
            }
            while let Some(c) = self.node.poll_command() {
                busy = true;
                self.command(c).await;
            }
            while let Some(e) = self.node.poll_event() {
                self.event(e);
            }
            if !busy {
                self.vip_clock.observe(self.now(), &self.node);
                return;
            }
        }
    }

    async fn command(&mut self, command: Command) {
        let result = match &command {
            Command::AddAddress { ifindex, vip, .. } => {
                self.kernel.add_address(*ifindex, *vip).await
            }
            Command::RemoveAddress { ifindex, vip, .. } => {
                self.kernel.remove_address(*ifindex, *vip).await
            }
            Command::Announce { ifindex, addresses } => {
                let result = self.kernel.announce(*ifindex, addresses);
                self.note_send(result, "announcing");
                return;
            }
            Command::SetRules { rules, .. } => self.kernel.set_rules(rules).await,
            Command::SetServices { services, .. } => self.kernel.set_services(services).await,
            Command::Probe(p) => {
                let (prober, tx, timeout, probe) =
                    (self.prober.clone(), self.inputs.clone(), self.probe_timeout, *p);
                tokio::spawn(async move {
                    let result = prober.probe_on::<N>(probe.server, timeout).await;
                    if let Err(e) = &result {
                        tracing::debug!(server = %probe.server, error = %e, "health probe failed");
                    }
                    let _ = tx.send(Input::Probe(probe.id, result.is_ok())).await;
                });
                return;
            }
        };
        let Some(id) = command.id() else { return };
        let now = self.now();
        let result = result.map_err(|e| CommandError(e.to_string()));
        self.node.handle_command_result(now, id, result);
    }

    /// Logs an event: one line per change of condition, never one per packet at info.
    fn event(&mut self, event: Event) {
        if let Some(tap) = &self.tap {
            let _ = tap.send(event.clone());
        }
        match event {
            Event::Vrrp(vrrp::Event::StateChanged { instance, from, to, cause }) => {
                *self.transitions.entry(instance).or_default() += 1;
                let name = self.name(instance);
                tracing::info!(instance = %name, from = from.as_str(), to = to.as_str(), cause = ?cause, "state change");
            }
            Event::Vrrp(vrrp::Event::MasterChanged { instance, master }) => {
                // Debug: a backup hearing two masters (a one-way cut) changes it per advert.
                let name = self.name(instance);
                tracing::debug!(instance = %name, master = ?master, "master");
            }
            Event::Vrrp(vrrp::Event::Dropped { instance, reason, from }) => {
                tracing::trace!(instance = ?instance, reason = reason.as_str(), %from, "VRRP packet dropped");
                let node = &self.node;
                let name = || instance.map_or_else(|| "-".to_owned(), |i| name_of(node, i));
                self.drops.note(reason.as_str(), from, name);
            }
            Event::Vrrp(vrrp::Event::PriorityChanged { instance, priority }) => {
                tracing::info!(instance = %self.name(instance), priority, "priority changed");
            }
            Event::Vrrp(other) => tracing::debug!(event = ?other, "vrrp"),
            Event::ServerHealth { server, healthy: true } => {
                tracing::info!(%server, "API server healthy");
            }
            Event::ServerHealth { server, healthy: false } => {
                tracing::warn!(%server, "API server unhealthy");
            }
            Event::DataPlaneChanged(dp) => {
                tracing::info!(proxy_backends = ?dp.proxy_backends, services = dp.services.len(), redirects = ?dp.redirects, local_vips = ?dp.local_vips, "data plane");
            }
            Event::KernelRefused { object, reason } => {
                tracing::error!(%object, %reason, "the kernel refused; retrying with backoff");
                self.refused.insert(object, reason);
            }
            Event::KernelRecovered { object, attempts } => {
                tracing::info!(%object, attempts, "set after all");
                self.refused.remove(&object);
            }
            Event::KernelDrift { object } => {
                tracing::warn!(%object, "changed by someone else: restoring");
            }
            Event::Reloaded(r) => tracing::info!(
                kept = r.kept.len(),
                added = r.added.len(),
                removed = r.removed.len(),
                "configuration reloaded"
            ),
            Event::ReloadRefused { reason } => {
                tracing::error!("reload refused: {reason}; the running configuration stays");
            }
            Event::InstanceAdded(id) => tracing::info!(instance = %self.name(id), "instance added"),
            Event::InstanceRemoved(id) => {
                tracing::info!(instance = %self.name(id), "instance removed");
            }
        }
    }

    /// Logs a failure to send (or its end) once per change of condition, not per packet.
    fn note_send(&mut self, result: Result<(), KernelError>, what: &str) {
        match result.map_err(|e| e.to_string()) {
            Err(e) if self.send_error.as_deref() != Some(e.as_str()) => {
                tracing::warn!(error = %e, "{what} failed (logged again only when this changes)");
                self.send_error = Some(e);
            }
            Ok(()) if self.send_error.is_some() => {
                tracing::info!("{what} works again");
                self.send_error = None;
            }
            _ => {}
        }
    }

    fn name(&self, id: InstanceId) -> String {
        name_of(&self.node, id)
    }
}

/// An instance's name, also after a reload removed it.
fn name_of(node: &Node, id: InstanceId) -> String {
    node.instance(id).map_or_else(|| format!("#{}", id.0), |c| c.name.clone())
}

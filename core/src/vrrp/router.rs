//! The router: every VRRP instance of one node, its tracked inputs and its output queues.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     while let Some(t) = router.poll_transmit() { send t (IP header with TTL/hop limit 255) }
//!     while let Some(c) = router.poll_command()  { carry out c (addresses, announcements) }
//!     while let Some(e) = router.poll_event()    { log / count / trace e }
//!     wait for a packet, a health result, a link change, or router.poll_timeout()
//!     then call the matching handle_*(now, ..)
//! }
//! ```
//!
//! Drain all three queues after every `handle_*` call, transmits first. Every `handle_*`
//! first fires the timers that are due by `now`, so after any call `poll_timeout()` is
//! later than `now` (or `None`): a driver cannot spin.

use std::collections::{BTreeMap, BTreeSet};

use super::advertisement::Priority;
use super::config::{ConfigError, IfIndex, InstanceConfig, TrackerId};
use super::drop_reason::DropReason;
use super::error::DecodeError;
use super::instance::VirtualRouter;
use super::ip::{IpHeader, decode_received};
use super::output::{Cause, Command, Event, InstanceId, Outbox, State, Transmit};
use super::stats::Stats;
use super::tracker::{Tracker, TrackerConfig};
use crate::time::Instant;

/// Timer firings one `handle_*` call may do (each instance has 5 timers).
const MAX_FIRINGS_PER_CALL: usize = 10_000;

/// A packet from the wire: the IP header fields and the VRRP message.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Interface it arrived on.
    pub ifindex: IfIndex,
    /// Source, destination and TTL / hop limit.
    pub header: IpHeader,
    /// The VRRP message (IP payload).
    pub payload: &'a [u8],
}

/// Every VRRP instance of one node.
#[derive(Debug, Default)]
pub struct Router {
    /// By id; ids are never reused, so a removed instance's late inputs find nothing.
    instances: BTreeMap<InstanceId, VirtualRouter>,
    next_id: usize,
    trackers: Vec<Tracker>,
    out: Outbox,
    /// Drops that belong to no instance (unknown VRID, unreadable header).
    unrouted: Stats,
    /// Time only moves forward: an earlier `now` is treated as this one.
    last_now: Instant,
    /// Links reported down.
    links_down: Vec<IfIndex>,
    /// Instances whose addresses the node could not hold (they refuse mastership).
    addresses_refused: BTreeSet<InstanceId>,
}

impl Router {
    /// An empty router whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self { last_now: now, ..Self::default() }
    }

    /// Registers a tracked input (the local API server's health, say).
    pub fn add_tracker(&mut self, config: TrackerConfig) -> Result<TrackerId, ConfigError> {
        if config.rise == 0 || config.fall == 0 {
            return Err(ConfigError::TrackerCounts);
        }
        self.trackers.push(Tracker::new(config));
        Ok(TrackerId(u32::try_from(self.trackers.len() - 1).unwrap_or(u32::MAX)))
    }

    /// Adds an instance and starts it (§6.4.1 Startup) at `now`.
    pub fn add_instance(
        &mut self,
        now: Instant,
        config: InstanceConfig,
    ) -> Result<InstanceId, ConfigError> {
        let now = self.advance(now);
        config.validate()?;
        if let Some(t) =
            config.tracking.iter().find(|t| t.tracker.0 as usize >= self.trackers.len())
        {
            return Err(ConfigError::UnknownTracker {
                instance: config.name.clone(),
                tracker: t.tracker.0,
            });
        }
        let family = config.primary_address.is_ipv6();
        if let Some(other) = self.instances.values().find(|i| {
            let c = i.config();
            c.ifindex == config.ifindex
                && c.vrid == config.vrid
                && c.primary_address.is_ipv6() == family
        }) {
            return Err(ConfigError::DuplicateVrid {
                instance: config.name.clone(),
                vrid: config.vrid.get(),
                other: other.config().name.clone(),
            });
        }
        let id = InstanceId(self.next_id);
        self.next_id += 1;
        let mut instance = VirtualRouter::new(id, config);
        let (priority, fault) = self.condition_of(id, instance.config());
        instance.set_condition(now, priority, fault, &mut self.out);
        instance.start(now, &mut self.out);
        self.instances.insert(id, instance);
        Ok(id)
    }

    /// Stops an instance for good (a reload removed or replaced it): a master resigns
    /// with priority 0 and releases its addresses, then the instance is forgotten.
    pub fn remove_instance(&mut self, now: Instant, id: InstanceId) {
        self.advance(now);
        if let Some(mut instance) = self.instances.remove(&id) {
            instance.shutdown(&mut self.out);
        }
        self.addresses_refused.remove(&id);
    }

    /// Whether the node holds the instance's addresses. An instance whose addresses the
    /// kernel refused goes to Fault (a master resigns, so a backup takes over within
    /// Skew_Time rather than nobody answering for the VIP) until this is set back.
    pub fn handle_addresses_held(&mut self, now: Instant, id: InstanceId, held: bool) {
        let now = self.advance(now);
        let changed = if held {
            self.addresses_refused.remove(&id)
        } else {
            self.addresses_refused.insert(id)
        };
        if changed {
            self.reevaluate(now);
        }
    }

    /// The master an instance knows of (itself when master).
    pub fn master(&self, id: InstanceId) -> Option<core::net::IpAddr> {
        self.instances.get(&id).and_then(VirtualRouter::master)
    }

    /// Current state of an instance.
    pub fn state(&self, id: InstanceId) -> Option<State> {
        self.instances.get(&id).map(VirtualRouter::state)
    }

    /// Effective priority of an instance (configured priority plus tracking weights).
    pub fn priority(&self, id: InstanceId) -> Option<Priority> {
        self.instances.get(&id).map(VirtualRouter::priority)
    }

    /// Counters of an instance.
    pub fn stats(&self, id: InstanceId) -> Option<&Stats> {
        self.instances.get(&id).map(VirtualRouter::stats)
    }

    /// Drops no instance could be blamed for (unknown VRID, packets too short to route).
    pub fn unrouted_stats(&self) -> &Stats {
        &self.unrouted
    }

    /// Configuration of an instance.
    pub fn config(&self, id: InstanceId) -> Option<&InstanceConfig> {
        self.instances.get(&id).map(VirtualRouter::config)
    }

    /// Master_Down_Interval an instance uses now (v3: from the learned interval).
    pub fn master_down_interval(&self, id: InstanceId) -> Option<core::time::Duration> {
        self.instances.get(&id).map(VirtualRouter::master_down_interval)
    }

    /// Every instance id.
    pub fn instances(&self) -> impl Iterator<Item = InstanceId> + '_ {
        self.instances.keys().copied()
    }

    /// Handles a received packet: routes it by interface, family and VRID, applies every
    /// receive rule (dropping and counting what breaks one), then runs the state machine.
    pub fn handle_packet(&mut self, now: Instant, packet: Incoming<'_>) {
        let now = self.advance(now);
        let src = packet.header.src;
        let Some(&vrid) = packet.payload.get(1) else {
            let e =
                DecodeError::Truncated { what: "VRRP header", need: 8, have: packet.payload.len() };
            return self.drop_unrouted(e.drop_reason(), src);
        };
        let family = src.is_ipv6();
        let Some(instance) = self.instances.values_mut().find(|i| {
            let c = i.config();
            c.ifindex == packet.ifindex
                && c.vrid.get() == vrid
                && c.primary_address.is_ipv6() == family
        }) else {
            return self.drop_unrouted(DropReason::VridNotConfigured, src);
        };
        let id = instance.id();
        match decode_received(packet.header, packet.payload, instance.rules()) {
            Ok(rx) => {
                instance.handle_advert(
                    now,
                    rx.header,
                    &rx.advertisement,
                    rx.checksum_form,
                    &mut self.out,
                );
            }
            Err(e) => {
                let reason = e.drop_reason();
                instance.stats_mut().count_drop(reason);
                self.out.events.push_back(Event::Dropped { instance: Some(id), reason, from: src });
            }
        }
    }

    /// Fires every timer due by `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// A result of a tracked input's check (true: healthy). Rise/fall hysteresis decides
    /// when the input flips, and then every instance tracking it re-evaluates.
    pub fn handle_health(&mut self, now: Instant, tracker: TrackerId, ok: bool) {
        let now = self.advance(now);
        let Some(t) = self.trackers.get_mut(tracker.0 as usize) else {
            return;
        };
        if let Some(up) = t.record(ok) {
            self.out.events.push_back(Event::TrackerChanged { tracker, up });
            self.reevaluate(now);
        }
    }

    /// The interface's link went up or down. Instances on a down link go to Fault.
    pub fn handle_link(&mut self, now: Instant, ifindex: IfIndex, up: bool) {
        let now = self.advance(now);
        let was_down = self.links_down.contains(&ifindex);
        if up != was_down {
            return;
        }
        if up {
            self.links_down.retain(|i| *i != ifindex);
        } else {
            self.links_down.push(ifindex);
        }
        self.reevaluate(now);
    }

    /// Graceful stop: masters send priority 0 and release their addresses; every instance
    /// returns to Initialize.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        for instance in self.instances.values_mut() {
            instance.shutdown(&mut self.out);
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// The next host change to carry out.
    #[must_use]
    pub fn poll_command(&mut self) -> Option<Command> {
        self.out.commands.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When `handle_timeout` must be called next. Changes after any `handle_*` call,
    /// `add_instance` or `shutdown`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.instances.values().filter_map(VirtualRouter::next_timeout).min()
    }

    /// Clamps `now` to be monotonic and fires every timer due by then, in deadline order.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = now.max(self.last_now);
        self.last_now = now;
        // Bounded: a timer that re-armed itself at or before `now` would otherwise loop
        // forever. Every timer re-arms in the future, so the bound is never reached; if a
        // bug broke that, poll_timeout() would show the stale deadline instead of a hang.
        for _ in 0..MAX_FIRINGS_PER_CALL {
            let due = self
                .instances
                .iter()
                .filter_map(|(i, inst)| {
                    inst.next_timeout().filter(|at| *at <= now).map(|at| (at, *i))
                })
                .min();
            let Some((_, i)) = due else { break };
            if let Some(instance) = self.instances.get_mut(&i) {
                instance.fire_one(now, &mut self.out);
            }
        }
        now
    }

    /// Recomputes every instance's effective priority and fault condition.
    fn reevaluate(&mut self, now: Instant) {
        let ids: Vec<InstanceId> = self.instances.keys().copied().collect();
        for id in ids {
            let Some(cfg) = self.instances.get(&id).map(|inst| inst.config().clone()) else {
                continue;
            };
            let (priority, fault) = self.condition_of(id, &cfg);
            if let Some(instance) = self.instances.get_mut(&id) {
                instance.set_condition(now, priority, fault, &mut self.out);
            }
        }
    }

    /// Effective priority and fault cause of an instance from the trackers, links and
    /// the node's hold on its addresses.
    fn condition_of(&self, id: InstanceId, cfg: &InstanceConfig) -> (Priority, Option<Cause>) {
        let mut faulted = self.links_down.contains(&cfg.ifindex);
        let mut delta: i32 = 0;
        for track in &cfg.tracking {
            let up = self.trackers.get(track.tracker.0 as usize).is_none_or(Tracker::is_up);
            if !up {
                if track.weight == 0 {
                    faulted = true;
                } else {
                    delta += i32::from(track.weight);
                }
            }
        }
        let base = cfg.priority.0;
        let priority = if delta == 0 {
            base
        } else {
            // A weighted priority stays a backup priority: never 0 (resign) nor 255 (owner).
            u8::try_from((i32::from(base) + delta).clamp(1, 254)).unwrap_or(1)
        };
        let fault = if faulted {
            Some(Cause::Fault)
        } else if self.addresses_refused.contains(&id) {
            Some(Cause::AddressRefused)
        } else {
            None
        };
        (Priority(priority), fault)
    }

    /// A received IPv4 packet, header included: parsed here, so that one whose IP header
    /// breaks a rule is counted like any other drop.
    pub fn handle_ip_packet(&mut self, now: Instant, ifindex: IfIndex, bytes: &[u8]) {
        match super::parse_ip(bytes) {
            Ok((header, payload)) => self.handle_packet(now, Incoming { ifindex, header, payload }),
            Err(e) => {
                // The source, when the header got that far (bytes 12..16 of IPv4).
                let from = bytes
                    .get(12..16)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(core::net::IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED), |b| {
                        core::net::IpAddr::V4(b.into())
                    });
                self.drop_unrouted(e.drop_reason(), from);
            }
        }
    }

    /// `n` packets lost before they could be read (a full receive queue): counted, and one
    /// event for the lot.
    pub fn handle_receive_overflow(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.unrouted.count_drops(DropReason::ReceiveQueueOverflow, n);
        let from = core::net::IpAddr::V4(core::net::Ipv4Addr::UNSPECIFIED);
        self.out.events.push_back(Event::Dropped {
            instance: None,
            reason: DropReason::ReceiveQueueOverflow,
            from,
        });
    }

    fn drop_unrouted(&mut self, reason: DropReason, from: core::net::IpAddr) {
        self.unrouted.count_drop(reason);
        self.out.events.push_back(Event::Dropped { instance: None, reason, from });
    }
}

//! What the kernel is known to hold, against what the node wants: one slot per object,
//! a command in flight at most per slot, refusals retried with backoff. A value counts as
//! held only once the kernel acknowledged it; an unknown value (start-up, after a refusal,
//! after someone else touched it) is set again.

use core::time::Duration;
use std::collections::BTreeMap;

use super::output::{Command, CommandId, Event, Object};
use crate::lb::{NatRules, ServiceSpec};
use crate::time::Instant;
use crate::vrrp::{IfIndex, VirtualIp};

/// First retry after a refusal; each further one waits twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait before retry number `attempts` (1: after the first refusal).
pub(crate) fn backoff(attempts: u32, first: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(max)
}

/// A condition of refusal: since when, how often, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The kernel's last words.
    pub reason: String,
    /// Refusals in a row.
    pub attempts: u32,
    /// When the first of them came.
    pub since: Instant,
    /// When the next try is due.
    pub retry_at: Instant,
}

#[derive(Debug, Clone)]
struct Slot<V> {
    want: V,
    /// What the kernel acknowledged; `None`: unknown.
    held: Option<V>,
    pending: Option<(CommandId, V)>,
    refusal: Option<Refusal>,
    /// The value whose setting was refused (with `refusal`).
    refused: Option<V>,
}

impl<V: Clone + PartialEq> Slot<V> {
    fn new(want: V, held: Option<V>) -> Self {
        Self { want, held, pending: None, refusal: None, refused: None }
    }

    /// Whether the wanted value is to be set now: it is not held nor being set, and it is
    /// not what the kernel refused lately, whose retry waits for its backoff. A new wish
    /// (a VIP to add where its removal was refused: the instance became master) goes out
    /// at once, so that a master learns now whether it can hold its address, rather than
    /// advertise it unheld for a backoff.
    fn due(&self, now: Instant) -> bool {
        self.pending.is_none()
            && self.held.as_ref() != Some(&self.want)
            && self
                .refusal
                .as_ref()
                .is_none_or(|r| r.retry_at <= now || self.refused.as_ref() != Some(&self.want))
    }

    /// The refusal, while what was refused is still wanted and not held.
    fn failing(&self) -> Option<Refusal> {
        let wanted = self.refused.as_ref().is_none_or(|r| *r == self.want);
        (wanted && self.held.as_ref() != Some(&self.want)).then(|| self.refusal.clone()).flatten()
    }

    fn next_timeout(&self) -> Option<Instant> {
        if self.pending.is_some() || self.held.as_ref() == Some(&self.want) {
            return None;
        }
        self.refusal.as_ref().map(|r| r.retry_at)
    }
}

/// The outcome of a command for the node to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An address is on its interface now; `true`: its add had been refused before.
    AddressAdded(IfIndex, VirtualIp, bool),
    /// The kernel refused to add an address (`attempts` in a row).
    AddressRefused(IfIndex, VirtualIp, u32),
    /// The kernel carried out another command (a removal, the rules, the services).
    Settled,
    /// The kernel carried out a command for an object whose setting it had refused: the
    /// refusal is over.
    Recovered,
    /// The kernel refused another command.
    Refused,
    /// A result for no command in flight (late, or for one withdrawn).
    Ignored,
}

/// The slot a command in flight settles. An address's key has its prefix: two slots may
/// hold one address with different prefixes (a reload that changed a VIP's prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Address(IfIndex, VirtualIp),
    Rules,
    Services,
}

/// Every kernel object of a node.
#[derive(Debug, Clone, Default)]
pub(crate) struct Kernel {
    addresses: BTreeMap<(IfIndex, VirtualIp), Slot<bool>>,
    rules: Option<Slot<NatRules>>,
    services: Option<Slot<Vec<ServiceSpec>>>,
    in_flight: BTreeMap<CommandId, Key>,
    next_id: u64,
}

impl Kernel {
    /// Wants the address present or absent. A new address's state is unknown, so it is set
    /// either way (at start-up that removes what a predecessor left).
    pub(crate) fn want_address(&mut self, ifindex: IfIndex, vip: VirtualIp, present: bool) {
        self.addresses.entry((ifindex, vip)).or_insert_with(|| Slot::new(present, None)).want =
            present;
    }

    pub(crate) fn want_rules(&mut self, rules: NatRules) {
        match &mut self.rules {
            Some(slot) => slot.want = rules,
            None => self.rules = Some(Slot::new(rules, None)),
        }
    }

    pub(crate) fn want_services(&mut self, services: Vec<ServiceSpec>) {
        match &mut self.services {
            Some(slot) => slot.want = services,
            None => self.services = Some(Slot::new(services, None)),
        }
    }

    /// Whether the kernel is known to hold the address.
    pub(crate) fn holds_address(&self, ifindex: IfIndex, addr: core::net::IpAddr) -> bool {
        self.addresses
            .iter()
            .any(|((i, v), s)| *i == ifindex && v.addr == addr && s.held == Some(true))
    }

    /// The addresses the node manages that the kernel holds.
    pub(crate) fn held_addresses(&self) -> impl Iterator<Item = (IfIndex, VirtualIp)> + '_ {
        self.addresses.iter().filter(|(_, s)| s.held == Some(true)).map(|(k, _)| *k)
    }

    pub(crate) fn held_rules(&self) -> Option<&NatRules> {
        self.rules.as_ref().and_then(|s| s.held.as_ref())
    }

    pub(crate) fn held_services(&self) -> Option<&[ServiceSpec]> {
        self.services.as_ref().and_then(|s| s.held.as_deref())
    }

    /// Whether every object holds what is wanted, acknowledged by the kernel.
    pub(crate) fn settled(&self) -> bool {
        self.addresses.values().all(|s| s.held == Some(s.want))
            && self.rules.as_ref().is_none_or(|s| s.held.as_ref() == Some(&s.want))
            && self.services.as_ref().is_none_or(|s| s.held.as_ref() == Some(&s.want))
    }

    /// The kernel reported an address appearing or disappearing. Returns whether that
    /// undid what the node had set (someone else changed it).
    pub(crate) fn observe_address(
        &mut self,
        ifindex: IfIndex,
        addr: core::net::IpAddr,
        present: bool,
    ) -> Option<Object> {
        let mut drift = false;
        // Every slot of the address (a reload may leave one per prefix for a while).
        for slot in self
            .addresses
            .iter_mut()
            .filter(|((i, v), _)| *i == ifindex && v.addr == addr)
            .map(|(_, s)| s)
        {
            // A command in flight decides; its result is the newer news.
            if slot.pending.is_some() || slot.held == Some(present) {
                continue;
            }
            drift |= slot.held.is_some() && slot.want != present;
            slot.held = Some(present);
        }
        drift.then_some(Object::Address { ifindex, addr })
    }

    /// Forgets the address slots that are settled absent and no longer wanted by anyone
    /// (`keep`): what a reload or a moved local interface left behind.
    pub(crate) fn prune_addresses(&mut self, keep: impl Fn(IfIndex, VirtualIp) -> bool) {
        self.addresses.retain(|&(ifindex, vip), s| {
            keep(ifindex, vip) || s.want || s.held != Some(false) || s.pending.is_some()
        });
    }

    /// Withdraws a queued command that was not carried out yet: its slot is free again.
    pub(crate) fn cancel(&mut self, id: CommandId) {
        if self.in_flight.remove(&id).is_none() {
            return;
        }
        for slot in self.addresses.values_mut() {
            if slot.pending.is_some_and(|(p, _)| p == id) {
                slot.pending = None;
            }
        }
    }

    /// Whether the address slot wants the address (present) now.
    pub(crate) fn wants_address(&self, ifindex: IfIndex, vip: VirtualIp) -> bool {
        self.addresses.get(&(ifindex, vip)).is_some_and(|s| s.want)
    }

    /// What the node had set is no longer what the kernel holds (the driver checked).
    pub(crate) fn lost(&mut self, object: Object) -> bool {
        // Only a known value can be lost; a command in flight will settle it anyway.
        match object {
            Object::Rules => self.rules.as_mut().is_some_and(|s| s.held.take().is_some()),
            Object::Services => self.services.as_mut().is_some_and(|s| s.held.take().is_some()),
            Object::Address { ifindex, addr } => self
                .addresses
                .iter_mut()
                .find(|((i, v), _)| *i == ifindex && v.addr == addr)
                .is_some_and(|(_, s)| s.held.take().is_some()),
        }
    }

    /// Commands for every object that is not as wanted and not waiting.
    pub(crate) fn issue(&mut self, now: Instant, out: &mut std::collections::VecDeque<Command>) {
        let mut next = self.next_id;
        let mut id = || {
            next += 1;
            CommandId(next)
        };
        for ((ifindex, vip), slot) in &mut self.addresses {
            if slot.due(now) {
                let id = id();
                slot.pending = Some((id, slot.want));
                self.in_flight.insert(id, Key::Address(*ifindex, *vip));
                out.push_back(if slot.want {
                    Command::AddAddress { id, ifindex: *ifindex, vip: *vip }
                } else {
                    Command::RemoveAddress { id, ifindex: *ifindex, vip: *vip }
                });
            }
        }
        if let Some(slot) = self.rules.as_mut().filter(|s| s.due(now)) {
            let id = id();
            slot.pending = Some((id, slot.want.clone()));
            self.in_flight.insert(id, Key::Rules);
            out.push_back(Command::SetRules { id, rules: slot.want.clone() });
        }
        if let Some(slot) = self.services.as_mut().filter(|s| s.due(now)) {
            let id = id();
            slot.pending = Some((id, slot.want.clone()));
            self.in_flight.insert(id, Key::Services);
            out.push_back(Command::SetServices { id, services: slot.want.clone() });
        }
        self.next_id = next;
    }

    /// A command's result. Unknown ids (a predecessor's, or answered twice) are ignored.
    pub(crate) fn result(
        &mut self,
        now: Instant,
        id: CommandId,
        result: Result<(), &str>,
        events: &mut std::collections::VecDeque<Event>,
    ) -> Outcome {
        let Some(key) = self.in_flight.remove(&id) else {
            return Outcome::Ignored;
        };
        // What another command's result means, given whether its object was under refusal
        // before and still is.
        let other = |was_refused: bool, refused: bool| match result {
            Err(_) => Outcome::Refused,
            Ok(()) if was_refused && !refused => Outcome::Recovered,
            Ok(()) => Outcome::Settled,
        };
        match key {
            Key::Address(ifindex, vip) => {
                let Some(slot) = self.addresses.get_mut(&(ifindex, vip)) else {
                    return Outcome::Ignored;
                };
                let Some((_, value)) = slot.pending.take() else { return Outcome::Ignored };
                let was_refused = slot.refusal.is_some();
                let object = Object::Address { ifindex, addr: vip.addr };
                // A refused add is not undone by a removal that works: the condition
                // lasts until an add does (else every VRRP cycle of a node whose kernel
                // keeps refusing its VIP would report a new refusal and a recovery).
                let survives = |refused: &bool, acked: &bool| *refused && !*acked;
                match settle(slot, now, object, value, result, survives, events) {
                    Ok(()) if value => Outcome::AddressAdded(ifindex, vip, was_refused),
                    Err(attempts) if value => Outcome::AddressRefused(ifindex, vip, attempts),
                    _ => other(was_refused, slot.refusal.is_some()),
                }
            }
            Key::Rules => {
                let Some(slot) = self.rules.as_mut() else { return Outcome::Ignored };
                let Some((_, value)) = slot.pending.take() else { return Outcome::Ignored };
                let was_refused = slot.refusal.is_some();
                let _ = settle(slot, now, Object::Rules, value, result, |_, _| false, events);
                other(was_refused, slot.refusal.is_some())
            }
            Key::Services => {
                let Some(slot) = self.services.as_mut() else { return Outcome::Ignored };
                let Some((_, value)) = slot.pending.take() else { return Outcome::Ignored };
                let was_refused = slot.refusal.is_some();
                let _ = settle(slot, now, Object::Services, value, result, |_, _| false, events);
                other(was_refused, slot.refusal.is_some())
            }
        }
    }

    /// When a refused object is due for its retry.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let addresses = self.addresses.values().filter_map(Slot::next_timeout);
        let rules = self.rules.iter().filter_map(Slot::next_timeout);
        let services = self.services.iter().filter_map(Slot::next_timeout);
        addresses.chain(rules).chain(services).min()
    }

    /// Every object under refusal, with its condition.
    pub(crate) fn refusals(&self) -> Vec<(Object, Refusal)> {
        let mut out: Vec<(Object, Refusal)> = self
            .addresses
            .iter()
            .filter_map(|((ifindex, vip), s)| {
                let object = Object::Address { ifindex: *ifindex, addr: vip.addr };
                s.failing().map(|r| (object, r))
            })
            .collect();
        out.extend(self.rules.iter().filter_map(Slot::failing).map(|r| (Object::Rules, r)));
        out.extend(self.services.iter().filter_map(Slot::failing).map(|r| (Object::Services, r)));
        out
    }
}

/// Records a result in its slot; on refusal returns the refusals in a row.
/// `survives(refused, acked)`: a refusal to set `refused` still stands although setting
/// `acked` worked.
fn settle<V: Clone + PartialEq>(
    slot: &mut Slot<V>,
    now: Instant,
    object: Object,
    value: V,
    result: Result<(), &str>,
    survives: impl Fn(&V, &V) -> bool,
    events: &mut std::collections::VecDeque<Event>,
) -> Result<(), u32> {
    match result {
        Ok(()) => {
            let stands = slot.refused.as_ref().is_some_and(|r| survives(r, &value));
            slot.held = Some(value);
            if !stands {
                slot.refused = None;
                if let Some(r) = slot.refusal.take() {
                    events.push_back(Event::KernelRecovered { object, attempts: r.attempts });
                }
            }
            Ok(())
        }
        Err(reason) => {
            // Unknown now: a refused removal may have half happened.
            slot.held = None;
            slot.refused = Some(value);
            let attempts = slot.refusal.as_ref().map_or(0, |r| r.attempts) + 1;
            let retry_at = now + backoff(attempts, FIRST_BACKOFF, MAX_BACKOFF);
            let new_condition = slot.refusal.as_ref().is_none_or(|r| r.reason != reason);
            let since = slot.refusal.as_ref().map_or(now, |r| r.since);
            slot.refusal = Some(Refusal { reason: reason.to_owned(), attempts, since, retry_at });
            if new_condition {
                events.push_back(Event::KernelRefused { object, reason: reason.to_owned() });
            }
            Err(attempts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(n, FIRST_BACKOFF, MAX_BACKOFF);
        assert_eq!(b(1), Duration::from_millis(200));
        assert_eq!(b(2), Duration::from_millis(400));
        assert_eq!(b(5), Duration::from_millis(3200));
        assert_eq!(b(6), MAX_BACKOFF);
        assert_eq!(b(u32::MAX), MAX_BACKOFF);
    }
}

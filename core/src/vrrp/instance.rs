//! One virtual router: the RFC 9568 / RFC 3768 state machine of a VRID on an interface.
//!
//! It sees decoded, checked [`Advertisement`]s and timer expiries, never bytes or sockets.
//! Outputs go to the router's [`Outbox`]. Section numbers are RFC 9568's unless marked.

use core::net::IpAddr;
use core::time::Duration;

use super::advertisement::{Advertisement, Authentication, Priority, Version, VirtualAddresses};
use super::checksum::ChecksumForm;
use super::config::InstanceConfig;
use super::drop_reason::DropReason;
use super::ip::{IpHeader, group_for};
use super::output::{Cause, Command, Event, InstanceId, Outbox, State, Transmit};
use super::rules::ReceiveRules;
use super::stats::Stats;
use super::timers::{self, Timer, TimerTable};
use crate::time::Instant;

/// Nanoseconds in a centisecond.
const CS: u64 = 10_000_000;

/// The longest master interval a v3 backup adopts: 10 s, so a forged advert can delay a
/// takeover to at most 3 × 10 s + Skew_Time (k0s's default interval is 1 s).
pub const MAX_ADOPTED_INTERVAL_CS: u16 = 1000;

#[derive(Debug, Clone)]
pub(crate) struct VirtualRouter {
    id: InstanceId,
    cfg: InstanceConfig,
    state: State,
    /// The priority after tracking weights; what is advertised and compared.
    priority: Priority,
    /// Why the instance must refuse mastership (a weight-0 tracker or the link is down, or
    /// its addresses were refused), if it must.
    fault: Option<Cause>,
    /// The master as this instance knows it.
    master: Option<IpAddr>,
    /// v3: learned from the master's adverts (§6.1 Active_Adver_Interval); v2: our own.
    master_adver_interval_cs: u16,
    timers: TimerTable,
    /// Start-up time, for `preempt_delay`.
    started_at: Instant,
    /// Since when a lower-priority master has been heard, for `preempt_delay`.
    lower_master_since: Option<Instant>,
    /// The down timer was shortened to Skew_Time by a priority-0 advert.
    master_resigned: bool,
    /// Last contention announcement, to bound the bursts a flood of adverts can cause.
    last_contention_announce: Option<Instant>,
    template: Advertisement,
    rules: ReceiveRules,
    stats: Stats,
}

impl VirtualRouter {
    pub(crate) fn new(id: InstanceId, cfg: InstanceConfig) -> Self {
        let mut addrs: Vec<IpAddr> = cfg.virtual_ips.iter().map(|v| v.addr).collect();
        // RFC 9568 §5.2.9: an IPv6 advert lists the router's link-local address first. When
        // the configured VIPs do not start with one (k0s configs never do), the interface's
        // link-local source address takes that place in the advert; it is not installed.
        // Not where keepalived is the peer (`allow_global_first_ipv6`): keepalived sends the
        // configured VIPs as they are and drops an advert whose address count differs from
        // its own ("unexpected ip number count"), so one more entry would split the cluster.
        if let IpAddr::V6(primary) = cfg.primary_address
            && !cfg.allow_global_first_ipv6
            && primary.is_unicast_link_local()
            && !addrs
                .first()
                .is_some_and(|a| matches!(a, IpAddr::V6(v) if v.is_unicast_link_local()))
        {
            addrs.insert(0, cfg.primary_address);
        }
        let template = Advertisement {
            version: cfg.version,
            vrid: cfg.vrid,
            priority: cfg.priority,
            interval_cs: cfg.advert_interval_cs,
            auth: cfg.auth,
            // validate() ensured one family.
            addresses: VirtualAddresses::from_ips(&addrs)
                .unwrap_or(VirtualAddresses::V4(Vec::new())),
        };
        // Unicast adverts arrive addressed to us; which senders are allowed is checked per
        // instance (`unicast_peer_unknown`), so the codec accepts our own address too.
        let mut unicast = cfg.unicast_peers.clone();
        if !unicast.is_empty() {
            unicast.push(cfg.primary_address);
        }
        let rules = ReceiveRules {
            unicast_peers: unicast,
            checksum: cfg.accept_checksum,
            allow_global_first_ipv6: cfg.allow_global_first_ipv6,
            unicast_any_ttl: cfg.unicast_any_ttl,
        };
        Self {
            id,
            state: State::Initialize,
            priority: cfg.priority,
            fault: None,
            master: None,
            master_adver_interval_cs: cfg.advert_interval_cs,
            timers: TimerTable::default(),
            started_at: Instant::ZERO,
            lower_master_since: None,
            master_resigned: false,
            last_contention_announce: None,
            template,
            rules,
            stats: Stats::default(),
            cfg,
        }
    }

    pub(crate) fn id(&self) -> InstanceId {
        self.id
    }

    pub(crate) fn config(&self) -> &InstanceConfig {
        &self.cfg
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    pub(crate) fn priority(&self) -> Priority {
        self.priority
    }

    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    pub(crate) fn rules(&self) -> &ReceiveRules {
        &self.rules
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }

    /// §6.1 Skew_Time, exact in nanoseconds: v2 `(256 - Priority) / 256` s (RFC 3768 §6.1),
    /// v3 `((256 - Priority) × Active_Adver_Interval) / 256` cs.
    pub(crate) fn skew_time(&self) -> Duration {
        timers::skew_time(self.cfg.version, self.master_interval_cs(), self.priority)
    }

    /// §6.1 Active_Down_Interval (v2 uses its own Advertisement_Interval, RFC 3768 §6.1).
    pub(crate) fn master_down_interval(&self) -> Duration {
        timers::master_down_interval(self.cfg.version, self.master_interval_cs(), self.priority)
    }

    /// v3: the master's interval as learned; v2: our own.
    fn master_interval_cs(&self) -> u16 {
        match self.cfg.version {
            Version::V2 => self.cfg.advert_interval_cs,
            Version::V3 => self.master_adver_interval_cs,
        }
    }

    fn advert_interval(&self) -> Duration {
        Duration::from_nanos(u64::from(self.cfg.advert_interval_cs) * CS)
    }

    /// §6.4.1: the Startup event.
    pub(crate) fn start(&mut self, now: Instant, out: &mut Outbox) {
        self.started_at = now;
        self.enter_running_state(now, Cause::Startup, out);
    }

    /// From Initialize or Fault: the owner goes straight to Master, everyone else to Backup.
    fn enter_running_state(&mut self, now: Instant, cause: Cause, out: &mut Outbox) {
        self.master_adver_interval_cs = self.cfg.advert_interval_cs;
        if let Some(fault) = self.fault {
            let cause = if cause == Cause::Startup { cause } else { fault };
            self.transition(State::Fault, cause, out);
        } else if self.priority == Priority::OWNER {
            self.become_master(now, cause, out);
        } else {
            self.become_backup(now, cause, out);
        }
    }

    /// Handles an advertisement that passed the codec's receive rules.
    pub(crate) fn handle_advert(
        &mut self,
        now: Instant,
        header: IpHeader,
        advert: &Advertisement,
        form: ChecksumForm,
        out: &mut Outbox,
    ) {
        if let Err(reason) = self.check_instance_rules(header, advert) {
            self.stats.count_drop(reason);
            out.events.push_back(Event::Dropped {
                instance: Some(self.id),
                reason,
                from: header.src,
            });
            return;
        }
        self.stats.adverts_received += 1;
        *self.stats.checksum_forms.entry(form).or_default() += 1;
        if !same_virtual_addresses(&advert.addresses, &self.template.addresses) {
            // RFC 3768 §7.1 says drop unless from the owner; keepalived counts and goes on,
            // and so does RFC 9568 §7.1 (MAY log). Dropping would split the cluster on a
            // harmless VIP-order difference.
            self.stats.address_list_mismatch += 1;
            out.events
                .push_back(Event::AddressListMismatch { instance: self.id, from: header.src });
        }
        if advert.priority == Priority::RESIGN {
            self.stats.priority_zero_received += 1;
        }
        match self.state {
            State::Backup => self.backup_receives(now, header.src, advert, out),
            State::Master => self.master_receives(now, header.src, advert, out),
            State::Initialize | State::Fault => {}
        }
    }

    /// The per-instance receive rules of RFC 3768 §7.1 / RFC 9568 §7.1 that need the
    /// configuration: version, authentication, interval (v2), unicast peers, own adverts.
    fn check_instance_rules(
        &self,
        header: IpHeader,
        advert: &Advertisement,
    ) -> Result<(), DropReason> {
        if header.src == self.cfg.primary_address {
            return Err(DropReason::OwnAdvert);
        }
        if advert.version != self.cfg.version {
            return Err(DropReason::VersionMismatch);
        }
        if !self.cfg.unicast_peers.is_empty() {
            if header.dst == group_for(header.dst) {
                return Err(DropReason::MulticastInUnicastMode);
            }
            if !self.cfg.unicast_peers.contains(&header.src) {
                return Err(DropReason::UnicastPeerUnknown);
            }
        }
        if !self.cfg.accept_from.is_empty() && !self.cfg.accept_from.contains(&header.src) {
            return Err(DropReason::SourceNotAllowed);
        }
        if self.cfg.version == Version::V2 {
            match (&self.cfg.auth, &advert.auth) {
                (Authentication::None, Authentication::None) => {}
                (Authentication::SimpleText(ours), Authentication::SimpleText(theirs)) => {
                    if ours != theirs {
                        return Err(DropReason::AuthFailure);
                    }
                }
                _ => return Err(DropReason::AuthTypeMismatch),
            }
            // RFC 3768 §7.1: MUST drop on an interval mismatch (v3 adopts the master's).
            if advert.interval_cs != self.cfg.advert_interval_cs {
                return Err(DropReason::IntervalMismatch);
            }
        }
        Ok(())
    }

    /// §6.4.2 (Backup): a priority-0 advert shortens the wait to Skew_Time; an advert that
    /// may not be preempted resets the down timer; a preemptable one is ignored, so the down
    /// timer runs out and this router takes over.
    fn backup_receives(
        &mut self,
        now: Instant,
        src: IpAddr,
        advert: &Advertisement,
        out: &mut Outbox,
    ) {
        if advert.priority == Priority::RESIGN {
            self.set_master(None, out);
            self.master_resigned = true;
            self.timers.set(Timer::MasterDown, now + self.skew_time());
            return;
        }
        self.set_master(Some(src), out);
        let lower = advert.priority < self.priority;
        if lower {
            self.lower_master_since.get_or_insert(now);
        } else {
            self.lower_master_since = None;
        }
        if lower && self.cfg.preempt && self.preempt_allowed(now) {
            return;
        }
        if self.cfg.version == Version::V3 {
            // §6.4.2: adopt the master's interval, then recompute Skew_Time and the down
            // interval from it.
            self.adopt_interval(advert.interval_cs);
        }
        self.master_resigned = false;
        self.timers.set(Timer::MasterDown, now + self.master_down_interval());
    }

    /// Takes a v3 master's interval (§6.4.2), but not past [`MAX_ADOPTED_INTERVAL_CS`] (or
    /// our own interval, when that is longer): VRRPv3 has no authentication, and a forged
    /// advert with the field's maximum (40.95 s) would stretch every backup's
    /// Master_Down_Interval to two minutes.
    fn adopt_interval(&mut self, interval_cs: u16) {
        let ceiling = MAX_ADOPTED_INTERVAL_CS.max(self.cfg.advert_interval_cs);
        self.master_adver_interval_cs = interval_cs.min(ceiling);
    }

    /// keepalived's `preempt_delay`: preemption waits that long after start-up and after a
    /// lower-priority master was first heard.
    fn preempt_allowed(&self, now: Instant) -> bool {
        let delay = self.cfg.preempt_delay;
        if delay.is_zero() {
            return true;
        }
        let since = self.lower_master_since.map_or(self.started_at, |t| t.max(self.started_at));
        now >= since + delay
    }

    /// §6.4.3 (Master): priority 0 gets an immediate advert; a higher priority (or an equal
    /// one from a higher primary address) wins and we step down; anything else loses, and we
    /// re-advertise at once (RFC 9568; keepalived does the same for v2) and re-announce.
    fn master_receives(
        &mut self,
        now: Instant,
        src: IpAddr,
        advert: &Advertisement,
        out: &mut Outbox,
    ) {
        if advert.priority == Priority::RESIGN {
            self.send_advert(self.priority, out);
            self.timers.set(Timer::Adver, now + self.advert_interval());
            return;
        }
        let they_win = advert.priority > self.priority
            || (advert.priority == self.priority && src > self.cfg.primary_address);
        if they_win {
            if self.cfg.announce.yield_notice {
                self.send_advert(self.priority, out);
            }
            if self.cfg.version == Version::V3 {
                self.adopt_interval(advert.interval_cs);
            }
            self.become_backup(
                now,
                Cause::HigherPriorityMaster { from: src, priority: advert.priority.0 },
                out,
            );
            return;
        }
        self.stats.contentions_won += 1;
        out.events.push_back(Event::ContentionWon { instance: self.id, other: src });
        self.send_advert(self.priority, out);
        self.timers.set(Timer::Adver, now + self.advert_interval());
        let recent =
            self.last_contention_announce.is_some_and(|t| now < t + self.advert_interval());
        if !recent {
            self.last_contention_announce = Some(now);
            self.announce_burst(out);
            if let Some(after) = self.cfg.announce.contention_repeat_after {
                self.timers.set(Timer::ContentionAnnounce, now + after);
            }
        }
    }

    /// Fires the earliest expired timer, if any; returns whether one fired.
    pub(crate) fn fire_one(&mut self, now: Instant, out: &mut Outbox) -> bool {
        let Some(timer) = self.timers.pop_expired(now) else {
            return false;
        };
        match (timer, self.state) {
            (Timer::MasterDown, State::Backup) => {
                let cause =
                    if self.master_resigned { Cause::MasterResigned } else { Cause::MasterDown };
                self.become_master(now, cause, out);
            }
            (Timer::Adver, State::Master) => {
                self.send_advert(self.priority, out);
                self.timers.set(Timer::Adver, now + self.advert_interval());
            }
            (Timer::AnnounceRepeat | Timer::ContentionAnnounce, State::Master) => {
                self.announce_burst(out)
            }
            (Timer::AnnounceRefresh, State::Master) => {
                self.announce(out);
                if let Some(every) = self.cfg.announce.refresh_every {
                    self.timers.set(Timer::AnnounceRefresh, now + every);
                }
            }
            // A timer left over from another state does nothing.
            _ => {}
        }
        true
    }

    /// The master this instance knows of.
    pub(crate) fn master(&self) -> Option<IpAddr> {
        self.master
    }

    /// New effective priority and fault condition (`fault`: why mastership is refused),
    /// after a tracker, the link or the node's hold on the addresses changed.
    pub(crate) fn set_condition(
        &mut self,
        now: Instant,
        priority: Priority,
        fault: Option<Cause>,
        out: &mut Outbox,
    ) {
        let faulted = fault.is_some();
        let priority_changed = priority != self.priority;
        self.priority = priority;
        if priority_changed {
            out.events
                .push_back(Event::PriorityChanged { instance: self.id, priority: priority.0 });
        }
        let was_faulted = self.fault.is_some();
        self.fault = fault;
        let cause = fault.unwrap_or(Cause::Fault);
        match (self.state, was_faulted, faulted) {
            (State::Initialize, ..) => {}
            (State::Fault, true, false) => self.enter_running_state(now, Cause::Recovered, out),
            (State::Master, _, true) => {
                self.resign(out);
                self.transition(State::Fault, cause, out);
            }
            (State::Backup, _, true) => {
                self.timers.stop_all();
                self.transition(State::Fault, cause, out);
            }
            // Tell the backups at once; they compare it with their own.
            (State::Master, _, false) if priority_changed => self.send_advert(self.priority, out),
            _ => {}
        }
    }

    /// §6.4.2 / §6.4.3 Shutdown: a master sends priority 0 and releases its addresses.
    pub(crate) fn shutdown(&mut self, out: &mut Outbox) {
        if self.state == State::Master {
            self.resign(out);
        }
        self.timers.stop_all();
        if self.state != State::Initialize {
            self.transition(State::Initialize, Cause::Shutdown, out);
        }
    }

    fn resign(&mut self, out: &mut Outbox) {
        self.send_advert(Priority::RESIGN, out);
        self.release_addresses(out);
    }

    /// §6.4.2 "Active_Down_Timer fires" and §6.4.1 for the owner: advertise, take the
    /// addresses, announce them.
    fn become_master(&mut self, now: Instant, cause: Cause, out: &mut Outbox) {
        self.timers.stop_all();
        self.send_advert(self.priority, out);
        for vip in &self.cfg.virtual_ips {
            out.commands.push_back(Command::AddAddress {
                instance: self.id,
                ifindex: self.cfg.ifindex,
                vip: *vip,
            });
        }
        self.announce_burst(out);
        self.timers.set(Timer::Adver, now + self.advert_interval());
        let announce = self.cfg.announce;
        if let Some(after) = announce.repeat_after {
            self.timers.set(Timer::AnnounceRepeat, now + after);
        }
        if let Some(every) = announce.refresh_every {
            self.timers.set(Timer::AnnounceRefresh, now + every);
        }
        self.lower_master_since = None;
        self.master_resigned = false;
        self.last_contention_announce = None;
        self.stats.became_master += 1;
        self.set_master(Some(self.cfg.primary_address), out);
        self.transition(State::Master, cause, out);
    }

    /// To Backup: from Master this releases the addresses and stops every master timer
    /// (announcements still queued must not go out for a VIP we no longer hold).
    fn become_backup(&mut self, now: Instant, cause: Cause, out: &mut Outbox) {
        if self.state == State::Master {
            self.release_addresses(out);
        }
        self.timers.stop_all();
        self.master_resigned = false;
        self.timers.set(Timer::MasterDown, now + self.master_down_interval());
        let master = match cause {
            Cause::HigherPriorityMaster { from, .. } => Some(from),
            _ => None,
        };
        self.set_master(master, out);
        self.transition(State::Backup, cause, out);
    }

    fn set_master(&mut self, master: Option<IpAddr>, out: &mut Outbox) {
        if self.master != master {
            self.master = master;
            out.events.push_back(Event::MasterChanged { instance: self.id, master });
        }
    }

    fn release_addresses(&mut self, out: &mut Outbox) {
        for vip in &self.cfg.virtual_ips {
            out.commands.push_back(Command::RemoveAddress {
                instance: self.id,
                ifindex: self.cfg.ifindex,
                vip: *vip,
            });
        }
    }

    fn transition(&mut self, to: State, cause: Cause, out: &mut Outbox) {
        let from = self.state;
        if matches!(to, State::Fault | State::Initialize) {
            self.set_master(None, out);
        }
        self.state = to;
        if from != to {
            out.events.push_back(Event::StateChanged { instance: self.id, from, to, cause });
        }
    }

    fn announce_burst(&self, out: &mut Outbox) {
        for _ in 0..self.cfg.announce.burst {
            self.announce(out);
        }
    }

    fn announce(&self, out: &mut Outbox) {
        out.commands.push_back(Command::Announce {
            instance: self.id,
            ifindex: self.cfg.ifindex,
            addresses: self.cfg.virtual_ips.iter().map(|v| v.addr).collect(),
        });
    }

    /// Sends an advert to the group, or to every unicast peer.
    fn send_advert(&mut self, priority: Priority, out: &mut Outbox) {
        let advert = Advertisement { priority, ..self.template.clone() };
        let src = self.cfg.primary_address;
        let group = [group_for(src)];
        let dsts = if self.cfg.unicast_peers.is_empty() {
            &group[..]
        } else {
            &self.cfg.unicast_peers[..]
        };
        for &dst in dsts {
            let encoded = if self.cfg.allow_global_first_ipv6 {
                advert.encode_allowing_global_first(src, dst, self.cfg.v3_ipv4_checksum)
            } else {
                advert.encode(src, dst, self.cfg.v3_ipv4_checksum)
            };
            match encoded {
                Ok(payload) => {
                    out.transmits.push_back(Transmit {
                        instance: self.id,
                        ifindex: self.cfg.ifindex,
                        src,
                        dst,
                        payload,
                    });
                    self.stats.adverts_sent += 1;
                    if priority == Priority::RESIGN {
                        self.stats.priority_zero_sent += 1;
                    }
                }
                // validate() rules this out; count it rather than panic if it ever happens.
                Err(_) => self.stats.encode_failures += 1,
            }
        }
    }
}

/// Address lists agree, ignoring IPv6 link-local entries (each router lists its own).
fn same_virtual_addresses(a: &VirtualAddresses, b: &VirtualAddresses) -> bool {
    let global = |x: &VirtualAddresses| -> Vec<IpAddr> {
        x.iter().filter(|ip| !matches!(ip, IpAddr::V6(v) if v.is_unicast_link_local())).collect()
    };
    a.family() == b.family() && global(a) == global(b)
}

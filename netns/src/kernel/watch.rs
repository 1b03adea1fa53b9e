//! Link and address changes as the kernel announces them: an rtnetlink socket subscribed to
//! the multicast groups of links (`RTMGRP_LINK`) and of IPv4 and IPv6 addresses
//! (`RTMGRP_IPV4_IFADDR`, `RTMGRP_IPV6_IFADDR`), its notifications turned into
//! [`KernelEvent`]s.
//!
//! The kernel sends `RTM_NEWLINK` for many reasons besides a change of state (statistics,
//! MTU, a master set, a rename), so the same [`KernelEvent::Link`] may come many times over:
//! consumers act on edges of their own state, not on every event.
//!
//! Notifications are datagrams the kernel never waits for; when the socket's buffer fills,
//! some are lost and the next read says so (`ENOBUFS`, an overrun). The watcher then reads
//! every link and address back and reports them as events, together with the removal of
//! what it knew of and is gone, so that a consumer's view converges again without it having
//! to know that anything was lost.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::IpAddr;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use rtnetlink::Handle;
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::sys::{AsyncSocket, SocketAddr};

use super::link::{self, LinkError};

/// Receive buffer asked for, so that a burst (a bridge of many ports going down, an address
/// flush) fits before anything is read. The kernel caps it at `net.core.rmem_max`; an
/// overrun is survived anyway (see the module docs).
const RECEIVE_BUFFER: usize = 1 << 20;

/// One change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelEvent {
    /// A link exists, in this state (`RTM_NEWLINK`: created, changed, or only touched).
    Link {
        /// Kernel index.
        index: u32,
        /// Name (`eth0`).
        name: String,
        /// Usable: administratively up, with carrier, operationally up or unknown. False
        /// when the link is set down and when its carrier goes (a veth whose peer is down).
        up: bool,
    },
    /// A link is gone (`RTM_DELLINK`: deleted, or moved to another network namespace).
    LinkRemoved {
        /// Kernel index it had.
        index: u32,
        /// Name it had (empty in the unlikely case neither the kernel nor the watcher knew).
        name: String,
    },
    /// An address was added to or removed from a link (`RTM_NEWADDR`, `RTM_DELADDR`).
    Address {
        /// Kernel index of the link.
        index: u32,
        /// The address (IPv4: the local one, not a point-to-point peer).
        addr: IpAddr,
        /// Prefix length.
        prefix_len: u8,
        /// Added (or changed: flags, lifetimes) rather than removed.
        present: bool,
    },
}

/// A subscription to link and address changes in the network namespace of the thread that
/// opened it.
#[derive(Debug)]
pub struct Watcher {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    /// The same connection's requests, for reading everything back after an overrun.
    handle: Handle,
    /// Events made and not handed out yet (a resynchronisation makes many at once).
    pending: VecDeque<KernelEvent>,
    /// Whether the kernel's state is to be read: at the start (to know what exists, not
    /// reported) or after an overrun (reported). Cleared only once done, so that a
    /// [`Watcher::next`] cancelled half-way does it again rather than never.
    read_back: Option<ReadBack>,
    /// What the watcher knows to exist, for telling what went while notifications were lost.
    known: Known,
}

/// Why the kernel's state is to be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadBack {
    /// To start from: remembered, not reported.
    Seed,
    /// Notifications were lost: reported, with what disappeared.
    Overrun,
}

/// Links and addresses known to exist, from the notifications and read-backs so far.
#[derive(Debug, Default)]
struct Known {
    /// Index to name.
    links: BTreeMap<u32, String>,
    /// `(index, address, prefix length)`.
    addresses: BTreeSet<(u32, IpAddr, u8)>,
}

/// Every link and address, as read back from the kernel.
#[derive(Debug)]
struct State {
    /// `(index, name, up)`.
    links: Vec<(u32, String, bool)>,
    /// `(index, address, prefix length)`.
    addresses: BTreeSet<(u32, IpAddr, u8)>,
}

impl Watcher {
    /// Subscribes. The connection's I/O runs on a task of the current tokio runtime, which
    /// ends when the watcher is dropped.
    ///
    /// # Errors
    /// The rtnetlink socket could not be created or bound to the groups.
    pub fn open() -> io::Result<Self> {
        let (mut connection, handle, messages) = rtnetlink::new_connection()
            .map_err(|e| io::Error::new(e.kind(), format!("opening an rtnetlink socket: {e}")))?;
        let socket = connection.socket_mut().socket_mut();
        let groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
        socket.bind(&SocketAddr::new(0, groups)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("subscribing to rtnetlink link and address notifications: {e}"),
            )
        })?;
        if let Err(error) = socket.set_rx_buf_sz(RECEIVE_BUFFER) {
            tracing::debug!(%error, "could not enlarge the rtnetlink receive buffer");
        }
        tokio::spawn(connection);
        Ok(Self {
            messages,
            handle,
            pending: VecDeque::new(),
            read_back: Some(ReadBack::Seed),
            known: Known::default(),
        })
    }

    /// The next change; `None` once the connection is gone (its socket failed).
    ///
    /// The first call also reads every link and address, reporting none of them (the
    /// consumer reads the state it starts from itself), so that an overrun later can tell
    /// what went. Changes from [`Watcher::open`] on are all reported, none lost meanwhile.
    ///
    /// Cancel-safe: nothing taken from the kernel is lost when the future is dropped.
    pub async fn next(&mut self) -> Option<KernelEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if let Some(why) = self.read_back {
                match self.state().await {
                    Ok(state) => {
                        let events = self.known.adopt(state, why == ReadBack::Overrun);
                        self.pending.extend(events);
                    }
                    // Nothing better to do than carry on: later notifications still count.
                    Err(error) => tracing::warn!(%error, "reading links and addresses back"),
                }
                self.read_back = None;
                continue;
            }
            let (message, _) = self.messages.next().await?;
            match message.payload {
                NetlinkPayload::InnerMessage(inner) => {
                    if let Some(event) = self.known.event_of(inner) {
                        return Some(event);
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!("rtnetlink notifications were lost; reading the state back");
                    self.read_back = Some(ReadBack::Overrun);
                }
                // Errors, acks and dump ends answer requests; no notification is one.
                _ => {}
            }
        }
    }

    /// Every link and address now.
    async fn state(&self) -> Result<State, LinkError> {
        let links = link::dump_links(&self.handle).await?;
        let addresses = link::dump_addresses(&self.handle).await?;
        Ok(State {
            links: links
                .iter()
                .filter_map(|l| {
                    Some((l.header.index, link::link_name(l)?.to_owned(), link::link_up(l)))
                })
                .collect(),
            addresses: addresses
                .iter()
                .filter_map(|m| {
                    let a = link::address_of(m)?;
                    Some((m.header.index, a.addr, a.prefix_len))
                })
                .collect(),
        })
    }
}

impl Known {
    /// Takes `state` as what exists; with `report`, returns it as events, preceded by the
    /// removal of what was known and is gone.
    fn adopt(&mut self, state: State, report: bool) -> Vec<KernelEvent> {
        let mut events = Vec::new();
        if report {
            for &(index, addr, prefix_len) in self.addresses.difference(&state.addresses) {
                events.push(KernelEvent::Address { index, addr, prefix_len, present: false });
            }
            for (&index, name) in &self.links {
                if !state.links.iter().any(|(i, _, _)| *i == index) {
                    events.push(KernelEvent::LinkRemoved { index, name: name.clone() });
                }
            }
            for (index, name, up) in &state.links {
                events.push(KernelEvent::Link { index: *index, name: name.clone(), up: *up });
            }
            for &(index, addr, prefix_len) in &state.addresses {
                events.push(KernelEvent::Address { index, addr, prefix_len, present: true });
            }
        }
        self.links = state.links.into_iter().map(|(i, n, _)| (i, n)).collect();
        self.addresses = state.addresses;
        events
    }

    /// The event a notification stands for, noting its effect; `None` for notifications of
    /// other kinds and for messages missing what an event needs.
    fn event_of(&mut self, message: RouteNetlinkMessage) -> Option<KernelEvent> {
        match message {
            RouteNetlinkMessage::NewLink(link) => {
                let index = link.header.index;
                let Some(name) = link::link_name(&link) else {
                    tracing::debug!(index, "RTM_NEWLINK without a name; skipped");
                    return None;
                };
                let name = name.to_owned();
                self.links.insert(index, name.clone());
                Some(KernelEvent::Link { index, name, up: link::link_up(&link) })
            }
            RouteNetlinkMessage::DelLink(link) => {
                let index = link.header.index;
                let known = self.links.remove(&index);
                self.addresses.retain(|(i, _, _)| *i != index);
                let name = link::link_name(&link).map(str::to_owned).or(known).unwrap_or_default();
                Some(KernelEvent::LinkRemoved { index, name })
            }
            RouteNetlinkMessage::NewAddress(message) => self.address(&message, true),
            RouteNetlinkMessage::DelAddress(message) => self.address(&message, false),
            _ => None,
        }
    }

    fn address(&mut self, message: &AddressMessage, present: bool) -> Option<KernelEvent> {
        let index = message.header.index;
        let Some(a) = link::address_of(message) else {
            tracing::debug!(index, "address notification without an address; skipped");
            return None;
        };
        let key = (index, a.addr, a.prefix_len);
        if present {
            self.addresses.insert(key);
        } else {
            self.addresses.remove(&key);
        }
        Some(KernelEvent::Address { index, addr: a.addr, prefix_len: a.prefix_len, present })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::{
        LinkAttribute, LinkFlags, LinkMessage, State as OperState,
    };

    fn link(
        index: u32,
        name: Option<&str>,
        flags: LinkFlags,
        oper: Option<OperState>,
    ) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = flags;
        message.attributes.extend(name.map(|n| LinkAttribute::IfName(n.to_owned())));
        message.attributes.extend(oper.map(LinkAttribute::OperState));
        message
    }

    fn address(index: u32, addr: &str, prefix_len: u8) -> AddressMessage {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.prefix_len = prefix_len;
        message.attributes.push(AddressAttribute::Address(addr.parse().unwrap()));
        message
    }

    fn up(index: u32, name: &str, up: bool) -> KernelEvent {
        KernelEvent::Link { index, name: name.to_owned(), up }
    }

    #[test]
    fn up_needs_admin_up_carrier_and_an_operational_state() {
        let both = LinkFlags::Up | LinkFlags::LowerUp;
        let mut known = Known::default();
        let mut event = |m| known.event_of(RouteNetlinkMessage::NewLink(m));
        assert_eq!(
            event(link(3, Some("eth0"), both, Some(OperState::Up))),
            Some(up(3, "eth0", true))
        );
        // lo and tun report no carrier state of their own.
        assert_eq!(
            event(link(1, Some("lo"), both, Some(OperState::Unknown))),
            Some(up(1, "lo", true))
        );
        assert_eq!(event(link(3, Some("eth0"), both, None)), Some(up(3, "eth0", true)));
        // Set down; carrier lost (veth peer down); waiting for 802.1X.
        assert_eq!(
            event(link(3, Some("eth0"), LinkFlags::LowerUp, None)),
            Some(up(3, "eth0", false))
        );
        let no_carrier = link(3, Some("eth0"), LinkFlags::Up, Some(OperState::LowerLayerDown));
        assert_eq!(event(no_carrier), Some(up(3, "eth0", false)));
        assert_eq!(
            event(link(3, Some("eth0"), both, Some(OperState::Dormant))),
            Some(up(3, "eth0", false))
        );
        assert_eq!(
            event(link(3, Some("eth0"), both, Some(OperState::Down))),
            Some(up(3, "eth0", false))
        );
    }

    #[test]
    fn malformed_and_foreign_messages_make_no_event() {
        let mut known = Known::default();
        let nameless = link(3, None, LinkFlags::Up, None);
        assert_eq!(known.event_of(RouteNetlinkMessage::NewLink(nameless)), None);
        let empty = AddressMessage::default();
        assert_eq!(known.event_of(RouteNetlinkMessage::NewAddress(empty)), None);
        let route = rtnetlink::packet_route::route::RouteMessage::default();
        assert_eq!(known.event_of(RouteNetlinkMessage::NewRoute(route)), None);
    }

    #[test]
    fn removals_name_what_was_known_and_forget_its_addresses() {
        let mut known = Known::default();
        known.event_of(RouteNetlinkMessage::NewLink(link(4, Some("eth1"), LinkFlags::Up, None)));
        let added = known.event_of(RouteNetlinkMessage::NewAddress(address(4, "10.0.0.1", 24)));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            added,
            Some(KernelEvent::Address { index: 4, addr: ip, prefix_len: 24, present: true })
        );
        assert!(known.addresses.contains(&(4, ip, 24)));
        // A DELLINK without its name still says which link went.
        let gone =
            known.event_of(RouteNetlinkMessage::DelLink(link(4, None, LinkFlags::empty(), None)));
        assert_eq!(gone, Some(KernelEvent::LinkRemoved { index: 4, name: "eth1".into() }));
        assert!(known.links.is_empty() && known.addresses.is_empty());
        let removed = known.event_of(RouteNetlinkMessage::DelAddress(address(4, "fd00::1", 64)));
        assert_eq!(
            removed,
            Some(KernelEvent::Address {
                index: 4,
                addr: "fd00::1".parse().unwrap(),
                prefix_len: 64,
                present: false
            })
        );
    }

    #[test]
    fn an_overrun_reports_what_exists_and_what_went() {
        let mut known = Known::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let seed = State {
            links: vec![(1, "lo".into(), true), (2, "eth0".into(), true), (3, "eth1".into(), true)],
            addresses: [(2, ip("10.0.0.1"), 24), (3, ip("10.0.1.1"), 24)].into(),
        };
        assert!(known.adopt(seed, false).is_empty(), "the seed is remembered, not reported");
        let after = State {
            links: vec![(1, "lo".into(), true), (2, "eth0".into(), false)],
            addresses: [(2, ip("10.0.0.2"), 24)].into(),
        };
        let events = known.adopt(after, true);
        let addr = |index, a: &str, present| KernelEvent::Address {
            index,
            addr: ip(a),
            prefix_len: 24,
            present,
        };
        assert_eq!(
            events,
            [
                addr(2, "10.0.0.1", false),
                addr(3, "10.0.1.1", false),
                KernelEvent::LinkRemoved { index: 3, name: "eth1".into() },
                up(1, "lo", true),
                up(2, "eth0", false),
                addr(2, "10.0.0.2", true),
            ]
        );
    }
}

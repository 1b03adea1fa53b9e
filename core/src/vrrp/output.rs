//! What the router asks of its driver: packets to send, host changes to make, and what
//! happened (for logs, metrics and traces).

use core::fmt;
use core::net::IpAddr;

use super::config::{IfIndex, TrackerId, VirtualIp};
use super::drop_reason::DropReason;

/// An instance, by its index in the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub usize);

/// VRRP states. RFC 9568 calls Master "Active"; we keep Master, the word k0s, keepalived and
/// operators use. Fault is keepalived's: a tracked input or the link is down, so the
/// instance refuses mastership until it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Not running (before start-up and after shutdown).
    Initialize,
    /// Listening, ready to take over.
    Backup,
    /// Holding the virtual addresses and advertising.
    Master,
    /// Refusing mastership until its link or tracked inputs recover.
    Fault,
}

impl State {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "Initialize",
            Self::Backup => "Backup",
            Self::Master => "Master",
            Self::Fault => "Fault",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Start-up (RFC 9568 §6.4.1).
    Startup,
    /// The Master_Down_Timer fired: no advert from a master in time.
    MasterDown,
    /// The master resigned (priority 0) and Skew_Time passed.
    MasterResigned,
    /// An advert with a higher priority, or an equal one from a higher address.
    HigherPriorityMaster {
        /// Its address.
        from: IpAddr,
        /// Its priority.
        priority: u8,
    },
    /// A tracked input or the interface went down.
    Fault,
    /// The node could not hold the virtual addresses (the kernel refused them).
    AddressRefused,
    /// The tracked inputs and the interface are up again.
    Recovered,
    /// Orderly shutdown.
    Shutdown,
}

/// A VRRP message to send. The driver sends it in an IP packet with TTL / hop limit 255
/// (`encode_packet` builds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The instance sending it.
    pub instance: InstanceId,
    /// Interface to send on.
    pub ifindex: IfIndex,
    /// Source address.
    pub src: IpAddr,
    /// The group, or a unicast peer.
    pub dst: IpAddr,
    /// The VRRP message.
    pub payload: Vec<u8>,
}

/// A change to make on the host. A driver must carry out every command, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Add the virtual address to the interface.
    AddAddress {
        /// The instance.
        instance: InstanceId,
        /// Interface.
        ifindex: IfIndex,
        /// Address and prefix.
        vip: VirtualIp,
    },
    /// Remove the virtual address from the interface.
    RemoveAddress {
        /// The instance.
        instance: InstanceId,
        /// Interface.
        ifindex: IfIndex,
        /// Address and prefix.
        vip: VirtualIp,
    },
    /// Send one gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) for each
    /// address, from the interface's own MAC.
    Announce {
        /// The instance.
        instance: InstanceId,
        /// Interface.
        ifindex: IfIndex,
        /// The addresses to announce.
        addresses: Vec<IpAddr>,
    },
}

/// Something that happened. A driver may ignore every event and still be correct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An instance changed state.
    StateChanged {
        /// The instance.
        instance: InstanceId,
        /// Old state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        cause: Cause,
    },
    /// A packet was dropped by a receive rule.
    Dropped {
        /// The instance it was for, when known.
        instance: Option<InstanceId>,
        /// The rule broken.
        reason: DropReason,
        /// The sender.
        from: IpAddr,
    },
    /// An advert's address list differs from ours: logged and counted, not dropped, as
    /// keepalived does.
    AddressListMismatch {
        /// The instance.
        instance: InstanceId,
        /// The sender.
        from: IpAddr,
    },
    /// The effective priority changed because a tracked input changed.
    PriorityChanged {
        /// The instance.
        instance: InstanceId,
        /// The new effective priority.
        priority: u8,
    },
    /// A tracked input changed state (after hysteresis).
    TrackerChanged {
        /// The tracker.
        tracker: TrackerId,
        /// Whether it is up now.
        up: bool,
    },
    /// The instance learned who its master is: this node when it became master, the
    /// sender of the adverts it accepts as a backup, or nobody (the master resigned, or
    /// this instance stopped listening).
    MasterChanged {
        /// The instance.
        instance: InstanceId,
        /// The master's address, if known.
        master: Option<IpAddr>,
    },
    /// This master heard another master and stays master (lower priority, or equal with a
    /// lower address): it re-advertises and re-announces.
    ContentionWon {
        /// The instance.
        instance: InstanceId,
        /// The other master.
        other: IpAddr,
    },
}

/// The router's output queues, lent to an instance while it handles an input.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) transmits: std::collections::VecDeque<Transmit>,
    pub(crate) commands: std::collections::VecDeque<Command>,
    pub(crate) events: std::collections::VecDeque<Event>,
}

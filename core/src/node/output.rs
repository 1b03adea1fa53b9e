//! What a node asks of its driver and tells it: commands for the host (each with an id
//! whose result comes back), and events for logs, metrics and traces.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

use super::config::Reload;
use crate::lb::{DataPlane, NatRules, Probe, ServiceSpec};
use crate::vrrp::{self, IfIndex, InstanceId, VirtualIp};

/// Identifies a command so that its result can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId(pub u64);

/// A change to make on the host. Commands with an id expect
/// [`Node::handle_command_result`](super::Node::handle_command_result) with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Add an address to an interface (already there counts as done).
    AddAddress {
        /// Pass back with the result.
        id: CommandId,
        /// Interface.
        ifindex: IfIndex,
        /// Address and prefix.
        vip: VirtualIp,
    },
    /// Remove an address from an interface (already gone counts as done).
    RemoveAddress {
        /// Pass back with the result.
        id: CommandId,
        /// Interface.
        ifindex: IfIndex,
        /// Address and prefix.
        vip: VirtualIp,
    },
    /// Send one gratuitous ARP / unsolicited neighbour advertisement per address. No
    /// result is expected: a lost announcement is repeated by the refresh.
    Announce {
        /// Interface.
        ifindex: IfIndex,
        /// The addresses.
        addresses: Vec<IpAddr>,
    },
    /// Make the node's NAT table hold exactly these rules (empty: no table), atomically.
    SetRules {
        /// Pass back with the result.
        id: CommandId,
        /// The whole table.
        rules: NatRules,
    },
    /// Make the kernel's virtual services for this node's VIPs exactly these.
    SetServices {
        /// Pass back with the result.
        id: CommandId,
        /// Every service.
        services: Vec<ServiceSpec>,
    },
    /// Run a health probe and report with
    /// [`Node::handle_probe_result`](super::Node::handle_probe_result).
    Probe(Probe),
}

impl Command {
    /// The id to pass back, for the commands that expect a result.
    pub fn id(&self) -> Option<CommandId> {
        match self {
            Self::AddAddress { id, .. }
            | Self::RemoveAddress { id, .. }
            | Self::SetRules { id, .. }
            | Self::SetServices { id, .. } => Some(*id),
            Self::Announce { .. } | Self::Probe(_) => None,
        }
    }
}

/// Why the host could not carry out a command (the kernel's words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something in the kernel a node manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Object {
    /// An address on an interface (a VIP, or a direct-routing local VIP).
    Address {
        /// Interface.
        ifindex: IfIndex,
        /// The address.
        addr: IpAddr,
    },
    /// The NAT table (redirects, NAT balancers).
    Rules,
    /// The kernel's virtual services (IPVS).
    Services,
}

impl Object {
    /// A stable label for metrics (`address`, `rules`, `services`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Address { .. } => "address",
            Self::Rules => "rules",
            Self::Services => "services",
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address { ifindex, addr } => write!(f, "address {addr} on ifindex {}", ifindex.0),
            Self::Rules => f.write_str("NAT rules"),
            Self::Services => f.write_str("virtual services"),
        }
    }
}

/// Something that happened. A driver may ignore every event and still be correct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// From the VRRP instances: state changes, masters seen, drops, ...
    Vrrp(vrrp::Event),
    /// An API server's health changed (after hysteresis).
    ServerHealth {
        /// The server.
        server: SocketAddr,
        /// Healthy now.
        healthy: bool,
    },
    /// The data plane the node wants changed (it is being programmed).
    DataPlaneChanged(DataPlane),
    /// The kernel refused a command: the first refusal of a condition, or a new reason.
    /// Retries follow with backoff and are not reported one by one.
    KernelRefused {
        /// What could not be set.
        object: Object,
        /// The kernel's words.
        reason: String,
    },
    /// A refused object is set after all. For an address, a refused add is recovered by
    /// an add that works, not by the removal that follows the refusal.
    KernelRecovered {
        /// What is set now.
        object: Object,
        /// Refusals before it worked.
        attempts: u32,
    },
    /// Someone else changed what the node had set (an address removed by hand, the NAT
    /// table deleted); the node puts it back.
    KernelDrift {
        /// What changed.
        object: Object,
    },
    /// A reload was taken up.
    Reloaded(Reload),
    /// A reload was refused; the running configuration stays.
    ReloadRefused {
        /// Why.
        reason: String,
    },
    /// A reload added an instance.
    InstanceAdded(InstanceId),
    /// A reload removed an instance (it resigned first).
    InstanceRemoved(InstanceId),
}

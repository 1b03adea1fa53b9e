//! The kernel seam: everything cplbd asks of Linux.
//!
//! Each module here speaks one kernel interface and nothing else; the rest of the crate
//! (the plan, the driver, status) decides what to ask and goes through these:
//! - [`vrrp_socket`]: raw IP protocol 112 sockets (IPv4 and IPv6, multicast and unicast);
//! - [`link`]: interfaces and VIPs over rtnetlink;
//! - [`watch`]: rtnetlink notifications of link and address changes;
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements (AF_PACKET);
//! - [`nft`]: nftables over netlink (the proxy redirect; kernel NAT balancing without IPVS);
//! - [`ipvs`]: IPVS over generic netlink;
//! - [`owned`]: what cplbd created, so that it removes only that;
//! - [`linux`]: the [`Kernel`] seam carried out with all of the above;
//! - [`KernelError`]: why a call failed, keeping the error of the interface it came from.

pub mod announce;
mod error;
pub mod ipvs;
pub mod link;
pub mod linux;
pub mod nft;
pub mod owned;
pub mod vrrp_filter;
pub mod vrrp_socket;
pub mod watch;

use std::net::IpAddr;

use cplb_core::lb::{NatRules, ServiceSpec};
use cplb_core::vrrp::{IfIndex, Transmit, VirtualIp};

pub use self::error::{Facility, KernelError, Outgoing};

/// What the driver asks of a kernel: the one seam between cplbd's decisions and Linux
/// ([`linux::LinuxKernel`]), which a simulated kernel can take the place of. The node
/// retries what fails and reports it; the error keeps what the kernel said.
#[allow(async_fn_in_trait)]
pub trait Kernel {
    /// Adds an address to an interface; already present is done.
    async fn add_address(&mut self, ifindex: IfIndex, vip: VirtualIp) -> Result<(), KernelError>;
    /// Removes an address from an interface; already absent is done.
    async fn remove_address(&mut self, ifindex: IfIndex, vip: VirtualIp)
    -> Result<(), KernelError>;
    /// Whether the interface holds the address now.
    async fn has_address(&mut self, ifindex: IfIndex, addr: IpAddr) -> Result<bool, KernelError>;
    /// Sends a gratuitous ARP / unsolicited NA for each address.
    fn announce(&mut self, ifindex: IfIndex, addresses: &[IpAddr]) -> Result<(), KernelError>;
    /// Sends a VRRP message (the IP header with TTL / hop limit 255 around it).
    fn send(&self, transmit: &Transmit) -> Result<(), KernelError>;
    /// Makes the NAT table hold exactly these rules (none: no table). A loop guard's real
    /// servers are resolved to link-layer addresses here.
    async fn set_rules(&mut self, rules: &NatRules) -> Result<(), KernelError>;
    /// Whether the NAT table still holds exactly these rules (and a loop guard the
    /// link-layer addresses its real servers have now).
    async fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, KernelError>;
    /// Makes the virtual services on cplbd's VIPs exactly these.
    async fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), KernelError>;
    /// Whether the virtual services on cplbd's VIPs are still exactly these.
    async fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, KernelError>;
}

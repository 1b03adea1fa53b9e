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
//! - [`linux`]: the [`Kernel`] seam carried out with all of the above.

pub mod announce;
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
use cplb_core::vrrp::{Transmit, VirtualIp};

/// What the driver asks of a kernel: the one seam between cplbd's decisions and Linux
/// ([`linux::LinuxKernel`]), which a simulated kernel can take the place of. Errors are
/// the kernel's words, passed back to the node, which retries and reports.
#[allow(async_fn_in_trait)]
pub trait Kernel {
    /// Adds an address to an interface; already present is done.
    async fn add_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String>;
    /// Removes an address from an interface; already absent is done.
    async fn remove_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String>;
    /// Whether the interface holds the address now.
    async fn has_address(&mut self, ifindex: u32, addr: IpAddr) -> Result<bool, String>;
    /// Sends a gratuitous ARP / unsolicited NA for each address.
    fn announce(&mut self, ifindex: u32, addresses: &[IpAddr]) -> Result<(), String>;
    /// Sends a VRRP message (the IP header with TTL / hop limit 255 around it).
    fn send(&self, transmit: &Transmit) -> Result<(), String>;
    /// Makes the NAT table hold exactly these rules (none: no table). A loop guard's real
    /// servers are resolved to link-layer addresses here.
    async fn set_rules(&mut self, rules: &NatRules) -> Result<(), String>;
    /// Whether the NAT table still holds exactly these rules (and a loop guard the
    /// link-layer addresses its real servers have now).
    async fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, String>;
    /// Makes the virtual services on cplbd's VIPs exactly these.
    fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), String>;
    /// Whether the virtual services on cplbd's VIPs are still exactly these.
    fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, String>;
}

//! What a receiver accepts: the configurable part of the receive checks.

use core::net::IpAddr;

use super::checksum::ChecksumPolicy;

/// Configuration of the receive checks. The default is the strict RFC reading with both
/// VRRPv3-over-IPv4 checksum forms accepted and multicast only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiveRules {
    /// Unicast VRRP (keepalived's `unicast_peer`, k0s's `unicastPeers`): a packet not sent
    /// to the group is accepted when its source or destination is one of these.
    pub unicast_peers: Vec<IpAddr>,
    /// Which VRRPv3-over-IPv4 checksum forms are accepted.
    pub checksum: ChecksumPolicy,
    /// Accept IPv6 advertisements whose first address is not link-local. RFC 9568 §5.2.9
    /// (erratum 8300) requires it to be, but keepalived outside `strict_mode` sends the
    /// configured VIPs as they are and only logs a warning; interoperating with it needs this.
    pub allow_global_first_ipv6: bool,
    /// Accept any TTL / hop limit on unicast adverts from a configured peer. Unicast VRRP is
    /// not in the RFCs; keepalived skips the 255 check for it (unicast may cross routers, and
    /// its IPv6 unicast adverts leave with the kernel's default hop limit of 64).
    pub unicast_any_ttl: bool,
}

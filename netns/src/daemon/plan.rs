//! From a k0s configuration and the kernel's interfaces to what this node runs: which
//! interface and address each VRRP instance uses, and which API servers to balance over.

use std::net::{IpAddr, SocketAddr};

use cplb_core::config::Keepalived;
use cplb_core::node::{Balancing, NodeConfig};
use cplb_core::vrrp::{IfIndex, InstanceConfig, TrackerId, V3Ipv4Checksum, Version};

use crate::kernel::link::{Address, Interface, LinkError, Netlink, ResolveError};
use crate::options::ServerArg;

/// The instances of one interface and address family.
#[derive(Debug, Clone)]
pub struct Group {
    /// The interface.
    pub iface: Interface,
    /// This node's address there (unicast source, tie-breaker).
    pub address: IpAddr,
    /// Its IPv6 link-local address (multicast IPv6 adverts come from it).
    pub link_local: Option<IpAddr>,
    /// `(index in vrrpInstances, instance)`.
    pub instances: Vec<(usize, InstanceConfig)>,
}

/// What this node runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The instances, by interface and family.
    pub groups: Vec<Group>,
    /// The API servers to check and balance over.
    pub real_servers: Vec<SocketAddr>,
    /// This node's API server (its health moves the VIP).
    pub own_api: SocketAddr,
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An instance's interface was not found.
    #[error(
        "spec.network.controlPlaneLoadBalancing.keepalived.vrrpInstances[{index}].interface: {cause}"
    )]
    Interface {
        /// The instance.
        index: usize,
        /// Why.
        cause: ResolveError,
    },
    /// The interface has no address of the VIPs' family.
    #[error("vrrpInstances[{index}]: interface {iface} has no {family} address to send VRRP from")]
    NoAddress {
        /// The instance.
        index: usize,
        /// Interface name.
        iface: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// Netlink failed.
    #[error("reading the addresses of {iface}: {cause}")]
    Netlink {
        /// Interface.
        iface: String,
        /// Why.
        cause: LinkError,
    },
    /// Nothing to run.
    #[error("no VRRP instance has a virtual IP")]
    Empty,
}

/// Where a plan finds the host's interfaces: rtnetlink on Linux, the simulated host's one
/// interface under turmoil.
#[allow(async_fn_in_trait)]
pub trait Interfaces {
    /// The interface k0s would use for `spec` (see [`Netlink::resolve_interface`]).
    async fn resolve_interface(&self, spec: &str, v4: bool) -> Result<Interface, ResolveError>;
    /// The addresses on interface `index`.
    async fn addresses(&self, index: u32) -> Result<Vec<Address>, LinkError>;
}

impl Interfaces for Netlink {
    async fn resolve_interface(&self, spec: &str, v4: bool) -> Result<Interface, ResolveError> {
        Self::resolve_interface(self, spec, v4).await
    }

    async fn addresses(&self, index: u32) -> Result<Vec<Address>, LinkError> {
        Self::addresses(self, index).await
    }
}

/// Works out the plan for this node.
pub async fn make(
    keepalived: &Keepalived,
    api_port: u16,
    real_servers: &[ServerArg],
    netlink: &impl Interfaces,
    tracker: TrackerId,
) -> Result<Plan, PlanError> {
    let vips: Vec<IpAddr> = keepalived
        .vrrp_instances
        .iter()
        .flat_map(|i| i.virtual_ips.iter().map(|c| c.addr))
        .chain(keepalived.virtual_servers.iter().map(|v| v.ip_address))
        .collect();
    let mut groups: Vec<Group> = Vec::new();
    for (index, inst) in keepalived.vrrp_instances.iter().enumerate() {
        let Some(first) = inst.virtual_ips.first() else { continue };
        let v4 = first.addr.is_ipv4();
        let iface = netlink
            .resolve_interface(&inst.interface, v4)
            .await
            .map_err(|cause| PlanError::Interface { index, cause })?;
        let addrs = netlink
            .addresses(iface.index)
            .await
            .map_err(|cause| PlanError::Netlink { iface: iface.name.clone(), cause })?;
        let address = match inst.unicast_source_ip {
            Some(a) if !inst.unicast_peers.is_empty() => a,
            _ => addrs
                .iter()
                .filter(|a| a.addr.is_ipv4() == v4 && !a.link_local && !vips.contains(&a.addr))
                .min_by_key(|a| a.secondary)
                .map(|a| a.addr)
                .ok_or(PlanError::NoAddress {
                    index,
                    iface: iface.name.clone(),
                    family: if v4 { "IPv4" } else { "IPv6" },
                })?,
        };
        let link_local = addrs.iter().find(|a| a.link_local && a.addr.is_ipv6()).map(|a| a.addr);
        let mut controllers = vec![address];
        controllers.extend(inst.unicast_peers.iter().copied());
        let made = cplb_core::node::vrrp_instances(
            keepalived,
            address,
            link_local,
            &controllers,
            IfIndex(iface.index),
            Some(tracker),
        );
        let Some(config) = made.into_iter().find(|(i, _)| *i == index) else { continue };
        match groups.iter_mut().find(|g| g.iface.index == iface.index && g.address == address) {
            Some(g) => g.instances.push(config),
            None => groups.push(Group { iface, address, link_local, instances: vec![config] }),
        }
    }
    let Some(first) = groups.first() else { return Err(PlanError::Empty) };
    let own_api = SocketAddr::new(first.address, api_port);
    let mut servers: Vec<SocketAddr> = if real_servers.is_empty() {
        let mut ips = vec![first.address];
        for inst in &keepalived.vrrp_instances {
            ips.extend(inst.unicast_peers.iter().copied());
        }
        ips.into_iter().map(|ip| SocketAddr::new(ip, api_port)).collect()
    } else {
        real_servers.iter().map(|s| SocketAddr::new(s.ip, s.port.unwrap_or(api_port))).collect()
    };
    servers.sort();
    servers.dedup();
    Ok(Plan { groups, real_servers: servers, own_api })
}

/// The node's configuration for a plan: what cplbd runs, on Linux and in simulation alike.
pub fn node_config(
    keepalived: &Keepalived,
    api_port: u16,
    plan: &Plan,
    local_vips: Option<&(u32, String)>,
    balancing: Balancing,
    tuning: &VrrpTuning,
) -> NodeConfig {
    NodeConfig {
        keepalived: keepalived.clone(),
        api_port,
        own_api: plan.own_api,
        real_servers: plan.real_servers.clone(),
        instances: plan
            .groups
            .iter()
            .flat_map(|g| g.instances.iter().map(|(_, c)| c.clone()))
            .map(|mut c| {
                tuning.apply(&mut c);
                c
            })
            .collect(),
        local_vip_ifindex: local_vips.map(|(i, _)| IfIndex(*i)),
        balancing,
    }
}

/// What cplbd's command line changes in the instances k0s's file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpTuning {
    /// Adverts are accepted only from these sources (empty: from any).
    pub accept_from: Vec<IpAddr>,
    /// The version of IPv4 instances (IPv6 ones are always VRRPv3).
    pub ipv4_version: Version,
    /// Every instance's advertisement interval, instead of advertIntervalSeconds.
    pub advert_interval: Option<std::time::Duration>,
    /// How VRRPv3 over IPv4 is checksummed when sent.
    pub v3_ipv4_checksum: V3Ipv4Checksum,
}

impl Default for VrrpTuning {
    /// k0s's instances as its keepalived runs them.
    fn default() -> Self {
        Self {
            accept_from: Vec::new(),
            ipv4_version: Version::V2,
            advert_interval: None,
            v3_ipv4_checksum: V3Ipv4Checksum::PseudoHeader,
        }
    }
}

impl VrrpTuning {
    /// Applies the tuning to one instance; the node's configuration check then refuses
    /// what the version cannot carry (a sub-second VRRPv2 interval).
    fn apply(&self, c: &mut InstanceConfig) {
        let v4 = c.primary_address.is_ipv4();
        c.accept_from = self.accept_from.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
        if v4 && self.ipv4_version == Version::V3 {
            c.version = Version::V3;
            // VRRPv3 has no authentication (RFC 9568 §9): k0s's authPass is not sent.
            c.auth = cplb_core::vrrp::Authentication::None;
        }
        c.v3_ipv4_checksum = self.v3_ipv4_checksum;
        if let Some(every) = self.advert_interval {
            c.advert_interval_cs = u16::try_from(every.as_millis() / 10).unwrap_or(u16::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use cplb_core::vrrp::{AuthPass, Authentication, VirtualIp, Vrid};

    use super::*;

    fn k0s_instance() -> InstanceConfig {
        let addr: IpAddr = "10.200.0.10".parse().unwrap();
        let vip = VirtualIp { addr: "10.200.0.200".parse().unwrap(), prefix_len: 24 };
        let mut c =
            InstanceConfig::new("k0s-vip-0", IfIndex(2), Vrid::new(51).unwrap(), addr, vec![vip]);
        c.version = Version::V2;
        c.auth = Authentication::SimpleText(AuthPass::new(b"Example").unwrap());
        c
    }

    #[test]
    fn vrrp3_at_100_ms_drops_the_password_and_vrrp2_refuses_it() {
        let fast = VrrpTuning {
            ipv4_version: Version::V3,
            advert_interval: Some(std::time::Duration::from_millis(100)),
            ..VrrpTuning::default()
        };
        let mut c = k0s_instance();
        fast.apply(&mut c);
        assert_eq!(
            (c.version, c.advert_interval_cs, c.auth),
            (Version::V3, 10, Authentication::None)
        );
        assert_eq!(c.v3_ipv4_checksum, V3Ipv4Checksum::PseudoHeader, "keepalived's default");
        c.validate().expect("VRRPv3 carries 100 ms");

        let mut v2 = k0s_instance();
        VrrpTuning { ipv4_version: Version::V2, ..fast }.apply(&mut v2);
        let e = v2.validate().expect_err("VRRPv2 has whole seconds only");
        assert!(e.to_string().contains("VRRPv2 interval 10 cs"), "{e}");
    }
}

//! From a k0s configuration and the kernel's interfaces to what this node runs: which
//! interface and address each VRRP instance uses, and which API servers to balance over.

use std::net::{IpAddr, SocketAddr};

use cplb_core::config::Keepalived;
use cplb_core::node::{Balancing, NodeConfig, VrrpTuning};
use cplb_core::vrrp::{IfIndex, InstanceConfig, TrackerId};

use crate::kernel::link::{Address, Interface, LinkError, Netlink, ResolveError};

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
    local_vip_ifindex: Option<IfIndex>,
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
        local_vip_ifindex,
        balancing,
    }
}

/// An API server given on the command line (`--real-servers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerArg {
    /// Address.
    pub ip: IpAddr,
    /// Port, when given.
    pub port: Option<u16>,
}

//! What a node runs: its configuration (the k0s file's load balancing, the instances made
//! from it, the API servers), the check of that configuration as a whole, and what a reload
//! changed.

use core::net::SocketAddr;

use crate::config::{Keepalived, LbKind, LoadBalancerMode};
use crate::vrrp::{ConfigError, IfIndex, InstanceConfig, InstanceId, TrackerId};

/// The tracker every node registers first: its own API server's health.
pub const API_TRACKER: TrackerId = TrackerId(0);

/// Where a node's virtual servers are programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Balancing {
    /// Kernel virtual services (IPVS).
    Ipvs,
    /// NAT rules (no IPVS in this kernel): DNAT balancers in the NAT table.
    Nat,
}

/// What one controller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// The k0s load-balancing configuration.
    pub keepalived: Keepalived,
    /// `spec.api.port`.
    pub api_port: u16,
    /// This node's API server: its health is tracked, and the proxy falls back to it.
    pub own_api: SocketAddr,
    /// The API servers to check and balance over.
    pub real_servers: Vec<SocketAddr>,
    /// The VRRP instances (from [`super::vrrp_instances`], tracking [`API_TRACKER`]).
    pub instances: Vec<InstanceConfig>,
    /// Direct routing: the non-ARPing interface that holds the VIPs on every controller.
    pub local_vip_ifindex: Option<IfIndex>,
    /// Where the virtual servers go.
    pub balancing: Balancing,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reload {
    /// Instances left running untouched.
    pub kept: Vec<InstanceId>,
    /// Instances started.
    pub added: Vec<InstanceId>,
    /// Instances stopped (resigned, addresses released).
    pub removed: Vec<InstanceId>,
}

/// Why `new` cannot be taken up by a node running `running` without a restart, if it
/// cannot: what was set up at start (the proxy's listener, the data plane's kind, the
/// non-ARPing interface of direct routing) would change.
pub(super) fn needs_restart(running: &NodeConfig, new: &NodeConfig) -> Option<String> {
    let (old_mode, new_mode) = (running.keepalived.mode(), new.keepalived.mode());
    if new_mode != old_mode {
        return Some(format!("changing the load balancer mode ({old_mode:?} to {new_mode:?})"));
    }
    let (old_port, new_port) =
        (running.keepalived.user_space_proxy_bind_port, new.keepalived.user_space_proxy_bind_port);
    if new_mode == LoadBalancerMode::UserspaceProxy && new_port != old_port {
        return Some(format!("moving userSpaceProxyBindPort ({old_port} to {new_port})"));
    }
    let direct = new.keepalived.virtual_servers.iter().any(|v| v.lb_kind == LbKind::Dr);
    if new_mode == LoadBalancerMode::Ipvs
        && new.balancing == Balancing::Ipvs
        && direct
        && new.local_vip_ifindex.is_none()
    {
        return Some("a first direct-routing virtual server (dummyvip0)".to_owned());
    }
    None
}

/// Validates instances as a set (each, only the node's tracker, and no VRID twice on an
/// interface and family), so that a reload is refused whole rather than half applied.
pub(super) fn check_instances(instances: &[InstanceConfig]) -> Result<(), ConfigError> {
    for (i, cfg) in instances.iter().enumerate() {
        cfg.validate()?;
        if let Some(t) = cfg.tracking.iter().find(|t| t.tracker != API_TRACKER) {
            return Err(ConfigError::UnknownTracker {
                instance: cfg.name.clone(),
                tracker: t.tracker.0,
            });
        }
        if let Some(other) = instances.iter().take(i).find(|o| {
            o.ifindex == cfg.ifindex
                && o.vrid == cfg.vrid
                && o.primary_address.is_ipv6() == cfg.primary_address.is_ipv6()
        }) {
            return Err(ConfigError::DuplicateVrid {
                instance: cfg.name.clone(),
                vrid: cfg.vrid.get(),
                other: other.name.clone(),
            });
        }
    }
    Ok(())
}

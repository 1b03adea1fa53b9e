//! The kernel packet rules a node's data plane needs (nftables on Linux): the redirect of
//! VIP:port to the userspace proxy on every controller; where the kernel has no IPVS, the
//! virtual servers as DNAT balancers on the master; with IPVS, the loop guards' marks.

use core::net::SocketAddr;

use super::dataplane::{DataPlane, LoopGuard};
use crate::config::LbAlgo;

/// Every NAT rule of a node, programmed as one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatRules {
    /// VIP:port redirected to a local port (the userspace proxy).
    pub redirects: Vec<Redirect>,
    /// Virtual servers balanced by the kernel's NAT (no IPVS).
    pub balancers: Vec<NatBalancer>,
    /// The marks of the IPVS services' traffic (IPVS mode).
    pub loop_guards: Vec<LoopGuard>,
}

impl NatRules {
    /// Whether there is nothing to program (the table should not exist).
    pub fn is_empty(&self) -> bool {
        self.redirects.is_empty() && self.balancers.is_empty() && self.loop_guards.is_empty()
    }
}

/// Redirect of a VIP:port to a local port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Redirect {
    /// The VIP and port clients connect to.
    pub vip: SocketAddr,
    /// The local port it goes to.
    pub to_port: u16,
}

/// A virtual server as a DNAT balancer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatBalancer {
    /// The VIP and port.
    pub vip: SocketAddr,
    /// Where connections go.
    pub backends: Vec<SocketAddr>,
    /// How a connection picks its backend.
    pub spread: Spread,
}

/// How a NAT balancer spreads connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Spread {
    /// In turn (`numgen inc`).
    RoundRobin,
    /// By the client's address (`jhash ip saddr`): the stateless stand-in for IPVS
    /// persistence and for the source/destination hash schedulers.
    SourceHash,
}

/// The NAT rules of a data plane. `balance_services`: the virtual servers are balanced by
/// NAT rules because the kernel has no IPVS (so there is no IPVS service to guard).
pub fn nat_rules(dataplane: &DataPlane, balance_services: bool) -> NatRules {
    let to_port = dataplane.proxy_port.unwrap_or(0);
    let redirects = if dataplane.proxy_port.is_some() {
        dataplane.redirects.iter().map(|&vip| Redirect { vip, to_port }).collect()
    } else {
        Vec::new()
    };
    let balancers = if balance_services {
        dataplane
            .services
            .iter()
            .map(|s| NatBalancer {
                vip: SocketAddr::new(s.key.vip, s.key.port),
                backends: s.real_servers.iter().map(|r| r.addr).collect(),
                spread: match s.algo {
                    LbAlgo::Sh | LbAlgo::Dh => Spread::SourceHash,
                    _ if s.persistence_secs > 0 => Spread::SourceHash,
                    _ => Spread::RoundRobin,
                },
            })
            .collect()
    } else {
        Vec::new()
    };
    let loop_guards = if balance_services { Vec::new() } else { dataplane.loop_guards.clone() };
    NatRules { redirects, balancers, loop_guards }
}

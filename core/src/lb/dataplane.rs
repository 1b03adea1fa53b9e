//! What the data plane of one node should be, and the changes that get it there from what
//! it is, so a driver can reconcile after a restart as well as after each change.
//!
//! Only the VRRP master of a VIP programs that VIP's virtual service. Every other
//! controller has none, whatever the number of instances: with direct routing, a backup
//! that balanced too would forward packets the master forwarded to it again, the loop of
//! k0s issue #5178 (which k0s fixed for one instance only).

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use super::service::{RealServer, ServiceKey};
use crate::config::{Keepalived, LbAlgo, LbKind, LoadBalancerMode};

/// The first firewall mark of cplb's virtual services: the service configured at index `i`
/// of `virtualServers` is mark `FWMARK_BASE + i`, whatever node is its master, so a mark
/// survives failovers and restarts. Low values clear of the bits kube-proxy (0x4000,
/// 0x8000), Calico (0xffff0000) and Cilium (0x0f00) give meaning to.
pub const FWMARK_BASE: u32 = 100;
/// How many marks from [`FWMARK_BASE`] are cplb's: a service with one of them that the node
/// does not want is a stale one of its own, to remove.
pub const FWMARK_SPAN: u32 = 156;

/// A virtual service as the kernel would hold it.
///
/// Loop guard: a driver must not schedule packets whose link-layer source is one of the
/// service's real servers. Such a packet was forwarded by another director: a second master
/// during a contention, or a host whose daemon died with its IPVS table in place.
/// Scheduling it again is how direct routing loops (found by the fuzzer: a crashed master's
/// stale table and the new master forwarding to each other). So the kernel's service is the
/// firewall mark `fwmark`, and a [`LoopGuard`] marks only the frames to `key` that come from
/// no real server: the others reach the local API server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceSpec {
    /// VIP and port: the traffic the service balances.
    pub key: ServiceKey,
    /// The firewall mark the kernel's service matches (see [`FWMARK_BASE`]).
    pub fwmark: u32,
    /// Scheduler.
    pub algo: LbAlgo,
    /// Forwarding method.
    pub forwarding: LbKind,
    /// Persistence timeout in seconds (0: none).
    pub persistence_secs: u32,
    /// Real servers, sorted.
    pub real_servers: Vec<RealServer>,
}

/// The mark for a virtual service's traffic, on every controller: packets to `service` get
/// `fwmark` unless their link-layer source is one of `real_servers` (a director forwarded
/// them; see [`ServiceSpec`]). A driver resolves the addresses to link-layer addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LoopGuard {
    /// VIP and port.
    pub service: ServiceKey,
    /// The mark to set.
    pub fwmark: u32,
    /// Every configured real server of the service's family, healthy or not (a dead one may
    /// still hold a stale table), sorted.
    pub real_servers: Vec<IpAddr>,
}

/// The data plane a node should have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataPlane {
    /// IPVS virtual services (IPVS mode, VIPs this node is master of).
    pub services: Vec<ServiceSpec>,
    /// Userspace proxy mode: the port the proxy listens on.
    pub proxy_port: Option<u16>,
    /// Userspace proxy mode: where the proxy sends connections.
    pub proxy_backends: Vec<SocketAddr>,
    /// Userspace proxy mode: VIP:port redirected to the proxy (on every controller, as k0s).
    pub redirects: Vec<SocketAddr>,
    /// Direct routing: VIPs to hold as /32 (/128) on a non-ARPing local interface, on every
    /// controller, so forwarded packets are accepted.
    pub local_vips: Vec<IpAddr>,
    /// IPVS mode: the marks of the services' traffic, on every controller (so a failover
    /// only adds services, and a stale table left by a crash is guarded as well).
    pub loop_guards: Vec<LoopGuard>,
}

/// One change to the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create a virtual service (without real servers).
    AddService(ServiceSpec),
    /// Change a service's scheduler, forwarding or persistence.
    EditService(ServiceSpec),
    /// Delete a virtual service and its real servers.
    RemoveService(ServiceKey),
    /// Add a real server to a service.
    AddRealServer(ServiceKey, RealServer),
    /// Change a real server's weight.
    EditRealServer(ServiceKey, RealServer),
    /// Remove a real server from a service.
    RemoveRealServer(ServiceKey, SocketAddr),
    /// Set the userspace proxy's backends (and start it on the port).
    SetProxy {
        /// Listening port.
        port: u16,
        /// Backends.
        backends: Vec<SocketAddr>,
    },
    /// Stop the userspace proxy.
    StopProxy,
    /// Redirect VIP:port to the proxy.
    AddRedirect(SocketAddr),
    /// Remove that redirect.
    RemoveRedirect(SocketAddr),
    /// Hold a VIP on the non-ARPing local interface.
    AddLocalVip(IpAddr),
    /// Drop it.
    RemoveLocalVip(IpAddr),
}

/// The data plane for this node.
///
/// `servers` are every API server the health checker watches, `healthy` those to balance
/// over (its usable set); `is_master(vip)` says whether this node's VRRP instance holding
/// `vip` is master.
pub fn desired(
    config: &Keepalived,
    api_port: u16,
    servers: &[SocketAddr],
    healthy: &[SocketAddr],
    is_master: impl Fn(IpAddr) -> bool,
) -> DataPlane {
    let mut backends: Vec<SocketAddr> = healthy.to_vec();
    backends.sort();
    backends.dedup();
    let vips: Vec<IpAddr> =
        config.vrrp_instances.iter().flat_map(|i| i.virtual_ips.iter().map(|c| c.addr)).collect();
    match config.mode() {
        LoadBalancerMode::VipOnly => DataPlane::default(),
        LoadBalancerMode::UserspaceProxy => DataPlane {
            proxy_port: Some(config.user_space_proxy_bind_port),
            proxy_backends: backends,
            redirects: {
                let mut r: Vec<SocketAddr> =
                    vips.iter().map(|v| SocketAddr::new(*v, api_port)).collect();
                r.sort();
                r.dedup();
                r
            },
            ..DataPlane::default()
        },
        LoadBalancerMode::Ipvs => {
            let marked = || {
                (FWMARK_BASE..).zip(&config.virtual_servers).map(|(fwmark, vs)| {
                    (ServiceKey { vip: vs.ip_address, port: api_port }, fwmark, vs)
                })
            };
            let mut services: Vec<ServiceSpec> = marked()
                .filter(|(key, _, _)| is_master(key.vip))
                .map(|(key, fwmark, vs)| ServiceSpec {
                    key,
                    fwmark,
                    algo: vs.lb_algo,
                    forwarding: vs.lb_kind,
                    persistence_secs: vs.persistence_timeout_seconds,
                    real_servers: backends
                        .iter()
                        .filter(|b| b.is_ipv4() == vs.ip_address.is_ipv4())
                        .map(|&addr| RealServer { addr, weight: 1 })
                        .collect(),
                })
                .collect();
            services.sort();
            let mut local_vips: Vec<IpAddr> = config
                .virtual_servers
                .iter()
                .filter(|vs| vs.lb_kind == LbKind::Dr)
                .map(|vs| vs.ip_address)
                .collect();
            local_vips.sort();
            local_vips.dedup();
            let mut loop_guards: Vec<LoopGuard> = marked()
                .map(|(service, fwmark, _)| {
                    let mut real_servers: Vec<IpAddr> = servers
                        .iter()
                        .map(|s| s.ip())
                        .filter(|ip| ip.is_ipv4() == service.vip.is_ipv4())
                        .collect();
                    real_servers.sort();
                    real_servers.dedup();
                    LoopGuard { service, fwmark, real_servers }
                })
                .collect();
            loop_guards.sort();
            DataPlane { services, local_vips, loop_guards, ..DataPlane::default() }
        }
    }
}

/// The changes that turn `current` into `desired`, removals before additions.
pub fn diff(current: &DataPlane, desired: &DataPlane) -> Vec<Change> {
    let mut out = Vec::new();
    for cur in &current.services {
        match desired.services.iter().find(|d| d.key == cur.key && d.fwmark == cur.fwmark) {
            None => out.push(Change::RemoveService(cur.key)),
            Some(want) => {
                if (want.algo, want.forwarding, want.persistence_secs)
                    != (cur.algo, cur.forwarding, cur.persistence_secs)
                {
                    out.push(Change::EditService(ServiceSpec {
                        real_servers: Vec::new(),
                        ..want.clone()
                    }));
                }
                for rs in &cur.real_servers {
                    match want.real_servers.iter().find(|w| w.addr == rs.addr) {
                        None => out.push(Change::RemoveRealServer(cur.key, rs.addr)),
                        Some(w) if w.weight != rs.weight => {
                            out.push(Change::EditRealServer(cur.key, *w))
                        }
                        Some(_) => {}
                    }
                }
                for w in &want.real_servers {
                    if !cur.real_servers.iter().any(|rs| rs.addr == w.addr) {
                        out.push(Change::AddRealServer(cur.key, *w));
                    }
                }
            }
        }
    }
    for want in &desired.services {
        if !current.services.iter().any(|c| c.key == want.key && c.fwmark == want.fwmark) {
            out.push(Change::AddService(ServiceSpec { real_servers: Vec::new(), ..want.clone() }));
            out.extend(want.real_servers.iter().map(|rs| Change::AddRealServer(want.key, *rs)));
        }
    }
    match (current.proxy_port, desired.proxy_port) {
        (Some(_), None) => out.push(Change::StopProxy),
        (cur, Some(port))
            if cur != Some(port) || current.proxy_backends != desired.proxy_backends =>
        {
            out.push(Change::SetProxy { port, backends: desired.proxy_backends.clone() });
        }
        _ => {}
    }
    set_diff(
        &current.redirects,
        &desired.redirects,
        Change::RemoveRedirect,
        Change::AddRedirect,
        &mut out,
    );
    set_diff(
        &current.local_vips,
        &desired.local_vips,
        Change::RemoveLocalVip,
        Change::AddLocalVip,
        &mut out,
    );
    out
}

fn set_diff<T: PartialEq + Copy>(
    cur: &[T],
    want: &[T],
    remove: fn(T) -> Change,
    add: fn(T) -> Change,
    out: &mut Vec<Change>,
) {
    out.extend(cur.iter().filter(|c| !want.contains(c)).map(|c| remove(*c)));
    out.extend(want.iter().filter(|w| !cur.contains(w)).map(|w| add(*w)));
}

/// Applies changes to a table, as a driver's model of what it did (the simulator's data
/// plane and tests use it; `diff(a, b)` applied to `a` gives `b`).
pub fn apply(table: &mut DataPlane, changes: &[Change]) {
    for change in changes {
        match change {
            Change::AddService(s) => table.services.push(s.clone()),
            Change::EditService(s) => {
                if let Some(cur) = table.services.iter_mut().find(|c| c.key == s.key) {
                    (cur.algo, cur.forwarding, cur.persistence_secs) =
                        (s.algo, s.forwarding, s.persistence_secs);
                }
            }
            Change::RemoveService(k) => table.services.retain(|c| c.key != *k),
            Change::AddRealServer(k, rs) | Change::EditRealServer(k, rs) => {
                if let Some(cur) = table.services.iter_mut().find(|c| c.key == *k) {
                    cur.real_servers.retain(|r| r.addr != rs.addr);
                    cur.real_servers.push(*rs);
                    cur.real_servers.sort();
                }
            }
            Change::RemoveRealServer(k, addr) => {
                if let Some(cur) = table.services.iter_mut().find(|c| c.key == *k) {
                    cur.real_servers.retain(|r| r.addr != *addr);
                }
            }
            Change::SetProxy { port, backends } => {
                table.proxy_port = Some(*port);
                table.proxy_backends.clone_from(backends);
            }
            Change::StopProxy => {
                table.proxy_port = None;
                table.proxy_backends.clear();
            }
            Change::AddRedirect(r) => table.redirects.push(*r),
            Change::RemoveRedirect(r) => table.redirects.retain(|x| x != r),
            Change::AddLocalVip(v) => table.local_vips.push(*v),
            Change::RemoveLocalVip(v) => table.local_vips.retain(|x| x != v),
        }
    }
    table.services.sort();
    table.redirects.sort();
    table.local_vips.sort();
}

/// Persistence timeout of a service spec as a duration.
pub fn persistence_of(spec: &ServiceSpec) -> Option<Duration> {
    (spec.persistence_secs > 0).then(|| Duration::from_secs(u64::from(spec.persistence_secs)))
}

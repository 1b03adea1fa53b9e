//! How a controller runs a k0s CPLB configuration: the VRRP instances it derives from
//! `vrrpInstances`, with the settings k0s's keepalived template uses and the few we add.
//! The simulator and the daemon both build their instances here, so they run the same
//! protocol.

use core::net::IpAddr;
use core::time::Duration;

use crate::config::{Keepalived, VrrpInstance};
use crate::vrrp::{
    AuthPass, Authentication, IfIndex, InstanceConfig, Priority, Track, TrackerId, Version,
    VirtualIp, Vrid,
};

/// k0s gives every node the same priority, so a joining node never preempts.
pub const K0S_PRIORITY: u8 = 200;

/// How much a failing local API server lowers the priority: below any healthy peer at
/// k0s's equal priorities, never to 0 (the VIP stays somewhere when every API server is
/// down, where the userspace proxy can still reach whatever comes back first).
pub const API_TRACK_WEIGHT: i16 = -50;

/// Periodic re-announcement while master. keepalived leaves it off; we send one every few
/// seconds so that a host whose neighbour entry went stale (a lost burst, a partition that
/// healed unseen) is corrected within that time rather than when its ARP entry expires
/// (30 s or more). One gratuitous ARP per VIP every 5 s costs nothing.
pub const ANNOUNCE_REFRESH: Duration = Duration::from_secs(5);

/// The VRRP instances this controller runs, with the index of each in `vrrpInstances`.
///
/// `address` is this node's address on the instances' interface (its unicast source and
/// tie-breaker); `link_local` its IPv6 link-local address there, the source of multicast
/// IPv6 adverts (RFC 9568 §5.1.2.1); `controllers` are every controller's addresses (the
/// unicast peers are the others); `tracker` is the local API server's health input. VIPs of
/// the other address family than `address` are left out of an instance.
pub fn vrrp_instances(
    keepalived: &Keepalived,
    address: IpAddr,
    link_local: Option<IpAddr>,
    controllers: &[IpAddr],
    ifindex: IfIndex,
    tracker: Option<TrackerId>,
) -> Vec<(usize, InstanceConfig)> {
    let mut out = Vec::new();
    for (index, inst) in keepalived.vrrp_instances.iter().enumerate() {
        let source = match link_local {
            Some(ll) if address.is_ipv6() && inst.unicast_peers.is_empty() => ll,
            _ => address,
        };
        if let Some(cfg) = instance(index, inst, address, source, controllers, ifindex, tracker) {
            out.push((index, cfg));
        }
    }
    out
}

fn instance(
    index: usize,
    inst: &VrrpInstance,
    address: IpAddr,
    source: IpAddr,
    controllers: &[IpAddr],
    ifindex: IfIndex,
    tracker: Option<TrackerId>,
) -> Option<InstanceConfig> {
    let vips: Vec<VirtualIp> = inst
        .virtual_ips
        .iter()
        .filter(|c| c.addr.is_ipv4() == address.is_ipv4())
        .map(|c| VirtualIp { addr: c.addr, prefix_len: c.prefix_len })
        .collect();
    if vips.is_empty() {
        return None;
    }
    let vrid = Vrid::new(inst.virtual_router_id)?;
    let mut cfg = InstanceConfig::new(&format!("k0s-vip-{index}"), ifindex, vrid, source, vips);
    cfg.priority = Priority(K0S_PRIORITY);
    cfg.advert_interval_cs = u16::from(inst.advert_interval_seconds) * 100;
    if address.is_ipv4() {
        // keepalived's default: VRRPv2 with k0s's simple-text password.
        cfg.version = Version::V2;
        cfg.auth = AuthPass::new(inst.auth_pass.as_bytes())
            .map_or(Authentication::None, Authentication::SimpleText);
    } else {
        cfg.version = Version::V3;
        // keepalived sends the configured VIPs as they are, the first not always link-local.
        cfg.allow_global_first_ipv6 = true;
    }
    if !inst.unicast_peers.is_empty() {
        cfg.unicast_peers = controllers.iter().copied().filter(|a| *a != address).collect();
        // keepalived (the other side during a migration) sends IPv6 unicast with hop limit 64.
        cfg.unicast_any_ttl = true;
    }
    cfg.announce.refresh_every = Some(ANNOUNCE_REFRESH);
    cfg.tracking = tracker
        .map(|tracker| vec![Track { tracker, weight: API_TRACK_WEIGHT }])
        .unwrap_or_default();
    Some(cfg)
}

//! How a controller runs a k0s CPLB configuration: the VRRP instances it derives from
//! `vrrpInstances`, with the settings k0s's keepalived template uses and the few we add.
//! The simulator and the daemon both build their instances here, so they run the same
//! protocol.

use core::net::IpAddr;
use core::time::Duration;

use crate::config::{Keepalived, VrrpInstance};
use crate::vrrp::{
    AuthPass, Authentication, IfIndex, InstanceConfig, Priority, Track, TrackerId, V3Ipv4Checksum,
    Version, VirtualIp, Vrid,
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

/// The name of the instance at `index` in `vrrpInstances`, as k0s's keepalived template
/// names it (`k0s-vip-0`, ...): logs, status, traces and reports all use this one.
pub fn instance_name(index: usize) -> String {
    format!("k0s-vip-{index}")
}

/// What a controller changes in the instances k0s's file describes, beyond that file: the
/// settings `cplbd` takes on its command line (`--vrrp-version`, `--advert-interval`,
/// `--accept-adverts-from`, `--v3-ipv4-checksum`), and the simulator passes on from a
/// scenario, so both drivers run the same instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpTuning {
    /// Adverts are accepted only from these sources (empty: from any).
    pub accept_from: Vec<IpAddr>,
    /// The version of IPv4 instances (IPv6 ones are always VRRPv3).
    pub ipv4_version: Version,
    /// Every instance's advertisement interval, instead of `advertIntervalSeconds`.
    pub advert_interval: Option<Duration>,
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
    pub fn apply(&self, c: &mut InstanceConfig) {
        let v4 = c.primary_address.is_ipv4();
        c.accept_from = self.accept_from.iter().copied().filter(|a| a.is_ipv4() == v4).collect();
        if v4 && self.ipv4_version == Version::V3 {
            c.version = Version::V3;
            // VRRPv3 has no authentication (RFC 9568 §9): k0s's authPass is not sent.
            c.auth = Authentication::None;
        }
        c.v3_ipv4_checksum = self.v3_ipv4_checksum;
        if let Some(every) = self.advert_interval {
            c.advert_interval_cs = u16::try_from(every.as_millis() / 10).unwrap_or(u16::MAX);
        }
    }
}

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
    let mut cfg = InstanceConfig::new(&instance_name(index), ifindex, vrid, source, vips);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use crate::vrrp::{AuthPass, Authentication, VirtualIp, Vrid};

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
            advert_interval: Some(Duration::from_millis(100)),
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

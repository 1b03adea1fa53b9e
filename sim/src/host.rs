//! A simulated host: its kernel state (addresses, ARP cache, data plane), which survives a
//! daemon crash, and the daemon itself: the same core the real daemon runs.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use cplb_core::config::{ClusterConfig, Keepalived};
use cplb_core::lb::{self, DataPlane, HealthChecker, RealServer, ServiceKey, VirtualService};
use cplb_core::time::Instant;
use cplb_core::vrrp::{
    Authentication, IfIndex, InstanceConfig, InstanceId, Priority, Router, TrackerConfig,
    TrackerId, Version, VirtualIp,
};

use crate::spec::{HostSpec, HostVrrp, Role, VrrpTuning};

/// The simulated interface every host has on the segment.
pub(crate) const ETH0: IfIndex = IfIndex(2);
pub(crate) use cplb_core::node::K0S_PRIORITY;

/// A host's clock, which may drift from simulated time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Clock {
    base_sim: Instant,
    base_local: Instant,
    rate: f64,
}

impl Clock {
    pub(crate) fn exact() -> Self {
        Self { base_sim: Instant::ZERO, base_local: Instant::ZERO, rate: 1.0 }
    }

    /// Local reading at simulated time `t`.
    pub(crate) fn local(&self, t: Instant) -> Instant {
        let elapsed = t.saturating_duration_since(self.base_sim);
        if self.rate == 1.0 {
            return self.base_local + elapsed;
        }
        self.base_local + Duration::from_nanos((elapsed.as_nanos() as f64 * self.rate) as u64)
    }

    /// The first simulated time at which the local clock reads at least `local`.
    pub(crate) fn sim(&self, local: Instant) -> Instant {
        let ahead = local.saturating_duration_since(self.base_local);
        if self.rate == 1.0 {
            return self.base_sim + ahead;
        }
        let mut t = self.base_sim
            + Duration::from_nanos((ahead.as_nanos() as f64 / self.rate).ceil() as u64);
        while self.local(t) < local {
            t += Duration::from_nanos(1);
        }
        t
    }

    /// From simulated time `now` on, run `ppm` parts per million fast (negative: slow).
    pub(crate) fn set_drift(&mut self, now: Instant, ppm: f64) {
        let local = self.local(now);
        *self = Self { base_sim: now, base_local: local, rate: 1.0 + ppm / 1e6 };
    }
}

/// An instance as the daemon runs it.
#[derive(Debug, Clone)]
pub(crate) struct InstanceInfo {
    pub(crate) id: InstanceId,
    pub(crate) vips: Vec<VirtualIp>,
}

/// The cplb daemon of a controller: router, health checker, userspace proxy.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) router: Router,
    pub(crate) instances: Vec<InstanceInfo>,
    pub(crate) health: HealthChecker,
    pub(crate) tracker: TrackerId,
    pub(crate) own_api: SocketAddr,
    /// The userspace proxy's scheduler (rr over the healthy API servers).
    pub(crate) proxy: Option<VirtualService>,
    /// Distinguishes this daemon's probe results from a predecessor's.
    pub(crate) incarnation: u64,
}

/// Kernel-side state of a host.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) spec: HostSpec,
    pub(crate) mac: u64,
    pub(crate) powered: bool,
    pub(crate) link_up: bool,
    pub(crate) apiserver_up: bool,
    pub(crate) clock: Clock,
    /// Addresses added on eth0 by the daemon (the VIPs).
    pub(crate) vips_on_eth0: BTreeSet<IpAddr>,
    /// The data plane as programmed.
    pub(crate) dataplane: DataPlane,
    /// IPVS scheduling state of the programmed services (kernel memory).
    pub(crate) ipvs: BTreeMap<ServiceKey, VirtualService>,
    /// ARP cache: address → (MAC, last confirmed).
    pub(crate) arp: BTreeMap<IpAddr, (u64, Instant)>,
    pub(crate) daemon: Option<Daemon>,
    /// The load-balancing part of the host's configuration (its own, or the scenario's).
    pub(crate) keepalived: Option<Keepalived>,
    /// The API port of its configuration.
    pub(crate) api_port: u16,
    /// The controllers of its cluster (same configuration), itself included.
    pub(crate) cluster: Vec<IpAddr>,
    /// When the host's next timer is due, in simulated time, and its generation.
    pub(crate) wake: Option<(Instant, u64)>,
}

impl Host {
    pub(crate) fn new(spec: HostSpec, index: usize) -> Self {
        Self {
            mac: 0x0200_0000_0000 | index as u64,
            powered: true,
            link_up: true,
            apiserver_up: spec.role == Role::Controller,
            clock: Clock::exact(),
            vips_on_eth0: BTreeSet::new(),
            dataplane: DataPlane::default(),
            ipvs: BTreeMap::new(),
            arp: BTreeMap::new(),
            daemon: None,
            keepalived: None,
            api_port: 6443,
            cluster: Vec::new(),
            wake: None,
            spec,
        }
    }

    pub(crate) fn is_controller(&self) -> bool {
        self.spec.role == Role::Controller
    }

    /// Whether this host accepts packets addressed to `ip`: its own address, a VIP on
    /// eth0, or (direct routing) a VIP on its non-ARPing local interface.
    pub(crate) fn accepts(&self, ip: IpAddr) -> bool {
        self.spec.address == ip
            || self.vips_on_eth0.contains(&ip)
            || self.dataplane.local_vips.contains(&ip)
    }

    /// Power loss: everything in memory is gone.
    pub(crate) fn power_off(&mut self) {
        self.powered = false;
        self.daemon = None;
        self.vips_on_eth0.clear();
        self.dataplane = DataPlane::default();
        self.ipvs.clear();
        self.arp.clear();
        self.wake = None;
    }
}

/// The link-local address of an IPv6 host: fe80:: with the low 64 bits of its address.
pub(crate) fn link_local(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V6(a) => {
            Some(IpAddr::V6((0xfe80_u128 << 112 | (a.to_bits() & u128::from(u64::MAX))).into()))
        }
        IpAddr::V4(_) => None,
    }
}

/// Builds a daemon for a controller, started at local time `now`.
pub(crate) fn start_daemon(
    config: &ClusterConfig,
    host: &HostSpec,
    tuning: VrrpTuning,
    controllers: &[IpAddr],
    now: Instant,
    incarnation: u64,
) -> Option<Daemon> {
    let keepalived = config.enabled_keepalived()?;
    let mut router = Router::new(now);
    let tracker = router.add_tracker(TrackerConfig::default()).ok()?;
    let mut instances = Vec::new();
    for (_, cfg) in cplb_core::node::vrrp_instances(
        keepalived,
        host.address,
        link_local(host.address),
        controllers,
        ETH0,
        Some(tracker),
    ) {
        let cfg = tune(cfg, tuning, host.vrrp);
        let vips = cfg.virtual_ips.clone();
        let id = router.add_instance(now, cfg).ok()?;
        instances.push(InstanceInfo { id, vips });
    }
    let api_port = config.spec.api.port;
    let mut health = HealthChecker::new(lb::k0s_health_config(keepalived));
    let servers: Vec<SocketAddr> =
        controllers.iter().map(|a| SocketAddr::new(*a, api_port)).collect();
    health.set_servers(now, &servers);
    Some(Daemon {
        router,
        instances,
        health,
        tracker,
        own_api: SocketAddr::new(host.address, api_port),
        proxy: None,
        incarnation,
    })
}

/// Applies the settings a scenario gives beyond k0s's configuration.
fn tune(mut cfg: InstanceConfig, tuning: VrrpTuning, host: HostVrrp) -> InstanceConfig {
    if tuning.v3 {
        cfg.version = Version::V3;
        cfg.auth = Authentication::None;
    }
    if let Some(cs) = tuning.advert_interval_cs {
        cfg.advert_interval_cs = if cfg.version == Version::V2 {
            (cs / 100).clamp(1, 255) * 100
        } else {
            cs.clamp(1, 4095)
        };
    }
    if let Some(p) = host.priority {
        cfg.priority = Priority(p.max(1));
    }
    if let Some(preempt) = host.preempt {
        cfg.preempt = preempt;
    }
    cfg
}

impl Daemon {
    /// Whether this daemon's instance holding `vip` is master.
    pub(crate) fn is_master_of(&self, vip: IpAddr) -> bool {
        self.instances.iter().any(|i| {
            i.vips.iter().any(|v| v.addr == vip)
                && self.router.state(i.id) == Some(cplb_core::vrrp::State::Master)
        })
    }

    /// Next wake-up in local time.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        match (self.router.poll_timeout(), self.health.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Makes the host's data plane match what the daemon wants; returns whether it changed.
pub(crate) fn reconcile_dataplane(host: &mut Host, keepalived: &Keepalived) -> bool {
    let api_port = host.api_port;
    let Some(daemon) = host.daemon.as_mut() else {
        return false;
    };
    let usable = daemon.health.usable();
    let want = lb::desired(keepalived, api_port, &usable, |vip| daemon.is_master_of(vip));
    let changes = lb::diff(&host.dataplane, &want);
    if changes.is_empty() && daemon.proxy.is_some() == want.proxy_port.is_some() {
        return false;
    }
    lb::apply(&mut host.dataplane, &changes);
    // IPVS scheduling state follows the table; kept services keep their persistence.
    host.ipvs.retain(|k, _| want.services.iter().any(|s| s.key == *k));
    for spec in &want.services {
        let vs = host.ipvs.entry(spec.key).or_insert_with(|| {
            VirtualService::new(spec.key, spec.algo, spec.forwarding, lb::persistence_of(spec))
        });
        vs.set_real_servers(&spec.real_servers);
    }
    daemon.proxy = want.proxy_port.map(|port| {
        let key = ServiceKey { vip: host.spec.address, port };
        let mut vs = daemon.proxy.take().unwrap_or_else(|| {
            VirtualService::new(
                key,
                cplb_core::config::LbAlgo::Rr,
                cplb_core::config::LbKind::Nat,
                None,
            )
        });
        let servers: Vec<RealServer> =
            want.proxy_backends.iter().map(|&addr| RealServer { addr, weight: 1 }).collect();
        vs.set_real_servers(&servers);
        vs
    });
    !changes.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drifting_clock_converts_both_ways() {
        let mut c = Clock::exact();
        c.set_drift(Instant::from_secs(10), 100_000.0); // 10% fast
        assert_eq!(c.local(Instant::from_secs(10)), Instant::from_secs(10));
        assert_eq!(c.local(Instant::from_secs(20)), Instant::from_secs(21));
        let wake = c.sim(Instant::from_secs(21));
        assert!(c.local(wake) >= Instant::from_secs(21) && wake <= Instant::from_secs(20));
        c.set_drift(Instant::from_secs(20), -100_000.0); // then 10% slow
        assert_eq!(c.local(Instant::from_secs(30)), Instant::from_secs(30));
    }
}

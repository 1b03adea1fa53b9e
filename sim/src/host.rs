//! A simulated host: its kernel state (addresses, ARP cache, data plane), which survives a
//! daemon crash, and the daemon itself: the same core the real daemon runs.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use cplb_core::config::{ClusterConfig, Keepalived};
use cplb_core::lb::{self, DataPlane, ServiceKey, VirtualService};
use cplb_core::node::{self, Balancing, Command, CommandError, Node, NodeConfig};
use cplb_core::time::Instant;
use cplb_core::vrrp::{Authentication, IfIndex, InstanceConfig, Priority, Version};

use crate::spec::{HostSpec, HostVrrp, Role, VrrpTuning};

/// The simulated interface every host has on the segment.
pub(crate) const ETH0: IfIndex = IfIndex(2);
/// The non-ARPing interface (k0s's `dummyvip0`) that holds direct routing's VIPs.
pub(crate) const LOCAL_VIPS: IfIndex = IfIndex(3);
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

/// The cplb daemon of a controller: the same `Node` cplbd runs.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) node: Node,
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
    /// Its API server accepts connections and never answers.
    pub(crate) apiserver_hung: bool,
    pub(crate) clock: Clock,
    /// Addresses added on eth0 by the daemon (the VIPs).
    pub(crate) vips_on_eth0: BTreeSet<IpAddr>,
    /// The data plane as the kernel holds it (local VIPs, redirects, services) and, while
    /// the daemon runs, its proxy.
    pub(crate) dataplane: DataPlane,
    /// Until then the kernel refuses every address and data-plane command.
    pub(crate) refuse_until: Option<Instant>,
    /// The configuration file a reload wrote, if any (else the host's or the scenario's).
    pub(crate) file: Option<ClusterConfig>,
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
            apiserver_hung: false,
            clock: Clock::exact(),
            vips_on_eth0: BTreeSet::new(),
            dataplane: DataPlane::default(),
            refuse_until: None,
            file: None,
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

/// The node configuration a controller runs for `config`.
pub(crate) fn node_config(
    config: &ClusterConfig,
    host: &HostSpec,
    tuning: VrrpTuning,
    controllers: &[IpAddr],
) -> Option<NodeConfig> {
    let keepalived = config.enabled_keepalived()?;
    let instances = node::vrrp_instances(
        keepalived,
        host.address,
        link_local(host.address),
        controllers,
        ETH0,
        Some(node::API_TRACKER),
    )
    .into_iter()
    .map(|(_, cfg)| tune(cfg, tuning, host.vrrp))
    .collect();
    let api_port = config.spec.api.port;
    Some(NodeConfig {
        keepalived: keepalived.clone(),
        api_port,
        own_api: SocketAddr::new(host.address, api_port),
        real_servers: controllers.iter().map(|a| SocketAddr::new(*a, api_port)).collect(),
        instances,
        local_vip_ifindex: Some(LOCAL_VIPS),
        balancing: Balancing::Ipvs,
    })
}

/// Builds a daemon for a controller, started at local time `now`.
pub(crate) fn start_daemon(config: NodeConfig, now: Instant, incarnation: u64) -> Option<Daemon> {
    Node::new(now, config).ok().map(|node| Daemon { node, incarnation })
}

/// The advertisement interval an instance runs: the scenario's, in whole seconds for v2,
/// or the configuration's.
pub(crate) fn advert_interval_cs(tuning: VrrpTuning, version: Version, configured: u16) -> u16 {
    match tuning.advert_interval_cs {
        Some(cs) if version == Version::V2 => (cs / 100).clamp(1, 255) * 100,
        Some(cs) => cs.clamp(1, 4095),
        None => configured,
    }
}

/// Applies the settings a scenario gives beyond k0s's configuration.
fn tune(mut cfg: InstanceConfig, tuning: VrrpTuning, host: HostVrrp) -> InstanceConfig {
    if tuning.v3 {
        cfg.version = Version::V3;
        cfg.auth = Authentication::None;
    }
    cfg.advert_interval_cs = advert_interval_cs(tuning, cfg.version, cfg.advert_interval_cs);
    if let Some(p) = host.priority {
        cfg.priority = Priority(p.max(1));
    }
    if let Some(preempt) = host.preempt {
        cfg.preempt = preempt;
    }
    cfg
}

/// Carries out a node's command on the host's kernel model; returns its result.
pub(crate) fn execute(
    host: &mut Host,
    now: Instant,
    command: &Command,
) -> Result<(), CommandError> {
    if host.refuse_until.is_some_and(|t| now < t) {
        return Err(CommandError("the kernel refuses (simulated fault)".to_owned()));
    }
    match command {
        Command::AddAddress { ifindex, vip, .. } if *ifindex == ETH0 => {
            host.vips_on_eth0.insert(vip.addr);
        }
        Command::RemoveAddress { ifindex, vip, .. } if *ifindex == ETH0 => {
            host.vips_on_eth0.remove(&vip.addr);
        }
        Command::AddAddress { vip, .. } => {
            if !host.dataplane.local_vips.contains(&vip.addr) {
                host.dataplane.local_vips.push(vip.addr);
                host.dataplane.local_vips.sort();
            }
        }
        Command::RemoveAddress { vip, .. } => host.dataplane.local_vips.retain(|v| *v != vip.addr),
        Command::SetRules { rules, .. } => {
            host.dataplane.redirects = rules.redirects.iter().map(|r| r.vip).collect();
        }
        Command::SetServices { services, .. } => {
            // IPVS scheduling state follows the table; kept services keep their persistence.
            host.ipvs.retain(|k, _| services.iter().any(|s| s.key == *k));
            for spec in services {
                let vs = host.ipvs.entry(spec.key).or_insert_with(|| {
                    VirtualService::new(
                        spec.key,
                        spec.algo,
                        spec.forwarding,
                        lb::persistence_of(spec),
                    )
                });
                vs.set_real_servers(&spec.real_servers);
            }
            host.dataplane.services.clone_from(services);
        }
        Command::Announce { .. } | Command::Probe(_) => {}
    }
    Ok(())
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

//! A host of the engine: what its kernel holds (addresses, ARP cache, data plane, IPVS
//! scheduling state), which survives a daemon crash, and its daemon: the same `Node` cplbd
//! runs, built from the host's file as cplbd builds it.

use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;

use cplb_core::config::ClusterConfig;
use cplb_core::lb::{self, DataPlane, ServiceKey, VirtualService};
use cplb_core::node::{self, Balancing, Command, CommandError, Node, NodeConfig};
use cplb_core::time::Instant;
use cplb_core::vrrp::{IfIndex, Priority};

use crate::spec::{HostSpec, Role, VrrpTuning};

/// The simulated interface every host has on the segment.
pub(crate) const ETH0: IfIndex = IfIndex(2);
/// The non-ARPing interface (k0s's `dummyvip0`) that holds direct routing's VIPs.
pub(crate) const LOCAL_VIPS: IfIndex = IfIndex(3);

/// The cplb daemon of a controller.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) node: Node,
    /// Distinguishes this daemon's probe results from a predecessor's.
    pub(crate) incarnation: u64,
}

/// A host: its kernel and, on a controller, its daemon.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) spec: HostSpec,
    pub(crate) mac: u64,
    /// Addresses added on eth0 by the daemon (the VIPs).
    pub(crate) vips_on_eth0: BTreeMap<IpAddr, u8>,
    /// The data plane as the kernel holds it (local VIPs, redirects, services) and, while
    /// the daemon runs, its proxy.
    pub(crate) dataplane: DataPlane,
    /// IPVS scheduling state of the programmed services (kernel memory).
    pub(crate) ipvs: BTreeMap<ServiceKey, VirtualService>,
    /// ARP cache: address → (MAC, last confirmed).
    pub(crate) arp: BTreeMap<IpAddr, (u64, Instant)>,
    pub(crate) daemon: Option<Daemon>,
    /// When the host's next timer is due, in simulated time, and its generation.
    pub(crate) wake: Option<(Instant, u64)>,
}

impl Host {
    pub(crate) fn new(spec: HostSpec, index: usize) -> Self {
        Self {
            mac: 0x0200_0000_0000 | index as u64,
            vips_on_eth0: BTreeMap::new(),
            dataplane: DataPlane::default(),
            ipvs: BTreeMap::new(),
            arp: BTreeMap::new(),
            daemon: None,
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
            || self.vips_on_eth0.contains_key(&ip)
            || self.dataplane.local_vips.contains(&ip)
    }

    /// Power loss: everything in memory is gone.
    pub(crate) fn power_off(&mut self) {
        self.daemon = None;
        self.vips_on_eth0.clear();
        self.dataplane = DataPlane::default();
        self.ipvs.clear();
        self.arp.clear();
        self.wake = None;
    }

    /// The daemon is gone (stopped or killed); the kernel keeps what it holds.
    pub(crate) fn daemon_gone(&mut self) {
        self.daemon = None;
        self.wake = None;
        self.dataplane.proxy_port = None;
        self.dataplane.proxy_backends.clear();
    }
}

/// The node configuration a controller runs for its file: the instances as cplbd makes
/// them (the scenario's VRRP tuning as cplbd's command line gives it, then the host's own
/// priority and preemption, which only the engine can run), its cluster's API servers as
/// the real servers, IPVS where the configuration asks for it with direct routing's VIPs
/// on the non-ARPing interface.
pub(crate) fn node_config(
    file: &ClusterConfig,
    host: &HostSpec,
    tuning: VrrpTuning,
    cluster: &[IpAddr],
) -> Option<NodeConfig> {
    let keepalived = file.enabled_keepalived()?;
    let node_tuning = tuning.for_node(host.address.is_ipv4());
    let instances = node::vrrp_instances(
        keepalived,
        host.address,
        crate::spec::link_local(host.address),
        cluster,
        ETH0,
        Some(node::API_TRACKER),
    )
    .into_iter()
    .map(|(_, mut cfg)| {
        node_tuning.apply(&mut cfg);
        if let Some(p) = host.vrrp.priority {
            cfg.priority = Priority(p.max(1));
        }
        if let Some(preempt) = host.vrrp.preempt {
            cfg.preempt = preempt;
        }
        cfg
    })
    .collect();
    let api_port = file.spec.api.port;
    Some(NodeConfig {
        keepalived: keepalived.clone(),
        api_port,
        own_api: SocketAddr::new(host.address, api_port),
        real_servers: cluster.iter().map(|a| SocketAddr::new(*a, api_port)).collect(),
        instances,
        local_vip_ifindex: Some(LOCAL_VIPS),
        balancing: Balancing::Ipvs,
    })
}

/// Carries out a node's command on the host's kernel model (refused while the kernel
/// refuses); returns its result.
pub(crate) fn execute(
    host: &mut Host,
    refusing: bool,
    command: &Command,
) -> Result<(), CommandError> {
    if refusing {
        return Err(CommandError("Operation not permitted (os error 1)".to_owned()));
    }
    match command {
        Command::AddAddress { ifindex, vip, .. } if *ifindex == ETH0 => {
            host.vips_on_eth0.insert(vip.addr, vip.prefix_len);
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
            host.dataplane.loop_guards.clone_from(&rules.loop_guards);
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

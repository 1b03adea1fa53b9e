//! The lab's layout: the seed document's cluster as `cplb lab` builds it out of network
//! namespaces, and where the lab keeps what it runs. Every other part of the lab starts
//! from here.
//!
//! Topology (prefix `cplb-lab-`): a bridge namespace, three controllers with the seed's
//! addresses (192.168.122.37, .185, .87) each running a stand-in API server on :6443 and a
//! cplbd, three workers (.219, .81, .210) and a client (.100). The VIP is 192.168.122.200/24.

use std::path::{Path, PathBuf};

use crate::topology::{HostSpec, Topology};

/// Namespace prefix of the lab.
pub(crate) const PREFIX: &str = "cplb-lab-";
/// Where the lab keeps its configuration, sockets and logs (mode 0700).
pub(crate) const STATE_DIR: &str = "/run/cplb-lab";
/// cplbd's default `--state-dir`, where the lab's cplbds keep their lock and record, in
/// files named after their network namespace (`cplbd-netns-<inode>.*`).
pub(crate) const CPLBD_STATE_DIR: &str = "/run/cplb";
/// Where `--kernel vm` keeps the guest's console log, command socket and pid.
pub(crate) const VM_DIR: &str = "/run/cplb-lab-vm";
/// The userspace proxy's port (k0s's default), the target of the VIP's redirect.
pub(crate) const PROXY_PORT: u16 = 6444;
/// The hosts' default gateway (absent: only the route matters, for interface discovery).
pub(crate) const GATEWAY: &str = "192.168.122.1";
/// The seed's VIP.
pub(crate) const VIP: &str = "192.168.122.200";
/// The API servers' port, on every controller and on the VIP.
pub(crate) const API_PORT: u16 = 6443;
/// The seed's controllers: name and address.
pub(crate) const CONTROLLERS: [(&str, &str); 3] = [
    ("controller-0", "192.168.122.37"),
    ("controller-1", "192.168.122.185"),
    ("controller-2", "192.168.122.87"),
];
/// The seed's workers: name and address.
const WORKERS: [(&str, &str); 3] = [
    ("worker-0", "192.168.122.219"),
    ("worker-1", "192.168.122.81"),
    ("worker-2", "192.168.122.210"),
];
/// The host the lab's client connects to the VIP from: name and address.
pub(crate) const CLIENT: (&str, &str) = ("client", "192.168.122.100");

/// The seed's `controlPlaneLoadBalancing` with its one VRRP instance (a macro so that both
/// configurations below are literals).
macro_rules! seed_config {
    () => {
        "\
spec:
  api:
    sans:
    - 192.168.122.200
  network:
    controlPlaneLoadBalancing:
      enabled: true
      type: Keepalived
      keepalived:
        vrrpInstances:
        - virtualIPs: [\"192.168.122.200/24\"]
          authPass: Example
"
    };
}

/// The lab's configuration: the seed's, in k0s's default (userspace proxy) mode.
pub(crate) const CONFIG: &str = seed_config!();

/// The seed document's own configuration: a virtual server on the VIP, with k0s's
/// defaults (rr, persistence 360, direct routing).
pub(crate) const CONFIG_IPVS: &str =
    concat!(seed_config!(), "        virtualServers:\n        - ipAddress: 192.168.122.200\n");

/// How the lab balances API traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// k0s's default: the userspace proxy behind an nftables redirect.
    #[default]
    Proxy,
    /// The seed's `virtualServers`: IPVS direct routing (NAT rules where there is no IPVS).
    Ipvs,
}

impl Mode {
    /// The k0s.yaml the lab's cplbds read in this mode.
    pub(crate) fn config(self) -> &'static str {
        match self {
            Self::Proxy => CONFIG,
            Self::Ipvs => CONFIG_IPVS,
        }
    }

    /// The mode `lab up` built the running lab with.
    pub(crate) fn running() -> Self {
        let config = std::fs::read_to_string(config_path());
        if config.is_ok_and(|c| c == CONFIG_IPVS) { Self::Ipvs } else { Self::Proxy }
    }
}

/// The configuration `lab up` wrote: while it is there, the lab is up.
pub(crate) fn config_path() -> PathBuf {
    Path::new(STATE_DIR).join("k0s.yaml")
}

/// Every host of the lab: the controllers, the workers and the client.
pub(crate) fn hosts() -> Vec<HostSpec> {
    CONTROLLERS
        .iter()
        .chain(WORKERS.iter())
        .chain(std::iter::once(&CLIENT))
        .map(|(n, a)| HostSpec { name: (*n).to_owned(), address: format!("{a}/24") })
        .collect()
}

/// The running lab's namespaces (attached to, not built: dropping it removes nothing).
pub(crate) fn topo_handle() -> Topology {
    Topology::attach(PREFIX, hosts(), Some(GATEWAY))
}

/// The status socket of the cplbd on controller `name`.
pub(crate) fn socket(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.sock"))
}

#[cfg(test)]
mod tests {
    use cplb_core::config::{self, LbAlgo, LbKind, LoadBalancerMode, LoadOptions};

    use super::*;

    #[test]
    fn both_lab_configurations_are_valid_and_the_ipvs_one_is_the_seeds() {
        let load = |text| config::load(text, LoadOptions::default()).expect("valid");
        let proxy = load(CONFIG);
        let k = proxy.config.enabled_keepalived().expect("enabled");
        assert_eq!(k.mode(), LoadBalancerMode::UserspaceProxy);
        let ipvs = load(CONFIG_IPVS);
        let k = ipvs.config.enabled_keepalived().expect("enabled");
        assert_eq!(k.mode(), LoadBalancerMode::Ipvs);
        let vs = &k.virtual_servers[0];
        assert_eq!(vs.ip_address.to_string(), VIP);
        assert_eq!(
            (vs.lb_algo, vs.lb_kind, vs.persistence_timeout_seconds),
            (LbAlgo::Rr, LbKind::Dr, 360)
        );
    }
}

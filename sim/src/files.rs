//! Each controller's configuration file, as k0s writes one per node: the scenario's (or the
//! host's own), with a unicast instance's source and peers made the node's own, and what a
//! reload puts there. Both drivers run the same files; controllers of the same original
//! configuration form a cluster (their API servers are each other's real servers).

use core::net::IpAddr;

use cplb_core::config::ClusterConfig;

use crate::spec::{ReloadConfig, Role, SimSpec};

/// The files of every controller.
#[derive(Debug, Clone)]
pub struct Files {
    /// Per host: its file (`None` for hosts that are not controllers).
    files: Vec<Option<ClusterConfig>>,
    /// Per host: the controllers of its cluster, itself included, in host order.
    clusters: Vec<Vec<usize>>,
    addresses: Vec<IpAddr>,
}

impl Files {
    /// The files the scenario starts with.
    pub fn new(spec: &SimSpec) -> Self {
        let original = |h: usize| spec.hosts[h].config.as_ref().unwrap_or(&spec.config);
        let controllers: Vec<usize> =
            (0..spec.hosts.len()).filter(|&h| spec.hosts[h].role == Role::Controller).collect();
        let clusters: Vec<Vec<usize>> = (0..spec.hosts.len())
            .map(|h| {
                if spec.hosts[h].role != Role::Controller {
                    return Vec::new();
                }
                controllers.iter().copied().filter(|&c| original(c) == original(h)).collect()
            })
            .collect();
        let addresses: Vec<IpAddr> = spec.hosts.iter().map(|h| h.address).collect();
        let mut files = Self { files: vec![None; spec.hosts.len()], clusters, addresses };
        for &h in &controllers {
            let own = files.own(h, original(h).clone());
            files.files[h] = Some(own);
        }
        files
    }

    /// Host `h`'s file now.
    pub fn of(&self, h: usize) -> Option<&ClusterConfig> {
        self.files.get(h).and_then(Option::as_ref)
    }

    /// The controllers of `h`'s cluster, itself included.
    pub fn cluster(&self, h: usize) -> &[usize] {
        self.clusters.get(h).map_or(&[], Vec::as_slice)
    }

    /// Their addresses.
    pub fn cluster_addresses(&self, h: usize) -> Vec<IpAddr> {
        self.cluster(h).iter().map(|&c| self.addresses[c]).collect()
    }

    /// SIGHUP on host `h` with the file `reload` leaves there: the file the daemon reads,
    /// or why it refuses it (an invalid file stays unused; the daemon keeps running what
    /// it runs).
    pub fn reload(&mut self, h: usize, reload: &ReloadConfig) -> Result<&ClusterConfig, String> {
        match reload {
            ReloadConfig::Same => {}
            ReloadConfig::New(c) => {
                let own = self.own(h, (**c).clone());
                if let Some(f) = self.files.get_mut(h) {
                    *f = Some(own);
                }
            }
            ReloadConfig::Invalid { error, .. } => return Err(error.clone()),
        }
        self.of(h).ok_or_else(|| "not a controller".to_owned())
    }

    /// `config` as host `h`'s own file: unicast instances send from its address to the
    /// other controllers of its cluster (a scenario writes one configuration for all; k0s's
    /// file is per node, and cplbd takes `unicastSourceIP` and `unicastPeers` from it).
    fn own(&self, h: usize, mut config: ClusterConfig) -> ClusterConfig {
        let me = self.addresses[h];
        let peers: Vec<IpAddr> = self
            .cluster(h)
            .iter()
            .map(|&c| self.addresses[c])
            .filter(|a| *a != me && a.is_ipv4() == me.is_ipv4())
            .collect();
        if let Some(cplb) = config.spec.network.control_plane_load_balancing.as_mut()
            && let Some(k) = cplb.keepalived.as_mut()
        {
            for i in k.vrrp_instances.iter_mut().filter(|i| !i.unicast_peers.is_empty()) {
                i.unicast_source_ip = Some(me);
                i.unicast_peers.clone_from(&peers);
            }
        }
        config
    }
}

//! A scenario's VRRP instances as one list across every cluster on the segment and every
//! reload, numbered as traces, expectations and reports name them (`k0s-vip-N`, the name
//! the core gives an instance): the scenario configuration's first, then those only hosts'
//! own configurations have, then those only a reload's file has. An instance is known by
//! its first VIP.

use core::net::IpAddr;
use core::time::Duration;

use cplb_core::node::{self, K0S_PRIORITY};
use cplb_core::vrrp::{self, Priority, Version};

use crate::spec::{Fault, ReloadConfig, Role, SimSpec};

/// One VRRP instance of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Its name in traces and reports.
    pub name: String,
    /// Its VIPs (the first identifies it across clusters and reloads).
    pub vips: Vec<IpAddr>,
    /// The slowest takeover any node could make: at the lowest priority configured.
    pub master_down: Duration,
    /// The advertisement interval.
    pub advert: Duration,
}

/// The scenario's instances, in the trace's numbering.
pub fn instances(spec: &SimSpec) -> Vec<InstanceInfo> {
    let mut instances: Vec<InstanceInfo> = Vec::new();
    let reloaded = spec.faults.iter().filter_map(|f| match &f.fault {
        Fault::Reload(_, ReloadConfig::New(c)) => Some(&**c),
        _ => None,
    });
    let configs = std::iter::once(&spec.config)
        .chain(spec.hosts.iter().filter_map(|h| h.config.as_ref()))
        .chain(reloaded);
    let lowest = spec
        .hosts
        .iter()
        .filter(|h| h.role == Role::Controller)
        .map(|h| h.vrrp.priority.unwrap_or(K0S_PRIORITY).max(1))
        .min()
        .unwrap_or(K0S_PRIORITY);
    for config in configs {
        let Some(k) = config.enabled_keepalived() else {
            continue;
        };
        for i in &k.vrrp_instances {
            let vips: Vec<IpAddr> = i.virtual_ips.iter().map(|c| c.addr).collect();
            if vips.is_empty() || instances.iter().any(|t| t.vips.first() == vips.first()) {
                continue;
            }
            let v6 = vips.first().is_some_and(IpAddr::is_ipv6);
            let version = if spec.vrrp.v3 || v6 { Version::V3 } else { Version::V2 };
            let configured = u16::from(i.advert_interval_seconds) * 100;
            let cs = spec.vrrp.advert_interval_cs(version).unwrap_or(configured);
            instances.push(InstanceInfo {
                name: node::instance_name(instances.len()),
                vips,
                master_down: vrrp::master_down_interval(version, cs, Priority(lowest)),
                advert: Duration::from_millis(u64::from(cs) * 10),
            });
        }
    }
    instances
}

/// The index of the instance whose first VIP is `first_vip`.
pub(crate) fn index_of(instances: &[InstanceInfo], first_vip: IpAddr) -> Option<usize> {
    instances.iter().position(|i| i.vips.first() == Some(&first_vip))
}

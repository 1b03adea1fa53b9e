//! What cplbd changes on the host beyond its VIPs, and puts back: for direct routing, the
//! non-ARPing interface that holds the VIPs on every controller and the ARP sysctls; and
//! which data-plane facilities (nftables, IPVS) the kernel offers.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cplb_core::config::{Keepalived, LbKind, LoadBalancerMode};
use cplb_core::node::Balancing;
use cplb_core::vrrp::IfIndex;

use crate::kernel::ipvs::Ipvs;
use crate::kernel::link::Netlink;
use crate::kernel::linux::LinuxKernel;
use crate::kernel::nft::Nft;
use crate::kernel::owned::Owned;

/// The dummy interface k0s uses for direct routing.
pub const DUMMY: &str = "dummyvip0";

/// The sysctls direct routing needs, and their values.
const ARP_SYSCTLS: [(&str, &str); 2] =
    [("net/ipv4/conf/all/arp_ignore", "1"), ("net/ipv4/conf/all/arp_announce", "2")];

/// The data-plane facilities of this kernel that the configuration uses.
#[derive(Debug)]
pub(super) struct Facilities {
    /// nftables, when the kernel has it.
    pub(super) nft: Option<Nft>,
    /// IPVS, when the kernel has it and the configuration balances with it.
    pub(super) ipvs: Option<Ipvs>,
}

impl Facilities {
    /// Opens what the kernel has, saying what is missing and what that means.
    pub(super) async fn open(mode: LoadBalancerMode) -> Self {
        let nft = Nft::open().map_err(|e| tracing::warn!(error = %e, "nftables unavailable")).ok();
        let ipvs = if mode == LoadBalancerMode::Ipvs { open_ipvs().await } else { None };
        Self { nft, ipvs }
    }
}

/// Where virtual servers go: IPVS where the kernel has it, else the kernel's NAT.
pub(super) fn balancing(kernel: &LinuxKernel) -> Balancing {
    if kernel.ipvs.is_some() { Balancing::Ipvs } else { Balancing::Nat }
}

async fn open_ipvs() -> Option<Ipvs> {
    match Ipvs::open().await {
        Ok(i) => {
            tracing::info!("data plane: IPVS");
            Some(i)
        }
        Err(e) => {
            tracing::warn!(reason = %e, "IPVS unavailable: virtual servers use the nftables NAT data plane (DNAT + masquerade on the master)");
            // DNAT to another controller is forwarding; cplbd does not change a global
            // sysctl behind the operator's back (Kubernetes nodes have it on).
            let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward");
            if forwarding.is_ok_and(|v| v.trim() == "0") {
                tracing::warn!(
                    "net.ipv4.ip_forward is 0: the master can only balance to its own API server until it is set to 1"
                );
            }
            None
        }
    }
}

/// Where direct routing's VIPs live on this controller (interface index and name), if the
/// configuration routes directly and the kernel has IPVS; otherwise `None`, and what a
/// killed predecessor changed for direct routing is put back. Without IPVS the master
/// balances by DNAT and nothing is routed directly, so neither the local VIPs nor the ARP
/// sysctls are touched.
pub(super) async fn prepare_direct_routing(
    netlink: &Netlink,
    owned: &mut Owned,
    keepalived: &Keepalived,
    facilities: &Facilities,
) -> Result<Option<(IfIndex, String)>> {
    let direct = keepalived.mode() == LoadBalancerMode::Ipvs
        && facilities.ipvs.is_some()
        && keepalived.virtual_servers.iter().any(|v| v.lb_kind == LbKind::Dr);
    if direct {
        Ok(Some(local_vip_interface(netlink, owned).await?))
    } else {
        restore(netlink, owned).await;
        Ok(None)
    }
}

/// Where direct routing's VIPs live on every controller: k0s's `dummyvip0` where the kernel
/// has dummy interfaces, else the loopback with ARP replies for them suppressed. What it
/// changes on the host is written down in `owned` and put back by [`restore`].
async fn local_vip_interface(netlink: &Netlink, owned: &mut Owned) -> Result<(IfIndex, String)> {
    // Linux answers ARP for any of its addresses on any interface (arp_ignore=0), the VIP on
    // dummyvip0 or lo included: every backup would claim the VIP. arp_ignore=1: answer only
    // for addresses of the receiving interface; arp_announce=2: never use the VIP as an ARP
    // source. Together the VIP stays the master's (as k0s sets them for keepalived).
    for (key, value) in ARP_SYSCTLS {
        let path = PathBuf::from("/proc/sys").join(key);
        let now = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if now.trim() != value {
            owned.changing_sysctl(key, now.trim());
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some((dummy, created)) = netlink.ensure_dummy(DUMMY).await? {
        if created {
            owned.created_link(DUMMY);
        }
        tracing::info!(
            interface = DUMMY,
            created,
            "direct routing: VIPs held on the dummy interface, arp_ignore=1 arp_announce=2"
        );
        return Ok((IfIndex(dummy.index), dummy.name));
    }
    let lo = netlink
        .interfaces()
        .await?
        .into_iter()
        .find(|i| i.name == "lo")
        .ok_or_else(|| anyhow!("no loopback interface"))?;
    tracing::info!(
        interface = "lo",
        "direct routing: no dummy interfaces in this kernel, VIPs held on the loopback with arp_ignore=1 arp_announce=2"
    );
    Ok((IfIndex(lo.index), lo.name))
}

/// Puts back what direct routing changed on the host, per the record (this daemon's or a
/// killed predecessor's): the dummy interface if cplbd created it and nothing but its own
/// link-local address is left on it (an address someone else put there keeps it), then the
/// ARP sysctls, whose old values are safe again once no VIP is left on a non-ARPing
/// interface. Called on stop, after the node released its addresses, and at start when no
/// direct routing is configured any more.
pub(super) async fn restore(netlink: &Netlink, owned: &mut Owned) {
    if owned.has_link(DUMMY) {
        remove_dummy(netlink, owned).await;
    }
    for (key, value) in owned.changed_sysctls() {
        let path = PathBuf::from("/proc/sys").join(&key);
        match std::fs::write(&path, &value) {
            Ok(()) => {
                tracing::info!(sysctl = %key, value = %value, "put back the value cplbd changed");
                owned.restored_sysctl(&key);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "putting back a sysctl cplbd changed")
            }
        }
    }
}

/// Deletes the dummy interface cplbd created, unless someone else's address is on it.
async fn remove_dummy(netlink: &Netlink, owned: &mut Owned) {
    let dummy = match netlink.link_by_name(DUMMY).await {
        Ok(Some(dummy)) => dummy,
        Ok(None) => return owned.removed_link(DUMMY),
        Err(e) => {
            return tracing::warn!(interface = DUMMY, error = %e, "looking up the interface cplbd created");
        }
    };
    let left = netlink.addresses(dummy.index).await.unwrap_or_default();
    let foreign: Vec<String> = left
        .iter()
        .filter(|a| !a.link_local)
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    if !foreign.is_empty() {
        tracing::warn!(interface = DUMMY, addresses = ?foreign, "leaving the interface cplbd created: it holds addresses cplbd did not put there");
        owned.removed_link(DUMMY);
    } else if let Err(e) = netlink.delete_link(dummy.index).await {
        tracing::warn!(interface = DUMMY, error = %e, "deleting the interface cplbd created");
    } else {
        tracing::info!(interface = DUMMY, "deleted the interface cplbd created");
        owned.removed_link(DUMMY);
    }
}

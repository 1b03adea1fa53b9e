//! The seam's Linux side: carries out the node's commands with rtnetlink, AF_PACKET,
//! nftables and IPVS, and checks that what was set is still there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use cplb_core::lb::{self, DataPlane, NatRules, ServiceSpec, Spread};
use cplb_core::vrrp::{Transmit, VirtualIp};

use super::Kernel;
use super::announce::Announcer;
use super::ipvs::Ipvs;
use super::link::Netlink;
use super::nft::{self, Nft};
use super::vrrp_socket::VrrpSocket;

/// The nftables table cplbd owns (in family ip and ip6). Everything it programs lives
/// there, so setting the rules is replacing that table.
pub const NFT_TABLE: &str = "cplb";

/// A Linux host as cplbd drives it.
#[derive(Debug)]
pub struct LinuxKernel {
    /// rtnetlink.
    pub netlink: Netlink,
    /// nftables, when the kernel has it.
    pub nft: Option<Nft>,
    /// IPVS, when the kernel has it and the configuration has virtual servers.
    pub ipvs: Option<Ipvs>,
    /// Raw VRRP sockets by (interface, IPv4).
    pub sockets: HashMap<(u32, bool), Arc<VrrpSocket>>,
    /// Announcers by interface.
    pub announcers: HashMap<u32, Announcer>,
    /// The VIPs of the configured virtual servers: the IPVS services cplbd manages.
    pub service_vips: Vec<IpAddr>,
}

impl Kernel for LinuxKernel {
    async fn add_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String> {
        self.netlink.add_address(ifindex, vip.addr, vip.prefix_len).await.map_err(|e| e.to_string())
    }

    async fn remove_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String> {
        self.netlink.remove_address(ifindex, vip.addr).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn has_address(&mut self, ifindex: u32, addr: IpAddr) -> Result<bool, String> {
        let addresses = self.netlink.addresses(ifindex).await.map_err(|e| e.to_string())?;
        Ok(addresses.iter().any(|a| a.addr == addr))
    }

    fn announce(&mut self, ifindex: u32, addresses: &[IpAddr]) -> Result<(), String> {
        let announcer = self
            .announcers
            .get_mut(&ifindex)
            .ok_or_else(|| format!("no packet socket on ifindex {ifindex}"))?;
        for addr in addresses {
            announcer.announce(*addr).map_err(|e| format!("announcing {addr}: {e}"))?;
        }
        Ok(())
    }

    fn send(&self, t: &Transmit) -> Result<(), String> {
        let socket = self
            .sockets
            .get(&(t.ifindex.0, t.src.is_ipv4()))
            .ok_or_else(|| format!("no VRRP socket on ifindex {}", t.ifindex.0))?;
        socket.send(t.src, t.dst, &t.payload).map_err(|e| format!("sending to {}: {e}", t.dst))
    }

    fn set_rules(&mut self, rules: &NatRules) -> Result<(), String> {
        // Without nftables there is no table to remove either.
        let Some(nft) = self.nft.as_mut() else {
            return if rules.is_empty() {
                Ok(())
            } else {
                Err("nftables is unavailable in this kernel".into())
            };
        };
        nft.apply(NFT_TABLE, &ruleset(rules)).map_err(|e| e.to_string())
    }

    fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, String> {
        let Some(nft) = self.nft.as_mut() else { return Ok(rules.is_empty()) };
        nft.verify(NFT_TABLE, &ruleset(rules)).map_err(|e| e.to_string())
    }

    fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), String> {
        if self.ipvs.is_none() && services.is_empty() {
            return Ok(());
        }
        let current = self.own_services()?;
        let changes = lb::diff(
            &DataPlane { services: current, ..DataPlane::default() },
            &DataPlane { services: services.to_vec(), ..DataPlane::default() },
        );
        let ipvs = self.ipvs.as_mut().ok_or("IPVS is unavailable in this kernel")?;
        ipvs.apply(&changes).map_err(|e| e.to_string())
    }

    fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, String> {
        Ok(self.own_services()? == services)
    }
}

impl LinuxKernel {
    /// The IPVS services on the VIPs cplbd manages, as the kernel holds them.
    fn own_services(&mut self) -> Result<Vec<ServiceSpec>, String> {
        let ipvs = self.ipvs.as_mut().ok_or("IPVS is unavailable in this kernel")?;
        let vips = &self.service_vips;
        ipvs.services_on(|vip| vips.contains(&vip)).map_err(|e| e.to_string())
    }
}

/// The nftables form of the node's NAT rules.
fn ruleset(rules: &NatRules) -> nft::Ruleset {
    nft::Ruleset {
        redirects: rules
            .redirects
            .iter()
            .map(|r| nft::Redirect { vip: r.vip, to_port: r.to_port })
            .collect(),
        balancers: rules
            .balancers
            .iter()
            .map(|b| nft::Balancer {
                vip: b.vip,
                backends: b.backends.clone(),
                spread: match b.spread {
                    Spread::RoundRobin => nft::Spread::RoundRobin,
                    Spread::SourceHash => nft::Spread::SourceHash,
                },
            })
            .collect(),
    }
}

//! The seam's Linux side: carries out the node's commands with rtnetlink, AF_PACKET,
//! nftables and IPVS, and checks that what was set is still there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use cplb_core::lb::{NatRules, ServiceSpec, Spread};
use cplb_core::vrrp::{Transmit, VirtualIp};

use super::Kernel;
use super::announce::Announcer;
use super::ipvs::Ipvs;
use super::link::{Netlink, Removal};
use super::nft::{self, Nft};
use super::owned::Owned;
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
    pub sockets: HashMap<(u32, bool), VrrpSockets>,
    /// Announcers by interface.
    pub announcers: HashMap<u32, Announcer>,
    /// The last link-layer address the neighbour table gave for each address: a loop guard
    /// keeps a real server's MAC after its entry expires, so the guard does not thin out
    /// (and the table is not rewritten) when a quiet neighbour is forgotten.
    pub macs: BTreeMap<IpAddr, [u8; 6]>,
    /// What cplbd created (addresses), so that it removes only that.
    pub owned: Owned,
    /// Addresses found that cplbd did not add (logged once each).
    pub foreign: BTreeSet<(u32, IpAddr)>,
}

/// The two raw sockets of one interface and family: the kernel sorts what arrives between
/// them (see [`super::vrrp_filter`]).
#[derive(Debug, Clone)]
pub struct VrrpSockets {
    /// What could be an advert of a configured instance; adverts are sent from it.
    pub adverts: Arc<VrrpSocket>,
    /// The rest, read only to count each drop by its reason.
    pub others: Arc<VrrpSocket>,
}

impl Kernel for LinuxKernel {
    async fn add_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String> {
        // One that is there already stays whoever's it was.
        let added = self
            .netlink
            .add_address(ifindex, vip.addr, vip.prefix_len)
            .await
            .map_err(|e| e.to_string())?;
        if added {
            self.owned.added(ifindex, vip.addr);
        }
        Ok(())
    }

    async fn remove_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String> {
        let recorded = self.owned.has_address(ifindex, vip.addr);
        let removal = self
            .netlink
            .remove_address(ifindex, vip.addr, recorded)
            .await
            .map_err(|e| e.to_string())?;
        // Not ours counts as done: the node's wish is about its own addresses.
        if removal == Removal::NotOurs && self.foreign.insert((ifindex, vip.addr)) {
            tracing::warn!(address = %vip.addr, ifindex, "the address is on the interface but cplbd did not add it (another VRRP daemon or an operator did): left alone");
        }
        self.owned.removed(ifindex, vip.addr);
        Ok(())
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
        let socket = &self
            .sockets
            .get(&(t.ifindex.0, t.src.is_ipv4()))
            .ok_or_else(|| format!("no VRRP socket on ifindex {}", t.ifindex.0))?
            .adverts;
        socket.send(t.src, t.dst, &t.payload).map_err(|e| format!("sending to {}: {e}", t.dst))
    }

    async fn set_rules(&mut self, rules: &NatRules) -> Result<(), String> {
        // Without nftables there is no table to remove either.
        if self.nft.is_none() {
            return if rules.is_empty() {
                Ok(())
            } else {
                Err("nftables is unavailable in this kernel".into())
            };
        }
        let ruleset = self.ruleset(rules).await?;
        let nft = self.nft.as_mut().ok_or("nftables is unavailable in this kernel")?;
        nft.apply(NFT_TABLE, &ruleset).map_err(|e| e.to_string())
    }

    async fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, String> {
        if self.nft.is_none() {
            return Ok(rules.is_empty());
        }
        let ruleset = self.ruleset(rules).await?;
        let nft = self.nft.as_mut().ok_or("nftables is unavailable in this kernel")?;
        nft.verify(NFT_TABLE, &ruleset).map_err(|e| e.to_string())
    }

    fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), String> {
        let Some(ipvs) = self.ipvs.as_mut() else {
            return if services.is_empty() {
                Ok(())
            } else {
                Err("IPVS is unavailable in this kernel".into())
            };
        };
        let current = ipvs.listing(services).map_err(|e| e.to_string())?;
        ipvs.reconcile(&current, services).map_err(|e| e.to_string())
    }

    fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, String> {
        let ipvs = self.ipvs.as_mut().ok_or("IPVS is unavailable in this kernel")?;
        let current = ipvs.listing(services).map_err(|e| e.to_string())?;
        Ok(current.strays.is_empty() && current.services == services)
    }
}

impl LinuxKernel {
    /// The nftables form of the node's rules, the loop guards' real servers resolved with
    /// the neighbour table (a real server without an entry yet, this host's own address
    /// among them, has no MAC to leave unmarked).
    async fn ruleset(&mut self, rules: &NatRules) -> Result<nft::Ruleset, String> {
        if !rules.loop_guards.is_empty() {
            let neighbours = self.netlink.neighbours().await.map_err(|e| e.to_string())?;
            self.macs.extend(neighbours);
        }
        Ok(ruleset(rules, &self.macs))
    }
}

/// The nftables form of the node's rules, with the known link-layer addresses.
fn ruleset(rules: &NatRules, macs: &BTreeMap<IpAddr, [u8; 6]>) -> nft::Ruleset {
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
        guards: rules
            .loop_guards
            .iter()
            .map(|g| {
                let mut found: Vec<[u8; 6]> =
                    g.real_servers.iter().filter_map(|ip| macs.get(ip).copied()).collect();
                found.sort_unstable();
                found.dedup();
                nft::Guard {
                    vip: SocketAddr::new(g.service.vip, g.service.port),
                    fwmark: g.fwmark,
                    macs: found,
                }
            })
            .collect(),
    }
}

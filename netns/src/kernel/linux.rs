//! The seam's Linux side: carries out the node's commands with rtnetlink, AF_PACKET,
//! nftables and IPVS, and checks that what was set is still there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use cplb_core::lb::{NatRules, ServiceSpec, Spread};
use cplb_core::vrrp::{IfIndex, Transmit, VirtualIp};

use super::announce::Announcer;
use super::ipvs::Ipvs;
use super::link::{Netlink, Removal};
use super::nft::{self, Nft};
use super::owned::Owned;
use super::vrrp_socket::VrrpSocket;
use super::{Facility, Kernel, KernelError, Outgoing};

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
    pub sockets: HashMap<(IfIndex, bool), VrrpSockets>,
    /// Announcers by interface.
    pub announcers: HashMap<IfIndex, Announcer>,
    /// The last link-layer address the neighbour table gave for each address: a loop guard
    /// keeps a real server's MAC after its entry expires, so the guard does not thin out
    /// (and the table is not rewritten) when a quiet neighbour is forgotten.
    pub macs: BTreeMap<IpAddr, [u8; 6]>,
    /// What cplbd created (addresses), so that it removes only that.
    pub owned: Owned,
    /// Addresses found that cplbd did not add (logged once each).
    pub foreign: BTreeSet<(IfIndex, IpAddr)>,
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
    async fn add_address(&mut self, ifindex: IfIndex, vip: VirtualIp) -> Result<(), KernelError> {
        // One that is there already stays whoever's it was.
        let added = self.netlink.add_address(ifindex.0, vip.addr, vip.prefix_len).await?;
        if added {
            self.owned.added(ifindex.0, vip.addr);
        }
        Ok(())
    }

    async fn remove_address(
        &mut self,
        ifindex: IfIndex,
        vip: VirtualIp,
    ) -> Result<(), KernelError> {
        let recorded = self.owned.has_address(ifindex.0, vip.addr);
        let removal = self.netlink.remove_address(ifindex.0, vip.addr, recorded).await?;
        // Not ours counts as done: the node's wish is about its own addresses.
        if removal == Removal::NotOurs && self.foreign.insert((ifindex, vip.addr)) {
            tracing::warn!(address = %vip.addr, %ifindex, "the address is on the interface but cplbd did not add it (another VRRP daemon or an operator did): left alone");
        }
        self.owned.removed(ifindex.0, vip.addr);
        Ok(())
    }

    async fn has_address(&mut self, ifindex: IfIndex, addr: IpAddr) -> Result<bool, KernelError> {
        let addresses = self.netlink.addresses(ifindex.0).await?;
        Ok(addresses.iter().any(|a| a.addr == addr))
    }

    fn announce(&mut self, ifindex: IfIndex, addresses: &[IpAddr]) -> Result<(), KernelError> {
        let what = Outgoing::Announcement;
        let announcer =
            self.announcers.get_mut(&ifindex).ok_or(KernelError::NoSocket { what, ifindex })?;
        for &addr in addresses {
            announcer.announce(addr).map_err(|error| KernelError::Send {
                what,
                ifindex,
                addr,
                error,
            })?;
        }
        Ok(())
    }

    fn send(&self, t: &Transmit) -> Result<(), KernelError> {
        let (what, ifindex) = (Outgoing::Advertisement, t.ifindex);
        let socket = &self
            .sockets
            .get(&(ifindex, t.src.is_ipv4()))
            .ok_or(KernelError::NoSocket { what, ifindex })?
            .adverts;
        socket.send(t.src, t.dst, &t.payload).map_err(|error| KernelError::Send {
            what,
            ifindex,
            addr: t.dst,
            error,
        })
    }

    async fn set_rules(&mut self, rules: &NatRules) -> Result<(), KernelError> {
        // Without nftables there is no table to remove either.
        if self.nft.is_none() {
            return if rules.is_empty() {
                Ok(())
            } else {
                Err(KernelError::Unavailable(Facility::Nftables))
            };
        }
        let ruleset = self.ruleset(rules).await?;
        let nft = self.nft.as_mut().ok_or(KernelError::Unavailable(Facility::Nftables))?;
        Ok(nft.apply(NFT_TABLE, &ruleset)?)
    }

    async fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, KernelError> {
        if self.nft.is_none() {
            return Ok(rules.is_empty());
        }
        let ruleset = self.ruleset(rules).await?;
        let nft = self.nft.as_mut().ok_or(KernelError::Unavailable(Facility::Nftables))?;
        Ok(nft.verify(NFT_TABLE, &ruleset)?)
    }

    async fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), KernelError> {
        let Some(ipvs) = self.ipvs.as_mut() else {
            return if services.is_empty() {
                Ok(())
            } else {
                Err(KernelError::Unavailable(Facility::Ipvs))
            };
        };
        let current = ipvs.listing(services).await?;
        Ok(ipvs.reconcile(&current, services).await?)
    }

    async fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, KernelError> {
        let ipvs = self.ipvs.as_mut().ok_or(KernelError::Unavailable(Facility::Ipvs))?;
        let current = ipvs.listing(services).await?;
        Ok(current.strays.is_empty() && current.services == services)
    }
}

impl LinuxKernel {
    /// The nftables form of the node's rules, the loop guards' real servers resolved with
    /// the neighbour table (a real server without an entry yet, this host's own address
    /// among them, has no MAC to leave unmarked).
    async fn ruleset(&mut self, rules: &NatRules) -> Result<nft::Ruleset, KernelError> {
        if !rules.loop_guards.is_empty() {
            let neighbours = self.netlink.neighbours().await?;
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

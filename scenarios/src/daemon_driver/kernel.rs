//! The kernel seam under turmoil: what a controller's kernel holds is a [`HostKernel`] in
//! the shared [`Fabric`], which a power-off empties and a daemon crash leaves as it is; it
//! can be told to refuse every command for a while. VRRP goes between hosts as UDP
//! datagrams carrying the bytes the raw socket carries: the whole IPv4 packet the core
//! encoded (TTL and source inside it), or for IPv6 the header fields the raw socket hands
//! over beside the message.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cplb_core::lb::{NatRules, ServiceSpec, VirtualService};
use cplb_core::vrrp::{self, IfIndex, IpHeader, IpParams, Transmit, VirtualIp};
use cplb_netns::kernel::vrrp_socket::{Datagram, Packet, Received};
use cplb_netns::kernel::{Kernel, KernelError, Outgoing};

use super::fabric::{ETH0, HostKernel, Report, SharedFabric, lock, sim_now};

/// The UDP port VRRP travels on between simulated hosts.
pub const VRRP_PORT: u16 = 112;

/// One controller's kernel, as its daemon's driver sees it.
#[derive(Debug)]
pub struct SimKernel {
    /// This host's address.
    pub me: IpAddr,
    /// The segment.
    pub fabric: SharedFabric,
    /// The socket VRRP leaves from.
    pub socket: Arc<turmoil::net::UdpSocket>,
}

impl SimKernel {
    fn with<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut HostKernel) -> T,
    ) -> Result<T, KernelError> {
        let mut fabric = lock(&self.fabric);
        let kernel = fabric.kernels.entry(self.me).or_default();
        if let Some(until) = kernel.refuse_until {
            if sim_now() < until {
                // EPERM, as a kernel that will not take the call says.
                let error = std::io::Error::from_raw_os_error(1);
                return Err(KernelError::Refused { what, error });
            }
            kernel.refuse_until = None;
        }
        Ok(f(kernel))
    }

    fn peers(&self) -> Vec<IpAddr> {
        lock(&self.fabric).kernels.keys().copied().filter(|h| *h != self.me).collect()
    }

    fn link_up(&self) -> bool {
        lock(&self.fabric).kernels.get(&self.me).is_some_and(|k| k.link_up)
    }
}

/// ENETDOWN, what sending on a link that is down gives.
fn network_down() -> std::io::Error {
    std::io::Error::from_raw_os_error(100)
}

impl Kernel for SimKernel {
    async fn add_address(&mut self, ifindex: IfIndex, vip: VirtualIp) -> Result<(), KernelError> {
        let added = self.with("adding an address", |k| {
            let new = !k.addresses.iter().any(|(i, a, _)| *i == ifindex && *a == vip.addr);
            if new {
                k.addresses.insert((ifindex, vip.addr, vip.prefix_len));
            }
            new
        })?;
        if added && ifindex == ETH0 {
            let (host, vip) = (self.me, vip.addr);
            lock(&self.fabric).reports.push(Report::Vip {
                at: sim_now(),
                host,
                vip,
                present: true,
            });
        }
        Ok(())
    }

    async fn remove_address(
        &mut self,
        ifindex: IfIndex,
        vip: VirtualIp,
    ) -> Result<(), KernelError> {
        let removed = self.with("removing an address", |k| {
            let before = k.addresses.len();
            k.addresses.retain(|(i, a, _)| !(*i == ifindex && *a == vip.addr));
            k.addresses.len() != before
        })?;
        if removed && ifindex == ETH0 {
            let (host, vip) = (self.me, vip.addr);
            lock(&self.fabric).reports.push(Report::Vip {
                at: sim_now(),
                host,
                vip,
                present: false,
            });
        }
        Ok(())
    }

    async fn has_address(&mut self, ifindex: IfIndex, addr: IpAddr) -> Result<bool, KernelError> {
        Ok(lock(&self.fabric)
            .kernels
            .get(&self.me)
            .is_some_and(|k| k.addresses.iter().any(|(i, a, _)| *i == ifindex && *a == addr)))
    }

    fn announce(&mut self, ifindex: IfIndex, addresses: &[IpAddr]) -> Result<(), KernelError> {
        let mut fabric = lock(&self.fabric);
        if !fabric.kernels.get(&self.me).is_some_and(|k| k.link_up) {
            let addr = addresses.first().copied().unwrap_or(self.me);
            let what = Outgoing::Announcement;
            return Err(KernelError::Send { what, ifindex, addr, error: network_down() });
        }
        for a in addresses {
            fabric.announced.insert(*a, self.me);
        }
        Ok(())
    }

    fn send(&self, t: &Transmit) -> Result<(), KernelError> {
        let (what, ifindex, addr) = (Outgoing::Advertisement, t.ifindex, t.dst);
        if !self.link_up() {
            return Err(KernelError::Send { what, ifindex, addr, error: network_down() });
        }
        let datagram = encode(t).map_err(|e| KernelError::Send {
            what,
            ifindex,
            addr,
            error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let to: Vec<IpAddr> = self
            .peers()
            .into_iter()
            .filter(|p| {
                t.dst.is_multicast() || *p == t.dst || cplb_sim::link_local(*p) == Some(t.dst)
            })
            .collect();
        for peer in to {
            // A full queue at the receiver is a lost advert, as on a LAN.
            let _ = self.socket.try_send_to(&datagram, SocketAddr::new(peer, VRRP_PORT));
        }
        Ok(())
    }

    async fn set_rules(&mut self, rules: &NatRules) -> Result<(), KernelError> {
        self.with("setting the NAT table", |k| k.rules = (!rules.is_empty()).then(|| rules.clone()))
    }

    async fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, KernelError> {
        self.with("reading the NAT table", |k| {
            k.rules.as_ref() == Some(rules) || (rules.is_empty() && k.rules.is_none())
        })
    }

    async fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), KernelError> {
        self.with("setting the virtual services", |k| k.services = services.to_vec())?;
        let mut fabric = lock(&self.fabric);
        let me = self.me;
        fabric.ipvs.retain(|(h, key), _| *h != me || services.iter().any(|s| s.key == *key));
        for s in services {
            let persistence =
                Some(Duration::from_secs(u64::from(s.persistence_secs))).filter(|d| !d.is_zero());
            let vs = fabric
                .ipvs
                .entry((me, s.key))
                .or_insert_with(|| VirtualService::new(s.key, s.algo, s.forwarding, persistence));
            vs.set_real_servers(&s.real_servers);
        }
        fabric.reports.push(Report::Services { host: me, services: services.to_vec() });
        Ok(())
    }

    async fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, KernelError> {
        self.with("reading the virtual services", |k| k.services == services)
    }
}

/// The datagram for one advert: tag 4 and the IPv4 packet, or tag 6, source, destination,
/// hop limit and the message.
fn encode(t: &Transmit) -> Result<Vec<u8>, String> {
    match (t.src, t.dst) {
        (IpAddr::V4(_), _) => {
            let packet = vrrp::wrap_message(&t.payload, &IpParams::new(t.src, t.dst))
                .map_err(|e| e.to_string())?;
            Ok([&[4u8][..], &packet].concat())
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut d = vec![6u8];
            d.extend_from_slice(&src.octets());
            d.extend_from_slice(&dst.octets());
            d.push(255);
            d.extend_from_slice(&t.payload);
            Ok(d)
        }
        _ => Err(format!("{} to {}: mixed families", t.src, t.dst)),
    }
}

/// What the raw socket would have handed the daemon for a datagram.
pub fn decode(d: &[u8]) -> Option<Datagram> {
    let received = match d.split_first()? {
        (4, packet) => Received::Ipv4(packet.to_vec()),
        (6, rest) if rest.len() >= 33 => {
            let src: [u8; 16] = rest[..16].try_into().ok()?;
            let dst: [u8; 16] = rest[16..32].try_into().ok()?;
            Received::Ipv6(Packet {
                header: IpHeader { src: IpAddr::from(src), dst: IpAddr::from(dst), ttl: rest[32] },
                payload: rest[33..].to_vec(),
            })
        }
        _ => return None,
    };
    Some(Datagram { received, overflows: None })
}

//! The kernel seam under turmoil: each controller's kernel is a record of what it holds
//! (addresses, the NAT table, the virtual services), which survives its daemon's crash and
//! is lost when the host is powered off; it can be told to refuse every command for a while.
//! VRRP goes between hosts as UDP datagrams carrying the bytes the raw socket carries: the
//! whole IPv4 packet the core encoded (TTL and source inside it), or for IPv6 the header
//! fields the raw socket hands over beside the message.
//!
//! Who answers for a VIP is the [`Fabric`]'s thin model of ARP: the host that announced it
//! last, while it holds it (a client's ARP cache points there); else any host holding it (an
//! ARP request finds it); else nobody.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use cplb_core::lb::{NatRules, ServiceKey, ServiceSpec, VirtualService};
use cplb_core::time::Instant;
use cplb_core::vrrp::{self, IpHeader, IpParams, Transmit, VirtualIp};
use tokio::sync::mpsc;

use cplb_netns::daemon::Input;
use cplb_netns::kernel::Kernel;
use cplb_netns::kernel::vrrp_socket::{Datagram, Packet, Received};

/// The UDP port VRRP travels on between simulated hosts.
pub const VRRP_PORT: u16 = 112;
/// The index of every simulated controller's one interface, `eth0`.
pub const ETH0: u32 = 2;

/// What one controller's kernel holds.
#[derive(Debug, Clone, Default)]
pub struct HostKernel {
    /// (ifindex, address, prefix length).
    pub addresses: BTreeSet<(u32, IpAddr, u8)>,
    /// The NAT table (`None`: no table).
    pub rules: Option<NatRules>,
    /// The virtual services.
    pub services: Vec<ServiceSpec>,
    /// Every command is refused until then (sim time since the start).
    pub refuse_until: Option<Duration>,
    /// The link is up.
    pub link_up: bool,
}

/// The segment: every controller's kernel and who announced each VIP.
#[derive(Debug, Default)]
pub struct Fabric {
    /// Controllers' kernels by address.
    pub kernels: BTreeMap<IpAddr, HostKernel>,
    /// The host whose announcement of a VIP came last.
    pub announced: BTreeMap<IpAddr, IpAddr>,
    /// Where the kernel notifications of each running daemon go.
    pub notify: BTreeMap<IpAddr, mpsc::Sender<Input>>,
    /// What each running daemon's node wants of the data plane (views and samples).
    pub dataplane: BTreeMap<IpAddr, cplb_core::lb::DataPlane>,
    /// The IPVS scheduler state of each host's services (persistence templates, turns).
    pub ipvs: BTreeMap<(IpAddr, ServiceKey), VirtualService>,
    /// Connections that went round between directors [`MAX_HOPS`] times.
    pub loops: u64,
    /// The service the last forwarding loop happened on.
    pub last_loop: Option<ServiceKey>,
}

/// How many times a connection is forwarded between directors before it counts as a loop
/// (the engine's bound).
pub const MAX_HOPS: usize = 8;

impl Fabric {
    /// Where a client's connection to `vip` lands: the host answering for the VIP, and
    /// there its IPVS service's choice (direct routing: the frame goes to the real server,
    /// whose own service, if it has one, schedules it again unless its loop guard marks
    /// frames from real servers), or the NAT table's redirect to a local port, or the port
    /// itself. Returns the answering host and the address the connection lands on; `None`
    /// when nobody answers, no real server is left, or the frame loops (counted).
    pub fn route(
        &mut self,
        vip: SocketAddr,
        client: IpAddr,
        now: Duration,
    ) -> Option<(IpAddr, SocketAddr)> {
        let holds = |k: &HostKernel| {
            k.link_up && k.addresses.iter().any(|(i, a, _)| *i == ETH0 && *a == vip.ip())
        };
        let host = match self.announced.get(&vip.ip()) {
            Some(h) if self.kernels.get(h).is_some_and(holds) => *h,
            _ => *self.kernels.iter().find(|(_, k)| holds(k))?.0,
        };
        let key = ServiceKey { vip: vip.ip(), port: vip.port() };
        let mut at = host;
        for _ in 0..MAX_HOPS {
            let kernel = self.kernels.get(&at)?;
            if !kernel.services.iter().any(|s| s.key == key) {
                if at != host {
                    // A real server without the service: the VIP is local, its API server
                    // answers.
                    return Some((host, SocketAddr::new(at, vip.port())));
                }
                let port = kernel
                    .rules
                    .as_ref()
                    .and_then(|r| r.redirects.iter().find(|r| r.vip == vip))
                    .map_or(vip.port(), |r| r.to_port);
                return Some((host, SocketAddr::new(host, port)));
            }
            let to = self.ipvs.get_mut(&(at, key))?.schedule(Instant::ZERO + now, client)?;
            let guarded = |k: &HostKernel| {
                k.rules.as_ref().is_some_and(|r| {
                    r.loop_guards.iter().any(|g| g.service == key && g.real_servers.contains(&at))
                })
            };
            match self.kernels.get(&to.ip()) {
                Some(next)
                    if to.ip() != at
                        && next.link_up
                        && next.services.iter().any(|s| s.key == key)
                        && !guarded(next) =>
                {
                    at = to.ip();
                }
                _ => return Some((host, to)),
            }
        }
        self.loops += 1;
        self.last_loop = Some(key);
        None
    }
}

/// The shared segment.
pub type SharedFabric = Arc<Mutex<Fabric>>;

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
    fn with<T>(&self, f: impl FnOnce(&mut HostKernel) -> T) -> Result<T, String> {
        let mut fabric = self.fabric.lock().map_err(|_| "the fabric is poisoned".to_owned())?;
        let kernel = fabric.kernels.entry(self.me).or_default();
        if let Some(until) = kernel.refuse_until {
            if turmoil::sim_elapsed().unwrap_or_default() < until {
                return Err("Operation not permitted (os error 1), simulated refusal".to_owned());
            }
            kernel.refuse_until = None;
        }
        Ok(f(kernel))
    }

    fn peers(&self) -> Vec<IpAddr> {
        let fabric = self.fabric.lock().expect("fabric");
        fabric.kernels.keys().copied().filter(|h| *h != self.me).collect()
    }
}

impl Kernel for SimKernel {
    async fn add_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String> {
        self.with(|k| {
            if !k.addresses.iter().any(|(i, a, _)| *i == ifindex && *a == vip.addr) {
                k.addresses.insert((ifindex, vip.addr, vip.prefix_len));
            }
        })
    }

    async fn remove_address(&mut self, ifindex: u32, vip: VirtualIp) -> Result<(), String> {
        self.with(|k| k.addresses.retain(|(i, a, _)| !(*i == ifindex && *a == vip.addr)))
    }

    async fn has_address(&mut self, ifindex: u32, addr: IpAddr) -> Result<bool, String> {
        let fabric = self.fabric.lock().map_err(|_| "poisoned".to_owned())?;
        Ok(fabric
            .kernels
            .get(&self.me)
            .is_some_and(|k| k.addresses.iter().any(|(i, a, _)| *i == ifindex && *a == addr)))
    }

    fn announce(&mut self, _ifindex: u32, addresses: &[IpAddr]) -> Result<(), String> {
        let mut fabric = self.fabric.lock().map_err(|_| "poisoned".to_owned())?;
        if !fabric.kernels.get(&self.me).is_some_and(|k| k.link_up) {
            return Err("Network is down (os error 100)".to_owned());
        }
        for a in addresses {
            fabric.announced.insert(*a, self.me);
        }
        Ok(())
    }

    fn send(&self, t: &Transmit) -> Result<(), String> {
        let link_up =
            self.fabric.lock().expect("fabric").kernels.get(&self.me).is_some_and(|k| k.link_up);
        if !link_up {
            return Err("Network is down (os error 100)".to_owned());
        }
        let datagram = encode(t)?;
        let to: Vec<IpAddr> = self
            .peers()
            .into_iter()
            .filter(|p| t.dst.is_multicast() || *p == t.dst || link_local_of(*p) == Some(t.dst))
            .collect();
        for peer in to {
            // A full queue at the receiver is a lost advert, as on a LAN.
            let _ = self.socket.try_send_to(&datagram, SocketAddr::new(peer, VRRP_PORT));
        }
        Ok(())
    }

    async fn set_rules(&mut self, rules: &NatRules) -> Result<(), String> {
        self.with(|k| k.rules = (!rules.is_empty()).then(|| rules.clone()))
    }

    async fn rules_intact(&mut self, rules: &NatRules) -> Result<bool, String> {
        self.with(|k| k.rules.as_ref() == Some(rules) || (rules.is_empty() && k.rules.is_none()))
    }

    fn set_services(&mut self, services: &[ServiceSpec]) -> Result<(), String> {
        self.with(|k| k.services = services.to_vec())?;
        let mut fabric = self.fabric.lock().map_err(|_| "poisoned".to_owned())?;
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
        Ok(())
    }

    fn services_intact(&mut self, services: &[ServiceSpec]) -> Result<bool, String> {
        self.with(|k| k.services == services)
    }
}

/// The link-local address a simulated IPv6 host sends multicast VRRP from.
pub fn link_local_of(addr: IpAddr) -> Option<IpAddr> {
    let IpAddr::V6(a) = addr else { return None };
    let s = a.segments();
    Some(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, s[4], s[5], s[6], s[7])))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use cplb_core::config::{LbAlgo, LbKind};
    use cplb_core::lb::{LoopGuard, RealServer};

    const VIP: &str = "10.200.0.200";

    /// Two directors whose (stale) services each send everything to the other: the crashed
    /// IPVS master of k0s #5178 and the new one.
    fn crossed(guard: bool) -> Fabric {
        let vip: IpAddr = VIP.parse().unwrap();
        let key = ServiceKey { vip, port: 6443 };
        let a: IpAddr = "10.200.0.10".parse().unwrap();
        let b: IpAddr = "10.200.0.11".parse().unwrap();
        let mut f = Fabric::default();
        for (me, other) in [(a, b), (b, a)] {
            let real_servers = vec![RealServer { addr: SocketAddr::new(other, 6443), weight: 1 }];
            let spec = ServiceSpec {
                key,
                fwmark: 0,
                algo: LbAlgo::Rr,
                forwarding: LbKind::Dr,
                persistence_secs: 0,
                real_servers: real_servers.clone(),
            };
            let rules = guard.then(|| NatRules {
                loop_guards: vec![LoopGuard { service: key, fwmark: 1, real_servers: vec![a, b] }],
                ..NatRules::default()
            });
            let mut addresses = BTreeSet::from([(ETH0, me, 24)]);
            if me == a {
                addresses.insert((ETH0, vip, 24));
            }
            f.kernels.insert(
                me,
                HostKernel {
                    addresses,
                    rules,
                    services: vec![spec],
                    link_up: true,
                    ..Default::default()
                },
            );
            let mut vs = VirtualService::new(key, LbAlgo::Rr, LbKind::Dr, None);
            vs.set_real_servers(&real_servers);
            f.ipvs.insert((me, key), vs);
        }
        f
    }

    #[test]
    fn directors_forwarding_to_each_other_loop_without_the_guard() {
        let client = "10.200.0.102".parse().unwrap();
        let vip = SocketAddr::new(VIP.parse().unwrap(), 6443);
        let mut bare = crossed(false);
        assert_eq!(bare.route(vip, client, Duration::ZERO), None);
        assert_eq!(bare.loops, 1);
        assert_eq!(bare.last_loop.map(|k| k.port), Some(6443));

        let mut guarded = crossed(true);
        let landed = guarded.route(vip, client, Duration::ZERO);
        let b: IpAddr = "10.200.0.11".parse().unwrap();
        assert_eq!(landed, Some(("10.200.0.10".parse().unwrap(), SocketAddr::new(b, 6443))));
        assert_eq!(guarded.loops, 0);
    }
}

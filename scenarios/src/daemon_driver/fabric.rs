//! The segment the turmoil hosts share beside turmoil's network: each controller's kernel
//! (what it holds survives its daemon's crash and is lost when the host is powered off),
//! who announced each VIP last, and what the hosts report to the runner.
//!
//! Who answers for a VIP is a thin model of ARP: the host that announced it last, while it
//! holds it (a client's ARP cache points there); else any host holding it (an ARP request
//! finds it); else nobody.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cplb_core::lb::{NatRules, ServiceKey, ServiceSpec, VirtualService};
use cplb_core::node::Event;
use cplb_core::time::Instant;
use cplb_core::vrrp::IfIndex;
use cplb_netns::daemon::Input;
use tokio::sync::mpsc;

/// The index of every simulated controller's one interface, `eth0`.
pub const ETH0: IfIndex = IfIndex(2);
/// The index of the simulated `dummyvip0`, where direct routing's VIPs go.
pub const DUMMY: IfIndex = IfIndex(3);
/// How many times a connection is forwarded between directors before it counts as a loop
/// (the engine's bound).
pub const MAX_HOPS: usize = 8;

/// What one controller's kernel holds.
#[derive(Debug, Clone, Default)]
pub struct HostKernel {
    /// (ifindex, address, prefix length).
    pub addresses: BTreeSet<(IfIndex, IpAddr, u8)>,
    /// The NAT table (`None`: no table).
    pub rules: Option<NatRules>,
    /// The virtual services.
    pub services: Vec<ServiceSpec>,
    /// Every command is refused until then.
    pub refuse_until: Option<Instant>,
    /// The link is up.
    pub link_up: bool,
}

/// What a host tells the runner.
#[derive(Debug, Clone)]
pub enum Report {
    /// An event of a daemon's node; for a state change, its instance's first VIP.
    Event {
        /// When.
        at: Instant,
        /// The host.
        host: IpAddr,
        /// The event.
        event: Event,
        /// The first VIP of the instance it is about.
        vip: Option<IpAddr>,
    },
    /// Whether a daemon's node has kernel objects under refusal.
    Refusing {
        /// The host.
        host: IpAddr,
        /// Whether it has.
        refusing: bool,
    },
    /// A daemon started.
    Started {
        /// The host.
        host: IpAddr,
    },
    /// A daemon stopped (after SIGTERM).
    Exited {
        /// When.
        at: Instant,
        /// The host.
        host: IpAddr,
    },
    /// An address came or went on a host's eth0.
    Vip {
        /// When.
        at: Instant,
        /// The host.
        host: IpAddr,
        /// The address.
        vip: IpAddr,
        /// Whether it is there now.
        present: bool,
    },
    /// A host's kernel took a new table of virtual services.
    Services {
        /// The host.
        host: IpAddr,
        /// What the table holds now.
        services: Vec<ServiceSpec>,
    },
    /// A client's connection attempt, made at `at`: answered through the host that
    /// answered for the VIP, or failed and why.
    Attempt {
        /// When it began.
        at: Instant,
        /// The traffic source.
        source: usize,
        /// The client host.
        from: IpAddr,
        /// The VIP.
        vip: IpAddr,
        /// Who answered for the VIP, or why it failed.
        result: Result<IpAddr, String>,
    },
    /// A connection went round between directors.
    Loop {
        /// When.
        at: Instant,
        /// The service.
        service: SocketAddr,
    },
}

/// The segment.
#[derive(Debug, Default)]
pub struct Fabric {
    /// Controllers' kernels by address.
    pub kernels: BTreeMap<IpAddr, HostKernel>,
    /// The host whose announcement of a VIP came last.
    pub announced: BTreeMap<IpAddr, IpAddr>,
    /// Where the kernel notifications of each running daemon go.
    pub notify: BTreeMap<IpAddr, mpsc::Sender<Input>>,
    /// The IPVS scheduler state of each host's services (persistence templates, turns).
    pub ipvs: BTreeMap<(IpAddr, ServiceKey), VirtualService>,
    /// What the hosts reported since the runner last looked.
    pub reports: Vec<Report>,
    /// Per host, the incarnation of its daemon whose reports count: a start takes the
    /// next one, and a SIGKILL moves past the killed daemon's at once, so that what it
    /// reports before its host carries the kill out is not taken for the host's state.
    pub incarnations: BTreeMap<IpAddr, u64>,
}

/// The shared segment.
pub type SharedFabric = Arc<Mutex<Fabric>>;

/// The segment, also after a host's task panicked while holding it.
pub fn lock(fabric: &Mutex<Fabric>) -> MutexGuard<'_, Fabric> {
    fabric.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The scenario's time now (inside a turmoil host).
pub fn sim_now() -> Instant {
    super::scenario_time(turmoil::sim_elapsed().unwrap_or_default())
}

impl Fabric {
    /// A new incarnation of `host`'s daemon: the one that reports from now on.
    pub fn next_incarnation(&mut self, host: IpAddr) -> u64 {
        let n = self.incarnations.entry(host).or_default();
        *n += 1;
        *n
    }

    /// Reports what incarnation `incarnation` of `host`'s daemon saw, if it is the
    /// current one.
    pub fn report_from(&mut self, host: IpAddr, incarnation: u64, report: Report) {
        if self.incarnations.get(&host) == Some(&incarnation) {
            self.reports.push(report);
        }
    }

    /// Where a client's connection to `vip` lands: the host answering for the VIP, and
    /// there its IPVS service's choice (direct routing: the frame goes to the real server,
    /// whose own service, if it has one, schedules it again unless its loop guard marks
    /// frames from real servers), or the NAT table's redirect to a local port, or the port
    /// itself. Returns the answering host and the address the connection lands on; `None`
    /// when nobody answers, no real server is left, or the frame loops (reported).
    pub fn route(
        &mut self,
        vip: SocketAddr,
        client: IpAddr,
        now: Instant,
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
            let to = self.ipvs.get_mut(&(at, key))?.schedule(now, client)?;
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
        self.reports.push(Report::Loop { at: now, service: vip });
        None
    }
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
        assert_eq!(bare.route(vip, client, Instant::ZERO), None);
        let loops: Vec<_> =
            bare.reports.iter().filter(|r| matches!(r, Report::Loop { .. })).collect();
        assert!(
            matches!(loops[..], [Report::Loop { service, .. }] if *service == vip),
            "{loops:?}"
        );

        let mut guarded = crossed(true);
        let landed = guarded.route(vip, client, Instant::ZERO);
        let b: IpAddr = "10.200.0.11".parse().unwrap();
        assert_eq!(landed, Some(("10.200.0.10".parse().unwrap(), SocketAddr::new(b, 6443))));
        assert!(guarded.reports.is_empty());
    }
}

//! API clients in the engine: connections to the VIP resolved through the client's ARP
//! cache and the switch, then the data plane of the host that answers (IPVS direct routing
//! with the loop guard, the userspace proxy's redirect, or the API server itself).

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use cplb_core::lb::ServiceKey;

use super::{Ev, Lan};
use crate::observe::Observer;
use crate::world::{ApiServer, World};

/// A host re-resolves an ARP entry not confirmed for this long (Linux base_reachable_time).
const ARP_REACHABLE: Duration = Duration::from_secs(30);
/// Hops a direct-routed packet may take before we call it a forwarding loop.
const MAX_HOPS: usize = 8;

impl Lan {
    /// Schedules every traffic source's first attempt, spread over one period.
    pub(super) fn start_traffic(&mut self) {
        let sources = self.spec.traffic.len() as f64;
        let starts: Vec<(f64, Duration)> =
            self.spec.traffic.iter().map(|t| (t.rate, t.start)).collect();
        for (i, (rate, start)) in starts.into_iter().enumerate() {
            if rate > 0.0 {
                let offset = (i as f64 + 1.0) / (rate * (sources + 1.0));
                let at = cplb_core::time::Instant::ZERO + start + Duration::from_secs_f64(offset);
                self.push(at, Ev::Connect { traffic: i });
            }
        }
    }

    /// One attempt of traffic source `traffic`, and the next one scheduled.
    pub(super) fn connect(&mut self, traffic: usize, world: &World, obs: &mut Observer) {
        let spec = self.spec.traffic[traffic].clone();
        let period = Duration::from_secs_f64(1.0 / spec.rate);
        self.push(self.now + period, Ev::Connect { traffic });
        let from = spec.from;
        if !world.network().powered(from) {
            return;
        }
        let Some(vip) = spec.vip.or_else(|| self.first_vip()) else {
            return;
        };
        let result = self.try_connection(from, vip, world, obs);
        if result.is_ok() {
            let now = self.now;
            self.hosts[from].arp.entry(vip).and_modify(|e| e.1 = now);
        }
        obs.attempt(self.now, traffic, from, vip, result.map_err(str::to_owned));
    }

    fn first_vip(&self) -> Option<IpAddr> {
        let k = self.spec.config.enabled_keepalived()?;
        k.vrrp_instances.first()?.virtual_ips.first().map(|c| c.addr)
    }

    /// A TCP connection from host `from` to `vip`:port; returns the host that took it.
    fn try_connection(
        &mut self,
        from: usize,
        vip: IpAddr,
        world: &World,
        obs: &mut Observer,
    ) -> Result<usize, &'static str> {
        let mac = self.resolve(from, vip, world)?;
        let network = world.network();
        // The switch forwards to the port it learned the MAC on, or floods (every port,
        // where only the owner of the MAC takes the frame) when it has not seen it.
        let learned = self.switch.get(&mac).copied().filter(|&p| self.hosts[p].mac == mac);
        let Some(t) = learned.or_else(|| self.hosts.iter().position(|h| h.mac == mac)) else {
            return Err("unknown MAC");
        };
        if !network.both_ways(from, t) {
            return Err("the ARP entry points at an unreachable host");
        }
        if !self.hosts[t].accepts(vip) {
            return Err("the ARP entry points at a host without the VIP");
        }
        let port = self.spec.config.spec.api.port;
        let key = ServiceKey { vip, port };
        let client = self.hosts[from].spec.address;
        let h = &self.hosts[t];
        if h.ipvs.contains_key(&key) {
            return self.direct_route(from, t, key, client, world, obs).map(|_| t);
        }
        if h.dataplane.redirects.contains(&SocketAddr::new(vip, port)) {
            return self.proxy(t, client, world).map(|_| t);
        }
        if world.api_server(t) == ApiServer::Up {
            Ok(t)
        } else {
            Err("the VIP holder's API server refuses")
        }
    }

    /// The MAC `from` sends to for `vip`: its ARP entry while confirmed recently; else a
    /// stale entry probed (unicast) first, then a broadcast request, answered by whoever
    /// holds the VIP (several answers race; the last one wins).
    fn resolve(&mut self, from: usize, vip: IpAddr, world: &World) -> Result<u64, &'static str> {
        let network = world.network();
        let entry = self.hosts[from].arp.get(&vip).copied();
        if let Some((mac, confirmed)) = entry
            && self.now.saturating_duration_since(confirmed) < ARP_REACHABLE
        {
            return Ok(mac);
        }
        let confirmed = entry.and_then(|(mac, _)| {
            let t = self.hosts.iter().position(|h| h.mac == mac)?;
            (network.both_ways(from, t) && self.hosts[t].vips_on_eth0.contains_key(&vip))
                .then_some(mac)
        });
        let mac = match confirmed {
            Some(mac) => mac,
            None => {
                let holders: Vec<usize> = (0..self.hosts.len())
                    .filter(|&t| {
                        self.hosts[t].vips_on_eth0.contains_key(&vip) && network.both_ways(from, t)
                    })
                    .collect();
                if holders.is_empty() {
                    self.hosts[from].arp.remove(&vip);
                    return Err("no ARP answer for the VIP");
                }
                let pick = (self.random() * holders.len() as f64) as usize;
                self.hosts[holders[pick.min(holders.len() - 1)]].mac
            }
        };
        self.hosts[from].arp.insert(vip, (mac, self.now));
        Ok(mac)
    }

    /// IPVS direct routing from `at`: schedule, forward to the real server's MAC; a host
    /// that also has the service schedules again (the k0s #5178 loop) unless its loop guard
    /// marks frames from real servers.
    fn direct_route(
        &mut self,
        client_host: usize,
        mut at: usize,
        key: ServiceKey,
        client: IpAddr,
        world: &World,
        obs: &mut Observer,
    ) -> Result<(), &'static str> {
        for _ in 0..MAX_HOPS {
            let now = self.now;
            let Some(vs) = self.hosts[at].ipvs.get_mut(&key) else {
                // No service here: the VIP is local (dummy/lo), the API server answers directly.
                return self.local_answer(at, client_host, world);
            };
            let Some(server) = vs.schedule(now, client) else {
                return Err("no real server");
            };
            vs.connection_closed(now, client, server);
            let Some(next) = self.host_by_addr(server.ip()) else {
                return Err("unknown real server");
            };
            if next == at {
                return self.local_answer(at, client_host, world);
            }
            if !world.network().both_ways(at, next) || !self.hosts[next].accepts(key.vip) {
                return Err("real server unreachable");
            }
            // The next host's guard marks the frame (it comes from one of the service's
            // real servers), and marked frames skip its service.
            let from = self.hosts[at].spec.address;
            let guarded = self.loop_guard
                && self.hosts[next]
                    .dataplane
                    .loop_guards
                    .iter()
                    .any(|g| g.service == key && g.real_servers.contains(&from));
            if guarded {
                return self.local_answer(next, client_host, world);
            }
            at = next;
        }
        obs.forwarding_loop(self.now, SocketAddr::new(key.vip, key.port), MAX_HOPS);
        Err("forwarding loop")
    }

    /// The API server on `host` takes the connection and answers the client directly.
    fn local_answer(
        &self,
        host: usize,
        client_host: usize,
        world: &World,
    ) -> Result<(), &'static str> {
        if world.api_server(host) != ApiServer::Up {
            return Err("real server's API server refuses");
        }
        if world.network().both_ways(host, client_host) { Ok(()) } else { Err("reply path cut") }
    }

    /// The userspace proxy on `at`: the node's scheduler picks, a failed dial tries the next.
    fn proxy(&mut self, at: usize, client: IpAddr, world: &World) -> Result<(), &'static str> {
        let local = world.clock(at).local(self.now);
        let Some(d) = self.hosts[at].daemon.as_mut() else {
            return Err("connection refused: no proxy behind the redirect");
        };
        let backends = d.node.proxy_backends_for(local, client);
        if backends.is_empty() {
            return Err("proxy has no backend");
        }
        for server in backends {
            if let Some(b) = self.host_by_addr(server.ip())
                && world.network().both_ways(at, b)
                && world.api_server(b) == ApiServer::Up
            {
                return Ok(());
            }
        }
        Err("proxy: every backend failed")
    }
}

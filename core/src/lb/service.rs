//! A virtual service: VIP:port, its real servers and scheduler, and persistence (a client
//! sticks to its real server for the persistence timeout, as IPVS persistence templates do).

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::collections::BTreeMap;

use super::scheduler::{Destination, Scheduler};
use crate::config::{LbAlgo, LbKind};
use crate::time::Instant;

/// A real server to balance over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    /// Address and port.
    pub addr: SocketAddr,
    /// Weight (k0s uses 1).
    pub weight: u32,
}

/// What identifies a virtual service (TCP only: the Kubernetes API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The VIP.
    pub vip: IpAddr,
    /// The port (`spec.api.port`).
    pub port: u16,
}

/// A client's persistence template: which server it sticks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Template {
    server: SocketAddr,
    /// Connections opened under it and not closed yet: the template lives while any is open.
    open: u32,
    /// Last connection opened or closed; the timeout counts from here once none is open.
    last_activity: Instant,
}

/// One virtual service with its scheduling state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    key: ServiceKey,
    forwarding: LbKind,
    persistence: Option<Duration>,
    dests: Vec<Destination>,
    scheduler: Scheduler,
    templates: BTreeMap<IpAddr, Template>,
}

impl VirtualService {
    /// A service with no real servers yet.
    pub fn new(
        key: ServiceKey,
        algo: LbAlgo,
        forwarding: LbKind,
        persistence: Option<Duration>,
    ) -> Self {
        Self {
            key,
            forwarding,
            persistence: persistence.filter(|d| !d.is_zero()),
            dests: Vec::new(),
            scheduler: Scheduler::new(algo),
            templates: BTreeMap::new(),
        }
    }

    /// The service's VIP and port.
    pub fn key(&self) -> ServiceKey {
        self.key
    }

    /// The scheduler.
    pub fn algo(&self) -> LbAlgo {
        self.scheduler.algo()
    }

    /// The forwarding method.
    pub fn forwarding(&self) -> LbKind {
        self.forwarding
    }

    /// The persistence timeout, if persistent.
    pub fn persistence(&self) -> Option<Duration> {
        self.persistence
    }

    /// The real servers with their connection counts, in the order they were given.
    pub fn destinations(&self) -> &[Destination] {
        &self.dests
    }

    /// Replaces the real servers. Servers kept keep their connection counts; clients stuck
    /// to a removed server are released, so a removed server is never chosen again.
    pub fn set_real_servers(&mut self, servers: &[RealServer]) {
        let old = std::mem::take(&mut self.dests);
        for s in servers {
            if self.dests.iter().any(|d| d.addr == s.addr) {
                continue;
            }
            let (active, inactive) =
                old.iter().find(|d| d.addr == s.addr).map_or((0, 0), |d| (d.active, d.inactive));
            self.dests.push(Destination { addr: s.addr, weight: s.weight, active, inactive });
        }
        let dests = &self.dests;
        self.templates.retain(|_, t| dests.iter().any(|d| d.addr == t.server));
        self.scheduler.reset(&self.dests);
    }

    /// Chooses the real server for a new connection from `client`, and counts it as active.
    /// `None` when no real server can take it.
    pub fn schedule(&mut self, now: Instant, client: IpAddr) -> Option<SocketAddr> {
        self.expire(now);
        if self.persistence.is_some()
            && let Some(t) = self.templates.get_mut(&client)
        {
            t.open += 1;
            t.last_activity = now;
            let server = t.server;
            self.count_open(server);
            return Some(server);
        }
        let i = self.scheduler.pick(now, &self.dests, client, self.key.vip)?;
        let server = self.dests.get(i)?.addr;
        if self.persistence.is_some() {
            self.templates.insert(client, Template { server, open: 1, last_activity: now });
        }
        self.count_open(server);
        Some(server)
    }

    /// A connection scheduled for `client` to `server` ended.
    pub fn connection_closed(&mut self, now: Instant, client: IpAddr, server: SocketAddr) {
        if let Some(d) = self.dests.iter_mut().find(|d| d.addr == server) {
            d.active = d.active.saturating_sub(1);
        }
        if let Some(t) = self.templates.get_mut(&client).filter(|t| t.server == server) {
            t.open = t.open.saturating_sub(1);
            t.last_activity = now;
        }
    }

    /// The server `client` is stuck to, if its template is alive at `now`.
    pub fn persistent_server(&self, now: Instant, client: IpAddr) -> Option<SocketAddr> {
        let t = self.templates.get(&client)?;
        self.template_alive(t, now).then_some(t.server)
    }

    fn count_open(&mut self, server: SocketAddr) {
        if let Some(d) = self.dests.iter_mut().find(|d| d.addr == server) {
            d.active += 1;
        }
    }

    fn template_alive(&self, t: &Template, now: Instant) -> bool {
        match self.persistence {
            Some(timeout) => t.open > 0 || now < t.last_activity + timeout,
            None => false,
        }
    }

    fn expire(&mut self, now: Instant) {
        let Some(timeout) = self.persistence else {
            return;
        };
        self.templates.retain(|_, t| t.open > 0 || now < t.last_activity + timeout);
    }
}

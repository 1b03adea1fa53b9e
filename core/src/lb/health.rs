//! Health checking of the real servers as a sans-IO state machine: it decides when to probe
//! which server and what the results mean; the driver does the TCP connect or the HTTPS
//! `GET /healthz` and reports back.
//!
//! Per server: a probe every `interval`; a failed probe is retried `retry` times after
//! `retry_delay` before it counts (keepalived's `retry` / `delay_before_retry`); `fall`
//! counted failures in a row mark the server down and `rise` successes mark it up. A probe
//! without an answer by `timeout` fails.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

use crate::time::Instant;

/// Health-check timing and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthConfig {
    /// Time between probes of one server (k0s: 1 s for its /healthz checks).
    pub interval: Duration,
    /// A probe not answered by then has failed (keepalived's `connect_timeout`, 3 s).
    pub timeout: Duration,
    /// Quick retries of a failed probe before it counts (keepalived's `retry`, 1).
    pub retry: u32,
    /// Delay before such a retry (keepalived's `delay_before_retry`, 1 s).
    pub retry_delay: Duration,
    /// Successes in a row that bring a down server up.
    pub rise: u32,
    /// Counted failures in a row that bring an up server down.
    pub fall: u32,
    /// State of a new server before its first result: k0s starts servers unhealthy.
    pub initially_healthy: bool,
    /// k0s's fail-open rule: when no server is healthy, use them all rather than none.
    pub fail_open: bool,
}

impl Default for HealthConfig {
    /// k0s's behaviour with keepalived's retry: probe every second, 3 s timeout, one retry
    /// after a second, one result flips the state, start unhealthy, fail open.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
            retry: 1,
            retry_delay: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            initially_healthy: false,
            fail_open: true,
        }
    }
}

/// Identifies a probe so its result can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u64);

/// A probe the driver must run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// Pass back with the result.
    pub id: ProbeId,
    /// The server to probe.
    pub server: SocketAddr,
    /// Give up by then (the core also fails the probe itself at that time).
    pub deadline: Instant,
}

/// A server changed health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HealthChange {
    /// The server.
    pub server: SocketAddr,
    /// Whether it is healthy now.
    pub healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerHealth {
    healthy: bool,
    /// Consecutive counted results that disagree with `healthy`.
    streak: u32,
    retries_left: u32,
    next_probe: Option<Instant>,
    in_flight: Option<(ProbeId, Instant)>,
}

/// The health of every real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChecker {
    config: HealthConfig,
    servers: BTreeMap<SocketAddr, ServerHealth>,
    next_id: u64,
    probes: VecDeque<Probe>,
    changes: VecDeque<HealthChange>,
}

impl HealthChecker {
    /// A checker with no servers.
    pub fn new(config: HealthConfig) -> Self {
        Self {
            config,
            servers: BTreeMap::new(),
            next_id: 0,
            probes: VecDeque::new(),
            changes: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Sets the servers to check. New ones are probed at once; removed ones are forgotten
    /// (late results for them are ignored).
    pub fn set_servers(&mut self, now: Instant, servers: &[SocketAddr]) {
        self.servers.retain(|s, _| servers.contains(s));
        for &s in servers {
            self.servers.entry(s).or_insert(ServerHealth {
                healthy: self.config.initially_healthy,
                streak: 0,
                retries_left: self.config.retry,
                next_probe: Some(now),
                in_flight: None,
            });
        }
        self.handle_timeout(now);
    }

    /// Issues due probes and fails overdue ones.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<SocketAddr> = self
            .servers
            .iter()
            .filter(|(_, h)| h.in_flight.is_some_and(|(_, deadline)| deadline <= now))
            .map(|(s, _)| *s)
            .collect();
        for server in due {
            self.record(now, server, false);
        }
        let ready: Vec<SocketAddr> = self
            .servers
            .iter()
            .filter(|(_, h)| h.in_flight.is_none() && h.next_probe.is_some_and(|t| t <= now))
            .map(|(s, _)| *s)
            .collect();
        for server in ready {
            self.next_id += 1;
            let id = ProbeId(self.next_id);
            let deadline = now + self.config.timeout;
            if let Some(h) = self.servers.get_mut(&server) {
                h.in_flight = Some((id, deadline));
                h.next_probe = None;
            }
            self.probes.push_back(Probe { id, server, deadline });
        }
    }

    /// The result of a probe. Unknown or late results are ignored.
    pub fn handle_probe_result(&mut self, now: Instant, id: ProbeId, ok: bool) {
        let server = self
            .servers
            .iter()
            .find(|(_, h)| h.in_flight.is_some_and(|(i, _)| i == id))
            .map(|(s, _)| *s);
        if let Some(server) = server {
            self.record(now, server, ok);
            self.handle_timeout(now);
        }
    }

    /// The next probe to run.
    #[must_use]
    pub fn poll_probe(&mut self) -> Option<Probe> {
        self.probes.pop_front()
    }

    /// The next health change.
    #[must_use]
    pub fn poll_change(&mut self) -> Option<HealthChange> {
        self.changes.pop_front()
    }

    /// When `handle_timeout` must run next: the next probe or probe deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers.values().filter_map(|h| h.in_flight.map(|(_, d)| d).or(h.next_probe)).min()
    }

    /// Every server being checked, sorted.
    pub fn servers(&self) -> Vec<SocketAddr> {
        self.servers.keys().copied().collect()
    }

    /// Whether a server is healthy.
    pub fn is_healthy(&self, server: SocketAddr) -> bool {
        self.servers.get(&server).is_some_and(|h| h.healthy)
    }

    /// The servers to balance over: the healthy ones, or with fail-open all of them when
    /// none is healthy.
    pub fn usable(&self) -> Vec<SocketAddr> {
        let healthy: Vec<SocketAddr> =
            self.servers.iter().filter(|(_, h)| h.healthy).map(|(s, _)| *s).collect();
        if healthy.is_empty() && self.config.fail_open {
            self.servers.keys().copied().collect()
        } else {
            healthy
        }
    }

    fn record(&mut self, now: Instant, server: SocketAddr, ok: bool) {
        let config = self.config;
        let Some(h) = self.servers.get_mut(&server) else {
            return;
        };
        h.in_flight = None;
        if !ok && h.retries_left > 0 {
            h.retries_left -= 1;
            h.next_probe = Some(now + config.retry_delay);
            return;
        }
        h.retries_left = config.retry;
        h.next_probe = Some(now + config.interval);
        if ok == h.healthy {
            h.streak = 0;
            return;
        }
        h.streak += 1;
        let needed = if ok { config.rise } else { config.fall };
        if h.streak >= needed.max(1) {
            h.healthy = ok;
            h.streak = 0;
            self.changes.push_back(HealthChange { server, healthy: ok });
        }
    }
}

/// The shortest health-check interval: k0s takes any positive `delayLoop` (1µs too), and
/// probing every API server that often would be a storm of connections, not a check.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// The health checks cplb runs for a k0s configuration.
///
/// k0s itself probes every API server's `/healthz` every second and rewrites the real
/// servers from that (its reconciler); keepalived's TCP_CHECK every `delayLoop` is a second,
/// slower layer on top. We keep the one-second checks for every mode (or `delayLoop` when
/// shorter), with a 1 s timeout (API servers on a LAN answer in milliseconds), two failures
/// in a row to drop a server and one success to bring it back. Servers start unhealthy and
/// the set fails open, as k0s's does. The interval is never below
/// [`MIN_HEALTH_INTERVAL`], whatever `delayLoop` says.
pub fn k0s_health_config(keepalived: &crate::config::Keepalived) -> HealthConfig {
    let second = Duration::from_secs(1);
    let interval = keepalived
        .virtual_servers
        .iter()
        .map(|vs| vs.delay_loop)
        .min()
        .map_or(second, |d| d.min(second))
        .max(MIN_HEALTH_INTERVAL);
    HealthConfig {
        interval,
        timeout: second,
        retry: 0,
        rise: 1,
        fall: 2,
        ..HealthConfig::default()
    }
}

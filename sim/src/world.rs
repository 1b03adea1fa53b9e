//! The world the fault schedule shapes, the same for both drivers: the segment
//! ([`Network`]), each controller's file ([`Files`]), API servers, kernel refusals and
//! clocks. The faults change it ([`crate::faults`]); the checker reads it.

use cplb_core::config::ClusterConfig;
use cplb_core::time::Instant;

use crate::clock::Clock;
use crate::files::Files;
use crate::network::Network;
use crate::spec::{ReloadConfig, SimSpec};

/// How an API server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiServer {
    /// Answers.
    Up,
    /// Refuses connections (stopped, or its host is off).
    Down,
    /// Accepts connections and never answers (a deadlock, an overloaded etcd): health
    /// probes time out rather than fail.
    Hung,
}

/// The world the faults shape.
#[derive(Debug, Clone)]
pub struct World {
    network: Network,
    files: Files,
    api: Vec<ApiServer>,
    refusing: Vec<Option<Instant>>,
    clocks: Vec<Clock>,
    names: Vec<String>,
}

impl World {
    /// The world at the start of `spec`: hosts with a later `up_at` are off.
    pub fn new(spec: &SimSpec) -> Self {
        let n = spec.hosts.len();
        let mut network = Network::new(n);
        for (h, host) in spec.hosts.iter().enumerate() {
            network.set_powered(h, host.up_at.is_zero());
        }
        let api = spec
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| match host.role {
                crate::spec::Role::Controller if network.powered(h) => ApiServer::Up,
                _ => ApiServer::Down,
            })
            .collect();
        Self {
            network,
            files: Files::new(spec),
            api,
            refusing: vec![None; n],
            clocks: vec![Clock::exact(); n],
            names: spec.hosts.iter().map(|h| h.name.clone()).collect(),
        }
    }

    /// The segment.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The controllers' files.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// How host `h`'s API server behaves.
    pub fn api_server(&self, h: usize) -> ApiServer {
        self.api.get(h).copied().unwrap_or(ApiServer::Down)
    }

    /// Until when host `h`'s kernel refuses commands, if it does or did.
    pub fn refusing_until(&self, h: usize) -> Option<Instant> {
        self.refusing.get(h).copied().flatten()
    }

    /// Whether host `h`'s kernel refuses commands at `now`.
    pub fn refuses(&self, h: usize, now: Instant) -> bool {
        self.refusing_until(h).is_some_and(|t| now < t)
    }

    /// Host `h`'s clock.
    pub fn clock(&self, h: usize) -> Clock {
        self.clocks.get(h).copied().unwrap_or_default()
    }

    // --- what the faults change --------------------------------------------------------

    pub(crate) fn network_mut(&mut self) -> &mut Network {
        &mut self.network
    }

    /// SIGHUP on host `h` with the file `reload` leaves there (see [`Files::reload`]).
    pub(crate) fn reload(
        &mut self,
        h: usize,
        reload: &ReloadConfig,
    ) -> Result<&ClusterConfig, String> {
        self.files.reload(h, reload)
    }

    pub(crate) fn set_api(&mut self, h: usize, api: ApiServer) {
        if let Some(a) = self.api.get_mut(h) {
            *a = api;
        }
    }

    /// The host's kernel refuses until `until` (or a later refusal's end).
    pub(crate) fn refuse(&mut self, h: usize, until: Instant) {
        if let Some(r) = self.refusing.get_mut(h) {
            *r = Some(r.map_or(until, |t| t.max(until)));
        }
    }

    /// The host's clock reads true time again (it booted).
    pub(crate) fn reset_clock(&mut self, h: usize) {
        if let Some(c) = self.clocks.get_mut(h) {
            *c = Clock::exact();
        }
    }

    pub(crate) fn drift(&mut self, h: usize, now: Instant, ppm: f64) {
        if let Some(c) = self.clocks.get_mut(h) {
            c.set_drift(now, ppm);
        }
    }

    /// The host's name.
    pub(crate) fn name(&self, h: usize) -> &str {
        self.names.get(h).map_or("?", String::as_str)
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }
}

//! What a run measured: failovers, client experience, invariant violations, views.

use core::time::Duration;

use cplb_core::time::Instant;
use cplb_core::vrrp::State;

/// One change of master of an instance.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failover {
    pub(crate) instance: usize,
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) fault_at: Option<Instant>,
    pub(crate) new_master_at: Instant,
    pub(crate) vip_answering_at: Option<Instant>,
}

/// A failover, for reports (times in seconds from the start).
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverReport {
    /// Instance index (k0s-vip-N).
    pub instance: usize,
    /// The old master.
    pub from: String,
    /// The new master.
    pub to: String,
    /// The last fault before it.
    pub fault_at_s: Option<f64>,
    /// When the new master took over.
    pub new_master_at_s: f64,
    /// When a client first got an answer through the new master.
    pub vip_answering_at_s: Option<f64>,
    /// From the fault to the VIP answering.
    pub failover_s: Option<f64>,
}

impl Failover {
    pub(crate) fn report(&self, names: &[String]) -> FailoverReport {
        let s = |t: Instant| t.as_nanos() as f64 / 1e9;
        let name = |h: usize| names.get(h).cloned().unwrap_or_default();
        let start = self.fault_at.unwrap_or(self.new_master_at);
        FailoverReport {
            instance: self.instance,
            from: name(self.from),
            to: name(self.to),
            fault_at_s: self.fault_at.map(s),
            new_master_at_s: s(self.new_master_at),
            vip_answering_at_s: self.vip_answering_at.map(s),
            failover_s: self.vip_answering_at.map(|t| (t - start).as_secs_f64()),
        }
    }
}

/// A host's instance entering a state, for the reports' lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: Instant,
    /// The host's index.
    pub host: usize,
    /// The instance (k0s-vip-N).
    pub instance: usize,
    /// The state entered.
    pub to: State,
    /// The daemon is gone (crashed, powered off, stopped): `to` is `Initialize`, and the
    /// instance is down rather than starting.
    pub gone: bool,
}

/// One client connection attempt, for the reports' ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When it began.
    pub at: Instant,
    /// The traffic source (its index in the scenario's traffic).
    pub source: usize,
    /// Whether it was answered.
    pub ok: bool,
}

/// One traffic source's experience.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections tried.
    pub attempts: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Longest time from a failure to the next success.
    pub longest_outage: Duration,
    /// The last failed connection.
    pub last_failure: Option<Instant>,
    pub(crate) outage_start: Option<Instant>,
}

/// An invariant that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When.
    pub at: Instant,
    /// Which invariant.
    pub invariant: String,
    /// What was seen.
    pub detail: String,
    /// The trace lines before it.
    pub recent: Vec<String>,
}

/// The state at a time asked for with `Sim::run_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When.
    pub at: Instant,
    /// Masters of each instance (host indexes; several when partitioned).
    pub masters: Vec<Vec<usize>>,
    /// The real servers (or proxy backends) the first master of each instance lists.
    pub real_servers: Vec<Vec<usize>>,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Simulated time.
    pub simulated: Duration,
    /// Events processed.
    pub events: u64,
    /// Invariant violations (the first ten).
    pub violations: Vec<Violation>,
    /// Every change of master.
    pub failovers: Vec<FailoverReport>,
    /// Per traffic source.
    pub clients: Vec<ClientStats>,
    /// Masters per instance at the end.
    pub final_masters: Vec<Vec<String>>,
    /// Hash of the whole trace.
    pub trace_hash: u64,
    /// The trace.
    pub timeline: Vec<String>,
    /// `ip -4 addr` / `ipvsadm` views before the first fault.
    pub views_before: String,
    /// The same at the end.
    pub views_after: String,
    /// States sampled with `run_until`.
    pub samples: Vec<Sample>,
    /// Packets that looped between directors.
    pub forwarding_loops: u64,
    /// Times two masters of an instance could hear each other.
    pub dual_master_episodes: u64,
    /// Per instance: whether its VIP answered any client (failovers of the others cannot be
    /// timed to the VIP answering).
    pub served: Vec<bool>,
    /// When the last scheduled fault happened.
    pub last_fault_at: Option<Instant>,
    /// When the faults were over: the last fault, or a kernel refusal's end once the node
    /// noticed it (see `Bounds::faults_over`); what `clients_recover` counts from.
    pub faults_over: Option<Instant>,
    /// How long after the last fault clients may still fail, from the configuration: the
    /// slowest takeover plus an advertisement interval, the announcement refresh, and the
    /// health checker's bound, plus a second.
    pub recovery_bound: Duration,
    /// Host names by index.
    pub host_names: Vec<String>,
    /// Instance names by index (`k0s-vip-N`).
    pub instance_names: Vec<String>,
    /// Every VRRP state change, in time order (a daemon gone without a word leaves its
    /// instances in `Initialize`).
    pub transitions: Vec<Transition>,
    /// Every client connection attempt, in time order.
    pub attempts: Vec<AttemptRecord>,
}

impl Outcome {
    /// Client totals: attempts, failures, longest outage over all sources.
    pub fn client_totals(&self) -> ClientStats {
        ClientStats {
            attempts: self.clients.iter().map(|c| c.attempts).sum(),
            failed: self.clients.iter().map(|c| c.failed).sum(),
            longest_outage: self.clients.iter().map(|c| c.longest_outage).max().unwrap_or_default(),
            last_failure: self.clients.iter().filter_map(|c| c.last_failure).max(),
            outage_start: None,
        }
    }
}

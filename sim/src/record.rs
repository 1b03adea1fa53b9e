//! The record of a run, kept in time order: the trace, the state changes for the reports'
//! lanes, the failovers, every client attempt and the clients' experience. Both drivers
//! feed it through the [`crate::Observer`]; [`Recorder::finish`] makes the [`Outcome`].

use core::net::IpAddr;
use core::time::Duration;
use std::collections::BTreeMap;

use cplb_core::time::Instant;
use cplb_core::vrrp::{Cause, State};

use crate::failover::Failovers;
use crate::instances::InstanceInfo;
use crate::outcome::{AttemptRecord, ClientStats, Outcome, Sample, Transition, Violation};
use crate::trace::Trace;

/// One thing that happened, to be recorded at its time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Record {
    /// A fault of the schedule, in words.
    Fault(String),
    /// A line of the trace.
    Note(String),
    /// A router changed state.
    State { host: usize, instance: usize, from: State, to: State, cause: Cause },
    /// A host's daemon is gone without a word (crash, power-off) or has exited.
    Gone { host: usize },
    /// A client's connection attempt: answered through a host, or failed and why.
    Attempt { source: usize, from: usize, vip: IpAddr, result: Result<usize, String> },
}

/// The record.
#[derive(Debug)]
pub(crate) struct Recorder {
    instances: Vec<InstanceInfo>,
    names: Vec<String>,
    trace: Trace,
    failovers: Failovers,
    clients: Vec<ClientStats>,
    attempts: Vec<AttemptRecord>,
    transitions: Vec<Transition>,
    /// Each host's instances' states, as recorded.
    states: BTreeMap<(usize, usize), State>,
    served: Vec<bool>,
    last_fault_at: Option<Instant>,
}

impl Recorder {
    pub(crate) fn new(instances: Vec<InstanceInfo>, names: Vec<String>, sources: usize) -> Self {
        Self {
            failovers: Failovers::new(instances.iter().map(|i| i.master_down)),
            served: vec![false; instances.len()],
            instances,
            names,
            trace: Trace::default(),
            clients: vec![ClientStats::default(); sources],
            attempts: Vec::new(),
            transitions: Vec::new(),
            states: BTreeMap::new(),
            last_fault_at: None,
        }
    }

    /// The last lines of the trace, for a violation.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.trace.tail(12)
    }

    /// Records `record` at `now` (never earlier than what was recorded before).
    pub(crate) fn record(&mut self, now: Instant, record: Record) {
        self.failovers.settle(now);
        match record {
            Record::Fault(text) => {
                self.trace.push(now, format!("FAULT {text}"));
                self.last_fault_at = Some(now);
            }
            Record::Note(text) => self.trace.push(now, text),
            Record::State { host, instance, from, to, cause } => {
                let line = format!(
                    "{} {} {from} -> {to} ({})",
                    self.names[host],
                    self.instances[instance].name,
                    cause_text(&cause)
                );
                self.trace.push(now, line);
                self.transitions.push(Transition { at: now, host, instance, to, gone: false });
                self.states.insert((host, instance), to);
                let fault = self.last_fault_at;
                self.failovers.master_changed(now, instance, host, to == State::Master, fault);
            }
            Record::Gone { host } => self.gone(now, host),
            Record::Attempt { source, from, vip, result } => {
                self.attempt(now, source, from, vip, result);
            }
        }
    }

    /// A daemon gone: its masters are masters no more, and every instance it ran is down
    /// (`Initialize`) from now on.
    fn gone(&mut self, now: Instant, host: usize) {
        let fault = self.last_fault_at;
        let known: Vec<usize> =
            self.states.range((host, 0)..=(host, usize::MAX)).map(|((_, i), _)| *i).collect();
        for instance in known {
            if self.failovers.masters(instance).contains(&host) {
                let line = format!(
                    "{} {} gone (daemon not running)",
                    self.names[host], self.instances[instance].name
                );
                self.trace.push(now, line);
                self.failovers.master_changed(now, instance, host, false, fault);
            }
            let to = State::Initialize;
            self.transitions.push(Transition { at: now, host, instance, to, gone: true });
            self.states.remove(&(host, instance));
        }
    }

    fn attempt(
        &mut self,
        now: Instant,
        source: usize,
        from: usize,
        vip: IpAddr,
        result: Result<usize, String>,
    ) {
        self.attempts.push(AttemptRecord { at: now, source, ok: result.is_ok() });
        let Some(stats) = self.clients.get_mut(source) else { return };
        stats.attempts += 1;
        let name = &self.names[from];
        match result {
            Ok(via) => {
                if let Some(start) = stats.outage_start.take() {
                    let outage = now - start;
                    stats.longest_outage = stats.longest_outage.max(outage);
                    let line = format!(
                        "{name} API via {vip} answers again (outage {:.3}s)",
                        outage.as_secs_f64()
                    );
                    self.trace.push(now, line);
                }
                let Some(inst) = self.instances.iter().position(|t| t.vips.contains(&vip)) else {
                    return;
                };
                if let Some(s) = self.served.get_mut(inst) {
                    *s = true;
                }
                self.failovers.answered(now, inst, via);
            }
            Err(why) => {
                stats.failed += 1;
                stats.last_failure = Some(now);
                if stats.outage_start.is_none() {
                    stats.outage_start = Some(now);
                    self.trace.push(now, format!("{name} API via {vip} fails: {why}"));
                }
            }
        }
    }

    /// The masters of `instance` as recorded.
    pub(crate) fn masters(&self, instance: usize) -> Vec<usize> {
        self.failovers.masters(instance).iter().copied().collect()
    }

    /// The outcome, at the run's end `end`.
    pub(crate) fn finish(mut self, end: Instant, run: Finished) -> Outcome {
        for c in &mut self.clients {
            if let Some(start) = c.outage_start.take() {
                c.longest_outage = c.longest_outage.max(end - start);
            }
        }
        let final_masters = (0..self.instances.len())
            .map(|i| self.masters(i).into_iter().map(|h| self.names[h].clone()).collect())
            .collect();
        self.transitions.sort_by_key(|t| t.at);
        self.attempts.sort_by_key(|a| a.at);
        Outcome {
            scenario: run.scenario,
            seed: run.seed,
            simulated: end - Instant::ZERO,
            events: run.events,
            violations: run.violations,
            failovers: self.failovers.reports(&self.names),
            clients: self.clients,
            final_masters,
            trace_hash: self.trace.hash(),
            timeline: self.trace.lines(),
            views_before: run.views_before,
            views_after: run.views_after,
            samples: run.samples,
            forwarding_loops: run.forwarding_loops,
            dual_master_episodes: run.dual_master_episodes,
            served: self.served,
            last_fault_at: self.last_fault_at,
            faults_over: run.faults_over,
            recovery_bound: run.recovery_bound,
            host_names: self.names,
            instance_names: self.instances.iter().map(|i| i.name.clone()).collect(),
            transitions: self.transitions,
            attempts: self.attempts,
        }
    }
}

/// What the observer adds to the record at the end.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) scenario: String,
    pub(crate) seed: u64,
    pub(crate) events: u64,
    pub(crate) violations: Vec<Violation>,
    pub(crate) views_before: String,
    pub(crate) views_after: String,
    pub(crate) samples: Vec<Sample>,
    pub(crate) forwarding_loops: u64,
    pub(crate) dual_master_episodes: u64,
    pub(crate) faults_over: Option<Instant>,
    pub(crate) recovery_bound: Duration,
}

/// Why a state changed, in the trace's words.
pub fn cause_text(cause: &Cause) -> String {
    match cause {
        Cause::Startup => "startup".into(),
        Cause::MasterDown => "master down".into(),
        Cause::MasterResigned => "master resigned".into(),
        Cause::HigherPriorityMaster { from, priority } => {
            format!("{from} priority {priority} wins")
        }
        Cause::Fault => "fault".into(),
        Cause::AddressRefused => "the kernel refused the VIP".into(),
        Cause::Recovered => "recovered".into(),
        Cause::Shutdown => "shutdown".into(),
    }
}

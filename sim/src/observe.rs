//! What both drivers report of a run, and the one place it goes: the [`Checker`] sees it
//! at once and evaluates the invariants as the run goes; the recorder gets it in time
//! order and makes the trace and the [`Outcome`].
//!
//! A driver may learn of something after later things happened: the turmoil runner hears
//! of a client's attempt when it ends, up to a client timeout after it began. Its records
//! wait `horizon` in a queue ordered by time, so the record is in time order whatever the
//! order of the reports.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use cplb_core::lb::{DataPlane, ServiceSpec};
use cplb_core::node::Event;
use cplb_core::time::Instant;
use cplb_core::vrrp::{self, InstanceId};

use crate::bounds::Bounds;
use crate::checker::{Breach, Checker};
use crate::instances::{InstanceInfo, index_of, instances};
use crate::outcome::{Outcome, Sample, Violation};
use crate::queue::TimeQueue;
use crate::record::{Finished, Record, Recorder};
use crate::spec::SimSpec;
use crate::world::World;

/// The violations kept (the first ones tell the story).
const MAX_VIOLATIONS: usize = 10;

/// The observer of one run.
#[derive(Debug)]
pub struct Observer {
    scenario: String,
    seed: u64,
    instances: Vec<InstanceInfo>,
    names: Vec<String>,
    checker: Checker,
    recorder: Recorder,
    pending: TimeQueue<Record>,
    horizon: Duration,
    violations: Vec<Violation>,
    samples: Vec<Sample>,
    views_before: Option<String>,
}

impl Observer {
    /// The observer of `spec` run with `seed` by a driver that reacts within `reaction` and
    /// reports things at most `horizon` after they happened.
    pub fn new(spec: &SimSpec, seed: u64, reaction: Duration, horizon: Duration) -> Self {
        let instances = instances(spec);
        let names: Vec<String> = spec.hosts.iter().map(|h| h.name.clone()).collect();
        let keepalived = spec.config.enabled_keepalived();
        let bounds = Bounds::new(spec, &instances, keepalived, reaction);
        let addresses = spec.hosts.iter().map(|h| h.address).collect();
        Self {
            scenario: spec.name.clone(),
            seed,
            checker: Checker::new(bounds, instances.clone(), names.clone(), addresses),
            recorder: Recorder::new(instances.clone(), names.clone(), spec.traffic.len()),
            instances,
            names,
            pending: TimeQueue::default(),
            horizon,
            violations: Vec::new(),
            samples: Vec::new(),
            views_before: None,
        }
    }

    /// The scenario's instances.
    pub fn instances(&self) -> &[InstanceInfo] {
        &self.instances
    }

    /// The run's bounds.
    pub fn bounds(&self) -> &Bounds {
        self.checker.bounds()
    }

    // --- reports -------------------------------------------------------------------------

    /// A fault of the schedule, in words (the world tells it).
    pub(crate) fn fault(&mut self, now: Instant, text: &str) {
        self.record(now, Record::Fault(text.to_owned()));
    }

    /// A line for the trace.
    pub fn note(&mut self, now: Instant, text: String) {
        self.record(now, Record::Note(text));
    }

    /// Host `h` booted.
    pub fn booted(&mut self, now: Instant, h: usize) {
        let line = format!("{} boots", self.names[h]);
        self.note(now, line);
    }

    /// A daemon started on host `h`.
    pub fn daemon_started(&mut self, h: usize) {
        self.checker.daemon_started(h);
    }

    /// Host `h`'s daemon is gone (crashed, powered off, or exited after a stop).
    pub fn daemon_gone(&mut self, now: Instant, h: usize) {
        self.checker.daemon_gone(h);
        self.record(now, Record::Gone { host: h });
    }

    /// An event of host `h`'s node; `first_vip` names an instance by its first VIP (the
    /// node's [`cplb_core::node::Node::instance`], which knows removed ones too).
    pub fn node_event(
        &mut self,
        now: Instant,
        h: usize,
        event: &Event,
        first_vip: impl Fn(InstanceId) -> Option<IpAddr>,
    ) {
        let name = self.names[h].clone();
        match event {
            Event::Vrrp(vrrp::Event::StateChanged { instance, from, to, cause }) => {
                let Some(index) = first_vip(*instance).and_then(|v| index_of(&self.instances, v))
                else {
                    return;
                };
                self.checker.state(h, index, *to);
                let (from, to, cause) = (*from, *to, *cause);
                self.record(now, Record::State { host: h, instance: index, from, to, cause });
            }
            Event::ServerHealth { server, healthy } => {
                let state = if *healthy { "healthy" } else { "unhealthy" };
                self.note(now, format!("{name} health {} {state}", server.ip()));
            }
            Event::DataPlaneChanged(dp) => {
                self.checker.dataplane(h, dp);
                self.note(now, format!("{name} dataplane {}", dataplane_text(dp)));
            }
            Event::Reloaded(r) => {
                let (k, a, r) = (r.kept.len(), r.added.len(), r.removed.len());
                self.note(now, format!("{name} reload: {k} kept, {a} added, {r} removed"));
            }
            Event::ReloadRefused { reason } => {
                self.note(now, format!("{name} reload refused: {reason}"));
            }
            Event::KernelRefused { object, reason } => {
                self.note(now, format!("{name} kernel refuses {object} ({reason})"));
            }
            Event::KernelDrift { object } => {
                let line = format!("{name} reconcile: {object} changed by someone else, restoring");
                self.note(now, line);
            }
            Event::KernelRecovered { object, attempts } => {
                self.note(now, format!("{name} reconcile: {object} set after {attempts} refusals"));
            }
            _ => {}
        }
    }

    /// Whether host `h`'s node has kernel objects under refusal now.
    pub fn node_refusing(&mut self, h: usize, refusing: bool) {
        self.checker.refusing(h, refusing);
    }

    /// A VIP appeared on or went from host `h`'s eth0. One that goes before the daemon
    /// has put its instance in any state is what an earlier daemon left, cleared at start.
    pub fn vip(&mut self, now: Instant, h: usize, vip: IpAddr, present: bool) {
        if !present && self.checker.left_over(h, vip) {
            let line = format!("{} reconcile: removed stale {vip} from eth0", self.names[h]);
            self.note(now, line);
        }
        self.checker.vip(h, vip, present);
    }

    /// Host `h`'s kernel lost what it held (power off).
    pub(crate) fn kernel_lost(&mut self, h: usize) {
        self.checker.kernel_lost(h);
    }

    /// Host `h`'s kernel now holds these IPVS services.
    pub fn kernel_services(&mut self, h: usize, services: &[ServiceSpec]) {
        self.checker.kernel_services(h, services);
    }

    /// A client's connection attempt of traffic `source` from host `from` to `vip`, made at
    /// `at`: answered through host `via`, or failed and why.
    pub fn attempt(
        &mut self,
        at: Instant,
        source: usize,
        from: usize,
        vip: IpAddr,
        result: Result<usize, String>,
    ) {
        self.record(at, Record::Attempt { source, from, vip, result });
    }

    /// A connection to `service` went round between directors `hops` times.
    pub fn forwarding_loop(&mut self, now: Instant, service: SocketAddr, hops: usize) {
        if let Some(breach) = self.checker.forwarding_loop(service, hops) {
            self.breach(now, breach);
        }
    }

    /// A driver's own invariant did not hold (a livelock, a deadline in the past).
    pub fn violate(&mut self, now: Instant, invariant: &'static str, detail: String) {
        self.breach(now, (invariant, detail));
    }

    /// The world changed (a fault): what the invariants read must be read again.
    pub fn world_changed(&mut self, now: Instant) {
        self.checker.world_changed(now);
    }

    // --- evaluation ----------------------------------------------------------------------

    /// Evaluates the invariants at `now` and records what is due.
    pub fn check(&mut self, now: Instant, world: &World) {
        let horizon = u64::try_from(self.horizon.as_nanos()).unwrap_or(u64::MAX);
        if let Some(until) = now.as_nanos().checked_sub(horizon) {
            self.flush(Some(Instant::from_nanos(until)));
        }
        for breach in self.checker.check(now, world) {
            self.breach(now, breach);
        }
    }

    /// Whether the views before the first fault are still wanted.
    pub fn wants_views_before(&self) -> bool {
        self.views_before.is_none()
    }

    /// The seed document's views before the first fault.
    pub fn set_views_before(&mut self, views: String) {
        self.views_before.get_or_insert(views);
    }

    /// The masters of each instance and the real servers their first master lists, now.
    pub fn sample(&mut self, now: Instant) {
        let masters: Vec<Vec<usize>> =
            (0..self.instances.len()).map(|i| self.checker.masters(i)).collect();
        let real_servers = masters
            .iter()
            .map(|m| {
                let Some(&first) = m.first() else { return Vec::new() };
                let mut hosts: Vec<usize> = self
                    .checker
                    .listed(first)
                    .into_iter()
                    .filter_map(|ip| self.checker.host_of(ip))
                    .collect();
                hosts.sort_unstable();
                hosts.dedup();
                hosts
            })
            .collect();
        self.samples.push(Sample { at: now, masters, real_servers });
    }

    /// The masters of `instance` now.
    pub fn masters(&self, instance: usize) -> Vec<usize> {
        self.checker.masters(instance)
    }

    /// The outcome of the run, which ended at `end` after `events` events.
    pub fn finish(mut self, end: Instant, views_after: String, events: u64) -> Outcome {
        self.flush(None);
        let bounds = self.checker.bounds();
        let run = Finished {
            scenario: self.scenario,
            seed: self.seed,
            events,
            violations: self.violations,
            views_before: self.views_before.unwrap_or_default(),
            views_after,
            samples: self.samples,
            forwarding_loops: self.checker.forwarding_loops(),
            dual_master_episodes: self.checker.dual_master_episodes(),
            faults_over: bounds.faults_over(),
            recovery_bound: bounds.recovery(),
        };
        self.recorder.finish(end, run)
    }

    // --- internals -----------------------------------------------------------------------

    fn record(&mut self, at: Instant, record: Record) {
        if self.horizon.is_zero() {
            return self.recorder.record(at, record);
        }
        self.pending.push(at, record);
    }

    /// Records, in time order, what happened until `until` (everything: `None`).
    fn flush(&mut self, until: Option<Instant>) {
        while let Some((at, record)) = self.pending.pop(until) {
            self.recorder.record(at, record);
        }
    }

    fn breach(&mut self, now: Instant, (invariant, detail): Breach) {
        if self.violations.len() >= MAX_VIOLATIONS {
            return;
        }
        self.violations.push(Violation {
            at: now,
            invariant: invariant.to_owned(),
            detail,
            recent: self.recorder.tail(),
        });
    }
}

/// A data plane in the trace's words: each service's VIP and real servers, or the proxy's
/// backends.
fn dataplane_text(dp: &DataPlane) -> String {
    if dp.services.is_empty() && dp.proxy_port.is_some() {
        return dp.proxy_backends.iter().map(|b| b.ip().to_string()).collect::<Vec<_>>().join(" ");
    }
    dp.services
        .iter()
        .map(|s| {
            let ips: Vec<IpAddr> = s.real_servers.iter().map(|r| r.addr.ip()).collect();
            format!("{}:{ips:?}", s.key.vip)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

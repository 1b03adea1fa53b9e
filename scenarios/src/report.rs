//! A simulated run (engine or `--driver daemon`) as the reports' [`Run`], and the fuzz
//! campaign as their [`Campaign`].

use std::net::IpAddr;

use cplb_reports::{Attempt, Client, Failover, FaultSpan, Instance, Run, StateChange, Violation};
use cplb_sim::{Fault, SimSpec};

use crate::run::RunReport;
use crate::scenario::Scenario;

fn secs(t: cplb_core::time::Instant) -> f64 {
    t.as_nanos() as f64 / 1e9
}

/// The run of `scenario` that `report` tells.
pub fn run_of(scenario: &Scenario, report: &RunReport) -> Run {
    let spec = &scenario.spec;
    let o = &report.outcome;
    let names: Vec<String> = spec.hosts.iter().map(|h| h.name.clone()).collect();
    let name = |h: usize| names.get(h).cloned().unwrap_or_else(|| "?".into());
    let instances: Vec<Instance> = cplb_sim::instances(spec)
        .iter()
        .enumerate()
        .map(|(i, x)| Instance {
            name: o.instance_names.get(i).cloned().unwrap_or_default(),
            vips: x.vips.iter().map(IpAddr::to_string).collect(),
        })
        .collect();
    // A daemon gone (crashed, powered off, stopped) leaves its lanes "down" until its next
    // state change.
    let states: Vec<StateChange> = o
        .transitions
        .iter()
        .map(|t| StateChange {
            at_s: secs(t.at),
            host: name(t.host),
            instance: t.instance,
            state: if t.gone { "down".into() } else { t.to.as_str().to_ascii_lowercase() },
        })
        .collect();
    let clients: Vec<Client> = spec
        .traffic
        .iter()
        .zip(&o.clients)
        .map(|(t, c)| {
            let vip = t
                .vip
                .or_else(|| instances_first_vip(spec))
                .map_or_else(|| "the VIP".to_owned(), |v| v.to_string());
            Client {
                name: format!("{} → {vip}", name(t.from)),
                attempts: c.attempts,
                failed: c.failed,
                longest_outage_s: c.longest_outage.as_secs_f64(),
            }
        })
        .collect();
    let mut violations: Vec<Violation> = o
        .violations
        .iter()
        .map(|v| Violation {
            at_s: Some(secs(v.at)),
            name: v.invariant.clone(),
            detail: v.detail.clone(),
        })
        .collect();
    violations.extend(report.verdicts.iter().filter(|v| !v.ok).map(|v| Violation {
        at_s: None,
        name: format!("expect {}", v.name),
        detail: v.detail.clone(),
    }));
    let mut run = Run {
        driver: report.driver.to_owned(),
        title: o.scenario.clone(),
        description: report.description.clone(),
        seed: Some(o.seed),
        duration_s: o.simulated.as_secs_f64(),
        ok: report.ok,
        hosts: names.clone(),
        instances,
        states,
        vip_holders: Vec::new(),
        faults: fault_spans(spec),
        attempts: o
            .attempts
            .iter()
            .map(|a| Attempt { at_s: secs(a.at), source: a.source, ok: a.ok })
            .collect(),
        failovers: o
            .failovers
            .iter()
            .map(|f| Failover {
                instance: f.instance,
                from: f.from.clone(),
                to: f.to.clone(),
                fault_at_s: f.fault_at_s,
                new_master_at_s: f.new_master_at_s,
                vip_answering_at_s: f.vip_answering_at_s,
                failover_s: f.failover_s,
            })
            .collect(),
        clients,
        violations,
        views_before: o.views_before.clone(),
        views_after: o.views_after.clone(),
        timeline: o.timeline.clone(),
    };
    // In a simulation the master holds its instance's VIPs by construction.
    run.vip_holders = run.holders_from_masters();
    run
}

fn instances_first_vip(spec: &SimSpec) -> Option<IpAddr> {
    cplb_sim::instances(spec).first().and_then(|i| i.vips.first().copied())
}

/// The scenario's faults as spans: each from its moment until what undoes it (power back,
/// a heal, the API server up again), or to the end of the run; a fault of a moment (a
/// reload, a VIP deleted) is a span of none. What only undoes another is not listed.
pub fn fault_spans(spec: &SimSpec) -> Vec<FaultSpan> {
    let names: Vec<String> = spec.hosts.iter().map(|h| h.name.clone()).collect();
    let host = |h: usize| names.get(h).cloned().into_iter().collect::<Vec<_>>();
    let mut spans: Vec<(FaultSpan, Option<Closer>)> = Vec::new();
    for f in &spec.faults {
        let at_s = f.at.as_secs_f64();
        let label = cplb_sim::fault_text(&f.fault, &names);
        let closes = closer_of(&f.fault);
        // An undo closes the open spans it undoes; it is a moment of its own only when it
        // undid nothing (a heal of a healthy network).
        if let Some(undo) = undo_of(&f.fault) {
            let mut closed = false;
            for (span, c) in spans.iter_mut().filter(|(s, _)| s.until_s.is_none()) {
                if c.as_ref().is_some_and(|c| c.is_undone_by(&undo)) {
                    span.until_s = Some(at_s);
                    closed = true;
                }
            }
            // A new drift both ends the old one and lasts itself.
            if closed && closes.is_none() {
                continue;
            }
        }
        let hosts = match &f.fault {
            Fault::Partition(groups) => {
                groups.iter().flatten().filter_map(|h| names.get(*h).cloned()).collect()
            }
            Fault::Cut { from, to } => {
                [*from, *to].iter().filter_map(|h| names.get(*h).cloned()).collect()
            }
            Fault::Heal | Fault::Loss(_) | Fault::Delay(..) | Fault::Duplicate(_) => Vec::new(),
            Fault::PowerOff(h)
            | Fault::PowerOn(h)
            | Fault::Stop(h)
            | Fault::Start(h)
            | Fault::Crash(h)
            | Fault::Restart(h)
            | Fault::LinkDown(h)
            | Fault::LinkUp(h)
            | Fault::ApiserverDown(h)
            | Fault::ApiserverUp(h)
            | Fault::ApiserverHang(h)
            | Fault::ClockDrift(h, _)
            | Fault::VipRemoved(h)
            | Fault::KernelRefuses(h, _)
            | Fault::Reload(h, _) => host(*h),
        };
        let until_s = match (&f.fault, &closes) {
            (Fault::KernelRefuses(_, d), _) => Some(at_s + d.as_secs_f64()),
            (_, Some(_)) => None,
            _ => Some(at_s),
        };
        spans.push((FaultSpan { at_s, until_s, label, hosts }, closes));
    }
    spans.into_iter().map(|(s, _)| s).collect()
}

/// What ends a lasting fault.
#[derive(Debug, Clone, PartialEq)]
enum Closer {
    /// Power on, start, restart of this host.
    Daemon(usize),
    /// Link up of this host, or a heal.
    Link(usize),
    /// A heal.
    Network,
    /// Loss or duplication set to 0, or a heal.
    Lossy,
    /// The API server up again.
    Apiserver(usize),
    /// Another drift setting of this host.
    Clock(usize),
}

/// What an undo is.
#[derive(Debug, Clone, PartialEq)]
enum Undo {
    Daemon(usize),
    Link(usize),
    Heal,
    Lossless,
    Apiserver(usize),
    Clock(usize),
}

impl Closer {
    fn is_undone_by(&self, undo: &Undo) -> bool {
        match (self, undo) {
            (Self::Daemon(a), Undo::Daemon(b))
            | (Self::Link(a), Undo::Link(b))
            | (Self::Apiserver(a), Undo::Apiserver(b))
            | (Self::Clock(a), Undo::Clock(b)) => a == b,
            (Self::Link(_) | Self::Network | Self::Lossy, Undo::Heal)
            | (Self::Lossy, Undo::Lossless) => true,
            _ => false,
        }
    }
}

fn closer_of(f: &Fault) -> Option<Closer> {
    Some(match f {
        Fault::PowerOff(h) | Fault::Stop(h) | Fault::Crash(h) => Closer::Daemon(*h),
        Fault::LinkDown(h) => Closer::Link(*h),
        Fault::Partition(_) | Fault::Cut { .. } | Fault::Delay(..) => Closer::Network,
        Fault::Loss(r) | Fault::Duplicate(r) if *r > 0.0 => Closer::Lossy,
        Fault::ApiserverDown(h) | Fault::ApiserverHang(h) => Closer::Apiserver(*h),
        Fault::ClockDrift(h, ppm) if *ppm != 0.0 => Closer::Clock(*h),
        _ => return None,
    })
}

fn undo_of(f: &Fault) -> Option<Undo> {
    Some(match f {
        Fault::PowerOn(h) | Fault::Start(h) | Fault::Restart(h) => Undo::Daemon(*h),
        Fault::LinkUp(h) => Undo::Link(*h),
        Fault::Heal => Undo::Heal,
        Fault::Loss(r) | Fault::Duplicate(r) if *r == 0.0 => Undo::Lossless,
        Fault::ApiserverUp(h) => Undo::Apiserver(*h),
        Fault::ClockDrift(h, _) => Undo::Clock(*h),
        _ => return None,
    })
}

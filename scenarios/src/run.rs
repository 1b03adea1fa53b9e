//! Running a scenario: simulate, check the expectations, and tell the story.

use std::fmt::Write as _;
use std::time::Duration;

use cplb_core::time::Instant;
use cplb_sim::{Outcome, Sim};
use serde_json::json;

use crate::scenario::{Expectation, Scenario};

/// One expectation's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The expectation, in the file's words.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was measured.
    pub detail: String,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// What the simulator measured.
    pub outcome: Outcome,
    /// The expectations' verdicts.
    pub verdicts: Vec<Verdict>,
    /// Invariants and expectations all held.
    pub ok: bool,
    /// The scenario's description.
    pub description: String,
}

/// Runs a scenario with a seed.
pub fn run(scenario: &Scenario, seed: u64) -> RunReport {
    let mut sim = Sim::new(scenario.spec.clone(), seed);
    let mut times: Vec<Duration> = scenario
        .expect
        .iter()
        .filter_map(|e| match e {
            Expectation::MasterAt { at, .. } | Expectation::RealServersAt { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    times.sort();
    times.dedup();
    for t in times {
        sim.run_until(Instant::ZERO + t);
    }
    let outcome = sim.run();
    let verdicts: Vec<Verdict> = scenario.expect.iter().map(|e| verdict(e, &outcome)).collect();
    let ok = outcome.violations.is_empty() && verdicts.iter().all(|v| v.ok);
    RunReport { outcome, verdicts, ok, description: scenario.description.clone() }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

fn verdict(e: &Expectation, o: &Outcome) -> Verdict {
    let name_of = |h: usize| o.host_names.get(h).cloned().unwrap_or_default();
    let sample = |at: Duration| o.samples.iter().find(|s| s.at == Instant::ZERO + at);
    let v = |name: String, ok: bool, detail: String| Verdict { name, ok, detail };
    match e {
        Expectation::MaxFailover(max) => {
            let relevant: Vec<_> = o
                .failovers
                .iter()
                .filter(|f| {
                    f.fault_at_s.is_some() && o.served.get(f.instance).copied().unwrap_or(false)
                })
                .collect();
            let worst =
                relevant.iter().map(|f| f.failover_s.unwrap_or(f64::INFINITY)).fold(0.0, f64::max);
            let detail = if relevant.is_empty() {
                "no failover happened".to_owned()
            } else if worst.is_infinite() {
                "the VIP never answered on a new master".to_owned()
            } else {
                format!("worst failover {worst:.3}s over {} failover(s)", relevant.len())
            };
            v(format!("max_failover {}", secs(*max)), worst <= max.as_secs_f64(), detail)
        }
        Expectation::MaxClientOutage(max) => {
            let t = o.client_totals();
            v(
                format!("max_client_outage {}", secs(*max)),
                t.longest_outage <= *max,
                format!("longest outage {}", secs(t.longest_outage)),
            )
        }
        Expectation::ClientsRecover => {
            let since = o.last_fault_at.unwrap_or(Instant::ZERO);
            let deadline = since + o.recovery_bound;
            let late =
                o.clients.iter().filter_map(|c| c.last_failure).filter(|t| *t > deadline).max();
            let detail = match late {
                Some(t) => format!(
                    "a client still failed at {t}, after the last fault at {since} + bound {}",
                    secs(o.recovery_bound)
                ),
                None => {
                    format!("every client succeeds from {since} + {} on", secs(o.recovery_bound))
                }
            };
            v("clients_recover".into(), late.is_none(), detail)
        }
        Expectation::NoDualMaster => v(
            "no_dual_master".into(),
            o.dual_master_episodes == 0,
            format!("{} dual-master episode(s)", o.dual_master_episodes),
        ),
        Expectation::MasterAt { at, instance, host } => {
            // With partitions there may be a master per group: the host must be one of them.
            let got =
                sample(*at).and_then(|s| s.masters.get(*instance).cloned()).unwrap_or_default();
            let names: Vec<String> = got.iter().map(|&h| name_of(h)).collect();
            let detail = format!("masters at {}: {names:?}", secs(*at));
            v(format!("master_at {} {}", secs(*at), name_of(*host)), got.contains(host), detail)
        }
        Expectation::FinalMaster { instance, host } => {
            let got = o.final_masters.get(*instance).cloned().unwrap_or_default();
            v(
                format!("final_master {}", name_of(*host)),
                got == [name_of(*host)],
                format!("final masters {got:?}"),
            )
        }
        Expectation::FinalMasterNot { instance, host } => {
            let got = o.final_masters.get(*instance).cloned().unwrap_or_default();
            v(
                format!("final_master_not {}", name_of(*host)),
                !got.contains(&name_of(*host)),
                format!("final masters {got:?}"),
            )
        }
        Expectation::RealServersAt { at, instance, hosts } => {
            let got = sample(*at)
                .and_then(|s| s.real_servers.get(*instance).cloned())
                .unwrap_or_default();
            let mut sorted = got.clone();
            sorted.sort_unstable();
            let names: Vec<String> = sorted.iter().map(|&h| name_of(h)).collect();
            let want: Vec<String> = hosts.iter().map(|&h| name_of(h)).collect();
            v(
                format!("real_servers_at {} {want:?}", secs(*at)),
                sorted == *hosts,
                format!("the master lists {names:?}"),
            )
        }
    }
}

/// The JSON report (`cplb sim run --json`).
pub fn to_json(r: &RunReport) -> serde_json::Value {
    let o = &r.outcome;
    let totals = o.client_totals();
    let final_masters: serde_json::Map<String, serde_json::Value> = o
        .final_masters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let value = match m.as_slice() {
                [one] => json!(one),
                [] => json!(null),
                many => json!(many),
            };
            (format!("k0s-vip-{i}"), value)
        })
        .collect();
    json!({
        "scenario": o.scenario,
        "seed": o.seed,
        "ok": r.ok,
        "violations": o.violations.iter().map(|v| json!({
            "time_s": v.at.as_nanos() as f64 / 1e9,
            "invariant": v.invariant,
            "detail": v.detail,
            "recent": v.recent,
        })).collect::<Vec<_>>(),
        "failovers": o.failovers.iter().map(|f| json!({
            "instance": format!("k0s-vip-{}", f.instance),
            "from": f.from,
            "to": f.to,
            "fault_at_s": f.fault_at_s,
            "new_master_at_s": f.new_master_at_s,
            "vip_answering_at_s": f.vip_answering_at_s,
            "failover_s": f.failover_s,
        })).collect::<Vec<_>>(),
        "client": {
            "attempts": totals.attempts,
            "failed": totals.failed,
            "longest_outage_s": totals.longest_outage.as_secs_f64(),
        },
        "expectations": r.verdicts.iter().map(|v| json!({"name": v.name, "ok": v.ok, "detail": v.detail})).collect::<Vec<_>>(),
        "final_masters": final_masters,
        "simulated_s": o.simulated.as_secs_f64(),
        "events": o.events,
        "trace_hash": format!("{:016x}", o.trace_hash),
        "forwarding_loops": o.forwarding_loops,
    })
}

/// The compact timeline: faults, state changes and client outages.
pub fn compact_timeline(o: &Outcome) -> String {
    o.timeline
        .iter()
        .filter(|l| {
            l.contains("FAULT")
                || l.contains(" -> ")
                || l.contains(" API via ")
                || l.contains("reconcile")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The human story of a run.
pub fn story(r: &RunReport) -> String {
    let o = &r.outcome;
    let mut s = String::new();
    let _ = writeln!(s, "scenario {} (seed {})", o.scenario, o.seed);
    if !r.description.is_empty() {
        let _ = writeln!(s, "  {}", r.description);
    }
    let _ = writeln!(s, "\nbefore the first fault:\n{}", indent(&o.views_before));
    let _ = writeln!(s, "timeline:\n{}", indent(&compact_timeline(o)));
    let _ = writeln!(s, "after:\n{}", indent(&o.views_after));
    for f in &o.failovers {
        let fmt = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.3}s"));
        let _ = writeln!(
            s,
            "failover k0s-vip-{}: {} -> {}: fault at {}, new master at {:.3}s, VIP answering at {}, failover {}",
            f.instance,
            f.from,
            f.to,
            fmt(f.fault_at_s),
            f.new_master_at_s,
            fmt(f.vip_answering_at_s),
            fmt(f.failover_s)
        );
    }
    let t = o.client_totals();
    let _ = writeln!(
        s,
        "clients: {} connections, {} failed, longest outage {:.3}s",
        t.attempts,
        t.failed,
        t.longest_outage.as_secs_f64()
    );
    for v in &r.verdicts {
        let _ =
            writeln!(s, "expect {}: {} ({})", v.name, if v.ok { "ok" } else { "FAILED" }, v.detail);
    }
    for v in &o.violations {
        let _ = writeln!(s, "INVARIANT {} violated at {}: {}", v.invariant, v.at, v.detail);
        for line in &v.recent {
            let _ = writeln!(s, "    {line}");
        }
    }
    let _ = writeln!(s, "{}", if r.ok { "OK" } else { "FAILED" });
    s
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

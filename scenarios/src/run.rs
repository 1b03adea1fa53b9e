//! Running a scenario: simulate, check the expectations, and tell the story.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use cplb_core::node;
use cplb_core::time::Instant;
use cplb_core::vrrp::State;
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
    /// Which code ran the controllers: `engine` or `daemon`.
    pub driver: &'static str,
}

/// Runs a scenario with a seed on the engine.
pub fn run(scenario: &Scenario, seed: u64) -> RunReport {
    let sim = Sim::with_samples(scenario.spec.clone(), seed, &sample_times(scenario));
    report(scenario, sim.run(), "engine")
}

/// Why the engine cannot run a scenario, naming what it lacks: a watch (a held
/// connection) needs the real proxy; `None`: it can.
pub fn engine_refuses(scenario: &Scenario) -> Option<String> {
    let names: Vec<&str> = scenario.spec.hosts.iter().map(|h| h.name.as_str()).collect();
    scenario.spec.traffic.iter().find(|t| t.watch).map(|t| {
        format!(
            "traffic from {} is a watch (a held connection): the engine has no connections to hold; run it with --driver daemon",
            names.get(t.from).copied().unwrap_or("?")
        )
    })
}

/// Runs a scenario with a seed with cplbd's own code under turmoil (`--driver daemon`).
pub fn run_daemon(
    scenario: &Scenario,
    seed: u64,
) -> Result<RunReport, crate::daemon_driver::RunError> {
    let outcome = crate::daemon_driver::run(&scenario.spec, seed, &sample_times(scenario))?;
    Ok(report(scenario, outcome, "daemon"))
}

/// The times the expectations look at the cluster.
fn sample_times(scenario: &Scenario) -> Vec<Duration> {
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
    times
}

fn report(scenario: &Scenario, outcome: Outcome, driver: &'static str) -> RunReport {
    let verdicts: Vec<Verdict> = scenario.expect.iter().map(|e| verdict(e, &outcome)).collect();
    let ok = outcome.violations.is_empty() && verdicts.iter().all(|v| v.ok);
    RunReport { outcome, verdicts, ok, description: scenario.description.clone(), driver }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// A router's state change, as the expectations read it: every one the daemons reported,
/// and `Initialize` for each instance of a daemon that died without a word (power-off,
/// crash).
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub(crate) at_s: f64,
    pub(crate) host: usize,
    pub(crate) instance: usize,
    pub(crate) to: State,
}

impl Transition {
    /// In the trace's words.
    fn line(&self, o: &Outcome) -> String {
        let host = o.host_names.get(self.host).map_or("?", String::as_str);
        let instance = o.instance_names.get(self.instance).map_or("?", String::as_str);
        format!("{:.6} {host} {instance} -> {}", self.at_s, self.to)
    }
}

pub(crate) fn transitions(o: &Outcome) -> Vec<Transition> {
    o.transitions
        .iter()
        .map(|t| Transition {
            at_s: t.at.as_nanos() as f64 / 1e9,
            host: t.host,
            instance: t.instance,
            to: t.to,
        })
        .collect()
}

/// Trace times are rounded to microseconds: compared with half a microsecond of slack.
const HALF_US: f64 = 0.000_000_5;

fn at_or_before(at_s: f64, t: Duration) -> bool {
    at_s <= t.as_secs_f64() + HALF_US
}

fn before(at_s: f64, t: Duration) -> bool {
    at_s < t.as_secs_f64() - HALF_US
}

/// The hosts whose eth0 holds `vip` in an `ip addr` view (a host's name on a line of its
/// own, then its `2: eth0    inet ADDR/LEN scope global [secondary ]eth0` lines), sorted.
fn vip_holders(view: &str, host_names: &[String], vip: IpAddr) -> Vec<usize> {
    let mut current = None;
    let mut out = Vec::new();
    for line in view.lines() {
        if let Some(h) = host_names.iter().position(|n| n == line) {
            current = Some(h);
            continue;
        }
        let mut words = line.split_whitespace();
        let on_eth0 = words.next() == Some("2:") && words.next() == Some("eth0");
        let addr = words.nth(1).and_then(|a| a.split('/').next()).and_then(|a| a.parse().ok());
        if let Some(h) = current
            && on_eth0
            && addr == Some(vip)
            && !out.contains(&h)
        {
            out.push(h);
        }
    }
    out.sort_unstable();
    out
}

fn verdict(e: &Expectation, o: &Outcome) -> Verdict {
    let name_of = |h: usize| o.host_names.get(h).cloned().unwrap_or_default();
    let inst_of =
        |i: usize| o.instance_names.get(i).cloned().unwrap_or_else(|| node::instance_name(i));
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
            let since = o.faults_over.unwrap_or(Instant::ZERO);
            let deadline = since + o.recovery_bound;
            let late =
                o.clients.iter().filter_map(|c| c.last_failure).filter(|t| *t > deadline).max();
            let detail = match late {
                Some(t) => format!(
                    "a client still failed at {t}, after the faults were over at {since} + bound {}",
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
        Expectation::StateAt { at, instance, host, state } => {
            let got = transitions(o)
                .into_iter()
                .rev()
                .find(|t| t.host == *host && t.instance == *instance && at_or_before(t.at_s, *at))
                .map_or(State::Initialize, |t| t.to);
            v(
                format!("state_at {} {} {} {state}", secs(*at), name_of(*host), inst_of(*instance)),
                got == *state,
                format!("{} {} is {got} at {}", name_of(*host), inst_of(*instance), secs(*at)),
            )
        }
        Expectation::FinalVipHolders { vip, hosts } => {
            let got = vip_holders(&o.views_after, &o.host_names, *vip);
            let names = |hs: &[usize]| hs.iter().map(|&h| name_of(h)).collect::<Vec<_>>();
            v(
                format!("final_vip_holders {vip} {:?}", names(hosts)),
                got == *hosts,
                format!("{vip} is on the eth0 of {:?}", names(&got)),
            )
        }
        Expectation::NoTransitions { since, until, host, instance } => {
            let seen: Vec<Transition> = transitions(o)
                .into_iter()
                .filter(|t| {
                    host.is_none_or(|h| t.host == h)
                        && instance.is_none_or(|i| t.instance == i)
                        && !before(t.at_s, *since)
                        && until.is_none_or(|u| before(t.at_s, u))
                })
                .collect();
            let window = match until {
                Some(u) => format!("from {} to {}", secs(*since), secs(*u)),
                None => format!("from {} on", secs(*since)),
            };
            let mut name = format!("no_transitions {window}");
            if let Some(h) = host {
                let _ = write!(name, " {}", name_of(*h));
            }
            if let Some(i) = instance {
                let _ = write!(name, " {}", inst_of(*i));
            }
            let detail = match seen.first() {
                None => format!("no state change {window}"),
                Some(first) => {
                    format!("{} state change(s), the first: {}", seen.len(), first.line(o))
                }
            };
            v(name, seen.is_empty(), detail)
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
            (o.instance_names.get(i).cloned().unwrap_or_else(|| node::instance_name(i)), value)
        })
        .collect();
    json!({
        "scenario": o.scenario,
        "driver": r.driver,
        "seed": o.seed,
        "ok": r.ok,
        "violations": o.violations.iter().map(|v| json!({
            "time_s": v.at.as_nanos() as f64 / 1e9,
            "invariant": v.invariant,
            "detail": v.detail,
            "recent": v.recent,
        })).collect::<Vec<_>>(),
        "failovers": o.failovers.iter().map(|f| json!({
            "instance": o.instance_names.get(f.instance).cloned().unwrap_or_else(|| node::instance_name(f.instance)),
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
            "failover {}: {} -> {}: fault at {}, new master at {:.3}s, VIP answering at {}, failover {}",
            o.instance_names.get(f.instance).map_or("?", String::as_str),
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

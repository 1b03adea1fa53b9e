//! `cplb sim run --compare`: the same scenario and seed on the engine and on cplbd's own
//! code under turmoil, their state changes side by side.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cplb_core::vrrp::State;

use crate::run::{self, RunReport};
use crate::scenario::Scenario;

/// Both runs and how they differ.
#[derive(Debug)]
pub struct Comparison {
    /// The engine's run.
    pub engine: RunReport,
    /// The daemon's run.
    pub daemon: RunReport,
    /// Differences: empty when the drivers agree.
    pub differences: Vec<String>,
    /// The side-by-side text.
    pub text: String,
}

/// Runs both drivers and compares, per node and instance, the sequences of states entered,
/// and the failover times (which may differ by at most one advertisement interval: the
/// engine and turmoil place a crash at different points of the advert cycle's tick).
/// Errs, naming why, when either driver cannot run the scenario.
pub fn compare(scenario: &Scenario, seed: u64) -> Result<Comparison, String> {
    if let Some(why) = run::engine_refuses(scenario) {
        return Err(format!("--compare needs both drivers: {why}"));
    }
    let engine = run::run(scenario, seed);
    let daemon = run::run_daemon(scenario, seed).map_err(|e| e.to_string())?;
    // Each failover's tolerance is its own instance's advertisement interval (as the
    // scenario's tuning sets it for the nodes).
    let adverts: Vec<f64> =
        cplb_sim::instances(&scenario.spec).iter().map(|i| i.advert.as_secs_f64()).collect();
    let advert_of = |f: Option<&cplb_sim::FailoverReport>| {
        f.and_then(|f| adverts.get(f.instance)).copied().unwrap_or(1.0)
    };
    let names = &engine.outcome.host_names;
    let sequences = |r: &RunReport| {
        let mut by: BTreeMap<(usize, usize), Vec<(f64, State)>> = BTreeMap::new();
        for t in run::transitions(&r.outcome) {
            by.entry((t.host, t.instance)).or_default().push((t.at_s, t.to));
        }
        by
    };
    let (a, b) = (sequences(&engine), sequences(&daemon));
    let mut keys: Vec<(usize, usize)> = a.keys().chain(b.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut text = String::new();
    let mut differences = Vec::new();
    let show = |s: &[(f64, State)]| {
        s.iter().map(|(t, st)| format!("{t:.3} {st}")).collect::<Vec<_>>().join(", ")
    };
    for key in keys {
        let (x, y) =
            (a.get(&key).cloned().unwrap_or_default(), b.get(&key).cloned().unwrap_or_default());
        let instance = engine.outcome.instance_names.get(key.1).map_or("?", String::as_str);
        let name = format!("{} {instance}", names.get(key.0).map_or("?", String::as_str));
        let same = x.iter().map(|s| s.1).eq(y.iter().map(|s| s.1));
        let _ = writeln!(text, "{name}{}", if same { "" } else { "   DIFFERENT" });
        let _ = writeln!(text, "  engine: {}", show(&x));
        let _ = writeln!(text, "  daemon: {}", show(&y));
        if !same {
            differences.push(format!("{name}: the states entered differ"));
        }
    }
    let _ = writeln!(text, "failovers (engine | daemon):");
    let (fa, fb) = (&engine.outcome.failovers, &daemon.outcome.failovers);
    for i in 0..fa.len().max(fb.len()) {
        let f = |v: &[cplb_sim::FailoverReport]| {
            v.get(i).map_or("-".to_owned(), |f| {
                format!(
                    "{} -> {} {}",
                    f.from,
                    f.to,
                    f.failover_s.map_or("never answered".into(), |s| format!("{s:.3} s"))
                )
            })
        };
        let advert = advert_of(fa.get(i).or_else(|| fb.get(i)));
        let (x, y) = (fa.get(i).and_then(|f| f.failover_s), fb.get(i).and_then(|f| f.failover_s));
        let off = match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() > advert,
            (None, None) => false,
            _ => true,
        };
        let _ = writeln!(text, "  {} | {}{}", f(fa), f(fb), if off { "   DIFFERENT" } else { "" });
        if off {
            differences.push(format!("failover {} differs by more than {advert} s", i + 1));
        }
    }
    Ok(Comparison { engine, daemon, differences, text })
}

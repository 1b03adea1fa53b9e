//! `--driver daemon`: cplbd's own driver, prober and proxy under turmoil agree with the
//! engine, scenario by scenario, and are reproducible from the seed.

use cplb_scenarios::catalog::CATALOG;
use cplb_scenarios::compare::compare;
use cplb_scenarios::run::run_daemon;
use cplb_scenarios::scenario::{Scenario, parse};

/// The catalog scenarios `--compare` cannot hold to the engine, and why. Everything else
/// must agree on every seed tried.
const CANNOT_AGREE: &[(&str, &str)] = &[(
    "loss-30",
    "which frames 30 % loss drops is drawn by each simulator's own random numbers, so the spurious takeovers differ",
)];

fn scenario(name: &str, text: &str) -> Scenario {
    parse(&format!("catalog/{name}.yaml"), text).expect("catalog scenarios parse")
}

#[test]
fn every_catalog_scenario_agrees_with_the_engine_on_three_seeds() {
    let cases: Vec<(&str, &str, u64)> = CATALOG
        .iter()
        .filter(|(name, _)| CANNOT_AGREE.iter().all(|(n, _)| n != name))
        .flat_map(|(name, text)| (1..=3).map(move |seed| (*name, *text, seed)))
        .collect();
    // Two threads: turmoil's world is per thread, and the machine has two cores.
    let (a, b) = cases.split_at(cases.len() / 2);
    let check = |cases: Vec<(&'static str, &'static str, u64)>| {
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            for (name, text, seed) in cases {
                let c = compare(&scenario(name, text), seed)
                    .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}"));
                if !c.differences.is_empty() {
                    failed.push(format!(
                        "{name} seed {seed}: {:?}\n{}\nreplay: cplb sim run {name} --seed {seed} --compare",
                        c.differences, c.text
                    ));
                }
            }
            failed
        })
    };
    let (a, b) = (check(a.to_vec()), check(b.to_vec()));
    let failed: Vec<String> =
        [a, b].into_iter().flat_map(|t| t.join().expect("no panic")).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    assert!(CANNOT_AGREE.len() <= 1, "the list of scenarios that cannot agree stays short");
}

#[test]
fn a_daemon_run_is_the_same_trace_twice_for_a_seed() {
    for seed in [7, 8] {
        let s = scenario(
            "crash-leaves-vip",
            cplb_scenarios::catalog::get("crash-leaves-vip").unwrap_or_default(),
        );
        let a = run_daemon(&s, seed).expect("runs");
        let b = run_daemon(&s, seed).expect("runs");
        assert_eq!(
            a.outcome.timeline, b.outcome.timeline,
            "seed {seed} differs; replay: cplb sim run crash-leaves-vip --driver daemon --seed {seed}"
        );
        assert_eq!(a.outcome.trace_hash, b.outcome.trace_hash);
        assert_eq!(a.outcome.client_totals().attempts, b.outcome.client_totals().attempts);
    }
}

#[test]
fn the_seed_story_holds_under_the_real_daemon_code() {
    let s = scenario(
        "seed-poweroff",
        cplb_scenarios::catalog::get("seed-poweroff").unwrap_or_default(),
    );
    let r = run_daemon(&s, 1).expect("runs");
    assert!(r.ok, "{:?}\nreplay: cplb sim run seed-poweroff --driver daemon --seed 1", r.verdicts);
    assert_eq!(r.driver, "daemon");
    let json = cplb_scenarios::run::to_json(&r);
    assert_eq!(json["driver"], "daemon");
    assert_eq!(json["failovers"][0]["from"], "controller-0");
    assert!(json["client"]["attempts"].as_u64().unwrap_or(0) > 1000, "{json}");
}

#[test]
fn a_fault_turmoil_cannot_express_is_refused_by_name() {
    let text = cplb_scenarios::catalog::get("jitter-reorder").unwrap_or_default();
    let mut s = scenario("jitter-reorder", text);
    s.spec.faults.push(cplb_sim::TimedFault {
        at: std::time::Duration::from_secs(1),
        fault: cplb_sim::Fault::Duplicate(0.1),
    });
    let err = run_daemon(&s, 1).expect_err("refused");
    assert!(err.to_string().contains("duplicate"), "{err}");
}

/// Scenarios where the real code's behaviour is the point: its prober's deadline against a
/// hung API server, its kernel seam's refusals and retries, its reload under traffic.
#[test]
fn the_real_code_meets_the_expectations_of_the_scenarios_it_alone_can_show() {
    for name in ["apiserver-hangs", "kernel-refuses-vip", "reload-same-and-added"] {
        let s = scenario(name, cplb_scenarios::catalog::get(name).unwrap_or_default());
        for seed in [1, 2] {
            let r = run_daemon(&s, seed).expect("runs");
            assert!(
                r.ok,
                "{name} seed {seed}: {:?}\n{}\nreplay: cplb sim run {name} --driver daemon --seed {seed}",
                r.verdicts.iter().filter(|v| !v.ok).collect::<Vec<_>>(),
                r.outcome.timeline.join("\n")
            );
        }
    }
    // The hung API server: its probes time out (no refusal to see), the VIP moves anyway.
    let s = scenario(
        "apiserver-hangs",
        cplb_scenarios::catalog::get("apiserver-hangs").unwrap_or_default(),
    );
    let r = run_daemon(&s, 1).expect("runs");
    let f = &r.outcome.failovers;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].from, "ctl2");
}

/// Two instances (VIPs .200 and .201) in k0s's userspace proxy mode, ctl2 the master of
/// both (equal priorities, the highest address); a kubelet-like watch on .200 through ctl2's
/// proxy, fresh connections on .201. At 15 s `fault` happens.
fn two_instances_with_a_watch(fault: &str) -> Scenario {
    let instances = |both: bool| {
        let second = if both {
            "\n          - virtualIPs: [\"10.200.0.201/24\"]\n            authPass: second"
        } else {
            ""
        };
        format!(
            "spec:\n    network:\n      controlPlaneLoadBalancing:\n        enabled: true\n        keepalived:\n          vrrpInstances:\n          - virtualIPs: [\"10.200.0.200/24\"]\n            authPass: first{second}"
        )
    };
    let text = format!(
        r#"name: watch-and-another-instance
description: a watch on one instance while the other fails over
duration: 40s
hosts:
  - {{name: ctl0, role: controller, address: 10.200.0.10}}
  - {{name: ctl1, role: controller, address: 10.200.0.11}}
  - {{name: ctl2, role: controller, address: 10.200.0.12}}
  - {{name: kubelet, role: worker, address: 10.200.0.101}}
  - {{name: client, role: client, address: 10.200.0.100}}
config: |
  {}
traffic:
  - {{from: kubelet, watch: true, vip: 10.200.0.200, start: 5s}}
  - {{from: client, rate: 20, vip: 10.200.0.201, start: 5s}}
faults:
{}
"#,
        instances(true),
        fault.replace("ONE_INSTANCE", &instances(false).replace('\n', "\n      "))
    );
    parse("watch-and-another-instance.yaml", &text).expect("the scenario parses")
}

/// A long-lived watch survives a failover of another instance: ctl2 is reloaded with a file
/// without the second instance, so .201 moves to ctl1 while ctl2 rewrites its redirects and
/// stays master of .200; the watch through ctl2's proxy never misses an event. The same
/// watch does break when its own path dies (ctl2 crashes, its proxy with it), and is
/// reopened through the new master: the measure can fail.
#[test]
fn a_watch_survives_a_failover_of_another_instance() {
    let reload = two_instances_with_a_watch(
        "  - at: 15s\n    reload:\n      host: ctl2\n      config: |\n        ONE_INSTANCE",
    );
    for seed in [1, 2, 3] {
        let r = run_daemon(&reload, seed).expect("runs");
        let replay = format!("seed {seed}\n{}", r.outcome.timeline.join("\n"));
        let moved: Vec<_> = r.outcome.failovers.iter().filter(|f| f.instance == 1).collect();
        assert!(
            moved.len() == 1 && moved[0].from == "ctl2" && moved[0].to == "ctl1",
            "the second instance did not move from ctl2 to ctl1: {:?}\n{replay}",
            r.outcome.failovers
        );
        assert!(
            r.outcome.failovers.iter().all(|f| f.instance != 0),
            "the watched instance failed over: {:?}\n{replay}",
            r.outcome.failovers
        );
        let watch = &r.outcome.clients[0];
        // An event every 100 ms for 35 s.
        assert!(watch.attempts > 300, "the watch carried {} events\n{replay}", watch.attempts);
        assert_eq!(watch.failed, 0, "the watch broke: {watch:?}\n{replay}");
        assert!(r.outcome.violations.is_empty(), "{:?}", r.outcome.violations);
    }

    let crash = two_instances_with_a_watch("  - {at: 15s, crash: ctl2}");
    let r = run_daemon(&crash, 1).expect("runs");
    let watch = &r.outcome.clients[0];
    assert!(watch.failed >= 1, "the watch through a crashed proxy did not break: {watch:?}");
    assert!(
        watch.longest_outage < std::time::Duration::from_secs(6),
        "the watch was not reopened through the new master: {watch:?}\n{}",
        r.outcome.timeline.join("\n")
    );
    assert!(watch.last_failure.is_some_and(|t| t.as_nanos() < 25_000_000_000), "{watch:?}");
}

#[test]
fn the_engine_refuses_a_watch_by_name() {
    let s = two_instances_with_a_watch("  - {at: 15s, crash: ctl2}");
    let why = cplb_scenarios::run::engine_refuses(&s).expect("refused");
    assert!(why.contains("kubelet") && why.contains("watch"), "{why}");
    let err = compare(&s, 1).expect_err("compare needs the engine");
    assert!(err.contains("--driver daemon"), "{err}");
}

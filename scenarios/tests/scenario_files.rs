//! Scenario files: bad ones are refused with the file and line; the CLI contract.

mod common;

use common::cplb;
use cplb_scenarios::scenario::parse;

const MINIMAL: &str = "name: t\nduration: 10s\nhosts:\n  - {name: a, role: controller, address: 10.200.0.10}\nconfig: |\n  spec:\n    network:\n      controlPlaneLoadBalancing:\n        enabled: true\n        keepalived:\n          vrrpInstances:\n          - {virtualIPs: [\"10.200.0.200/24\"], authPass: x}\n";

#[test]
fn a_minimal_scenario_parses() {
    let s = parse("t.yaml", MINIMAL).expect("valid");
    assert_eq!(s.spec.hosts.len(), 1);
    assert_eq!(s.spec.duration.as_secs(), 10);
}

#[test]
fn unknown_keys_are_errors_with_file_and_line() {
    let text = format!("{MINIMAL}faults:\n  - {{at: 1s, powerof: a}}\n");
    let e = parse("bad.yaml", &text).expect_err("refused");
    assert_eq!((e.file.as_str(), e.line), ("bad.yaml", 14));
    assert!(e.message.contains("powerof"), "{e}");
    let text = format!("{MINIMAL}expect:\n  final_mastr: a\n");
    let e = parse("bad.yaml", &text).expect_err("refused");
    assert_eq!(e.line, 14);
    let e = parse("bad.yaml", &MINIMAL.replace("duration: 10s", "duration: 10s\nseeed: 3"))
        .expect_err("refused");
    assert_eq!(e.line, 3);
}

#[test]
fn bad_references_and_values_are_named() {
    let e = parse("x", &format!("{MINIMAL}faults:\n  - {{at: 1s, poweroff: nobody}}\n"))
        .expect_err("refused");
    assert!(e.message.contains("unknown host \"nobody\""), "{e}");
    let e =
        parse("x", &format!("{MINIMAL}faults:\n  - {{at: 1s, loss: 1.5}}\n")).expect_err("refused");
    assert!(e.message.contains("between 0 and 1"), "{e}");
    let e =
        parse("x", &MINIMAL.replace("authPass: x", "authPass: toolongpass")).expect_err("refused");
    assert!(e.message.contains("config:") && e.message.contains("authPass"), "{e}");
    assert_eq!(e.line, 12, "the line inside the embedded config, counted in the scenario file");
}

#[test]
fn sim_run_cli_contract() {
    let out = cplb(&["sim", "run", "graceful-stop", "--json"], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for key in [
        "scenario",
        "seed",
        "ok",
        "violations",
        "failovers",
        "client",
        "expectations",
        "final_masters",
    ] {
        assert!(j.get(key).is_some(), "missing {key}");
    }
    let f = &j["failovers"][0];
    for key in [
        "instance",
        "from",
        "to",
        "fault_at_s",
        "new_master_at_s",
        "vip_answering_at_s",
        "failover_s",
    ] {
        assert!(f.get(key).is_some(), "failover missing {key}");
    }
    for key in ["attempts", "failed", "longest_outage_s"] {
        assert!(j["client"].get(key).is_some(), "client missing {key}");
    }
    assert_eq!(j["final_masters"]["k0s-vip-0"], "ctl1");
    assert_eq!(j["ok"], true);
}

#[test]
fn sim_run_exit_codes() {
    let tmp = common::TempDir::new("scenario");
    let dir = &tmp.0;
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "name: x\n").expect("write");
    assert_eq!(cplb(&["sim", "run", bad.to_str().expect("path")], None).status.code(), Some(2));
    let failing = dir.join("failing.yaml");
    std::fs::write(&failing, format!("{MINIMAL}expect:\n  final_master_not: a\n")).expect("write");
    let out = cplb(
        &[
            "sim",
            "run",
            failing.to_str().expect("path"),
            "--out",
            dir.join("out").to_str().expect("p"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(dir.join("out/report.json").exists() && dir.join("out/story.txt").exists());
    assert_eq!(cplb(&["sim", "run", "no-such-scenario"], None).status.code(), Some(2));
    let list = cplb(&["sim", "list"], None);
    assert!(String::from_utf8_lossy(&list.stdout).lines().count() >= 13);
}

#[test]
fn the_story_shows_the_seed_documents_views() {
    let out = cplb(&["sim", "run", "seed-poweroff"], None);
    assert_eq!(out.status.code(), Some(0));
    let story = String::from_utf8_lossy(&out.stdout);
    assert!(story.contains("inet 192.168.122.200/24 scope global secondary eth0"), "{story}");
    assert!(story.contains("TCP  192.168.122.200:6443 rr persistent 360"), "{story}");
    assert!(story.contains("FAULT poweroff controller-0"));
}

#[test]
fn invariants_catch_a_real_dual_master() {
    // Two controllers share a VIP but not a password: each drops the other's adverts, so
    // both stay master while connected. The simulator must say so.
    let text = "name: misconfigured\nduration: 30s\nhosts:\n  - {name: a, role: controller, address: 10.200.0.10}\n  - name: b\n    role: controller\n    address: 10.200.0.11\n    config: |\n      spec:\n        network:\n          controlPlaneLoadBalancing:\n            enabled: true\n            keepalived:\n              vrrpInstances:\n              - {virtualIPs: [\"10.200.0.200/24\"], authPass: other}\nconfig: |\n  spec:\n    network:\n      controlPlaneLoadBalancing:\n        enabled: true\n        keepalived:\n          vrrpInstances:\n          - {virtualIPs: [\"10.200.0.200/24\"], authPass: x}\n";
    let s = parse("misconfigured", text).expect("valid file");
    let r = cplb_scenarios::run::run(&s, 1);
    assert!(!r.ok);
    let kinds: Vec<&str> = r.outcome.violations.iter().map(|v| v.invariant.as_str()).collect();
    assert!(kinds.contains(&"single_master"), "{kinds:?}");
    let first = &r.outcome.violations[0];
    assert!(!first.recent.is_empty(), "the last events before the violation are reported");
}

#[test]
fn the_config_may_be_written_in_place_and_faults_in_short_forms() {
    let text = "name: t\nduration: 30s\nhosts:\n  - {name: a, role: controller, address: 10.200.0.10}\n  - {name: c, role: client, address: 10.200.0.100}\n  - {name: d, role: worker, address: 10.200.0.101}\nconfig:\n  spec:\n    network:\n      controlPlaneLoadBalancing:\n        enabled: true\n        keepalived:\n          vrrpInstances:\n          - virtualIPs: [\"10.200.0.200/24\"]\n            authPass: x\ntraffic:\n  - {from: [c, d], rate: 5}\nfaults:\n  - {at: 5s, delay: \"1ms..80ms\"}\n  - {at: 6s, loss: \"10%\"}\n  - {at: 7s, clock_drift: {a: 500}}\n";
    let s = parse("t.yaml", text).expect("valid");
    assert_eq!(s.spec.traffic.len(), 2, "one source per listed host");
    use cplb_sim::Fault;
    let kinds: Vec<&Fault> = s.spec.faults.iter().map(|f| &f.fault).collect();
    assert!(matches!(kinds[0], Fault::Delay(a, b) if a.as_millis() == 1 && b.as_millis() == 80));
    assert!(matches!(kinds[1], Fault::Loss(r) if (*r - 0.1).abs() < 1e-9));
    assert!(matches!(kinds[2], Fault::ClockDrift(0, p) if *p == 500.0));
    let bad = text.replace("authPass: x", "authPass: toolongpass");
    let e = parse("t.yaml", &bad).expect_err("refused");
    assert_eq!(e.line, 15, "the line in the scenario file: {e}");
}

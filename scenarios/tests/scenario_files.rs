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
    // The seed's `TCP 192.168.122.200:6443 rr persistent 360`, as cplbd programs it: a
    // firewall-mark service, and the loop guard that marks the VIP's traffic.
    assert!(story.contains("FWM  100 rr persistent 360"), "{story}");
    assert!(story.contains("-A -f 100 -s rr -p 360"), "{story}");
    assert!(story.contains("-a -f 100 -r 192.168.122.185:6443 -g -w 1"), "{story}");
    assert!(
        story.contains("nft: tcp 192.168.122.200:6443 gets mark 100 unless it comes from"),
        "{story}"
    );
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

/// Two controllers and a client; the `faults:` entries given start on line 16.
fn with_faults(entries: &str) -> String {
    let base = "name: t\nduration: 30s\nhosts:\n  - {name: a, role: controller, address: 10.200.0.10}\n  - {name: b, role: controller, address: 10.200.0.11}\n  - {name: c, role: client, address: 10.200.0.100}\nconfig: |\n  spec:\n    network:\n      controlPlaneLoadBalancing:\n        enabled: true\n        keepalived:\n          vrrpInstances:\n          - {virtualIPs: [\"10.200.0.200/24\"], authPass: x}\nfaults:\n";
    format!("{base}{entries}")
}

/// A config for a reload, as a block string indented for `config: |` in a block-style
/// fault entry; its `- {virtualIPs ...}` lines are the last ones.
fn reload_block(key: &str, host: &str, instances: &[&str]) -> String {
    let mut s = format!(
        "  - at: 5s\n    reload:\n      host: {host}\n      {key}: |\n        spec:\n          network:\n            controlPlaneLoadBalancing:\n              enabled: true\n              keepalived:\n                vrrpInstances:\n"
    );
    for i in instances {
        s.push_str(&format!("                - {i}\n"));
    }
    s
}

#[test]
fn vip_removed_kernel_refuses_and_reload_parse() {
    use cplb_sim::{Fault, ReloadConfig};
    use std::time::Duration;
    let mut entries = String::from(
        "  - {at: 1s, vip_removed: a}\n  - {at: 2s, kernel_refuses: {host: b, for: 10s}}\n  - {at: 3s, kernel_refuses: {a: 1500ms}}\n  - {at: 4s, reload: a}\n  - {at: 4s, reload: [a, b]}\n",
    );
    entries.push_str(&reload_block(
        "config",
        "[a, b]",
        &[
            "{virtualIPs: [\"10.200.0.200/24\"], authPass: x}",
            "{virtualIPs: [\"10.200.0.201/24\"], authPass: y}",
        ],
    ));
    entries.push_str(&reload_block(
        "invalid_config",
        "b",
        &["{virtualIPs: [\"10.200.0.200/24\"], authPass: toolongpass}"],
    ));
    entries.push_str(
        "  - at: 6s\n    reload:\n      host: b\n      config:\n        spec:\n          network:\n            controlPlaneLoadBalancing:\n              enabled: true\n              keepalived:\n                vrrpInstances:\n                - {virtualIPs: [\"10.200.0.200/24\"], authPass: x}\n",
    );
    let s = parse("t.yaml", &with_faults(&entries)).unwrap_or_else(|e| panic!("{e}"));
    let f: Vec<(u64, &Fault)> =
        s.spec.faults.iter().map(|f| (f.at.as_millis() as u64, &f.fault)).collect();
    assert_eq!(f.len(), 10, "{f:#?}");
    assert_eq!(f[0], (1000, &Fault::VipRemoved(0)));
    assert_eq!(f[1], (2000, &Fault::KernelRefuses(1, Duration::from_secs(10))));
    assert_eq!(f[2], (3000, &Fault::KernelRefuses(0, Duration::from_millis(1500))));
    assert_eq!(f[3], (4000, &Fault::Reload(0, ReloadConfig::Same)));
    assert_eq!(f[4], (4000, &Fault::Reload(0, ReloadConfig::Same)), "a list: one per host");
    assert_eq!(f[5], (4000, &Fault::Reload(1, ReloadConfig::Same)));
    for (i, host) in [(6, 0), (7, 1)] {
        let (at, Fault::Reload(h, ReloadConfig::New(c))) = f[i] else {
            panic!("not a reload with a config: {:?}", f[i]);
        };
        assert_eq!((at, *h), (5000, host));
        let k = c.enabled_keepalived().expect("CPLB enabled");
        assert_eq!(k.vrrp_instances.len(), 2, "the new file has the added instance");
    }
    let (_, Fault::Reload(1, ReloadConfig::Invalid { text, error })) = f[8] else {
        panic!("not an invalid reload: {:?}", f[8]);
    };
    assert!(text.contains("toolongpass") && text.starts_with("spec:"), "{text}");
    assert!(error.contains("authPass"), "{error}");
    let (_, Fault::Reload(1, ReloadConfig::New(c))) = f[9] else {
        panic!("a config written in place: {:?}", f[9]);
    };
    assert_eq!(**c, s.spec.config, "the same configuration, written in place");
}

#[test]
fn bad_new_faults_are_refused_with_their_line() {
    let cases: &[(&str, usize, &str)] = &[
        ("  - {at: 1s, vip_removed: nobody}\n", 16, "unknown host \"nobody\""),
        (
            "  - {at: 1s, heal: true}\n  - {at: 1s, kernel_refuses: {host: a}}\n",
            17,
            "needs \"for\"",
        ),
        ("  - {at: 1s, kernel_refuses: {for: 3s}}\n", 16, "needs \"host\""),
        ("  - {at: 1s, kernel_refuses: a}\n", 16, "{host: HOST, for: TIME} or {HOST: TIME}"),
        ("  - {at: 1s, kernel_refuses: {a: 0s}}\n", 16, "longer than 0"),
        ("  - {at: 1s, kernel_refuses: {a: soon}}\n", 16, "kernel_refuses for"),
        ("  - {at: 1s, kernel_refuses: {host: a, for: 1s, ppm: 3}}\n", 16, "unknown key \"ppm\""),
        ("  - {at: 1s, reload: {host: [a, nobody]}}\n", 16, "unknown host \"nobody\""),
        ("  - {at: 1s, reload: {config: x}}\n", 16, "reload needs \"host\""),
        ("  - {at: 1s, reload: {host: a, file: x}}\n", 16, "unknown key \"file\""),
        ("  - {at: 1s, reload: {host: []}}\n", 16, "at least one host"),
        ("  - {at: 1s, reload: {host: a, config: x, invalid_config: y}}\n", 16, "not both"),
        ("  - {at: 1s, relaod: a}\n", 16, "unknown key \"relaod\""),
    ];
    for (entries, line, message) in cases {
        let e = parse("bad.yaml", &with_faults(entries)).expect_err(entries);
        assert_eq!((e.file.as_str(), e.line), ("bad.yaml", *line), "{entries}: {e}");
        assert!(e.message.contains(message), "{entries}: {e}");
    }
}

#[test]
fn a_reload_config_is_checked_like_the_scenarios_with_the_scenario_files_line() {
    // The new file's bad authPass is on the entry's last line: 16 + 10.
    let bad = reload_block(
        "config",
        "a",
        &["{virtualIPs: [\"10.200.0.200/24\"], authPass: toolongpass}"],
    );
    let e = parse("bad.yaml", &with_faults(&bad)).expect_err("refused");
    assert_eq!(e.line, 26, "{e}");
    assert!(e.message.contains("config:") && e.message.contains("authPass"), "{e}");
    // A valid file given as invalid_config is refused too, so a typo cannot pass for a test
    // of a refused reload (or the reverse).
    let valid =
        reload_block("invalid_config", "a", &["{virtualIPs: [\"10.200.0.200/24\"], authPass: x}"]);
    let e = parse("bad.yaml", &with_faults(&valid)).expect_err("refused");
    assert!(e.message.contains("is a valid configuration"), "{e}");
    assert_eq!(e.line, 20, "the invalid_config block's first line: {e}");
}

#[test]
fn state_at_and_no_transitions_parse() {
    use cplb_core::vrrp::State;
    use cplb_scenarios::scenario::Expectation;
    use std::time::Duration;
    let text = format!(
        "{}expect:\n  state_at: [{{time: 5s, host: b, state: fault}}, {{time: 6s, host: a, state: Master, instance: 1}}]\n  no_transitions: [20s, {{since: 1s, until: 4s, host: a, instance: 0}}]\n",
        with_faults("  - {at: 1s, vip_removed: a}\n")
    );
    let s = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let secs = Duration::from_secs;
    assert_eq!(
        s.expect,
        vec![
            Expectation::StateAt { at: secs(5), instance: 0, host: 1, state: State::Fault },
            Expectation::StateAt { at: secs(6), instance: 1, host: 0, state: State::Master },
            Expectation::NoTransitions { since: secs(20), until: None, host: None, instance: None },
            Expectation::NoTransitions {
                since: secs(1),
                until: Some(secs(4)),
                host: Some(0),
                instance: Some(0),
            },
        ]
    );
    let bad = |expect: &str| {
        let text = format!("{}expect:\n{expect}", with_faults("  - {at: 1s, vip_removed: a}\n"));
        parse("bad.yaml", &text).expect_err(expect)
    };
    let e = bad("  state_at: {time: 5s, host: a, state: active}\n");
    assert_eq!(e.line, 18, "{e}");
    assert!(e.message.contains("expected initialize, backup, master or fault"), "{e}");
    let e = bad("  state_at: {time: 5s, host: a}\n");
    assert!(e.message.contains("needs \"state\""), "{e}");
    let e = bad("  no_transitions: {since: 5s, until: 5s}\n");
    assert!(e.message.contains("until must be after since"), "{e}");
    let e = bad("  no_transitions: {until: 5s}\n");
    assert!(e.message.contains("needs \"since\""), "{e}");
    let e = bad("  no_transitions: {since: 5s, after: 1s}\n");
    assert!(e.message.contains("unknown key \"after\""), "{e}");
    let e = bad("  final_vip_holders: {vip: 10.200.0.200}\n");
    assert!(e.message.contains("needs \"hosts\""), "{e}");
    let e = bad("  final_vip_holders: {vip: ten, hosts: [a]}\n");
    assert_eq!(e.line, 18, "{e}");
    assert!(e.message.contains("vip must be an IP address"), "{e}");
    let text = format!(
        "{}expect:\n  final_vip_holders: [{{hosts: []}}, {{vip: \"10.200.0.201\", hosts: [b, a]}}]\n",
        with_faults("  - {at: 1s, vip_removed: a}\n")
    );
    let s = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    assert_eq!(
        s.expect,
        vec![
            Expectation::FinalVipHolders { vip: ip("10.200.0.200"), hosts: vec![] },
            Expectation::FinalVipHolders { vip: ip("10.200.0.201"), hosts: vec![0, 1] },
        ],
        "the default vip is the configuration's first; hosts are sorted"
    );
}

#[test]
fn state_at_and_no_transitions_read_the_run() {
    // graceful-stop: ctl2 (master) is stopped at 20 s, ctl1 takes over; ctl2 starts at 40 s.
    let text = cplb_scenarios::catalog::get("graceful-stop").expect("catalog");
    let (head, _) = text.split_once("expect:").expect("has expectations");
    let check = |expect: &str| {
        let s = parse("x", &format!("{head}expect:\n{expect}")).unwrap_or_else(|e| panic!("{e}"));
        let r = cplb_scenarios::run::run(&s, s.seed);
        r.verdicts.iter().map(|v| (v.ok, format!("{}: {}", v.name, v.detail))).collect::<Vec<_>>()
    };
    let held = check(
        "  state_at:\n    - {time: 19s, host: ctl2, state: master}\n    - {time: 19s, host: ctl1, state: backup}\n    - {time: 25s, host: ctl2, state: initialize}\n    - {time: 25s, host: ctl1, state: master}\n    - {time: 45s, host: ctl2, state: backup}\n  no_transitions: [{since: 25s, until: 40s}, {since: 5s, until: 20s}, {since: 41s, host: ctl0}]\n  final_vip_holders: {hosts: [ctl1]}\n",
    );
    for (ok, what) in &held {
        assert!(ok, "{what}");
    }
    let failed = check(
        "  state_at: {time: 25s, host: ctl2, state: master}\n  no_transitions: [{since: 20s, until: 25s}, {since: 40s, host: ctl2}]\n  final_vip_holders: [{hosts: [ctl1, ctl2]}, {vip: 10.200.0.201, hosts: [ctl1]}]\n",
    );
    for (ok, what) in &failed {
        assert!(!ok, "{what}");
    }
    assert!(failed[1].1.contains("state change(s), the first:"), "{}", failed[1].1);
    // A killed daemon says nothing; its instances count as Initialize from the crash on.
    let text = cplb_scenarios::catalog::get("crash-leaves-vip").expect("catalog");
    let (head, _) = text.split_once("expect:").expect("has expectations");
    let s = parse(
        "x",
        &format!("{head}expect:\n  state_at: {{time: 30s, host: ctl2, state: initialize}}\n"),
    )
    .expect("parses");
    let r = cplb_scenarios::run::run(&s, s.seed);
    assert!(r.verdicts[0].ok, "{:?}", r.verdicts[0]);
}

#[test]
fn clients_recover_counts_from_the_end_of_a_kernel_refusal() {
    // One controller, stopped for good at 6 s: clients fail to the end. The kernel refusal
    // from 5 s lasts past the end of the run, so the recovery deadline is not reached.
    let base = with_faults(
        "  - {at: 5s, kernel_refuses: {a: 60s}}\n  - {at: 6s, stop: a}\n  - {at: 6s, stop: b}\n",
    );
    let text = format!(
        "{}traffic:\n  - {{from: c, rate: 10, start: 1s}}\nexpect:\n  clients_recover: true\n",
        base
    );
    let s = parse("t.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let r = cplb_scenarios::run::run(&s, 1);
    assert!(r.verdicts[0].ok, "{:?}", r.verdicts[0]);
    // How long a node may take to notice the refusal is over: its next retry, which also
    // ends the Fault hold the refusal caused.
    use std::time::Duration;
    assert_eq!(cplb_sim::Bounds::kernel_noticed(), Duration::from_secs(5));
    let without = text.replace("  - {at: 5s, kernel_refuses: {a: 60s}}\n", "");
    let s = parse("t.yaml", &without).unwrap_or_else(|e| panic!("{e}"));
    let r = cplb_scenarios::run::run(&s, 1);
    assert!(!r.verdicts[0].ok, "{:?}", r.verdicts[0]);
}

#[test]
fn the_documented_new_fault_forms_parse() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scenarios.md"),
    )
    .expect("docs/scenarios.md");
    let start = doc.find("faults:\n  - {at: 20s, vip_removed: ctl2}").expect("the snippet");
    let snippet = &doc[start..start + doc[start..].find("```").expect("its end")];
    let text = format!(
        "name: doc\nduration: 60s\nhosts:\n  - {{name: ctl0, role: controller, address: 10.200.0.10}}\n  - {{name: ctl1, role: controller, address: 10.200.0.11}}\n  - {{name: ctl2, role: controller, address: 10.200.0.12}}\nconfig: |\n  spec:\n    network:\n      controlPlaneLoadBalancing:\n        enabled: true\n        keepalived:\n          vrrpInstances:\n          - {{virtualIPs: [\"10.200.0.200/24\"], authPass: k0s-lab1}}\n{snippet}"
    );
    let s = parse("docs/scenarios.md", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.spec.faults.len(), 7, "{:#?}", s.spec.faults);
}

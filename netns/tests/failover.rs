//! cplbd failing over for real: three controllers in network namespaces (root only).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, MARGIN, MASTER_DOWN, SKEW, can_run};
use nix::sys::signal::Signal;

fn start(tag: &str, net: &str) -> (Cluster, usize) {
    let mut c = Cluster::new(tag, net, 3);
    let master = c.start_all();
    let s = c.status(master).expect("status answers");
    assert_eq!(s.instances[0].state, "master", "{s:?}");
    (c, master)
}

#[test]
#[ignore = "needs root: network namespaces"]
fn sigkill_moves_the_vip_within_master_down_interval_and_a_restart_reconciles() {
    can_run("sigkill_moves_the_vip_within_master_down_interval_and_a_restart_reconciles");
    let (mut c, master) = start("kill", "10.200.1");
    // Only CAP_NET_ADMIN (12) and CAP_NET_RAW (13) are left after start-up.
    // Every thread: the proxy's threads start after the drop and hold no more.
    let pid = c.pid(master).unwrap();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().collect();
    assert!(tasks.len() >= 2, "the daemon's thread and the proxy's");
    for task in tasks {
        let caps = std::fs::read_to_string(task.path().join("status")).unwrap();
        let eff = caps.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        assert!(eff.ends_with("0000000000003000"), "{:?}: {eff}", task.path());
    }
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());

    let t0 = Instant::now();
    c.signal(master, Signal::SIGKILL).expect("killed");
    // The dead daemon leaves the VIP on its interface (it had no chance to remove it), so
    // "moved" means: another controller holds it.
    let took = c
        .wait_holders(t0, Duration::from_secs(10), |h| h.iter().any(|&i| i != master))
        .unwrap_or_else(|| panic!("no takeover\n{}", c.logs()));
    eprintln!("SIGKILL: VIP on a new master after {took:?}");
    assert!(took <= MASTER_DOWN + MARGIN, "took {took:?}\n{}", c.logs());
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());

    // Restart on the killed node: it removes the stale VIP, stays backup, and its nftables
    // table holds the redirect once.
    assert!(c.holders().contains(&master), "the stale VIP was there before the restart");
    c.start_cplbd(master);
    let t1 = Instant::now();
    c.wait_holders(t1, Duration::from_secs(5), |h| h.len() == 1 && !h.contains(&master))
        .unwrap_or_else(|| panic!("stale VIP stayed: {:?}\n{}", c.holders(), c.logs()));
    std::thread::sleep(Duration::from_secs(1));
    let table = c.nft_table(master);
    assert_eq!(table.matches("redirect to :6444").count(), 1, "{table}");
    let s = c.status(master).expect("status");
    assert_eq!(s.instances[0].state, "backup", "{s:?}");
    // Restart again: still exactly one rule.
    c.signal(master, Signal::SIGKILL);
    c.start_cplbd(master);
    std::thread::sleep(Duration::from_secs(1));
    let table = c.nft_table(master);
    assert_eq!(table.matches("redirect to :6444").count(), 1, "{table}");
    assert_eq!(c.holders().len(), 1);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn sigterm_resigns_within_skew_time_and_removes_everything() {
    can_run("sigterm_resigns_within_skew_time_and_removes_everything");
    let (mut c, master) = start("term", "10.200.2");
    let t0 = Instant::now();
    let status = c.signal(master, Signal::SIGTERM).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", c.logs());
    let took = c
        .wait_holders(t0, Duration::from_secs(5), |h| h.len() == 1 && h[0] != master)
        .unwrap_or_else(|| panic!("no takeover: {:?}\n{}", c.holders(), c.logs()));
    eprintln!("SIGTERM: VIP on a new master after {took:?}");
    assert!(took <= SKEW + MARGIN, "took {took:?}\n{}", c.logs());
    // Its VIP and its nftables table are gone.
    assert!(!c.holders().contains(&master));
    assert_eq!(c.nft_table(master), "", "the table stayed");
    let others: Vec<usize> = (0..3).filter(|&i| i != master).collect();
    let resigned = others
        .iter()
        .filter_map(|&i| c.status(i))
        .any(|s| s.instances[0].priority_zero_received > 0);
    assert!(resigned, "nobody saw the priority-0 advertisement");
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_master_whose_api_server_stops_answering_hands_the_vip_to_a_healthy_controller() {
    can_run("a_master_whose_api_server_stops_answering_hands_the_vip_to_a_healthy_controller");
    let (mut c, master) = start("api", "10.200.3");
    // Let every node's health checker see every API server up.
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    c.stop_api(master);
    // Two failed probes (fall 2, 1 s apart) lower its priority by 50; a healthy backup then
    // preempts within Master_Down_Interval.
    let took = c
        .wait_holders(t0, Duration::from_secs(12), |h| h.len() == 1 && h[0] != master)
        .unwrap_or_else(|| panic!("VIP stayed on the unhealthy node\n{}", c.logs()));
    eprintln!("API server down: VIP moved after {took:?}");
    let s = c.status(master).expect("status");
    assert!(s.instances[0].priority < 200, "{s:?}");
    // The metrics endpoint tells the same story.
    let m = c.metrics(master);
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(m.contains("cplb_vrrp_state{instance=\"k0s-vip-0\",vrid=\"51\"} 1"), "{m}");
    assert!(m.contains("cplb_vrrp_transitions_total{instance=\"k0s-vip-0\",vrid=\"51\"} 3"), "{m}");
    assert!(
        m.contains(&format!(
            "cplb_real_server_healthy{{server=\"{}:6443\",local=\"true\"}} 0",
            c.addr(master)
        )),
        "{m}"
    );
    assert!(!s.real_servers.iter().find(|r| r.local).unwrap().healthy, "{s:?}");
    // Clients are served by the healthy API servers only.
    for _ in 0..6 {
        let name = c.client_answered_within(Duration::from_secs(3)).expect("answered");
        assert_ne!(name, format!("c{master}"));
    }
}

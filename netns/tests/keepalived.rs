//! Interoperation with keepalived (Debian's package), VRRP only, configured as k0s
//! generates it: VRRPv2, PASS authentication, priority 200, advert 1 s (root only).
//!
//! c0 and c1 run keepalived, c2 runs cplbd.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::{Cluster, MARGIN, MASTER_DOWN, can_run};
use nix::sys::signal::Signal;

const CPLBD: usize = 2;

fn keepalived_conf(vip: &str) -> String {
    // k0s's template (cplb_templates.go) rendered for one instance, multicast.
    format!(
        "vrrp_instance k0s-vip-0 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority 200\n    advert_int 1\n    authentication {{\n        auth_type PASS\n        auth_pass k0s-lab1\n    }}\n    virtual_ipaddress {{\n        {vip}/24\n    }}\n}}\n"
    )
}

fn start_keepalived(c: &Cluster, i: usize) -> Child {
    let conf = c.dir.join(format!("keepalived-{i}.conf"));
    std::fs::write(&conf, keepalived_conf(&c.vip)).unwrap();
    let pid = |what: &str| c.dir.join(format!("ka{i}-{what}.pid")).to_string_lossy().into_owned();
    c.topo
        .spawn(
            &format!("c{i}"),
            "keepalived",
            &[
                "--dont-fork",
                "--vrrp",
                "--no-syslog",
                "--log-console",
                "--log-detail",
                "--use-file",
                &conf.to_string_lossy(),
                "--pid",
                &pid("main"),
                "--vrrp_pid",
                &pid("vrrp"),
                "--checkers_pid",
                &pid("checkers"),
            ],
            &c.dir.join(format!("keepalived-{i}.log")),
        )
        .expect("keepalived starts")
}

/// What keepalived logs when it rejects a packet (vrrp.c's receive checks).
const REJECTIONS: [&str; 9] = [
    "bogus",
    "invalid",
    "mismatch",
    "not present",
    "discard",
    "wrong",
    "ttl",
    "authentication",
    "checksum",
];

fn keepalived_rejections(c: &Cluster) -> Vec<String> {
    (0..2)
        .flat_map(|i| {
            std::fs::read_to_string(c.dir.join(format!("keepalived-{i}.log")))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    let l = l.to_lowercase();
                    REJECTIONS.iter().any(|r| l.contains(r))
                })
                .map(|l| format!("keepalived c{i}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn cplbd_rejections(c: &Cluster) -> Vec<String> {
    let Some(s) = c.status(CPLBD) else { return vec!["cplbd status unavailable".into()] };
    let mut out: Vec<String> = s
        .instances
        .iter()
        .flat_map(|i| i.dropped.iter().map(|(k, v)| format!("cplbd {k}: {v}")))
        .collect();
    out.extend(s.unrouted_dropped.iter().map(|(k, v)| format!("cplbd unrouted {k}: {v}")));
    out
}

fn kill_all_keepalived(c: &Cluster, i: usize) {
    c.topo.kill_all(&format!("c{i}"), Signal::SIGKILL);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn one_cplbd_and_two_keepalived_elect_one_master_and_fail_over_both_ways() {
    can_run("one_cplbd_and_two_keepalived_elect_one_master_and_fail_over_both_ways");
    assert!(
        std::process::Command::new("keepalived").arg("--version").output().is_ok(),
        "keepalived is not installed (the test command installs it)"
    );
    let mut c = Cluster::new("ka", "10.200.4", 3);
    for i in 0..3 {
        c.start_api(i);
    }
    // cplbd first: alone, it becomes master.
    c.start_cplbd(CPLBD);
    let t = Instant::now();
    c.wait_holders(t, Duration::from_secs(6), |h| h == [CPLBD])
        .unwrap_or_else(|| panic!("cplbd alone did not take the VIP\n{}", c.logs()));
    let mut kas: Vec<Option<Child>> = (0..2).map(|i| Some(start_keepalived(&c, i))).collect();

    // 30 s of steady state: one master (cplbd), never two.
    let steady = Instant::now();
    while steady.elapsed() < Duration::from_secs(30) {
        let h = c.holders();
        assert_eq!(h, vec![CPLBD], "dual or lost master during steady state\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = c.status(CPLBD).unwrap();
    assert_eq!(s.instances[0].state, "master");
    assert!(keepalived_rejections(&c).is_empty(), "{:?}", keepalived_rejections(&c));
    assert!(cplbd_rejections(&c).is_empty(), "{:?}", cplbd_rejections(&c));

    // Kill cplbd: a keepalived takes over (c1 wins the tie between the two on address).
    let t0 = Instant::now();
    c.signal(CPLBD, Signal::SIGKILL).expect("killed");
    let took = c
        .wait_holders(t0, Duration::from_secs(10), |h| h.iter().any(|&i| i < 2))
        .unwrap_or_else(|| panic!("keepalived did not take over\n{}", c.logs()));
    eprintln!("cplbd killed: keepalived master after {took:?}");
    assert!(took <= MASTER_DOWN + MARGIN, "took {took:?}");
    // cplbd restarts (removing its stale VIP) and stays backup under the keepalived master.
    c.start_cplbd(CPLBD);
    let ka_master = c
        .wait_holders(Instant::now(), Duration::from_secs(6), |h| h.len() == 1 && h[0] < 2)
        .map(|_| c.holders()[0])
        .unwrap_or_else(|| panic!("no single keepalived master: {:?}\n{}", c.holders(), c.logs()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.holders(), vec![ka_master], "{}", c.logs());
    assert_eq!(c.status(CPLBD).unwrap().instances[0].state, "backup");

    // Kill the keepalived master: the VIP moves to cplbd. The other keepalived is stopped
    // first: with equal priorities, whichever backup times out first keeps the VIP (a backup
    // never preempts an equal priority), so with both still there the VIP could stay with
    // keepalived.
    let other = 1 - ka_master;
    c.topo.kill_all(&format!("c{other}"), Signal::SIGTERM);
    if let Some(mut k) = kas[other].take() {
        let _ = k.wait();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(c.holders(), vec![ka_master], "{}", c.logs());
    let t1 = Instant::now();
    c.topo.set_link(&format!("c{ka_master}"), false).unwrap();
    kill_all_keepalived(&c, ka_master);
    if let Some(mut k) = kas[ka_master].take() {
        let _ = k.wait();
    }
    let took = c
        .wait_holders(t1, Duration::from_secs(10), |h| h.contains(&CPLBD))
        .unwrap_or_else(|| panic!("cplbd did not take over from keepalived\n{}", c.logs()));
    eprintln!("keepalived killed: cplbd master after {took:?}");
    assert!(took <= MASTER_DOWN + MARGIN, "took {took:?}");
    std::thread::sleep(Duration::from_secs(3));
    let live: Vec<usize> = c.holders().into_iter().filter(|&i| i != ka_master).collect();
    assert_eq!(live, vec![CPLBD], "{}", c.logs());
    assert!(keepalived_rejections(&c).is_empty(), "{:?}", keepalived_rejections(&c));
    assert!(cplbd_rejections(&c).is_empty(), "{:?}", cplbd_rejections(&c));
    for k in kas.iter_mut().flatten() {
        let _ = k.kill();
        let _ = k.wait();
    }
}

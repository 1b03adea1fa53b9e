//! cplbd repairing what others change and following the operator (root only): the VIP
//! deleted by hand, the link going down, the nftables table deleted, SIGHUP reloads. Each
//! test asserts what a client of the VIP sees.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, MARGIN, MASTER_DOWN, can_run};
use nix::sys::signal::Signal;

/// Three controllers with a settled master; returns it.
fn start(tag: &str, net: &str) -> (Cluster, usize) {
    let mut c = Cluster::new(tag, net, 3);
    let master = c.start_all();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    (c, master)
}

fn exec(c: &Cluster, i: usize, program: &str, args: &[&str]) {
    let out = c.topo.exec(&format!("c{i}"), program, args).expect("runs");
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn transitions(c: &Cluster) -> Vec<u64> {
    (0..3)
        .map(|i| c.status(i).map_or(u64::MAX, |s| s.instances.iter().map(|x| x.transitions).sum()))
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_vip_deleted_by_hand_is_put_back_and_clients_are_answered_within_two_seconds() {
    can_run("vip_deleted_by_hand");
    let (c, master) = start("vipdel", "10.200.11");
    let before = transitions(&c);
    let vip = format!("{}/24", c.vip);
    let t0 = Instant::now();
    exec(&c, master, "ip", &["addr", "del", &vip, "dev", "eth0"]);
    let back = c
        .wait_holders(t0, Duration::from_secs(2), |h| h == [master])
        .unwrap_or_else(|| panic!("the VIP was not put back: {:?}\n{}", c.holders(), c.logs()));
    eprintln!("VIP deleted by hand: back on the master after {back:?}");
    let answered = c.client_answered_within(Duration::from_secs(2));
    assert!(answered.is_ok(), "{answered:?}\n{}", c.logs());
    assert!(t0.elapsed() < Duration::from_secs(3), "answered after {:?}", t0.elapsed());
    // A repair, not a failover.
    assert_eq!(transitions(&c), before, "{}", c.logs());
    assert_eq!(c.holders(), [master]);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn the_masters_link_down_moves_the_vip_and_the_old_master_reports_fault_then_backup() {
    can_run("link_down");
    let (c, master) = start("linkdown", "10.200.12");
    let t0 = Instant::now();
    exec(&c, master, "ip", &["link", "set", "eth0", "down"]);
    let took = c
        .wait_holders(t0, Duration::from_secs(10), |h| h.iter().any(|&i| i != master))
        .unwrap_or_else(|| panic!("no takeover\n{}", c.logs()));
    eprintln!("link down: VIP on a new master after {took:?}");
    assert!(took <= MASTER_DOWN + MARGIN, "took {took:?}\n{}", c.logs());
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    let s = c.status(master).expect("status");
    assert_eq!(s.instances[0].state, "fault", "{s:?}\n{}", c.logs());
    assert!(!c.holders().contains(&master), "the old master kept the VIP: {:?}", c.holders());

    let new_master = c.holders()[0];
    exec(&c, master, "ip", &["link", "set", "eth0", "up"]);
    // One master, no flap: the new master keeps it (equal priorities do not preempt).
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(5) {
        assert_eq!(c.holders(), [new_master], "{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = c.status(master).expect("status");
    assert_eq!(s.instances[0].state, "backup", "{s:?}");
    assert!(c.client_answered_within(Duration::from_secs(2)).is_ok(), "{}", c.logs());
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_deleted_nftables_table_is_restored_and_clients_are_answered_within_five_seconds() {
    can_run("nft_deleted");
    let (c, master) = start("nftdel", "10.200.13");
    assert_eq!(c.nft_table(master).matches("redirect to :6444").count(), 1);
    let t0 = Instant::now();
    exec(&c, master, "nft", &["delete", "table", "ip", "cplb"]);
    // Without the redirect nothing listens on VIP:6443.
    assert!(c.client_fetch().is_err(), "the client was answered without the redirect");
    let answered = c.client_answered_within(Duration::from_secs(5));
    assert!(answered.is_ok(), "{answered:?}\n{}", c.logs());
    eprintln!("nft table deleted: clients answered again after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(6));
    assert_eq!(c.nft_table(master).matches("redirect to :6444").count(), 1);
    let s = c.status(master).expect("status");
    assert!(s.dataplane.applied && s.kernel_refusals.is_empty(), "{s:?}");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn sighup_reloads_same_file_added_instance_and_refuses_an_invalid_one() {
    can_run("sighup");
    let (mut c, master) = start("hup", "10.200.14");
    let pids: Vec<u32> = (0..3).map(|i| c.pid(i).unwrap()).collect();
    let hup = |c: &Cluster, i: usize| {
        let pid = nix::unistd::Pid::from_raw(c.pid(i).unwrap() as i32);
        nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    };

    // The same file: no transition, still serving.
    let before = transitions(&c);
    for i in 0..3 {
        hup(&c, i);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(transitions(&c), before, "{}", c.logs());
    assert_eq!(c.holders(), [master]);
    assert!(c.client_answered_within(Duration::from_secs(1)).is_ok(), "{}", c.logs());

    // An added instance: its VIP comes up on exactly one node; the first stays put.
    let config = c.dir.join("k0s.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let vip2 = format!("{}.201", c.net);
    let added = format!(
        "{text}        - virtualIPs: [\"{vip2}/24\"]\n          authPass: k0s-lab2\n          virtualRouterID: 52\n          interface: eth0\n"
    );
    std::fs::write(&config, &added).unwrap();
    for i in 0..3 {
        hup(&c, i);
    }
    let holders2 = |c: &Cluster| -> Vec<usize> {
        (0..3)
            .filter(|i| {
                c.topo
                    .addresses(&format!("c{i}"))
                    .is_ok_and(|a| a.iter().any(|x| x.starts_with(&format!("{vip2}/"))))
            })
            .collect()
    };
    let t0 = Instant::now();
    while holders2(&c).len() != 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "second VIP on {:?}\n{}",
            holders2(&c),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(holders2(&c).len(), 1, "{}", c.logs());
    assert_eq!(c.holders(), [master], "{}", c.logs());
    let s = c.status(master).unwrap();
    assert_eq!(s.instances.len(), 2, "{s:?}");

    // An invalid file: refused, the daemons keep running what they ran.
    std::fs::write(
        &config,
        "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: maybe\n",
    )
    .unwrap();
    for i in 0..3 {
        hup(&c, i);
    }
    std::thread::sleep(Duration::from_secs(1));
    for (i, pid) in pids.iter().enumerate() {
        assert_eq!(c.pid(i), Some(*pid));
        assert!(
            c.daemons[i].as_mut().unwrap().try_wait().unwrap().is_none(),
            "cplbd {i} exited\n{}",
            c.logs()
        );
    }
    assert!(
        std::fs::read_to_string(c.log(master)).unwrap().contains("reload refused"),
        "{}",
        c.logs()
    );
    assert_eq!(c.status(master).unwrap().instances.len(), 2);
    assert!(c.client_answered_within(Duration::from_secs(1)).is_ok(), "{}", c.logs());

    // A new proxy port cannot be taken up by a reload (the listener was bound at start):
    // refused, clients still served on the old one.
    std::fs::write(&config, format!("{added}        userSpaceProxyBindPort: 6445\n")).unwrap();
    hup(&c, master);
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(c.log(master)).unwrap();
    assert!(log.contains("moving userSpaceProxyBindPort (6444 to 6445) needs a restart"), "{log}");
    assert_eq!(
        c.nft_table(master).matches("redirect to :6444").count(),
        2,
        "{}",
        c.nft_table(master)
    );
    assert!(c.client_answered_within(Duration::from_secs(1)).is_ok(), "{}", c.logs());

    // USR1 writes the status into the log; INT, USR2 and HUP never kill it.
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2] {
        let pid = nix::unistd::Pid::from_raw(c.pid(master).unwrap() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        std::fs::read_to_string(c.log(master)).unwrap().contains("SIGUSR1: status"),
        "{}",
        c.logs()
    );
    assert!(c.daemons[master].as_mut().unwrap().try_wait().unwrap().is_none());
    // SIGINT resigns like SIGTERM: the VIP moves within Skew_Time, nothing is left behind.
    let t1 = Instant::now();
    let status = c.signal(master, Signal::SIGINT).expect("exits on SIGINT");
    assert!(status.success(), "{status:?}");
    c.wait_holders(t1, Duration::from_secs(2), |h| h.len() == 1 && !h.contains(&master))
        .unwrap_or_else(|| panic!("{:?}\n{}", c.holders(), c.logs()));
    assert!(c.nft_table(master).is_empty(), "{}", c.nft_table(master));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn an_ipv6_cluster_fails_over_within_master_down_interval_after_a_crash() {
    can_run("ipv6_crash");
    let mut c = Cluster::new_v6("v6kill", "fd00:200:15", 3);
    let master = c.start_all();
    let s = c.status(master).expect("status");
    assert_eq!(s.instances[0].state, "master", "{s:?}");
    // The backups hear the master's VRRPv3 adverts from its link-local address, without drops.
    let backup = (master + 1) % 3;
    let b = c.status(backup).expect("status");
    assert!(b.instances[0].master.as_deref().is_some_and(|m| m.starts_with("fe80:")), "{b:?}");
    assert!(b.instances[0].adverts_received > 0 && b.instances[0].dropped.is_empty(), "{b:?}");
    assert!(c.client_answered_within(Duration::from_secs(5)).is_ok(), "{}", c.logs());

    let t0 = Instant::now();
    c.signal(master, Signal::SIGKILL).expect("killed");
    let took = c
        .wait_holders(t0, Duration::from_secs(10), |h| h.iter().any(|&i| i != master))
        .unwrap_or_else(|| panic!("no takeover\n{}", c.logs()));
    eprintln!("IPv6 SIGKILL: VIP on a new master after {took:?}");
    assert!(took <= MASTER_DOWN + MARGIN, "took {took:?}\n{}", c.logs());
    // The client reaches the new master: its neighbour entry was corrected by the
    // unsolicited neighbour advertisement.
    let answered = c.client_answered_within(Duration::from_secs(3));
    assert!(answered.is_ok(), "{answered:?}\n{}", c.logs());
}

#[test]
#[ignore = "needs root: network namespaces"]
fn an_interface_deleted_and_created_again_is_followed_by_name() {
    can_run("interface_recreated");
    let (mut c, master) = start("recreate", "10.200.16");
    let ns = c.topo.ns(&format!("c{master}"));
    let lan = c.topo.lan();
    let port = format!("p{master}");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("ip").args(args).output().expect("ip runs");
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // Deleting eth0 takes the VIP with it: another controller takes over.
    let t0 = Instant::now();
    run(&["-n", &ns, "link", "del", "eth0"]);
    let took = c
        .wait_holders(t0, Duration::from_secs(10), |h| h.iter().any(|&i| i != master))
        .unwrap_or_else(|| panic!("no takeover\n{}", c.logs()));
    eprintln!("interface deleted: VIP on a new master after {took:?}");
    assert!(took <= MASTER_DOWN + MARGIN, "took {took:?}\n{}", c.logs());
    // Created again (another index), its address only a moment later.
    run(&["-n", &lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
    run(&["-n", &lan, "link", "set", &port, "master", "br0"]);
    run(&["-n", &lan, "link", "set", &port, "up"]);
    run(&["-n", &ns, "link", "set", "eth0", "up"]);
    std::thread::sleep(Duration::from_millis(300));
    let address = format!("{}/24", c.addr(master));
    run(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
    let t1 = Instant::now();
    loop {
        let s = c.status(master);
        if s.as_ref().is_some_and(|s| s.instances.first().is_some_and(|i| i.state == "backup")) {
            break;
        }
        assert!(t1.elapsed() < Duration::from_secs(10), "not back as backup: {s:?}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    // It runs on the new interface: with the other two stopped it takes the VIP there and
    // clients are answered through it.
    for i in (0..3).filter(|&i| i != master) {
        assert!(c.signal(i, Signal::SIGTERM).is_some_and(|s| s.success()), "{}", c.logs());
    }
    c.wait_holders(Instant::now(), Duration::from_secs(3), |h| h == [master])
        .unwrap_or_else(|| panic!("the VIP is on {:?}\n{}", c.holders(), c.logs()));
    let answered = c.client_answered_within(Duration::from_secs(3));
    assert!(answered.is_ok(), "{answered:?}\n{}", c.logs());
}

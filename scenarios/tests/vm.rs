//! The seed's own set-up, IPVS direct routing with `dummyvip0`, live in a qemu guest that
//! boots Debian's cloud kernel (this machine's kernel has neither IPVS nor dummy
//! interfaces). Root only; the test command installs qemu and the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use cplb_lab::vm::{Guest, image};

const VIP: &str = "192.168.122.200";
/// The second VIP of k0s issue 5178's set-up.
const VIP2: &str = "192.168.122.201";
/// The firewall marks of the first and second virtual server (cplb_core::lb::FWMARK_BASE).
const MARKS: [u32; 2] = [100, 101];
const CLIENTS: [(&str, &str); 4] = [
    ("client", "192.168.122.100"),
    ("worker-0", "192.168.122.219"),
    ("worker-1", "192.168.122.81"),
    ("worker-2", "192.168.122.210"),
];
const CONTROLLERS: [(&str, &str); 3] = [
    ("controller-0", "192.168.122.37"),
    ("controller-1", "192.168.122.185"),
    ("controller-2", "192.168.122.87"),
];
/// Master_Down_Interval + 100 ms at k0s's defaults.
const BOUND_S: f64 = 3.0 + 56.0 / 256.0 + 0.1;
/// What an emulated CPU (no KVM) may add to the takeover: three cplbd and the lab's status
/// polling share two emulated cores.
const EMULATION_SLACK_S: f64 = 0.5;
/// What it may add to the client's first answer: a TLS handshake every 10 ms saturates them.
const CLIENT_SLACK_S: f64 = 2.0;

/// The newest test binary of cplb-netns's library (its IPVS live test runs in the guest).
fn netns_lib_tests(deps: &Path) -> PathBuf {
    std::fs::read_dir(deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("cplb_netns-") && p.extension().is_none()
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("cplb-netns's library tests are built (cargo test --workspace)")
}

struct Booted {
    guest: Option<Guest>,
}

impl Booted {
    fn run(&mut self, line: &str) -> (i32, String) {
        let guest = self.guest.as_mut().unwrap();
        guest.run(line, Duration::from_secs(240)).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn ok(&mut self, line: &str) -> String {
        let (code, out) = self.run(line);
        assert_eq!(code, 0, "{line} failed:\n{out}");
        out
    }

    fn in_ns(&mut self, host: &str, line: &str) -> String {
        self.ok(&format!("ip netns exec cplb-lab-{host} {line}"))
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if let Some(g) = self.guest.take() {
            let console = g.stop();
            if std::thread::panicking() {
                eprintln!("{console}");
            }
        }
    }
}

#[test]
#[ignore = "needs root: boots a qemu guest"]
fn the_seeds_ipvs_direct_routing_set_up_runs_in_a_guest() {
    assert!(cplb_lab::topology::is_root(), "needs root");
    let cplb = PathBuf::from(env!("CARGO_BIN_EXE_cplb"));
    let dir = cplb.parent().unwrap();
    let cplbd = dir.join("cplbd");
    assert!(cplbd.exists(), "{} is built", cplbd.display());
    let lib_tests = netns_lib_tests(&dir.join("deps"));
    let started = std::time::Instant::now();
    let img = match image(&[cplb.clone(), cplbd, lib_tests.clone()]) {
        Ok(i) => i,
        Err(e) if std::env::var_os("CPLB_REQUIRE_TOOLS").is_none() => {
            eprintln!("skipped: the guest cannot be built here: {e}");
            return;
        }
        Err(e) => panic!("the guest cannot be built: {e}"),
    };
    let work = std::env::temp_dir().join(format!("cplb-vm-test-{}", std::process::id()));
    let guest = Guest::boot(&img, &work, false).expect("the guest boots");
    eprintln!(
        "image ready after {:.1} s, guest booted in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        guest.boot_time.as_secs_f64(),
        cplb_lab::vm::accelerator()
    );
    let mut g = Booted { guest: Some(guest) };
    let t = std::time::Instant::now();

    // The IPVS live test, which skips on this machine, runs and passes in the guest:
    // every scheduler and forwarding kind created and read back over generic netlink.
    let name = lib_tests.file_name().unwrap().to_string_lossy().into_owned();
    let out = g.ok(&format!("{name} kernel::ipvs::live:: --nocapture"));
    assert!(out.contains("3 passed") && !out.contains("skipped"), "{out}");

    // The seed's cluster in IPVS mode.
    let up = g.ok("cplb lab up --mode ipvs");
    let master = CONTROLLERS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| up.contains(&format!("VIP {VIP} on {n}")))
        .unwrap_or_else(|| panic!("no master in:\n{up}"));
    std::thread::sleep(Duration::from_secs(3)); // health checks mark every server healthy
    let mut servers: Vec<&str> = CONTROLLERS.iter().map(|(_, a)| *a).collect();
    servers.sort_unstable();
    // The service is the mark the loop guard sets on VIP:6443's traffic.
    let mark = MARKS[0];
    let expected: Vec<String> = std::iter::once(format!("-A -f {mark} -s rr -p 360"))
        .chain(servers.iter().map(|s| format!("-a -f {mark} -r {s}:6443 -g -w 1")))
        .collect();
    for (name, _) in CONTROLLERS {
        let table = g.in_ns(name, "ipvsadm --save -n");
        let mut lines: Vec<String> = table.lines().map(str::to_owned).collect();
        let n = lines.len();
        lines[1.min(n)..].sort();
        if name == master {
            assert_eq!(lines, expected, "{name}'s IPVS table");
            // cplbd's own reading of the kernel (generic netlink) agrees.
            let status = g.ok(&format!("cplb status --socket /run/cplb-lab/{name}.sock --json"));
            let s: serde_json::Value = serde_json::from_str(&status).unwrap();
            let svc = &s["dataplane"]["services"][0];
            assert_eq!(svc["address"], format!("{VIP}:6443"), "{status}");
            assert_eq!(svc["fwmark"], mark, "{status}");
            assert_eq!(svc["scheduler"], "rr");
            assert_eq!(svc["persistence_s"], 360);
            assert_eq!(svc["forwarding"], "DR");
            assert_eq!(s["dataplane"]["applied"], true, "{status}");
        } else {
            assert!(table.trim().is_empty(), "backup {name} holds a service:\n{table}");
        }
        // dummyvip0, created by cplbd, holds the VIP /32 on every controller; ARP for it is
        // left to the master.
        let dummy = g.in_ns(name, "ip -4 -o addr show dev dummyvip0");
        assert!(dummy.contains(&format!("{VIP}/32")), "{name}: {dummy}");
        let eth0 = g.in_ns(name, "ip -4 -o addr show dev eth0");
        assert_eq!(eth0.contains(&format!("{VIP}/24")), name == master, "{name}: {eth0}");
        let sysctl = g.in_ns(
            name,
            "cat /proc/sys/net/ipv4/conf/all/arp_ignore /proc/sys/net/ipv4/conf/all/arp_announce",
        );
        assert_eq!(sysctl.split_whitespace().collect::<Vec<_>>(), ["1", "2"], "{name}");
        // The loop guard on every controller: VIP:6443 marked unless from another one.
        assert_guards(&mut g, name, &[(VIP, mark)]);
    }

    // Clients: answered by the real servers directly (the server sees the client's own
    // address and was reached at the VIP: direct routing, no NAT, no proxy), each client
    // persistently by one server, the clients spread over the servers.
    let mut chosen = answered_by(&mut g, VIP);
    chosen.sort();
    chosen.dedup();
    assert!(chosen.len() >= 2, "every client went to {chosen:?}");

    // The master powered off: the new master takes over within the bound and programs the
    // table; once the health checks drop the dead one it lists only the live controllers.
    let json = g.ok("cplb lab failover --json 2>/dev/null");
    let f: serde_json::Value = serde_json::from_str(&json).unwrap();
    let took = f["new_master_s"].as_f64().unwrap();
    let answered = f["failover_s"].as_f64().unwrap();
    eprintln!(
        "failover in the guest: new master after {took:.3} s, client answered after {answered:.3} s"
    );
    assert!(took <= BOUND_S + EMULATION_SLACK_S, "{json}");
    assert!(answered <= BOUND_S + CLIENT_SLACK_S, "{json}");
    let new_master = f["new_master"].as_str().unwrap().to_owned();
    let victim = master_of(&mut g, None).expect("a master after the failover");
    let dead_addr = CONTROLLERS.iter().find(|(n, _)| *n == victim).unwrap().1;
    g.ok(&format!(
        "ip -n cplb-lab-{victim} link set eth0 down; for p in $(ip netns pids cplb-lab-{victim}); do kill -9 $p; done"
    ));
    let mut after = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        // Nobody holds the VIP until the takeover.
        let Some(now) = master_of(&mut g, Some(&victim)) else { continue };
        after = g.in_ns(&now, "ipvsadm --save -n");
        if !after.contains(dead_addr) && after.lines().count() == 3 {
            break;
        }
    }
    assert!(!after.contains(dead_addr) && after.lines().count() == 3, "{new_master}: {after}");

    // The new master's daemon crashes (SIGKILL: no goodbye), its VIP and IPVS table stay
    // in the kernel; the last controller takes over. A restarted cplbd on the crashed node
    // removes the stale VIP and table on reconcile and stays backup.
    let crashed = master_of(&mut g, Some(&victim)).expect("a master");
    g.ok(&format!(
        "for p in $(ip netns pids cplb-lab-{crashed}); do [ \"$(cat /proc/$p/comm)\" = cplbd ] && kill -9 $p; done; true"
    ));
    assert!(
        g.in_ns(&crashed, "ipvsadm --save -n").contains("-A -f"),
        "the table stays after a crash"
    );
    let last = CONTROLLERS.iter().map(|(n, _)| *n).find(|n| *n != victim && *n != crashed).unwrap();
    let mut taken = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        if g.in_ns(last, "ipvsadm --save -n").contains("-A -f") {
            taken = true;
            break;
        }
    }
    assert!(taken, "{last} did not take over from the crashed {crashed}");
    let servers: Vec<&str> = CONTROLLERS.iter().map(|(_, a)| *a).collect();
    g.ok(&format!(
        "ip netns exec cplb-lab-{crashed} cplbd --config /run/cplb-lab/k0s.yaml --real-servers {} --status-socket /run/cplb-lab/{crashed}.sock >>/run/cplb-lab/{crashed}.log 2>&1 &",
        servers.join(",")
    ));
    let mut cleaned = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        cleaned = g.in_ns(&crashed, "ipvsadm --save -n");
        let eth0 = g.in_ns(&crashed, "ip -4 -o addr show dev eth0");
        if cleaned.trim().is_empty() && !eth0.contains(&format!("{VIP}/24")) {
            break;
        }
    }
    assert!(cleaned.trim().is_empty(), "the restarted {crashed} kept its stale table:\n{cleaned}");
    assert!(g.in_ns(last, "ipvsadm --save -n").contains("-A -f"), "{last} is still the director");
    stop_puts_the_host_back(&mut g, &crashed, &servers);
    g.ok("cplb lab down");

    two_instances_with_a_virtual_server_each(&mut g);
    eprintln!("test time in the guest: {:.1} s", t.elapsed().as_secs_f64());
}

/// A graceful stop puts back what direct routing changed, per the record that outlived the
/// SIGKILL above (the restarted daemon found arp_ignore=1 already set, yet restores 0): the
/// local VIPs released, `dummyvip0` deleted because cplbd created it, the ARP sysctls as
/// they were. Then with a `dummyvip0` and sysctls the operator set before cplbd started
/// (as k0s does for keepalived): all of it stays after cplbd's start and stop.
fn stop_puts_the_host_back(g: &mut Booted, name: &str, servers: &[&str]) {
    let ns = format!("cplb-lab-{name}");
    let sysctls =
        "cat /proc/sys/net/ipv4/conf/all/arp_ignore /proc/sys/net/ipv4/conf/all/arp_announce";
    let stop = format!(
        "for p in $(ip netns pids {ns}); do [ \"$(cat /proc/$p/comm)\" = cplbd ] && kill -TERM $p; done; \
         for i in $(seq 100); do running=0; for p in $(ip netns pids {ns}); do [ \"$(cat /proc/$p/comm)\" = cplbd ] && running=1; done; [ $running = 0 ] && break; sleep 0.1; done"
    );
    let start = format!(
        "ip netns exec {ns} cplbd --config /run/cplb-lab/k0s.yaml --real-servers {} --status-socket /run/cplb-lab/{name}.sock >>/run/cplb-lab/{name}.log 2>&1 &",
        servers.join(",")
    );
    assert_eq!(g.in_ns(name, sysctls).split_whitespace().collect::<Vec<_>>(), ["1", "2"]);
    g.ok(&stop);
    let (_, links) = g.run(&format!("ip -n {ns} -o link show"));
    assert!(!links.contains("dummyvip0"), "{name}: cplbd's dummyvip0 outlived its stop:\n{links}");
    assert_eq!(g.in_ns(name, sysctls).split_whitespace().collect::<Vec<_>>(), ["0", "0"], "{name}");

    g.ok(&format!(
        "ip -n {ns} link add dummyvip0 type dummy && ip -n {ns} link set dummyvip0 up && \
         ip netns exec {ns} sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2"
    ));
    g.ok(&start);
    let mut held = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        held = g.in_ns(name, "ip -4 -o addr show dev dummyvip0");
        if held.contains(&format!("{VIP}/32")) {
            break;
        }
    }
    assert!(held.contains(&format!("{VIP}/32")), "{name}: {held}");
    g.ok(&stop);
    let dummy = g.in_ns(name, "ip -4 -o addr show dev dummyvip0");
    assert!(!dummy.contains(VIP), "{name}: the local VIP outlived the stop: {dummy}");
    assert_eq!(g.in_ns(name, sysctls).split_whitespace().collect::<Vec<_>>(), ["1", "2"], "{name}");
}

/// Every client fetches `vip` 4 times: each answer comes from a real server that saw the
/// client's own address at the VIP (direct routing), the same one for a client
/// (persistence). The server each client got, in client order.
fn answered_by(g: &mut Booted, vip: &str) -> Vec<String> {
    let mut chosen = Vec::new();
    for (client, addr) in CLIENTS {
        let answers = g.in_ns(client, &format!("cplb lab fetch {vip}:6443 --count 4"));
        let lines: Vec<&str> = answers.lines().collect();
        assert_eq!(lines.len(), 4, "{answers}");
        let first = lines[0].split_whitespace().next().unwrap_or_default().to_owned();
        for line in &lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words, [first.as_str(), addr, vip], "{client} to {vip}: {answers}");
        }
        chosen.push(first);
    }
    chosen
}

/// The MAC of a controller's eth0.
fn mac_of(g: &mut Booted, name: &str) -> String {
    g.in_ns(name, "cat /sys/class/net/eth0/address").trim().to_owned()
}

/// `name`'s nftables table marks each `(vip, mark)`'s traffic on port 6443, except frames
/// from the other controllers' MACs (learned from the neighbour table, checked every 2 s).
fn assert_guards(g: &mut Booted, name: &str, guarded: &[(&str, u32)]) {
    let others: Vec<String> =
        CONTROLLERS.iter().filter(|(n, _)| *n != name).map(|(n, _)| (*n).to_owned()).collect();
    let macs: Vec<String> = others.iter().map(|n| mac_of(g, n)).collect();
    let mut table = String::new();
    for _ in 0..40 {
        table = g.in_ns(name, "nft list table ip cplb");
        let complete = guarded.iter().all(|(vip, mark)| {
            let rules: Vec<&str> =
                table.lines().filter(|l| l.contains(&format!("ip daddr {vip} "))).collect();
            rules.iter().any(|l| l.contains(&format!("meta mark set 0x{mark:08x}")))
                && macs
                    .iter()
                    .all(|m| rules.iter().any(|l| l.contains(&format!("ether saddr {m} return"))))
        });
        if complete {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{name}'s loop guard for {guarded:?} (MACs {macs:?} of {others:?}):\n{table}");
}

/// IPVS connection count of the service with firewall mark `mark` on `name`, if it has it.
fn connections(g: &mut Booted, name: &str, mark: u32) -> Option<u64> {
    let stats = g.in_ns(name, "ipvsadm -L -n --stats");
    stats.lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        (words.first() == Some(&"FWM") && words.get(1) == Some(&mark.to_string().as_str()))
            .then(|| words.get(2).and_then(|c| c.parse().ok()))
            .flatten()
    })
}

/// The service marks in `name`'s IPVS table.
fn service_marks(g: &mut Booted, name: &str) -> Vec<u32> {
    let table = g.in_ns(name, "ipvsadm --save -n");
    table
        .lines()
        .filter_map(|l| l.strip_prefix("-A -f "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// k0s issue 5178's set-up: two VRRP instances with a virtual server each, mastered by two
/// different controllers. Every request to either VIP is answered, nothing loops, and when
/// a director crashes with its table in place, the new director's forwarded frames are not
/// scheduled again by the stale table (the loop guard), yet answered.
fn two_instances_with_a_virtual_server_each(g: &mut Booted) {
    let up = g.ok("cplb lab up --mode ipvs");
    let first = CONTROLLERS
        .iter()
        .map(|(n, _)| *n)
        .find(|n| up.contains(&format!("VIP {VIP} on {n}")))
        .unwrap_or_else(|| panic!("no master in:\n{up}"))
        .to_owned();
    // The second instance and its virtual server reach the backups first: one of them
    // wins it; the first master then joins as a backup (equal priorities, no preemption).
    let config = format!(
        "spec:\n  api:\n    sans:\n    - {VIP}\n    - {VIP2}\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n        - virtualIPs: [\"{VIP}/24\"]\n          authPass: Example\n        - virtualIPs: [\"{VIP2}/24\"]\n          authPass: Example2\n        virtualServers:\n        - ipAddress: {VIP}\n        - ipAddress: {VIP2}\n"
    );
    g.ok(&format!("printf '{}' > /run/cplb-lab/k0s.yaml", config.replace('\n', "\\n")));
    let hup = |name: &str| {
        format!(
            "for p in $(ip netns pids cplb-lab-{name}); do [ \"$(cat /proc/$p/comm)\" = cplbd ] && kill -HUP $p; done; true"
        )
    };
    for (name, _) in CONTROLLERS.iter().filter(|(n, _)| *n != first) {
        g.ok(&hup(name));
    }
    let mut second = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        second = CONTROLLERS.iter().map(|(n, _)| *n).filter(|n| *n != first).find(|n| {
            let (_, eth0) = g.run(&format!("ip -n cplb-lab-{n} -4 -o addr show dev eth0"));
            eth0.contains(&format!("{VIP2}/24"))
        });
        if second.is_some() {
            break;
        }
    }
    let second = second.expect("a backup of the first VIP took the second").to_owned();
    g.ok(&hup(&first));
    std::thread::sleep(Duration::from_secs(4)); // past Master_Down_Interval: nothing moves
    let third = CONTROLLERS.iter().map(|(n, _)| *n).find(|n| *n != first && *n != second).unwrap();
    assert_eq!(service_marks(g, &first), [MARKS[0]], "{first} directs {VIP} only");
    assert_eq!(service_marks(g, &second), [MARKS[1]], "{second} directs {VIP2} only");
    assert_eq!(service_marks(g, third), Vec::<u32>::new(), "{third} directs nothing");
    for (name, _) in CONTROLLERS {
        assert_guards(g, name, &[(VIP, MARKS[0]), (VIP2, MARKS[1])]);
        let dummy = g.in_ns(name, "ip -4 -o addr show dev dummyvip0");
        assert!(
            dummy.contains(&format!("{VIP}/32")) && dummy.contains(&format!("{VIP2}/32")),
            "{name}: {dummy}"
        );
    }
    // Each director forwards to the other's API server, which holds the other VIP's
    // service: every request is answered, by more than one server.
    for vip in [VIP, VIP2] {
        let mut servers = answered_by(g, vip);
        servers.sort();
        servers.dedup();
        assert!(servers.len() >= 2, "{vip}: every client went to {servers:?}");
    }

    // The first director's daemon crashes: its VIP, table and guard stay. The second
    // director (a backup of the first VIP) or the third takes the first VIP over and
    // forwards to the crashed one's API server, whose stale service must not schedule
    // those frames again.
    g.ok(&format!(
        "for p in $(ip netns pids cplb-lab-{first}); do [ \"$(cat /proc/$p/comm)\" = cplbd ] && kill -9 $p; done; true"
    ));
    let mut director = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        director =
            [second.as_str(), third].into_iter().find(|n| service_marks(g, n).contains(&MARKS[0]));
        if director.is_some() {
            break;
        }
    }
    let director = director.expect("the first VIP's service moved").to_owned();
    let stale = connections(g, &first, MARKS[0]).expect("the crashed director's stale service");
    let servers = answered_by(g, VIP);
    assert!(
        servers.contains(&first),
        "{director} forwarded no client to the crashed {first}: {servers:?}"
    );
    assert_eq!(
        connections(g, &first, MARKS[0]),
        Some(stale),
        "the crashed {first}'s stale table scheduled frames {director} forwarded to it"
    );
    let mut again = answered_by(g, VIP2);
    again.dedup();
    assert!(!again.is_empty());
    g.ok("cplb lab down");
}

/// The controller holding the VIP on eth0, if one does (`except` a powered-off one, whose
/// address stays where it was).
fn master_of(g: &mut Booted, except: Option<&str>) -> Option<String> {
    CONTROLLERS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| Some(*name) != except)
        .find(|name| {
            let (_, eth0) = g.run(&format!("ip -n cplb-lab-{name} -4 -o addr show dev eth0"));
            eth0.contains(&format!("{VIP}/24"))
        })
        .map(str::to_owned)
}

//! cplbd against careless operators and hostile traffic (root only): a second cplbd started
//! by mistake, a flood of unauthenticated VRRP. Each test asserts what a client of the VIP
//! sees.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, can_run};
use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, IpParams, Priority, V3Ipv4Checksum, Version,
    VirtualAddresses, Vrid, encode_packet,
};
use cplb_netns::status::{self, Snapshot};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn transitions(c: &Cluster) -> Vec<u64> {
    (0..c.controllers.len())
        .map(|i| c.status(i).map_or(u64::MAX, |s| s.instances.iter().map(|x| x.transitions).sum()))
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_second_cplbd_on_the_master_exits_1_and_changes_nothing() {
    can_run("second_cplbd");
    let mut c = Cluster::new("second", "10.200.21", 3);
    let master = c.start_all();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    let before = transitions(&c);
    let table = c.nft_table(master);

    // The same command line but another status socket, as an operator would mistype it.
    let other = c.dir.join("second.sock");
    let log = c.dir.join("second.log");
    let args = c.cplbd_args(&other);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut second =
        c.topo.spawn(&format!("c{master}"), env!("CARGO_BIN_EXE_cplbd"), &args, &log).unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = second.kill();
            panic!(
                "the second cplbd is still running:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(&log).unwrap();
    eprintln!("second cplbd: {status} after {:?}: {}", t0.elapsed(), said.trim());
    assert_eq!(status.code(), Some(1), "{said}");
    let pid = c.pid(master).unwrap();
    assert!(said.contains(&format!("another cplbd (pid {pid}) is running")), "{said}");
    assert!(!other.exists(), "the second one bound its status socket");

    // Nothing changed: the VIP, the rules, the states; the client is answered throughout.
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(4) {
        assert_eq!(c.holders(), [master], "{}", c.logs());
        assert!(c.client_fetch().is_ok(), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.nft_table(master), table);
    assert_eq!(transitions(&c), before, "{}", c.logs());
}

/// The unauthenticated VRRP a hostile host on the LAN sends, in turn: a wrong password, a
/// VRID nobody runs, TTL 64 (from off the link), a packet cut short, priority 255 (the
/// owner's) with a wrong password.
fn hostile_packets(src: Ipv4Addr, vip: Ipv4Addr) -> Vec<Vec<u8>> {
    let group = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
    let advert = |vrid: u8, priority: u8, pass: &[u8]| Advertisement {
        version: Version::V2,
        vrid: Vrid::new(vrid).unwrap(),
        priority: Priority(priority),
        interval_cs: 100,
        auth: Authentication::SimpleText(AuthPass::new(pass).unwrap()),
        addresses: VirtualAddresses::V4(vec![vip]),
    };
    let packet = |a: &Advertisement, ttl: u8| {
        let ip = IpParams { ttl, ..IpParams::new(IpAddr::V4(src), group) };
        encode_packet(a, &ip, V3Ipv4Checksum::default()).unwrap()
    };
    let wrong = advert(51, 200, b"wrong");
    let mut truncated = packet(&wrong, 255);
    truncated.truncate(24);
    // The IP header's total length says 24 too, so the kernel delivers it as it is.
    truncated[2..4].copy_from_slice(&24u16.to_be_bytes());
    truncated[10..12].copy_from_slice(&[0, 0]);
    let sum = ipv4_checksum(&truncated[..20]);
    truncated[10..12].copy_from_slice(&sum.to_be_bytes());
    vec![
        packet(&wrong, 255),
        packet(&advert(99, 200, b"k0s-lab1"), 255),
        packet(&advert(51, 200, b"k0s-lab1"), 64),
        truncated,
        packet(&advert(51, 255, b"wrong"), 255),
    ]
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `packets` round-robin from `host`'s eth0 as fast as one thread can for `secs`;
/// returns how many went out.
fn flood(c: &Cluster, host: &str, packets: Vec<Vec<u8>>, secs: Duration) -> u64 {
    let path = format!("/run/netns/{}", c.topo.ns(host));
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap();
        socket.bind_device(Some(b"eth0")).unwrap();
        let to = SockAddr::from(SocketAddr::from(([224, 0, 0, 18], 0)));
        let (t0, mut sent) = (Instant::now(), 0u64);
        while t0.elapsed() < secs {
            for p in &packets {
                // ENOBUFS when the qdisc is full: the sender's limit, not a lost packet.
                if socket.send_to(p, &to).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    })
    .join()
    .unwrap()
}

/// CPU time (user + system) a process used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn total_drops(s: &Snapshot) -> u64 {
    s.unrouted_dropped.values().sum::<u64>()
        + s.instances.iter().flat_map(|i| i.dropped.values()).sum::<u64>()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_flood_of_unauthenticated_vrrp_moves_nothing_and_the_logs_stay_small() {
    can_run("vrrp_flood");
    let mut c = Cluster::new("flood", "10.200.22", 3);
    let master = c.start_all();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    let secs = std::env::var("CPLB_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_secs);
    let before: Vec<Snapshot> = (0..3).map(|i| c.status(i).unwrap()).collect();
    let logs: Vec<u64> = (0..3).map(|i| std::fs::metadata(c.log(i)).unwrap().len()).collect();
    let drop_lines = |log: PathBuf| {
        let log = std::fs::read_to_string(log).unwrap();
        log.lines().filter(|l| l.contains("dropped")).count()
    };
    let drop_lines_before: Vec<usize> = (0..3).map(|i| drop_lines(c.log(i))).collect();
    let cpu: Vec<Duration> = (0..3).map(|i| cpu_time(c.pid(i).unwrap())).collect();

    // The client keeps fetching through the VIP while the flood runs.
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(c);
    let watcher = {
        let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match c.client_fetch() {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (ok, failed)
        })
    };
    let src: Ipv4Addr = format!("{}.100", c.net).parse().unwrap();
    let vip: Ipv4Addr = c.vip.parse().unwrap();
    let t0 = Instant::now();
    let sent = flood(&c, "client", hostile_packets(src, vip), secs);
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(1)); // the queues drain
    stop.store(true, Ordering::Relaxed);
    let (answered, failed) = watcher.join().unwrap();

    let after: Vec<Snapshot> = (0..3).map(|i| c.status(i).unwrap()).collect();
    eprintln!(
        "flood: {sent} packets in {took:?} ({:.0} packets/s)",
        sent as f64 / took.as_secs_f64()
    );
    for i in 0..3 {
        let cpu = cpu_time(c.pid(i).unwrap()) - cpu[i];
        let grew = std::fs::metadata(c.log(i)).unwrap().len() - logs[i];
        let lines = drop_lines(c.log(i)) - drop_lines_before[i];
        eprintln!(
            "c{i}: cplbd CPU {:.0}% of a core, log +{grew} bytes ({lines} lines about drops; the rest is the client's proxied fetches at debug), dropped {:?} / {:?}",
            100.0 * cpu.as_secs_f64() / took.as_secs_f64(),
            after[i].unrouted_dropped,
            after[i].instances[0].dropped
        );
        let t = |s: &Snapshot| s.instances[0].transitions;
        assert_eq!(t(&after[i]), t(&before[i]), "c{i} changed state\n{}", c.logs());
        // A few lines per reason (the first drop, then a sum per minute), not one per packet.
        let minutes = took.as_secs() / 60 + 1;
        assert!(
            lines as u64 <= 6 * (minutes + 1),
            "c{i} logged {lines} lines about drops\n{}",
            c.logs()
        );
        // Every packet that reached the socket is counted, by reason.
        let counted = total_drops(&after[i]) - total_drops(&before[i]);
        assert!(counted * 100 >= sent * 95, "c{i} counted {counted} of {sent} drops");
        let dropped = |reason: &str| {
            after[i].unrouted_dropped.get(reason).copied().unwrap_or(0)
                + after[i].instances[0].dropped.get(reason).copied().unwrap_or(0)
        };
        for reason in ["auth_failure", "vrid_not_configured", "ttl_not_255", "truncated"] {
            assert!(dropped(reason) > 0, "c{i}: no {reason} drop counted: {:?}", after[i]);
        }
        if i != master {
            // The real master's adverts kept arriving (one a second).
            let heard =
                after[i].instances[0].adverts_received - before[i].instances[0].adverts_received;
            assert!(heard + 1 >= took.as_secs(), "c{i} heard {heard} adverts in {took:?}");
        }
    }
    assert_eq!(c.holders(), [master], "{}", c.logs());
    assert!(
        failed.is_empty(),
        "{} of {} fetches failed: {failed:?}",
        failed.len(),
        answered as usize + failed.len()
    );
    assert!(answered as u64 >= secs.as_secs() * 3, "only {answered} fetches");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn cplbd_runs_unprivileged_with_only_the_two_ambient_capabilities() {
    can_run("unprivileged");
    let mut c = Cluster::new("unpriv", "10.200.23", 3);
    // What systemd's RuntimeDirectory= gives the service user: a directory of its own.
    let run = c.dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&c.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = c.dir.join("k0s.yaml");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let sockets: Vec<PathBuf> = (0..3).map(|i| run.join(format!("c{i}.sock"))).collect();
    for (i, socket) in sockets.iter().enumerate() {
        c.start_api(i);
        let state = run.join(format!("state{i}"));
        let mut args: Vec<String> = [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+net_admin,+net_raw",
            "--ambient-caps=-all,+net_admin,+net_raw",
            "--bounding-set=-all,+net_admin,+net_raw",
            env!("CARGO_BIN_EXE_cplbd"),
        ]
        .map(String::from)
        .into();
        args.extend(c.cplbd_args(socket));
        args.extend(["--state-dir".to_owned(), state.to_string_lossy().into_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = c.topo.spawn(&format!("c{i}"), "setpriv", &args, &c.log(i)).unwrap();
        c.daemons[i] = Some(child);
    }
    let t0 = Instant::now();
    let settled = c.wait_holders(t0, Duration::from_secs(10), |h| h.len() == 1);
    assert!(settled.is_some(), "no single VIP holder: {:?}\n{}", c.holders(), c.logs());
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    for (i, socket) in sockets.iter().enumerate() {
        let pid = c.pid(i).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_default().trim().to_owned()
        };
        assert!(field("Uid:").starts_with("65534"), "c{i} runs as {}", field("Uid:"));
        // CAP_NET_ADMIN (12) and CAP_NET_RAW (13) only.
        assert_eq!(field("CapEff:"), "0000000000003000", "c{i}");
        assert_eq!(field("NoNewPrivs:"), "1", "c{i}");
        let s = status::query(socket, Duration::from_secs(1)).expect("status answers");
        assert_eq!(s.instances.len(), 1);
    }
    // A failover works as well unprivileged: SIGTERM resigns, removing the VIP it held.
    let master = c.holders()[0];
    let t1 = Instant::now();
    let stopped = c.signal(master, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(stopped.and_then(|s| s.code()), Some(0), "{}", c.logs());
    let took = c.wait_holders(t1, Duration::from_secs(3), |h| h.len() == 1 && h[0] != master);
    assert!(took.is_some(), "no takeover: {:?}\n{}", c.holders(), c.logs());
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
}

#[test]
#[ignore = "needs root: systemd-analyze reads the unit's binary"]
fn the_shipped_systemd_unit_verifies_and_is_hardened() {
    can_run("systemd_unit");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/cplbd.service"))
            .unwrap();
    for line in [
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let dir = std::env::temp_dir().join(format!("cplbt-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cplbd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/cplbd", env!("CARGO_BIN_EXE_cplbd")))
        .unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("systemd-analyze runs (the test command installs systemd)");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
}

/// `ip -4 -o addr show dev eth0` of controller `i`.
fn eth0(c: &Cluster, i: usize) -> String {
    let out =
        c.topo.exec(&format!("c{i}"), "ip", &["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_in(c: &Cluster, i: usize, program: &str, args: &[&str]) -> String {
    let out = c.topo.exec(&format!("c{i}"), program, args).unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn what_cplbd_did_not_create_survives_its_start_crash_restart_and_stop() {
    can_run("ownership");
    let mut c = Cluster::new("owned", "10.200.25", 3);
    // An operator's address and nftables table on every controller, there before cplbd.
    for i in 0..3 {
        run_in(&c, i, "ip", &["addr", "add", &format!("10.200.25.{}/24", 50 + i), "dev", "eth0"]);
        run_in(&c, i, "nft", &["add", "table", "ip", "handmade"]);
        run_in(
            &c,
            i,
            "nft",
            &["add", "chain", "ip", "handmade", "input", "{ type filter hook input priority 0; }"],
        );
        run_in(
            &c,
            i,
            "nft",
            &["add", "rule", "ip", "handmade", "input", "tcp", "dport", "22", "counter"],
        );
    }
    let handmade = |c: &Cluster, i: usize| {
        let addr = eth0(c, i).contains(&format!("10.200.25.{}/24", 50 + i));
        let table = run_in(c, i, "nft", &["list", "table", "ip", "handmade"])
            .contains("tcp dport 22 counter");
        addr && table
    };
    let master = c.start_all();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    for i in 0..3 {
        assert!(handmade(&c, i), "c{i} lost what was there at start:\n{}", eth0(&c, i));
    }

    // The master's cplbd dies (SIGKILL: its VIP and rules stay), another takes over; the
    // restarted one removes its own stale VIP, nothing else.
    assert!(c.signal(master, nix::sys::signal::Signal::SIGKILL).is_some());
    let t0 = Instant::now();
    let moved = c.wait_holders(t0, Duration::from_secs(8), |h| h.iter().any(|&x| x != master));
    assert!(moved.is_some(), "no takeover: {:?}\n{}", c.holders(), c.logs());
    c.start_cplbd(master);
    let t1 = Instant::now();
    let single = c.wait_holders(t1, Duration::from_secs(8), |h| h.len() == 1 && h[0] != master);
    assert!(single.is_some(), "the stale VIP stayed: {:?}\n{}", c.holders(), c.logs());
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    for i in 0..3 {
        assert!(handmade(&c, i), "c{i} lost what was there at start:\n{}", eth0(&c, i));
    }

    // The VIP itself added by hand on a backup (another VRRP daemon's, or an operator's) is
    // not cplbd's: a restarted cplbd leaves it there (and says so) where it would remove its
    // own.
    let now_master = c.holders()[0];
    let backup = (0..3).find(|&i| i != now_master).unwrap();
    assert_eq!(c.signal(backup, nix::sys::signal::Signal::SIGTERM).and_then(|s| s.code()), Some(0));
    let vip = format!("{}/24", c.vip);
    run_in(&c, backup, "ip", &["addr", "add", &vip, "dev", "eth0"]);
    c.start_cplbd(backup);
    let t2 = Instant::now();
    while t2.elapsed() < Duration::from_secs(2) {
        assert!(eth0(&c, backup).contains(&vip), "the hand-made VIP was removed\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(c.log(backup)).unwrap();
    assert!(log.contains("cplbd did not add it"), "{log}");
    run_in(&c, backup, "ip", &["addr", "del", &vip, "dev", "eth0"]);

    // Every cplbd stops: its VIP and table go, the rest stays.
    for i in 0..3 {
        assert_eq!(c.signal(i, nix::sys::signal::Signal::SIGTERM).and_then(|s| s.code()), Some(0));
    }
    for i in 0..3 {
        assert!(handmade(&c, i), "c{i} lost what was there at start:\n{}", eth0(&c, i));
        assert!(!eth0(&c, i).contains(&format!("{}/", c.vip)), "c{i} kept the VIP");
        let tables = run_in(&c, i, "nft", &["list", "tables"]);
        assert!(!tables.contains("table ip cplb"), "c{i} kept cplb's table:\n{tables}");
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_panic_resigns_and_removes_what_cplbd_set_before_the_daemon_aborts() {
    can_run("panic");
    let mut c = Cluster::new("panic", "10.200.26", 3);
    let master = c.start_all();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    // The master's cplbd again, with a task that panics after 2 s.
    assert_eq!(c.signal(master, nix::sys::signal::Signal::SIGTERM).and_then(|s| s.code()), Some(0));
    let t0 = Instant::now();
    let _ = c.wait_holders(t0, Duration::from_secs(3), |h| h.len() == 1 && h[0] != master);
    let mut args = c.cplbd_args(&c.socket(master));
    args.extend(["--panic-after".to_owned(), "2s".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cplbd = env!("CARGO_BIN_EXE_cplbd");
    let child = c.topo.spawn(&format!("c{master}"), cplbd, &args, &c.log(master)).unwrap();
    c.daemons[master] = Some(child);
    let mut child = c.daemons[master].take().unwrap();
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "cplbd did not end after its panic\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(6), "aborted (SIGABRT): {status}\n{}", c.logs());
    let log = std::fs::read_to_string(c.log(master)).unwrap();
    assert!(log.contains("a panic: resigning"), "{log}");
    // What SIGTERM removes is gone: no VIP and no table on the dead one; the others serve.
    assert!(!eth0(&c, master).contains(&format!("{}/", c.vip)), "the VIP stayed");
    let tables = run_in(&c, master, "nft", &["list", "tables"]);
    assert!(!tables.contains("table ip cplb"), "the table stayed:\n{tables}");
    assert_eq!(c.holders().len(), 1, "{:?}", c.holders());
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
}

#[test]
#[ignore = "needs root: network namespaces"]
fn with_accept_adverts_from_a_forged_advert_that_knows_the_password_moves_nothing() {
    can_run("accept_from");
    let mut c = Cluster::new("accept", "10.200.27", 3);
    c.extra_args = vec!["--accept-adverts-from".into(), c.real_servers()];
    let master = c.start_all();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());
    let before: Vec<u64> = (0..3).map(|i| c.status(i).unwrap().instances[0].transitions).collect();
    // An insider's advert: k0s's password, the owner's priority, from the client host.
    let src: Ipv4Addr = format!("{}.100", c.net).parse().unwrap();
    let vip: Ipv4Addr = c.vip.parse().unwrap();
    let forged = Advertisement {
        version: Version::V2,
        vrid: Vrid::new(51).unwrap(),
        priority: Priority(255),
        interval_cs: 100,
        auth: Authentication::SimpleText(AuthPass::new(b"k0s-lab1").unwrap()),
        addresses: VirtualAddresses::V4(vec![vip]),
    };
    let group = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
    let packet =
        encode_packet(&forged, &IpParams::new(IpAddr::V4(src), group), V3Ipv4Checksum::default())
            .unwrap();
    let path = format!("/run/netns/{}", c.topo.ns("client"));
    let sender = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap();
        socket.bind_device(Some(b"eth0")).unwrap();
        let to = SockAddr::from(SocketAddr::from(([224, 0, 0, 18], 0)));
        for _ in 0..50 {
            socket.send_to(&packet, &to).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let t0 = Instant::now();
    while !sender.is_finished() {
        assert_eq!(c.holders(), [master], "after {:?}\n{}", t0.elapsed(), c.logs());
        assert!(c.client_fetch().is_ok(), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    sender.join().unwrap();
    for (i, before) in before.iter().enumerate() {
        let s = c.status(i).unwrap();
        assert_eq!(s.instances[0].transitions, *before, "c{i}\n{}", c.logs());
        let dropped = s.instances[0].dropped.get("source_not_allowed").copied().unwrap_or(0);
        assert!(
            dropped >= 45,
            "c{i} dropped {dropped} forged adverts: {:?}",
            s.instances[0].dropped
        );
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn without_ipvs_virtual_servers_touch_neither_arp_sysctls_nor_the_loopback() {
    can_run("no_ipvs_sysctls");
    let mut c = Cluster::new("nosysctl", "10.200.28", 3);
    let config = c.dir.join("k0s.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!("        virtualServers:\n        - ipAddress: {}\n", c.vip);
    std::fs::write(&config, text).unwrap();
    // DNAT to another controller is forwarding, on as on any Kubernetes node.
    for i in 0..3 {
        run_in(&c, i, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    }
    let master = c.start_all();
    // This kernel has no IPVS: the master balances by DNAT, nothing is routed directly.
    assert!(c.client_answered_within(Duration::from_secs(5)).is_ok(), "{}", c.logs());
    assert_eq!(c.status(master).unwrap().dataplane.kernel, "nftables-nat");
    for i in 0..3 {
        let sysctls = run_in(
            &c,
            i,
            "cat",
            &["/proc/sys/net/ipv4/conf/all/arp_ignore", "/proc/sys/net/ipv4/conf/all/arp_announce"],
        );
        assert_eq!(sysctls.split_whitespace().collect::<Vec<_>>(), ["0", "0"], "c{i}");
        let lo = run_in(&c, i, "ip", &["-4", "-o", "addr", "show", "dev", "lo"]);
        assert!(!lo.contains(&c.vip), "c{i} holds the VIP on lo: {lo}");
    }
}

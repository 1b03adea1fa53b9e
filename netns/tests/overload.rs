//! cplbd under overload (root only): thousands of connections held through the userspace
//! proxy and thousands of idle connections to the metrics endpoint must not cost the health
//! probes their descriptors, move the VIP, or slow `cplb status` down.
//!
//! The daemons are started with the soft RLIMIT_NOFILE at 1024 (what systemd and most
//! shells give), so the test also shows that cplbd raises it: 2,000 proxied connections
//! take some 4,000 descriptors.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Cluster, can_run};
use cplb_lab::topology;
use cplb_netns::status::{self, Snapshot};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Connections held through the proxy (VIP:6443, redirected to :6444 on the master).
const HELD: usize = 2000;
/// Idle connections to the master's metrics port.
const IDLE: usize = 2000;
/// What the stand-in API server allows a connection from accept to answer: the held
/// connections live that long, so everything is checked within it.
const BACKEND_LIFETIME: Duration = Duration::from_secs(10);

/// Opens `n` TCP connections from the client namespace to `addr`, one after the other;
/// returns those that connected.
fn connect_many(c: &Cluster, addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    topology::in_namespace(&c.topo.ns("client"), move || {
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
            .collect::<Vec<_>>()
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap_or_default()
}

/// How many of the connections the other side has not closed (nothing to read, no FIN,
/// no reset).
fn still_open(streams: &[TcpStream]) -> usize {
    let mut byte = [0u8; 1];
    streams
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let open = matches!(s.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            open
        })
        .count()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `Max open files` of a process: (soft, hard).
fn nofile_of(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    let mut words = line.split_whitespace().skip(3);
    (words.next().unwrap_or("?").to_owned(), words.next().unwrap_or("?").to_owned())
}

fn transitions(s: &Snapshot) -> Vec<u64> {
    s.instances.iter().map(|i| i.transitions).collect()
}

/// Every node's status, each asked with a 1 s timeout; with how long each took.
fn statuses(c: &Cluster) -> Vec<(Snapshot, Duration)> {
    (0..c.controllers.len())
        .map(|i| {
            let t = Instant::now();
            let s = status::query(&c.socket(i), Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("c{i}: status: {e}\n{}", c.logs()));
            (s, t.elapsed())
        })
        .collect()
}

#[test]
#[ignore = "needs root: network namespaces"]
fn thousands_of_held_and_idle_connections_change_nothing() {
    can_run("overload");
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(hard >= 8192, "the test needs a hard RLIMIT_NOFILE of 8192 or more, not {hard}");
    // The daemons start with the usual soft limit; cplbd has to raise it itself.
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(1024), hard).unwrap();
    let mut c = Cluster::new("ovl", "10.200.24", 3);
    let master = c.start_all();
    // This process holds the client ends and, in its API server threads, the server ends.
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(c.client_answered_within(Duration::from_secs(3)).is_ok(), "{}", c.logs());

    let before = statuses(&c);
    for (i, (s, _)) in before.iter().enumerate() {
        assert!(s.real_servers.iter().all(|r| r.healthy), "c{i} before: {:?}", s.real_servers);
    }
    let pid = before[master].0.pid;
    let limit = nofile_of(pid);
    eprintln!("cplbd on c{master} (pid {pid}): RLIMIT_NOFILE soft {} hard {}", limit.0, limit.1);
    assert_eq!(limit.0, hard.to_string(), "cplbd did not raise its soft limit");
    let cap = before[master].0.dataplane.proxy_max_connections;
    assert!(cap as usize >= HELD, "the default cap {cap} is below {HELD}");

    // The idle ones first: opening 2,000 against the endpoint's cap can take seconds on a
    // loaded machine, and the stand-in API servers end a connection after
    // BACKEND_LIFETIME, which the checks on the held ones must stay within.
    let metrics_addr = SocketAddr::new(c.addr(master).parse().unwrap(), 9464);
    let idle_started = Instant::now();
    let idle = connect_many(&c, metrics_addr, IDLE);
    let idle_took = idle_started.elapsed();
    let started = Instant::now();
    let vip: SocketAddr = SocketAddr::new(c.vip.parse().unwrap(), 6443);
    let held = connect_many(&c, vip, HELD);
    let opened = started.elapsed();
    eprintln!(
        "{} connections to {vip} in {opened:?}, {} idle connections to {metrics_addr} in {idle_took:?}",
        held.len(),
        idle.len(),
    );
    assert_eq!(held.len(), HELD, "connects to the VIP failed\n{}", c.logs());
    assert_eq!(idle.len(), IDLE, "connects to the metrics port failed");

    // Several probe rounds (1 s apart, two failures make a server unhealthy) under load.
    std::thread::sleep(Duration::from_secs(3));
    let during = statuses(&c);
    let fds = open_fds(pid);
    for (i, ((b, _), (d, took))) in before.iter().zip(&during).enumerate() {
        eprintln!(
            "c{i}: status in {took:?}, transitions {:?}, fds {}, proxy held {} refused {}, metrics refused {}",
            transitions(d),
            open_fds(d.pid),
            d.dataplane.proxy_active,
            d.dataplane.proxy_refused,
            d.endpoints.as_ref().map_or(0, |e| e.metrics_refused),
        );
        assert!(*took < Duration::from_secs(1), "c{i}: status took {took:?}");
        assert_eq!(transitions(d), transitions(b), "c{i}: VRRP transitions\n{}", c.logs());
        assert!(d.real_servers.iter().all(|r| r.healthy), "c{i}: {:?}", d.real_servers);
    }
    let d = &during[master].0;
    assert_eq!(d.dataplane.proxy_active as usize, HELD, "the proxy holds {d:?}");
    assert_eq!(d.dataplane.proxy_refused, 0);
    assert!(fds > 2 * HELD, "cplbd holds only {fds} descriptors");
    // The metrics endpoint kept its cap: at most 64 idle connections at a time, each let go
    // by the 2 s header timeout; the rest were closed at once. (On a loaded machine opening
    // them takes longer than 2 s, and each 2 s frees the 64 places again.)
    let metrics_refused = d.endpoints.as_ref().map_or(0, |e| e.metrics_refused);
    let rounds = (idle_took.as_secs_f64() / 2.0).ceil() as usize + 1;
    assert!(
        metrics_refused as usize >= IDLE.saturating_sub(64 * rounds),
        "metrics refused only {metrics_refused} of {IDLE} opened in {idle_took:?}"
    );
    assert_eq!(c.holders(), vec![master], "the VIP moved\n{}", c.logs());

    // A new client is still served through the VIP, and the metrics answer (once the held
    // idle connections' header timeout passed).
    let fetched = c.client_fetch();
    assert!(fetched.is_ok(), "fresh client through the VIP: {fetched:?}\n{}", c.logs());
    let asked = Instant::now();
    let metrics = loop {
        let m = c.http(master, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        if m.starts_with("HTTP/1.1 200") || asked.elapsed() > Duration::from_secs(5) {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("/metrics answered after {:?} ({} bytes)", asked.elapsed(), metrics.len());
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("\ncplb_proxy_connections 2000\n"), "{metrics}");
    assert!(metrics.contains("\ncplb_vrrp_takeover_seconds_count{"), "{metrics}");
    let other = c.http(master, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let post = c.http(master, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    let open = still_open(&held);
    let idle_open = still_open(&idle);
    let at = started.elapsed();
    eprintln!(
        "after {at:?}: {open} of {HELD} proxied connections open, {idle_open} of {IDLE} idle metrics connections open, cplbd fds {fds}"
    );
    assert!(at < BACKEND_LIFETIME, "checks ran past the held connections' lifetime: {at:?}");
    assert_eq!(open, HELD, "held connections were closed");
    assert!(idle_open <= 64, "{idle_open} idle metrics connections held");
    drop(held);
    drop(idle);
    // Closed connections give their places back.
    let t = Instant::now();
    let freed = loop {
        let s = status::query(&c.socket(master), Duration::from_secs(1)).unwrap();
        if s.dataplane.proxy_active == 0 || t.elapsed() > Duration::from_secs(5) {
            break s.dataplane.proxy_active;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("connections freed in {:?}, fds now {}", t.elapsed(), open_fds(pid));
    assert_eq!(freed, 0);
}

#[test]
#[ignore = "needs root: network namespaces"]
fn a_silent_master_s_takeover_time_and_the_unheld_time_are_measured() {
    can_run("takeover_metrics");
    let mut c = Cluster::new("tko", "10.200.31", 3);
    let old = c.start_all();
    // Killed, the master sends no resignation: the backups hear its adverts stop.
    let _ = c.signal(old, nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    let new = c
        .wait_holders(t0, Duration::from_secs(10), |h| h.iter().any(|&i| i != old))
        .and_then(|_| c.holders().into_iter().find(|&i| i != old))
        .unwrap_or_else(|| panic!("nobody took over\n{}", c.logs()));
    // Let the third node hear the new master.
    std::thread::sleep(Duration::from_millis(1500));
    let third = (0..3).find(|&i| i != old && i != new).unwrap();
    let s = c.status(new).unwrap();
    let took = &s.instances[0].takeover_seconds;
    let unheld_new = s.instances[0].vip_unheld_s;
    let unheld_third = c.status(third).unwrap().instances[0].vip_unheld_s;
    eprintln!(
        "c{new} took over in {:.3} s ({} takeover), unheld {unheld_new:.3} s; c{third} saw it unheld {unheld_third:.3} s",
        took.sum, took.count
    );
    // Master_Down_Interval (3 s + skew) after the last advert; one interval less unheld.
    assert_eq!(took.count, 1, "{took:?}");
    assert!((3.0..4.2).contains(&took.sum), "{took:?}");
    assert!((2.0..3.2).contains(&unheld_new), "{unheld_new}");
    assert!((1.9..3.3).contains(&unheld_third), "{unheld_third}");
    let m = c.metrics(new);
    assert!(
        m.contains("cplb_vrrp_takeover_seconds_count{instance=\"k0s-vip-0\",vrid=\"51\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("cplb_vip_unheld_seconds_total{instance=\"k0s-vip-0\",vrid=\"51\"} "),
        "{m}"
    );
}

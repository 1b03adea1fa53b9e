//! Live tests, in network namespaces of their own: tables programmed in the kernel, checked
//! with `nft list` and with traffic. They need root.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{NfTablesMessage, RuleAttribute, RuleMessage};

use super::batch::Batch;
use super::expr::{Masq, expression};
use super::tests::{guard, redirect_rules, sa};
use super::*;

/// Effective uid 0, from /proc/self/status ("Uid: real effective saved fs").
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// A network namespace deleted on drop, also when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        let n = NEXT_NETNS.fetch_add(1, Ordering::SeqCst);
        let ns = Self { name: format!("cplbt-nft-{}-{n}", std::process::id()) };
        run("ip", &["netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend(args);
        run("ip", &all);
    }

    fn sysctl(&self, setting: &str) {
        run("ip", &["netns", "exec", &self.name, "sysctl", "-qw", setting]);
    }

    /// `nft list table FAMILY cplb`, or None when there is no such table.
    fn list(&self, family: &str) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list", "table", family, "cplb"])
            .output()
            .unwrap();
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `f` on a thread that entered this namespace, so its sockets live here.
    fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn apply(&self, rules: &Ruleset) -> Result<(), NftError> {
        let rules = rules.clone();
        self.run(move || Nft::open()?.apply("cplb", &rules))
    }

    fn remove(&self) -> Result<(), NftError> {
        self.run(|| Nft::open()?.remove("cplb"))
    }

    fn verify(&self, rules: &Ruleset) -> bool {
        let rules = rules.clone();
        self.run(move || Nft::open()?.verify("cplb", &rules)).unwrap()
    }

    /// Runs `nft ARGS` in this namespace (the tests' hand on the tables).
    fn nft(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, "nft"];
        all.extend(args);
        String::from_utf8_lossy(&run("ip", &all).stdout).into_owned()
    }

    /// The handle of the first rule of `family cplb CHAIN` whose listing has `text`.
    fn handle(&self, family: &str, chain: &str, text: &str) -> String {
        let listing = self.nft(&["-a", "list", "chain", family, "cplb", chain]);
        let line = listing.lines().find(|l| l.contains(text)).expect(&listing);
        line.rsplit("# handle ").next().unwrap().trim().to_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth pair from `a` to `b`, both ends up.
fn veth(a: &Netns, a_end: &str, b: &Netns, b_end: &str) {
    a.ip(&["link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", &b.name]);
    a.ip(&["link", "set", a_end, "up"]);
    b.ip(&["link", "set", b_end, "up"]);
}

/// TCP servers answering `reply` to every connection until `stop`; join for the peers.
struct Server {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<SocketAddr>>,
}

impl Server {
    fn start(ns: &Netns, addr: SocketAddr, reply: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, up) = mpsc::channel();
        let stopped = stop.clone();
        let handle = ns.spawn(move || {
            let listener = TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut peers = Vec::new();
            while !stopped.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        conn.set_nonblocking(false).unwrap();
                        let _ = conn.write_all(reply.as_bytes());
                        peers.push(peer);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept on {addr}: {e}"),
                }
            }
            peers
        });
        up.recv_timeout(Duration::from_secs(10)).unwrap();
        Self { stop, handle }
    }

    fn peers(self) -> Vec<SocketAddr> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// `times` connections from `ns` to `target`, one after the other; what each one read.
fn fetch(ns: &Netns, target: SocketAddr, times: usize) -> Vec<String> {
    ns.run(move || {
        (0..times)
            .map(|_| match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                Ok(mut conn) => {
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut got = String::new();
                    match conn.read_to_string(&mut got) {
                        Ok(_) => got,
                        Err(e) => format!("read error: {e}"),
                    }
                }
                Err(e) => format!("connect error: {e}"),
            })
            .collect()
    })
}

const REDIRECT_RULE: &str = "ip daddr 10.200.0.200 tcp dport 6443 redirect to :6444";

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_redirect_is_installed_once_and_removed() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let ns = Netns::new();
    ns.remove().unwrap();
    assert_eq!(ns.list("ip"), None, "remove of an absent table is fine");

    ns.apply(&redirect_rules()).unwrap();
    let listing = ns.list("ip").expect("table ip cplb");
    assert!(listing.contains(REDIRECT_RULE), "{listing}");
    assert!(listing.contains("type nat hook prerouting priority dstnat"), "{listing}");

    // A second cplbd taking over: the table is replaced, not appended to.
    ns.run(|| {
        let mut nft = Nft::open().unwrap();
        nft.apply("cplb", &redirect_rules()).unwrap();
        nft.apply("cplb", &redirect_rules()).unwrap();
    });
    let listing = ns.list("ip").unwrap();
    assert_eq!(listing.matches(REDIRECT_RULE).count(), 1, "{listing}");
    assert_eq!(ns.list("ip6"), None);

    ns.apply(&Ruleset::default()).unwrap();
    assert_eq!(ns.list("ip"), None, "an empty ruleset deletes the table");

    ns.apply(&redirect_rules()).unwrap();
    ns.remove().unwrap();
    assert_eq!(ns.list("ip"), None);
    assert_eq!(ns.list("ip6"), None);
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_kernel_errors_name_the_message() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let ns = Netns::new();
    let err = ns
        .run(|| {
            let mut batch = Batch::new(1, "commit (test)".into());
            let attributes = vec![
                RuleAttribute::Table("cplb-absent".into()),
                RuleAttribute::Chain("nope".into()),
                RuleAttribute::Expressions(vec![expression::<Masq>(&[])]),
            ];
            let rule = NfTablesMessage::NewRule(RuleMessage { attributes });
            let ipv4 = NetfilterProtoFamily::IPv4;
            batch.message(rule, NLM_F_CREATE, ipv4, "into nowhere").unwrap();
            Nft::open().unwrap().exchange(&batch.finish())
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "NEWRULE (into nowhere) failed: No such file or directory (os error 2)"
    );
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_redirect_carries_traffic() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let (client, server) = (Netns::new(), Netns::new());
    veth(&client, "c0", &server, "s0");
    client.ip(&["addr", "add", "10.200.9.1/24", "dev", "c0"]);
    server.ip(&["addr", "add", "10.200.9.2/24", "dev", "s0"]);
    server.ip(&["addr", "add", "10.200.9.200/32", "dev", "s0"]);
    let proxy = Server::start(&server, sa("0.0.0.0:6444"), "proxy");
    let vip = sa("10.200.9.200:6443");
    server
        .apply(&Ruleset {
            redirects: vec![Redirect { vip, to_port: 6444 }],
            balancers: vec![],
            guards: vec![],
        })
        .unwrap();
    assert_eq!(fetch(&client, vip, 2), ["proxy", "proxy"]);
    assert_eq!(proxy.peers().len(), 2);
}

/// Reads the packet count of each `counter` in `nft list` output, in order.
fn counters(listing: &str) -> Vec<u64> {
    listing
        .split("counter packets ")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_guard_marks_only_what_no_real_server_sent() {
    assert!(is_root(), "needs root (creates network namespaces)");
    // Two peers of the director: a real server (its MAC in the guard) and a client.
    let (server, peer, client) = (Netns::new(), Netns::new(), Netns::new());
    veth(&peer, "p0", &server, "s0");
    veth(&client, "c0", &server, "s1");
    peer.ip(&["link", "set", "p0", "address", "02:00:00:00:00:11"]);
    peer.ip(&["addr", "add", "10.200.9.11/24", "dev", "p0"]);
    client.ip(&["addr", "add", "10.200.8.1/24", "dev", "c0"]);
    server.ip(&["addr", "add", "10.200.9.2/24", "dev", "s0"]);
    server.ip(&["addr", "add", "10.200.8.2/24", "dev", "s1"]);
    server.ip(&["addr", "add", "10.200.9.200/32", "dev", "s0"]);
    for (ns, via) in [(&peer, "10.200.9.2"), (&client, "10.200.8.2")] {
        ns.ip(&["route", "add", "10.200.9.200/32", "via", via]);
    }
    let api = Server::start(&server, sa("0.0.0.0:6443"), "api");
    server.apply(&guard(&[[2, 0, 0, 0, 0, 0x11]])).unwrap();
    let listing = server.list("ip").unwrap();
    assert!(listing.contains("ether saddr 02:00:00:00:00:11 return"), "{listing}");
    assert!(listing.contains("meta mark set 0x00000064"), "{listing}");
    // What the input path sees: marked and unmarked connections to the VIP.
    server.nft(&["add", "table", "ip", "cplbtobs"]);
    let hook = "{ type filter hook input priority 0; }";
    server.nft(&["add", "chain", "ip", "cplbtobs", "input", hook]);
    for mark in ["100", "0"] {
        let rule = ["add", "rule", "ip", "cplbtobs", "input", "tcp", "dport", "6443"];
        server.nft(&[&rule[..], &["meta", "mark", mark, "counter"]].concat());
    }
    let vip = sa("10.200.9.200:6443");
    let seen = || counters(&server.nft(&["list", "table", "ip", "cplbtobs"]));

    assert_eq!(fetch(&peer, vip, 2), ["api", "api"]);
    let after_peer = seen();
    assert_eq!(after_peer[0], 0, "nothing from the real server is marked: {after_peer:?}");
    assert!(after_peer[1] >= 2, "the real server's SYNs arrived unmarked: {after_peer:?}");

    assert_eq!(fetch(&client, vip, 2), ["api", "api"]);
    let after_client = seen();
    assert!(after_client[0] >= 2, "the client's SYNs are marked: {after_client:?}");
    assert_eq!(after_client[1], after_peer[1], "and none unmarked: {after_client:?}");
    assert_eq!(api.peers().len(), 4);
    assert!(server.verify(&guard(&[[2, 0, 0, 0, 0, 0x11]])));
    assert!(!server.verify(&guard(&[])), "a guard with other MACs is not this table");
}

/// client (10.200.9.1) -- (10.200.9.2, VIP 10.200.9.200) balancer (10.200.10.1) --
/// backends (10.200.10.11-13), which have no route back to the client: only masquerading
/// gets their answers home.
fn balanced_topology(spread: Spread) -> (Vec<String>, Vec<Vec<SocketAddr>>, String) {
    let (client, lb, backends) = (Netns::new(), Netns::new(), Netns::new());
    veth(&client, "c0", &lb, "l0");
    veth(&lb, "l1", &backends, "b0");
    client.ip(&["addr", "add", "10.200.9.1/24", "dev", "c0"]);
    lb.ip(&["addr", "add", "10.200.9.2/24", "dev", "l0"]);
    lb.ip(&["addr", "add", "10.200.9.200/32", "dev", "l0"]);
    lb.ip(&["addr", "add", "10.200.10.1/24", "dev", "l1"]);
    lb.sysctl("net.ipv4.ip_forward=1");
    let names = ["b11", "b12", "b13"];
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let addr = format!("10.200.10.{}", 11 + i);
        backends.ip(&["addr", "add", &format!("{addr}/24"), "dev", "b0"]);
        let addr = sa(&format!("{addr}:6444"));
        servers.push(Server::start(&backends, addr, name));
        addrs.push(addr);
    }
    let vip = sa("10.200.9.200:6443");
    lb.apply(&Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer { vip, backends: addrs, spread }],
    })
    .unwrap();
    let listing = lb.list("ip").unwrap();
    let got = fetch(&client, vip, 6);
    (got, servers.into_iter().map(Server::peers).collect(), listing)
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_round_robin_balancer_spreads_and_masquerades() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let (got, peers, listing) = balanced_topology(Spread::RoundRobin);
    let map = "numgen inc mod 3 map { 0 : 10.200.10.11 . 6444, 1 : 10.200.10.12 . 6444, 2 : 10.200.10.13 . 6444 }";
    assert!(listing.contains(map), "{listing}");
    assert!(listing.contains("masquerade"), "{listing}");
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, ["b11", "b11", "b12", "b12", "b13", "b13"], "{got:?}\n{listing}");
    for p in peers.iter().flatten() {
        assert_eq!(p.ip(), "10.200.10.1".parse::<IpAddr>().unwrap(), "masqueraded source");
    }
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_source_hash_balancer_sticks_to_one_backend() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let (got, _, listing) = balanced_topology(Spread::SourceHash);
    assert!(listing.contains("jhash ip saddr mod 3"), "{listing}");
    assert!(got[0].starts_with('b'), "{got:?}");
    assert!(got.iter().all(|g| *g == got[0]), "{got:?}");
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn live_ipv6_redirect_installs_in_ip6_and_carries_traffic() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let (client, server) = (Netns::new(), Netns::new());
    veth(&client, "c0", &server, "s0");
    client.ip(&["addr", "add", "fd00:200::1/64", "dev", "c0", "nodad"]);
    server.ip(&["addr", "add", "fd00:200::2/64", "dev", "s0", "nodad"]);
    server.ip(&["addr", "add", "fd00:200::200/128", "dev", "s0", "nodad"]);
    let proxy = Server::start(&server, sa("[::]:6444"), "proxy");
    let vip = sa("[fd00:200::200]:6443");
    server
        .apply(&Ruleset {
            redirects: vec![Redirect { vip, to_port: 6444 }],
            balancers: vec![],
            guards: vec![],
        })
        .unwrap();
    let listing = server.list("ip6").expect("table ip6 cplb");
    assert!(
        listing.contains("ip6 daddr fd00:200::200 tcp dport 6443 redirect to :6444"),
        "{listing}"
    );
    assert_eq!(server.list("ip"), None);
    assert_eq!(fetch(&client, vip, 1), ["proxy"]);
    proxy.peers();
    server.remove().unwrap();
    assert_eq!(server.list("ip6"), None);
}

/// Redirects and a balancer in ip, a redirect in ip6: every kind of chain, rule and map.
fn both_families() -> Ruleset {
    Ruleset {
        guards: vec![],
        redirects: vec![
            Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 },
            Redirect { vip: sa("[fd00:200::200]:6443"), to_port: 6444 },
        ],
        balancers: vec![Balancer {
            vip: sa("10.200.0.201:6443"),
            backends: vec![sa("10.200.10.11:6444"), sa("10.200.10.12:6444")],
            spread: Spread::SourceHash,
        }],
    }
}

#[test]
#[ignore = "needs root: creates a network namespace and programs nf_tables there"]
fn live_verify_tells_the_programmed_table_from_drift() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let ns = Netns::new();
    let rules = both_families();
    assert!(!ns.verify(&rules), "nothing programmed yet");

    ns.apply(&rules).unwrap();
    assert!(ns.verify(&rules), "just programmed");
    let listing = ns.list("ip").unwrap();
    assert!(listing.contains("comment \"cplb "), "the tags show as comments: {listing}");
    let mut other = rules.clone();
    other.balancers[0].backends.pop();
    assert!(!ns.verify(&other), "another backend list is not what is programmed");
    other = rules.clone();
    other.redirects.reverse();
    assert!(ns.verify(&other), "the order of families in the list does not matter");

    // The ip table deleted.
    ns.nft(&["delete", "table", "ip", "cplb"]);
    assert!(!ns.verify(&rules), "ip table deleted");
    ns.apply(&rules).unwrap();
    assert!(ns.verify(&rules), "reapplied after the table went");

    // One rule deleted, by handle.
    let handle = ns.handle("ip", "prerouting", "redirect to :6444");
    ns.nft(&["delete", "rule", "ip", "cplb", "prerouting", "handle", &handle]);
    assert!(!ns.verify(&rules), "a redirect deleted");
    ns.apply(&rules).unwrap();
    assert!(ns.verify(&rules), "reapplied after a rule went");

    // A chain flushed.
    ns.nft(&["flush", "chain", "ip", "cplb", "postrouting"]);
    assert!(!ns.verify(&rules), "postrouting flushed");
    ns.apply(&rules).unwrap();
    assert!(ns.verify(&rules));

    // A rule replaced by another that does something else (its comment goes with it).
    let handle = ns.handle("ip", "prerouting", "redirect to :6444");
    ns.nft(&[
        "replace",
        "rule",
        "ip",
        "cplb",
        "prerouting",
        "handle",
        &handle,
        "ip",
        "daddr",
        "10.200.0.200",
        "tcp",
        "dport",
        "6443",
        "redirect",
        "to",
        ":7000",
    ]);
    assert!(!ns.verify(&rules), "a redirect replaced");
    ns.apply(&rules).unwrap();

    // Something added: a rule, a chain; the table set dormant; the ip6 table deleted.
    for (what, args) in [
        ("a foreign rule", &["add", "rule", "ip", "cplb", "prerouting", "counter"][..]),
        ("a foreign chain", &["add", "chain", "ip", "cplb", "extra"][..]),
        ("a dormant table", &["add", "table", "ip", "cplb", "{", "flags", "dormant;", "}"][..]),
        ("ip6 table deleted", &["delete", "table", "ip6", "cplb"][..]),
    ] {
        assert!(ns.verify(&rules), "before {what}");
        ns.nft(args);
        assert!(!ns.verify(&rules), "{what}");
        ns.apply(&rules).unwrap();
        assert!(ns.verify(&rules), "reapplied after {what}");
    }
}

#[test]
#[ignore = "needs root: creates a network namespace and programs nf_tables there"]
fn live_verify_of_nothing_wants_no_table() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let ns = Netns::new();
    let nothing = Ruleset::default();
    assert!(ns.verify(&nothing), "no tables: as apply of nothing leaves it");
    ns.apply(&both_families()).unwrap();
    assert!(!ns.verify(&nothing), "tables where none should be");
    ns.apply(&nothing).unwrap();
    assert!(ns.verify(&nothing));
    // apply deletes even an empty table, so an empty one is not what it leaves.
    ns.nft(&["add", "table", "ip6", "cplb"]);
    assert!(!ns.verify(&nothing), "an empty table left by someone else");
    // A balancer without backends installs nothing: no table either.
    let idle = Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer {
            vip: sa("10.200.0.201:6443"),
            backends: vec![],
            spread: Spread::RoundRobin,
        }],
    };
    ns.apply(&idle).unwrap();
    assert!(ns.verify(&idle) && ns.verify(&nothing));
}

/// Every kind of rule in both families: redirects, balancers of both spreads, guards.
fn every_kind() -> Ruleset {
    let macs = |last: &[u8]| last.iter().map(|&b| [2, 0, 0, 0, 0, b]).collect();
    Ruleset {
        redirects: vec![
            Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 },
            Redirect { vip: sa("[fd00:200::200]:6443"), to_port: 6444 },
        ],
        balancers: vec![
            Balancer {
                vip: sa("10.200.0.201:6443"),
                backends: ["10.200.10.11:6444", "10.200.10.12:6444", "10.200.10.13:6445"]
                    .map(sa)
                    .to_vec(),
                spread: Spread::RoundRobin,
            },
            Balancer {
                vip: sa("10.200.0.202:443"),
                backends: ["10.200.10.21:8443", "10.200.10.22:8443"].map(sa).to_vec(),
                spread: Spread::SourceHash,
            },
            Balancer {
                vip: sa("[fd00:200::201]:6443"),
                backends: ["[fd00:200::11]:6444", "[fd00:200::12]:6444"].map(sa).to_vec(),
                spread: Spread::SourceHash,
            },
            Balancer {
                vip: sa("[fd00:200::202]:6443"),
                backends: ["[fd00:200::21]:6444", "[fd00:200::22]:6444", "[fd00:200::23]:6444"]
                    .map(sa)
                    .to_vec(),
                spread: Spread::RoundRobin,
            },
        ],
        guards: vec![
            Guard { vip: sa("10.200.9.200:6443"), fwmark: 100, macs: macs(&[0x11, 0x12]) },
            Guard { vip: sa("[fd00:200::9]:6443"), fwmark: 101, macs: macs(&[0x21]) },
        ],
    }
}

/// `nft list table ip cplb` then `ip6 cplb` for [`every_kind`], as the hand-written encoder
/// that came before netlink-packet-netfilter programmed them (nftables 1.0.6, Linux 6.18).
/// The comments are the rules' tags, hashes of their expression bytes and maps: the same
/// listing is the same rules, tags and maps.
const EVERY_KIND_LISTING: &str = include_str!("every_kind.nft");

#[test]
#[ignore = "needs root: creates a network namespace and programs nf_tables there"]
fn live_listing_of_every_kind_of_rule_is_unchanged() {
    assert!(is_root(), "needs root (creates network namespaces)");
    let ns = Netns::new();
    ns.apply(&every_kind()).unwrap();
    let listing = [ns.list("ip").unwrap(), ns.list("ip6").unwrap()].concat();
    // Whitespace aside: nft's indentation is no part of the rules.
    let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(words(&listing), words(EVERY_KIND_LISTING), "{listing}");
    assert!(ns.verify(&every_kind()));
}

//! The announcer on a real link (root only): two namespaces joined by a veth pair. The
//! gratuitous ARP and the unsolicited neighbour advertisement reach the peer and move its
//! neighbour entries to our MAC, while the interface stays out of promiscuous mode and the
//! announcer's packet socket (protocol 0) receives and queues nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cplb_lab::topology::{self, in_namespace};
use cplb_netns::kernel::announce::{Announcer, gratuitous_arp, neighbour_advertisement};
use socket2::{Domain, Protocol, Socket, Type};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0x77, 0x01];
const MAC_A_TEXT: &str = "02:00:00:00:77:01";
const MAC_B: &str = "02:00:00:00:77:02";
const OLD_MAC: &str = "02:00:00:00:00:99";
const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 200, 77, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 200, 77, 200);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0x77, 0, 0, 0, 0, 0x200);
const DEV: &str = "eth0";

/// Two namespaces, `a` and `b`, each with an `eth0`, the two ends of one veth pair.
/// Dropping it (also when a test panics) deletes both namespaces, and the veth with them.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let pair = Self { a: format!("cplbt-{tag}-a-{pid}"), b: format!("cplbt-{tag}-b-{pid}") };
        for ns in [&pair.a, &pair.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            // Without duplicate address detection the link-local address, and with it the
            // multicast route that ff02::1 (where the NA goes) needs, is there at once.
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])
                .output()
                .expect("sysctl runs");
            assert!(out.status.success(), "sysctl: {}", String::from_utf8_lossy(&out.stderr));
        }
        ip(&[
            "-n", &pair.a, "link", "add", DEV, "address", MAC_A_TEXT, "type", "veth", "peer",
            "name", DEV, "address", MAC_B, "netns", &pair.b,
        ]);
        for (ns, v4, v6) in [
            (&pair.a, "10.200.77.1/24", "fd00:200:77::1/64"),
            (&pair.b, "10.200.77.2/24", "fd00:200:77::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", v4, "dev", DEV]);
            ip(&["-n", ns, "addr", "add", v6, "dev", DEV, "nodad"]);
            ip(&["-n", ns, "link", "set", DEV, "up"]);
        }
        // Both ends ready for IPv6 multicast (all-nodes): b drops the NA until then.
        for ns in [&pair.a, &pair.b] {
            let deadline = Instant::now() + Duration::from_secs(5);
            let ready = || {
                ip(&["-n", ns, "-6", "route", "show", "table", "local", "type", "multicast"])
                    .contains("ff00::/8")
            };
            while !ready() {
                assert!(Instant::now() < deadline, "no IPv6 multicast route in {ns}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        pair
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The link-layer address of `addr` in `ns`'s neighbour table, if it has an entry.
fn neighbour(ns: &str, addr: IpAddr) -> Option<String> {
    let out = ip(&["-n", ns, "-j", "neigh", "show", &addr.to_string(), "dev", DEV]);
    let entries: serde_json::Value = serde_json::from_str(&out).ok()?;
    entries.get(0)?.get("lladdr")?.as_str().map(str::to_owned)
}

fn promiscuity(ns: &str) -> u64 {
    let out = ip(&["-n", ns, "-d", "-j", "link", "show", DEV]);
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    links[0]["promiscuity"].as_u64().unwrap_or_else(|| panic!("no promiscuity in {out}"))
}

/// One socket line of /proc/net/packet.
#[derive(Debug)]
struct PacketSocket {
    kind: String,
    proto: String,
    ifindex: u32,
    running: String,
    rmem: u64,
}

/// The packet sockets of the calling thread's network namespace. `/proc/net` is
/// `/proc/self/net`, the namespace of the process's main thread; this thread's is under
/// `/proc/thread-self`.
fn packet_sockets() -> Vec<PacketSocket> {
    let table = std::fs::read_to_string("/proc/thread-self/net/packet").unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (kind, proto, iface, running, rmem) =
        (column("Type"), column("Proto"), column("Iface"), column("R"), column("Rmem"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            PacketSocket {
                kind: f[kind].to_owned(),
                proto: f[proto].to_owned(),
                ifindex: f[iface].parse().unwrap(),
                running: f[running].to_owned(),
                rmem: f[rmem].parse().unwrap(),
            }
        })
        .collect()
}

/// What the announcer's thread in `a` reports to the test.
#[derive(Debug)]
enum FromA {
    /// Open and both addresses announced: the interface index and the namespace's packet
    /// sockets (only the announcer's).
    Announced(u32, Vec<PacketSocket>),
    /// The packet sockets again, after the peer sent traffic.
    After(Vec<PacketSocket>),
    /// The packet sockets once the announcer is dropped.
    Closed(Vec<PacketSocket>),
}

#[test]
#[ignore = "needs root: creates network namespaces"]
fn announcements_reach_the_peer_without_promiscuous_mode_or_a_receive_queue() {
    assert!(topology::is_root(), "announce: needs root (creates network namespaces)");
    let pair = Pair::new("ann");
    // The peer knows both addresses at an old MAC; the announcements must override it (a
    // gratuitous ARP only updates an existing entry, and so does an unsolicited NA here).
    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        let vip = vip.to_string();
        ip(&["-n", &pair.b, "neigh", "add", &vip, "lladdr", OLD_MAC, "dev", DEV, "nud", "stale"]);
    }

    // Capture everything arriving in `b` (ETH_P_ALL, in network byte order).
    let (ready_tx, ready_rx) = mpsc::channel();
    let capture = in_namespace(&pair.b, move || {
        let eth_p_all = i32::from(0x0003u16.to_be());
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(eth_p_all)))
            .expect("capture socket");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        ready_tx.send(()).unwrap();
        let want = [gratuitous_arp(MAC_A, VIP4), neighbour_advertisement(MAC_A, VIP6)];
        let mut seen = [false, false];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 2048];
        while !seen.iter().all(|s| *s) && Instant::now() < deadline {
            if let Ok(n) = (&socket).read(&mut buf) {
                for (frame, seen) in want.iter().zip(&mut seen) {
                    // veth does not pad, but a minimum-size pad would be harmless.
                    *seen |= buf[..n].starts_with(frame);
                }
            }
        }
        seen
    })
    .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(5)).expect("capture socket open in b");

    // The announcer lives on a thread in `a`, until the test says so.
    let (to_a, from_test) = mpsc::channel::<()>();
    let (to_test, from_a) = mpsc::channel();
    let announcer = in_namespace(&pair.a, move || {
        assert!(packet_sockets().is_empty(), "a fresh namespace has no packet sockets");
        let ifindex = nix::net::if_::if_nametoindex(DEV).unwrap();
        let mut announcer = Announcer::open(ifindex).expect("announcer opens");
        assert!(format!("{announcer:?}").contains(DEV), "{announcer:?}");
        announcer.announce(IpAddr::V4(VIP4)).expect("gratuitous ARP sent");
        announcer.announce(IpAddr::V6(VIP6)).expect("neighbour advertisement sent");
        to_test.send(FromA::Announced(ifindex, packet_sockets())).unwrap();
        from_test.recv().unwrap();
        to_test.send(FromA::After(packet_sockets())).unwrap();
        from_test.recv().unwrap();
        drop(announcer);
        to_test.send(FromA::Closed(packet_sockets())).unwrap();
    })
    .unwrap();
    let recv = || from_a.recv_timeout(Duration::from_secs(10)).expect("announcer thread");

    // (c) One packet socket: SOCK_RAW (3), protocol 0, bound to eth0, not hooked into the
    // receive path (R 0) and with nothing queued.
    let FromA::Announced(ifindex, sockets) = recv() else { panic!("announcer thread out of step") };
    let [socket] = sockets.as_slice() else { panic!("want only the announcer's: {sockets:?}") };
    assert_eq!(socket.kind, "3", "{socket:?}");
    assert_eq!(socket.proto, "0000", "the socket must have protocol 0: {socket:?}");
    assert_eq!(socket.ifindex, ifindex, "bound to {DEV}: {socket:?}");
    assert_eq!(socket.running, "0", "hooked into the receive path: {socket:?}");
    assert_eq!(socket.rmem, 0, "{socket:?}");

    // (b) Not promiscuous while the announcer is open.
    assert_eq!(promiscuity(&pair.a), 0, "{DEV} in a went promiscuous");

    // (a) The peer received both frames, byte for byte, and took our MAC for both addresses.
    let seen = capture.join().unwrap().unwrap();
    assert_eq!(seen, [true, true], "[gratuitous ARP, neighbour advertisement] seen in b");
    let deadline = Instant::now() + Duration::from_secs(3);
    let moved = || {
        [IpAddr::V4(VIP4), IpAddr::V6(VIP6)]
            .map(|vip| (vip, neighbour(&pair.b, vip)))
            .into_iter()
            .filter(|(_, mac)| mac.as_deref() != Some(MAC_A_TEXT))
            .collect::<Vec<_>>()
    };
    while !moved().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(moved().is_empty(), "neighbours in b not moved to {MAC_A_TEXT}: {:?}", moved());

    // Traffic from the peer on the link (ARP, UDP, ICMP port unreachables back): a socket
    // that received would queue it; this one must stay empty.
    in_namespace(&pair.b, || {
        let udp = UdpSocket::bind("10.200.77.2:0").unwrap();
        for _ in 0..20 {
            udp.send_to(&[0u8; 512], (ADDR_A, 9)).unwrap();
        }
    })
    .unwrap()
    .join()
    .unwrap()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    to_a.send(()).unwrap();
    let FromA::After(sockets) = recv() else { panic!("announcer thread out of step") };
    let [socket] = sockets.as_slice() else { panic!("want only the announcer's: {sockets:?}") };
    assert_eq!(socket.rmem, 0, "the announcer's socket queued received frames: {socket:?}");
    assert_eq!(promiscuity(&pair.a), 0, "{DEV} in a went promiscuous");

    to_a.send(()).unwrap();
    let FromA::Closed(sockets) = recv() else { panic!("announcer thread out of step") };
    assert!(sockets.is_empty(), "the socket outlived the announcer: {sockets:?}");
    announcer.join().unwrap().unwrap();
    drop(pair);
}

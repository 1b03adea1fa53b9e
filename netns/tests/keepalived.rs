//! Interoperation with keepalived (Debian's package), VRRP only, on the same namespaces: a
//! cluster of one cplbd and two keepalived elects one master and hands over both ways, and
//! neither side logs or counts a rejected packet, for each of: VRRPv2 with PASS as k0s
//! generates it (priority 200, advert 1 s), VRRPv3 over IPv4 with keepalived's default
//! checksum (IPv4 pseudo-header) and with `v3_checksum_as_v2` (RFC 9568's form), VRRPv3 over
//! IPv6, and unicast peers (root only).
//!
//! Acceptance alone does not pin the checksum cplbd sends where a receiver takes both
//! VRRPv3-over-IPv4 forms (cplbd does by default), so every cell also captures cplbd's adverts
//! on the bridge and checks their version, VRID and checksum form with cplb-core's codec: the
//! form the cell configures verifies and, over IPv4, the other does not.
//!
//! `v3_checksum_as_v2` came with keepalived 2.2.8; Debian's 2.2.7 lacks it, so that cell is
//! ignored with that reason and skipped by name in `scripts/test.sh`; run against a keepalived
//! without the keyword, it fails saying so.
//!
//! c0 and c1 run keepalived, c2 runs cplbd.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Cluster, MARGIN, MASTER_DOWN, can_run};
use cplb_core::vrrp::{
    self, Advertisement, ChecksumForm, ChecksumPolicy, DecodeError, ReceiveRules, V3Ipv4Checksum,
};
use cplb_lab::topology;
use nix::sys::signal::Signal;
use nix::sys::socket::{self, AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, sockopt};
use nix::sys::time::TimeVal;

const CPLBD: usize = 2;
/// The virtual router of every cell (k0s's default, also in common's `k0s.yaml`).
const VRID: u8 = 51;
/// Fewest adverts of cplbd's a cell's capture must hold: it is master for over 10 s at one
/// advert a second, so fewer means the capture missed them.
const MIN_ADVERTS: usize = 5;

/// One column of the interoperation matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// k0s's: VRRPv2, PASS.
    V2Pass,
    /// VRRPv3 over IPv4, keepalived's default checksum (with the IPv4 pseudo-header).
    V3Ipv4,
    /// VRRPv3 over IPv4, keepalived with `v3_checksum_as_v2` (message only, RFC 9568).
    V3Ipv4AsV2,
    /// VRRPv3 over IPv6 (link-local sources).
    V3Ipv6,
    /// VRRPv2 with PASS to unicast peers instead of 224.0.0.18.
    Unicast,
}

impl Variant {
    fn cluster(self, tag: &str, net: u8) -> Cluster {
        let mut c = if self == Self::V3Ipv6 {
            Cluster::new_v6(tag, &format!("fd00:200:{net}"), 3)
        } else {
            Cluster::new(tag, &format!("10.200.{net}"), 3)
        };
        c.extra_args = match self {
            Self::V3Ipv4 => vec![
                "--vrrp-version".into(),
                "3".into(),
                "--v3-ipv4-checksum".into(),
                "pseudo-header".into(),
            ],
            Self::V3Ipv4AsV2 => vec![
                "--vrrp-version".into(),
                "3".into(),
                "--v3-ipv4-checksum".into(),
                "rfc9568".into(),
            ],
            _ => Vec::new(),
        };
        if self == Self::Unicast {
            // k0s's file for c2: its own source, the other controllers as peers.
            let peers = format!("[\"{}\", \"{}\"]", c.addr(0), c.addr(1));
            std::fs::write(
                c.dir.join("k0s.yaml"),
                format!(
                    "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n        - virtualIPs: [\"{}/24\"]\n          authPass: k0s-lab1\n          virtualRouterID: {VRID}\n          interface: eth0\n          unicastSourceIP: {}\n          unicastPeers: {peers}\n",
                    c.vip,
                    c.addr(CPLBD)
                ),
            )
            .unwrap();
        }
        c
    }

    /// keepalived's configuration on controller `i`: k0s's template (cplb_templates.go)
    /// rendered for one instance, with the variant's version, checksum or peers.
    fn keepalived_conf(self, c: &Cluster, i: usize) -> String {
        let prefix = if c.v6 { 64 } else { 24 };
        let global = match self {
            Self::V3Ipv4 | Self::V3Ipv6 => "global_defs {\n    vrrp_version 3\n}\n".to_owned(),
            Self::V3Ipv4AsV2 => {
                "global_defs {\n    vrrp_version 3\n    v3_checksum_as_v2\n}\n".to_owned()
            }
            Self::V2Pass | Self::Unicast => String::new(),
        };
        // VRRPv3 has no authentication.
        let auth = match self {
            Self::V2Pass | Self::Unicast => {
                "    authentication {\n        auth_type PASS\n        auth_pass k0s-lab1\n    }\n"
            }
            _ => "",
        };
        let unicast = if self == Self::Unicast {
            let peers: String =
                (0..3).filter(|p| *p != i).map(|p| format!("        {}\n", c.addr(p))).collect();
            format!("    unicast_src_ip {}\n    unicast_peer {{\n{peers}    }}\n", c.addr(i))
        } else {
            String::new()
        };
        format!(
            "{global}vrrp_instance k0s-vip-0 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {VRID}\n    priority 200\n    advert_int 1\n{auth}    virtual_ipaddress {{\n        {}/{prefix}\n    }}\n{unicast}}}\n",
            c.vip
        )
    }

    /// The VRRP version cplbd sends in this cell.
    fn version(self) -> u8 {
        match self {
            Self::V2Pass | Self::Unicast => 2,
            Self::V3Ipv4 | Self::V3Ipv4AsV2 | Self::V3Ipv6 => 3,
        }
    }

    /// The checksum form cplbd must put on its adverts in this cell (`--v3-ipv4-checksum`
    /// for VRRPv3 over IPv4; v2 and IPv6 have one form each).
    fn sent_form(self) -> ChecksumForm {
        match self {
            Self::V2Pass | Self::Unicast => ChecksumForm::V2,
            Self::V3Ipv4 => ChecksumForm::PseudoHeader,
            Self::V3Ipv4AsV2 => ChecksumForm::Rfc9568,
            Self::V3Ipv6 => ChecksumForm::Ipv6,
        }
    }
}

fn start_keepalived(c: &Cluster, variant: Variant, i: usize) -> Child {
    let conf = c.dir.join(format!("keepalived-{i}.conf"));
    std::fs::write(&conf, variant.keepalived_conf(c, i)).unwrap();
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
                    // Its own sends failing on the link the test took down are not rejections.
                    REJECTIONS.iter().any(|r| l.contains(r)) && !l.contains("send advert error")
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

/// cplbd's address on the wire: its IPv4 address, or for IPv6 its link-local address on
/// eth0 (VRRPv3's source), which the kernel gives eth0 when it comes up.
fn cplbd_source(c: &Cluster) -> IpAddr {
    if !c.v6 {
        return c.addr(CPLBD).parse().expect("cplbd's IPv4 address");
    }
    let host = format!("c{CPLBD}");
    let args = ["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = c.topo.ip(&host, &args).unwrap_or_default();
        let found = text.split_whitespace().skip_while(|w| *w != "inet6").nth(1);
        if let Some(addr) = found.and_then(|a| a.split('/').next()?.parse().ok()) {
            return addr;
        }
        assert!(Instant::now() < deadline, "{host}'s eth0 has no link-local address: {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Most packets a capture keeps (a cell sends a few dozen).
const CAPTURE_LIMIT: usize = 1000;

/// A capture of the VRRP packets one host sends, as they enter the bridge: a packet socket
/// in the bridge's namespace, read by a thread of this process. It sees every interface
/// there; it keeps the packets from `src` that a bridge port received (neither the copies
/// the bridge sends out of its other ports nor br0's own), so each packet sent is kept once,
/// multicast or unicast. Ending it (also by drop, when a test fails) stops the thread and
/// closes the socket; it writes no file. Dropped while a test fails, it prints its verdict
/// on what it caught, so a failed hand-over shows whether cplbd's adverts were at fault.
struct WireCapture {
    variant: Variant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Vec<u8>>, String>>>,
}

impl WireCapture {
    /// Starts capturing on `c`'s bridge the VRRP packets from `src` in cell `variant`; the
    /// socket is open when this returns.
    fn start(c: &Cluster, variant: Variant, src: IpAddr) -> Self {
        let lan = c.topo.lan();
        let (fd, bridge) = topology::in_namespace(&lan, open_capture_socket)
            .unwrap_or_else(|e| panic!("entering {lan}: {e}"))
            .join()
            .expect("the capture socket's thread")
            .expect("in the bridge's namespace")
            .unwrap_or_else(|e| panic!("packet socket in {lan}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || collect_packets(&fd, bridge, src, &flag));
        Self { variant, stop, thread: Some(thread) }
    }

    /// Stops the capture: the packets kept, in the order seen.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("capture not finished yet");
        thread.join().expect("the capture thread").unwrap_or_else(|e| panic!("capture: {e}"))
    }
}

impl Drop for WireCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else { return };
        let caught = thread.join();
        if std::thread::panicking() {
            let verdict = match caught {
                Ok(Ok(packets)) => wire_verdict(self.variant, &packets).unwrap_or_else(|e| e),
                Ok(Err(e)) => format!("capture failed: {e}"),
                Err(_) => "capture thread panicked".to_owned(),
            };
            eprintln!("cplbd's adverts on the wire until the failure: {verdict}");
        }
    }
}

/// In the bridge's namespace: a packet socket for all protocols on all interfaces, IP
/// packets without their link header, reads timing out every 100 ms (so the reader sees
/// its stop flag); and br0's interface index.
fn open_capture_socket() -> nix::Result<(OwnedFd, usize)> {
    let fd = socket::socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )?;
    socket::setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
    let bridge = nix::net::if_::if_nametoindex("br0")?;
    Ok((fd, bridge as usize))
}

/// Reads `fd` until `stop`: the VRRP packets from `src` that entered a port of the bridge
/// whose index is `bridge`.
fn collect_packets(
    fd: &OwnedFd,
    bridge: usize,
    src: IpAddr,
    stop: &AtomicBool,
) -> Result<Vec<Vec<u8>>, String> {
    let mut kept = Vec::new();
    let mut buf = [0_u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let (packet, link) = match socket::recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
            Ok((n, Some(link))) => (buf.get(..n).unwrap_or_default(), link),
            Ok((_, None)) => continue,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("reading the packet socket: {e}")),
        };
        let entered_port = link.ifindex() != bridge && link.pkttype() != nix::libc::PACKET_OUTGOING;
        let wanted = entered_port && ip_source(packet) == Some(src) && is_vrrp(packet);
        if wanted && kept.len() < CAPTURE_LIMIT {
            kept.push(packet.to_vec());
        }
    }
    Ok(kept)
}

/// The source address of an IPv4 or IPv6 packet.
fn ip_source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => <[u8; 4]>::try_from(packet.get(12..16)?).ok().map(IpAddr::from),
        6 => <[u8; 16]>::try_from(packet.get(8..24)?).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Whether an IP packet carries VRRP (protocol 112). One that does not parse otherwise is
/// kept too, for the check to report.
fn is_vrrp(packet: &[u8]) -> bool {
    !matches!(vrrp::parse_ip(packet), Err(DecodeError::NotVrrp(_)))
}

/// The receive policy that accepts only `form`, and for VRRPv3 over IPv4 the one that
/// accepts only the other form; v2 and IPv6 have one form each, which any policy checks.
fn checksum_policies(form: ChecksumForm) -> (ChecksumPolicy, Option<ChecksumPolicy>) {
    let only = ChecksumPolicy::Only;
    match form {
        ChecksumForm::PseudoHeader => {
            (only(V3Ipv4Checksum::PseudoHeader), Some(only(V3Ipv4Checksum::Rfc9568)))
        }
        ChecksumForm::Rfc9568 => {
            (only(V3Ipv4Checksum::Rfc9568), Some(only(V3Ipv4Checksum::PseudoHeader)))
        }
        ChecksumForm::V2 | ChecksumForm::Ipv6 => (ChecksumPolicy::AcceptBoth, None),
    }
}

/// Checks one captured packet of cplbd's against the cell: a VRRP advert of the cell's
/// version and VRID whose checksum verifies in the cell's form and, over IPv4 with VRRPv3,
/// not in the other form.
fn check_advert(variant: Variant, packet: &[u8]) -> Result<(), String> {
    let (ip, message) = vrrp::parse_ip(packet).map_err(|e| format!("not VRRP: {e}"))?;
    let at = format!("{} -> {}", ip.src, ip.dst);
    let form = variant.sent_form();
    let (accept, refuse) = checksum_policies(form);
    // cplbd under k0s's configuration sends IPv6 VIPs first, as keepalived does.
    let rules = |checksum| ReceiveRules {
        checksum,
        allow_global_first_ipv6: true,
        ..ReceiveRules::default()
    };
    let (advert, found) = Advertisement::decode(message, ip.src, ip.dst, &rules(accept))
        .map_err(|e| format!("{at}: does not verify in the {form} form: {e}"))?;
    if found != form {
        return Err(format!("{at}: checksum in the {found} form, not {form}"));
    }
    if let Some(refuse) = refuse {
        match Advertisement::decode(message, ip.src, ip.dst, &rules(refuse)) {
            Err(DecodeError::BadChecksum { .. }) => {}
            other => return Err(format!("{at}: verifies in the other form too: {other:?}")),
        }
    }
    let version = advert.version.number();
    if version != variant.version() || advert.vrid.get() != VRID {
        return Err(format!(
            "{at}: VRRPv{version} VRID {}, expected VRRPv{} VRID {VRID}",
            advert.vrid,
            variant.version()
        ));
    }
    Ok(())
}

/// Checks every advert of cplbd's a capture kept, of which there must be at least
/// [`MIN_ADVERTS`]: a summary when all are right, else what is wrong.
fn wire_verdict(variant: Variant, packets: &[Vec<u8>]) -> Result<String, String> {
    let (version, form) = (variant.version(), variant.sent_form());
    if packets.len() < MIN_ADVERTS {
        return Err(format!(
            "{variant:?}: the bridge saw {} VRRP packets from cplbd, expected at least {MIN_ADVERTS}",
            packets.len()
        ));
    }
    let wrong: Vec<String> = packets
        .iter()
        .enumerate()
        .filter_map(|(i, p)| check_advert(variant, p).err().map(|e| format!("advert {i}: {e}")))
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "{variant:?}: {} of cplbd's {} adverts on the wire are not VRRPv{version} VRID {VRID} with the {form} checksum; first: {:?}",
            wrong.len(),
            packets.len(),
            wrong.iter().take(3).collect::<Vec<_>>()
        ));
    }
    Ok(format!(
        "{variant:?}: {} adverts of cplbd's on the wire, all VRRPv{version} VRID {VRID} with the {form} checksum",
        packets.len()
    ))
}

/// Ends `capture` and asserts its verdict.
fn check_wire(capture: WireCapture) {
    let variant = capture.variant;
    match wire_verdict(variant, &capture.finish()) {
        Ok(summary) => eprintln!("{summary}"),
        Err(wrong) => panic!("{wrong}"),
    }
}

/// One cplbd and two keepalived: cplbd alone is master, keeps it for `steady` beside the
/// keepalived, hands over to one when killed, stays backup when restarted, takes over when
/// the keepalived master dies; nobody rejects a packet, and every advert cplbd put on the
/// bridge meanwhile has the cell's version, VRID and checksum form.
fn one_cplbd_and_two_keepalived(
    test: &str,
    variant: Variant,
    tag: &str,
    net: u8,
    steady: Duration,
) {
    can_run(test);
    assert!(
        std::process::Command::new("keepalived").arg("--version").output().is_ok(),
        "keepalived is not installed (the test command installs it)"
    );
    let mut c = variant.cluster(tag, net);
    let capture = WireCapture::start(&c, variant, cplbd_source(&c));
    for i in 0..3 {
        c.start_api(i);
    }
    // cplbd first: alone, it becomes master.
    c.start_cplbd(CPLBD);
    let t = Instant::now();
    c.wait_holders(t, Duration::from_secs(6), |h| h == [CPLBD])
        .unwrap_or_else(|| panic!("cplbd alone did not take the VIP\n{}", c.logs()));
    let mut kas: Vec<Option<Child>> =
        (0..2).map(|i| Some(start_keepalived(&c, variant, i))).collect();

    // Steady state: one master (cplbd), never two.
    let since = Instant::now();
    while since.elapsed() < steady {
        let h = c.holders();
        assert_eq!(h, vec![CPLBD], "dual or lost master during steady state\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = c.status(CPLBD).unwrap();
    assert_eq!(s.instances[0].state, "master");
    assert!(keepalived_rejections(&c).is_empty(), "{variant:?}: {:?}", keepalived_rejections(&c));
    assert!(cplbd_rejections(&c).is_empty(), "{variant:?}: {:?}", cplbd_rejections(&c));
    // cplbd heard both keepalived (they are backups, silent, until cplbd dies: checked by
    // the hand-over below) and its adverts reached them: neither took over.

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
    check_wire(capture);
    for k in kas.iter_mut().flatten() {
        let _ = k.kill();
        let _ = k.wait();
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn one_cplbd_and_two_keepalived_elect_one_master_and_fail_over_both_ways() {
    let test = "one_cplbd_and_two_keepalived_elect_one_master_and_fail_over_both_ways";
    one_cplbd_and_two_keepalived(test, Variant::V2Pass, "ka", 4, Duration::from_secs(30));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn interoperates_with_keepalived_over_vrrp3_ipv4_with_its_default_checksum() {
    let test = "interoperates_with_keepalived_over_vrrp3_ipv4_with_its_default_checksum";
    one_cplbd_and_two_keepalived(test, Variant::V3Ipv4, "ka3", 41, Duration::from_secs(10));
}

/// Whether this keepalived parses `keyword` in global_defs (its config test names unknown
/// keywords).
fn keepalived_knows(keyword: &str) -> bool {
    let conf = std::env::temp_dir().join(format!("cplbt-keyword-{}.conf", std::process::id()));
    std::fs::write(&conf, format!("global_defs {{\n    {keyword}\n}}\n")).unwrap();
    let out = std::process::Command::new("keepalived")
        .args(["--config-test", "--use-file", &conf.to_string_lossy(), "--log-console"])
        .output()
        .expect("keepalived runs");
    let _ = std::fs::remove_file(&conf);
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    !text.contains("Unknown keyword")
}

/// keepalived's first line of `--version` (`Keepalived v2.2.7 (01/16,2022)`).
fn keepalived_version() -> String {
    std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            text.lines().next().unwrap_or("no version printed").to_owned()
        })
        .unwrap_or_else(|e| format!("keepalived not runnable ({e})"))
}

/// `v3_checksum_as_v2` came with keepalived 2.2.8; Debian bookworm's 2.2.7 does not parse it
/// (its only VRRPv3 checksum over IPv4 is the pseudo-header form, tested above). So this
/// cell is ignored with that reason, `scripts/test.sh` skips it by name, and run by hand
/// against an older keepalived it fails naming both versions rather than pass unseen.
#[test]
#[ignore = "needs root, and keepalived 2.2.8 or later for v3_checksum_as_v2 (Debian's 2.2.7 lacks it)"]
fn interoperates_with_keepalived_over_vrrp3_ipv4_with_v3_checksum_as_v2() {
    let test = "interoperates_with_keepalived_over_vrrp3_ipv4_with_v3_checksum_as_v2";
    can_run(test);
    assert!(
        keepalived_knows("v3_checksum_as_v2"),
        "{test}: the keepalived installed ({}) does not know v3_checksum_as_v2, which needs keepalived 2.2.8 or later",
        keepalived_version()
    );
    one_cplbd_and_two_keepalived(test, Variant::V3Ipv4AsV2, "ka3v2", 42, Duration::from_secs(10));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn interoperates_with_keepalived_over_vrrp3_ipv6() {
    let test = "interoperates_with_keepalived_over_vrrp3_ipv6";
    one_cplbd_and_two_keepalived(test, Variant::V3Ipv6, "ka6", 43, Duration::from_secs(10));
}

#[test]
#[ignore = "needs root: network namespaces"]
fn interoperates_with_keepalived_over_unicast_peers() {
    let test = "interoperates_with_keepalived_over_unicast_peers";
    one_cplbd_and_two_keepalived(test, Variant::Unicast, "kau", 44, Duration::from_secs(10));
}

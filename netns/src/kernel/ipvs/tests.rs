//! The wire layer without a kernel: requests against the bytes the kernel expects, laid
//! out by hand from the uapi numbers, and replies laid out as `ip_vs_genl_fill_service` /
//! `_fill_dest` do. Host-order integers are written little-endian, so these run on
//! little-endian hosts (x86_64, aarch64).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cplb_core::config::{LbAlgo, LbKind};
use cplb_core::lb::{RealServer, ServiceKey, ServiceSpec};
use netlink_packet_core::{
    Emitable, NLMSG_DONE, NLMSG_ERROR, NetlinkMessage, ParseableParametrized,
};
use netlink_packet_generic::GenlMessage;
use proptest::prelude::*;

use super::message::*;
use super::model::*;
use super::{Collect, EEXIST, ENOENT, ESRCH, IpvsError, Outcome};

/// The genl payload of a request: header (command, version, reserved) then attributes.
fn bytes(msg: &IpvsMessage) -> Vec<u8> {
    let genl = GenlMessage::from_payload(msg.clone());
    let mut out = vec![0; genl.buffer_len()];
    genl.emit(&mut out);
    out
}

/// A genl payload parsed as an IPVS message.
fn parse(payload: &[u8]) -> Result<IpvsMessage, IpvsError> {
    GenlMessage::<IpvsMessage>::parse_with_param(payload, 0)
        .map(|genl| genl.payload)
        .map_err(|e| IpvsError::Malformed { what: e.to_string() })
}

fn decode_service_reply(payload: &[u8]) -> Result<KernelService, IpvsError> {
    KernelService::from_reply(&parse(payload)?)
}

fn decode_dest_reply(payload: &[u8], service_af: u16) -> Result<KernelDest, IpvsError> {
    KernelDest::from_reply(&parse(payload)?, service_af)
}

fn key4() -> ServiceKey {
    ServiceKey { vip: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 200)), port: 6443 }
}

fn rs4(last: u8) -> RealServer {
    RealServer { addr: SocketAddr::from(([10, 200, 0, last], 6443)), weight: 1 }
}

fn spec4() -> ServiceSpec {
    ServiceSpec {
        key: key4(),
        fwmark: 0,
        algo: LbAlgo::Rr,
        forwarding: LbKind::Dr,
        persistence_secs: 300,
        real_servers: Vec::new(),
    }
}

#[test]
fn uapi_numbers() {
    // enum { IPVS_CMD_UNSPEC = 0, NEW_SERVICE, SET_SERVICE, DEL_SERVICE, GET_SERVICE,
    // NEW_DEST, SET_DEST, DEL_DEST, GET_DEST, NEW_DAEMON, DEL_DAEMON, GET_DAEMON,
    // SET_CONFIG, GET_CONFIG, SET_INFO, GET_INFO, ZERO, FLUSH }
    let cmds = [
        IPVS_CMD_NEW_SERVICE,
        IPVS_CMD_SET_SERVICE,
        IPVS_CMD_DEL_SERVICE,
        IPVS_CMD_GET_SERVICE,
        IPVS_CMD_NEW_DEST,
        IPVS_CMD_SET_DEST,
        IPVS_CMD_DEL_DEST,
        IPVS_CMD_GET_DEST,
    ];
    assert_eq!(cmds, [1, 2, 3, 4, 5, 6, 7, 8]);
    for cmd in 0..=u8::MAX {
        assert_eq!(u8::from(IpvsCmd::from(cmd)), cmd);
    }
    let typed = [
        IpvsCmd::NewService,
        IpvsCmd::SetService,
        IpvsCmd::DelService,
        IpvsCmd::GetService,
        IpvsCmd::NewDest,
        IpvsCmd::SetDest,
        IpvsCmd::DelDest,
        IpvsCmd::GetDest,
    ];
    assert_eq!(typed.map(u8::from), cmds);
    assert_eq!(IPVS_CMD_FLUSH, 17);
    assert_eq!(IPVS_GENL_NAME, "IPVS");
    assert_eq!(IPVS_GENL_VERSION, 1);
    assert_eq!(
        [IP_VS_CONN_F_MASQ, IP_VS_CONN_F_LOCALNODE, IP_VS_CONN_F_TUNNEL, IP_VS_CONN_F_DROUTE],
        [0, 1, 2, 3]
    );
    assert_eq!(IP_VS_SVC_F_PERSISTENT, 1);
    assert_eq!((AF_INET, AF_INET6, IPPROTO_TCP), (2, 10, 6));
}

#[test]
fn schedulers_and_forwarding_use_the_kernels_names() {
    let names: Vec<&str> = LbAlgo::ALL.into_iter().map(scheduler_name).collect();
    assert_eq!(names, ["rr", "wrr", "lc", "wlc", "lblc", "dh", "sh", "sed", "nq"]);
    for algo in LbAlgo::ALL {
        assert_eq!(scheduler_from_name(scheduler_name(algo)), Some(algo));
    }
    assert_eq!(scheduler_from_name("mh"), None);
    assert_eq!(forwarding_method(LbKind::Dr), 3);
    assert_eq!(forwarding_method(LbKind::Nat), 0);
    assert_eq!(forwarding_method(LbKind::Tun), 2);
    for kind in LbKind::ALL {
        assert_eq!(forwarding_from_method(forwarding_method(kind)), Some(kind));
    }
    assert_eq!(forwarding_from_method(IP_VS_CONN_F_LOCALNODE), None);
}

#[test]
fn new_service_ipv4_rr_persistent() {
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 1, 0, 0,                 // genl: cmd NEW_SERVICE, version 1, reserved
        72, 0, 0x01, 0x80,          // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, 72 bytes
        6, 0, 1, 0, 2, 0, 0, 0,     //   SVC_ATTR_AF: AF_INET (u16 host), pad
        6, 0, 2, 0, 6, 0, 0, 0,     //   SVC_ATTR_PROTOCOL: IPPROTO_TCP (u16 host), pad
        8, 0, 3, 0, 10, 200, 0, 200, // SVC_ATTR_ADDR: 10.200.0.200
        6, 0, 4, 0, 0x19, 0x2b, 0, 0, // SVC_ATTR_PORT: 6443 network order, pad
        7, 0, 6, 0, b'r', b'r', 0, 0, // SVC_ATTR_SCHED_NAME: "rr\0", pad
        12, 0, 7, 0,                //   SVC_ATTR_FLAGS: struct ip_vs_flags
        1, 0, 0, 0,                 //     flags: IP_VS_SVC_F_PERSISTENT
        0xff, 0xff, 0xff, 0xff,     //     mask: every bit
        8, 0, 8, 0, 0x2c, 1, 0, 0,  //   SVC_ATTR_TIMEOUT: 300 s (u32 host)
        8, 0, 9, 0, 0xff, 0xff, 0xff, 0xff, // SVC_ATTR_NETMASK: 255.255.255.255
    ];
    assert_eq!(bytes(&new_service_request(&spec4())), expected);
}

#[test]
fn set_service_differs_only_in_command() {
    let mut set = bytes(&new_service_request(&spec4()));
    set[0] = IPVS_CMD_SET_SERVICE;
    assert_eq!(bytes(&set_service_request(&spec4())), set);
}

#[test]
fn new_service_ipv6_wlc_not_persistent() {
    let spec = ServiceSpec {
        key: ServiceKey { vip: "fd00::200".parse().unwrap(), port: 6443 },
        fwmark: 0,
        algo: LbAlgo::Wlc,
        forwarding: LbKind::Nat,
        persistence_secs: 0,
        real_servers: Vec::new(),
    };
    #[rustfmt::skip]
    let expected: &[u8] = &[
        1, 1, 0, 0,                 // genl: NEW_SERVICE, version 1
        84, 0, 0x01, 0x80,          // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, 84 bytes
        6, 0, 1, 0, 10, 0, 0, 0,    //   SVC_ATTR_AF: AF_INET6
        6, 0, 2, 0, 6, 0, 0, 0,     //   SVC_ATTR_PROTOCOL: TCP
        20, 0, 3, 0,                //   SVC_ATTR_ADDR: fd00::200, 16 bytes
        0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00,
        6, 0, 4, 0, 0x19, 0x2b, 0, 0, // SVC_ATTR_PORT: 6443
        8, 0, 6, 0, b'w', b'l', b'c', 0, // SVC_ATTR_SCHED_NAME: "wlc\0"
        12, 0, 7, 0,                //   SVC_ATTR_FLAGS
        0, 0, 0, 0,                 //     flags: none (not persistent)
        0xff, 0xff, 0xff, 0xff,     //     mask: every bit, so PERSISTENT is cleared
        8, 0, 8, 0, 0, 0, 0, 0,     //   SVC_ATTR_TIMEOUT: 0
        8, 0, 9, 0, 128, 0, 0, 0,   //   SVC_ATTR_NETMASK: prefix length 128, host order
    ];
    assert_eq!(bytes(&new_service_request(&spec)), expected);
}

#[rustfmt::skip]
const SERVICE_ID_10_200_0_200: [u8; 36] = [
    36, 0, 0x01, 0x80,              // IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED, 36 bytes
    6, 0, 1, 0, 2, 0, 0, 0,         //   AF_INET
    6, 0, 2, 0, 6, 0, 0, 0,         //   IPPROTO_TCP
    8, 0, 3, 0, 10, 200, 0, 200,    //   10.200.0.200
    6, 0, 4, 0, 0x19, 0x2b, 0, 0,   //   port 6443
];

#[test]
fn new_dest_dr_weight_1() {
    let mut expected = vec![5, 1, 0, 0]; // genl: cmd NEW_DEST, version 1
    expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
    #[rustfmt::skip]
    expected.extend_from_slice(&[
        60, 0, 0x02, 0x80,          // IPVS_CMD_ATTR_DEST | NLA_F_NESTED, 60 bytes
        8, 0, 1, 0, 10, 200, 0, 11, //   DEST_ATTR_ADDR: 10.200.0.11
        6, 0, 2, 0, 0x19, 0x2b, 0, 0, // DEST_ATTR_PORT: 6443, pad
        8, 0, 3, 0, 3, 0, 0, 0,     //   DEST_ATTR_FWD_METHOD: IP_VS_CONN_F_DROUTE
        8, 0, 4, 0, 1, 0, 0, 0,     //   DEST_ATTR_WEIGHT: 1
        8, 0, 5, 0, 0, 0, 0, 0,     //   DEST_ATTR_U_THRESH: 0 (none)
        8, 0, 6, 0, 0, 0, 0, 0,     //   DEST_ATTR_L_THRESH: 0
        6, 0, 11, 0, 2, 0, 0, 0,    //   DEST_ATTR_ADDR_FAMILY: AF_INET, pad
    ]);
    assert_eq!(bytes(&new_dest_request(key4(), &rs4(11), LbKind::Dr)), expected);
    let mut set = expected.clone();
    set[0] = IPVS_CMD_SET_DEST;
    assert_eq!(bytes(&set_dest_request(key4(), &rs4(11), LbKind::Dr)), set);
    // NAT and TUN only change the method.
    let nat = bytes(&new_dest_request(key4(), &rs4(11), LbKind::Nat));
    assert_eq!(nat[4 + 36 + 4 + 16..][..8], [8, 0, 3, 0, 0, 0, 0, 0]);
    let tun = bytes(&new_dest_request(key4(), &rs4(11), LbKind::Tun));
    assert_eq!(tun[4 + 36 + 4 + 16..][..8], [8, 0, 3, 0, 2, 0, 0, 0]);
}

#[test]
fn del_service_and_del_dest_carry_only_the_identity() {
    let mut expected = vec![3, 1, 0, 0]; // genl: cmd DEL_SERVICE
    expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
    assert_eq!(bytes(&del_service_request(key4())), expected);

    let mut expected = vec![7, 1, 0, 0]; // genl: cmd DEL_DEST
    expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
    #[rustfmt::skip]
    expected.extend_from_slice(&[
        28, 0, 0x02, 0x80,          // IPVS_CMD_ATTR_DEST | NLA_F_NESTED, 28 bytes
        8, 0, 1, 0, 10, 200, 0, 12, //   10.200.0.12
        6, 0, 2, 0, 0x19, 0x2b, 0, 0, // port 6443
        6, 0, 11, 0, 2, 0, 0, 0,    //   AF_INET
    ]);
    assert_eq!(bytes(&del_dest_request(key4(), rs4(12).addr)), expected);
}

#[test]
fn dump_requests() {
    assert_eq!(bytes(&get_services_request()), [4, 1, 0, 0]); // GET_SERVICE, no attributes
    let mut expected = vec![8, 1, 0, 0]; // GET_DEST of the service
    expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
    assert_eq!(bytes(&get_dests_request(key4())), expected);
}

// ---- replies, laid out as ip_vs_genl_fill_service / _fill_dest do ----

/// One attribute, little-endian header, padded.
fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = ((4 + value.len()) as u16).to_le_bytes().to_vec();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(value);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out
}

fn genl(cmd: u8, attrs: &[u8]) -> Vec<u8> {
    let mut out = vec![cmd, 1, 0, 0];
    out.extend_from_slice(attrs);
    out
}

fn stats() -> Vec<u8> {
    // IPVS_STATS_ATTR_CONNS (1) u32, INBYTES (4) u64: skipped by the decoder.
    [tlv(1, &7u32.to_le_bytes()), tlv(4, &1234u64.to_le_bytes())].concat()
}

/// GET_SERVICE reply for 10.200.0.200:6443, rr, persistent 300 s. The kernel nests
/// without NLA_F_NESTED, sends the whole 16-byte address union, and reports its own
/// HASHED flag.
fn service_reply() -> Vec<u8> {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 200, 0, 200]);
    let inner = [
        tlv(1, &[2, 0]),                               // AF: AF_INET
        tlv(2, &[6, 0]),                               // PROTOCOL: TCP
        tlv(3, &addr),                                 // ADDR
        tlv(4, &[0x19, 0x2b]),                         // PORT 6443
        tlv(6, b"rr\0"),                               // SCHED_NAME
        tlv(7, &[3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), // FLAGS: PERSISTENT | HASHED
        tlv(8, &[0x2c, 1, 0, 0]),                      // TIMEOUT 300
        tlv(9, &[0xff; 4]),                            // NETMASK
        tlv(10, &stats()),                             // STATS
        tlv(12, &stats()),                             // STATS64
    ]
    .concat();
    genl(IPVS_CMD_NEW_SERVICE, &tlv(1, &inner))
}

/// GET_DEST reply for 10.200.0.<last>:6443, DR, weight `weight`.
fn dest_reply(last: u8, weight: u32) -> Vec<u8> {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 200, 0, last]);
    let inner = [
        tlv(1, &addr),                 // ADDR
        tlv(2, &[0x19, 0x2b]),         // PORT
        tlv(3, &[3, 0, 0, 0]),         // FWD_METHOD: DROUTE
        tlv(4, &weight.to_le_bytes()), // WEIGHT
        tlv(14, &[0]),                 // TUN_TYPE
        tlv(15, &[0, 0]),              // TUN_PORT
        tlv(16, &[0, 0]),              // TUN_FLAGS
        tlv(5, &[0; 4]),               // U_THRESH
        tlv(6, &[0; 4]),               // L_THRESH
        tlv(7, &[2, 0, 0, 0]),         // ACTIVE_CONNS
        tlv(8, &[0; 4]),               // INACT_CONNS
        tlv(9, &[1, 0, 0, 0]),         // PERSIST_CONNS
        tlv(11, &[2, 0]),              // ADDR_FAMILY: AF_INET
        tlv(10, &stats()),             // STATS
    ]
    .concat();
    genl(IPVS_CMD_NEW_DEST, &tlv(2, &inner))
}

#[test]
fn decodes_a_service_and_its_destinations() {
    let svc = decode_service_reply(&service_reply()).unwrap();
    assert_eq!(
        svc,
        KernelService {
            af: AF_INET,
            protocol: IPPROTO_TCP,
            addr: Some(key_addr(key4())),
            fwmark: 0,
            sched_name: "rr".into(),
            flags: 3,
            timeout: 300,
        }
    );
    // Listed out of order, as the kernel's list may be.
    let dests = [
        decode_dest_reply(&dest_reply(12, 1), AF_INET).unwrap(),
        decode_dest_reply(&dest_reply(11, 2), AF_INET).unwrap(),
    ];
    assert_eq!(dests[1], KernelDest { addr: rs4(11).addr, fwd_method: 3, weight: 2 });
    let spec = svc.to_spec(key4().into(), &dests, LbKind::Nat).unwrap();
    assert_eq!(
        spec,
        ServiceSpec { real_servers: vec![RealServer { weight: 2, ..rs4(11) }, rs4(12)], ..spec4() }
    );
    // Without destinations the forwarding is the fallback.
    assert_eq!(svc.to_spec(key4().into(), &[], LbKind::Nat).unwrap().forwarding, LbKind::Nat);
    assert_eq!(svc.service_ref(), Some(key4().into()));
}

#[test]
fn decodes_ipv6_and_leaves_out_what_is_not_cplbs() {
    let addr: Ipv6Addr = "fd00::200".parse().unwrap();
    let inner = [
        tlv(1, &[10, 0]),
        tlv(2, &[6, 0]),
        tlv(3, &addr.octets()),
        tlv(4, &[0x19, 0x2b]),
        tlv(6, b"sh\0"),
        tlv(7, &[2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), // HASHED only: not persistent
        tlv(8, &[0; 4]),
        tlv(9, &[128, 0, 0, 0]),
    ]
    .concat();
    let svc = decode_service_reply(&genl(1, &tlv(1, &inner))).unwrap();
    assert_eq!(svc.addr, Some(SocketAddr::new(IpAddr::V6(addr), 6443)));
    let named = svc.service_ref().unwrap();
    let spec = svc.to_spec(named, &[], LbKind::Dr).unwrap();
    assert_eq!((spec.algo, spec.persistence_secs), (LbAlgo::Sh, 0));

    // An IPv6 destination without ADDR_FAMILY (older kernels) takes the service's.
    let dest =
        [tlv(1, &addr.octets()), tlv(2, &[0, 80]), tlv(3, &[0; 4]), tlv(4, &[5, 0, 0, 0])].concat();
    let dest = decode_dest_reply(&genl(5, &tlv(2, &dest)), AF_INET6).unwrap();
    assert_eq!(dest.addr, SocketAddr::new(IpAddr::V6(addr), 80));
    assert_eq!(forwarding_from_method(dest.fwd_method), Some(LbKind::Nat));

    let udp = KernelService { protocol: 17, ..svc.clone() };
    assert_eq!(udp.service_ref(), None);
    assert_eq!(udp.to_spec(named, &[], LbKind::Dr), None);
    let mh = KernelService { sched_name: "mh".into(), ..svc.clone() };
    assert_eq!(mh.to_spec(named, &[], LbKind::Dr), None);

    // A fwmark service: AF, FWMARK, no protocol/address/port.
    let inner = [
        tlv(1, &[2, 0]),
        tlv(5, &[7, 0, 0, 0]),
        tlv(6, b"rr\0"),
        tlv(7, &[0; 8]),
        tlv(8, &[0; 4]),
        tlv(9, &[0xff; 4]),
    ]
    .concat();
    let fw = decode_service_reply(&genl(1, &tlv(1, &inner))).unwrap();
    assert_eq!((fw.addr, fw.fwmark), (None, 7));
    let unnamed = fw.service_ref().unwrap();
    assert_eq!((unnamed.fwmark, unnamed.key.port), (7, 0));
    assert_eq!(unnamed.to_string(), "FWM 7");
    // Its key is the asker's: the kernel does not know which VIP the mark stands for.
    let named = ServiceRef { key: key4(), fwmark: 7 };
    assert_eq!(named.to_string(), "FWM 7 (10.200.0.200:6443)");
    let spec = fw.to_spec(named, &[], LbKind::Dr).unwrap();
    assert_eq!((spec.key, spec.fwmark, spec.persistence_secs), (key4(), 7, 0));
}

fn is_malformed<T: fmt::Debug>(r: Result<T, IpvsError>) -> bool {
    matches!(r, Err(IpvsError::Malformed { .. }))
}

#[test]
fn truncated_and_wrong_replies_are_malformed() {
    let svc = service_reply();
    for len in 0..svc.len() {
        assert!(is_malformed(decode_service_reply(&svc[..len])), "service cut at {len}");
    }
    let dest = dest_reply(11, 1);
    for len in 0..dest.len() {
        assert!(is_malformed(decode_dest_reply(&dest[..len], AF_INET)), "dest cut at {len}");
    }
    // A destination reply is not a service reply, and the other way round.
    assert!(is_malformed(decode_service_reply(&dest)));
    assert!(is_malformed(decode_dest_reply(&svc, AF_INET)));
    // Unknown family; IPv4 address of a wrong length; attribute shorter than its header.
    let bad_af = [tlv(1, &[99, 0]), tlv(2, &[6, 0])].concat();
    assert!(is_malformed(decode_service_reply(&genl(1, &tlv(1, &bad_af)))));
    let bad_addr = [tlv(1, &[1, 2, 3]), tlv(2, &[0, 80]), tlv(3, &[0; 4]), tlv(4, &[0; 4])];
    assert!(is_malformed(decode_dest_reply(&genl(5, &tlv(2, &bad_addr.concat())), AF_INET)));
    assert!(is_malformed(decode_service_reply(&[1, 1, 0, 0, 2, 0, 1, 0])));
}

#[test]
fn kernel_errors_name_the_request() {
    let e = IpvsError::kernel("NEW_DEST 10.200.0.11:6443 to 10.200.0.200:6443".into(), EEXIST);
    assert_eq!(
        e.to_string(),
        "NEW_DEST 10.200.0.11:6443 to 10.200.0.200:6443 failed: File exists (os error 17)"
    );
    assert!(matches!(e, IpvsError::Kernel { errno: 17, .. }));
    let e = IpvsError::kernel("NEW_SERVICE 10.200.0.200:6443 (rr)".into(), ENOENT);
    assert_eq!(
        e.to_string(),
        "NEW_SERVICE 10.200.0.200:6443 (rr) failed: No such file or directory (os error 2): \
         the kernel has no module for that scheduler"
    );
    let e = IpvsError::kernel("NEW_DEST 10.200.0.11:6443 to 10.200.0.200:6443".into(), ESRCH);
    assert!(e.to_string().ends_with("(os error 3): no such virtual service"), "{e}");
}

// ---- netlink framing of replies ----

fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = ((16 + payload.len()) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The messages of one datagram as the connection hands them over: each parsed whole, the
/// IPVS payloads as `IpvsMessage`s.
fn messages(mut dgram: &[u8]) -> Result<Vec<NetlinkMessage<GenlMessage<IpvsMessage>>>, IpvsError> {
    let mut out = Vec::new();
    while !dgram.is_empty() {
        let message = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(dgram)
            .map_err(|e| IpvsError::Malformed { what: e.to_string() })?;
        let len = message.header.length as usize;
        if len == 0 {
            return Err(IpvsError::Malformed { what: "a message of length 0".into() });
        }
        out.push(message);
        dgram = dgram.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

/// Feeds `messages` to an answer to a request with `flags`: the outcome, and how many
/// messages it took.
fn collect(
    flags: u16,
    messages: Vec<NetlinkMessage<GenlMessage<IpvsMessage>>>,
) -> (Option<Outcome<IpvsMessage>>, usize) {
    let mut collect = Collect::new(flags);
    for (i, message) in messages.into_iter().enumerate() {
        if let Some(outcome) = collect.push(message) {
            return (Some(outcome), i + 1);
        }
    }
    (None, usize::MAX)
}

#[test]
fn answers_end_on_ack_error_or_done() {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
    const FAMILY: u16 = 0x22;
    const NLM_F_MULTI: u16 = 2;
    let parsed = |payload: &[u8]| parse(payload).unwrap();
    // A dump: two replies (NLM_F_MULTI) and NLMSG_DONE, in one datagram. (Replies to other
    // requests never reach an answer: the connection sorts them by sequence number.)
    let dgram = [
        nlmsg(FAMILY, NLM_F_MULTI, 7, &dest_reply(11, 1)),
        nlmsg(FAMILY, NLM_F_MULTI, 7, &dest_reply(12, 1)),
        nlmsg(NLMSG_DONE, NLM_F_MULTI, 7, &0i32.to_le_bytes()),
    ]
    .concat();
    let dump = NLM_F_REQUEST | NLM_F_DUMP;
    let (out, taken) = collect(dump, messages(&dgram).unwrap());
    let want = vec![parsed(&dest_reply(11, 1)), parsed(&dest_reply(12, 1))];
    assert_eq!((out, taken), (Some(Outcome::Ok(want)), 3));
    // Replies spread over datagrams: the first has no end yet.
    let first = nlmsg(FAMILY, NLM_F_MULTI, 8, &dest_reply(11, 1));
    assert_eq!(collect(dump, messages(&first).unwrap()).0, None);
    // A dump's error in its done message.
    let done = nlmsg(NLMSG_DONE, NLM_F_MULTI, 8, &(-3i32).to_le_bytes());
    assert_eq!(collect(dump, messages(&done).unwrap()).0, Some(Outcome::Errno(ESRCH)));
    // An ack: NLMSG_ERROR with code 0 and the request's header.
    let command = NLM_F_REQUEST | NLM_F_ACK;
    let ack = nlmsg(NLMSG_ERROR, 0x100, 9, &[0u8; 20]);
    assert_eq!(collect(command, messages(&ack).unwrap()).0, Some(Outcome::Ok(vec![])));
    // An error: -EEXIST.
    let mut err = (-17i32).to_le_bytes().to_vec();
    err.extend_from_slice(&[0u8; 16]);
    let nack = nlmsg(NLMSG_ERROR, 0, 10, &err);
    assert_eq!(collect(command, messages(&nack).unwrap()).0, Some(Outcome::Errno(EEXIST)));
    // A reply to a request that is neither a dump nor acknowledged is its whole answer.
    let one = nlmsg(FAMILY, 0, 11, &dest_reply(11, 1));
    let (out, _) = collect(NLM_F_REQUEST, messages(&one).unwrap());
    assert_eq!(out, Some(Outcome::Ok(vec![parsed(&dest_reply(11, 1))])));
    // A cut message is malformed, and so is a reply whose attributes do not parse.
    assert!(is_malformed(messages(&nack[..20])));
    assert!(is_malformed(messages(&nlmsg(FAMILY, 0, 12, &[5, 1, 0, 0, 9, 0, 2, 0]))));
}

// ---- properties ----

fn any_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<Ipv4Addr>().prop_map(IpAddr::V4), any::<Ipv6Addr>().prop_map(IpAddr::V6)]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_service_reply(&bytes);
        let _ = decode_dest_reply(&bytes, AF_INET);
        let _ = decode_dest_reply(&bytes, AF_INET6);
        if let Ok(messages) = messages(&bytes) {
            let _ = collect(netlink_packet_core::NLM_F_REQUEST, messages);
        }
    }

    #[test]
    fn random_attributes_never_panic(
        attrs in proptest::collection::vec(
            (0u16..20, proptest::collection::vec(any::<u8>(), 0..20)), 0..12),
        cmd in prop_oneof![Just(IPVS_CMD_NEW_SERVICE), Just(IPVS_CMD_NEW_DEST)],
    ) {
        // Well-framed attributes with random types and values, so the field checks
        // (not only the framing) meet garbage.
        let inner: Vec<u8> = attrs.iter().flat_map(|(k, v)| tlv(*k, v)).collect();
        let payload = genl(cmd, &[tlv(1, &inner), tlv(2, &inner)].concat());
        if let Ok(svc) = decode_service_reply(&payload)
            && let Some(named) = svc.service_ref()
        {
            let _ = svc.to_spec(named, &[], LbKind::Dr);
        }
        let _ = decode_dest_reply(&payload, AF_INET6);
    }

    #[test]
    fn requests_decode_to_what_they_ask(
        vip in any_ip(),
        port in any::<u16>(),
        fwmark in prop_oneof![Just(0u32), 1u32..],
        algo in proptest::sample::select(LbAlgo::ALL.to_vec()),
        forwarding in proptest::sample::select(LbKind::ALL.to_vec()),
        persistence_secs in any::<u32>(),
        rs_port in any::<u16>(),
        weight in any::<u32>(),
    ) {
        // A NEW_SERVICE / NEW_DEST request has the shape of the kernel's replies.
        let spec = ServiceSpec {
            key: ServiceKey { vip, port },
            fwmark,
            algo,
            forwarding,
            persistence_secs,
            real_servers: Vec::new(),
        };
        let svc = decode_service_reply(&bytes(&new_service_request(&spec))).unwrap();
        prop_assert_eq!(svc.fwmark, fwmark);
        prop_assert_eq!(svc.to_spec((&spec).into(), &[], forwarding), Some(spec.clone()));
        let rs = RealServer { addr: SocketAddr::new(vip, rs_port), weight };
        let dest = decode_dest_reply(&bytes(&new_dest_request(&spec, &rs, forwarding)), 0).unwrap();
        prop_assert_eq!(dest, KernelDest { addr: rs.addr, fwd_method: forwarding_method(forwarding), weight });
    }
}

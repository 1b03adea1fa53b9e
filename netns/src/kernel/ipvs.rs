//! IPVS virtual services over generic netlink: the driver that carries out the IPVS part of
//! a [`cplb_core::lb::diff`] on Linux, and reads the kernel's table back so the daemon can
//! reconcile after a restart.
//!
//! The kernel side is `net/netfilter/ipvs/ip_vs_ctl.c`, family `"IPVS"`; the numbers are
//! those of `include/uapi/linux/ip_vs.h`. Every request is built by a public function that
//! returns its generic netlink payload (genl header and attributes), so the tests check the
//! bytes against the uapi numbers without a kernel, and every reply is decoded by a public
//! function that takes the same kind of payload.
//!
//! Byte order, as the kernel reads and writes each attribute:
//! - ports (`nla_get_be16` / `nla_put_be16`) and addresses (`nla_memcpy` into
//!   `union nf_inet_addr`) are in network order;
//! - the netmask is a `__be32` read with `nla_get_be32`: the IPv4 mask in network order, but
//!   for IPv6 the kernel casts it to a host `u32` and takes it as a prefix length
//!   (`ip_vs_add_service`), so 128 goes in host order;
//! - every other integer (`AF`, `PROTOCOL`, `FWMARK`, `TIMEOUT`, `FLAGS`, `FWD_METHOD`,
//!   `WEIGHT`, thresholds, `ADDR_FAMILY`) is `nla_get_u16` / `nla_get_u32`: host order.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::collections::BTreeMap;
use std::io;

use cplb_core::config::{LbAlgo, LbKind};
use cplb_core::lb::{
    Change, DataPlane, FWMARK_BASE, FWMARK_SPAN, RealServer, ServiceKey, ServiceSpec, diff,
};
use netlink_packet_core::{
    DoneBuffer, Emitable, ErrorBuffer, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_NOOP, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

// ---------------------------------------------------------------------------------------
// uapi numbers (include/uapi/linux/ip_vs.h unless said otherwise)
// ---------------------------------------------------------------------------------------

/// `IPVS_GENL_NAME`: the generic netlink family the kernel's ip_vs module registers.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`: the version byte of every request's genl header.
pub const IPVS_GENL_VERSION: u8 = 1;

// Commands (the `IPVS_CMD_*` enum, from IPVS_CMD_UNSPEC = 0).
/// Add a service; also the command of each GET_SERVICE reply.
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// Change a service's scheduler, flags, timeout, netmask.
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
/// Delete a service and its destinations.
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// Get (dump) services.
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
/// Add a destination; also the command of each GET_DEST reply.
pub const IPVS_CMD_NEW_DEST: u8 = 5;
/// Change a destination's forwarding method, weight, thresholds.
pub const IPVS_CMD_SET_DEST: u8 = 6;
/// Delete a destination.
pub const IPVS_CMD_DEL_DEST: u8 = 7;
/// Dump a service's destinations.
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// Delete every service (after NEW_DAEMON 9 ... ZERO 16). Not used by the driver, which
/// only removes the services of its own VIPs; here so the numbering is checked.
pub const IPVS_CMD_FLUSH: u8 = 17;

// First-level attributes (IPVS_CMD_ATTR_*).
/// Nested service attributes.
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// Nested destination attributes.
const IPVS_CMD_ATTR_DEST: u16 = 2;

// Service attributes, nested in IPVS_CMD_ATTR_SERVICE (IPVS_SVC_ATTR_*).
/// u16, host order: AF_INET / AF_INET6.
const IPVS_SVC_ATTR_AF: u16 = 1;
/// u16, host order: IPPROTO_*.
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// Address bytes, network order (the kernel replies with all 16 bytes of the union).
const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// u16, network order.
const IPVS_SVC_ATTR_PORT: u16 = 4;
/// u32, host order; a fwmark service has no protocol, address or port.
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// NUL-terminated scheduler name (at most IP_VS_SCHEDNAME_MAXLEN - 1 = 15 bytes).
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// `struct ip_vs_flags { __u32 flags; __u32 mask; }`, host order.
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// u32, host order: persistence timeout in seconds.
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// `__be32`: see the module comment.
const IPVS_SVC_ATTR_NETMASK: u16 = 9;

// Destination attributes, nested in IPVS_CMD_ATTR_DEST (IPVS_DEST_ATTR_*).
/// Address bytes, network order.
const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// u16, network order.
const IPVS_DEST_ATTR_PORT: u16 = 2;
/// u32, host order: IP_VS_CONN_F_* forwarding method.
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
/// u32, host order (the kernel's `int`, refused when negative).
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
/// u32, host order: upper connection threshold (0: none). Required by NEW_DEST / SET_DEST.
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
/// u32, host order: lower connection threshold. Required by NEW_DEST / SET_DEST.
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
/// u16, host order: the destination's own family (older kernels assume the service's).
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

// Forwarding methods (IP_VS_CONN_F_*), the low three bits of a destination's conn flags.
/// IP_VS_CONN_F_FWD_MASK.
const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
/// Masquerading (NAT).
pub const IP_VS_CONN_F_MASQ: u32 = 0x0000;
/// Local node: kernels before 3.x rewrote every method to this for a local destination
/// address, which loses the method; it never decides the service's forwarding.
pub const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
/// IP-in-IP tunnelling.
pub const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
/// Direct routing.
pub const IP_VS_CONN_F_DROUTE: u32 = 0x0003;

/// IP_VS_SVC_F_PERSISTENT: the service keeps a client on its real server.
pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
/// The `mask` of the flags we send: every bit, so the spec is the whole truth about the
/// service's flags (the kernel adds its own HASHED bit back itself).
const IP_VS_SVC_FLAGS_MASK_ALL: u32 = 0xffff_ffff;

/// AF_INET (include/linux/socket.h).
pub const AF_INET: u16 = 2;
/// AF_INET6 (include/linux/socket.h).
pub const AF_INET6: u16 = 10;
/// IPPROTO_TCP (include/uapi/linux/in.h): the Kubernetes API is TCP.
pub const IPPROTO_TCP: u16 = 6;

/// NLA_F_NESTED (include/uapi/linux/netlink.h): set on the nests we send, as strict
/// validation wants; the kernel replies without it, so decoding masks it off.
const NLA_F_NESTED: u16 = 0x8000;
/// NLA_TYPE_MASK: the attribute type without the NESTED and NET_BYTEORDER flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// struct nlattr is 4 bytes (u16 length, u16 type), attributes 4-byte aligned.
const NLA_HDRLEN: usize = 4;
/// GENL_HDRLEN: struct genlmsghdr { u8 cmd; u8 version; u16 reserved; }.
const GENL_HDRLEN: usize = 4;

/// Errnos the driver tells apart (include/uapi/asm-generic/errno-base.h).
const ENOENT: i32 = 2;
/// No such service (the kernel's answer to a command on a service that does not exist).
const ESRCH: i32 = 3;
/// Already exists.
const EEXIST: i32 = 17;

/// MSG_TRUNC (include/linux/socket.h): makes recv report a datagram's full length, so a
/// reply larger than the buffer is an error rather than silently cut.
const MSG_TRUNC: i32 = 0x20;
/// Receive buffer: the kernel sizes dump datagrams to at most 32 KiB.
const RX_BUFFER: usize = 64 * 1024;

/// Forwarding assumed for a service without destinations that this process did not
/// create: k0s's default `lbKind`.
const DEFAULT_FORWARDING: LbKind = LbKind::Dr;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// What can go wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS (the generic netlink family does not resolve).
    #[error("IPVS unavailable: {reason}")]
    Unavailable {
        /// Why, for the operator.
        reason: String,
    },
    /// The kernel refused a request.
    #[error("{request} failed: {message}")]
    Kernel {
        /// The request, with its service and destination.
        request: String,
        /// The positive errno.
        errno: i32,
        /// The errno's text.
        message: String,
    },
    /// A reply that does not decode.
    #[error("malformed IPVS netlink data: {what}")]
    Malformed {
        /// What was wrong.
        what: String,
    },
    /// The netlink socket failed.
    #[error("IPVS netlink socket: {0}")]
    Io(#[from] io::Error),
}

impl IpvsError {
    fn kernel(request: String, errno: i32) -> Self {
        let mut message = io::Error::from_raw_os_error(errno).to_string();
        // What ip_vs_ctl.c means by the errnos whose usual text misleads.
        let service_cmd = request.starts_with("NEW_SERVICE") || request.starts_with("SET_SERVICE");
        let dest_cmd = request.starts_with("SET_DEST") || request.starts_with("DEL_DEST");
        let hint = match errno {
            ESRCH => Some("no such virtual service"),
            ENOENT if service_cmd => Some("the kernel has no module for that scheduler"),
            ENOENT if dest_cmd => Some("no such real server in the service"),
            _ => None,
        };
        if let Some(hint) = hint {
            message = format!("{message}: {hint}");
        }
        Self::Kernel { request, errno, message }
    }
}

fn malformed(what: impl Into<String>) -> IpvsError {
    IpvsError::Malformed { what: what.into() }
}

// ---------------------------------------------------------------------------------------
// Mapping between the core's model and the kernel's names
// ---------------------------------------------------------------------------------------

/// The kernel scheduler module name (`ip_vs_<name>`) of a core scheduler.
pub fn scheduler_name(algo: LbAlgo) -> &'static str {
    // The core's names are ipvsadm's, which are the kernel's; a test pins each one.
    algo.as_str()
}

/// The core scheduler of a kernel scheduler name, if the core has it.
pub fn scheduler_from_name(name: &str) -> Option<LbAlgo> {
    LbAlgo::ALL.into_iter().find(|a| a.as_str() == name)
}

/// The IP_VS_CONN_F_* forwarding method of a core forwarding kind.
pub fn forwarding_method(kind: LbKind) -> u32 {
    match kind {
        LbKind::Nat => IP_VS_CONN_F_MASQ,
        LbKind::Dr => IP_VS_CONN_F_DROUTE,
        LbKind::Tun => IP_VS_CONN_F_TUNNEL,
    }
}

/// The core forwarding kind of a destination's forwarding method, if it is one.
pub fn forwarding_from_method(method: u32) -> Option<LbKind> {
    match method & IP_VS_CONN_F_FWD_MASK {
        IP_VS_CONN_F_MASQ => Some(LbKind::Nat),
        IP_VS_CONN_F_DROUTE => Some(LbKind::Dr),
        IP_VS_CONN_F_TUNNEL => Some(LbKind::Tun),
        _ => None,
    }
}

fn family(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// IPVS_SVC_ATTR_NETMASK for one client address per persistence template: the all-ones
/// IPv4 mask (network order, the same bytes either way), or the IPv6 prefix length 128,
/// which the kernel reads as a host-order integer.
fn netmask_bytes(vip: IpAddr) -> [u8; 4] {
    match vip {
        IpAddr::V4(_) => [0xff; 4],
        IpAddr::V6(_) => 128u32.to_ne_bytes(),
    }
}

fn key_addr(key: ServiceKey) -> SocketAddr {
    SocketAddr::new(key.vip, key.port)
}

/// How the kernel names a virtual service. cplb's are firewall-mark services (`fwmark`
/// not 0; the VIP gives the family, `key` says which traffic carries the mark: see the loop
/// guard of `cplb_core::lb::ServiceSpec`); with `fwmark` 0 it is the TCP service on `key`,
/// as an older cplbd or an operator may have left on a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// VIP and port.
    pub key: ServiceKey,
    /// Firewall mark; 0: an address service.
    pub fwmark: u32,
}

impl From<ServiceKey> for ServiceRef {
    fn from(key: ServiceKey) -> Self {
        Self { key, fwmark: 0 }
    }
}

impl From<&ServiceSpec> for ServiceRef {
    fn from(spec: &ServiceSpec) -> Self {
        Self { key: spec.key, fwmark: spec.fwmark }
    }
}

impl core::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.fwmark {
            0 => write!(f, "TCP {}", key_addr(self.key)),
            mark if self.key.port == 0 => write!(f, "FWM {mark}"),
            mark => write!(f, "FWM {mark} ({})", key_addr(self.key)),
        }
    }
}

/// Whether a firewall mark is one of cplb's (see `cplb_core::lb::FWMARK_BASE`).
pub fn is_cplb_mark(fwmark: u32) -> bool {
    (FWMARK_BASE..FWMARK_BASE + FWMARK_SPAN).contains(&fwmark)
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Netlink attributes being laid out, each padded to 4 bytes.
#[derive(Debug, Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        // Attributes here are tens of bytes: the length always fits nla_len's u16.
        let len = u16::try_from(NLA_HDRLEN + value.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn put_u16(&mut self, kind: u16, value: u16) -> &mut Self {
        self.put(kind, &value.to_ne_bytes())
    }

    fn put_u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.put(kind, &value.to_ne_bytes())
    }

    fn put_be16(&mut self, kind: u16, value: u16) -> &mut Self {
        self.put(kind, &value.to_be_bytes())
    }

    fn nest(&mut self, kind: u16, inner: &Self) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

/// The genl payload: header (command, version, reserved) then attributes.
fn genl_payload(cmd: u8, attrs: &Attrs) -> Vec<u8> {
    let header = GenlHeader { cmd, version: IPVS_GENL_VERSION };
    let mut out = vec![0; header.buffer_len()];
    header.emit(&mut out);
    out.extend_from_slice(&attrs.0);
    out
}

/// The attributes that identify an address service: family, protocol, address, port.
fn address_service_id(protocol: u16, addr: SocketAddr) -> Attrs {
    let mut a = Attrs::default();
    a.put_u16(IPVS_SVC_ATTR_AF, family(addr.ip()))
        .put_u16(IPVS_SVC_ATTR_PROTOCOL, protocol)
        .put(IPVS_SVC_ATTR_ADDR, &addr_bytes(addr.ip()))
        .put_be16(IPVS_SVC_ATTR_PORT, addr.port());
    a
}

/// The attributes that identify a service: family and mark, or those of its address.
fn service_id(service: ServiceRef) -> Attrs {
    if service.fwmark == 0 {
        return address_service_id(IPPROTO_TCP, key_addr(service.key));
    }
    let mut a = Attrs::default();
    a.put_u16(IPVS_SVC_ATTR_AF, family(service.key.vip))
        .put_u32(IPVS_SVC_ATTR_FWMARK, service.fwmark);
    a
}

/// A full service (NEW_SERVICE / SET_SERVICE need every field).
fn service_full(spec: &ServiceSpec) -> Attrs {
    let mut a = service_id(spec.into());
    let mut sched = scheduler_name(spec.algo).as_bytes().to_vec();
    sched.push(0);
    let persistent = spec.persistence_secs > 0;
    let flags = if persistent { IP_VS_SVC_F_PERSISTENT } else { 0 };
    let mut flags_bytes = flags.to_ne_bytes().to_vec();
    flags_bytes.extend_from_slice(&IP_VS_SVC_FLAGS_MASK_ALL.to_ne_bytes());
    a.put(IPVS_SVC_ATTR_SCHED_NAME, &sched)
        .put(IPVS_SVC_ATTR_FLAGS, &flags_bytes)
        .put_u32(IPVS_SVC_ATTR_TIMEOUT, if persistent { spec.persistence_secs } else { 0 })
        .put(IPVS_SVC_ATTR_NETMASK, &netmask_bytes(spec.key.vip));
    a
}

fn with_service(cmd: u8, service: &Attrs, dest: Option<&Attrs>) -> Vec<u8> {
    let mut top = Attrs::default();
    top.nest(IPVS_CMD_ATTR_SERVICE, service);
    if let Some(dest) = dest {
        top.nest(IPVS_CMD_ATTR_DEST, dest);
    }
    genl_payload(cmd, &top)
}

fn dest_id(addr: SocketAddr) -> Attrs {
    let mut a = Attrs::default();
    a.put(IPVS_DEST_ATTR_ADDR, &addr_bytes(addr.ip())).put_be16(IPVS_DEST_ATTR_PORT, addr.port());
    a
}

fn dest_full(rs: &RealServer, forwarding: LbKind) -> Attrs {
    let mut a = dest_id(rs.addr);
    a.put_u32(IPVS_DEST_ATTR_FWD_METHOD, forwarding_method(forwarding))
        .put_u32(IPVS_DEST_ATTR_WEIGHT, rs.weight)
        .put_u32(IPVS_DEST_ATTR_U_THRESH, 0)
        .put_u32(IPVS_DEST_ATTR_L_THRESH, 0)
        .put_u16(IPVS_DEST_ATTR_ADDR_FAMILY, family(rs.addr.ip()));
    a
}

/// NEW_SERVICE payload: the spec's service (its mark, or TCP on its VIP and port when the
/// mark is 0), without destinations.
pub fn new_service_request(spec: &ServiceSpec) -> Vec<u8> {
    with_service(IPVS_CMD_NEW_SERVICE, &service_full(spec), None)
}

/// SET_SERVICE payload: the spec's scheduler and persistence for an existing service.
pub fn set_service_request(spec: &ServiceSpec) -> Vec<u8> {
    with_service(IPVS_CMD_SET_SERVICE, &service_full(spec), None)
}

/// DEL_SERVICE payload for `service`.
pub fn del_service_request(service: impl Into<ServiceRef>) -> Vec<u8> {
    with_service(IPVS_CMD_DEL_SERVICE, &service_id(service.into()), None)
}

/// DEL_SERVICE payload for an address service of any protocol.
fn del_service_request_proto(protocol: u16, addr: SocketAddr) -> Vec<u8> {
    with_service(IPVS_CMD_DEL_SERVICE, &address_service_id(protocol, addr), None)
}

/// GET_SERVICE payload, sent as a dump: no attributes.
pub fn get_services_request() -> Vec<u8> {
    genl_payload(IPVS_CMD_GET_SERVICE, &Attrs::default())
}

/// GET_DEST payload, sent as a dump: the service whose destinations to list.
pub fn get_dests_request(service: impl Into<ServiceRef>) -> Vec<u8> {
    with_service(IPVS_CMD_GET_DEST, &service_id(service.into()), None)
}

/// NEW_DEST payload: real server `rs` with `forwarding` in `service`.
pub fn new_dest_request(
    service: impl Into<ServiceRef>,
    rs: &RealServer,
    forwarding: LbKind,
) -> Vec<u8> {
    let svc = service_id(service.into());
    with_service(IPVS_CMD_NEW_DEST, &svc, Some(&dest_full(rs, forwarding)))
}

/// SET_DEST payload: new weight and forwarding of real server `rs` in `service`.
pub fn set_dest_request(
    service: impl Into<ServiceRef>,
    rs: &RealServer,
    forwarding: LbKind,
) -> Vec<u8> {
    let svc = service_id(service.into());
    with_service(IPVS_CMD_SET_DEST, &svc, Some(&dest_full(rs, forwarding)))
}

/// DEL_DEST payload: remove real server `addr` from `service`.
pub fn del_dest_request(service: impl Into<ServiceRef>, addr: SocketAddr) -> Vec<u8> {
    let svc = service_id(service.into());
    let mut dest = dest_id(addr);
    dest.put_u16(IPVS_DEST_ATTR_ADDR_FAMILY, family(addr.ip()));
    with_service(IPVS_CMD_DEL_DEST, &svc, Some(&dest))
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Splits attributes into (type without flags, value). Rejects anything that does not
/// tile the buffer, so garbage is `Malformed` rather than half-read.
fn parse_attrs<'a>(mut buf: &'a [u8], what: &str) -> Result<Vec<(u16, &'a [u8])>, IpvsError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (Some(len), Some(kind)) = (u16_at(buf, 0), u16_at(buf, 2)) else {
            return Err(malformed(format!(
                "{what}: {} stray bytes after the attributes",
                buf.len()
            )));
        };
        let len = usize::from(len);
        let Some(value) = buf.get(NLA_HDRLEN..len).filter(|_| len >= NLA_HDRLEN) else {
            return Err(malformed(format!(
                "{what}: attribute {} claims {len} bytes, {} left",
                kind & NLA_TYPE_MASK,
                buf.len()
            )));
        };
        out.push((kind & NLA_TYPE_MASK, value));
        // The last attribute's padding may be left out.
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = buf.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_ne_bytes(b))
}

fn find<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn fixed<const N: usize>(value: Option<&[u8]>, what: &str) -> Result<[u8; N], IpvsError> {
    let value = value.ok_or_else(|| malformed(format!("{what} missing")))?;
    value.try_into().map_err(|_| malformed(format!("{what}: {} bytes, not {N}", value.len())))
}

fn host_u16(value: Option<&[u8]>, what: &str) -> Result<u16, IpvsError> {
    fixed::<2>(value, what).map(u16::from_ne_bytes)
}

fn host_u32(value: Option<&[u8]>, what: &str) -> Result<u32, IpvsError> {
    fixed::<4>(value, what).map(u32::from_ne_bytes)
}

fn net_u16(value: Option<&[u8]>, what: &str) -> Result<u16, IpvsError> {
    fixed::<2>(value, what).map(u16::from_be_bytes)
}

/// An address attribute of family `af`: the kernel sends the whole 16-byte union, with an
/// IPv4 address in its first four bytes; requests carry 4 bytes. Both are accepted.
fn address(value: Option<&[u8]>, af: u16, what: &str) -> Result<IpAddr, IpvsError> {
    let value = value.ok_or_else(|| malformed(format!("{what} missing")))?;
    match af {
        AF_INET => {
            let b: [u8; 4] = value
                .get(..4)
                .filter(|_| value.len() == 4 || value.len() == 16)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| malformed(format!("{what}: {} bytes for IPv4", value.len())))?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        AF_INET6 => {
            let b: [u8; 16] = value
                .try_into()
                .map_err(|_| malformed(format!("{what}: {} bytes for IPv6", value.len())))?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        other => Err(malformed(format!("{what}: unknown address family {other}"))),
    }
}

/// The nested attributes of `kind` in a genl payload whose command must be `cmd`.
fn nested_of<'a>(
    payload: &'a [u8],
    cmd: u8,
    kind: u16,
    what: &str,
) -> Result<Vec<(u16, &'a [u8])>, IpvsError> {
    let header = GenlHeader::parse(payload)
        .map_err(|e| malformed(format!("{what}: generic netlink header: {e}")))?;
    if header.cmd != cmd {
        return Err(malformed(format!("{what}: command {}, expected {cmd}", header.cmd)));
    }
    let top = parse_attrs(payload.get(GENL_HDRLEN..).unwrap_or_default(), what)?;
    let nest =
        find(&top, kind).ok_or_else(|| malformed(format!("{what}: no nested attributes")))?;
    parse_attrs(nest, what)
}

/// A virtual service as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelService {
    /// AF_INET or AF_INET6.
    pub af: u16,
    /// IPPROTO_* of an address service (0 for a fwmark service).
    pub protocol: u16,
    /// VIP and port; `None` for a fwmark service.
    pub addr: Option<SocketAddr>,
    /// Firewall mark (0 for an address service).
    pub fwmark: u32,
    /// Scheduler name.
    pub sched_name: String,
    /// IP_VS_SVC_F_* flags (the kernel's HASHED bit included).
    pub flags: u32,
    /// Persistence timeout in seconds.
    pub timeout: u32,
}

/// A destination (real server) as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelDest {
    /// Address and port.
    pub addr: SocketAddr,
    /// IP_VS_CONN_F_* forwarding method.
    pub fwd_method: u32,
    /// Weight.
    pub weight: u32,
}

/// Decodes one GET_SERVICE reply payload (genl header and attributes; the kernel answers
/// with command NEW_SERVICE). Statistics and unknown attributes are skipped.
pub fn decode_service_reply(payload: &[u8]) -> Result<KernelService, IpvsError> {
    let what = "GET_SERVICE reply";
    let attrs = nested_of(payload, IPVS_CMD_NEW_SERVICE, IPVS_CMD_ATTR_SERVICE, what)?;
    let af = host_u16(find(&attrs, IPVS_SVC_ATTR_AF), "service family")?;
    if af != AF_INET && af != AF_INET6 {
        return Err(malformed(format!("{what}: unknown address family {af}")));
    }
    let fwmark = match find(&attrs, IPVS_SVC_ATTR_FWMARK) {
        Some(v) => host_u32(Some(v), "service fwmark")?,
        None => 0,
    };
    let (protocol, addr) = if fwmark != 0 {
        (0, None)
    } else {
        let protocol = host_u16(find(&attrs, IPVS_SVC_ATTR_PROTOCOL), "service protocol")?;
        let ip = address(find(&attrs, IPVS_SVC_ATTR_ADDR), af, "service address")?;
        let port = net_u16(find(&attrs, IPVS_SVC_ATTR_PORT), "service port")?;
        (protocol, Some(SocketAddr::new(ip, port)))
    };
    let sched = find(&attrs, IPVS_SVC_ATTR_SCHED_NAME)
        .ok_or_else(|| malformed(format!("{what}: scheduler name missing")))?;
    let sched = sched.split(|b| *b == 0).next().unwrap_or_default();
    let sched_name = String::from_utf8(sched.to_vec())
        .map_err(|_| malformed(format!("{what}: scheduler name is not UTF-8")))?;
    let flags = fixed::<8>(find(&attrs, IPVS_SVC_ATTR_FLAGS), "service flags")?;
    let (flags, _mask) = flags.split_at(4);
    let flags = host_u32(Some(flags), "service flags")?;
    let timeout = host_u32(find(&attrs, IPVS_SVC_ATTR_TIMEOUT), "service timeout")?;
    Ok(KernelService { af, protocol, addr, fwmark, sched_name, flags, timeout })
}

/// Decodes one GET_DEST reply payload (command NEW_DEST). `service_af` is the family of
/// the service, which kernels without IPVS_DEST_ATTR_ADDR_FAMILY imply.
pub fn decode_dest_reply(payload: &[u8], service_af: u16) -> Result<KernelDest, IpvsError> {
    let what = "GET_DEST reply";
    let attrs = nested_of(payload, IPVS_CMD_NEW_DEST, IPVS_CMD_ATTR_DEST, what)?;
    let af = match find(&attrs, IPVS_DEST_ATTR_ADDR_FAMILY) {
        Some(v) => host_u16(Some(v), "destination family")?,
        None => service_af,
    };
    let ip = address(find(&attrs, IPVS_DEST_ATTR_ADDR), af, "destination address")?;
    let port = net_u16(find(&attrs, IPVS_DEST_ATTR_PORT), "destination port")?;
    let fwd_method = host_u32(find(&attrs, IPVS_DEST_ATTR_FWD_METHOD), "forwarding method")?;
    let weight = host_u32(find(&attrs, IPVS_DEST_ATTR_WEIGHT), "destination weight")?;
    Ok(KernelDest { addr: SocketAddr::new(ip, port), fwd_method, weight })
}

impl KernelService {
    /// How the kernel names this service: its mark, or its address when it is a TCP one
    /// (`None`: another protocol). A mark service's key is not in the kernel: its VIP is
    /// the family's unspecified address and its port 0.
    pub fn service_ref(&self) -> Option<ServiceRef> {
        if self.fwmark != 0 {
            let vip = if self.af == AF_INET6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            return Some(ServiceRef { key: ServiceKey { vip, port: 0 }, fwmark: self.fwmark });
        }
        let addr = self.addr.filter(|_| self.protocol == IPPROTO_TCP)?;
        Some(ServiceKey { vip: addr.ip(), port: addr.port() }.into())
    }

    /// The core's view of this service with `dests`, named `service` (which gives a mark
    /// service its key), or `None` when the core cannot hold it (not TCP, a scheduler the
    /// core lacks): such a service is not one of cplb's. The forwarding is the
    /// destinations' (IPVS keeps it per destination); without a destination that says,
    /// `fallback`.
    pub fn to_spec(
        &self,
        service: ServiceRef,
        dests: &[KernelDest],
        fallback: LbKind,
    ) -> Option<ServiceSpec> {
        if self.fwmark == 0 && self.protocol != IPPROTO_TCP {
            return None;
        }
        let algo = scheduler_from_name(&self.sched_name)?;
        let forwarding =
            dests.iter().find_map(|d| forwarding_from_method(d.fwd_method)).unwrap_or(fallback);
        let persistent = self.flags & IP_VS_SVC_F_PERSISTENT != 0;
        let mut real_servers: Vec<RealServer> =
            dests.iter().map(|d| RealServer { addr: d.addr, weight: d.weight }).collect();
        real_servers.sort();
        Some(ServiceSpec {
            key: service.key,
            fwmark: self.fwmark,
            algo,
            forwarding,
            persistence_secs: if persistent { self.timeout } else { 0 },
            real_servers,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Netlink transport
// ---------------------------------------------------------------------------------------

/// A generic netlink payload already laid out, sent as a netlink message of `family`.
#[derive(Debug)]
struct RawGenl<'a> {
    family: u16,
    payload: &'a [u8],
}

impl NetlinkSerializable for RawGenl<'_> {
    fn message_type(&self) -> u16 {
        self.family
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(self.payload);
    }
}

/// How a request ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Acknowledged (or dump finished), with the replies' genl payloads.
    Ok(Vec<Vec<u8>>),
    /// The kernel's positive errno.
    Errno(i32),
}

/// Reads one received datagram for request `seq` of message type `family`: pushes reply
/// payloads, and returns the outcome once the ack, error or end of dump is in it. Messages
/// of other sequence numbers (a late reply to an earlier request) are skipped.
fn read_datagram(
    mut buf: &[u8],
    seq: u32,
    family: u16,
    done_on_reply: bool,
    replies: &mut Vec<Vec<u8>>,
) -> Result<Option<Outcome>, IpvsError> {
    while !buf.is_empty() {
        let msg = NetlinkBuffer::new_checked(buf)
            .map_err(|e| malformed(format!("netlink message: {e}")))?;
        let len = msg.length() as usize;
        if msg.sequence_number() == seq {
            match msg.message_type() {
                NLMSG_ERROR => {
                    let err = ErrorBuffer::new_checked(msg.payload())
                        .map_err(|e| malformed(format!("netlink error message: {e}")))?;
                    return Ok(Some(match err.code() {
                        None => Outcome::Ok(core::mem::take(replies)),
                        Some(code) => Outcome::Errno(code.get().saturating_abs()),
                    }));
                }
                NLMSG_DONE => {
                    // The kernel may put a dump's error in the done message.
                    let code = if msg.payload().is_empty() {
                        0
                    } else {
                        DoneBuffer::new_checked(msg.payload())
                            .map_err(|e| malformed(format!("netlink done message: {e}")))?
                            .code()
                    };
                    return Ok(Some(if code == 0 {
                        Outcome::Ok(core::mem::take(replies))
                    } else {
                        Outcome::Errno(code.saturating_abs())
                    }));
                }
                NLMSG_NOOP => {}
                t if t == family => {
                    replies.push(msg.payload().to_vec());
                    if done_on_reply {
                        return Ok(Some(Outcome::Ok(core::mem::take(replies))));
                    }
                }
                other => return Err(malformed(format!("unexpected netlink message type {other}"))),
            }
        }
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(None)
}

/// The kernel's IPVS table, over a generic netlink socket in the caller's network
/// namespace (the one the socket was opened in).
#[derive(Debug)]
pub struct Ipvs {
    socket: Socket,
    family: u16,
    seq: u32,
    /// Forwarding of the services this process created or read: IPVS keeps forwarding per
    /// destination, so a service without any does not say it.
    forwarding: BTreeMap<ServiceRef, LbKind>,
    /// The kernel service each key names (set by [`Ipvs::reconcile`], kept up by
    /// [`Ipvs::apply`]).
    names: BTreeMap<ServiceKey, ServiceRef>,
    rx: Vec<u8>,
}

impl Ipvs {
    /// Resolves the "IPVS" generic netlink family. `IpvsError::Unavailable` when the kernel
    /// has no IPVS (the family is not registered, even after the kernel's on-demand module
    /// load).
    pub fn open() -> Result<Self, IpvsError> {
        let mut ipvs = Self::connect()?;
        match ipvs.resolve(IPVS_GENL_NAME)? {
            Ok(family) => {
                ipvs.family = family;
                tracing::debug!(family, "IPVS generic netlink family resolved");
                Ok(ipvs)
            }
            Err(ENOENT) => Err(IpvsError::Unavailable {
                reason: format!(
                    "generic netlink family {IPVS_GENL_NAME} not found: the kernel has no \
                     ip_vs module loaded"
                ),
            }),
            Err(errno) => Err(IpvsError::kernel(
                format!("resolving generic netlink family {IPVS_GENL_NAME}"),
                errno,
            )),
        }
    }

    /// A generic netlink socket, family not resolved yet.
    fn connect() -> Result<Self, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Self {
            socket,
            family: 0,
            seq: 0,
            forwarding: BTreeMap::new(),
            names: BTreeMap::new(),
            rx: Vec::with_capacity(RX_BUFFER),
        })
    }

    /// The id of generic netlink family `name` (CTRL_CMD_GETFAMILY), or the errno:
    /// ENOENT when the kernel has no such family.
    fn resolve(&mut self, name: &str) -> Result<Result<u16, i32>, IpvsError> {
        let mut msg = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(name.to_owned())],
        });
        msg.finalize();
        let ctrl_family = msg.family_id();
        let mut payload = vec![0; Emitable::buffer_len(&msg)];
        msg.emit(&mut payload);
        match self.roundtrip(ctrl_family, NLM_F_REQUEST, &payload, true)? {
            Outcome::Errno(errno) => Ok(Err(errno)),
            Outcome::Ok(replies) => {
                let reply = replies.first().ok_or_else(|| malformed("no CTRL_CMD_NEWFAMILY"))?;
                let attrs = parse_attrs(reply.get(GENL_HDRLEN..).unwrap_or_default(), "nlctrl")?;
                // CTRL_ATTR_FAMILY_ID (include/uapi/linux/genetlink.h), u16 host order.
                Ok(Ok(host_u16(find(&attrs, 1), "CTRL_ATTR_FAMILY_ID")?))
            }
        }
    }

    /// Sends one request and collects its replies until its ack, error or end of dump.
    fn roundtrip(
        &mut self,
        family: u16,
        flags: u16,
        payload: &[u8],
        done_on_reply: bool,
    ) -> Result<Outcome, IpvsError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg =
            NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RawGenl { family, payload }));
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let mut replies = Vec::new();
        loop {
            self.rx.clear();
            let n = self.socket.recv(&mut self.rx, MSG_TRUNC)?;
            if n > self.rx.len() {
                return Err(malformed(format!(
                    "netlink datagram of {n} bytes, more than the {} byte buffer",
                    self.rx.len()
                )));
            }
            if let Some(outcome) =
                read_datagram(&self.rx, self.seq, family, done_on_reply, &mut replies)?
            {
                return Ok(outcome);
            }
        }
    }

    /// A command acknowledged by the kernel: Ok, or the errno.
    fn command(&mut self, payload: &[u8]) -> Result<Result<(), i32>, IpvsError> {
        match self.roundtrip(self.family, NLM_F_REQUEST | NLM_F_ACK, payload, false)? {
            Outcome::Ok(_) => Ok(Ok(())),
            Outcome::Errno(errno) => Ok(Err(errno)),
        }
    }

    /// A command that must succeed.
    fn must(&mut self, payload: &[u8], request: impl FnOnce() -> String) -> Result<(), IpvsError> {
        self.command(payload)?.map_err(|errno| IpvsError::kernel(request(), errno))
    }

    fn dump(
        &mut self,
        payload: &[u8],
        request: impl FnOnce() -> String,
    ) -> Result<Vec<Vec<u8>>, IpvsError> {
        match self.roundtrip(self.family, NLM_F_REQUEST | NLM_F_DUMP, payload, false)? {
            Outcome::Ok(replies) => Ok(replies),
            Outcome::Errno(errno) => Err(IpvsError::kernel(request(), errno)),
        }
    }

    /// Every virtual service in the kernel's table, as it reports them (fwmark and other
    /// protocols' services included).
    pub fn kernel_services(&mut self) -> Result<Vec<KernelService>, IpvsError> {
        let replies = self.dump(&get_services_request(), || "GET_SERVICE dump".to_owned())?;
        replies.iter().map(|r| decode_service_reply(r)).collect()
    }

    /// The destinations of `service`, as the kernel reports them.
    pub fn kernel_dests(&mut self, service: ServiceRef) -> Result<Vec<KernelDest>, IpvsError> {
        let request = get_dests_request(service);
        let replies = self.dump(&request, || format!("GET_DEST of {service}"))?;
        replies.iter().map(|r| decode_dest_reply(r, family(service.key.vip))).collect()
    }

    /// cplb's services as the kernel holds them, for a node that wants `wanted`: every
    /// service with one of cplb's marks, the only services cplbd creates (keyed as the
    /// wanted one with that mark; one no spec wants is a stray). Every other service is
    /// someone else's (kube-proxy, a keepalived, an operator), even on cplb's VIPs, and is
    /// left alone; their destinations are not even read (kube-proxy in IPVS mode may hold
    /// thousands of services).
    pub fn listing(&mut self, wanted: &[ServiceSpec]) -> Result<Listing, IpvsError> {
        let mut listing = Listing::default();
        for svc in self.kernel_services()? {
            let Some(mut service) = svc.service_ref() else { continue };
            if !is_cplb_mark(svc.fwmark) {
                continue;
            }
            match wanted.iter().find(|w| w.fwmark == svc.fwmark) {
                Some(w) => service.key = w.key,
                None => {
                    listing.strays.push(service);
                    continue;
                }
            }
            let dests = self.kernel_dests(service)?;
            let fallback = self.forwarding.get(&service).copied().unwrap_or(DEFAULT_FORWARDING);
            match svc.to_spec(service, &dests, fallback) {
                Some(spec) => {
                    self.forwarding.insert(service, spec.forwarding);
                    listing.services.push(spec);
                }
                None => tracing::warn!(
                    %service,
                    scheduler = %svc.sched_name,
                    "IPVS service with a scheduler cplb does not know: left alone"
                ),
            }
        }
        listing.services.sort();
        Ok(listing)
    }

    /// Makes cplb's services those of `desired`, `current` being what
    /// [`listing`](Self::listing) found. Idempotent, so a retry after a partial failure
    /// converges: adding what exists updates it, removing what is gone succeeds.
    pub fn reconcile(
        &mut self,
        current: &Listing,
        desired: &[ServiceSpec],
    ) -> Result<(), IpvsError> {
        for stray in &current.strays {
            self.remove_service(*stray)?;
        }
        // A key held by another kernel service than the one wanted (an address service
        // where a mark service belongs) goes first, so a key names one service in the diff.
        let (replaced, kept): (Vec<&ServiceSpec>, Vec<&ServiceSpec>) =
            current.services.iter().partition(|cur| {
                desired.iter().any(|want| want.key == cur.key && want.fwmark != cur.fwmark)
            });
        for old in replaced {
            self.remove_service(old.into())?;
        }
        self.names = kept.iter().map(|s| (s.key, ServiceRef::from(*s))).collect();
        let changes = diff(
            &DataPlane { services: kept.into_iter().cloned().collect(), ..DataPlane::default() },
            &DataPlane { services: desired.to_vec(), ..DataPlane::default() },
        );
        self.apply(&changes)
    }

    /// Carries out the IPVS changes of a diff, in order; other `Change` variants (proxy,
    /// redirects, local VIPs) belong to other drivers and are ignored. A key names the
    /// service last listed or added with it.
    ///
    /// Editing what does not exist is an error: the table is not the one the diff was
    /// computed from, so read it again.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), IpvsError> {
        for change in changes {
            match change {
                Change::AddService(spec) => self.add_service(spec)?,
                Change::EditService(spec) => self.edit_service(spec)?,
                Change::RemoveService(key) => {
                    let service = self.name(*key);
                    self.remove_service(service)?;
                    self.names.remove(key);
                }
                Change::AddRealServer(key, rs) => self.add_dest(self.name(*key), rs)?,
                Change::EditRealServer(key, rs) => {
                    let service = self.name(*key);
                    let fwd = self.forwarding_for(service)?;
                    self.must(&set_dest_request(service, rs, fwd), || {
                        format!("SET_DEST {} in {service}", rs.addr)
                    })?;
                }
                Change::RemoveRealServer(key, addr) => {
                    let service = self.name(*key);
                    match self.command(&del_dest_request(service, *addr))? {
                        // ENOENT: no such destination; ESRCH: no such service.
                        Ok(()) | Err(ENOENT | ESRCH) => {}
                        Err(errno) => {
                            let request = format!("DEL_DEST {addr} from {service}");
                            return Err(IpvsError::kernel(request, errno));
                        }
                    }
                }
                Change::SetProxy { .. }
                | Change::StopProxy
                | Change::AddRedirect(_)
                | Change::RemoveRedirect(_)
                | Change::AddLocalVip(_)
                | Change::RemoveLocalVip(_) => continue,
            }
            tracing::debug!(?change, "IPVS change applied");
        }
        Ok(())
    }

    /// The kernel service `key` names: the one listed or added with it, else (a diff
    /// computed elsewhere) the TCP service on it.
    fn name(&self, key: ServiceKey) -> ServiceRef {
        self.names.get(&key).copied().unwrap_or_else(|| key.into())
    }

    fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        let service = ServiceRef::from(spec);
        match self.command(&new_service_request(spec))? {
            Ok(()) => {
                self.forwarding.insert(service, spec.forwarding);
            }
            Err(EEXIST) => self.edit_service(spec)?,
            Err(errno) => {
                let request = format!("NEW_SERVICE {service} ({})", scheduler_name(spec.algo));
                return Err(IpvsError::kernel(request, errno));
            }
        }
        self.names.insert(spec.key, service);
        // The core's model adds a spec's real servers with it (a diff sends none here).
        for rs in &spec.real_servers {
            self.add_dest(service, rs)?;
        }
        Ok(())
    }

    /// SET_SERVICE, then the forwarding of each destination, which IPVS keeps per
    /// destination rather than per service.
    fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        let service = ServiceRef::from(spec);
        self.must(&set_service_request(spec), || {
            format!("SET_SERVICE {service} ({})", scheduler_name(spec.algo))
        })?;
        self.forwarding.insert(service, spec.forwarding);
        let method = forwarding_method(spec.forwarding);
        for dest in self.kernel_dests(service)? {
            if dest.fwd_method & IP_VS_CONN_F_FWD_MASK != method {
                let rs = RealServer { addr: dest.addr, weight: dest.weight };
                self.must(&set_dest_request(service, &rs, spec.forwarding), || {
                    format!("SET_DEST {} in {service}", rs.addr)
                })?;
            }
        }
        Ok(())
    }

    fn remove_service(&mut self, service: ServiceRef) -> Result<(), IpvsError> {
        match self.command(&del_service_request(service))? {
            Ok(()) => tracing::info!(%service, "IPVS service removed"),
            Err(ESRCH) => {}
            Err(errno) => {
                return Err(IpvsError::kernel(format!("DEL_SERVICE {service}"), errno));
            }
        }
        self.forwarding.remove(&service);
        Ok(())
    }

    fn add_dest(&mut self, service: ServiceRef, rs: &RealServer) -> Result<(), IpvsError> {
        let fwd = self.forwarding_for(service)?;
        match self.command(&new_dest_request(service, rs, fwd))? {
            Ok(()) => Ok(()),
            Err(EEXIST) => self.must(&set_dest_request(service, rs, fwd), || {
                format!("SET_DEST {} in {service}", rs.addr)
            }),
            Err(errno) => {
                let request = format!("NEW_DEST {} to {service}", rs.addr);
                Err(IpvsError::kernel(request, errno))
            }
        }
    }

    /// The forwarding of `service`: as created or last read, else its destinations', else
    /// k0s's default.
    fn forwarding_for(&mut self, service: ServiceRef) -> Result<LbKind, IpvsError> {
        if let Some(kind) = self.forwarding.get(&service) {
            return Ok(*kind);
        }
        let kind = self
            .kernel_dests(service)?
            .iter()
            .find_map(|d| forwarding_from_method(d.fwd_method))
            .unwrap_or(DEFAULT_FORWARDING);
        self.forwarding.insert(service, kind);
        Ok(kind)
    }

    /// Deletes every address service (any protocol) whose VIP is in `vips`, with its
    /// destinations: what a crashed predecessor may have left. Returns how many went.
    pub fn remove_services_for(&mut self, vips: &[IpAddr]) -> Result<usize, IpvsError> {
        let mut removed = 0;
        for svc in self.kernel_services()? {
            let Some(addr) = svc.addr.filter(|a| vips.contains(&a.ip())) else {
                continue;
            };
            match self.command(&del_service_request_proto(svc.protocol, addr))? {
                Ok(()) => {
                    tracing::info!(service = %addr, protocol = svc.protocol, "IPVS service removed");
                    removed += 1;
                }
                Err(ESRCH) => {}
                Err(errno) => {
                    return Err(IpvsError::kernel(format!("DEL_SERVICE {addr}"), errno));
                }
            }
            if svc.protocol == IPPROTO_TCP {
                self.forwarding.remove(&ServiceKey { vip: addr.ip(), port: addr.port() }.into());
            }
        }
        Ok(removed)
    }
}

/// cplb's services in the kernel (see [`Ipvs::listing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The services, keyed as the node knows them, sorted.
    pub services: Vec<ServiceSpec>,
    /// Services with one of cplb's marks that the node does not want.
    pub strays: Vec<ServiceRef>,
}

// The expected bytes below are laid out by hand from the uapi numbers. Host-order integers
// are written little-endian, so these run on little-endian hosts (x86_64, aarch64).
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(new_service_request(&spec4()), expected);
    }

    #[test]
    fn set_service_differs_only_in_command() {
        let mut set = new_service_request(&spec4());
        set[0] = IPVS_CMD_SET_SERVICE;
        assert_eq!(set_service_request(&spec4()), set);
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
        assert_eq!(new_service_request(&spec), expected);
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
        assert_eq!(new_dest_request(key4(), &rs4(11), LbKind::Dr), expected);
        let mut set = expected.clone();
        set[0] = IPVS_CMD_SET_DEST;
        assert_eq!(set_dest_request(key4(), &rs4(11), LbKind::Dr), set);
        // NAT and TUN only change the method.
        let nat = new_dest_request(key4(), &rs4(11), LbKind::Nat);
        assert_eq!(nat[4 + 36 + 4 + 16..][..8], [8, 0, 3, 0, 0, 0, 0, 0]);
        let tun = new_dest_request(key4(), &rs4(11), LbKind::Tun);
        assert_eq!(tun[4 + 36 + 4 + 16..][..8], [8, 0, 3, 0, 2, 0, 0, 0]);
    }

    #[test]
    fn del_service_and_del_dest_carry_only_the_identity() {
        let mut expected = vec![3, 1, 0, 0]; // genl: cmd DEL_SERVICE
        expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
        assert_eq!(del_service_request(key4()), expected);

        let mut expected = vec![7, 1, 0, 0]; // genl: cmd DEL_DEST
        expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
        #[rustfmt::skip]
        expected.extend_from_slice(&[
            28, 0, 0x02, 0x80,          // IPVS_CMD_ATTR_DEST | NLA_F_NESTED, 28 bytes
            8, 0, 1, 0, 10, 200, 0, 12, //   10.200.0.12
            6, 0, 2, 0, 0x19, 0x2b, 0, 0, // port 6443
            6, 0, 11, 0, 2, 0, 0, 0,    //   AF_INET
        ]);
        assert_eq!(del_dest_request(key4(), rs4(12).addr), expected);
    }

    #[test]
    fn dump_requests() {
        assert_eq!(get_services_request(), [4, 1, 0, 0]); // GET_SERVICE, no attributes
        let mut expected = vec![8, 1, 0, 0]; // GET_DEST of the service
        expected.extend_from_slice(&SERVICE_ID_10_200_0_200);
        assert_eq!(get_dests_request(key4()), expected);
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
            ServiceSpec {
                real_servers: vec![RealServer { weight: 2, ..rs4(11) }, rs4(12)],
                ..spec4()
            }
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
            [tlv(1, &addr.octets()), tlv(2, &[0, 80]), tlv(3, &[0; 4]), tlv(4, &[5, 0, 0, 0])]
                .concat();
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

    use core::fmt;

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

    #[test]
    fn datagrams_end_on_ack_error_or_done() {
        const FAMILY: u16 = 0x22;
        let mut replies = Vec::new();
        // A dump: two replies (NLM_F_MULTI) and NLMSG_DONE, in one datagram, after a stale
        // reply to an earlier request.
        let dgram = [
            nlmsg(FAMILY, 2, 6, &dest_reply(9, 1)),
            nlmsg(FAMILY, 2, 7, &dest_reply(11, 1)),
            nlmsg(FAMILY, 2, 7, &dest_reply(12, 1)),
            nlmsg(NLMSG_DONE, 2, 7, &0i32.to_le_bytes()),
        ]
        .concat();
        let out = read_datagram(&dgram, 7, FAMILY, false, &mut replies).unwrap();
        assert_eq!(out, Some(Outcome::Ok(vec![dest_reply(11, 1), dest_reply(12, 1)])));
        // Replies spread over datagrams: the first has no end yet.
        let first = nlmsg(FAMILY, 2, 8, &dest_reply(11, 1));
        assert_eq!(read_datagram(&first, 8, FAMILY, false, &mut replies).unwrap(), None);
        assert_eq!(replies.len(), 1);
        // An ack: NLMSG_ERROR with code 0 and the request's header.
        replies.clear();
        let ack = nlmsg(NLMSG_ERROR, 0x100, 9, &[0u8; 20]);
        assert_eq!(
            read_datagram(&ack, 9, FAMILY, false, &mut replies).unwrap(),
            Some(Outcome::Ok(vec![]))
        );
        // An error: -EEXIST.
        let mut err = (-17i32).to_le_bytes().to_vec();
        err.extend_from_slice(&[0u8; 16]);
        let nack = nlmsg(NLMSG_ERROR, 0, 10, &err);
        assert_eq!(
            read_datagram(&nack, 10, FAMILY, false, &mut replies).unwrap(),
            Some(Outcome::Errno(17))
        );
        // A message of another family, or a cut one, is malformed.
        let other = nlmsg(0x30, 0, 11, &[0; 4]);
        assert!(is_malformed(read_datagram(&other, 11, FAMILY, false, &mut replies)));
        assert!(is_malformed(read_datagram(&nack[..20], 10, FAMILY, false, &mut replies)));
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
            let _ = read_datagram(&bytes, 1, 0x22, false, &mut Vec::new());
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
            let svc = decode_service_reply(&new_service_request(&spec)).unwrap();
            prop_assert_eq!(svc.fwmark, fwmark);
            prop_assert_eq!(svc.to_spec((&spec).into(), &[], forwarding), Some(spec.clone()));
            let rs = RealServer { addr: SocketAddr::new(vip, rs_port), weight };
            let dest = decode_dest_reply(&new_dest_request(&spec, &rs, forwarding), 0).unwrap();
            prop_assert_eq!(dest, KernelDest { addr: rs.addr, fwd_method: forwarding_method(forwarding), weight });
        }
    }
}

/// Against the real kernel, in a network namespace of its own. Skips (and says why) when
/// not root or when the kernel has no IPVS.
#[cfg(test)]
mod live {
    use std::fs::File;
    use std::process::Command;

    use nix::sched::{CloneFlags, setns};

    use super::*;

    /// A named network namespace, deleted on drop (also when the test panics).
    struct TestNetns {
        name: String,
    }

    impl TestNetns {
        fn create() -> Result<Self, String> {
            let name = format!("cplb-ipvs-test-{}", std::process::id());
            let out = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .map_err(|e| format!("ip netns add: {e}"))?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(format!("ip netns add {name}: {}", stderr.trim()));
            }
            let netns = Self { name };
            // The kernel refuses a real server it has no route to (EINVAL, found in the
            // guest): the test's servers are on the namespace's own network.
            for args in [
                ["link", "set", "lo", "up"].as_slice(),
                ["addr", "add", "192.0.2.1/24", "dev", "lo"].as_slice(),
            ] {
                let out = Command::new("ip")
                    .args(["-n", &netns.name])
                    .args(args)
                    .output()
                    .map_err(|e| format!("ip {args:?}: {e}"))?;
                if !out.status.success() {
                    return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
                }
            }
            Ok(netns)
        }

        fn path(&self) -> String {
            format!("/run/netns/{}", self.name)
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
        }
    }

    fn effective_uid() -> Option<u32> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("Uid:"))?;
        line.split_whitespace().nth(2)?.parse().ok()
    }

    fn scenario() {
        let vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
        let key = ServiceKey { vip, port: 6443 };
        let rs = |last| RealServer { addr: SocketAddr::from(([192, 0, 2, last], 6443)), weight: 1 };
        let spec = ServiceSpec {
            key,
            fwmark: FWMARK_BASE,
            algo: LbAlgo::Rr,
            forwarding: LbKind::Dr,
            persistence_secs: 360,
            real_servers: vec![rs(11), rs(12)],
        };
        let mut ipvs = Ipvs::open().unwrap();
        let list = |ipvs: &mut Ipvs, want: &[ServiceSpec]| ipvs.listing(want).unwrap();
        let none = list(&mut ipvs, &[]);
        assert_eq!(none, Listing::default(), "a fresh namespace has no services");

        let two = vec![spec.clone()];
        ipvs.reconcile(&none, &two).unwrap();
        assert_eq!(list(&mut ipvs, &two), Listing { services: two.clone(), strays: vec![] });
        // Reconciling from the same stale listing again converges (add is an update).
        ipvs.reconcile(&none, &two).unwrap();
        // A second handle knows nothing of what the first did: it reads it all back.
        assert_eq!(list(&mut Ipvs::open().unwrap(), &two).services, two);
        let on_the_kernel = ipvs.kernel_services().unwrap();
        assert_eq!(on_the_kernel.len(), 1);
        assert_eq!((on_the_kernel[0].fwmark, on_the_kernel[0].addr), (FWMARK_BASE, None));

        // A mark of cplb's that is no longer wanted goes; what cplbd never creates stays,
        // even on its VIP: a TCP service there (a keepalived's, an operator's), a mark
        // outside cplb's range, a service on another VIP.
        let legacy = ServiceSpec { fwmark: 0, ..spec.clone() };
        let stray = ServiceSpec { fwmark: FWMARK_BASE + 1, ..spec.clone() };
        let foreign_mark = ServiceSpec { fwmark: 7, ..spec.clone() };
        let other_vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 201));
        let foreign_vip = ServiceSpec {
            key: ServiceKey { vip: other_vip, port: 6443 },
            fwmark: 0,
            ..spec.clone()
        };
        for s in [&legacy, &stray, &foreign_mark, &foreign_vip] {
            ipvs.apply(&[Change::AddService(s.clone())]).unwrap();
        }
        let found = list(&mut ipvs, &two);
        assert_eq!(found.services, std::slice::from_ref(&spec));
        assert_eq!(
            found.strays,
            [ServiceRef {
                key: ServiceKey { vip: Ipv4Addr::UNSPECIFIED.into(), port: 0 },
                fwmark: FWMARK_BASE + 1
            }]
        );
        ipvs.reconcile(&found, &two).unwrap();
        assert_eq!(list(&mut ipvs, &two), Listing { services: two.clone(), strays: vec![] });
        let left: Vec<(u32, Option<SocketAddr>)> =
            ipvs.kernel_services().unwrap().iter().map(|s| (s.fwmark, s.addr)).collect();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(
            left.contains(&(7, None))
                && left.contains(&(0, Some(SocketAddr::new(vip, 6443))))
                && left.contains(&(0, Some(SocketAddr::new(other_vip, 6443))))
        );
        ipvs.remove_service(ServiceRef::from(&foreign_mark)).unwrap();
        assert_eq!(ipvs.remove_services_for(&[vip, other_vip]).unwrap(), 2);

        let one = vec![ServiceSpec {
            algo: LbAlgo::Wlc,
            persistence_secs: 0,
            real_servers: vec![rs(12)],
            ..spec.clone()
        }];
        let current = list(&mut ipvs, &one);
        ipvs.reconcile(&current, &one).unwrap();
        assert_eq!(list(&mut ipvs, &one).services, one);
        let current = list(&mut ipvs, &[]);
        assert_eq!(current.strays.len(), 1, "unwanted now");
        ipvs.reconcile(&current, &[]).unwrap();
        assert!(ipvs.kernel_services().unwrap().is_empty());

        // Every scheduler k0s accepts, with every forwarding kind, is created and read back.
        let algos = [
            LbAlgo::Rr,
            LbAlgo::Wrr,
            LbAlgo::Lc,
            LbAlgo::Wlc,
            LbAlgo::Lblc,
            LbAlgo::Dh,
            LbAlgo::Sh,
            LbAlgo::Sed,
            LbAlgo::Nq,
        ];
        for algo in algos {
            for forwarding in [LbKind::Dr, LbKind::Nat, LbKind::Tun] {
                let want = vec![ServiceSpec {
                    key,
                    fwmark: FWMARK_BASE,
                    algo,
                    forwarding,
                    persistence_secs: 60,
                    real_servers: vec![rs(11), RealServer { weight: 3, ..rs(12) }],
                }];
                ipvs.reconcile(&Listing::default(), &want).unwrap();
                assert_eq!(
                    list(&mut Ipvs::open().unwrap(), &want).services,
                    want,
                    "{algo:?} {forwarding:?}"
                );
                let current = list(&mut ipvs, &[]);
                ipvs.reconcile(&current, &[]).unwrap();
                assert!(ipvs.kernel_services().unwrap().is_empty());
            }
        }
    }

    /// Changes for other drivers never reach the kernel (the family is not even resolved).
    #[test]
    fn apply_ignores_other_drivers_changes() {
        let mut nl = Ipvs::connect().unwrap();
        let vip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
        let changes = [
            Change::SetProxy { port: 6444, backends: vec![SocketAddr::new(vip, 6443)] },
            Change::StopProxy,
            Change::AddRedirect(SocketAddr::new(vip, 6443)),
            Change::RemoveRedirect(SocketAddr::new(vip, 6443)),
            Change::AddLocalVip(vip),
            Change::RemoveLocalVip(vip),
        ];
        nl.apply(&changes).unwrap();
        assert_eq!(nl.seq, 0, "nothing sent");
    }

    /// The transport against the real kernel, through the controller family that every
    /// kernel has: a request answered by one reply, an errno, and a multi-part dump.
    #[test]
    fn generic_netlink_roundtrips_with_the_kernel() {
        let mut nl = Ipvs::connect().unwrap();
        // GENL_ID_CTRL: nlctrl's fixed id.
        assert_eq!(nl.resolve("nlctrl").unwrap(), Ok(16));
        // (Family names are at most GENL_NAMSIZ - 1 = 15 bytes, or EINVAL.)
        assert_eq!(nl.resolve("cplb-nosuch").unwrap(), Err(ENOENT));
        // CTRL_CMD_GETFAMILY as a dump lists every family, nlctrl among them.
        let request = [3, 2, 0, 0]; // genl: CTRL_CMD_GETFAMILY, version 2
        let Outcome::Ok(replies) =
            nl.roundtrip(16, NLM_F_REQUEST | NLM_F_DUMP, &request, false).unwrap()
        else {
            panic!("family dump refused");
        };
        let names: Vec<String> = replies
            .iter()
            .filter_map(|r| {
                let attrs = parse_attrs(&r[GENL_HDRLEN..], "nlctrl").unwrap();
                // CTRL_ATTR_FAMILY_NAME, NUL-terminated.
                let name = find(&attrs, 2)?;
                Some(String::from_utf8_lossy(name).trim_end_matches('\0').to_owned())
            })
            .collect();
        assert!(names.iter().any(|n| n == "nlctrl"), "{names:?}");
    }

    #[test]
    fn ipvs_live() {
        if effective_uid() != Some(0) {
            eprintln!("skipped: ipvs_live: not root (IPVS commands need CAP_NET_ADMIN)");
            return;
        }
        match Ipvs::open() {
            Err(IpvsError::Unavailable { reason }) => {
                eprintln!("skipped: ipvs_live: {reason}");
                return;
            }
            Err(e) => panic!("opening IPVS: {e}"),
            Ok(_) => {}
        }
        let netns = TestNetns::create().unwrap();
        let path = netns.path();
        let result = std::thread::spawn(move || {
            // Network namespaces are per thread: only this one enters it, and the sockets
            // it opens belong to it.
            let ns = File::open(&path).unwrap();
            setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
            scenario();
        })
        .join();
        drop(netns);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

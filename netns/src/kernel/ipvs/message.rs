//! The IPVS generic netlink family as a `netlink_packet_generic` [`GenlFamily`]: its
//! commands, the message ([`IpvsMessage`]: a command and [`IpvsAttr`]s), the requests the
//! driver sends and the decoding of the kernel's replies into [`KernelService`] and
//! [`KernelDest`].
//!
//! The kernel side is `net/netfilter/ipvs/ip_vs_ctl.c`, family `"IPVS"`; the numbers are
//! those of `include/uapi/linux/ip_vs.h`. Requests have the shape of the kernel's replies
//! (a NEW_SERVICE request decodes as a GET_SERVICE reply would), which the tests use.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cplb_core::config::LbKind;
use cplb_core::lb::{RealServer, ServiceSpec};
use netlink_packet_core::{
    DecodeError, Emitable, ErrorContext, NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::IpvsError;
use super::attrs::{DestAttr, IpvsAttr, ServiceAttr};
use super::model::{
    AF_INET, AF_INET6, IP_VS_SVC_F_PERSISTENT, IP_VS_SVC_FLAGS_MASK_ALL, IPPROTO_TCP, KernelDest,
    KernelService, ServiceRef, family, forwarding_method, key_addr, scheduler_name,
};

/// `IPVS_GENL_NAME`: the generic netlink family the kernel's ip_vs module registers.
pub(crate) const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`: the version byte of every request's genl header.
pub(crate) const IPVS_GENL_VERSION: u8 = 1;

// Commands (the `IPVS_CMD_*` enum, from IPVS_CMD_UNSPEC = 0).
/// Add a service; also the command of each GET_SERVICE reply.
pub(crate) const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// Change a service's scheduler, flags, timeout, netmask.
pub(crate) const IPVS_CMD_SET_SERVICE: u8 = 2;
/// Delete a service and its destinations.
pub(crate) const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// Get (dump) services.
pub(crate) const IPVS_CMD_GET_SERVICE: u8 = 4;
/// Add a destination; also the command of each GET_DEST reply.
pub(crate) const IPVS_CMD_NEW_DEST: u8 = 5;
/// Change a destination's forwarding method, weight, thresholds.
pub(crate) const IPVS_CMD_SET_DEST: u8 = 6;
/// Delete a destination.
pub(crate) const IPVS_CMD_DEL_DEST: u8 = 7;
/// Dump a service's destinations.
pub(crate) const IPVS_CMD_GET_DEST: u8 = 8;
/// Delete every service (after NEW_DAEMON 9 ... ZERO 16). Not used by the driver, which
/// only removes the services of its own VIPs; here so the numbering is checked.
#[cfg(test)]
pub(crate) const IPVS_CMD_FLUSH: u8 = 17;

/// An IPVS command (`IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpvsCmd {
    /// Add a service; the command of each GET_SERVICE reply.
    NewService,
    /// Change a service.
    SetService,
    /// Delete a service.
    DelService,
    /// Dump the services.
    GetService,
    /// Add a destination; the command of each GET_DEST reply.
    NewDest,
    /// Change a destination.
    SetDest,
    /// Delete a destination.
    DelDest,
    /// Dump a service's destinations.
    GetDest,
    /// Any other command (daemon, config, info, zero, flush): never sent by the driver.
    Other(u8),
}

impl From<IpvsCmd> for u8 {
    fn from(cmd: IpvsCmd) -> Self {
        match cmd {
            IpvsCmd::NewService => IPVS_CMD_NEW_SERVICE,
            IpvsCmd::SetService => IPVS_CMD_SET_SERVICE,
            IpvsCmd::DelService => IPVS_CMD_DEL_SERVICE,
            IpvsCmd::GetService => IPVS_CMD_GET_SERVICE,
            IpvsCmd::NewDest => IPVS_CMD_NEW_DEST,
            IpvsCmd::SetDest => IPVS_CMD_SET_DEST,
            IpvsCmd::DelDest => IPVS_CMD_DEL_DEST,
            IpvsCmd::GetDest => IPVS_CMD_GET_DEST,
            IpvsCmd::Other(cmd) => cmd,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(cmd: u8) -> Self {
        match cmd {
            IPVS_CMD_NEW_SERVICE => Self::NewService,
            IPVS_CMD_SET_SERVICE => Self::SetService,
            IPVS_CMD_DEL_SERVICE => Self::DelService,
            IPVS_CMD_GET_SERVICE => Self::GetService,
            IPVS_CMD_NEW_DEST => Self::NewDest,
            IPVS_CMD_SET_DEST => Self::SetDest,
            IPVS_CMD_DEL_DEST => Self::DelDest,
            IPVS_CMD_GET_DEST => Self::GetDest,
            other => Self::Other(other),
        }
    }
}

/// One IPVS generic netlink message, request or reply: the genl header's command and the
/// attributes after it (the version byte is always [`IPVS_GENL_VERSION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpvsMessage {
    /// The command.
    pub(crate) cmd: IpvsCmd,
    /// The first-level attributes.
    pub(crate) attrs: Vec<IpvsAttr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|nla| IpvsAttr::parse(&nla?))
            .collect::<Result<_, _>>()
            .with_context(|| format!("IPVS message of command {}", header.cmd))?;
        Ok(Self { cmd: header.cmd.into(), attrs })
    }
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

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

/// The attributes that identify an address service: family, protocol, address, port.
fn address_service_id(protocol: u16, addr: SocketAddr) -> Vec<ServiceAttr> {
    vec![
        ServiceAttr::Af(family(addr.ip())),
        ServiceAttr::Protocol(protocol),
        ServiceAttr::Addr(addr_bytes(addr.ip())),
        ServiceAttr::Port(addr.port()),
    ]
}

/// The attributes that identify a service: family and mark, or those of its address.
fn service_id(service: ServiceRef) -> Vec<ServiceAttr> {
    if service.fwmark == 0 {
        return address_service_id(IPPROTO_TCP, key_addr(service.key));
    }
    vec![ServiceAttr::Af(family(service.key.vip)), ServiceAttr::Fwmark(service.fwmark)]
}

/// A full service (NEW_SERVICE / SET_SERVICE need every field).
fn service_full(spec: &ServiceSpec) -> Vec<ServiceAttr> {
    let persistent = spec.persistence_secs > 0;
    let mut attrs = service_id(spec.into());
    attrs.extend([
        ServiceAttr::SchedName(scheduler_name(spec.algo).to_owned()),
        ServiceAttr::Flags {
            flags: if persistent { IP_VS_SVC_F_PERSISTENT } else { 0 },
            mask: IP_VS_SVC_FLAGS_MASK_ALL,
        },
        ServiceAttr::Timeout(if persistent { spec.persistence_secs } else { 0 }),
        ServiceAttr::Netmask(netmask_bytes(spec.key.vip)),
    ]);
    attrs
}

fn dest_id(addr: SocketAddr) -> Vec<DestAttr> {
    vec![DestAttr::Addr(addr_bytes(addr.ip())), DestAttr::Port(addr.port())]
}

fn dest_full(rs: &RealServer, forwarding: LbKind) -> Vec<DestAttr> {
    let mut attrs = dest_id(rs.addr);
    attrs.extend([
        DestAttr::FwdMethod(forwarding_method(forwarding)),
        DestAttr::Weight(rs.weight),
        DestAttr::UpperThreshold(0),
        DestAttr::LowerThreshold(0),
        DestAttr::AddrFamily(family(rs.addr.ip())),
    ]);
    attrs
}

fn with_service(
    cmd: IpvsCmd,
    service: Vec<ServiceAttr>,
    dest: Option<Vec<DestAttr>>,
) -> IpvsMessage {
    let mut attrs = vec![IpvsAttr::Service(service)];
    attrs.extend(dest.map(IpvsAttr::Dest));
    IpvsMessage { cmd, attrs }
}

/// NEW_SERVICE: the spec's service (its mark, or TCP on its VIP and port when the mark is
/// 0), without destinations.
pub(crate) fn new_service_request(spec: &ServiceSpec) -> IpvsMessage {
    with_service(IpvsCmd::NewService, service_full(spec), None)
}

/// SET_SERVICE: the spec's scheduler and persistence for an existing service.
pub(crate) fn set_service_request(spec: &ServiceSpec) -> IpvsMessage {
    with_service(IpvsCmd::SetService, service_full(spec), None)
}

/// DEL_SERVICE for `service`.
pub(crate) fn del_service_request(service: impl Into<ServiceRef>) -> IpvsMessage {
    with_service(IpvsCmd::DelService, service_id(service.into()), None)
}

/// DEL_SERVICE for an address service of any protocol.
pub(crate) fn del_service_request_proto(protocol: u16, addr: SocketAddr) -> IpvsMessage {
    with_service(IpvsCmd::DelService, address_service_id(protocol, addr), None)
}

/// GET_SERVICE, sent as a dump: no attributes.
pub(crate) fn get_services_request() -> IpvsMessage {
    IpvsMessage { cmd: IpvsCmd::GetService, attrs: Vec::new() }
}

/// GET_DEST, sent as a dump: the service whose destinations to list.
pub(crate) fn get_dests_request(service: impl Into<ServiceRef>) -> IpvsMessage {
    with_service(IpvsCmd::GetDest, service_id(service.into()), None)
}

/// NEW_DEST: real server `rs` with `forwarding` in `service`.
pub(crate) fn new_dest_request(
    service: impl Into<ServiceRef>,
    rs: &RealServer,
    forwarding: LbKind,
) -> IpvsMessage {
    with_service(IpvsCmd::NewDest, service_id(service.into()), Some(dest_full(rs, forwarding)))
}

/// SET_DEST: new weight and forwarding of real server `rs` in `service`.
pub(crate) fn set_dest_request(
    service: impl Into<ServiceRef>,
    rs: &RealServer,
    forwarding: LbKind,
) -> IpvsMessage {
    with_service(IpvsCmd::SetDest, service_id(service.into()), Some(dest_full(rs, forwarding)))
}

/// DEL_DEST: remove real server `addr` from `service`.
pub(crate) fn del_dest_request(service: impl Into<ServiceRef>, addr: SocketAddr) -> IpvsMessage {
    let mut dest = dest_id(addr);
    dest.push(DestAttr::AddrFamily(family(addr.ip())));
    with_service(IpvsCmd::DelDest, service_id(service.into()), Some(dest))
}

// ---------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------

fn malformed(what: impl Into<String>) -> IpvsError {
    IpvsError::Malformed { what: what.into() }
}

/// The first value of the attributes' `$variant`, if any.
macro_rules! find {
    ($attrs:expr, $variant:path) => {
        $attrs.iter().find_map(|a| match a {
            $variant(v) => Some(v),
            _ => None,
        })
    };
}

/// The service attributes of a message (its first IPVS_CMD_ATTR_SERVICE).
pub(crate) fn service_attrs(msg: &IpvsMessage) -> Option<&[ServiceAttr]> {
    find!(msg.attrs, IpvsAttr::Service).map(Vec::as_slice)
}

/// The destination attributes of a message (its first IPVS_CMD_ATTR_DEST).
pub(crate) fn dest_attrs(msg: &IpvsMessage) -> Option<&[DestAttr]> {
    find!(msg.attrs, IpvsAttr::Dest).map(Vec::as_slice)
}

fn required<T: Copy>(value: Option<&T>, what: &str) -> Result<T, IpvsError> {
    value.copied().ok_or_else(|| malformed(format!("{what} missing")))
}

/// An address of family `af`: the kernel sends the whole 16-byte union, with an IPv4
/// address in its first four bytes; requests carry 4 bytes. Both are accepted.
pub(crate) fn address(value: Option<&Vec<u8>>, af: u16, what: &str) -> Result<IpAddr, IpvsError> {
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
                .as_slice()
                .try_into()
                .map_err(|_| malformed(format!("{what}: {} bytes for IPv6", value.len())))?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
        other => Err(malformed(format!("{what}: unknown address family {other}"))),
    }
}

impl KernelService {
    /// A service from its attributes (a GET_SERVICE reply's, or a NEW_SERVICE request's).
    /// Statistics and unknown attributes are skipped.
    pub(crate) fn from_attrs(attrs: &[ServiceAttr]) -> Result<Self, IpvsError> {
        let af = required(find!(attrs, ServiceAttr::Af), "service family")?;
        if af != AF_INET && af != AF_INET6 {
            return Err(malformed(format!("service: unknown address family {af}")));
        }
        let fwmark = find!(attrs, ServiceAttr::Fwmark).copied().unwrap_or(0);
        let (protocol, addr) = if fwmark != 0 {
            (0, None)
        } else {
            let protocol = required(find!(attrs, ServiceAttr::Protocol), "service protocol")?;
            let ip = address(find!(attrs, ServiceAttr::Addr), af, "service address")?;
            let port = required(find!(attrs, ServiceAttr::Port), "service port")?;
            (protocol, Some(SocketAddr::new(ip, port)))
        };
        let sched_name = find!(attrs, ServiceAttr::SchedName)
            .ok_or_else(|| malformed("service scheduler name missing"))?
            .clone();
        let flags = attrs
            .iter()
            .find_map(|a| match a {
                ServiceAttr::Flags { flags, .. } => Some(*flags),
                _ => None,
            })
            .ok_or_else(|| malformed("service flags missing"))?;
        let timeout = required(find!(attrs, ServiceAttr::Timeout), "service timeout")?;
        Ok(Self { af, protocol, addr, fwmark, sched_name, flags, timeout })
    }

    /// Decodes one GET_SERVICE reply (the kernel answers with command NEW_SERVICE).
    pub(crate) fn from_reply(msg: &IpvsMessage) -> Result<Self, IpvsError> {
        let what = "GET_SERVICE reply";
        expect_cmd(msg, IpvsCmd::NewService, what)?;
        let attrs = service_attrs(msg).ok_or_else(|| malformed(format!("{what}: no service")))?;
        Self::from_attrs(attrs).map_err(|e| context(e, what))
    }
}

impl KernelDest {
    /// A destination from its attributes; `service_af` is the family of the service, which
    /// kernels without IPVS_DEST_ATTR_ADDR_FAMILY imply.
    pub(crate) fn from_attrs(attrs: &[DestAttr], service_af: u16) -> Result<Self, IpvsError> {
        let af = find!(attrs, DestAttr::AddrFamily).copied().unwrap_or(service_af);
        let ip = address(find!(attrs, DestAttr::Addr), af, "destination address")?;
        let port = required(find!(attrs, DestAttr::Port), "destination port")?;
        let fwd_method = required(find!(attrs, DestAttr::FwdMethod), "forwarding method")?;
        let weight = required(find!(attrs, DestAttr::Weight), "destination weight")?;
        Ok(Self { addr: SocketAddr::new(ip, port), fwd_method, weight })
    }

    /// Decodes one GET_DEST reply (command NEW_DEST).
    pub(crate) fn from_reply(msg: &IpvsMessage, service_af: u16) -> Result<Self, IpvsError> {
        let what = "GET_DEST reply";
        expect_cmd(msg, IpvsCmd::NewDest, what)?;
        let attrs = dest_attrs(msg).ok_or_else(|| malformed(format!("{what}: no destination")))?;
        Self::from_attrs(attrs, service_af).map_err(|e| context(e, what))
    }
}

fn expect_cmd(msg: &IpvsMessage, cmd: IpvsCmd, what: &str) -> Result<(), IpvsError> {
    if msg.cmd == cmd {
        return Ok(());
    }
    let (got, want) = (u8::from(msg.cmd), u8::from(cmd));
    Err(malformed(format!("{what}: command {got}, expected {want}")))
}

/// `error` with `what` in front when it is a decoding error.
fn context(error: IpvsError, what: &str) -> IpvsError {
    match error {
        IpvsError::Malformed { what: inner } => malformed(format!("{what}: {inner}")),
        other => other,
    }
}

//! The attributes of an IPVS generic netlink message, as `netlink_packet_core` [`Nla`]s:
//! the top level (`IPVS_CMD_ATTR_*`), a service nested in it (`IPVS_SVC_ATTR_*`) and a
//! destination (`IPVS_DEST_ATTR_*`), numbered as in `include/uapi/linux/ip_vs.h`.
//!
//! Each attribute is emitted and parsed in the byte order the kernel uses for it
//! (`net/netfilter/ipvs/ip_vs_ctl.c`):
//! - ports (`nla_get_be16` / `nla_put_be16`) and addresses (`nla_memcpy` into
//!   `union nf_inet_addr`) are in network order;
//! - the netmask is a `__be32` read with `nla_get_be32`: the IPv4 mask in network order, but
//!   for IPv6 the kernel casts it to a host `u32` and takes it as a prefix length
//!   (`ip_vs_add_service`), so it is kept here as the four bytes the caller lays out;
//! - every other integer (`AF`, `PROTOCOL`, `FWMARK`, `TIMEOUT`, `FLAGS`, `FWD_METHOD`,
//!   `WEIGHT`, thresholds, `ADDR_FAMILY`) is `nla_get_u16` / `nla_get_u32`: host order.
//!
//! An address is kept as its bytes: which family they are is another attribute's to say
//! (the service's `AF`, the destination's `ADDR_FAMILY`), so it is read where both are at
//! hand ([`super::message`]). Attributes this driver does not read (statistics, connection
//! counts, tunnel settings) are kept whole as [`DefaultNla`]s.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator,
    Parseable, emit_u16, emit_u16_be, emit_u32, parse_u16, parse_u16_be, parse_u32,
};

// First-level attributes (IPVS_CMD_ATTR_*).
/// Nested service attributes.
pub(crate) const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// Nested destination attributes.
pub(crate) const IPVS_CMD_ATTR_DEST: u16 = 2;

// Service attributes, nested in IPVS_CMD_ATTR_SERVICE (IPVS_SVC_ATTR_*).
const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;

// Destination attributes, nested in IPVS_CMD_ATTR_DEST (IPVS_DEST_ATTR_*).
const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

/// A first-level attribute of an IPVS message (`IPVS_CMD_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE`: a service, whole or only what identifies it.
    Service(Vec<ServiceAttr>),
    /// `IPVS_CMD_ATTR_DEST`: a destination (real server) of the message's service.
    Dest(Vec<DestAttr>),
    /// Anything else (the daemon, timeout and info attributes), kept as it came.
    Other(DefaultNla),
}

/// A service attribute (`IPVS_SVC_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceAttr {
    /// `AF`: AF_INET or AF_INET6 (u16, host order).
    Af(u16),
    /// `PROTOCOL`: IPPROTO_* of an address service (u16, host order).
    Protocol(u16),
    /// `ADDR`: the VIP's bytes, network order; the kernel replies with all 16 bytes of the
    /// union, an IPv4 address in the first four.
    Addr(Vec<u8>),
    /// `PORT` (u16, network order).
    Port(u16),
    /// `FWMARK` (u32, host order); a fwmark service has no protocol, address or port.
    Fwmark(u32),
    /// `SCHED_NAME`: the scheduler module's name, sent NUL-terminated (at most
    /// IP_VS_SCHEDNAME_MAXLEN - 1 = 15 bytes).
    SchedName(String),
    /// `FLAGS`: `struct ip_vs_flags { __u32 flags; __u32 mask; }`, host order.
    Flags {
        /// IP_VS_SVC_F_* bits.
        flags: u32,
        /// Which bits of `flags` the kernel is to take.
        mask: u32,
    },
    /// `TIMEOUT`: persistence timeout in seconds (u32, host order).
    Timeout(u32),
    /// `NETMASK`: a `__be32`, see the module comment.
    Netmask([u8; 4]),
    /// Anything else (statistics, the persistence engine), kept as it came.
    Other(DefaultNla),
}

/// A destination attribute (`IPVS_DEST_ATTR_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DestAttr {
    /// `ADDR`: the real server's bytes, network order (16 in the kernel's replies).
    Addr(Vec<u8>),
    /// `PORT` (u16, network order).
    Port(u16),
    /// `FWD_METHOD`: IP_VS_CONN_F_* (u32, host order).
    FwdMethod(u32),
    /// `WEIGHT` (u32, host order; the kernel's `int`, refused when negative).
    Weight(u32),
    /// `U_THRESH`: upper connection threshold, 0 for none (u32, host order). Required by
    /// NEW_DEST and SET_DEST.
    UpperThreshold(u32),
    /// `L_THRESH`: lower connection threshold (u32, host order). Required by NEW_DEST and
    /// SET_DEST.
    LowerThreshold(u32),
    /// `ADDR_FAMILY`: the destination's own family (u16, host order); older kernels
    /// neither send nor read it and take the service's.
    AddrFamily(u16),
    /// Anything else (connection counts, statistics, tunnel settings), kept as it came.
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Service(attrs) => attrs.as_slice().buffer_len(),
            Self::Dest(attrs) => attrs.as_slice().buffer_len(),
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        // The nests carry NLA_F_NESTED, as strict validation wants; the kernel's replies
        // come without it, and parsing masks it off.
        match self {
            Self::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            Self::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Service(attrs) => attrs.as_slice().emit(buffer),
            Self::Dest(attrs) => attrs.as_slice().emit(buffer),
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for IpvsAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => {
                Self::Service(parse_nested(value).context("IPVS_CMD_ATTR_SERVICE")?)
            }
            IPVS_CMD_ATTR_DEST => Self::Dest(parse_nested(value).context("IPVS_CMD_ATTR_DEST")?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The attributes nested in `value`: they must tile it, so garbage is an error rather than
/// half read.
pub(crate) fn parse_nested<A>(value: &[u8]) -> Result<Vec<A>, DecodeError>
where
    A: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(value).map(|nla| A::parse(&nla?)).collect()
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Af(_) | Self::Protocol(_) | Self::Port(_) => 2,
            Self::Fwmark(_) | Self::Timeout(_) | Self::Netmask(_) => 4,
            Self::Flags { .. } => 8,
            Self::Addr(bytes) => bytes.len(),
            // The terminating NUL.
            Self::SchedName(name) => name.len() + 1,
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Af(_) => IPVS_SVC_ATTR_AF,
            Self::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Self::Addr(_) => IPVS_SVC_ATTR_ADDR,
            Self::Port(_) => IPVS_SVC_ATTR_PORT,
            Self::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            Self::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Self::Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            Self::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Self::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        // `buffer` is exactly `value_len()` bytes (netlink_packet_core's `Emitable` for
        // `Nla`), so the fixed-size writes below cannot fail.
        match self {
            Self::Af(v) | Self::Protocol(v) => {
                let _ = emit_u16(buffer, *v);
            }
            Self::Port(v) => {
                let _ = emit_u16_be(buffer, *v);
            }
            Self::Fwmark(v) | Self::Timeout(v) => {
                let _ = emit_u32(buffer, *v);
            }
            Self::Flags { flags, mask } => {
                let (f, m) = buffer.split_at_mut(4);
                let _ = emit_u32(f, *flags);
                let _ = emit_u32(m, *mask);
            }
            Self::Netmask(bytes) => buffer.copy_from_slice(bytes),
            Self::Addr(bytes) => buffer.copy_from_slice(bytes),
            Self::SchedName(name) => {
                let (text, nul) = buffer.split_at_mut(name.len());
                text.copy_from_slice(name.as_bytes());
                nul.fill(0);
            }
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => Self::Af(parse_u16(value).context("IPVS_SVC_ATTR_AF")?),
            IPVS_SVC_ATTR_PROTOCOL => {
                Self::Protocol(parse_u16(value).context("IPVS_SVC_ATTR_PROTOCOL")?)
            }
            IPVS_SVC_ATTR_ADDR => Self::Addr(value.to_vec()),
            IPVS_SVC_ATTR_PORT => Self::Port(parse_u16_be(value).context("IPVS_SVC_ATTR_PORT")?),
            IPVS_SVC_ATTR_FWMARK => Self::Fwmark(parse_u32(value).context("IPVS_SVC_ATTR_FWMARK")?),
            IPVS_SVC_ATTR_SCHED_NAME => {
                // NUL-terminated; what follows the first NUL is padding.
                let name = value.split(|b| *b == 0).next().unwrap_or_default();
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| DecodeError::from("IPVS_SVC_ATTR_SCHED_NAME is not UTF-8"))?;
                Self::SchedName(name)
            }
            IPVS_SVC_ATTR_FLAGS => {
                if value.len() != 8 {
                    return Err(DecodeError::from(format!(
                        "IPVS_SVC_ATTR_FLAGS: {} bytes, not 8",
                        value.len()
                    )));
                }
                let (flags, mask) = value.split_at(4);
                Self::Flags { flags: parse_u32(flags)?, mask: parse_u32(mask)? }
            }
            IPVS_SVC_ATTR_TIMEOUT => {
                Self::Timeout(parse_u32(value).context("IPVS_SVC_ATTR_TIMEOUT")?)
            }
            IPVS_SVC_ATTR_NETMASK => Self::Netmask(value.try_into().map_err(|_| {
                DecodeError::from(format!("IPVS_SVC_ATTR_NETMASK: {} bytes, not 4", value.len()))
            })?),
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Port(_) | Self::AddrFamily(_) => 2,
            Self::FwdMethod(_)
            | Self::Weight(_)
            | Self::UpperThreshold(_)
            | Self::LowerThreshold(_) => 4,
            Self::Addr(bytes) => bytes.len(),
            Self::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Addr(_) => IPVS_DEST_ATTR_ADDR,
            Self::Port(_) => IPVS_DEST_ATTR_PORT,
            Self::FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Self::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            Self::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            Self::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            Self::AddrFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Self::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        // `buffer` is exactly `value_len()` bytes: see `ServiceAttr::emit_value`.
        match self {
            Self::Addr(bytes) => buffer.copy_from_slice(bytes),
            Self::Port(v) => {
                let _ = emit_u16_be(buffer, *v);
            }
            Self::AddrFamily(v) => {
                let _ = emit_u16(buffer, *v);
            }
            Self::FwdMethod(v)
            | Self::Weight(v)
            | Self::UpperThreshold(v)
            | Self::LowerThreshold(v) => {
                let _ = emit_u32(buffer, *v);
            }
            Self::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => Self::Addr(value.to_vec()),
            IPVS_DEST_ATTR_PORT => Self::Port(parse_u16_be(value).context("IPVS_DEST_ATTR_PORT")?),
            IPVS_DEST_ATTR_FWD_METHOD => {
                Self::FwdMethod(parse_u32(value).context("IPVS_DEST_ATTR_FWD_METHOD")?)
            }
            IPVS_DEST_ATTR_WEIGHT => {
                Self::Weight(parse_u32(value).context("IPVS_DEST_ATTR_WEIGHT")?)
            }
            IPVS_DEST_ATTR_U_THRESH => {
                Self::UpperThreshold(parse_u32(value).context("IPVS_DEST_ATTR_U_THRESH")?)
            }
            IPVS_DEST_ATTR_L_THRESH => {
                Self::LowerThreshold(parse_u32(value).context("IPVS_DEST_ATTR_L_THRESH")?)
            }
            IPVS_DEST_ATTR_ADDR_FAMILY => {
                Self::AddrFamily(parse_u16(value).context("IPVS_DEST_ATTR_ADDR_FAMILY")?)
            }
            _ => Self::Other(DefaultNla::parse(buf)?),
        })
    }
}

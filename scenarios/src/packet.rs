//! `cplb packet decode` and `cplb packet encode`: the codec at the command line.

use std::net::IpAddr;

use cplb_core::vrrp::{
    self, Advertisement, AuthPass, Authentication, ChecksumForm, DecodeError, EncodeError,
    IpHeader, IpParams, Priority, ReceiveRules, Received, V3Ipv4Checksum, Version,
    VirtualAddresses, Vrid,
};
use serde::Serialize;

use crate::hex_input::{self, HexError};

/// What went wrong, as one line for stderr.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// The input text is not hex.
    #[error("{0}")]
    Hex(#[from] HexError),
    /// The packet breaks a rule.
    #[error("{}: {}", .0.reason(), .0)]
    Decode(#[from] DecodeError),
    /// The requested advertisement cannot be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// An option value that makes no sense.
    #[error("{0}")]
    Usage(String),
}

/// How the input bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// A whole IP packet; an Ethernet frame carrying one is recognised too.
    #[default]
    Ip,
    /// An Ethernet frame.
    Ethernet,
    /// The VRRP message alone.
    Payload,
}

/// Options of `cplb packet decode`.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// How the bytes are framed.
    pub framing: Framing,
    /// Payload mode: the IP source, for the pseudo-header checksum forms.
    pub src: Option<IpAddr>,
    /// Payload mode: the IP destination.
    pub dst: Option<IpAddr>,
    /// The receive rules: unicast peers, accepted checksum forms, IPv6 first address.
    pub rules: ReceiveRules,
    /// Report a bad checksum in the output instead of failing.
    pub ignore_checksum: bool,
}

/// The JSON object printed by `cplb packet decode`. Field names are a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodeReport {
    /// 4 or 6.
    pub ip_version: u8,
    /// IP source (null for a bare payload without `--src`).
    pub src: Option<IpAddr>,
    /// IP destination (null for a bare payload without `--dst`).
    pub dst: Option<IpAddr>,
    /// TTL or hop limit (null for a bare payload).
    pub ttl: Option<u8>,
    /// VRRP version.
    pub version: u8,
    /// VRRP type (1, advertisement).
    #[serde(rename = "type")]
    pub kind: u8,
    /// Virtual router ID.
    pub vrid: u8,
    /// Priority.
    pub priority: u8,
    /// Address count.
    pub count: u8,
    /// Interval in centiseconds (v2: seconds × 100).
    pub advert_interval_cs: u16,
    /// `none` or `simple`.
    pub auth_type: &'static str,
    /// v2 simple-text password, trailing NULs removed; null otherwise.
    pub auth_data: Option<String>,
    /// Whether the checksum verified (false only with `--ignore-checksum`).
    pub checksum_ok: bool,
    /// `v2`, `rfc9568`, `pseudo-header` or `ipv6`.
    pub checksum_form: &'static str,
    /// The virtual addresses, in wire order.
    pub addresses: Vec<IpAddr>,
    /// The checksum field as sent, `0x`-prefixed.
    pub checksum: String,
}

/// Decodes the hex text of a packet.
pub fn decode(text: &str, opts: &DecodeOptions) -> Result<DecodeReport, PacketError> {
    let bytes = hex_input::parse(text)?;
    decode_bytes(&bytes, opts)
}

/// Decodes packet bytes.
pub fn decode_bytes(bytes: &[u8], opts: &DecodeOptions) -> Result<DecodeReport, PacketError> {
    let rules = &opts.rules;
    match opts.framing {
        Framing::Payload => decode_payload(bytes, opts, rules),
        Framing::Ethernet => {
            let ip = hex_input::ip_in_ethernet(bytes).ok_or_else(|| {
                PacketError::Usage("not an Ethernet frame carrying IPv4 or IPv6".into())
            })?;
            decode_ip(&ip, opts, rules)
        }
        Framing::Ip => match decode_ip(bytes, opts, rules) {
            // A pasted `tcpdump -XX` dump starts at the Ethernet header: accept it when the
            // bytes only make sense that way.
            Err(PacketError::Decode(e)) => match hex_input::ip_in_ethernet(bytes) {
                Some(ip) if vrrp::parse_ip(&ip).is_ok() => decode_ip(&ip, opts, rules),
                _ => Err(PacketError::Decode(e)),
            },
            other => other,
        },
    }
}

fn decode_ip(
    bytes: &[u8],
    opts: &DecodeOptions,
    rules: &ReceiveRules,
) -> Result<DecodeReport, PacketError> {
    let (header, message) = vrrp::parse_ip(bytes)?;
    let (received, ok): (Received, bool) =
        with_checksum_override(message, opts, |m| vrrp::decode_received(header, m, rules))?;
    Ok(report(&received.advertisement, received.checksum_form, Some(header), ok, message))
}

fn decode_payload(
    bytes: &[u8],
    opts: &DecodeOptions,
    rules: &ReceiveRules,
) -> Result<DecodeReport, PacketError> {
    match (opts.src, opts.dst) {
        (Some(src), Some(dst)) => {
            let ((advert, form), ok) =
                with_checksum_override(bytes, opts, |m| Advertisement::decode(m, src, dst, rules))?;
            let header = IpHeader { src, dst, ttl: vrrp::TTL };
            // The TTL of a bare payload is unknown.
            Ok(DecodeReport { ttl: None, ..report(&advert, form, Some(header), ok, bytes) })
        }
        (None, None) => {
            let ((advert, form), ok) =
                with_checksum_override(bytes, opts, Advertisement::decode_detached)?;
            Ok(report(&advert, form, None, ok, bytes))
        }
        _ => Err(PacketError::Usage("--src and --dst go together".into())),
    }
}

/// Runs `decode`; with `--ignore-checksum`, a bad checksum is patched to the expected value
/// and the packet decoded again, so its fields can still be shown.
fn with_checksum_override<T>(
    message: &[u8],
    opts: &DecodeOptions,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> Result<(T, bool), PacketError> {
    match decode(message) {
        Ok(v) => Ok((v, true)),
        Err(DecodeError::BadChecksum { expected, .. }) if opts.ignore_checksum => {
            let mut patched = message.to_vec();
            if let Some(field) = patched.get_mut(6..8) {
                field.copy_from_slice(&expected.to_be_bytes());
            }
            Ok((decode(&patched)?, false))
        }
        Err(e) => Err(e.into()),
    }
}

fn report(
    advert: &Advertisement,
    form: ChecksumForm,
    header: Option<IpHeader>,
    checksum_ok: bool,
    message: &[u8],
) -> DecodeReport {
    // v2 carries 8 bytes of authentication data whatever the type (zero for type 0, which
    // receivers ignore); they are shown as sent, trailing NULs removed. v3 has none.
    let auth_data = (advert.version == Version::V2).then(|| {
        let tail = message.get(message.len().saturating_sub(8)..).unwrap_or_default();
        let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        String::from_utf8_lossy(tail.get(..end).unwrap_or_default()).into_owned()
    });
    let checksum = checksum_field(message);
    DecodeReport {
        ip_version: advert.addresses.family(),
        src: header.map(|h| h.src),
        dst: header.map(|h| h.dst),
        ttl: header.map(|h| h.ttl),
        version: advert.version.number(),
        kind: 1,
        vrid: advert.vrid.get(),
        priority: advert.priority.0,
        count: u8::try_from(advert.addresses.len()).unwrap_or(u8::MAX),
        advert_interval_cs: advert.interval_cs,
        auth_type: match advert.auth {
            Authentication::None => "none",
            Authentication::SimpleText(_) => "simple",
        },
        auth_data,
        checksum_ok,
        checksum_form: form.as_str(),
        addresses: advert.addresses.iter().collect(),
        checksum: format!("{checksum:#06x}"),
    }
}

fn checksum_field(message: &[u8]) -> u16 {
    message.get(6..8).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// Options of `cplb packet encode`.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// Virtual router ID.
    pub vrid: u8,
    /// Priority.
    pub priority: u8,
    /// Interval in centiseconds.
    pub advert_interval_cs: u16,
    /// `none` or `simple`.
    pub auth_type: Option<String>,
    /// The simple-text password.
    pub auth_data: Option<String>,
    /// Virtual addresses.
    pub addresses: Vec<IpAddr>,
    /// IP source.
    pub src: IpAddr,
    /// IP destination; the group by default.
    pub dst: Option<IpAddr>,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 identification.
    pub identification: u16,
    /// The checksum form for VRRPv3 over IPv4 (`rfc9568` or `pseudo-header`).
    pub checksum_form: Option<String>,
    /// Print only the VRRP message.
    pub payload: bool,
}

/// Encodes a packet and returns its lowercase hex.
pub fn encode(opts: &EncodeOptions) -> Result<String, PacketError> {
    let version = match opts.version {
        2 => Version::V2,
        3 => Version::V3,
        v => {
            return Err(PacketError::Usage(format!("--version {v}: VRRP versions are 2 and 3")));
        }
    };
    let vrid = Vrid::new(opts.vrid).ok_or(EncodeError::ZeroVrid)?;
    let auth = match (opts.auth_type.as_deref(), opts.auth_data.as_deref()) {
        (None | Some("none"), None) => Authentication::None,
        (Some("none"), Some(_)) => {
            return Err(PacketError::Usage("--auth-data needs --auth-type simple".into()));
        }
        (None | Some("simple"), Some(pass)) => {
            Authentication::SimpleText(AuthPass::new(pass.as_bytes()).ok_or_else(|| {
                PacketError::Usage(format!(
                    "--auth-data {pass:?} is {} bytes: at most 8",
                    pass.len()
                ))
            })?)
        }
        (Some("simple"), None) => {
            return Err(PacketError::Usage("--auth-type simple needs --auth-data".into()));
        }
        (Some(other), _) => {
            return Err(PacketError::Usage(format!(
                "--auth-type {other:?}: expected none or simple"
            )));
        }
    };
    let addresses = VirtualAddresses::from_ips(&opts.addresses).ok_or_else(|| {
        PacketError::Usage("--address mixes IPv4 and IPv6: one family per advertisement".into())
    })?;
    let v3_ipv4 = match opts.checksum_form.as_deref() {
        None | Some("rfc9568") => V3Ipv4Checksum::Rfc9568,
        Some("pseudo-header") => V3Ipv4Checksum::PseudoHeader,
        // The single-form families accept their own name, so scripts can pass it through.
        Some("v2") if version == Version::V2 => V3Ipv4Checksum::Rfc9568,
        Some("ipv6") if opts.src.is_ipv6() => V3Ipv4Checksum::Rfc9568,
        Some(other) => {
            return Err(PacketError::Usage(format!(
                "--checksum-form {other:?} does not apply: VRRPv3 over IPv4 takes rfc9568 or pseudo-header"
            )));
        }
    };
    let advert = Advertisement {
        version,
        vrid,
        priority: Priority(opts.priority),
        interval_cs: opts.advert_interval_cs,
        auth,
        addresses,
    };
    let dst = opts.dst.unwrap_or_else(|| vrrp::group_for(opts.src));
    let bytes = if opts.payload {
        advert.encode(opts.src, dst, v3_ipv4)?
    } else {
        let ip = IpParams {
            src: opts.src,
            dst,
            ttl: opts.ttl,
            tos: opts.tos,
            identification: opts.identification,
        };
        vrrp::encode_packet(&advert, &ip, v3_ipv4)?
    };
    Ok(hex::encode(bytes))
}

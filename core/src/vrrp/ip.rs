//! The IP layer under VRRP: the header fields the receive rules check, and whole packets.
//!
//! A raw IPv4 socket hands the daemon the IP header with the message; a raw IPv6 socket
//! hands only the payload, with the hop limit and addresses from ancillary data. Both end in
//! [`decode_received`]; a captured packet goes through [`decode_packet`] first.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{self, Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};

use super::advertisement::Advertisement;
use super::checksum::{ChecksumForm, V3Ipv4Checksum};
use super::error::{DecodeError, EncodeError};
use super::rules::ReceiveRules;

/// The IPv4 VRRP multicast group (RFC 9568 §5.1.1.2).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 VRRP multicast group (RFC 9568 §5.1.2.2).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The TTL / hop limit VRRP sends and requires (RFC 9568 §5.1.1.3, §7.1).
pub const TTL: u8 = 255;

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
/// IPv6 extension headers that may stand before VRRP: hop-by-hop and destination options.
const IPV6_SKIPPABLE: [u8; 2] = [0, 60];
/// Bound on extension headers walked, so a hostile chain cannot make decoding slow.
const IPV6_MAX_EXTENSIONS: usize = 8;

/// The multicast group for the family of `addr`.
pub fn group_for(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => IpAddr::V4(GROUP_V4),
        IpAddr::V6(_) => IpAddr::V6(GROUP_V6),
    }
}

/// What the receive rules need from the IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpHeader {
    /// Source address: the sender's primary address, the tie-breaker in RFC 9568 §6.4.3.
    pub src: IpAddr,
    /// Destination address: the group, or this node for unicast VRRP.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
}

/// An advertisement that passed every receive check, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The IP header fields.
    pub header: IpHeader,
    /// The decoded message.
    pub advertisement: Advertisement,
    /// The checksum form the sender used.
    pub checksum_form: ChecksumForm,
}

/// Decodes a whole IPv4 or IPv6 packet carrying VRRP and applies every receive rule.
///
/// Structural checks come first (lengths, IP version, IPv4 header checksum, fragments,
/// protocol 112), then [`decode_received`]'s. Bytes after the IP packet's stated length
/// (Ethernet padding) are ignored.
pub fn decode_packet(bytes: &[u8], rules: &ReceiveRules) -> Result<Received, DecodeError> {
    let (header, payload) = parse_ip(bytes)?;
    decode_received(header, payload, rules)
}

/// Applies the IP-level rules (TTL/hop limit 255, destination) and decodes the message.
pub fn decode_received(
    header: IpHeader,
    message: &[u8],
    rules: &ReceiveRules,
) -> Result<Received, DecodeError> {
    check_ip_rules(&header, rules)?;
    let (advertisement, checksum_form) =
        Advertisement::decode(message, header.src, header.dst, rules)?;
    Ok(Received { header, advertisement, checksum_form })
}

/// The IP-level receive rules of RFC 3768 §7.1 and RFC 9568 §7.1 and §5.1.
pub fn check_ip_rules(header: &IpHeader, rules: &ReceiveRules) -> Result<(), DecodeError> {
    let (src, dst) = (header.src, header.dst);
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(DecodeError::MixedFamilies { src, dst });
    }
    let from_peer = !dst.is_multicast()
        && (rules.unicast_peers.contains(&src) || rules.unicast_peers.contains(&dst));
    if header.ttl != TTL && !(rules.unicast_any_ttl && from_peer) {
        let field = if src.is_ipv4() { "TTL" } else { "hop limit" };
        return Err(DecodeError::TtlNot255 { field, value: header.ttl });
    }
    let group = group_for(dst);
    let unicast_ok = !dst.is_multicast()
        && (rules.unicast_peers.contains(&src) || rules.unicast_peers.contains(&dst));
    if dst != group && !unicast_ok {
        return Err(DecodeError::BadDestination { dst, group });
    }
    Ok(())
}

/// Splits an IP packet into the header fields and the VRRP message.
pub fn parse_ip(bytes: &[u8]) -> Result<(IpHeader, &[u8]), DecodeError> {
    match bytes.first().map(|b| b >> 4) {
        None => Err(DecodeError::Truncated { what: "IP header", need: 1, have: 0 }),
        Some(4) => parse_ipv4(bytes),
        Some(6) => parse_ipv6(bytes),
        Some(other) => Err(DecodeError::BadIpVersion(other)),
    }
}

fn parse_ipv4(bytes: &[u8]) -> Result<(IpHeader, &[u8]), DecodeError> {
    let truncated = |need| DecodeError::Truncated { what: "IPv4 packet", need, have: bytes.len() };
    let packet = Ipv4Packet::new(bytes).ok_or(truncated(IPV4_MIN_HEADER))?;
    let ihl = packet.get_header_length();
    let header_len = usize::from(ihl) * 4;
    if header_len < IPV4_MIN_HEADER {
        return Err(DecodeError::BadIpHeaderLength(ihl));
    }
    if bytes.len() < header_len {
        return Err(truncated(header_len));
    }
    let found = packet.get_checksum();
    let expected = ipv4::checksum(&packet);
    if found != expected {
        return Err(DecodeError::BadIpHeaderChecksum { found, expected });
    }
    let total = usize::from(packet.get_total_length());
    if total < header_len {
        return Err(DecodeError::Truncated {
            what: "IPv4 total length",
            need: header_len,
            have: total,
        });
    }
    let payload = bytes.get(header_len..total).ok_or(truncated(total))?;
    // MF flag (bit 0 of the 3-bit flags) or a non-zero offset: a fragment.
    if packet.get_flags() & 0b001 != 0 || packet.get_fragment_offset() != 0 {
        return Err(DecodeError::Fragmented);
    }
    let protocol = packet.get_next_level_protocol().0;
    if protocol != PROTOCOL {
        return Err(DecodeError::NotVrrp(protocol));
    }
    let header = IpHeader {
        src: IpAddr::V4(packet.get_source()),
        dst: IpAddr::V4(packet.get_destination()),
        ttl: packet.get_ttl(),
    };
    Ok((header, payload))
}

fn parse_ipv6(bytes: &[u8]) -> Result<(IpHeader, &[u8]), DecodeError> {
    let packet = Ipv6Packet::new(bytes).ok_or(DecodeError::Truncated {
        what: "IPv6 header",
        need: IPV6_HEADER,
        have: bytes.len(),
    })?;
    let total = IPV6_HEADER + usize::from(packet.get_payload_length());
    let mut payload = bytes.get(IPV6_HEADER..total).ok_or(DecodeError::Truncated {
        what: "IPv6 packet",
        need: total,
        have: bytes.len(),
    })?;
    let mut next = packet.get_next_header().0;
    for _ in 0..IPV6_MAX_EXTENSIONS {
        if !IPV6_SKIPPABLE.contains(&next) {
            break;
        }
        let &[following, len_units, ..] = payload else {
            return Err(DecodeError::Truncated {
                what: "IPv6 extension header",
                need: 8,
                have: payload.len(),
            });
        };
        let len = (usize::from(len_units) + 1) * 8;
        payload = payload.get(len..).ok_or(DecodeError::Truncated {
            what: "IPv6 extension header",
            need: len,
            have: payload.len(),
        })?;
        next = following;
    }
    if next != PROTOCOL {
        return Err(DecodeError::NotVrrp(next));
    }
    let header = IpHeader {
        src: IpAddr::V6(packet.get_source()),
        dst: IpAddr::V6(packet.get_destination()),
        ttl: packet.get_hop_limit(),
    };
    Ok((header, payload))
}

/// IP header fields chosen by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpParams {
    /// Source: the interface's primary IPv4 address, or its IPv6 link-local address.
    pub src: IpAddr,
    /// Destination: the group, or a unicast peer.
    pub dst: IpAddr,
    /// TTL / hop limit; 255 unless testing receivers.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class; 0xc0 (network control) as keepalived sends.
    pub tos: u8,
    /// IPv4 identification; ignored for IPv6.
    pub identification: u16,
}

impl IpParams {
    /// The usual header for sending from `src` to `dst`.
    pub fn new(src: IpAddr, dst: IpAddr) -> Self {
        Self { src, dst, ttl: TTL, tos: 0xc0, identification: 0 }
    }
}

/// Encodes a whole IP packet carrying `advert`.
pub fn encode_packet(
    advert: &Advertisement,
    ip: &IpParams,
    v3_ipv4: V3Ipv4Checksum,
) -> Result<Vec<u8>, EncodeError> {
    let message = advert.encode(ip.src, ip.dst, v3_ipv4)?;
    wrap_message(&message, ip)
}

/// Puts an IP header (`ip`) in front of an encoded VRRP message, as drivers that send
/// whole packets (IPv4 `IP_HDRINCL`) need for what [`Transmit`](super::Transmit) carries.
pub fn wrap_message(message: &[u8], ip: &IpParams) -> Result<Vec<u8>, EncodeError> {
    let header_len = if ip.src.is_ipv4() { IPV4_MIN_HEADER } else { IPV6_HEADER };
    let mut out = vec![0; header_len + message.len()];
    out.get_mut(header_len..).unwrap_or_default().copy_from_slice(message);
    // The message is at most 8 + 255 × 16 bytes, so the lengths below fit in u16.
    let payload_len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    match (ip.src, ip.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            if let Some(mut p) = MutableIpv4Packet::new(&mut out) {
                p.set_version(4);
                p.set_header_length(5);
                p.set_dscp(ip.tos >> 2);
                p.set_ecn(ip.tos & 0b11);
                p.set_total_length(payload_len + 20);
                p.set_identification(ip.identification);
                p.set_ttl(ip.ttl);
                p.set_next_level_protocol(IpNextHeaderProtocols::Vrrp);
                p.set_source(src);
                p.set_destination(dst);
                let sum = ipv4::checksum(&p.to_immutable());
                p.set_checksum(sum);
            }
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            if let Some(mut p) = MutableIpv6Packet::new(&mut out) {
                p.set_version(6);
                p.set_traffic_class(ip.tos);
                p.set_payload_length(payload_len);
                p.set_next_header(IpNextHeaderProtocols::Vrrp);
                p.set_hop_limit(ip.ttl);
                p.set_source(src);
                p.set_destination(dst);
            }
        }
        // Advertisement::encode refused mixed families above.
        _ => {
            return Err(EncodeError::MixedFamilies { src: ip.src, dst: ip.dst });
        }
    }
    Ok(out)
}

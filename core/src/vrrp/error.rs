//! Why a packet was refused, or why an advertisement could not be encoded.

use core::net::{IpAddr, Ipv6Addr};

use super::checksum::ChecksumForm;

/// The first receive rule a packet breaks.
///
/// Every byte string either decodes or yields exactly one of these, named after the rule
/// (RFC 3768 §7.1, RFC 9568 §7.1 and its errata, and the IP header rules of §5.1). The
/// virtual router counts drops per [`DecodeError::reason`], like the RFCs' statistics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the structure named by `what` needs.
    #[error("{what} needs {need} bytes, only {have} present")]
    Truncated {
        /// The structure that was cut short.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The IP version nibble is neither 4 nor 6.
    #[error("bad IP version {0}: expected 4 or 6")]
    BadIpVersion(u8),
    /// The IPv4 header length field is below its minimum of 5 words.
    #[error("bad IPv4 header length {0} words: must be at least 5")]
    BadIpHeaderLength(u8),
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum {found:#06x}: expected {expected:#06x}")]
    BadIpHeaderChecksum {
        /// Checksum in the header.
        found: u16,
        /// Checksum computed over the header.
        expected: u16,
    },
    /// The packet is an IP fragment; VRRP messages are never fragmented.
    #[error("IP fragment (more-fragments flag or offset set): VRRP is never fragmented")]
    Fragmented,
    /// The IP protocol (or IPv6 next header, after extension headers) is not 112.
    #[error("IP protocol {0} is not VRRP (112)")]
    NotVrrp(u8),
    /// RFC 3768 §7.1 / RFC 9568 §7.1: the TTL or hop limit must be 255, which proves the
    /// sender is on the same link.
    #[error("{field} {value} is not 255 (RFC 9568 §7.1: the sender must be on-link)")]
    TtlNot255 {
        /// `TTL` for IPv4, `hop limit` for IPv6.
        field: &'static str,
        /// The value received.
        value: u8,
    },
    /// The destination is neither the VRRP multicast group nor a configured unicast peer.
    #[error("destination {dst} is neither {group} nor a configured unicast peer")]
    BadDestination {
        /// Destination address of the packet.
        dst: IpAddr,
        /// The VRRP multicast group of that family.
        group: IpAddr,
    },
    /// The source and destination addresses are of different families.
    #[error("source {src} and destination {dst} are of different address families")]
    MixedFamilies {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
    /// The VRRP version is neither 2 nor 3.
    #[error("bad VRRP version {0}: expected 2 or 3")]
    BadVersion(u8),
    /// RFC 3768 defines VRRPv2 for IPv4 only.
    #[error("VRRPv2 over IPv6: RFC 3768 defines version 2 for IPv4 only")]
    V2OverIpv6,
    /// RFC 3768 §5.3.2 / RFC 9568 §5.2.2: the only type is 1 (ADVERTISEMENT).
    #[error("unknown VRRP type {0}: only 1 (advertisement) is defined")]
    UnknownType(u8),
    /// The address count is zero (RFC 9568 §5.2.5 and erratum 8299).
    #[error("address count is 0: an advertisement carries at least one address")]
    ZeroAddressCount,
    /// The message length does not match the address count.
    #[error(
        "count/length mismatch: {count} IPv{family} address(es) make a {expected}-byte VRRPv{version} message, got {actual} bytes"
    )]
    LengthMismatch {
        /// VRRP version of the message.
        version: u8,
        /// IP family of the addresses (4 or 6).
        family: u8,
        /// The address count field.
        count: u8,
        /// Length the count implies.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// The VRRP checksum does not verify in any accepted form.
    #[error("bad checksum {found:#06x}: expected {expected:#06x} ({form})")]
    BadChecksum {
        /// Checksum in the message.
        found: u16,
        /// Checksum computed in the form named by `form`, the one preferred for this packet.
        expected: u16,
        /// The form `expected` was computed in.
        form: ChecksumForm,
    },
    /// A VRRPv3 IPv6 checksum covers the pseudo-header, so it needs the addresses.
    #[error("the checksum covers the IPv6 pseudo-header: source and destination are needed")]
    ChecksumNeedsAddresses,
    /// VRID 0 is not a virtual router (valid range 1..=255).
    #[error("VRID 0 is invalid: virtual router IDs are 1..=255")]
    ZeroVrid,
    /// A zero advertisement interval (RFC 9568 erratum 8301 for v3; never meaningful in v2).
    #[error(
        "advertisement interval is 0: the range is 1..=4095 centiseconds (v3), 1..=255 seconds (v2)"
    )]
    ZeroInterval,
    /// RFC 3768 auth types other than 0 (none) and 1 (simple text, RFC 2338).
    #[error("unsupported VRRPv2 auth type {0}: only 0 (none) and 1 (simple text) are accepted")]
    UnknownAuthType(u8),
    /// RFC 9568 §5.2.9 and erratum 8300: the first IPv6 address is the link-local one.
    #[error("first IPv6 address {0} is not link-local (RFC 9568 §5.2.9)")]
    FirstAddressNotLinkLocal(Ipv6Addr),
}

impl DecodeError {
    /// A short stable name for the broken rule, for counters, metrics and logs.
    pub fn reason(&self) -> &'static str {
        self.drop_reason().as_str()
    }

    /// The rule broken, as the counters name it.
    pub fn drop_reason(&self) -> super::DropReason {
        super::DropReason::from(self)
    }
}

/// Why an [`Advertisement`](super::Advertisement) cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An advertisement carries 1 to 255 addresses.
    #[error("address count {0} is out of range: 1..=255 addresses")]
    AddressCount(usize),
    /// The addresses are of another family than the IP header.
    #[error("the virtual addresses are IPv{addresses} but the packet is IPv{header}")]
    FamilyMismatch {
        /// Family of the virtual addresses.
        addresses: u8,
        /// Family of the source/destination addresses.
        header: u8,
    },
    /// Source and destination of different families.
    #[error("source {src} and destination {dst} are of different address families")]
    MixedFamilies {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
    },
    /// VRRPv2 is IPv4 only.
    #[error("VRRPv2 is IPv4 only (RFC 3768): use version 3 for IPv6")]
    V2OverIpv6,
    /// The v3 interval field has 12 bits.
    #[error("advertisement interval {0} cs is out of range: 1..=4095 centiseconds")]
    IntervalOutOfRange(u16),
    /// The v2 interval field holds whole seconds.
    #[error("advertisement interval {0} cs is not whole seconds in 1..=255, as VRRPv2 needs")]
    V2Interval(u16),
    /// VRRPv3 has no authentication field (RFC 5798 removed it).
    #[error("VRRPv3 has no authentication field: use auth type none")]
    AuthOnV3,
    /// VRID 0 is not a virtual router.
    #[error("VRID 0 is invalid: virtual router IDs are 1..=255")]
    ZeroVrid,
    /// The first IPv6 address must be link-local (RFC 9568 §5.2.9).
    #[error("first IPv6 address {0} is not link-local (RFC 9568 §5.2.9)")]
    FirstAddressNotLinkLocal(Ipv6Addr),
}

//! The VRRP checksum in the forms met on real networks.
//!
//! - VRRPv2 (RFC 3768 §5.3.8): the RFC 1071 sum over the VRRP message alone.
//! - VRRPv3 over IPv6 (RFC 9568 §5.2.8): the sum includes the RFC 8200 pseudo-header.
//! - VRRPv3 over IPv4: RFC 9568 §5.2.8 says message only, like v2. RFC 5798 was read by
//!   most open-source stacks as "with an IPv4 pseudo-header", and keepalived and FRR still
//!   send that by default. A receiver must accept both to interoperate, and reports which.

use core::fmt;
use core::net::IpAddr;

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::util;

/// 16-bit word index of the checksum field inside the VRRP header (bytes 6..8).
const CHECKSUM_WORD: usize = 3;

/// Which bytes a checksum was computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChecksumForm {
    /// VRRPv2: the VRRP message only.
    V2,
    /// VRRPv3 over IPv4 as RFC 9568 §5.2.8 states it: the VRRP message only.
    Rfc9568,
    /// VRRPv3 over IPv4 with an IPv4 pseudo-header (keepalived's and FRR's default).
    PseudoHeader,
    /// VRRPv3 over IPv6: with the IPv6 pseudo-header.
    Ipv6,
}

impl ChecksumForm {
    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::Rfc9568 => "rfc9568",
            Self::PseudoHeader => "pseudo-header",
            Self::Ipv6 => "ipv6",
        }
    }
}

impl fmt::Display for ChecksumForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two ways to checksum VRRPv3 over IPv4, as chosen for sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum V3Ipv4Checksum {
    /// RFC 9568: message only. The standard, and what Cisco and Juniper send.
    #[default]
    Rfc9568,
    /// With the IPv4 pseudo-header, for peers that only accept that (keepalived without
    /// `v3_checksum_as_v2`, FRR with `checksum-with-ipv4-pseudoheader`).
    PseudoHeader,
}

impl V3Ipv4Checksum {
    pub(crate) fn form(self) -> ChecksumForm {
        match self {
            Self::Rfc9568 => ChecksumForm::Rfc9568,
            Self::PseudoHeader => ChecksumForm::PseudoHeader,
        }
    }
}

/// Which VRRPv3-over-IPv4 checksum forms a receiver accepts. v2 and IPv6 have one form each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumPolicy {
    /// Accept both the RFC 9568 and the pseudo-header form, and report which one matched.
    #[default]
    AcceptBoth,
    /// Accept only this form.
    Only(V3Ipv4Checksum),
}

impl ChecksumPolicy {
    pub(crate) fn accepts(self, form: V3Ipv4Checksum) -> bool {
        match self {
            Self::AcceptBoth => true,
            Self::Only(only) => only == form,
        }
    }
}

/// Computes the checksum of `message` (checksum field skipped) in `form`.
///
/// `src`/`dst` are used only by the pseudo-header forms; for those they must be of the
/// matching family (the callers in this module guarantee it) or the form falls back to the
/// message-only sum, which then fails verification rather than panicking.
pub(crate) fn compute(message: &[u8], form: ChecksumForm, src: IpAddr, dst: IpAddr) -> u16 {
    match (form, src, dst) {
        (ChecksumForm::PseudoHeader, IpAddr::V4(s), IpAddr::V4(d)) => {
            util::ipv4_checksum(message, CHECKSUM_WORD, &[], &s, &d, IpNextHeaderProtocols::Vrrp)
        }
        (ChecksumForm::Ipv6, IpAddr::V6(s), IpAddr::V6(d)) => {
            util::ipv6_checksum(message, CHECKSUM_WORD, &[], &s, &d, IpNextHeaderProtocols::Vrrp)
        }
        _ => util::checksum(message, CHECKSUM_WORD),
    }
}

/// Reads the checksum field of a message of at least 8 bytes.
pub(crate) fn stored(message: &[u8]) -> u16 {
    match message {
        [_, _, _, _, _, _, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
        _ => 0,
    }
}

/// Writes `form`'s checksum into the message's checksum field.
pub(crate) fn fill(message: &mut [u8], form: ChecksumForm, src: IpAddr, dst: IpAddr) {
    let sum = compute(message, form, src, dst).to_be_bytes();
    if let Some(field) = message.get_mut(6..8) {
        field.copy_from_slice(&sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    #[test]
    fn v2_checksum_matches_the_keepalived_capture() {
        // The VRRP part of the first advertisement in the keepalived capture
        // (../shared/vectors/keepalived-v2-pass-k0s.txt): checksum 0x5d49.
        let msg = [
            0x21, 0x33, 0xc8, 0x01, 0x01, 0x01, 0x5d, 0x49, 10, 200, 0, 200, b'k', b'0', b's',
            b'-', b'l', b'a', b'b', b'1',
        ];
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(compute(&msg, ChecksumForm::V2, any, any), 0x5d49);
        assert_eq!(stored(&msg), 0x5d49);
    }

    #[test]
    fn pseudo_header_changes_the_sum() {
        let msg = [0x31, 0x33, 0xc8, 0x01, 0x00, 0x64, 0, 0, 10, 200, 0, 200];
        let src = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 11));
        let dst = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
        let plain = compute(&msg, ChecksumForm::Rfc9568, src, dst);
        let pseudo = compute(&msg, ChecksumForm::PseudoHeader, src, dst);
        assert_ne!(plain, pseudo);
    }
}

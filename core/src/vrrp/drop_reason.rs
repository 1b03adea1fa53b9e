//! Why a received packet was dropped: one name per receive rule, the label of the
//! per-reason counters, metrics and log lines.

use core::fmt;

use super::error::DecodeError;

/// The receive rule a dropped packet broke. Codec rules come from [`DecodeError`]; the
/// instance rules need the configuration (RFC 3768 §7.1, RFC 9568 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than the structure it claims to be.
    Truncated,
    /// IP version neither 4 nor 6.
    BadIpVersion,
    /// IPv4 header length below 5 words.
    BadIpHeaderLength,
    /// IPv4 header checksum wrong.
    BadIpHeaderChecksum,
    /// An IP fragment.
    Fragmented,
    /// Not IP protocol 112.
    NotVrrp,
    /// TTL / hop limit not 255: the sender is not on the link.
    TtlNot255,
    /// Neither the VRRP group nor a configured unicast peer.
    BadDestination,
    /// Source and destination of different families.
    MixedFamilies,
    /// VRRP version neither 2 nor 3.
    BadVersion,
    /// VRRPv2 over IPv6.
    V2OverIpv6,
    /// A VRRP type other than advertisement.
    UnknownType,
    /// Address count 0.
    ZeroAddressCount,
    /// Length and address count disagree.
    LengthMismatch,
    /// VRRP checksum wrong.
    BadChecksum,
    /// An IPv6 checksum without the addresses to check it.
    ChecksumNeedsAddresses,
    /// VRID 0.
    ZeroVrid,
    /// Advertisement interval 0.
    ZeroInterval,
    /// VRRPv2 authentication type other than none or simple text.
    UnknownAuthType,
    /// IPv6 address list not starting with the link-local address.
    FirstAddressNotLinkLocal,
    /// No instance has this VRID on this interface and family.
    VridNotConfigured,
    /// Our own advertisement, looped back.
    OwnAdvert,
    /// Another VRRP version than the instance runs.
    VersionMismatch,
    /// Multicast advertisement for an instance configured for unicast.
    MulticastInUnicastMode,
    /// A unicast advertisement from an address that is not a configured peer.
    UnicastPeerUnknown,
    /// An advertisement from a source the instance does not accept from (`accept_from`).
    SourceNotAllowed,
    /// VRRPv2 simple-text password differs.
    AuthFailure,
    /// VRRPv2 authentication type differs from ours.
    AuthTypeMismatch,
    /// VRRPv2 advertisement interval differs from ours (RFC 3768 §7.1: MUST drop).
    IntervalMismatch,
    /// The receiving socket's queue was full: the kernel dropped the packet before the
    /// daemon could read it (`SO_RXQ_OVFL`), or the daemon's own queue was.
    ReceiveQueueOverflow,
}

impl DropReason {
    /// The stable snake-case name (counter, metric label, log field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadIpVersion => "bad_ip_version",
            Self::BadIpHeaderLength => "bad_ip_header_length",
            Self::BadIpHeaderChecksum => "bad_ip_header_checksum",
            Self::Fragmented => "fragmented",
            Self::NotVrrp => "not_vrrp",
            Self::TtlNot255 => "ttl_not_255",
            Self::BadDestination => "bad_destination",
            Self::MixedFamilies => "mixed_families",
            Self::BadVersion => "bad_version",
            Self::V2OverIpv6 => "v2_over_ipv6",
            Self::UnknownType => "unknown_type",
            Self::ZeroAddressCount => "zero_address_count",
            Self::LengthMismatch => "length_mismatch",
            Self::BadChecksum => "bad_checksum",
            Self::ChecksumNeedsAddresses => "checksum_needs_addresses",
            Self::ZeroVrid => "zero_vrid",
            Self::ZeroInterval => "zero_interval",
            Self::UnknownAuthType => "unknown_auth_type",
            Self::FirstAddressNotLinkLocal => "first_address_not_link_local",
            Self::VridNotConfigured => "vrid_not_configured",
            Self::OwnAdvert => "own_advert",
            Self::VersionMismatch => "version_mismatch",
            Self::MulticastInUnicastMode => "multicast_in_unicast_mode",
            Self::UnicastPeerUnknown => "unicast_peer_unknown",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::AuthFailure => "auth_failure",
            Self::AuthTypeMismatch => "auth_type_mismatch",
            Self::IntervalMismatch => "interval_mismatch",
            Self::ReceiveQueueOverflow => "receive_queue_overflow",
        }
    }

    /// Every reason, for metrics that list zero counters too.
    pub const ALL: [Self; 30] = [
        Self::Truncated,
        Self::BadIpVersion,
        Self::BadIpHeaderLength,
        Self::BadIpHeaderChecksum,
        Self::Fragmented,
        Self::NotVrrp,
        Self::TtlNot255,
        Self::BadDestination,
        Self::MixedFamilies,
        Self::BadVersion,
        Self::V2OverIpv6,
        Self::UnknownType,
        Self::ZeroAddressCount,
        Self::LengthMismatch,
        Self::BadChecksum,
        Self::ChecksumNeedsAddresses,
        Self::ZeroVrid,
        Self::ZeroInterval,
        Self::UnknownAuthType,
        Self::FirstAddressNotLinkLocal,
        Self::VridNotConfigured,
        Self::OwnAdvert,
        Self::VersionMismatch,
        Self::MulticastInUnicastMode,
        Self::UnicastPeerUnknown,
        Self::SourceNotAllowed,
        Self::AuthFailure,
        Self::AuthTypeMismatch,
        Self::IntervalMismatch,
        Self::ReceiveQueueOverflow,
    ];
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&DecodeError> for DropReason {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::Truncated { .. } => Self::Truncated,
            DecodeError::BadIpVersion(_) => Self::BadIpVersion,
            DecodeError::BadIpHeaderLength(_) => Self::BadIpHeaderLength,
            DecodeError::BadIpHeaderChecksum { .. } => Self::BadIpHeaderChecksum,
            DecodeError::Fragmented => Self::Fragmented,
            DecodeError::NotVrrp(_) => Self::NotVrrp,
            DecodeError::TtlNot255 { .. } => Self::TtlNot255,
            DecodeError::BadDestination { .. } => Self::BadDestination,
            DecodeError::MixedFamilies { .. } => Self::MixedFamilies,
            DecodeError::BadVersion(_) => Self::BadVersion,
            DecodeError::V2OverIpv6 => Self::V2OverIpv6,
            DecodeError::UnknownType(_) => Self::UnknownType,
            DecodeError::ZeroAddressCount => Self::ZeroAddressCount,
            DecodeError::LengthMismatch { .. } => Self::LengthMismatch,
            DecodeError::BadChecksum { .. } => Self::BadChecksum,
            DecodeError::ChecksumNeedsAddresses => Self::ChecksumNeedsAddresses,
            DecodeError::ZeroVrid => Self::ZeroVrid,
            DecodeError::ZeroInterval => Self::ZeroInterval,
            DecodeError::UnknownAuthType(_) => Self::UnknownAuthType,
            DecodeError::FirstAddressNotLinkLocal(_) => Self::FirstAddressNotLinkLocal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_is_complete() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}

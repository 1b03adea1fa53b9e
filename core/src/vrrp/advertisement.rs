//! The VRRP ADVERTISEMENT message (RFC 3768 §5.3, RFC 9568 §5.2), without its IP header.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IPvX Addr|
//! v2: | Auth Type | Adver Int (s) |   v3: |rsvd| Max Adver Int (cs, 12 bits)|   Checksum
//! |                 IPvX Address(es): Count x 4 or x 16 bytes       |
//! v2 only:              Authentication Data (8 bytes)
//! ```
//!
//! The address size follows the family of the carrying IP packet, so decoding and encoding
//! need the IP source and destination (also for the pseudo-header checksum forms).

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{self, ChecksumForm, ChecksumPolicy, V3Ipv4Checksum};
use super::error::{DecodeError, EncodeError};
use super::rules::ReceiveRules;

/// Length of the fixed VRRP header shared by v2 and v3.
const HEADER_LEN: usize = 8;
/// Length of the v2 authentication data trailer.
const AUTH_LEN: usize = 8;
/// The only VRRP message type.
const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest VRRPv3 Max Adver Int (12 bits).
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, optional simple-text authentication.
    V2,
    /// RFC 9568: IPv4 and IPv6, interval in centiseconds, no authentication.
    V3,
}

impl Version {
    /// The version number on the wire.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

/// Virtual router identifier, 1..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vrid(u8);

impl Vrid {
    /// Returns the VRID, or `None` for the invalid 0.
    pub fn new(id: u8) -> Option<Self> {
        (id != 0).then_some(Self(id))
    }

    /// The VRID as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Vrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Router priority: 255 owns the addresses, 0 announces that the master resigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(pub u8);

impl Priority {
    /// The address owner (RFC 9568 §5.2.4).
    pub const OWNER: Self = Self(255);
    /// The master stops participating (RFC 9568 §5.2.4).
    pub const RESIGN: Self = Self(0);
    /// The default for backups.
    pub const DEFAULT: Self = Self(100);
}

/// The VRRPv2 simple-text password: up to 8 bytes, NUL padded on the wire (RFC 2338 §5.3.7).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthPass([u8; AUTH_LEN]);

impl AuthPass {
    /// Builds a password from at most 8 bytes; longer input is refused, as k0s does.
    pub fn new(pass: &[u8]) -> Option<Self> {
        let mut bytes = [0; AUTH_LEN];
        bytes.get_mut(..pass.len())?.copy_from_slice(pass);
        Some(Self(bytes))
    }

    /// The 8 bytes as sent.
    pub fn wire(&self) -> &[u8; AUTH_LEN] {
        &self.0
    }

    /// The password without its NUL padding.
    pub fn trimmed(&self) -> &[u8] {
        let end = self.0.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        self.0.get(..end).unwrap_or_default()
    }
}

impl fmt::Debug for AuthPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password is a shared secret only in name (it is cleartext on the wire), but it
        // still does not belong in logs.
        f.write_str("AuthPass(..)")
    }
}

/// VRRPv2 authentication (RFC 3768 §5.3.6 and RFC 2338 §5.3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Authentication {
    /// Type 0. Also the only choice for v3, which has no authentication field.
    None,
    /// Type 1, simple text: what keepalived's `auth_type PASS` and k0s's `authPass` send.
    SimpleText(AuthPass),
}

impl Authentication {
    /// The auth type number on the wire.
    pub fn type_number(&self) -> u8 {
        match self {
            Self::None => 0,
            Self::SimpleText(_) => 1,
        }
    }
}

/// The addresses an advertisement carries, all of one family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VirtualAddresses {
    /// IPv4 virtual addresses.
    V4(Vec<Ipv4Addr>),
    /// IPv6 virtual addresses; the first is the router's link-local address.
    V6(Vec<Ipv6Addr>),
}

impl VirtualAddresses {
    /// Groups addresses of one family; `None` when both families are present. An empty
    /// list gives an empty IPv4 list.
    pub fn from_ips(addresses: &[IpAddr]) -> Option<Self> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for a in addresses {
            match a {
                IpAddr::V4(a) => v4.push(*a),
                IpAddr::V6(a) => v6.push(*a),
            }
        }
        match (v4.is_empty(), v6.is_empty()) {
            (_, true) => Some(Self::V4(v4)),
            (true, false) => Some(Self::V6(v6)),
            (false, false) => None,
        }
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        match self {
            Self::V4(a) => a.len(),
            Self::V6(a) => a.len(),
        }
    }

    /// Whether there are no addresses (never true for a decoded advertisement).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// 4 or 6.
    pub fn family(&self) -> u8 {
        match self {
            Self::V4(_) => 4,
            Self::V6(_) => 6,
        }
    }

    /// The addresses as `IpAddr`s, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = match self {
            Self::V4(a) => a.as_slice(),
            Self::V6(_) => &[],
        };
        let v6 = match self {
            Self::V6(a) => a.as_slice(),
            Self::V4(_) => &[],
        };
        v4.iter().map(|a| IpAddr::V4(*a)).chain(v6.iter().map(|a| IpAddr::V6(*a)))
    }
}

/// A VRRP ADVERTISEMENT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advertisement {
    /// Protocol version.
    pub version: Version,
    /// Virtual router ID.
    pub vrid: Vrid,
    /// Sender's priority for this virtual router.
    pub priority: Priority,
    /// Advertisement interval in centiseconds. v2 carries whole seconds: 100 × Adver Int.
    pub interval_cs: u16,
    /// v2 authentication; always `None` for v3.
    pub auth: Authentication,
    /// The virtual addresses.
    pub addresses: VirtualAddresses,
}

impl Advertisement {
    /// Decodes a VRRP message carried from `src` to `dst`.
    ///
    /// Checks, in this order, and fails on the first broken rule: length of the fixed
    /// header, version, type, address count, message length, checksum (in the forms
    /// `rules` accepts), VRID, interval, auth type, and for IPv6 that the first address is
    /// link-local (unless `rules` allows otherwise). Never panics. Only the message rules of
    /// `rules` apply here; the IP-level ones are [`check_ip_rules`](super::check_ip_rules)'s.
    pub fn decode(
        message: &[u8],
        src: IpAddr,
        dst: IpAddr,
        rules: &ReceiveRules,
    ) -> Result<(Self, ChecksumForm), DecodeError> {
        Self::decode_with(message, Family::of(src, dst)?, Some((src, dst)), rules)
    }

    /// Decodes a message whose IP addresses are unknown (a bare payload).
    ///
    /// The family comes from the message length; only the message-only checksum forms
    /// (v2, RFC 9568) can be verified, so a v3 IPv6 message yields
    /// [`DecodeError::ChecksumNeedsAddresses`].
    pub fn decode_detached(message: &[u8]) -> Result<(Self, ChecksumForm), DecodeError> {
        let family = Family::guess(message);
        let rules = ReceiveRules {
            checksum: ChecksumPolicy::Only(V3Ipv4Checksum::Rfc9568),
            ..ReceiveRules::default()
        };
        Self::decode_with(message, family, None, &rules)
    }

    fn decode_with(
        message: &[u8],
        family: Family,
        endpoints: Option<(IpAddr, IpAddr)>,
        rules: &ReceiveRules,
    ) -> Result<(Self, ChecksumForm), DecodeError> {
        let &[ver_type, vrid, priority, count, b4, b5, ..] = message else {
            return Err(DecodeError::Truncated {
                what: "VRRP header",
                need: HEADER_LEN,
                have: message.len(),
            });
        };
        let version = match ver_type >> 4 {
            2 if family == Family::V6 => return Err(DecodeError::V2OverIpv6),
            2 => Version::V2,
            3 => Version::V3,
            other => return Err(DecodeError::BadVersion(other)),
        };
        if ver_type & 0x0f != TYPE_ADVERTISEMENT {
            return Err(DecodeError::UnknownType(ver_type & 0x0f));
        }
        if count == 0 {
            return Err(DecodeError::ZeroAddressCount);
        }
        let expected = encoded_len(version, family, usize::from(count));
        if message.len() != expected {
            return Err(DecodeError::LengthMismatch {
                version: version.number(),
                family: family.number(),
                count,
                expected,
                actual: message.len(),
            });
        }
        let form = verify_checksum(message, version, family, endpoints, rules.checksum)?;
        let vrid = Vrid::new(vrid).ok_or(DecodeError::ZeroVrid)?;
        let (interval_cs, auth) = match version {
            Version::V2 => (u16::from(b5) * 100, decode_auth(b4, message)?),
            // The 4 reserved bits are ignored on receive (RFC 9568 §5.2.6).
            Version::V3 => {
                (u16::from_be_bytes([b4, b5]) & MAX_V3_INTERVAL_CS, Authentication::None)
            }
        };
        if interval_cs == 0 {
            return Err(DecodeError::ZeroInterval);
        }
        let body = message.get(HEADER_LEN..).unwrap_or_default();
        let addresses = match family {
            Family::V4 => VirtualAddresses::V4(
                body.chunks_exact(4)
                    .take(usize::from(count))
                    .map(|c| Ipv4Addr::from(<[u8; 4]>::try_from(c).unwrap_or_default()))
                    .collect(),
            ),
            Family::V6 => {
                let addrs: Vec<Ipv6Addr> = body
                    .chunks_exact(16)
                    .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or_default()))
                    .collect();
                if let Some(first) = addrs
                    .first()
                    .filter(|a| !a.is_unicast_link_local() && !rules.allow_global_first_ipv6)
                {
                    return Err(DecodeError::FirstAddressNotLinkLocal(*first));
                }
                VirtualAddresses::V6(addrs)
            }
        };
        let advert =
            Self { version, vrid, priority: Priority(priority), interval_cs, auth, addresses };
        Ok((advert, form))
    }

    /// Length of the encoded message.
    pub fn encoded_len(&self) -> usize {
        let family = match self.addresses {
            VirtualAddresses::V4(_) => Family::V4,
            VirtualAddresses::V6(_) => Family::V6,
        };
        encoded_len(self.version, family, self.addresses.len())
    }

    /// Encodes the message for sending from `src` to `dst`, appending it to `out`.
    ///
    /// `v3_ipv4` picks the checksum form for VRRPv3 over IPv4 and is ignored otherwise.
    /// On error nothing is appended.
    pub fn encode_into(
        &self,
        src: IpAddr,
        dst: IpAddr,
        v3_ipv4: V3Ipv4Checksum,
        out: &mut Vec<u8>,
    ) -> Result<ChecksumForm, EncodeError> {
        self.encode_checked(src, dst, v3_ipv4, true, out)
    }

    /// Encodes like [`Advertisement::encode`], but lets an IPv6 advert start with a
    /// non-link-local address, as keepalived sends outside its strict mode (and as unicast
    /// IPv6 VRRP, sourced from a global address, has to).
    pub fn encode_allowing_global_first(
        &self,
        src: IpAddr,
        dst: IpAddr,
        v3_ipv4: V3Ipv4Checksum,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_checked(src, dst, v3_ipv4, false, &mut out)?;
        Ok(out)
    }

    fn encode_checked(
        &self,
        src: IpAddr,
        dst: IpAddr,
        v3_ipv4: V3Ipv4Checksum,
        link_local_first: bool,
        out: &mut Vec<u8>,
    ) -> Result<ChecksumForm, EncodeError> {
        let form = self.check_encodable(src, dst, v3_ipv4, link_local_first)?;
        let start = out.len();
        let count = u8::try_from(self.addresses.len()).unwrap_or(u8::MAX);
        out.extend_from_slice(&[
            (self.version.number() << 4) | TYPE_ADVERTISEMENT,
            self.vrid.get(),
            self.priority.0,
            count,
        ]);
        match self.version {
            Version::V2 => {
                let secs = u8::try_from(self.interval_cs / 100).unwrap_or(u8::MAX);
                out.extend_from_slice(&[self.auth.type_number(), secs]);
            }
            Version::V3 => out.extend_from_slice(&self.interval_cs.to_be_bytes()),
        }
        out.extend_from_slice(&[0, 0]);
        match &self.addresses {
            VirtualAddresses::V4(a) => a.iter().for_each(|a| out.extend_from_slice(&a.octets())),
            VirtualAddresses::V6(a) => a.iter().for_each(|a| out.extend_from_slice(&a.octets())),
        }
        if self.version == Version::V2 {
            match &self.auth {
                Authentication::SimpleText(pass) => out.extend_from_slice(pass.wire()),
                // RFC 3768 §5.3.10: zero on transmit.
                Authentication::None => out.extend_from_slice(&[0; AUTH_LEN]),
            }
        }
        if let Some(message) = out.get_mut(start..) {
            checksum::fill(message, form, src, dst);
        }
        Ok(form)
    }

    /// Encodes the message into a new buffer. See [`Advertisement::encode_into`].
    pub fn encode(
        &self,
        src: IpAddr,
        dst: IpAddr,
        v3_ipv4: V3Ipv4Checksum,
    ) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(src, dst, v3_ipv4, &mut out)?;
        Ok(out)
    }

    fn check_encodable(
        &self,
        src: IpAddr,
        dst: IpAddr,
        v3_ipv4: V3Ipv4Checksum,
        link_local_first: bool,
    ) -> Result<ChecksumForm, EncodeError> {
        let header = Family::of(src, dst).map_err(|_| EncodeError::MixedFamilies { src, dst })?;
        let count = self.addresses.len();
        if !(1..=255).contains(&count) {
            return Err(EncodeError::AddressCount(count));
        }
        if self.addresses.family() != header.number() {
            return Err(EncodeError::FamilyMismatch {
                addresses: self.addresses.family(),
                header: header.number(),
            });
        }
        if self.vrid.get() == 0 {
            return Err(EncodeError::ZeroVrid);
        }
        if let VirtualAddresses::V6(a) = &self.addresses
            && link_local_first
            && let Some(first) = a.first().filter(|a| !a.is_unicast_link_local())
        {
            return Err(EncodeError::FirstAddressNotLinkLocal(*first));
        }
        match self.version {
            Version::V2 if header == Family::V6 => Err(EncodeError::V2OverIpv6),
            Version::V2
                if !self.interval_cs.is_multiple_of(100)
                    || !(100..=25_500).contains(&self.interval_cs) =>
            {
                Err(EncodeError::V2Interval(self.interval_cs))
            }
            Version::V2 => Ok(ChecksumForm::V2),
            Version::V3 if !(1..=MAX_V3_INTERVAL_CS).contains(&self.interval_cs) => {
                Err(EncodeError::IntervalOutOfRange(self.interval_cs))
            }
            Version::V3 if self.auth != Authentication::None => Err(EncodeError::AuthOnV3),
            Version::V3 if header == Family::V6 => Ok(ChecksumForm::Ipv6),
            Version::V3 => Ok(v3_ipv4.form()),
        }
    }
}

/// The IP family that carries a message, which fixes the address size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(src: IpAddr, dst: IpAddr) -> Result<Self, DecodeError> {
        match (src, dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => Ok(Self::V4),
            (IpAddr::V6(_), IpAddr::V6(_)) => Ok(Self::V6),
            _ => Err(DecodeError::MixedFamilies { src, dst }),
        }
    }

    /// Infers the family of a detached message from its length and count: the two
    /// families give different lengths for every count of at least one.
    fn guess(message: &[u8]) -> Self {
        let (version, count) = match message {
            [vt, _, _, count, ..] => (*vt >> 4, usize::from(*count)),
            _ => return Self::V4,
        };
        if version == 3 && count > 0 && message.len() == HEADER_LEN + 16 * count {
            Self::V6
        } else {
            Self::V4
        }
    }

    fn number(self) -> u8 {
        match self {
            Self::V4 => 4,
            Self::V6 => 6,
        }
    }

    fn address_len(self) -> usize {
        match self {
            Self::V4 => 4,
            Self::V6 => 16,
        }
    }
}

fn encoded_len(version: Version, family: Family, count: usize) -> usize {
    let trailer = match version {
        Version::V2 => AUTH_LEN,
        Version::V3 => 0,
    };
    HEADER_LEN + count * family.address_len() + trailer
}

fn decode_auth(auth_type: u8, message: &[u8]) -> Result<Authentication, DecodeError> {
    match auth_type {
        // RFC 3768 §5.3.10: the data is ignored on receive when unused.
        0 => Ok(Authentication::None),
        1 => {
            let start = message.len().saturating_sub(AUTH_LEN);
            let data = message.get(start..).unwrap_or_default();
            Ok(AuthPass::new(data).map_or(Authentication::None, Authentication::SimpleText))
        }
        other => Err(DecodeError::UnknownAuthType(other)),
    }
}

fn verify_checksum(
    message: &[u8],
    version: Version,
    family: Family,
    endpoints: Option<(IpAddr, IpAddr)>,
    policy: ChecksumPolicy,
) -> Result<ChecksumForm, DecodeError> {
    let candidates: &[ChecksumForm] = match (version, family) {
        (Version::V2, _) => &[ChecksumForm::V2],
        (Version::V3, Family::V6) => &[ChecksumForm::Ipv6],
        (Version::V3, Family::V4) => &[ChecksumForm::Rfc9568, ChecksumForm::PseudoHeader],
    };
    let found = checksum::stored(message);
    let accepted = |form: ChecksumForm| match form {
        ChecksumForm::Rfc9568 => policy.accepts(V3Ipv4Checksum::Rfc9568),
        ChecksumForm::PseudoHeader => {
            policy.accepts(V3Ipv4Checksum::PseudoHeader) && endpoints.is_some()
        }
        ChecksumForm::V2 => true,
        ChecksumForm::Ipv6 => endpoints.is_some(),
    };
    let (src, dst) =
        endpoints.unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    let mut first_tried = None;
    for &form in candidates.iter().filter(|f| accepted(**f)) {
        let expected = checksum::compute(message, form, src, dst);
        if expected == found {
            return Ok(form);
        }
        first_tried.get_or_insert((form, expected));
    }
    match first_tried {
        Some((form, expected)) => Err(DecodeError::BadChecksum { found, expected, form }),
        None => Err(DecodeError::ChecksumNeedsAddresses),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn advert() -> Advertisement {
        Advertisement {
            version: Version::V3,
            vrid: Vrid(51),
            priority: Priority(200),
            interval_cs: 100,
            auth: Authentication::None,
            addresses: VirtualAddresses::V4(vec![Ipv4Addr::new(10, 200, 0, 200)]),
        }
    }

    #[test]
    fn v3_ipv4_round_trips_in_both_checksum_forms() {
        let (src, dst) = (v4([10, 200, 0, 11]), v4([224, 0, 0, 18]));
        for choice in [V3Ipv4Checksum::Rfc9568, V3Ipv4Checksum::PseudoHeader] {
            let bytes = advert().encode(src, dst, choice).unwrap();
            let (back, form) =
                Advertisement::decode(&bytes, src, dst, &ReceiveRules::default()).unwrap();
            assert_eq!(back, advert());
            assert_eq!(form, choice.form());
            let other = match choice {
                V3Ipv4Checksum::Rfc9568 => V3Ipv4Checksum::PseudoHeader,
                V3Ipv4Checksum::PseudoHeader => V3Ipv4Checksum::Rfc9568,
            };
            let strict = Advertisement::decode(
                &bytes,
                src,
                dst,
                &ReceiveRules { checksum: ChecksumPolicy::Only(other), ..ReceiveRules::default() },
            );
            assert!(matches!(strict, Err(DecodeError::BadChecksum { .. })), "{strict:?}");
        }
    }

    #[test]
    fn v3_reserved_interval_bits_are_ignored_on_receive() {
        let (src, dst) = (v4([10, 200, 0, 11]), v4([224, 0, 0, 18]));
        let mut bytes = advert().encode(src, dst, V3Ipv4Checksum::Rfc9568).unwrap();
        bytes[4] |= 0xf0;
        checksum::fill(&mut bytes, ChecksumForm::Rfc9568, src, dst);
        let (back, _) = Advertisement::decode(&bytes, src, dst, &ReceiveRules::default()).unwrap();
        assert_eq!(back.interval_cs, 100);
    }

    #[test]
    fn detached_v3_ipv6_needs_addresses() {
        let a = Advertisement {
            addresses: VirtualAddresses::V6(vec!["fe80::1".parse().unwrap()]),
            ..advert()
        };
        let (src, dst) = ("fe80::1".parse().unwrap(), "ff02::12".parse().unwrap());
        let bytes = a.encode(src, dst, V3Ipv4Checksum::Rfc9568).unwrap();
        assert_eq!(
            Advertisement::decode_detached(&bytes),
            Err(DecodeError::ChecksumNeedsAddresses)
        );
        assert!(Advertisement::decode(&bytes, src, dst, &ReceiveRules::default()).is_ok());
    }

    #[test]
    fn auth_pass_longer_than_eight_bytes_is_refused() {
        assert!(AuthPass::new(b"123456789").is_none());
        assert_eq!(AuthPass::new(b"k0s").unwrap().trimmed(), b"k0s");
    }
}

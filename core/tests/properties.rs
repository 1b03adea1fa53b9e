//! Codec properties: encode then decode is the identity, decoding never panics, and a single
//! flipped bit is always caught.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, ChecksumForm, ChecksumPolicy, IpParams, Priority,
    ReceiveRules, V3Ipv4Checksum, Version, VirtualAddresses, Vrid, decode_packet, encode_packet,
};
use proptest::prelude::*;

/// A valid advertisement plus the header it travels in and the v3/IPv4 checksum form.
#[derive(Debug, Clone)]
struct Case {
    advert: Advertisement,
    ip: IpParams,
    form: V3Ipv4Checksum,
}

fn link_local() -> impl Strategy<Value = Ipv6Addr> {
    any::<u64>().prop_map(|iid| Ipv6Addr::from((0xfe80_u128 << 112) | u128::from(iid)))
}

fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    (1u8..=223, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d))
}

fn v4_case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![Just(Version::V2), Just(Version::V3)],
        1u8..=255,
        any::<u8>(),
        proptest::collection::vec(unicast_v4(), 1..=20),
        unicast_v4(),
        prop_oneof![Just(None), unicast_v4().prop_map(Some)],
        1u16..=4095,
        1u16..=255,
        proptest::option::of(proptest::collection::vec(1u8..=255, 0..=8)),
        prop_oneof![Just(V3Ipv4Checksum::Rfc9568), Just(V3Ipv4Checksum::PseudoHeader)],
        any::<u16>(),
    )
        .prop_map(|(version, vrid, prio, addrs, src, peer, cs, secs, pass, form, ident)| {
            let (interval_cs, auth) = match version {
                Version::V2 => (
                    secs * 100,
                    pass.map_or(Authentication::None, |p| {
                        Authentication::SimpleText(AuthPass::new(&p).expect("at most 8 bytes"))
                    }),
                ),
                Version::V3 => (cs, Authentication::None),
            };
            let dst = peer.map_or(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)), IpAddr::V4);
            Case {
                advert: Advertisement {
                    version,
                    vrid: Vrid::new(vrid).expect("non-zero"),
                    priority: Priority(prio),
                    interval_cs,
                    auth,
                    addresses: VirtualAddresses::V4(addrs),
                },
                ip: IpParams { identification: ident, ..IpParams::new(IpAddr::V4(src), dst) },
                form,
            }
        })
}

fn v6_case() -> impl Strategy<Value = Case> {
    (
        1u8..=255,
        any::<u8>(),
        link_local(),
        proptest::collection::vec(any::<u128>().prop_map(Ipv6Addr::from), 0..=10),
        link_local(),
        1u16..=4095,
    )
        .prop_map(|(vrid, prio, first, rest, src, cs)| {
            let mut addrs = vec![first];
            addrs.extend(rest);
            Case {
                advert: Advertisement {
                    version: Version::V3,
                    vrid: Vrid::new(vrid).expect("non-zero"),
                    priority: Priority(prio),
                    interval_cs: cs,
                    auth: Authentication::None,
                    addresses: VirtualAddresses::V6(addrs),
                },
                ip: IpParams::new(IpAddr::V6(src), "ff02::12".parse().expect("group")),
                form: V3Ipv4Checksum::Rfc9568,
            }
        })
}

fn any_case() -> impl Strategy<Value = Case> {
    prop_oneof![v4_case(), v6_case()]
}

/// Receive rules that accept exactly the form the case was sent in, and its unicast peer.
fn strict_rules(case: &Case) -> ReceiveRules {
    ReceiveRules {
        unicast_peers: vec![case.ip.dst],
        checksum: ChecksumPolicy::Only(case.form),
        ..ReceiveRules::default()
    }
}

fn expected_form(case: &Case) -> ChecksumForm {
    match (case.advert.version, case.ip.src) {
        (Version::V2, _) => ChecksumForm::V2,
        (Version::V3, IpAddr::V6(_)) => ChecksumForm::Ipv6,
        (Version::V3, IpAddr::V4(_)) => match case.form {
            V3Ipv4Checksum::Rfc9568 => ChecksumForm::Rfc9568,
            V3Ipv4Checksum::PseudoHeader => ChecksumForm::PseudoHeader,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_the_identity(case in any_case()) {
        let bytes = encode_packet(&case.advert, &case.ip, case.form).expect("valid advertisement");
        let got = decode_packet(&bytes, &strict_rules(&case)).expect("own encoding decodes");
        prop_assert_eq!(&got.advertisement, &case.advert);
        prop_assert_eq!(got.header.src, case.ip.src);
        prop_assert_eq!(got.header.dst, case.ip.dst);
        prop_assert_eq!(got.header.ttl, 255);
        prop_assert_eq!(got.checksum_form, expected_form(&case));
        // And the default (both forms) policy agrees.
        let lenient = ReceiveRules { unicast_peers: vec![case.ip.dst], ..ReceiveRules::default() };
        prop_assert_eq!(decode_packet(&bytes, &lenient).expect("decodes").advertisement, case.advert);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_packet(&bytes, &ReceiveRules::default());
        let _ = Advertisement::decode_detached(&bytes);
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let _ = Advertisement::decode(&bytes, v4, v4, &ReceiveRules::default());
        let _ = Advertisement::decode(&bytes, v6, v6, &ReceiveRules::default());
        let _ = Advertisement::decode(&bytes, v4, v6, &ReceiveRules::default());
    }

    #[test]
    fn decoding_mutated_valid_packets_never_panics(
        case in any_case(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode_packet(&case.advert, &case.ip, case.form).expect("valid");
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode_packet(&bytes, &ReceiveRules::default());
        bytes.truncate(cut.index(bytes.len() + 1));
        let _ = decode_packet(&bytes, &ReceiveRules::default());
    }

    #[test]
    fn a_one_bit_flip_in_the_vrrp_message_is_caught(case in any_case(), bit in any::<prop::sample::Index>()) {
        let bytes = encode_packet(&case.advert, &case.ip, case.form).expect("valid");
        let header_len = if case.ip.src.is_ipv4() { 20 } else { 40 };
        let bits = (bytes.len() - header_len) * 8;
        let b = header_len * 8 + bit.index(bits);
        let mut flipped = bytes.clone();
        flipped[b / 8] ^= 1 << (b % 8);
        let result = decode_packet(&flipped, &strict_rules(&case));
        prop_assert!(result.is_err(), "bit {} flipped and still decoded: {:?}", b, result);
    }

    #[test]
    fn a_one_bit_flip_anywhere_in_an_ipv4_packet_is_caught(case in v4_case(), bit in any::<prop::sample::Index>()) {
        // The IPv4 header has its own checksum, so no bit of the packet goes unchecked.
        let bytes = encode_packet(&case.advert, &case.ip, case.form).expect("valid");
        let b = bit.index(bytes.len() * 8);
        let mut flipped = bytes.clone();
        flipped[b / 8] ^= 1 << (b % 8);
        let result = decode_packet(&flipped, &strict_rules(&case));
        prop_assert!(result.is_err(), "bit {} flipped and still decoded: {:?}", b, result);
    }

    #[test]
    fn a_one_bit_flip_in_ipv6_fields_the_rules_cover_is_caught(case in v6_case(), bit in any::<prop::sample::Index>()) {
        // IPv6 has no header checksum: version, traffic class and flow label (bytes 0..4) are
        // unprotected by design. Everything from the payload length on is checked (length,
        // next header, hop limit, and the addresses through the pseudo-header).
        let bytes = encode_packet(&case.advert, &case.ip, case.form).expect("valid");
        let b = 32 + bit.index((bytes.len() - 4) * 8);
        let mut flipped = bytes.clone();
        flipped[b / 8] ^= 1 << (b % 8);
        let result = decode_packet(&flipped, &strict_rules(&case));
        prop_assert!(result.is_err(), "bit {} flipped and still decoded: {:?}", b, result);
    }
}

//! Each receive rule of RFC 3768 §7.1 / RFC 9568 §7.1 (and errata), one test each: a packet
//! built from a valid template, broken in exactly one way, must fail with that rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, ChecksumForm, ChecksumPolicy, DecodeError,
    EncodeError, IpParams, Priority, ReceiveRules, V3Ipv4Checksum, Version, VirtualAddresses, Vrid,
    decode_packet, encode_packet,
};

const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 11));
const GROUP4: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 200);

fn v2() -> Advertisement {
    Advertisement {
        version: Version::V2,
        vrid: Vrid::new(51).expect("non-zero"),
        priority: Priority(200),
        interval_cs: 100,
        auth: Authentication::SimpleText(AuthPass::new(b"k0s-lab1").expect("8 bytes")),
        addresses: VirtualAddresses::V4(vec![VIP]),
    }
}

fn v3() -> Advertisement {
    Advertisement { version: Version::V3, auth: Authentication::None, ..v2() }
}

fn v3_ipv6() -> (Advertisement, IpParams) {
    let ll: Ipv6Addr = "fe80::200".parse().expect("addr");
    let advert = Advertisement {
        addresses: VirtualAddresses::V6(vec![ll, "fd00:200::200".parse().expect("addr")]),
        ..v3()
    };
    let ip = IpParams::new("fe80::b".parse().expect("addr"), "ff02::12".parse().expect("addr"));
    (advert, ip)
}

fn packet(advert: &Advertisement) -> Vec<u8> {
    encode_packet(advert, &IpParams::new(SRC4, GROUP4), V3Ipv4Checksum::Rfc9568).expect("valid")
}

fn decode(bytes: &[u8]) -> Result<cplb_core::vrrp::Received, DecodeError> {
    decode_packet(bytes, &ReceiveRules::default())
}

/// Sets a VRRP message byte (offset from the start of the message after a 20-byte IPv4
/// header) and recomputes the VRRP checksum in the v2 / RFC 9568 message-only form, so only
/// the intended rule is broken.
fn patch_message(bytes: &mut [u8], offset: usize, value: u8) {
    bytes[20 + offset] = value;
    bytes[26] = 0;
    bytes[27] = 0;
    let sum = ones_complement(&bytes[20..]);
    bytes[26..28].copy_from_slice(&sum.to_be_bytes());
}

fn ones_complement(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites an IPv4 header field and fixes the header checksum.
fn patch_ipv4_header(bytes: &mut [u8], offset: usize, value: u8) {
    bytes[offset] = value;
    bytes[10] = 0;
    bytes[11] = 0;
    let sum = ones_complement(&bytes[..20]);
    bytes[10..12].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn valid_templates_decode() {
    let got = decode(&packet(&v2())).expect("v2");
    assert_eq!(got.advertisement, v2());
    assert_eq!(got.checksum_form, ChecksumForm::V2);
    let got = decode(&packet(&v3())).expect("v3");
    assert_eq!(got.checksum_form, ChecksumForm::Rfc9568);
    let (a, ip) = v3_ipv6();
    let got = decode(&encode_packet(&a, &ip, V3Ipv4Checksum::Rfc9568).expect("v6")).expect("v6");
    assert_eq!(got.checksum_form, ChecksumForm::Ipv6);
}

#[test]
fn rfc9568_7_1_ttl_other_than_255_is_dropped() {
    let mut bytes = packet(&v3());
    patch_ipv4_header(&mut bytes, 8, 254);
    assert_eq!(decode(&bytes), Err(DecodeError::TtlNot255 { field: "TTL", value: 254 }));
}

#[test]
fn rfc9568_7_1_hop_limit_other_than_255_is_dropped() {
    let (a, ip) = v3_ipv6();
    let bytes = encode_packet(&a, &IpParams { ttl: 1, ..ip }, V3Ipv4Checksum::Rfc9568).expect("v6");
    assert_eq!(decode(&bytes), Err(DecodeError::TtlNot255 { field: "hop limit", value: 1 }));
}

#[test]
fn rfc9568_5_1_destination_must_be_the_group_or_a_configured_peer() {
    let peer = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 12));
    let bytes =
        encode_packet(&v3(), &IpParams::new(SRC4, peer), V3Ipv4Checksum::Rfc9568).expect("ok");
    assert_eq!(decode(&bytes), Err(DecodeError::BadDestination { dst: peer, group: GROUP4 }));
    let rules = ReceiveRules { unicast_peers: vec![peer], ..ReceiveRules::default() };
    assert!(decode_packet(&bytes, &rules).is_ok());
    // The sender as the configured peer (the receiver's view) is accepted as well.
    let rules = ReceiveRules { unicast_peers: vec![SRC4], ..ReceiveRules::default() };
    assert!(decode_packet(&bytes, &rules).is_ok());
    // Another multicast group is never VRRP, peers or not.
    let other = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 5));
    let bytes =
        encode_packet(&v3(), &IpParams::new(SRC4, other), V3Ipv4Checksum::Rfc9568).expect("ok");
    let rules = ReceiveRules { unicast_peers: vec![SRC4, other], ..ReceiveRules::default() };
    assert!(matches!(decode_packet(&bytes, &rules), Err(DecodeError::BadDestination { .. })));
}

#[test]
fn protocol_other_than_112_is_not_vrrp() {
    let mut bytes = packet(&v3());
    patch_ipv4_header(&mut bytes, 9, 17);
    assert_eq!(decode(&bytes), Err(DecodeError::NotVrrp(17)));
}

#[test]
fn ipv4_header_checksum_is_verified() {
    let mut bytes = packet(&v3());
    bytes[11] ^= 0x01;
    assert!(matches!(decode(&bytes), Err(DecodeError::BadIpHeaderChecksum { .. })));
}

#[test]
fn ipv4_fragments_are_refused() {
    let mut bytes = packet(&v3());
    patch_ipv4_header(&mut bytes, 6, 0x20); // more fragments
    assert_eq!(decode(&bytes), Err(DecodeError::Fragmented));
}

#[test]
fn ipv4_options_are_skipped_and_trailing_padding_ignored() {
    let plain = packet(&v3());
    // Insert a 4-byte NOP option block: IHL 6, total length + 4.
    let mut bytes = plain[..20].to_vec();
    bytes.extend_from_slice(&[1, 1, 1, 0]);
    bytes.extend_from_slice(&plain[20..]);
    bytes.extend_from_slice(&[0; 6]); // Ethernet padding after the IP packet
    bytes[0] = 0x46;
    let total = u16::try_from(plain.len() + 4).expect("small");
    bytes[2..4].copy_from_slice(&total.to_be_bytes());
    bytes[10] = 0;
    bytes[11] = 0;
    let sum = ones_complement(&bytes[..24]);
    bytes[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(decode(&bytes).expect("decodes").advertisement, v3());
}

#[test]
fn ipv6_hop_by_hop_header_is_skipped() {
    let (a, ip) = v3_ipv6();
    let plain = encode_packet(&a, &ip, V3Ipv4Checksum::Rfc9568).expect("v6");
    let mut bytes = plain[..40].to_vec();
    bytes[6] = 0; // next header: hop-by-hop
    bytes.extend_from_slice(&[112, 0, 1, 4, 0, 0, 0, 0]); // -> VRRP, PadN
    bytes.extend_from_slice(&plain[40..]);
    let len = u16::try_from(bytes.len() - 40).expect("small");
    bytes[4..6].copy_from_slice(&len.to_be_bytes());
    assert_eq!(decode(&bytes).expect("decodes").advertisement, a);
}

#[test]
fn rfc3768_7_1_version_must_be_2_or_3() {
    let mut bytes = packet(&v2());
    patch_message(&mut bytes, 0, 0x41);
    assert_eq!(decode(&bytes), Err(DecodeError::BadVersion(4)));
}

#[test]
fn rfc3768_5_3_2_unknown_type_is_discarded() {
    let mut bytes = packet(&v2());
    patch_message(&mut bytes, 0, 0x22);
    assert_eq!(decode(&bytes), Err(DecodeError::UnknownType(2)));
}

#[test]
fn rfc3768_defines_v2_for_ipv4_only() {
    let (a, ip) = v3_ipv6();
    let mut bytes = encode_packet(&a, &ip, V3Ipv4Checksum::Rfc9568).expect("v6");
    bytes[40] = 0x21;
    assert_eq!(decode(&bytes), Err(DecodeError::V2OverIpv6));
}

#[test]
fn rfc9568_5_2_5_zero_address_count_is_ignored() {
    let mut bytes = packet(&v3());
    patch_message(&mut bytes, 3, 0);
    assert_eq!(decode(&bytes), Err(DecodeError::ZeroAddressCount));
}

#[test]
fn rfc3768_7_1_the_packet_must_be_complete_including_auth_data() {
    let mut bytes = packet(&v2());
    patch_message(&mut bytes, 3, 2); // claims two addresses, carries one
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::LengthMismatch {
            version: 2,
            family: 4,
            count: 2,
            expected: 24,
            actual: 20
        })
    );
}

#[test]
fn truncated_packets_name_what_is_missing() {
    let bytes = packet(&v3());
    assert!(matches!(
        decode(&bytes[..10]),
        Err(DecodeError::Truncated { what: "IPv4 packet", .. })
    ));
    assert!(matches!(decode(&[]), Err(DecodeError::Truncated { .. })));
    // An IPv4 total length beyond the captured bytes.
    let mut short = bytes.clone();
    short.truncate(bytes.len() - 1);
    assert!(
        matches!(decode(&short), Err(DecodeError::Truncated { need, .. }) if need == bytes.len())
    );
}

#[test]
fn rfc3768_7_1_checksum_is_verified() {
    let mut bytes = packet(&v2());
    bytes[27] ^= 0x80;
    assert!(matches!(decode(&bytes), Err(DecodeError::BadChecksum { form: ChecksumForm::V2, .. })));
}

#[test]
fn rfc9568_5_2_8_ipv4_checksum_forms_follow_the_policy() {
    let ip = IpParams::new(SRC4, GROUP4);
    let pseudo = encode_packet(&v3(), &ip, V3Ipv4Checksum::PseudoHeader).expect("ok");
    let plain = encode_packet(&v3(), &ip, V3Ipv4Checksum::Rfc9568).expect("ok");
    assert_eq!(decode(&pseudo).expect("both").checksum_form, ChecksumForm::PseudoHeader);
    assert_eq!(decode(&plain).expect("both").checksum_form, ChecksumForm::Rfc9568);
    let only_rfc = ReceiveRules {
        checksum: ChecksumPolicy::Only(V3Ipv4Checksum::Rfc9568),
        ..Default::default()
    };
    assert!(matches!(decode_packet(&pseudo, &only_rfc), Err(DecodeError::BadChecksum { .. })));
    let only_pseudo = ReceiveRules {
        checksum: ChecksumPolicy::Only(V3Ipv4Checksum::PseudoHeader),
        ..Default::default()
    };
    assert!(matches!(decode_packet(&plain, &only_pseudo), Err(DecodeError::BadChecksum { .. })));
}

#[test]
fn rfc9568_5_2_8_ipv6_checksum_covers_the_pseudo_header() {
    let (a, ip) = v3_ipv6();
    let bytes = encode_packet(&a, &ip, V3Ipv4Checksum::Rfc9568).expect("v6");
    // Same message, other source address: only the pseudo-header differs.
    let other = IpParams { src: "fe80::c".parse().expect("addr"), ..ip };
    let mut moved = encode_packet(&a, &other, V3Ipv4Checksum::Rfc9568).expect("v6");
    moved[40..].copy_from_slice(&bytes[40..]);
    assert!(matches!(
        decode(&moved),
        Err(DecodeError::BadChecksum { form: ChecksumForm::Ipv6, .. })
    ));
}

#[test]
fn vrid_zero_is_refused() {
    let mut bytes = packet(&v3());
    patch_message(&mut bytes, 1, 0);
    assert_eq!(decode(&bytes), Err(DecodeError::ZeroVrid));
}

#[test]
fn erratum_8301_zero_v3_interval_is_dropped() {
    let mut bytes = packet(&v3());
    patch_message(&mut bytes, 5, 0);
    assert_eq!(decode(&bytes), Err(DecodeError::ZeroInterval));
}

#[test]
fn zero_v2_interval_is_dropped() {
    let mut bytes = packet(&v2());
    patch_message(&mut bytes, 5, 0);
    assert_eq!(decode(&bytes), Err(DecodeError::ZeroInterval));
}

#[test]
fn rfc3768_7_1_unknown_auth_type_is_dropped() {
    let mut bytes = packet(&v2());
    patch_message(&mut bytes, 4, 2); // RFC 2338 IP AH
    assert_eq!(decode(&bytes), Err(DecodeError::UnknownAuthType(2)));
}

#[test]
fn rfc3768_5_3_10_auth_data_is_ignored_with_auth_type_none() {
    let none = Advertisement { auth: Authentication::None, ..v2() };
    let mut bytes = packet(&none);
    patch_message(&mut bytes, 12, b'x'); // junk in the (unused) auth data
    assert_eq!(decode(&bytes).expect("decodes").advertisement, none);
}

#[test]
fn erratum_8300_first_ipv6_address_must_be_link_local() {
    let (a, ip) = v3_ipv6();
    let mut bytes = encode_packet(&a, &ip, V3Ipv4Checksum::Rfc9568).expect("v6");
    // Swap the two addresses, then fix the checksum through a re-encode of the swapped
    // order, which the encoder refuses: build the bytes by hand instead.
    let (first, second) = (bytes[48..64].to_vec(), bytes[64..80].to_vec());
    bytes[48..64].copy_from_slice(&second);
    bytes[64..80].copy_from_slice(&first);
    // Swapping 16-byte words leaves the one's-complement sum unchanged.
    let swapped: Ipv6Addr = "fd00:200::200".parse().expect("addr");
    assert_eq!(decode(&bytes), Err(DecodeError::FirstAddressNotLinkLocal(swapped)));
    let bad = Advertisement { addresses: VirtualAddresses::V6(vec![swapped]), ..a };
    assert_eq!(
        encode_packet(&bad, &ip, V3Ipv4Checksum::Rfc9568),
        Err(EncodeError::FirstAddressNotLinkLocal(swapped))
    );
}

#[test]
fn encoder_refuses_what_the_wire_cannot_carry() {
    let ip = IpParams::new(SRC4, GROUP4);
    let odd = Advertisement { interval_cs: 150, ..v2() };
    assert_eq!(
        encode_packet(&odd, &ip, V3Ipv4Checksum::Rfc9568),
        Err(EncodeError::V2Interval(150))
    );
    let long = Advertisement { interval_cs: 4096, ..v3() };
    assert_eq!(
        encode_packet(&long, &ip, V3Ipv4Checksum::Rfc9568),
        Err(EncodeError::IntervalOutOfRange(4096))
    );
    let auth_v3 = Advertisement { version: Version::V3, ..v2() };
    assert_eq!(encode_packet(&auth_v3, &ip, V3Ipv4Checksum::Rfc9568), Err(EncodeError::AuthOnV3));
    let empty = Advertisement { addresses: VirtualAddresses::V4(vec![]), ..v3() };
    assert_eq!(
        encode_packet(&empty, &ip, V3Ipv4Checksum::Rfc9568),
        Err(EncodeError::AddressCount(0))
    );
    let (a6, ip6) = v3_ipv6();
    let v2_on_v6 = Advertisement { version: Version::V2, ..a6.clone() };
    assert_eq!(
        encode_packet(&v2_on_v6, &ip6, V3Ipv4Checksum::Rfc9568),
        Err(EncodeError::V2OverIpv6)
    );
    assert!(matches!(
        encode_packet(&a6, &ip, V3Ipv4Checksum::Rfc9568),
        Err(EncodeError::FamilyMismatch { .. })
    ));
}

#[test]
fn priority_zero_and_owner_decode_as_sent() {
    for p in [Priority::RESIGN, Priority::OWNER, Priority::DEFAULT] {
        let a = Advertisement { priority: p, ..v2() };
        assert_eq!(decode(&packet(&a)).expect("decodes").advertisement.priority, p);
    }
}

#[test]
fn unicast_from_a_peer_may_skip_the_ttl_check_when_configured() {
    let peer = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 12));
    let mut bytes =
        encode_packet(&v2(), &IpParams::new(SRC4, peer), V3Ipv4Checksum::Rfc9568).expect("ok");
    patch_ipv4_header(&mut bytes, 8, 64);
    let strict = ReceiveRules { unicast_peers: vec![peer], ..ReceiveRules::default() };
    assert_eq!(
        decode_packet(&bytes, &strict),
        Err(DecodeError::TtlNot255 { field: "TTL", value: 64 })
    );
    let keepalived_like = ReceiveRules { unicast_any_ttl: true, ..strict };
    assert!(decode_packet(&bytes, &keepalived_like).is_ok());
    // Multicast always needs 255.
    let mut group = packet(&v2());
    patch_ipv4_header(&mut group, 8, 64);
    assert!(matches!(decode_packet(&group, &keepalived_like), Err(DecodeError::TtlNot255 { .. })));
}

//! Every vector decodes to the fields its file states, through the library and the CLI, and
//! re-encodes to the same bytes.

mod common;

use std::net::IpAddr;

use common::{captured, decode_json, hand_built};
use cplb_core::vrrp::{
    Authentication, ChecksumForm, IpParams, ReceiveRules, V3Ipv4Checksum, decode_packet,
    encode_packet,
};
use cplb_scenarios::hex_input;

/// The IP packet inside a captured frame, and the TOS and identification to re-encode it.
fn ip_of(frame_hex: &str) -> (Vec<u8>, u8, u16) {
    let frame = hex_input::parse(frame_hex).expect("hex");
    let ip = hex_input::ip_in_ethernet(&frame).expect("an IP frame");
    let (tos, ident) = tos_and_identification(&ip);
    (ip, tos, ident)
}

/// The IPv4 TOS and identification, or the IPv6 traffic class (and 0).
fn tos_and_identification(ip: &[u8]) -> (u8, u16) {
    if ip[0] >> 4 == 4 {
        (ip[1], u16::from_be_bytes([ip[4], ip[5]]))
    } else {
        ((ip[0] << 4) | (ip[1] >> 4), 0)
    }
}

#[test]
fn keepalived_captures_decode_to_what_tcpdump_printed() {
    let packets = captured();
    assert!(
        packets.len() >= 10,
        "expected the keepalived capture's adverts, found {}",
        packets.len()
    );
    for p in &packets {
        let (ip, tos, ident) = ip_of(&p.frame_hex);
        let rules = ReceiveRules { unicast_peers: vec![p.dst], ..ReceiveRules::default() };
        let got = decode_packet(&ip, &rules).unwrap_or_else(|e| panic!("{}: {e}", p.origin));
        let a = &got.advertisement;
        assert_eq!(
            (got.header.src, got.header.dst, got.header.ttl),
            (p.src, p.dst, p.ttl),
            "{}",
            p.origin
        );
        assert_eq!(a.version.number(), p.version, "{}", p.origin);
        assert_eq!(a.vrid.get(), p.vrid, "{}", p.origin);
        assert_eq!(a.priority.0, p.priority, "{}", p.origin);
        assert_eq!(a.interval_cs, p.interval_cs, "{}", p.origin);
        assert_eq!(a.addresses.iter().collect::<Vec<IpAddr>>(), p.addresses, "{}", p.origin);
        let auth = match &a.auth {
            Authentication::SimpleText(pass) => {
                Some(String::from_utf8_lossy(pass.trimmed()).into_owned())
            }
            Authentication::None => None,
        };
        assert_eq!(auth, p.auth, "{}", p.origin);

        // Re-encoding gives back the captured bytes, IP header included.
        let form = match got.checksum_form {
            ChecksumForm::PseudoHeader => V3Ipv4Checksum::PseudoHeader,
            _ => V3Ipv4Checksum::Rfc9568,
        };
        let params = IpParams { src: p.src, dst: p.dst, ttl: p.ttl, tos, identification: ident };
        assert_eq!(encode_packet(a, &params, form).expect("re-encode"), ip, "{}", p.origin);
    }
}

#[test]
fn keepalived_captures_decode_through_the_cli_also_as_ethernet_frames() {
    for p in captured() {
        let (ip, _, _) = ip_of(&p.frame_hex);
        let peer = p.dst.to_string();
        let from_ip = decode_json(&["--peer", &peer, &hex::encode(&ip)], None);
        let from_frame = decode_json(&["--peer", &peer, "-"], Some(&p.frame_hex));
        assert_eq!(from_ip, from_frame, "{}", p.origin);
        assert_eq!(from_ip["vrid"], p.vrid, "{}", p.origin);
        assert_eq!(from_ip["priority"], p.priority, "{}", p.origin);
        assert_eq!(from_ip["auth_data"].as_str().map(str::to_owned), p.auth, "{}", p.origin);
        assert_eq!(from_ip["checksum_ok"], true);
    }
}

#[test]
fn hand_built_vectors_decode_to_their_stated_fields() {
    let vectors = hand_built();
    assert!(vectors.len() >= 4, "v3 IPv4 (both forms) and v3 IPv6 vectors expected");
    for v in &vectors {
        let mut args: Vec<&str> = v.args.iter().map(String::as_str).collect();
        args.push("-");
        let got = decode_json(&args, Some(&v.hex));
        let want = v.expect.as_object().expect("expect is an object");
        for (key, value) in want {
            assert_eq!(&got[key], value, "{}: field {key}", v.path.display());
        }
    }
}

#[test]
fn hand_built_vectors_re_encode_to_the_same_bytes() {
    for v in hand_built() {
        let bytes = v.ip_packet();
        let peers = v.args.iter().filter_map(|a| a.parse().ok()).collect();
        let got = decode_packet(
            &bytes,
            &ReceiveRules { unicast_peers: peers, ..ReceiveRules::default() },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v.path.display()));
        let form = match got.checksum_form {
            ChecksumForm::PseudoHeader => V3Ipv4Checksum::PseudoHeader,
            _ => V3Ipv4Checksum::Rfc9568,
        };
        let (tos, identification) = tos_and_identification(&bytes);
        let params = IpParams {
            ttl: got.header.ttl,
            tos,
            identification,
            ..IpParams::new(got.header.src, got.header.dst)
        };
        let again = encode_packet(&got.advertisement, &params, form).expect("re-encode");
        assert_eq!(hex::encode(again), hex::encode(&bytes), "{}", v.path.display());
    }
}

//! Any bytes: decoding never panics, and whatever decodes re-encodes to a packet that decodes
//! to the same advertisement.
#![no_main]

use cplb_core::vrrp::{
    Advertisement, ChecksumForm, IpParams, ReceiveRules, V3Ipv4Checksum, decode_packet, encode_packet,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the unicast policy, so unicast packets are reached too.
    let Some((&selector, packet)) = data.split_first() else { return };
    let mut rules = ReceiveRules::default();
    if selector & 1 == 1 {
        if let Ok((header, _)) = cplb_core::vrrp::parse_ip(packet) {
            rules.unicast_peers.push(header.dst);
        }
    }
    let _ = Advertisement::decode_detached(packet);
    let Ok(got) = decode_packet(packet, &rules) else { return };
    let form = match got.checksum_form {
        ChecksumForm::PseudoHeader => V3Ipv4Checksum::PseudoHeader,
        _ => V3Ipv4Checksum::Rfc9568,
    };
    let ip = IpParams::new(got.header.src, got.header.dst);
    let again = encode_packet(&got.advertisement, &ip, form).expect("a decoded advertisement encodes");
    let back = decode_packet(&again, &rules).expect("a re-encoded advertisement decodes");
    assert_eq!(back.advertisement, got.advertisement);
    assert_eq!(back.checksum_form, got.checksum_form);
});

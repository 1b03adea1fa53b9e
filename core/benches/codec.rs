//! Decode and encode cost per packet: `cargo bench -p cplb-core --bench codec`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, IpParams, Priority, ReceiveRules, V3Ipv4Checksum,
    Version, VirtualAddresses, Vrid, decode_packet, encode_packet,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn k0s_v2() -> (Advertisement, IpParams) {
    let advert = Advertisement {
        version: Version::V2,
        vrid: Vrid::new(51).expect("non-zero"),
        priority: Priority(200),
        interval_cs: 100,
        auth: Authentication::SimpleText(AuthPass::new(b"k0s-lab1").expect("8 bytes")),
        addresses: VirtualAddresses::V4(vec![Ipv4Addr::new(192, 168, 122, 200)]),
    };
    let ip = IpParams::new(
        IpAddr::V4(Ipv4Addr::new(192, 168, 122, 37)),
        IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
    );
    (advert, ip)
}

fn v3_ipv6() -> (Advertisement, IpParams) {
    let advert = Advertisement {
        version: Version::V3,
        vrid: Vrid::new(51).expect("non-zero"),
        priority: Priority(200),
        interval_cs: 100,
        auth: Authentication::None,
        addresses: VirtualAddresses::V6(vec![
            "fe80::200".parse().expect("ll"),
            "fd00:200::200".parse().expect("ula"),
        ]),
    };
    (advert, IpParams::new("fe80::b".parse().expect("ll"), "ff02::12".parse().expect("group")))
}

fn v3_ipv4_pseudo() -> (Advertisement, IpParams) {
    let (v2, ip) = k0s_v2();
    (Advertisement { version: Version::V3, auth: Authentication::None, ..v2 }, ip)
}

fn codec(c: &mut Criterion) {
    let cases = [
        ("v2_ipv4_simple_auth", k0s_v2(), V3Ipv4Checksum::Rfc9568),
        ("v3_ipv4_pseudo_header", v3_ipv4_pseudo(), V3Ipv4Checksum::PseudoHeader),
        ("v3_ipv6", v3_ipv6(), V3Ipv4Checksum::Rfc9568),
    ];
    let rules = ReceiveRules::default();
    let mut group = c.benchmark_group("vrrp");
    group.throughput(Throughput::Elements(1));
    for (name, (advert, ip), form) in cases {
        let bytes = encode_packet(&advert, &ip, form).expect("valid");
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_packet(black_box(&bytes), &rules).expect("decodes"));
        });
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_packet(black_box(&advert), black_box(&ip), form).expect("encodes"));
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

//! A second opinion on the hand-built vectors: Wireshark's VRRP dissector (tshark).
//!
//! Each vector is written to a pcap (link type raw IP) and dissected twice, once with
//! `vrrp.v3_checksum_as_in_v2` off (pseudo-header for v3 over IPv4) and once on (RFC 9568
//! message only). tshark must agree on every field and on which checksum form is right.
//! Skipped with a reason when tshark is not installed, unless CPLB_REQUIRE_TOOLS=1 (the test
//! command installs tshark and sets it).

mod common;

use std::io::Write as _;
use std::process::Command;

use common::hand_built;

const LINKTYPE_RAW: u32 = 101;

fn pcap(packet: &[u8]) -> Vec<u8> {
    let len = u32::try_from(packet.len()).expect("small packet");
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0, 0, 65_535, LINKTYPE_RAW, 0, 0, len, len] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(packet);
    out
}

fn tshark_available() -> bool {
    let found = Command::new("tshark").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CPLB_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "tshark is required (CPLB_REQUIRE_TOOLS=1) but not installed"
        );
        // Written to the stderr handle directly so libtest's capture does not hide it.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tshark cross-check: tshark is not installed (the README's test command installs it)"
        );
    }
    found
}

/// Dissects one pcap; returns tshark's fields, tab separated.
fn dissect(path: &std::path::Path, checksum_as_v2: bool) -> Vec<String> {
    let pref =
        format!("vrrp.v3_checksum_as_in_v2:{}", if checksum_as_v2 { "TRUE" } else { "FALSE" });
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(["-o", &pref, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args([
            "-e",
            "vrrp.version",
            "-e",
            "vrrp.virt_rtr_id",
            "-e",
            "vrrp.prio",
            "-e",
            "vrrp.addr_count",
        ])
        .args([
            "-e",
            "vrrp.adver_int",
            "-e",
            "vrrp.short_adver_int",
            "-e",
            "vrrp.ip_addr",
            "-e",
            "vrrp.ipv6_addr",
        ])
        .args(["-e", "vrrp.auth_string", "-e", "vrrp.checksum.status"])
        .output()
        .expect("run tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim_end_matches('\n')
        .split('\t')
        .map(str::to_owned)
        .collect()
}

#[test]
fn tshark_agrees_with_every_hand_built_vector() {
    if !tshark_available() {
        return;
    }
    let tmp = common::TempDir::new("tshark");
    let dir = &tmp.0;
    for v in hand_built() {
        let bytes = v.ip_packet();
        let path = dir.join(v.path.file_stem().expect("stem")).with_extension("pcap");
        std::fs::write(&path, pcap(&bytes)).expect("write pcap");
        let e = &v.expect;
        let name = v.path.display().to_string();
        for as_v2 in [false, true] {
            let f = dissect(&path, as_v2);
            assert_eq!(f[0], e["version"].to_string(), "{name}: version");
            assert_eq!(f[1], e["vrid"].to_string(), "{name}: vrid");
            assert_eq!(f[2], e["priority"].to_string(), "{name}: priority");
            assert_eq!(f[3], e["count"].to_string(), "{name}: count");
            let interval: u64 = if e["version"] == 2 {
                f[4].parse::<u64>().expect("adver_int") * 100
            } else {
                f[5].parse().expect("short_adver_int")
            };
            assert_eq!(Some(interval), e["advert_interval_cs"].as_u64(), "{name}: interval");
            let addrs: Vec<&str> = e["addresses"]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|a| a.as_str())
                .collect();
            let shown = if e["ip_version"] == 4 { &f[6] } else { &f[7] };
            assert_eq!(shown, &addrs.join(","), "{name}: addresses");
            assert_eq!(f[8], e["auth_data"].as_str().unwrap_or_default(), "{name}: auth");
            // 1 = good, 0 = bad in tshark's checksum status.
            let good = match e["checksum_form"].as_str() {
                Some("rfc9568") => as_v2,
                Some("pseudo-header") => !as_v2,
                _ => true,
            };
            assert_eq!(
                f[9],
                if good { "1" } else { "0" },
                "{name}: checksum status with as_in_v2={as_v2}"
            );
        }
    }
}

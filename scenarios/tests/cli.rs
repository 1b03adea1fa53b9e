//! The `cplb packet` command-line contract: JSON fields, exit codes, one-line errors.

mod common;

use common::{cplb, decode_json};

const KEEPALIVED_ADVERT: &str = "45c0 0028 0009 0000 ff70 cfb6 0ac8 000c e000 0012 2133 c801 0101 5d49 0ac8 00c8 6b30 732d 6c61 6231";

fn encode(args: &[&str]) -> String {
    let mut all = vec!["packet", "encode"];
    all.extend_from_slice(args);
    let out = cplb(&all, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

/// Runs a decode that must fail: exit 2, nothing on stdout, one line on stderr.
fn decode_error(args: &[&str]) -> String {
    let mut all = vec!["packet", "decode"];
    all.extend_from_slice(args);
    let out = cplb(&all, None);
    assert_eq!(out.status.code(), Some(2), "cplb {all:?}");
    assert!(out.stdout.is_empty(), "stdout must be empty on error");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr, got {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn decode_prints_every_contract_field() {
    let j = decode_json(&[KEEPALIVED_ADVERT], None);
    let expected = serde_json::json!({
        "ip_version": 4, "src": "10.200.0.12", "dst": "224.0.0.18", "ttl": 255, "version": 2,
        "type": 1, "vrid": 51, "priority": 200, "count": 1, "advert_interval_cs": 100,
        "auth_type": "simple", "auth_data": "k0s-lab1", "checksum_ok": true, "checksum_form": "v2",
        "addresses": ["10.200.0.200"],
    });
    for (k, v) in expected.as_object().expect("object") {
        assert_eq!(&j[k], v, "field {k}");
    }
}

#[test]
fn decode_reads_stdin_and_0x_prefixes() {
    let with_prefix = format!("0x{}", KEEPALIVED_ADVERT.replace(' ', ""));
    assert_eq!(decode_json(&["-"], Some(&with_prefix)), decode_json(&[KEEPALIVED_ADVERT], None));
}

#[test]
fn errors_exit_2_with_one_line_naming_the_rule() {
    // TTL 254 (header checksum fixed up).
    let ttl = encode(&[
        "--version",
        "3",
        "--vrid",
        "1",
        "--address",
        "10.0.0.1",
        "--src",
        "10.0.0.2",
        "--ttl",
        "254",
    ]);
    assert!(decode_error(&[&ttl]).contains("TTL 254 is not 255"));
    // A flipped bit in the VRRP checksum.
    let mut bad = KEEPALIVED_ADVERT.replace(' ', "");
    bad.replace_range(54..56, "5e");
    assert!(decode_error(&[&bad]).contains("bad_checksum"));
    assert!(decode_error(&["45c0"]).contains("truncated"));
    assert!(decode_error(&["zz"]).contains("not a hex digit"));
    assert!(decode_error(&["--no-such-flag", "00"]).contains("--no-such-flag"));
    // Unicast without a configured peer.
    let unicast =
        encode(&["--vrid", "1", "--address", "10.0.0.1", "--src", "10.0.0.2", "--dst", "10.0.0.3"]);
    assert!(decode_error(&[&unicast]).contains("bad_destination"));
    assert_eq!(decode_json(&["--peer", "10.0.0.3", &unicast], None)["dst"], "10.0.0.3");
}

#[test]
fn encode_then_decode_round_trips_through_the_cli() {
    let cases: &[&[&str]] = &[
        &[
            "--version",
            "2",
            "--vrid",
            "51",
            "--priority",
            "200",
            "--auth-data",
            "k0s-lab1",
            "--address",
            "192.168.122.200",
            "--src",
            "192.168.122.37",
        ],
        &[
            "--version",
            "3",
            "--vrid",
            "7",
            "--advert-interval-cs",
            "35",
            "--address",
            "10.1.0.1,10.1.0.2",
            "--src",
            "10.1.0.9",
            "--checksum-form",
            "pseudo-header",
        ],
        &[
            "--version",
            "3",
            "--vrid",
            "9",
            "--priority",
            "255",
            "--address",
            "fe80::1",
            "--address",
            "fd00:200::1",
            "--src",
            "fe80::9",
        ],
    ];
    for args in cases {
        let j = decode_json(&[&encode(args)], None);
        let arg = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
        assert_eq!(j["vrid"].to_string(), arg("--vrid").expect("vrid"));
        assert_eq!(j["src"], arg("--src").expect("src"));
        if let Some(pass) = arg("--auth-data") {
            assert_eq!(j["auth_data"], pass);
            assert_eq!(j["auth_type"], "simple");
        }
        if let Some(form) = arg("--checksum-form") {
            assert_eq!(j["checksum_form"], form);
        }
    }
}

#[test]
fn payload_mode_decodes_the_bare_message() {
    let args =
        ["--version", "3", "--vrid", "4", "--address", "fe80::1", "--src", "fe80::2", "--payload"];
    let payload = encode(&args);
    let j = decode_json(&["--payload", "--src", "fe80::2", "--dst", "ff02::12", &payload], None);
    assert_eq!(j["checksum_form"], "ipv6");
    assert_eq!(j["ip_version"], 6);
    assert!(j["ttl"].is_null());
    // Without the addresses the IPv6 pseudo-header cannot be checked.
    assert!(decode_error(&["--payload", &payload]).contains("pseudo-header"));
    // v2 needs no addresses.
    let v2 = encode(&[
        "--version",
        "2",
        "--vrid",
        "4",
        "--address",
        "10.0.0.1",
        "--src",
        "10.0.0.2",
        "--payload",
    ]);
    let j = decode_json(&["--payload", &v2], None);
    assert_eq!((j["version"].as_u64(), j["checksum_form"].as_str()), (Some(2), Some("v2")));
}

#[test]
fn ignore_checksum_shows_a_corrupt_packet() {
    let mut bad = KEEPALIVED_ADVERT.replace(' ', "");
    bad.replace_range(54..56, "5e");
    let j = decode_json(&["--ignore-checksum", &bad], None);
    assert_eq!(j["checksum_ok"], false);
    assert_eq!(j["checksum"], "0x5d5e");
}

#[test]
fn encode_refuses_bad_requests_with_exit_2() {
    for args in [
        "--version 2 --vrid 1 --address fe80::1 --src fe80::2",
        "--vrid 0 --address 10.0.0.1 --src 10.0.0.2",
        "--version 2 --vrid 1 --auth-data 123456789 --address 10.0.0.1 --src 10.0.0.2",
        "--vrid 1 --address 10.0.0.1,fd00::1 --src 10.0.0.2",
        "--version 2 --vrid 1 --advert-interval-cs 150 --address 10.0.0.1 --src 10.0.0.2",
    ] {
        let mut all = vec!["packet", "encode"];
        all.extend(args.split_whitespace());
        let out = cplb(&all, None);
        assert_eq!(out.status.code(), Some(2), "{args}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{args}");
        assert!(out.stdout.is_empty(), "{args}");
    }
}

#[test]
fn non_link_local_first_ipv6_address_is_refused_unless_allowed() {
    let args = ["--vrid", "5", "--address", "fe80::1,fd00:200::1", "--src", "fe80::2"];
    let hex = encode(&args);
    // Swap the two addresses: the one's-complement sum is unchanged, the order is not.
    let swapped = format!("{}{}{}", &hex[..96], &hex[128..160], &hex[96..128]);
    assert!(decode_error(&[&swapped]).contains("first_address_not_link_local"));
    let j = decode_json(&["--allow-global-first-ipv6", &swapped], None);
    assert_eq!(j["addresses"], serde_json::json!(["fd00:200::1", "fe80::1"]));
}

#[test]
fn lab_bench_refuses_an_unknown_measure_by_name() {
    let out = cplb(&["lab", "bench", "--only", "failover,speed"], None);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--only speed") && stderr.contains("crash_k0s"), "{stderr}");
    assert!(out.stdout.is_empty());
}

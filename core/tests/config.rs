//! The k0s configuration model: the three file shapes, every default, every k0s rule, the
//! stricter rules, and that no input makes it panic.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use cplb_core::config::{
    Diagnostic, LbAlgo, LbKind, LoadBalancerMode, LoadOptions, Loaded, SourceKind, load,
};
use proptest::prelude::*;

fn file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/configs").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ok(text: &str) -> Loaded {
    load(text, LoadOptions::default())
        .unwrap_or_else(|r| panic!("expected valid, got {:#?}", r.errors))
}

/// The errors of an invalid text, as displayed.
fn errors(text: &str) -> Vec<String> {
    match load(text, LoadOptions::default()) {
        Ok(l) => panic!("expected errors, got a valid config: {:?}", l.config),
        Err(r) => r.errors.iter().map(Diagnostic::to_string).collect(),
    }
}

fn warnings(text: &str) -> Vec<String> {
    ok(text).warnings.iter().map(Diagnostic::to_string).collect()
}

/// A `spec:` fragment with one VRRP instance whose body is `instance` (indented lines).
fn instance(body: &str) -> String {
    let body: String = body.lines().map(|l| format!("          {l}\n")).collect();
    format!(
        "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      keepalived:\n        vrrpInstances:\n        -\n{body}"
    )
}

const BASE: &str = "virtualIPs: [\"10.0.0.200/24\"]\nauthPass: secret\n";

fn assert_one_error(text: &str, path_end: &str, contains: &str) {
    let errs = errors(text);
    assert!(
        errs.iter().any(|e| e.contains(&format!("{path_end} (line")) && e.contains(contains)),
        "no error at {path_end} containing {contains:?} in {errs:#?}"
    );
}

#[test]
fn reads_the_three_file_shapes_of_the_seed_document() {
    for (name, source) in [
        ("seed-k0s.yaml", SourceKind::ClusterConfig),
        ("seed-k0sctl.yaml", SourceKind::K0sctl),
        ("seed-fragment.yaml", SourceKind::Fragment),
    ] {
        let loaded = ok(&file(name));
        assert_eq!(loaded.source, source, "{name}");
        let cplb = loaded.config.spec.network.control_plane_load_balancing.expect("cplb");
        let k = cplb.keepalived.expect("keepalived");
        assert!(cplb.enabled);
        assert_eq!(k.vrrp_instances[0].virtual_ips[0].to_string(), "192.168.122.200/24");
        assert_eq!(k.vrrp_instances[0].auth_pass, "Example");
    }
}

#[test]
fn every_k0s_default_is_filled_in() {
    let loaded = ok(&file("seed-k0s.yaml"));
    let spec = &loaded.config.spec;
    assert_eq!(spec.api.port, 6443);
    let k = spec
        .network
        .control_plane_load_balancing
        .as_ref()
        .and_then(|c| c.keepalived.as_ref())
        .expect("k");
    let i = &k.vrrp_instances[0];
    assert_eq!((i.virtual_router_id, i.advert_interval_seconds, i.address_label), (51, 1, 10_000));
    assert_eq!(i.interface, "", "empty: the default route's interface, found on the node");
    assert!(i.unicast_peers.is_empty() && i.unicast_source_ip.is_none());
    assert_eq!(k.user_space_proxy_bind_port, 6444);
    assert!(!k.disable_load_balancer);
    let vs = &k.virtual_servers[0];
    assert_eq!(vs.delay_loop, Duration::from_secs(60));
    assert_eq!(
        (vs.lb_algo, vs.lb_kind, vs.persistence_timeout_seconds),
        (LbAlgo::Rr, LbKind::Dr, 360)
    );
    assert_eq!(k.mode(), LoadBalancerMode::Ipvs);
}

#[test]
fn every_field_is_read() {
    let loaded = ok(&file("full.yaml"));
    let spec = &loaded.config.spec;
    assert_eq!(spec.api.port, 7443);
    let k = spec
        .network
        .control_plane_load_balancing
        .as_ref()
        .and_then(|c| c.keepalived.as_ref())
        .expect("k");
    assert_eq!(k.user_space_proxy_bind_port, 7444);
    let a = &k.vrrp_instances[0];
    assert_eq!(
        (a.virtual_router_id, a.advert_interval_seconds, a.interface.as_str()),
        (10, 2, "eth0")
    );
    assert_eq!(a.unicast_source_ip, Some("10.200.0.10".parse().expect("ip")));
    assert_eq!(a.unicast_peers.len(), 2);
    let b = &k.vrrp_instances[1];
    assert_eq!(
        (b.virtual_router_id, b.address_label),
        (52, 20_000),
        "automatic VRID is 51 + index"
    );
    let vs = &k.virtual_servers[0];
    assert_eq!(vs.delay_loop, Duration::from_millis(1500));
    assert_eq!(
        (vs.lb_algo, vs.lb_kind, vs.persistence_timeout_seconds),
        (LbAlgo::Wlc, LbKind::Nat, 60)
    );
}

#[test]
fn the_three_load_balancing_modes() {
    let mode = |extra: &str| {
        let text = format!("{}{extra}", instance(BASE));
        ok(&text)
            .config
            .spec
            .network
            .control_plane_load_balancing
            .and_then(|c| c.keepalived)
            .map(|k| k.mode())
    };
    assert_eq!(mode(""), Some(LoadBalancerMode::UserspaceProxy));
    assert_eq!(mode("        disableLoadBalancer: true\n"), Some(LoadBalancerMode::VipOnly));
    assert_eq!(
        mode("        virtualServers: [{ipAddress: 10.0.0.200}]\n"),
        Some(LoadBalancerMode::Ipvs)
    );
}

#[test]
fn k0s_rules_are_enforced_with_path_and_position() {
    assert_one_error(
        &instance("authPass: x\n"),
        "vrrpInstances[0].virtualIPs",
        "VirtualIPs must be defined",
    );
    assert_one_error(
        &instance("virtualIPs: [10.0.0.1]\nauthPass: x\n"),
        "virtualIPs[0]",
        "must be a CIDR",
    );
    assert_one_error(
        &instance("virtualIPs: [\"10.0.0.1/24\"]\n"),
        "vrrpInstances[0].authPass",
        "AuthPass must be defined",
    );
    assert_one_error(
        &instance(&format!("{BASE}virtualRouterID: 256\n")),
        "virtualRouterID",
        "range of 1-255",
    );
    assert_one_error(
        &instance(&format!("{BASE}virtualRouterID: -1\n")),
        "virtualRouterID",
        "range of 1-255",
    );
    assert_one_error(
        &instance("virtualIPs: [\"10.0.0.1/24\"]\nauthPass: ninechars\n"),
        "authPass",
        "8 characters or less",
    );
    assert_one_error(
        &instance(&format!("{BASE}unicastPeers: [10.0.0.2]\n")),
        "unicastSourceIP",
        "require a valid UnicastSourceIP",
    );
    assert_one_error(
        &instance(&format!("{BASE}unicastSourceIP: 10.0.0.2\nunicastPeers: [10.0.0.2]\n")),
        "unicastPeers",
        "must not contain the UnicastSourceIP",
    );
    assert_one_error(
        &instance(&format!("{BASE}unicastSourceIP: 10.0.0.1\nunicastPeers: [example.com]\n")),
        "unicastPeers[0]",
        "valid IP",
    );
    assert_one_error(
        &instance(&format!("{BASE}addressLabel: 0xffffffff\n")),
        "addressLabel",
        "reserved",
    );
    let proxy = format!("{}        userSpaceProxyBindPort: 70000\n", instance(BASE));
    assert_one_error(&proxy, "userSpaceProxyBindPort", "range of 1-65535");
    let vs = |body: &str| format!("{}        virtualServers:\n        - {body}\n", instance(BASE));
    assert_one_error(
        &vs("{delayLoop: 1m}"),
        "virtualServers[0].ipAddress",
        "IPAddress must be defined",
    );
    assert_one_error(&vs("{ipAddress: not-an-ip}"), "ipAddress", "invalid IP address");
    assert_one_error(&vs("{ipAddress: 10.0.0.200, lbAlgo: fifo}"), "lbAlgo", "invalid LBAlgo");
    assert_one_error(&vs("{ipAddress: 10.0.0.200, lbKind: ROUTE}"), "lbKind", "invalid LBKind");
    assert_one_error(
        &vs("{ipAddress: 10.0.0.200, persistenceTimeoutSeconds: -1}"),
        "persistenceTimeoutSeconds",
        "1-2678400",
    );
    assert_one_error(
        &vs("{ipAddress: 10.0.0.200, persistenceTimeoutSeconds: 2678401}"),
        "persistenceTimeoutSeconds",
        "1-2678400",
    );
    assert_one_error(
        &vs("{ipAddress: 10.0.0.200, delayLoop: -1s}"),
        "delayLoop",
        "must be positive",
    );
    assert_one_error(&vs("{ipAddress: 10.0.0.200, delayLoop: 1d}"), "delayLoop", "unknown unit");
    let typed = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      type: HAProxy\n";
    assert_one_error(typed, "controlPlaneLoadBalancing.type", "unsupported CPLB type: HAProxy");
}

#[test]
fn automatic_router_ids_run_out_after_255() {
    let many: String = (0..206)
        .map(|i| {
            format!(
                "        - {{virtualIPs: [\"10.1.{}.{}/16\"], authPass: x}}\n",
                i / 200,
                i % 200 + 1
            )
        })
        .collect();
    let text = format!(
        "spec:\n  network:\n    controlPlaneLoadBalancing:\n      keepalived:\n        vrrpInstances:\n{many}"
    );
    assert_one_error(
        &text,
        "vrrpInstances[205].virtualRouterID",
        "automatic virtualRouterIDs exceeded",
    );
}

#[test]
fn rules_outside_the_schema() {
    let single =
        load(&file("seed-fragment.yaml"), LoadOptions { single: true }).expect_err("refused");
    assert!(
        single.errors[0].to_string().contains("cannot be used in a single-node cluster"),
        "{:?}",
        single.errors
    );
    let text = file("seed-k0s.yaml")
        .replace("    address: 192.168.122.37\n", "    externalAddress: 192.168.122.200\n");
    assert_one_error(
        &text,
        "keepalived.virtualServers",
        "externalAddress (192.168.122.200) and virtual servers cannot be used together",
    );
    // externalAddress without virtual servers is fine.
    ok(&file("seed-fragment.yaml")
        .replace("spec:\n", "spec:\n  api:\n    externalAddress: 192.168.122.200\n"));
}

#[test]
fn stricter_than_k0s_duplicate_router_ids_and_vips_and_foreign_virtual_servers() {
    let two = |a: &str, b: &str| format!("{}        - {b}\n", instance(a));
    assert_one_error(
        &two(
            &format!("{BASE}virtualRouterID: 52\n"),
            "{virtualIPs: [\"10.0.0.201/24\"], authPass: x}",
        ),
        "vrrpInstances[1].virtualRouterID",
        "also used by vrrpInstances[0]",
    );
    assert_one_error(
        &two(BASE, "{virtualIPs: [\"10.0.0.200/16\"], authPass: x}"),
        "vrrpInstances[1].virtualIPs",
        "VIP 10.0.0.200 is also in vrrpInstances[0]",
    );
    let foreign = format!("{}        virtualServers: [{{ipAddress: 10.0.0.99}}]\n", instance(BASE));
    assert_one_error(
        &foreign,
        "virtualServers[0].ipAddress",
        "not one of the VRRP instances' virtualIPs",
    );
    let twice = format!(
        "{}        virtualServers: [{{ipAddress: 10.0.0.200}}, {{ipAddress: 10.0.0.200}}]\n",
        instance(BASE)
    );
    assert_one_error(&twice, "virtualServers[1].ipAddress", "already defined");
}

#[test]
fn unknown_keys_inside_the_block_are_errors_elsewhere_ignored() {
    let text = instance(&format!("{BASE}virtualRouterId: 7\nauthPas: x\n"));
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.contains("vrrpInstances[0].authPas (line")
            && e.contains("did you mean \"authPass\"")),
        "{errs:#?}"
    );
    // A case-only difference is read, as k0s (Go's JSON) does, with a warning.
    let text = instance(&format!("{BASE}virtualRouterId: 7\n"));
    let loaded = ok(&text);
    let k = loaded
        .config
        .spec
        .network
        .control_plane_load_balancing
        .and_then(|c| c.keepalived)
        .expect("k");
    assert_eq!(k.vrrp_instances[0].virtual_router_id, 7);
    assert!(loaded.warnings.iter().any(|w| w.message.contains("ignoring case")));
    // Keys outside controlPlaneLoadBalancing are k0s's business.
    ok(
        "spec:\n  storage: {type: kine}\n  network:\n    provider: calico\n    controlPlaneLoadBalancing: {enabled: false}\n",
    );
}

#[test]
fn errors_name_the_path_line_and_column() {
    let text = file("seed-k0s.yaml").replace("authPass: Example", "authPass: ExampleTooLong");
    let errs = errors(&text);
    assert_eq!(
        errs,
        [
            "error: spec.network.controlPlaneLoadBalancing.keepalived.vrrpInstances[0].authPass (line 20, column 21): AuthPass must be 8 characters or less: got 14 bytes; VRRPv2 carries only 8"
        ]
    );
    let k0sctl = file("seed-k0sctl.yaml").replace("authPass: Example", "authPass: ExampleTooLong");
    assert!(errors(&k0sctl)[0].starts_with("error: spec.k0s.config.spec.network.controlPlaneLoadBalancing.keepalived.vrrpInstances[0].authPass (line 24, column 27)"));
}

#[test]
fn all_errors_are_collected() {
    let text =
        instance("virtualIPs: [10.0.0.1]\nauthPass: ninechars\nvirtualRouterID: 300\nbogus: 1\n");
    assert_eq!(errors(&text).len(), 4, "{:#?}", errors(&text));
}

#[test]
fn warnings_for_yaml_surprises_mixed_families_and_truncation() {
    let w = warnings(&instance("virtualIPs: [\"10.0.0.1/24\"]\nauthPass: 0123\n"));
    assert!(w.iter().any(|w| w.contains("authPass") && w.contains("\"83\"")), "{w:#?}");
    let w = warnings(&instance("virtualIPs: [\"10.0.0.1/24\", \"fd00::1/64\"]\nauthPass: x\n"));
    assert!(w.iter().any(|w| w.contains("mixes IPv4 and IPv6")), "{w:#?}");
    let w = warnings(&format!(
        "{}        virtualServers: [{{ipAddress: 10.0.0.200, delayLoop: 1234567ns}}]\n",
        instance(BASE)
    ));
    assert!(w.iter().any(|w| w.contains("truncated") && w.contains("1234µs")), "{w:#?}");
    assert!(w.iter().any(|w| w.contains("below 100ms")), "{w:#?}");
    let w = warnings(&format!(
        "{}        virtualServers: [{{ipAddress: 10.0.0.200, delayLoop: 100ms}}]\n",
        instance(BASE)
    ));
    assert!(!w.iter().any(|w| w.contains("below 100ms")), "{w:#?}");
    let quoted = errors(&instance(&format!("{BASE}virtualRouterID: \"51\"\n")));
    assert!(quoted[0].contains("quoted string \"51\""), "{quoted:?}");
}

#[test]
fn garbage_and_truncated_files_are_errors_not_panics() {
    for text in [
        "",
        "---\n",
        "[1, 2",
        "spec: [",
        "\u{0}\u{1}",
        "spec:\n  network: 7\n",
        "a: *b\n",
        "apiVersion: v1\nkind: Pod\n",
        "- 1\n- 2\n",
        "spec: {}\n---\nspec: {}\n",
    ] {
        assert!(load(text, LoadOptions::default()).is_err(), "{text:?} accepted");
    }
    let full = file("full.yaml");
    for cut in (0..full.len()).filter(|i| full.is_char_boundary(*i)) {
        let _ = load(&full[..cut], LoadOptions::default());
    }
}

#[test]
fn a_misplaced_block_is_pointed_out() {
    let w = warnings("spec:\n  controlPlaneLoadBalancing:\n    enabled: true\n");
    assert!(
        w.iter().any(|w| w.contains("spec.controlPlaneLoadBalancing")
            && w.contains("belongs under spec.network")),
        "{w:#?}"
    );
}

#[test]
fn windows_files_with_a_byte_order_mark_and_crlf_read_the_same() {
    let unix = file("seed-fragment.yaml");
    let windows = format!("\u{feff}{}", unix.replace('\n', "\r\n"));
    assert_eq!(ok(&windows).config, ok(&unix).config);
}

#[test]
fn an_alias_bomb_is_cheap() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    text.push_str("spec: *a29\n");
    assert!(load(&text, LoadOptions::default()).is_err());
}

/// YAML text built from random pieces of a real config.
fn yamlish() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("spec:".to_owned()),
        Just("  network:".to_owned()),
        Just("    controlPlaneLoadBalancing:".to_owned()),
        Just("      enabled: true".to_owned()),
        Just("      keepalived:".to_owned()),
        Just("        vrrpInstances:".to_owned()),
        Just("        - virtualIPs: [\"10.0.0.1/24\"]".to_owned()),
        Just("          authPass: x".to_owned()),
        Just("          virtualRouterID: 300".to_owned()),
        Just("        virtualServers: [{ipAddress: 10.0.0.1}]".to_owned()),
        Just("          unicastPeers: [10.0.0.2, '::1']".to_owned()),
        Just("  api: {port: 0x10}".to_owned()),
        "[ -~]{0,30}".prop_map(|s| s),
        (0usize..12, "[a-zA-Z:\\-\\[\\]{}&*!|>'\" ]{0,12}")
            .prop_map(|(n, s)| format!("{}{s}", " ".repeat(n))),
    ];
    proptest::collection::vec(pieces, 0..30).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn loading_never_panics(text in yamlish()) {
        let _ = load(&text, LoadOptions::default());
        let _ = load(&text, LoadOptions { single: true });
    }

    #[test]
    fn loading_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = load(&text, LoadOptions::default());
    }

    #[test]
    fn every_error_points_into_the_file(text in yamlish()) {
        if let Err(r) = load(&text, LoadOptions::default()) {
            let lines = text.lines().count().max(1);
            for e in r.errors {
                prop_assert!(e.mark.line >= 1 && e.mark.line <= lines + 1, "{} outside {} lines", e, lines);
                prop_assert!(!e.path.is_empty() && !e.message.is_empty());
            }
        }
    }
}

#[test]
fn vips_and_peers_keep_their_families() {
    let loaded = ok(&file("full.yaml"));
    let k = loaded
        .config
        .spec
        .network
        .control_plane_load_balancing
        .and_then(|c| c.keepalived)
        .expect("k");
    assert!(k.vrrp_instances[1].virtual_ips[0].addr.is_ipv6());
    let peers: Vec<IpAddr> = k.vrrp_instances[0].unicast_peers.clone();
    assert!(peers.iter().all(IpAddr::is_ipv4));
}

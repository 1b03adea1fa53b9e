//! `cplb validate`: exit codes, output formats and the one-line error contract.

mod common;

use std::path::Path;

use common::cplb;

fn config(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../core/tests/configs")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_valid_file_prints_the_effective_configuration() {
    for name in ["seed-k0s.yaml", "seed-k0sctl.yaml", "seed-fragment.yaml", "full.yaml"] {
        let out = cplb(&["validate", &config(name)], None);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let yaml = String::from_utf8(out.stdout).expect("utf-8");
        let vrid = if name == "full.yaml" { "virtualRouterID: 10" } else { "virtualRouterID: 51" };
        assert!(yaml.contains(vrid), "{name}: {yaml}");
        assert!(yaml.contains("userSpaceProxyBindPort:"), "{name}");
    }
}

#[test]
fn json_output_has_every_default() {
    let out = cplb(&["validate", "--json", &config("seed-k0s.yaml")], None);
    assert_eq!(out.status.code(), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let k = &j["spec"]["network"]["controlPlaneLoadBalancing"]["keepalived"];
    assert_eq!(k["vrrpInstances"][0]["virtualRouterID"], 51);
    assert_eq!(k["vrrpInstances"][0]["advertIntervalSeconds"], 1);
    assert_eq!(k["userSpaceProxyBindPort"], 6444);
    assert_eq!(k["virtualServers"][0]["lbAlgo"], "rr");
    assert_eq!(k["virtualServers"][0]["lbKind"], "DR");
    assert_eq!(k["virtualServers"][0]["persistenceTimeoutSeconds"], 360);
    assert_eq!(k["virtualServers"][0]["delayLoop"], "1m0s");
    assert_eq!(j["spec"]["api"]["port"], 6443);
}

#[test]
fn an_invalid_file_exits_2_with_one_error_per_line() {
    let text = std::fs::read_to_string(config("seed-k0s.yaml"))
        .expect("read")
        .replace("authPass: Example", "authPass: ExampleTooLong\n          virtualRouterID: 999");
    let out = cplb(&["validate", "-"], Some(&text));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    for e in errors {
        assert!(
            e.contains("spec.network.controlPlaneLoadBalancing.keepalived.vrrpInstances[0]."),
            "{e}"
        );
        assert!(e.contains(" (line ") && e.contains(", column "), "{e}");
    }
}

#[test]
fn single_refuses_cplb_and_warnings_keep_exit_0() {
    let out = cplb(&["validate", "--single", &config("seed-fragment.yaml")], None);
    assert_eq!(out.status.code(), Some(2));
    let text = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: yes\n      keepalived:\n        vrrpInstances:\n        - {virtualIPs: [\"10.0.0.1/24\"], authPass: x}\n";
    let out = cplb(&["validate", "-"], Some(text));
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).lines().all(|l| l.starts_with("warning: ")));
    assert!(!out.stderr.is_empty());
}

#[test]
fn unreadable_files_are_one_line_errors() {
    let out = cplb(&["validate", "/nonexistent/k0s.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let out = cplb(&["validate", "-"], Some("spec: [unclosed"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: <document> (line "));
}

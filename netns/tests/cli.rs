//! `cplbd`'s command line, without root: configuration errors are refused as `cplb validate`
//! reports them, before anything touches the kernel.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn cplbd(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cplbd")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_invalid_configuration_is_refused_with_the_validate_messages() {
    let dir = std::env::temp_dir().join(format!("cplbd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("k0s.yaml");
    let text = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n        - virtualIPs: [\"10.0.0.300/24\"]\n          authPass: k0s\n        userSpaceProxyBindPortt: 6444\n";
    std::fs::write(&file, text).unwrap();
    let (code, stderr) = cplbd(&["--config", file.to_str().unwrap()]);
    let rejected = cplb_core::config::load(text, cplb_core::config::LoadOptions { single: false })
        .expect_err("invalid");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!rejected.errors.is_empty());
    for e in &rejected.errors {
        assert!(stderr.contains(&e.to_string()), "missing {e}\nin {stderr}");
    }
    let (code, stderr) = cplbd(&["--config", dir.join("absent.yaml").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("absent.yaml"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_name_the_argument() {
    let (code, stderr) = cplbd(&["--config", "x.yaml", "--metrics", "nowhere"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--metrics"), "{stderr}");
    let (code, stderr) = cplbd(&["--config", "x.yaml", "--dial-timeout", "soon"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("\"soon\" is not a duration"), "{stderr}");
}

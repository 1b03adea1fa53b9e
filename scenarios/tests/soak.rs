//! `cplb lab soak` on the namespace lab: a few crash and power-off cycles, each followed by
//! the lab's checks (one master, no stale VIP or rule, the client answered). Root only; in
//! a test binary of its own, since it builds the `cplb-lab-*` namespaces that no other test
//! may touch at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What a cycle may take from the fault to the client answered again: Master_Down_Interval
/// (3.2 s) plus a restart delay of up to 5 s when the master was crashed, with room to spare.
const RECOVERY_LIMIT_S: f64 = 10.0;

fn cplb() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cplb"))
}

fn run(args: &[&str]) -> Output {
    Command::new(cplb()).args(args).output().unwrap_or_else(|e| panic!("cplb {args:?}: {e}"))
}

/// Takes the lab down when the test ends, also when it panics.
struct LabDown;

impl Drop for LabDown {
    fn drop(&mut self) {
        let out = run(&["lab", "down"]);
        if !out.status.success() {
            eprintln!("cplb lab down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn soak_three_cycles_of_crashes_and_power_offs_leave_one_master_and_nothing_stale() {
    assert!(cplb_netns::topology::is_root(), "needs root");
    let cplbd = Path::new(env!("CARGO_BIN_EXE_cplb")).with_file_name("cplbd");
    assert!(
        cplbd.exists(),
        "{} is built (cargo build -p cplb-netns, or cargo test --workspace)",
        cplbd.display()
    );
    let _down = LabDown;
    let up = run(&["lab", "up"]);
    assert!(
        up.status.success(),
        "cplb lab up: {}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );

    let out = run(&["lab", "soak", "--cycles", "3", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "cplb lab soak:\n{stdout}\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(v["failures"], 0, "{v:#}\n{stderr}");
    assert_eq!(v["cycles"], 3, "{v:#}");
    assert!(v["seed"].is_u64(), "{v:#}");
    let recovery = v["recovery_s"].as_array().expect("recovery_s");
    assert_eq!(recovery.len(), 3, "{v:#}");
    for r in recovery {
        let r = r.as_f64().unwrap_or_else(|| panic!("a cycle without recovery: {v:#}"));
        assert!((0.0..RECOVERY_LIMIT_S).contains(&r), "recovery {r} s: {v:#}\n{stderr}");
    }
    // Both faults ran (odd cycles SIGKILL, even ones power-off), each cycle a line on stderr.
    let faults: Vec<&str> =
        v["runs"].as_array().expect("runs").iter().filter_map(|c| c["fault"].as_str()).collect();
    assert_eq!(faults, ["sigkill", "power-off", "sigkill"], "{v:#}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("cycle ")).count(), 3, "{stderr}");
}

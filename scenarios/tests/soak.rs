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
    assert!(cplb_lab::topology::is_root(), "needs root");
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

    // And on the same lab, `lab failover --out` draws a real power-off as the simulated runs
    // are drawn: each controller's lane from its cplbd, the VIP's holder, the client's ticks.
    let dir = std::env::temp_dir().join(format!("cplb-lab-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(cplb())
        .args(["lab", "failover", "--reps", "2", "--out"])
        .arg(&dir)
        .output()
        .expect("cplb lab failover runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cplb lab failover --out: {stderr}");
    let json = std::fs::read_to_string(dir.join("run.json")).expect("run.json written");
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report.html written");
    assert!(dir.join("report.md").exists());
    let _ = std::fs::remove_dir_all(&dir);
    let run = cplb_reports::Run::from_json(&json).expect("a run");
    assert_eq!(run.driver, "lab");
    assert_eq!(run.vrrp_hosts(), ["controller-0", "controller-1", "controller-2"], "{json}");
    assert_eq!((run.failovers.len(), run.faults.len()), (2, 2), "{json}");
    for (f, fault) in run.failovers.iter().zip(&run.faults) {
        assert_eq!(fault.label, format!("poweroff {}", f.from));
        let (at, answered) = (f.fault_at_s.unwrap(), f.vip_answering_at_s.unwrap());
        // The old master went down at its power-off, the new one became master and took
        // the VIP before the client was answered, and that client failed in between.
        let seen = |host: &str, state: &str, from: f64, to: f64| {
            run.states
                .iter()
                .any(|s| s.host == host && s.state == state && (from..=to).contains(&s.at_s))
        };
        assert!(seen(&f.from, "down", at - 0.1, at + 1.0), "{} down at {at}: {json}", f.from);
        assert!(seen(&f.to, "master", at, answered + 0.2), "{} master by {answered}: {json}", f.to);
        assert!(
            run.vip_holders
                .iter()
                .any(|v| v.host == f.to && (at..=answered + 0.3).contains(&v.from_s))
        );
        assert!(run.attempts.iter().any(|a| !a.ok && (at..answered).contains(&a.at_s)), "{json}");
    }
    assert!(html.contains("class=\"lane\"") && html.contains("poweroff controller-"));
}

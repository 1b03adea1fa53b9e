//! `cplb lab bench --reps 1 --only failover` on its namespaces, so that the command cannot
//! rot: cplbd and keepalived each fail over once per failover measure, the JSON has the
//! contract's shape, and cplbd stays within the protocol's bounds. Root only; a test binary
//! of its own, since it builds the `cplb-bench-*` namespaces no other test touches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn cplb() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cplb"))
}

#[test]
#[ignore = "needs root: network namespaces"]
fn lab_bench_runs_every_failover_measure_for_cplbd_and_keepalived() {
    assert!(cplb_lab::topology::is_root(), "needs root");
    let cplbd = Path::new(env!("CARGO_BIN_EXE_cplb")).with_file_name("cplbd");
    assert!(cplbd.exists(), "{} is built (cargo test --workspace builds it)", cplbd.display());
    let out_dir = std::env::temp_dir().join(format!("cplb-bench-test-{}", std::process::id()));
    let out = Command::new(cplb())
        .args(["lab", "bench", "--reps", "1", "--only", "failover", "--json", "--out"])
        .arg(&out_dir)
        .output()
        .expect("cplb lab bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cplb lab bench failed:\n{stdout}\n{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let rows = v["measures"].as_array().expect("measures");
    for measure in ["crash_k0s", "crash_v3_100ms", "graceful", "first_election"] {
        for contender in ["cplbd", "keepalived"] {
            let row = rows
                .iter()
                .find(|r| r["measure"] == measure && r["contender"] == contender)
                .unwrap_or_else(|| panic!("no {measure} row for {contender}: {v:#}"));
            assert_eq!(row["unit"], "s", "{row}");
            let rep = &row["reps"][0];
            let from_fault = rep["from_fault_s"].as_f64().expect("from_fault_s");
            let bound = row["bound"].as_f64().expect("a failover row has its bound");
            assert!(from_fault > 0.0 && row["median"] == rep["from_fault_s"], "{row}");
            if measure != "first_election" {
                assert!(rep["from_last_advert_s"].as_f64().is_some(), "{row}");
            }
            // cplbd within the protocol: a crash costs at most Master_Down_Interval after
            // the last advert, a resignation Skew_Time (plus the client's 10 ms probe and
            // the reaction), a first election Master_Down_Interval from the start.
            if contender == "cplbd" {
                let since = rep["from_last_advert_s"].as_f64().unwrap_or(from_fault);
                let slack = if measure == "first_election" { 0.3 } else { 0.05 };
                assert!(
                    since <= bound + slack,
                    "{measure}: {since} s over the bound {bound} s\n{stderr}"
                );
            }
        }
    }
    let md = std::fs::read_to_string(out_dir.join("bench.md")).expect("bench.md written");
    assert!(md.contains("| crash_k0s | cplbd | s |"), "{md}");
    assert!(out_dir.join("bench.json").exists());
    let _ = std::fs::remove_dir_all(&out_dir);
    // Nothing left behind.
    let left = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("cplb-bench-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "namespaces left behind");
}

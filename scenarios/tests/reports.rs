//! Every run as a report: `cplb sim run --out` (engine and `--driver daemon`) and `cplb sim
//! fuzz --out` write run.json, report.md and report.html; `cplb report` redraws them; the
//! README's picture is the seed story as the command draws it today.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{TempDir, cplb};
use cplb_reports::Run;

/// The README's picture and the command that draws it.
const PICTURE: &str = "docs/seed-poweroff.svg";
const REDRAW: &str = "cargo run --release -q --bin cplb -- sim run seed-poweroff --out target/seed-poweroff && cargo run --release -q --bin cplb -- report target/seed-poweroff/run.json --svg docs/seed-poweroff.svg";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run_out(args: &[&str], dir: &TempDir) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    let out_dir = dir.0.to_string_lossy().into_owned();
    all.extend(["--out", &out_dir]);
    let out = cplb(&all, None);
    assert!(out.status.success(), "cplb {all:?}: {}", String::from_utf8_lossy(&out.stderr));
    for file in ["run.json", "report.md", "report.html"] {
        assert!(dir.0.join(file).exists(), "{file} written");
    }
    Run::from_json(&read(&dir.0.join("run.json"))).expect("run.json is a run")
}

#[test]
fn sim_run_out_writes_the_run_and_its_reports_and_cplb_report_redraws_them() {
    let dir = TempDir::new("report-engine");
    let run = run_out(&["sim", "run", "seed-poweroff"], &dir);
    assert_eq!((run.driver.as_str(), run.title.as_str()), ("engine", "seed-poweroff"));
    assert_eq!(run.vrrp_hosts(), ["controller-0", "controller-1", "controller-2"]);
    let f = run.failovers.first().expect("the failover");
    assert_eq!(f.from, "controller-0");
    assert!(run.faults.iter().any(|x| x.label == "poweroff controller-0"));
    assert!(run.states.iter().any(|s| s.host == "controller-0" && s.state == "down"));
    assert!(run.attempts.iter().any(|a| !a.ok) && run.attempts.iter().any(|a| a.ok));
    assert!(run.vip_holders.iter().any(|v| v.host == f.to && v.until_s.is_none()));
    assert!(run.views_before.contains("192.168.122.200"), "the seed's views");
    let html = read(&dir.0.join("report.html"));
    assert!(html.contains("class=\"lane\"") && html.contains("poweroff controller-0"));

    // Redrawn from run.json alone: the same files.
    let (again_html, again_md) = (dir.0.join("again.html"), dir.0.join("again.md"));
    let out = cplb(
        &[
            "report",
            &dir.0.join("run.json").to_string_lossy(),
            "--html",
            &again_html.to_string_lossy(),
            "--md",
            &again_md.to_string_lossy(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&again_html), html);
    assert_eq!(read(&again_md), read(&dir.0.join("report.md")));
}

#[test]
fn cplb_report_names_what_is_wrong_with_its_input() {
    let dir = TempDir::new("report-bad");
    let bad = dir.0.join("run.json");
    std::fs::write(&bad, "{\"driver\": \"engine\"}").unwrap();
    let out = cplb(&["report", &bad.to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run.json") && err.contains("missing field"), "{err}");
    let out = cplb(&["report", &dir.0.join("absent.json").to_string_lossy()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.json"));
}

#[test]
fn a_daemon_driver_run_is_drawn_from_the_same_shape() {
    let dir = TempDir::new("report-daemon");
    let run = run_out(&["sim", "run", "seed-poweroff", "--driver", "daemon"], &dir);
    assert_eq!(run.driver, "daemon");
    assert_eq!(run.vrrp_hosts(), ["controller-0", "controller-1", "controller-2"]);
    assert!(run.states.iter().any(|s| s.state == "master"));
    assert!(run.failovers.iter().any(|f| f.from == "controller-0" && f.failover_s.is_some()));
    assert!(run.attempts.iter().any(|a| !a.ok), "the client's failures during the failover");
}

#[test]
fn sim_fuzz_out_writes_the_campaign_page_with_its_histograms() {
    let dir = TempDir::new("report-fuzz");
    let out_dir = dir.0.to_string_lossy().into_owned();
    let out = cplb(
        &["sim", "fuzz", "--cases", "20", "--seed", "3", "--jobs", "2", "--out", &out_dir],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = read(&dir.0.join("run.json"));
    let campaign: cplb_reports::Campaign = serde_json::from_str(&json).expect("a campaign");
    assert_eq!((campaign.cases, campaign.seed), (20, 3));
    assert!(!campaign.failover_s.is_empty(), "generated cases fail over");
    assert_eq!(campaign.longest_outage_s.len() as u64, 20 - campaign.failures.len() as u64);
    let html = read(&dir.0.join("report.html"));
    assert!(html.contains("class=\"histogram\"") && html.contains("Failover times"));
    assert!(read(&dir.0.join("report.md")).contains("## Failover times"));
}

#[test]
fn the_readme_picture_is_the_seed_story_as_drawn_today() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = TempDir::new("report-picture");
    let run = run_out(&["sim", "run", "seed-poweroff"], &dir);
    let committed = read(&root.join(PICTURE));
    assert!(
        committed == cplb_reports::timeline(&run),
        "{PICTURE} is not what the seed story draws today; redraw it with:\n  {REDRAW}"
    );
    assert!(read(&root.join("README.md")).contains(&format!("]({PICTURE})")));
}

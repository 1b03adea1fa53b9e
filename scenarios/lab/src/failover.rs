//! `cplb lab failover`: power-offs of the lab's master measured from a client connecting to
//! the VIP (the master's link down, then its processes killed, so no goodbye leaves it), and
//! what the command prints: per rep, median/min/max, JSON and the views afterwards. With
//! `--out`, `record` draws the run for the reports. With `--kernel vm`, the same
//! command inside the guest.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cplb_netns::status;
use serde::Serialize;

use crate::client::{Attempt, client_loop};
use crate::layout::{API_PORT, CLIENT, VIP, VM_DIR, config_path, socket, topo_handle};
use crate::processes::{Programs, start_controller};
use crate::record::{Recorder, Rep};
use crate::state::{masters, views, wait_for_single_master};
use crate::stats::median_min_max;
use crate::topology::{self, Topology};
use crate::vm::Guest;

/// Master_Down_Interval at k0s's defaults (advert 1 s, priority 200): 3 + 56/256 s, the
/// bound a failover is held to.
const MASTER_DOWN_S: f64 = 3.0 + 56.0 / 256.0;

/// One power-off and what the client saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failover {
    /// Seconds from the power-off to the client's first answered connection.
    pub failover_s: f64,
    /// Seconds from the power-off until a new master's cplbd said it was master.
    pub new_master_s: f64,
    /// Connections that failed after the power-off.
    pub client_failed: u32,
    /// Connections tried after the power-off.
    pub client_attempts: u32,
    /// The controller that holds the VIP afterwards.
    pub new_master: String,
    /// The controller powered off.
    pub old_master: String,
}

/// `cplb lab failover`: powers off the master (its link down, then its processes killed,
/// so no goodbye leaves it) while the client connects to VIP:6443 every 10 ms; `reps` times,
/// restoring the old master as a backup in between. With `draw` also the run as the reports
/// draw it (`cplb lab failover --out`): each controller's state and the VIP's holder as
/// observed, the power-offs, every connection. Without it nothing polls the daemons while
/// they are measured.
pub fn failover_run(
    programs: &Programs,
    reps: u32,
    draw: bool,
) -> Result<(Vec<Failover>, Option<cplb_reports::Run>), String> {
    if !config_path().exists() {
        return Err("the lab is not up: run `cplb lab up` first".into());
    }
    let topo = topo_handle();
    let recorder = draw.then(Recorder::start);
    let mut results = Vec::new();
    let mut drawn: Vec<Rep> = Vec::new();
    let mut views_before = None;
    for rep in 0..reps.max(1) {
        let master = wait_for_single_master(Duration::from_secs(15))?;
        if draw && views_before.is_none() {
            views_before = Some(views(&topo, &master));
        }
        let (result, fault_at, attempts) = power_off(&topo, &master)?;
        eprintln!(
            "rep {}: {} powered off, {} answered after {:.3} s ({} of {} connections failed)",
            rep + 1,
            result.old_master,
            result.new_master,
            result.failover_s,
            result.client_failed,
            result.client_attempts
        );
        // Restore the old master as a backup: a reboot brings its link, API server and a
        // fresh cplbd back, which must not take the VIP.
        topo.set_link(&master, true).map_err(|e| e.to_string())?;
        start_controller(&topo, programs, &master)?;
        if draw {
            drawn.push(Rep {
                old_master: result.old_master.clone(),
                new_master: result.new_master.clone(),
                new_master_s: result.new_master_s,
                failover_s: result.failover_s,
                fault_at,
                restored_at: Some(Instant::now()),
                attempts,
            });
        }
        results.push(result);
        let back = Instant::now();
        while status::query(&socket(&master), Duration::from_millis(300))
            .map_or(true, |s| s.instances.iter().all(|i| i.state != "backup"))
        {
            if back.elapsed() > Duration::from_secs(10) {
                return Err(format!("{master} did not come back as backup"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Let health checks see its API server again before the next power-off.
        std::thread::sleep(Duration::from_secs(3));
    }
    let run = recorder.map(|r| {
        let after = masters();
        let views_after = views(&topo, after.first().map_or("controller-0", String::as_str));
        r.finish(&drawn, views_before.unwrap_or_default(), views_after)
    });
    Ok((results, run))
}

/// One power-off of `master`: its figures, when it happened, and the client's connections.
fn power_off(topo: &Topology, master: &str) -> Result<(Failover, Instant, Vec<Attempt>), String> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_client = Arc::clone(&stop);
    let vip: std::net::SocketAddr = format!("{VIP}:{API_PORT}").parse().map_err(|_| "VIP")?;
    let record = Arc::new(Mutex::new(Vec::new()));
    let client_record = Arc::clone(&record);
    let client = topology::in_namespace(&topo.ns(CLIENT.0), move || {
        client_loop(vip, &stop_client, Duration::from_millis(10), &client_record);
    })
    .map_err(|e| format!("entering the client namespace: {e}"))?;
    // A second of normal service first.
    std::thread::sleep(Duration::from_secs(1));
    // The power-off instant is when the link is down: a connection begun while `ip` was
    // still taking it down could still reach the old master.
    topo.set_link(master, false).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    topo.kill_all(master, nix::sys::signal::Signal::SIGKILL);
    let deadline = t0 + Duration::from_secs(20);
    let (new_master, new_master_after) = loop {
        let m = masters();
        if m.len() == 1 && m[0] != master {
            break (m[0].clone(), t0.elapsed());
        }
        if Instant::now() > deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(format!("no new master 20 s after powering off {master}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Keep the client going until it has been answered for a while.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.join().ok().flatten().ok_or("the client thread failed")?;
    let attempts = std::mem::take(&mut *record.lock().map_err(|_| "the client thread failed")?);
    let after: Vec<&Attempt> = attempts.iter().filter(|a| a.start >= t0).collect();
    let first = after
        .iter()
        .filter(|a| a.answered)
        .map(|a| a.end)
        .min()
        .ok_or_else(|| format!("the client was never answered after powering off {master}"))?;
    let result = Failover {
        failover_s: (first - t0).as_secs_f64(),
        new_master_s: new_master_after.as_secs_f64(),
        client_failed: u32::try_from(after.iter().filter(|a| !a.answered).count())
            .unwrap_or(u32::MAX),
        client_attempts: u32::try_from(after.len()).unwrap_or(u32::MAX),
        new_master,
        old_master: master.to_owned(),
    };
    Ok((result, t0, attempts))
}

/// The text `cplb lab failover` prints.
pub fn report(results: &[Failover]) -> String {
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        let within = r.failover_s <= MASTER_DOWN_S + 0.1;
        out += &format!(
            "rep {:>2}: {} off -> {} answered after {:.3} s  ({}/{} connections failed){}\n",
            i + 1,
            r.old_master,
            r.new_master,
            r.failover_s,
            r.client_failed,
            r.client_attempts,
            if within { "" } else { "  OVER Master_Down_Interval + 100 ms" }
        );
    }
    if let Some((med, min, max)) = summary(results) {
        out += &format!(
            "failover median {med:.3} s, min {min:.3} s, max {max:.3} s (bound: Master_Down_Interval + 100 ms = {:.3} s)\n",
            MASTER_DOWN_S + 0.1
        );
    }
    out
}

/// Median, min and max failover.
fn summary(results: &[Failover]) -> Option<(f64, f64, f64)> {
    median_min_max(&results.iter().map(|r| r.failover_s).collect::<Vec<_>>())
}

/// The views after a failover.
pub fn current_views() -> String {
    let m = masters();
    views(&topo_handle(), m.first().map_or("controller-0", String::as_str))
}

/// `--json` output: the last rep's figures at the top (the only rep without `--reps`), and
/// with `--reps` also every rep plus median/min/max.
pub fn json(results: &[Failover], with_reps: bool) -> serde_json::Value {
    let last = results.last();
    let mut v = serde_json::json!({
        "failover_s": last.map(|r| r.failover_s),
        "new_master_s": last.map(|r| r.new_master_s),
        "client_failed": last.map(|r| r.client_failed),
        "client_attempts": last.map(|r| r.client_attempts),
        "new_master": last.map(|r| r.new_master.clone()),
    });
    if let (true, Some(obj)) = (with_reps, v.as_object_mut()) {
        obj.insert("reps".into(), serde_json::to_value(results).unwrap_or_default());
        if let Some((med, min, max)) = summary(results) {
            obj.insert("median_s".into(), med.into());
            obj.insert("min_s".into(), min.into());
            obj.insert("max_s".into(), max.into());
        }
    }
    v
}

/// `cplb lab failover --kernel vm`: the same command inside the guest.
pub fn failover_in_vm(reps: Option<u32>, json: bool) -> Result<(i32, String), String> {
    let mut guest = Guest::attach(Path::new(VM_DIR))?;
    let mut line = "cplb lab failover".to_owned();
    if let Some(n) = reps {
        line += &format!(" --reps {n}");
    }
    if json {
        line += " --json";
    }
    // A rep takes about 10 s in the guest; allow for an emulated CPU.
    let limit = Duration::from_secs(60 + 40 * u64::from(reps.unwrap_or(1)));
    guest.run(&format!("{line} 2>&1"), limit)
}

//! `cplb lab soak`: crash or power off a random controller and restart it, cycle after
//! cycle, checking after each that the lab is whole again (one master, nothing stale, the
//! client answered). The checks of the whole lab (`check_lab`) are the soak's own; the
//! victims and delays are drawn from a seed, so that a run can be replayed.

use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cplb_netns::status;
use serde::Serialize;

use crate::client::{Attempt, client_loop};
use crate::files::{save_logs, save_logs_dir};
use crate::layout::{
    API_PORT, CLIENT, CONTROLLERS, Mode, PROXY_PORT, VIP, config_path, socket, topo_handle,
};
use crate::processes::{Programs, start_controller, start_cplbd};
use crate::rng::SplitMix64;
use crate::state::masters;
use crate::stats::median_min_max;
use crate::topology::{self, Topology};

/// What a soak cycle does to its controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    /// cplbd killed with SIGKILL, as a crash: its VIP and rules stay behind; the API
    /// server keeps running. The restart is a new cplbd.
    Sigkill,
    /// The controller powered off: link down, every process killed (VIP and rules stay in
    /// the namespace, as nothing removed them). The restart is a boot: link up, API
    /// server and cplbd started.
    PowerOff,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Self::Sigkill => "sigkill",
            Self::PowerOff => "power-off",
        }
    }
}

/// One soak cycle and what the checks found.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct SoakCycle {
    /// 1-based.
    cycle: u32,
    /// The controller crashed or powered off.
    victim: String,
    /// Whether it was the master then.
    victim_was_master: bool,
    /// What was done to it.
    fault: Fault,
    /// Seconds from the fault to the restart (drawn from the seed).
    restart_after_s: f64,
    /// Seconds from the fault until the client was answered again for good (the end of
    /// the first answered connection begun after the last failed one); `None`: never.
    recovery_s: Option<f64>,
    /// Seconds from the fault until every check passed; `None`: they did not in time.
    settled_s: Option<f64>,
    /// Client connections begun after the fault that failed.
    client_failed: u32,
    /// Client connections begun after the fault.
    client_attempts: u32,
    /// The master afterwards, if there was exactly one.
    master: Option<String>,
    /// What the checks found wrong (empty: the cycle passed).
    problems: Vec<String>,
}

impl SoakCycle {
    /// Whether every check passed.
    fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The one line `cplb lab soak` prints for the cycle.
    fn line(&self, of: u32) -> String {
        let recovery =
            self.recovery_s.map_or_else(|| "never answered".to_owned(), |r| format!("{r:.3} s"));
        let settled = self
            .settled_s
            .map_or_else(|| "not settled".to_owned(), |s| format!("settled after {s:.1} s"));
        let verdict = if self.passed() {
            "ok".to_owned()
        } else {
            format!("FAILED: {}", self.problems.join("; "))
        };
        format!(
            "cycle {:>w$}/{of}: {} {} ({}), restarted after {:.2} s; client answered again after {recovery} ({}/{} failed), {settled}, master {}  {verdict}",
            self.cycle,
            self.fault.name(),
            self.victim,
            if self.victim_was_master { "master" } else { "backup" },
            self.restart_after_s,
            self.client_failed,
            self.client_attempts,
            self.master.as_deref().unwrap_or("none"),
            w = of.to_string().len(),
        )
    }
}

/// A whole soak run.
#[derive(Debug, Clone, PartialEq)]
pub struct Soak {
    /// The seed (`--seed` replays the run).
    seed: u64,
    /// Cycles asked for.
    requested: u32,
    /// The cycles run, in order.
    cycles: Vec<SoakCycle>,
    /// Why the run stopped before `requested`, if it did.
    stopped_early: Option<String>,
    /// Where the logs were saved (after a failure).
    logs: Option<PathBuf>,
}

/// Cycles that fail in a row before a soak gives up: the lab is broken, not flaky.
const SOAK_GIVE_UP: u32 = 3;
/// How long after a restart every check must pass.
const SOAK_SETTLE_LIMIT: Duration = Duration::from_secs(20);
/// How long the checks must pass without a break for the lab to count as settled: longer
/// than the health checks take to mark a server down (two 1 s probes, 1 s timeout).
const SOAK_STABLE: Duration = Duration::from_secs(3);
/// The longest restart delay drawn; beyond Master_Down_Interval, so that restarts come
/// both before and after a backup took over.
const SOAK_MAX_RESTART_MS: u64 = 5000;
/// The client's pace during a soak.
const SOAK_CLIENT_EVERY: Duration = Duration::from_millis(20);

impl Soak {
    /// Cycles that failed.
    pub fn failures(&self) -> usize {
        self.cycles.iter().filter(|c| !c.passed()).count()
    }

    /// The recovery times of the cycles the client was answered in.
    fn recoveries(&self, master_only: bool) -> Vec<f64> {
        self.cycles
            .iter()
            .filter(|c| !master_only || c.victim_was_master)
            .filter_map(|c| c.recovery_s)
            .collect()
    }

    /// The summary `cplb lab soak` ends with.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "soak: {} cycles, {} failed (seed {}; replay with --seed {})",
            self.cycles.len(),
            self.failures(),
            self.seed,
            self.seed
        );
        for (what, master_only) in [("recovery", false), ("recovery when the master was hit", true)]
        {
            let v = self.recoveries(master_only);
            if let Some((med, _, max)) = median_min_max(&v) {
                out += &format!("\n{what}: median {med:.3} s, max {max:.3} s ({} cycles)", v.len());
            }
        }
        if let Some(why) = &self.stopped_early {
            out += &format!("\nstopped early: {why}");
        }
        if let Some(dir) = &self.logs {
            out += &format!(
                "\nlogs kept in {}; the lab is left up (`cplb lab down` removes it)",
                dir.display()
            );
        }
        out
    }

    /// `cplb lab soak --json`.
    pub fn json(&self) -> serde_json::Value {
        let all = self.recoveries(false);
        let (med, max) = median_min_max(&all).map_or((None, None), |(m, _, x)| (Some(m), Some(x)));
        let failed: Vec<&SoakCycle> = self.cycles.iter().filter(|c| !c.passed()).collect();
        serde_json::json!({
            "seed": self.seed,
            "cycles": self.cycles.len(),
            "cycles_requested": self.requested,
            "failures": self.failures(),
            "recovery_s": self.cycles.iter().map(|c| c.recovery_s).collect::<Vec<_>>(),
            "recovery_median_s": med,
            "recovery_max_s": max,
            "failed": failed,
            "runs": self.cycles,
            "stopped_early": self.stopped_early,
            "logs": self.logs.as_ref().map(|p| p.display().to_string()),
        })
    }
}

/// `cplb lab soak`: `cycles` times, crashes (odd cycles: SIGKILL of cplbd) or powers off
/// (even cycles) a controller drawn from `seed`, restarts it after a drawn delay of 0 to
/// 5 s, and waits until the lab settles: the checks pass for 3 s without a break (20 s at
/// most), while the client connects to VIP:6443 every 20 ms. Needs `cplb lab up` (proxy
/// mode) first. A failed cycle does not stop the run, 3 failed cycles in a row do; after
/// any failure the logs are saved and the lab is left as it is for `cplb lab down`.
/// `progress` gets each cycle's line.
pub fn soak(
    programs: &Programs,
    cycles: u32,
    seed: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<Soak, String> {
    if !topology::is_root() {
        return Err("cplb lab needs root (it creates network namespaces)".into());
    }
    if !config_path().exists() {
        return Err("the lab is not up: run `cplb lab up` first".into());
    }
    if Mode::running() != Mode::Proxy {
        return Err("cplb lab soak checks the userspace proxy's data plane: bring the lab up in k0s's default mode (`cplb lab up`, no --mode ipvs)".into());
    }
    let topo = topo_handle();
    let start = Instant::now();
    if let Err(problems) = wait_checked(&topo, start + SOAK_SETTLE_LIMIT, None) {
        return Err(format!(
            "the lab does not pass the checks before the first cycle: {}{}",
            problems.join("; "),
            save_logs()
        ));
    }
    progress(&format!("soak: {cycles} cycles, seed {seed}"));
    let mut rng = SplitMix64(seed);
    let mut children = Vec::new();
    let mut run =
        Soak { seed, requested: cycles, cycles: Vec::new(), stopped_early: None, logs: None };
    let mut in_a_row = 0;
    for n in 1..=cycles {
        let cycle = soak_cycle(&topo, programs, n, &mut rng, &mut children);
        // Reap what earlier cycles started and this one killed.
        children.retain_mut(|c| c.try_wait().map_or(true, |s| s.is_none()));
        progress(&cycle.line(cycles));
        in_a_row = if cycle.passed() { 0 } else { in_a_row + 1 };
        run.cycles.push(cycle);
        if in_a_row >= SOAK_GIVE_UP && n < cycles {
            run.stopped_early = Some(format!("{SOAK_GIVE_UP} cycles failed in a row"));
            break;
        }
    }
    if run.failures() > 0 {
        run.logs = save_logs_dir().ok();
    }
    Ok(run)
}

fn soak_cycle(
    topo: &Topology,
    programs: &Programs,
    n: u32,
    rng: &mut SplitMix64,
    children: &mut Vec<Child>,
) -> SoakCycle {
    let victim = CONTROLLERS[usize::try_from(rng.below(3)).unwrap_or(0)].0;
    let fault = if n % 2 == 1 { Fault::Sigkill } else { Fault::PowerOff };
    let restart_after = Duration::from_millis(250 * rng.below(SOAK_MAX_RESTART_MS / 250 + 1));
    let mut cycle = SoakCycle {
        cycle: n,
        victim: victim.to_owned(),
        victim_was_master: masters().iter().any(|m| m == victim),
        fault,
        restart_after_s: restart_after.as_secs_f64(),
        recovery_s: None,
        settled_s: None,
        client_failed: 0,
        client_attempts: 0,
        master: None,
        problems: Vec::new(),
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let record = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, record) = (Arc::clone(&stop), Arc::clone(&record));
        let vip = std::net::SocketAddr::from((
            VIP.parse::<std::net::Ipv4Addr>().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            API_PORT,
        ));
        topology::in_namespace(&topo.ns(CLIENT.0), move || {
            client_loop(vip, &stop, SOAK_CLIENT_EVERY, &record);
        })
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            cycle.problems.push(format!("entering the client namespace: {e}"));
            return cycle;
        }
    };
    // Half a second of normal service first.
    std::thread::sleep(Duration::from_millis(500));
    let (t0, killed) = match strike(topo, victim, fault) {
        Ok(struck) => struck,
        Err(e) => {
            cycle.problems.push(e);
            (Instant::now(), Vec::new())
        }
    };
    // The restart: once the delay is over and the victim's processes are gone (a cplbd
    // still dying holds its lock; an API server its port).
    let gone_by = t0 + Duration::from_secs(5);
    while !killed.iter().all(|&pid| is_gone(pid)) {
        if Instant::now() > gone_by {
            cycle
                .problems
                .push(format!("{victim}: processes still there 5 s after the {}", fault.name()));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(wait) = (t0 + restart_after).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let restarted = match fault {
        Fault::Sigkill => start_cplbd(topo, programs, victim).map(|c| vec![c]),
        Fault::PowerOff => topo
            .set_link(victim, true)
            .map_err(|e| e.to_string())
            .and_then(|()| start_controller(topo, programs, victim)),
    };
    match restarted {
        Ok(c) => children.extend(c),
        Err(e) => cycle.problems.push(format!("restarting {victim}: {e}")),
    }
    let restart = Instant::now();
    match wait_checked(topo, restart + SOAK_SETTLE_LIMIT, Some(&record)) {
        Ok((master, at)) => {
            cycle.settled_s = Some((at - t0).as_secs_f64());
            cycle.master = Some(master);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = client.join();
            let attempts = record.lock().map(|r| r.clone()).unwrap_or_default();
            let late: Vec<String> = attempts
                .iter()
                .filter(|a| a.start >= at && !a.answered)
                .map(|a| {
                    let why = a.error.as_deref().unwrap_or("no answer");
                    format!("{:.3}: {why}", (a.start - t0).as_secs_f64())
                })
                .collect();
            if !late.is_empty() {
                cycle.problems.push(format!(
                    "{} client connections failed after the lab settled (begun s after the fault: {})",
                    late.len(),
                    late[..late.len().min(5)].join("; ")
                ));
            }
            client_figures(&mut cycle, &attempts, t0);
        }
        Err(problems) => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = client.join();
            let attempts = record.lock().map(|r| r.clone()).unwrap_or_default();
            client_figures(&mut cycle, &attempts, t0);
            let now = masters();
            cycle.master = now.first().cloned().filter(|_| now.len() == 1);
            cycle.problems.push(format!(
                "not settled {} s after the restart: {}",
                SOAK_SETTLE_LIMIT.as_secs(),
                problems.join("; ")
            ));
        }
    }
    if cycle.recovery_s.is_none() {
        cycle.problems.push("the client was not answered again".into());
    }
    cycle
}

/// Crashes or powers off `victim`; the instant of the fault and the processes killed.
fn strike(topo: &Topology, victim: &str, fault: Fault) -> Result<(Instant, Vec<i32>), String> {
    let kill = |pids: &[i32]| {
        for &pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    };
    match fault {
        Fault::Sigkill => {
            let pids = processes(topo, victim, "cplbd");
            if pids.is_empty() {
                return Err(format!("{victim}: no cplbd to kill"));
            }
            let t0 = Instant::now();
            kill(&pids);
            Ok((t0, pids))
        }
        Fault::PowerOff => {
            // As `failover`: the power-off instant is when the link is down; then every
            // process goes.
            topo.set_link(victim, false).map_err(|e| format!("{victim}: link down: {e}"))?;
            let t0 = Instant::now();
            let pids = topology::pids(&topo.ns(victim));
            kill(&pids);
            Ok((t0, pids))
        }
    }
}

/// Whether a killed process has let go of everything: gone, or a zombie whose other
/// threads have exited too (a zombie leader's threads may still hold its files, cplbd's
/// lock among them, and `ip netns pids` no longer lists it).
fn is_gone(pid: i32) -> bool {
    is_zombie(pid)
        && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |d| d.count() <= 1)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// Live processes named `comm` in host's namespace.
fn processes(topo: &Topology, host: &str, comm: &str) -> Vec<i32> {
    topology::pids(&topo.ns(host))
        .into_iter()
        .filter(|&p| !is_zombie(p))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect()
}

/// Recovery and connection counts of a cycle, from the client's attempts.
fn client_figures(cycle: &mut SoakCycle, attempts: &[Attempt], t0: Instant) {
    let after: Vec<&Attempt> = attempts.iter().filter(|a| a.start >= t0).collect();
    let last_failure = after.iter().filter(|a| !a.answered).map(|a| a.start).max();
    cycle.recovery_s = after
        .iter()
        .filter(|a| a.answered && last_failure.is_none_or(|f| a.start > f))
        .map(|a| a.end)
        .min()
        .map(|end| (end - t0).as_secs_f64());
    cycle.client_failed =
        u32::try_from(after.iter().filter(|a| !a.answered).count()).unwrap_or(u32::MAX);
    cycle.client_attempts = u32::try_from(after.len()).unwrap_or(u32::MAX);
}

/// Polls [`check_lab`] until it has passed without a break, with the same master, for
/// [`SOAK_STABLE`] and, with `client`, the client was answered by a connection begun in that
/// time; the master and when the lab settled (the run of passes began and the client was
/// answered in it), or the last problems at `deadline`.
///
/// A run of passes rather than one: a server that came back before its peers' health checks
/// noticed it was gone is marked down late (and up again a probe later), which is the
/// hysteresis at work, not a lasting fault.
fn wait_checked(
    topo: &Topology,
    deadline: Instant,
    client: Option<&Arc<Mutex<Vec<Attempt>>>>,
) -> Result<(String, Instant), Vec<String>> {
    let mut ok_since: Option<(String, Instant)> = None;
    loop {
        let result = check_lab(topo);
        // A run of passes begins when the first of them has seen everything.
        let now = Instant::now();
        let late = now > deadline;
        match result {
            Ok(master) => {
                let since = match ok_since.take() {
                    Some((m, t)) if m == master => t,
                    _ => now,
                };
                ok_since = Some((master.clone(), since));
                // The client's first answer in that run: until then its path (its ARP cache,
                // the new master's first announcement) may still be catching up.
                let answered = match client {
                    None => Some(since),
                    Some(record) => record.lock().ok().and_then(|r| {
                        r.iter().filter(|a| a.answered && a.start >= since).map(|a| a.end).min()
                    }),
                };
                if let Some(answered) = answered
                    && now.duration_since(since) >= SOAK_STABLE
                {
                    return Ok((master, since.max(answered)));
                }
                let answered = answered.is_some();
                if late {
                    return Err(vec![if answered {
                        "the checks did not pass for long enough".into()
                    } else {
                        "the client was not answered through the VIP".into()
                    }]);
                }
            }
            Err(problems) => {
                ok_since = None;
                if late {
                    return Err(problems);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The checks after a soak cycle; the master, or everything found wrong:
/// - every controller's cplbd answers, one says master and the others backup, with its
///   data plane applied, no kernel refusals and every API server healthy;
/// - every controller runs exactly one cplbd and one API server;
/// - the master's eth0 holds the VIP once, and no other interface of any host holds it;
/// - every controller's nftables ruleset is exactly table `ip cplb` with the one redirect of
///   VIP:6443 to the proxy's :6444, once.
fn check_lab(topo: &Topology) -> Result<String, Vec<String>> {
    let mut problems = Vec::new();
    let mut masters = Vec::new();
    for (name, _) in CONTROLLERS {
        match status::query(&socket(name), Duration::from_millis(500)) {
            Err(e) => problems.push(format!("{name}: {e}")),
            Ok(s) => {
                let states: Vec<&str> = s.instances.iter().map(|i| i.state.as_str()).collect();
                match states.as_slice() {
                    ["master"] => masters.push(name),
                    ["backup"] => {}
                    other => problems.push(format!("{name}: cplbd reports {other:?}")),
                }
                if !s.dataplane.applied {
                    problems.push(format!("{name}: data plane not applied"));
                }
                for r in &s.kernel_refusals {
                    problems.push(format!("{name}: the kernel refuses {}: {}", r.object, r.reason));
                }
                let unhealthy: Vec<&str> = s
                    .real_servers
                    .iter()
                    .filter(|r| !r.healthy)
                    .map(|r| r.address.as_str())
                    .collect();
                if !unhealthy.is_empty() || s.real_servers.len() != CONTROLLERS.len() {
                    problems.push(format!(
                        "{name}: API servers unhealthy {unhealthy:?} (of {})",
                        s.real_servers.len()
                    ));
                }
            }
        }
        for (comm, what) in [("cplbd", "cplbd"), ("cplb", "API server")] {
            let n = processes(topo, name, comm).len();
            if n != 1 {
                problems.push(format!("{name}: {n} {what} processes"));
            }
        }
        problems.extend(check_rules(topo, name));
    }
    if masters.len() != 1 {
        problems.push(format!("masters: {masters:?}"));
    }
    for host in topo.hosts() {
        let text = match topo.ip(&host.name, &["-4", "-o", "addr"]) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", host.name));
                continue;
            }
        };
        let vip = format!(" {VIP}/");
        let held: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&vip))
            .filter_map(|l| l.split_whitespace().nth(1))
            .collect();
        let expected: &[&str] = if masters == [host.name.as_str()] { &["eth0"] } else { &[] };
        if held != expected {
            let role = if expected.is_empty() { "stale address" } else { "the master's address" };
            problems
                .push(format!("{}: VIP on {held:?}, expected on {expected:?} ({role})", host.name));
        }
    }
    match (problems.is_empty(), masters.first()) {
        (true, Some(m)) => Ok((*m).to_owned()),
        _ => Err(problems),
    }
}

/// A controller's ruleset against the one redirect it should hold.
fn check_rules(topo: &Topology, name: &str) -> Vec<String> {
    let out = match topo.exec(name, "nft", &["list", "ruleset"]) {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return vec![format!(
                "{name}: nft list ruleset: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )];
        }
        Err(e) => return vec![format!("{name}: running nft: {e} (is nftables installed?)")],
    };
    let mut problems = Vec::new();
    let lines: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let tables: Vec<&str> = lines.iter().filter(|l| l.starts_with("table ")).copied().collect();
    if tables != ["table ip cplb {"] {
        problems.push(format!("{name}: nftables tables {tables:?}, expected [\"table ip cplb\"]"));
    }
    let rules: Vec<&str> = lines
        .iter()
        .filter(|l| !["table ", "chain ", "type ", "}"].iter().any(|p| l.starts_with(p)))
        .map(|l| l.split(" comment ").next().unwrap_or(l))
        .collect();
    let expected = format!("ip daddr {VIP} tcp dport {API_PORT} redirect to :{PROXY_PORT}");
    if rules != [expected.as_str()] {
        let copies = rules.iter().filter(|r| **r == expected).count();
        problems.push(format!("{name}: rules {rules:?} (the redirect {copies} times), expected it once and nothing else"));
    }
    problems
}

//! `cplb lab`: the seed document's cluster out of network namespaces on this machine, with
//! a `cplbd` on every controller, and power-off failovers measured from a client.
//!
//! Topology (prefix `cplb-lab-`): a bridge namespace, three controllers with the seed's
//! addresses (192.168.122.37, .185, .87) each running a stand-in API server on :6443 and a
//! cplbd, three workers (.219, .81, .210) and a client (.100). The VIP is 192.168.122.200/24.
//!
//! `cplb lab soak` crashes or powers off a random controller and restarts it, cycle after
//! cycle, and checks the whole lab after each: one master, no stale VIP or rule anywhere,
//! the client answered.
//!
//! What the lab writes is root's alone: [`STATE_DIR`] is mode 0700 and its logs and
//! configuration 0600; [`save_logs`] copies the logs into a new private directory.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::topology::{self, HostSpec, Topology};
use cplb_netns::status;

use crate::client::{Attempt, client_loop};
pub use crate::soak::*;

/// Namespace prefix of the lab.
pub const PREFIX: &str = "cplb-lab-";
/// Where the lab keeps its configuration, sockets and logs (mode 0700).
pub const STATE_DIR: &str = "/run/cplb-lab";
/// cplbd's default `--state-dir`, where the lab's cplbds keep their lock and record, in
/// files named after their network namespace (`cplbd-netns-<inode>.*`).
pub(crate) const CPLBD_STATE_DIR: &str = "/run/cplb";
/// The userspace proxy's port (k0s's default), the target of the VIP's redirect.
pub(crate) const PROXY_PORT: u16 = 6444;
/// The hosts' default gateway (absent: only the route matters, for interface discovery).
pub(crate) const GATEWAY: &str = "192.168.122.1";
/// The seed's VIP.
pub const VIP: &str = "192.168.122.200";
pub(crate) const API_PORT: u16 = 6443;
pub(crate) const CONTROLLERS: [(&str, &str); 3] = [
    ("controller-0", "192.168.122.37"),
    ("controller-1", "192.168.122.185"),
    ("controller-2", "192.168.122.87"),
];
pub(crate) const WORKERS: [(&str, &str); 3] = [
    ("worker-0", "192.168.122.219"),
    ("worker-1", "192.168.122.81"),
    ("worker-2", "192.168.122.210"),
];
pub(crate) const CLIENT: (&str, &str) = ("client", "192.168.122.100");
/// Master_Down_Interval at k0s's defaults (advert 1 s, priority 200): 3 + 56/256 s.
pub const MASTER_DOWN_S: f64 = 3.0 + 56.0 / 256.0;

/// The seed's `controlPlaneLoadBalancing` with its one VRRP instance (a macro so that both
/// configurations below are literals).
macro_rules! seed_config {
    () => {
        "\
spec:
  api:
    sans:
    - 192.168.122.200
  network:
    controlPlaneLoadBalancing:
      enabled: true
      type: Keepalived
      keepalived:
        vrrpInstances:
        - virtualIPs: [\"192.168.122.200/24\"]
          authPass: Example
"
    };
}

/// The lab's configuration: the seed's, in k0s's default (userspace proxy) mode.
pub const CONFIG: &str = seed_config!();

/// The seed document's own configuration: a virtual server on the VIP, with k0s's
/// defaults (rr, persistence 360, direct routing).
pub const CONFIG_IPVS: &str =
    concat!(seed_config!(), "        virtualServers:\n        - ipAddress: 192.168.122.200\n");

/// How the lab balances API traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// k0s's default: the userspace proxy behind an nftables redirect.
    #[default]
    Proxy,
    /// The seed's `virtualServers`: IPVS direct routing (NAT rules where there is no IPVS).
    Ipvs,
}

impl Mode {
    fn config(self) -> &'static str {
        match self {
            Self::Proxy => CONFIG,
            Self::Ipvs => CONFIG_IPVS,
        }
    }

    /// The mode `lab up` built the running lab with.
    pub(crate) fn running() -> Self {
        let config = std::fs::read_to_string(Path::new(STATE_DIR).join("k0s.yaml"));
        if config.is_ok_and(|c| c == CONFIG_IPVS) { Self::Ipvs } else { Self::Proxy }
    }
}

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

/// Paths and programs the lab uses.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `cplbd` binary.
    pub cplbd: PathBuf,
    /// A program that runs the stand-in API server: `PROGRAM lab apiserver --name N --listen A`.
    pub cplb: PathBuf,
}

impl Programs {
    /// `cplbd` beside the running executable.
    pub fn beside_current_exe() -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
        let dir = exe.parent().ok_or("no directory for this program")?;
        let cplbd = dir.join("cplbd");
        if !cplbd.exists() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p cplb-netns` (or `cargo build --release`)",
                cplbd.display()
            ));
        }
        Ok(Self { cplbd, cplb: exe })
    }
}

pub(crate) fn hosts() -> Vec<HostSpec> {
    CONTROLLERS
        .iter()
        .chain(WORKERS.iter())
        .chain(std::iter::once(&CLIENT))
        .map(|(n, a)| HostSpec { name: (*n).to_owned(), address: format!("{a}/24") })
        .collect()
}

pub(crate) fn topo_handle() -> Topology {
    Topology::attach(PREFIX, hosts(), Some(GATEWAY))
}

pub(crate) fn socket(name: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{name}.sock"))
}

/// `cplb lab up`: builds the lab and waits for one master. Everything is removed again if
/// any step fails.
pub fn up(programs: &Programs, mode: Mode) -> Result<String, String> {
    if !topology::is_root() {
        return Err("cplb lab needs root (it creates network namespaces)".into());
    }
    let _ = std::fs::remove_dir_all(STATE_DIR);
    private_dir(Path::new(STATE_DIR)).map_err(|e| format!("creating {STATE_DIR}: {e}"))?;
    write_private(&Path::new(STATE_DIR).join("k0s.yaml"), mode.config())
        .map_err(|e| format!("writing the configuration: {e}"))?;
    let topo = Topology::build(PREFIX, hosts(), false, Some(GATEWAY)).map_err(|e| e.to_string())?;
    let result = (|| {
        for (name, _) in CONTROLLERS {
            start_controller(&topo, programs, name)?;
        }
        wait_for_single_master(Duration::from_secs(15))
    })();
    match result {
        Ok(master) => {
            topo.keep();
            Ok(format!("lab up: VIP {VIP} on {master}\n\n{}", views(&topo_handle(), &master)))
        }
        Err(e) => {
            drop(topo);
            let saved = save_logs();
            let _ = std::fs::remove_dir_all(STATE_DIR);
            Err(format!("{e} (the lab was removed{saved})"))
        }
    }
}

/// Starts a controller's API server and cplbd (a boot); the processes.
pub(crate) fn start_controller(
    topo: &Topology,
    programs: &Programs,
    name: &str,
) -> Result<Vec<Child>, String> {
    let apiserver = start_apiserver(topo, programs, name)?;
    let cplbd = start_cplbd(topo, programs, name)?;
    Ok(vec![apiserver, cplbd])
}

/// The controller's log, created root-only if missing (`spawn` appends to it).
pub(crate) fn log_file(name: &str) -> Result<PathBuf, String> {
    let log = Path::new(STATE_DIR).join(format!("{name}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log)
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| format!("creating {}: {e}", log.display()))?;
    Ok(log)
}

pub(crate) fn start_apiserver(
    topo: &Topology,
    programs: &Programs,
    name: &str,
) -> Result<Child, String> {
    let log = log_file(name)?;
    // Every address, as kube-apiserver binds: with direct routing the director forwards
    // packets for VIP:6443 unchanged, so the VIP on dummyvip0 must be served too.
    let listen = format!("0.0.0.0:{API_PORT}");
    topo.spawn(
        name,
        &programs.cplb.to_string_lossy(),
        &["lab", "apiserver", "--name", name, "--listen", &listen],
        &log,
    )
    .map_err(|e| format!("starting the API server of {name}: {e}"))
}

pub(crate) fn start_cplbd(
    topo: &Topology,
    programs: &Programs,
    name: &str,
) -> Result<Child, String> {
    let log = log_file(name)?;
    let servers: Vec<String> = CONTROLLERS.iter().map(|(_, a)| (*a).to_owned()).collect();
    let config = Path::new(STATE_DIR).join("k0s.yaml");
    let sock = socket(name);
    let _ = std::fs::remove_file(&sock);
    topo.spawn(
        name,
        &programs.cplbd.to_string_lossy(),
        &[
            "--config",
            &config.to_string_lossy(),
            "--real-servers",
            &servers.join(","),
            "--status-socket",
            &sock.to_string_lossy(),
        ],
        &log,
    )
    .map_err(|e| format!("starting cplbd on {name}: {e}"))
}

/// The controller whose cplbd says master, if exactly one does.
pub(crate) fn masters() -> Vec<String> {
    CONTROLLERS
        .iter()
        .filter(|(name, _)| {
            status::query(&socket(name), Duration::from_millis(300))
                .is_ok_and(|s| s.instances.iter().any(|i| i.state == "master"))
        })
        .map(|(n, _)| (*n).to_owned())
        .collect()
}

pub(crate) fn vip_holders(topo: &Topology) -> Vec<String> {
    CONTROLLERS
        .iter()
        .filter(|(name, _)| {
            topo.addresses(name).is_ok_and(|a| a.iter().any(|x| x.starts_with(&format!("{VIP}/"))))
        })
        .map(|(n, _)| (*n).to_owned())
        .collect()
}

pub(crate) fn wait_for_single_master(limit: Duration) -> Result<String, String> {
    let start = Instant::now();
    let topo = topo_handle();
    loop {
        let m = masters();
        let holders = vip_holders(&topo);
        if m.len() == 1 && holders == m {
            return Ok(m.into_iter().next().unwrap_or_default());
        }
        if start.elapsed() > limit {
            return Err(format!(
                "no single master after {limit:?} (masters {m:?}, VIP on {holders:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The seed's views: each controller's addresses, and the master's data plane.
pub(crate) fn views(topo: &Topology, master: &str) -> String {
    let mut out = String::new();
    let mode = Mode::running();
    for (name, _) in CONTROLLERS {
        if mode == Mode::Ipvs {
            // As the seed shows it: eth0 with the VIP on the master, dummyvip0 everywhere.
            out += &format!("$ ip -4 -o addr   # {name}\n");
            out += &topo.ip(name, &["-4", "-o", "addr"]).unwrap_or_else(|e| format!("{e}\n"));
        } else {
            out += &format!("$ ip -o addr show dev eth0   # {name}\n");
            out += &topo.address_lines(name).unwrap_or_else(|e| format!("{e}\n"));
        }
    }
    if mode == Mode::Ipvs
        && let Ok(o) = topo.exec(master, "ipvsadm", &["--save", "-n"])
        && o.status.success()
    {
        out +=
            &format!("\n$ ipvsadm --save -n   # {master}\n{}", String::from_utf8_lossy(&o.stdout));
    }
    out += &format!("\n$ cplb status   # {master}\n");
    match status::query(&socket(master), Duration::from_secs(1)) {
        Ok(s) => out += &status::render(&s),
        Err(e) => out += &format!("{e}\n"),
    }
    if let Ok(o) = topo.exec(master, "nft", &["list", "table", "ip", "cplb"]) {
        out += &format!(
            "\n$ nft list table ip cplb   # {master}\n{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    out
}

/// Copies the lab's logs into a new private directory; says where (for error messages).
pub fn save_logs() -> String {
    match save_logs_dir() {
        Ok(dir) => format!("; logs kept in {}", dir.display()),
        Err(e) => format!("; the logs could not be saved: {e}"),
    }
}

/// Copies the lab's logs into a new directory under the temporary directory, mode 0700
/// with a name nobody could have guessed and taken first (`cplb-lab-logs-<time>-<pid>-<n>`),
/// each file 0600; the directory.
pub fn save_logs_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut rng = SplitMix64(now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32));
    let mut made = None;
    for _ in 0..16 {
        let dir = base.join(format!(
            "cplb-lab-logs-{}-{}-{:08x}",
            now.as_secs(),
            std::process::id(),
            rng.next_u64() as u32
        ));
        // Not recursive: fails on anything already there, a symlink included.
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                made = Some(dir);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating a directory in {}: {e}", base.display())),
        }
    }
    let saved = made.ok_or_else(|| format!("no new directory in {}", base.display()))?;
    if let Ok(dir) = std::fs::read_dir(STATE_DIR) {
        for entry in dir.flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let to = saved.join(entry.file_name());
                if std::fs::copy(entry.path(), &to).is_ok() {
                    let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600));
                }
            }
        }
    }
    Ok(saved)
}

/// Creates `dir` (and missing parents) and makes it mode 0700.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `path` anew, mode 0600.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let _ = std::fs::remove_file(path);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

/// `cplb lab down`: removes everything the lab made, also what its cplbds left in their
/// state directory (lock and record, named after namespaces that are gone now: a later
/// namespace may get the same inode number and must not inherit them).
pub fn down() -> String {
    let inodes = lab_namespace_inodes();
    topology::remove_prefix(PREFIX);
    let _ = std::fs::remove_dir_all(STATE_DIR);
    for ino in inodes {
        remove_cplbd_files(Path::new(CPLBD_STATE_DIR), ino);
    }
    "lab down".to_owned()
}

/// Removes the files cplbd keeps in `dir` for the network namespace with inode `ino`
/// (`cplbd-netns-<ino>.lock`, `.owned.json`, ...), unless a cplbd holds that lock: a new
/// namespace may already have taken the inode number over.
pub(crate) fn remove_cplbd_files(dir: &Path, ino: u64) {
    use nix::fcntl::{Flock, FlockArg};
    let stem = format!("cplbd-netns-{ino}.");
    let lock = dir.join(format!("{stem}lock"));
    let held = match std::fs::File::open(&lock) {
        Ok(file) => match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Some(held),
            Err(_) => return,
        },
        Err(_) => None,
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&stem) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    drop(held);
}

/// The inode numbers of the lab's network namespaces (as cplbd names its files).
pub(crate) fn lab_namespace_inodes() -> Vec<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(PREFIX))
                .filter_map(|e| std::fs::metadata(e.path()).ok())
                .map(|m| m.ino())
                .collect()
        })
        .unwrap_or_default()
}

/// `cplb lab failover`: powers off the master (its link down, then its processes killed,
/// so no goodbye leaves it) while the client connects to VIP:6443 every 10 ms; `reps` times,
/// restoring the old master as a backup in between.
pub fn failover(programs: &Programs, reps: u32) -> Result<Vec<Failover>, String> {
    failover_run(programs, reps, false).map(|(results, _)| results)
}

/// [`failover`], and with `draw` the run as the reports draw it (`cplb lab failover
/// --out`): each controller's state and the VIP's holder as observed, the power-offs,
/// every connection. Without it nothing polls the daemons while they are measured.
pub fn failover_run(
    programs: &Programs,
    reps: u32,
    draw: bool,
) -> Result<(Vec<Failover>, Option<cplb_reports::Run>), String> {
    if !Path::new(STATE_DIR).join("k0s.yaml").exists() {
        return Err("the lab is not up: run `cplb lab up` first".into());
    }
    let topo = topo_handle();
    let recorder = draw.then(crate::record::Recorder::start);
    let mut out: Vec<crate::record::Rep> = Vec::new();
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
        out.push(crate::record::Rep {
            result,
            fault_at,
            restored_at: Some(Instant::now()),
            attempts,
        });
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
        r.finish(&out, views_before.unwrap_or_default(), views_after)
    });
    Ok((out.into_iter().map(|r| r.result).collect(), run))
}

/// One power-off of `master`: its figures, when it happened, and the client's connections.
pub(crate) fn power_off(
    topo: &Topology,
    master: &str,
) -> Result<(Failover, Instant, Vec<Attempt>), String> {
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
pub fn summary(results: &[Failover]) -> Option<(f64, f64, f64)> {
    median_min_max(&results.iter().map(|r| r.failover_s).collect::<Vec<_>>())
}

/// Median, min and max of `values` (`None` when empty).
pub(crate) fn median_min_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some((med, v[0], v[n - 1]))
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

/// Where `--kernel vm` keeps the guest's console log, command socket and pid.
pub const VM_DIR: &str = "/run/cplb-lab-vm";

/// `cplb lab up --kernel vm`: boots the guest (left running) and builds the lab in it.
pub fn up_in_vm(programs: &Programs, mode: Mode) -> Result<String, String> {
    if !topology::is_root() {
        return Err("cplb lab needs root (it boots a guest with qemu)".into());
    }
    if let Ok(g) = crate::vm::Guest::attach(Path::new(VM_DIR)) {
        g.stop();
    }
    // The console log and command socket are root's alone.
    private_dir(Path::new(VM_DIR)).map_err(|e| format!("creating {VM_DIR}: {e}"))?;
    let image = crate::vm::image(&[programs.cplb.clone(), programs.cplbd.clone()])?;
    let mut guest = crate::vm::Guest::boot(&image, Path::new(VM_DIR), true)?;
    let boot = guest.boot_time;
    let mode_arg = match mode {
        Mode::Proxy => "proxy",
        Mode::Ipvs => "ipvs",
    };
    let (code, out) =
        guest.run(&format!("cplb lab up --mode {mode_arg}"), Duration::from_secs(180))?;
    if code != 0 {
        let console = guest.stop();
        return Err(format!("cplb lab up failed in the guest (exit {code}):\n{out}\n{console}"));
    }
    Ok(format!(
        "guest: kernel {} booted in {:.1} s ({}), console log {}\n{out}",
        image.release,
        boot.as_secs_f64(),
        crate::vm::accelerator(),
        guest.console.display()
    ))
}

/// `cplb lab failover --kernel vm`: the same command inside the guest.
pub fn failover_in_vm(reps: Option<u32>, json: bool) -> Result<(i32, String), String> {
    let mut guest = crate::vm::Guest::attach(Path::new(VM_DIR))?;
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

/// `cplb lab down --kernel vm`: the lab down and the guest powered off.
pub fn down_in_vm() -> String {
    match crate::vm::Guest::attach(Path::new(VM_DIR)) {
        Ok(mut g) => {
            let _ = g.run("cplb lab down", Duration::from_secs(30));
            g.stop();
            let _ = std::fs::remove_dir_all(VM_DIR);
            "lab down (guest powered off)".to_owned()
        }
        Err(e) => format!("lab down: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use cplb_core::config::{self, LbAlgo, LbKind, LoadBalancerMode, LoadOptions};

    use super::*;

    #[test]
    fn both_lab_configurations_are_valid_and_the_ipvs_one_is_the_seeds() {
        let load = |text| config::load(text, LoadOptions::default()).expect("valid");
        let proxy = load(CONFIG);
        let k = proxy.config.enabled_keepalived().expect("enabled");
        assert_eq!(k.mode(), LoadBalancerMode::UserspaceProxy);
        let ipvs = load(CONFIG_IPVS);
        let k = ipvs.config.enabled_keepalived().expect("enabled");
        assert_eq!(k.mode(), LoadBalancerMode::Ipvs);
        let vs = &k.virtual_servers[0];
        assert_eq!(vs.ip_address.to_string(), VIP);
        assert_eq!(
            (vs.lb_algo, vs.lb_kind, vs.persistence_timeout_seconds),
            (LbAlgo::Rr, LbKind::Dr, 360)
        );
    }
}

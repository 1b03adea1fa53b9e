//! The processes the lab runs on a controller, a stand-in API server and a `cplbd`, and
//! where their programs are.

use std::path::PathBuf;
use std::process::Child;

use crate::files::log_file;
use crate::layout::{API_PORT, CONTROLLERS, config_path, socket};
use crate::topology::Topology;

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

/// Starts the stand-in API server on controller `name`, logging to its log.
fn start_apiserver(topo: &Topology, programs: &Programs, name: &str) -> Result<Child, String> {
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

/// Starts cplbd on controller `name` with the lab's configuration, every controller as a
/// real server and its status socket in the state directory (a stale socket removed first).
pub(crate) fn start_cplbd(
    topo: &Topology,
    programs: &Programs,
    name: &str,
) -> Result<Child, String> {
    let log = log_file(name)?;
    let servers: Vec<String> = CONTROLLERS.iter().map(|(_, a)| (*a).to_owned()).collect();
    let config = config_path();
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

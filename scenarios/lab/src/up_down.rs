//! `cplb lab up` and `cplb lab down`: building the seed's cluster out of network namespaces
//! (a stand-in API server and a `cplbd` on every controller, then one master awaited) and
//! removing everything it made again, on this kernel or in a qemu guest (`--kernel vm`).

use std::path::Path;
use std::time::Duration;

use crate::files::{private_dir, save_logs, write_private};
use crate::layout::{
    CONTROLLERS, CPLBD_STATE_DIR, GATEWAY, Mode, PREFIX, STATE_DIR, VIP, VM_DIR, config_path,
    hosts, topo_handle,
};
use crate::processes::{Programs, start_controller};
use crate::state::{views, wait_for_single_master};
use crate::topology::{self, Topology};
use crate::vm::{self, Guest};

/// `cplb lab up`: builds the lab and waits for one master. Everything is removed again if
/// any step fails.
pub fn up(programs: &Programs, mode: Mode) -> Result<String, String> {
    if !topology::is_root() {
        return Err("cplb lab needs root (it creates network namespaces)".into());
    }
    let _ = std::fs::remove_dir_all(STATE_DIR);
    private_dir(Path::new(STATE_DIR)).map_err(|e| format!("creating {STATE_DIR}: {e}"))?;
    write_private(&config_path(), mode.config())
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
fn remove_cplbd_files(dir: &Path, ino: u64) {
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
fn lab_namespace_inodes() -> Vec<u64> {
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

/// `cplb lab up --kernel vm`: boots the guest (left running) and builds the lab in it.
pub fn up_in_vm(programs: &Programs, mode: Mode) -> Result<String, String> {
    if !topology::is_root() {
        return Err("cplb lab needs root (it boots a guest with qemu)".into());
    }
    if let Ok(g) = Guest::attach(Path::new(VM_DIR)) {
        g.stop();
    }
    // The console log and command socket are root's alone.
    private_dir(Path::new(VM_DIR)).map_err(|e| format!("creating {VM_DIR}: {e}"))?;
    let image = vm::image(&[programs.cplb.clone(), programs.cplbd.clone()])?;
    let mut guest = Guest::boot(&image, Path::new(VM_DIR), true)?;
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
        vm::accelerator(),
        guest.console.display()
    ))
}

/// `cplb lab down --kernel vm`: the lab down and the guest powered off.
pub fn down_in_vm() -> String {
    match Guest::attach(Path::new(VM_DIR)) {
        Ok(mut g) => {
            let _ = g.run("cplb lab down", Duration::from_secs(30));
            g.stop();
            let _ = std::fs::remove_dir_all(VM_DIR);
            "lab down (guest powered off)".to_owned()
        }
        Err(e) => format!("lab down: {e}"),
    }
}

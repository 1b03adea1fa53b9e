//! The running lab as its daemons report it and its addresses show it: which cplbds say
//! master, which controllers hold the VIP, waiting for exactly one of each, and the seed's
//! views of it (addresses, data plane, `cplb status`).

use std::time::{Duration, Instant};

use cplb_netns::status;

use crate::layout::{CONTROLLERS, Mode, VIP, socket, topo_handle};
use crate::topology::Topology;

/// The controllers whose cplbd says master (one, when the lab is well).
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

/// The controllers holding the VIP on any interface.
pub(crate) fn vip_holders(topo: &Topology) -> Vec<String> {
    CONTROLLERS
        .iter()
        .filter(|(name, _)| {
            topo.addresses(name).is_ok_and(|a| a.iter().any(|x| x.starts_with(&format!("{VIP}/"))))
        })
        .map(|(n, _)| (*n).to_owned())
        .collect()
}

/// Waits until exactly one cplbd says master and that controller alone holds the VIP; its
/// name, or what was seen when `limit` ran out.
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

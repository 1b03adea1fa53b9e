//! The seed document's views of the cluster: each controller's `ip addr` lines, the master's
//! IPVS table (listing and `ipvsadm --save -n` form).

use core::fmt::Write as _;

use cplb_core::config::LbKind;

use crate::engine::Sim;
use crate::spec::{Fault, ReloadConfig};

/// `ip -4 --oneline addr` of every controller, and `ipvsadm -L -n` of every host that has
/// virtual services (the VIP's master).
pub(crate) fn render(sim: &Sim) -> String {
    let mut out = String::new();
    for h in sim.hosts().iter().filter(|h| h.is_controller()) {
        let _ = writeln!(out, "{}", h.spec.name);
        if !h.powered {
            let _ = writeln!(out, "  (powered off)");
            continue;
        }
        let inet = |ip: &core::net::IpAddr| if ip.is_ipv6() { "inet6" } else { "inet" };
        let _ = writeln!(
            out,
            "2: eth0    {} {}/{} scope global eth0",
            inet(&h.spec.address),
            h.spec.address,
            h.spec.prefix_len
        );
        for vip in &h.vips_on_eth0 {
            let prefix = sim
                .keepalived()
                .and_then(|k| {
                    k.vrrp_instances.iter().flat_map(|i| &i.virtual_ips).find(|c| c.addr == *vip)
                })
                .map_or(32, |c| c.prefix_len);
            let _ = writeln!(
                out,
                "2: eth0    {} {vip}/{prefix} scope global secondary eth0",
                inet(vip)
            );
        }
        for vip in &h.dataplane.local_vips {
            let host_len = if vip.is_ipv6() { 128 } else { 32 };
            let _ = writeln!(
                out,
                "3: dummyvip0    {} {vip}/{host_len} scope global dummyvip0",
                inet(vip)
            );
        }
    }
    for h in sim.hosts().iter().filter(|h| !h.dataplane.services.is_empty()) {
        let _ = writeln!(out, "{}: ipvsadm -L -n", h.spec.name);
        let _ = writeln!(
            out,
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
        );
        for s in &h.dataplane.services {
            let persistent = if s.persistence_secs > 0 {
                format!(" persistent {}", s.persistence_secs)
            } else {
                String::new()
            };
            let _ =
                writeln!(out, "TCP  {}:{} {}{persistent}", s.key.vip, s.key.port, s.algo.as_str());
            let forward = match s.forwarding {
                LbKind::Dr => "Route",
                LbKind::Nat => "Masq",
                LbKind::Tun => "Tunnel",
            };
            for r in &s.real_servers {
                let _ = writeln!(
                    out,
                    "  -> {:<28} {forward:<7} {}      0          0",
                    r.addr.to_string(),
                    r.weight
                );
            }
        }
        // The same table as `ipvsadm --save -n` prints it (the form the seed's command uses).
        let _ = writeln!(out, "{}: ipvsadm --save -n", h.spec.name);
        for s in &h.dataplane.services {
            let service = std::net::SocketAddr::new(s.key.vip, s.key.port);
            let persistent = if s.persistence_secs > 0 {
                format!(" -p {}", s.persistence_secs)
            } else {
                String::new()
            };
            let _ = writeln!(out, "-A -t {service} -s {}{persistent}", s.algo.as_str());
            let flag = match s.forwarding {
                LbKind::Dr => "-g",
                LbKind::Nat => "-m",
                LbKind::Tun => "-i",
            };
            for r in &s.real_servers {
                let _ = writeln!(out, "-a -t {service} -r {} {flag} -w {}", r.addr, r.weight);
            }
        }
    }
    if let Some(h) =
        sim.hosts().iter().find(|h| h.dataplane.proxy_port.is_some() && !h.vips_on_eth0.is_empty())
    {
        let port = h.dataplane.proxy_port.unwrap_or_default();
        let backends: Vec<String> =
            h.dataplane.proxy_backends.iter().map(ToString::to_string).collect();
        let _ =
            writeln!(out, "{}: userspace proxy :{port} -> {}", h.spec.name, backends.join(", "));
        let _ = sim.api_port();
    }
    out
}

/// A fault in words, as the trace's `FAULT` lines give it (hosts by name).
pub fn fault_text(fault: &Fault, names: &[String]) -> String {
    let n = |i: &usize| names.get(*i).cloned().unwrap_or_else(|| "?".to_owned());
    match fault {
        Fault::PowerOff(h) => format!("poweroff {}", n(h)),
        Fault::PowerOn(h) => format!("poweron {}", n(h)),
        Fault::Stop(h) => format!("stop {}", n(h)),
        Fault::Start(h) => format!("start {}", n(h)),
        Fault::Crash(h) => format!("crash {}", n(h)),
        Fault::Restart(h) => format!("restart {}", n(h)),
        Fault::Partition(groups) => {
            let gs: Vec<String> =
                groups.iter().map(|g| g.iter().map(n).collect::<Vec<_>>().join(",")).collect();
            format!("partition {}", gs.join(" | "))
        }
        Fault::Cut { from, to } => format!("cut {} -> {}", n(from), n(to)),
        Fault::Heal => "heal".into(),
        Fault::Loss(r) => format!("loss {r}"),
        Fault::Delay(a, b) => format!("delay {:?}..{:?}", a, b),
        Fault::Duplicate(r) => format!("duplicate {r}"),
        Fault::LinkDown(h) => format!("link_down {}", n(h)),
        Fault::LinkUp(h) => format!("link_up {}", n(h)),
        Fault::ApiserverDown(h) => format!("apiserver_down {}", n(h)),
        Fault::ApiserverUp(h) => format!("apiserver_up {}", n(h)),
        Fault::ApiserverHang(h) => format!("apiserver_hang {}", n(h)),
        Fault::ClockDrift(h, ppm) => format!("clock_drift {} {ppm} ppm", n(h)),
        Fault::VipRemoved(h) => format!("vip_removed {}", n(h)),
        Fault::KernelRefuses(h, d) => format!("kernel_refuses {} for {d:?}", n(h)),
        Fault::Reload(h, ReloadConfig::Same) => format!("reload {}", n(h)),
        Fault::Reload(h, ReloadConfig::New(_)) => format!("reload {} with a new config", n(h)),
        Fault::Reload(h, ReloadConfig::Invalid { error, .. }) => {
            format!("reload {} with an invalid config ({error})", n(h))
        }
    }
}

//! The seed document's views of the cluster: each controller's `ip addr` lines, the master's
//! IPVS table (listing and `ipvsadm --save -n` form).

use core::fmt::Write as _;
use core::net::{IpAddr, SocketAddr};

use cplb_core::config::LbKind;
use cplb_core::lb::ServiceSpec;

use crate::engine::Sim;
use crate::spec::{Fault, ReloadConfig};

/// What the seed's views show of one controller, whichever driver ran it.
#[derive(Debug, Clone)]
pub struct HostView {
    /// The host's name.
    pub name: String,
    /// Powered on (a powered-off host shows nothing else).
    pub powered: bool,
    /// Its own address and prefix length on eth0.
    pub address: IpAddr,
    /// The prefix length of its own address.
    pub prefix_len: u8,
    /// The VIPs eth0 holds besides, with their prefix lengths.
    pub eth0_vips: Vec<(IpAddr, u8)>,
    /// The addresses on `dummyvip0` (direct routing's local VIPs), with prefix lengths.
    pub local_vips: Vec<(IpAddr, u8)>,
    /// The IPVS services it holds.
    pub services: Vec<ServiceSpec>,
    /// The userspace proxy's port and backends, when it runs one.
    pub proxy: Option<(u16, Vec<SocketAddr>)>,
}

impl HostView {
    /// A powered-off host: nothing but its name and address.
    pub fn off(name: String, address: IpAddr, prefix_len: u8) -> Self {
        Self {
            name,
            powered: false,
            address,
            prefix_len,
            eth0_vips: Vec::new(),
            local_vips: Vec::new(),
            services: Vec::new(),
            proxy: None,
        }
    }
}

/// The engine's controllers as the views show them.
pub(crate) fn render(sim: &Sim) -> String {
    let prefix_of = |vip: &IpAddr| {
        sim.keepalived()
            .and_then(|k| {
                k.vrrp_instances.iter().flat_map(|i| &i.virtual_ips).find(|c| c.addr == *vip)
            })
            .map_or(32, |c| c.prefix_len)
    };
    let hosts: Vec<HostView> = sim
        .hosts()
        .iter()
        .filter(|h| h.is_controller())
        .map(|h| HostView {
            name: h.spec.name.clone(),
            powered: h.powered,
            address: h.spec.address,
            prefix_len: h.spec.prefix_len,
            eth0_vips: h.vips_on_eth0.iter().map(|v| (*v, prefix_of(v))).collect(),
            local_vips: h
                .dataplane
                .local_vips
                .iter()
                .map(|v| (*v, if v.is_ipv6() { 128 } else { 32 }))
                .collect(),
            services: h.dataplane.services.clone(),
            proxy: h.dataplane.proxy_port.map(|p| (p, h.dataplane.proxy_backends.clone())),
        })
        .collect();
    render_views(&hosts)
}

/// `ip -4 --oneline addr` of every controller, `ipvsadm -L -n` and `ipvsadm --save -n` of
/// every host that has virtual services (the VIP's master), and the proxy of the VIP's
/// holder.
pub fn render_views(hosts: &[HostView]) -> String {
    let mut out = String::new();
    let inet = |ip: &IpAddr| if ip.is_ipv6() { "inet6" } else { "inet" };
    for h in hosts {
        let _ = writeln!(out, "{}", h.name);
        if !h.powered {
            let _ = writeln!(out, "  (powered off)");
            continue;
        }
        let _ = writeln!(
            out,
            "2: eth0    {} {}/{} scope global eth0",
            inet(&h.address),
            h.address,
            h.prefix_len
        );
        for (vip, prefix) in &h.eth0_vips {
            let _ = writeln!(
                out,
                "2: eth0    {} {vip}/{prefix} scope global secondary eth0",
                inet(vip)
            );
        }
        for (vip, prefix) in &h.local_vips {
            let _ = writeln!(
                out,
                "3: dummyvip0    {} {vip}/{prefix} scope global dummyvip0",
                inet(vip)
            );
        }
    }
    for h in hosts.iter().filter(|h| h.powered && !h.services.is_empty()) {
        ipvs_views(&mut out, &h.name, &h.services);
    }
    if let Some((h, (port, backends))) = hosts
        .iter()
        .filter(|h| h.powered && !h.eth0_vips.is_empty())
        .find_map(|h| h.proxy.as_ref().map(|p| (h, p)))
    {
        let backends: Vec<String> = backends.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "{}: userspace proxy :{port} -> {}", h.name, backends.join(", "));
    }
    out
}

/// One host's IPVS table as `ipvsadm -L -n` and `ipvsadm --save -n` print it.
fn ipvs_views(out: &mut String, name: &str, services: &[ServiceSpec]) {
    let _ = writeln!(out, "{name}: ipvsadm -L -n");
    let _ = writeln!(
        out,
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    for s in services {
        let persistent = if s.persistence_secs > 0 {
            format!(" persistent {}", s.persistence_secs)
        } else {
            String::new()
        };
        let _ = writeln!(out, "TCP  {}:{} {}{persistent}", s.key.vip, s.key.port, s.algo.as_str());
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
    let _ = writeln!(out, "{name}: ipvsadm --save -n");
    for s in services {
        let service = SocketAddr::new(s.key.vip, s.key.port);
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

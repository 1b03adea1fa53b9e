//! The seed document's views of the cluster: each controller's `ip addr` lines, the master's
//! IPVS table (listing and `ipvsadm --save -n` form).

use core::fmt::Write as _;
use core::net::{IpAddr, SocketAddr};

use cplb_core::config::LbKind;
use cplb_core::lb::{LoopGuard, ServiceSpec};

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
    /// The loop guards its nftables table holds (direct routing).
    pub loop_guards: Vec<LoopGuard>,
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
            loop_guards: Vec::new(),
            proxy: None,
        }
    }
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
    for h in hosts.iter().filter(|h| h.powered) {
        guard_views(&mut out, &h.name, &h.loop_guards);
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

/// One host's IPVS table as `ipvsadm -L -n` and `ipvsadm --save -n` print it. cplbd
/// programs a virtual server as a firewall-mark service (`FWM 100`, `-A -f 100`): the loop
/// guard marks what reaches VIP:port, unless a director forwarded it, and IPVS takes only
/// marked packets; a service without a mark is shown as the address it listens on.
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
        let service = if s.fwmark != 0 {
            format!("FWM  {}", s.fwmark)
        } else {
            format!("TCP  {}", SocketAddr::new(s.key.vip, s.key.port))
        };
        let _ = writeln!(out, "{service} {}{persistent}", s.algo.as_str());
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
        let service = if s.fwmark != 0 {
            format!("-f {}", s.fwmark)
        } else {
            format!("-t {}", SocketAddr::new(s.key.vip, s.key.port))
        };
        let persistent = if s.persistence_secs > 0 {
            format!(" -p {}", s.persistence_secs)
        } else {
            String::new()
        };
        let _ = writeln!(out, "-A {service} -s {}{persistent}", s.algo.as_str());
        let flag = match s.forwarding {
            LbKind::Dr => "-g",
            LbKind::Nat => "-m",
            LbKind::Tun => "-i",
        };
        for r in &s.real_servers {
            let _ = writeln!(out, "-a {service} -r {} {flag} -w {}", r.addr, r.weight);
        }
    }
}

/// One host's loop guards, as its nftables table holds them.
fn guard_views(out: &mut String, name: &str, guards: &[LoopGuard]) {
    for g in guards {
        let from: Vec<String> = g.real_servers.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "{name}: nft: tcp {} gets mark {} unless it comes from {} (loop guard)",
            SocketAddr::new(g.service.vip, g.service.port),
            g.fwmark,
            from.join(", ")
        );
    }
}

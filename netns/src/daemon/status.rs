//! What `cplb status` and the metrics endpoint show: a snapshot of the daemon, served as
//! JSON on a local (Unix) socket.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The daemon at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Process id.
    pub pid: u32,
    /// Seconds since start.
    pub uptime_s: f64,
    /// This node's address (the first instance's).
    pub address: String,
    /// VRRP instances.
    pub instances: Vec<InstanceStatus>,
    /// Health of every API server.
    pub real_servers: Vec<ServerStatus>,
    /// The data plane this node holds.
    pub dataplane: DataplaneStatus,
    /// Receive drops that matched no instance (unknown VRID, unreadable header).
    pub unrouted_dropped: BTreeMap<String, u64>,
    /// Kernel objects the kernel refuses now (retried with backoff).
    #[serde(default)]
    pub kernel_refusals: Vec<RefusalStatus>,
}

/// Something the kernel refuses to hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefusalStatus {
    /// What (`address 10.0.0.1 on ifindex 2`, `NAT rules`, `virtual services`).
    pub object: String,
    /// `address`, `rules` or `services`.
    pub kind: String,
    /// The kernel's last words.
    pub reason: String,
    /// Refusals in a row.
    pub attempts: u32,
    /// Seconds since the first of them.
    pub since_s: f64,
}

/// One VRRP instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// `k0s-vip-<i>`.
    pub name: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Interface.
    pub interface: String,
    /// `initialize`, `backup`, `master`, `fault`.
    pub state: String,
    /// Effective priority (after tracking).
    pub priority: u8,
    /// Virtual addresses with prefix.
    pub vips: Vec<String>,
    /// The master as far as this node knows: itself, or the last accepted advert's source.
    pub master: Option<String>,
    /// State changes since start.
    pub transitions: u64,
    /// Advertisements sent.
    pub adverts_sent: u64,
    /// Advertisements accepted.
    pub adverts_received: u64,
    /// Times this node became master.
    pub became_master: u64,
    /// Priority-0 advertisements sent (resignations).
    pub priority_zero_sent: u64,
    /// Priority-0 advertisements received.
    pub priority_zero_received: u64,
    /// Dropped packets per receive rule.
    pub dropped: BTreeMap<String, u64>,
}

/// One API server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// `IP:PORT`.
    pub address: String,
    /// Healthy after hysteresis.
    pub healthy: bool,
    /// This node's own API server.
    pub local: bool,
}

/// The data plane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataplaneStatus {
    /// `userspace-proxy`, `ipvs` or `vip-only`.
    pub mode: String,
    /// What programs the kernel: `nftables`, `ipvs`, `nftables-nat` or `none`.
    pub kernel: String,
    /// Proxy port, in proxy mode.
    pub proxy_port: Option<u16>,
    /// Where the proxy sends connections.
    pub proxy_backends: Vec<String>,
    /// VIP:port redirected to the proxy.
    pub redirects: Vec<String>,
    /// Virtual services (master only).
    pub services: Vec<ServiceStatus>,
    /// VIPs held on the non-ARPing interface (direct routing).
    pub local_vips: Vec<String>,
    /// IPVS mode: how each service's traffic is marked, on every controller
    /// (`VIP:PORT mark 100 unless from 10.0.0.2, 10.0.0.3`: the loop guard).
    #[serde(default)]
    pub loop_guards: Vec<String>,
    /// Which interface holds them (`dummyvip0` or `lo`).
    pub local_vip_interface: Option<String>,
    /// Whether the kernel holds all of this (acknowledged); false while a change is being
    /// made or the kernel refuses one (see `kernel_refusals`).
    #[serde(default)]
    pub applied: bool,
    /// Proxy counters.
    pub proxy_accepted: u64,
    /// Connections handed to an API server.
    pub proxy_forwarded: u64,
    /// Dials that failed and were retried on the next server.
    pub proxy_dial_failures: u64,
    /// Client connections no server could take.
    pub proxy_unserved: u64,
}

/// A virtual service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `VIP:PORT`.
    pub address: String,
    /// The firewall mark the kernel's service matches (0: an address service).
    #[serde(default)]
    pub fwmark: u32,
    /// Scheduler.
    pub scheduler: String,
    /// Forwarding (DR, NAT, TUN).
    pub forwarding: String,
    /// Persistence timeout in seconds.
    pub persistence_s: u32,
    /// `IP:PORT weight`.
    pub real_servers: Vec<String>,
}

/// Asks the daemon at `socket` for its snapshot.
pub fn query(socket: &Path, timeout: Duration) -> Result<Snapshot, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach cplbd at {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("reading from cplbd at {}: {e}", socket.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("cplbd at {} answered something unreadable: {e}", socket.display()))
}

/// The human-readable form of `cplb status`.
pub fn render(s: &Snapshot) -> String {
    let mut out = format!("cplbd pid {} up {:.0}s, node {}\n", s.pid, s.uptime_s, s.address);
    for i in &s.instances {
        out += &format!(
            "\ninstance {} (vrid {}, {}): {} priority {}\n  vips: {}\n  master: {}\n",
            i.name,
            i.vrid,
            i.interface,
            i.state.to_uppercase(),
            i.priority,
            i.vips.join(", "),
            i.master.as_deref().unwrap_or("unknown"),
        );
        out += &format!(
            "  transitions {}  adverts sent {} received {}  became master {}  priority-0 sent {} received {}\n",
            i.transitions,
            i.adverts_sent,
            i.adverts_received,
            i.became_master,
            i.priority_zero_sent,
            i.priority_zero_received
        );
        if i.dropped.is_empty() {
            out += "  dropped: none\n";
        } else {
            let d: Vec<String> = i.dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!("  dropped: {}\n", d.join(", "));
        }
    }
    out += "\nAPI servers:\n";
    for r in &s.real_servers {
        out += &format!(
            "  {:<24} {}{}\n",
            r.address,
            if r.healthy { "healthy" } else { "UNHEALTHY" },
            if r.local { " (local)" } else { "" }
        );
    }
    let d = &s.dataplane;
    out += &format!(
        "\ndata plane: {} via {}{}\n",
        d.mode,
        d.kernel,
        if d.applied { "" } else { " (not yet all applied)" }
    );
    if let Some(port) = d.proxy_port {
        out += &format!(
            "  proxy :{port} -> {}\n  redirects: {}\n  proxy connections {} forwarded {} dial failures {} unserved {}\n",
            d.proxy_backends.join(", "),
            d.redirects.iter().map(|r| format!("{r} -> :{port}")).collect::<Vec<_>>().join(", "),
            d.proxy_accepted,
            d.proxy_forwarded,
            d.proxy_dial_failures,
            d.proxy_unserved,
        );
    }
    if !d.services.is_empty() {
        out +=
            "  Prot LocalAddress:Port Scheduler Flags\n    -> RemoteAddress:Port Forward Weight\n";
        for svc in &d.services {
            let persist = if svc.persistence_s > 0 {
                format!(" persistent {}", svc.persistence_s)
            } else {
                String::new()
            };
            let mark =
                if svc.fwmark == 0 { String::new() } else { format!(" (as FWM {})", svc.fwmark) };
            out += &format!("  TCP  {} {}{}{mark}\n", svc.address, svc.scheduler, persist);
            for r in &svc.real_servers {
                out += &format!("    -> {r} {}\n", svc.forwarding);
            }
        }
    }
    for guard in &d.loop_guards {
        out += &format!("  loop guard: {guard}\n");
    }
    if !d.local_vips.is_empty() {
        out += &format!(
            "  local VIPs on {}: {}\n",
            d.local_vip_interface.as_deref().unwrap_or("?"),
            d.local_vips.join(", ")
        );
    }
    if !s.kernel_refusals.is_empty() {
        out += "\nthe kernel refuses (retrying with backoff):\n";
        for r in &s.kernel_refusals {
            out += &format!(
                "  {}: {} ({} times in a row, for {:.1}s)\n",
                r.object, r.reason, r.attempts, r.since_s
            );
        }
    }
    out
}

/// Prometheus text exposition of a snapshot.
pub fn metrics(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, value) in samples {
            out += &format!("{name}{labels} {value}\n");
        }
    };
    let inst =
        |i: &InstanceStatus| format!("{{instance=\"{}\",vrid=\"{}\"}}", escape(&i.name), i.vrid);
    let state_num = |s: &str| match s {
        "backup" => 1,
        "master" => 2,
        "fault" => 3,
        _ => 0,
    };
    family(
        "cplb_vrrp_state",
        "gauge",
        "VRRP state: 0 initialize, 1 backup, 2 master, 3 fault.",
        s.instances.iter().map(|i| (inst(i), state_num(&i.state).to_string())).collect(),
    );
    family(
        "cplb_vrrp_priority",
        "gauge",
        "Effective VRRP priority.",
        s.instances.iter().map(|i| (inst(i), i.priority.to_string())).collect(),
    );
    family(
        "cplb_vrrp_transitions_total",
        "counter",
        "VRRP state changes.",
        s.instances.iter().map(|i| (inst(i), i.transitions.to_string())).collect(),
    );
    family(
        "cplb_vrrp_became_master_total",
        "counter",
        "Times this node became master.",
        s.instances.iter().map(|i| (inst(i), i.became_master.to_string())).collect(),
    );
    family(
        "cplb_vrrp_adverts_sent_total",
        "counter",
        "Advertisements sent.",
        s.instances.iter().map(|i| (inst(i), i.adverts_sent.to_string())).collect(),
    );
    family(
        "cplb_vrrp_adverts_received_total",
        "counter",
        "Advertisements accepted.",
        s.instances.iter().map(|i| (inst(i), i.adverts_received.to_string())).collect(),
    );
    let mut drops = Vec::new();
    for i in &s.instances {
        for (reason, n) in &i.dropped {
            drops.push((
                format!(
                    "{{instance=\"{}\",vrid=\"{}\",reason=\"{}\"}}",
                    escape(&i.name),
                    i.vrid,
                    escape(reason)
                ),
                n.to_string(),
            ));
        }
    }
    for (reason, n) in &s.unrouted_dropped {
        drops.push((
            format!("{{instance=\"\",vrid=\"\",reason=\"{}\"}}", escape(reason)),
            n.to_string(),
        ));
    }
    family("cplb_vrrp_dropped_total", "counter", "Packets dropped, per receive rule.", drops);
    family(
        "cplb_kernel_refused",
        "gauge",
        "Refusals in a row of what the kernel will not hold now (0: none), per kind of object.",
        ["address", "rules", "services"]
            .iter()
            .map(|kind| {
                let n: u32 =
                    s.kernel_refusals.iter().filter(|r| r.kind == *kind).map(|r| r.attempts).sum();
                (format!("{{object=\"{kind}\"}}"), n.to_string())
            })
            .collect(),
    );
    family(
        "cplb_real_server_healthy",
        "gauge",
        "API server health after hysteresis (1 healthy).",
        s.real_servers
            .iter()
            .map(|r| {
                (
                    format!("{{server=\"{}\",local=\"{}\"}}", escape(&r.address), r.local),
                    u8::from(r.healthy).to_string(),
                )
            })
            .collect(),
    );
    let d = &s.dataplane;
    for (name, help, v) in [
        (
            "cplb_proxy_accepted_total",
            "Client connections accepted by the proxy.",
            d.proxy_accepted,
        ),
        ("cplb_proxy_forwarded_total", "Connections handed to an API server.", d.proxy_forwarded),
        (
            "cplb_proxy_dial_failures_total",
            "Dials retried on the next server.",
            d.proxy_dial_failures,
        ),
        ("cplb_proxy_unserved_total", "Client connections no server took.", d.proxy_unserved),
    ] {
        family(name, "counter", help, vec![(String::new(), v.to_string())]);
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cplb_core::vrrp::DropReason;

    fn sample() -> Snapshot {
        Snapshot {
            pid: 7,
            address: "10.200.0.10".into(),
            instances: vec![InstanceStatus {
                name: "k0s-vip-0".into(),
                vrid: 51,
                interface: "eth0".into(),
                state: "master".into(),
                priority: 200,
                vips: vec!["10.200.0.200/24".into()],
                master: Some("10.200.0.10".into()),
                transitions: 2,
                dropped: BTreeMap::from([(DropReason::AuthFailure.as_str().to_owned(), 3)]),
                ..InstanceStatus::default()
            }],
            real_servers: vec![ServerStatus {
                address: "10.200.0.10:6443".into(),
                healthy: true,
                local: true,
            }],
            dataplane: DataplaneStatus {
                mode: "userspace-proxy".into(),
                kernel: "nftables".into(),
                proxy_port: Some(6444),
                proxy_backends: vec!["10.200.0.10:6443".into()],
                redirects: vec!["10.200.0.200:6443".into()],
                ..DataplaneStatus::default()
            },
            ..Snapshot::default()
        }
    }

    #[test]
    fn metrics_carry_state_drops_and_health_in_exposition_format() {
        let text = metrics(&sample());
        assert!(text.contains("cplb_vrrp_state{instance=\"k0s-vip-0\",vrid=\"51\"} 2\n"), "{text}");
        assert!(text.contains(
            "cplb_vrrp_dropped_total{instance=\"k0s-vip-0\",vrid=\"51\",reason=\"auth_failure\"} 3\n"
        ));
        assert!(
            text.contains(
                "cplb_real_server_healthy{server=\"10.200.0.10:6443\",local=\"true\"} 1\n"
            )
        );
        // Every sample line belongs to a family declared just before it.
        let mut declared = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&declared), "{line} outside {declared}");
                assert!(line.rsplit(' ').next().unwrap().parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn status_round_trips_through_json_and_renders() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&json).unwrap(), s);
        let text = render(&s);
        assert!(text.contains("instance k0s-vip-0 (vrid 51, eth0): MASTER priority 200"), "{text}");
        assert!(text.contains("10.200.0.200:6443 -> :6444"), "{text}");
        assert!(text.contains("dropped: auth_failure 3"), "{text}");
    }
}

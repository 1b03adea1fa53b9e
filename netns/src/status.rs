//! What `cplb status` and the metrics endpoint show: a snapshot of the daemon, served as
//! JSON on a local (Unix) socket.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
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
    /// Descriptors, as the status and metrics endpoints see them (not in the SIGUSR1 log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessStatus>,
    /// The status socket's and the metrics endpoint's own counters (not in the SIGUSR1 log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<EndpointStatus>,
}

/// The process's file descriptors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Descriptors open now.
    pub open_fds: u64,
    /// RLIMIT_NOFILE's soft limit (raised to the hard limit at start).
    pub max_fds: u64,
}

/// Counters of the status socket and the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatus {
    /// Status socket peers refused by their credentials (not root, cplbd's user or a
    /// member of `--status-group`).
    pub status_denied: u64,
    /// Status connections closed at once because the socket's connection cap was reached.
    pub status_refused: u64,
    /// Metrics connections closed at once because the endpoint's connection cap was reached.
    pub metrics_refused: u64,
}

/// A histogram of durations in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramStatus {
    /// The buckets' upper bounds in seconds, ascending; a last bucket above them is implied.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative): one more than `bounds`, the last one for
    /// observations above every bound.
    pub counts: Vec<u64>,
    /// Sum of the observations in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl HistogramStatus {
    /// An empty histogram with these upper bounds (ascending).
    pub fn new(bounds: &[f64]) -> Self {
        Self { bounds: bounds.to_vec(), counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    /// Counts one observation.
    pub fn observe(&mut self, seconds: f64) {
        if self.counts.len() != self.bounds.len() + 1 {
            self.counts.resize(self.bounds.len() + 1, 0);
        }
        let bucket = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }
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
    /// This node's takeovers: seconds from the last advert heard from the old master (or its
    /// resignation) to becoming master.
    #[serde(default)]
    pub takeover_seconds: HistogramStatus,
    /// Seconds the VIP was held by nobody as this node saw it (see the metric
    /// `cplb_vip_unheld_seconds_total` for what is counted).
    #[serde(default)]
    pub vip_unheld_s: f64,
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
    /// Client connections refused because the proxy held its maximum.
    #[serde(default)]
    pub proxy_refused: u64,
    /// Connections the proxy holds now.
    #[serde(default)]
    pub proxy_active: u64,
    /// Connections closed after the idle timeout.
    #[serde(default)]
    pub proxy_idle_closed: u64,
    /// The proxy's connection cap (0: no proxy).
    #[serde(default)]
    pub proxy_max_connections: u64,
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

/// Prometheus metrics of a snapshot, in the OpenMetrics text format as the Prometheus
/// organisation's `prometheus-client` encodes it (counters end in `_total`, durations are
/// `_seconds`; the text ends with `# EOF`).
pub fn metrics(s: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotMetrics(s.clone())));
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Every metric of one snapshot, encoded on each scrape (the snapshot is the state; there
/// is nothing to accumulate here).
#[derive(Debug)]
struct SnapshotMetrics(Snapshot);

type Labels = Vec<(&'static str, String)>;

/// One family: its descriptor, then one sample (set) per label set.
fn family<V>(
    e: &mut DescriptorEncoder<'_>,
    (name, kind, unit, help): (&str, MetricType, Option<&Unit>, &str),
    samples: impl IntoIterator<Item = (Labels, V)>,
    mut sample: impl FnMut(&mut MetricEncoder<'_>, &V) -> fmt::Result,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        sample(&mut m.encode_family(&labels)?, &value)?;
    }
    Ok(())
}

fn counter(m: &mut MetricEncoder<'_>, v: &u64) -> fmt::Result {
    m.encode_counter::<NoLabelSet, u64, u64>(v, None)
}

fn gauge(m: &mut MetricEncoder<'_>, v: &i64) -> fmt::Result {
    m.encode_gauge(v)
}

const COUNTER: MetricType = MetricType::Counter;
const GAUGE: MetricType = MetricType::Gauge;

impl Collector for SnapshotMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.0;
        let e = &mut e;
        let inst = |i: &InstanceStatus| -> Labels {
            vec![("instance", i.name.clone()), ("vrid", i.vrid.to_string())]
        };
        let per_instance = |f: fn(&InstanceStatus) -> u64| {
            s.instances.iter().map(move |i| (inst(i), f(i))).collect::<Vec<_>>()
        };
        let state_num = |s: &str| match s {
            "backup" => 1,
            "master" => 2,
            "fault" => 3,
            _ => 0,
        };
        family(
            e,
            (
                "cplb_vrrp_state",
                GAUGE,
                None,
                "VRRP state: 0 initialize, 1 backup, 2 master, 3 fault.",
            ),
            s.instances.iter().map(|i| (inst(i), state_num(&i.state))),
            gauge,
        )?;
        family(
            e,
            ("cplb_vrrp_priority", GAUGE, None, "Effective VRRP priority."),
            s.instances.iter().map(|i| (inst(i), i64::from(i.priority))),
            gauge,
        )?;
        for (name, help, f) in [
            (
                "cplb_vrrp_transitions",
                "VRRP state changes.",
                (|i| i.transitions) as fn(&InstanceStatus) -> u64,
            ),
            ("cplb_vrrp_became_master", "Times this node became master.", |i| i.became_master),
            ("cplb_vrrp_adverts_sent", "Advertisements sent.", |i| i.adverts_sent),
            ("cplb_vrrp_adverts_received", "Advertisements accepted.", |i| i.adverts_received),
            (
                "cplb_vrrp_priority_zero_sent",
                "Priority-0 advertisements sent (resignations).",
                |i| i.priority_zero_sent,
            ),
            (
                "cplb_vrrp_priority_zero_received",
                "Priority-0 advertisements received (a master resigned).",
                |i| i.priority_zero_received,
            ),
        ] {
            family(e, (name, COUNTER, None, help), per_instance(f), counter)?;
        }
        let mut drops = Vec::new();
        for i in &s.instances {
            for (reason, n) in &i.dropped {
                let mut labels = inst(i);
                labels.push(("reason", reason.clone()));
                drops.push((labels, *n));
            }
        }
        for (reason, n) in &s.unrouted_dropped {
            let labels = vec![
                ("instance", String::new()),
                ("vrid", String::new()),
                ("reason", reason.clone()),
            ];
            drops.push((labels, *n));
        }
        family(
            e,
            ("cplb_vrrp_dropped", COUNTER, None, "Packets dropped, per receive rule."),
            drops,
            counter,
        )?;
        family(
            e,
            (
                "cplb_vrrp_takeover",
                MetricType::Histogram,
                Some(&Unit::Seconds),
                "This node's takeovers: the time from the last advert it heard from the old master (or the old master's resignation) to becoming master.",
            ),
            s.instances.iter().map(|i| (inst(i), &i.takeover_seconds)),
            |m, h| {
                let mut buckets: Vec<(f64, u64)> =
                    h.bounds.iter().copied().zip(h.counts.iter().copied()).collect();
                buckets.push((f64::INFINITY, h.counts.get(h.bounds.len()).copied().unwrap_or(0)));
                m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
            },
        )?;
        family(
            e,
            (
                "cplb_vip_unheld",
                COUNTER,
                Some(&Unit::Seconds),
                "Time the VIP was held by no node, as this node saw it: from the moment it was known free (this node let it go with no other master heard at once, or the master resigned) to this node's takeover or the first advert of a master; after a master went silent, from its last advert less one advertisement interval to this node's takeover or the first advert of a new master. Time in fault or initialize and the start-up before a master is heard are not counted.",
            ),
            s.instances.iter().map(|i| (inst(i), i.vip_unheld_s)),
            |m, v| m.encode_counter::<NoLabelSet, f64, f64>(v, None),
        )?;
        family(
            e,
            (
                "cplb_kernel_refused",
                GAUGE,
                None,
                "Refusals in a row of what the kernel will not hold now (0: none), per kind of object.",
            ),
            ["address", "rules", "services"].iter().map(|kind| {
                let n: u32 =
                    s.kernel_refusals.iter().filter(|r| r.kind == *kind).map(|r| r.attempts).sum();
                (vec![("object", (*kind).to_owned())], i64::from(n))
            }),
            gauge,
        )?;
        family(
            e,
            (
                "cplb_real_server_healthy",
                GAUGE,
                None,
                "API server health after hysteresis (1 healthy).",
            ),
            s.real_servers.iter().map(|r| {
                let labels = vec![("server", r.address.clone()), ("local", r.local.to_string())];
                (labels, i64::from(r.healthy))
            }),
            gauge,
        )?;
        let d = &s.dataplane;
        for (name, help, v) in [
            (
                "cplb_proxy_accepted",
                "Client connections accepted by the proxy (under its connection cap).",
                d.proxy_accepted,
            ),
            ("cplb_proxy_forwarded", "Connections handed to an API server.", d.proxy_forwarded),
            (
                "cplb_proxy_dial_failures",
                "Dials retried on the next server.",
                d.proxy_dial_failures,
            ),
            ("cplb_proxy_unserved", "Client connections no server took.", d.proxy_unserved),
            (
                "cplb_proxy_refused",
                "Client connections refused (reset at once) because the proxy held its maximum.",
                d.proxy_refused,
            ),
            (
                "cplb_proxy_idle_closed",
                "Connections closed because no byte moved either way for the idle timeout.",
                d.proxy_idle_closed,
            ),
        ] {
            family(e, (name, COUNTER, None, help), [(Labels::new(), v)], counter)?;
        }
        for (name, help, v) in [
            ("cplb_proxy_connections", "Connections the proxy holds now.", d.proxy_active),
            (
                "cplb_proxy_max_connections",
                "The proxy's connection cap (0: no proxy).",
                d.proxy_max_connections,
            ),
        ] {
            let v = i64::try_from(v).unwrap_or(i64::MAX);
            family(e, (name, GAUGE, None, help), [(Labels::new(), v)], gauge)?;
        }
        if let Some(ep) = &s.endpoints {
            let label = |endpoint: &str, reason: &str| -> Labels {
                vec![("endpoint", endpoint.to_owned()), ("reason", reason.to_owned())]
            };
            family(
                e,
                (
                    "cplb_endpoint_refused",
                    COUNTER,
                    None,
                    "Connections to the status socket or the metrics endpoint closed unanswered: by the peer's credentials, or at the connection cap.",
                ),
                [
                    (label("status", "credentials"), ep.status_denied),
                    (label("status", "connection_cap"), ep.status_refused),
                    (label("metrics", "connection_cap"), ep.metrics_refused),
                ],
                counter,
            )?;
        }
        if let Some(p) = &s.process {
            for (name, help, v) in [
                ("process_open_fds", "Open file descriptors.", p.open_fds),
                (
                    "process_max_fds",
                    "Maximum number of open file descriptors (RLIMIT_NOFILE).",
                    p.max_fds,
                ),
            ] {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                family(e, (name, GAUGE, None, help), [(Labels::new(), v)], gauge)?;
            }
        }
        Ok(())
    }
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
                takeover_seconds: {
                    let mut h = HistogramStatus::new(&crate::daemon::vipclock::TAKEOVER_BUCKETS);
                    h.observe(3.2);
                    h
                },
                vip_unheld_s: 2.25,
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
                proxy_refused: 4,
                proxy_active: 5,
                ..DataplaneStatus::default()
            },
            endpoints: Some(EndpointStatus { status_denied: 6, ..EndpointStatus::default() }),
            process: Some(ProcessStatus { open_fds: 7, max_fds: 1024 }),
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
        // Conventions: counters end in _total, durations are _seconds (with their unit).
        for line in [
            "# TYPE cplb_vrrp_transitions counter\n",
            "cplb_vrrp_transitions_total{instance=\"k0s-vip-0\",vrid=\"51\"} 2\n",
            "# TYPE cplb_vrrp_takeover_seconds histogram\n# UNIT cplb_vrrp_takeover_seconds seconds\n",
            "cplb_vrrp_takeover_seconds_count{instance=\"k0s-vip-0\",vrid=\"51\"} 1\n",
            "cplb_vrrp_takeover_seconds_bucket{le=\"3.0\",instance=\"k0s-vip-0\",vrid=\"51\"} 0\n",
            "cplb_vrrp_takeover_seconds_bucket{le=\"3.5\",instance=\"k0s-vip-0\",vrid=\"51\"} 1\n",
            "cplb_vrrp_takeover_seconds_bucket{le=\"+Inf\",instance=\"k0s-vip-0\",vrid=\"51\"} 1\n",
            "cplb_vip_unheld_seconds_total{instance=\"k0s-vip-0\",vrid=\"51\"} 2.25\n",
            "cplb_proxy_refused_total 4\n",
            "cplb_proxy_connections 5\n",
            "cplb_endpoint_refused_total{endpoint=\"status\",reason=\"credentials\"} 6\n",
            "process_open_fds 7\n",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Label values are escaped.
        let mut odd = sample();
        odd.instances[0].name = "a\"b\\c\nd".into();
        assert!(metrics(&odd).contains("instance=\"a\\\"b\\\\c\\nd\""), "{}", metrics(&odd));
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

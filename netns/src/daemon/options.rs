//! `cplbd`'s command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use cplb_core::node::VrrpTuning;

use super::plan::ServerArg;

/// cplbd: control-plane load balancing for Kubernetes controllers (VRRP VIPs plus a load
/// balancer over the API servers), configured by the same k0s.yaml as `cplb validate`.
#[derive(Debug, Clone, Parser)]
#[command(name = "cplbd", version)]
pub struct Options {
    /// The configuration: a k0s.yaml, a k0sctl.yaml or a `spec:` fragment.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Read the configuration as k0s does in single-node mode (CPLB is then refused).
    #[arg(long)]
    pub single: bool,
    /// The API servers to balance over and health check, as `IP` or `IP:PORT` (the port
    /// defaults to spec.api.port), comma separated. Default: the instances' unicastPeers
    /// plus this node's own address.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_server)]
    pub real_servers: Vec<ServerArg>,
    /// Serve Prometheus metrics on ADDR (`IP:PORT`); off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// The local socket `cplb status` talks to.
    #[arg(long, value_name = "PATH", default_value = "/run/cplb/cplbd.sock")]
    pub status_socket: PathBuf,
    /// Where cplbd keeps its lock (one cplbd per network namespace) and the record of what
    /// it created.
    #[arg(long, value_name = "DIR", default_value = "/run/cplb")]
    pub state_dir: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax; RUST_LOG wins when set).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// How API servers are health checked.
    #[arg(long, value_enum, default_value_t = HealthCheck::Https)]
    pub health_check: HealthCheck,
    /// The path probed by the http and https checks.
    #[arg(long, default_value = "/healthz")]
    pub health_path: String,
    /// Client certificate (PEM) presented by the https check, e.g. k0s's admin certificate.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// CA bundle (PEM) to verify API servers with; unverified without it.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// How long the proxy waits for an API server to accept before trying the next.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Keep every capability (for debugging); by default only CAP_NET_ADMIN and
    /// CAP_NET_RAW are kept after start-up.
    #[arg(long)]
    pub keep_capabilities: bool,
    /// Accept VRRP adverts only from these source addresses (comma-separated; empty: from
    /// any). VRRPv3 (IPv6) has no authentication: list the other controllers' link-local
    /// addresses on the VRRP interface (their IPv4 addresses for IPv4 instances) so that no
    /// other host on the LAN can take the VIP or stretch failover with a forged advert.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub accept_adverts_from: Vec<IpAddr>,
    /// Tests only: panic in a task after this long, to show that a panic ends the daemon
    /// after the same clean-up as SIGTERM.
    #[arg(long, hide = true, value_name = "DURATION", value_parser = parse_duration)]
    pub panic_after: Option<Duration>,
    /// Connections the userspace proxy holds at once; over it new ones are refused and
    /// counted. Default: (RLIMIT_NOFILE − 256) / 2, the limit cplbd raised at start, less a
    /// reserve for health probes, netlink, status and metrics, two descriptors a connection.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub proxy_max_connections: Option<u64>,
    /// The proxy closes both legs of a connection on which no byte moved either way for
    /// this long (600s: ten minutes); 0 never does.
    #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = parse_duration)]
    pub proxy_idle_timeout: Duration,
    /// Threads that carry the userspace proxy's connections (default: one per CPU, at most
    /// 8, as HAProxy's `nbthread`); 0 runs them on the daemon's own thread. VRRP, health
    /// checks and the reconcile keep their one thread either way, so a loaded proxy never
    /// delays an advertisement.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=256))]
    pub proxy_threads: Option<u16>,
    /// The group the status socket (mode 0660) is given to; its members, root and cplbd's
    /// own user may query it, anyone else is refused.
    #[arg(long, value_name = "NAME")]
    pub status_group: Option<String>,
    /// The VRRP version of IPv4 instances: 2 (keepalived's default and k0s's) or 3 (RFC
    /// 9568, with sub-second advertisement intervals). IPv6 instances are always VRRPv3.
    #[arg(long, value_name = "N", default_value = "2", value_parser = parse_vrrp_version)]
    pub vrrp_version: u8,
    /// Every instance's advertisement interval, overriding advertIntervalSeconds (as
    /// keepalived's `advert_int`): whole seconds with VRRPv2, 10 ms steps up to 40.95 s with
    /// VRRPv3 (`100ms` for keepalived's `advert_int 0.1`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub advert_interval: Option<Duration>,
    /// How VRRPv3 over IPv4 is checksummed when sent: with the IPv4 pseudo-header, as
    /// keepalived and FRR do by default, or over the message only as RFC 9568 says (what
    /// keepalived sends with `v3_checksum_as_v2`). Either form is accepted.
    #[arg(long, value_enum, default_value_t = V3Checksum::PseudoHeader)]
    pub v3_ipv4_checksum: V3Checksum,
}

/// How VRRPv3 over IPv4 is checksummed when sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum V3Checksum {
    /// With the IPv4 pseudo-header (keepalived's and FRR's default).
    PseudoHeader,
    /// The message only (RFC 9568; keepalived's `v3_checksum_as_v2`).
    Rfc9568,
}

fn parse_vrrp_version(text: &str) -> Result<u8, String> {
    match text.trim() {
        "2" => Ok(2),
        "3" => Ok(3),
        other => Err(format!("{other:?}: the VRRP version is 2 or 3")),
    }
}

impl Options {
    /// What the command line changes in every VRRP instance.
    pub fn vrrp_tuning(&self) -> VrrpTuning {
        use cplb_core::vrrp::{V3Ipv4Checksum, Version};
        VrrpTuning {
            accept_from: self.accept_adverts_from.clone(),
            ipv4_version: if self.vrrp_version == 3 { Version::V3 } else { Version::V2 },
            advert_interval: self.advert_interval,
            v3_ipv4_checksum: match self.v3_ipv4_checksum {
                V3Checksum::PseudoHeader => V3Ipv4Checksum::PseudoHeader,
                V3Checksum::Rfc9568 => V3Ipv4Checksum::Rfc9568,
            },
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Health check kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HealthCheck {
    /// GET the health path over TLS (what k0s does).
    Https,
    /// GET the health path over plain HTTP.
    Http,
    /// TCP connect only (keepalived's TCP_CHECK).
    Tcp,
}

fn parse_server(text: &str) -> Result<ServerArg, String> {
    let text = text.trim();
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(ServerArg { ip: sa.ip(), port: Some(sa.port()) });
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .map(|ip| ServerArg { ip, port: None })
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

/// Reads `1s`, `500ms`, `2.5s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < 86_400.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!("{text:?} is not a duration like 1s or 500ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_durations_parse_and_garbage_is_named() {
        let o = Options::try_parse_from([
            "cplbd",
            "--config",
            "k0s.yaml",
            "--real-servers",
            "10.0.0.1,10.0.0.2:7443,[fd00::1]:6443,fd00::2",
            "--dial-timeout",
            "250ms",
        ])
        .unwrap();
        assert_eq!(o.real_servers.len(), 4);
        assert_eq!(o.real_servers[1].port, Some(7443));
        assert_eq!(o.real_servers[3].port, None);
        assert_eq!(o.dial_timeout, Duration::from_millis(250));
        let err = Options::try_parse_from(["cplbd", "--config", "x", "--real-servers", "node-1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"node-1\" is not an IP address"), "{err}");
        let err = Options::try_parse_from(["cplbd"]).unwrap_err().to_string();
        assert!(err.contains("--config"), "{err}");
    }
}

//! The effective k0s CPLB configuration: every field k0s has, every default filled in.
//! Serialized with k0s's field names, so `cplb validate` prints what k0s would run.

use core::fmt;
use core::net::IpAddr;
use core::time::Duration;

use serde::{Serialize, Serializer};

/// The API version of the normalized output.
pub const K0S_API_VERSION: &str = "k0s.k0sproject.io/v1beta1";

/// A k0s ClusterConfig reduced to what CPLB reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Always `k0s.k0sproject.io/v1beta1`.
    pub api_version: &'static str,
    /// Always `ClusterConfig`.
    pub kind: &'static str,
    /// The spec.
    pub spec: Spec,
}

impl ClusterConfig {
    /// The keepalived section CPLB runs: present only when CPLB is enabled.
    pub fn enabled_keepalived(&self) -> Option<&Keepalived> {
        let cplb = self.spec.network.control_plane_load_balancing.as_ref()?;
        cplb.keepalived.as_ref().filter(|_| cplb.enabled)
    }
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// `spec.api`.
    pub api: ApiSpec,
    /// `spec.network`.
    pub network: NetworkSpec,
}

/// `spec.api`: what CPLB uses of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// The API server port, 6443 by default; the virtual servers' port.
    pub port: u16,
    /// `externalAddress`; must be empty when virtual servers are used.
    pub external_address: String,
    /// Extra SANs of the API server certificate.
    pub sans: Vec<String>,
}

/// `spec.network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// `controlPlaneLoadBalancing`, absent when the file has none.
    pub control_plane_load_balancing: Option<Cplb>,
}

/// `spec.network.controlPlaneLoadBalancing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cplb {
    /// Whether CPLB runs.
    pub enabled: bool,
    /// Always `Keepalived`, the only type k0s knows.
    #[serde(rename = "type")]
    pub kind: String,
    /// The keepalived section, absent if the file has none (then nothing runs).
    pub keepalived: Option<Keepalived>,
}

/// `...controlPlaneLoadBalancing.keepalived`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Keepalived {
    /// The VRRP instances.
    pub vrrp_instances: Vec<VrrpInstance>,
    /// The virtual servers: non-empty means IPVS mode.
    pub virtual_servers: Vec<VirtualServer>,
    /// Port of the userspace proxy (6444).
    pub user_space_proxy_bind_port: u16,
    /// VIPs only, no load balancing.
    pub disable_load_balancer: bool,
    /// k0s's custom keepalived VRRP template (accepted, not used by cplb).
    #[serde(rename = "configTemplateVRRP")]
    pub config_template_vrrp: String,
    /// k0s's custom keepalived virtual-server template (accepted, not used by cplb).
    #[serde(rename = "configTemplateVS")]
    pub config_template_vs: String,
}

/// How API traffic on the VIPs is balanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancerMode {
    /// k0s's default: a TCP proxy on every controller, VIP:port redirected to it.
    UserspaceProxy,
    /// IPVS virtual servers (`virtualServers` given), programmed by the VIP's master.
    Ipvs,
    /// `disableLoadBalancer: true`: the VIPs only.
    VipOnly,
}

impl Keepalived {
    /// The load-balancing mode this configuration selects.
    pub fn mode(&self) -> LoadBalancerMode {
        if self.disable_load_balancer {
            LoadBalancerMode::VipOnly
        } else if self.virtual_servers.is_empty() {
            LoadBalancerMode::UserspaceProxy
        } else {
            LoadBalancerMode::Ipvs
        }
    }
}

/// An address with a prefix length, as k0s's `virtualIPs` entries (`192.168.122.200/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Cidr {
    /// Parses `address/prefix` as Go's `net.ParseCIDR` does (host bits may be set).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix_len: u8 = prefix.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self { addr, prefix_len })
    }
}

/// `vrrpInstances[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VrrpInstance {
    /// The VIPs with their prefixes.
    #[serde(rename = "virtualIPs")]
    pub virtual_ips: Vec<Cidr>,
    /// Interface name, a MAC address (resolved to a name on the node), or empty for the
    /// interface of the default route.
    pub interface: String,
    /// VRID: the configured one, or 51 + index.
    #[serde(rename = "virtualRouterID")]
    pub virtual_router_id: u8,
    /// Advertisement interval in whole seconds.
    pub advert_interval_seconds: u8,
    /// VRRPv2 simple-text password, 1 to 8 bytes.
    pub auth_pass: String,
    /// Unicast peers; empty for multicast.
    pub unicast_peers: Vec<IpAddr>,
    /// Source address for unicast.
    #[serde(rename = "unicastSourceIP", serialize_with = "ip_or_empty")]
    pub unicast_source_ip: Option<IpAddr>,
    /// RFC 6724 address label for IPv6 VIPs (10000).
    pub address_label: u32,
}

fn ip_or_empty<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
    match ip {
        Some(ip) => s.collect_str(ip),
        None => s.serialize_str(""),
    }
}

/// IPVS schedulers k0s accepts (`lbAlgo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgo {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection.
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
}

impl LbAlgo {
    /// Every scheduler, in k0s's order.
    pub const ALL: [Self; 9] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Lblc,
        Self::Dh,
        Self::Sh,
        Self::Sed,
        Self::Nq,
    ];

    /// The name k0s and ipvsadm use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
        }
    }
}

/// IPVS forwarding methods k0s accepts (`lbKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LbKind {
    /// Masquerading.
    #[serde(rename = "NAT")]
    Nat,
    /// Direct routing ("Route" in ipvsadm's listing).
    #[serde(rename = "DR")]
    Dr,
    /// IP-in-IP tunnelling.
    #[serde(rename = "TUN")]
    Tun,
}

impl LbKind {
    /// Every kind, in k0s's order.
    pub const ALL: [Self; 3] = [Self::Nat, Self::Dr, Self::Tun];

    /// The name k0s uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nat => "NAT",
            Self::Dr => "DR",
            Self::Tun => "TUN",
        }
    }
}

/// `virtualServers[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServer {
    /// The VIP the service listens on.
    pub ip_address: IpAddr,
    /// Health-check period, truncated to microseconds as k0s does.
    #[serde(serialize_with = "go_duration")]
    pub delay_loop: Duration,
    /// Scheduler.
    pub lb_algo: LbAlgo,
    /// Forwarding method.
    pub lb_kind: LbKind,
    /// Persistence in seconds (k0s always sets it: 360).
    pub persistence_timeout_seconds: u32,
}

fn go_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_go_duration(*d))
}

/// Go's `time.Duration.String()`: `1m0s`, `1.5s`, `500ms`, `0s`.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |value: u128, scale: u128| {
        let whole = value / scale;
        let rest = value % scale;
        if rest == 0 {
            whole.to_string()
        } else {
            let width = scale.ilog10() as usize;
            let digits = format!("{rest:0width$}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let h = ns / 3_600_000_000_000;
    let m = ns / 60_000_000_000 % 60;
    let s = frac(ns % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_duration_strings() {
        assert_eq!(format_go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::from_micros(1234)), "1.234ms");
        assert_eq!(format_go_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn cidr_parses_like_go() {
        assert_eq!(
            Cidr::parse("192.168.122.200/24").map(|c| c.to_string()),
            Some("192.168.122.200/24".into())
        );
        assert!(Cidr::parse("192.168.122.200").is_none());
        assert!(Cidr::parse("10.0.0.1/33").is_none());
        assert!(Cidr::parse("fd00::1/64").is_some());
        assert!(Cidr::parse("10.0.0.1/+1").is_none());
    }
}

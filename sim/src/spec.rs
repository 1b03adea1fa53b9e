//! What to simulate: hosts, the CPLB configuration, traffic and the fault schedule.

use core::net::IpAddr;
use core::time::Duration;

use cplb_core::config::ClusterConfig;
use cplb_core::node;
use cplb_core::vrrp::{MAX_V3_INTERVAL_CS, Version};

/// What a host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs an API server and the cplb daemon.
    Controller,
    /// Sends API traffic (kubelet and friends).
    Worker,
    /// Sends API traffic (kubectl, CI).
    Client,
}

impl Role {
    /// The name used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Worker => "worker",
            Self::Client => "client",
        }
    }
}

/// A host on the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Its address on the segment.
    pub address: IpAddr,
    /// Prefix length of that address.
    pub prefix_len: u8,
    /// When the host is switched on (from the start by default); before that it is off.
    pub up_at: Duration,
    /// A configuration of its own (another cluster on the segment); the scenario's otherwise.
    pub config: Option<ClusterConfig>,
    /// VRRP settings of this host beyond the configuration.
    pub vrrp: HostVrrp,
}

/// A source of API connections.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficSpec {
    /// Index of the host that connects.
    pub from: usize,
    /// New connections per second.
    pub rate: f64,
    /// The VIP to connect to; the first VIP when `None`.
    pub vip: Option<IpAddr>,
    /// When the first connection is made.
    pub start: Duration,
    /// A watch: one long-lived connection (as client-go's watches) instead of fresh ones at
    /// `rate`; each event it carries is an answer, its end a failure (then it is reopened).
    /// Only the real proxy under `--driver daemon` runs it; the engine has no connections.
    pub watch: bool,
}

/// One fault (or repair), at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Power loss: all state lost, no goodbye.
    PowerOff(usize),
    /// Power back: the host boots and starts its daemon.
    PowerOn(usize),
    /// Graceful daemon stop: priority 0, addresses released, rules removed.
    Stop(usize),
    /// Start the daemon again.
    Start(usize),
    /// The daemon is killed; the host keeps its addresses and data plane.
    Crash(usize),
    /// A new daemon starts and reconciles what the old one left.
    Restart(usize),
    /// Splits the segment into groups; hosts in no group form one more group.
    Partition(Vec<Vec<usize>>),
    /// Frames from one host to another are dropped (one direction only).
    Cut {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
    },
    /// Removes partitions, cuts, link faults, loss, delay and duplication.
    Heal,
    /// Drops this ratio of frames.
    Loss(f64),
    /// Delays every frame by a uniform time in min..=max (so frames reorder).
    Delay(Duration, Duration),
    /// Duplicates this ratio of frames.
    Duplicate(f64),
    /// A host's network link goes down.
    LinkDown(usize),
    /// And comes back.
    LinkUp(usize),
    /// The host's API server stops answering (connections refused).
    ApiserverDown(usize),
    /// It answers again.
    ApiserverUp(usize),
    /// The host's API server accepts connections but never answers a request (a deadlock,
    /// an overloaded etcd): health probes time out rather than fail.
    ApiserverHang(usize),
    /// The host's clock runs fast (positive) or slow by this many parts per million.
    ClockDrift(usize, f64),
    /// Someone deletes the VIPs from the host's eth0 by hand (`ip addr del`, a network
    /// manager), whichever instance holds them, behind the daemon's back.
    VipRemoved(usize),
    /// The host's kernel refuses every address and data-plane command (VIP add and remove,
    /// nftables, IPVS) for this long, then accepts them again by itself.
    KernelRefuses(usize, Duration),
    /// SIGHUP: the host's daemon reloads its configuration file, unchanged or replaced.
    Reload(usize, ReloadConfig),
}

/// The configuration file a [`Fault::Reload`] finds on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadConfig {
    /// The file the host runs, unchanged: its own (`HostSpec::config`), the scenario's, or
    /// the one an earlier reload put there.
    Same,
    /// A new, valid file; it stays the host's file (later starts and restarts read it).
    New(Box<ClusterConfig>),
    /// A new file that `cplb validate` refuses: the daemon must refuse it and keep running
    /// what it runs. Whether the bad file stays on disk for later starts is the engine's
    /// choice (a real daemon restarted on it would refuse to start).
    Invalid {
        /// The file's text, as written in the scenario.
        text: String,
        /// The first error `cplb validate` reports for it.
        error: String,
    },
}

/// A fault at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedFault {
    /// When, from the start.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// Everything the simulator needs.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Scenario name (for reports).
    pub name: String,
    /// How long to run.
    pub duration: Duration,
    /// The hosts.
    pub hosts: Vec<HostSpec>,
    /// The CPLB configuration every controller runs (as `cplb validate` reads it).
    pub config: ClusterConfig,
    /// API traffic.
    pub traffic: Vec<TrafficSpec>,
    /// The fault schedule.
    pub faults: Vec<TimedFault>,
    /// VRRP settings k0s's configuration cannot express (for fuzzing): version, interval.
    pub vrrp: VrrpTuning,
}

/// VRRP settings beyond k0s's configuration, applied to every controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VrrpTuning {
    /// Use VRRPv3 (also over IPv4, then without authentication).
    pub v3: bool,
    /// Advertisement interval in centiseconds, instead of `advertIntervalSeconds`.
    pub advert_interval_cs: Option<u16>,
}

impl VrrpTuning {
    /// The interval an instance of `version` runs, in centiseconds: whole seconds (at least
    /// one) with VRRPv2, the field's range with VRRPv3; `None`: the configuration's.
    pub fn advert_interval_cs(self, version: Version) -> Option<u16> {
        self.advert_interval_cs.map(|cs| match version {
            Version::V2 => (cs / 100).clamp(1, 255) * 100,
            Version::V3 => cs.clamp(1, MAX_V3_INTERVAL_CS),
        })
    }

    /// The same settings as cplbd takes them on its command line (`--vrrp-version`,
    /// `--advert-interval`), for a controller whose instances are of `v4`'s family: what
    /// both drivers run.
    pub fn for_node(self, v4: bool) -> node::VrrpTuning {
        let version = if self.v3 || !v4 { Version::V3 } else { Version::V2 };
        node::VrrpTuning {
            ipv4_version: if self.v3 { Version::V3 } else { Version::V2 },
            advert_interval: self
                .advert_interval_cs(version)
                .map(|cs| Duration::from_millis(u64::from(cs) * 10)),
            ..node::VrrpTuning::default()
        }
    }
}

/// Per-host VRRP settings beyond k0s's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostVrrp {
    /// Priority instead of k0s's 200.
    pub priority: Option<u8>,
    /// Preempt_Mode (default on).
    pub preempt: Option<bool>,
}

/// The link-local address a simulated IPv6 host sends VRRP from: `fe80::` and the
/// interface identifier of its address (every driver's hosts use the same).
pub fn link_local(address: IpAddr) -> Option<IpAddr> {
    let IpAddr::V6(a) = address else { return None };
    Some(IpAddr::V6((0xfe80_u128 << 112 | (a.to_bits() & u128::from(u64::MAX))).into()))
}

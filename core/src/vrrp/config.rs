//! Configuration of one virtual router instance, and what is wrong with a bad one.

use core::net::IpAddr;
use core::time::Duration;

use super::advertisement::{Authentication, MAX_V3_INTERVAL_CS, Priority, Version, Vrid};
use super::checksum::{ChecksumPolicy, V3Ipv4Checksum};

/// A network interface, as the driver numbers it (the kernel's ifindex in the daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfIndex(pub u32);

impl core::fmt::Display for IfIndex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A tracked input (for example "the local API server answers"), registered on the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackerId(pub u32);

/// A virtual address with the prefix length it is installed with (`10.0.0.200/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualIp {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length on the interface.
    pub prefix_len: u8,
}

/// How an instance reacts to a tracked input going down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Track {
    /// Which tracked input.
    pub tracker: TrackerId,
    /// Added to the priority while the input is down (negative lowers it). 0 means the
    /// instance goes to the Fault state instead, refusing mastership, like keepalived's
    /// `weight 0`.
    pub weight: i16,
}

/// Gratuitous ARP / unsolicited neighbour advertisement timing, keepalived's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnnounceConfig {
    /// Announcements sent at once on becoming master (`garp_master_repeat`, 5).
    pub burst: u8,
    /// Delay of the second burst (`garp_master_delay`, 5 s); `None` for no second burst.
    pub repeat_after: Option<Duration>,
    /// Periodic refresh while master (`garp_master_refresh`, off by default).
    pub refresh_every: Option<Duration>,
    /// After winning a contention with another master, a burst goes out at once and, if set,
    /// again this much later, so the winner's announcement reaches hosts after the loser's
    /// (the split-brain GARP race measured in the lab baseline, §4.5).
    pub contention_repeat_after: Option<Duration>,
    /// A master that yields to another sends one last advertisement first. The winner then
    /// sees a contention and re-announces, which moves hosts whose neighbour entry still
    /// points at the loser (after a partition heals, the winner may never have heard the
    /// loser; without this, hosts stay pointed at it until their ARP entry goes stale).
    pub yield_notice: bool,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            burst: 5,
            repeat_after: Some(Duration::from_secs(5)),
            refresh_every: None,
            contention_repeat_after: Some(Duration::from_millis(100)),
            yield_notice: true,
        }
    }
}

/// One VRRP instance: a VRID on an interface for one address family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// A name for logs and metrics (k0s: `k0s-vip-<index>`).
    pub name: String,
    /// The interface the instance runs on.
    pub ifindex: IfIndex,
    /// Virtual router ID.
    pub vrid: Vrid,
    /// Protocol version.
    pub version: Version,
    /// Configured priority, 1..=255 (255: address owner).
    pub priority: Priority,
    /// Advertisement_Interval in centiseconds (v2: whole seconds × 100).
    pub advert_interval_cs: u16,
    /// The interface's primary address: the source of adverts (IPv6: link-local) and the
    /// tie-breaker between equal priorities.
    pub primary_address: IpAddr,
    /// The virtual addresses. For IPv6 the first should be link-local (RFC 9568 §5.2.9).
    pub virtual_ips: Vec<VirtualIp>,
    /// v2 authentication (k0s `authPass`); must be `None` for v3.
    pub auth: Authentication,
    /// Preempt_Mode: a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: no preemption until this long after start-up, or after
    /// first hearing a lower-priority master.
    pub preempt_delay: Duration,
    /// Unicast VRRP: send to each of these instead of the group, and accept only from them.
    pub unicast_peers: Vec<IpAddr>,
    /// Accept adverts only from these sources (empty: from any). VRRPv3 has no
    /// authentication, so on a shared LAN this is what keeps a forged advert out; for IPv6
    /// multicast the sources are the peers' link-local addresses.
    pub accept_from: Vec<IpAddr>,
    /// Checksum form sent for VRRPv3 over IPv4.
    pub v3_ipv4_checksum: V3Ipv4Checksum,
    /// Checksum forms accepted for VRRPv3 over IPv4.
    pub accept_checksum: ChecksumPolicy,
    /// Accept, and send, IPv6 adverts whose first address is not link-local (keepalived
    /// interop; unicast IPv6 from a global source address).
    pub allow_global_first_ipv6: bool,
    /// Accept any TTL / hop limit on unicast adverts from the configured peers (keepalived's
    /// unicast behaviour; see `ReceiveRules::unicast_any_ttl`).
    pub unicast_any_ttl: bool,
    /// Announcement timing.
    pub announce: AnnounceConfig,
    /// Tracked inputs and their effect.
    pub tracking: Vec<Track>,
}

impl InstanceConfig {
    /// An instance with k0s's and keepalived's defaults around the given essentials:
    /// version 2, priority 100, 1 s, preempt on, multicast, no authentication.
    pub fn new(
        name: &str,
        ifindex: IfIndex,
        vrid: Vrid,
        primary: IpAddr,
        vips: Vec<VirtualIp>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            ifindex,
            vrid,
            version: if primary.is_ipv6() { Version::V3 } else { Version::V2 },
            priority: Priority::DEFAULT,
            advert_interval_cs: 100,
            primary_address: primary,
            virtual_ips: vips,
            auth: Authentication::None,
            preempt: true,
            preempt_delay: Duration::ZERO,
            unicast_peers: Vec::new(),
            accept_from: Vec::new(),
            v3_ipv4_checksum: V3Ipv4Checksum::default(),
            accept_checksum: ChecksumPolicy::default(),
            allow_global_first_ipv6: false,
            unicast_any_ttl: false,
            announce: AnnounceConfig::default(),
            tracking: Vec::new(),
        }
    }

    /// Checks the configuration on its own (the router checks it against its other instances).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |what: String| Err(ConfigError::Invalid { instance: self.name.clone(), what });
        if self.priority.0 == 0 {
            return err("priority 0 is reserved for resigning: use 1..=255".into());
        }
        if self.virtual_ips.is_empty() {
            return err("no virtual IPs".into());
        }
        if self.virtual_ips.len() > 255 {
            return err(format!(
                "{} virtual IPs: an advertisement carries at most 255",
                self.virtual_ips.len()
            ));
        }
        let v6 = self.primary_address.is_ipv6();
        if let Some(vip) = self.virtual_ips.iter().find(|v| v.addr.is_ipv6() != v6) {
            return err(format!(
                "virtual IP {} is not of the family of the primary address {}",
                vip.addr, self.primary_address
            ));
        }
        if let Some(vip) =
            self.virtual_ips.iter().find(|v| v.prefix_len > if v6 { 128 } else { 32 })
        {
            return err(format!(
                "virtual IP {}/{}: prefix length out of range",
                vip.addr, vip.prefix_len
            ));
        }
        if let Some(peer) = self.unicast_peers.iter().find(|p| p.is_ipv6() != v6) {
            return err(format!("unicast peer {peer} is not of the family of the primary address"));
        }
        if self.unicast_peers.contains(&self.primary_address) {
            return err("the unicast peers contain the instance's own address".into());
        }
        match self.version {
            Version::V2 if v6 => return err("VRRPv2 is IPv4 only: use version 3 for IPv6".into()),
            Version::V2
                if !self.advert_interval_cs.is_multiple_of(100)
                    || !(100..=25_500).contains(&self.advert_interval_cs) =>
            {
                return err(format!(
                    "VRRPv2 interval {} cs is not whole seconds in 1..=255",
                    self.advert_interval_cs
                ));
            }
            Version::V3 if !(1..=MAX_V3_INTERVAL_CS).contains(&self.advert_interval_cs) => {
                return err(format!(
                    "VRRPv3 interval {} cs is not in 1..=4095",
                    self.advert_interval_cs
                ));
            }
            Version::V3 if self.auth != Authentication::None => {
                return err("VRRPv3 has no authentication".into());
            }
            _ => {}
        }
        if self.announce.repeat_after == Some(Duration::ZERO)
            || self.announce.refresh_every == Some(Duration::ZERO)
            || self.announce.contention_repeat_after == Some(Duration::ZERO)
        {
            return err("announcement delays must be positive (use None to turn one off)".into());
        }
        if let Some(t) = self.tracking.iter().find(|t| !(-253..=253).contains(&t.weight)) {
            return err(format!("tracking weight {} is out of -253..=253", t.weight));
        }
        Ok(())
    }
}

/// Why an instance or tracker cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The instance's own settings are inconsistent.
    #[error("instance {instance}: {what}")]
    Invalid {
        /// Instance name.
        instance: String,
        /// What is wrong.
        what: String,
    },
    /// Two instances with the same VRID on one interface and family.
    #[error("instance {instance}: VRID {vrid} is already used on this interface by {other}")]
    DuplicateVrid {
        /// Instance name.
        instance: String,
        /// The VRID.
        vrid: u8,
        /// The instance that has it.
        other: String,
    },
    /// A tracked input that was never registered.
    #[error("instance {instance}: tracker {tracker} is not registered")]
    UnknownTracker {
        /// Instance name.
        instance: String,
        /// The tracker.
        tracker: u32,
    },
    /// Rise and fall counts start at 1.
    #[error("tracker rise and fall must be at least 1")]
    TrackerCounts,
    /// A reload would change what was set up at start (a listener, the data plane's
    /// kind): it needs a restart.
    #[error("{what} needs a restart")]
    NeedsRestart {
        /// What would change.
        what: String,
    },
}

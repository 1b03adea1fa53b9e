//! Every bound the invariants and expectations hold a run to, derived in one place from
//! the protocol's timers, the health checker's and the node's retry and hold policy, and
//! the driver's reaction time.

use core::time::Duration;

use cplb_core::config::Keepalived;
use cplb_core::node::{ANNOUNCE_REFRESH, MAX_BACKOFF, REFUSAL_HOLD};
use cplb_core::time::Instant;

use crate::instances::InstanceInfo;
use crate::spec::{Fault, SimSpec};

/// The bounds of one run.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Per instance: Master_Down_Interval at the lowest priority, and the advert interval.
    takeovers: Vec<(Duration, Duration)>,
    /// From an API server's change to the health checker's verdict on it.
    health: Duration,
    /// How long the driver may take to carry out what the node decided (a loop turn and a
    /// kernel call; a round trip on the segment).
    reaction: Duration,
    /// When the schedule's faults are over (see [`Bounds::faults_over`]).
    faults_over: Option<Instant>,
    /// The last host to be switched on comes up then (zero: all at the start).
    last_boot: Instant,
}

impl Bounds {
    /// The bounds for `spec`'s instances and the health checks of `keepalived`, with a
    /// driver that reacts within `reaction`.
    pub fn new(
        spec: &SimSpec,
        instances: &[InstanceInfo],
        keepalived: Option<&Keepalived>,
        reaction: Duration,
    ) -> Self {
        let health = keepalived
            .map(|k| {
                let c = cplb_core::lb::k0s_health_config(k);
                c.interval + (c.interval + c.timeout) * c.fall + c.interval
            })
            .unwrap_or_default();
        let faults_over = spec
            .faults
            .iter()
            .map(|f| match f.fault {
                Fault::KernelRefuses(_, d) => Instant::ZERO + f.at + d + Self::kernel_noticed(),
                _ => Instant::ZERO + f.at,
            })
            .max();
        let last_boot = spec.hosts.iter().map(|h| Instant::ZERO + h.up_at).max();
        Self {
            takeovers: instances.iter().map(|i| (i.master_down, i.advert)).collect(),
            health,
            reaction,
            faults_over,
            last_boot: last_boot.unwrap_or(Instant::ZERO),
        }
    }

    /// How long after a kernel stops refusing a node may still act on its refusals: until
    /// its next retry (at most [`MAX_BACKOFF`] apart) tells it the kernel works again, which
    /// also ends a Fault hold the kernel's failure caused; a hold for one address the kernel
    /// alone refused lasts at most its first length.
    pub fn kernel_noticed() -> Duration {
        MAX_BACKOFF.max(REFUSAL_HOLD)
    }

    /// The driver's reaction time.
    pub fn reaction(&self) -> Duration {
        self.reaction
    }

    /// When the faults are over: the last fault, or the end of a kernel refusal (which
    /// ends by itself) once the node has noticed it, whichever is later.
    pub fn faults_over(&self) -> Option<Instant> {
        self.faults_over
    }

    /// The slowest takeover of `instance`: Master_Down_Interval and an advert interval.
    pub fn takeover(&self, instance: usize) -> Duration {
        self.takeovers.get(instance).map_or(Duration::ZERO, |(down, advert)| *down + *advert)
    }

    /// How long two masters of `instance` that hear each other may last: a contention
    /// settles within a Master_Down_Interval (and a round trip).
    pub fn dual_master(&self, instance: usize) -> Duration {
        self.takeovers.get(instance).map_or(Duration::ZERO, |(down, _)| *down) + self.reaction
    }

    /// When `instance` must have converged (one master per connected group): its slowest
    /// takeover after the faults are over and the last host has booted.
    pub fn converged_at(&self, instance: usize) -> Instant {
        let from = self.faults_over.unwrap_or(Instant::ZERO).max(self.last_boot);
        from + self.takeover(instance) + self.reaction
    }

    /// How long a node may keep acting on a kernel refusal after it ended (a VIP it no
    /// longer wants still on its interface, a stale data plane).
    pub fn kernel_settling(&self) -> Duration {
        Self::kernel_noticed() + self.reaction
    }

    /// How long a master's data plane may list what the health checks have not caught up
    /// with yet.
    pub fn dataplane(&self) -> Duration {
        self.health + self.reaction
    }

    /// How long after the faults are over clients may still fail: the slowest takeover,
    /// the announcement refresh (a stale ARP entry is corrected by then), the health
    /// checker's verdict, and a second.
    pub fn recovery(&self) -> Duration {
        let slowest = (0..self.takeovers.len()).map(|i| self.takeover(i)).max().unwrap_or_default();
        slowest + ANNOUNCE_REFRESH + self.health + Duration::from_secs(1)
    }
}

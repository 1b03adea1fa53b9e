//! Load balancing, sans-IO: the virtual-service model with the IPVS schedulers and
//! persistence, health checking of the real servers, and the desired data plane with a
//! diff against the current one. Drivers (the simulator's data plane, the userspace proxy,
//! IPVS over netlink, nftables) carry it out.
//!
//! The three k0s modes ([`crate::config::LoadBalancerMode`]): the userspace proxy (default),
//! IPVS virtual servers, and VIPs only.

mod dataplane;
mod health;
mod nat;
mod scheduler;
mod service;

pub use dataplane::{
    Change, DataPlane, FWMARK_BASE, FWMARK_SPAN, LoopGuard, ServiceSpec, apply, desired, diff,
    persistence_of,
};
pub use health::{
    HealthChange, HealthChecker, HealthConfig, MIN_HEALTH_INTERVAL, Probe, ProbeId,
    k0s_health_config,
};
pub use nat::{NatBalancer, NatRules, Redirect, Spread, nat_rules};
pub use scheduler::Destination;
pub use service::{RealServer, ServiceKey, VirtualService};

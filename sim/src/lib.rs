//! The deterministic simulator of cplb: controllers running the real core on one simulated
//! L2 segment, with ARP caches, GARP, the userspace-proxy and IPVS data planes, clients that
//! open API connections, a fault vocabulary, and invariants checked at every step.
//!
//! Time jumps from event to event; every random choice comes from the seed, so the same
//! spec and seed give the same trace, byte for byte.
#![forbid(unsafe_code)]

mod engine;
mod failover;
mod host;
mod outcome;
mod spec;
mod trace;
mod views;

pub use engine::{InstanceInfo, Sim, cause_text, instances, recovery_bound};
pub use failover::{Failovers, components};
pub use outcome::{
    AttemptRecord, ClientStats, FailoverReport, Outcome, Sample, Transition, Violation,
};
pub use spec::{
    Fault, HostSpec, HostVrrp, ReloadConfig, Role, SimSpec, TimedFault, TrafficSpec, VrrpTuning,
};
pub use views::{HostView, fault_text, render_views};

//! The deterministic simulator of cplb, and what every scenario run is held to.
//!
//! - [`Sim`], the engine: controllers running the real core on one simulated L2 segment,
//!   with ARP caches, GARP, the userspace-proxy and IPVS data planes and clients. Time
//!   jumps from event to event; every random choice comes from the seed, so the same spec
//!   and seed give the same trace, byte for byte.
//! - What both drivers (the engine, and cplbd's own code under turmoil in
//!   `cplb-scenarios`) share: the scenario's [`World`] and the faults that shape it, the
//!   [`Observer`] that checks the invariants as the run goes and records the trace and
//!   the [`Outcome`], the [`Bounds`] those checks hold a run to, the instances' numbering,
//!   the hosts' [`Clock`]s and the seed's views.
#![forbid(unsafe_code)]

mod bounds;
mod checker;
mod clock;
mod engine;
mod failover;
mod faults;
mod files;
mod instances;
mod network;
mod observe;
mod outcome;
mod queue;
mod record;
mod spec;
mod trace;
mod views;
mod world;

pub use bounds::Bounds;
pub use clock::Clock;
pub use engine::Sim;
pub use failover::{Failovers, components};
pub use faults::{Due, Testbed, apply, boot, fault_text, refusal_end, schedule};
pub use files::Files;
pub use instances::{InstanceInfo, instances};
pub use network::Network;
pub use observe::Observer;
pub use outcome::{
    AttemptRecord, ClientStats, FailoverReport, Outcome, Sample, Transition, Violation,
};
pub use record::cause_text;
pub use spec::{
    Fault, HostSpec, HostVrrp, ReloadConfig, Role, SimSpec, TimedFault, TrafficSpec, VrrpTuning,
    link_local,
};
pub use views::{HostView, render_views};
pub use world::{ApiServer, World};

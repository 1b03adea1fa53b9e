//! The sans-IO core of cplb, control-plane load balancing for Kubernetes controllers.
//!
//! Nothing in this crate touches a socket, a clock or a random number generator: drivers
//! (the simulator in `cplb-sim`, the Linux daemon in `cplb-netns`) pass bytes and time in
//! and carry out what comes back. That is what lets the same code be fuzzed, simulated
//! deterministically and deployed. `clippy.toml` beside this crate bans the clock and
//! thread-RNG calls, and the test command checks the dependency tree for I/O crates.
//!
//! Modules:
//! - [`config`]: the k0s CPLB configuration: reading, defaults, validation.
//! - [`lb`]: virtual services, IPVS schedulers, persistence, health checks, the desired
//!   data plane.
//! - [`node`]: one controller ([`node::Node`]): its VRRP instances from the k0s
//!   configuration, health checks, desired data plane and what the kernel holds.
//! - [`time`]: the core's `Instant`, in nanoseconds, passed in by drivers.
//! - [`vrrp`]: the VRRP wire codec (v2 and v3, IPv4 and IPv6, with the receive rules) and
//!   the virtual router state machine ([`vrrp::Router`]).
#![deny(missing_docs)]
#![warn(clippy::indexing_slicing)]

pub mod config;
pub mod lb;
pub mod node;
pub mod time;
pub mod vrrp;

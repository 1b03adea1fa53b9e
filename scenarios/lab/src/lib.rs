//! Real hosts on this one machine, for the harness, and on them the seed document's cluster
//! with a `cplbd` on every controller (`cplb lab`).
//!
//! The hosts: network namespaces joined by a bridge ([`topology`]), a qemu guest with
//! Debian's kernel for what this kernel lacks ([`vm`]), a stand-in Kubernetes API server
//! ([`apiserver`]).
//!
//! The lab's ground, which depends on nothing above it: its layout (the seed's addresses,
//! ports, VIP and configuration, its namespaces and directories: [`layout`]), what it writes
//! root-only and the logs it saves ([`files`]), the processes it runs on a controller
//! ([`processes`]), what its daemons report and who holds the VIP (`state`), its client
//! (`client`), a replayable generator ([`rng`]) and median/min/max (`stats`).
//!
//! The commands on that ground: building and removing the lab ([`up_down`]), measured
//! power-offs of its master ([`failover`], drawn for the reports by `record`), crash and
//! power-off cycles checked one by one ([`soak`]), and cplbd against keepalived and HAProxy
//! on the same namespaces ([`bench`]).
#![deny(missing_docs)]

pub mod apiserver;
pub mod bench;
mod client;
pub mod failover;
pub mod files;
pub mod layout;
pub mod processes;
mod record;
pub mod rng;
pub mod soak;
mod state;
mod stats;
pub mod topology;
pub mod up_down;
pub mod vm;

//! cplbd's own code under turmoil: the pieces a scenario runner puts on simulated hosts.
//! The driver, the health prober and the userspace proxy are the daemon's, compiled against
//! turmoil's network ([`crate::net::Sim`]); the kernel seam is a simulated kernel per host
//! ([`kernel::SimKernel`]).

pub mod controller;
pub mod kernel;

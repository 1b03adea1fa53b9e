//! The Linux side of cplb: the kernel seam and the daemon `cplbd` built on it.
//!
//! The core (`cplb-core`) decides; this crate carries its decisions out on a Linux kernel,
//! and nothing else (the harness that builds hosts, runs scenarios and benches lives in
//! `cplb-scenarios` and `cplb-lab`):
//! - [`kernel`]: the seam, everything cplbd asks of Linux, with typed errors: raw VRRP
//!   sockets and their filters, interfaces and VIPs over rtnetlink and their notifications,
//!   GARP/NA, nftables, IPVS, and the record of what cplbd created;
//! - [`daemon`]: `cplbd` itself: options, the plan, the driver loop that feeds the node,
//!   receive, timers, status and metrics endpoints, start-up, reload and shutdown;
//! - [`proxy`]: the userspace TCP proxy; [`probe`]: API server health checks; [`net`]: the
//!   TCP network both use (the host's here; a simulated one can take its place);
//! - [`status`]: what `cplb status` and the metrics show, and the client that asks for it.
#![deny(missing_docs)]

pub mod daemon;
pub mod kernel;
pub mod limits;
pub mod net;
pub mod privileges;
pub mod probe;
pub mod proxy;
pub mod status;

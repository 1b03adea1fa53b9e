//! The Linux backend of cplb and the daemon `cplbd`.
//!
//! The core (`cplb-core`) decides; this crate carries its decisions out on a real kernel:
//! - [`kernel`]: the kernel seam, everything cplbd asks of Linux: raw VRRP sockets
//!   ([`kernel::vrrp_socket`]), interfaces and VIPs over rtnetlink ([`kernel::link`]) and
//!   their change notifications ([`kernel::watch`]), GARP/NA ([`kernel::announce`]),
//!   nftables ([`kernel::nft`]) and IPVS ([`kernel::ipvs`]);
//! - [`plan`]: from the k0s configuration and the interfaces to what this node runs;
//! - [`proxy`]: the userspace TCP proxy; [`probe`]: API server health checks; [`net`]: the
//!   TCP network both use (the host's, or turmoil's in simulation);
//! - [`daemon`]: start-up, the async driver, shutdown; [`status`]: `cplb status` and metrics;
//! - [`lab`]: the namespace lab of `cplb lab`; [`apiserver`]: the lab's stand-in API server;
//!   [`vm`]: a qemu guest with Debian's cloud kernel, for IPVS and dummy interfaces;
//! - [`simulated`]: the daemon's code on turmoil's hosts, with a simulated kernel.
#![deny(missing_docs)]

pub mod apiserver;
pub mod daemon;
pub use daemon::{plan, status};
pub mod kernel;
pub mod lab;
pub mod limits;
pub mod net;
pub mod options;
pub mod privileges;
pub mod probe;
pub mod proxy;
pub mod simulated;
pub mod topology;
pub mod vm;

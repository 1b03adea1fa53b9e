//! The Linux backend of cplb and the daemon `cplbd`.
//!
//! The core (`cplb-core`) decides; this crate carries its decisions out on a real kernel:
//! - [`vrrp_socket`]: raw IP protocol 112 sockets (IPv4 and IPv6, multicast and unicast);
//! - [`link`]: interfaces and VIPs over rtnetlink;
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements (AF_PACKET);
//! - [`nft`]: nftables over netlink (the proxy redirect; kernel NAT balancing without IPVS);
//! - [`ipvs`]: IPVS over generic netlink;
//! - [`proxy`]: the userspace TCP proxy; [`probe`]: API server health checks;
//! - [`daemon`]: start-up, the async driver, shutdown; [`status`]: `cplb status` and metrics;
//! - [`lab`]: the namespace lab of `cplb lab`; [`apiserver`]: the lab's stand-in API server.
#![deny(missing_docs)]

pub mod announce;
pub mod apiserver;
pub mod daemon;
pub mod ipvs;
pub mod lab;
pub mod link;
pub mod nft;
pub mod options;
pub mod plan;
pub mod privileges;
pub mod probe;
pub mod proxy;
pub mod status;
pub mod topology;
pub mod vrrp_socket;

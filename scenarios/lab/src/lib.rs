//! Real hosts on this one machine, for the harness: network namespaces joined by a bridge
//! ([`topology`]), a qemu guest with Debian's kernel for what this kernel lacks ([`vm`]),
//! a stand-in Kubernetes API server ([`apiserver`]), and on them the seed document's
//! cluster with a `cplbd` on every controller ([`cluster`], `cplb lab`): its client, its
//! record of a failover for the reports, the soak and the bench against keepalived and
//! HAProxy.
#![deny(missing_docs)]

pub mod apiserver;
pub mod bench;
mod client;
pub mod cluster;
mod record;
mod soak;
pub mod topology;
pub mod vm;

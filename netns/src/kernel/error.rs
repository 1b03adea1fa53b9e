//! Why the kernel did not do what the driver asked: one typed error for the whole seam,
//! each variant keeping the error of the interface it came from. The node only needs its
//! text (it retries and reports); the driver and the logs keep the kind.

use std::io;
use std::net::IpAddr;

use cplb_core::vrrp::IfIndex;

use super::ipvs::IpvsError;
use super::link::LinkError;
use super::nft::NftError;

/// A kernel facility cplbd may find missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facility {
    /// nf_tables (the proxy's redirect, the NAT balancers, the loop guard).
    Nftables,
    /// IP virtual services.
    Ipvs,
}

impl std::fmt::Display for Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Nftables => "nftables",
            Self::Ipvs => "IPVS",
        })
    }
}

/// A packet cplbd sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// A VRRP advertisement.
    Advertisement,
    /// A gratuitous ARP or unsolicited neighbour advertisement.
    Announcement,
}

impl std::fmt::Display for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Advertisement => "an advertisement",
            Self::Announcement => "an announcement",
        })
    }
}

/// Why a kernel call failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// rtnetlink: an address or a neighbour lookup.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// nf_tables.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// IPVS.
    #[error(transparent)]
    Ipvs(#[from] IpvsError),
    /// A packet could not be sent.
    #[error("sending {what} for {addr} on interface {ifindex}: {error}")]
    Send {
        /// What was sent.
        what: Outgoing,
        /// The interface.
        ifindex: IfIndex,
        /// The destination (an advertisement) or the announced address.
        addr: IpAddr,
        /// What the system said.
        error: io::Error,
    },
    /// cplbd holds no socket to send this on: never opened, or closed with an interface
    /// that was deleted.
    #[error("no socket for {what} on interface {ifindex}")]
    NoSocket {
        /// What was to be sent.
        what: Outgoing,
        /// The interface.
        ifindex: IfIndex,
    },
    /// Something needs a facility this kernel lacks.
    #[error("{0} is unavailable in this kernel")]
    Unavailable(Facility),
    /// The kernel refused a call outright (a simulated kernel's refusal, for one).
    #[error("{what}: {error}")]
    Refused {
        /// The call.
        what: &'static str,
        /// The errno.
        error: io::Error,
    },
}

//! cplbd's NAT rules in nf_tables, programmed over a `NETLINK_NETFILTER` socket.
//!
//! cplbd owns one table per address family (`ip NAME`, `ip6 NAME`) and rewrites it whole, in one
//! atomic nf_tables transaction, whenever the wanted rules change. The messages are the typed
//! ones of the rust-netlink crate `netlink-packet-netfilter` (tables, chains, rules, sets, set
//! elements, and the expressions it knows), sent over a `netlink-sys` socket; the few
//! expressions it does not know are written here. What is cplbd's own is the meaning on top:
//! - this module: the public API, [`Nft`], [`Ruleset`] and [`NftError`];
//! - `encode`: a ruleset as the messages of one transaction, each rule with its tag;
//! - `expr`: the expressions the crate lacks (`ct`, `nat`, `numgen`, `hash`, `redir`, `masq`);
//! - `batch`: the transaction over the socket and the acknowledgements that judge it;
//! - `read`: reading a table back, for [`Nft::verify`].
//!
//! What a table holds, in `nft` syntax (IPv4 shown; IPv6 is the same with `ip6`):
//!
//! ```text
//! table ip cplb {
//!   chain prerouting { type nat hook prerouting priority dstnat;
//!     ip daddr VIP tcp dport PORT redirect to :TO_PORT                        # Redirect
//!     ip daddr VIP tcp dport PORT dnat to numgen inc mod N map { 0 : B0 . P0, ... }   # Balancer
//!     ip daddr VIP tcp dport PORT dnat to jhash ip saddr mod N seed S map { ... }     # Balancer
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat;              # if balancers
//!     meta l4proto tcp ct original ip daddr VIP ct original proto-dst PORT ct status dnat masquerade
//!   }
//!   chain loopguard { type filter hook prerouting priority mangle;               # if guards
//!     ip daddr VIP tcp dport PORT meta iiftype ether ether saddr MAC return      # per real server
//!     ip daddr VIP tcp dport PORT meta mark set MARK                             # Guard
//!   }
//! }
//! ```
//!
//! Every rule carries a tag in its userdata, which `nft list` shows as a comment
//! (`comment "cplb 0123456789abcdef"`): a hash of what the rule and its map hold. The kernel
//! dumps rules in a normalised form of its own (defaults filled in, flags added), so
//! [`Nft::verify`] does not compare expressions; it compares the tags, chain by chain and in
//! order, with those [`Nft::apply`] would write, and the chains, maps and table flags
//! besides. That tells drift (a flushed chain, a deleted or replaced rule, a dormant table)
//! from the table cplbd programmed; it is no defence against someone copying a tag onto a
//! rule of their own.

mod batch;
mod encode;
mod expr;
mod read;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_NETFILTER;
use tracing::{debug, warn};

use self::encode::encode;

/// Receive buffer asked for: large batches are acknowledged message by message and every ack
/// is queued before the first is read. The kernel caps it at `net.core.rmem_max`.
const RECEIVE_BUFFER: i32 = 4 << 20;

/// `NFT_NAME_MAXLEN` (linux/netfilter/nf_tables.h): table, chain and set names, including
/// the terminating NUL.
const NFT_NAME_MAXLEN: usize = 256;

/// What cplbd wants in its own table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Local port redirects (k0s's API server port trick).
    pub redirects: Vec<Redirect>,
    /// Kernel load balancers, for nodes without IPVS.
    pub balancers: Vec<Balancer>,
    /// Marks for IPVS firewall-mark services.
    pub guards: Vec<Guard>,
}

/// TCP to `vip` gets firewall mark `fwmark` (which an IPVS service matches) unless its
/// Ethernet source is one of `macs`, the real servers' (see `cplb_core::lb::ServiceSpec`'s
/// loop guard): chain type filter, hook prerouting, priority mangle (-150). Frames that
/// arrive without an Ethernet header (a tunnel's) are not marked either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Destination address and port the rule matches.
    pub vip: SocketAddr,
    /// The mark.
    pub fwmark: u32,
    /// Link-layer sources left unmarked.
    pub macs: Vec<[u8; 6]>,
}

/// TCP to `vip` (ip:port) arriving from the network is redirected to local port `to_port`
/// (k0s's `iptables -t nat -A PREROUTING -p tcp -d VIP --dport 6443 -j REDIRECT --to-port 6444`),
/// chain type nat, hook prerouting, priority dstnat (-100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Destination address and port the rule matches.
    pub vip: SocketAddr,
    /// Local port the connection is sent to instead.
    pub to_port: u16,
}

/// Kernel load balancing when IPVS is missing: TCP to `vip` is DNATed to one of `backends`
/// (same family), chosen by `spread`; traffic that was DNATed by this table is masqueraded
/// in postrouting (srcnat) so the replies come back through this node.
///
/// Only connections arriving from the network are balanced (prerouting), as with
/// [`Redirect`]; connections the node opens itself to `vip` are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balancer {
    /// Destination address and port the rule matches.
    pub vip: SocketAddr,
    /// Where connections go; an empty list installs nothing for `vip`.
    pub backends: Vec<SocketAddr>,
    /// How a backend is picked for a new connection.
    pub spread: Spread,
}

/// How a [`Balancer`] picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Backends take turns (`numgen inc mod n`).
    RoundRobin,
    /// A client address always lands on the same backend while the list is unchanged
    /// (`jhash ip saddr mod n`, with a fixed seed, so every node agrees).
    SourceHash,
}

/// Why programming nf_tables failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The netlink socket could not be set up (not Linux, no nf_tables, no permission).
    #[error("opening the nf_tables netlink socket failed: {error}")]
    Open {
        /// What the system said.
        error: io::Error,
    },
    /// The kernel refused a message; `what` names it, e.g.
    /// `NEWRULE (redirect 10.200.0.200:6443 -> :6444)`, or `commit (ip cplb)` when the
    /// transaction as a whole failed.
    #[error("{what} failed: {error}")]
    Kernel {
        /// The refused message.
        what: String,
        /// The errno the kernel answered with.
        error: io::Error,
    },
    /// Talking to the kernel failed; whether the batch was applied is unknown.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// What the system said.
        error: io::Error,
    },
    /// The kernel neither acknowledged nor refused a message it was asked to acknowledge.
    #[error("{what}: the kernel did not acknowledge it")]
    NoAck {
        /// The unacknowledged message.
        what: String,
    },
    /// A reply could not be parsed.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
    /// The table name cannot be used.
    #[error("invalid nftables table name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A balancer's backend is not of its VIP's address family.
    #[error("balancer {vip}: backend {backend} is not of the same address family")]
    FamilyMismatch {
        /// The balancer's VIP.
        vip: SocketAddr,
        /// The offending backend.
        backend: SocketAddr,
    },
    /// A message would exceed netlink's 64 KiB attribute limit (thousands of backends).
    #[error("{what}: too large for one netlink message")]
    TooLarge {
        /// The message that did not fit.
        what: String,
    },
}

impl NftError {
    /// The errno behind this error, if the kernel or the system gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Open { error } | Self::Kernel { error, .. } | Self::Io { error, .. } => {
                error.raw_os_error()
            }
            _ => None,
        }
    }
}

/// A netlink socket to nf_tables in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Nft {
    socket: Socket,
    /// Sequence number of the next message; replies are matched to messages by it.
    seq: u32,
}

impl Nft {
    /// Opens the socket. Needs `CAP_NET_ADMIN` only once messages are sent.
    ///
    /// # Errors
    /// [`NftError::Open`] when the socket cannot be created or bound.
    pub fn open() -> Result<Self, NftError> {
        let open = |error| NftError::Open { error };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(open)?;
        socket.bind_auto().map_err(open)?;
        // Every reply is already queued when `send` returns (nfnetlink handles the batch in
        // the sender's context), so replies are drained without blocking, as nft does.
        socket.set_non_blocking(true).map_err(open)?;
        // Errors then carry only the header of the refused message, not all of it: the
        // sequence number is all that is needed to name it.
        if let Err(error) = socket.set_cap_ack(true) {
            debug!(%error, "NETLINK_CAP_ACK unavailable; errors will echo whole messages");
        }
        if let Err(error) = socket.set_rx_buf_sz(RECEIVE_BUFFER) {
            debug!(%error, "could not enlarge the netlink receive buffer");
        }
        Ok(Self { socket, seq: 1 })
    }

    /// Make table `name` (family ip for IPv4 entries, ip6 for IPv6) hold exactly `rules`,
    /// in ONE atomic batch per family: add the table (a no-op when it exists), delete it,
    /// add it again with its chains and rules. So a restarted daemon replaces whatever a dead
    /// predecessor left and rules are never duplicated. A family with nothing to hold has its
    /// table deleted (absent is fine).
    ///
    /// # Errors
    /// A refused message or commit ([`NftError::Kernel`], naming it and the errno), a broken
    /// socket, or rules that cannot be encoded. The IPv4 batch may have been applied when the
    /// IPv6 one fails; calling again with the same rules converges.
    pub fn apply(&mut self, name: &str, rules: &Ruleset) -> Result<(), NftError> {
        check_table_name(name)?;
        for balancer in rules.balancers.iter().filter(|b| b.backends.is_empty()) {
            warn!(vip = %balancer.vip, "balancer has no backends; installing nothing for it");
        }
        for family in Family::ALL {
            let batch = encode(name, family, rules, self.seq)?;
            self.seq = batch.next_seq;
            self.exchange(&batch)?;
            debug!(table = name, family = family.name(), "nf_tables table in place");
        }
        Ok(())
    }

    /// Delete table `name` in both families; absent tables are not an error.
    ///
    /// # Errors
    /// As [`Nft::apply`].
    pub fn remove(&mut self, name: &str) -> Result<(), NftError> {
        self.apply(name, &Ruleset::default())
    }

    /// Whether table `name` holds exactly what [`Nft::apply`] with `rules` programs, in both
    /// families: for a family with something to hold, the table without flags, its base
    /// chains (hook, priority, type, accept policy) and no others, its maps and no others,
    /// and in each chain the rules `apply` writes, tag for tag and in order, and no others
    /// (see the module docs for the tags); for a family with nothing to hold, no table at
    /// all, as `apply` deletes it.
    ///
    /// The tables are read between two readings of the ruleset's generation, again when a
    /// commit came in between, so the answer is about one state of the ruleset.
    ///
    /// # Errors
    /// `rules` that `apply` would refuse, a refused request ([`NftError::Kernel`]), a broken
    /// socket or exchange, or a ruleset changing under every attempt to read it.
    pub fn verify(&mut self, name: &str, rules: &Ruleset) -> Result<bool, NftError> {
        check_table_name(name)?;
        for family in Family::ALL {
            let wanted = encode(name, family, rules, 0)?.contents;
            let found = self.read_table(name, family)?;
            if found != wanted {
                debug!(
                    table = name,
                    family = family.name(),
                    ?wanted,
                    ?found,
                    "nf_tables table differs from what was programmed"
                );
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// One nf_tables address family, with what differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ip,
    Ip6,
}

impl Family {
    const ALL: [Self; 2] = [Self::Ip, Self::Ip6];

    fn of(addr: &SocketAddr) -> Self {
        if addr.is_ipv4() { Self::Ip } else { Self::Ip6 }
    }

    /// nft's name for it.
    fn name(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Ip6 => "ip6",
        }
    }

    /// `nfgenmsg.nfgen_family`.
    fn nfproto(self) -> NetfilterProtoFamily {
        match self {
            Self::Ip => NetfilterProtoFamily::IPv4,
            Self::Ip6 => NetfilterProtoFamily::IPv6,
        }
    }
}

fn check_table_name(name: &str) -> Result<(), NftError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() >= NFT_NAME_MAXLEN {
        "longer than 255 bytes"
    } else if name.contains('\0') {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(NftError::InvalidName { name: name.to_owned(), reason })
}

//! cplbd's NAT rules in nf_tables, programmed over a raw `NETLINK_NETFILTER` socket.
//!
//! cplbd owns one table per address family (`ip NAME`, `ip6 NAME`) and rewrites it whole, in one
//! atomic nf_tables transaction, whenever the wanted rules change. There is no permissively
//! licensed nftables library to lean on, so the few messages needed are encoded here by hand;
//! every number comes from the kernel uapi headers `linux/netlink.h`, `linux/netfilter.h`,
//! `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h` and
//! `linux/netfilter/nf_conntrack_common.h`, and is named after its uapi name below.
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

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
    NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::{debug, warn};

// ---- linux/netlink.h ----------------------------------------------------------------------

/// `NLA_F_NESTED`: the attribute's payload is itself a list of attributes. nf_tables' parser
/// insists on it for nested attributes.
const NLA_F_NESTED: u16 = 1 << 15;
/// `NLA_ALIGNTO` (= `NLMSG_ALIGNTO`): attributes and messages start on 4-byte boundaries.
const NLA_ALIGNTO: usize = 4;

// ---- linux/netfilter/nfnetlink.h ----------------------------------------------------------

/// `NFNL_MSG_BATCH_BEGIN` (= `NLMSG_MIN_TYPE`): opens a transaction.
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
/// `NFNL_MSG_BATCH_END`: commits the transaction opened by BATCH_BEGIN.
const NFNL_MSG_BATCH_END: u16 = 0x11;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of every nf_tables message type, and the batch's
/// `res_id` (which nfnetlink reads in network byte order).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFNETLINK_V0`: `nfgenmsg.version`.
const NFNETLINK_V0: u8 = 0;

// ---- linux/netfilter.h, linux/netfilter_ipv4.h ---------------------------------------------

/// `NFPROTO_UNSPEC`: the family of the batch delimiters.
const NFPROTO_UNSPEC: u8 = 0;
/// `NFPROTO_IPV4`: nft's `ip` family.
const NFPROTO_IPV4: u8 = 2;
/// `NFPROTO_IPV6`: nft's `ip6` family.
const NFPROTO_IPV6: u8 = 10;
/// `NF_INET_PRE_ROUTING`.
const NF_INET_PRE_ROUTING: u32 = 0;
/// `NF_INET_POST_ROUTING`.
const NF_INET_POST_ROUTING: u32 = 4;
/// `NF_IP_PRI_NAT_DST` (nft's `dstnat`; IPv6 uses the same value).
const NF_IP_PRI_NAT_DST: i32 = -100;
/// `NF_IP_PRI_NAT_SRC` (nft's `srcnat`; IPv6 uses the same value).
const NF_IP_PRI_NAT_SRC: i32 = 100;
/// `NF_IP_PRI_MANGLE` (nft's `mangle`; IPv6 uses the same value): before the NAT chains,
/// long before IPVS reads the mark in LOCAL_IN.
const NF_IP_PRI_MANGLE: i32 = -150;

// ---- linux/netfilter/nf_tables.h: messages -------------------------------------------------

/// `NFT_MSG_NEWTABLE`.
const NFT_MSG_NEWTABLE: u8 = 0;
/// `NFT_MSG_DELTABLE`.
const NFT_MSG_DELTABLE: u8 = 2;
/// `NFT_MSG_NEWCHAIN`.
const NFT_MSG_NEWCHAIN: u8 = 3;
/// `NFT_MSG_NEWRULE`.
const NFT_MSG_NEWRULE: u8 = 6;
/// `NFT_MSG_NEWSET`.
const NFT_MSG_NEWSET: u8 = 9;
/// `NFT_MSG_NEWSETELEM`.
const NFT_MSG_NEWSETELEM: u8 = 12;
/// `NFT_MSG_GETTABLE`.
const NFT_MSG_GETTABLE: u8 = 1;
/// `NFT_MSG_GETCHAIN`.
const NFT_MSG_GETCHAIN: u8 = 4;
/// `NFT_MSG_GETRULE`.
const NFT_MSG_GETRULE: u8 = 7;
/// `NFT_MSG_GETSET`.
const NFT_MSG_GETSET: u8 = 10;
/// `NFT_MSG_NEWGEN`: the answer to GETGEN.
const NFT_MSG_NEWGEN: u8 = 15;
/// `NFT_MSG_GETGEN`: the ruleset's generation, bumped by every commit.
const NFT_MSG_GETGEN: u8 = 16;

/// `NFT_NAME_MAXLEN`: table, chain and set names, including the terminating NUL.
const NFT_NAME_MAXLEN: usize = 256;

// ---- nf_tables.h: object attributes --------------------------------------------------------

/// `NFTA_LIST_ELEM`: one entry of a nested list (expressions, set elements).
const NFTA_LIST_ELEM: u16 = 1;
/// `NFTA_TABLE_NAME`.
const NFTA_TABLE_NAME: u16 = 1;
/// `NFTA_TABLE_FLAGS` (`NFT_TABLE_F_DORMANT` and others; cplbd sets none).
const NFTA_TABLE_FLAGS: u16 = 2;
/// `NFTA_CHAIN_TABLE`.
const NFTA_CHAIN_TABLE: u16 = 1;
/// `NFTA_CHAIN_NAME`.
const NFTA_CHAIN_NAME: u16 = 3;
/// `NFTA_CHAIN_HOOK` (nested `NFTA_HOOK_*`): makes the chain a base chain.
const NFTA_CHAIN_HOOK: u16 = 4;
/// `NFTA_CHAIN_POLICY`: a base chain's verdict for what no rule decides.
const NFTA_CHAIN_POLICY: u16 = 5;
/// `NFTA_CHAIN_TYPE`: `"nat"` or `"filter"` here.
const NFTA_CHAIN_TYPE: u16 = 7;
/// `NFTA_HOOK_HOOKNUM`.
const NFTA_HOOK_HOOKNUM: u16 = 1;
/// `NFTA_HOOK_PRIORITY`.
const NFTA_HOOK_PRIORITY: u16 = 2;
/// `NFTA_RULE_TABLE`.
const NFTA_RULE_TABLE: u16 = 1;
/// `NFTA_RULE_CHAIN`.
const NFTA_RULE_CHAIN: u16 = 2;
/// `NFTA_RULE_EXPRESSIONS` (nested list of `NFTA_LIST_ELEM`).
const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// `NFTA_RULE_USERDATA`: opaque to the kernel, kept and dumped as given; nft keeps a rule's
/// comment there, and cplbd its tag.
const NFTA_RULE_USERDATA: u16 = 7;
/// `NFTA_GEN_ID`.
const NFTA_GEN_ID: u16 = 1;
/// `NF_ACCEPT` (linux/netfilter.h): the policy of a base chain created without one.
const NF_ACCEPT: u32 = 1;
/// `NFTA_SET_TABLE`.
const NFTA_SET_TABLE: u16 = 1;
/// `NFTA_SET_NAME`.
const NFTA_SET_NAME: u16 = 2;
/// `NFTA_SET_FLAGS`.
const NFTA_SET_FLAGS: u16 = 3;
/// `NFTA_SET_KEY_TYPE` (only read back by `nft list`).
const NFTA_SET_KEY_TYPE: u16 = 4;
/// `NFTA_SET_KEY_LEN`.
const NFTA_SET_KEY_LEN: u16 = 5;
/// `NFTA_SET_DATA_TYPE` (only read back by `nft list`, except for verdict maps).
const NFTA_SET_DATA_TYPE: u16 = 6;
/// `NFTA_SET_DATA_LEN`.
const NFTA_SET_DATA_LEN: u16 = 7;
/// `NFTA_SET_ID`: names the set inside the transaction that creates it.
const NFTA_SET_ID: u16 = 10;
/// `NFTA_SET_USERDATA`: opaque to the kernel; nft keeps display hints there.
const NFTA_SET_USERDATA: u16 = 13;
/// `NFT_SET_ANONYMOUS`: the set lives and dies with the rule that uses it.
const NFT_SET_ANONYMOUS: u32 = 0x1;
/// `NFT_SET_CONSTANT`: no element changes after the transaction.
const NFT_SET_CONSTANT: u32 = 0x2;
/// `NFT_SET_MAP`: elements carry data (the backend) besides the key (the index).
const NFT_SET_MAP: u32 = 0x8;
/// `NFTA_SET_ELEM_LIST_TABLE`.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
/// `NFTA_SET_ELEM_LIST_SET`.
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
/// `NFTA_SET_ELEM_LIST_ELEMENTS` (nested list of `NFTA_LIST_ELEM`).
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
/// `NFTA_SET_ELEM_LIST_SET_ID`.
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
/// `NFTA_SET_ELEM_KEY` (nested `NFTA_DATA_*`).
const NFTA_SET_ELEM_KEY: u16 = 1;
/// `NFTA_SET_ELEM_DATA` (nested `NFTA_DATA_*`).
const NFTA_SET_ELEM_DATA: u16 = 2;
/// `NFTA_DATA_VALUE`: raw bytes, laid out as they sit in a register.
const NFTA_DATA_VALUE: u16 = 1;

// ---- nf_tables.h: expressions --------------------------------------------------------------

/// `NFTA_EXPR_NAME`: the expression type (`"payload"`, `"cmp"`, ...).
const NFTA_EXPR_NAME: u16 = 1;
/// `NFTA_EXPR_DATA` (nested, per-expression attributes).
const NFTA_EXPR_DATA: u16 = 2;

/// `NFT_REG_VERDICT`: the verdict register an immediate verdict goes to.
const NFT_REG_VERDICT: u32 = 0;
/// `NFT_REG_1`: the first 16-byte data register; every expression here works in it.
const NFT_REG_1: u32 = 1;
/// `NFT_REG32_00`: the same storage as `NFT_REG_1`, addressed in 4-byte steps; a map's data
/// (address then port, each padded to 4 bytes) is spread over consecutive 32-bit registers.
const NFT_REG32_00: u32 = 8;

/// `NFTA_PAYLOAD_DREG`.
const NFTA_PAYLOAD_DREG: u16 = 1;
/// `NFTA_PAYLOAD_BASE`.
const NFTA_PAYLOAD_BASE: u16 = 2;
/// `NFTA_PAYLOAD_OFFSET`.
const NFTA_PAYLOAD_OFFSET: u16 = 3;
/// `NFTA_PAYLOAD_LEN`.
const NFTA_PAYLOAD_LEN: u16 = 4;
/// `NFT_PAYLOAD_LL_HEADER`: offsets count from the link-layer header (Ethernet's source
/// address is at 6).
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
/// `NFT_PAYLOAD_NETWORK_HEADER`: offsets count from the IP header.
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`: offsets count from the TCP header.
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

/// `NFTA_CMP_SREG`.
const NFTA_CMP_SREG: u16 = 1;
/// `NFTA_CMP_OP`.
const NFTA_CMP_OP: u16 = 2;
/// `NFTA_CMP_DATA` (nested `NFTA_DATA_*`).
const NFTA_CMP_DATA: u16 = 3;
/// `NFT_CMP_EQ`.
const NFT_CMP_EQ: u32 = 0;
/// `NFT_CMP_NEQ`.
const NFT_CMP_NEQ: u32 = 1;

/// `NFTA_META_DREG`.
const NFTA_META_DREG: u16 = 1;
/// `NFTA_META_KEY`.
const NFTA_META_KEY: u16 = 2;
/// `NFT_META_L4PROTO`: the transport protocol, past any IPv6 extension headers.
const NFT_META_L4PROTO: u32 = 16;
/// `NFTA_META_SREG`: the register a meta statement sets the key from.
const NFTA_META_SREG: u16 = 3;
/// `NFT_META_MARK`: `skb->mark` (u32, host order).
const NFT_META_MARK: u32 = 3;
/// `NFT_META_IIFTYPE`: the input device's `ARPHRD_*` type (u16, host order).
const NFT_META_IIFTYPE: u32 = 8;
/// `ARPHRD_ETHER` (linux/if_arp.h): the link-layer header is Ethernet's.
const ARPHRD_ETHER: u16 = 1;
/// `NFTA_DATA_VERDICT` (nested `NFTA_VERDICT_*`).
const NFTA_DATA_VERDICT: u16 = 2;
/// `NFTA_VERDICT_CODE`.
const NFTA_VERDICT_CODE: u16 = 1;
/// `NFT_RETURN`: leave the chain; in a base chain, its policy (accept) decides.
const NFT_RETURN: i32 = -5;

/// `NFTA_IMMEDIATE_DREG`.
const NFTA_IMMEDIATE_DREG: u16 = 1;
/// `NFTA_IMMEDIATE_DATA` (nested `NFTA_DATA_*`).
const NFTA_IMMEDIATE_DATA: u16 = 2;

/// `NFTA_REDIR_REG_PROTO_MIN`: register holding the new port (big endian).
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;

/// `NFTA_NG_DREG`.
const NFTA_NG_DREG: u16 = 1;
/// `NFTA_NG_MODULUS`.
const NFTA_NG_MODULUS: u16 = 2;
/// `NFTA_NG_TYPE`.
const NFTA_NG_TYPE: u16 = 3;
/// `NFT_NG_INCREMENTAL`: a counter, so backends take turns.
const NFT_NG_INCREMENTAL: u32 = 0;

/// `NFTA_HASH_SREG`.
const NFTA_HASH_SREG: u16 = 1;
/// `NFTA_HASH_DREG`.
const NFTA_HASH_DREG: u16 = 2;
/// `NFTA_HASH_LEN`.
const NFTA_HASH_LEN: u16 = 3;
/// `NFTA_HASH_MODULUS`.
const NFTA_HASH_MODULUS: u16 = 4;
/// `NFTA_HASH_SEED`.
const NFTA_HASH_SEED: u16 = 5;
/// `NFTA_HASH_TYPE`.
const NFTA_HASH_TYPE: u16 = 7;
/// `NFT_HASH_JENKINS`: nft's `jhash`.
const NFT_HASH_JENKINS: u32 = 0;
/// A fixed seed, so that every node and every re-apply sends a given client to the same
/// backend (the kernel would pick a random one per rule otherwise). The bytes spell "cplb".
const HASH_SEED: u32 = 0x6370_6c62;

/// `NFTA_LOOKUP_SET`.
const NFTA_LOOKUP_SET: u16 = 1;
/// `NFTA_LOOKUP_SREG`.
const NFTA_LOOKUP_SREG: u16 = 2;
/// `NFTA_LOOKUP_DREG`: present, it makes the lookup a map lookup that loads the data.
const NFTA_LOOKUP_DREG: u16 = 3;
/// `NFTA_LOOKUP_SET_ID`.
const NFTA_LOOKUP_SET_ID: u16 = 4;

/// `NFTA_NAT_TYPE`.
const NFTA_NAT_TYPE: u16 = 1;
/// `NFTA_NAT_FAMILY`.
const NFTA_NAT_FAMILY: u16 = 2;
/// `NFTA_NAT_REG_ADDR_MIN` (the maximum defaults to it).
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
/// `NFTA_NAT_REG_PROTO_MIN` (the maximum defaults to it).
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
/// `NFT_NAT_DNAT`.
const NFT_NAT_DNAT: u32 = 1;

/// `NFTA_CT_DREG`.
const NFTA_CT_DREG: u16 = 1;
/// `NFTA_CT_KEY`.
const NFTA_CT_KEY: u16 = 2;
/// `NFTA_CT_DIRECTION` (a u8).
const NFTA_CT_DIRECTION: u16 = 3;
/// `NFT_CT_STATUS`: the conntrack status bits, host byte order.
const NFT_CT_STATUS: u32 = 2;
/// `NFT_CT_PROTO_DST`: destination port of one direction of the connection.
const NFT_CT_PROTO_DST: u32 = 12;
/// `NFT_CT_DST_IP`: IPv4 destination of one direction of the connection.
const NFT_CT_DST_IP: u32 = 20;
/// `NFT_CT_DST_IP6`: IPv6 destination of one direction of the connection.
const NFT_CT_DST_IP6: u32 = 22;
/// `IP_CT_DIR_ORIGINAL` (linux/netfilter/nf_conntrack_tuple_common.h): as the client sent it,
/// before our DNAT.
const IP_CT_DIR_ORIGINAL: u8 = 0;
/// `IPS_DST_NAT` (nf_conntrack_common.h): the connection's destination was NATed.
const IPS_DST_NAT: u32 = 1 << 5;

/// `NFTA_BITWISE_SREG`.
const NFTA_BITWISE_SREG: u16 = 1;
/// `NFTA_BITWISE_DREG`.
const NFTA_BITWISE_DREG: u16 = 2;
/// `NFTA_BITWISE_LEN`.
const NFTA_BITWISE_LEN: u16 = 3;
/// `NFTA_BITWISE_MASK` (nested `NFTA_DATA_*`).
const NFTA_BITWISE_MASK: u16 = 4;
/// `NFTA_BITWISE_XOR` (nested `NFTA_DATA_*`).
const NFTA_BITWISE_XOR: u16 = 5;

/// `IPPROTO_TCP` (netinet/in.h).
const IPPROTO_TCP: u8 = 6;

// ---- nftables' own data type ids -----------------------------------------------------------
// The kernel stores a set's key and data types without reading them; `nft list` uses them to
// print the map (nftables' src/datatype.h; a concatenation packs its parts 6 bits each).

/// nft's `TYPE_INTEGER`.
const NFT_TYPE_INTEGER: u32 = 4;
/// nft's `TYPE_IPADDR`.
const NFT_TYPE_IPADDR: u32 = 7;
/// nft's `TYPE_IP6ADDR`.
const NFT_TYPE_IP6ADDR: u32 = 8;
/// nft's `TYPE_INET_SERVICE`.
const NFT_TYPE_INET_SERVICE: u32 = 13;
/// nft's `TYPE_BITS`.
const NFT_TYPE_BITS: u32 = 6;
/// libnftnl's `NFTNL_UDATA_SET_KEYBYTEORDER`: a userdata TLV (u8 type, u8 length, value)
/// telling `nft list` the byte order of the set's keys.
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
/// nftables' `BYTEORDER_HOST_ENDIAN`. Without it `nft list` prints key 1 as 16777216.
const NFT_BYTEORDER_HOST_ENDIAN: u32 = 1;
/// libnftnl's `NFTNL_UDATA_RULE_COMMENT`: a rule userdata TLV holding a NUL-terminated
/// comment, which `nft list` prints as `comment "..."`.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// Receive buffer asked for: large batches are acknowledged message by message and every ack
/// is queued before the first is read. The kernel caps it at `net.core.rmem_max`.
const RECEIVE_BUFFER: i32 = 4 << 20;
/// Largest reply datagram read: acks are a few dozen bytes, dump parts at most 32 KiB.
const REPLY_BUFFER: usize = 64 << 10;
/// How long a reply to a request may take. The kernel answers in the sender's context, so
/// replies are normally queued before `send` returns; this only bounds a broken exchange.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a reading of the tables is retried when a commit lands in the middle of it.
const READ_ATTEMPTS: usize = 4;

// ---- public API ----------------------------------------------------------------------------

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

    /// What table `name` of `family` holds, `None` when there is no such table; read
    /// between two equal generations of the ruleset.
    fn read_table(&mut self, name: &str, family: Family) -> Result<Option<Contents>, NftError> {
        for _ in 0..READ_ATTEMPTS {
            let before = self.generation()?;
            let read = self.read_table_once(name, family)?;
            if let (Some(contents), Some(before)) = (read, before)
                && self.generation()? == Some(before)
            {
                return Ok(contents);
            }
            debug!(table = name, family = family.name(), "ruleset changed while read; again");
        }
        let error = io::Error::new(io::ErrorKind::Interrupted, "the ruleset kept changing");
        Err(NftError::Io { what: "reading an nf_tables table", error })
    }

    /// One reading of table `name`: `Ok(None)` when a dump was interrupted by a commit or the
    /// table vanished half-way (read again), `Ok(Some(None))` when there is no table.
    fn read_table_once(
        &mut self,
        name: &str,
        family: Family,
    ) -> Result<Option<Option<Contents>>, NftError> {
        let nfproto = family.nfproto();
        let mut contents = Contents::default();
        let table = match self.get(NFT_MSG_GETTABLE, nfproto, false, Some(name))? {
            Got::Messages(table) => table,
            Got::NotFound => return Ok(Some(None)),
            Got::Interrupted => return Ok(None),
        };
        // NFTA_TABLE_FLAGS; a reply that does not parse could hide any, so it differs.
        contents.flags = table
            .first()
            .and_then(|m| attributes(m))
            .map_or(u32::MAX, |attrs| find(&attrs, NFTA_TABLE_FLAGS).and_then(be32).unwrap_or(0));
        let Got::Messages(chains) = self.get(NFT_MSG_GETCHAIN, nfproto, true, Some(name))? else {
            return Ok(None);
        };
        for attrs in contents.of_table(&chains, name, NFTA_CHAIN_TABLE) {
            contents.chains.insert(Chain::read(&attrs));
        }
        let Got::Messages(sets) = self.get(NFT_MSG_GETSET, nfproto, true, Some(name))? else {
            return Ok(None);
        };
        for attrs in contents.of_table(&sets, name, NFTA_SET_TABLE) {
            let set = find(&attrs, NFTA_SET_NAME).and_then(string).unwrap_or_default();
            let flags = find(&attrs, NFTA_SET_FLAGS).and_then(be32).unwrap_or(0);
            contents.sets.insert((set.to_owned(), flags));
        }
        let Got::Messages(rules) = self.get(NFT_MSG_GETRULE, nfproto, true, Some(name))? else {
            return Ok(None);
        };
        for attrs in contents.of_table(&rules, name, NFTA_RULE_TABLE) {
            let chain = find(&attrs, NFTA_RULE_CHAIN).and_then(string).unwrap_or_default();
            let tag = find(&attrs, NFTA_RULE_USERDATA).map(|t| Tag(t.to_vec()));
            contents.rules.entry(chain.to_owned()).or_default().push(tag);
        }
        Ok(Some(Some(contents)))
    }

    /// The ruleset's generation id, `None` when a reply lacked it.
    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        match self.get(NFT_MSG_GETGEN, NFPROTO_UNSPEC, false, None)? {
            Got::Messages(replies) => Ok(replies
                .iter()
                .filter_map(|m| attributes(m))
                .find_map(|attrs| find(&attrs, NFTA_GEN_ID).and_then(be32))),
            Got::NotFound | Got::Interrupted => Ok(None),
        }
    }

    /// Sends get request `msg` (a dump of every object of `family` when `dump`), about
    /// `table` if given (attribute 1 in every object kind), and gathers the answer: the
    /// attribute bytes (past `nfgenmsg`) of each message answering it.
    fn get(
        &mut self,
        msg: u8,
        family: u8,
        dump: bool,
        table: Option<&str>,
    ) -> Result<Got, NftError> {
        let what = format!(
            "{}{}",
            message_name(msg),
            table.map(|t| format!(" ({} {t})", family_name(family))).unwrap_or_default()
        );
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let mut buf = Vec::new();
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg);
        let flags = if dump { NLM_F_REQUEST | NLM_F_DUMP } else { NLM_F_REQUEST };
        let start = put_header(&mut buf, kind, flags, seq, family, 0);
        if let Some(table) = table {
            // NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_SET_TABLE and NFTA_RULE_TABLE are all 1:
            // which table a get is about.
            let mut attrs = Attrs { buf: &mut buf, oversize: false };
            attrs.string(NFTA_TABLE_NAME, table);
        }
        close_message(&mut buf, start);
        const SENDING: &str = "sending an nf_tables request";
        let sent = self
            .socket
            .send_to(&buf, &NetlinkAddr::new(0, 0), 0)
            .map_err(|error| NftError::Io { what: SENDING, error })?;
        if sent != buf.len() {
            let error = io::Error::new(io::ErrorKind::WriteZero, "short netlink write");
            return Err(NftError::Io { what: SENDING, error });
        }

        const READING: &str = "reading nf_tables replies";
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let reply = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(reply_to(msg));
        let mut answer =
            Answer { seq, dump, reply, what, messages: Vec::new(), interrupted: false };
        let mut datagram = Vec::with_capacity(REPLY_BUFFER);
        loop {
            datagram.clear();
            match self.socket.recv(&mut datagram, 0) {
                Ok(_) => {
                    if let Some(got) = answer.absorb(&datagram)? {
                        return Ok(got);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Dump parts are made as earlier ones are read, so more is normally
                    // queued already; wait a little for it otherwise.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
                    match poll(&mut fds, PollTimeout::from(ms)) {
                        Ok(0) => {
                            let error = io::Error::new(io::ErrorKind::TimedOut, "no reply");
                            return Err(NftError::Io { what: READING, error });
                        }
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(errno) => {
                            return Err(NftError::Io { what: READING, error: errno.into() });
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(NftError::Io { what: READING, error }),
            }
        }
    }

    /// Sends one batch and checks that the kernel acknowledged every message in it.
    fn exchange(&mut self, batch: &Batch) -> Result<(), NftError> {
        const SENDING: &str = "sending an nf_tables batch";
        let sent = self
            .socket
            .send_to(&batch.buf, &NetlinkAddr::new(0, 0), 0)
            .map_err(|error| NftError::Io { what: SENDING, error })?;
        if sent != batch.buf.len() {
            let error = io::Error::new(io::ErrorKind::WriteZero, "short netlink write");
            return Err(NftError::Io { what: SENDING, error });
        }
        let mut replies = Replies::new(batch);
        let mut datagram = Vec::with_capacity(REPLY_BUFFER);
        loop {
            datagram.clear();
            match self.socket.recv(&mut datagram, 0) {
                Ok(_) => replies.absorb(&datagram)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(NftError::Io { what: "reading nf_tables replies", error });
                }
            }
        }
        replies.finish()
    }
}

// ---- rules to messages ---------------------------------------------------------------------

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
    fn nfproto(self) -> u8 {
        match self {
            Self::Ip => NFPROTO_IPV4,
            Self::Ip6 => NFPROTO_IPV6,
        }
    }

    fn addr_len(self) -> u32 {
        match self {
            Self::Ip => 4,
            Self::Ip6 => 16,
        }
    }

    /// Source address offset in the IP header.
    fn saddr_offset(self) -> u32 {
        match self {
            Self::Ip => 12,
            Self::Ip6 => 8,
        }
    }

    /// Destination address offset in the IP header.
    fn daddr_offset(self) -> u32 {
        match self {
            Self::Ip => 16,
            Self::Ip6 => 24,
        }
    }

    fn ct_dst_key(self) -> u32 {
        match self {
            Self::Ip => NFT_CT_DST_IP,
            Self::Ip6 => NFT_CT_DST_IP6,
        }
    }

    /// nft's type id of a backend: `ipv4_addr . inet_service` (or ipv6).
    fn backend_type(self) -> u32 {
        let addr = match self {
            Self::Ip => NFT_TYPE_IPADDR,
            Self::Ip6 => NFT_TYPE_IP6ADDR,
        };
        (addr << NFT_TYPE_BITS) | NFT_TYPE_INET_SERVICE
    }

    /// The 32-bit register the backend's port lands in: right after its address.
    fn port_register(self) -> u32 {
        NFT_REG32_00 + self.addr_len() / 4
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
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

/// The rules of `rules` that go in `family`'s table.
struct Wanted<'a> {
    redirects: Vec<&'a Redirect>,
    /// Those with backends.
    balancers: Vec<&'a Balancer>,
    guards: Vec<&'a Guard>,
}

impl Wanted<'_> {
    fn is_empty(&self) -> bool {
        self.redirects.is_empty() && self.balancers.is_empty() && self.guards.is_empty()
    }
}

fn wanted(family: Family, rules: &Ruleset) -> Result<Wanted<'_>, NftError> {
    let redirects = rules.redirects.iter().filter(|r| Family::of(&r.vip) == family).collect();
    let guards = rules.guards.iter().filter(|g| Family::of(&g.vip) == family).collect();
    let mut balancers = Vec::new();
    for balancer in rules.balancers.iter().filter(|b| Family::of(&b.vip) == family) {
        if let Some(&backend) = balancer.backends.iter().find(|b| Family::of(b) != family) {
            return Err(NftError::FamilyMismatch { vip: balancer.vip, backend });
        }
        // Nothing is installed for a balancer without backends (apply says so).
        if !balancer.backends.is_empty() {
            balancers.push(balancer);
        }
    }
    Ok(Wanted { redirects, balancers, guards })
}

/// The whole transaction for `family`: see [`Nft::apply`]. The batch also says what the
/// table holds once committed, for [`Nft::verify`].
fn encode(name: &str, family: Family, rules: &Ruleset, first_seq: u32) -> Result<Batch, NftError> {
    let wanted = wanted(family, rules)?;
    let table = format!("{} {name}", family.name());
    let nfproto = family.nfproto();
    let mut batch = Batch::new(first_seq, format!("commit ({table})"));
    let table_only = |a: &mut Attrs<'_>| a.string(NFTA_TABLE_NAME, name);
    // Adding first makes the delete succeed when there is no table; the delete then drops
    // whatever an earlier cplbd left, chains, rules and maps alike.
    batch.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, nfproto, &table, table_only);
    batch.message(NFT_MSG_DELTABLE, 0, nfproto, &table, table_only);
    if wanted.is_empty() {
        return batch.finish();
    }
    batch.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, nfproto, &table, table_only);

    let Wanted { redirects, balancers, guards } = wanted;
    let mut table = TableWriter { batch, contents: Contents::default(), name, table, family };
    if !redirects.is_empty() || !balancers.is_empty() {
        table.chain(PREROUTING, NAT, NF_INET_PRE_ROUTING, NF_IP_PRI_NAT_DST);
    }
    if !balancers.is_empty() {
        table.chain(POSTROUTING, NAT, NF_INET_POST_ROUTING, NF_IP_PRI_NAT_SRC);
    }
    if !guards.is_empty() {
        table.chain(LOOP_GUARD, FILTER, NF_INET_PRE_ROUTING, NF_IP_PRI_MANGLE);
    }
    for g in guards {
        for mac in &g.macs {
            let what = format!("leave {} from {} unmarked", g.vip, Mac(*mac));
            table.rule(LOOP_GUARD, &what, &[], &|e| pass_exprs(e, g.vip, mac));
        }
        let what = format!("mark {} with {}", g.vip, g.fwmark);
        table.rule(LOOP_GUARD, &what, &[], &|e| mark_exprs(e, g));
    }
    for r in redirects {
        let what = format!("redirect {} -> :{}", r.vip, r.to_port);
        table.rule(PREROUTING, &what, &[], &|e| redirect_exprs(e, r));
    }
    for (index, b) in balancers.into_iter().enumerate() {
        let map = BackendMap {
            // nft's naming for anonymous maps; the id finds the map within this batch.
            name: format!("__map{index}"),
            id: u32::try_from(index + 1).unwrap_or(u32::MAX),
            family,
        };
        map.encode(&mut table.batch, name, b);
        table.contents.sets.insert((map.name.clone(), BackendMap::FLAGS));
        let what = format!("balance {} over {} backends, {:?}", b.vip, b.backends.len(), b.spread);
        let held = map.contents(name, b);
        table.rule(PREROUTING, &what, &held, &|e| balance_exprs(e, b, &map));
        let what = format!("masquerade what was balanced from {}", b.vip);
        table.rule(POSTROUTING, &what, &[], &|e| masquerade_exprs(e, b.vip));
    }
    let TableWriter { mut batch, contents, .. } = table;
    batch.contents = Some(contents);
    batch.finish()
}

/// Writes a table's chains and rules into a batch, noting what they make the table hold.
struct TableWriter<'a> {
    batch: Batch,
    contents: Contents,
    /// The table's name.
    name: &'a str,
    /// `FAMILY NAME`, for messages.
    table: String,
    family: Family,
}

impl TableWriter<'_> {
    /// Base chain `chain` of type `kind` on `hook` at `priority` (policy accept, the
    /// default).
    fn chain(&mut self, chain: &str, kind: &str, hook: u32, priority: i32) {
        let what = format!("{} {chain}", self.table);
        let name = self.name;
        self.batch.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, self.family.nfproto(), &what, |a| {
            a.string(NFTA_CHAIN_TABLE, name);
            a.string(NFTA_CHAIN_NAME, chain);
            a.nested(NFTA_CHAIN_HOOK, |h| {
                h.be32(NFTA_HOOK_HOOKNUM, hook);
                h.be32(NFTA_HOOK_PRIORITY, priority.cast_unsigned());
            });
            a.string(NFTA_CHAIN_TYPE, kind);
        });
        self.contents.chains.insert(Chain {
            name: chain.to_owned(),
            hook: Some((hook, priority)),
            kind: Some(kind.to_owned()),
            policy: Some(NF_ACCEPT),
        });
    }

    /// A rule appended to `chain`, tagged with the hash of its expressions and of `held`
    /// (what the map it looks up holds, which its expressions only name).
    fn rule(&mut self, chain: &str, what: &str, held: &[u8], exprs: &dyn Fn(&mut Attrs<'_>)) {
        let mut body = Vec::new();
        let mut scratch = Attrs { buf: &mut body, oversize: false };
        exprs(&mut scratch);
        let oversize = scratch.oversize;
        let tag = rule_tag(self.family, chain, &body, held);
        let name = self.name;
        let flags = NLM_F_CREATE | NLM_F_APPEND;
        self.batch.message(NFT_MSG_NEWRULE, flags, self.family.nfproto(), what, |a| {
            a.string(NFTA_RULE_TABLE, name);
            a.string(NFTA_RULE_CHAIN, chain);
            a.nested(NFTA_RULE_EXPRESSIONS, |e| e.raw(&body));
            a.put(NFTA_RULE_USERDATA, &tag);
            a.oversize |= oversize;
        });
        self.contents.rules.entry(chain.to_owned()).or_default().push(Some(Tag(tag)));
    }
}

/// A rule's tag, as its userdata: an nft comment TLV (type, length, NUL-terminated text)
/// `cplb HASH`, HASH a 64-bit FNV-1a of the family, the chain, the expression attributes and
/// `held`, each length-prefixed. Any change to what the rule does changes its bytes and so
/// its tag; the hash need not resist forgery (see the module docs), only be stable across
/// runs and builds, which std's hashers do not promise.
fn rule_tag(family: Family, chain: &str, exprs: &[u8], held: &[u8]) -> Vec<u8> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [family.name().as_bytes(), chain.as_bytes(), exprs, held] {
        let len = u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes();
        for byte in len.iter().chain(part) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let text = format!("cplb {hash:016x}\0");
    let mut tag = vec![NFTNL_UDATA_RULE_COMMENT, u8::try_from(text.len()).unwrap_or(u8::MAX)];
    tag.extend_from_slice(text.as_bytes());
    tag
}

/// What a table holds, as [`Nft::verify`] compares it: written down by [`encode`], read
/// back from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Contents {
    /// `NFTA_TABLE_FLAGS` (0: none, in particular not dormant).
    flags: u32,
    /// Every chain. Their order carries no meaning.
    chains: BTreeSet<Chain>,
    /// Every set, with its flags (the anonymous maps of the balancers).
    sets: BTreeSet<(String, u32)>,
    /// The rules of each chain in order, as their userdata (`None`: a rule without).
    rules: BTreeMap<String, Vec<Option<Tag>>>,
    /// Dumped messages that did not parse: they could be anything, so they make a
    /// difference (cplbd writes none).
    unreadable: usize,
}

impl Contents {
    /// The attributes of those of dumped `messages` that belong to table `name` (its name in
    /// attribute `table_attr`); those that do not parse are counted as unreadable.
    fn of_table<'m>(
        &mut self,
        messages: &'m [Vec<u8>],
        name: &str,
        table_attr: u16,
    ) -> Vec<Vec<(u16, &'m [u8])>> {
        let mut out = Vec::new();
        for message in messages {
            match attributes(message) {
                Some(attrs) if find(&attrs, table_attr).and_then(string) == Some(name) => {
                    out.push(attrs);
                }
                // Of another table: chain dumps (and rule dumps of older kernels) hold every
                // table of the family.
                Some(_) => {}
                None => self.unreadable += 1,
            }
        }
        out
    }
}

/// A rule's userdata, compared byte for byte; shown as text in logs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Tag(Vec<u8>);

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A chain as [`Contents`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Chain {
    name: String,
    /// Hook number and priority of a base chain.
    hook: Option<(u32, i32)>,
    /// `NFTA_CHAIN_TYPE` (`"nat"`, `"filter"`).
    kind: Option<String>,
    /// A base chain's policy.
    policy: Option<u32>,
}

impl Chain {
    /// From the attributes of a `NEWCHAIN` reply; what is missing or malformed stays empty
    /// (and so differs from any chain cplbd makes).
    fn read(attrs: &[(u16, &[u8])]) -> Self {
        let hook = find(attrs, NFTA_CHAIN_HOOK).and_then(attributes).and_then(|hook| {
            let num = find(&hook, NFTA_HOOK_HOOKNUM).and_then(be32)?;
            let priority = find(&hook, NFTA_HOOK_PRIORITY).and_then(be32)?;
            Some((num, priority.cast_signed()))
        });
        Self {
            name: find(attrs, NFTA_CHAIN_NAME).and_then(string).unwrap_or_default().to_owned(),
            hook,
            kind: find(attrs, NFTA_CHAIN_TYPE).and_then(string).map(str::to_owned),
            policy: find(attrs, NFTA_CHAIN_POLICY).and_then(be32),
        }
    }
}

/// The type of the chains that translate addresses.
const NAT: &str = "nat";
/// The type of the chain that marks.
const FILTER: &str = "filter";

/// Name of the base chain doing the DNAT.
const PREROUTING: &str = "prerouting";
/// Name of the base chain doing the masquerading.
const POSTROUTING: &str = "postrouting";
/// Name of the base chain setting the IPVS services' marks.
const LOOP_GUARD: &str = "loopguard";

/// A MAC address in its usual notation.
struct Mac([u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// `ip daddr VIP tcp dport PORT meta iiftype ether ether saddr MAC return`.
fn pass_exprs(e: &mut Attrs<'_>, vip: SocketAddr, mac: &[u8; 6]) {
    match_tcp_to(e, vip);
    e.expr("meta", |m| {
        m.be32(NFTA_META_DREG, NFT_REG_1);
        m.be32(NFTA_META_KEY, NFT_META_IIFTYPE);
    });
    e.cmp(NFT_CMP_EQ, &ARPHRD_ETHER.to_ne_bytes());
    e.load_payload(NFT_PAYLOAD_LL_HEADER, 6, 6);
    e.cmp(NFT_CMP_EQ, mac);
    e.expr("immediate", |i| {
        i.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
        i.nested(NFTA_IMMEDIATE_DATA, |d| {
            d.nested(NFTA_DATA_VERDICT, |v| v.be32(NFTA_VERDICT_CODE, NFT_RETURN.cast_unsigned()));
        });
    });
}

/// `ip daddr VIP tcp dport PORT meta mark set MARK`.
fn mark_exprs(e: &mut Attrs<'_>, g: &Guard) {
    match_tcp_to(e, g.vip);
    e.expr("immediate", |i| {
        i.be32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
        i.value(NFTA_IMMEDIATE_DATA, &g.fwmark.to_ne_bytes());
    });
    e.expr("meta", |m| {
        m.be32(NFTA_META_KEY, NFT_META_MARK);
        m.be32(NFTA_META_SREG, NFT_REG_1);
    });
}

/// `ip daddr VIP tcp dport PORT`.
fn match_tcp_to(e: &mut Attrs<'_>, vip: SocketAddr) {
    let family = Family::of(&vip);
    e.load_payload(NFT_PAYLOAD_NETWORK_HEADER, family.daddr_offset(), family.addr_len());
    e.cmp(NFT_CMP_EQ, &octets(vip.ip()));
    // The port is read from the transport header only once the protocol is known to be TCP.
    e.meta_l4proto();
    e.cmp(NFT_CMP_EQ, &[IPPROTO_TCP]);
    e.load_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    e.cmp(NFT_CMP_EQ, &vip.port().to_be_bytes());
}

/// `ip daddr VIP tcp dport PORT redirect to :TO_PORT`.
fn redirect_exprs(e: &mut Attrs<'_>, r: &Redirect) {
    match_tcp_to(e, r.vip);
    e.expr("immediate", |i| {
        i.be32(NFTA_IMMEDIATE_DREG, NFT_REG_1);
        i.value(NFTA_IMMEDIATE_DATA, &r.to_port.to_be_bytes());
    });
    e.expr("redir", |r| r.be32(NFTA_REDIR_REG_PROTO_MIN, NFT_REG_1));
}

/// The anonymous map from a number in `0..n` to a backend address and port.
struct BackendMap {
    name: String,
    id: u32,
    family: Family,
}

impl BackendMap {
    /// Anonymous (it goes with its rule), constant (its elements cannot change while a rule
    /// uses it: the kernel answers EBUSY), a map.
    const FLAGS: u32 = NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_MAP;

    fn encode(&self, batch: &mut Batch, table: &str, b: &Balancer) {
        let nfproto = self.family.nfproto();
        let what = format!("backends of {}", b.vip);
        batch.message(NFT_MSG_NEWSET, NLM_F_CREATE, nfproto, &what, |a| self.set(a, table));
        batch.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, nfproto, &what, |a| {
            self.elements(a, table, b);
        });
    }

    /// The map's definition and elements, as the bytes of their attributes: what a balance
    /// rule's tag covers besides its expressions. The kernel dump of an element need not
    /// be looked at: a constant map bound to a rule cannot change.
    fn contents(&self, table: &str, b: &Balancer) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut a = Attrs { buf: &mut buf, oversize: false };
        self.set(&mut a, table);
        self.elements(&mut a, table, b);
        buf
    }

    /// `NEWSET`'s attributes.
    fn set(&self, a: &mut Attrs<'_>, table: &str) {
        a.string(NFTA_SET_TABLE, table);
        a.string(NFTA_SET_NAME, &self.name);
        a.be32(NFTA_SET_FLAGS, Self::FLAGS);
        a.be32(NFTA_SET_KEY_TYPE, NFT_TYPE_INTEGER);
        a.be32(NFTA_SET_KEY_LEN, 4);
        a.be32(NFTA_SET_DATA_TYPE, self.family.backend_type());
        a.be32(NFTA_SET_DATA_LEN, self.family.addr_len() + 4);
        a.be32(NFTA_SET_ID, self.id);
        let mut hint = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
        hint.extend_from_slice(&NFT_BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        a.put(NFTA_SET_USERDATA, &hint);
    }

    /// `NEWSETELEM`'s attributes.
    fn elements(&self, a: &mut Attrs<'_>, table: &str, b: &Balancer) {
        a.string(NFTA_SET_ELEM_LIST_TABLE, table);
        a.string(NFTA_SET_ELEM_LIST_SET, &self.name);
        a.be32(NFTA_SET_ELEM_LIST_SET_ID, self.id);
        a.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
            for (index, backend) in (0u32..).zip(&b.backends) {
                list.nested(NFTA_LIST_ELEM, |elem| {
                    // numgen and hash leave a host-order u32 in the register.
                    elem.value(NFTA_SET_ELEM_KEY, &index.to_ne_bytes());
                    elem.value(NFTA_SET_ELEM_DATA, &backend_data(backend));
                });
            }
        });
    }
}

/// A backend as the map's data: address, then the big-endian port padded to 4 bytes, as the
/// two land in consecutive 32-bit registers.
fn backend_data(backend: &SocketAddr) -> Vec<u8> {
    let mut data = octets(backend.ip());
    data.extend_from_slice(&backend.port().to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    data
}

/// `ip daddr VIP tcp dport PORT dnat to (numgen inc | jhash ip saddr) mod N map @MAP`.
fn balance_exprs(e: &mut Attrs<'_>, b: &Balancer, map: &BackendMap) {
    let family = map.family;
    let n = u32::try_from(b.backends.len()).unwrap_or(u32::MAX);
    match_tcp_to(e, b.vip);
    match b.spread {
        Spread::RoundRobin => e.expr("numgen", |g| {
            g.be32(NFTA_NG_DREG, NFT_REG_1);
            g.be32(NFTA_NG_MODULUS, n);
            g.be32(NFTA_NG_TYPE, NFT_NG_INCREMENTAL);
        }),
        Spread::SourceHash => {
            e.load_payload(NFT_PAYLOAD_NETWORK_HEADER, family.saddr_offset(), family.addr_len());
            e.expr("hash", |h| {
                h.be32(NFTA_HASH_SREG, NFT_REG_1);
                h.be32(NFTA_HASH_DREG, NFT_REG_1);
                h.be32(NFTA_HASH_LEN, family.addr_len());
                h.be32(NFTA_HASH_MODULUS, n);
                h.be32(NFTA_HASH_SEED, HASH_SEED);
                h.be32(NFTA_HASH_TYPE, NFT_HASH_JENKINS);
            });
        }
    }
    e.expr("lookup", |l| {
        l.string(NFTA_LOOKUP_SET, &map.name);
        l.be32(NFTA_LOOKUP_SET_ID, map.id);
        l.be32(NFTA_LOOKUP_SREG, NFT_REG_1);
        l.be32(NFTA_LOOKUP_DREG, NFT_REG_1);
    });
    e.expr("nat", |n| {
        n.be32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
        n.be32(NFTA_NAT_FAMILY, u32::from(family.nfproto()));
        n.be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
        n.be32(NFTA_NAT_REG_PROTO_MIN, family.port_register());
    });
}

/// `meta l4proto tcp ct original ip daddr VIP ct original proto-dst PORT ct status dnat
/// masquerade`: only connections this table DNATed, whatever backend they went to.
fn masquerade_exprs(e: &mut Attrs<'_>, vip: SocketAddr) {
    e.meta_l4proto();
    e.cmp(NFT_CMP_EQ, &[IPPROTO_TCP]);
    e.ct_original(Family::of(&vip).ct_dst_key());
    e.cmp(NFT_CMP_EQ, &octets(vip.ip()));
    e.ct_original(NFT_CT_PROTO_DST);
    e.cmp(NFT_CMP_EQ, &vip.port().to_be_bytes());
    e.expr("ct", |c| {
        c.be32(NFTA_CT_DREG, NFT_REG_1);
        c.be32(NFTA_CT_KEY, NFT_CT_STATUS);
    });
    e.expr("bitwise", |b| {
        b.be32(NFTA_BITWISE_SREG, NFT_REG_1);
        b.be32(NFTA_BITWISE_DREG, NFT_REG_1);
        b.be32(NFTA_BITWISE_LEN, 4);
        b.value(NFTA_BITWISE_MASK, &IPS_DST_NAT.to_ne_bytes());
        b.value(NFTA_BITWISE_XOR, &[0; 4]);
    });
    e.cmp(NFT_CMP_NEQ, &[0; 4]);
    e.expr("masq", |_| {});
}

// ---- the attribute builder -----------------------------------------------------------------

/// Writes netlink attributes (type-length-value, native byte order headers, 4-byte aligned)
/// at the end of a message buffer.
struct Attrs<'a> {
    buf: &'a mut Vec<u8>,
    /// Set when an attribute outgrew its 16-bit length; the message is then refused.
    oversize: bool,
}

impl Attrs<'_> {
    fn begin(&mut self, kind: u16) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        start
    }

    /// Writes the length of the attribute begun at `start` (padding excluded), then pads.
    fn end(&mut self, start: usize) {
        let len = u16::try_from(self.buf.len() - start);
        match (len, self.buf.get_mut(start..start + 2)) {
            (Ok(len), Some(slot)) => slot.copy_from_slice(&len.to_ne_bytes()),
            _ => self.oversize = true,
        }
        self.buf.resize(self.buf.len().next_multiple_of(NLA_ALIGNTO), 0);
    }

    /// Bytes that are attributes already (written by another `Attrs`).
    fn raw(&mut self, attrs: &[u8]) {
        self.buf.extend_from_slice(attrs);
    }

    fn put(&mut self, kind: u16, payload: &[u8]) {
        let start = self.begin(kind);
        self.buf.extend_from_slice(payload);
        self.end(start);
    }

    fn nested(&mut self, kind: u16, inner: impl FnOnce(&mut Self)) {
        let start = self.begin(kind | NLA_F_NESTED);
        inner(self);
        self.end(start);
    }

    /// nf_tables reads its u32 attributes in network byte order.
    fn be32(&mut self, kind: u16, value: u32) {
        self.put(kind, &value.to_be_bytes());
    }

    fn u8(&mut self, kind: u16, value: u8) {
        self.put(kind, &[value]);
    }

    /// Names go NUL-terminated, as nft sends them.
    fn string(&mut self, kind: u16, value: &str) {
        let start = self.begin(kind);
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.end(start);
    }

    /// An `nft_data` value: `kind` { `NFTA_DATA_VALUE` bytes }.
    fn value(&mut self, kind: u16, bytes: &[u8]) {
        self.nested(kind, |d| d.put(NFTA_DATA_VALUE, bytes));
    }

    /// One expression of a rule's list.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Self)) {
        self.nested(NFTA_LIST_ELEM, |e| {
            e.string(NFTA_EXPR_NAME, name);
            e.nested(NFTA_EXPR_DATA, data);
        });
    }

    /// `payload load LEN bytes @ BASE + OFFSET => reg 1`.
    fn load_payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |p| {
            p.be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
            p.be32(NFTA_PAYLOAD_BASE, base);
            p.be32(NFTA_PAYLOAD_OFFSET, offset);
            p.be32(NFTA_PAYLOAD_LEN, len);
        });
    }

    /// `cmp OP reg 1 BYTES`.
    fn cmp(&mut self, op: u32, bytes: &[u8]) {
        self.expr("cmp", |c| {
            c.be32(NFTA_CMP_SREG, NFT_REG_1);
            c.be32(NFTA_CMP_OP, op);
            c.value(NFTA_CMP_DATA, bytes);
        });
    }

    /// `meta load l4proto => reg 1`.
    fn meta_l4proto(&mut self) {
        self.expr("meta", |m| {
            m.be32(NFTA_META_DREG, NFT_REG_1);
            m.be32(NFTA_META_KEY, NFT_META_L4PROTO);
        });
    }

    /// `ct load KEY => reg 1, dir original`.
    fn ct_original(&mut self, key: u32) {
        self.expr("ct", |c| {
            c.be32(NFTA_CT_DREG, NFT_REG_1);
            c.be32(NFTA_CT_KEY, key);
            c.u8(NFTA_CT_DIRECTION, IP_CT_DIR_ORIGINAL);
        });
    }
}

// ---- batches -------------------------------------------------------------------------------

/// One nf_tables transaction: BATCH_BEGIN, messages that each ask for an ACK, BATCH_END.
#[derive(Debug)]
struct Batch {
    buf: Vec<u8>,
    next_seq: u32,
    /// BATCH_BEGIN's sequence number: a failed commit is reported against it.
    begin_seq: u32,
    /// What a failed commit is called.
    commit: String,
    /// Sequence number and description of every message that asked for an ACK.
    acked: Vec<(u32, String)>,
    /// The first message that did not fit.
    oversize: Option<String>,
    /// What the table holds once the batch is committed; `None`: no table.
    contents: Option<Contents>,
}

impl Batch {
    fn new(first_seq: u32, commit: String) -> Self {
        let mut batch = Self {
            buf: Vec::new(),
            next_seq: first_seq,
            begin_seq: first_seq,
            commit,
            acked: Vec::new(),
            oversize: None,
            contents: None,
        };
        batch.delimiter(NFNL_MSG_BATCH_BEGIN);
        batch
    }

    /// BATCH_BEGIN or BATCH_END. nfnetlink never acknowledges these, so no ACK is asked.
    fn delimiter(&mut self, kind: u16) {
        let start = self.header(kind, NLM_F_REQUEST, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES);
        self.close(start);
    }

    /// `nlmsghdr` then `nfgenmsg`, with the next sequence number; returns where the message
    /// starts.
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        put_header(&mut self.buf, kind, flags, seq, family, res_id)
    }

    fn close(&mut self, start: usize) {
        close_message(&mut self.buf, start);
    }

    /// Appends nf_tables message `msg`, described as `what` in errors.
    fn message(
        &mut self,
        msg: u8,
        flags: u16,
        family: u8,
        what: &str,
        body: impl FnOnce(&mut Attrs<'_>),
    ) {
        let what = format!("{} ({what})", message_name(msg));
        let seq = self.next_seq;
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | u16::from(msg);
        let start = self.header(kind, NLM_F_REQUEST | NLM_F_ACK | flags, family, 0);
        let mut attrs = Attrs { buf: &mut self.buf, oversize: false };
        body(&mut attrs);
        if attrs.oversize && self.oversize.is_none() {
            self.oversize = Some(what.clone());
        }
        self.close(start);
        self.acked.push((seq, what));
    }

    fn finish(mut self) -> Result<Self, NftError> {
        if let Some(what) = self.oversize.take() {
            return Err(NftError::TooLarge { what });
        }
        self.delimiter(NFNL_MSG_BATCH_END);
        Ok(self)
    }
}

/// Appends `nlmsghdr` then `nfgenmsg` to `buf`; returns where the message starts.
fn put_header(
    buf: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by close_message()
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: to the kernel
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

/// Writes the length of the message begun at `start`.
fn close_message(buf: &mut [u8], start: usize) {
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    if let Some(slot) = buf.get_mut(start..start + 4) {
        slot.copy_from_slice(&len.to_ne_bytes());
    }
}

/// The message type of the answer to get request `msg`.
fn reply_to(msg: u8) -> u8 {
    match msg {
        NFT_MSG_GETTABLE => NFT_MSG_NEWTABLE,
        NFT_MSG_GETCHAIN => NFT_MSG_NEWCHAIN,
        NFT_MSG_GETRULE => NFT_MSG_NEWRULE,
        NFT_MSG_GETSET => NFT_MSG_NEWSET,
        NFT_MSG_GETGEN => NFT_MSG_NEWGEN,
        _ => msg,
    }
}

/// nft's name of an `NFPROTO_*` family, for messages.
fn family_name(nfproto: u8) -> &'static str {
    match nfproto {
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        _ => "any",
    }
}

fn message_name(msg: u8) -> &'static str {
    match msg {
        NFT_MSG_NEWTABLE => "NEWTABLE",
        NFT_MSG_DELTABLE => "DELTABLE",
        NFT_MSG_NEWCHAIN => "NEWCHAIN",
        NFT_MSG_NEWRULE => "NEWRULE",
        NFT_MSG_NEWSET => "NEWSET",
        NFT_MSG_NEWSETELEM => "NEWSETELEM",
        NFT_MSG_GETTABLE => "GETTABLE",
        NFT_MSG_GETCHAIN => "GETCHAIN",
        NFT_MSG_GETRULE => "GETRULE",
        NFT_MSG_GETSET => "GETSET",
        NFT_MSG_GETGEN => "GETGEN",
        _ => "nf_tables message",
    }
}

// ---- replies -------------------------------------------------------------------------------

/// What the kernel has said so far about one batch.
struct Replies<'a> {
    batch: &'a Batch,
    acked: Vec<bool>,
    error: Option<NftError>,
}

impl<'a> Replies<'a> {
    fn new(batch: &'a Batch) -> Self {
        Self { batch, acked: vec![false; batch.acked.len()], error: None }
    }

    /// Takes in one datagram, which may hold several netlink messages.
    fn absorb(&mut self, datagram: &[u8]) -> Result<(), NftError> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let msg =
                NetlinkBuffer::new_checked(rest).map_err(|e| NftError::Malformed(e.to_string()))?;
            if msg.message_type() == NLMSG_ERROR {
                self.note(msg.sequence_number(), msg.payload())?;
            }
            // new_checked() made sure the length covers at least a header and fits `rest`.
            let len = (msg.length() as usize).next_multiple_of(NLA_ALIGNTO);
            rest = rest.get(len..).unwrap_or_default();
        }
        Ok(())
    }

    /// An `NLMSG_ERROR`: an ACK when its code is 0, else the errno refusing message `seq`.
    fn note(&mut self, seq: u32, payload: &[u8]) -> Result<(), NftError> {
        let error = ErrorBuffer::new_checked(payload)
            .map_err(|e| NftError::Malformed(e.to_string()))?
            .code();
        let what = if seq == self.batch.begin_seq {
            &self.batch.commit
        } else if let Some(i) = self.batch.acked.iter().position(|(s, _)| *s == seq) {
            if let Some(acked) = self.acked.get_mut(i) {
                *acked = true;
            }
            &self.batch.acked[i].1
        } else {
            debug!(seq, "ignoring a netlink reply to no message of this batch");
            return Ok(());
        };
        if let Some(code) = error {
            let code = code.get();
            // The kernel sends -errno; take the magnitude whatever the sign.
            let errno = if code < 0 { code.saturating_neg() } else { code };
            let error = io::Error::from_raw_os_error(errno);
            match self.error {
                // The kernel reports in batch order: the first refusal is the cause, later
                // ones usually follow from it.
                None => self.error = Some(NftError::Kernel { what: what.clone(), error }),
                Some(_) => debug!(what = %what, %error, "further nf_tables refusal"),
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), NftError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.acked.iter().position(|acked| !acked) {
            Some(i) => Err(NftError::NoAck { what: self.batch.acked[i].1.clone() }),
            None => Ok(()),
        }
    }
}

// ---- reading back ----------------------------------------------------------------------

/// The answer to a get request.
#[derive(Debug)]
enum Got {
    /// The attributes (past `nfgenmsg`) of each message answering it.
    Messages(Vec<Vec<u8>>),
    /// ENOENT: no such table.
    NotFound,
    /// A commit came in the middle of the dump (`NLM_F_DUMP_INTR`): it is inconsistent.
    Interrupted,
}

/// What the kernel has said so far in answer to one get request.
struct Answer {
    seq: u32,
    dump: bool,
    /// The message type answering the request (`NEWRULE` for `GETRULE`).
    reply: u16,
    /// The request, for errors.
    what: String,
    messages: Vec<Vec<u8>>,
    interrupted: bool,
}

impl Answer {
    /// Takes in one datagram; the answer once it is complete.
    fn absorb(&mut self, datagram: &[u8]) -> Result<Option<Got>, NftError> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let msg =
                NetlinkBuffer::new_checked(rest).map_err(|e| NftError::Malformed(e.to_string()))?;
            // new_checked() made sure the length covers at least a header and fits `rest`.
            let len = (msg.length() as usize).next_multiple_of(NLA_ALIGNTO);
            let (kind, flags, payload) = (msg.message_type(), msg.flags(), msg.payload());
            let seq = msg.sequence_number();
            rest = rest.get(len..).unwrap_or_default();
            if seq != self.seq {
                debug!(seq, "ignoring a netlink reply to another request");
                continue;
            }
            if flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            match kind {
                NLMSG_ERROR => {
                    let code = ErrorBuffer::new_checked(payload)
                        .map_err(|e| NftError::Malformed(e.to_string()))?
                        .code();
                    return match code {
                        None => Ok(Some(self.finish())),
                        Some(code) => self.refused(code.get()).map(Some),
                    };
                }
                NLMSG_DONE => {
                    // A dump's end carries its errno (0 when it went through).
                    let code = payload
                        .get(..4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, i32::from_ne_bytes);
                    return if code == 0 {
                        Ok(Some(self.finish()))
                    } else {
                        self.refused(code).map(Some)
                    };
                }
                kind if kind == self.reply => {
                    // Past nfgenmsg (family, version, res_id).
                    self.messages.push(payload.get(4..).unwrap_or_default().to_vec());
                    if !self.dump {
                        return Ok(Some(self.finish()));
                    }
                }
                // Netlink's own control messages (noop, overrun) answer nothing.
                _ => debug!(kind, "ignoring a netlink message of another type"),
            }
        }
        Ok(None)
    }

    /// The kernel refused the request with `code` (-errno, or errno).
    fn refused(&self, code: i32) -> Result<Got, NftError> {
        let errno = if code < 0 { code.saturating_neg() } else { code };
        if errno == ENOENT {
            return Ok(Got::NotFound);
        }
        Err(NftError::Kernel {
            what: self.what.clone(),
            error: io::Error::from_raw_os_error(errno),
        })
    }

    fn finish(&mut self) -> Got {
        if self.interrupted {
            Got::Interrupted
        } else {
            Got::Messages(std::mem::take(&mut self.messages))
        }
    }
}

/// `ENOENT`: what nf_tables answers about a table that is not there.
const ENOENT: i32 = 2;

/// The netlink attributes in `bytes`, as (type, payload), the type without the
/// `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` bits; `None` when they do not parse.
fn attributes(mut bytes: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?) & NLA_TYPE_MASK;
        if len < 4 {
            return None;
        }
        out.push((kind, bytes.get(4..len)?));
        // The last attribute's padding may be cut off.
        bytes = bytes.get(len.next_multiple_of(NLA_ALIGNTO)..).unwrap_or_default();
    }
    Some(out)
}

/// The payload of the first attribute of type `kind`.
fn find<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, payload)| *payload)
}

/// A big-endian u32 attribute, as nf_tables writes them.
fn be32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(payload.try_into().ok()?))
}

/// A NUL-terminated string attribute.
fn string(payload: &[u8]) -> Option<&str> {
    let text = payload.strip_suffix(&[0]).unwrap_or(payload);
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Output};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    // ---- an encoder of its own, with literal uapi numbers ----
    // Written apart from the module's builder, so that a wrong constant or byte order there
    // makes the comparison fail.

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = u16::try_from(4 + payload.len()).unwrap().to_ne_bytes().to_vec();
        v.extend(kind.to_ne_bytes());
        v.extend(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }
    fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | 0x8000, &parts.concat())
    }
    fn be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }
    fn cstr(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }
    fn data(kind: u16, bytes: &[u8]) -> Vec<u8> {
        nest(kind, &[nla(1, bytes)])
    }
    fn expr(name: &str, attrs: &[Vec<u8>]) -> Vec<u8> {
        nest(1, &[nla(1, &cstr(name)), nest(2, attrs)])
    }
    fn nlmsg(kind: u16, flags: u16, seq: u32, family: u8, res: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body = attrs.concat();
        let mut v = u32::try_from(20 + body.len()).unwrap().to_ne_bytes().to_vec();
        v.extend(kind.to_ne_bytes());
        v.extend(flags.to_ne_bytes());
        v.extend(seq.to_ne_bytes());
        v.extend(0u32.to_ne_bytes());
        v.extend([family, 0]);
        v.extend(res.to_be_bytes());
        v.extend(body);
        v
    }
    /// A rule's tag from the parts it covers: an nft comment TLV (type 0, length with the
    /// NUL) holding "cplb " and the 64-bit FNV-1a of the length-prefixed parts.
    fn tag(parts: &[&[u8]]) -> Vec<u8> {
        let mut h: u64 = 14_695_981_039_346_656_037;
        for part in parts {
            for b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
                h = (h ^ u64::from(*b)).wrapping_mul(1_099_511_628_211);
            }
        }
        let text = cstr(&format!("cplb {h:016x}"));
        [vec![0, text.len() as u8], text].concat()
    }
    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }
    /// The messages of a batch, split by their length fields.
    fn messages(buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            out.push(&rest[..len]);
            rest = &rest[len.next_multiple_of(4)..];
        }
        out
    }
    /// (type, flags, seq, family) of every message in a batch.
    fn headers(buf: &[u8]) -> Vec<(u16, u16, u32, u8)> {
        let field = |m: &[u8], at: usize| u16::from_ne_bytes([m[at], m[at + 1]]);
        messages(buf)
            .iter()
            .map(|m| {
                (field(m, 4), field(m, 6), u32::from_ne_bytes(m[8..12].try_into().unwrap()), m[16])
            })
            .collect()
    }

    fn redirect_rules() -> Ruleset {
        Ruleset {
            guards: vec![],
            redirects: vec![Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 }],
            balancers: vec![],
        }
    }

    #[test]
    fn redirect_batch_matches_the_uapi_bytes() {
        let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
        let reg1 = || nla(1, &be(1));
        let cmp = |value: &[u8]| expr("cmp", &[reg1(), nla(2, &be(0)), data(3, value)]);
        let exprs = [
            // ip daddr 10.200.0.200: network header (1) + 16, 4 bytes
            expr("payload", &[reg1(), nla(2, &be(1)), nla(3, &be(16)), nla(4, &be(4))]),
            cmp(&[10, 200, 0, 200]),
            // meta l4proto (16) tcp (6)
            expr("meta", &[reg1(), nla(2, &be(16))]),
            cmp(&[6]),
            // tcp dport: transport header (2) + 2, 2 bytes, 6443 big endian
            expr("payload", &[reg1(), nla(2, &be(2)), nla(3, &be(2)), nla(4, &be(2))]),
            cmp(&[0x19, 0x2b]),
            expr("immediate", &[reg1(), data(2, &[0x19, 0x2c])]),
            expr("redir", &[reg1()]),
        ];
        let table = || nla(1, &cstr("cplb"));
        let expected = [
            // BATCH_BEGIN 0x10, NLM_F_REQUEST, AF_UNSPEC, res_id NFNL_SUBSYS_NFTABLES
            nlmsg(0x10, 0x1, 100, 0, 10, &[]),
            // NEWTABLE (10 << 8 | 0), REQUEST | ACK | CREATE (0x400), NFPROTO_IPV4
            nlmsg(0x0a00, 0x405, 101, 2, 0, &[table()]),
            // DELTABLE (2)
            nlmsg(0x0a02, 0x005, 102, 2, 0, &[table()]),
            nlmsg(0x0a00, 0x405, 103, 2, 0, &[table()]),
            // NEWCHAIN (3): table, name (3), hook (4) { hooknum 0, priority -100 }, type (7)
            nlmsg(
                0x0a03,
                0x405,
                104,
                2,
                0,
                &[
                    table(),
                    nla(3, &cstr("prerouting")),
                    nest(4, &[nla(1, &be(0)), nla(2, &(-100i32).to_be_bytes())]),
                    nla(7, &cstr("nat")),
                ],
            ),
            // NEWRULE (6), REQUEST | ACK | CREATE | APPEND (0x800); userdata (7) the tag
            nlmsg(
                0x0a06,
                0xc05,
                105,
                2,
                0,
                &[
                    table(),
                    nla(2, &cstr("prerouting")),
                    nest(4, &exprs),
                    nla(7, &tag(&["ip".as_bytes(), b"prerouting", &exprs.concat(), b""])),
                ],
            ),
            // BATCH_END 0x11
            nlmsg(0x11, 0x1, 106, 0, 10, &[]),
        ]
        .concat();
        assert_eq!(batch.buf, expected);
        assert_eq!(batch.next_seq, 107);
        assert_eq!(batch.begin_seq, 100);
        assert_eq!(batch.acked.len(), 5);
        assert_eq!(batch.acked[4], (105, "NEWRULE (redirect 10.200.0.200:6443 -> :6444)".into()));

        // A few bytes checked by hand, independent of both encoders.
        assert_eq!(&batch.buf[18..20], &[0, 10], "res_id is big endian");
        assert_eq!(&batch.buf[0..4], &20u32.to_ne_bytes(), "BATCH_BEGIN is a bare header");
        let rule = messages(&batch.buf)[5];
        assert_eq!(&rule[4..6], &0x0a06u16.to_ne_bytes(), "NFNL_SUBSYS_NFTABLES << 8 | NEWRULE");
        // NFTA_RULE_EXPRESSIONS (4) carries NLA_F_NESTED (0x8000).
        assert!(contains(rule, &0x8004u16.to_ne_bytes()));
        // The port of the immediate: 6444 in network byte order.
        assert!(contains(rule, &[0x19, 0x2c]));
    }

    #[test]
    fn ipv6_redirect_goes_to_the_ip6_table() {
        let rules = Ruleset {
            guards: vec![],
            redirects: vec![Redirect { vip: sa("[fd00:200::200]:6443"), to_port: 6444 }],
            balancers: vec![],
        };
        let v4 = encode("cplb", Family::Ip, &rules, 1).unwrap();
        assert_eq!(
            headers(&v4.buf),
            [(0x10, 1, 1, 0), (0x0a00, 0x405, 2, 2), (0x0a02, 0x5, 3, 2), (0x11, 1, 4, 0)],
            "nothing for IPv4: the ip table is only deleted"
        );
        let v6 = encode("cplb", Family::Ip6, &rules, 1).unwrap();
        let families: Vec<u8> = headers(&v6.buf).iter().map(|h| h.3).collect();
        assert_eq!(families, [0, 10, 10, 10, 10, 10, 0]);
        // ip6 daddr: network header + 24, 16 bytes.
        let payload =
            expr("payload", &[nla(1, &be(1)), nla(2, &be(1)), nla(3, &be(24)), nla(4, &be(16))]);
        assert!(contains(&v6.buf, &payload));
        let vip: std::net::Ipv6Addr = "fd00:200::200".parse().unwrap();
        let cmp = expr("cmp", &[nla(1, &be(1)), nla(2, &be(0)), data(3, &vip.octets())]);
        assert!(contains(&v6.buf, &cmp));
        assert_eq!(v6.acked[4].1, "NEWRULE (redirect [fd00:200::200]:6443 -> :6444)");
    }

    #[test]
    fn round_robin_balancer_encodes_map_numgen_nat_and_masquerade() {
        let rules = Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer {
                vip: sa("10.200.9.200:6443"),
                backends: vec![
                    sa("10.200.10.11:6444"),
                    sa("10.200.10.12:6444"),
                    sa("10.200.10.13:6445"),
                ],
                spread: Spread::RoundRobin,
            }],
        };
        let batch = encode("cplb", Family::Ip, &rules, 1).unwrap();
        let kinds: Vec<u16> = headers(&batch.buf).iter().map(|h| h.0).collect();
        // begin, table, deltable, table, 2 chains, set, elements, 2 rules, end
        assert_eq!(
            kinds,
            [0x10, 0x0a00, 0x0a02, 0x0a00, 0x0a03, 0x0a03, 0x0a09, 0x0a0c, 0x0a06, 0x0a06, 0x11]
        );
        let b = &batch.buf;
        // postrouting hook (4) at srcnat (100)
        assert!(contains(b, &nest(4, &[nla(1, &be(4)), nla(2, &be(100))])));
        // set: flags anonymous|constant|map, key integer (4) of 4 bytes,
        // data ipv4_addr . inet_service ((7 << 6) | 13) of 8 bytes, id 1
        let set = [
            nla(3, &be(0xb)),
            nla(4, &be(4)),
            nla(5, &be(4)),
            nla(6, &be(461)),
            nla(7, &be(8)),
            nla(10, &be(1)),
            // userdata: key byte order (0), 4 bytes, host endian (1)
            nla(13, &[[0, 4].as_slice(), &1u32.to_ne_bytes()].concat()),
        ]
        .concat();
        assert!(contains(b, &set));
        // element 2 : 10.200.10.13 . 6445 (port big endian, padded to 4 bytes)
        let elem =
            nest(1, &[data(1, &2u32.to_ne_bytes()), data(2, &[10, 200, 10, 13, 0x19, 0x2d, 0, 0])]);
        assert!(contains(b, &elem));
        let reg1 = || nla(1, &be(1));
        assert!(contains(b, &expr("numgen", &[reg1(), nla(2, &be(3)), nla(3, &be(0))])));
        let lookup = expr(
            "lookup",
            &[nla(1, &cstr("__map0")), nla(4, &be(1)), nla(2, &be(1)), nla(3, &be(1))],
        );
        assert!(contains(b, &lookup));
        // dnat (1), NFPROTO_IPV4, address from reg 1, port from NFT_REG32_01 (9)
        let nat = expr("nat", &[nla(1, &be(1)), nla(2, &be(2)), nla(3, &be(1)), nla(5, &be(9))]);
        assert!(contains(b, &nat));
        // ct original (dir 0) dst_ip (20), then ct status (2) & IPS_DST_NAT (0x20) != 0
        assert!(contains(b, &expr("ct", &[reg1(), nla(2, &be(20)), nla(3, &[0])])));
        assert!(contains(b, &expr("ct", &[reg1(), nla(2, &be(12)), nla(3, &[0])])));
        assert!(contains(b, &data(4, &0x20u32.to_ne_bytes())));
        assert!(contains(b, &expr("cmp", &[reg1(), nla(2, &be(1)), data(3, &[0; 4])])));
        assert!(b.ends_with(&nlmsg(0x11, 1, 11, 0, 10, &[])));
        // The masquerade rule ends with masq, then its tag: a 22-byte comment "cplb HASH".
        let masquerade = messages(b)[9];
        let tail = [expr("masq", &[]).as_slice(), &[28, 0, 7, 0, 0, 22], b"cplb "].concat();
        assert!(masquerade[..masquerade.len() - 17].ends_with(&tail), "{masquerade:?}");
    }

    #[test]
    fn source_hash_balancer_over_ipv6_hashes_the_source() {
        let rules = Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer {
                vip: sa("[fd00:200::200]:6443"),
                backends: vec![sa("[fd00:200::11]:6444"), sa("[fd00:200::12]:6444")],
                spread: Spread::SourceHash,
            }],
        };
        let batch = encode("cplb", Family::Ip6, &rules, 1).unwrap();
        let b = &batch.buf;
        let reg1 = || nla(1, &be(1));
        // ip6 saddr: network header + 8, 16 bytes; jhash over 16 bytes mod 2, fixed seed
        assert!(contains(
            b,
            &expr("payload", &[reg1(), nla(2, &be(1)), nla(3, &be(8)), nla(4, &be(16))])
        ));
        let hash = [
            reg1(),
            nla(2, &be(1)),
            nla(3, &be(16)),
            nla(4, &be(2)),
            nla(5, &be(HASH_SEED)),
            nla(7, &be(0)),
        ];
        assert!(contains(b, &expr("hash", &hash)));
        // data ipv6_addr . inet_service ((8 << 6) | 13) of 20 bytes; port in NFT_REG32_04 (12)
        assert!(contains(b, &[nla(6, &be(525)), nla(7, &be(20))].concat()));
        let nat = expr("nat", &[nla(1, &be(1)), nla(2, &be(10)), nla(3, &be(1)), nla(5, &be(12))]);
        assert!(contains(b, &nat));
        assert!(contains(b, &expr("ct", &[reg1(), nla(2, &be(22)), nla(3, &[0])])));
    }

    #[test]
    fn balancer_without_backends_installs_nothing() {
        let rules = Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer {
                vip: sa("10.200.9.200:6443"),
                backends: vec![],
                spread: Spread::RoundRobin,
            }],
        };
        let batch = encode("cplb", Family::Ip, &rules, 1).unwrap();
        assert_eq!(headers(&batch.buf).len(), 4, "only add+delete of the table");
    }

    #[test]
    fn mixed_family_balancer_is_refused() {
        let rules = Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer {
                vip: sa("10.200.9.200:6443"),
                backends: vec![sa("10.200.10.11:6444"), sa("[fd00:200::11]:6444")],
                spread: Spread::RoundRobin,
            }],
        };
        let err = encode("cplb", Family::Ip, &rules, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "balancer 10.200.9.200:6443: backend [fd00:200::11]:6444 is not of the same address family"
        );
    }

    #[test]
    fn table_names_are_checked() {
        assert!(check_table_name("cplb").is_ok());
        assert!(check_table_name(&"x".repeat(255)).is_ok());
        for bad in ["", "a\0b", &"x".repeat(256)] {
            assert!(matches!(check_table_name(bad), Err(NftError::InvalidName { .. })), "{bad:?}");
        }
    }

    #[test]
    fn huge_backend_lists_are_refused_not_truncated() {
        let backends = (0..4000u32)
            .map(|i| SocketAddr::from(([10, 200, (i / 250) as u8, (i % 250) as u8], 6444)))
            .collect();
        let rules = Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer {
                vip: sa("10.200.9.200:6443"),
                backends,
                spread: Spread::RoundRobin,
            }],
        };
        let err = encode("cplb", Family::Ip, &rules, 1).unwrap_err();
        assert!(matches!(err, NftError::TooLarge { .. }), "{err}");
    }

    // ---- replies ----

    /// An NLMSG_ERROR answering `seq` with `code`, capped: the request header only.
    fn reply(seq: u32, code: i32) -> Vec<u8> {
        let mut v = 36u32.to_ne_bytes().to_vec();
        v.extend(2u16.to_ne_bytes());
        v.extend(0x100u16.to_ne_bytes());
        v.extend(seq.to_ne_bytes());
        v.extend(4242u32.to_ne_bytes());
        v.extend(code.to_ne_bytes());
        v.extend([0u8; 16]);
        v
    }

    fn outcome(batch: &Batch, datagrams: &[Vec<u8>]) -> Result<(), NftError> {
        let mut replies = Replies::new(batch);
        for d in datagrams {
            replies.absorb(d)?;
        }
        replies.finish()
    }

    #[test]
    fn acks_for_every_message_are_success() {
        let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
        let all: Vec<Vec<u8>> = (101..106).map(|seq| reply(seq, 0)).collect();
        outcome(&batch, &all).unwrap();
        // Several messages in one datagram, and replies to other batches, are fine too.
        outcome(&batch, &[all.concat(), reply(7, -1)]).unwrap();
    }

    #[test]
    fn a_refused_message_is_named_with_its_errno() {
        let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
        let mut replies: Vec<Vec<u8>> = (101..105).map(|seq| reply(seq, 0)).collect();
        replies.push(reply(105, -95));
        let err = outcome(&batch, &replies).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NEWRULE (redirect 10.200.0.200:6443 -> :6444) failed: \
             Operation not supported (os error 95)"
        );
        assert_eq!(err.raw_os_error(), Some(95));
    }

    #[test]
    fn a_failed_commit_names_the_table() {
        let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
        let mut replies = vec![reply(100, -12)];
        replies.extend((101..106).map(|seq| reply(seq, 0)));
        let err = outcome(&batch, &replies).unwrap_err();
        assert_eq!(
            err.to_string(),
            "commit (ip cplb) failed: Cannot allocate memory (os error 12)"
        );
    }

    #[test]
    fn a_missing_ack_is_an_error() {
        let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
        let replies: Vec<Vec<u8>> = (101..105).map(|seq| reply(seq, 0)).collect();
        let err = outcome(&batch, &replies).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NEWRULE (redirect 10.200.0.200:6443 -> :6444): the kernel did not acknowledge it"
        );
    }

    #[test]
    fn garbage_replies_never_panic() {
        let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
        let good = [reply(101, -1), reply(102, i32::MIN), reply(103, i32::MAX)].concat();
        for cut in 0..=good.len() {
            let _ = outcome(&batch, &[good[..cut].to_vec()]);
        }
        for len in [0u32, 1, 15, 16, 17, 19, 20, 35, 36, 37, u32::MAX] {
            let mut bad = reply(101, -1);
            bad[0..4].copy_from_slice(&len.to_ne_bytes());
            let _ = outcome(&batch, &[bad]);
        }
        // A pseudo-random soup of bytes.
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(x % 96))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = outcome(&batch, &[bytes]);
        }
        let err = outcome(&batch, &[reply(102, i32::MIN)]).unwrap_err();
        assert!(err.to_string().starts_with("DELTABLE (ip cplb) failed: "), "{err}");
    }

    // ---- what verify compares ----

    fn mixed_rules(backend: &str) -> Ruleset {
        Ruleset {
            guards: vec![],
            redirects: vec![Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 }],
            balancers: vec![Balancer {
                vip: sa("10.200.0.201:6443"),
                backends: vec![sa("10.200.10.11:6444"), sa(backend)],
                spread: Spread::RoundRobin,
            }],
        }
    }

    #[test]
    fn encode_writes_down_what_the_table_will_hold() {
        let contents = encode("cplb", Family::Ip, &mixed_rules("10.200.10.12:6444"), 7)
            .unwrap()
            .contents
            .expect("an ip table");
        let chain = |name: &str, hook, priority| Chain {
            name: name.into(),
            hook: Some((hook, priority)),
            kind: Some("nat".into()),
            policy: Some(1),
        };
        assert_eq!(contents.flags, 0);
        assert_eq!(
            contents.chains,
            [chain("prerouting", 0, -100), chain("postrouting", 4, 100)].into()
        );
        assert_eq!(contents.sets, [("__map0".to_owned(), 0xb)].into());
        let pre = &contents.rules["prerouting"];
        let post = &contents.rules["postrouting"];
        assert_eq!((pre.len(), post.len(), contents.rules.len()), (2, 1, 2));
        let tags: BTreeSet<&Vec<u8>> =
            pre.iter().chain(post).map(|t| &t.as_ref().unwrap().0).collect();
        assert_eq!(tags.len(), 3, "every rule has a tag of its own");
        for tag in tags {
            assert_eq!(tag.len(), 2 + 22);
            assert_eq!(&tag[..7], b"\x00\x16cplb ");
            assert!(tag[7..23].iter().all(u8::is_ascii_hexdigit) && tag[23] == 0, "{tag:?}");
        }

        // The sequence numbers of a batch are no part of what the table holds.
        let again = encode("cplb", Family::Ip, &mixed_rules("10.200.10.12:6444"), 9000).unwrap();
        assert_eq!(again.contents.as_ref(), Some(&contents));
        // Another backend: the same expressions, another map, so another balance tag.
        let moved = encode("cplb", Family::Ip, &mixed_rules("10.200.10.13:6444"), 7).unwrap();
        let moved = moved.contents.unwrap();
        assert_eq!(moved.rules["prerouting"][0], pre[0], "the redirect is unchanged");
        assert_ne!(moved.rules["prerouting"][1], pre[1], "the balance rule's map changed");
        assert_eq!(moved.rules["postrouting"], *post, "the masquerade is unchanged");
        // Nothing for IPv6: no table, as apply leaves it.
        let v6 = encode("cplb", Family::Ip6, &mixed_rules("10.200.10.12:6444"), 7).unwrap();
        assert_eq!(v6.contents, None);
    }

    fn guard(macs: &[[u8; 6]]) -> Ruleset {
        Ruleset {
            guards: vec![Guard { vip: sa("10.200.9.200:6443"), fwmark: 100, macs: macs.to_vec() }],
            ..Ruleset::default()
        }
    }

    #[test]
    fn a_guard_is_a_mangle_chain_passing_each_real_server_then_marking() {
        let mac = [2, 0, 0, 0, 0, 0x11];
        let batch = encode("cplb", Family::Ip, &guard(&[mac, [2, 0, 0, 0, 0, 0x12]]), 7).unwrap();
        let contents = batch.contents.clone().expect("an ip table");
        let chain = Chain {
            name: "loopguard".into(),
            hook: Some((0, -150)),
            kind: Some("filter".into()),
            policy: Some(1),
        };
        assert_eq!(contents.chains, [chain].into(), "no NAT chain for a guard alone");
        assert_eq!(contents.rules["loopguard"].len(), 3, "one pass per MAC, then the mark");
        // The pass: iiftype ether (u16 1, host order), the source MAC at LL offset 6, and
        // an immediate verdict of NFT_RETURN.
        let pass = [
            expr("meta", &[nla(1, &be(1)), nla(2, &be(8))]),
            expr("cmp", &[nla(1, &be(1)), nla(2, &be(0)), data(3, &1u16.to_ne_bytes())]),
            expr("payload", &[nla(1, &be(1)), nla(2, &be(0)), nla(3, &be(6)), nla(4, &be(6))]),
            expr("cmp", &[nla(1, &be(1)), nla(2, &be(0)), data(3, &mac)]),
            expr(
                "immediate",
                &[nla(1, &be(0)), nest(2, &[nest(2, &[nla(1, &(-5i32).to_be_bytes())])])],
            ),
        ]
        .concat();
        assert!(contains(&batch.buf, &pass), "the pass rule's expressions");
        // The mark: immediate 100 (host order) into reg 1, then meta mark set from reg 1.
        let mark = [
            expr("immediate", &[nla(1, &be(1)), data(2, &100u32.to_ne_bytes())]),
            expr("meta", &[nla(2, &be(3)), nla(3, &be(1))]),
        ]
        .concat();
        assert!(contains(&batch.buf, &mark), "the mark rule's expressions");
        // A MAC learned later is another rule: verify sees the table as not wanted.
        let fewer = encode("cplb", Family::Ip, &guard(&[mac]), 7).unwrap().contents.unwrap();
        assert_ne!(fewer, contents);
        // No MAC known: the mark rule alone.
        let none = encode("cplb", Family::Ip, &guard(&[]), 7).unwrap().contents.unwrap();
        assert_eq!(none.rules["loopguard"].len(), 1);
        assert_eq!(none.rules["loopguard"][0], contents.rules["loopguard"][2]);
    }

    /// A reply message of type `kind` (nf_tables or netlink's own) answering `seq`.
    fn answer_msg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(16 + body.len()).unwrap().to_ne_bytes().to_vec();
        v.extend(kind.to_ne_bytes());
        v.extend(flags.to_ne_bytes());
        v.extend(seq.to_ne_bytes());
        v.extend(4242u32.to_ne_bytes());
        v.extend(body);
        v
    }

    fn answer(dump: bool) -> Answer {
        Answer {
            seq: 5,
            dump,
            reply: 0x0a06,
            what: "GETRULE (ip cplb)".into(),
            messages: Vec::new(),
            interrupted: false,
        }
    }

    #[test]
    fn answers_to_get_requests_are_gathered() {
        let rule = |seq, flags| {
            let body = [vec![2, 0, 0, 0], nla(2, &cstr("prerouting"))].concat();
            answer_msg(0x0a06, flags, seq, &body)
        };
        let done = |seq, code: i32| answer_msg(3, 2, seq, &code.to_ne_bytes());
        // A dump in two datagrams, with a stray reply to another request in between.
        let mut a = answer(true);
        assert!(a.absorb(&[rule(5, 2), rule(4, 2)].concat()).unwrap().is_none());
        let Some(Got::Messages(got)) = a.absorb(&[rule(5, 2), done(5, 0)].concat()).unwrap() else {
            panic!("a complete dump");
        };
        assert_eq!(got, [nla(2, &cstr("prerouting")), nla(2, &cstr("prerouting"))]);
        // A commit in the middle of the dump.
        let mut a = answer(true);
        let got = a.absorb(&[rule(5, 2 | 0x10), done(5, 0)].concat()).unwrap();
        assert!(matches!(got, Some(Got::Interrupted)), "{got:?}");
        // No table; another refusal, named; a failed dump.
        let got = answer(false).absorb(&reply(5, -2)).unwrap();
        assert!(matches!(got, Some(Got::NotFound)), "{got:?}");
        let err = answer(false).absorb(&reply(5, -1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GETRULE (ip cplb) failed: Operation not permitted (os error 1)"
        );
        let err = answer(true).absorb(&done(5, -12)).unwrap_err();
        assert!(err.to_string().starts_with("GETRULE (ip cplb) failed: "), "{err}");
        // A plain get is answered by its one message.
        let got = answer(false).absorb(&rule(5, 0)).unwrap();
        assert!(matches!(got, Some(Got::Messages(m)) if m.len() == 1));
    }

    #[test]
    fn garbage_answers_and_attributes_never_panic() {
        let good = [
            answer_msg(0x0a06, 2, 5, &[[2, 0, 0, 0].as_slice(), &nla(2, b"x\0")].concat()),
            answer_msg(3, 2, 5, &0i32.to_ne_bytes()),
        ]
        .concat();
        for cut in 0..=good.len() {
            let _ = answer(true).absorb(&good[..cut]);
            let _ = attributes(&good[..cut]);
            let _ = attributes(&good[cut..]);
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(x % 80))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = answer(true).absorb(&bytes);
            if let Some(attrs) = attributes(&bytes) {
                let _ = Chain::read(&attrs);
            }
        }
        assert_eq!(attributes(&[3, 0, 1, 0]), None, "a length below the header");
        assert_eq!(attributes(&[9, 0, 1, 0, 1]), None, "a length past the end");
        let two = [nla(0x8001, &[1]), nla(2, b"ab\0")].concat();
        assert_eq!(attributes(&two), Some(vec![(1, &[1u8][..]), (2, &b"ab\0"[..])]));
        assert_eq!(string(b"ab\0"), Some("ab"));
        assert_eq!(be32(&[0, 0, 1, 0]), Some(256));
        assert_eq!(be32(&[1]), None);
    }

    // ---- live, in network namespaces of our own ----

    /// Effective uid 0, from /proc/self/status ("Uid: real effective saved fs").
    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .map(|ids| ids.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }

    fn run(program: &str, args: &[&str]) -> Output {
        let out = Command::new(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

    /// A network namespace deleted on drop, also when the test panics.
    struct Netns {
        name: String,
    }

    impl Netns {
        fn new() -> Self {
            let n = NEXT_NETNS.fetch_add(1, Ordering::SeqCst);
            let ns = Self { name: format!("cplbt-nft-{}-{n}", std::process::id()) };
            run("ip", &["netns", "add", &ns.name]);
            ns.ip(&["link", "set", "lo", "up"]);
            ns
        }

        fn ip(&self, args: &[&str]) {
            let mut all = vec!["-n", &self.name];
            all.extend(args);
            run("ip", &all);
        }

        fn sysctl(&self, setting: &str) {
            run("ip", &["netns", "exec", &self.name, "sysctl", "-qw", setting]);
        }

        /// `nft list table FAMILY cplb`, or None when there is no such table.
        fn list(&self, family: &str) -> Option<String> {
            let out = Command::new("ip")
                .args(["netns", "exec", &self.name, "nft", "list", "table", family, "cplb"])
                .output()
                .unwrap();
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }

        /// Runs `f` on a thread that entered this namespace, so its sockets live here.
        fn spawn<T: Send + 'static>(
            &self,
            f: impl FnOnce() -> T + Send + 'static,
        ) -> JoinHandle<T> {
            let path = format!("/var/run/netns/{}", self.name);
            std::thread::spawn(move || {
                let ns = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
        }

        fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
            match self.spawn(f).join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }

        fn apply(&self, rules: &Ruleset) -> Result<(), NftError> {
            let rules = rules.clone();
            self.run(move || Nft::open()?.apply("cplb", &rules))
        }

        fn remove(&self) -> Result<(), NftError> {
            self.run(|| Nft::open()?.remove("cplb"))
        }

        fn verify(&self, rules: &Ruleset) -> bool {
            let rules = rules.clone();
            self.run(move || Nft::open()?.verify("cplb", &rules)).unwrap()
        }

        /// Runs `nft ARGS` in this namespace (the tests' hand on the tables).
        fn nft(&self, args: &[&str]) -> String {
            let mut all = vec!["netns", "exec", &self.name, "nft"];
            all.extend(args);
            String::from_utf8_lossy(&run("ip", &all).stdout).into_owned()
        }

        /// The handle of the first rule of `family cplb CHAIN` whose listing has `text`.
        fn handle(&self, family: &str, chain: &str, text: &str) -> String {
            let listing = self.nft(&["-a", "list", "chain", family, "cplb", chain]);
            let line = listing.lines().find(|l| l.contains(text)).expect(&listing);
            line.rsplit("# handle ").next().unwrap().trim().to_owned()
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        }
    }

    /// A veth pair from `a` to `b`, both ends up.
    fn veth(a: &Netns, a_end: &str, b: &Netns, b_end: &str) {
        a.ip(&["link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", &b.name]);
        a.ip(&["link", "set", a_end, "up"]);
        b.ip(&["link", "set", b_end, "up"]);
    }

    /// TCP servers answering `reply` to every connection until `stop`; join for the peers.
    struct Server {
        stop: Arc<AtomicBool>,
        handle: JoinHandle<Vec<SocketAddr>>,
    }

    impl Server {
        fn start(ns: &Netns, addr: SocketAddr, reply: &'static str) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let (ready, up) = mpsc::channel();
            let stopped = stop.clone();
            let handle = ns.spawn(move || {
                let listener = TcpListener::bind(addr).unwrap();
                listener.set_nonblocking(true).unwrap();
                ready.send(()).unwrap();
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut peers = Vec::new();
                while !stopped.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((mut conn, peer)) => {
                            conn.set_nonblocking(false).unwrap();
                            let _ = conn.write_all(reply.as_bytes());
                            peers.push(peer);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("accept on {addr}: {e}"),
                    }
                }
                peers
            });
            up.recv_timeout(Duration::from_secs(10)).unwrap();
            Self { stop, handle }
        }

        fn peers(self) -> Vec<SocketAddr> {
            self.stop.store(true, Ordering::SeqCst);
            self.handle.join().unwrap()
        }
    }

    /// `times` connections from `ns` to `target`, one after the other; what each one read.
    fn fetch(ns: &Netns, target: SocketAddr, times: usize) -> Vec<String> {
        ns.run(move || {
            (0..times)
                .map(|_| match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                    Ok(mut conn) => {
                        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut got = String::new();
                        match conn.read_to_string(&mut got) {
                            Ok(_) => got,
                            Err(e) => format!("read error: {e}"),
                        }
                    }
                    Err(e) => format!("connect error: {e}"),
                })
                .collect()
        })
    }

    const REDIRECT_RULE: &str = "ip daddr 10.200.0.200 tcp dport 6443 redirect to :6444";

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_redirect_is_installed_once_and_removed() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let ns = Netns::new();
        ns.remove().unwrap();
        assert_eq!(ns.list("ip"), None, "remove of an absent table is fine");

        ns.apply(&redirect_rules()).unwrap();
        let listing = ns.list("ip").expect("table ip cplb");
        assert!(listing.contains(REDIRECT_RULE), "{listing}");
        assert!(listing.contains("type nat hook prerouting priority dstnat"), "{listing}");

        // A second cplbd taking over: the table is replaced, not appended to.
        ns.run(|| {
            let mut nft = Nft::open().unwrap();
            nft.apply("cplb", &redirect_rules()).unwrap();
            nft.apply("cplb", &redirect_rules()).unwrap();
        });
        let listing = ns.list("ip").unwrap();
        assert_eq!(listing.matches(REDIRECT_RULE).count(), 1, "{listing}");
        assert_eq!(ns.list("ip6"), None);

        ns.apply(&Ruleset::default()).unwrap();
        assert_eq!(ns.list("ip"), None, "an empty ruleset deletes the table");

        ns.apply(&redirect_rules()).unwrap();
        ns.remove().unwrap();
        assert_eq!(ns.list("ip"), None);
        assert_eq!(ns.list("ip6"), None);
    }

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_kernel_errors_name_the_message() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let ns = Netns::new();
        let err = ns
            .run(|| {
                let mut batch = Batch::new(1, "commit (test)".into());
                batch.message(NFT_MSG_NEWRULE, NLM_F_CREATE, NFPROTO_IPV4, "into nowhere", |a| {
                    a.string(NFTA_RULE_TABLE, "cplb-absent");
                    a.string(NFTA_RULE_CHAIN, "nope");
                    a.nested(NFTA_RULE_EXPRESSIONS, |e| e.expr("masq", |_| {}));
                });
                Nft::open().unwrap().exchange(&batch.finish().unwrap())
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "NEWRULE (into nowhere) failed: No such file or directory (os error 2)"
        );
    }

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_redirect_carries_traffic() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let (client, server) = (Netns::new(), Netns::new());
        veth(&client, "c0", &server, "s0");
        client.ip(&["addr", "add", "10.200.9.1/24", "dev", "c0"]);
        server.ip(&["addr", "add", "10.200.9.2/24", "dev", "s0"]);
        server.ip(&["addr", "add", "10.200.9.200/32", "dev", "s0"]);
        let proxy = Server::start(&server, sa("0.0.0.0:6444"), "proxy");
        let vip = sa("10.200.9.200:6443");
        server
            .apply(&Ruleset {
                redirects: vec![Redirect { vip, to_port: 6444 }],
                balancers: vec![],
                guards: vec![],
            })
            .unwrap();
        assert_eq!(fetch(&client, vip, 2), ["proxy", "proxy"]);
        assert_eq!(proxy.peers().len(), 2);
    }

    /// Reads the packet count of each `counter` in `nft list` output, in order.
    fn counters(listing: &str) -> Vec<u64> {
        listing
            .split("counter packets ")
            .skip(1)
            .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_guard_marks_only_what_no_real_server_sent() {
        assert!(is_root(), "needs root (creates network namespaces)");
        // Two peers of the director: a real server (its MAC in the guard) and a client.
        let (server, peer, client) = (Netns::new(), Netns::new(), Netns::new());
        veth(&peer, "p0", &server, "s0");
        veth(&client, "c0", &server, "s1");
        peer.ip(&["link", "set", "p0", "address", "02:00:00:00:00:11"]);
        peer.ip(&["addr", "add", "10.200.9.11/24", "dev", "p0"]);
        client.ip(&["addr", "add", "10.200.8.1/24", "dev", "c0"]);
        server.ip(&["addr", "add", "10.200.9.2/24", "dev", "s0"]);
        server.ip(&["addr", "add", "10.200.8.2/24", "dev", "s1"]);
        server.ip(&["addr", "add", "10.200.9.200/32", "dev", "s0"]);
        for (ns, via) in [(&peer, "10.200.9.2"), (&client, "10.200.8.2")] {
            ns.ip(&["route", "add", "10.200.9.200/32", "via", via]);
        }
        let api = Server::start(&server, sa("0.0.0.0:6443"), "api");
        server.apply(&guard(&[[2, 0, 0, 0, 0, 0x11]])).unwrap();
        let listing = server.list("ip").unwrap();
        assert!(listing.contains("ether saddr 02:00:00:00:00:11 return"), "{listing}");
        assert!(listing.contains("meta mark set 0x00000064"), "{listing}");
        // What the input path sees: marked and unmarked connections to the VIP.
        server.nft(&["add", "table", "ip", "cplbtobs"]);
        let hook = "{ type filter hook input priority 0; }";
        server.nft(&["add", "chain", "ip", "cplbtobs", "input", hook]);
        for mark in ["100", "0"] {
            let rule = ["add", "rule", "ip", "cplbtobs", "input", "tcp", "dport", "6443"];
            server.nft(&[&rule[..], &["meta", "mark", mark, "counter"]].concat());
        }
        let vip = sa("10.200.9.200:6443");
        let seen = || counters(&server.nft(&["list", "table", "ip", "cplbtobs"]));

        assert_eq!(fetch(&peer, vip, 2), ["api", "api"]);
        let after_peer = seen();
        assert_eq!(after_peer[0], 0, "nothing from the real server is marked: {after_peer:?}");
        assert!(after_peer[1] >= 2, "the real server's SYNs arrived unmarked: {after_peer:?}");

        assert_eq!(fetch(&client, vip, 2), ["api", "api"]);
        let after_client = seen();
        assert!(after_client[0] >= 2, "the client's SYNs are marked: {after_client:?}");
        assert_eq!(after_client[1], after_peer[1], "and none unmarked: {after_client:?}");
        assert_eq!(api.peers().len(), 4);
        assert!(server.verify(&guard(&[[2, 0, 0, 0, 0, 0x11]])));
        assert!(!server.verify(&guard(&[])), "a guard with other MACs is not this table");
    }

    /// client (10.200.9.1) -- (10.200.9.2, VIP 10.200.9.200) balancer (10.200.10.1) --
    /// backends (10.200.10.11-13), which have no route back to the client: only masquerading
    /// gets their answers home.
    fn balanced_topology(spread: Spread) -> (Vec<String>, Vec<Vec<SocketAddr>>, String) {
        let (client, lb, backends) = (Netns::new(), Netns::new(), Netns::new());
        veth(&client, "c0", &lb, "l0");
        veth(&lb, "l1", &backends, "b0");
        client.ip(&["addr", "add", "10.200.9.1/24", "dev", "c0"]);
        lb.ip(&["addr", "add", "10.200.9.2/24", "dev", "l0"]);
        lb.ip(&["addr", "add", "10.200.9.200/32", "dev", "l0"]);
        lb.ip(&["addr", "add", "10.200.10.1/24", "dev", "l1"]);
        lb.sysctl("net.ipv4.ip_forward=1");
        let names = ["b11", "b12", "b13"];
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let addr = format!("10.200.10.{}", 11 + i);
            backends.ip(&["addr", "add", &format!("{addr}/24"), "dev", "b0"]);
            let addr = sa(&format!("{addr}:6444"));
            servers.push(Server::start(&backends, addr, name));
            addrs.push(addr);
        }
        let vip = sa("10.200.9.200:6443");
        lb.apply(&Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer { vip, backends: addrs, spread }],
        })
        .unwrap();
        let listing = lb.list("ip").unwrap();
        let got = fetch(&client, vip, 6);
        (got, servers.into_iter().map(Server::peers).collect(), listing)
    }

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_round_robin_balancer_spreads_and_masquerades() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let (got, peers, listing) = balanced_topology(Spread::RoundRobin);
        let map = "numgen inc mod 3 map { 0 : 10.200.10.11 . 6444, 1 : 10.200.10.12 . 6444, 2 : 10.200.10.13 . 6444 }";
        assert!(listing.contains(map), "{listing}");
        assert!(listing.contains("masquerade"), "{listing}");
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, ["b11", "b11", "b12", "b12", "b13", "b13"], "{got:?}\n{listing}");
        for p in peers.iter().flatten() {
            assert_eq!(p.ip(), "10.200.10.1".parse::<IpAddr>().unwrap(), "masqueraded source");
        }
    }

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_source_hash_balancer_sticks_to_one_backend() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let (got, _, listing) = balanced_topology(Spread::SourceHash);
        assert!(listing.contains("jhash ip saddr mod 3"), "{listing}");
        assert!(got[0].starts_with('b'), "{got:?}");
        assert!(got.iter().all(|g| *g == got[0]), "{got:?}");
    }

    #[test]
    #[ignore = "needs root: creates network namespaces"]
    fn live_ipv6_redirect_installs_in_ip6_and_carries_traffic() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let (client, server) = (Netns::new(), Netns::new());
        veth(&client, "c0", &server, "s0");
        client.ip(&["addr", "add", "fd00:200::1/64", "dev", "c0", "nodad"]);
        server.ip(&["addr", "add", "fd00:200::2/64", "dev", "s0", "nodad"]);
        server.ip(&["addr", "add", "fd00:200::200/128", "dev", "s0", "nodad"]);
        let proxy = Server::start(&server, sa("[::]:6444"), "proxy");
        let vip = sa("[fd00:200::200]:6443");
        server
            .apply(&Ruleset {
                redirects: vec![Redirect { vip, to_port: 6444 }],
                balancers: vec![],
                guards: vec![],
            })
            .unwrap();
        let listing = server.list("ip6").expect("table ip6 cplb");
        assert!(
            listing.contains("ip6 daddr fd00:200::200 tcp dport 6443 redirect to :6444"),
            "{listing}"
        );
        assert_eq!(server.list("ip"), None);
        assert_eq!(fetch(&client, vip, 1), ["proxy"]);
        proxy.peers();
        server.remove().unwrap();
        assert_eq!(server.list("ip6"), None);
    }

    /// Redirects and a balancer in ip, a redirect in ip6: every kind of chain, rule and map.
    fn both_families() -> Ruleset {
        Ruleset {
            guards: vec![],
            redirects: vec![
                Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 },
                Redirect { vip: sa("[fd00:200::200]:6443"), to_port: 6444 },
            ],
            balancers: vec![Balancer {
                vip: sa("10.200.0.201:6443"),
                backends: vec![sa("10.200.10.11:6444"), sa("10.200.10.12:6444")],
                spread: Spread::SourceHash,
            }],
        }
    }

    #[test]
    #[ignore = "needs root: creates a network namespace and programs nf_tables there"]
    fn live_verify_tells_the_programmed_table_from_drift() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let ns = Netns::new();
        let rules = both_families();
        assert!(!ns.verify(&rules), "nothing programmed yet");

        ns.apply(&rules).unwrap();
        assert!(ns.verify(&rules), "just programmed");
        let listing = ns.list("ip").unwrap();
        assert!(listing.contains("comment \"cplb "), "the tags show as comments: {listing}");
        let mut other = rules.clone();
        other.balancers[0].backends.pop();
        assert!(!ns.verify(&other), "another backend list is not what is programmed");
        other = rules.clone();
        other.redirects.reverse();
        assert!(ns.verify(&other), "the order of families in the list does not matter");

        // The ip table deleted.
        ns.nft(&["delete", "table", "ip", "cplb"]);
        assert!(!ns.verify(&rules), "ip table deleted");
        ns.apply(&rules).unwrap();
        assert!(ns.verify(&rules), "reapplied after the table went");

        // One rule deleted, by handle.
        let handle = ns.handle("ip", "prerouting", "redirect to :6444");
        ns.nft(&["delete", "rule", "ip", "cplb", "prerouting", "handle", &handle]);
        assert!(!ns.verify(&rules), "a redirect deleted");
        ns.apply(&rules).unwrap();
        assert!(ns.verify(&rules), "reapplied after a rule went");

        // A chain flushed.
        ns.nft(&["flush", "chain", "ip", "cplb", "postrouting"]);
        assert!(!ns.verify(&rules), "postrouting flushed");
        ns.apply(&rules).unwrap();
        assert!(ns.verify(&rules));

        // A rule replaced by another that does something else (its comment goes with it).
        let handle = ns.handle("ip", "prerouting", "redirect to :6444");
        ns.nft(&[
            "replace",
            "rule",
            "ip",
            "cplb",
            "prerouting",
            "handle",
            &handle,
            "ip",
            "daddr",
            "10.200.0.200",
            "tcp",
            "dport",
            "6443",
            "redirect",
            "to",
            ":7000",
        ]);
        assert!(!ns.verify(&rules), "a redirect replaced");
        ns.apply(&rules).unwrap();

        // Something added: a rule, a chain; the table set dormant; the ip6 table deleted.
        for (what, args) in [
            ("a foreign rule", &["add", "rule", "ip", "cplb", "prerouting", "counter"][..]),
            ("a foreign chain", &["add", "chain", "ip", "cplb", "extra"][..]),
            ("a dormant table", &["add", "table", "ip", "cplb", "{", "flags", "dormant;", "}"][..]),
            ("ip6 table deleted", &["delete", "table", "ip6", "cplb"][..]),
        ] {
            assert!(ns.verify(&rules), "before {what}");
            ns.nft(args);
            assert!(!ns.verify(&rules), "{what}");
            ns.apply(&rules).unwrap();
            assert!(ns.verify(&rules), "reapplied after {what}");
        }
    }

    #[test]
    #[ignore = "needs root: creates a network namespace and programs nf_tables there"]
    fn live_verify_of_nothing_wants_no_table() {
        assert!(is_root(), "needs root (creates network namespaces)");
        let ns = Netns::new();
        let nothing = Ruleset::default();
        assert!(ns.verify(&nothing), "no tables: as apply of nothing leaves it");
        ns.apply(&both_families()).unwrap();
        assert!(!ns.verify(&nothing), "tables where none should be");
        ns.apply(&nothing).unwrap();
        assert!(ns.verify(&nothing));
        // apply deletes even an empty table, so an empty one is not what it leaves.
        ns.nft(&["add", "table", "ip6", "cplb"]);
        assert!(!ns.verify(&nothing), "an empty table left by someone else");
        // A balancer without backends installs nothing: no table either.
        let idle = Ruleset {
            guards: vec![],
            redirects: vec![],
            balancers: vec![Balancer {
                vip: sa("10.200.0.201:6443"),
                backends: vec![],
                spread: Spread::RoundRobin,
            }],
        };
        ns.apply(&idle).unwrap();
        assert!(ns.verify(&idle) && ns.verify(&nothing));
    }
}

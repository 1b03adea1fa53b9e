//! VRRP: the wire codec (RFC 3768 v2, RFC 9568 v3) and the virtual router state machine.
//!
//! [`decode_packet`] takes a whole captured IP packet; [`decode_received`] takes the header
//! fields and payload a raw socket delivers. Both apply every receive rule and return a
//! [`Received`] or the first [`DecodeError`] broken. [`encode_packet`] and
//! [`Advertisement::encode`] build what a router sends.
//!
//! [`Router`] runs every instance of a node: see its docs for the driving loop.

mod advertisement;
mod checksum;
mod config;
mod drop_reason;
mod error;
mod instance;
mod ip;
mod output;
mod router;
mod rules;
mod stats;
mod timers;
mod tracker;

pub use advertisement::{
    Advertisement, AuthPass, Authentication, MAX_V3_INTERVAL_CS, Priority, Version,
    VirtualAddresses, Vrid,
};
pub use checksum::{ChecksumForm, ChecksumPolicy, V3Ipv4Checksum};
pub use config::{
    AnnounceConfig, ConfigError, IfIndex, InstanceConfig, Track, TrackerId, VirtualIp,
};
pub use drop_reason::DropReason;
pub use error::{DecodeError, EncodeError};
pub use instance::MAX_ADOPTED_INTERVAL_CS;
pub use ip::{
    GROUP_V4, GROUP_V6, IpHeader, IpParams, PROTOCOL, Received, TTL, check_ip_rules, decode_packet,
    decode_received, encode_packet, group_for, parse_ip, wrap_message,
};
pub use output::{Cause, Command, Event, InstanceId, State, Transmit};
pub use router::{Incoming, Router};
pub use rules::ReceiveRules;
pub use stats::Stats;
pub use timers::{master_down_interval, skew_time};
pub use tracker::TrackerConfig;

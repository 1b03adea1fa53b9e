//! VRRP: the wire codec (RFC 3768 v2, RFC 9568 v3) and, in later modules, the virtual router.
//!
//! [`decode_packet`] takes a whole captured IP packet; [`decode_received`] takes the header
//! fields and payload a raw socket delivers. Both apply every receive rule and return a
//! [`Received`] or the first [`DecodeError`] broken. [`encode_packet`] and
//! [`Advertisement::encode`] build what a router sends.

mod advertisement;
mod checksum;
mod error;
mod ip;
mod rules;

pub use advertisement::{
    Advertisement, AuthPass, Authentication, MAX_V3_INTERVAL_CS, Priority, Version,
    VirtualAddresses, Vrid,
};
pub use checksum::{ChecksumForm, ChecksumPolicy, V3Ipv4Checksum};
pub use error::{DecodeError, EncodeError};
pub use ip::{
    GROUP_V4, GROUP_V6, IpHeader, IpParams, PROTOCOL, Received, TTL, check_ip_rules, decode_packet,
    decode_received, encode_packet, group_for, parse_ip,
};
pub use rules::ReceiveRules;

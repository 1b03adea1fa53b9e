//! `cplb packet`: VRRP packets decoded with every receive rule, and encoded.

use std::io::Read as _;
use std::net::IpAddr;

use clap::{Args, Subcommand, ValueEnum};
use cplb_core::vrrp::{ChecksumPolicy, ReceiveRules, V3Ipv4Checksum};
use cplb_scenarios::packet::{self, DecodeOptions, EncodeOptions, Framing};
#[derive(Debug, Subcommand)]
pub(crate) enum PacketCommand {
    /// Decode a VRRP packet given as hex and print it as one JSON object.
    Decode(DecodeArgs),
    /// Encode a VRRP advertisement and print the packet as hex.
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The packet as hex (white space, `0x` and tcpdump offsets ignored), or `-` for stdin.
    hex: String,
    /// HEX is the VRRP message alone, without an IP header.
    #[arg(long, conflicts_with = "ethernet")]
    payload: bool,
    /// HEX is an Ethernet frame (by default an Ethernet frame is recognised when the bytes
    /// are not an IP packet).
    #[arg(long)]
    ethernet: bool,
    /// With --payload: the IP source address, for the pseudo-header checksum forms.
    #[arg(long, requires = "payload")]
    src: Option<IpAddr>,
    /// With --payload: the IP destination address.
    #[arg(long, requires = "payload")]
    dst: Option<IpAddr>,
    /// Accept unicast VRRP to or from this peer (repeatable, or comma separated).
    #[arg(long = "peer", value_delimiter = ',')]
    peers: Vec<IpAddr>,
    /// VRRPv3-over-IPv4 checksum forms accepted.
    #[arg(long = "checksum-form", value_enum, default_value_t = AcceptedForm::Any)]
    checksum_form: AcceptedForm,
    /// Accept IPv6 advertisements whose first address is not link-local, as keepalived
    /// sends them outside its strict mode (RFC 9568 §5.2.9 requires a link-local one).
    #[arg(long)]
    allow_global_first_ipv6: bool,
    /// With --peer: accept unicast adverts from a peer whatever their TTL / hop limit, as
    /// keepalived does (its IPv6 unicast adverts leave with hop limit 64).
    #[arg(long)]
    unicast_any_ttl: bool,
    /// Print the packet even if its checksum is wrong (checksum_ok: false).
    #[arg(long)]
    ignore_checksum: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AcceptedForm {
    /// RFC 9568 (message only) or pseudo-header.
    Any,
    /// Only RFC 9568, message only.
    Rfc9568,
    /// Only with the IPv4 pseudo-header.
    PseudoHeader,
}

#[derive(Debug, Args)]
pub(crate) struct EncodeArgs {
    /// VRRP version, 2 or 3.
    #[arg(long = "version", visible_alias = "vrrp-version", default_value_t = 3)]
    version: u8,
    /// Virtual router ID, 1..=255.
    #[arg(long)]
    vrid: u8,
    /// Priority: 255 owner, 1..=254 backup, 0 resign.
    #[arg(long, default_value_t = 100)]
    priority: u8,
    /// Advertisement interval in centiseconds (whole seconds × 100 for v2).
    #[arg(long = "advert-interval-cs", visible_alias = "interval-cs", default_value_t = 100)]
    advert_interval_cs: u16,
    /// v2 authentication: none or simple (default: simple when --auth-data is given).
    #[arg(long)]
    auth_type: Option<String>,
    /// v2 simple-text password, at most 8 bytes.
    #[arg(long, visible_alias = "auth-pass")]
    auth_data: Option<String>,
    /// A virtual address (repeatable, or comma separated); IPv6 starts with the link-local one.
    #[arg(long = "address", visible_alias = "addresses", value_delimiter = ',', required = true)]
    addresses: Vec<IpAddr>,
    /// IP source: the primary IPv4 address, or the IPv6 link-local address.
    #[arg(long)]
    src: IpAddr,
    /// IP destination (default: 224.0.0.18 or ff02::12).
    #[arg(long)]
    dst: Option<IpAddr>,
    /// TTL / hop limit.
    #[arg(long, default_value_t = 255)]
    ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    #[arg(long, default_value_t = 0xc0)]
    tos: u8,
    /// IPv4 identification.
    #[arg(long, default_value_t = 0)]
    identification: u16,
    /// VRRPv3-over-IPv4 checksum: rfc9568 (default) or pseudo-header.
    #[arg(long)]
    checksum_form: Option<String>,
    /// Print only the VRRP message, without the IP header.
    #[arg(long)]
    payload: bool,
}

pub(crate) fn decode(args: DecodeArgs) -> Result<String, String> {
    let text = if args.hex == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading stdin: {e}"))?;
        text
    } else {
        args.hex
    };
    let opts = DecodeOptions {
        framing: match (args.payload, args.ethernet) {
            (true, _) => Framing::Payload,
            (false, true) => Framing::Ethernet,
            (false, false) => Framing::Ip,
        },
        src: args.src,
        dst: args.dst,
        rules: ReceiveRules {
            unicast_peers: args.peers,
            checksum: match args.checksum_form {
                AcceptedForm::Any => ChecksumPolicy::AcceptBoth,
                AcceptedForm::Rfc9568 => ChecksumPolicy::Only(V3Ipv4Checksum::Rfc9568),
                AcceptedForm::PseudoHeader => ChecksumPolicy::Only(V3Ipv4Checksum::PseudoHeader),
            },
            allow_global_first_ipv6: args.allow_global_first_ipv6,
            unicast_any_ttl: args.unicast_any_ttl,
        },
        ignore_checksum: args.ignore_checksum,
    };
    let report = packet::decode(&text, &opts).map_err(|e| e.to_string())?;
    serde_json::to_string(&report).map_err(|e| format!("writing JSON: {e}"))
}

pub(crate) fn encode(args: EncodeArgs) -> Result<String, String> {
    let opts = EncodeOptions {
        version: args.version,
        vrid: args.vrid,
        priority: args.priority,
        advert_interval_cs: args.advert_interval_cs,
        auth_type: args.auth_type,
        auth_data: args.auth_data,
        addresses: args.addresses,
        src: args.src,
        dst: args.dst,
        ttl: args.ttl,
        tos: args.tos,
        identification: args.identification,
        checksum_form: args.checksum_form,
        payload: args.payload,
    };
    packet::encode(&opts).map_err(|e| e.to_string())
}

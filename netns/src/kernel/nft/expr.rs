//! The nf_tables expressions cplbd uses that `netlink-packet-netfilter` 0.4 has no type for:
//! `ct`, `nat`, `numgen`, `hash`, `redir` and `masq` (it types `bitwise`, `cmp`, `immediate`,
//! `lookup`, `meta` and `payload`, which [`super::encode`] takes from it).
//!
//! Each is an attribute enum in the crate's style, a variant per `NFTA_*` attribute with its
//! typed value and an [`Nla`] implementation, so that it could move into the crate as it is
//! (where it would gain the attributes cplbd does not send, an `Other(DefaultNla)` variant
//! and a `Parseable` implementation; cplbd never parses them: [`super::read`] compares tags,
//! not expressions). [`expression`] makes one a rule's list element through the crate's
//! generic [`Expressions::Other`]. Every number is from `linux/netfilter/nf_tables.h` unless
//! said otherwise.

use netlink_packet_core::{DefaultNla, NLA_F_NESTED, Nla};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ExpressionAttribute, Expressions, ListAttribute, Register,
};

/// An expression's attribute type, named as nf_tables names the expression.
pub(super) trait NamedExpression: Nla {
    /// `NFTA_EXPR_NAME`: the kernel module's name of the expression.
    const NAME: &'static str;
}

/// Expression `E` with `attributes`, as an element of a rule's `NFTA_RULE_EXPRESSIONS`:
/// `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA { attributes } }`, the bytes the crate
/// writes for the expressions it types.
pub(super) fn expression<E: NamedExpression>(
    attributes: &[E],
) -> ListAttribute<ExpressionAttribute> {
    let attributes = attributes
        .iter()
        .map(|attribute| {
            let mut value = vec![0; attribute.value_len()];
            attribute.emit_value(&mut value);
            let nested = if attribute.is_nested() { NLA_F_NESTED } else { 0 };
            DefaultNla::new(attribute.kind() | nested, value)
        })
        .collect();
    Expressions::Other { expression_type: E::NAME.to_owned(), attributes }.into()
}

/// Writes a u32 in network byte order, as nf_tables reads its u32 attributes, into a value
/// buffer sized by [`Nla::value_len`].
fn put_be32(buffer: &mut [u8], value: u32) {
    if let Some(slot) = buffer.get_mut(..4) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// `ct`: loads a property of the packet's connection into a register (`NFTA_CT_DREG`,
/// `NFTA_CT_KEY`, `NFTA_CT_DIRECTION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ct {
    /// `NFTA_CT_DREG`.
    DestinationRegister(Register),
    /// `NFTA_CT_KEY`: what to load.
    Key(CtKey),
    /// `NFTA_CT_DIRECTION` (a u8): which direction's tuple a per-direction key reads.
    Direction(CtDirection),
}

const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;

impl NamedExpression for Ct {
    const NAME: &'static str = "ct";
}

impl Nla for Ct {
    fn value_len(&self) -> usize {
        match self {
            Self::DestinationRegister(_) | Self::Key(_) => 4,
            Self::Direction(_) => 1,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::DestinationRegister(_) => NFTA_CT_DREG,
            Self::Key(_) => NFTA_CT_KEY,
            Self::Direction(_) => NFTA_CT_DIRECTION,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::DestinationRegister(register) => put_be32(buffer, (*register).into()),
            Self::Key(key) => put_be32(buffer, *key as u32),
            Self::Direction(direction) => {
                if let Some(byte) = buffer.first_mut() {
                    *byte = *direction as u8;
                }
            }
        }
    }
}

/// `enum nft_ct_keys`: the connection properties cplbd reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum CtKey {
    /// `NFT_CT_STATUS`: the `IPS_*` status bits, host byte order.
    Status = 2,
    /// `NFT_CT_PROTO_DST`: one direction's destination port.
    ProtoDst = 12,
    /// `NFT_CT_DST_IP`: one direction's IPv4 destination.
    DstIp = 20,
    /// `NFT_CT_DST_IP6`: one direction's IPv6 destination.
    DstIp6 = 22,
}

/// `enum ip_conntrack_dir` (linux/netfilter/nf_conntrack_tuple_common.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum CtDirection {
    /// `IP_CT_DIR_ORIGINAL`: as the client sent it, before any NAT.
    Original = 0,
}

/// `nat`: source or destination NAT to the address and port held in registers
/// (`NFTA_NAT_TYPE`, `NFTA_NAT_FAMILY`, `NFTA_NAT_REG_ADDR_MIN`, `NFTA_NAT_REG_PROTO_MIN`;
/// the maxima default to the minima).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Nat {
    /// `NFTA_NAT_TYPE`.
    Type(NatType),
    /// `NFTA_NAT_FAMILY`: the family of the address (an `NFPROTO_*`, as a u32).
    Family(NetfilterProtoFamily),
    /// `NFTA_NAT_REG_ADDR_MIN`: the register holding the new address.
    RegAddrMin(Register),
    /// `NFTA_NAT_REG_PROTO_MIN`: the register holding the new port (big endian).
    RegProtoMin(Register),
}

const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;

/// `enum nft_nat_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum NatType {
    /// `NFT_NAT_DNAT`.
    Dnat = 1,
}

impl NamedExpression for Nat {
    const NAME: &'static str = "nat";
}

impl Nla for Nat {
    fn value_len(&self) -> usize {
        4
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Type(_) => NFTA_NAT_TYPE,
            Self::Family(_) => NFTA_NAT_FAMILY,
            Self::RegAddrMin(_) => NFTA_NAT_REG_ADDR_MIN,
            Self::RegProtoMin(_) => NFTA_NAT_REG_PROTO_MIN,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        let value = match self {
            Self::Type(kind) => *kind as u32,
            Self::Family(family) => u32::from(u8::from(*family)),
            Self::RegAddrMin(register) | Self::RegProtoMin(register) => (*register).into(),
        };
        put_be32(buffer, value);
    }
}

/// `numgen`: a number below a modulus into a register (`NFTA_NG_DREG`, `NFTA_NG_MODULUS`,
/// `NFTA_NG_TYPE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Numgen {
    /// `NFTA_NG_DREG`.
    DestinationRegister(Register),
    /// `NFTA_NG_MODULUS`: the numbers are `0..modulus`.
    Modulus(u32),
    /// `NFTA_NG_TYPE`.
    Type(NumgenType),
}

const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;

/// `enum nft_ng_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum NumgenType {
    /// `NFT_NG_INCREMENTAL`: a counter, so the numbers take turns.
    Incremental = 0,
}

impl NamedExpression for Numgen {
    const NAME: &'static str = "numgen";
}

impl Nla for Numgen {
    fn value_len(&self) -> usize {
        4
    }

    fn kind(&self) -> u16 {
        match self {
            Self::DestinationRegister(_) => NFTA_NG_DREG,
            Self::Modulus(_) => NFTA_NG_MODULUS,
            Self::Type(_) => NFTA_NG_TYPE,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        let value = match self {
            Self::DestinationRegister(register) => (*register).into(),
            Self::Modulus(modulus) => *modulus,
            Self::Type(kind) => *kind as u32,
        };
        put_be32(buffer, value);
    }
}

/// `hash`: a hash of register bytes, below a modulus, into a register (`NFTA_HASH_SREG`,
/// `NFTA_HASH_DREG`, `NFTA_HASH_LEN`, `NFTA_HASH_MODULUS`, `NFTA_HASH_SEED`,
/// `NFTA_HASH_TYPE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hash {
    /// `NFTA_HASH_SREG`: where the hashed bytes are.
    SourceRegister(Register),
    /// `NFTA_HASH_DREG`.
    DestinationRegister(Register),
    /// `NFTA_HASH_LEN`: how many bytes are hashed.
    Length(u32),
    /// `NFTA_HASH_MODULUS`: the results are `0..modulus`.
    Modulus(u32),
    /// `NFTA_HASH_SEED`: without it the kernel picks a random one per rule.
    Seed(u32),
    /// `NFTA_HASH_TYPE`.
    Type(HashType),
}

const NFTA_HASH_SREG: u16 = 1;
const NFTA_HASH_DREG: u16 = 2;
const NFTA_HASH_LEN: u16 = 3;
const NFTA_HASH_MODULUS: u16 = 4;
const NFTA_HASH_SEED: u16 = 5;
const NFTA_HASH_TYPE: u16 = 7;

/// `enum nft_hash_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum HashType {
    /// `NFT_HASH_JENKINS`: nft's `jhash`.
    Jenkins = 0,
}

impl NamedExpression for Hash {
    const NAME: &'static str = "hash";
}

impl Nla for Hash {
    fn value_len(&self) -> usize {
        4
    }

    fn kind(&self) -> u16 {
        match self {
            Self::SourceRegister(_) => NFTA_HASH_SREG,
            Self::DestinationRegister(_) => NFTA_HASH_DREG,
            Self::Length(_) => NFTA_HASH_LEN,
            Self::Modulus(_) => NFTA_HASH_MODULUS,
            Self::Seed(_) => NFTA_HASH_SEED,
            Self::Type(_) => NFTA_HASH_TYPE,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        let value = match self {
            Self::SourceRegister(register) | Self::DestinationRegister(register) => {
                (*register).into()
            }
            Self::Length(value) | Self::Modulus(value) | Self::Seed(value) => *value,
            Self::Type(kind) => *kind as u32,
        };
        put_be32(buffer, value);
    }
}

/// `redir`: redirects to the local machine, to the port held in a register
/// (`NFTA_REDIR_REG_PROTO_MIN`; the maximum defaults to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Redir {
    /// `NFTA_REDIR_REG_PROTO_MIN`: the register holding the new port (big endian).
    RegProtoMin(Register),
}

const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;

impl NamedExpression for Redir {
    const NAME: &'static str = "redir";
}

impl Nla for Redir {
    fn value_len(&self) -> usize {
        4
    }

    fn kind(&self) -> u16 {
        match self {
            Self::RegProtoMin(_) => NFTA_REDIR_REG_PROTO_MIN,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::RegProtoMin(register) => put_be32(buffer, (*register).into()),
        }
    }
}

/// `masq`: source NAT to the address of the outgoing interface. cplbd sends none of its
/// optional attributes (`NFTA_MASQ_FLAGS`, `NFTA_MASQ_REG_PROTO_MIN`,
/// `NFTA_MASQ_REG_PROTO_MAX`), so this has no variant: `expression::<Masq>(&[])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Masq {}

impl NamedExpression for Masq {
    const NAME: &'static str = "masq";
}

impl Nla for Masq {
    fn value_len(&self) -> usize {
        match *self {}
    }

    fn kind(&self) -> u16 {
        match *self {}
    }

    fn emit_value(&self, _buffer: &mut [u8]) {
        match *self {}
    }
}

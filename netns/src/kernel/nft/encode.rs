//! A [`Ruleset`] as the messages of one nf_tables transaction per family, each rule tagged,
//! and what the table holds once they are committed (for [`super::Nft::verify`]).
//!
//! The messages and most expressions are `netlink-packet-netfilter`'s types; the numbers
//! that are cplbd's choices or that the crate leaves untyped (hook priorities, payload bases
//! and offsets, nft's data type ids and userdata hints) are named here after their
//! kernel, libnftnl or nftables names.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, HookNumber, Immediate, InetHookNumber, ListAttribute, Lookup, Meta, MetaKey,
    NfTablesMessage, Operator, Payload, Register, RuleAttribute, RuleMessage, SetAttribute,
    SetElementAttribute, SetElementList, SetElementMessage, SetFlags, SetMessage, TableAttribute,
    TableMessage, Verdict, VerdictAttribute,
};

use super::batch::{Batch, to_bytes};
use super::expr::{
    Ct, CtDirection, CtKey, Hash, HashType, Masq, Nat, NatType, Numgen, NumgenType, Redir,
    expression,
};
use super::read::{Chain, Contents, Tag};
use super::{Balancer, Family, Guard, NftError, Redirect, Ruleset, Spread};

/// `NF_IP_PRI_NAT_DST` (linux/netfilter_ipv4.h; nft's `dstnat`, the same for IPv6).
const NF_IP_PRI_NAT_DST: i32 = -100;
/// `NF_IP_PRI_NAT_SRC` (nft's `srcnat`, the same for IPv6).
const NF_IP_PRI_NAT_SRC: i32 = 100;
/// `NF_IP_PRI_MANGLE` (nft's `mangle`, the same for IPv6): before the NAT chains, long
/// before IPVS reads the mark in LOCAL_IN.
const NF_IP_PRI_MANGLE: i32 = -150;
/// `NF_ACCEPT` (linux/netfilter.h): the policy of a base chain created without one.
const NF_ACCEPT: u32 = 1;

/// `NFT_PAYLOAD_LL_HEADER`: offsets count from the link-layer header (Ethernet's source
/// address is at 6).
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
/// `NFT_PAYLOAD_NETWORK_HEADER`: offsets count from the IP header.
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
/// `NFT_PAYLOAD_TRANSPORT_HEADER`: offsets count from the TCP header.
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;

/// `ARPHRD_ETHER` (linux/if_arp.h): the link-layer header is Ethernet's.
const ARPHRD_ETHER: u16 = 1;
/// `IPPROTO_TCP` (netinet/in.h).
const IPPROTO_TCP: u8 = 6;
/// `IPS_DST_NAT` (linux/netfilter/nf_conntrack_common.h): the connection's destination was
/// NATed.
const IPS_DST_NAT: u32 = 1 << 5;

/// A fixed seed, so that every node and every re-apply sends a given client to the same
/// backend (the kernel would pick a random one per rule otherwise). The bytes spell "cplb".
pub(super) const HASH_SEED: u32 = 0x6370_6c62;

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

/// The expressions of one rule, in order.
type Exprs = Vec<ListAttribute<ExpressionAttribute>>;

/// The register every expression here works in: the first 16-byte data register.
const REG: Register = Register::Reg1;

impl Family {
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

    fn ct_dst_key(self) -> CtKey {
        match self {
            Self::Ip => CtKey::DstIp,
            Self::Ip6 => CtKey::DstIp6,
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

    /// The 32-bit register the backend's port lands in: right after its address, which
    /// fills the 32-bit registers of [`REG`] from `NFT_REG32_00` on (a map's data, address
    /// then port each padded to 4 bytes, is spread over consecutive 32-bit registers).
    fn port_register(self) -> Register {
        match self {
            Self::Ip => Register::Reg32_01,
            Self::Ip6 => Register::Reg32_04,
        }
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
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

/// The whole transaction for `family`: see [`super::Nft::apply`]. The batch also says what
/// the table holds once committed, for [`super::Nft::verify`].
pub(super) fn encode(
    name: &str,
    family: Family,
    rules: &Ruleset,
    first_seq: u32,
) -> Result<Batch, NftError> {
    let wanted = wanted(family, rules)?;
    let table = format!("{} {name}", family.name());
    let nfproto = family.nfproto();
    let mut batch = Batch::new(first_seq, format!("commit ({table})"));
    let table_only = || TableMessage { attributes: vec![TableAttribute::Name(name.to_owned())] };
    // Adding first makes the delete succeed when there is no table; the delete then drops
    // whatever an earlier cplbd left, chains, rules and maps alike.
    batch.message(NfTablesMessage::NewTable(table_only()), NLM_F_CREATE, nfproto, &table)?;
    batch.message(NfTablesMessage::DeleteTable(table_only()), 0, nfproto, &table)?;
    if wanted.is_empty() {
        return Ok(batch.finish());
    }
    batch.message(NfTablesMessage::NewTable(table_only()), NLM_F_CREATE, nfproto, &table)?;

    let Wanted { redirects, balancers, guards } = wanted;
    let mut table = TableWriter { batch, contents: Contents::default(), name, table, family };
    if !redirects.is_empty() || !balancers.is_empty() {
        table.chain(PREROUTING, NAT, InetHookNumber::PreRouting, NF_IP_PRI_NAT_DST)?;
    }
    if !balancers.is_empty() {
        table.chain(POSTROUTING, NAT, InetHookNumber::PostRouting, NF_IP_PRI_NAT_SRC)?;
    }
    if !guards.is_empty() {
        table.chain(LOOP_GUARD, FILTER, InetHookNumber::PreRouting, NF_IP_PRI_MANGLE)?;
    }
    for g in guards {
        for mac in &g.macs {
            let what = format!("leave {} from {} unmarked", g.vip, Mac(*mac));
            table.rule(LOOP_GUARD, &what, &[], pass_exprs(g.vip, mac))?;
        }
        let what = format!("mark {} with {}", g.vip, g.fwmark);
        table.rule(LOOP_GUARD, &what, &[], mark_exprs(g))?;
    }
    for r in redirects {
        let what = format!("redirect {} -> :{}", r.vip, r.to_port);
        table.rule(PREROUTING, &what, &[], redirect_exprs(r))?;
    }
    for (index, b) in balancers.into_iter().enumerate() {
        let map = BackendMap {
            // nft's naming for anonymous maps; the id finds the map within this batch.
            name: format!("__map{index}"),
            id: u32::try_from(index + 1).unwrap_or(u32::MAX),
            family,
        };
        let held = map.encode(&mut table.batch, name, b)?;
        table.contents.sets.insert((map.name.clone(), BackendMap::flags().bits()));
        let what = format!("balance {} over {} backends, {:?}", b.vip, b.backends.len(), b.spread);
        table.rule(PREROUTING, &what, &held, balance_exprs(b, &map))?;
        let what = format!("masquerade what was balanced from {}", b.vip);
        table.rule(POSTROUTING, &what, &[], masquerade_exprs(b.vip))?;
    }
    let TableWriter { mut batch, contents, .. } = table;
    batch.contents = Some(contents);
    Ok(batch.finish())
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
    fn chain(
        &mut self,
        chain: &str,
        kind: &str,
        hook: InetHookNumber,
        priority: i32,
    ) -> Result<(), NftError> {
        let what = format!("{} {chain}", self.table);
        let attributes = vec![
            ChainAttribute::Table(self.name.to_owned()),
            ChainAttribute::Name(chain.to_owned()),
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Inet(hook)),
                Hook::Priority(priority.cast_unsigned()),
            ]),
            ChainAttribute::Type(kind.to_owned()),
        ];
        let message = NfTablesMessage::NewChain(ChainMessage { attributes });
        self.batch.message(message, NLM_F_CREATE, self.family.nfproto(), &what)?;
        self.contents.chains.insert(Chain {
            name: chain.to_owned(),
            hook: Some((hook.into(), priority)),
            kind: Some(kind.to_owned()),
            policy: Some(NF_ACCEPT),
        });
        Ok(())
    }

    /// A rule appended to `chain`, tagged with the hash of its expressions and of `held`
    /// (what the map it looks up holds, which its expressions only name).
    fn rule(&mut self, chain: &str, what: &str, held: &[u8], exprs: Exprs) -> Result<(), NftError> {
        let too_large = || NftError::TooLarge { what: format!("NEWRULE ({what})") };
        let tag = rule_tag(self.family, chain, &to_bytes(&exprs).ok_or_else(too_large)?, held);
        let attributes = vec![
            RuleAttribute::Table(self.name.to_owned()),
            RuleAttribute::Chain(chain.to_owned()),
            RuleAttribute::Expressions(exprs),
            RuleAttribute::UserData(tag.clone()),
        ];
        let message = NfTablesMessage::NewRule(RuleMessage { attributes });
        let flags = NLM_F_CREATE | NLM_F_APPEND;
        self.batch.message(message, flags, self.family.nfproto(), what)?;
        self.contents.rules.entry(chain.to_owned()).or_default().push(Some(Tag(tag)));
        Ok(())
    }
}

/// A rule's tag, as its userdata: an nft comment TLV (type, length, NUL-terminated text)
/// `cplb HASH`, HASH a 64-bit FNV-1a of the family, the chain, the expression attributes and
/// `held`, each length-prefixed. Any change to what the rule does changes its bytes and so
/// its tag; the hash need not resist forgery (see the module docs), only be stable across
/// runs and builds, which std's default hasher does not promise and FNV does.
fn rule_tag(family: Family, chain: &str, exprs: &[u8], held: &[u8]) -> Vec<u8> {
    use std::hash::Hasher as _;
    let mut hasher = fnv::FnvHasher::default();
    for part in [family.name().as_bytes(), chain.as_bytes(), exprs, held] {
        hasher.write(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
        hasher.write(part);
    }
    let hash = hasher.finish();
    let text = format!("cplb {hash:016x}\0");
    let mut tag = vec![NFTNL_UDATA_RULE_COMMENT, u8::try_from(text.len()).unwrap_or(u8::MAX)];
    tag.extend_from_slice(text.as_bytes());
    tag
}

/// A MAC address in its usual notation.
struct Mac([u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// `payload load LEN bytes @ BASE + OFFSET => reg 1`.
fn load_payload(base: u32, offset: u32, len: u32) -> ListAttribute<ExpressionAttribute> {
    Expressions::Payload(vec![
        Payload::DestinationRegister(REG),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

/// `cmp OP reg 1 BYTES`.
fn cmp(op: Operator, bytes: &[u8]) -> ListAttribute<ExpressionAttribute> {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(REG),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(bytes.to_vec())),
    ])
    .into()
}

/// `meta load KEY => reg 1`.
fn load_meta(key: MetaKey) -> ListAttribute<ExpressionAttribute> {
    Expressions::Meta(vec![Meta::DestinationRegister(REG), Meta::Key(key)]).into()
}

/// `immediate reg 1 BYTES`.
fn load_immediate(bytes: &[u8]) -> ListAttribute<ExpressionAttribute> {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(REG),
        Immediate::Data(DataAttribute::Value(bytes.to_vec())),
    ])
    .into()
}

/// `ct load KEY => reg 1, dir original`.
fn ct_original(key: CtKey) -> ListAttribute<ExpressionAttribute> {
    expression(&[Ct::DestinationRegister(REG), Ct::Key(key), Ct::Direction(CtDirection::Original)])
}

/// `ip daddr VIP tcp dport PORT`.
fn match_tcp_to(vip: SocketAddr) -> Exprs {
    let family = Family::of(&vip);
    vec![
        load_payload(NFT_PAYLOAD_NETWORK_HEADER, family.daddr_offset(), family.addr_len()),
        cmp(Operator::Equal, &octets(vip.ip())),
        // The port is read from the transport header only once the protocol is known to be
        // TCP.
        load_meta(MetaKey::L4Proto),
        cmp(Operator::Equal, &[IPPROTO_TCP]),
        load_payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
        cmp(Operator::Equal, &vip.port().to_be_bytes()),
    ]
}

/// `ip daddr VIP tcp dport PORT meta iiftype ether ether saddr MAC return`.
fn pass_exprs(vip: SocketAddr, mac: &[u8; 6]) -> Exprs {
    let mut e = match_tcp_to(vip);
    e.push(load_meta(MetaKey::Iftype));
    e.push(cmp(Operator::Equal, &ARPHRD_ETHER.to_ne_bytes()));
    e.push(load_payload(NFT_PAYLOAD_LL_HEADER, 6, 6));
    e.push(cmp(Operator::Equal, mac));
    // Return: leave the chain; in a base chain, its policy (accept) decides.
    let verdict = DataAttribute::Verdict(vec![VerdictAttribute::Code(Verdict::Return)]);
    let immediate =
        vec![Immediate::DestinationRegister(Register::Verdict), Immediate::Data(verdict)];
    e.push(Expressions::Immediate(immediate).into());
    e
}

/// `ip daddr VIP tcp dport PORT meta mark set MARK`.
fn mark_exprs(g: &Guard) -> Exprs {
    let mut e = match_tcp_to(g.vip);
    // skb->mark is a host-order u32.
    e.push(load_immediate(&g.fwmark.to_ne_bytes()));
    e.push(Expressions::Meta(vec![Meta::Key(MetaKey::Mark), Meta::SourceRegister(REG)]).into());
    e
}

/// `ip daddr VIP tcp dport PORT redirect to :TO_PORT`.
fn redirect_exprs(r: &Redirect) -> Exprs {
    let mut e = match_tcp_to(r.vip);
    e.push(load_immediate(&r.to_port.to_be_bytes()));
    e.push(expression(&[Redir::RegProtoMin(REG)]));
    e
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
    fn flags() -> SetFlags {
        SetFlags::Anonymous | SetFlags::Constant | SetFlags::Map
    }

    /// Adds the map and its elements to `batch`; returns their attributes' bytes, what a
    /// balance rule's tag covers besides its expressions. The kernel dump of an element
    /// need not be looked at: a constant map bound to a rule cannot change.
    fn encode(&self, batch: &mut Batch, table: &str, b: &Balancer) -> Result<Vec<u8>, NftError> {
        let nfproto = self.family.nfproto();
        let what = format!("backends of {}", b.vip);
        let set = self.set(table);
        let elements = self.elements(table, b);
        // Only the elements can outgrow an attribute (thousands of backends).
        let held = to_bytes(&set)
            .zip(to_bytes(&elements))
            .map(|(set, elements)| [set, elements].concat())
            .ok_or_else(|| NftError::TooLarge { what: format!("NEWSETELEM ({what})") })?;
        let set = NfTablesMessage::NewSet(SetMessage { attributes: set });
        batch.message(set, NLM_F_CREATE, nfproto, &what)?;
        let elements = NfTablesMessage::NewSetElement(SetElementMessage { attributes: elements });
        batch.message(elements, NLM_F_CREATE, nfproto, &what)?;
        Ok(held)
    }

    /// `NEWSET`'s attributes.
    fn set(&self, table: &str) -> Vec<SetAttribute> {
        let mut hint = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
        hint.extend_from_slice(&NFT_BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        vec![
            SetAttribute::Table(table.to_owned()),
            SetAttribute::Name(self.name.clone()),
            SetAttribute::Flags(Self::flags()),
            SetAttribute::KeyType(NFT_TYPE_INTEGER),
            SetAttribute::KeyLen(4),
            SetAttribute::DataType(self.family.backend_type()),
            SetAttribute::DataLen(self.family.addr_len() + 4),
            SetAttribute::Id(self.id),
            SetAttribute::UserData(hint),
        ]
    }

    /// `NEWSETELEM`'s attributes.
    fn elements(&self, table: &str, b: &Balancer) -> Vec<SetElementList> {
        let elements = (0u32..)
            .zip(&b.backends)
            .map(|(index, backend)| {
                ListAttribute::Element(vec![
                    // numgen and hash leave a host-order u32 in the register.
                    SetElementAttribute::Key(DataAttribute::Value(index.to_ne_bytes().to_vec())),
                    SetElementAttribute::Data(DataAttribute::Value(backend_data(backend))),
                ])
            })
            .collect();
        vec![
            SetElementList::Table(table.to_owned()),
            SetElementList::Set(self.name.clone()),
            SetElementList::SetId(self.id),
            SetElementList::Elements(elements),
        ]
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
fn balance_exprs(b: &Balancer, map: &BackendMap) -> Exprs {
    let family = map.family;
    let n = u32::try_from(b.backends.len()).unwrap_or(u32::MAX);
    let mut e = match_tcp_to(b.vip);
    match b.spread {
        Spread::RoundRobin => e.push(expression(&[
            Numgen::DestinationRegister(REG),
            Numgen::Modulus(n),
            Numgen::Type(NumgenType::Incremental),
        ])),
        Spread::SourceHash => {
            let (offset, len) = (family.saddr_offset(), family.addr_len());
            e.push(load_payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len));
            e.push(expression(&[
                Hash::SourceRegister(REG),
                Hash::DestinationRegister(REG),
                Hash::Length(len),
                Hash::Modulus(n),
                Hash::Seed(HASH_SEED),
                Hash::Type(HashType::Jenkins),
            ]));
        }
    }
    e.push(
        Expressions::Lookup(vec![
            Lookup::Set(map.name.clone()),
            Lookup::SetId(map.id),
            Lookup::SourceRegister(REG),
            // Present, it makes the lookup a map lookup that loads the data.
            Lookup::DestinationRegister(REG),
        ])
        .into(),
    );
    e.push(expression(&[
        Nat::Type(NatType::Dnat),
        Nat::Family(family.nfproto()),
        Nat::RegAddrMin(REG),
        Nat::RegProtoMin(family.port_register()),
    ]));
    e
}

/// `meta l4proto tcp ct original ip daddr VIP ct original proto-dst PORT ct status dnat
/// masquerade`: only connections this table DNATed, whatever backend they went to.
fn masquerade_exprs(vip: SocketAddr) -> Exprs {
    vec![
        load_meta(MetaKey::L4Proto),
        cmp(Operator::Equal, &[IPPROTO_TCP]),
        ct_original(Family::of(&vip).ct_dst_key()),
        cmp(Operator::Equal, &octets(vip.ip())),
        ct_original(CtKey::ProtoDst),
        cmp(Operator::Equal, &vip.port().to_be_bytes()),
        expression(&[Ct::DestinationRegister(REG), Ct::Key(CtKey::Status)]),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(REG),
            Bitwise::DestinationRegister(REG),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(IPS_DST_NAT.to_ne_bytes().to_vec())),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ])
        .into(),
        cmp(Operator::NotEqual, &[0; 4]),
        expression::<Masq>(&[]),
    ]
}

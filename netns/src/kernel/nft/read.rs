//! Reading a table back, for [`Nft::verify`]: what it holds, as [`Contents`], between two
//! equal readings of the ruleset's generation.
//!
//! The requests and the dumped objects are `netlink-packet-netfilter`'s types. Only what
//! `verify` compares is parsed: a rule's expressions and a set's expressions are left
//! unread, which spares the work and the crate's parsers of nested expression data (they
//! trust lengths inside a value they have not checked, so a malformed dump could make them
//! panic where everything else here reports it).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NLA_TYPE_MASK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
    NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, Nla, NlaBuffer, NlasIterator, Parseable,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, ExpressionAttribute, GenAttribute, GenMessage, Hook,
    NfTablesMessage, NfTablesMessageType, RuleAttribute, RuleMessage, SetAttribute, SetMessage,
    TableAttribute, TableMessage,
};
use netlink_packet_netfilter::{NetfilterProtoFamily, NetfilterSubsystem};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::debug;

use super::batch::{REPLY_BUFFER, errno, message_name, put_message};
use super::{Family, Nft, NftError};

/// How long a reply to a request may take. The kernel answers in the sender's context, so
/// replies are normally queued before `send` returns; this only bounds a broken exchange.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a reading of the tables is retried when a commit lands in the middle of it.
const READ_ATTEMPTS: usize = 4;

/// What a table holds, as [`Nft::verify`] compares it: written down by
/// [`super::encode::encode`], read back from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Contents {
    /// `NFTA_TABLE_FLAGS` (0: none, in particular not dormant).
    pub(super) flags: u32,
    /// Every chain. Their order carries no meaning.
    pub(super) chains: BTreeSet<Chain>,
    /// Every set, with its flags (the anonymous maps of the balancers).
    pub(super) sets: BTreeSet<(String, u32)>,
    /// The rules of each chain in order, as their userdata (`None`: a rule without).
    pub(super) rules: BTreeMap<String, Vec<Option<Tag>>>,
    /// Dumped messages that did not parse: they could be anything, so they make a
    /// difference (cplbd writes none).
    pub(super) unreadable: usize,
}

impl Contents {
    /// The attributes of those of dumped `messages` that belong to table `name`, those of
    /// [`Dumped::unread`] kinds left out. A message that is not a list of attributes, or one
    /// of this table with a value that does not parse, is counted as unreadable.
    fn of_table<A: Dumped>(&mut self, messages: &[Vec<u8>], name: &str) -> Vec<Vec<A>> {
        let mut out = Vec::new();
        for message in messages {
            let Some(attrs) = parse_object::<A>(message, &A::unread()) else {
                self.unreadable += 1;
                continue;
            };
            // Of another table: chain dumps (and rule dumps of older kernels) hold every
            // table of the family.
            if !attrs.iter().flatten().any(|attr| attr.table() == Some(name)) {
                continue;
            }
            match attrs.into_iter().collect::<Option<Vec<A>>>() {
                Some(attrs) => out.push(attrs),
                None => self.unreadable += 1,
            }
        }
        out
    }
}

/// The attributes of one dumped object (its bytes past `nfgenmsg`) as the crate's `A`,
/// leaving out those of kinds in `skip`; an attribute is `None` when its value does not
/// parse. `None` when the bytes are not a list of attributes.
pub(super) fn parse_object<A>(bytes: &[u8], skip: &[u16]) -> Option<Vec<Option<A>>>
where
    A: for<'b> Parseable<NlaBuffer<&'b [u8]>>,
{
    let mut out = Vec::new();
    for nla in NlasIterator::new(bytes) {
        let nla = nla.ok()?;
        if !skip.contains(&nla.kind()) {
            out.push(A::parse(&nla).ok());
        }
    }
    Some(out)
}

/// The attribute type (`NFTA_*`) of `attr`, without the nested and byte order flags.
fn kind_of(attr: &impl Nla) -> u16 {
    attr.kind() & NLA_TYPE_MASK
}

/// The attributes of a kind of dumped object, as [`Contents::of_table`] reads them.
trait Dumped: Sized + for<'b> Parseable<NlaBuffer<&'b [u8]>> {
    /// The table the object is in, if this attribute names it.
    fn table(&self) -> Option<&str>;

    /// Attribute kinds left unread: nothing `verify` compares, and what the crate's parsers
    /// could panic on (see the module docs).
    fn unread() -> Vec<u16> {
        Vec::new()
    }
}

impl Dumped for ChainAttribute {
    fn table(&self) -> Option<&str> {
        match self {
            Self::Table(table) => Some(table),
            _ => None,
        }
    }
}

impl Dumped for SetAttribute {
    fn table(&self) -> Option<&str> {
        match self {
            Self::Table(table) => Some(table),
            _ => None,
        }
    }

    fn unread() -> Vec<u16> {
        vec![
            kind_of(&Self::Expression(ExpressionAttribute::Unspec)),
            kind_of(&Self::ListExpressions(Vec::new())),
        ]
    }
}

impl Dumped for RuleAttribute {
    fn table(&self) -> Option<&str> {
        match self {
            Self::Table(table) => Some(table),
            _ => None,
        }
    }

    fn unread() -> Vec<u16> {
        vec![kind_of(&Self::Expressions(Vec::new())), kind_of(&Self::Compat(Vec::new()))]
    }
}

/// A rule's userdata, compared byte for byte; shown as text in logs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Tag(pub(super) Vec<u8>);

impl std::fmt::Debug for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// A chain as [`Contents`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Chain {
    pub(super) name: String,
    /// Hook number and priority of a base chain.
    pub(super) hook: Option<(u32, i32)>,
    /// `NFTA_CHAIN_TYPE` (`"nat"`, `"filter"`).
    pub(super) kind: Option<String>,
    /// A base chain's policy.
    pub(super) policy: Option<u32>,
}

impl Chain {
    /// From the attributes of a `NEWCHAIN` reply; what is missing stays empty (and so
    /// differs from any chain cplbd makes).
    pub(super) fn read(attrs: &[ChainAttribute]) -> Self {
        let hook = attrs
            .iter()
            .find_map(|attr| match attr {
                ChainAttribute::Hook(hook) => Some(hook),
                _ => None,
            })
            .and_then(|hook| {
                let number = hook.iter().find_map(|h| match h {
                    Hook::Number(number) => Some(u32::from(*number)),
                    _ => None,
                })?;
                let priority = hook.iter().find_map(|h| match h {
                    Hook::Priority(priority) => Some(priority.cast_signed()),
                    _ => None,
                })?;
                Some((number, priority))
            });
        Self {
            name: attrs
                .iter()
                .find_map(|attr| match attr {
                    ChainAttribute::Name(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default(),
            hook,
            kind: attrs.iter().find_map(|attr| match attr {
                ChainAttribute::Type(kind) => Some(kind.clone()),
                _ => None,
            }),
            policy: attrs.iter().find_map(|attr| match attr {
                ChainAttribute::Policy(policy) => Some(*policy),
                _ => None,
            }),
        }
    }
}

impl Nft {
    /// What table `name` of `family` holds, `None` when there is no such table; read
    /// between two equal generations of the ruleset.
    pub(super) fn read_table(
        &mut self,
        name: &str,
        family: Family,
    ) -> Result<Option<Contents>, NftError> {
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
        let mut contents = Contents::default();
        let table = TableMessage { attributes: vec![TableAttribute::Name(name.to_owned())] };
        let table = match self.get(NfTablesMessage::GetTable(table), Some((family, name)))? {
            Got::Messages(table) => table,
            Got::NotFound => return Ok(Some(None)),
            Got::Interrupted => return Ok(None),
        };
        // NFTA_TABLE_FLAGS; a reply that does not parse could hide any, so it differs.
        contents.flags = table
            .first()
            .and_then(|m| parse_object::<TableAttribute>(m, &[]))
            .and_then(|attrs| attrs.into_iter().collect::<Option<Vec<_>>>())
            .map_or(u32::MAX, |attrs| {
                attrs
                    .iter()
                    .find_map(|attr| match attr {
                        TableAttribute::Flags(flags) => Some(flags.bits()),
                        _ => None,
                    })
                    .unwrap_or(0)
            });

        let chains = ChainMessage { attributes: vec![ChainAttribute::Table(name.to_owned())] };
        let request = NfTablesMessage::GetChain(chains);
        let Got::Messages(chains) = self.get(request, Some((family, name)))? else {
            return Ok(None);
        };
        for attrs in contents.of_table::<ChainAttribute>(&chains, name) {
            contents.chains.insert(Chain::read(&attrs));
        }

        let sets = SetMessage { attributes: vec![SetAttribute::Table(name.to_owned())] };
        let Got::Messages(sets) = self.get(NfTablesMessage::GetSet(sets), Some((family, name)))?
        else {
            return Ok(None);
        };
        for attrs in contents.of_table::<SetAttribute>(&sets, name) {
            let (mut set, mut flags) = (None, None);
            for attr in attrs {
                match attr {
                    SetAttribute::Name(name) if set.is_none() => set = Some(name),
                    SetAttribute::Flags(bits) if flags.is_none() => flags = Some(bits.bits()),
                    _ => {}
                }
            }
            contents.sets.insert((set.unwrap_or_default(), flags.unwrap_or(0)));
        }

        let rules = RuleMessage { attributes: vec![RuleAttribute::Table(name.to_owned())] };
        let Got::Messages(rules) =
            self.get(NfTablesMessage::GetRule(rules), Some((family, name)))?
        else {
            return Ok(None);
        };
        for attrs in contents.of_table::<RuleAttribute>(&rules, name) {
            let (mut chain, mut tag) = (None, None);
            for attr in attrs {
                match attr {
                    RuleAttribute::Chain(name) if chain.is_none() => chain = Some(name),
                    RuleAttribute::UserData(data) if tag.is_none() => tag = Some(Tag(data)),
                    _ => {}
                }
            }
            contents.rules.entry(chain.unwrap_or_default()).or_default().push(tag);
        }
        Ok(Some(Some(contents)))
    }

    /// The ruleset's generation id, `None` when a reply lacked it.
    fn generation(&mut self) -> Result<Option<u32>, NftError> {
        match self.get(NfTablesMessage::GetGen(GenMessage { attributes: Vec::new() }), None)? {
            Got::Messages(replies) => Ok(replies
                .iter()
                .filter_map(|m| parse_object::<GenAttribute>(m, &[]))
                .flatten()
                .flatten()
                .find_map(|attr| match attr {
                    GenAttribute::Id(id) => Some(id),
                    _ => None,
                })),
            Got::NotFound | Got::Interrupted => Ok(None),
        }
    }

    /// Sends get request `request`, about `(family, table)` if given (else to every
    /// family), and gathers the answer: the attribute bytes (past `nfgenmsg`) of each
    /// message answering it. Requests for chains, sets and rules are dumps of all of them.
    fn get(
        &mut self,
        request: NfTablesMessage,
        about: Option<(Family, &str)>,
    ) -> Result<Got, NftError> {
        let kind = request.message_type();
        let what = format!(
            "{}{}",
            message_name(kind),
            about
                .map(|(family, table)| format!(" ({} {table})", family.name()))
                .unwrap_or_default()
        );
        let dump = !matches!(kind, NfTablesMessageType::GetTable | NfTablesMessageType::GetGen);
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let mut buf = Vec::new();
        let flags = if dump { NLM_F_REQUEST | NLM_F_DUMP } else { NLM_F_REQUEST };
        let family = about.map_or(NetfilterProtoFamily::Unspec, |(family, _)| family.nfproto());
        put_message(&mut buf, seq, flags, family, 0, request);
        self.send(&buf, "sending an nf_tables request")?;

        const READING: &str = "reading nf_tables replies";
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let subsystem = u16::from(u8::from(NetfilterSubsystem::NfTables));
        let reply = (subsystem << 8) | u16::from(u8::from(reply_to(kind)));
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
}

/// The message kind of the answer to get request `kind`.
fn reply_to(kind: NfTablesMessageType) -> NfTablesMessageType {
    match kind {
        NfTablesMessageType::GetTable => NfTablesMessageType::NewTable,
        NfTablesMessageType::GetChain => NfTablesMessageType::NewChain,
        NfTablesMessageType::GetRule => NfTablesMessageType::NewRule,
        NfTablesMessageType::GetSet => NfTablesMessageType::NewSet,
        NfTablesMessageType::GetGen => NfTablesMessageType::NewGen,
        other => other,
    }
}

/// The answer to a get request.
#[derive(Debug)]
pub(super) enum Got {
    /// The attributes (past `nfgenmsg`) of each message answering it.
    Messages(Vec<Vec<u8>>),
    /// ENOENT: no such table.
    NotFound,
    /// A commit came in the middle of the dump (`NLM_F_DUMP_INTR`): it is inconsistent.
    Interrupted,
}

/// What the kernel has said so far in answer to one get request.
pub(super) struct Answer {
    pub(super) seq: u32,
    pub(super) dump: bool,
    /// The message type answering the request (`NEWRULE` for `GETRULE`).
    pub(super) reply: u16,
    /// The request, for errors.
    pub(super) what: String,
    pub(super) messages: Vec<Vec<u8>>,
    pub(super) interrupted: bool,
}

impl Answer {
    /// Takes in one datagram; the answer once it is complete.
    pub(super) fn absorb(&mut self, datagram: &[u8]) -> Result<Option<Got>, NftError> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let msg =
                NetlinkBuffer::new_checked(rest).map_err(|e| NftError::Malformed(e.to_string()))?;
            // new_checked() made sure the length covers at least a header and fits `rest`.
            let len = (msg.length() as usize).next_multiple_of(usize::from(NLMSG_ALIGNTO));
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
                    // A dump's end carries its errno (0 when it went through; the kernel
                    // may leave it out).
                    let code = DoneBuffer::new_checked(payload).map_or(0, |done| done.code());
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
        let errno = errno(code);
        if errno == nix::errno::Errno::ENOENT as i32 {
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

//! One nf_tables transaction over the socket: BATCH_BEGIN, messages that each ask for an
//! ACK, BATCH_END, sent in one datagram; then the acknowledgements, which tell whether the
//! kernel took all of it and, if not, which message it refused and why.
//!
//! The messages are `netlink-packet-netfilter`'s, serialised by `netlink-packet-core`;
//! replies are read with the latter's buffers.

use std::io;

use netlink_packet_core::{
    Emitable, ErrorBuffer, NLA_HEADER_SIZE, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ALIGNTO, NLMSG_ERROR,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, Nla,
};
use netlink_packet_netfilter::nftables::{NfTablesMessage, NfTablesMessageType};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};
use netlink_sys::SocketAddr as NetlinkAddr;
use tracing::debug;

use super::read::Contents;
use super::{Nft, NftError};

/// `NFNETLINK_V0` (linux/netfilter/nfnetlink.h): `nfgenmsg.version`.
const NFNETLINK_V0: u8 = 0;
/// Largest reply datagram read: acks are a few dozen bytes, dump parts at most 32 KiB.
pub(super) const REPLY_BUFFER: usize = 64 << 10;
/// The largest value an attribute can carry: its 16-bit length counts its header too.
const NLA_VALUE_MAX: usize = u16::MAX as usize - NLA_HEADER_SIZE;

/// One nf_tables transaction: BATCH_BEGIN, messages that each ask for an ACK, BATCH_END.
#[derive(Debug)]
pub(super) struct Batch {
    /// The messages, back to back, as sent.
    pub(super) buf: Vec<u8>,
    pub(super) next_seq: u32,
    /// BATCH_BEGIN's sequence number: a failed commit is reported against it.
    pub(super) begin_seq: u32,
    /// What a failed commit is called.
    commit: String,
    /// Sequence number and description of every message that asked for an ACK.
    pub(super) acked: Vec<(u32, String)>,
    /// What the table holds once the batch is committed; `None`: no table.
    pub(super) contents: Option<Contents>,
}

impl Batch {
    pub(super) fn new(first_seq: u32, commit: String) -> Self {
        let mut batch = Self {
            buf: Vec::new(),
            next_seq: first_seq,
            begin_seq: first_seq,
            commit,
            acked: Vec::new(),
            contents: None,
        };
        batch.delimiter(ControlMessage::BatchBegin);
        batch
    }

    /// BATCH_BEGIN or BATCH_END, whose `res_id` names the subsystem the batch is for.
    /// nfnetlink never acknowledges these, so no ACK is asked.
    fn delimiter(&mut self, message: ControlMessage) {
        let seq = self.take_seq();
        let subsystem = u16::from(u8::from(NetfilterSubsystem::NfTables));
        let family = NetfilterProtoFamily::Unspec;
        put_message(&mut self.buf, seq, NLM_F_REQUEST, family, subsystem, message);
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        seq
    }

    /// Appends nf_tables message `message` for `family`, asking for an ACK, described as
    /// `what` in errors.
    ///
    /// # Errors
    /// [`NftError::TooLarge`] when an attribute outgrows netlink's 16-bit length.
    pub(super) fn message(
        &mut self,
        message: NfTablesMessage,
        flags: u16,
        family: NetfilterProtoFamily,
        what: &str,
    ) -> Result<(), NftError> {
        let what = format!("{} ({what})", message_name(message.message_type()));
        if !message_fits(&message) {
            return Err(NftError::TooLarge { what });
        }
        let seq = self.take_seq();
        put_message(&mut self.buf, seq, NLM_F_REQUEST | NLM_F_ACK | flags, family, 0, message);
        self.acked.push((seq, what));
        Ok(())
    }

    pub(super) fn finish(mut self) -> Self {
        self.delimiter(ControlMessage::BatchEnd);
        self
    }
}

/// Appends one netlink message to `buf`: `nlmsghdr` (length and type from the payload),
/// `nfgenmsg` (`family`, version 0, `res_id`), then `inner`'s attributes.
pub(super) fn put_message(
    buf: &mut Vec<u8>,
    seq: u32,
    flags: u16,
    family: NetfilterProtoFamily,
    res_id: u16,
    inner: impl Into<NetfilterMessageInner>,
) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let payload = NetfilterMessage::new(NetfilterHeader::new(family, NFNETLINK_V0, res_id), inner);
    let mut message = NetlinkMessage::new(header, payload.into());
    message.finalize();
    let start = buf.len();
    buf.resize(start + message.buffer_len(), 0);
    if let Some(slot) = buf.get_mut(start..) {
        message.serialize(slot);
    }
}

/// Whether every attribute in `attrs` fits netlink's 16-bit attribute length. The
/// attributes nested in one are smaller than it, so the top level is all there is to check.
fn fits<A: Nla>(attrs: &[A]) -> bool {
    attrs.iter().all(|attr| attr.value_len() <= NLA_VALUE_MAX)
}

/// The bytes of `attrs` as they go in a message, `None` when one does not fit (the crate
/// would write its length truncated).
pub(super) fn to_bytes<A: Nla>(attrs: &[A]) -> Option<Vec<u8>> {
    fits(attrs).then(|| {
        let mut buf = vec![0; attrs.buffer_len()];
        attrs.emit(&mut buf);
        buf
    })
}

/// [`fits`] for the attributes of a message.
fn message_fits(message: &NfTablesMessage) -> bool {
    match message {
        NfTablesMessage::NewTable(m)
        | NfTablesMessage::GetTable(m)
        | NfTablesMessage::DeleteTable(m) => fits(&m.attributes),
        NfTablesMessage::NewChain(m)
        | NfTablesMessage::GetChain(m)
        | NfTablesMessage::DeleteChain(m) => fits(&m.attributes),
        NfTablesMessage::NewRule(m)
        | NfTablesMessage::GetRule(m)
        | NfTablesMessage::DeleteRule(m) => fits(&m.attributes),
        NfTablesMessage::NewSet(m) | NfTablesMessage::GetSet(m) | NfTablesMessage::DeleteSet(m) => {
            fits(&m.attributes)
        }
        NfTablesMessage::NewSetElement(m)
        | NfTablesMessage::GetSetElement(m)
        | NfTablesMessage::DeleteSetElement(m) => fits(&m.attributes),
        NfTablesMessage::NewGen(m) | NfTablesMessage::GetGen(m) => fits(&m.attributes),
        // Kinds cplbd never sends.
        _ => true,
    }
}

/// The kernel's name of a message kind, for errors.
pub(super) fn message_name(kind: NfTablesMessageType) -> &'static str {
    match kind {
        NfTablesMessageType::NewTable => "NEWTABLE",
        NfTablesMessageType::DeleteTable => "DELTABLE",
        NfTablesMessageType::NewChain => "NEWCHAIN",
        NfTablesMessageType::NewRule => "NEWRULE",
        NfTablesMessageType::NewSet => "NEWSET",
        NfTablesMessageType::NewSetElement => "NEWSETELEM",
        NfTablesMessageType::GetTable => "GETTABLE",
        NfTablesMessageType::GetChain => "GETCHAIN",
        NfTablesMessageType::GetRule => "GETRULE",
        NfTablesMessageType::GetSet => "GETSET",
        NfTablesMessageType::GetGen => "GETGEN",
        _ => "nf_tables message",
    }
}

/// The errno of a netlink error code: the kernel sends -errno; the magnitude is taken
/// whatever the sign.
pub(super) fn errno(code: i32) -> i32 {
    if code < 0 { code.saturating_neg() } else { code }
}

impl Nft {
    /// Sends `bytes` (one or more messages) to the kernel in one datagram.
    pub(super) fn send(&mut self, bytes: &[u8], what: &'static str) -> Result<(), NftError> {
        let sent = self
            .socket
            .send_to(bytes, &NetlinkAddr::new(0, 0), 0)
            .map_err(|error| NftError::Io { what, error })?;
        if sent != bytes.len() {
            let error = io::Error::new(io::ErrorKind::WriteZero, "short netlink write");
            return Err(NftError::Io { what, error });
        }
        Ok(())
    }

    /// Sends one batch and checks that the kernel acknowledged every message in it.
    pub(super) fn exchange(&mut self, batch: &Batch) -> Result<(), NftError> {
        self.send(&batch.buf, "sending an nf_tables batch")?;
        let mut replies = Replies::new(batch);
        let mut datagram = Vec::with_capacity(REPLY_BUFFER);
        loop {
            datagram.clear();
            match self.socket.recv(&mut datagram, 0) {
                Ok(_) => replies.absorb(&datagram)?,
                // Every reply is queued by the time `send` returns.
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

/// What the kernel has said so far about one batch.
pub(super) struct Replies<'a> {
    batch: &'a Batch,
    acked: Vec<bool>,
    error: Option<NftError>,
}

impl<'a> Replies<'a> {
    pub(super) fn new(batch: &'a Batch) -> Self {
        Self { batch, acked: vec![false; batch.acked.len()], error: None }
    }

    /// Takes in one datagram, which may hold several netlink messages.
    pub(super) fn absorb(&mut self, datagram: &[u8]) -> Result<(), NftError> {
        let mut rest = datagram;
        while !rest.is_empty() {
            let msg =
                NetlinkBuffer::new_checked(rest).map_err(|e| NftError::Malformed(e.to_string()))?;
            if msg.message_type() == NLMSG_ERROR {
                self.note(msg.sequence_number(), msg.payload())?;
            }
            // new_checked() made sure the length covers at least a header and fits `rest`.
            let len = (msg.length() as usize).next_multiple_of(usize::from(NLMSG_ALIGNTO));
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
            let error = io::Error::from_raw_os_error(errno(code.get()));
            match self.error {
                // The kernel reports in batch order: the first refusal is the cause, later
                // ones usually follow from it.
                None => self.error = Some(NftError::Kernel { what: what.clone(), error }),
                Some(_) => debug!(what = %what, %error, "further nf_tables refusal"),
            }
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<(), NftError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.acked.iter().position(|acked| !acked) {
            Some(i) => Err(NftError::NoAck { what: self.batch.acked[i].1.clone() }),
            None => Ok(()),
        }
    }
}

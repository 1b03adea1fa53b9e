//! IPVS virtual services over generic netlink: the driver that carries out the IPVS part of
//! a [`cplb_core::lb::diff`] on Linux, and reads the kernel's table back so the daemon can
//! reconcile after a restart.
//!
//! The connection is the `genetlink` crate's: it resolves the "IPVS" family id and runs
//! the socket as a task of its own on the daemon's tokio runtime, so every request here is
//! a future that waits for the kernel's answer without holding the thread (the daemon runs
//! on one thread). The layers:
//! - [`attrs`]: the attributes (`IPVS_CMD_ATTR_*`, `IPVS_SVC_ATTR_*`, `IPVS_DEST_ATTR_*`)
//!   as `netlink_packet_core` NLAs, each in the kernel's byte order;
//! - [`message`]: the family as a `netlink_packet_generic::GenlFamily`, the requests the
//!   driver sends and the decoding of the replies;
//! - [`model`]: between the core's [`ServiceSpec`] and the kernel's names;
//! - this module: the connection ([`Ipvs`]) and how one request ends (ack, errno, end of
//!   dump);
//! - [`reconcile`]: what cplbd means on top: which services are its own, the listing, the
//!   reconciling and the changes of a diff.

mod attrs;
mod message;
mod model;
mod reconcile;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod live;
#[cfg(all(test, target_endian = "little"))]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;

use cplb_core::config::LbKind;
use cplb_core::lb::ServiceKey;
use futures::StreamExt;
use genetlink::{GenetlinkError, GenetlinkHandle};
use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkMessage,
    NetlinkPayload, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::AsyncSocket;

use self::message::{IPVS_GENL_NAME, IpvsMessage, get_dests_request, get_services_request};
pub use self::model::ServiceRef;
use self::model::{KernelDest, KernelService, family};
pub use self::reconcile::Listing;

/// Errnos the driver tells apart (include/uapi/asm-generic/errno-base.h).
const ENOENT: i32 = 2;
/// No such service (the kernel's answer to a command on a service that does not exist).
const ESRCH: i32 = 3;
/// Already exists.
const EEXIST: i32 = 17;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// What can go wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS (the generic netlink family does not resolve).
    #[error("IPVS unavailable: {reason}")]
    Unavailable {
        /// Why, for the operator.
        reason: String,
    },
    /// The kernel refused a request.
    #[error("{request} failed: {message}")]
    Kernel {
        /// The request, with its service and destination.
        request: String,
        /// The positive errno.
        errno: i32,
        /// The errno's text.
        message: String,
    },
    /// A reply that does not decode.
    #[error("malformed IPVS netlink data: {what}")]
    Malformed {
        /// What was wrong.
        what: String,
    },
    /// The netlink socket could not be opened.
    #[error("IPVS netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The generic netlink connection failed a request (its task is gone, or the socket
    /// failed).
    #[error("{request}: {}", chain(.error))]
    Netlink {
        /// The request.
        request: String,
        /// What genetlink said.
        #[source]
        error: GenetlinkError,
    },
    /// The connection ended before the kernel answered a request (its socket failed).
    #[error("{request}: the generic netlink connection closed before the kernel answered")]
    Closed {
        /// The request.
        request: String,
    },
}

impl IpvsError {
    fn kernel(request: String, errno: i32) -> Self {
        let mut message = io::Error::from_raw_os_error(errno).to_string();
        // What ip_vs_ctl.c means by the errnos whose usual text misleads.
        let service_cmd = request.starts_with("NEW_SERVICE") || request.starts_with("SET_SERVICE");
        let dest_cmd = request.starts_with("SET_DEST") || request.starts_with("DEL_DEST");
        let hint = match errno {
            ESRCH => Some("no such virtual service"),
            ENOENT if service_cmd => Some("the kernel has no module for that scheduler"),
            ENOENT if dest_cmd => Some("no such real server in the service"),
            _ => None,
        };
        if let Some(hint) = hint {
            message = format!("{message}: {hint}");
        }
        Self::Kernel { request, errno, message }
    }

    /// A genetlink error for `request`, as the kind of error it is.
    fn genetlink(request: String, error: GenetlinkError) -> Self {
        match error {
            GenetlinkError::DecodeError(e) => Self::Malformed { what: format!("{request}: {e}") },
            GenetlinkError::NetlinkError(e) => match e.raw_os_error() {
                Some(errno) => Self::kernel(request, errno),
                None => Self::Netlink { request, error: GenetlinkError::NetlinkError(e) },
            },
            error => Self::Netlink { request, error },
        }
    }
}

/// An error and its sources, for one line of log.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

fn malformed(what: impl Into<String>) -> IpvsError {
    IpvsError::Malformed { what: what.into() }
}

// ---------------------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------------------

/// How a request ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome<F> {
    /// Acknowledged (or the dump finished), with the replies.
    Ok(Vec<F>),
    /// The kernel's positive errno.
    Errno(i32),
}

/// The replies to one request, up to its end: the ack, the error, the end of a dump, or the
/// one reply to a request that is neither a dump nor acknowledged.
#[derive(Debug)]
struct Collect<F> {
    /// The request asked for an ack (NLM_F_ACK): a reply does not end it.
    acked: bool,
    replies: Vec<F>,
}

impl<F> Collect<F> {
    fn new(request_flags: u16) -> Self {
        Self { acked: request_flags & NLM_F_ACK != 0, replies: Vec::new() }
    }

    /// Takes one message of the answer; the outcome once it is the last.
    fn push(&mut self, message: NetlinkMessage<GenlMessage<F>>) -> Option<Outcome<F>> {
        match message.payload {
            NetlinkPayload::InnerMessage(genl) => {
                self.replies.push(genl.payload);
                let more = message.header.flags & NLM_F_MULTIPART != 0;
                (!more && !self.acked).then(|| Outcome::Ok(core::mem::take(&mut self.replies)))
            }
            NetlinkPayload::Error(e) => Some(match e.code {
                None => Outcome::Ok(core::mem::take(&mut self.replies)),
                Some(code) => Outcome::Errno(code.get().saturating_abs()),
            }),
            // The kernel may put a dump's error in its done message.
            NetlinkPayload::Done(done) if done.code != 0 => {
                Some(Outcome::Errno(done.code.saturating_abs()))
            }
            NetlinkPayload::Done(_) => Some(Outcome::Ok(core::mem::take(&mut self.replies))),
            _ => None,
        }
    }
}

/// The kernel's IPVS table, over a generic netlink connection in the network namespace the
/// caller was in when it opened it.
#[derive(Debug)]
pub struct Ipvs {
    /// Requests go to the connection's task through it; it holds the resolved family id.
    handle: GenetlinkHandle,
    /// The connection's task, stopped with the handle.
    connection: tokio::task::AbortHandle,
    /// How many requests were sent (the tests check that some changes send none).
    requests: u64,
    /// Forwarding of the services this process created or read: IPVS keeps forwarding per
    /// destination, so a service without any does not say it.
    forwarding: BTreeMap<ServiceRef, LbKind>,
    /// The kernel service each key names (set by [`Ipvs::reconcile`], kept up by
    /// [`Ipvs::apply`]).
    names: BTreeMap<ServiceKey, ServiceRef>,
}

impl Drop for Ipvs {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Ipvs {
    /// Connects and resolves the "IPVS" generic netlink family. `IpvsError::Unavailable`
    /// when the kernel has no IPVS (the family is not registered, even after the kernel's
    /// on-demand module load). Runs on the caller's tokio runtime, which must be running.
    pub async fn open() -> Result<Self, IpvsError> {
        Self::open_on::<netlink_sys::TokioSocket>().await
    }

    /// [`Ipvs::open`] over sockets of type `S` (a test's stand-in for the kernel).
    async fn open_on<S: AsyncSocket + Send + 'static>() -> Result<Self, IpvsError> {
        let ipvs = Self::connect::<S>()?;
        match ipvs.handle.resolve_family::<IpvsMessage>().await {
            Ok(family) => {
                tracing::debug!(family = family.id, "IPVS generic netlink family resolved");
                Ok(ipvs)
            }
            Err(GenetlinkError::NetlinkError(e)) if e.raw_os_error() == Some(ENOENT) => {
                Err(IpvsError::Unavailable {
                    reason: format!(
                        "generic netlink family {IPVS_GENL_NAME} not found: the kernel has no \
                         ip_vs module loaded"
                    ),
                })
            }
            Err(e) => Err(IpvsError::genetlink(
                format!("resolving generic netlink family {IPVS_GENL_NAME}"),
                e,
            )),
        }
    }

    /// A generic netlink connection over a socket of type `S`, its task spawned on the
    /// current tokio runtime; the family is not resolved yet.
    fn connect<S: AsyncSocket + Send + 'static>() -> Result<Self, IpvsError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| io::Error::other(format!("no tokio runtime to run netlink on: {e}")))?;
        // The receiver of unsolicited messages (multicast) is dropped: the connection
        // discards them.
        let (mut connection, handle, _) = genetlink::new_connection_with_socket::<S>()?;
        // Acks and ends of dumps come through as messages, so that an answer that stops
        // without one is told from a finished one (see `Ipvs::exchange`).
        connection.set_forward_ack(true);
        connection.set_forward_done(true);
        let connection = runtime.spawn(connection).abort_handle();
        Ok(Self {
            handle,
            connection,
            requests: 0,
            forwarding: BTreeMap::new(),
            names: BTreeMap::new(),
        })
    }

    /// Sends one request of family `F` with netlink `flags` and collects its replies until
    /// its ack, error or end of dump. `request` names it for errors.
    async fn exchange<F>(
        &mut self,
        payload: F,
        flags: u16,
        request: impl Fn() -> String,
    ) -> Result<Outcome<F>, IpvsError>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        let mut message = NetlinkMessage::from(GenlMessage::from_payload(payload));
        message.header.flags = flags;
        self.requests += 1;
        let mut answer =
            self.handle.request(message).await.map_err(|e| IpvsError::genetlink(request(), e))?;
        let mut collect = Collect::new(flags);
        while let Some(reply) = answer.next().await {
            let reply = reply.map_err(|e| malformed(format!("reply to {}: {e}", request())))?;
            if let Some(outcome) = collect.push(reply) {
                return Ok(outcome);
            }
        }
        Err(IpvsError::Closed { request: request() })
    }

    /// A command acknowledged by the kernel: Ok, or the errno.
    async fn command(
        &mut self,
        message: IpvsMessage,
        request: impl Fn() -> String,
    ) -> Result<Result<(), i32>, IpvsError> {
        match self.exchange(message, NLM_F_REQUEST | NLM_F_ACK, request).await? {
            Outcome::Ok(_) => Ok(Ok(())),
            Outcome::Errno(errno) => Ok(Err(errno)),
        }
    }

    /// A command that must succeed.
    async fn must(
        &mut self,
        message: IpvsMessage,
        request: impl Fn() -> String,
    ) -> Result<(), IpvsError> {
        let request = &request;
        self.command(message, request).await?.map_err(|errno| IpvsError::kernel(request(), errno))
    }

    /// A dump's replies.
    async fn dump(
        &mut self,
        message: IpvsMessage,
        request: impl Fn() -> String,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        let request = &request;
        match self.exchange(message, NLM_F_REQUEST | NLM_F_DUMP, request).await? {
            Outcome::Ok(replies) => Ok(replies),
            Outcome::Errno(errno) => Err(IpvsError::kernel(request(), errno)),
        }
    }

    /// Every virtual service in the kernel's table, as it reports them (fwmark and other
    /// protocols' services included).
    async fn kernel_services(&mut self) -> Result<Vec<KernelService>, IpvsError> {
        let replies = self.dump(get_services_request(), || "GET_SERVICE dump".to_owned()).await?;
        replies.iter().map(KernelService::from_reply).collect()
    }

    /// The destinations of `service`, as the kernel reports them.
    async fn kernel_dests(&mut self, service: ServiceRef) -> Result<Vec<KernelDest>, IpvsError> {
        let request = get_dests_request(service);
        let replies = self.dump(request, || format!("GET_DEST of {service}")).await?;
        let af = family(service.key.vip);
        replies.iter().map(|r| KernelDest::from_reply(r, af)).collect()
    }
}

//! A stand-in for kube-apiserver: one server, on hyper, for the lab, the namespace tests
//! and the turmoil runs of the daemon, over any [`Net`] (the host's sockets,
//! [`Os`](cplb_netns::net::Os), or a simulated network such as turmoil's).
//!
//! It answers `GET /healthz` (so health probes see it up), `/whoami` and any other path
//! with its name (so a client going through the virtual IP learns which controller
//! answered), and a watch (`?watch=true`, as client-go asks) with a stream of events that
//! lasts as long as its client stays: the long-lived connections a failover has to move.
//! Or, hung, it reads requests and never answers (a deadlocked server, which health probes
//! must time out on).
//!
//! - [`tls`]: the self-signed certificate, and client certificates checked against a CA;
//! - [`http`]: hyper's configuration and the answers, the watch stream among them;
//! - [`deadline`]: when a connection is given up, which a watch or a hang moves;
//! - [`drain`]: closing a connection without losing its answer;
//! - here: the options, the accept loop, each connection from handshake to close, and the
//!   client side ([`fetch`]).

mod deadline;
mod drain;
mod http;
mod tls;

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cplb_netns::net::Net;
use cplb_netns::probe::{HttpsProbe, ProbeError, ProbeKind, Prober};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use self::deadline::Deadline;
use self::drain::Drain;
use self::http::Exchange;

/// How often a watch sends an event.
pub const WATCH_EVENT_EVERY: Duration = Duration::from_millis(100);

/// Pause after a failed accept (such as running out of file descriptors), so that a lasting
/// failure does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How [`serve`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServerOptions {
    /// Name answered on every path but `/healthz`, e.g. the controller's name.
    pub name: String,
    /// Serve HTTPS with a self-signed certificate made at start; plain HTTP otherwise.
    pub tls: bool,
    /// If set (TLS only): require client certificates and verify them against this CA PEM, as
    /// kube-apiserver does with `--client-ca-file` and anonymous access off.
    pub client_ca: Option<PathBuf>,
    /// What it does with a request once read.
    pub behaviour: Behaviour,
    /// How often a watch sends an event ([`WATCH_EVENT_EVERY`] by default; a simulation
    /// that runs its own time slower sets it so).
    pub watch_every: Duration,
}

impl ApiServerOptions {
    /// Plain HTTP, no client certificates, every request answered.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            tls: false,
            client_ca: None,
            behaviour: Behaviour::Answer,
            watch_every: WATCH_EVENT_EVERY,
        }
    }
}

/// What the server does with a request it has read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers it (see [`serve`]).
    #[default]
    Answer,
    /// Never answers, holding the connection until the client gives up: a deadlocked API
    /// server, which accepts connections and takes requests (so a TCP check passes) but
    /// on which an HTTP health probe times out. Malformed requests still get hyper's 400.
    Hang,
}

/// The bounds on a server's connections: [`Limits::DEFAULT`] for [`serve`], smaller in the
/// tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once; past this, new ones are closed at once so that a flood
    /// cannot exhaust memory or file descriptors.
    max_connections: usize,
    /// How long a connection may take from accept to the end of its answer (TLS handshake
    /// and request included), so that a slow or silent client holds a task only that long.
    /// A watch has that long between two events taken (a client that stops reading is
    /// dropped); a hung server waits for its clients without limit.
    connection_timeout: Duration,
    /// How long a client may take to send its request head once the connection (and the
    /// TLS session) is up.
    header_timeout: Duration,
}

impl Limits {
    const DEFAULT: Self = Self {
        max_connections: 1024,
        connection_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(5),
    };
}

/// Serves on `listener`, a socket of the network `N`, until the future is dropped.
///
/// Each connection takes one HTTP/1.1 request and is closed after the answer:
/// - `GET /healthz` (with or without a query): 200 `ok`;
/// - `GET /whoami`: 200 `<name> <client IP> <IP the client reached>\n`;
/// - a `GET` of any path with `watch=true` (or `watch=1`) in its query: 200 and a chunked
///   stream of one event line (`{"type":"MODIFIED","n":N}`) every [`WATCH_EVENT_EVERY`],
///   the first at once, until the client goes away;
/// - a `GET` of any other path: 200 `<name>\n`;
/// - another method: 405 with `Allow: GET`; a malformed request: 400; a request head over
///   8 KiB: 431.
///
/// With [`Behaviour::Hang`] no request is answered. At most 1024 connections are served
/// at once (more are closed at once); a client has 5 seconds to send its request head and
/// 10 from accept to the end of the answer, except a watch's (as long as it reads) and a
/// hung server's (as long as it waits). The connections belong to this future: dropping
/// it ends them, as an API server's death does.
///
/// With `tls`, a self-signed certificate for "localhost" and the listener's IP is made at
/// start. Returns an error only at start: a bad `client_ca` file, `client_ca` without
/// `tls`, or no local address. Failures of single connections are logged at debug level.
pub async fn serve<N: Net>(listener: N::Listener, options: ApiServerOptions) -> io::Result<()> {
    serve_within::<N>(listener, options, Limits::DEFAULT).await
}

/// What every connection of one server shares.
struct Server {
    name: Arc<str>,
    behaviour: Behaviour,
    watch_every: Duration,
    tls: Option<TlsAcceptor>,
    http: hyper::server::conn::http1::Builder,
    limits: Limits,
}

/// [`serve`] within `limits`.
async fn serve_within<N: Net>(
    listener: N::Listener,
    options: ApiServerOptions,
    limits: Limits,
) -> io::Result<()> {
    let local = N::listener_addr(&listener).map_err(|error| {
        io::Error::new(error.kind(), format!("the listener's local address: {error}"))
    })?;
    let tls = tls::acceptor(local.ip(), &options)?;
    tracing::info!(
        name = %options.name,
        %local,
        tls = options.tls,
        client_certs = options.client_ca.is_some(),
        behaviour = ?options.behaviour,
        "API server stand-in serving"
    );
    let server = Arc::new(Server {
        name: options.name.into(),
        behaviour: options.behaviour,
        watch_every: options.watch_every,
        tls,
        http: http::builder(limits.header_timeout),
        limits,
    });
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = N::accept(&listener) => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= limits.max_connections {
                        tracing::warn!(%peer, "too many connections; closing this one");
                        continue;
                    }
                    connections.spawn(connection::<N>(stream, peer, Arc::clone(&server)));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished tasks so the set does not grow with every connection served.
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::warn!(%error, "connection task failed");
                }
            }
        }
    }
}

/// One connection, from handshake to close, until its [`Deadline`].
async fn connection<N: Net>(stream: N::Stream, peer: SocketAddr, server: Arc<Server>) {
    // Small writes (a watch's events) go out at once, and a client that vanished without
    // a word is noticed, where the network has such options: a watch or a hung request
    // may hold its connection long.
    N::tune(&stream);
    let deadline = Deadline::after(server.limits.connection_timeout);
    let exchange = Exchange {
        name: Arc::clone(&server.name),
        peer: peer.ip(),
        local: N::local_addr(&stream).ok().map(|local| local.ip()),
        behaviour: server.behaviour,
        watch_every: server.watch_every,
        deadline: deadline.clone(),
        patience: server.limits.connection_timeout,
    };
    let served = async {
        match &server.tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(stream) => serve_http(&server, stream, exchange).await,
                // Probes that fail on purpose (no client certificate, plain HTTP to TLS)
                // end here: that is the client's problem, not the server's, hence debug.
                Err(error) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            },
            None => serve_http(&server, stream, exchange).await,
        }
    };
    tokio::select! {
        () = served => {}
        () = deadline.passed() => tracing::debug!(%peer, "connection timed out"),
    }
}

/// The HTTP exchange on a connection, past its TLS handshake if any.
async fn serve_http<S>(server: &Server, stream: S, exchange: Exchange)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = exchange.peer;
    let service = hyper::service::service_fn(move |request| {
        let exchange = exchange.clone();
        async move { Ok::<_, std::convert::Infallible>(exchange.answer(&request).await) }
    });
    if let Err(error) =
        server.http.serve_connection(TokioIo::new(Drain::new(stream)), service).await
    {
        // A malformed request (answered 400 or 431 by hyper), a client gone mid-answer or
        // mid-watch, a request head too slow.
        tracing::debug!(%peer, %error, "HTTP connection ended");
    }
}

/// Fetches `path` from `addr` (over TLS without verifying the server when `tls`) and returns
/// the body of a 2xx answer: the lab client uses it to learn which API server answered.
pub async fn fetch(
    addr: SocketAddr,
    path: &str,
    tls: bool,
    timeout: Duration,
) -> Result<String, ProbeError> {
    fetch_timed(addr, path, tls, timeout).await.map(|(_, body)| body)
}

/// [`fetch`], and when its TCP connection was established (a failover's first answer at
/// the TCP level, before whatever data plane carries the request).
pub async fn fetch_timed(
    addr: SocketAddr,
    path: &str,
    tls: bool,
    timeout: Duration,
) -> Result<(std::time::Instant, String), ProbeError> {
    let path = path.to_owned();
    let kind = if tls {
        ProbeKind::Https(HttpsProbe { path, client_cert: None, ca: None })
    } else {
        ProbeKind::Http { path }
    };
    Prober::new(kind)?.fetch_body_timed(addr, timeout).await
}

//! Health probes of Kubernetes API servers.
//!
//! k0s checks every API server it load-balances to once a second with
//! `GET https://<ip>:<apiPort>/healthz`, presenting the admin client certificate, over a fresh
//! TCP and TLS connection each time. [`Prober`] does the same, and also offers the plain TCP
//! connect check of keepalived (`TCP_CHECK`) and a plain-HTTP check for test set-ups.
//!
//! Everything that can fail at start (reading the certificate files, building the TLS client
//! configuration) happens once in [`Prober::new`]; a probe only does network work, and all of it
//! within one deadline, so a hung server cannot stall the caller's probe loop (k0s sets no
//! per-request timeout and can stall exactly there).
//!
//! HTTP is hyper's HTTP/1.1 client (one request on a fresh connection, driven within the
//! probe's deadline, nothing spawned); TLS is rustls through tokio-rustls.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::net::{Net, Os};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Longest response head (status line and headers) accepted, hyper's read buffer; a real API
/// server's head is a few hundred bytes, and a bound keeps a misbehaving peer from growing it.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body [`Prober::fetch_body`] returns (the lab's bodies are a name and a newline).
const MAX_BODY: usize = 1024 * 1024;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// TCP connect only (keepalived's TCP_CHECK).
    Tcp,
    /// GET `path` over plain HTTP; healthy on a 2xx status.
    Http {
        /// Request path, starting with `/`, e.g. `/healthz`.
        path: String,
    },
    /// GET `path` over TLS; healthy on 2xx.
    Https(HttpsProbe),
}

/// Settings of an HTTPS probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsProbe {
    /// Request path, starting with `/`: `/healthz` for kube-apiserver.
    pub path: String,
    /// Client certificate to present; kube-apiserver needs one that maps to a user allowed to
    /// read `/healthz` when anonymous auth is off (k0s uses the admin certificate).
    pub client_cert: Option<ClientCert>,
    /// CA bundle (PEM) to verify the server with, against the IP address probed.
    ///
    /// `None`: the server certificate is not verified, like `curl -k`. API servers present
    /// certificates for their own names and addresses, and a probe goes to each one by IP,
    /// often before the caller knows which CA signed it; what a probe learns is only "this
    /// address answers /healthz with 2xx", which an impostor could fake whether or not we
    /// verified, so verification buys little for health checking. The handshake signatures are
    /// still checked, so the server must at least hold the key of the certificate it shows.
    pub ca: Option<PathBuf>,
}

/// A client certificate and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The network step of a probe that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening the TCP connection.
    Connect,
    /// The TLS handshake.
    TlsHandshake,
    /// Writing the HTTP request (no longer a step of its own: hyper writes the request as
    /// part of the exchange, so a timeout there shows as [`Step::Response`]).
    Request,
    /// Waiting for (or reading) the HTTP response.
    Response,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Worded to be followed by the peer address in `ProbeError::Timeout`.
        f.write_str(match self {
            Self::Connect => "the TCP connect to",
            Self::TlsHandshake => "the TLS handshake with",
            Self::Request => "the request to",
            Self::Response => "the wait for the response from",
        })
    }
}

/// Why a probe failed or a [`Prober`] could not be built.
///
/// Each message names the step and the peer (or the file) so that one log line tells an
/// operator what broke. Underlying errors are part of the message rather than a `source()`, so
/// that a one-line log does not lose them and a chain-printing reporter does not repeat them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// A certificate or key file could not be read.
    #[error("cannot read {what} {}: {error}", path.display())]
    ReadFile {
        /// What the file was meant to hold, e.g. "client certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A certificate or key file was read but is unusable.
    #[error("{what} {}: {problem}", path.display())]
    BadFile {
        /// What the file was meant to hold, e.g. "client key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    TlsConfig(rustls::Error),
    /// The request path cannot be put on a request line.
    #[error(
        "invalid request path {0:?}: it must start with '/' and hold no spaces or control \
         characters"
    )]
    InvalidPath(String),
    /// The TCP connection failed.
    #[error("connect {addr}: {error}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// The I/O error.
        error: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {addr}: {error}")]
    Tls {
        /// The peer.
        addr: SocketAddr,
        /// The I/O or TLS error.
        error: io::Error,
    },
    /// Writing the request failed.
    #[error("GET {path} on {addr}: sending the request: {error}")]
    Send {
        /// The request path.
        path: String,
        /// The peer.
        addr: SocketAddr,
        /// The I/O or TLS error.
        error: io::Error,
    },
    /// Reading the response failed (with TLS 1.3 this is also where a rejected client
    /// certificate shows up, since the server checks it after the client's handshake is done).
    #[error("GET {path} on {addr}: reading the response: {error}")]
    Receive {
        /// The request path.
        path: String,
        /// The peer.
        addr: SocketAddr,
        /// The I/O or TLS error.
        error: io::Error,
    },
    /// The response is not HTTP/1.x or was cut short.
    #[error("GET {path} on {addr}: {problem}")]
    BadResponse {
        /// The request path.
        path: String,
        /// The peer.
        addr: SocketAddr,
        /// What is wrong with the response.
        problem: String,
    },
    /// The server answered with a status other than 2xx.
    #[error("GET {path} on {addr}: status {status}")]
    Status {
        /// The request path.
        path: String,
        /// The peer.
        addr: SocketAddr,
        /// The HTTP status code.
        status: u16,
    },
    /// The probe did not finish within its timeout.
    #[error("timed out after {after:?} during {step} {addr}")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// The probe's whole time budget.
        after: Duration,
        /// The step that was running when time ran out.
        step: Step,
    },
}

/// Runs probes of one kind; built once (loads files, builds the rustls `ClientConfig`), then
/// cloned cheaply and shared by every probe.
#[derive(Clone)]
pub struct Prober {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Tcp,
    Http { path: Arc<str> },
    Https { path: Arc<str>, tls: TlsConnector },
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // TlsConnector has no Debug; the path and the kind are what a reader needs.
        match &self.kind {
            Kind::Tcp => f.write_str("Prober(tcp)"),
            Kind::Http { path } => write!(f, "Prober(http {path})"),
            Kind::Https { path, .. } => write!(f, "Prober(https {path})"),
        }
    }
}

impl Prober {
    /// Builds a prober: checks the path, reads the certificate files and builds the TLS client
    /// configuration. Errors name the file and what is wrong with it.
    pub fn new(kind: ProbeKind) -> Result<Self, ProbeError> {
        let kind = match kind {
            ProbeKind::Tcp => Kind::Tcp,
            ProbeKind::Http { path } => Kind::Http { path: checked_path(path)? },
            ProbeKind::Https(https) => {
                let tls = tls_connector(&https)?;
                Kind::Https { path: checked_path(https.path)?, tls }
            }
        };
        Ok(Self { kind })
    }

    /// One probe, with everything (connect, handshake, request, status line) within `timeout`.
    ///
    /// `Ok` means the TCP connect succeeded (Tcp) or the status line said 2xx (Http, Https).
    pub async fn probe(&self, addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
        self.probe_on::<Os>(addr, timeout).await
    }

    /// [`Self::probe`] over the network `N` (turmoil's, in simulation).
    pub async fn probe_on<N: Net>(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let clock = Clock { addr, after: timeout, deadline: Instant::now() + timeout };
        let tcp = connect::<N>(&clock).await?;
        match &self.kind {
            Kind::Tcp => Ok(()),
            Kind::Http { path } => get(tcp, path, &clock, false).await.map(drop),
            Kind::Https { path, tls } => {
                let tls = handshake(tls, tcp, &clock).await?;
                get(tls, path, &clock, false).await.map(drop)
            }
        }
    }

    /// GET the path and return when the TCP connection was established and the body of a
    /// 2xx answer, all within `timeout`; used by [`crate::apiserver::fetch_timed`]. A Tcp
    /// prober has no path and returns an empty body.
    pub async fn fetch_body_timed(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<(std::time::Instant, String), ProbeError> {
        let clock = Clock { addr, after: timeout, deadline: Instant::now() + timeout };
        let tcp = connect::<Os>(&clock).await?;
        let connected = std::time::Instant::now();
        let (path, body) = match &self.kind {
            Kind::Tcp => return Ok((connected, String::new())),
            Kind::Http { path } => (path, get(tcp, path, &clock, true).await?),
            Kind::Https { path, tls } => {
                let tls = handshake(tls, tcp, &clock).await?;
                (path, get(tls, path, &clock, true).await?)
            }
        };
        let body = String::from_utf8(body).map_err(|_| ProbeError::BadResponse {
            path: path.to_string(),
            addr,
            problem: "the body is not UTF-8".into(),
        })?;
        Ok((connected, body))
    }
}

/// The deadline shared by every step of one probe.
struct Clock {
    addr: SocketAddr,
    after: Duration,
    deadline: Instant,
}

impl Clock {
    /// Runs one step against the probe's deadline, so that a timeout names the step.
    async fn run<F: Future>(&self, step: Step, step_future: F) -> Result<F::Output, ProbeError> {
        tokio::time::timeout_at(self.deadline, step_future).await.map_err(|_| ProbeError::Timeout {
            addr: self.addr,
            after: self.after,
            step,
        })
    }
}

async fn connect<N: Net>(clock: &Clock) -> Result<N::Stream, ProbeError> {
    let addr = clock.addr;
    let tcp = clock
        .run(Step::Connect, N::connect(addr))
        .await?
        .map_err(|error| ProbeError::Connect { addr, error })?;
    // The request is one small write; don't let Nagle hold it back.
    N::tune(&tcp);
    Ok(tcp)
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &TlsConnector,
    tcp: S,
    clock: &Clock,
) -> Result<tokio_rustls::client::TlsStream<S>, ProbeError> {
    let addr = clock.addr;
    // The IP address is the server name: rustls verifies it against the certificate's IP
    // SANs when a CA is given, and (as RFC 6066 asks) sends no SNI for it.
    let name = ServerName::from(addr.ip());
    clock
        .run(Step::TlsHandshake, tls.connect(name, tcp))
        .await?
        .map_err(|error| ProbeError::Tls { addr, error: plain_http_hint(error) })
}

/// rustls reports a plain-HTTP answer to its ClientHello as a corrupt record of an invalid
/// content type; add the likely cause to that message.
fn plain_http_hint(error: io::Error) -> io::Error {
    let invalid_content_type =
        error.get_ref().and_then(|inner| inner.downcast_ref()).is_some_and(|inner| {
            matches!(
                inner,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            )
        });
    if invalid_content_type {
        io::Error::new(error.kind(), format!("{error} (not a TLS server? probe it over HTTP)"))
    } else {
        error
    }
}

/// Sends the GET over hyper's HTTP/1.1 client and reads the response head; with
/// `want_body`, also the body (at most [`MAX_BODY`] bytes). Returns the body (empty without
/// `want_body`) of a 2xx answer.
async fn get<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    path: &str,
    clock: &Clock,
    want_body: bool,
) -> Result<Vec<u8>, ProbeError> {
    let addr = clock.addr;
    let first = Arc::new(Mutex::new(Vec::new()));
    let io = TokioIo::new(Sniff { inner: stream, first: Arc::clone(&first) });
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(MAX_HEAD)
        .handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| ProbeError::Send { path: path.into(), addr, error: io::Error::other(e) })?;
    let mut connection = Driven { connection: Box::pin(connection), done: false };
    let request = Request::get(path)
        .header(HOST, host_header(addr))
        .header(CONNECTION, "close")
        .header(USER_AGENT, "cplbd")
        .body(Empty::new())
        .map_err(|_| ProbeError::InvalidPath(path.into()))?;
    let failed = |e: hyper::Error| http_failure(e, path, addr, &first);
    // Writing the request is one small write the socket buffer takes; what a probe waits
    // for is the answer.
    let response = clock
        .run(Step::Response, connection.run(sender.send_request(request)))
        .await?
        .map_err(failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(ProbeError::Status { path: path.into(), addr, status: status.as_u16() });
    }
    // The status is all a probe needs: a fresh connection per probe means nothing is gained
    // by reading the rest, and dropping the connection is how k0s ends too.
    if !want_body {
        return Ok(Vec::new());
    }
    let body = clock
        .run(Step::Response, connection.run(Limited::new(response.into_body(), MAX_BODY).collect()))
        .await?;
    match body {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(failed(*e)),
            Err(e) => Err(ProbeError::BadResponse {
                path: path.into(),
                addr,
                problem: if e.is::<LengthLimitError>() {
                    format!("body longer than {MAX_BODY} bytes")
                } else {
                    e.to_string()
                },
            }),
        },
    }
}

/// hyper's client connection, polled alongside the exchange it carries (nothing is
/// spawned: a probe's work ends with the probe).
struct Driven<C> {
    connection: Pin<Box<C>>,
    done: bool,
}

impl<C: Future<Output = Result<(), hyper::Error>>> Driven<C> {
    /// Runs `work` to its end while driving the connection. When the connection ends first
    /// (closed, or an error), `work` learns it from hyper and ends too.
    async fn run<T>(&mut self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = work.as_mut().poll(cx) {
                return Poll::Ready(v);
            }
            if !self.done && self.connection.as_mut().poll(cx).is_ready() {
                self.done = true;
                return work.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }
}

/// What a failed exchange was, for the error message.
fn http_failure(
    e: hyper::Error,
    path: &str,
    addr: SocketAddr,
    first: &Mutex<Vec<u8>>,
) -> ProbeError {
    let head = first.lock().map(|h| h.clone()).unwrap_or_default();
    let bad = |problem: String| ProbeError::BadResponse { path: path.into(), addr, problem };
    if looks_like_tls(&head) {
        // Say what it is rather than how the parser choked on it.
        return bad(TLS_ANSWER.into());
    }
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return bad(format!("not an HTTP/1.x response ({e}): {:?}", shown(&head)));
    }
    if e.is_incomplete_message() {
        return bad(if head.is_empty() {
            "connection closed before the status line".into()
        } else {
            format!("connection closed inside the response {:?}", shown(&head))
        });
    }
    // An I/O or TLS error (with TLS 1.3 a rejected client certificate shows up here).
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(|io| io::Error::new(io.kind(), io.to_string()));
    if let Some(io) = io.as_ref().filter(|io| io.kind() == io::ErrorKind::UnexpectedEof) {
        // A body shorter than its Content-Length (or chunking), or TLS cut without
        // close_notify before the response was complete.
        return bad(format!("connection closed inside the response: {io}"));
    }
    ProbeError::Receive {
        path: path.into(),
        addr,
        error: io.unwrap_or_else(|| io::Error::other(e)),
    }
}

/// A stream that keeps the first bytes the peer sent, so that an error can say what the
/// peer is (a TLS server answering a plain request) rather than how the parse failed.
struct Sniff<S> {
    inner: S,
    first: Arc<Mutex<Vec<u8>>>,
}

/// Bytes kept by [`Sniff`].
const SNIFFED: usize = 64;

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Ok(mut first) = this.first.lock()
            && first.len() < SNIFFED
        {
            let new = &buf.filled()[before..];
            let room = SNIFFED - first.len();
            first.extend_from_slice(&new[..new.len().min(room)]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The start of the peer's bytes, printable, for error messages.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned()
}

const TLS_ANSWER: &str = "the server answered with TLS; probe it over HTTPS";

/// Whether the peer's first bytes are a TLS record header (alert 0x15 or handshake 0x16, then
/// version 3.x): what a TLS server sends back to a plain-HTTP request.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, 3, ..])
}

/// The Host header value: `ip:port`, with an IPv6 address in brackets and without a zone
/// (a zone is local to this host and means nothing to the server).
fn host_header(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// Rejects paths that would break the request line (or smuggle headers into it).
fn checked_path(path: String) -> Result<Arc<str>, ProbeError> {
    if path.starts_with('/')
        && !path.bytes().any(|b| b == b' ' || b.is_ascii_control())
        && hyper::Uri::try_from(path.as_str()).is_ok()
    {
        Ok(path.into())
    } else {
        Err(ProbeError::InvalidPath(path))
    }
}

/// The one crypto provider used for every TLS configuration (cplbd's and the harness's), passed explicitly so
/// that nothing depends on (or fights over) a process-wide default provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_connector(https: &HttpsProbe) -> Result<TlsConnector, ProbeError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ProbeError::TlsConfig)?;
    let builder = match &https.ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs("CA bundle", ca)? {
                roots.add(cert).map_err(|error| ProbeError::BadFile {
                    what: "CA bundle",
                    path: ca.clone(),
                    problem: format!("unusable CA certificate: {error}"),
                })?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        })),
    };
    let mut config = match &https.client_cert {
        Some(client) => {
            let chain = load_certs("client certificate", &client.cert)?;
            let key = load_key("client key", &client.key)?;
            builder.with_client_auth_cert(chain, key).map_err(|error| ProbeError::BadFile {
                what: "client certificate",
                path: client.cert.clone(),
                problem: format!("cannot be used with key {}: {error}", client.key.display()),
            })?
        }
        None => builder.with_no_client_auth(),
    };
    // Say so explicitly: the request below is HTTP/1.1, and kube-apiserver also offers h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ProbeError> {
    std::fs::read(path).map_err(|error| ProbeError::ReadFile { what, path: path.into(), error })
}

fn pem_problem(what: &'static str, path: &Path, error: &pem::Error) -> ProbeError {
    ProbeError::BadFile { what, path: path.into(), problem: format!("bad PEM: {error}") }
}

/// Reads every `CERTIFICATE` block of a PEM file; at least one must be there.
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ProbeError> {
    let pem = read_file(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_problem(what, path, &error))?;
    if certs.is_empty() {
        return Err(ProbeError::BadFile {
            what,
            path: path.into(),
            problem: "holds no PEM CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn load_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, ProbeError> {
    let pem = read_file(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        pem::Error::NoItemsFound => ProbeError::BadFile {
            what,
            path: path.into(),
            problem: "holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY \
                      block)"
                .into(),
        },
        error => pem_problem(what, path, &error),
    })
}

/// Accepts any server certificate (see [`HttpsProbe::ca`] for why), but still checks the
/// handshake signature against the certificate's key.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn https(path: &str) -> HttpsProbe {
        HttpsProbe { path: path.into(), client_cert: None, ca: None }
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn tcp_probe_ok_against_a_listener() {
        let (_listener, addr) = listener().await;
        Prober::new(ProbeKind::Tcp).unwrap().probe(addr, SECOND).await.unwrap();
    }

    #[tokio::test]
    async fn tcp_probe_fails_fast_on_a_closed_port() {
        let (listener, addr) = listener().await;
        drop(listener);
        let started = std::time::Instant::now();
        let error = Prober::new(ProbeKind::Tcp).unwrap().probe(addr, SECOND).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
        assert!(matches!(error, ProbeError::Connect { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with(&format!("connect {addr}: ")), "{message}");
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }

    #[tokio::test]
    async fn http_probe_times_out_on_a_silent_server() {
        // The kernel completes the connect from the backlog; nobody ever answers.
        let (_listener, addr) = listener().await;
        let timeout = Duration::from_millis(300);
        let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
        let started = std::time::Instant::now();
        let error = prober.probe(addr, timeout).await.unwrap_err();
        let took = started.elapsed();
        assert!(took >= timeout && took < timeout + Duration::from_millis(500), "took {took:?}");
        assert!(matches!(error, ProbeError::Timeout { step: Step::Response, .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("timed out after 300ms during the wait for the response from {addr}")
        );
    }

    #[tokio::test]
    async fn https_probe_times_out_in_the_handshake_on_a_silent_server() {
        let (_listener, addr) = listener().await;
        let prober = Prober::new(ProbeKind::Https(https("/healthz"))).unwrap();
        let error = prober.probe(addr, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("timed out after 200ms during the TLS handshake with {addr}")
        );
    }

    #[tokio::test]
    async fn status_500_is_an_error_naming_the_status() {
        let (listener, addr) = listener().await;
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
        let error = prober.probe(addr, SECOND).await.unwrap_err();
        assert!(matches!(error, ProbeError::Status { status: 500, .. }), "{error:?}");
        assert_eq!(error.to_string(), format!("GET /healthz on {addr}: status 500"));
    }

    #[tokio::test]
    async fn request_is_minimal_http_1_1() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 256];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut chunk).await.unwrap();
                assert_ne!(n, 0);
                request.extend_from_slice(&chunk[..n]);
            }
            // The status line arrives in pieces; the probe must wait for all of it.
            for piece in [&b"HTTP/1."[..], b"1 2", b"04 No Content\r", b"\n\r\n"] {
                stream.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            String::from_utf8(request).unwrap()
        });
        let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
        prober.probe(addr, SECOND).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 User-Agent: cplbd\r\n\r\n"
            )
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for path in ["healthz", "/a b", "/x\r\nEvil: 1", ""] {
            let error = Prober::new(ProbeKind::Http { path: path.into() }).unwrap_err();
            assert!(matches!(error, ProbeError::InvalidPath(_)), "{path:?}: {error:?}");
        }
    }

    /// A server that answers every connection with `answer` after reading the request.
    async fn answering(answer: &'static [u8]) -> SocketAddr {
        let (listener, addr) = listener().await;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn what_is_not_http_is_named() {
        let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
        for (answer, problem) in [
            (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "not an HTTP/1.x response"),
            (b"HTTP/1.1 2x0 OK\r\n\r\n", "not an HTTP/1.x response"),
            (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x response"),
            (&[0x15, 3, 3, 0, 2, 2, 50], TLS_ANSWER),
            (b"", "connection closed before the status line"),
            (b"HTTP/1.1 200 O", "connection closed inside the response"),
        ] {
            let addr = answering(answer).await;
            let error = prober.probe(addr, SECOND).await.unwrap_err();
            assert!(matches!(error, ProbeError::BadResponse { .. }), "{answer:?}: {error:?}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("GET /healthz on {addr}: {problem}")),
                "{message}"
            );
        }
        // HTTP/1.0 and a bare status line are fine.
        Prober::new(ProbeKind::Http { path: "/healthz".into() })
            .unwrap()
            .probe(answering(b"HTTP/1.0 204 No Content\r\n\r\n").await, SECOND)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn bodies_are_read_whole_and_bounded() {
        let length = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
        let to_eof = answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end").await;
        let chunked = answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await;
        let short = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal").await;
        let prober = Prober::new(ProbeKind::Http { path: "/".into() }).unwrap();
        assert_eq!(prober.fetch_body_timed(length, SECOND).await.unwrap().1, "hello");
        assert_eq!(prober.fetch_body_timed(to_eof, SECOND).await.unwrap().1, "to the end");
        assert_eq!(prober.fetch_body_timed(chunked, SECOND).await.unwrap().1, "abc");
        let error = prober.fetch_body_timed(short, SECOND).await.unwrap_err();
        assert!(matches!(error, ProbeError::BadResponse { .. }), "{error:?}");
    }

    #[test]
    fn host_header_brackets_ipv6_and_drops_the_zone() {
        assert_eq!(host_header("10.0.0.1:6443".parse().unwrap()), "10.0.0.1:6443");
        assert_eq!(host_header("[fd00::1]:6443".parse().unwrap()), "[fd00::1]:6443");
        let scoped = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 6443, 0, 2);
        assert_eq!(host_header(scoped.into()), "[fe80::1]:6443");
    }
}

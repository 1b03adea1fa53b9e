//! A small stand-in for kube-apiserver, for the lab and the tests.
//!
//! In each controller namespace of the lab it answers `/healthz` (so health probes see it
//! up) and tells its name on any other path (so a client going through the virtual IP learns
//! which controller answered). It speaks just enough HTTP/1.1 for that: one request per
//! connection, answered and closed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use cplb_netns::probe::{self, HttpsProbe, ProbeError, ProbeKind, Prober};

/// How long one connection may take from accept to the end of the answer; a client that is
/// slower (or sends nothing) is dropped, so it holds a task only that long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request head accepted; longer gets 431.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Connections served at once; past this, new ones are closed at once so that a flood cannot
/// exhaust memory or file descriptors.
const MAX_CONNECTIONS: usize = 1024;
/// How long, and how much, to read after answering before closing (see [`exchange`]).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_DRAIN: usize = 256 * 1024;
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
    pub client_ca: Option<std::path::PathBuf>,
}

/// Serves until the future is dropped: each connection reads one HTTP/1.1 request and answers
/// `GET /healthz` with 200 "ok", any other path with 200 and body `<name>\n`, then closes.
///
/// Each connection runs in its own task, limited to 10 seconds; the tasks belong to this
/// future, so dropping it also ends the connections in flight. Malformed requests get 400,
/// other methods than GET 405. With `tls`, a self-signed certificate for "localhost" and the
/// listener's IP is made at start.
///
/// Returns an error only at start: a bad `client_ca` file, `client_ca` without `tls`, or no
/// local address. Failures of single connections are logged at debug level.
pub async fn serve(listener: TcpListener, options: ApiServerOptions) -> io::Result<()> {
    let local = listener.local_addr()?;
    let acceptor = match (options.tls, &options.client_ca) {
        (true, _) => Some(tls_acceptor(local, &options)?),
        (false, None) => None,
        (false, Some(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "client certificates (client_ca) need tls",
            ));
        }
    };
    tracing::info!(
        name = %options.name,
        %local,
        tls = options.tls,
        client_certs = options.client_ca.is_some(),
        "API server stand-in serving"
    );
    let name: Arc<str> = options.name.into();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "too many connections; closing this one");
                        continue;
                    }
                    connections.spawn(connection(stream, peer, acceptor.clone(), name.clone()));
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

fn tls_acceptor(local: SocketAddr, options: &ApiServerOptions) -> io::Result<TlsAcceptor> {
    let invalid = |error: ProbeError| io::Error::new(io::ErrorKind::InvalidData, error);
    let provider = probe::crypto_provider();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), local.ip().to_string()])
            .map_err(io::Error::other)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der()));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match &options.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in probe::load_certs("client CA", path).map_err(invalid)? {
                roots.add(ca).map_err(|error| {
                    invalid(ProbeError::BadFile {
                        what: "client CA",
                        path: path.clone(),
                        problem: format!("unusable CA certificate: {error}"),
                    })
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| {
                    invalid(ProbeError::BadFile {
                        what: "client CA",
                        path: path.clone(),
                        problem: error.to_string(),
                    })
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(vec![cert.der().clone()], key).map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One connection, from handshake to close, within [`CONNECTION_TIMEOUT`].
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    name: Arc<str>,
) {
    // `/whoami`: who answered, the client as this server sees it and the address it was
    // reached at (with direct routing: the client's own address and the VIP).
    let local = stream.local_addr().map_or_else(|_| "?".to_owned(), |a| a.ip().to_string());
    let whoami = format!("{name} {} {local}\n", peer.ip());
    let served = tokio::time::timeout(CONNECTION_TIMEOUT, async {
        match acceptor {
            Some(acceptor) => exchange(acceptor.accept(stream).await?, &name, &whoami).await,
            None => exchange(stream, &name, &whoami).await,
        }
    })
    .await;
    match served {
        Ok(Ok(())) => {}
        // Probes that fail on purpose (no client certificate, plain HTTP to TLS) end here:
        // that is the client's problem, not the server's, hence debug.
        Ok(Err(error)) => tracing::debug!(%peer, %error, "connection failed"),
        Err(_) => tracing::debug!(%peer, "connection timed out"),
    }
}

/// Reads one request, writes the answer and closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    name: &str,
    whoami: &str,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let answer = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break answer(&head[..end], name, whoami);
        }
        if !starts_like_a_request(&head) {
            // Say so now: a TLS ClientHello, for one, would otherwise wait for a blank line
            // that never comes, and its sender for an answer, until the timeout.
            break Answer::plain(400, "Bad Request", "not an HTTP/1.x request\n");
        }
        if head.len() > MAX_REQUEST_HEAD {
            break Answer::plain(
                431,
                "Request Header Fields Too Large",
                "request head too large\n",
            );
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            // The client went away (or never spoke, as a TCP check does): nothing to answer.
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    stream.write_all(&answer.into_bytes()).await?;
    // For TLS this sends close_notify, so the client sees a clean end of the body.
    stream.shutdown().await?;
    // Closing a socket with unread input makes the kernel send a reset, which can destroy the
    // answer before the client reads it (a 400 or 431 sent mid-request would be lost). So read
    // on, briefly and boundedly, until the client closes its side.
    let drain = async {
        let mut drained = 0;
        while drained < MAX_DRAIN {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    Ok(())
}

/// A response: status, reason phrase, extra header and body.
struct Answer {
    status: u16,
    reason: &'static str,
    extra: &'static str,
    body: String,
}

impl Answer {
    fn plain(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        Self { status, reason, extra: "", body: body.into() }
    }

    fn into_bytes(self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
             {}Connection: close\r\n\r\n{}",
            self.status,
            self.reason,
            self.body.len(),
            self.extra,
            self.body
        )
        .into_bytes()
    }
}

/// The answer to a request head (request line and headers, without the blank line).
fn answer(head: &[u8], name: &str, whoami: &str) -> Answer {
    let bad = || Answer::plain(400, "Bad Request", "bad request\n");
    let Ok(head) = std::str::from_utf8(head) else { return bad() };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad();
    };
    let well_formed = !method.is_empty()
        && method.bytes().all(|b| b.is_ascii_uppercase())
        && target.starts_with('/')
        && !target.bytes().any(|b| b.is_ascii_control())
        && matches!(version, "HTTP/1.0" | "HTTP/1.1")
        && lines.all(|line| line.split_once(':').is_some_and(|(name, _)| is_token(name)));
    if !well_formed {
        return bad();
    }
    if method != "GET" {
        let mut answer = Answer::plain(405, "Method Not Allowed", "only GET is served\n");
        answer.extra = "Allow: GET\r\n";
        return answer;
    }
    // kube-apiserver accepts query parameters on /healthz (e.g. `?verbose`).
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if path == "/healthz" {
        Answer::plain(200, "OK", "ok")
    } else if path == "/whoami" {
        Answer::plain(200, "OK", whoami.to_owned())
    } else {
        Answer::plain(200, "OK", format!("{name}\n"))
    }
}

/// Whether the bytes received so far can begin a request line: a method of uppercase letters,
/// followed by a space or not complete yet.
fn starts_like_a_request(head: &[u8]) -> bool {
    let method_end = head.iter().position(|&b| b == b' ').unwrap_or(head.len());
    head[..method_end].iter().all(u8::is_ascii_uppercase)
}

/// Whether `name` is a valid header name (an RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    async fn start(name: &str, tls: bool) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ApiServerOptions { name: name.into(), tls, client_ca: None };
        (addr, tokio::spawn(serve(listener, options)))
    }

    /// Sends raw bytes, then reads the whole answer.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(SECOND, stream.read_to_string(&mut answer)).await.unwrap().unwrap();
        answer
    }

    #[tokio::test]
    async fn plain_answers_healthz_and_name() {
        let (addr, _server) = start("controller-3", false).await;
        assert_eq!(fetch(addr, "/healthz", false, SECOND).await.unwrap(), "ok");
        assert_eq!(fetch(addr, "/healthz?verbose", false, SECOND).await.unwrap(), "ok");
        assert_eq!(fetch(addr, "/version", false, SECOND).await.unwrap(), "controller-3\n");
        let answer = raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
        assert_eq!(
            answer,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 13\r\n\
             Connection: close\r\n\r\ncontroller-3\n"
        );
    }

    #[tokio::test]
    async fn tls_fetch_returns_the_name() {
        let (addr, _server) = start("controller-1", true).await;
        assert_eq!(fetch(addr, "/", true, SECOND).await.unwrap(), "controller-1\n");
        let error = fetch(addr, "/", false, SECOND).await.unwrap_err();
        assert!(error.to_string().contains("answered with TLS"), "{error}");
    }

    #[tokio::test]
    async fn bad_requests_get_400() {
        let (addr, _server) = start("c", false).await;
        for request in [
            &b"garbage\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"GET /\r\n\r\n",
            b"GET healthz HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            let answer = raw(addr, request).await;
            assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?}: {answer}");
        }
        let answer = raw(addr, b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{answer}");
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b"X-Filler: 0123456789\r\n", 1000).flatten());
        let answer = raw(addr, &huge).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }

    #[tokio::test]
    async fn slow_clients_do_not_block_others() {
        for tls in [false, true] {
            let (addr, _server) = start("c", tls).await;
            // One client that never speaks, one stuck half-way through its request.
            let _silent = TcpStream::connect(addr).await.unwrap();
            let mut half = TcpStream::connect(addr).await.unwrap();
            half.write_all(b"GET /healthz HTT").await.unwrap();
            let body = fetch(addr, "/healthz", tls, SECOND).await.unwrap();
            assert_eq!(body, "ok");
        }
    }

    #[tokio::test]
    async fn dropping_serve_stops_it() {
        let (addr, server) = start("c", false).await;
        // A connection in flight when the server goes away is closed with it.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        fetch(addr, "/", false, SECOND).await.unwrap();
        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(SECOND, idle.read(&mut buf)).await.unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(fetch(addr, "/", false, SECOND).await.is_err());
    }

    #[tokio::test]
    async fn start_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options =
            ApiServerOptions { name: "c".into(), tls: false, client_ca: Some("/ca.pem".into()) };
        let error = serve(listener, options).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let missing = std::env::temp_dir().join("cplb-apiserver-test-no-such-ca.pem");
        let options = ApiServerOptions { name: "c".into(), tls: true, client_ca: Some(missing) };
        let error = serve(listener, options).await.unwrap_err();
        assert!(error.to_string().starts_with("cannot read client CA "), "{error}");
    }
}

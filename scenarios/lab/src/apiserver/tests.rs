//! The server over the host's sockets: paths, statuses, the watch stream, the hang, TLS,
//! the limits. (Client certificates: netns/tests/probe_tls.rs; under turmoil:
//! scenarios/tests/apiserver_turmoil.rs.)

use std::time::Instant;

use cplb_netns::net::Os;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

async fn start_within(
    options: ApiServerOptions,
    limits: Limits,
) -> (SocketAddr, JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, tokio::spawn(serve_within::<Os>(listener, options, limits)))
}

async fn start(name: &str, tls: bool) -> (SocketAddr, JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ApiServerOptions { tls, ..ApiServerOptions::new(name) };
    (addr, tokio::spawn(serve::<Os>(listener, options)))
}

/// Sends raw bytes, then reads the whole answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SECOND, stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

/// Whether the server closes (or resets) `stream` within `within`, sending nothing.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

/// Fetches `/` until it succeeds, for at most a second: a connection the server has just
/// released frees its slot once the server has reaped its task.
async fn fetch_soon(addr: SocketAddr) -> String {
    let start = Instant::now();
    loop {
        match fetch(addr, "/", false, SECOND).await {
            Ok(body) => return body,
            Err(error) => assert!(start.elapsed() < SECOND, "still refused: {error}"),
        }
        tokio::time::sleep(20 * MS).await;
    }
}

/// Opens a watch on `addr` and returns the stream after the answer's head (checked).
async fn open_watch(addr: SocketAddr) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let n = tokio::time::timeout(SECOND, reader.read_line(&mut head)).await.unwrap().unwrap();
        assert_ne!(n, 0, "closed in the head: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nTransfer-Encoding: chunked\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: application/json\r\n"), "{head}");
    reader
}

/// Reads the next event of a watch (one chunk), returning its number and when it came.
async fn next_event(watch: &mut BufReader<TcpStream>) -> (u64, Instant) {
    let mut size = String::new();
    tokio::time::timeout(SECOND, watch.read_line(&mut size)).await.unwrap().unwrap();
    let mut event = String::new();
    tokio::time::timeout(SECOND, watch.read_line(&mut event)).await.unwrap().unwrap();
    let at = Instant::now();
    let chunk = size.strip_suffix("\r\n").and_then(|hex| usize::from_str_radix(hex, 16).ok());
    assert_eq!(chunk, Some(event.len()), "chunk size {size:?} of {event:?}");
    let mut end = String::new();
    watch.read_line(&mut end).await.unwrap();
    assert_eq!(end, "\r\n");
    let n = event
        .strip_prefix("{\"type\":\"MODIFIED\",\"n\":")
        .and_then(|rest| rest.strip_suffix("}\n"))
        .unwrap_or_else(|| panic!("not an event: {event:?}"));
    (n.parse().unwrap(), at)
}

#[tokio::test]
async fn plain_answers_healthz_whoami_and_name() {
    let (addr, _server) = start("controller-3", false).await;
    assert_eq!(fetch(addr, "/healthz", false, SECOND).await.unwrap(), "ok");
    assert_eq!(fetch(addr, "/healthz?verbose", false, SECOND).await.unwrap(), "ok");
    assert_eq!(fetch(addr, "/version", false, SECOND).await.unwrap(), "controller-3\n");
    assert_eq!(fetch(addr, "/healthz/x", false, SECOND).await.unwrap(), "controller-3\n");
    assert_eq!(
        fetch(addr, "/whoami", false, SECOND).await.unwrap(),
        "controller-3 127.0.0.1 127.0.0.1\n"
    );
    // Absolute form, which HTTP/1.1 servers must accept.
    let answer = raw(addr, b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok"),
        "{answer}"
    );
}

#[tokio::test]
async fn one_request_per_connection_closed_after_the_answer() {
    let (addr, _server) = start("controller-3", false).await;
    // HTTP/1.1 asking to keep the connection: answered, then closed all the same (a second
    // request on it gets nothing).
    let answer = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
    let mut headers: Vec<&str> = lines.filter(|l| !l.starts_with("Date: ")).collect();
    headers.sort_unstable();
    assert_eq!(
        headers,
        ["Connection: close", "Content-Length: 13", "Content-Type: text/plain; charset=utf-8"]
    );
    assert_eq!(body, "controller-3\n");
    // HTTP/1.0: answered in kind.
    let answer = raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.contains("\r\nContent-Length: 13\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\ncontroller-3\n"), "{answer}");
}

#[tokio::test]
async fn tls_fetch_returns_the_name() {
    let (addr, _server) = start("controller-1", true).await;
    assert_eq!(fetch(addr, "/", true, SECOND).await.unwrap(), "controller-1\n");
    assert_eq!(fetch(addr, "/healthz", true, SECOND).await.unwrap(), "ok");
    assert_eq!(
        fetch(addr, "/whoami", true, SECOND).await.unwrap(),
        "controller-1 127.0.0.1 127.0.0.1\n"
    );
    let error = fetch(addr, "/", false, SECOND).await.unwrap_err();
    assert!(error.to_string().contains("answered with TLS"), "{error}");
}

#[tokio::test]
async fn bad_requests_get_400_other_methods_405_huge_heads_431() {
    let (addr, _server) = start("c", false).await;
    for request in [
        &b"garbage\r\n\r\n"[..],
        // A TLS ClientHello's first bytes: answered at once, not after a timeout.
        b"\x16\x03\x01\x02\x00",
        b"GET /\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ] {
        let answer = raw(addr, request).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{request:?}: {answer}");
    }
    // With a body nobody reads, the answer still arrives: what the client sends after it
    // is drained, not met with a reset.
    let mut put = b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n".to_vec();
    put.resize(put.len() + 200_000, b'x');
    for request in [
        &b"POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &put,
        b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let answer = raw(addr, request).await;
        assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{answer}");
        assert!(answer.contains("\r\nAllow: GET\r\n"), "{answer}");
    }
    // The head's size is limited, and so is the number of headers (hyper's 100).
    let head = |headers: &[String]| {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for header in headers {
            head.extend(format!("{header}\r\n").bytes());
        }
        head.extend(b"\r\n");
        head
    };
    let long = |n: usize| vec![format!("X-Filler: {}", "x".repeat(n))];
    let many = |n: usize| (0..n).map(|i| format!("X-Filler-{i}: 0")).collect::<Vec<_>>();
    for (served, request) in [
        (true, head(&long(http::MAX_REQUEST_HEAD - 100))),
        (false, head(&long(http::MAX_REQUEST_HEAD))),
        (false, head(&long(3 * http::MAX_REQUEST_HEAD))),
        (true, head(&many(100))),
        (false, head(&many(101))),
    ] {
        let answer = raw(addr, &request).await;
        let len = request.len();
        if served {
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{len} bytes: {answer}");
        } else {
            let status = "HTTP/1.1 431 Request Header Fields Too Large\r\n";
            assert!(answer.starts_with(status), "{len} bytes: {answer}");
        }
    }
}

#[tokio::test]
async fn a_client_still_sending_after_the_answer_is_not_reset() {
    let (addr, _server) = start("c", false).await;
    // A body nobody reads, sent after the answer came (as a client that streams its upload
    // does): drained, so the client's writes succeed and it sees a clean end, not a reset.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"only GET is served\n") {
        let n = tokio::time::timeout(SECOND, stream.read(&mut buf)).await.unwrap().unwrap();
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 405 Method Not Allowed\r\n"));
    for _ in 0..16 {
        tokio::time::sleep(2 * MS).await;
        stream.write_all(&[b'x'; 4096]).await.unwrap();
    }
    let mut rest = Vec::new();
    tokio::time::timeout(SECOND, stream.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "{rest:?}");
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
async fn slow_clients_are_dropped_at_the_timeouts() {
    let limits =
        Limits { header_timeout: 200 * MS, connection_timeout: 500 * MS, ..Limits::DEFAULT };
    let (plain, _server) = start_within(ApiServerOptions::new("c"), limits).await;
    let tls_options = ApiServerOptions { tls: true, ..ApiServerOptions::new("c") };
    let (tls, _tls_server) = start_within(tls_options, limits).await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(plain).await.unwrap();
    let mut half = TcpStream::connect(plain).await.unwrap();
    half.write_all(b"GET /healthz HTT").await.unwrap();
    // Over TLS the head's timer starts after the handshake, which the connection's
    // deadline bounds.
    let mut no_handshake = TcpStream::connect(tls).await.unwrap();
    assert!(closed_within(&mut silent, SECOND).await, "silent client kept");
    assert!(closed_within(&mut half, SECOND).await, "half a request kept");
    let head_timeout = start.elapsed();
    assert!(closed_within(&mut no_handshake, SECOND).await, "TLS client kept");
    let connection_timeout = start.elapsed();
    assert!((150 * MS..450 * MS).contains(&head_timeout), "head: {head_timeout:?}");
    assert!((450 * MS..900 * MS).contains(&connection_timeout), "TLS: {connection_timeout:?}");
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let limits = Limits { max_connections: 3, ..Limits::DEFAULT };
    let (addr, _server) = start_within(ApiServerOptions::new("c"), limits).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut extra, SECOND).await, "the fourth was served");
    assert!(!closed_within(&mut idle[0], 100 * MS).await, "a held one was closed");
    // A slot freed (its client left) is taken again.
    drop(idle.pop());
    assert_eq!(fetch_soon(addr).await, "c\n");
}

#[tokio::test]
async fn a_watch_streams_events_until_its_client_leaves() {
    // One connection at most, and a connection timeout shorter than the watch lasts.
    let limits = Limits { max_connections: 1, connection_timeout: 300 * MS, ..Limits::DEFAULT };
    let (addr, _server) = start_within(ApiServerOptions::new("c"), limits).await;
    let mut watch = open_watch(addr).await;
    let mut events = Vec::new();
    for _ in 0..8 {
        events.push(next_event(&mut watch).await);
    }
    let numbers: Vec<u64> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..8).collect::<Vec<_>>());
    let lasted = events[7].1 - events[0].1;
    assert!((650 * MS..2 * SECOND).contains(&lasted), "7 intervals in {lasted:?}");
    // The watch holds the only slot while it lasts.
    let mut other = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut other, SECOND).await, "served past the cap");
    // The client leaves: the server ends the watch and takes new connections.
    drop(watch);
    assert_eq!(fetch_soon(addr).await, "c\n");
}

#[tokio::test]
async fn a_hung_server_never_answers_and_holds_connections_until_clients_leave() {
    let limits =
        Limits { max_connections: 1, connection_timeout: 200 * MS, header_timeout: 200 * MS };
    let options = ApiServerOptions { behaviour: Behaviour::Hang, ..ApiServerOptions::new("c") };
    let (addr, _server) = start_within(options, limits).await;
    let error = fetch(addr, "/healthz", false, 500 * MS).await.unwrap_err();
    assert!(matches!(error, ProbeError::Timeout { .. }), "{error:?}");
    // Held past every timeout; released when the client leaves (the prober above did: this
    // one gets the only slot).
    let start = Instant::now();
    let mut held = loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        if !closed_within(&mut stream, 600 * MS).await {
            break stream;
        }
        assert!(start.elapsed() < 2 * SECOND, "the slot is not freed");
    };
    assert!(!closed_within(&mut held, 300 * MS).await);
}

#[tokio::test]
async fn dropping_serve_ends_its_connections() {
    let (addr, server) = start("c", false).await;
    // Connections in flight when the server goes away (an idle one, a watch) end with it.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut watch = open_watch(addr).await;
    next_event(&mut watch).await;
    fetch(addr, "/", false, SECOND).await.unwrap();
    server.abort();
    assert!(server.await.unwrap_err().is_cancelled());
    assert!(closed_within(&mut idle, SECOND).await);
    // The watch ends (what was sent before may still be read first).
    let ended = tokio::time::timeout(SECOND, async {
        let mut rest = Vec::new();
        let _ = watch.read_to_end(&mut rest).await;
    });
    ended.await.unwrap();
    assert!(fetch(addr, "/", false, SECOND).await.is_err());
}

#[tokio::test]
async fn start_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options =
        ApiServerOptions { client_ca: Some("/ca.pem".into()), ..ApiServerOptions::new("c") };
    let error = serve::<Os>(listener, options).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let missing = std::env::temp_dir().join("cplb-apiserver-test-no-such-ca.pem");
    let options =
        ApiServerOptions { tls: true, client_ca: Some(missing), ..ApiServerOptions::new("c") };
    let error = serve::<Os>(listener, options).await.unwrap_err();
    assert!(error.to_string().starts_with("cannot read client CA "), "{error}");
}

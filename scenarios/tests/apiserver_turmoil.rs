//! The stand-in API server of `cplb-lab` under turmoil, over [`Turmoil`] (the network the
//! daemon's turmoil runs use): it answers health checks, streams a watch past its
//! connection timeout, ends the watch when its task is aborted (an API server dying), and,
//! hung, answers nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use cplb_lab::apiserver::{self, ApiServerOptions, Behaviour, WATCH_EVENT_EVERY};
use cplb_netns::probe::{ProbeError, ProbeKind, Prober};
use cplb_scenarios::daemon_driver::net::Turmoil;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;
use turmoil::net::TcpStream;

const API: u16 = 6443;
const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// The network's one-way latency, fixed so that the events' spacing can be checked exactly.
const LATENCY: Duration = Duration::from_millis(2);

fn sim<'a>() -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(11)
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(MS)
        .min_message_latency(LATENCY)
        .max_message_latency(LATENCY)
        .build()
}

/// Host `api` runs the API server in a task of its own until `kill` turns true, then
/// aborts that task, as a dying API server (the host stays up: its port then refuses).
fn api_host(sim: &mut turmoil::Sim<'_>, behaviour: Behaviour, kill: watch::Receiver<bool>) {
    sim.host("api", move || {
        let mut kill = kill.clone();
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", API)).await?;
            let options = ApiServerOptions { behaviour, ..ApiServerOptions::new("api") };
            let server = tokio::spawn(apiserver::serve::<Turmoil>(listener, options));
            let _ = kill.wait_for(|dead| *dead).await;
            server.abort();
            // A host whose software returns is no longer run: stay.
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

fn api_addr() -> SocketAddr {
    SocketAddr::new(turmoil::lookup("api"), API)
}

/// One GET, the whole answer read (the server closes after it).
async fn get(path: &str) -> String {
    let mut stream = TcpStream::connect(api_addr()).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: api\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(SECOND, stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

/// Opens a watch and returns the stream after the answer's head (checked).
async fn open_watch() -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(api_addr()).await.unwrap();
    stream.write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: api\r\n\r\n").await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let n = tokio::time::timeout(SECOND, reader.read_line(&mut head)).await.unwrap().unwrap();
        assert_ne!(n, 0, "closed in the head: {head}");
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nTransfer-Encoding: chunked\r\n"), "{head}");
    reader
}

/// The next event of a watch (a chunk of one line): its number and when it came; `None`
/// once the stream ended (closed or reset).
async fn next_event(watch: &mut BufReader<TcpStream>) -> Option<(u64, Instant)> {
    let mut chunk = String::new();
    for _ in 0..3 {
        match tokio::time::timeout(SECOND, watch.read_line(&mut chunk)).await.unwrap() {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    let at = Instant::now();
    let mut lines = chunk.split("\r\n");
    let (size, event) = (lines.next().unwrap(), lines.next().unwrap());
    assert_eq!(usize::from_str_radix(size, 16).ok(), Some(event.len()), "{chunk:?}");
    let n = event
        .strip_prefix("{\"type\":\"MODIFIED\",\"n\":")
        .and_then(|rest| rest.strip_suffix("}\n"))
        .unwrap_or_else(|| panic!("not an event: {chunk:?}"));
    Some((n.parse().unwrap(), at))
}

#[test]
fn healthz_whoami_and_the_daemons_probe_see_it_up() {
    let mut sim = sim();
    let (_alive, kill) = watch::channel(false);
    api_host(&mut sim, Behaviour::Answer, kill);
    sim.client("client", async {
        let answer = get("/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
        // The local address of a turmoil stream, as `Turmoil` reports it.
        let whoami = get("/whoami").await;
        let me = turmoil::lookup("client");
        let expected = format!("\r\n\r\napi {me} {}\n", api_addr().ip());
        assert!(whoami.ends_with(&expected), "{whoami}");
        let answer = get("/version").await;
        assert!(answer.ends_with("\r\n\r\napi\n"), "{answer}");
        // cplbd's health probe, over the same network.
        let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
        prober.probe_on::<Turmoil>(api_addr(), SECOND).await.unwrap();
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_watch_sends_an_event_every_100_ms_past_the_connection_timeout() {
    let mut sim = sim();
    let (_alive, kill) = watch::channel(false);
    api_host(&mut sim, Behaviour::Answer, kill);
    sim.client("client", async {
        let mut watch = open_watch().await;
        let (first, mut last) = next_event(&mut watch).await.unwrap();
        assert_eq!(first, 0);
        let start = last;
        // 12 s: longer than the server's 10 s per connection, which a watch is not held to.
        for expected in 1..=120 {
            let (n, at) = next_event(&mut watch).await.expect("the watch ended");
            assert_eq!(n, expected);
            let gap = at - last;
            assert!(
                (WATCH_EVENT_EVERY - 2 * MS..=WATCH_EVENT_EVERY + 2 * MS).contains(&gap),
                "event {n} after {gap:?}"
            );
            last = at;
        }
        assert!(last - start >= 12 * SECOND);
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn aborting_the_server_ends_its_open_watch_at_once() {
    let mut sim = sim();
    let (die, kill) = watch::channel(false);
    api_host(&mut sim, Behaviour::Answer, kill);
    sim.client("client", async move {
        let mut watch = open_watch().await;
        for expected in 0..3 {
            assert_eq!(next_event(&mut watch).await.unwrap().0, expected);
        }
        let killed = Instant::now();
        die.send(true).unwrap();
        // At most the event already on its way, then the end (FIN or reset).
        let mut after = 0;
        while next_event(&mut watch).await.is_some() {
            after += 1;
            assert!(after <= 1, "events go on after the server died");
        }
        let took = killed.elapsed();
        assert!(took <= 20 * MS, "the watch ended {took:?} after the server died");
        // Its listener went with it.
        let refused = TcpStream::connect(api_addr()).await;
        assert!(refused.is_err(), "connected to a dead server");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_hung_server_takes_requests_and_never_answers() {
    let mut sim = sim();
    let (_alive, kill) = watch::channel(false);
    api_host(&mut sim, Behaviour::Hang, kill);
    sim.client("client", async {
        // A TCP check passes; an HTTP probe times out.
        Prober::new(ProbeKind::Tcp).unwrap().probe_on::<Turmoil>(api_addr(), SECOND).await.unwrap();
        let prober = Prober::new(ProbeKind::Http { path: "/healthz".into() }).unwrap();
        let error = prober.probe_on::<Turmoil>(api_addr(), SECOND).await.unwrap_err();
        assert!(matches!(error, ProbeError::Timeout { .. }), "{error:?}");
        // Nothing comes for a second, nor past the server's connection timeout: the
        // connection is held open, not closed.
        let mut stream = TcpStream::connect(api_addr()).await.unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        for wait in [SECOND, 11 * SECOND] {
            let read = tokio::time::timeout(wait, stream.read(&mut buf)).await;
            assert!(read.is_err(), "after {wait:?}: {read:?}");
        }
        Ok(())
    });
    sim.run().unwrap();
}

//! cplbd's userspace proxy under turmoil (the same `proxy::serve`, over turmoil's network):
//! an API
//! server dying in the middle of proxied connections, half-close, the retry on the next
//! server. Deterministic and quick, unlike the namespace tests of the same behaviour.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use cplb_netns::proxy::{self, Director, ProxyConfig, ProxyStats};
use cplb_scenarios::daemon_driver::net::Turmoil;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

const API: u16 = 6443;
const PROXY: u16 = 6444;

/// An API server stand-in: greets each connection with its name, echoes lines, and on the
/// client's half-close answers `bye` and closes. When `dead` turns true it dies as a
/// process does: its connections are closed and its port refuses.
async fn server(name: &'static str, mut dead: watch::Receiver<bool>) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", API)).await?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (s, _) = accepted?;
                let mut dead = dead.clone();
                tokio::spawn(async move {
                    let (r, mut w) = tokio::io::split(s);
                    let mut lines = BufReader::new(r).lines();
                    let _ = w.write_all(format!("{name}\n").as_bytes()).await;
                    loop {
                        tokio::select! {
                            line = lines.next_line() => match line {
                                Ok(Some(l)) => { let _ = w.write_all(format!("{l}\n").as_bytes()).await; }
                                _ => { let _ = w.write_all(b"bye\n").await; let _ = w.shutdown().await; return; }
                            },
                            () = died(&mut dead) => return,
                        }
                    }
                });
            }
            () = died(&mut dead) => return Ok(()),
        }
    }
}

/// Stands in for the driver: always the same order, as `proxy_backends_for` answers when
/// the first is the round robin's pick; the failed dials reported are kept.
#[derive(Clone)]
struct Fixed {
    servers: Vec<SocketAddr>,
    reported: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl Director for Fixed {
    async fn backends_for(&self, _client: IpAddr) -> Option<Vec<SocketAddr>> {
        Some(self.servers.clone())
    }

    fn dial_failed(&self, server: SocketAddr) {
        self.reported.lock().expect("list").push(server);
    }
}

/// Until `dead` turns true.
async fn died(dead: &mut watch::Receiver<bool>) {
    let _ = dead.wait_for(|d| *d).await;
}

#[test]
fn an_api_server_dying_mid_connection_ends_its_connections_cleanly_and_new_ones_go_on() {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .build();
    let (kill, dead) = watch::channel(false);
    // api1 never dies: its sender lives as long as the test (a dropped one would end it).
    let (_alive, d1) = watch::channel(false);
    let d0 = dead.clone();
    sim.host("api0", move || server("api0", d0.clone()));
    sim.host("api1", move || server("api1", d1.clone()));
    let stats = Arc::new(ProxyStats::default());
    let proxy_stats = Arc::clone(&stats);
    let reported = Arc::new(std::sync::Mutex::new(Vec::<SocketAddr>::new()));
    let failed_dials = Arc::clone(&reported);
    sim.host("proxy", move || {
        let stats = Arc::clone(&proxy_stats);
        let reported = Arc::clone(&failed_dials);
        async move {
            let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PROXY)).await?;
            // The node's order: api0 first, then api1.
            let servers: Vec<SocketAddr> = vec![
                SocketAddr::new(turmoil::lookup("api0"), API),
                SocketAddr::new(turmoil::lookup("api1"), API),
            ];
            let director = Fixed { servers, reported: Arc::clone(&reported) };
            let config = ProxyConfig {
                dial_timeout: Duration::from_millis(250),
                max_connections: 100,
                idle_timeout: Some(proxy::DEFAULT_IDLE_TIMEOUT),
            };
            proxy::serve::<Turmoil, _>(listener, director, config, stats).await;
            Ok(())
        }
    });
    // 0: start; 1: the held connection is up (the runner then kills api0); 2: done.
    let phase = Arc::new(AtomicU8::new(0));
    let ended_cleanly = Arc::new(AtomicBool::new(false));
    let (p, e) = (Arc::clone(&phase), Arc::clone(&ended_cleanly));
    sim.client("client", async move {
        // The servers and the proxy listen first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Half-close is passed on both ways: the server sees EOF, answers, and closes.
        let s = turmoil::net::TcpStream::connect(("proxy", PROXY)).await?;
        let (r, mut w) = tokio::io::split(s);
        let mut r = BufReader::new(r);
        w.write_all(b"ping\n").await?;
        w.shutdown().await?;
        let mut all = String::new();
        r.read_to_string(&mut all).await?;
        assert_eq!(all, "api0\nping\nbye\n", "half-close through the proxy");

        // A long-lived connection, like a watch, through the proxy to api0.
        let held = turmoil::net::TcpStream::connect(("proxy", PROXY)).await?;
        let (r, mut w) = tokio::io::split(held);
        let mut lines = BufReader::new(r).lines();
        assert_eq!(lines.next_line().await?.as_deref(), Some("api0"));
        w.write_all(b"still there\n").await?;
        assert_eq!(lines.next_line().await?.as_deref(), Some("still there"));
        p.store(1, Ordering::SeqCst);
        // api0 dies: the held connection ends (EOF or reset), within seconds, not hanging.
        let end = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await;
        e.store(matches!(end, Ok(Ok(None)) | Ok(Err(_))), Ordering::SeqCst);
        // A new client: api0 refuses, the proxy goes on to api1 before the client sees
        // anything.
        let fresh = turmoil::net::TcpStream::connect(("proxy", PROXY)).await?;
        let mut lines = BufReader::new(fresh).lines();
        assert_eq!(lines.next_line().await?.as_deref(), Some("api1"));
        p.store(2, Ordering::SeqCst);
        Ok(())
    });
    let mut killed = false;
    while phase.load(Ordering::SeqCst) < 2 {
        if phase.load(Ordering::SeqCst) == 1 && !killed {
            kill.send_replace(true);
            killed = true;
        }
        if sim.step().expect("the simulation runs") {
            break;
        }
    }
    assert!(ended_cleanly.load(Ordering::SeqCst), "the held connection did not end when api0 died");
    assert_eq!(phase.load(Ordering::SeqCst), 2, "the client did not finish");
    // The proxy told the node that api0 did not connect (refused, or still connecting when
    // api1 won the race), so the next clients try it last.
    let api0 = SocketAddr::new(sim.lookup("api0"), API);
    let reported = reported.lock().expect("list").clone();
    assert!(reported.contains(&api0), "the failed dial to api0 was not reported: {reported:?}");
    assert!(!reported.contains(&SocketAddr::new(sim.lookup("api1"), API)), "{reported:?}");
    assert_eq!(stats.unserved.load(Ordering::Relaxed), 0, "every client was served");
}

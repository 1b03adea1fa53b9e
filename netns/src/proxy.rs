//! The userspace proxy, k0s's default load balancer: TCP on `userSpaceProxyBindPort`,
//! each connection to the API server the node's scheduler picks.
//!
//! Unlike k0s's proxy, a failed dial is retried on the next server before the client sees
//! an error: a server that died since the last health check costs the client one dial
//! timeout, not a failed request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::daemon::Input;

/// Counters the status and metrics endpoints show.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: AtomicU64,
    /// Connections handed to a server.
    pub forwarded: AtomicU64,
    /// Dials that failed (each retried on the next server).
    pub dial_failures: AtomicU64,
    /// Client connections closed because no server could be reached.
    pub unserved: AtomicU64,
}

/// Runs the proxy until the task is dropped. For each connection the driver is asked
/// where it goes (the node's scheduler: round robin over the healthy API servers, the
/// others after it in order for a failed dial).
pub async fn serve(
    listener: TcpListener,
    driver: mpsc::Sender<Input>,
    dial_timeout: Duration,
    stats: Arc<ProxyStats>,
) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        let driver = driver.clone();
        tokio::spawn(async move {
            let (tx, rx) = oneshot::channel();
            if driver.send(Input::ProxyPick(peer.ip(), tx)).await.is_err() {
                return;
            }
            let servers = rx.await.unwrap_or_default();
            let Some((server, upstream)) = dial_in_order(&servers, dial_timeout, &stats).await
            else {
                stats.unserved.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, servers = servers.len(), "proxy: no API server reachable, closing the client connection");
                return;
            };
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %server, "proxy: forwarding");
            splice(client, upstream).await;
        });
    }
}

/// Dials the servers in the order given, each once, until one answers.
async fn dial_in_order(
    servers: &[SocketAddr],
    timeout: Duration,
    stats: &ProxyStats,
) -> Option<(SocketAddr, TcpStream)> {
    for &server in servers {
        match tokio::time::timeout(timeout, TcpStream::connect(server)).await {
            Ok(Ok(stream)) => return Some((server, stream)),
            Ok(Err(e)) => {
                tracing::debug!(%server, error = %e, "proxy: dial failed, trying the next server")
            }
            Err(_) => {
                tracing::debug!(%server, ?timeout, "proxy: dial timed out, trying the next server")
            }
        }
        stats.dial_failures.fetch_add(1, Ordering::Relaxed);
    }
    None
}

/// Copies both ways until both sides are done; half-closes are passed on.
async fn splice(mut client: TcpStream, mut upstream: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "proxy: connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn named_server(name: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        addr
    }

    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    }

    async fn ask(proxy: SocketAddr) -> String {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Stands in for the driver: answers each pick with the servers rotated by one more,
    /// as the node's round robin does; the list can be replaced.
    fn picker(
        servers: Vec<SocketAddr>,
    ) -> (mpsc::Sender<Input>, Arc<std::sync::Mutex<Vec<SocketAddr>>>) {
        let (tx, mut rx) = mpsc::channel::<Input>(16);
        let list = Arc::new(std::sync::Mutex::new(servers));
        let shared = Arc::clone(&list);
        tokio::spawn(async move {
            let mut turn = 0;
            while let Some(input) = rx.recv().await {
                if let Input::ProxyPick(_, reply) = input {
                    let mut l = shared.lock().unwrap().clone();
                    let n = l.len().max(1);
                    l.rotate_left(turn % n);
                    turn += 1;
                    let _ = reply.send(l);
                }
            }
        });
        (tx, list)
    }

    #[tokio::test]
    async fn the_pick_order_is_dialled_and_a_dead_server_is_skipped_without_client_errors() {
        let a = named_server("a").await;
        let dead = closed_port().await;
        let b = named_server("b").await;
        let (tx, list) = picker(vec![a, dead, b]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve(listener, tx, Duration::from_secs(1), Arc::clone(&stats)));
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(ask(proxy).await);
        }
        // Every client got an answer; the dead server's turns went to the next one.
        assert!(seen.iter().all(|s| s == "a" || s == "b"), "{seen:?}");
        assert_eq!(seen.iter().filter(|s| *s == "a").count(), 2, "{seen:?}");
        assert_eq!(stats.dial_failures.load(Ordering::Relaxed), 2);
        assert_eq!(stats.unserved.load(Ordering::Relaxed), 0);
        // New backends take effect for the next connection.
        *list.lock().unwrap() = vec![b];
        assert_eq!(ask(proxy).await, "b");
    }

    #[tokio::test]
    async fn no_reachable_server_closes_the_client() {
        let (tx, _list) = picker(vec![closed_port().await]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve(listener, tx, Duration::from_secs(1), Arc::clone(&stats)));
        assert_eq!(ask(proxy).await, "");
        assert_eq!(stats.unserved.load(Ordering::Relaxed), 1);
    }
}

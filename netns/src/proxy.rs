//! The userspace proxy, k0s's default load balancer: TCP on `userSpaceProxyBindPort`,
//! round robin per connection over the healthy API servers.
//!
//! Unlike k0s's proxy, a failed dial is retried on the next server before the client sees
//! an error: a server that died since the last health check costs the client one dial
//! timeout, not a failed request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

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

/// Runs the proxy until the task is dropped. `backends` holds the servers to use now.
pub async fn serve(
    listener: TcpListener,
    backends: watch::Receiver<Vec<SocketAddr>>,
    dial_timeout: Duration,
    stats: Arc<ProxyStats>,
) {
    let next = Arc::new(AtomicUsize::new(0));
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
        let servers = backends.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let Some((server, upstream)) =
                dial_round_robin(&servers, start, dial_timeout, &stats).await
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

/// Dials the servers in round-robin order starting at `start`, each once, until one
/// answers.
async fn dial_round_robin(
    servers: &[SocketAddr],
    start: usize,
    timeout: Duration,
    stats: &ProxyStats,
) -> Option<(SocketAddr, TcpStream)> {
    let n = servers.len();
    for k in 0..n {
        let server = *servers.get((start + k) % n)?;
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

    #[tokio::test]
    async fn round_robin_and_a_dead_server_is_skipped_without_client_errors() {
        let a = named_server("a").await;
        let dead = closed_port().await;
        let b = named_server("b").await;
        let (tx, rx) = watch::channel(vec![a, dead, b]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve(listener, rx, Duration::from_secs(1), Arc::clone(&stats)));
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
        tx.send(vec![b]).unwrap();
        assert_eq!(ask(proxy).await, "b");
    }

    #[tokio::test]
    async fn no_reachable_server_closes_the_client() {
        let (_tx, rx) = watch::channel(vec![closed_port().await]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve(listener, rx, Duration::from_secs(1), Arc::clone(&stats)));
        assert_eq!(ask(proxy).await, "");
        assert_eq!(stats.unserved.load(Ordering::Relaxed), 1);
    }
}

//! The userspace proxy, k0s's default load balancer: TCP on `userSpaceProxyBindPort`,
//! each connection to the API server the node's scheduler picks.
//!
//! Unlike k0s's proxy, a failed dial is retried on the next server before the client sees
//! an error, and a dial that has not connected within [`DIAL_STAGGER`] races the next
//! server's: a server that died since the last health check costs the client tens of
//! milliseconds, not a failed request; the node then tries it last until it passes a probe.
//!
//! Under overload the proxy holds at most [`ProxyConfig::max_connections`] connections (by
//! default sized to the descriptor limit, see [`crate::limits`]): over the cap a new client
//! is refused (reset at once) and counted, so that the health probes and the daemon's own
//! sockets always find a descriptor. Both legs get TCP keepalive (a vanished peer is found
//! within about a minute), and a connection on which no byte moved either way for
//! [`ProxyConfig::idle_timeout`] is closed on both legs.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

mod copy;

use crate::limits::RateLog;
use crate::net::Net;

pub use crate::net::{KEEPALIVE_INTERVAL, KEEPALIVE_RETRIES, KEEPALIVE_TIME};
/// The default of `--proxy-idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Who decides where the proxy's connections go: in `cplbd`, the driver, which asks the
/// node's scheduler (round robin over the healthy API servers).
pub trait Director: Clone + Send + Sync + 'static {
    /// The API servers a new connection from `client` goes to, in the order to dial them;
    /// `None` when nobody answers any more (the daemon is stopping).
    fn backends_for(&self, client: IpAddr) -> impl Future<Output = Option<Vec<SocketAddr>>> + Send;
    /// `server` could not be reached (refused, or slower than another): the director tries
    /// it last for the next clients. Never waits; a notice lost to a full queue only costs
    /// one more dial.
    fn dial_failed(&self, server: SocketAddr);
}

/// How the proxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyConfig {
    /// How long an API server may take to accept before the next one is tried.
    pub dial_timeout: Duration,
    /// Connections held at once (from accept to close); over it new ones are refused.
    pub max_connections: usize,
    /// Both legs are closed after this long without a byte in either direction; `None`:
    /// never. Long watches carry events and bookmarks, so they are not idle.
    pub idle_timeout: Option<Duration>,
}

/// Counters the status and metrics endpoints show.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Client connections accepted (under the cap).
    pub accepted: AtomicU64,
    /// Connections handed to a server.
    pub forwarded: AtomicU64,
    /// Dials that failed (each retried on the next server).
    pub dial_failures: AtomicU64,
    /// Client connections closed because no server could be reached.
    pub unserved: AtomicU64,
    /// Client connections refused because the cap was reached.
    pub refused: AtomicU64,
    /// Connections held now.
    pub active: AtomicU64,
    /// Connections closed after the idle timeout.
    pub idle_closed: AtomicU64,
    /// The cap in force.
    pub max_connections: AtomicU64,
}

/// Runs the proxy until the task is dropped. For each connection the director is asked
/// where it goes (the node's scheduler: round robin over the healthy API servers, the
/// others after it in order for a failed dial).
pub async fn serve<N: Net, D: Director>(
    listener: N::Listener,
    director: D,
    config: ProxyConfig,
    stats: Arc<ProxyStats>,
) {
    let max = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    stats.max_connections.store(max as u64, Ordering::Relaxed);
    let slots = Arc::new(Semaphore::new(max));
    let mut refusals = RateLog::new("proxy: connection refused at the connection cap");
    // The connections belong to the proxy: when it is stopped (a reload that leaves proxy
    // mode, or a crash of the daemon under simulation) they end with it, as they do when
    // the process exits, rather than run on unaccounted.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = N::accept(&listener) => accepted,
            // Reap finished connections so the set holds only live ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (client, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            N::reset(client);
            refusals.note(format_args!("from {peer} ({max} connections held)"));
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let slot = Slot::new(permit, Arc::clone(&stats));
        let director = director.clone();
        connections.spawn(async move {
            let stats = &slot.stats;
            let Some(servers) = director.backends_for(peer.ip()).await else { return };
            let Some((server, upstream)) =
                dial_in_order::<N>(&servers, config.dial_timeout, stats, &director).await
            else {
                stats.unserved.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, servers = servers.len(), "proxy: no API server reachable, closing the client connection");
                return;
            };
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %server, "proxy: forwarding");
            if splice::<N>(client, upstream, config.idle_timeout).await == End::Idle {
                stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, %server, "proxy: idle timeout, closed both legs");
            }
        });
    }
}

/// A held connection: its place under the cap and its count in `active`, both given back
/// when the connection's task ends, however it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ProxyStats>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, stats: Arc<ProxyStats>) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        Self { _permit: permit, stats }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A dial that has not connected by then makes way: the next server is dialled beside it
/// and whichever connects first serves the client. On a LAN a live API server accepts in
/// well under a millisecond; one powered off answers nothing, and without the race every
/// client sent to it first would wait the whole dial timeout.
pub const DIAL_STAGGER: Duration = Duration::from_millis(50);

/// Dials the servers in the order given, each once, a new one whenever the last failed or
/// has not connected within [`DIAL_STAGGER`], until one connects. The director hears of each
/// that failed or was still connecting when another won (the node tries those last for the
/// next clients, until their next successful probe).
async fn dial_in_order<N: Net>(
    servers: &[SocketAddr],
    timeout: Duration,
    stats: &ProxyStats,
    director: &impl Director,
) -> Option<(SocketAddr, N::Stream)> {
    use futures::StreamExt;
    use futures::stream::FuturesUnordered;

    let stagger = DIAL_STAGGER.min(timeout);
    let dial = |server: SocketAddr| async move {
        (server, tokio::time::timeout(timeout, N::connect(server)).await)
    };
    let report = |server: SocketAddr| director.dial_failed(server);
    let mut rest = servers.iter().copied();
    let mut pending = FuturesUnordered::new();
    // The servers being dialled, and those of them that have been slow.
    let (mut dialling, mut slow): (Vec<SocketAddr>, Vec<SocketAddr>) = (Vec::new(), Vec::new());
    loop {
        if pending.is_empty() {
            let next = rest.next()?;
            dialling.push(next);
            pending.push(dial(next));
        }
        // Every push starts a new loop, and with it a new stagger: when it fires, each dial
        // pending has been for at least that long.
        let more = rest.len() > 0;
        tokio::select! {
            Some((server, result)) = pending.next() => {
                dialling.retain(|s| *s != server);
                match result {
                    Ok(Ok(stream)) => {
                        slow.into_iter().filter(|s| dialling.contains(s)).for_each(report);
                        return Some((server, stream));
                    }
                    Ok(Err(e)) => tracing::debug!(%server, error = %e, "proxy: dial failed, trying the next server"),
                    Err(_) => tracing::debug!(%server, ?timeout, "proxy: dial timed out, trying the next server"),
                }
                stats.dial_failures.fetch_add(1, Ordering::Relaxed);
                report(server);
                if let Some(next) = rest.next() {
                    dialling.push(next);
                    pending.push(dial(next));
                }
            }
            () = tokio::time::sleep(stagger), if more => {
                slow.clone_from(&dialling);
                if let Some(next) = rest.next() {
                    tracing::debug!(%next, "proxy: no server connected yet, dialling the next one beside");
                    dialling.push(next);
                    pending.push(dial(next));
                }
            }
        }
    }
}

/// How a spliced connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Both sides are done (or one failed).
    Closed,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies both ways until both sides are done; half-closes are passed on. Without a byte
/// read from either side for `idle`, both legs are closed.
async fn splice<N: Net>(client: N::Stream, upstream: N::Stream, idle: Option<Duration>) -> End {
    for leg in [&client, &upstream] {
        N::tune(leg);
    }
    let activity = Arc::new(Activity::new());
    let mut client = Watched { inner: client, activity: Arc::clone(&activity) };
    let mut upstream = Watched { inner: upstream, activity: Arc::clone(&activity) };
    let copy = copy::bidirectional(&mut client, &mut upstream);
    let Some(idle) = idle else {
        log_end(copy.await);
        return End::Closed;
    };
    tokio::pin!(copy);
    loop {
        tokio::select! {
            result = &mut copy => {
                log_end(result);
                return End::Closed;
            }
            () = tokio::time::sleep_until(activity.last() + idle) => {
                if activity.last() + idle <= Instant::now() {
                    return End::Idle;
                }
            }
        }
    }
}

fn log_end(result: io::Result<(u64, u64)>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "proxy: connection ended with an error");
    }
}

/// When a byte was last read from either leg of one connection.
#[derive(Debug)]
struct Activity {
    base: Instant,
    /// Nanoseconds since `base`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { base: Instant::now(), last: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// A leg whose reads count as activity (every byte relayed is read first, so reads cover
/// both directions).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Os;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

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

    fn config(max_connections: usize, idle_timeout: Option<Duration>) -> ProxyConfig {
        ProxyConfig { dial_timeout: Duration::from_secs(1), max_connections, idle_timeout }
    }

    /// A server that never sends anything and closes a connection when the client did.
    async fn silent_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink).await;
                });
            }
        });
        addr
    }

    async fn proxy_to(
        servers: Vec<SocketAddr>,
        config: ProxyConfig,
    ) -> (SocketAddr, Arc<ProxyStats>) {
        let (tx, _list, _) = picker(servers);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve::<Os, _>(listener, tx, config, Arc::clone(&stats)));
        (proxy, stats)
    }

    /// Waits (up to 2 s) until `cond` holds.
    async fn eventually(cond: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(2), "condition not reached in 2 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

    type Shared = Arc<std::sync::Mutex<Vec<SocketAddr>>>;

    /// Stands in for the driver: answers each pick with the servers rotated by one more,
    /// as the node's round robin does; the list can be replaced.
    #[derive(Clone)]
    struct Picker {
        list: Shared,
        /// The failed dials the proxy reported.
        failed: Shared,
        turn: Arc<AtomicU64>,
    }

    impl Director for Picker {
        async fn backends_for(&self, _client: IpAddr) -> Option<Vec<SocketAddr>> {
            let mut l = self.list.lock().unwrap().clone();
            let turn = self.turn.fetch_add(1, Ordering::Relaxed);
            let n = l.len().max(1);
            l.rotate_left(usize::try_from(turn).unwrap() % n);
            Some(l)
        }

        fn dial_failed(&self, server: SocketAddr) {
            self.failed.lock().unwrap().push(server);
        }
    }

    /// The picker, its list and its failed dials.
    fn picker(servers: Vec<SocketAddr>) -> (Picker, Shared, Shared) {
        let list = Arc::new(std::sync::Mutex::new(servers));
        let failed = Shared::default();
        let p =
            Picker { list: Arc::clone(&list), failed: Arc::clone(&failed), turn: Arc::default() };
        (p, list, failed)
    }

    #[tokio::test]
    async fn the_pick_order_is_dialled_and_a_dead_server_is_skipped_without_client_errors() {
        let a = named_server("a").await;
        let dead = closed_port().await;
        let b = named_server("b").await;
        let (tx, list, failed) = picker(vec![a, dead, b]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve::<Os, _>(listener, tx, config(1000, None), Arc::clone(&stats)));
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(ask(proxy).await);
        }
        // Every client got an answer; the dead server's turns went to the next one.
        assert!(seen.iter().all(|s| s == "a" || s == "b"), "{seen:?}");
        assert_eq!(seen.iter().filter(|s| *s == "a").count(), 2, "{seen:?}");
        assert_eq!(stats.dial_failures.load(Ordering::Relaxed), 2);
        assert_eq!(*failed.lock().unwrap(), [dead, dead], "each failed dial is reported");
        assert_eq!(stats.unserved.load(Ordering::Relaxed), 0);
        // New backends take effect for the next connection.
        *list.lock().unwrap() = vec![b];
        assert_eq!(ask(proxy).await, "b");
    }

    /// A server whose accept queue is full: the kernel drops further SYNs, so a dial to it
    /// neither connects nor fails before the dial timeout (as a powered-off host).
    fn unanswering_server() -> (SocketAddr, Vec<std::net::TcpStream>) {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        // Backlog 0 holds one connection; a second one makes sure it is full.
        let fill: Vec<std::net::TcpStream> = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            })
            .collect();
        std::mem::forget(s); // listening, never accepting, for the test's life
        (addr, fill)
    }

    #[tokio::test]
    async fn a_server_that_does_not_connect_makes_way_for_the_next_within_the_stagger() {
        let (hanging, _fill) = unanswering_server();
        let b = named_server("b").await;
        let (tx, _list, reported) = picker(vec![hanging, b]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        let config = ProxyConfig { dial_timeout: Duration::from_secs(30), ..config(1000, None) };
        tokio::spawn(serve::<Os, _>(listener, tx, config, Arc::clone(&stats)));
        // Answered by b while the dial to the first is still pending: no dial failed (it
        // would take 30 s to), and the slow one is reported so the next clients avoid it.
        assert_eq!(ask(proxy).await, "b");
        assert_eq!(stats.dial_failures.load(Ordering::Relaxed), 0);
        eventually(|| reported.lock().unwrap().as_slice() == [hanging]).await;
    }

    #[tokio::test]
    async fn no_reachable_server_closes_the_client() {
        let (tx, _list, _) = picker(vec![closed_port().await]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(serve::<Os, _>(listener, tx, config(1000, None), Arc::clone(&stats)));
        assert_eq!(ask(proxy).await, "");
        assert_eq!(stats.unserved.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn over_the_cap_new_clients_are_refused_at_once_and_counted() {
        let (proxy, stats) = proxy_to(vec![silent_server().await], config(2, None)).await;
        let held =
            [TcpStream::connect(proxy).await.unwrap(), TcpStream::connect(proxy).await.unwrap()];
        eventually(|| stats.forwarded.load(Ordering::Relaxed) == 2).await;
        assert_eq!(stats.active.load(Ordering::Relaxed), 2);
        assert_eq!(stats.max_connections.load(Ordering::Relaxed), 2);
        // The third is reset without waiting for anything.
        let mut third = TcpStream::connect(proxy).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 2);
        // A held connection ending frees its place.
        drop(held);
        eventually(|| stats.active.load(Ordering::Relaxed) == 0).await;
        let _again = TcpStream::connect(proxy).await.unwrap();
        eventually(|| stats.forwarded.load(Ordering::Relaxed) == 3).await;
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_connection_idle_both_ways_is_closed_and_traffic_keeps_one_open() {
        let idle = Duration::from_millis(300);
        let (proxy, stats) = proxy_to(vec![silent_server().await], config(10, Some(idle))).await;
        let started = std::time::Instant::now();
        let mut quiet = TcpStream::connect(proxy).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), quiet.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(0))), "{n:?}");
        let took = started.elapsed();
        assert!(took >= idle && took < idle * 3, "closed after {took:?}");
        assert_eq!(stats.idle_closed.load(Ordering::Relaxed), 1);

        // One byte every 100 ms, client to server only: the connection stays for 1 s.
        let mut busy = TcpStream::connect(proxy).await.unwrap();
        for _ in 0..10 {
            busy.write_all(b".").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stats.idle_closed.load(Ordering::Relaxed), 1);
        eventually(|| stats.idle_closed.load(Ordering::Relaxed) == 2).await;
    }

    #[tokio::test]
    async fn half_close_is_passed_on() {
        // Reads the whole request (until the client's FIN), then answers and closes.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut request = Vec::new();
            s.read_to_end(&mut request).await.unwrap();
            s.write_all(format!("got {}", String::from_utf8_lossy(&request)).as_bytes())
                .await
                .unwrap();
        });
        let (proxy, _stats) =
            proxy_to(vec![server], config(10, Some(Duration::from_secs(5)))).await;
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "got ping");
    }
}

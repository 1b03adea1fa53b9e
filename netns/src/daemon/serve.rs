//! The local status socket and the metrics endpoint. Each request asks the driver for a
//! snapshot, so nothing is built while nobody asks.
//!
//! Both are bounded, so that a flood of connections costs a known number of descriptors
//! and never the health probes theirs: at most [`MAX_CONNECTIONS`] each at once (beyond
//! that new ones are closed at once and counted), and every connection has a deadline.
//!
//! - The status socket (`cplb status`): the daemon writes one JSON snapshot and closes; the
//!   client sends nothing. The socket is mode 0660, given to `--status-group` if set, and
//!   each peer's credentials (SO_PEERCRED) are checked: root, cplbd's own user, or a
//!   member of that group.
//! - The metrics endpoint: HTTP/1.1 (hyper), `GET /metrics` only (404 for other paths, 405
//!   for other methods), the request head within [`HEADER_TIMEOUT`], one request per
//!   connection, the whole exchange within [`CONNECTION_TIMEOUT`].

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::UCred;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::driver::Input;
use crate::limits::{self, RateLog};
use crate::status::{self, EndpointStatus, ProcessStatus, Snapshot};

/// Connections each endpoint serves at once.
pub(super) const MAX_CONNECTIONS: usize = 64;
/// How long a metrics client may take to send its request head.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection may last in all: request, snapshot and the answer written (a
/// client that does not read its answer is dropped then).
pub(super) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The status socket's mode.
pub(super) const STATUS_MODE: u32 = 0o660;
/// The metrics' content type: OpenMetrics text, as `prometheus-client` encodes it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counters of both endpoints.
#[derive(Debug, Default)]
pub(super) struct EndpointStats {
    status_denied: AtomicU64,
    status_refused: AtomicU64,
    metrics_refused: AtomicU64,
}

impl EndpointStats {
    fn status(&self) -> EndpointStatus {
        EndpointStatus {
            status_denied: self.status_denied.load(Ordering::Relaxed),
            status_refused: self.status_refused.load(Ordering::Relaxed),
            metrics_refused: self.metrics_refused.load(Ordering::Relaxed),
        }
    }
}

/// Who may read the status socket besides root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StatusAccess {
    /// cplbd's own (effective) user.
    uid: u32,
    /// `--status-group`, resolved.
    gid: Option<u32>,
}

impl StatusAccess {
    /// Whether a peer may read the status; the reason when not.
    fn check(&self, peer: &UCred) -> Result<(), String> {
        self.check_ids(peer.uid(), peer.gid(), peer.pid())
    }

    fn check_ids(&self, uid: u32, gid: u32, pid: Option<i32>) -> Result<(), String> {
        if uid == 0 || uid == self.uid {
            return Ok(());
        }
        let Some(group) = self.gid else {
            return Err(format!("uid {uid} is neither root nor cplbd's user"));
        };
        // SO_PEERCRED carries the primary group only; the others are the process's.
        if gid == group || pid.and_then(groups_of).is_some_and(|groups| groups.contains(&group)) {
            return Ok(());
        }
        let pid = pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        Err(format!(
            "uid {uid} gid {gid} (pid {pid}) is neither root, cplbd's user nor in group {group}"
        ))
    }
}

/// The supplementary groups of a process (`Groups:` in `/proc/PID/status`).
fn groups_of(pid: i32) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(line.split_whitespace().filter_map(|g| g.parse().ok()).collect())
}

/// Gives the bound status socket its mode (0660) and, with `group` (a name or a number),
/// that group; returns who may read it. Run while cplbd may still change a file's group.
pub(super) fn secure_status_socket(path: &Path, group: Option<&str>) -> Result<StatusAccess> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(STATUS_MODE))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    let gid = match group {
        None => None,
        Some(name) => {
            let gid = match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => g.gid.as_raw(),
                Ok(None) => {
                    name.parse().map_err(|_| anyhow!("--status-group: no group {name:?}"))?
                }
                Err(e) => return Err(anyhow!("--status-group: looking up {name:?}: {e}")),
            };
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
                .with_context(|| format!("giving {} to group {name}", path.display()))?;
            Some(gid)
        }
    };
    let uid = nix::unistd::geteuid().as_raw();
    tracing::info!(socket = %path.display(), mode = "0660", ?gid, uid, "status socket");
    Ok(StatusAccess { uid, gid })
}

async fn snapshot(driver: &mpsc::Sender<Input>, stats: &EndpointStats) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    driver.send(Input::Snapshot(tx)).await.ok()?;
    let mut snap = rx.await.ok()?;
    snap.process = Some(ProcessStatus {
        open_fds: limits::open_fds().unwrap_or(0),
        max_fds: limits::nofile_soft().unwrap_or(0),
    });
    snap.endpoints = Some(stats.status());
    Some(snap)
}

/// `cplb status`: one JSON snapshot per connection, to permitted peers.
pub(super) async fn status(
    listener: UnixListener,
    driver: mpsc::Sender<Input>,
    access: StatusAccess,
    stats: Arc<EndpointStats>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut denials = RateLog::new("status socket: peer refused");
    let mut refusals = RateLog::new("status socket: connection closed at the connection cap");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let allowed = stream
            .peer_cred()
            .map_err(|e| format!("no peer credentials: {e}"))
            .and_then(|cred| access.check(&cred));
        if let Err(why) = allowed {
            stats.status_denied.fetch_add(1, Ordering::Relaxed);
            denials.note(why);
            continue;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            stats.status_refused.fetch_add(1, Ordering::Relaxed);
            refusals.note(format_args!("{MAX_CONNECTIONS} connections served"));
            continue;
        };
        let driver = driver.clone();
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, async {
                let Some(snap) = snapshot(&driver, &stats).await else { return };
                let body = serde_json::to_string(&snap).unwrap_or_default();
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

/// Prometheus metrics at `/metrics`, over hyper.
pub(super) async fn metrics(
    listener: TcpListener,
    driver: mpsc::Sender<Input>,
    stats: Arc<EndpointStats>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refusals = RateLog::new("metrics: connection closed at the connection cap");
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(8 * 1024);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            stats.metrics_refused.fetch_add(1, Ordering::Relaxed);
            refusals.note(format_args!("from {peer} ({MAX_CONNECTIONS} connections served)"));
            continue;
        };
        let (driver, stats) = (driver.clone(), Arc::clone(&stats));
        let connection = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |request| {
                let (driver, stats) = (driver.clone(), Arc::clone(&stats));
                async move { Ok::<_, Infallible>(answer(&request, &driver, &stats).await) }
            }),
        );
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics: connection timed out"),
            }
        });
    }
}

/// The answer to one metrics request.
async fn answer(
    request: &Request<Incoming>,
    driver: &mpsc::Sender<Input>,
    stats: &EndpointStats,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    };
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: the metrics are at /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: GET /metrics\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(snap) = snapshot(driver, stats).await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "cplbd is stopping\n");
    };
    let mut r = Response::new(Full::new(Bytes::from(status::metrics(&snap))));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpStream, UnixStream};

    /// Stands in for the driver: answers every snapshot request.
    fn driver() -> mpsc::Sender<Input> {
        let (tx, mut rx) = mpsc::channel::<Input>(16);
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                if let Input::Snapshot(reply) = input {
                    let _ = reply.send(Snapshot { pid: 42, ..Snapshot::default() });
                }
            }
        });
        tx
    }

    async fn metrics_server() -> (std::net::SocketAddr, Arc<EndpointStats>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(EndpointStats::default());
        tokio::spawn(metrics(listener, driver(), Arc::clone(&stats)));
        (addr, stats)
    }

    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
            .await
            .unwrap()
            .unwrap();
        out
    }

    #[tokio::test]
    async fn metrics_only_at_get_metrics() {
        let (addr, _) = metrics_server().await;
        let ok = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("content-type: application/openmetrics-text"), "{ok}");
        assert!(ok.contains("\nprocess_open_fds "), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let other = exchange(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post =
            exchange(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{post}");
        assert!(post.contains("allow: GET, HEAD"), "{post}");
        let garbage = exchange(addr, "\x16\x03\x01 hello\r\n\r\n").await;
        assert!(garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    }

    #[tokio::test]
    async fn idle_metrics_connections_are_capped_and_timed_out() {
        let (addr, stats) = metrics_server().await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 10 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The ten beyond the cap are closed at once.
        let start = std::time::Instant::now();
        while stats.metrics_refused.load(Ordering::Relaxed) < 10 {
            assert!(start.elapsed() < Duration::from_secs(2), "not refused");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut last = idle.pop().unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(last.read(&mut buf).await.unwrap_or(0), 0);
        // The held ones get no request head in time: closed after HEADER_TIMEOUT, and the
        // endpoint answers again.
        let first = &mut idle[0];
        let n = tokio::time::timeout(HEADER_TIMEOUT * 2, first.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(_) | Err(_))), "still open after {:?}", HEADER_TIMEOUT * 2);
        let took = start.elapsed();
        assert!(took >= HEADER_TIMEOUT - Duration::from_millis(200), "closed after {took:?}");
        let ok = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    }

    #[tokio::test]
    async fn the_status_socket_serves_permitted_peers_and_keeps_its_protocol() {
        let dir = std::env::temp_dir().join(format!("cplb-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let access = secure_status_socket(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let stats = Arc::new(EndpointStats::default());
        tokio::spawn(status(listener, driver(), access, Arc::clone(&stats)));
        // What `cplb status` does: connect, read to the end.
        let path2 = path.clone();
        let snap =
            tokio::task::spawn_blocking(move || status::query(&path2, Duration::from_secs(1)))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(snap.pid, 42);
        assert!(snap.process.unwrap().open_fds > 0);
        assert_eq!(snap.endpoints.unwrap(), EndpointStatus::default());
        let mut s = UnixStream::connect(&path).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("{\"pid\":42,"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn peers_are_root_our_user_or_the_group() {
        let access = StatusAccess { uid: 1000, gid: Some(2000) };
        let open = StatusAccess { uid: 1000, gid: None };
        let cred = |uid, gid| UCredLike { uid, gid };
        for (who, ok_with_group, ok_without) in [
            (cred(0, 0), true, true),
            (cred(1000, 1000), true, true),
            (cred(1001, 2000), true, false),
            (cred(1001, 1001), false, false),
        ] {
            assert_eq!(who.check(&access).is_ok(), ok_with_group, "{who:?}");
            assert_eq!(who.check(&open).is_ok(), ok_without, "{who:?}");
        }
        // Supplementary groups are read from /proc/PID/status.
        let pid = i32::try_from(std::process::id()).unwrap();
        assert!(groups_of(pid).is_some());
        assert!(groups_of(-1).is_none());
    }

    /// UCred has no public constructor: the same checks on plain numbers.
    #[derive(Debug)]
    struct UCredLike {
        uid: u32,
        gid: u32,
    }

    impl UCredLike {
        fn check(&self, access: &StatusAccess) -> Result<(), String> {
            access.check_ids(self.uid, self.gid, None)
        }
    }
}

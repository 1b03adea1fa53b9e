//! The API server stand-in of the turmoil hosts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How the API server stand-in behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ApiMode {
    /// Every request answered `200 ok`.
    Answer,
    /// Connections accepted, requests read, nothing ever answered (a deadlocked server).
    Hang,
}

/// How often the API server stand-in sends an event down a watch.
pub(super) const WATCH_EVENT_EVERY: Duration = Duration::from_millis(100);

/// The API server stand-in: every request is answered `200 ok` (a health check's and a
/// client's alike), one per connection; a watch (`?watch=true`, as client-go asks) is
/// answered with a chunked stream that sends an event every [`WATCH_EVENT_EVERY`] and
/// never ends by itself; or, hung, nothing is ever answered. Its connections belong to it:
/// when the server's task is aborted (the API server dies) they close with it.
pub(super) async fn api_server(port: u16, v4: bool, mode: ApiMode) -> std::io::Result<()> {
    let any: IpAddr = if v4 { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let listener = turmoil::net::TcpListener::bind(SocketAddr::new(any, port)).await?;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (mut s, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            // Reap finished connections so a long run does not keep them all.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        connections.spawn(async move {
            let mut buf = vec![0u8; 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            if mode == ApiMode::Hang {
                std::future::pending::<()>().await;
            }
            let head = seen.split(|b| *b == b'\n').next().unwrap_or_default();
            if head.windows(6).any(|w| w == b"watch=") {
                let _ = watch_stream(&mut s).await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            let _ = s.shutdown().await;
        });
    }
}

/// A watch's answer: the head, then one chunk per event until the client goes away.
async fn watch_stream(s: &mut turmoil::net::TcpStream) -> std::io::Result<()> {
    s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await?;
    let mut tick = tokio::time::interval(WATCH_EVENT_EVERY);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let event = format!("{{\"type\":\"MODIFIED\",\"n\":{n}}}\n");
        s.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes()).await?;
        n += 1;
    }
}


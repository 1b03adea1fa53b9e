//! The API clients of a turmoil run: each traffic source of a host opens a fresh TCP
//! connection to VIP:port `rate` times a second, or holds a watch, through the segment's
//! model of who answers for the VIP; every attempt is reported with its result.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::dilated;
use super::fabric::{Report, SharedFabric, lock, sim_now};

/// How long a client waits for its answer (a watch: for its next event), in the
/// scenario's time.
pub(super) const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a broken watch waits before it is opened again.
const REWATCH: Duration = Duration::from_millis(500);

/// One traffic source of a client host.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source {
    /// Its index in the scenario's traffic.
    pub(super) n: usize,
    /// Connections a second.
    pub(super) rate: f64,
    /// Where it connects.
    pub(super) vip: IpAddr,
    /// When it starts.
    pub(super) start: Duration,
    /// A watch instead of fresh connections.
    pub(super) watch: bool,
}

/// A host's API clients, from `me`, to the VIPs on `port`.
pub(super) async fn traffic_host(
    me: IpAddr,
    sources: Vec<Source>,
    port: u16,
    fabric: SharedFabric,
) -> turmoil::Result {
    for src in sources {
        let fabric = fabric.clone();
        tokio::spawn(async move {
            let now = turmoil::sim_elapsed().unwrap_or_default();
            tokio::time::sleep(dilated(src.start).saturating_sub(now)).await;
            if src.watch {
                return watch(me, src, port, &fabric).await;
            }
            let every = Duration::from_secs_f64(1.0 / src.rate.max(0.001));
            let mut tick = tokio::time::interval(dilated(every));
            loop {
                tick.tick().await;
                let fabric = fabric.clone();
                tokio::spawn(async move { attempt(me, src, port, &fabric).await });
            }
        });
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// One request on a fresh connection: answered 200, or failed and why.
async fn attempt(me: IpAddr, src: Source, port: u16, fabric: &SharedFabric) {
    let at = sim_now();
    let route = lock(fabric).route(SocketAddr::new(src.vip, port), me, at);
    let result = match route {
        None => Err("nobody answers for the VIP".to_owned()),
        Some((via, to)) => match tokio::time::timeout(dilated(CLIENT_TIMEOUT), fetch(to)).await {
            Ok(Ok(())) => Ok(via),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("{to}: no answer within {CLIENT_TIMEOUT:?}")),
        },
    };
    let report = Report::Attempt { at, source: src.n, from: me, vip: src.vip, result };
    lock(fabric).reports.push(report);
}

/// A watch, as client-go holds one: a single connection to VIP:port asking `?watch=true`;
/// every event read is an answer; the stream ending, failing or going silent for
/// [`CLIENT_TIMEOUT`] is a failure, and the watch is opened again after [`REWATCH`].
async fn watch(me: IpAddr, src: Source, port: u16, fabric: &SharedFabric) {
    let record = |result: Result<IpAddr, String>| {
        let report =
            Report::Attempt { at: sim_now(), source: src.n, from: me, vip: src.vip, result };
        lock(fabric).reports.push(report);
    };
    loop {
        let route = lock(fabric).route(SocketAddr::new(src.vip, port), me, sim_now());
        let Some((via, to)) = route else {
            record(Err("nobody answers for the VIP".to_owned()));
            tokio::time::sleep(dilated(REWATCH)).await;
            continue;
        };
        if let Ok(Ok(mut s)) =
            tokio::time::timeout(dilated(CLIENT_TIMEOUT), turmoil::net::TcpStream::connect(to))
                .await
            && s.write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nhost: vip\r\n\r\n")
                .await
                .is_ok()
        {
            let mut buf = vec![0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(dilated(CLIENT_TIMEOUT), s.read(&mut buf)).await
                && n > 0
            {
                record(Ok(via));
            }
        }
        record(Err(format!("{to}: the watch ended")));
        tokio::time::sleep(dilated(REWATCH)).await;
    }
}

async fn fetch(to: SocketAddr) -> std::io::Result<()> {
    let mut s = turmoil::net::TcpStream::connect(to).await?;
    s.write_all(b"GET /version HTTP/1.1\r\nhost: vip\r\n\r\n").await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.1 200") { Ok(()) } else { Err(std::io::Error::other("no 200")) }
}

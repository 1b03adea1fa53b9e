//! The local status socket and the metrics endpoint. Each request asks the driver for a
//! snapshot, so nothing is built while nobody asks.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};

use super::driver::Input;
use super::status::{self, Snapshot};

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

async fn snapshot(driver: &mpsc::Sender<Input>) -> Option<Snapshot> {
    let (tx, rx) = oneshot::channel();
    driver.send(Input::Snapshot(tx)).await.ok()?;
    rx.await.ok()
}

/// `cplb status`: one JSON snapshot per connection.
pub(super) async fn status(listener: UnixListener, driver: mpsc::Sender<Input>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(snap) = snapshot(&driver).await else { return };
        let body = serde_json::to_string(&snap).unwrap_or_default();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, async {
                let _ = stream.write_all(body.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

/// Prometheus text on any path.
pub(super) async fn metrics(listener: TcpListener, driver: mpsc::Sender<Input>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let driver = driver.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLIENT_TIMEOUT, async {
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let Some(snap) = snapshot(&driver).await else { return };
                let text = status::metrics(&snap);
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            })
            .await;
        });
    }
}

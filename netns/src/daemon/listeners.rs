//! The sockets cplbd listens on, bound at start while every capability is still there: the
//! userspace proxy's port, the status socket and the metrics endpoint.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use anyhow::{Context, Result, bail};
use cplb_core::config::{Keepalived, LoadBalancerMode};
use tokio::net::{TcpListener, UnixListener};

use super::options::Options;
use super::serve::{self, StatusAccess};

/// Everything bound.
#[derive(Debug)]
pub(super) struct Listeners {
    /// The userspace proxy's port (k0s's default mode only).
    pub(super) proxy: Option<TcpListener>,
    /// `cplb status`.
    pub(super) status: UnixListener,
    /// Who may ask the status socket.
    pub(super) status_access: StatusAccess,
    /// Prometheus metrics, when asked for.
    pub(super) metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the options and the configuration ask for.
    pub(super) async fn bind(options: &Options, keepalived: &Keepalived) -> Result<Self> {
        let proxy = match keepalived.mode() {
            LoadBalancerMode::UserspaceProxy => {
                Some(bind_any(keepalived.user_space_proxy_bind_port)?)
            }
            _ => None,
        };
        let status = bind_status(&options.status_socket)?;
        let status_access =
            serve::secure_status_socket(&options.status_socket, options.status_group.as_deref())?;
        let metrics = match options.metrics {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding metrics on {addr}"))?,
            ),
            None => None,
        };
        Ok(Self { proxy, status, status_access, metrics })
    }
}

/// The proxy listens on every address, IPv6 and IPv4 (as k0s's `:6444`), or IPv4 only where
/// IPv6 is disabled.
fn bind_any(port: u16) -> Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let dual = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
        s.set_only_v6(false)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    };
    let v4 = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    };
    let socket =
        dual().or_else(|_| v4()).with_context(|| format!("binding the proxy on port {port}"))?;
    socket.listen(1024).context("listen")?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into())?)
}

fn bind_status(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a killed predecessor; a live daemon still answering on it
    // would mean two daemons, which is refused.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another cplbd answers on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    UnixListener::bind(path)
        .with_context(|| format!("binding the status socket {}", path.display()))
}

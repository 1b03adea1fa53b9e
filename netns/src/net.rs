//! The TCP network the proxy and the health prober use (and the harness's stand-in API
//! server): the host's (tokio's sockets, [`Os`]) here, or a simulated one the harness
//! provides (turmoil's), so that the same proxy and prober code runs in `cplbd` and in
//! simulation.
//!
//! A trait, not a cfg switch of type aliases: Cargo unifies features across a workspace
//! build, so a simulation feature enabled for the harness would also swap the sockets of
//! the `cplbd` built beside it. With the trait both exist side by side and the choice is a
//! type parameter.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_TIME: Duration = Duration::from_secs(30);
/// Time between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes before the kernel gives the connection up.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// A TCP network.
pub trait Net: Send + Sync + 'static {
    /// A connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// A listening socket.
    type Listener: Send + 'static;

    /// Opens a connection.
    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Takes the next connection.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
    /// The address a listener is bound to (with port 0 asked, the port it was given).
    fn listener_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// The local end of a connection: for an accepted one, the address the client reached
    /// (a VIP with direct routing, where the listener is bound to every address).
    fn local_addr(stream: &Self::Stream) -> io::Result<SocketAddr>;
    /// Small writes go out at once, and a vanished peer is noticed (TCP keepalive) where
    /// the network has such options.
    fn tune(stream: &Self::Stream);
    /// Closes with a reset where the network can (the peer learns at once), else plainly.
    fn reset(stream: Self::Stream);
}

/// The host's network: tokio's sockets.
#[derive(Debug, Clone, Copy)]
pub struct Os;

impl Net for Os {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    fn connect(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        tokio::net::TcpStream::connect(addr)
    }

    async fn accept(listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        listener.accept().await
    }

    fn listener_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    fn local_addr(stream: &Self::Stream) -> io::Result<SocketAddr> {
        stream.local_addr()
    }

    fn tune(stream: &Self::Stream) {
        let _ = stream.set_nodelay(true);
        let keepalive = TcpKeepalive::new()
            .with_time(KEEPALIVE_TIME)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
    }

    fn reset(stream: Self::Stream) {
        let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
    }
}

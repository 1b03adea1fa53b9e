//! turmoil's simulated TCP network as the [`Net`] the daemon's proxy and prober (and the
//! stand-in API server) run over inside a turmoil host.

use std::io;
use std::net::SocketAddr;

use cplb_netns::net::Net;

/// turmoil's network (only inside a turmoil host).
#[derive(Debug, Clone, Copy)]
pub struct Turmoil;

impl Net for Turmoil {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn connect(addr: SocketAddr) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
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

    fn tune(_: &Self::Stream) {}

    fn reset(stream: Self::Stream) {
        drop(stream);
    }
}

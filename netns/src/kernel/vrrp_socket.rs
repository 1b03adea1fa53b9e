//! Raw IP protocol 112 sockets: how VRRP advertisements leave and reach the daemon.
//!
//! IPv4 sends whole packets (`IP_HDRINCL`) built by the core's encoder, so the TTL (255),
//! the source (the interface's primary address) and the checksum are exactly what the core
//! decided; receiving gives the whole packet, header included. IPv6 raw sockets never carry
//! the header, so the kernel fills it from socket options (hop limit 255, the bound source)
//! and hands the received hop limit and destination over as control messages.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;

use cplb_core::vrrp::{self, IpHeader, IpParams};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: i32 = 112;
const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// The receive buffer asked for: room for a few thousand advertisements, so that a burst
/// of other protocol-112 traffic on the link is absorbed rather than overflowing onto the
/// real master's adverts (`SO_RCVBUFFORCE` with CAP_NET_ADMIN, else capped at rmem_max).
pub const RECEIVE_BUFFER: usize = 4 << 20;
/// The buffer of the socket that only counts the packets no instance expects: a flood
/// overflows it (counted) rather than holding memory.
pub const COUNTING_BUFFER: usize = 256 << 10;

/// One received VRRP packet: header fields and the VRRP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source, destination and TTL / hop limit.
    pub header: IpHeader,
    /// The VRRP message.
    pub payload: Vec<u8>,
}

/// What one read gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// IPv4: the whole packet, header included, for the core to parse and judge.
    Ipv4(Vec<u8>),
    /// IPv6: the kernel took the header apart already.
    Ipv6(Packet),
}

/// A read and the socket's count of packets it lost to a full queue since it was opened
/// (`SO_RXQ_OVFL`; `None` when the kernel did not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// What was read.
    pub received: Received,
    /// Packets lost so far.
    pub overflows: Option<u32>,
}

/// A raw VRRP socket on one interface, for one address family.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    v4: bool,
    ifindex: u32,
}

impl VrrpSocket {
    /// Opens the socket on interface `ifname` (`ifindex`), joins the VRRP group there, and,
    /// for IPv6, binds `source` (the link-local or unicast source the core sends from).
    /// `filter` sorts what it receives from its first packet on (see [`Self::set_filter`]).
    pub fn open(
        ifname: &str,
        ifindex: u32,
        v4: bool,
        source: Option<IpAddr>,
        filter: &[SockFilter],
    ) -> io::Result<Self> {
        Self::open_as(ifname, ifindex, v4, Some(source), RECEIVE_BUFFER, filter)
    }

    /// Opens a second socket on the interface that only receives: with the
    /// [`Keep::Others`](super::vrrp_filter::Keep) filter it takes the packets no instance
    /// expects, so that they are counted without sharing the adverts' queue.
    pub fn open_counting(
        ifname: &str,
        ifindex: u32,
        v4: bool,
        filter: &[SockFilter],
    ) -> io::Result<Self> {
        Self::open_as(ifname, ifindex, v4, None, COUNTING_BUFFER, filter)
    }

    /// `sending`: `Some(source)` for the socket adverts are sent from.
    fn open_as(
        ifname: &str,
        ifindex: u32,
        v4: bool,
        sending: Option<Option<IpAddr>>,
        buffer: usize,
        filter: &[SockFilter],
    ) -> io::Result<Self> {
        let family = if v4 { "IPv4" } else { "IPv6" };
        let context = |what: &'static str| {
            move |e: io::Error| {
                io::Error::new(
                    e.kind(),
                    format!("raw {family} VRRP socket on {ifname}: {what}: {e}"),
                )
            }
        };
        let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_VRRP)))
            .map_err(context("socket"))?;
        // Before the socket can receive anything: no packet reaches both sockets.
        socket.attach_filter(filter).map_err(context("SO_ATTACH_FILTER"))?;
        // Only this interface's packets in, and sends out of it whatever the routes say.
        socket.bind_device(Some(ifname.as_bytes())).map_err(context("SO_BINDTODEVICE"))?;
        if v4 {
            socket.set_header_included_v4(true).map_err(context("IP_HDRINCL"))?;
            socket
                .join_multicast_v4_n(&GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
                .map_err(context("joining 224.0.0.18"))?;
            socket.set_multicast_loop_v4(false).map_err(context("IP_MULTICAST_LOOP"))?;
        } else if let Some(source) = sending {
            socket.set_multicast_hops_v6(255).map_err(context("IPV6_MULTICAST_HOPS"))?;
            socket.set_unicast_hops_v6(255).map_err(context("IPV6_UNICAST_HOPS"))?;
            socket.set_multicast_if_v6(ifindex).map_err(context("IPV6_MULTICAST_IF"))?;
            socket.join_multicast_v6(&GROUP_V6, ifindex).map_err(context("joining ff02::12"))?;
            socket.set_multicast_loop_v6(false).map_err(context("IPV6_MULTICAST_LOOP"))?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
                .map_err(|e| context("IPV6_RECVHOPLIMIT")(e.into()))?;
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| context("IPV6_RECVPKTINFO")(e.into()))?;
            if let Some(IpAddr::V6(src)) = source {
                // At boot the link-local address may still be tentative (duplicate address
                // detection takes a second or so): bind it anyway. Sends fail until DAD is
                // done, which a backup does not notice and the retry of the next advert
                // covers.
                socket.set_freebind_v6(true).map_err(context("IPV6_FREEBIND"))?;
                let scope = if is_link_local(src) { ifindex } else { 0 };
                socket
                    .bind(&SockAddr::from(SocketAddrV6::new(src, 0, 0, scope)))
                    .map_err(context("binding the source address"))?;
            }
        } else {
            socket.join_multicast_v6(&GROUP_V6, ifindex).map_err(context("joining ff02::12"))?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
                .map_err(|e| context("IPV6_RECVHOPLIMIT")(e.into()))?;
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| context("IPV6_RECVPKTINFO")(e.into()))?;
        }
        if setsockopt(&socket, sockopt::RcvBufForce, &buffer).is_err() {
            socket.set_recv_buffer_size(buffer).map_err(context("SO_RCVBUF"))?;
        }
        setsockopt(&socket, sockopt::RxqOvfl, &1).map_err(|e| context("SO_RXQ_OVFL")(e.into()))?;
        socket.set_nonblocking(true).map_err(context("O_NONBLOCK"))?;
        // `AsyncFd::new` is deprecated because a borrowed descriptor could be closed while
        // registered; here the AsyncFd owns the socket (an OwnedFd), so that cannot happen,
        // and the safe constructor keeps this crate free of `unsafe`.
        #[allow(deprecated)]
        let fd = AsyncFd::new(socket).map_err(context("registering with tokio"))?;
        Ok(Self { fd, v4, ifindex })
    }

    /// Sorts what this socket receives in the kernel (see [`super::vrrp_filter`]); a later
    /// call replaces the program (a reload that changed the instances).
    pub fn set_filter(&self, program: &[SockFilter]) -> io::Result<()> {
        let family = if self.v4 { "IPv4" } else { "IPv6" };
        self.fd.get_ref().attach_filter(program).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "raw {family} VRRP socket on interface {}: SO_ATTACH_FILTER: {e}",
                    self.ifindex
                ),
            )
        })
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Waits for the next packet. Cancel-safe: a packet is only taken when returned.
    pub async fn recv(&self) -> io::Result<Datagram> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|inner| {
                if self.v4 { recv_v4(inner.get_ref()) } else { recv_v6(inner.get_ref()) }
            });
            match result {
                Ok(Ok(Some(packet))) => return Ok(packet),
                // A packet that is not VRRP over IP at all: the core never sees it.
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }

    /// Sends one VRRP message from `src` to `dst` with TTL / hop limit 255.
    pub fn send(&self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        let socket = self.fd.get_ref();
        if self.v4 {
            let bytes = ipv4_packet(src, dst, payload)?;
            socket.send_to(&bytes, &SockAddr::from(SocketAddr::new(dst, 0)))?;
        } else {
            let scope = match dst {
                IpAddr::V6(d) if d.is_multicast() || is_link_local(d) => self.ifindex,
                _ => 0,
            };
            let IpAddr::V6(d) = dst else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "IPv4 peer on IPv6"));
            };
            socket.send_to(payload, &SockAddr::from(SocketAddrV6::new(d, 0, 0, scope)))?;
        }
        Ok(())
    }
}

/// Wraps a VRRP message in the IPv4 header the core would write (TTL 255, TOS 0xc0).
fn ipv4_packet(src: IpAddr, dst: IpAddr, payload: &[u8]) -> io::Result<Vec<u8>> {
    vrrp::wrap_message(payload, &IpParams::new(src, dst))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

fn recv_v4(socket: &Socket) -> io::Result<Option<Datagram>> {
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(u32);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let overflows = overflows(&msg)?;
    let n = msg.bytes;
    let Some(bytes) = buf.get(..n) else { return Ok(None) };
    Ok(Some(Datagram { received: Received::Ipv4(bytes.to_vec()), overflows }))
}

/// The `SO_RXQ_OVFL` count a read carried.
fn overflows<S>(msg: &nix::sys::socket::RecvMsg<'_, '_, S>) -> io::Result<Option<u32>> {
    Ok(msg.cmsgs().map_err(io::Error::from)?.find_map(|c| match c {
        ControlMessageOwned::RxqOvfl(n) => Some(n),
        _ => None,
    }))
}

fn recv_v6(socket: &Socket) -> io::Result<Option<Datagram>> {
    let mut buf = [0u8; 2048];
    // nix reads the control buffer's length, not its capacity.
    let mut cmsg = vec![0u8; 128];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg =
        recvmsg::<SockaddrIn6>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
            .map_err(io::Error::from)?;
    let Some(src) = msg.address.map(|a| a.ip()) else { return Ok(None) };
    let overflows = overflows(&msg)?;
    let mut hop_limit = None;
    let mut dst = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv6HopLimit(h) => hop_limit = u8::try_from(h).ok(),
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            _ => {}
        }
    }
    let n = msg.bytes;
    let (Some(ttl), Some(dst)) = (hop_limit, dst) else { return Ok(None) };
    let Some(payload) = buf.get(..n) else { return Ok(None) };
    let packet = Packet {
        header: IpHeader { src: IpAddr::V6(src), dst: IpAddr::V6(dst), ttl },
        payload: payload.to_vec(),
    };
    Ok(Some(Datagram { received: Received::Ipv6(packet), overflows }))
}

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

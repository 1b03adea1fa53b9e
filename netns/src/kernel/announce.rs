//! Gratuitous ARP and unsolicited neighbour advertisements: how the LAN learns that a VIP
//! moved. Frames are built with pnet_packet and sent, from the interface's own MAC, on a
//! send-only AF_PACKET socket: protocol 0, so the kernel hands it no frames (no receive
//! queue), and no membership, so the interface never goes promiscuous.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use nix::sys::socket::LinkAddr;
use pnet_base::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags,
};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::MutableIpv6Packet;
use socket2::{Domain, Protocol, Socket, Type};

const ETH_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
/// Neighbour advertisement: 24 bytes, plus the 8-byte target link-layer address option.
const NA_LEN: usize = 32;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Sends announcements out of one interface.
pub struct Announcer {
    /// AF_PACKET, SOCK_RAW, protocol 0, bound to the interface: it only sends.
    socket: Socket,
    mac: [u8; 6],
    name: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("interface", &self.name).finish_non_exhaustive()
    }
}

impl Announcer {
    /// Opens a send-only AF_PACKET socket on interface `ifindex`.
    ///
    /// The socket has protocol 0: the kernel registers no packet handler for it, so it
    /// receives nothing and queues nothing, and it asks for no promiscuous (or any other)
    /// membership. Bound to the interface, it sends complete Ethernet frames out of it.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let (name, link) = link_address(ifindex)?;
        let mac = match link.addr() {
            Some(mac) if link.halen() == 6 => mac,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("interface {name} has no MAC address to announce from"),
                ));
            }
        };
        let step = |what: &str, e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("announcer on {name} (ifindex {ifindex}): {what}: {e}"),
            )
        };
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
            .map_err(|e| step("opening the AF_PACKET socket", e))?;
        // Belt and braces: protocol 0 already means nothing is ever queued for reading.
        socket.set_recv_buffer_size(0).map_err(|e| step("shrinking SO_RCVBUF", e))?;
        // Announcements are repeated, so one lost to a full send queue costs little, while
        // blocking would stall the driver that calls `announce`.
        socket.set_nonblocking(true).map_err(|e| step("setting O_NONBLOCK", e))?;
        // The interface's own AF_PACKET address from getifaddrs: family AF_PACKET, its
        // index, protocol 0 (binding with protocol 0 keeps the socket's protocol, 0, so the
        // bind does not hook the socket into the receive path either).
        nix::sys::socket::bind(socket.as_raw_fd(), &link)
            .map_err(|e| step("binding the packet socket to the interface", e.into()))?;
        Ok(Self { socket, mac, name })
    }

    /// Announces `addr` once: a gratuitous ARP for IPv4, an unsolicited neighbour
    /// advertisement for IPv6.
    pub fn announce(&mut self, addr: IpAddr) -> io::Result<()> {
        let frame = match addr {
            IpAddr::V4(a) => gratuitous_arp(self.mac, a),
            IpAddr::V6(a) => neighbour_advertisement(self.mac, a),
        };
        match self.socket.send(&frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "announcing {addr} on {}: sent {n} of {} bytes",
                self.name,
                frame.len()
            ))),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("announcing {addr} on {}: sending the frame: {e}", self.name),
            )),
        }
    }
}

/// The name and the AF_PACKET address (`sockaddr_ll`, with the MAC) of interface `ifindex`,
/// from getifaddrs, which lists one AF_PACKET entry per link of the calling thread's
/// network namespace.
fn link_address(ifindex: u32) -> io::Result<(String, LinkAddr)> {
    let interfaces = nix::ifaddrs::getifaddrs().map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("announcer on ifindex {ifindex}: listing interfaces (getifaddrs): {e}"),
        )
    })?;
    interfaces
        .filter_map(|i| {
            // Only AF_PACKET entries convert to a link address.
            let link = *i.address?.as_link_addr()?;
            (link.ifindex() == ifindex as usize).then_some((i.interface_name, link))
        })
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("announcer: no interface with index {ifindex}"),
            )
        })
}

/// A gratuitous ARP request for `ip` from `mac`, byte for byte what keepalived sends:
/// broadcast, sender and target address both `ip`, target hardware address broadcast.
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; ETH_HEADER + ARP_LEN];
    let src = MacAddr::from(mac);
    if let Some(mut eth) = MutableEthernetPacket::new(&mut frame) {
        eth.set_destination(MacAddr::broadcast());
        eth.set_source(src);
        eth.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = frame.get_mut(ETH_HEADER..).and_then(MutableArpPacket::new) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(src);
        arp.set_sender_proto_addr(ip);
        arp.set_target_hw_addr(MacAddr::broadcast());
        arp.set_target_proto_addr(ip);
    }
    frame
}

/// An unsolicited neighbour advertisement for `ip` (RFC 4861 §7.2.6) to all nodes, with
/// the override flag and the target link-layer address option.
pub fn neighbour_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut frame = vec![0u8; ETH_HEADER + IPV6_HEADER + NA_LEN];
    let src = MacAddr::from(mac);
    if let Some(mut eth) = MutableEthernetPacket::new(&mut frame) {
        // 33:33 + the low 32 bits of ff02::1.
        eth.set_destination(MacAddr::new(0x33, 0x33, 0, 0, 0, 1));
        eth.set_source(src);
        eth.set_ethertype(EtherTypes::Ipv6);
    }
    if let Some(mut ip6) = frame.get_mut(ETH_HEADER..).and_then(MutableIpv6Packet::new) {
        ip6.set_version(6);
        ip6.set_payload_length(NA_LEN as u16);
        ip6.set_next_header(IpNextHeaderProtocols::Icmpv6);
        // Receivers drop neighbour discovery with any other hop limit (RFC 4861 §7.1.2).
        ip6.set_hop_limit(255);
        ip6.set_source(ip);
        ip6.set_destination(ALL_NODES);
    }
    if let Some(mut na) =
        frame.get_mut(ETH_HEADER + IPV6_HEADER..).and_then(MutableNeighborAdvertPacket::new)
    {
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        na.set_flags(NeighborAdvertFlags::Override);
        na.set_target_addr(ip);
        // Type 2 (target link-layer address), length 1 (8 bytes), then the MAC.
        na.set_options(&[NdpOption {
            option_type: NdpOptionTypes::TargetLLAddr,
            length: 1,
            data: mac.to_vec(),
        }]);
    }
    if let Some(icmp) = frame.get(ETH_HEADER + IPV6_HEADER..).and_then(Icmpv6Packet::new) {
        let sum = icmpv6::checksum(&icmp, &ip, &ALL_NODES);
        if let Some(b) = frame.get_mut(ETH_HEADER + IPV6_HEADER + 2..ETH_HEADER + IPV6_HEADER + 4) {
            b.copy_from_slice(&sum.to_be_bytes());
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_matches_keepalived_on_the_wire() {
        // ../shared/vectors/keepalived-v2-pass-k0s.txt: ctl1 announcing 10.200.0.200.
        let want =
            "ffffffffffffeaebfa0e778108060001080006040001eaebfa0e77810ac800c8ffffffffffff0ac800c8";
        let frame =
            gratuitous_arp([0xea, 0xeb, 0xfa, 0x0e, 0x77, 0x81], Ipv4Addr::new(10, 200, 0, 200));
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn neighbour_advertisement_is_valid_icmpv6() {
        let ip: Ipv6Addr = "fd00:200::200".parse().unwrap();
        let mac = [2, 0, 0, 0, 0, 9];
        let frame = neighbour_advertisement(mac, ip);
        assert_eq!(frame.len(), 14 + 40 + 32);
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14 + 7], 255, "hop limit");
        let icmp = Icmpv6Packet::new(&frame[54..]).unwrap();
        assert_eq!(icmp.get_icmpv6_type(), Icmpv6Types::NeighborAdvert);
        // The checksum verifies: recomputing over the packet gives the stored value.
        assert_eq!(icmpv6::checksum(&icmp, &ip, &ALL_NODES), icmp.get_checksum());
        assert_ne!(icmp.get_checksum(), 0);
        // Override flag (0x20 in the first flags byte), target, and the option with our MAC.
        assert_eq!(frame[54 + 4], 0x20);
        assert_eq!(&frame[54 + 8..54 + 24], &ip.octets());
        assert_eq!(&frame[54 + 24..54 + 32], &[2, 1, 2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn opening_an_unknown_interface_names_the_index() {
        // Interface indexes are positive; 0 is never one.
        let err = Announcer::open(0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("index 0"), "{err}");
    }
}

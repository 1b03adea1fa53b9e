//! Gratuitous ARP and unsolicited neighbour advertisements: how the LAN learns that a VIP
//! moved. Frames are built with pnet_packet and sent on an AF_PACKET socket
//! (pnet_datalink), from the interface's own MAC.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_datalink::MacAddr;
use pnet_datalink::{Channel, DataLinkSender, NetworkInterface};
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags,
};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::MutableIpv6Packet;

const ETH_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
/// Neighbour advertisement: 24 bytes, plus the 8-byte target link-layer address option.
const NA_LEN: usize = 32;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Sends announcements out of one interface.
pub struct Announcer {
    tx: Box<dyn DataLinkSender>,
    mac: [u8; 6],
    name: String,
}

impl std::fmt::Debug for Announcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Announcer").field("interface", &self.name).finish_non_exhaustive()
    }
}

impl Announcer {
    /// Opens an AF_PACKET socket on interface `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let iface: NetworkInterface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.index == ifindex)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface with index {ifindex}"),
                )
            })?;
        let mac = iface.mac.map(|m| m.octets()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface {} has no MAC address to announce from", iface.name),
            )
        })?;
        // Announcements are rare and small; a tiny receive buffer keeps the unused receive
        // half of the channel from holding the interface's traffic.
        let config = pnet_datalink::Config {
            read_buffer_size: 64,
            write_buffer_size: 4096,
            ..pnet_datalink::Config::default()
        };
        match pnet_datalink::channel(&iface, config) {
            Ok(Channel::Ethernet(tx, _rx)) => Ok(Self { tx, mac, name: iface.name }),
            Ok(_) => Err(io::Error::other(format!("{}: not an Ethernet channel", iface.name))),
            Err(e) => {
                Err(io::Error::new(e.kind(), format!("AF_PACKET socket on {}: {e}", iface.name)))
            }
        }
    }

    /// Announces `addr` once: a gratuitous ARP for IPv4, an unsolicited neighbour
    /// advertisement for IPv6.
    pub fn announce(&mut self, addr: IpAddr) -> io::Result<()> {
        let frame = match addr {
            IpAddr::V4(a) => gratuitous_arp(self.mac, a),
            IpAddr::V6(a) => neighbour_advertisement(self.mac, a),
        };
        match self.tx.send_to(&frame, None) {
            Some(result) => result.map_err(|e| {
                io::Error::new(e.kind(), format!("announcing {addr} on {}: {e}", self.name))
            }),
            None => Err(io::Error::other(format!("announcing {addr} on {}: no buffer", self.name))),
        }
    }
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
}

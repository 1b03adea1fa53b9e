//! The engine's L2 segment: frames between hosts as the world's network lets them through
//! (partitions, cuts, loss, delay, duplication), a learning switch, and ARP caches updated
//! by gratuitous ARP.

use core::net::IpAddr;

use cplb_core::vrrp::{Incoming, IpHeader};

use super::host::ETH0;
use super::{Ev, LATENCY, Lan};
use crate::observe::Observer;
use crate::world::World;

/// What crosses the segment.
#[derive(Debug, Clone)]
pub(super) enum Frame {
    Vrrp { src: IpAddr, dst: IpAddr, payload: Vec<u8> },
    Garp { mac: u64, ip: IpAddr },
}

impl Lan {
    pub(super) fn send(&mut self, from: usize, to: usize, frame: &Frame, world: &World) {
        let network = world.network();
        if !network.link_up(from) {
            return;
        }
        // The switch learns the sender's port from every frame it forwards.
        let mac = self.hosts[from].mac;
        if self.switch.get(&mac) != Some(&from) {
            self.switch.insert(mac, from);
        }
        if !network.connected(from, to) {
            return;
        }
        let (duplicate, loss, delay) = (network.duplicate(), network.loss(), network.delay());
        let copies = if duplicate > 0.0 && self.random() < duplicate { 2 } else { 1 };
        for _ in 0..copies {
            if loss > 0.0 && self.random() < loss {
                continue;
            }
            let latency = match delay {
                Some((min, max)) => min + (max - min).mul_f64(self.random()),
                None => LATENCY,
            };
            self.push(self.now + latency, Ev::Deliver { to, frame: frame.clone() });
        }
    }

    pub(super) fn broadcast(&mut self, from: usize, frame: &Frame, world: &World) {
        for to in 0..self.hosts.len() {
            if to != from {
                self.send(from, to, frame, world);
            }
        }
    }

    pub(super) fn deliver(&mut self, to: usize, frame: Frame, world: &World, obs: &mut Observer) {
        if !world.network().powered(to) || !world.network().link_up(to) {
            return;
        }
        let h = &mut self.hosts[to];
        match frame {
            Frame::Garp { mac, ip } => {
                // Linux (arp_accept=0) updates an existing entry from a gratuitous ARP.
                if let Some(entry) = h.arp.get_mut(&ip) {
                    *entry = (mac, self.now);
                }
            }
            Frame::Vrrp { src, dst, payload } => {
                let local = world.clock(to).local(self.now);
                if let Some(d) = h.daemon.as_mut() {
                    let header = IpHeader { src, dst, ttl: 255 };
                    d.node.handle_packet(
                        local,
                        Incoming { ifindex: ETH0, header, payload: &payload },
                    );
                    self.pump(to, world, obs);
                }
            }
        }
    }
}

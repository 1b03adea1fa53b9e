//! VRRP in: the raw sockets of each interface and family, and the task that reads them.
//!
//! The kernel sorts protocol-112 traffic between two sockets (see
//! [`crate::kernel::vrrp_filter`]): what could be an advert of a configured instance, and
//! the rest. Each has its own kernel queue and its own daemon queue, and the driver takes
//! the adverts first, so a flood of the rest can overflow only its own queues (counted)
//! and never delays or displaces the real master's adverts.

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use cplb_core::vrrp::IfIndex;

use super::Input;
use super::plan::Plan;
use crate::kernel::announce::Announcer;
use crate::kernel::linux::{LinuxKernel, VrrpSockets};
use crate::kernel::vrrp_filter::{self, Expected, Keep};
use crate::kernel::vrrp_socket::VrrpSocket;

/// Packets the receive tasks may have queued for the node, per queue (about 2 ms of a
/// one-core flood; the socket's buffer holds the rest).
pub(super) const PACKET_QUEUE: usize = 8192;

/// Where the receive tasks put packets: queues of their own, so that packets can neither
/// block the other inputs nor be blocked by them.
#[derive(Debug, Clone)]
pub(super) struct Queues {
    /// Packets of the adverts' socket.
    pub(super) adverts: mpsc::Sender<Input>,
    /// Packets of the counting socket, taken only when nothing else waits.
    pub(super) others: mpsc::Sender<Input>,
}

/// Opens the VRRP sockets and the announcer of every group that has none yet, and sorts
/// every group's traffic by its instances as they are now (a reload may have changed them).
pub(super) fn open_sockets(kernel: &mut LinuxKernel, plan: &Plan) -> Result<()> {
    for group in &plan.groups {
        let v4 = group.address.is_ipv4();
        let ifindex = IfIndex(group.iface.index);
        let key = (ifindex, v4);
        let expected: Vec<Expected> =
            group.instances.iter().map(|(_, c)| Expected::of(c)).collect();
        let adverts = vrrp_filter::program(v4, &expected, Keep::Expected);
        let others = vrrp_filter::program(v4, &expected, Keep::Others);
        let name = &group.iface.name;
        match kernel.sockets.entry(key) {
            Entry::Vacant(e) => {
                let source =
                    if v4 { None } else { group.instances.first().map(|(_, c)| c.primary_address) };
                let open = || -> std::io::Result<VrrpSockets> {
                    Ok(VrrpSockets {
                        adverts: Arc::new(VrrpSocket::open(
                            name,
                            group.iface.index,
                            v4,
                            source,
                            &adverts,
                        )?),
                        others: Arc::new(VrrpSocket::open_counting(
                            name,
                            group.iface.index,
                            v4,
                            &others,
                        )?),
                    })
                };
                e.insert(open().with_context(|| format!("opening the VRRP sockets on {name}"))?);
            }
            Entry::Occupied(e) => {
                // Between the two calls a packet may be sorted by one old and one new
                // program (taken twice or not at all): a reload's moment, like a lost advert.
                let sockets = e.get();
                sockets.adverts.set_filter(&adverts)?;
                sockets.others.set_filter(&others)?;
            }
        }
        if let Entry::Vacant(e) = kernel.announcers.entry(ifindex) {
            e.insert(
                Announcer::open(group.iface.index)
                    .with_context(|| format!("opening the packet socket on {name}"))?,
            );
        }
    }
    Ok(())
}

/// Receives VRRP packets on one interface's two sockets for the driver, the adverts'
/// socket first.
pub(super) async fn receive(ifindex: IfIndex, sockets: VrrpSockets, queues: Queues) {
    let mut adverts = Reader::new(ifindex, "adverts");
    let mut others = Reader::new(ifindex, "others");
    loop {
        let open = tokio::select! {
            biased;
            read = sockets.adverts.recv() => adverts.pass(read, &queues.adverts).await,
            read = sockets.others.recv() => others.pass(read, &queues.others).await,
        };
        if !open {
            return;
        }
    }
}

/// One socket's reading state.
struct Reader {
    ifindex: IfIndex,
    socket: &'static str,
    /// The error it fails with, logged once per condition, not at every retry.
    failing: Option<String>,
    /// SO_RXQ_OVFL counts from the socket's creation: what is new since the last read.
    kernel_lost: u32,
    /// Reads the daemon's queue had no room for (a flood outpacing the node).
    queue_lost: u64,
}

impl Reader {
    fn new(ifindex: IfIndex, socket: &'static str) -> Self {
        Self { ifindex, socket, failing: None, kernel_lost: 0, queue_lost: 0 }
    }

    /// Hands a read to the driver; `false` once the driver is gone.
    async fn pass(
        &mut self,
        read: std::io::Result<crate::kernel::vrrp_socket::Datagram>,
        queue: &mpsc::Sender<Input>,
    ) -> bool {
        let (ifindex, socket) = (self.ifindex, self.socket);
        match read {
            Ok(datagram) => {
                if self.failing.take().is_some() {
                    tracing::info!(%ifindex, socket, "VRRP receive works again");
                }
                let now_lost = datagram.overflows.unwrap_or(self.kernel_lost);
                let lost = u64::from(now_lost.wrapping_sub(self.kernel_lost)) + self.queue_lost;
                self.kernel_lost = now_lost;
                // Never wait here: while this task waits the socket's queue fills, and what
                // overflows there is whatever comes next.
                match queue.try_send(Input::Packet { ifindex, datagram, lost }) {
                    Ok(()) => self.queue_lost = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => self.queue_lost = lost + 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            Err(e) => {
                let text = e.to_string();
                if self.failing.as_deref() != Some(text.as_str()) {
                    tracing::warn!(%ifindex, socket, error = %text, "VRRP receive failed");
                    self.failing = Some(text);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        true
    }
}

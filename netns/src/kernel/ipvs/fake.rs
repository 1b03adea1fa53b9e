//! A stand-in for the kernel's IPVS behind a netlink socket, for tests on kernels without
//! IPVS: [`FakeSocket`] is a `netlink_sys::AsyncSocket` that genetlink's connection runs
//! on like on the kernel's, answering the controller's family lookup and the IPVS commands
//! from a table of its own ([`FakeKernel`]) with the replies, acks and errnos
//! `ip_vs_ctl.c` gives. It can hold its replies back, so a test can show that a request
//! waits for the kernel without holding the thread.

use core::net::{IpAddr, SocketAddr};
use core::num::NonZeroI32;
use core::task::{Context, Poll, Waker};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use cplb_core::config::{LbAlgo, LbKind};
use cplb_core::lb::{Change, FWMARK_BASE, RealServer, ServiceKey, ServiceSpec};
use netlink_packet_core::{
    DoneMessage, ErrorMessage, NLM_F_DUMP, NLM_F_MULTIPART, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_sys::{AsyncSocket, Socket, SocketAddr as NetlinkAddr};

use super::attrs::{DestAttr, IpvsAttr, ServiceAttr};
use super::message::{IPVS_GENL_NAME, IpvsCmd, IpvsMessage, address, dest_attrs, service_attrs};
use super::model::{
    AF_INET6, IP_VS_CONN_F_FWD_MASK, KernelDest, KernelService, family, scheduler_from_name,
};
use super::{EEXIST, ENOENT, ESRCH, Ipvs, IpvsError, Listing, live};

/// GENL_ID_CTRL: the controller family's fixed id.
const GENL_ID_CTRL: u16 = 16;
/// The id the fake gives the IPVS family.
const FAKE_FAMILY: u16 = 0x2a;
/// IP_VS_SVC_F_HASHED: the flag the kernel adds to every service it holds.
const IP_VS_SVC_F_HASHED: u32 = 0x0002;
/// EINVAL: a request the fake cannot read.
const EINVAL: i32 = 22;
/// EOPNOTSUPP: a command the fake does not carry out.
const EOPNOTSUPP: i32 = 95;

thread_local! {
    /// The fake kernel that the sockets opened on this thread talk to.
    static INSTALLED: RefCell<Option<FakeKernel>> = const { RefCell::new(None) };
}

/// The fake kernel's state, shared by its sockets and the test.
#[derive(Debug, Default)]
struct State {
    /// Whether the "IPVS" family resolves.
    has_ipvs: bool,
    /// The virtual services, each with its destinations.
    services: Vec<(KernelService, Vec<KernelDest>)>,
    /// Replies are kept back while set.
    held: bool,
    /// Datagrams waiting to be received, per socket.
    inboxes: Vec<VecDeque<Vec<u8>>>,
    /// Receivers waiting for a datagram.
    wakers: Vec<Waker>,
}

/// A fake kernel: its IPVS table and the datagrams on their way to its sockets.
#[derive(Debug, Clone, Default)]
pub(super) struct FakeKernel(Arc<Mutex<State>>);

impl FakeKernel {
    /// A kernel with IPVS (`has_ipvs`) or without, and an empty table.
    pub(super) fn new(has_ipvs: bool) -> Self {
        Self(Arc::new(Mutex::new(State { has_ipvs, ..State::default() })))
    }

    /// Makes the sockets opened on this thread from now on talk to this kernel.
    pub(super) fn install(&self) {
        INSTALLED.with(|k| *k.borrow_mut() = Some(self.clone()));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked holding the lock has failed already.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps replies back until [`FakeKernel::release`].
    pub(super) fn hold(&self) {
        self.state().held = true;
    }

    /// Lets the replies kept back go.
    pub(super) fn release(&self) {
        let mut state = self.state();
        state.held = false;
        state.wakers.drain(..).for_each(Waker::wake);
    }

    /// How many datagrams wait to be received, on all sockets.
    pub(super) fn waiting(&self) -> usize {
        self.state().inboxes.iter().map(VecDeque::len).sum()
    }
}

/// One socket of the fake kernel.
#[derive(Debug)]
pub(super) struct FakeSocket {
    kernel: FakeKernel,
    /// This socket's inbox in the kernel's state.
    inbox: usize,
    /// An unused netlink socket, only there because the trait lends one out.
    socket: Socket,
}

impl AsyncSocket for FakeSocket {
    fn socket_ref(&self) -> &Socket {
        &self.socket
    }

    fn socket_mut(&mut self) -> &mut Socket {
        &mut self.socket
    }

    fn new(protocol: isize) -> io::Result<Self> {
        let kernel = INSTALLED
            .with(|k| k.borrow().clone())
            .ok_or_else(|| io::Error::other("no fake kernel installed on this thread"))?;
        let inbox = {
            let mut state = kernel.state();
            state.inboxes.push(VecDeque::new());
            state.inboxes.len() - 1
        };
        Ok(Self { kernel, inbox, socket: Socket::new(protocol)? })
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_send_to(cx, buf, &NetlinkAddr::new(0, 0))
    }

    fn poll_send_to(
        &self,
        _: &mut Context<'_>,
        buf: &[u8],
        _: &NetlinkAddr,
    ) -> Poll<io::Result<usize>> {
        let mut state = self.kernel.state();
        let replies = state.answer(buf)?;
        state.inboxes[self.inbox].extend(replies);
        if !state.held {
            state.wakers.drain(..).for_each(Waker::wake);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_recv<B: bytes::BufMut>(
        &self,
        cx: &mut Context<'_>,
        buf: &mut B,
    ) -> Poll<io::Result<()>> {
        self.poll_recv_from(cx, buf).map_ok(|_| ())
    }

    fn poll_recv_from<B: bytes::BufMut>(
        &self,
        cx: &mut Context<'_>,
        buf: &mut B,
    ) -> Poll<io::Result<NetlinkAddr>> {
        self.poll_recv_from_full(cx).map_ok(|(datagram, from)| {
            buf.put_slice(&datagram);
            from
        })
    }

    fn poll_recv_from_full(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Vec<u8>, NetlinkAddr)>> {
        let mut state = self.kernel.state();
        let datagram = if state.held { None } else { state.inboxes[self.inbox].pop_front() };
        match datagram {
            // From the kernel: port 0.
            Some(datagram) => Poll::Ready(Ok((datagram, NetlinkAddr::new(0, 0)))),
            None => {
                state.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// One message's bytes, finalized.
fn bytes<T: NetlinkSerializable>(mut message: NetlinkMessage<T>) -> Vec<u8> {
    message.finalize();
    let mut out = vec![0; message.buffer_len()];
    message.serialize(&mut out);
    out
}

/// The header of an answer to the request with `header`.
fn answering(header: &NetlinkHeader, flags: u16) -> NetlinkHeader {
    let mut out = NetlinkHeader::default();
    out.sequence_number = header.sequence_number;
    out.flags = flags;
    out
}

/// NLMSG_ERROR for the request with `header`: an ack (`errno` 0) or an error.
fn ack(header: &NetlinkHeader, request: &[u8], errno: i32) -> Vec<u8> {
    let mut error = ErrorMessage::default();
    error.code = NonZeroI32::new(-errno);
    error.header = request.get(..16).unwrap_or_default().to_vec();
    let payload = NetlinkPayload::<GenlMessage<IpvsMessage>>::Error(error);
    bytes(NetlinkMessage::new(answering(header, 0), payload))
}

/// The 16 bytes of `union nf_inet_addr`, as the kernel sends an address.
fn union_bytes(ip: IpAddr) -> Vec<u8> {
    let mut out = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    out.resize(16, 0);
    out
}

/// A service as `ip_vs_genl_fill_service` lays it out.
fn service_reply(svc: &KernelService) -> IpvsMessage {
    let mut attrs = vec![ServiceAttr::Af(svc.af)];
    match svc.addr {
        Some(addr) if svc.fwmark == 0 => attrs.extend([
            ServiceAttr::Protocol(svc.protocol),
            ServiceAttr::Addr(union_bytes(addr.ip())),
            ServiceAttr::Port(addr.port()),
        ]),
        _ => attrs.push(ServiceAttr::Fwmark(svc.fwmark)),
    }
    let netmask = if svc.af == AF_INET6 { 128u32.to_ne_bytes() } else { [0xff; 4] };
    attrs.extend([
        ServiceAttr::SchedName(svc.sched_name.clone()),
        ServiceAttr::Flags { flags: svc.flags, mask: u32::MAX },
        ServiceAttr::Timeout(svc.timeout),
        ServiceAttr::Netmask(netmask),
    ]);
    IpvsMessage { cmd: IpvsCmd::NewService, attrs: vec![IpvsAttr::Service(attrs)] }
}

/// A destination as `ip_vs_genl_fill_dest` lays it out.
fn dest_reply(dest: &KernelDest) -> IpvsMessage {
    let attrs = vec![
        DestAttr::Addr(union_bytes(dest.addr.ip())),
        DestAttr::Port(dest.addr.port()),
        DestAttr::FwdMethod(dest.fwd_method),
        DestAttr::Weight(dest.weight),
        DestAttr::UpperThreshold(0),
        DestAttr::LowerThreshold(0),
        DestAttr::AddrFamily(family(dest.addr.ip())),
    ];
    IpvsMessage { cmd: IpvsCmd::NewDest, attrs: vec![IpvsAttr::Dest(attrs)] }
}

/// What names a service in a request: its family, and its mark or protocol and address.
#[derive(Debug, PartialEq, Eq)]
struct ServiceId {
    af: u16,
    fwmark: u32,
    address: Option<(u16, SocketAddr)>,
}

impl ServiceId {
    fn of_request(attrs: &[ServiceAttr]) -> Option<Self> {
        let mut id = Self { af: 0, fwmark: 0, address: None };
        let (mut protocol, mut addr, mut port) = (None, None, None);
        for attr in attrs {
            match attr {
                ServiceAttr::Af(af) => id.af = *af,
                ServiceAttr::Fwmark(mark) => id.fwmark = *mark,
                ServiceAttr::Protocol(p) => protocol = Some(*p),
                ServiceAttr::Addr(bytes) => addr = Some(bytes),
                ServiceAttr::Port(p) => port = Some(*p),
                _ => {}
            }
        }
        if id.fwmark == 0 {
            let ip = address(addr, id.af, "service address").ok()?;
            id.address = Some((protocol?, SocketAddr::new(ip, port?)));
        }
        Some(id)
    }

    fn of(svc: &KernelService) -> Self {
        let address = svc.addr.filter(|_| svc.fwmark == 0).map(|a| (svc.protocol, a));
        Self { af: svc.af, fwmark: svc.fwmark, address }
    }
}

impl State {
    /// The datagrams answering one request datagram.
    fn answer(&mut self, request: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let invalid =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let kind = NetlinkBuffer::new_checked(request).map_err(|e| invalid(&e))?.message_type();
        if kind == GENL_ID_CTRL {
            let message = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(request)
                .map_err(|e| invalid(&e))?;
            return Ok(vec![self.family(&message.header, request, &message.payload)]);
        }
        let message = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(request)
            .map_err(|e| invalid(&e))?;
        let header = message.header;
        let NetlinkPayload::InnerMessage(genl) = message.payload else {
            return Ok(vec![ack(&header, request, EINVAL)]);
        };
        if kind != FAKE_FAMILY || !self.has_ipvs {
            return Ok(vec![ack(&header, request, ENOENT)]);
        }
        if header.flags & NLM_F_DUMP == NLM_F_DUMP {
            let replies = self.dump(&genl.payload);
            let mut out: Vec<Vec<u8>> = replies
                .into_iter()
                .map(|reply| {
                    let genl = GenlMessage::new(
                        netlink_packet_generic::GenlHeader {
                            cmd: reply.command(),
                            version: reply.version(),
                        },
                        reply,
                        FAKE_FAMILY,
                    );
                    let payload = NetlinkPayload::InnerMessage(genl);
                    bytes(NetlinkMessage::new(answering(&header, NLM_F_MULTIPART), payload))
                })
                .collect();
            let done = NetlinkPayload::<GenlMessage<IpvsMessage>>::Done(DoneMessage::default());
            out.push(bytes(NetlinkMessage::new(answering(&header, NLM_F_MULTIPART), done)));
            return Ok(out);
        }
        let errno = self.command(&genl.payload).err().unwrap_or(0);
        Ok(vec![ack(&header, request, errno)])
    }

    /// CTRL_CMD_GETFAMILY: the IPVS family's id, when this kernel has it.
    fn family(
        &self,
        header: &NetlinkHeader,
        request: &[u8],
        genl: &NetlinkPayload<GenlMessage<GenlCtrl>>,
    ) -> Vec<u8> {
        let NetlinkPayload::InnerMessage(genl) = genl else {
            return ack(header, request, EINVAL);
        };
        let asked = genl.payload.nlas.iter().find_map(|nla| match nla {
            GenlCtrlAttrs::FamilyName(name) => Some(name.as_str()),
            _ => None,
        });
        if asked != Some(IPVS_GENL_NAME) || !self.has_ipvs {
            return ack(header, request, ENOENT);
        }
        let reply = GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned()),
                GenlCtrlAttrs::FamilyId(FAKE_FAMILY),
            ],
        };
        let payload = NetlinkPayload::InnerMessage(GenlMessage::from_payload(reply));
        bytes(NetlinkMessage::new(answering(header, 0), payload))
    }

    fn find(&self, attrs: Option<&[ServiceAttr]>) -> Result<usize, i32> {
        let id = attrs.and_then(ServiceId::of_request).ok_or(EINVAL)?;
        self.services.iter().position(|(svc, _)| ServiceId::of(svc) == id).ok_or(ESRCH)
    }

    /// A dump's replies: the services, or a service's destinations (none for a service
    /// that does not exist, as the kernel answers).
    fn dump(&self, request: &IpvsMessage) -> Vec<IpvsMessage> {
        match request.cmd {
            IpvsCmd::GetService => {
                self.services.iter().map(|(svc, _)| service_reply(svc)).collect()
            }
            IpvsCmd::GetDest => match self.find(service_attrs(request)) {
                Ok(i) => self.services[i].1.iter().map(dest_reply).collect(),
                Err(_) => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Carries out a command; the errno the kernel would answer.
    fn command(&mut self, request: &IpvsMessage) -> Result<(), i32> {
        let service = service_attrs(request);
        match request.cmd {
            IpvsCmd::NewService => {
                let mut svc =
                    KernelService::from_attrs(service.ok_or(EINVAL)?).map_err(|_| EINVAL)?;
                scheduler_from_name(&svc.sched_name).ok_or(ENOENT)?;
                if self.find(service).is_ok() {
                    return Err(EEXIST);
                }
                svc.flags |= IP_VS_SVC_F_HASHED;
                self.services.push((svc, Vec::new()));
            }
            IpvsCmd::SetService => {
                let i = self.find(service)?;
                let new = KernelService::from_attrs(service.ok_or(EINVAL)?).map_err(|_| EINVAL)?;
                scheduler_from_name(&new.sched_name).ok_or(ENOENT)?;
                let svc = &mut self.services[i].0;
                svc.sched_name = new.sched_name;
                svc.flags = new.flags | IP_VS_SVC_F_HASHED;
                svc.timeout = new.timeout;
            }
            IpvsCmd::DelService => {
                let i = self.find(service)?;
                self.services.remove(i);
            }
            IpvsCmd::NewDest | IpvsCmd::SetDest | IpvsCmd::DelDest => {
                let i = self.find(service)?;
                let (svc, dests) = &mut self.services[i];
                let attrs = dest_attrs(request).ok_or(EINVAL)?;
                let addr = dest_addr(attrs, svc.af).ok_or(EINVAL)?;
                let at = dests.iter().position(|d| d.addr == addr);
                match (request.cmd, at) {
                    (IpvsCmd::NewDest, Some(_)) => return Err(EEXIST),
                    (IpvsCmd::NewDest, None) => {
                        let mut dest = KernelDest::from_attrs(attrs, svc.af).map_err(|_| EINVAL)?;
                        dest.fwd_method &= IP_VS_CONN_F_FWD_MASK;
                        dests.push(dest);
                    }
                    (IpvsCmd::SetDest, Some(at)) => {
                        let mut dest = KernelDest::from_attrs(attrs, svc.af).map_err(|_| EINVAL)?;
                        dest.fwd_method &= IP_VS_CONN_F_FWD_MASK;
                        dests[at] = dest;
                    }
                    (_, Some(at)) => {
                        dests.remove(at);
                    }
                    (_, None) => return Err(ENOENT),
                }
            }
            _ => return Err(EOPNOTSUPP),
        }
        Ok(())
    }
}

/// The address and port of a destination in a request.
fn dest_addr(attrs: &[DestAttr], service_af: u16) -> Option<SocketAddr> {
    let (mut af, mut addr, mut port) = (service_af, None, None);
    for attr in attrs {
        match attr {
            DestAttr::AddrFamily(f) => af = *f,
            DestAttr::Addr(bytes) => addr = Some(bytes),
            DestAttr::Port(p) => port = Some(*p),
            _ => {}
        }
    }
    Some(SocketAddr::new(address(addr, af, "destination address").ok()?, port?))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The driver's whole life, as the guest test runs it against the kernel.
#[test]
fn the_live_scenario_runs_against_the_fake_kernel() {
    FakeKernel::new(true).install();
    runtime().block_on(live::scenario::<FakeSocket>());
}

#[test]
fn without_the_family_ipvs_is_unavailable() {
    FakeKernel::new(false).install();
    let opened = runtime().block_on(Ipvs::open_on::<FakeSocket>());
    assert!(matches!(opened, Err(IpvsError::Unavailable { .. })), "{opened:?}");
}

#[test]
fn a_refusal_names_the_request_and_what_the_errno_means() {
    FakeKernel::new(true).install();
    runtime().block_on(async {
        let mut ipvs = Ipvs::open_on::<FakeSocket>().await.unwrap();
        let key = ServiceKey { vip: "192.0.2.200".parse().unwrap(), port: 6443 };
        let rs = RealServer { addr: "192.0.2.11:6443".parse().unwrap(), weight: 2 };
        let e = ipvs.apply(&[Change::EditRealServer(key, rs)]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "SET_DEST 192.0.2.11:6443 in TCP 192.0.2.200:6443 failed: No such process (os error \
             3): no such virtual service"
        );
    });
}

/// The point of the async connection: while a listing waits for the kernel, the thread is
/// free for the daemon's other tasks. The fake kernel keeps its replies back until another
/// task on the same one-thread runtime lets them go, so the listing finishes only if it
/// yielded the thread while it waited.
#[test]
fn a_listing_yields_the_thread_while_it_waits_for_the_kernel() {
    let kernel = FakeKernel::new(true);
    kernel.install();
    let vip: IpAddr = "192.0.2.200".parse().unwrap();
    let wanted = vec![ServiceSpec {
        key: ServiceKey { vip, port: 6443 },
        fwmark: FWMARK_BASE,
        algo: LbAlgo::Wrr,
        forwarding: LbKind::Dr,
        persistence_secs: 0,
        real_servers: vec![RealServer { addr: SocketAddr::new(vip, 6443), weight: 1 }],
    }];
    runtime().block_on(async {
        let mut ipvs = Ipvs::open_on::<FakeSocket>().await.unwrap();
        ipvs.reconcile(&Listing::default(), &wanted).await.unwrap();
        kernel.hold();
        let other = {
            let kernel = kernel.clone();
            tokio::spawn(async move {
                // Until the listing has asked and waits: its request's answer is here, kept
                // back. The connection's task sends it, on this same thread.
                let mut turns = 0;
                while kernel.waiting() == 0 && turns < 1000 {
                    tokio::task::yield_now().await;
                    turns += 1;
                }
                let waiting = kernel.waiting();
                kernel.release();
                waiting
            })
        };
        let listing = ipvs.listing(&wanted).await.unwrap();
        assert_eq!(listing, Listing { services: wanted.clone(), strays: Vec::new() });
        assert!(other.is_finished());
        assert!(other.await.unwrap() > 0, "the other task ran while the listing waited");
    });
}

//! Between the core's model of a virtual service ([`ServiceSpec`]) and the kernel's: the
//! kernel's names for schedulers and forwarding methods, how a service is named in a
//! request ([`ServiceRef`]), which services are cplb's ([`is_cplb_mark`]), and a service
//! and its destinations as the kernel reports them ([`KernelService`], [`KernelDest`]).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use cplb_core::config::{LbAlgo, LbKind};
use cplb_core::lb::{FWMARK_BASE, FWMARK_SPAN, RealServer, ServiceKey, ServiceSpec};

/// IP_VS_CONN_F_FWD_MASK: the forwarding method's bits of a destination's conn flags.
pub(crate) const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
/// Masquerading (NAT).
pub(crate) const IP_VS_CONN_F_MASQ: u32 = 0x0000;
/// Local node: kernels before 3.x rewrote every method to this for a local destination
/// address, which loses the method; it never decides the service's forwarding (a test
/// checks that).
#[cfg(test)]
pub(crate) const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
/// IP-in-IP tunnelling.
pub(crate) const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
/// Direct routing.
pub(crate) const IP_VS_CONN_F_DROUTE: u32 = 0x0003;

/// IP_VS_SVC_F_PERSISTENT: the service keeps a client on its real server.
pub(crate) const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
/// The `mask` of the flags sent: every bit, so the spec is the whole truth about the
/// service's flags (the kernel adds its own HASHED bit back itself).
pub(crate) const IP_VS_SVC_FLAGS_MASK_ALL: u32 = 0xffff_ffff;

/// AF_INET (include/linux/socket.h).
pub(crate) const AF_INET: u16 = 2;
/// AF_INET6 (include/linux/socket.h).
pub(crate) const AF_INET6: u16 = 10;
/// IPPROTO_TCP (include/uapi/linux/in.h): the Kubernetes API is TCP.
pub(crate) const IPPROTO_TCP: u16 = 6;

/// The kernel scheduler module name (`ip_vs_<name>`) of a core scheduler.
pub(crate) fn scheduler_name(algo: LbAlgo) -> &'static str {
    // The core's names are ipvsadm's, which are the kernel's; a test pins each one.
    algo.as_str()
}

/// The core scheduler of a kernel scheduler name, if the core has it.
pub(crate) fn scheduler_from_name(name: &str) -> Option<LbAlgo> {
    LbAlgo::ALL.into_iter().find(|a| a.as_str() == name)
}

/// The IP_VS_CONN_F_* forwarding method of a core forwarding kind.
pub(crate) fn forwarding_method(kind: LbKind) -> u32 {
    match kind {
        LbKind::Nat => IP_VS_CONN_F_MASQ,
        LbKind::Dr => IP_VS_CONN_F_DROUTE,
        LbKind::Tun => IP_VS_CONN_F_TUNNEL,
    }
}

/// The core forwarding kind of a destination's forwarding method, if it is one.
pub(crate) fn forwarding_from_method(method: u32) -> Option<LbKind> {
    match method & IP_VS_CONN_F_FWD_MASK {
        IP_VS_CONN_F_MASQ => Some(LbKind::Nat),
        IP_VS_CONN_F_DROUTE => Some(LbKind::Dr),
        IP_VS_CONN_F_TUNNEL => Some(LbKind::Tun),
        _ => None,
    }
}

/// The AF_* of an address.
pub(crate) fn family(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

pub(crate) fn key_addr(key: ServiceKey) -> SocketAddr {
    SocketAddr::new(key.vip, key.port)
}

/// Whether a firewall mark is one of cplb's (see `cplb_core::lb::FWMARK_BASE`).
pub(crate) fn is_cplb_mark(fwmark: u32) -> bool {
    (FWMARK_BASE..FWMARK_BASE + FWMARK_SPAN).contains(&fwmark)
}

/// How the kernel names a virtual service. cplb's are firewall-mark services (`fwmark`
/// not 0; the VIP gives the family, `key` says which traffic carries the mark: see the loop
/// guard of `cplb_core::lb::ServiceSpec`); with `fwmark` 0 it is the TCP service on `key`,
/// as an older cplbd or an operator may have left on a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceRef {
    /// VIP and port.
    pub key: ServiceKey,
    /// Firewall mark; 0: an address service.
    pub fwmark: u32,
}

impl From<ServiceKey> for ServiceRef {
    fn from(key: ServiceKey) -> Self {
        Self { key, fwmark: 0 }
    }
}

impl From<&ServiceSpec> for ServiceRef {
    fn from(spec: &ServiceSpec) -> Self {
        Self { key: spec.key, fwmark: spec.fwmark }
    }
}

impl core::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.fwmark {
            0 => write!(f, "TCP {}", key_addr(self.key)),
            mark if self.key.port == 0 => write!(f, "FWM {mark}"),
            mark => write!(f, "FWM {mark} ({})", key_addr(self.key)),
        }
    }
}

/// A virtual service as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KernelService {
    /// AF_INET or AF_INET6.
    pub(crate) af: u16,
    /// IPPROTO_* of an address service (0 for a fwmark service).
    pub(crate) protocol: u16,
    /// VIP and port; `None` for a fwmark service.
    pub(crate) addr: Option<SocketAddr>,
    /// Firewall mark (0 for an address service).
    pub(crate) fwmark: u32,
    /// Scheduler name.
    pub(crate) sched_name: String,
    /// IP_VS_SVC_F_* flags (the kernel's HASHED bit included).
    pub(crate) flags: u32,
    /// Persistence timeout in seconds.
    pub(crate) timeout: u32,
}

/// A destination (real server) as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelDest {
    /// Address and port.
    pub(crate) addr: SocketAddr,
    /// IP_VS_CONN_F_* forwarding method.
    pub(crate) fwd_method: u32,
    /// Weight.
    pub(crate) weight: u32,
}

impl KernelService {
    /// How the kernel names this service: its mark, or its address when it is a TCP one
    /// (`None`: another protocol). A mark service's key is not in the kernel: its VIP is
    /// the family's unspecified address and its port 0.
    pub(crate) fn service_ref(&self) -> Option<ServiceRef> {
        if self.fwmark != 0 {
            let vip = if self.af == AF_INET6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            };
            return Some(ServiceRef { key: ServiceKey { vip, port: 0 }, fwmark: self.fwmark });
        }
        let addr = self.addr.filter(|_| self.protocol == IPPROTO_TCP)?;
        Some(ServiceKey { vip: addr.ip(), port: addr.port() }.into())
    }

    /// The core's view of this service with `dests`, named `service` (which gives a mark
    /// service its key), or `None` when the core cannot hold it (not TCP, a scheduler the
    /// core lacks): such a service is not one of cplb's. The forwarding is the
    /// destinations' (IPVS keeps it per destination); without a destination that says,
    /// `fallback`.
    pub(crate) fn to_spec(
        &self,
        service: ServiceRef,
        dests: &[KernelDest],
        fallback: LbKind,
    ) -> Option<ServiceSpec> {
        if self.fwmark == 0 && self.protocol != IPPROTO_TCP {
            return None;
        }
        let algo = scheduler_from_name(&self.sched_name)?;
        let forwarding =
            dests.iter().find_map(|d| forwarding_from_method(d.fwd_method)).unwrap_or(fallback);
        let persistent = self.flags & IP_VS_SVC_F_PERSISTENT != 0;
        let mut real_servers: Vec<RealServer> =
            dests.iter().map(|d| RealServer { addr: d.addr, weight: d.weight }).collect();
        real_servers.sort();
        Some(ServiceSpec {
            key: service.key,
            fwmark: self.fwmark,
            algo,
            forwarding,
            persistence_secs: if persistent { self.timeout } else { 0 },
            real_servers,
        })
    }
}

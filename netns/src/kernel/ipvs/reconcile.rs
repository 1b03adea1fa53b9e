//! What cplbd means by its IPVS services: which are its own (those with one of its firewall
//! marks), what the kernel holds of them ([`Ipvs::listing`]), making the kernel hold
//! exactly the wanted ones ([`Ipvs::reconcile`]), the changes of a diff ([`Ipvs::apply`])
//! and the clean-up after a crashed predecessor ([`Ipvs::remove_services_for`]).

use core::net::IpAddr;

use cplb_core::config::LbKind;
use cplb_core::lb::{Change, DataPlane, RealServer, ServiceKey, ServiceSpec, diff};

use super::message::{
    del_dest_request, del_service_request, del_service_request_proto, new_dest_request,
    new_service_request, set_dest_request, set_service_request,
};
use super::model::{
    IP_VS_CONN_F_FWD_MASK, IPPROTO_TCP, ServiceRef, forwarding_from_method, forwarding_method,
    is_cplb_mark, scheduler_name,
};
use super::{EEXIST, ENOENT, ESRCH, Ipvs, IpvsError};

/// Forwarding assumed for a service without destinations that this process did not
/// create: k0s's default `lbKind`.
const DEFAULT_FORWARDING: LbKind = LbKind::Dr;

/// cplb's services in the kernel (see [`Ipvs::listing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The services, keyed as the node knows them, sorted.
    pub services: Vec<ServiceSpec>,
    /// Services with one of cplb's marks that the node does not want.
    pub strays: Vec<ServiceRef>,
}

impl Ipvs {
    /// cplb's services as the kernel holds them, for a node that wants `wanted`: every
    /// service with one of cplb's marks, the only services cplbd creates (keyed as the
    /// wanted one with that mark; one no spec wants is a stray). Every other service is
    /// someone else's (kube-proxy, a keepalived, an operator), even on cplb's VIPs, and is
    /// left alone; their destinations are not even read (kube-proxy in IPVS mode may hold
    /// thousands of services).
    pub async fn listing(&mut self, wanted: &[ServiceSpec]) -> Result<Listing, IpvsError> {
        let mut listing = Listing::default();
        for svc in self.kernel_services().await? {
            let Some(mut service) = svc.service_ref() else { continue };
            if !is_cplb_mark(svc.fwmark) {
                continue;
            }
            match wanted.iter().find(|w| w.fwmark == svc.fwmark) {
                Some(w) => service.key = w.key,
                None => {
                    listing.strays.push(service);
                    continue;
                }
            }
            let dests = self.kernel_dests(service).await?;
            let fallback = self.forwarding.get(&service).copied().unwrap_or(DEFAULT_FORWARDING);
            match svc.to_spec(service, &dests, fallback) {
                Some(spec) => {
                    self.forwarding.insert(service, spec.forwarding);
                    listing.services.push(spec);
                }
                None => tracing::warn!(
                    %service,
                    scheduler = %svc.sched_name,
                    "IPVS service with a scheduler cplb does not know: left alone"
                ),
            }
        }
        listing.services.sort();
        Ok(listing)
    }

    /// Makes cplb's services those of `desired`, `current` being what
    /// [`listing`](Self::listing) found. Idempotent, so a retry after a partial failure
    /// converges: adding what exists updates it, removing what is gone succeeds.
    pub async fn reconcile(
        &mut self,
        current: &Listing,
        desired: &[ServiceSpec],
    ) -> Result<(), IpvsError> {
        for stray in &current.strays {
            self.remove_service(*stray).await?;
        }
        // A key held by another kernel service than the one wanted (an address service
        // where a mark service belongs) goes first, so a key names one service in the diff.
        let (replaced, kept): (Vec<&ServiceSpec>, Vec<&ServiceSpec>) =
            current.services.iter().partition(|cur| {
                desired.iter().any(|want| want.key == cur.key && want.fwmark != cur.fwmark)
            });
        for old in replaced {
            self.remove_service(old.into()).await?;
        }
        self.names = kept.iter().map(|s| (s.key, ServiceRef::from(*s))).collect();
        let changes = diff(
            &DataPlane { services: kept.into_iter().cloned().collect(), ..DataPlane::default() },
            &DataPlane { services: desired.to_vec(), ..DataPlane::default() },
        );
        self.apply(&changes).await
    }

    /// Carries out the IPVS changes of a diff, in order; other `Change` variants (proxy,
    /// redirects, local VIPs) belong to other drivers and are ignored. A key names the
    /// service last listed or added with it.
    ///
    /// Editing what does not exist is an error: the table is not the one the diff was
    /// computed from, so read it again.
    pub async fn apply(&mut self, changes: &[Change]) -> Result<(), IpvsError> {
        for change in changes {
            match change {
                Change::AddService(spec) => self.add_service(spec).await?,
                Change::EditService(spec) => self.edit_service(spec).await?,
                Change::RemoveService(key) => {
                    let service = self.name(*key);
                    self.remove_service(service).await?;
                    self.names.remove(key);
                }
                Change::AddRealServer(key, rs) => self.add_dest(self.name(*key), rs).await?,
                Change::EditRealServer(key, rs) => {
                    let service = self.name(*key);
                    let fwd = self.forwarding_for(service).await?;
                    self.must(set_dest_request(service, rs, fwd), || {
                        format!("SET_DEST {} in {service}", rs.addr)
                    })
                    .await?;
                }
                Change::RemoveRealServer(key, addr) => {
                    let service = self.name(*key);
                    let request = || format!("DEL_DEST {addr} from {service}");
                    match self.command(del_dest_request(service, *addr), request).await? {
                        // ENOENT: no such destination; ESRCH: no such service.
                        Ok(()) | Err(ENOENT | ESRCH) => {}
                        Err(errno) => return Err(IpvsError::kernel(request(), errno)),
                    }
                }
                Change::SetProxy { .. }
                | Change::StopProxy
                | Change::AddRedirect(_)
                | Change::RemoveRedirect(_)
                | Change::AddLocalVip(_)
                | Change::RemoveLocalVip(_) => continue,
            }
            tracing::debug!(?change, "IPVS change applied");
        }
        Ok(())
    }

    /// The kernel service `key` names: the one listed or added with it, else (a diff
    /// computed elsewhere) the TCP service on it.
    fn name(&self, key: ServiceKey) -> ServiceRef {
        self.names.get(&key).copied().unwrap_or_else(|| key.into())
    }

    async fn add_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        let service = ServiceRef::from(spec);
        let request = || format!("NEW_SERVICE {service} ({})", scheduler_name(spec.algo));
        match self.command(new_service_request(spec), request).await? {
            Ok(()) => {
                self.forwarding.insert(service, spec.forwarding);
            }
            Err(EEXIST) => self.edit_service(spec).await?,
            Err(errno) => return Err(IpvsError::kernel(request(), errno)),
        }
        self.names.insert(spec.key, service);
        // The core's model adds a spec's real servers with it (a diff sends none here).
        for rs in &spec.real_servers {
            self.add_dest(service, rs).await?;
        }
        Ok(())
    }

    /// SET_SERVICE, then the forwarding of each destination, which IPVS keeps per
    /// destination rather than per service.
    async fn edit_service(&mut self, spec: &ServiceSpec) -> Result<(), IpvsError> {
        let service = ServiceRef::from(spec);
        self.must(set_service_request(spec), || {
            format!("SET_SERVICE {service} ({})", scheduler_name(spec.algo))
        })
        .await?;
        self.forwarding.insert(service, spec.forwarding);
        let method = forwarding_method(spec.forwarding);
        for dest in self.kernel_dests(service).await? {
            if dest.fwd_method & IP_VS_CONN_F_FWD_MASK != method {
                let rs = RealServer { addr: dest.addr, weight: dest.weight };
                self.must(set_dest_request(service, &rs, spec.forwarding), || {
                    format!("SET_DEST {} in {service}", rs.addr)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// DEL_SERVICE; one already gone is done.
    pub(super) async fn remove_service(&mut self, service: ServiceRef) -> Result<(), IpvsError> {
        let request = || format!("DEL_SERVICE {service}");
        match self.command(del_service_request(service), request).await? {
            Ok(()) => tracing::info!(%service, "IPVS service removed"),
            Err(ESRCH) => {}
            Err(errno) => return Err(IpvsError::kernel(request(), errno)),
        }
        self.forwarding.remove(&service);
        Ok(())
    }

    async fn add_dest(&mut self, service: ServiceRef, rs: &RealServer) -> Result<(), IpvsError> {
        let fwd = self.forwarding_for(service).await?;
        let request = || format!("NEW_DEST {} to {service}", rs.addr);
        match self.command(new_dest_request(service, rs, fwd), request).await? {
            Ok(()) => Ok(()),
            Err(EEXIST) => {
                self.must(set_dest_request(service, rs, fwd), || {
                    format!("SET_DEST {} in {service}", rs.addr)
                })
                .await
            }
            Err(errno) => Err(IpvsError::kernel(request(), errno)),
        }
    }

    /// The forwarding of `service`: as created or last read, else its destinations', else
    /// k0s's default.
    async fn forwarding_for(&mut self, service: ServiceRef) -> Result<LbKind, IpvsError> {
        if let Some(kind) = self.forwarding.get(&service) {
            return Ok(*kind);
        }
        let kind = self
            .kernel_dests(service)
            .await?
            .iter()
            .find_map(|d| forwarding_from_method(d.fwd_method))
            .unwrap_or(DEFAULT_FORWARDING);
        self.forwarding.insert(service, kind);
        Ok(kind)
    }

    /// Deletes every address service (any protocol) whose VIP is in `vips`, with its
    /// destinations: what a crashed predecessor may have left. Returns how many went.
    pub async fn remove_services_for(&mut self, vips: &[IpAddr]) -> Result<usize, IpvsError> {
        let mut removed = 0;
        for svc in self.kernel_services().await? {
            let Some(addr) = svc.addr.filter(|a| vips.contains(&a.ip())) else {
                continue;
            };
            let request = || format!("DEL_SERVICE {addr}");
            match self.command(del_service_request_proto(svc.protocol, addr), request).await? {
                Ok(()) => {
                    tracing::info!(service = %addr, protocol = svc.protocol, "IPVS service removed");
                    removed += 1;
                }
                Err(ESRCH) => {}
                Err(errno) => return Err(IpvsError::kernel(request(), errno)),
            }
            if svc.protocol == IPPROTO_TCP {
                self.forwarding.remove(&ServiceKey { vip: addr.ip(), port: addr.port() }.into());
            }
        }
        Ok(removed)
    }
}

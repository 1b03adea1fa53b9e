//! The daemon: start-up (configuration, plan, reconciling what a predecessor left),
//! the async driver that feeds the core and carries out its outputs, and shutdown.
//!
//! The driver is the only place that reads the clock: it turns tokio's monotonic time into
//! the core's `Instant` and passes it into every `handle_*` call.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cplb_core::config::{self, Keepalived, LbAlgo, LoadBalancerMode, LoadOptions};
use cplb_core::lb::{self, Change, DataPlane, HealthChecker};
use cplb_core::time::Instant;
use cplb_core::vrrp::{
    Command, Event, IfIndex, Incoming, InstanceId, Router, State, TrackerConfig, TrackerId,
};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::announce::Announcer;
use crate::ipvs::Ipvs;
use crate::link::Netlink;
use crate::nft::{self, Nft};
use crate::options::{HealthCheck, Options};
use crate::plan::{self, Plan};
use crate::probe::{ClientCert, HttpsProbe, ProbeKind, Prober};
use crate::proxy::{self, ProxyStats};
use crate::status::{self, DataplaneStatus, InstanceStatus, ServerStatus, ServiceStatus, Snapshot};
use crate::vrrp_socket::{Packet, VrrpSocket};

/// The nftables table cplbd owns (in family ip and ip6). Everything it programs lives
/// there, so reconciling is replacing that table.
pub const NFT_TABLE: &str = "cplb";
/// The dummy interface k0s uses for direct routing.
pub const DUMMY: &str = "dummyvip0";

/// Exit codes.
pub mod exit {
    /// Clean shutdown.
    pub const OK: u8 = 0;
    /// Could not run (kernel, privileges, interfaces).
    pub const FAILURE: u8 = 1;
    /// The configuration is invalid (as `cplb validate`).
    pub const INVALID_CONFIG: u8 = 2;
}

/// Reads and checks the configuration file, printing what `cplb validate` prints on error.
pub fn load_config(options: &Options) -> Result<(Keepalived, u16), u8> {
    let text = match std::fs::read_to_string(&options.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: reading {}: {e}", options.config.display());
            return Err(exit::INVALID_CONFIG);
        }
    };
    match config::load(&text, LoadOptions { single: options.single }) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let api_port = loaded.config.spec.api.port;
            match loaded.config.enabled_keepalived() {
                Some(k) => Ok((k.clone(), api_port)),
                None => {
                    eprintln!(
                        "error: {}: spec.network.controlPlaneLoadBalancing is not enabled with type Keepalived: nothing for cplbd to do",
                        options.config.display()
                    );
                    Err(exit::INVALID_CONFIG)
                }
            }
        }
        Err(rejected) => {
            for w in &rejected.warnings {
                eprintln!("{w}");
            }
            for e in &rejected.errors {
                eprintln!("{e}");
            }
            Err(exit::INVALID_CONFIG)
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(options: Options) -> u8 {
    let (keepalived, api_port) = match load_config(&options) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // One thread: capabilities are per thread, and dropping them on the only thread before
    // any other exists covers every thread the runtime later starts.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return exit::FAILURE;
        }
    };
    match runtime.block_on(main(options, keepalived, api_port)) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cplbd: {e:#}");
            exit::FAILURE
        }
    }
}

/// One VRRP instance as the driver tracks it.
#[derive(Debug, Clone)]
struct InstanceInfo {
    id: InstanceId,
    name: String,
    vrid: u8,
    ifindex: u32,
    interface: String,
    vips: Vec<cplb_core::vrrp::VirtualIp>,
    own: IpAddr,
    transitions: u64,
    master: Option<IpAddr>,
}

/// The driver's state: the core objects and the kernel handles it carries their outputs to.
struct Driver {
    started: tokio::time::Instant,
    keepalived: Keepalived,
    api_port: u16,
    plan: Plan,
    router: Router,
    tracker: TrackerId,
    health: HealthChecker,
    instances: Vec<InstanceInfo>,
    sockets: HashMap<(u32, bool), Arc<VrrpSocket>>,
    announcers: HashMap<u32, Announcer>,
    netlink: Netlink,
    nft: Option<Nft>,
    ipvs: Option<Ipvs>,
    dataplane: DataPlane,
    local_vip_iface: Option<(u32, String)>,
    proxy_backends: watch::Sender<Vec<SocketAddr>>,
    proxy_stats: Arc<ProxyStats>,
    prober: Prober,
    probe_timeout: Duration,
    probe_tx: mpsc::UnboundedSender<(lb::ProbeId, SocketAddr, bool)>,
    /// Addresses this process added (interface, address): what shutdown removes.
    held: Vec<(u32, IpAddr)>,
}

async fn main(options: Options, keepalived: Keepalived, api_port: u16) -> Result<()> {
    let netlink = Netlink::open().context("opening rtnetlink")?;
    let started = tokio::time::Instant::now();
    let mut router = Router::new(Instant::ZERO);
    let tracker = router
        .add_tracker(TrackerConfig::default())
        .map_err(|e| anyhow!("API server tracker: {e}"))?;
    let plan = plan::make(&keepalived, api_port, &options.real_servers, &netlink, tracker).await?;
    let mode = keepalived.mode();
    tracing::info!(
        config = %options.config.display(),
        mode = ?mode,
        address = %plan.own_api.ip(),
        real_servers = ?plan.real_servers,
        "starting"
    );

    // Reconcile: nothing a dead predecessor left may stay. A VIP is only ever added by the
    // state machine as master, and this process starts as backup.
    for group in &plan.groups {
        for (_, cfg) in &group.instances {
            for vip in &cfg.virtual_ips {
                if netlink.remove_address(group.iface.index, vip.addr).await? {
                    tracing::warn!(vip = %vip.addr, interface = %group.iface.name, "removed a VIP left by a previous run");
                }
            }
        }
    }
    let mut nft = match Nft::open() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "nftables unavailable");
            None
        }
    };
    if let Some(n) = nft.as_mut() {
        // Replacing the table is atomic and idempotent: no duplicate rule across restarts.
        n.remove(NFT_TABLE).context("removing the nftables table of a previous run")?;
    }
    let mut ipvs = None;
    if mode == LoadBalancerMode::Ipvs {
        match Ipvs::open() {
            Ok(mut i) => {
                let vips: Vec<IpAddr> =
                    keepalived.virtual_servers.iter().map(|v| v.ip_address).collect();
                let n = i.remove_services_for(&vips).context("clearing stale IPVS services")?;
                if n > 0 {
                    tracing::warn!(services = n, "removed IPVS services left by a previous run");
                }
                tracing::info!("data plane: IPVS");
                ipvs = Some(i);
            }
            Err(e) => {
                tracing::warn!(reason = %e, "IPVS unavailable: virtual servers use the nftables NAT data plane (DNAT + masquerade on the master)");
            }
        }
    }
    let local_vip_iface = if mode == LoadBalancerMode::Ipvs
        && keepalived.virtual_servers.iter().any(|v| v.lb_kind == config::LbKind::Dr)
    {
        Some(local_vip_interface(&netlink).await?)
    } else {
        None
    };

    // Sockets and listeners are opened while every capability is still there.
    let mut sockets = HashMap::new();
    let mut announcers = HashMap::new();
    for group in &plan.groups {
        let v4 = group.address.is_ipv4();
        let source =
            if v4 { None } else { group.instances.first().map(|(_, c)| c.primary_address) };
        let socket = VrrpSocket::open(&group.iface.name, group.iface.index, v4, source)?;
        sockets.insert((group.iface.index, v4), Arc::new(socket));
        if let std::collections::hash_map::Entry::Vacant(e) = announcers.entry(group.iface.index) {
            e.insert(Announcer::open(group.iface.index)?);
        }
    }
    let (backends_tx, backends_rx) = watch::channel(vec![plan.own_api]);
    let proxy_stats = Arc::new(ProxyStats::default());
    let proxy_listener = if mode == LoadBalancerMode::UserspaceProxy {
        Some(bind_any(keepalived.user_space_proxy_bind_port)?)
    } else {
        None
    };
    let status_listener = bind_status(&options.status_socket)?;
    let metrics_listener = match options.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr).await.with_context(|| format!("binding metrics on {addr}"))?,
        ),
        None => None,
    };
    if options.keep_capabilities {
        tracing::warn!("keeping every capability (--keep-capabilities)");
    } else {
        crate::privileges::drop_to_network_only().map_err(|e| anyhow!(e))?;
    }
    tracing::info!(capabilities = ?crate::privileges::effective(), "privileges");

    let prober = Prober::new(probe_kind(&options)).map_err(|e| anyhow!("health check: {e}"))?;
    let health_config = lb::k0s_health_config(&keepalived);
    let probe_timeout = health_config.timeout;
    let mut health = HealthChecker::new(health_config);
    health.set_servers(Instant::ZERO, &plan.real_servers);

    let mut instances = Vec::new();
    for group in &plan.groups {
        for (index, cfg) in &group.instances {
            let vrid = cfg.vrid.get();
            let vips = cfg.virtual_ips.clone();
            let id = router
                .add_instance(Instant::ZERO, cfg.clone())
                .map_err(|e| anyhow!("vrrpInstances[{index}]: {e}"))?;
            tracing::info!(
                instance = %cfg.name, vrid, interface = %group.iface.name, source = %cfg.primary_address,
                vips = ?vips.iter().map(|v| format!("{}/{}", v.addr, v.prefix_len)).collect::<Vec<_>>(),
                unicast_peers = ?cfg.unicast_peers, "VRRP instance"
            );
            instances.push(InstanceInfo {
                id,
                name: cfg.name.clone(),
                vrid,
                ifindex: group.iface.index,
                interface: group.iface.name.clone(),
                vips,
                own: group.address,
                transitions: 0,
                master: None,
            });
        }
    }

    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
    let mut state = Driver {
        started,
        keepalived,
        api_port,
        plan,
        router,
        tracker,
        health,
        instances,
        sockets,
        announcers,
        netlink,
        nft,
        ipvs,
        dataplane: DataPlane::default(),
        local_vip_iface,
        proxy_backends: backends_tx,
        proxy_stats: Arc::clone(&proxy_stats),
        prober,
        probe_timeout,
        probe_tx,
        held: Vec::new(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = proxy_listener {
        tasks.spawn(proxy::serve(listener, backends_rx, options.dial_timeout, proxy_stats));
    }
    let (snapshot_tx, snapshot_rx) = watch::channel(Snapshot::default());
    tasks.spawn(serve_status(status_listener, snapshot_rx.clone()));
    if let Some(listener) = metrics_listener {
        tasks.spawn(serve_metrics(listener, snapshot_rx));
    }

    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let (packet_tx, mut packet_rx) = mpsc::channel::<(u32, Packet)>(1024);
    for ((ifindex, _), socket) in &state.sockets {
        let socket = Arc::clone(socket);
        let tx = packet_tx.clone();
        let ifindex = *ifindex;
        tasks.spawn(async move {
            loop {
                match socket.recv().await {
                    Ok(p) => {
                        if tx.send((ifindex, p)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "VRRP receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    state.reconcile_dataplane();
    loop {
        state.pump().await;
        let _ = snapshot_tx.send(state.snapshot());
        let deadline = state.next_deadline();
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: resigning"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: resigning"); break; }
            Some((ifindex, packet)) = packet_rx.recv() => state.handle_packet(ifindex, &packet),
            Some((id, server, ok)) = probe_rx.recv() => state.handle_probe(id, server, ok),
            () = tokio::time::sleep_until(deadline) => state.handle_timeout(),
        }
    }
    state.shutdown().await;
    tasks.shutdown().await;
    let _ = std::fs::remove_file(&options.status_socket);
    tracing::info!("stopped");
    Ok(())
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn next_deadline(&self) -> tokio::time::Instant {
        let next = match (self.router.poll_timeout(), self.health.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(at) => self.started + Duration::from_nanos(at.as_nanos()),
            None => tokio::time::Instant::now() + Duration::from_secs(3600),
        }
    }

    fn handle_packet(&mut self, ifindex: u32, packet: &Packet) {
        let now = self.now();
        let vrid = packet.payload.get(1).copied();
        let priority = packet.payload.get(2).copied().unwrap_or(0);
        let target = self.instances.iter().position(|i| {
            i.ifindex == ifindex
                && Some(i.vrid) == vrid
                && i.own.is_ipv4() == packet.header.src.is_ipv4()
        });
        let dropped_before = target
            .and_then(|t| self.instances.get(t))
            .and_then(|i| self.router.stats(i.id))
            .map(|s| s.dropped_total());
        self.router.handle_packet(
            now,
            Incoming { ifindex: IfIndex(ifindex), header: packet.header, payload: &packet.payload },
        );
        if let Some(info) = target.and_then(|t| self.instances.get_mut(t)) {
            let dropped_after = self.router.stats(info.id).map(|s| s.dropped_total());
            // A master hears a contender only until one yields; it stays the master it knows.
            let is_master = self.router.state(info.id) == Some(State::Master);
            if dropped_after == dropped_before && priority > 0 && !is_master {
                info.master = Some(packet.header.src);
            }
        }
    }

    fn handle_probe(&mut self, id: lb::ProbeId, server: SocketAddr, ok: bool) {
        let now = self.now();
        self.health.handle_probe_result(now, id, ok);
        if server == self.plan.own_api {
            self.router.handle_health(now, self.tracker, ok);
        }
    }

    fn handle_timeout(&mut self) {
        let now = self.now();
        self.router.handle_timeout(now);
        self.health.handle_timeout(now);
    }

    /// Carries out everything the core wants until it wants nothing more.
    async fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(t) = self.router.poll_transmit() {
                busy = true;
                let key = (t.ifindex.0, t.src.is_ipv4());
                match self.sockets.get(&key) {
                    Some(s) => {
                        if let Err(e) = s.send(t.src, t.dst, &t.payload) {
                            tracing::warn!(error = %e, dst = %t.dst, "sending an advertisement failed");
                        }
                    }
                    None => tracing::error!(
                        ifindex = t.ifindex.0,
                        "no VRRP socket for an advertisement"
                    ),
                }
            }
            while let Some(c) = self.router.poll_command() {
                busy = true;
                self.command(c).await;
            }
            let mut reconcile = false;
            while let Some(e) = self.router.poll_event() {
                busy = true;
                reconcile |= self.event(e);
            }
            while let Some(p) = self.health.poll_probe() {
                busy = true;
                let prober = self.prober.clone();
                let tx = self.probe_tx.clone();
                let timeout = self.probe_timeout;
                tokio::spawn(async move {
                    let result = prober.probe(p.server, timeout).await;
                    if let Err(e) = &result {
                        tracing::debug!(server = %p.server, error = %e, "health probe failed");
                    }
                    let _ = tx.send((p.id, p.server, result.is_ok()));
                });
            }
            while let Some(change) = self.health.poll_change() {
                busy = true;
                reconcile = true;
                if change.healthy {
                    tracing::info!(server = %change.server, "API server healthy");
                } else {
                    tracing::warn!(server = %change.server, "API server unhealthy");
                }
            }
            if reconcile {
                self.reconcile_dataplane();
            }
            if !busy {
                return;
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::AddAddress { ifindex, vip, .. } => {
                match self.netlink.add_address(ifindex.0, vip.addr, vip.prefix_len).await {
                    Ok(()) => {
                        tracing::info!(vip = %format!("{}/{}", vip.addr, vip.prefix_len), "VIP added");
                        self.held.push((ifindex.0, vip.addr));
                    }
                    Err(e) => tracing::error!(error = %e, "adding the VIP failed"),
                }
            }
            Command::RemoveAddress { ifindex, vip, .. } => {
                match self.netlink.remove_address(ifindex.0, vip.addr).await {
                    Ok(_) => tracing::info!(vip = %vip.addr, "VIP removed"),
                    Err(e) => tracing::error!(error = %e, "removing the VIP failed"),
                }
                self.held.retain(|h| *h != (ifindex.0, vip.addr));
            }
            Command::Announce { ifindex, addresses, .. } => {
                if let Some(a) = self.announcers.get_mut(&ifindex.0) {
                    for addr in addresses {
                        if let Err(e) = a.announce(addr) {
                            tracing::warn!(error = %e, "announcement failed");
                        }
                    }
                }
            }
        }
    }

    /// Logs an event; returns whether the data plane may need to change.
    fn event(&mut self, event: Event) -> bool {
        match event {
            Event::StateChanged { instance, from, to, cause } => {
                if let Some(info) = self.instances.iter_mut().find(|i| i.id == instance) {
                    info.transitions += 1;
                    if to == State::Master {
                        info.master = Some(info.own);
                    } else if info.master == Some(info.own) {
                        info.master = None;
                    }
                    tracing::info!(instance = %info.name, from = from.as_str(), to = to.as_str(), cause = ?cause, "state change");
                }
                true
            }
            Event::Dropped { instance, reason, from } => {
                let name = self.instance_name(instance);
                tracing::warn!(instance = %name, reason, %from, "VRRP packet dropped");
                false
            }
            Event::AddressListMismatch { instance, from } => {
                let name = self.instance_name(Some(instance));
                tracing::warn!(instance = %name, %from, "advertisement with a different address list");
                false
            }
            Event::PriorityChanged { instance, priority } => {
                let name = self.instance_name(Some(instance));
                tracing::info!(instance = %name, priority, "priority changed");
                false
            }
            other => {
                tracing::info!(event = ?other, "vrrp");
                false
            }
        }
    }

    fn instance_name(&self, id: Option<InstanceId>) -> String {
        id.and_then(|id| self.instances.iter().find(|i| i.id == id))
            .map_or_else(|| "-".to_owned(), |i| i.name.clone())
    }

    fn is_master_of(&self, vip: IpAddr) -> bool {
        self.instances.iter().any(|i| {
            i.vips.iter().any(|v| v.addr == vip) && self.router.state(i.id) == Some(State::Master)
        })
    }

    /// Makes the kernel's data plane match what the core wants now.
    fn reconcile_dataplane(&mut self) {
        let usable = self.health.usable();
        let want =
            lb::desired(&self.keepalived, self.api_port, &usable, |vip| self.is_master_of(vip));
        let changes = lb::diff(&self.dataplane, &want);
        if changes.is_empty() {
            return;
        }
        let mut rules_changed = false;
        let mut ipvs_changes = Vec::new();
        for change in &changes {
            match change {
                Change::SetProxy { backends, .. } => {
                    tracing::info!(backends = ?backends, "proxy backends");
                    let list = if backends.is_empty() {
                        vec![self.plan.own_api]
                    } else {
                        backends.clone()
                    };
                    let _ = self.proxy_backends.send(list);
                }
                Change::StopProxy => {
                    let _ = self.proxy_backends.send(Vec::new());
                }
                Change::AddRedirect(_) | Change::RemoveRedirect(_) => rules_changed = true,
                Change::AddLocalVip(vip) | Change::RemoveLocalVip(vip) => {
                    self.local_vip(*vip, matches!(change, Change::AddLocalVip(_)));
                }
                Change::AddService(_)
                | Change::EditService(_)
                | Change::RemoveService(_)
                | Change::AddRealServer(..)
                | Change::EditRealServer(..)
                | Change::RemoveRealServer(..) => {
                    ipvs_changes.push(change.clone());
                }
            }
        }
        lb::apply(&mut self.dataplane, &changes);
        if !ipvs_changes.is_empty() {
            if let Some(ipvs) = self.ipvs.as_mut() {
                if let Err(e) = ipvs.apply(&ipvs_changes) {
                    tracing::error!(error = %e, "programming IPVS failed");
                }
            } else {
                rules_changed = true;
            }
        }
        if rules_changed {
            self.program_nft();
        }
    }

    fn program_nft(&mut self) {
        let Some(n) = self.nft.as_mut() else {
            tracing::error!("nftables unavailable: VIP traffic is not redirected");
            return;
        };
        // Redirects exist only in proxy mode, where the port is set.
        let port = self.dataplane.proxy_port.unwrap_or(0);
        let mut rules = nft::Ruleset {
            redirects: self
                .dataplane
                .redirects
                .iter()
                .map(|vip| nft::Redirect { vip: *vip, to_port: port })
                .collect(),
            balancers: Vec::new(),
        };
        if self.ipvs.is_none() {
            rules.balancers = self
                .dataplane
                .services
                .iter()
                .map(|s| nft::Balancer {
                    vip: SocketAddr::new(s.key.vip, s.key.port),
                    backends: s.real_servers.iter().map(|r| r.addr).collect(),
                    spread: match s.algo {
                        LbAlgo::Sh | LbAlgo::Dh => nft::Spread::SourceHash,
                        _ if s.persistence_secs > 0 => nft::Spread::SourceHash,
                        _ => nft::Spread::RoundRobin,
                    },
                })
                .collect();
        }
        if let Err(e) = n.apply(NFT_TABLE, &rules) {
            tracing::error!(error = %e, "programming nftables failed");
        } else {
            tracing::info!(
                redirects = rules.redirects.len(),
                balancers = rules.balancers.len(),
                "nftables table {NFT_TABLE} programmed"
            );
        }
    }

    fn local_vip(&mut self, vip: IpAddr, add: bool) {
        let Some((index, name)) = self.local_vip_iface.clone() else { return };
        let netlink = self.netlink.clone();
        let prefix = if vip.is_ipv4() { 32 } else { 128 };
        tokio::spawn(async move {
            let result = if add {
                netlink.add_address(index, vip, prefix).await
            } else {
                netlink.remove_address(index, vip).await.map(|_| ())
            };
            if let Err(e) = result {
                tracing::error!(error = %e, interface = %name, "local VIP");
            }
        });
    }

    fn snapshot(&self) -> Snapshot {
        let instances = self
            .instances
            .iter()
            .map(|i| {
                let stats = self.router.stats(i.id).cloned().unwrap_or_default();
                InstanceStatus {
                    name: i.name.clone(),
                    vrid: i.vrid,
                    interface: i.interface.clone(),
                    state: self.router.state(i.id).map_or("unknown", State::as_str).to_lowercase(),
                    priority: self.router.priority(i.id).map_or(0, |p| p.0),
                    vips: i.vips.iter().map(|v| format!("{}/{}", v.addr, v.prefix_len)).collect(),
                    master: i.master.map(|m| m.to_string()),
                    transitions: i.transitions,
                    adverts_sent: stats.adverts_sent,
                    adverts_received: stats.adverts_received,
                    became_master: stats.became_master,
                    priority_zero_sent: stats.priority_zero_sent,
                    priority_zero_received: stats.priority_zero_received,
                    dropped: stats.dropped.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                }
            })
            .collect();
        let d = &self.dataplane;
        let kernel = match (self.keepalived.mode(), self.ipvs.is_some()) {
            (LoadBalancerMode::UserspaceProxy, _) => "nftables",
            (LoadBalancerMode::Ipvs, true) => "ipvs",
            (LoadBalancerMode::Ipvs, false) => "nftables-nat",
            (LoadBalancerMode::VipOnly, _) => "none",
        };
        Snapshot {
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            address: self.plan.own_api.ip().to_string(),
            instances,
            real_servers: self
                .plan
                .real_servers
                .iter()
                .map(|s| ServerStatus {
                    address: s.to_string(),
                    healthy: self.health.is_healthy(*s),
                    local: *s == self.plan.own_api,
                })
                .collect(),
            dataplane: DataplaneStatus {
                mode: match self.keepalived.mode() {
                    LoadBalancerMode::UserspaceProxy => "userspace-proxy",
                    LoadBalancerMode::Ipvs => "ipvs",
                    LoadBalancerMode::VipOnly => "vip-only",
                }
                .to_owned(),
                kernel: kernel.to_owned(),
                proxy_port: d.proxy_port,
                proxy_backends: d.proxy_backends.iter().map(ToString::to_string).collect(),
                redirects: d.redirects.iter().map(ToString::to_string).collect(),
                services: d
                    .services
                    .iter()
                    .map(|s| ServiceStatus {
                        address: SocketAddr::new(s.key.vip, s.key.port).to_string(),
                        scheduler: s.algo.as_str().to_owned(),
                        forwarding: s.forwarding.as_str().to_owned(),
                        persistence_s: s.persistence_secs,
                        real_servers: s
                            .real_servers
                            .iter()
                            .map(|r| format!("{} {}", r.addr, r.weight))
                            .collect(),
                    })
                    .collect(),
                local_vips: d.local_vips.iter().map(ToString::to_string).collect(),
                local_vip_interface: self.local_vip_iface.as_ref().map(|(_, n)| n.clone()),
                proxy_accepted: self.proxy_stats.accepted.load(Ordering::Relaxed),
                proxy_forwarded: self.proxy_stats.forwarded.load(Ordering::Relaxed),
                proxy_dial_failures: self.proxy_stats.dial_failures.load(Ordering::Relaxed),
                proxy_unserved: self.proxy_stats.unserved.load(Ordering::Relaxed),
            },
            unrouted_dropped: self
                .router
                .unrouted_stats()
                .dropped
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
        }
    }

    /// SIGTERM: priority-0 advertisements, VIPs released, every rule removed.
    async fn shutdown(&mut self) {
        let now = self.now();
        self.router.shutdown(now);
        self.pump().await;
        for (index, addr) in std::mem::take(&mut self.held) {
            if let Err(e) = self.netlink.remove_address(index, addr).await {
                tracing::error!(error = %e, "releasing a VIP at shutdown");
            }
        }
        if let Some(Err(e)) = self.nft.as_mut().map(|n| n.remove(NFT_TABLE)) {
            tracing::error!(error = %e, "removing the nftables table at shutdown");
        }
        if let Some(i) = self.ipvs.as_mut() {
            let vips: Vec<IpAddr> = self.dataplane.services.iter().map(|s| s.key.vip).collect();
            if let Err(e) = i.remove_services_for(&vips) {
                tracing::error!(error = %e, "removing IPVS services at shutdown");
            }
        }
        if let Some((index, name)) = self.local_vip_iface.clone() {
            for vip in std::mem::take(&mut self.dataplane.local_vips) {
                let _ = self.netlink.remove_address(index, vip).await;
            }
            if name == DUMMY {
                let _ = self.netlink.delete_link(index).await;
            }
        }
    }
}

/// Where direct routing's VIPs live on every controller: k0s's `dummyvip0` where the kernel
/// has dummy interfaces, else the loopback with ARP replies for them suppressed.
async fn local_vip_interface(netlink: &Netlink) -> Result<(u32, String)> {
    if let Some(dummy) = netlink.ensure_dummy(DUMMY).await? {
        tracing::info!(interface = DUMMY, "direct routing: VIPs held on the dummy interface");
        return Ok((dummy.index, dummy.name));
    }
    // arp_ignore=1: answer ARP only for addresses on the receiving interface (not lo's VIP);
    // arp_announce=2: never use the VIP as an ARP source. Together no backup answers for the
    // VIP, which stays the master's.
    for (key, value) in
        [("net/ipv4/conf/all/arp_ignore", "1"), ("net/ipv4/conf/all/arp_announce", "2")]
    {
        let path = PathBuf::from("/proc/sys").join(key);
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
    }
    let lo = netlink
        .interfaces()
        .await?
        .into_iter()
        .find(|i| i.name == "lo")
        .ok_or_else(|| anyhow!("no loopback interface"))?;
    tracing::info!(
        interface = "lo",
        "direct routing: no dummy interfaces in this kernel, VIPs held on the loopback with arp_ignore=1 arp_announce=2"
    );
    Ok((lo.index, lo.name))
}

fn probe_kind(options: &Options) -> ProbeKind {
    match options.health_check {
        HealthCheck::Tcp => ProbeKind::Tcp,
        HealthCheck::Http => ProbeKind::Http { path: options.health_path.clone() },
        HealthCheck::Https => ProbeKind::Https(HttpsProbe {
            path: options.health_path.clone(),
            client_cert: match (&options.client_cert, &options.client_key) {
                (Some(cert), Some(key)) => {
                    Some(ClientCert { cert: cert.clone(), key: key.clone() })
                }
                _ => None,
            },
            ca: options.ca.clone(),
        }),
    }
}

/// The proxy listens on every address, IPv6 and IPv4 (as k0s's `:6444`), or IPv4 only where
/// IPv6 is disabled.
fn bind_any(port: u16) -> Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let dual = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
        s.set_only_v6(false)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    };
    let v4 = || -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port).into())?;
        Ok(s)
    };
    let socket =
        dual().or_else(|_| v4()).with_context(|| format!("binding the proxy on port {port}"))?;
    socket.listen(1024).context("listen")?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into())?)
}

fn bind_status(path: &std::path::Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a killed predecessor; a live daemon still answering on it
    // would mean two daemons, which is refused.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another cplbd answers on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    UnixListener::bind(path)
        .with_context(|| format!("binding the status socket {}", path.display()))
}

async fn serve_status(listener: UnixListener, snapshot: watch::Receiver<Snapshot>) {
    use tokio::io::AsyncWriteExt;
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let body = serde_json::to_string(&*snapshot.borrow()).unwrap_or_default();
        tokio::spawn(async move {
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn serve_metrics(listener: TcpListener, snapshot: watch::Receiver<Snapshot>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let text = status::metrics(&snapshot.borrow());
        tokio::spawn(async move {
            // Read the request head (any path answers: the endpoint serves one document).
            let mut buf = [0u8; 2048];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

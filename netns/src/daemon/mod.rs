//! The daemon: start-up (configuration, plan, reconciling what a predecessor left),
//! the async driver that feeds the core and carries out its outputs, and shutdown.
//!
//! The driver is the only place that reads the clock: it turns tokio's monotonic time into
//! the core's `Instant` and passes it into every `handle_*` call.

mod driver;
pub mod lock;
mod panic;
pub mod plan;
mod serve;
mod snapshot;
pub mod status;
pub mod vipclock;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use cplb_core::config::{self, Keepalived, LoadBalancerMode, LoadOptions};
use cplb_core::lb;
use cplb_core::node::{self, Balancing, Node, NodeConfig};
use cplb_core::time::Instant;
use cplb_core::vrrp::{IfIndex, InstanceId};
use futures::FutureExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

pub use self::driver::{Driver, DropLog, Input};
use self::plan::Plan;
use crate::kernel::announce::Announcer;
use crate::kernel::ipvs::Ipvs;
use crate::kernel::link::Netlink;
use crate::kernel::linux::LinuxKernel;
pub use crate::kernel::linux::NFT_TABLE;
use crate::kernel::nft::Nft;
use crate::kernel::vrrp_socket::VrrpSocket;
use crate::kernel::watch::{KernelEvent, Watcher};
use crate::options::{HealthCheck, Options};
use crate::probe::{ClientCert, HttpsProbe, ProbeKind, Prober};
use crate::proxy::{self, ProxyStats};
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
    // Before anything is touched: a second cplbd would undo the first one's VIPs and rules.
    let _lock = match lock::acquire(&options.state_dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("cplbd: {e}");
            return exit::FAILURE;
        }
    };
    panic::install_hook();
    // Before any socket: the proxy's cap is sized to this limit, less a reserve.
    crate::limits::raise_nofile();
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

/// Reads the configuration again (SIGHUP): the errors are logged and the running
/// configuration stays when it is invalid.
fn reload_config(options: &Options) -> Option<(Keepalived, u16)> {
    let text = match std::fs::read_to_string(&options.config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("reload refused: reading {}: {e}", options.config.display());
            return None;
        }
    };
    match config::load(&text, LoadOptions { single: options.single }) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            let port = loaded.config.spec.api.port;
            let keepalived = loaded.config.enabled_keepalived().cloned();
            if keepalived.is_none() {
                tracing::error!(
                    "reload refused: {}: spec.network.controlPlaneLoadBalancing is not enabled with type Keepalived",
                    options.config.display()
                );
            }
            keepalived.map(|k| (k, port))
        }
        Err(rejected) => {
            for e in &rejected.errors {
                tracing::error!("{e}");
            }
            tracing::error!(
                errors = rejected.errors.len(),
                "reload refused: {} is invalid; the running configuration stays",
                options.config.display()
            );
            None
        }
    }
}

/// What the daemon runs besides the driver: options, configuration, plan, the tasks.
struct Daemon {
    options: Options,
    keepalived: Keepalived,
    api_port: u16,
    plan: Plan,
    local_vips: Option<(u32, String)>,
    proxy_stats: Arc<ProxyStats>,
    tasks: tokio::task::JoinSet<()>,
    /// An interface of the plan that was created again but could not be planned yet (no
    /// address of the right family yet): tried again at each kernel notification.
    replan: Option<String>,
    /// The receive task of each VRRP socket.
    receivers: HashMap<(u32, bool), tokio::task::AbortHandle>,
    /// Where the receive tasks put packets: a queue of their own, so that a flood can
    /// neither block the other inputs nor be blocked by them.
    packets: mpsc::Sender<Input>,
}

/// Packets the receive tasks may have queued for the node (about 2 ms of a one-core
/// flood; the socket's buffer holds the rest).
const PACKET_QUEUE: usize = 8192;

async fn main(options: Options, keepalived: Keepalived, api_port: u16) -> Result<()> {
    let netlink = Netlink::open().context("opening rtnetlink")?;
    let started = tokio::time::Instant::now();
    let plan =
        plan::make(&keepalived, api_port, &options.real_servers, &netlink, node::API_TRACKER)
            .await?;
    let mode = keepalived.mode();
    tracing::info!(config = %options.config.display(), mode = ?mode, address = %plan.own_api.ip(), real_servers = ?plan.real_servers, "starting");
    let nft = match Nft::open() {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "nftables unavailable");
            None
        }
    };
    let mut ipvs = None;
    if mode == LoadBalancerMode::Ipvs {
        match Ipvs::open() {
            Ok(i) => {
                tracing::info!("data plane: IPVS");
                ipvs = Some(i);
            }
            Err(e) => {
                tracing::warn!(reason = %e, "IPVS unavailable: virtual servers use the nftables NAT data plane (DNAT + masquerade on the master)");
                // DNAT to another controller is forwarding; cplbd does not change a global
                // sysctl behind the operator's back (Kubernetes nodes have it on).
                let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward");
                if forwarding.is_ok_and(|v| v.trim() == "0") {
                    tracing::warn!(
                        "net.ipv4.ip_forward is 0: the master can only balance to its own API server until it is set to 1"
                    );
                }
            }
        }
    }
    // Direct routing needs the VIP on every real server and ARP for it left to the master;
    // without IPVS the master balances by DNAT and nothing is routed directly, so neither
    // the local VIPs nor the ARP sysctls are touched.
    let local_vips = if mode == LoadBalancerMode::Ipvs
        && ipvs.is_some()
        && keepalived.virtual_servers.iter().any(|v| v.lb_kind == config::LbKind::Dr)
    {
        Some(local_vip_interface(&netlink).await?)
    } else {
        None
    };
    let mut kernel = LinuxKernel {
        netlink,
        nft,
        ipvs,
        sockets: HashMap::new(),
        announcers: HashMap::new(),
        macs: BTreeMap::new(),
        owned: crate::kernel::owned::Owned::load(&options.state_dir),
        foreign: std::collections::BTreeSet::new(),
    };
    // Sockets and listeners are opened while every capability is still there.
    open_sockets(&mut kernel, &plan)?;
    let proxy_listener = if mode == LoadBalancerMode::UserspaceProxy {
        Some(bind_any(keepalived.user_space_proxy_bind_port)?)
    } else {
        None
    };
    let status_listener = bind_status(&options.status_socket)?;
    let status_access =
        serve::secure_status_socket(&options.status_socket, options.status_group.as_deref())?;
    let metrics_listener = match options.metrics {
        Some(addr) => Some(
            TcpListener::bind(addr).await.with_context(|| format!("binding metrics on {addr}"))?,
        ),
        None => None,
    };
    let mut watcher = Watcher::open().context("subscribing to rtnetlink notifications")?;
    if options.keep_capabilities {
        tracing::warn!("keeping every capability (--keep-capabilities)");
    } else {
        crate::privileges::drop_to_network_only().map_err(|e| anyhow!(e))?;
    }
    tracing::info!(capabilities = ?crate::privileges::effective(), "privileges");

    let prober = Prober::new(probe_kind(&options)).map_err(|e| anyhow!("health check: {e}"))?;
    let probe_timeout = lb::k0s_health_config(&keepalived).timeout;
    let accept = &options.accept_adverts_from;
    let config = node_config(&keepalived, api_port, &plan, local_vips.as_ref(), &kernel, accept);
    // Everything starts unknown: the node's first commands remove the VIPs and replace the
    // table and services a dead predecessor left (it starts as backup).
    let mut node = Node::new(Instant::ZERO, config).map_err(|e| anyhow!("{e}"))?;
    for group in plan.groups.iter().filter(|g| !g.iface.up) {
        tracing::warn!(interface = %group.iface.name, "link down at start: instances wait in fault");
        node.handle_link(Instant::ZERO, IfIndex(group.iface.index), false);
    }
    let (inputs, mut rx) = mpsc::channel::<Input>(1024);
    let (packets, mut packets_rx) = mpsc::channel::<Input>(PACKET_QUEUE);
    let proxy_stats = Arc::new(ProxyStats::default());
    let mut daemon = Daemon {
        options,
        keepalived,
        api_port,
        plan,
        local_vips,
        proxy_stats: Arc::clone(&proxy_stats),
        tasks: tokio::task::JoinSet::new(),
        replan: None,
        receivers: HashMap::new(),
        packets: packets.clone(),
    };
    let mut driver = Driver {
        started,
        names: names(&node),
        node,
        kernel,
        prober,
        probe_timeout,
        inputs: inputs.clone(),
        transitions: BTreeMap::new(),
        refused: BTreeMap::new(),
        last_verify: started,
        send_error: None,
        drops: DropLog::default(),
        vip_clock: vipclock::VipClock::default(),
    };
    if let Some(listener) = proxy_listener {
        let config = proxy::ProxyConfig::from_options(&daemon.options);
        tracing::info!(max_connections = config.max_connections, idle_timeout = ?config.idle_timeout, "proxy");
        daemon.tasks.spawn(proxy::serve(listener, inputs.clone(), config, proxy_stats));
    }
    let endpoints = Arc::new(serve::EndpointStats::default());
    daemon.tasks.spawn(serve::status(
        status_listener,
        inputs.clone(),
        status_access,
        Arc::clone(&endpoints),
    ));
    if let Some(listener) = metrics_listener {
        daemon.tasks.spawn(serve::metrics(listener, inputs.clone(), endpoints));
    }
    for (&key, socket) in &driver.kernel.sockets {
        let task = daemon.tasks.spawn(receive(key.0, Arc::clone(socket), packets.clone()));
        daemon.receivers.insert(key, task);
    }
    let tx = inputs.clone();
    daemon.tasks.spawn(async move {
        while let Some(event) = watcher.next().await {
            if tx.send(Input::Kernel(event)).await.is_err() {
                return;
            }
        }
        tracing::error!(
            "rtnetlink notifications ended: link and address changes are no longer seen"
        );
    });

    let signal_of = |kind: SignalKind, name: &str| {
        signal(kind).with_context(|| format!("installing the {name} handler"))
    };
    let mut sigterm = signal_of(SignalKind::terminate(), "SIGTERM")?;
    let mut sigint = signal_of(SignalKind::interrupt(), "SIGINT")?;
    let mut sighup = signal_of(SignalKind::hangup(), "SIGHUP")?;
    let mut sigusr1 = signal_of(SignalKind::user_defined1(), "SIGUSR1")?;
    let mut sigusr2 = signal_of(SignalKind::user_defined2(), "SIGUSR2")?;
    if let Some(after) = daemon.options.panic_after {
        daemon.tasks.spawn(async move {
            tokio::time::sleep(after).await;
            panic!("--panic-after: the deliberate panic of a test");
        });
    }
    // A panic anywhere (a task's is caught by tokio, the loop's here) ends the loop, and
    // the daemon resigns and removes what it set, as on SIGTERM, before it aborts: a node
    // that stays master with a dead proxy or receive task would hold the VIP for nothing.
    let ran = std::panic::AssertUnwindSafe(async { loop {
        driver.pump().await;
        let deadline = driver.deadline();
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: resigning"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: resigning"); break; }
            _ = sighup.recv() => daemon.reload(&mut driver, None).await,
            _ = sigusr1.recv() => log_status(&daemon, &driver, "SIGUSR1"),
            _ = sigusr2.recv() => log_status(&daemon, &driver, "SIGUSR2"),
            Some(packet) = packets_rx.recv() => driver.handle(packet, |d| snapshot::build(&daemon, d)).await,
            Some(input) = rx.recv() => {
                let recreated = daemon.recreated_interface(&input);
                driver.handle(input, |d| snapshot::build(&daemon, d)).await;
                if let Some(name) = recreated {
                    daemon.reload(&mut driver, Some(&name)).await;
                }
            }
            () = tokio::time::sleep_until(deadline) => driver.handle_timeout().await,
            () = panic::notified() => break,
        }
    }})
    .catch_unwind()
    .await;
    let panicked = ran.is_err() || panic::happened();
    if panicked {
        tracing::error!("a panic: resigning and removing what cplbd set, then aborting");
    }
    // SIGTERM: priority-0 adverts, every VIP and rule the node set removed; dummyvip0 and
    // its /32s stay for the API server, which may still be a real server.
    let now = driver.now();
    driver.node.shutdown(now);
    driver.pump().await;
    daemon.tasks.shutdown().await;
    let _ = std::fs::remove_file(&daemon.options.status_socket);
    if panicked {
        tracing::error!("stopped after a panic: aborting");
        std::process::abort();
    }
    tracing::info!("stopped");
    Ok(())
}

impl Daemon {
    /// A link notification for an interface the plan uses under another index: it was
    /// deleted and created again, and is followed by name.
    fn recreated_interface(&self, input: &Input) -> Option<String> {
        let Input::Kernel(event) = input else { return None };
        if let Some(name) = &self.replan {
            return Some(name.clone());
        }
        let KernelEvent::Link { index, name, .. } = event else { return None };
        self.plan
            .groups
            .iter()
            .any(|g| g.iface.name == *name && g.iface.index != *index)
            .then(|| name.clone())
    }

    /// SIGHUP (or an interface created again): reads the configuration, works out the
    /// plan and replaces the node's configuration. Unchanged instances are untouched; an
    /// invalid file or a plan that cannot be made changes nothing.
    async fn reload(&mut self, driver: &mut Driver<LinuxKernel>, recreated: Option<&str>) {
        let (keepalived, api_port) = match recreated {
            Some(name) => {
                if self.replan.is_none() {
                    tracing::info!(interface = name, "interface created again: following it");
                }
                (self.keepalived.clone(), self.api_port)
            }
            None => {
                tracing::info!(config = %self.options.config.display(), "SIGHUP: reloading");
                match reload_config(&self.options) {
                    Some(c) => c,
                    None => return,
                }
            }
        };
        let netlink = driver.kernel.netlink.clone();
        let plan = match plan::make(
            &keepalived,
            api_port,
            &self.options.real_servers,
            &netlink,
            node::API_TRACKER,
        )
        .await
        {
            Ok(p) => p,
            Err(e) if recreated.is_some() => {
                if self.replan.is_none() {
                    tracing::warn!(error = %e, "the interface is back but not usable yet; waiting");
                }
                self.replan = recreated.map(str::to_owned);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running configuration stays");
                return;
            }
        };
        self.replan = None;
        // What was bound or opened at start-up (with privileges since dropped) cannot change
        // in a reload: refuse rather than redirect clients to a port nobody listens on.
        let no_direct_routing = driver.kernel.ipvs.is_none();
        let ready = self.local_vips.is_some() || no_direct_routing;
        if let Some(why) = needs_restart(&self.keepalived, &keepalived, ready) {
            tracing::error!(
                "reload refused: {why} needs a restart; the running configuration stays"
            );
            return;
        }
        let before: Vec<(u32, bool)> = driver.kernel.sockets.keys().copied().collect();
        if let Some(name) = recreated {
            let gone: Vec<u32> = self
                .plan
                .groups
                .iter()
                .filter(|g| g.iface.name == name)
                .map(|g| g.iface.index)
                .collect();
            driver.kernel.sockets.retain(|(i, _), _| !gone.contains(i));
            driver.kernel.announcers.retain(|i, _| !gone.contains(i));
        }
        if let Err(e) = open_sockets(&mut driver.kernel, &plan) {
            tracing::error!(error = %e, "reload refused: the running configuration stays");
            return;
        }
        self.receivers.retain(|key, task| {
            let open = driver.kernel.sockets.contains_key(key);
            if !open {
                task.abort();
            }
            open
        });
        for (&key, socket) in &driver.kernel.sockets {
            if !before.contains(&key) || !self.receivers.contains_key(&key) {
                let task =
                    self.tasks.spawn(receive(key.0, Arc::clone(socket), self.packets.clone()));
                self.receivers.insert(key, task);
            }
        }
        let config = node_config(
            &keepalived,
            api_port,
            &plan,
            self.local_vips.as_ref(),
            &driver.kernel,
            &self.options.accept_adverts_from,
        );
        let now = driver.now();
        match driver.node.handle_config(now, config) {
            Ok(r) => {
                driver.names.extend(names(&driver.node));
                tracing::info!(
                    kept = r.kept.len(),
                    added = r.added.len(),
                    removed = r.removed.len(),
                    "configuration reloaded"
                );
                for group in plan.groups.iter().filter(|g| !g.iface.up) {
                    driver.node.handle_link(now, IfIndex(group.iface.index), false);
                }
                self.keepalived = keepalived;
                self.api_port = api_port;
                self.plan = plan;
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the running configuration stays")
            }
        }
    }
}

/// Why a new configuration cannot be taken up without a restart, if it cannot: the proxy's
/// listener and the data plane were set up at start.
fn needs_restart(running: &Keepalived, new: &Keepalived, local_vips_ready: bool) -> Option<String> {
    if new.mode() != running.mode() {
        return Some(format!(
            "changing the load balancer mode ({:?} to {:?})",
            running.mode(),
            new.mode()
        ));
    }
    if new.mode() == LoadBalancerMode::UserspaceProxy
        && new.user_space_proxy_bind_port != running.user_space_proxy_bind_port
    {
        return Some(format!(
            "moving userSpaceProxyBindPort ({} to {})",
            running.user_space_proxy_bind_port, new.user_space_proxy_bind_port
        ));
    }
    let dr = new.virtual_servers.iter().any(|v| v.lb_kind == config::LbKind::Dr);
    if new.mode() == LoadBalancerMode::Ipvs && dr && !local_vips_ready {
        return Some("a first direct-routing virtual server (dummyvip0)".to_owned());
    }
    None
}

/// The node configuration for a plan.
fn node_config(
    keepalived: &Keepalived,
    api_port: u16,
    plan: &Plan,
    local_vips: Option<&(u32, String)>,
    kernel: &LinuxKernel,
    accept_from: &[IpAddr],
) -> NodeConfig {
    NodeConfig {
        keepalived: keepalived.clone(),
        api_port,
        own_api: plan.own_api,
        real_servers: plan.real_servers.clone(),
        instances: plan
            .groups
            .iter()
            .flat_map(|g| g.instances.iter().map(|(_, c)| c.clone()))
            .map(|mut c| {
                c.accept_from = accept_from
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == c.primary_address.is_ipv4())
                    .collect();
                c
            })
            .collect(),
        local_vip_ifindex: local_vips.map(|(i, _)| IfIndex(*i)),
        balancing: if kernel.ipvs.is_some() { Balancing::Ipvs } else { Balancing::Nat },
    }
}

fn names(node: &Node) -> BTreeMap<InstanceId, String> {
    node.instances().map(|(id, c)| (id, c.name.clone())).collect()
}

/// Opens the VRRP socket and the announcer of every group that has none yet.
fn open_sockets(kernel: &mut LinuxKernel, plan: &Plan) -> Result<()> {
    for group in &plan.groups {
        let v4 = group.address.is_ipv4();
        let key = (group.iface.index, v4);
        if let std::collections::hash_map::Entry::Vacant(e) = kernel.sockets.entry(key) {
            let source =
                if v4 { None } else { group.instances.first().map(|(_, c)| c.primary_address) };
            let socket = VrrpSocket::open(&group.iface.name, group.iface.index, v4, source)
                .with_context(|| format!("opening the VRRP socket on {}", group.iface.name))?;
            e.insert(Arc::new(socket));
        }
        if let std::collections::hash_map::Entry::Vacant(e) =
            kernel.announcers.entry(group.iface.index)
        {
            e.insert(
                Announcer::open(group.iface.index).with_context(|| {
                    format!("opening the packet socket on {}", group.iface.name)
                })?,
            );
        }
    }
    Ok(())
}

/// Receives VRRP packets on one socket for the driver.
async fn receive(ifindex: u32, socket: Arc<VrrpSocket>, tx: mpsc::Sender<Input>) {
    let mut failing: Option<String> = None;
    // SO_RXQ_OVFL counts from the socket's creation: what is new since the last read.
    let mut kernel_lost: u32 = 0;
    // Reads the daemon's queue had no room for (a flood outpacing the node).
    let mut queue_lost: u64 = 0;
    loop {
        match socket.recv().await {
            Ok(datagram) => {
                if failing.take().is_some() {
                    tracing::info!(ifindex, "VRRP receive works again");
                }
                let now_lost = datagram.overflows.unwrap_or(kernel_lost);
                let lost = u64::from(now_lost.wrapping_sub(kernel_lost)) + queue_lost;
                kernel_lost = now_lost;
                // Never wait here: while this task waits the socket's queue fills, and what
                // overflows there is whatever comes next, the real master's adverts too.
                match tx.try_send(Input::Packet { ifindex, datagram, lost }) {
                    Ok(()) => queue_lost = 0,
                    Err(mpsc::error::TrySendError::Full(_)) => queue_lost = lost + 1,
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(e) => {
                // Once per condition, not every 100 ms.
                let text = e.to_string();
                if failing.as_deref() != Some(text.as_str()) {
                    tracing::warn!(ifindex, error = %text, "VRRP receive failed");
                    failing = Some(text);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// SIGUSR1/SIGUSR2: the status, as `cplb status --json` shows it, into the log.
fn log_status(daemon: &Daemon, driver: &Driver<LinuxKernel>, signal: &str) {
    let snapshot = snapshot::build(daemon, driver);
    let json = serde_json::to_string(&snapshot).unwrap_or_default();
    tracing::info!(status = %json, "{signal}: status");
    for line in status::render(&snapshot).lines() {
        tracing::info!("{line}");
    }
}

/// Where direct routing's VIPs live on every controller: k0s's `dummyvip0` where the kernel
/// has dummy interfaces, else the loopback with ARP replies for them suppressed.
async fn local_vip_interface(netlink: &Netlink) -> Result<(u32, String)> {
    // Linux answers ARP for any of its addresses on any interface (arp_ignore=0), the VIP on
    // dummyvip0 or lo included: every backup would claim the VIP. arp_ignore=1: answer only
    // for addresses of the receiving interface; arp_announce=2: never use the VIP as an ARP
    // source. Together the VIP stays the master's (as k0s sets them for keepalived).
    for (key, value) in
        [("net/ipv4/conf/all/arp_ignore", "1"), ("net/ipv4/conf/all/arp_announce", "2")]
    {
        let path = PathBuf::from("/proc/sys").join(key);
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dummy) = netlink.ensure_dummy(DUMMY).await? {
        tracing::info!(
            interface = DUMMY,
            "direct routing: VIPs held on the dummy interface, arp_ignore=1 arp_announce=2"
        );
        return Ok((dummy.index, dummy.name));
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

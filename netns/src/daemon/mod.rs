//! The daemon: start-up (configuration, plan, reconciling what a predecessor left),
//! the async driver that feeds the core and carries out its outputs, and shutdown.
//!
//! The driver is the only place that reads the clock: it turns tokio's monotonic time into
//! the core's `Instant` and passes it into every `handle_*` call.

mod driver;
pub mod lock;
pub mod options;
mod panic;
pub mod plan;
mod receive;
mod serve;
mod snapshot;
mod timer;
pub mod vipclock;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use cplb_core::config::{self, Keepalived, LoadBalancerMode, LoadOptions};
use cplb_core::lb;
use cplb_core::node::{self, Balancing, Node};
use cplb_core::time::Instant;
use cplb_core::vrrp::{IfIndex, InstanceId};
use futures::FutureExt;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

pub use self::driver::{Driver, DropLog, Input, ProxyDirector};
use self::options::{HealthCheck, Options};
use self::plan::Plan;
use crate::kernel::ipvs::Ipvs;
use crate::kernel::link::Netlink;
use crate::kernel::linux::LinuxKernel;
pub use crate::kernel::linux::NFT_TABLE;
use crate::kernel::nft::Nft;
use crate::kernel::owned::Owned;
use crate::kernel::watch::{KernelEvent, Watcher};
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
    /// Where the receive tasks put packets.
    queues: receive::Queues,
}

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
    // the local VIPs nor the ARP sysctls are touched (and what a killed predecessor
    // changed for direct routing is put back).
    let mut owned = Owned::load(
        lock::lock_path(&options.state_dir).ok().map(|p| p.with_extension("owned.json")),
    );
    let local_vips = if mode == LoadBalancerMode::Ipvs
        && ipvs.is_some()
        && keepalived.virtual_servers.iter().any(|v| v.lb_kind == config::LbKind::Dr)
    {
        Some(local_vip_interface(&netlink, &mut owned).await?)
    } else {
        restore_host(&netlink, &mut owned).await;
        None
    };
    let mut kernel = LinuxKernel {
        netlink,
        nft,
        ipvs,
        sockets: HashMap::new(),
        announcers: HashMap::new(),
        macs: BTreeMap::new(),
        owned,
        foreign: std::collections::BTreeSet::new(),
    };
    // Sockets and listeners are opened while every capability is still there.
    receive::open_sockets(&mut kernel, &plan)?;
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
    let config = plan::node_config(
        &keepalived,
        api_port,
        &plan,
        local_vips.as_ref(),
        balancing(&kernel),
        &options.vrrp_tuning(),
    );
    // Everything starts unknown: the node's first commands remove the VIPs and replace the
    // table and services a dead predecessor left (it starts as backup).
    let mut node = Node::new(Instant::ZERO, config).map_err(|e| anyhow!("{e}"))?;
    for group in plan.groups.iter().filter(|g| !g.iface.up) {
        tracing::warn!(interface = %group.iface.name, "link down at start: instances wait in fault");
        node.handle_link(Instant::ZERO, IfIndex(group.iface.index), false);
    }
    let (inputs, mut rx) = mpsc::channel::<Input>(1024);
    let (adverts, mut adverts_rx) = mpsc::channel::<Input>(receive::PACKET_QUEUE);
    let (others, mut others_rx) = mpsc::channel::<Input>(receive::PACKET_QUEUE);
    let queues = receive::Queues { adverts, others };
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
        queues: queues.clone(),
    };
    let mut driver = Driver::new(node, kernel, prober, probe_timeout, inputs.clone());
    driver.started = started;
    driver.last_verify = started;
    // The proxy's own runtime: its threads start here, after the capabilities were dropped,
    // so they hold no more than this thread does.
    let mut proxy_runtime = None;
    if let Some(listener) = proxy_listener {
        let config = proxy_config(&daemon.options);
        let threads = daemon.options.proxy_threads.map_or_else(default_proxy_threads, usize::from);
        tracing::info!(max_connections = config.max_connections, idle_timeout = ?config.idle_timeout, threads, "proxy");
        let serve = |listener| {
            proxy::serve::<crate::net::Os, _>(
                listener,
                ProxyDirector(inputs.clone()),
                config,
                proxy_stats,
            )
        };
        if threads == 0 {
            daemon.tasks.spawn(serve(listener));
        } else {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("cplbd-proxy")
                .enable_all()
                .build()
                .context("starting the proxy's threads")?;
            // Registered again with the proxy runtime's reactor.
            let std_listener = listener.into_std().context("moving the proxy's listener")?;
            let listener = {
                let _inside = rt.enter();
                TcpListener::from_std(std_listener).context("moving the proxy's listener")?
            };
            let task = rt.spawn(serve(listener));
            daemon.tasks.spawn(async move {
                if let Err(e) = task.await
                    && e.is_panic()
                {
                    tracing::error!("the proxy panicked");
                }
            });
            proxy_runtime = Some(rt);
        }
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
        let task = daemon.tasks.spawn(receive::receive(key.0, socket.clone(), queues.clone()));
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
    let mut timer = timer::Timer::new();
    let ran = std::panic::AssertUnwindSafe(async { loop {
        driver.pump().await;
        let deadline = driver.deadline();
        // In this order: what ends or reconfigures the daemon, then timers, then the
        // adverts, then the other inputs, and packets no instance expects last, so that a
        // flood of those waits (and overflows its own queue) while the rest goes on.
        tokio::select! {
            biased;
            _ = sigterm.recv() => { tracing::info!("SIGTERM: resigning"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: resigning"); break; }
            () = panic::notified() => break,
            _ = sighup.recv() => daemon.reload(&mut driver, None).await,
            _ = sigusr1.recv() => log_status(&daemon, &driver, "SIGUSR1"),
            _ = sigusr2.recv() => log_status(&daemon, &driver, "SIGUSR2"),
            () = timer.sleep_until(deadline) => driver.handle_timeout().await,
            Some(packet) = adverts_rx.recv() => driver.handle(packet, |d| snapshot::build(&daemon, d)).await,
            Some(input) = rx.recv() => {
                let recreated = daemon.recreated_interface(&input);
                driver.handle(input, |d| snapshot::build(&daemon, d)).await;
                if let Some(name) = recreated {
                    daemon.reload(&mut driver, Some(&name)).await;
                }
            }
            Some(packet) = others_rx.recv() => driver.handle(packet, |d| snapshot::build(&daemon, d)).await,
        }
    }})
    .catch_unwind()
    .await;
    let panicked = ran.is_err() || panic::happened();
    if panicked {
        tracing::error!("a panic: resigning and removing what cplbd set, then aborting");
    }
    // SIGTERM: priority-0 adverts, every VIP, rule and service the node set removed, the
    // local VIPs of direct routing too; then what direct routing changed on the host.
    let now = driver.now();
    driver.node.shutdown(now);
    driver.pump().await;
    if daemon.local_vips.is_some() {
        restore_host(&driver.kernel.netlink, &mut driver.kernel.owned).await;
    }
    daemon.tasks.shutdown().await;
    if let Some(rt) = proxy_runtime {
        // Its connections end with the daemon, as they would with the process.
        rt.shutdown_background();
    }
    let _ = std::fs::remove_file(&daemon.options.status_socket);
    if panicked {
        tracing::error!("stopped after a panic: aborting");
        std::process::abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// The proxy's configuration the options ask for; without `--proxy-max-connections` the
/// cap is sized to RLIMIT_NOFILE as it is now (raised at start).
fn proxy_config(options: &Options) -> proxy::ProxyConfig {
    let max_connections = match options.proxy_max_connections {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => {
            crate::limits::default_proxy_connections(crate::limits::nofile_soft().unwrap_or(1024))
        }
    };
    proxy::ProxyConfig {
        dial_timeout: options.dial_timeout,
        max_connections,
        idle_timeout: Some(options.proxy_idle_timeout).filter(|d| !d.is_zero()),
    }
}

/// One proxy thread per CPU, at most 8.
fn default_proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).min(8)
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
        if let Err(e) = receive::open_sockets(&mut driver.kernel, &plan) {
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
                    self.tasks.spawn(receive::receive(key.0, socket.clone(), self.queues.clone()));
                self.receivers.insert(key, task);
            }
        }
        let config = plan::node_config(
            &keepalived,
            api_port,
            &plan,
            self.local_vips.as_ref(),
            balancing(&driver.kernel),
            &self.options.vrrp_tuning(),
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
/// IPVS where the kernel has it, else the kernel's NAT.
fn balancing(kernel: &LinuxKernel) -> Balancing {
    if kernel.ipvs.is_some() { Balancing::Ipvs } else { Balancing::Nat }
}

fn names(node: &Node) -> BTreeMap<InstanceId, String> {
    node.instances().map(|(id, c)| (id, c.name.clone())).collect()
}

/// SIGUSR1/SIGUSR2: the status, as `cplb status --json` shows it, into the log.
fn log_status(daemon: &Daemon, driver: &Driver<LinuxKernel>, signal: &str) {
    let snapshot = snapshot::build(daemon, driver);
    let json = serde_json::to_string(&snapshot).unwrap_or_default();
    tracing::info!(status = %json, "{signal}: status");
    for line in crate::status::render(&snapshot).lines() {
        tracing::info!("{line}");
    }
}

/// Where direct routing's VIPs live on every controller: k0s's `dummyvip0` where the kernel
/// has dummy interfaces, else the loopback with ARP replies for them suppressed. What it
/// changes on the host is written down in `owned` and put back by [`restore_host`].
async fn local_vip_interface(netlink: &Netlink, owned: &mut Owned) -> Result<(u32, String)> {
    // Linux answers ARP for any of its addresses on any interface (arp_ignore=0), the VIP on
    // dummyvip0 or lo included: every backup would claim the VIP. arp_ignore=1: answer only
    // for addresses of the receiving interface; arp_announce=2: never use the VIP as an ARP
    // source. Together the VIP stays the master's (as k0s sets them for keepalived).
    for (key, value) in ARP_SYSCTLS {
        let path = PathBuf::from("/proc/sys").join(key);
        let now = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if now.trim() != value {
            owned.changing_sysctl(key, now.trim());
            std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some((dummy, created)) = netlink.ensure_dummy(DUMMY).await? {
        if created {
            owned.created_link(DUMMY);
        }
        tracing::info!(
            interface = DUMMY,
            created,
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

/// The sysctls direct routing needs, and their values.
const ARP_SYSCTLS: [(&str, &str); 2] =
    [("net/ipv4/conf/all/arp_ignore", "1"), ("net/ipv4/conf/all/arp_announce", "2")];

/// Puts back what direct routing changed on the host, per the record (this daemon's or a
/// killed predecessor's): the dummy interface if cplbd created it and nothing but its own
/// link-local address is left on it (an address someone else put there keeps it), then the
/// ARP sysctls, whose old values are safe again once no VIP is left on a non-ARPing
/// interface. Called on stop, after the node released its addresses, and at start when no
/// direct routing is configured any more.
async fn restore_host(netlink: &Netlink, owned: &mut Owned) {
    if owned.has_link(DUMMY) {
        match netlink.link_by_name(DUMMY).await {
            Ok(None) => owned.removed_link(DUMMY),
            Ok(Some(dummy)) => {
                let left = netlink.addresses(dummy.index).await.unwrap_or_default();
                let foreign: Vec<String> = left
                    .iter()
                    .filter(|a| !a.link_local)
                    .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                    .collect();
                if !foreign.is_empty() {
                    tracing::warn!(interface = DUMMY, addresses = ?foreign, "leaving the interface cplbd created: it holds addresses cplbd did not put there");
                    owned.removed_link(DUMMY);
                } else if let Err(e) = netlink.delete_link(dummy.index).await {
                    tracing::warn!(interface = DUMMY, error = %e, "deleting the interface cplbd created");
                } else {
                    tracing::info!(interface = DUMMY, "deleted the interface cplbd created");
                    owned.removed_link(DUMMY);
                }
            }
            Err(e) => {
                tracing::warn!(interface = DUMMY, error = %e, "looking up the interface cplbd created")
            }
        }
    }
    for (key, value) in owned.changed_sysctls() {
        let path = PathBuf::from("/proc/sys").join(&key);
        match std::fs::write(&path, &value) {
            Ok(()) => {
                tracing::info!(sysctl = %key, value = %value, "put back the value cplbd changed");
                owned.restored_sysctl(&key);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "putting back a sysctl cplbd changed")
            }
        }
    }
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

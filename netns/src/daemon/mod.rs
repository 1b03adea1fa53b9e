//! The daemon `cplbd`: start-up (configuration, plan, what a predecessor left), the async
//! driver that feeds the core and carries out its outputs, and shutdown.
//!
//! The driver is the only place that reads the clock: it turns tokio's monotonic time into
//! the core's `Instant` and passes it into every `handle_*` call.

pub mod clock;
mod config;
mod context;
mod driver;
mod host;
mod listeners;
pub mod lock;
pub mod options;
mod panic;
pub mod plan;
mod receive;
mod reload;
mod serve;
mod signals;
mod snapshot;
mod timer;
pub mod vipclock;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use cplb_core::lb;
use cplb_core::node::{self, Node};
use cplb_core::time::Instant;
use cplb_core::vrrp::IfIndex;
use futures::FutureExt;
use tokio::sync::mpsc;

use self::config::FileConfig;
use self::context::{Daemon, ProxyRuntime};
pub use self::driver::{Driver, DropLog, Input, ProxyDirector};
pub use self::host::DUMMY;
use self::host::Facilities;
use self::listeners::Listeners;
use self::lock::InstanceLock;
use self::options::{HealthCheck, Options};
use self::plan::Plan;
use self::signals::{Signal, Signals};
use crate::kernel::link::Netlink;
use crate::kernel::linux::LinuxKernel;
pub use crate::kernel::linux::NFT_TABLE;
use crate::kernel::owned::Owned;
use crate::kernel::watch::Watcher;
use crate::probe::{ClientCert, HttpsProbe, ProbeKind, Prober};
use crate::proxy::ProxyStats;

/// Exit codes.
pub mod exit {
    /// Clean shutdown.
    pub const OK: u8 = 0;
    /// Could not run (kernel, privileges, interfaces).
    pub const FAILURE: u8 = 1;
    /// The configuration is invalid (as `cplb validate`).
    pub const INVALID_CONFIG: u8 = 2;
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(options: Options) -> u8 {
    let Some(file) = config::at_start(&options.config, options.single) else {
        return exit::INVALID_CONFIG;
    };
    // Before anything is touched: a second cplbd would undo the first one's VIPs and rules.
    let lock = match lock::acquire(&options.state_dir) {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    panic::install_hook();
    // Before any socket: the proxy's cap is sized to this limit, less a reserve.
    crate::limits::raise_nofile();
    // One thread: capabilities are per thread, and dropping them on the only thread before
    // any other exists covers every thread the runtime later starts.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return failed(&format_args!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(main(options, &lock, file)) {
        Ok(()) => exit::OK,
        Err(e) => failed(&format_args!("{e:#}")),
    }
}

/// Logs and prints why the daemon cannot run; the exit code for it.
fn failed(why: &dyn std::fmt::Display) -> u8 {
    tracing::error!("{why}");
    eprintln!("cplbd: {why}");
    exit::FAILURE
}

async fn main(options: Options, lock: &InstanceLock, file: FileConfig) -> Result<()> {
    let started = tokio::time::Instant::now();
    let (kernel, plan, local_vips) = take_over_the_host(&options, lock, &file).await?;
    let mut listeners = Listeners::bind(&options, &file.keepalived).await?;
    let watcher = Watcher::open().context("subscribing to rtnetlink notifications")?;
    drop_privileges(&options)?;
    let (inputs, receivers) = channels();
    let clock = clock::Monotonic { started };
    let driver = start_driver(&options, &file, &plan, local_vips.as_ref(), kernel, clock, &inputs)?;
    let mut driver = Driver { started, last_verify: started, ..driver };
    let mut daemon = Daemon {
        options,
        file,
        plan,
        local_vips,
        proxy_stats: Arc::new(ProxyStats::default()),
        tasks: tokio::task::JoinSet::new(),
        replan: None,
        receivers: HashMap::new(),
        queues: receivers.queues.clone(),
    };
    let proxy = daemon.start_proxy(listeners.proxy.take(), &inputs.main)?;
    daemon.start_endpoints(listeners, &inputs.main);
    daemon.follow_sockets(&driver.kernel);
    daemon.forward_kernel_events(watcher, &inputs.main);
    daemon.arm_test_panic();
    let signals = Signals::install()?;
    let panicked = serve_until_stopped(&mut daemon, &mut driver, signals, receivers).await;
    stop(daemon, driver, proxy, panicked).await;
    Ok(())
}

/// Works out the plan from the configuration and the interfaces, opens what the kernel
/// offers, prepares direct routing, and opens the VRRP sockets while every capability is
/// still there. What a dead predecessor left is found here and removed by the node's
/// first commands.
async fn take_over_the_host(
    options: &Options,
    lock: &InstanceLock,
    file: &FileConfig,
) -> Result<(LinuxKernel, Plan, Option<(IfIndex, String)>)> {
    let netlink = Netlink::open().context("opening rtnetlink")?;
    let keepalived = &file.keepalived;
    let plan =
        plan::make(keepalived, file.api_port, &options.real_servers, &netlink, node::API_TRACKER)
            .await?;
    tracing::info!(config = %options.config.display(), mode = ?keepalived.mode(), address = %plan.own_api.ip(), real_servers = ?plan.real_servers, "starting");
    let facilities = Facilities::open(keepalived.mode()).await;
    let mut owned = Owned::load(Some(lock.record_path()));
    let local_vips =
        host::prepare_direct_routing(&netlink, &mut owned, keepalived, &facilities).await?;
    let mut kernel = LinuxKernel {
        netlink,
        nft: facilities.nft,
        ipvs: facilities.ipvs,
        sockets: HashMap::new(),
        announcers: HashMap::new(),
        macs: BTreeMap::new(),
        owned,
        foreign: BTreeSet::new(),
    };
    receive::open_sockets(&mut kernel, &plan)?;
    Ok((kernel, plan, local_vips))
}

/// After start-up only CAP_NET_ADMIN and CAP_NET_RAW remain (unless kept on purpose).
fn drop_privileges(options: &Options) -> Result<()> {
    if options.keep_capabilities {
        tracing::warn!("keeping every capability (--keep-capabilities)");
    } else {
        crate::privileges::drop_to_network_only()?;
    }
    tracing::info!(capabilities = ?crate::privileges::effective(), "privileges");
    Ok(())
}

/// Where the driver's inputs are sent.
struct Senders {
    /// Kernel notifications, probe results, proxy and status requests.
    main: mpsc::Sender<Input>,
}

/// Where the driver's inputs arrive: the main queue, and the VRRP packets in two queues
/// of their own (see [`receive::Queues`]).
struct Receivers {
    main: mpsc::Receiver<Input>,
    adverts: mpsc::Receiver<Input>,
    others: mpsc::Receiver<Input>,
    queues: receive::Queues,
}

fn channels() -> (Senders, Receivers) {
    let (main, main_rx) = mpsc::channel::<Input>(1024);
    let (adverts, adverts_rx) = mpsc::channel::<Input>(receive::PACKET_QUEUE);
    let (others, others_rx) = mpsc::channel::<Input>(receive::PACKET_QUEUE);
    let queues = receive::Queues { adverts, others };
    let receivers = Receivers { main: main_rx, adverts: adverts_rx, others: others_rx, queues };
    (Senders { main }, receivers)
}

/// The node for the plan, and the driver around it. Everything starts unknown: the node's
/// first commands remove the VIPs and replace the table and services a dead predecessor
/// left (it starts as backup).
fn start_driver(
    options: &Options,
    file: &FileConfig,
    plan: &Plan,
    local_vips: Option<&(IfIndex, String)>,
    kernel: LinuxKernel,
    clock: clock::Monotonic,
    inputs: &Senders,
) -> Result<Driver<LinuxKernel>> {
    let prober = Prober::new(probe_kind(options)).map_err(|e| anyhow!("health check: {e}"))?;
    let probe_timeout = lb::k0s_health_config(&file.keepalived).timeout;
    let config = plan::node_config(
        &file.keepalived,
        file.api_port,
        plan,
        local_vips.map(|(i, _)| *i),
        host::balancing(&kernel),
        &options.vrrp_tuning(),
    );
    let mut node = Node::new(Instant::ZERO, config).map_err(|e| anyhow!("{e}"))?;
    for group in plan.groups.iter().filter(|g| !g.iface.up) {
        tracing::warn!(interface = %group.iface.name, "link down at start: instances wait in fault");
        node.handle_link(Instant::ZERO, IfIndex(group.iface.index), false);
    }
    Ok(Driver::new(node, kernel, clock, prober, probe_timeout, inputs.main.clone()))
}

/// The driver's loop until a signal or a panic stops it; whether a panic did.
///
/// A panic anywhere (a task's is caught by tokio, the loop's here) ends the loop, and the
/// daemon resigns and removes what it set, as on SIGTERM, before it aborts: a node that
/// stays master with a dead proxy or receive task would hold the VIP for nothing.
async fn serve_until_stopped(
    daemon: &mut Daemon,
    driver: &mut Driver<LinuxKernel>,
    mut signals: Signals,
    mut rx: Receivers,
) -> bool {
    let mut timer = timer::Timer::new();
    let ran = std::panic::AssertUnwindSafe(async {
        loop {
            driver.pump().await;
            let deadline = driver.deadline();
            // In this order: a panic (a dead task must not be waited behind a reload), what
            // ends or reconfigures the daemon, then timers, then the
            // adverts, then the other inputs, and packets no instance expects last, so that
            // a flood of those waits (and overflows its own queue) while the rest goes on.
            tokio::select! {
                biased;
                () = panic::notified() => break,
                signal = signals.next() => match signal {
                    Signal::Stop(name) => { tracing::info!("{name}: resigning"); break; }
                    Signal::Reload => daemon.reload(driver, None).await,
                    Signal::LogStatus(name) => log_status(daemon, driver, name),
                },
                () = timer.sleep_until(deadline) => driver.handle_timeout().await,
                Some(packet) = rx.adverts.recv() => driver.handle(packet, |d| snapshot::build(daemon, d)).await,
                Some(input) = rx.main.recv() => {
                    let recreated = daemon.recreated_interface(&input);
                    driver.handle(input, |d| snapshot::build(daemon, d)).await;
                    if let Some(name) = recreated {
                        daemon.reload(driver, Some(&name)).await;
                    }
                }
                Some(packet) = rx.others.recv() => driver.handle(packet, |d| snapshot::build(daemon, d)).await,
            }
        }
    })
    .catch_unwind()
    .await;
    ran.is_err() || panic::happened()
}

/// SIGTERM (or a panic): priority-0 adverts, every VIP, rule and service the node set
/// removed, the local VIPs of direct routing too; then what direct routing changed on the
/// host. After a panic the process aborts, so that systemd restarts it.
async fn stop(
    mut daemon: Daemon,
    mut driver: Driver<LinuxKernel>,
    proxy: ProxyRuntime,
    panicked: bool,
) {
    if panicked {
        tracing::error!("a panic: resigning and removing what cplbd set, then aborting");
    }
    let now = driver.now();
    driver.node.shutdown(now);
    driver.pump().await;
    if daemon.local_vips.is_some() {
        host::restore(&driver.kernel.netlink, &mut driver.kernel.owned).await;
    }
    daemon.tasks.shutdown().await;
    if let Some(rt) = proxy {
        // Its connections end with the daemon, as they would with the process.
        rt.shutdown_background();
    }
    let _ = std::fs::remove_file(&daemon.options.status_socket);
    if panicked {
        tracing::error!("stopped after a panic: aborting");
        std::process::abort();
    }
    tracing::info!("stopped");
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

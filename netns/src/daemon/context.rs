//! What the daemon runs around its driver: the options, the configuration and plan in
//! force, and the tasks (receive, proxy, endpoints, kernel notifications) that feed it.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use cplb_core::vrrp::IfIndex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::config::FileConfig;
use super::driver::{Input, ProxyDirector};
use super::listeners::Listeners;
use super::options::Options;
use super::plan::Plan;
use super::receive;
use super::serve::{self, EndpointStats};
use crate::kernel::linux::LinuxKernel;
use crate::kernel::watch::{KernelEvent, Watcher};
use crate::net::Os;
use crate::proxy::{self, ProxyConfig, ProxyStats};

/// The daemon around its driver.
#[derive(Debug)]
pub(super) struct Daemon {
    pub(super) options: Options,
    /// The configuration in force.
    pub(super) file: FileConfig,
    /// The plan in force.
    pub(super) plan: Plan,
    /// Where direct routing's VIPs live, if it is configured.
    pub(super) local_vips: Option<(IfIndex, String)>,
    pub(super) proxy_stats: Arc<ProxyStats>,
    pub(super) tasks: tokio::task::JoinSet<()>,
    /// An interface of the plan that was created again but could not be planned yet (no
    /// address of the right family yet): tried again at each kernel notification.
    pub(super) replan: Option<String>,
    /// The receive task of each VRRP socket.
    pub(super) receivers: HashMap<(IfIndex, bool), tokio::task::AbortHandle>,
    /// Where the receive tasks put packets.
    pub(super) queues: receive::Queues,
}

/// The proxy's own runtime, when its connections run on threads of their own: its
/// connections end with it.
pub(super) type ProxyRuntime = Option<tokio::runtime::Runtime>;

impl Daemon {
    /// Starts the userspace proxy on its listener, if it has one: on threads of its own
    /// (started now, after the capabilities were dropped, so they hold no more than this
    /// thread does), or with `--proxy-threads 0` on the daemon's thread.
    pub(super) fn start_proxy(
        &mut self,
        listener: Option<TcpListener>,
        inputs: &mpsc::Sender<Input>,
    ) -> Result<ProxyRuntime> {
        let Some(listener) = listener else { return Ok(None) };
        let config = proxy_config(&self.options);
        let threads = self.options.proxy_threads.map_or_else(default_proxy_threads, usize::from);
        tracing::info!(max_connections = config.max_connections, idle_timeout = ?config.idle_timeout, threads, "proxy");
        let director = ProxyDirector(inputs.clone());
        let stats = Arc::clone(&self.proxy_stats);
        let serve = |listener| proxy::serve::<Os, _>(listener, director, config, stats);
        if threads == 0 {
            self.tasks.spawn(serve(listener));
            return Ok(None);
        }
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
        self.tasks.spawn(async move {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!("the proxy panicked");
            }
        });
        Ok(Some(rt))
    }

    /// Serves the status socket and, if asked for, the metrics endpoint.
    pub(super) fn start_endpoints(&mut self, listeners: Listeners, inputs: &mpsc::Sender<Input>) {
        let stats = Arc::new(EndpointStats::default());
        self.tasks.spawn(serve::status(
            listeners.status,
            inputs.clone(),
            listeners.status_access,
            Arc::clone(&stats),
        ));
        if let Some(listener) = listeners.metrics {
            self.tasks.spawn(serve::metrics(listener, inputs.clone(), stats));
        }
    }

    /// A receive task for every VRRP socket that has none; those of closed sockets end.
    pub(super) fn follow_sockets(&mut self, kernel: &LinuxKernel) {
        self.receivers.retain(|key, task| {
            let open = kernel.sockets.contains_key(key);
            if !open {
                task.abort();
            }
            open
        });
        for (&key, socket) in &kernel.sockets {
            if !self.receivers.contains_key(&key) {
                let task =
                    self.tasks.spawn(receive::receive(key.0, socket.clone(), self.queues.clone()));
                self.receivers.insert(key, task);
            }
        }
    }

    /// Passes the kernel's link and address notifications to the driver.
    pub(super) fn forward_kernel_events(
        &mut self,
        mut watcher: Watcher,
        inputs: &mpsc::Sender<Input>,
    ) {
        let tx = inputs.clone();
        self.tasks.spawn(async move {
            while let Some(event) = watcher.next().await {
                if tx.send(Input::Kernel(event)).await.is_err() {
                    return;
                }
            }
            tracing::error!(
                "rtnetlink notifications ended: link and address changes are no longer seen"
            );
        });
    }

    /// `--panic-after`: a deliberate panic in a task, for the test that shows a panic ends
    /// the daemon after the clean-up of SIGTERM.
    pub(super) fn arm_test_panic(&mut self) {
        if let Some(after) = self.options.panic_after {
            self.tasks.spawn(async move {
                tokio::time::sleep(after).await;
                panic!("--panic-after: the deliberate panic of a test");
            });
        }
    }

    /// A link notification for an interface the plan uses under another index: it was
    /// deleted and created again, and is followed by name.
    pub(super) fn recreated_interface(&self, input: &Input) -> Option<String> {
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
}

/// The proxy's configuration the options ask for; without `--proxy-max-connections` the
/// cap is sized to RLIMIT_NOFILE as it is now (raised at start).
fn proxy_config(options: &Options) -> ProxyConfig {
    let max_connections = match options.proxy_max_connections {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => {
            crate::limits::default_proxy_connections(crate::limits::nofile_soft().unwrap_or(1024))
        }
    };
    ProxyConfig {
        dial_timeout: options.dial_timeout,
        max_connections,
        idle_timeout: Some(options.proxy_idle_timeout).filter(|d| !d.is_zero()),
    }
}

/// One proxy thread per CPU, at most 8.
fn default_proxy_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from).min(8)
}

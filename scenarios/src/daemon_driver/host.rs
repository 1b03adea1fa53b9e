//! A controller host under turmoil from its boot: its kernel starts empty with the link
//! up, then its API server and cplbd start; the runner's controls act on them until the
//! host is powered off.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cplb_lab::apiserver::{self, ApiServerOptions, Behaviour};
use cplb_sim::ApiServer;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::controller::{self, Control, ControllerSpec, Launch};
use super::fabric::{HostKernel, SharedFabric, lock};
use super::net::Turmoil;

/// What the runner shares with the controller hosts.
#[derive(Debug, Clone, Default)]
pub(super) struct Shared {
    /// The segment.
    pub(super) fabric: SharedFabric,
    /// Each running host's controls.
    pub(super) controls: Arc<Mutex<BTreeMap<IpAddr, mpsc::UnboundedSender<HostControl>>>>,
    /// What each controller's daemon starts with next (a reload or a clock change updates
    /// it, so that a later start or boot takes it up).
    pub(super) launches: Arc<Mutex<BTreeMap<IpAddr, Launch>>>,
}

/// A shared map, also after a host's task panicked while holding it.
pub(super) fn held<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the runner tells a controller host.
#[derive(Debug)]
pub(super) enum HostControl {
    /// For its daemon.
    Daemon(Control),
    /// SIGKILL of the daemon: what it set stays.
    Crash,
    /// Start a daemon, if none runs (after a stop or a crash).
    Start,
    /// The API server's behaviour.
    Api(ApiServer),
}

type DaemonTask = (JoinHandle<Result<(), String>>, mpsc::Sender<Control>);

/// The host, until it is powered off.
pub(super) async fn controller_host(spec: ControllerSpec, shared: Shared) -> turmoil::Result {
    let ip = spec.addr;
    let (tx, mut rx) = mpsc::unbounded_channel();
    held(&shared.controls).insert(ip, tx);
    let (port, refuse_until) =
        held(&shared.launches).get(&ip).map_or((6443, None), |l| (l.api_port, l.refuse_until));
    let kernel = HostKernel { link_up: true, refuse_until, ..HostKernel::default() };
    lock(&shared.fabric).kernels.insert(ip, kernel);
    let api = |behaviour| api_server(ip, port, behaviour);
    let mut server = Some(api(Behaviour::Answer));
    let mut daemon = start(spec, &shared);
    let mut stopping = false;
    while let Some(c) = rx.recv().await {
        match c {
            HostControl::Daemon(c) => {
                stopping |= matches!(c, Control::Stop);
                if let Some((_, tx)) = &daemon {
                    let _ = tx.send(c).await;
                }
            }
            HostControl::Crash => {
                if let Some((task, _)) = daemon.take() {
                    task.abort();
                    let _ = task.await;
                    lock(&shared.fabric).notify.remove(&ip);
                }
            }
            HostControl::Start => {
                // A running daemon is not started twice; a stopping one is waited for.
                daemon = match daemon.take() {
                    Some((task, tx)) if !stopping && !task.is_finished() => Some((task, tx)),
                    Some((task, _)) => {
                        let _ = task.await;
                        start(spec, &shared)
                    }
                    None => start(spec, &shared),
                };
                stopping = false;
            }
            HostControl::Api(state) => {
                if let Some(task) = server.take() {
                    task.abort();
                    let _ = task.await;
                }
                server = match state {
                    ApiServer::Up => Some(api(Behaviour::Answer)),
                    ApiServer::Hung => Some(api(Behaviour::Hang)),
                    ApiServer::Down => None,
                };
            }
        }
    }
    Ok(())
}

/// The host's API server: the lab's stand-in over turmoil's network, plain HTTP. Its
/// connections end with its task.
fn api_server(ip: IpAddr, port: u16, behaviour: Behaviour) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        let any: IpAddr =
            if ip.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        let listener = turmoil::net::TcpListener::bind(SocketAddr::new(any, port)).await?;
        let options = ApiServerOptions {
            behaviour,
            watch_every: super::dilated(apiserver::WATCH_EVENT_EVERY),
            ..ApiServerOptions::new(ip.to_string())
        };
        apiserver::serve::<Turmoil>(listener, options).await
    })
}

fn start(spec: ControllerSpec, shared: &Shared) -> Option<DaemonTask> {
    let launch = held(&shared.launches).get(&spec.addr).cloned()?;
    let (tx, rx) = mpsc::channel(16);
    let fabric = Arc::clone(&shared.fabric);
    let task = tokio::spawn(async move {
        let ran = controller::daemon(spec, launch, fabric, rx).await;
        if let Err(e) = &ran {
            tracing::warn!(host = %spec.addr, error = %e, "cplbd did not start");
        }
        ran
    });
    Some((task, tx))
}

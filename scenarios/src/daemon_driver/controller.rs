//! A controller under turmoil: its API server (a stand-in answering `GET` with 200) and
//! cplbd's own code: the plan, the node's configuration, the [`Driver`] loop, the health
//! prober and the userspace proxy, over turmoil's network and a [`SimKernel`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cplb_core::config::{Keepalived, LoadBalancerMode};
use cplb_core::lb;
use cplb_core::node::{self, Balancing, Node};
use cplb_core::time::Instant;
use cplb_core::vrrp::{Cause, InstanceId, State};
use cplb_netns::daemon::plan::{self, Interfaces, ServerArg};
use cplb_netns::daemon::{Driver, Input, ProxyDirector};
use cplb_netns::kernel::link::{Address, Interface, LinkError, ResolveError};
use cplb_netns::probe::{ProbeKind, Prober};
use cplb_netns::proxy::{self, ProxyConfig, ProxyStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::kernel::{ETH0, SharedFabric, SimKernel, VRRP_PORT, decode, link_local_of};
use super::net::Turmoil;

/// What the runner tells a controller's daemon.
#[derive(Debug)]
pub enum Control {
    /// SIGTERM: resign, release, stop.
    Stop,
    /// SIGHUP with this configuration in the file.
    Reload(Box<Keepalived>, u16),
    /// The host's clock runs this many parts per million fast (negative: slow) from now.
    Drift(f64),
}

/// A state change a daemon made, for the run's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Sim time since the start.
    pub at: Duration,
    /// The host's address.
    pub host: IpAddr,
    /// The instance, by its first VIP.
    pub vip: IpAddr,
    /// From and to.
    pub from: State,
    /// To.
    pub to: State,
    /// Why.
    pub cause: Cause,
}

/// Shared record of every daemon's state changes.
pub type Changes = Arc<Mutex<Vec<Change>>>;

/// One controller.
#[derive(Debug, Clone)]
pub struct ControllerSpec {
    /// Its address on the segment.
    pub addr: IpAddr,
    /// The prefix length there.
    pub prefix_len: u8,
    /// The API servers' port.
    pub api_port: u16,
    /// Every controller's address (cplbd's `--real-servers`, as the lab passes it).
    pub real_servers: Vec<IpAddr>,
}

/// The interfaces a simulated controller has: `eth0` with its address (and, for IPv6, a
/// link-local one), plus the VIPs its kernel holds.
struct SimInterfaces<'a> {
    spec: &'a ControllerSpec,
    fabric: &'a SharedFabric,
}

impl Interfaces for SimInterfaces<'_> {
    async fn resolve_interface(&self, spec: &str, _v4: bool) -> Result<Interface, ResolveError> {
        if spec.is_empty() || spec == "eth0" {
            return Ok(Interface {
                index: ETH0,
                name: "eth0".into(),
                mac: vec![2, 0, 0, 0, 0, 1],
                up: true,
            });
        }
        Err(ResolveError::NotFound { spec: spec.to_owned(), known: vec!["eth0".into()] })
    }

    async fn addresses(&self, index: u32) -> Result<Vec<Address>, LinkError> {
        let mut out = Vec::new();
        if index == ETH0 {
            let a = self.spec.addr;
            out.push(Address {
                addr: a,
                prefix_len: self.spec.prefix_len,
                secondary: false,
                link_local: false,
            });
            if let Some(ll) = link_local_of(a) {
                out.push(Address { addr: ll, prefix_len: 64, secondary: false, link_local: true });
            }
        }
        let fabric = self.fabric.lock().expect("fabric");
        if let Some(k) = fabric.kernels.get(&self.spec.addr) {
            for &(i, addr, prefix_len) in &k.addresses {
                if i == index {
                    out.push(Address { addr, prefix_len, secondary: true, link_local: false });
                }
            }
        }
        Ok(out)
    }
}

/// How the API server stand-in behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiMode {
    /// Every request answered `200 ok`.
    Answer,
    /// Connections accepted, requests read, nothing ever answered (a deadlocked server).
    Hang,
}

/// How often the API server stand-in sends an event down a watch.
pub const WATCH_EVENT_EVERY: Duration = Duration::from_millis(100);

/// The API server stand-in: every request is answered `200 ok` (a health check's and a
/// client's alike), one per connection; a watch (`?watch=true`, as client-go asks) is
/// answered with a chunked stream that sends an event every [`WATCH_EVENT_EVERY`] and
/// never ends by itself; or, hung, nothing is ever answered. Its connections belong to it:
/// when the server's task is aborted (the API server dies) they close with it.
pub async fn api_server(port: u16, v4: bool, mode: ApiMode) -> std::io::Result<()> {
    let any: IpAddr = if v4 { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let listener = turmoil::net::TcpListener::bind(SocketAddr::new(any, port)).await?;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (mut s, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            // Reap finished connections so a long run does not keep them all.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        connections.spawn(async move {
            let mut buf = vec![0u8; 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            if mode == ApiMode::Hang {
                std::future::pending::<()>().await;
            }
            let head = seen.split(|b| *b == b'\n').next().unwrap_or_default();
            if head.windows(6).any(|w| w == b"watch=") {
                let _ = watch_stream(&mut s).await;
                return;
            }
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            let _ = s.shutdown().await;
        });
    }
}

/// A watch's answer: the head, then one chunk per event until the client goes away.
async fn watch_stream(s: &mut turmoil::net::TcpStream) -> std::io::Result<()> {
    s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await?;
    let mut tick = tokio::time::interval(WATCH_EVENT_EVERY);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let event = format!("{{\"type\":\"MODIFIED\",\"n\":{n}}}\n");
        s.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes()).await?;
        n += 1;
    }
}

/// cplbd on one controller until told to stop (then it resigns and releases, as on
/// SIGTERM); dropped (the task aborted) it is a crash: what it set stays in the kernel.
pub async fn daemon(
    spec: ControllerSpec,
    keepalived: Keepalived,
    fabric: SharedFabric,
    changes: Changes,
    drift_ppm: f64,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), String> {
    let v4 = spec.addr.is_ipv4();
    let any: IpAddr = if v4 { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = Arc::new(
        turmoil::net::UdpSocket::bind(SocketAddr::new(any, VRRP_PORT))
            .await
            .map_err(|e| format!("binding the VRRP socket: {e}"))?,
    );
    let links = SimInterfaces { spec: &spec, fabric: &fabric };
    let made =
        plan::make(&keepalived, spec.api_port, &server_args(&spec), &links, node::API_TRACKER)
            .await
            .map_err(|e| e.to_string())?;
    let config = node_config(&keepalived, spec.api_port, &made);
    let node = Node::new(Instant::ZERO, config).map_err(|e| e.to_string())?;
    let prober =
        Prober::new(ProbeKind::Http { path: "/healthz".into() }).map_err(|e| e.to_string())?;
    let (inputs, mut rx) = mpsc::channel::<Input>(1024);
    let (packets, mut packets_rx) = mpsc::channel::<Input>(8192);
    let kernel =
        SimKernel { me: spec.addr, fabric: Arc::clone(&fabric), socket: Arc::clone(&socket) };
    let probe_timeout = lb::k0s_health_config(&keepalived).timeout;
    let mut driver: Driver<SimKernel, Turmoil> =
        Driver::new(node, kernel, prober, probe_timeout, inputs.clone());
    driver.drift_ppm = drift_ppm;
    fabric.lock().expect("fabric").notify.insert(spec.addr, inputs.clone());
    let mut tasks = tokio::task::JoinSet::new();
    if keepalived.mode() == LoadBalancerMode::UserspaceProxy {
        let port = keepalived.user_space_proxy_bind_port;
        let listener = turmoil::net::TcpListener::bind(SocketAddr::new(any, port))
            .await
            .map_err(|e| format!("binding the proxy on {port}: {e}"))?;
        let config = ProxyConfig {
            dial_timeout: Duration::from_millis(250),
            max_connections: 10_000,
            idle_timeout: Some(proxy::DEFAULT_IDLE_TIMEOUT),
        };
        tasks.spawn(proxy::serve::<Turmoil, _>(
            listener,
            ProxyDirector(inputs.clone()),
            config,
            Arc::new(ProxyStats::default()),
        ));
    }
    tasks.spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            if let Some(datagram) = buf.get(..n).and_then(decode) {
                let _ = packets.try_send(Input::Packet { ifindex: ETH0, datagram, lost: 0 });
            }
        }
    });
    let (state_tx, mut state_rx) = mpsc::unbounded_channel();
    driver.state_changes = Some(state_tx);
    // Each instance's first VIP, which names it across clusters and reloads (kept after a
    // reload removed the instance: its last changes come after).
    let mut vips: BTreeMap<InstanceId, IpAddr> = BTreeMap::new();
    let mut observe = |node: &Node, rx: &mut mpsc::UnboundedReceiver<_>| {
        for (id, c) in node.instances() {
            if let Some(v) = c.virtual_ips.first() {
                vips.insert(id, v.addr);
            }
        }
        while let Ok((id, from, to, cause)) = rx.try_recv() {
            let Some(&vip) = vips.get(&id) else { continue };
            let at = turmoil::sim_elapsed().unwrap_or_default();
            changes.lock().expect("changes").push(Change {
                at,
                host: spec.addr,
                vip,
                from,
                to,
                cause,
            });
        }
    };
    loop {
        driver.pump().await;
        observe(&driver.node, &mut state_rx);
        let desired = driver.node.desired().clone();
        fabric.lock().expect("fabric").dataplane.insert(spec.addr, desired);
        let deadline = driver.deadline();
        tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(Control::Reload(k, port)) => reload(&mut driver, &spec, &fabric, &k, port).await,
                Some(Control::Drift(ppm)) => set_drift(&mut driver, ppm),
                Some(Control::Stop) | None => break,
            },
            () = tokio::time::sleep_until(deadline) => driver.handle_timeout().await,
            Some(p) = packets_rx.recv() => driver.handle(p, |_| Default::default()).await,
            Some(i) = rx.recv() => driver.handle(i, |_| Default::default()).await,
        }
    }
    let now = driver.now();
    driver.node.shutdown(now);
    driver.pump().await;
    observe(&driver.node, &mut state_rx);
    let mut f = fabric.lock().expect("fabric");
    f.notify.remove(&spec.addr);
    f.dataplane.remove(&spec.addr);
    Ok(())
}

/// The seed's set-up: IPVS (the simulated kernel schedules like it), direct routing's
/// VIPs on `dummyvip0`.
fn node_config(keepalived: &Keepalived, port: u16, made: &plan::Plan) -> node::NodeConfig {
    let dr = keepalived.virtual_servers.iter().any(|v| v.lb_kind == cplb_core::config::LbKind::Dr);
    let dummy = (DUMMY, "dummyvip0".to_owned());
    let tuning = node::VrrpTuning::default();
    plan::node_config(keepalived, port, made, dr.then_some(&dummy), Balancing::Ipvs, &tuning)
}

fn server_args(spec: &ControllerSpec) -> Vec<ServerArg> {
    spec.real_servers.iter().map(|&ip| ServerArg { ip, port: None }).collect()
}

/// The index of the simulated `dummyvip0`.
pub const DUMMY: u32 = 3;

/// A new rate for the driver's clock, continuous at this instant.
fn set_drift(driver: &mut Driver<SimKernel, Turmoil>, ppm: f64) {
    let now = tokio::time::Instant::now();
    let node_elapsed = Duration::from_nanos(driver.now().as_nanos());
    let rate = 1.0 + ppm * 1e-6;
    driver.started = now
        .checked_sub(Duration::from_secs_f64(node_elapsed.as_secs_f64() / rate))
        .unwrap_or(driver.started);
    driver.drift_ppm = ppm;
}

/// SIGHUP: the plan made again for the file's configuration, the node told.
async fn reload(
    driver: &mut Driver<SimKernel, Turmoil>,
    spec: &ControllerSpec,
    fabric: &SharedFabric,
    keepalived: &Keepalived,
    port: u16,
) {
    let links = SimInterfaces { spec, fabric };
    let Ok(made) =
        plan::make(keepalived, port, &server_args(spec), &links, node::API_TRACKER).await
    else {
        return;
    };
    let config = node_config(keepalived, port, &made);
    let now = driver.now();
    if driver.node.handle_config(now, config).is_ok() {
        driver.names = driver.node.instances().map(|(id, c)| (id, c.name.clone())).collect();
    }
}

/// Tells a running daemon that its link went down or up, as rtnetlink would.
pub fn link_event(up: bool) -> Input {
    Input::Kernel(cplb_netns::kernel::watch::KernelEvent::Link {
        index: ETH0,
        name: "eth0".into(),
        up,
    })
}

/// Tells a running daemon that an address went, as rtnetlink would.
pub fn address_removed(addr: IpAddr, prefix_len: u8) -> Input {
    Input::Kernel(cplb_netns::kernel::watch::KernelEvent::Address {
        index: ETH0,
        addr,
        prefix_len,
        present: false,
    })
}

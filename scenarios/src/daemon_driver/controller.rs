//! cplbd on a turmoil host: the plan, the node's configuration, the [`Driver`] loop, the
//! health prober and the userspace proxy are the daemon's own, run with the options its
//! command line gives, over turmoil's network and a [`SimKernel`]; the node's clock is the
//! host's [`Clock`], which may drift. What the daemon does is reported to the runner.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cplb_core::config::{Keepalived, LbKind, LoadBalancerMode};
use cplb_core::lb;
use cplb_core::node::{self, Balancing, Event, Node, NodeConfig};
use cplb_core::time::Instant;
use cplb_core::vrrp;
use cplb_netns::daemon::clock::Clock as _;
use cplb_netns::daemon::options::{HealthCheck, Options};
use cplb_netns::daemon::plan::{self, Interfaces};
use cplb_netns::daemon::{Driver, Input, ProxyDirector};
use cplb_netns::kernel::link::{Address, Interface, LinkError, ResolveError};
use cplb_netns::kernel::watch::KernelEvent;
use cplb_netns::probe::{ProbeKind, Prober};
use cplb_netns::proxy::{self, ProxyConfig, ProxyStats};
use cplb_sim::Clock;
use tokio::sync::mpsc;

use super::dilated;
use super::fabric::{DUMMY, ETH0, Report, SharedFabric, lock, sim_now};
use super::kernel::{SimKernel, VRRP_PORT, decode};
use super::net::Turmoil;

/// What a controller's daemon is started with: its file and its command line.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The file's `spec.network.controlPlaneLoadBalancing.keepalived`.
    pub keepalived: Keepalived,
    /// The file's `spec.api.port`.
    pub api_port: u16,
    /// cplbd's options, parsed from its command line.
    pub options: Options,
    /// The host's clock.
    pub clock: Clock,
    /// Until when the host's kernel refuses commands (a refusal outlasts a power cycle).
    pub refuse_until: Option<Instant>,
}

/// What the runner tells a controller's daemon.
#[derive(Debug)]
pub enum Control {
    /// SIGTERM: resign, release, stop.
    Stop,
    /// SIGHUP with this configuration in the file.
    Reload(Box<Keepalived>, u16),
    /// The host's clock now runs so.
    Clock(Clock),
}

/// A controller on the segment.
#[derive(Debug, Clone, Copy)]
pub struct ControllerSpec {
    /// Its address on the segment.
    pub addr: IpAddr,
    /// The prefix length there.
    pub prefix_len: u8,
}

/// The node's clock on a turmoil host: the host's [`Clock`] read at turmoil's time.
#[derive(Debug, Clone, Copy)]
struct HostClock {
    /// Turmoil's instant of simulated time zero.
    zero: tokio::time::Instant,
    clock: Clock,
}

impl HostClock {
    fn new(clock: Clock) -> Self {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        Self { zero: tokio::time::Instant::now() - elapsed, clock }
    }
}

/// turmoil's world runs [`super::DILATION`] times slower than the scenario: the node reads
/// the scenario's time, its deadlines fall at the dilated instants.
impl cplb_netns::daemon::clock::Clock for HostClock {
    fn node_time(&self, at: tokio::time::Instant) -> Instant {
        let scenario = super::scenario_time(at.saturating_duration_since(self.zero));
        self.clock.local(scenario)
    }

    fn runtime_time(&self, at: Instant) -> tokio::time::Instant {
        self.zero + dilated(Duration::from_nanos(self.clock.sim(at).as_nanos()))
    }
}

type SimDriver = Driver<SimKernel, Turmoil, HostClock>;

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
                index: ETH0.0,
                name: "eth0".into(),
                mac: vec![2, 0, 0, 0, 0, 1],
                up: true,
            });
        }
        Err(ResolveError::NotFound { spec: spec.to_owned(), known: vec!["eth0".into()] })
    }

    async fn addresses(&self, index: u32) -> Result<Vec<Address>, LinkError> {
        let mut out = Vec::new();
        if index == ETH0.0 {
            let a = self.spec.addr;
            let prefix_len = self.spec.prefix_len;
            out.push(Address { addr: a, prefix_len, secondary: false, link_local: false });
            if let Some(ll) = cplb_sim::link_local(a) {
                out.push(Address { addr: ll, prefix_len: 64, secondary: false, link_local: true });
            }
        }
        let fabric = lock(self.fabric);
        if let Some(k) = fabric.kernels.get(&self.spec.addr) {
            for &(i, addr, prefix_len) in &k.addresses {
                if i.0 == index {
                    out.push(Address { addr, prefix_len, secondary: true, link_local: false });
                }
            }
        }
        Ok(out)
    }
}

/// cplbd on one controller until told to stop (then it resigns and releases, as on
/// SIGTERM); dropped (the task aborted) it is a crash: what it set stays in the kernel.
pub async fn daemon(
    spec: ControllerSpec,
    launch: Launch,
    fabric: SharedFabric,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), String> {
    let v4 = spec.addr.is_ipv4();
    let any: IpAddr = if v4 { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = Arc::new(
        turmoil::net::UdpSocket::bind(SocketAddr::new(any, VRRP_PORT))
            .await
            .map_err(|e| format!("binding the VRRP socket: {e}"))?,
    );
    let config =
        node_config(&spec, &fabric, &launch.keepalived, launch.api_port, &launch.options).await?;
    let clock = HostClock::new(launch.clock);
    let node = Node::new(clock.node_time(tokio::time::Instant::now()), config)
        .map_err(|e| e.to_string())?;
    let prober = Prober::new(probe_kind(&launch.options)).map_err(|e| e.to_string())?;
    let (inputs, mut rx) = mpsc::channel::<Input>(1024);
    let (packets, mut packets_rx) = mpsc::channel::<Input>(8192);
    let kernel =
        SimKernel { me: spec.addr, fabric: Arc::clone(&fabric), socket: Arc::clone(&socket) };
    let probe_timeout = dilated(lb::k0s_health_config(&launch.keepalived).timeout);
    let mut driver: SimDriver =
        Driver::new(node, kernel, clock, prober, probe_timeout, inputs.clone());
    let (tap, mut events) = mpsc::unbounded_channel();
    driver.tap = Some(tap);
    let incarnation = {
        let mut f = lock(&fabric);
        f.notify.insert(spec.addr, inputs.clone());
        let incarnation = f.next_incarnation(spec.addr);
        f.reports.push(Report::Started { host: spec.addr });
        incarnation
    };
    let mut tasks = tokio::task::JoinSet::new();
    if launch.keepalived.mode() == LoadBalancerMode::UserspaceProxy {
        let port = launch.keepalived.user_space_proxy_bind_port;
        let listener = turmoil::net::TcpListener::bind(SocketAddr::new(any, port))
            .await
            .map_err(|e| format!("binding the proxy on {port}: {e}"))?;
        let config = ProxyConfig {
            dial_timeout: dilated(launch.options.dial_timeout),
            max_connections: 10_000,
            idle_timeout: Some(dilated(launch.options.proxy_idle_timeout)).filter(|d| !d.is_zero()),
        };
        let stats = Arc::new(ProxyStats::default());
        let director = ProxyDirector(inputs.clone());
        tasks.spawn(proxy::serve::<Turmoil, _>(listener, director, config, stats));
    }
    tasks.spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            if let Some(datagram) = buf.get(..n).and_then(decode) {
                let _ = packets.try_send(Input::Packet { ifindex: ETH0, datagram, lost: 0 });
            }
        }
    });
    let mut refusing = false;
    loop {
        driver.pump().await;
        report(&driver, incarnation, &mut events, &fabric, &mut refusing);
        let deadline = driver.deadline();
        tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(Control::Reload(k, port)) => {
                    reload(&mut driver, &spec, &fabric, &k, port, &launch.options).await;
                }
                Some(Control::Clock(c)) => driver.clock.clock = c,
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
    report(&driver, incarnation, &mut events, &fabric, &mut refusing);
    let mut f = lock(&fabric);
    f.notify.remove(&spec.addr);
    f.report_from(spec.addr, incarnation, Report::Exited { at: sim_now(), host: spec.addr });
    Ok(())
}

/// The node's configuration for a file, as cplbd makes it: the plan from the host's
/// interfaces, the options' VRRP tuning, IPVS (the simulated kernel schedules like it)
/// with direct routing's VIPs on `dummyvip0`.
async fn node_config(
    spec: &ControllerSpec,
    fabric: &SharedFabric,
    keepalived: &Keepalived,
    api_port: u16,
    options: &Options,
) -> Result<NodeConfig, String> {
    let links = SimInterfaces { spec, fabric };
    let made = plan::make(keepalived, api_port, &options.real_servers, &links, node::API_TRACKER)
        .await
        .map_err(|e| e.to_string())?;
    let dr = keepalived.virtual_servers.iter().any(|v| v.lb_kind == LbKind::Dr);
    let tuning = options.vrrp_tuning();
    Ok(plan::node_config(
        keepalived,
        api_port,
        &made,
        dr.then_some(DUMMY),
        Balancing::Ipvs,
        &tuning,
    ))
}

/// The health check the options ask for (the stand-in API servers speak plain HTTP).
fn probe_kind(options: &Options) -> ProbeKind {
    match options.health_check {
        HealthCheck::Tcp => ProbeKind::Tcp,
        HealthCheck::Http | HealthCheck::Https => {
            ProbeKind::Http { path: options.health_path.clone() }
        }
    }
}

/// Tells the runner what the node did: its events (a state change with its instance's
/// first VIP, which names it across clusters and reloads, also after a reload removed it)
/// and whether it has kernel objects under refusal.
fn report(
    driver: &SimDriver,
    incarnation: u64,
    events: &mut mpsc::UnboundedReceiver<Event>,
    fabric: &SharedFabric,
    refusing: &mut bool,
) {
    let host = driver.kernel.me;
    let mut f = lock(fabric);
    while let Ok(event) = events.try_recv() {
        let vip = match &event {
            Event::Vrrp(vrrp::Event::StateChanged { instance, .. }) => {
                driver.node.instance(*instance).and_then(|c| c.virtual_ips.first()).map(|v| v.addr)
            }
            _ => None,
        };
        f.report_from(host, incarnation, Report::Event { at: sim_now(), host, event, vip });
    }
    let now_refusing = !driver.node.refusals().is_empty();
    if now_refusing != *refusing {
        *refusing = now_refusing;
        f.report_from(host, incarnation, Report::Refusing { host, refusing: now_refusing });
    }
}

/// SIGHUP: the plan made again for the file's configuration, the node told.
async fn reload(
    driver: &mut SimDriver,
    spec: &ControllerSpec,
    fabric: &SharedFabric,
    keepalived: &Keepalived,
    port: u16,
    options: &Options,
) {
    let Ok(config) = node_config(spec, fabric, keepalived, port, options).await else {
        return;
    };
    let now = driver.now();
    let _ = driver.node.handle_config(now, config);
}

/// Tells a running daemon that its link went down or up, as rtnetlink would.
pub fn link_event(up: bool) -> Input {
    Input::Kernel(KernelEvent::Link { index: ETH0.0, name: "eth0".into(), up })
}

/// Tells a running daemon that an address went, as rtnetlink would.
pub fn address_removed(addr: IpAddr, prefix_len: u8) -> Input {
    Input::Kernel(KernelEvent::Address { index: ETH0.0, addr, prefix_len, present: false })
}

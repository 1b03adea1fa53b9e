//! `--driver daemon`: a scenario run with cplbd's own async code on turmoil's hosts.
//!
//! Each controller is a turmoil host running the stand-in API server and cplbd's driver,
//! health prober and userspace proxy ([`controller`]); each host that sends API
//! traffic runs clients that connect to the VIP through the segment's model of who answers
//! for it. Faults are turmoil's (power, partitions, cuts, loss, delay) or told to the
//! simulated kernels and daemons (stop, crash, API server, link, VIP removed, refusals,
//! reload, clock drift). The run gives the engine's [`Outcome`], so reports, expectations and
//! `--compare` read both drivers alike.

mod checks;
pub mod controller;
pub mod kernel;
pub mod net;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::controller::{ApiMode, Change, Changes, Control, ControllerSpec};
use self::kernel::{ETH0, Fabric, HostKernel, SharedFabric};
use cplb_core::config::Keepalived;
use cplb_core::time::Instant;
use cplb_core::vrrp::State;
use cplb_sim::{
    AttemptRecord, ClientStats, Failovers, Fault, Outcome, ReloadConfig, Role, Sample, SimSpec,
    Transition,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How often the invariants are checked, in simulated time.
const CHECK_EVERY: Duration = Duration::from_millis(5);
/// How long a client waits for its answer (a watch: for its next event).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a broken watch waits before it is opened again.
const REWATCH: Duration = Duration::from_millis(500);

/// Why a scenario cannot run under `--driver daemon`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--driver daemon cannot run this scenario: {0}")]
pub struct Unsupported(pub String);

/// The faults and set-ups the daemon driver cannot express, named; `None`: it can run.
pub fn unsupported(spec: &SimSpec) -> Option<Unsupported> {
    let no = |why: String| Some(Unsupported(why));
    if spec.config.enabled_keepalived().is_none() {
        return no("the configuration does not enable CPLB".into());
    }
    if spec.vrrp != cplb_sim::VrrpTuning::default() {
        return no(
            "VRRP tuning beyond k0s's configuration (version, interval): cplbd reads only k0s.yaml"
                .into(),
        );
    }
    // k0s's own values are what cplbd runs anyway; others k0s.yaml cannot express.
    let k0s = |v: &cplb_sim::HostVrrp| {
        v.priority.is_none_or(|p| p == cplb_core::node::K0S_PRIORITY) && v.preempt.is_none_or(|p| p)
    };
    if let Some(h) = spec.hosts.iter().find(|h| !k0s(&h.vrrp)) {
        return no(format!(
            "host {}: a priority or preempt setting k0s.yaml cannot express",
            h.name
        ));
    }
    if let Some(h) = spec
        .hosts
        .iter()
        .find(|h| h.config.as_ref().is_some_and(|c| c.enabled_keepalived().is_none()))
    {
        return no(format!("host {}: its configuration does not enable CPLB", h.name));
    }
    let family = spec.hosts.first().map(|h| h.address.is_ipv4());
    if spec.hosts.iter().any(|h| Some(h.address.is_ipv4()) != family) {
        return no("hosts of both address families: turmoil's network has one".into());
    }
    for f in &spec.faults {
        if let Fault::Duplicate(_) = f.fault {
            return no(format!(
                "fault at {:?}: duplicate (turmoil never duplicates a message)",
                f.at
            ));
        }
    }
    None
}

/// One connection attempt of a client.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Duration,
    source: usize,
    /// The host that answered.
    served_by: Option<IpAddr>,
    /// The host that answered for the VIP (the director, the proxy's host).
    via: Option<IpAddr>,
    vip: IpAddr,
}

/// What the hosts share with the runner.
#[derive(Clone)]
struct World {
    fabric: SharedFabric,
    changes: Changes,
    controls: Arc<Mutex<BTreeMap<IpAddr, mpsc::UnboundedSender<HostControl>>>>,
    /// The configuration file of each controller (a reload may replace it).
    files: Arc<Mutex<BTreeMap<IpAddr, (Keepalived, u16)>>>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    drift: Arc<Mutex<BTreeMap<IpAddr, f64>>>,
}

/// The shared state, also after a host's task panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the runner tells a controller host.
#[derive(Debug)]
enum HostControl {
    Daemon(Control),
    /// SIGKILL: what it set stays.
    Crash,
    /// Start the daemon (after a stop or a crash).
    Start,
    ApiDown,
    ApiUp,
    ApiHang,
}

/// Runs a scenario with the real daemon code under turmoil.
pub fn run(spec: &SimSpec, seed: u64, sample_at: &[Duration]) -> Result<Outcome, Unsupported> {
    if let Some(why) = unsupported(spec) {
        return Err(why);
    }
    let keepalived = spec.config.enabled_keepalived().cloned().expect("checked");
    let api_port = spec.config.spec.api.port;
    let v4 = spec.hosts.first().is_none_or(|h| h.address.is_ipv4());
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_micros(200))
        .simulation_duration(spec.duration + Duration::from_secs(60))
        .ip_version(if v4 { turmoil::IpVersion::V4 } else { turmoil::IpVersion::V6 })
        .build();
    let world = World {
        fabric: Arc::new(Mutex::new(Fabric::default())),
        changes: Arc::new(Mutex::new(Vec::new())),
        controls: Arc::default(),
        files: Arc::default(),
        attempts: Arc::default(),
        drift: Arc::default(),
    };
    let ips: Vec<IpAddr> = spec.hosts.iter().map(|h| h.address).collect();
    let controllers: Vec<IpAddr> =
        spec.hosts.iter().filter(|h| h.role == Role::Controller).map(|h| h.address).collect();
    for h in spec.hosts.iter().filter(|h| h.role == Role::Controller) {
        let file = match &h.config {
            Some(c) => (c.enabled_keepalived().cloned().expect("checked"), c.spec.api.port),
            None => (keepalived.clone(), api_port),
        };
        let file = (own_unicast(file.0, h.address, &controllers), file.1);
        lock(&world.files).insert(h.address, file);
        let cs = ControllerSpec {
            addr: h.address,
            prefix_len: h.prefix_len,
            api_port,
            real_servers: controllers.clone(),
        };
        let w = world.clone();
        sim.host(h.address, move || controller_host(cs.clone(), w.clone()));
    }
    let vip = keepalived
        .vrrp_instances
        .first()
        .and_then(|i| i.virtual_ips.first())
        .map(|c| c.addr)
        .expect("a VIP");
    for (i, h) in spec.hosts.iter().enumerate().filter(|(_, h)| h.role != Role::Controller) {
        let sources: Vec<Source> = spec
            .traffic
            .iter()
            .enumerate()
            .filter(|(_, t)| t.from == i)
            .map(|(n, t)| Source {
                n,
                rate: t.rate,
                vip: t.vip.unwrap_or(vip),
                start: t.start,
                watch: t.watch,
            })
            .collect();
        let w = world.clone();
        let me = h.address;
        sim.host(h.address, move || traffic_host(me, sources.clone(), api_port, w.clone()));
    }
    let mut trace: Vec<(Duration, String)> = Vec::new();
    for h in spec.hosts.iter().filter(|h| h.up_at > Duration::ZERO) {
        sim.crash(h.address);
        trace.push((Duration::ZERO, format!("{} is off until {:?}", h.name, h.up_at)));
    }
    // Every timed event, in order: boots, faults, samples.
    enum Due {
        Boot(usize),
        Fault(usize),
        Sample,
    }
    let mut due: Vec<(Duration, u8, Due)> = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate().filter(|(_, h)| h.up_at > Duration::ZERO) {
        due.push((h.up_at, 0, Due::Boot(i)));
    }
    for (n, f) in spec.faults.iter().enumerate() {
        due.push((f.at, 1, Due::Fault(n)));
    }
    for t in sample_at {
        due.push((*t, 2, Due::Sample));
    }
    due.sort_by_key(|(t, order, _)| (*t, *order));
    let mut samples = Vec::new();
    let mut views_before = None;
    let mut last_fault_at = None;
    let mut links_down: Vec<usize> = Vec::new();
    let mut partitions: Vec<(usize, usize)> = Vec::new();
    let mut events = 0u64;
    let mut checks = checks::Checks::new(spec);
    let mut checked_at = Duration::ZERO;
    let mut degraded = false;
    let mut next = due.into_iter().peekable();
    while sim.elapsed() < spec.duration {
        while let Some((at, _, _)) = next.peek()
            && *at <= sim.elapsed()
        {
            let (at, _, what) = next.next().expect("peeked");
            match what {
                Due::Boot(i) => {
                    sim.bounce(ips[i]);
                    trace.push((at, format!("{} boots", spec.hosts[i].name)));
                }
                Due::Sample => samples.push(sample(spec, &world, at)),
                Due::Fault(n) => {
                    if views_before.is_none() {
                        views_before = Some(views(spec, &world));
                    }
                    let fault = &spec.faults[n].fault;
                    let names: Vec<String> = spec.hosts.iter().map(|h| h.name.clone()).collect();
                    trace.push((at, format!("FAULT {}", cplb_sim::fault_text(fault, &names))));
                    last_fault_at = Some(at);
                    degraded = match fault {
                        Fault::Heal => false,
                        Fault::Loss(r) => *r > 0.0 || degraded,
                        Fault::Delay(..) => true,
                        _ => degraded,
                    };
                    apply(&mut sim, spec, &world, fault, &mut links_down, &mut partitions);
                }
            }
        }
        sim.step().map_err(|e| Unsupported(format!("turmoil: {e}")))?;
        events += 1;
        if sim.elapsed() >= checked_at + CHECK_EVERY {
            checked_at = sim.elapsed();
            let net = checks::Network { links_down: &links_down, cuts: &partitions, degraded };
            let changes = lock(&world.changes);
            checks.check(checked_at, &changes, &lock(&world.fabric), &net);
        }
    }
    let changes = lock(&world.changes).clone();
    let attempts = lock(&world.attempts).clone();
    Ok(outcome(
        spec,
        seed,
        &keepalived,
        &changes,
        &attempts,
        trace,
        samples,
        views_before.unwrap_or_else(|| views(spec, &world)),
        views(spec, &world),
        last_fault_at,
        events,
        checks,
    ))
}

/// Each controller's own k0s.yaml: unicast instances send from the controller's address to
/// the other controllers (a scenario writes one configuration for all; k0s's file is per
/// node, and cplbd takes `unicastSourceIP` and `unicastPeers` from it as they are).
fn own_unicast(mut k: Keepalived, me: IpAddr, controllers: &[IpAddr]) -> Keepalived {
    for i in k.vrrp_instances.iter_mut().filter(|i| !i.unicast_peers.is_empty()) {
        i.unicast_source_ip = Some(me);
        i.unicast_peers = controllers
            .iter()
            .copied()
            .filter(|c| *c != me && c.is_ipv4() == me.is_ipv4())
            .collect();
    }
    k
}

/// A controller host from its boot: its kernel starts empty with the link up, then the
/// API server and cplbd start; the runner's controls act on them until power-off.
async fn controller_host(cs: ControllerSpec, w: World) -> turmoil::Result {
    let ip = cs.addr;
    let (tx, mut rx) = mpsc::unbounded_channel();
    lock(&w.controls).insert(ip, tx);
    lock(&w.fabric).kernels.insert(ip, HostKernel { link_up: true, ..HostKernel::default() });
    let v4 = ip.is_ipv4();
    let mut api = Some(tokio::spawn(controller::api_server(cs.api_port, v4, ApiMode::Answer)));
    let mut daemon = Some(start_daemon(&cs, &w));
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
                    lock(&w.fabric).notify.remove(&ip);
                    lock(&w.fabric).dataplane.remove(&ip);
                }
            }
            HostControl::Start => {
                // A running daemon is not started twice; a stopping one is waited for.
                match daemon.take() {
                    Some((task, tx)) if !stopping && !task.is_finished() => {
                        daemon = Some((task, tx))
                    }
                    Some((task, _)) => {
                        let _ = task.await;
                        daemon = Some(start_daemon(&cs, &w));
                    }
                    None => daemon = Some(start_daemon(&cs, &w)),
                }
                stopping = false;
            }
            HostControl::ApiDown => {
                if let Some(task) = api.take() {
                    task.abort();
                    let _ = task.await;
                }
            }
            HostControl::ApiUp | HostControl::ApiHang => {
                if let Some(task) = api.take() {
                    task.abort();
                    let _ = task.await;
                }
                let mode =
                    if matches!(c, HostControl::ApiHang) { ApiMode::Hang } else { ApiMode::Answer };
                api = Some(tokio::spawn(controller::api_server(cs.api_port, v4, mode)));
            }
        }
    }
    Ok(())
}

type DaemonTask = (tokio::task::JoinHandle<Result<(), String>>, mpsc::Sender<Control>);

fn start_daemon(cs: &ControllerSpec, w: &World) -> DaemonTask {
    let (tx, rx) = mpsc::channel(16);
    let (keepalived, port) = lock(&w.files).get(&cs.addr).cloned().expect("a file");
    let drift = lock(&w.drift).get(&cs.addr).copied().unwrap_or(0.0);
    let spec = ControllerSpec { api_port: port, ..cs.clone() };
    let task = tokio::spawn(controller::daemon(
        spec,
        keepalived,
        Arc::clone(&w.fabric),
        Arc::clone(&w.changes),
        drift,
        rx,
    ));
    (task, tx)
}

/// One traffic source of a client host.
#[derive(Debug, Clone, Copy)]
struct Source {
    /// Its index in the scenario's traffic.
    n: usize,
    rate: f64,
    vip: IpAddr,
    start: Duration,
    watch: bool,
}

/// A host's API clients: each source connects `rate` times a second from its start, each
/// attempt a fresh TCP connection to VIP:port with a request, successful when answered 200;
/// a watch source holds one connection instead ([`watch`]).
async fn traffic_host(me: IpAddr, sources: Vec<Source>, port: u16, w: World) -> turmoil::Result {
    for src in sources {
        let w = w.clone();
        tokio::spawn(async move {
            let now = turmoil::sim_elapsed().unwrap_or_default();
            tokio::time::sleep(src.start.saturating_sub(now)).await;
            if src.watch {
                return watch(me, src, port, &w).await;
            }
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / src.rate.max(0.001)));
            loop {
                tick.tick().await;
                let w = w.clone();
                tokio::spawn(async move {
                    let at = turmoil::sim_elapsed().unwrap_or_default();
                    let route = lock(&w.fabric).route(SocketAddr::new(src.vip, port), me, at);
                    let via = route.map(|(director, _)| director);
                    let served_by = match route {
                        Some((_, to)) => tokio::time::timeout(CLIENT_TIMEOUT, fetch(to))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .map(|()| to.ip()),
                        None => None,
                    };
                    let vip = src.vip;
                    lock(&w.attempts).push(Attempt { at, source: src.n, served_by, via, vip });
                });
            }
        });
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// A watch, as client-go holds one: a single connection to VIP:port asking `?watch=true`;
/// every event read is an answer; the stream ending, failing or going silent for
/// [`CLIENT_TIMEOUT`] is a failure, and the watch is opened again after [`REWATCH`].
async fn watch(me: IpAddr, src: Source, port: u16, w: &World) {
    let record = |served_by: Option<IpAddr>, via: Option<IpAddr>| {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        lock(&w.attempts).push(Attempt { at, source: src.n, served_by, via, vip: src.vip });
    };
    loop {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        let route = lock(&w.fabric).route(SocketAddr::new(src.vip, port), me, at);
        let via = route.map(|(director, _)| director);
        if let Some((_, to)) = route
            && let Ok(Ok(mut s)) =
                tokio::time::timeout(CLIENT_TIMEOUT, turmoil::net::TcpStream::connect(to)).await
            && s.write_all(b"GET /api/v1/pods?watch=true HTTP/1.1\r\nhost: vip\r\n\r\n")
                .await
                .is_ok()
        {
            let mut buf = vec![0u8; 4096];
            while let Ok(Ok(n)) = tokio::time::timeout(CLIENT_TIMEOUT, s.read(&mut buf)).await
                && n > 0
            {
                record(Some(to.ip()), via);
            }
        }
        record(None, via);
        tokio::time::sleep(REWATCH).await;
    }
}

async fn fetch(to: SocketAddr) -> std::io::Result<()> {
    let mut s = turmoil::net::TcpStream::connect(to).await?;
    s.write_all(b"GET /version HTTP/1.1\r\nhost: vip\r\n\r\n").await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.1 200") { Ok(()) } else { Err(std::io::Error::other("no 200")) }
}

fn control(w: &World, host: IpAddr, c: HostControl) {
    if let Some(tx) = lock(&w.controls).get(&host) {
        let _ = tx.send(c);
    }
}

fn notify(w: &World, host: IpAddr, input: cplb_netns::daemon::Input) {
    if let Some(tx) = lock(&w.fabric).notify.get(&host) {
        let _ = tx.try_send(input);
    }
}

/// Carries out one fault.
fn apply(
    sim: &mut turmoil::Sim<'_>,
    spec: &SimSpec,
    w: &World,
    fault: &Fault,
    links_down: &mut Vec<usize>,
    partitions: &mut Vec<(usize, usize)>,
) {
    let ip = |i: usize| spec.hosts[i].address;
    let n = spec.hosts.len();
    let cut = |sim: &mut turmoil::Sim<'_>, a: usize, b: usize| sim.partition(ip(a), ip(b));
    match fault {
        Fault::PowerOff(h) => {
            sim.crash(ip(*h));
            let mut f = lock(&w.fabric);
            f.kernels.remove(&ip(*h));
            f.notify.remove(&ip(*h));
            f.dataplane.remove(&ip(*h));
            lock(&w.controls).remove(&ip(*h));
        }
        // Powering on a running host does nothing.
        Fault::PowerOn(h) => {
            if !sim.is_host_running(ip(*h)) {
                sim.bounce(ip(*h));
            }
        }
        Fault::Stop(h) => control(w, ip(*h), HostControl::Daemon(Control::Stop)),
        Fault::Start(h) | Fault::Restart(h) => control(w, ip(*h), HostControl::Start),
        Fault::Crash(h) => control(w, ip(*h), HostControl::Crash),
        Fault::Partition(groups) => {
            let group_of = |h: usize| groups.iter().position(|g| g.contains(&h));
            for a in 0..n {
                for b in a + 1..n {
                    if group_of(a) != group_of(b) {
                        cut(sim, a, b);
                        partitions.push((a, b));
                    }
                }
            }
        }
        Fault::Cut { from, to } => {
            sim.partition_oneway(ip(*from), ip(*to));
            partitions.push((*from, *to));
        }
        Fault::Heal => {
            for (a, b) in partitions.drain(..) {
                sim.repair(ip(a), ip(b));
            }
            for a in 0..n {
                for b in a + 1..n {
                    sim.set_link_fail_rate(ip(a), ip(b), 0.0);
                    sim.set_link_max_message_latency(ip(a), ip(b), Duration::from_micros(200));
                }
            }
            for h in links_down.drain(..) {
                link(sim, spec, w, h, true);
            }
        }
        Fault::Loss(ratio) => {
            for a in 0..n {
                for b in a + 1..n {
                    sim.set_link_fail_rate(ip(a), ip(b), *ratio);
                }
            }
        }
        Fault::Delay(_, max) => {
            for a in 0..n {
                for b in a + 1..n {
                    sim.set_link_max_message_latency(ip(a), ip(b), *max);
                }
            }
        }
        Fault::Duplicate(_) => unreachable!("refused by unsupported()"),
        Fault::LinkDown(h) => {
            links_down.push(*h);
            link(sim, spec, w, *h, false);
        }
        Fault::LinkUp(h) => {
            links_down.retain(|x| x != h);
            link(sim, spec, w, *h, true);
        }
        Fault::ApiserverDown(h) => control(w, ip(*h), HostControl::ApiDown),
        Fault::ApiserverUp(h) => control(w, ip(*h), HostControl::ApiUp),
        Fault::ApiserverHang(h) => control(w, ip(*h), HostControl::ApiHang),
        Fault::ClockDrift(h, ppm) => {
            lock(&w.drift).insert(ip(*h), *ppm);
            control(w, ip(*h), HostControl::Daemon(Control::Drift(*ppm)));
        }
        Fault::VipRemoved(h) => {
            let removed: Vec<(IpAddr, u8)> = {
                let mut f = lock(&w.fabric);
                let Some(k) = f.kernels.get_mut(&ip(*h)) else { return };
                let gone: Vec<(IpAddr, u8)> = k
                    .addresses
                    .iter()
                    .filter(|(i, _, _)| *i == ETH0)
                    .map(|(_, a, p)| (*a, *p))
                    .collect();
                k.addresses.retain(|(i, _, _)| *i != ETH0);
                gone
            };
            for (addr, prefix_len) in removed {
                notify(w, ip(*h), controller::address_removed(addr, prefix_len));
            }
        }
        Fault::KernelRefuses(h, d) => {
            if let Some(k) = lock(&w.fabric).kernels.get_mut(&ip(*h)) {
                k.refuse_until = Some(sim.elapsed() + *d);
            }
        }
        Fault::Reload(h, config) => {
            let file = match config {
                ReloadConfig::Same => lock(&w.files).get(&ip(*h)).cloned(),
                // The new file is written per node too, as at the start.
                ReloadConfig::New(c) => c.enabled_keepalived().cloned().map(|k| {
                    let controllers: Vec<IpAddr> = spec
                        .hosts
                        .iter()
                        .filter(|h| h.role == Role::Controller)
                        .map(|h| h.address)
                        .collect();
                    (own_unicast(k, ip(*h), &controllers), c.spec.api.port)
                }),
                // The daemon refuses the file and keeps running what it runs.
                ReloadConfig::Invalid { .. } => None,
            };
            if let Some((k, port)) = file {
                lock(&w.files).insert(ip(*h), (k.clone(), port));
                control(w, ip(*h), HostControl::Daemon(Control::Reload(Box::new(k), port)));
            }
        }
    }
}

/// A link down is the host cut off from everyone and its daemon told; up, the reverse.
fn link(sim: &mut turmoil::Sim<'_>, spec: &SimSpec, w: &World, h: usize, up: bool) {
    let me = spec.hosts[h].address;
    for other in spec.hosts.iter().filter(|o| o.address != me) {
        if up {
            sim.repair(me, other.address);
        } else {
            sim.partition(me, other.address);
        }
    }
    if let Some(k) = lock(&w.fabric).kernels.get_mut(&me) {
        k.link_up = up;
    }
    notify(w, me, controller::link_event(up));
}

/// The trace's number of the instance whose first VIP is `vip` (see [`cplb_sim::instances`]).
fn instance_of(spec: &SimSpec, vip: IpAddr) -> Option<usize> {
    cplb_sim::instances(spec).iter().position(|i| i.vips.first() == Some(&vip))
}

/// Every state each (host, instance) entered, in time order: the daemons' changes, and
/// `Initialize` for every instance of a host whose daemon died without a word (power-off,
/// crash), as the engine's trace counts them.
fn states(
    spec: &SimSpec,
    changes: &[Change],
    until: Duration,
) -> Vec<(Duration, usize, Option<usize>, State)> {
    let mut out: Vec<(Duration, usize, Option<usize>, State)> = changes
        .iter()
        .filter(|c| c.at <= until)
        .filter_map(|c| {
            let h = spec.hosts.iter().position(|h| h.address == c.host)?;
            Some((c.at, h, Some(instance_of(spec, c.vip)?), c.to))
        })
        .collect();
    for f in spec.faults.iter().filter(|f| f.at <= until) {
        if let Fault::PowerOff(h) | Fault::Crash(h) = f.fault {
            out.push((f.at, h, None, State::Initialize));
        }
    }
    // Stable: a daemon's changes at the fault's instant came before it.
    out.sort_by_key(|(at, ..)| *at);
    out
}

/// Each instance's masters at `until`.
fn masters_at(
    spec: &SimSpec,
    changes: &[Change],
    instances: usize,
    until: Duration,
) -> Vec<Vec<usize>> {
    let mut state: BTreeMap<(usize, usize), State> = BTreeMap::new();
    for (_, h, inst, to) in states(spec, changes, until) {
        match inst {
            Some(i) => {
                state.insert((h, i), to);
            }
            None => state.retain(|(host, _), _| *host != h),
        }
    }
    (0..instances)
        .map(|i| {
            state
                .iter()
                .filter(|((_, inst), s)| *inst == i && **s == State::Master)
                .map(|((h, _), _)| *h)
                .collect()
        })
        .collect()
}

fn sample(spec: &SimSpec, w: &World, at: Duration) -> Sample {
    let instances = cplb_sim::instances(spec).len();
    let changes = lock(&w.changes).clone();
    let masters = masters_at(spec, &changes, instances, at);
    let fabric = lock(&w.fabric);
    let real_servers = masters
        .iter()
        .map(|m| {
            let Some(first) = m.first() else { return Vec::new() };
            let Some(dp) = fabric.dataplane.get(&spec.hosts[*first].address) else {
                return Vec::new();
            };
            let servers: Vec<IpAddr> = match dp.services.first() {
                Some(s) => s.real_servers.iter().map(|r| r.addr.ip()).collect(),
                None => dp.proxy_backends.iter().map(SocketAddr::ip).collect(),
            };
            let mut hosts: Vec<usize> = servers
                .iter()
                .filter_map(|s| spec.hosts.iter().position(|h| h.address == *s))
                .collect();
            hosts.sort_unstable();
            hosts
        })
        .collect();
    Sample { at: Instant::ZERO + at, masters, real_servers }
}

/// The seed's views of every controller, in the engine's format, from what the simulated
/// kernels hold: eth0's and `dummyvip0`'s addresses, the IPVS services, and the proxy the
/// daemon runs.
fn views(spec: &SimSpec, w: &World) -> String {
    let fabric = lock(&w.fabric);
    let hosts: Vec<cplb_sim::HostView> = spec
        .hosts
        .iter()
        .filter(|h| h.role == Role::Controller)
        .map(|h| {
            let mut view = cplb_sim::HostView::off(h.name.clone(), h.address, h.prefix_len);
            let Some(k) = fabric.kernels.get(&h.address) else { return view };
            let on = |ifindex: u32| {
                k.addresses
                    .iter()
                    .filter(|(i, _, _)| *i == ifindex)
                    .map(|(_, a, p)| (*a, *p))
                    .collect::<Vec<_>>()
            };
            view.powered = true;
            view.eth0_vips = on(ETH0);
            view.local_vips = on(controller::DUMMY);
            view.services = k.services.clone();
            view.proxy = fabric
                .dataplane
                .get(&h.address)
                .and_then(|d| d.proxy_port.map(|p| (p, d.proxy_backends.clone())));
            view
        })
        .collect();
    cplb_sim::render_views(&hosts)
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    spec: &SimSpec,
    seed: u64,
    keepalived: &Keepalived,
    changes: &[Change],
    attempts: &[Attempt],
    mut trace: Vec<(Duration, String)>,
    samples: Vec<Sample>,
    views_before: String,
    views_after: String,
    last_fault_at: Option<Duration>,
    events: u64,
    checks: checks::Checks,
) -> Outcome {
    let names: Vec<String> = spec.hosts.iter().map(|h| h.name.clone()).collect();
    let name = |ip: IpAddr| {
        spec.hosts
            .iter()
            .find(|h| h.address == ip)
            .map_or_else(|| ip.to_string(), |h| h.name.clone())
    };
    for c in changes {
        let Some(instance) = instance_of(spec, c.vip) else { continue };
        let line = format!(
            "{} k0s-vip-{} {} -> {} ({})",
            name(c.host),
            instance,
            c.from,
            c.to,
            cplb_sim::cause_text(&c.cause)
        );
        trace.push((c.at, line));
    }
    trace.sort_by_key(|(at, _)| *at);
    let timeline: Vec<String> =
        trace.iter().map(|(at, t)| format!("{:>12.6} {t}", at.as_secs_f64())).collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in timeline.iter().flat_map(|l| l.bytes().chain([b'\n'])) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let instances = cplb_sim::instances(spec).len();
    let failovers = failovers(spec, changes, attempts);
    let clients: Vec<ClientStats> = spec
        .traffic
        .iter()
        .enumerate()
        .map(|(n, _)| {
            let mut mine: Vec<&Attempt> = attempts.iter().filter(|a| a.source == n).collect();
            mine.sort_by_key(|a| a.at);
            let mut c = ClientStats::default();
            let mut outage: Option<Duration> = None;
            for a in mine {
                c.attempts += 1;
                match a.served_by {
                    None => {
                        c.failed += 1;
                        c.last_failure = Some(Instant::ZERO + a.at);
                        outage.get_or_insert(a.at);
                    }
                    Some(_) => {
                        if let Some(start) = outage.take() {
                            c.longest_outage = c.longest_outage.max(a.at - start);
                        }
                    }
                }
            }
            c
        })
        .collect();
    let final_masters = masters_at(spec, changes, instances, spec.duration)
        .into_iter()
        .map(|m| m.into_iter().map(|h| spec.hosts[h].name.clone()).collect())
        .collect();
    let served = (0..instances).map(|_| attempts.iter().any(|a| a.served_by.is_some())).collect();
    let takeovers = cplb_sim::instances(spec).into_iter().map(|i| i.master_down + i.advert);
    let recovery_bound = cplb_sim::recovery_bound(takeovers, Some(keepalived));
    Outcome {
        scenario: spec.name.clone(),
        seed,
        simulated: spec.duration,
        events,
        violations: checks.violations,
        failovers: failovers.reports(&names),
        clients,
        final_masters,
        trace_hash: hash,
        timeline,
        views_before,
        views_after,
        samples,
        forwarding_loops: checks.forwarding_loops,
        dual_master_episodes: checks.dual_master_episodes,
        served,
        last_fault_at: last_fault_at.map(|t| Instant::ZERO + t),
        recovery_bound,
        host_names: names,
        transitions: transitions(spec, changes),
        attempts: {
            let mut a: Vec<AttemptRecord> = attempts
                .iter()
                .map(|a| AttemptRecord {
                    at: Instant::ZERO + a.at,
                    source: a.source,
                    ok: a.served_by.is_some(),
                })
                .collect();
            a.sort_by_key(|a| a.at);
            a
        },
    }
}

/// The daemons' state changes as the reports' lanes take them.
fn transitions(spec: &SimSpec, changes: &[Change]) -> Vec<Transition> {
    let mut out: Vec<Transition> = changes
        .iter()
        .filter_map(|c| {
            Some(Transition {
                at: Instant::ZERO + c.at,
                host: spec.hosts.iter().position(|h| h.address == c.host)?,
                instance: instance_of(spec, c.vip)?,
                to: c.to,
            })
        })
        .collect();
    out.sort_by_key(|t| t.at);
    out
}

/// The engine's rule for failovers ([`Failovers`]), fed in time order with the daemons'
/// state changes, the clients' answers and the faults.
fn failovers(spec: &SimSpec, changes: &[Change], attempts: &[Attempt]) -> Failovers {
    let mut tracker = Failovers::new(cplb_sim::instances(spec).iter().map(|i| i.master_down));
    enum Ev {
        State(usize, Option<usize>, State),
        Answer(usize, usize),
    }
    let mut events: Vec<(Duration, u8, Ev)> = states(spec, changes, spec.duration)
        .into_iter()
        .map(|(at, h, i, s)| (at, 0, Ev::State(h, i, s)))
        .collect();
    for a in attempts {
        let (Some(via), Some(_)) = (a.via, a.served_by) else { continue };
        let (Some(inst), Some(h)) =
            (instance_of(spec, a.vip), spec.hosts.iter().position(|h| h.address == via))
        else {
            continue;
        };
        events.push((a.at, 1, Ev::Answer(inst, h)));
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let mut masters: BTreeMap<(usize, usize), bool> = BTreeMap::new();
    for (at, _, ev) in events {
        let now = Instant::ZERO + at;
        tracker.settle(now);
        let fault =
            spec.faults.iter().map(|f| f.at).filter(|t| *t <= at).max().map(|t| Instant::ZERO + t);
        match ev {
            Ev::State(h, Some(i), s) => {
                let is = s == State::Master;
                if masters.insert((h, i), is).unwrap_or(false) != is {
                    tracker.master_changed(now, i, h, is, fault);
                }
            }
            Ev::State(h, None, _) => {
                for ((host, i), is) in masters.iter_mut().filter(|((host, _), _)| *host == h) {
                    if std::mem::take(is) {
                        tracker.master_changed(now, *i, *host, false, fault);
                    }
                }
            }
            Ev::Answer(i, h) => tracker.answered(now, i, h),
        }
    }
    tracker
}

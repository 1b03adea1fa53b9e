//! `--driver daemon`: a scenario run with cplbd's own async code on turmoil's hosts.
//!
//! Each controller is a turmoil host running the lab's stand-in API server and cplbd's driver,
//! health prober and userspace proxy ([`controller`]), started with the command line the
//! scenario's settings give (`--vrrp-version`, `--advert-interval`, `--real-servers`);
//! each host that sends API traffic runs clients ([`clients`]) that connect to the VIP
//! through the segment's model of who answers for it ([`fabric`]). The faults, the checks
//! and the record are the simulator's own, the same as the engine's ([`World`],
//! [`Observer`]); only carrying the faults out on turmoil's hosts is this driver's
//! ([`testbed`]).

mod clients;
pub mod controller;
pub mod fabric;
mod host;
pub mod kernel;
pub mod net;
mod testbed;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use cplb_core::node::{Event, K0S_PRIORITY};
use cplb_core::time::Instant;
use cplb_netns::daemon::options::Options;
use cplb_sim::{Due, Fault, Observer, Outcome, Role, SimSpec, Testbed as _, World, schedule};

use self::clients::{CLIENT_TIMEOUT, Source, traffic_host};
use self::controller::{ControllerSpec, Launch};
use self::fabric::{MAX_HOPS, Report, lock};
use self::host::{Shared, controller_host, held};
use self::testbed::Bed;

/// How much slower turmoil's world runs than the scenario: turmoil (and tokio, whose time
/// cplbd's code reads) takes this long for each moment of the scenario.
///
/// turmoil advances in fixed ticks, and tokio's timers have millisecond resolution: at a
/// tick finer than 1 ms tokio's clock runs ahead of turmoil's (measured with turmoil 0.7:
/// at a 100 µs tick a tokio sleep of 1 s ends after 100 ms of turmoil's time). So turmoil
/// ticks every millisecond of its own time, which is [`RESOLUTION`] of the scenario's:
/// events the engine orders less than a millisecond apart (a drifting clock's
/// Master_Down just before the others', an advert 100 µs on its way) keep their order.
/// The nodes read scenario time through their clock; what the daemon times with tokio
/// alone (dial and probe timeouts) is given dilated.
const DILATION: u32 = 10;
/// turmoil's tick, in its own time.
const TICK: Duration = Duration::from_millis(1);
/// The scenario time one tick is.
pub const RESOLUTION: Duration = Duration::from_micros(100);
/// One-way latency on the segment, as the engine's (one tick).
const LATENCY: Duration = RESOLUTION;
/// How long the daemon may take to act on what its node decided: a loop turn, a kernel
/// call, turmoil's latency both ways.
const REACTION: Duration = Duration::from_millis(50);

/// A span of the scenario's time in turmoil's.
fn dilated(d: Duration) -> Duration {
    d * DILATION
}

/// turmoil's elapsed time as the scenario's.
fn scenario_time(turmoil: Duration) -> Instant {
    Instant::ZERO + turmoil / DILATION
}

/// Why a scenario cannot run under `--driver daemon`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--driver daemon cannot run this scenario: {0}")]
pub struct Unsupported(pub String);

/// Why a run under `--driver daemon` gave no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The scenario asks what cplbd cannot be given: skipped, not failed.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// turmoil stopped the run (a host's task failed): a failure.
    #[error("turmoil stopped the run: {0}")]
    Turmoil(String),
}

/// The set-ups and faults cplbd cannot be given, named; `None`: it can run.
pub fn unsupported(spec: &SimSpec) -> Option<Unsupported> {
    let no = |why: String| Some(Unsupported(why));
    if spec.config.enabled_keepalived().is_none() {
        return no("the configuration does not enable CPLB".into());
    }
    // k0s's own values are what cplbd runs anyway; others neither k0s.yaml nor cplbd's
    // command line can express.
    let k0s = |v: &cplb_sim::HostVrrp| {
        v.priority.is_none_or(|p| p == K0S_PRIORITY) && v.preempt.is_none_or(|p| p)
    };
    if let Some(h) = spec.hosts.iter().find(|h| !k0s(&h.vrrp)) {
        return no(format!(
            "host {}: a priority or preempt setting neither k0s.yaml nor cplbd's options can express",
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
    if let Some(f) = spec.faults.iter().find(|f| matches!(f.fault, Fault::Duplicate(_))) {
        return no(format!("fault at {:?}: duplicate (turmoil never duplicates a message)", f.at));
    }
    None
}

/// Runs a scenario with the real daemon code under turmoil, sampling the cluster at each
/// of `sample_at`.
pub fn run(spec: &SimSpec, seed: u64, sample_at: &[Duration]) -> Result<Outcome, RunError> {
    if let Some(why) = unsupported(spec) {
        return Err(why.into());
    }
    let v4 = spec.hosts.first().is_none_or(|h| h.address.is_ipv4());
    let sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .min_message_latency(dilated(LATENCY))
        .max_message_latency(dilated(LATENCY))
        .simulation_duration(dilated(spec.duration + Duration::from_secs(60)))
        .ip_version(if v4 { turmoil::IpVersion::V4 } else { turmoil::IpVersion::V6 })
        .build();
    let mut world = World::new(spec);
    // A client's attempt is reported when it ends, at most a client timeout after it began.
    let horizon = CLIENT_TIMEOUT + Duration::from_millis(100);
    let mut obs = Observer::new(spec, seed, REACTION, horizon);
    let shared = Shared::default();
    let mut bed = Bed::new(sim, shared.clone(), spec);
    add_hosts(spec, &world, &mut bed)?;
    let mut due = schedule(spec, sample_at).into_iter().peekable();
    let mut steps = 0u64;
    let end = Instant::ZERO + spec.duration;
    loop {
        let now = scenario_time(bed.sim.elapsed());
        while let Some((at, _)) = due.peek()
            && *at <= now
        {
            let Some((_, what)) = due.next() else { break };
            drain(&mut bed, &mut obs);
            match what {
                Due::Boot(h) => cplb_sim::boot(&mut world, now, h, &mut bed, &mut obs),
                Due::Fault(i) => {
                    cplb_sim::apply(&mut world, now, &spec.faults[i].fault, &mut bed, &mut obs);
                }
                Due::RefusalEnd(h) => cplb_sim::refusal_end(&world, now, h, &mut obs),
                Due::Sample => obs.sample(now),
            }
        }
        if now >= end {
            break;
        }
        bed.sim.step().map_err(|e| RunError::Turmoil(e.to_string()))?;
        steps += 1;
        drain(&mut bed, &mut obs);
        obs.check(scenario_time(bed.sim.elapsed()), &world);
    }
    let views = cplb_sim::render_views(&bed.views(&world));
    Ok(obs.finish(end, views, steps))
}

/// Puts every host on turmoil: controllers with their daemon's launch, clients with their
/// traffic; hosts switched on later start off.
fn add_hosts(spec: &SimSpec, world: &World, bed: &mut Bed<'_>) -> Result<(), Unsupported> {
    let first_vip = spec
        .config
        .enabled_keepalived()
        .and_then(|k| k.vrrp_instances.first())
        .and_then(|i| i.virtual_ips.first())
        .map(|c| c.addr)
        .ok_or_else(|| Unsupported("the configuration has no VIP".into()))?;
    let api_port = spec.config.spec.api.port;
    for (h, host) in spec.hosts.iter().enumerate() {
        let ip = host.address;
        if host.role == Role::Controller {
            held(&bed.shared.launches).insert(ip, launch(spec, world, h)?);
            let cs = ControllerSpec { addr: ip, prefix_len: host.prefix_len };
            let shared = bed.shared.clone();
            bed.sim.host(ip, move || controller_host(cs, shared.clone()));
        } else {
            let sources: Vec<Source> = spec
                .traffic
                .iter()
                .enumerate()
                .filter(|(_, t)| t.from == h)
                .map(|(n, t)| Source {
                    n,
                    rate: t.rate,
                    vip: t.vip.unwrap_or(first_vip),
                    start: t.start,
                    watch: t.watch,
                })
                .collect();
            let fabric = Arc::clone(&bed.shared.fabric);
            bed.sim.host(ip, move || traffic_host(ip, sources.clone(), api_port, fabric.clone()));
        }
        if !world.network().powered(h) {
            bed.sim.crash(ip);
        }
    }
    Ok(())
}

/// What controller `h`'s daemon starts with: its file, and cplbd's command line as an
/// operator would write it for this scenario (the cluster's API servers; the scenario's
/// VRRP version and advertisement interval, which k0s.yaml cannot express).
fn launch(spec: &SimSpec, world: &World, h: usize) -> Result<Launch, Unsupported> {
    let file = world.files().of(h).ok_or_else(|| Unsupported("not a controller".into()))?;
    let keepalived = file.enabled_keepalived().cloned().ok_or_else(|| {
        Unsupported(format!("host {}: its configuration does not enable CPLB", spec.hosts[h].name))
    })?;
    let servers: Vec<String> =
        world.files().cluster_addresses(h).iter().map(ToString::to_string).collect();
    let mut args: Vec<String> =
        ["cplbd", "--config", "k0s.yaml", "--health-check", "http"].map(str::to_owned).into();
    args.extend(["--dial-timeout".into(), "250ms".into()]);
    args.extend(["--real-servers".into(), servers.join(",")]);
    let tuning = spec.vrrp.for_node(spec.hosts[h].address.is_ipv4());
    if spec.vrrp.v3 {
        args.extend(["--vrrp-version".into(), "3".into()]);
    }
    if let Some(every) = tuning.advert_interval {
        args.extend(["--advert-interval".into(), format!("{}ms", every.as_millis())]);
    }
    let options = Options::try_parse_from(&args)
        .map_err(|e| Unsupported(format!("cplbd {}: {e}", args[1..].join(" "))))?;
    Ok(Launch {
        keepalived,
        api_port: file.spec.api.port,
        options,
        clock: world.clock(h),
        refuse_until: world.refusing_until(h),
    })
}

/// Passes what the hosts reported to the observer.
fn drain(bed: &mut Bed<'_>, obs: &mut Observer) {
    let reports = std::mem::take(&mut lock(&bed.shared.fabric).reports);
    let addresses = bed.addresses.clone();
    let host = |ip: IpAddr| addresses.iter().position(|a| *a == ip);
    for r in reports {
        match r {
            Report::Event { at, host: ip, event, vip } => {
                let Some(h) = host(ip) else { continue };
                if let Event::DataPlaneChanged(dp) = &event {
                    bed.dataplanes.insert(h, dp.clone());
                }
                obs.node_event(at, h, &event, |_| vip);
            }
            Report::Refusing { host: ip, refusing } => {
                if let Some(h) = host(ip) {
                    obs.node_refusing(h, refusing);
                }
            }
            Report::Started { host: ip } => {
                if let Some(h) = host(ip) {
                    obs.daemon_started(h);
                }
            }
            Report::Exited { at, host: ip } => {
                if let Some(h) = host(ip) {
                    bed.dataplanes.remove(&h);
                    obs.daemon_gone(at, h);
                }
            }
            Report::Vip { at, host: ip, vip, present } => {
                if let Some(h) = host(ip) {
                    obs.vip(at, h, vip, present);
                }
            }
            Report::Services { host: ip, services } => {
                if let Some(h) = host(ip) {
                    obs.kernel_services(h, &services);
                }
            }
            Report::Attempt { at, source, from, vip, result } => {
                let Some(from) = host(from) else { continue };
                let result = result.and_then(|via| host(via).ok_or_else(|| via.to_string()));
                obs.attempt(at, source, from, vip, result);
            }
            Report::Loop { at, service } => obs.forwarding_loop(at, service, MAX_HOPS),
        }
    }
}

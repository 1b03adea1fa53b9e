//! The fault schedule carried out, once for both drivers: the world's part here (its
//! network, files, API servers, refusals and clocks), the hosts' part by the driver
//! through [`Testbed`] (the engine's model hosts, or turmoil's hosts running cplbd), and
//! what changed told to the [`Observer`].

use core::time::Duration;

use cplb_core::config::ClusterConfig;
use cplb_core::time::Instant;
use cplb_core::vrrp::VirtualIp;

use crate::observe::Observer;
use crate::spec::{Fault, SimSpec};
use crate::views::{HostView, render_views};
use crate::world::{ApiServer, World};

/// What a driver does to its hosts when the schedule says so. The world's own state
/// (network, files, API servers, refusals, clocks) is already updated when it is called.
pub trait Testbed {
    /// The controllers as the seed's views show them, from what their kernels hold.
    fn views(&self, world: &World) -> Vec<HostView>;
    /// The host is switched on: it boots, its API server and (on a controller) its daemon
    /// start, its clock reads true time again.
    fn power_on(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// The host loses power: everything in memory is gone, its daemon without a word.
    fn power_off(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// SIGTERM: the daemon resigns, releases what it set, and exits.
    fn stop(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// A daemon starts, if none runs (after a stop or a crash).
    fn start(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// SIGKILL: the daemon is gone; the kernel keeps what it set.
    fn crash(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// Partitions, cuts, loss, delay or duplication changed.
    fn network_changed(&mut self, world: &World, obs: &mut Observer, now: Instant);
    /// The host's link went up or down (its daemon hears of it as from rtnetlink).
    fn link(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize, up: bool);
    /// The host's API server changed its behaviour.
    fn api_server(
        &mut self,
        world: &World,
        obs: &mut Observer,
        now: Instant,
        host: usize,
        api: ApiServer,
    );
    /// The host's clock now runs as [`World::clock`] says.
    fn clock_changed(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// Someone deletes the VIPs from the host's eth0 by hand; returns those it deleted.
    fn remove_vips(&mut self, world: &World, now: Instant, host: usize) -> Vec<VirtualIp>;
    /// The host's daemon hears that these addresses went (as from rtnetlink).
    fn vips_removed(
        &mut self,
        world: &World,
        obs: &mut Observer,
        now: Instant,
        host: usize,
        vips: &[VirtualIp],
    );
    /// The host's kernel refuses every address and data-plane command until
    /// [`World::refusing_until`].
    fn refuse_kernel(&mut self, world: &World, obs: &mut Observer, now: Instant, host: usize);
    /// SIGHUP with this file on the host.
    fn reload(
        &mut self,
        world: &World,
        obs: &mut Observer,
        now: Instant,
        host: usize,
        file: &ClusterConfig,
    );
}

/// Host `h` boots (its `up_at`, or a `poweron`): nothing happens to a host that is on.
pub fn boot(
    world: &mut World,
    now: Instant,
    h: usize,
    testbed: &mut impl Testbed,
    obs: &mut Observer,
) {
    if world.network().powered(h) {
        return;
    }
    obs.booted(now, h);
    world.network_mut().set_powered(h, true);
    world.reset_clock(h);
    if world.files().of(h).is_some() {
        world.set_api(h, ApiServer::Up);
    }
    obs.world_changed(now);
    testbed.power_on(world, obs, now, h);
}

/// Carries out `fault` at `now`: the world's part here, the hosts' through `testbed`, what
/// it changed told to `obs`.
pub fn apply(
    world: &mut World,
    now: Instant,
    fault: &Fault,
    testbed: &mut impl Testbed,
    obs: &mut Observer,
) {
    if obs.wants_views_before() {
        obs.set_views_before(render_views(&testbed.views(world)));
    }
    obs.fault(now, &fault_text(fault, world.names()));
    match fault {
        Fault::PowerOff(h) => {
            if world.network().powered(*h) {
                world.network_mut().set_powered(*h, false);
                world.set_api(*h, ApiServer::Down);
                obs.daemon_gone(now, *h);
                obs.kernel_lost(*h);
                testbed.power_off(world, obs, now, *h);
            }
        }
        Fault::PowerOn(h) => boot(world, now, *h, testbed, obs),
        Fault::Stop(h) => testbed.stop(world, obs, now, *h),
        Fault::Start(h) | Fault::Restart(h) => {
            if world.network().powered(*h) && world.files().of(*h).is_some() {
                testbed.start(world, obs, now, *h);
            }
        }
        Fault::Crash(h) => {
            obs.daemon_gone(now, *h);
            testbed.crash(world, obs, now, *h);
        }
        Fault::Partition(_)
        | Fault::Cut { .. }
        | Fault::Heal
        | Fault::Loss(_)
        | Fault::Delay(..)
        | Fault::Duplicate(_)
        | Fault::LinkDown(_)
        | Fault::LinkUp(_) => {
            let links = world.network_mut().apply(fault);
            testbed.network_changed(world, obs, now);
            for (h, up) in links {
                testbed.link(world, obs, now, h, up);
            }
        }
        Fault::ApiserverDown(h) => set_api(world, now, *h, ApiServer::Down, testbed, obs),
        Fault::ApiserverUp(h) => set_api(world, now, *h, ApiServer::Up, testbed, obs),
        Fault::ApiserverHang(h) => set_api(world, now, *h, ApiServer::Hung, testbed, obs),
        Fault::ClockDrift(h, ppm) => {
            world.drift(*h, now, *ppm);
            testbed.clock_changed(world, obs, now, *h);
        }
        Fault::VipRemoved(h) => {
            let removed = testbed.remove_vips(world, now, *h);
            for vip in &removed {
                obs.vip(now, *h, vip.addr, false);
                obs.note(now, format!("{} eth0: {} deleted by hand", world.name(*h), vip.addr));
            }
            testbed.vips_removed(world, obs, now, *h, &removed);
        }
        Fault::KernelRefuses(h, d) => {
            world.refuse(*h, now + *d);
            testbed.refuse_kernel(world, obs, now, *h);
        }
        Fault::Reload(h, reload) => match world.reload(*h, reload) {
            // cplbd keeps running what it runs when the new file turns CPLB off.
            Ok(file) if file.enabled_keepalived().is_none() => {
                let line =
                    format!("{} reload refused: no load balancing configured", world.name(*h));
                obs.note(now, line);
            }
            Ok(file) => {
                let file = file.clone();
                testbed.reload(world, obs, now, *h, &file);
            }
            Err(error) => {
                let line = format!("{} reload refused: {error}", world.name(*h));
                obs.note(now, line);
            }
        },
    }
    obs.world_changed(now);
}

/// Host `h`'s kernel refusal ran out at `now`, unless a later one extended it: the
/// kernel accepts commands again (its daemon finds out at its next retry).
pub fn refusal_end(world: &World, now: Instant, h: usize, obs: &mut Observer) {
    if let Some(t) = world.refusing_until(h).filter(|t| *t <= now) {
        obs.note(t, format!("{} kernel accepts commands again", world.name(h)));
        obs.world_changed(t);
    }
}

fn set_api(
    world: &mut World,
    now: Instant,
    h: usize,
    api: ApiServer,
    testbed: &mut impl Testbed,
    obs: &mut Observer,
) {
    world.set_api(h, api);
    testbed.api_server(world, obs, now, h, api);
}

/// A fault in words, as the trace's `FAULT` lines give it (hosts by name).
pub fn fault_text(fault: &Fault, names: &[String]) -> String {
    use crate::spec::ReloadConfig;
    let n = |i: &usize| names.get(*i).cloned().unwrap_or_else(|| "?".to_owned());
    match fault {
        Fault::PowerOff(h) => format!("poweroff {}", n(h)),
        Fault::PowerOn(h) => format!("poweron {}", n(h)),
        Fault::Stop(h) => format!("stop {}", n(h)),
        Fault::Start(h) => format!("start {}", n(h)),
        Fault::Crash(h) => format!("crash {}", n(h)),
        Fault::Restart(h) => format!("restart {}", n(h)),
        Fault::Partition(groups) => {
            let gs: Vec<String> =
                groups.iter().map(|g| g.iter().map(n).collect::<Vec<_>>().join(",")).collect();
            format!("partition {}", gs.join(" | "))
        }
        Fault::Cut { from, to } => format!("cut {} -> {}", n(from), n(to)),
        Fault::Heal => "heal".into(),
        Fault::Loss(r) => format!("loss {r}"),
        Fault::Delay(a, b) => format!("delay {a:?}..{b:?}"),
        Fault::Duplicate(r) => format!("duplicate {r}"),
        Fault::LinkDown(h) => format!("link_down {}", n(h)),
        Fault::LinkUp(h) => format!("link_up {}", n(h)),
        Fault::ApiserverDown(h) => format!("apiserver_down {}", n(h)),
        Fault::ApiserverUp(h) => format!("apiserver_up {}", n(h)),
        Fault::ApiserverHang(h) => format!("apiserver_hang {}", n(h)),
        Fault::ClockDrift(h, ppm) => format!("clock_drift {} {ppm} ppm", n(h)),
        Fault::VipRemoved(h) => format!("vip_removed {}", n(h)),
        Fault::KernelRefuses(h, d) => format!("kernel_refuses {} for {d:?}", n(h)),
        Fault::Reload(h, ReloadConfig::Same) => format!("reload {}", n(h)),
        Fault::Reload(h, ReloadConfig::New(_)) => format!("reload {} with a new config", n(h)),
        Fault::Reload(h, ReloadConfig::Invalid { error, .. }) => {
            format!("reload {} with an invalid config ({error})", n(h))
        }
    }
}

/// What is due when: the hosts' boots, the faults, and the samples the expectations read,
/// in time order (at one instant: boots, then faults in the schedule's order, then
/// samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Host `h` is switched on (`up_at`).
    Boot(usize),
    /// The schedule's fault of this index.
    Fault(usize),
    /// A kernel refusal of host `h` runs out (if no later one extended it).
    RefusalEnd(usize),
    /// A sample of the cluster.
    Sample,
}

/// The run's schedule.
pub fn schedule(spec: &SimSpec, samples: &[Duration]) -> Vec<(Instant, Due)> {
    let mut due: Vec<(Duration, u8, Due)> = Vec::new();
    for (h, host) in spec.hosts.iter().enumerate().filter(|(_, h)| !h.up_at.is_zero()) {
        due.push((host.up_at, 0, Due::Boot(h)));
    }
    for (n, f) in spec.faults.iter().enumerate() {
        due.push((f.at, 1, Due::Fault(n)));
        if let Fault::KernelRefuses(h, d) = f.fault {
            due.push((f.at + d, 1, Due::RefusalEnd(h)));
        }
    }
    for t in samples {
        due.push((*t, 2, Due::Sample));
    }
    due.sort_by_key(|(t, order, _)| (*t, *order));
    due.into_iter().map(|(t, _, d)| (Instant::ZERO + t, d)).collect()
}

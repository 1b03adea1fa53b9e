//! The failover measures: crash (link down and SIGKILL, no goodbye) at k0s's timers and at
//! VRRPv3 100 ms, graceful stop (SIGTERM), and the first election of three nodes started
//! together, for cplbd and keepalived with k0s's configuration.
//!
//! A crash costs Master_Down_Interval less the time since the master's last advert, so
//! where in the advert cycle it falls decides the figure: every contender gets the same
//! seeded sequence of phases (and of offsets of the client's 10 ms probe grid from the
//! fault, which otherwise decide up to 10 ms of each figure), and each rep also reports
//! the time from the old master's last advert, as the client's namespace saw it on the
//! bridge (a raw socket joined to 224.0.0.18), which does not depend on the phase.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::contender::{Timers, Vrrp};
use super::{BenchOptions, Env, Rep, Row};
use crate::client::{Attempt, client_loop_on};
use crate::layout::{API_PORT, CLIENT, CONTROLLERS, VIP};
use crate::rng::SplitMix64;
use crate::topology;

/// How often the client opens a connection to the VIP.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// How long the client waits for the VIP to answer after an event.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

/// A failover's first answered connection.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// Its TCP handshake done: the VIP answers.
    connected: Instant,
    /// Its HTTPS answer received.
    answered: Instant,
}

impl Answer {
    fn rep(self, t0: Instant, last_advert: Option<Instant>) -> Rep {
        Rep::Failover {
            from_fault_s: (self.connected - t0).as_secs_f64(),
            from_last_advert_s: last_advert.map(|l| (self.connected - l).as_secs_f64()),
            answered_from_fault_s: (self.answered - t0).as_secs_f64(),
        }
    }
}

/// Adverts seen on the LAN: when, from whom, with which priority.
#[derive(Debug, Default)]
struct Adverts(Vec<(Instant, Ipv4Addr, u8)>);

/// The client's view: a probe of VIP:6443 every 10 ms with a fresh connection, and every
/// VRRP advert on the bridge.
struct Client {
    stop: Arc<AtomicBool>,
    /// Where the probes' grid is anchored (see [`Client::align`]).
    origin: Arc<Mutex<Instant>>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    adverts: Arc<Mutex<Adverts>>,
    threads: Vec<std::thread::JoinHandle<Option<()>>>,
}

impl Client {
    fn start(env: &Env) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let adverts = Arc::new(Mutex::new(Adverts::default()));
        let ns = env.topo.ns(CLIENT.0);
        let vip: SocketAddr = format!("{VIP}:{API_PORT}").parse().map_err(|_| "VIP")?;
        let origin = Arc::new(Mutex::new(Instant::now()));
        let (s, a, o) = (Arc::clone(&stop), Arc::clone(&attempts), Arc::clone(&origin));
        let probe =
            topology::in_namespace(&ns, move || client_loop_on(vip, &s, PROBE_EVERY, &o, &a))
                .map_err(|e| format!("entering the client namespace: {e}"))?;
        let socket = advert_socket(&ns)?;
        let (s, a) = (Arc::clone(&stop), Arc::clone(&adverts));
        let capture = std::thread::spawn(move || {
            capture(&socket, &s, &a);
            Some(())
        });
        Ok(Self { stop, origin, attempts, adverts, threads: vec![probe, capture] })
    }

    /// Puts a probe `offset` (of [`PROBE_EVERY`]) after `fault`, and the rest 10 ms apart:
    /// with the same faults and offsets for every contender, the first probe after the
    /// take-over falls at the same point for each, and only the contenders differ.
    fn align(&self, fault: Instant, offset: f64) {
        if let Ok(mut o) = self.origin.lock() {
            *o = fault + PROBE_EVERY.mul_f64(offset.clamp(0.0, 1.0));
        }
    }

    /// The first answered connection begun at or after `t0`: when its TCP handshake ended,
    /// and when its answer did.
    fn first_answer_after(&self, t0: Instant, limit: Duration) -> Result<Answer, String> {
        let deadline = t0 + limit;
        loop {
            let first = self
                .attempts
                .lock()
                .map_err(|_| "the client thread failed")?
                .iter()
                .filter(|a| a.start >= t0 && a.answered)
                .filter_map(|a| Some(Answer { connected: a.connected?, answered: a.end }))
                .min_by_key(|a| a.connected);
            if let Some(t) = first {
                return Ok(t);
            }
            if Instant::now() > deadline {
                return Err(format!("the VIP did not answer within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last advert from `from` before `t` (priority 0 ones too).
    fn last_advert(&self, from: Ipv4Addr, t: Instant) -> Option<Instant> {
        let adverts = self.adverts.lock().ok()?;
        adverts.0.iter().filter(|(at, src, _)| *src == from && *at <= t).map(|(at, _, _)| *at).max()
    }

    /// Waits for the next advert from `from`; its time.
    fn next_advert(&self, from: Ipv4Addr, limit: Duration) -> Result<Instant, String> {
        let since = Instant::now();
        loop {
            let seen = self
                .adverts
                .lock()
                .map_err(|_| "the capture failed")?
                .0
                .iter()
                .any(|(at, src, _)| *src == from && *at > since);
            if seen {
                return self.last_advert(from, Instant::now()).ok_or_else(|| "no advert".into());
            }
            if since.elapsed() > limit {
                return Err(format!("no advert from {from} within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn forget(&self) {
        if let Ok(mut a) = self.attempts.lock() {
            a.clear();
        }
        if let Ok(mut a) = self.adverts.lock() {
            a.0.clear();
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A raw IP protocol 112 socket in `ns`, joined to 224.0.0.18 on the client's eth0.
fn advert_socket(ns: &str) -> Result<socket2::Socket, String> {
    let made = topology::in_namespace(ns, || -> std::io::Result<socket2::Socket> {
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(112)),
        )?;
        let me: Ipv4Addr = CLIENT.1.parse().map_err(std::io::Error::other)?;
        s.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 18), &me)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(s)
    })
    .map_err(|e| format!("entering the client namespace: {e}"))?;
    made.join()
        .ok()
        .flatten()
        .ok_or("the capture thread failed")?
        .map_err(|e| format!("the advert capture socket: {e}"))
}

/// Records every advert until told to stop.
fn capture(socket: &socket2::Socket, stop: &AtomicBool, into: &Mutex<Adverts>) {
    use std::io::Read as _;
    let mut socket = socket;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = socket.read(&mut buf) else { continue };
        let at = Instant::now();
        let Some(packet) = buf.get(..n) else { continue };
        let ihl = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
        let (Some(src), Some(priority)) = (packet.get(12..16), packet.get(ihl + 2)) else {
            continue;
        };
        let src = Ipv4Addr::new(src[0], src[1], src[2], src[3]);
        if let Ok(mut a) = into.lock() {
            a.0.push((at, src, *priority));
        }
    }
}

fn address_of(name: &str) -> Ipv4Addr {
    Env::address(name).parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// The processes of one contender on the three controllers.
struct Cluster<'a> {
    env: &'a Env,
    vrrp: Vrrp,
    timers: Timers,
    apis: Vec<Child>,
    daemons: Vec<Option<Child>>,
}

impl<'a> Cluster<'a> {
    fn start(env: &'a Env, vrrp: Vrrp, timers: Timers) -> Result<Self, String> {
        let mut c = Self { env, vrrp, timers, apis: Vec::new(), daemons: Vec::new() };
        for (name, _) in CONTROLLERS {
            c.apis.push(env.start_apiserver(name)?);
        }
        for (name, _) in CONTROLLERS {
            c.daemons.push(Some(env.start_vrrp(name, vrrp, timers)?));
        }
        Ok(c)
    }

    fn index(name: &str) -> usize {
        CONTROLLERS.iter().position(|(n, _)| *n == name).unwrap_or(0)
    }

    /// The node's daemon back (after a crash: its link, API server and daemon, a reboot).
    fn restart(&mut self, name: &str, rebooted: bool) -> Result<(), String> {
        let i = Self::index(name);
        if rebooted {
            self.env.topo.set_link(name, true).map_err(|e| e.to_string())?;
            // Whatever the crash left: a dead keepalived leaves its VIP, as a dead cplbd does
            // (a restarted cplbd removes it; a restarted keepalived does as well).
            let mut old = std::mem::replace(&mut self.apis[i], self.env.start_apiserver(name)?);
            let _ = old.kill();
            let _ = old.wait();
        }
        if let Some(mut old) = self.daemons[i].take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        self.daemons[i] = Some(self.env.start_vrrp(name, self.vrrp, self.timers)?);
        Ok(())
    }

    fn stop_all(&mut self) {
        for d in self.daemons.iter_mut().flatten() {
            Env::stop(d, Signal::SIGTERM);
        }
        for a in &mut self.apis {
            Env::stop(a, Signal::SIGKILL);
        }
        self.daemons.clear();
        self.apis.clear();
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        self.stop_all();
        self.env.stop_everything();
    }
}

/// Runs the failover measures asked for, for cplbd and keepalived, and resident memory and
/// idle CPU of both.
pub(super) fn run(
    env: &Env,
    options: &BenchOptions,
    bench: &mut super::Bench,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let wanted = |m: &str| options.wants(m);
    if !super::FAILOVER.iter().any(|m| wanted(m)) && !wanted("rss") && !wanted("idle_cpu") {
        return Ok(());
    }
    for vrrp in [Vrrp::Cplbd, Vrrp::Keepalived] {
        let name = vrrp.name();
        for (measure, timers) in [("crash_k0s", Timers::K0s), ("crash_v3_100ms", Timers::V3Fast)] {
            if !wanted(measure) {
                continue;
            }
            // The same phases for every contender.
            let mut phases = SplitMix64(options.seed);
            let mut cluster = Cluster::start(env, vrrp, timers)?;
            let mut reps = Vec::new();
            for rep in 0..options.reps.max(1) {
                let phase = unit(phases.next_u64());
                // Where the 10 ms probes fall after the fault is drawn too: left to chance,
                // it alone made a 6 ms difference between two runs of the same contender.
                let offset = unit(phases.next_u64());
                let client = Client::start(env)?;
                let r = crash(env, &mut cluster, &client, phase, offset)?;
                progress(&format!(
                    "{measure} {name} rep {}: phase {phase:.2}, {}",
                    rep + 1,
                    show(&r)
                ));
                reps.push(r);
            }
            if timers == Timers::K0s && wanted("rss") {
                bench.rows.push(
                    Row::new("rss", name, "MiB", vec![Rep::Value(env.rss_mib(vrrp.comm()))])
                        .when("load"),
                );
            }
            drop(cluster);
            bench.rows.push(Row::new(measure, name, "s", reps).bound(timers.master_down()));
        }
        if wanted("graceful") {
            let mut offsets = SplitMix64(options.seed);
            let mut cluster = Cluster::start(env, vrrp, Timers::K0s)?;
            let mut reps = Vec::new();
            for rep in 0..options.reps.max(1) {
                let client = Client::start(env)?;
                let r = graceful(env, &mut cluster, &client, unit(offsets.next_u64()))?;
                progress(&format!("graceful {name} rep {}: {}", rep + 1, show(&r)));
                reps.push(r);
            }
            drop(cluster);
            bench.rows.push(Row::new("graceful", name, "s", reps).bound(Timers::K0s.skew()));
        }
        if wanted("first_election") || wanted("rss") || wanted("idle_cpu") {
            let mut reps = Vec::new();
            let mut rss = Vec::new();
            let mut idle = Vec::new();
            let n = if wanted("first_election") { options.reps.max(1) } else { 1 };
            let mut offsets = SplitMix64(options.seed);
            for rep in 0..n {
                // A fresh client: with an ARP entry left from the last run, k0s's redirect
                // on every controller would answer the VIP before anyone is elected.
                env.topo.ip(CLIENT.0, &["neigh", "flush", "all"]).map_err(|e| e.to_string())?;
                let client = Client::start(env)?;
                std::thread::sleep(Duration::from_millis(200));
                let t0 = Instant::now();
                client.align(t0, unit(offsets.next_u64()));
                let cluster = Cluster::start(env, vrrp, Timers::K0s)?;
                let r = client.first_answer_after(t0, ANSWER_LIMIT)?.rep(t0, None);
                progress(&format!("first_election {name} rep {}: {}", rep + 1, show(&r)));
                reps.push(r);
                drop(client);
                if rep == 0 {
                    // Settled after start: its memory, then a quiet minute's CPU.
                    std::thread::sleep(Duration::from_secs(2));
                    rss.push(env.rss_mib(vrrp.comm()));
                    if wanted("idle_cpu") {
                        let before = env.cpu_s(vrrp.comm());
                        std::thread::sleep(options.idle_time);
                        let used = env.cpu_s(vrrp.comm()) - before;
                        let per_hour = used * 3600.0 / options.idle_time.as_secs_f64();
                        progress(&format!(
                            "idle_cpu {name}: {used:.2} CPU s in {:?}, {per_hour:.1} s/h",
                            options.idle_time
                        ));
                        idle.push(per_hour);
                    }
                }
                drop(cluster);
            }
            if wanted("first_election") {
                bench.rows.push(
                    Row::new("first_election", name, "s", reps).bound(Timers::K0s.master_down()),
                );
            }
            if wanted("rss") {
                bench.rows.push(
                    Row::new("rss", name, "MiB", rss.into_iter().map(Rep::Value).collect())
                        .when("start"),
                );
            }
            if wanted("idle_cpu") {
                bench.rows.push(Row::new(
                    "idle_cpu",
                    name,
                    "cpu_s/h",
                    idle.into_iter().map(Rep::Value).collect(),
                ));
            }
        }
    }
    Ok(())
}

fn show(r: &Rep) -> String {
    match r {
        Rep::Failover { from_fault_s, from_last_advert_s: Some(a), answered_from_fault_s } => {
            format!(
                "connected {from_fault_s:.3} s after the fault, {a:.3} s after the last advert (answered after {answered_from_fault_s:.3} s)"
            )
        }
        Rep::Failover { from_fault_s, from_last_advert_s: None, answered_from_fault_s } => {
            format!(
                "connected after {from_fault_s:.3} s (answered after {answered_from_fault_s:.3} s)"
            )
        }
        Rep::Value(v) => format!("{v:.3}"),
    }
}

/// A draw of [`SplitMix64`] as a fraction in [0, 1).
fn unit(draw: u64) -> f64 {
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// One crash of the master `phase` of an advert interval after one of its adverts: its link
/// down, then every process of the host killed (a power loss); then the host back.
fn crash(
    env: &Env,
    cluster: &mut Cluster<'_>,
    client: &Client,
    phase: f64,
    offset: f64,
) -> Result<Rep, String> {
    let master = env.wait_holder(Duration::from_secs(20), Duration::from_secs(1))?;
    let ip = address_of(master);
    client.forget();
    let advert = client.next_advert(ip, Duration::from_secs(5))?;
    let at = advert + cluster.timers.advert().mul_f64(phase);
    client.align(at, offset);
    if let Some(wait) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    env.topo.set_link(master, false).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    env.topo.kill_all(master, Signal::SIGKILL);
    let answer = client.first_answer_after(t0, ANSWER_LIMIT)?;
    let last = client.last_advert(ip, t0).unwrap_or(advert);
    let rep = answer.rep(t0, Some(last));
    cluster.restart(master, true)?;
    // The old master back as a backup, its API server healthy again, before the next rep.
    std::thread::sleep(Duration::from_secs(2));
    Ok(rep)
}

/// SIGTERM to the master's daemon (its API server keeps running): it resigns.
fn graceful(
    env: &Env,
    cluster: &mut Cluster<'_>,
    client: &Client,
    offset: f64,
) -> Result<Rep, String> {
    let master = env.wait_holder(Duration::from_secs(20), Duration::from_secs(1))?;
    let ip = address_of(master);
    client.forget();
    // Mid-cycle, so that the resignation, not a regular advert, is what the backups act on.
    let advert = client.next_advert(ip, Duration::from_secs(5))?;
    let at = advert + cluster.timers.advert() / 2;
    client.align(at, offset);
    if let Some(wait) = at.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let i = Cluster::index(master);
    let t0 = Instant::now();
    if let Some(d) = cluster.daemons[i].as_mut() {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(d.id()).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, Signal::SIGTERM)
            .map_err(|e| format!("SIGTERM to {master}: {e}"))?;
    }
    let answer = client.first_answer_after(t0, ANSWER_LIMIT)?;
    // The resignation (priority 0) is the old master's last advert.
    std::thread::sleep(Duration::from_millis(300));
    let last = client.last_advert(ip, answer.connected).unwrap_or(t0);
    let rep = answer.rep(t0, Some(last));
    if let Some(mut d) = cluster.daemons[i].take() {
        Env::stop(&mut d, Signal::SIGTERM);
    }
    cluster.restart(master, false)?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(rep)
}

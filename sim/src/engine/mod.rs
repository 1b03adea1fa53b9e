//! The discrete-event engine: an event heap ordered by (time, insertion), time jumping from
//! event to event, one seeded RNG for every random choice, no wall clock. Its hosts run the
//! core's `Node` on a model of the kernel and of the segment; what the faults do, what
//! must hold and what is recorded are the simulator's, shared with the turmoil runs of
//! cplbd ([`World`], [`Observer`]).

mod daemon;
mod host;
mod segment;
mod testbed;
mod traffic;

use core::time::Duration;
use std::collections::BTreeMap;

use cplb_core::lb::ProbeId;
use cplb_core::time::Instant;
use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

use self::host::Host;
use self::segment::Frame;
use crate::faults::{self, Due, Testbed as _, schedule};
use crate::observe::Observer;
use crate::outcome::Outcome;
use crate::queue::TimeQueue;
use crate::spec::SimSpec;
use crate::views;
use crate::world::World;

/// One-way latency on the segment when no delay fault is active.
const LATENCY: Duration = Duration::from_micros(100);
/// Steps a run may take (a livelock guard).
const MAX_STEPS: u64 = 200_000_000;

#[derive(Debug, Clone)]
enum Ev {
    Deliver { to: usize, frame: Frame },
    Wake { host: usize, generation: u64 },
    ProbeResult { host: usize, incarnation: u64, id: ProbeId, ok: bool },
    Connect { traffic: usize },
    Due(Due),
    End,
}

/// A running simulation.
#[derive(Debug)]
pub struct Sim {
    /// What the faults shape.
    world: World,
    /// What must hold, and the record.
    obs: Observer,
    /// The hosts on the segment, and the events between them.
    lan: Lan,
}

/// The engine's part of the world: hosts, the segment's switch, the event queue.
#[derive(Debug)]
struct Lan {
    spec: SimSpec,
    now: Instant,
    queue: TimeQueue<Ev>,
    rng: Pcg64Mcg,
    hosts: Vec<Host>,
    incarnations: u64,
    /// The switch's MAC table: MAC → the host (port) it was last seen from.
    switch: BTreeMap<u64, usize>,
    /// The hosts' kernels honour the loop guards their nodes set (switchable off to show
    /// the loop).
    loop_guard: bool,
    steps: u64,
}

impl Sim {
    /// Prepares a run of `spec` with `seed`. Every random choice comes from the seed.
    pub fn new(spec: SimSpec, seed: u64) -> Self {
        Self::with_samples(spec, seed, &[])
    }

    /// The same, sampling the cluster at each of `samples` (for expectations such as
    /// `master_at`).
    pub fn with_samples(spec: SimSpec, seed: u64, samples: &[Duration]) -> Self {
        let world = World::new(&spec);
        // A round trip on the segment, and a millisecond: what the engine's daemons need
        // to act on anything (they act in the instant; frames take the latency).
        let reaction = LATENCY * 2 + Duration::from_millis(1);
        let obs = Observer::new(&spec, seed, reaction, Duration::ZERO);
        let hosts = spec.hosts.iter().enumerate().map(|(i, h)| Host::new(h.clone(), i)).collect();
        let mut lan = Lan {
            now: Instant::ZERO,
            queue: TimeQueue::default(),
            rng: Pcg64Mcg::seed_from_u64(seed),
            hosts,
            incarnations: 0,
            switch: BTreeMap::new(),
            loop_guard: true,
            steps: 0,
            spec,
        };
        for (at, due) in schedule(&lan.spec, samples) {
            lan.push(at, Ev::Due(due));
        }
        lan.start_traffic();
        let end = Instant::ZERO + lan.spec.duration;
        lan.push(end, Ev::End);
        let mut sim = Self { world, obs, lan };
        for h in 0..sim.lan.hosts.len() {
            if sim.world.network().powered(h) && sim.lan.hosts[h].is_controller() {
                sim.lan.start_daemon(h, &sim.world, &mut sim.obs);
            }
        }
        sim
    }

    /// Turns the direct-routing loop guard off (see `cplb_core::lb::ServiceSpec`), to show
    /// the loop k0s issue 5178 describes. On by default.
    pub fn set_loop_guard(&mut self, on: bool) {
        self.lan.loop_guard = on;
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Outcome {
        while let Some((at, ev)) = self.lan.queue.pop(None) {
            self.lan.steps += 1;
            if self.lan.steps > MAX_STEPS {
                let detail = format!("more than {MAX_STEPS} events");
                self.obs.violate(self.lan.now, "livelock", detail);
                break;
            }
            self.lan.now = at;
            if matches!(ev, Ev::End) {
                break;
            }
            self.handle(ev);
            self.obs.check(self.lan.now, &self.world);
        }
        let views = self.views();
        self.obs.finish(self.lan.now, views, self.lan.steps)
    }

    fn handle(&mut self, ev: Ev) {
        let (lan, world, obs) = (&mut self.lan, &mut self.world, &mut self.obs);
        match ev {
            Ev::Deliver { to, frame } => lan.deliver(to, frame, world, obs),
            Ev::Wake { host, generation } => lan.wake(host, generation, world, obs),
            Ev::ProbeResult { host, incarnation, id, ok } => {
                lan.probe_result(host, incarnation, id, ok, world, obs);
            }
            Ev::Connect { traffic } => lan.connect(traffic, world, obs),
            Ev::Due(Due::Boot(h)) => faults::boot(world, lan.now, h, lan, obs),
            Ev::Due(Due::Fault(i)) => {
                let fault = lan.spec.faults[i].fault.clone();
                faults::apply(world, lan.now, &fault, lan, obs);
            }
            Ev::Due(Due::RefusalEnd(h)) => faults::refusal_end(world, lan.now, h, obs),
            Ev::Due(Due::Sample) => obs.sample(lan.now),
            Ev::End => {}
        }
    }

    fn views(&self) -> String {
        views::render_views(&self.lan.views(&self.world))
    }
}

impl Lan {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn random(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn host_by_addr(&self, ip: core::net::IpAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.spec.address == ip)
    }
}

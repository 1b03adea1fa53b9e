//! Property-based failover fuzzing: proptest generates whole scenarios (clusters, VRRP
//! settings, traffic, fault schedules), the simulator runs them, and a failing one is shrunk
//! to the smallest that still fails and written out as a scenario file that `cplb sim run`
//! replays exactly.
//!
//! The property: the simulator's invariants hold, and after the schedule's last fault (a
//! repair of everything) every client's connections succeed again within the bound the
//! configuration implies; nothing panics.

use crate::daemon_driver::RunError;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cplb_core::config::LbAlgo;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use crate::run::run;
use crate::scenario::parse;

/// Fault kinds as generated; host numbers are reduced modulo the host count.
#[derive(Debug, Clone, PartialEq)]
pub enum GenFault {
    /// Power off a host.
    PowerOff(u8),
    /// Power it on.
    PowerOn(u8),
    /// Stop its daemon gracefully.
    Stop(u8),
    /// Start its daemon.
    Start(u8),
    /// Kill its daemon.
    Crash(u8),
    /// Start a new daemon.
    Restart(u8),
    /// Group hosts (group number per host).
    Partition(Vec<u8>),
    /// Drop frames one way.
    Cut(u8, u8),
    /// Repair the network.
    Heal,
    /// Lose this percentage of frames.
    Loss(u8),
    /// Delay frames by min..=max milliseconds.
    Delay(u16, u16),
    /// Duplicate this percentage of frames.
    Duplicate(u8),
    /// A host's link goes down.
    LinkDown(u8),
    /// And up.
    LinkUp(u8),
    /// A controller's API server stops.
    ApiserverDown(u8),
    /// And starts.
    ApiserverUp(u8),
    /// A host's clock drifts (ppm).
    ClockDrift(u8, i32),
    /// Someone deletes a host's VIPs from its eth0 by hand.
    VipRemoved(u8),
    /// A host's kernel refuses address and data-plane commands for this many seconds.
    KernelRefuses(u8, u8),
    /// SIGHUP: a host's daemon reloads the same configuration.
    Reload(u8),
    /// Every controller gets the configuration with one more instance (a new VIP) and is
    /// reloaded.
    ReloadAdded,
}

/// One controller's VRRP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenController {
    /// Priority (200 is k0s's).
    pub priority: u8,
    /// Preempt_Mode.
    pub preempt: bool,
}

/// A generated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct GenCase {
    /// The simulator's seed.
    pub seed: u64,
    /// IPv6 (VRRPv3) or IPv4.
    pub ipv6: bool,
    /// VRRPv3 also over IPv4.
    pub v3: bool,
    /// Advertisement interval in centiseconds.
    pub advert_cs: u16,
    /// The controllers.
    pub controllers: Vec<GenController>,
    /// VRRP instances (VIPs).
    pub instances: u8,
    /// Unicast peers instead of multicast.
    pub unicast: bool,
    /// IPVS virtual servers with this scheduler, or the userspace proxy.
    pub ipvs: Option<LbAlgo>,
    /// Traffic sources' connection rates.
    pub clients: Vec<u8>,
    /// Faults: milliseconds after the start, and what.
    pub faults: Vec<(u32, GenFault)>,
}

/// Shape limits of generated cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Exactly this many controllers (1 to 7 when `None`).
    pub controllers: Option<u8>,
    /// Total simulated time; faults fall in the first 45 %, the repair at half time.
    /// `None`: faults in the first 40 s and a quiet period long enough for every bound.
    pub duration_s: Option<u32>,
}

fn fault(hosts: u8) -> impl Strategy<Value = GenFault> {
    let h = move || 0..hosts;
    prop_oneof![
        h().prop_map(GenFault::PowerOff),
        h().prop_map(GenFault::PowerOn),
        h().prop_map(GenFault::Stop),
        h().prop_map(GenFault::Start),
        h().prop_map(GenFault::Crash),
        h().prop_map(GenFault::Restart),
        proptest::collection::vec(0u8..3, hosts as usize).prop_map(GenFault::Partition),
        (h(), h()).prop_map(|(a, b)| GenFault::Cut(a, b)),
        Just(GenFault::Heal),
        (1u8..=50).prop_map(GenFault::Loss),
        (0u16..=200, 0u16..=300).prop_map(|(a, b)| GenFault::Delay(a, a + b)),
        (1u8..=50).prop_map(GenFault::Duplicate),
        h().prop_map(GenFault::LinkDown),
        h().prop_map(GenFault::LinkUp),
        h().prop_map(GenFault::ApiserverDown),
        h().prop_map(GenFault::ApiserverUp),
        (h(), -100_000i32..=100_000).prop_map(|(a, p)| GenFault::ClockDrift(a, p)),
        h().prop_map(GenFault::VipRemoved),
        (h(), 1u8..=20).prop_map(|(a, s)| GenFault::KernelRefuses(a, s)),
        h().prop_map(GenFault::Reload),
        Just(GenFault::ReloadAdded),
    ]
}

/// The strategy for whole scenarios.
pub fn case(shape: Shape) -> impl Strategy<Value = GenCase> {
    let controllers = match shape.controllers {
        Some(n) => (n..=n).boxed(),
        None => (1u8..=7).boxed(),
    };
    let fault_window_ms = shape.duration_s.map_or(40_000, |d| d * 450);
    (controllers, 1u8..=3)
        .prop_flat_map(move |(n, clients)| {
            let controller = (
                prop_oneof![3 => Just(200u8), 2 => 1u8..=254],
                prop_oneof![4 => Just(true), 1 => Just(false)],
            )
                .prop_map(|(priority, preempt)| GenController { priority, preempt });
            (
                any::<u64>(),
                prop_oneof![4 => Just(false), 1 => Just(true)],
                prop_oneof![3 => Just(false), 1 => Just(true)],
                prop_oneof![3 => Just(100u16), 1 => 10u16..=300],
                proptest::collection::vec(controller, n as usize),
                1u8..=3,
                any::<bool>(),
                proptest::option::of(prop::sample::select(LbAlgo::ALL.to_vec())),
                proptest::collection::vec(2u8..=20, clients as usize),
                proptest::collection::vec((1_000u32..fault_window_ms, fault(n + clients)), 0..=20),
            )
        })
        .prop_map(
            |(
                seed,
                ipv6,
                v3,
                advert_cs,
                controllers,
                instances,
                unicast,
                ipvs,
                clients,
                mut faults,
            )| {
                faults.sort_by_key(|(at, _)| *at);
                GenCase {
                    seed,
                    ipv6,
                    v3,
                    advert_cs,
                    controllers,
                    instances,
                    unicast,
                    ipvs,
                    clients,
                    faults,
                }
            },
        )
}

impl GenCase {
    fn hosts(&self) -> Vec<(String, bool)> {
        let c = (0..self.controllers.len()).map(|i| (format!("ctl{i}"), true));
        c.chain((0..self.clients.len()).map(|i| (format!("client{i}"), false))).collect()
    }

    fn address(&self, host: usize) -> String {
        let n = if host < self.controllers.len() { 10 + host } else { 100 + host };
        if self.ipv6 { format!("fd00:200::{n:x}") } else { format!("10.200.0.{n}") }
    }

    fn vip(&self, instance: u8) -> String {
        if self.ipv6 {
            format!("fd00:200::{:x}", 200 + u16::from(instance))
        } else {
            format!("10.200.0.{}", 200 + instance)
        }
    }

    /// The CPLB configuration with `instances` VRRP instances, as a `spec:` fragment whose
    /// lines are indented by `indent` spaces.
    fn config_yaml(&self, instances: u8, indent: usize) -> String {
        let prefix = if self.ipv6 { 64 } else { 24 };
        let mut y = String::from(
            "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      keepalived:\n        vrrpInstances:\n",
        );
        let seconds = self.advert_cs.div_ceil(100).max(1);
        let unicast = self.unicast && self.controllers.len() > 1;
        for i in 0..instances {
            let _ = writeln!(
                y,
                "        - virtualIPs: [\"{}/{prefix}\"]\n          authPass: fuzz{i}\n          advertIntervalSeconds: {seconds}",
                self.vip(i)
            );
            if unicast {
                let peers: Vec<String> = (1..self.controllers.len())
                    .map(|c| format!("\"{}\"", self.address(c)))
                    .collect();
                let _ = writeln!(
                    y,
                    "          unicastSourceIP: \"{}\"\n          unicastPeers: [{}]",
                    self.address(0),
                    peers.join(", ")
                );
            }
        }
        if let Some(algo) = self.ipvs {
            let _ = writeln!(y, "        virtualServers:");
            for i in 0..instances {
                let _ = writeln!(
                    y,
                    "        - {{ipAddress: \"{}\", lbAlgo: {}}}",
                    self.vip(i),
                    algo.as_str()
                );
            }
        }
        let pad = " ".repeat(indent);
        y.lines().map(|l| format!("{pad}{l}\n")).collect()
    }

    /// When the repair comes (milliseconds): at half time with a fixed duration, else two
    /// seconds after the last fault, or after the last kernel refusal ends if that is later.
    fn repair_ms(&self, shape: Shape) -> u32 {
        if let Some(d) = shape.duration_s {
            return d * 500;
        }
        let over = self
            .faults
            .iter()
            .map(|(at, f)| match f {
                GenFault::KernelRefuses(_, s) => at + u32::from(*s) * 1000,
                _ => *at,
            })
            .max()
            .unwrap_or(0);
        over + 2_000
    }

    /// The case as cplbd can run it: what k0s.yaml and cplbd's command line express
    /// (priority 200 everywhere, preemption; the VRRP version and interval are cplbd's
    /// `--vrrp-version` and `--advert-interval`) and faults turmoil has (no duplication).
    /// `--driver daemon` campaigns run this form of each case.
    pub fn as_cplbd_runs(&self) -> Self {
        let mut c = self.clone();
        for g in &mut c.controllers {
            *g = GenController { priority: 200, preempt: true };
        }
        c.faults.retain(|(_, f)| !matches!(f, GenFault::Duplicate(_)));
        c
    }

    /// The scenario file (the catalog's format) for this case.
    pub fn to_yaml(&self, shape: Shape) -> String {
        let hosts = self.hosts();
        let name = |h: u8| hosts[usize::from(h) % hosts.len()].0.clone();
        let mut y = String::new();
        let _ = writeln!(y, "name: fuzz-{:016x}", self.seed);
        let _ = writeln!(
            y,
            "description: generated by cplb sim fuzz; replay with cplb sim run THIS-FILE"
        );
        let repair_ms = self.repair_ms(shape);
        // The quiet period also covers what a node may still wait out after a kernel
        // refusal (see clients_recover), so the property is checked after it too.
        let slack_ms = self
            .faults
            .iter()
            .filter_map(|(_, f)| match f {
                GenFault::KernelRefuses(_, _) => {
                    u32::try_from(cplb_sim::Bounds::kernel_noticed().as_millis()).ok()
                }
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let duration_ms = match shape.duration_s {
            Some(d) => d * 1000,
            None => repair_ms + 45_000 + slack_ms,
        };
        let _ = writeln!(y, "duration: {}ms", duration_ms);
        let _ = writeln!(y, "seed: {}", self.seed);
        if self.v3 || self.advert_cs != 100 {
            let version = if self.v3 || self.ipv6 { 3 } else { 2 };
            let _ = writeln!(
                y,
                "vrrp: {{version: {version}, advert_interval: {}ms}}",
                u32::from(self.advert_cs) * 10
            );
        }
        let _ = writeln!(y, "hosts:");
        for (i, (n, controller)) in hosts.iter().enumerate() {
            let role = if *controller { "controller" } else { "client" };
            let mut extra = String::new();
            if let Some(c) = self.controllers.get(i) {
                let _ = write!(extra, ", priority: {}, preempt: {}", c.priority, c.preempt);
            }
            let _ = writeln!(
                y,
                "  - {{name: {n}, role: {role}, address: \"{}\"{extra}}}",
                self.address(i)
            );
        }
        let _ = write!(y, "config: |\n{}", self.config_yaml(self.instances, 2));
        let _ = writeln!(y, "traffic:");
        for (i, rate) in self.clients.iter().enumerate() {
            let from = &hosts[self.controllers.len() + i].0;
            let vip = self.vip(u8::try_from(i).unwrap_or(0) % self.instances);
            let _ = writeln!(y, "  - {{from: {from}, rate: {rate}, vip: \"{vip}\", start: 500ms}}");
        }
        let _ = writeln!(y, "faults:");
        for (at, f) in &self.faults {
            let at = if shape.duration_s.is_some() { (*at).min(repair_ms - 1) } else { *at };
            let text = match f {
                GenFault::PowerOff(h) => format!("poweroff: {}", name(*h)),
                GenFault::PowerOn(h) => format!("poweron: {}", name(*h)),
                GenFault::Stop(h) => format!("stop: {}", name(*h)),
                GenFault::Start(h) => format!("start: {}", name(*h)),
                GenFault::Crash(h) => format!("crash: {}", name(*h)),
                GenFault::Restart(h) => format!("restart: {}", name(*h)),
                GenFault::Partition(groups) => {
                    let mut g: Vec<Vec<String>> = vec![Vec::new(); 3];
                    for (h, grp) in groups.iter().enumerate().take(hosts.len()) {
                        g[usize::from(*grp) % 3].push(hosts[h].0.clone());
                    }
                    let parts: Vec<String> = g
                        .into_iter()
                        .filter(|x| !x.is_empty())
                        .map(|x| format!("[{}]", x.join(", ")))
                        .collect();
                    format!("partition: [{}]", parts.join(", "))
                }
                GenFault::Cut(a, b) => format!("cut: {{from: {}, to: {}}}", name(*a), name(*b)),
                GenFault::Heal => "heal: true".into(),
                GenFault::Loss(p) => format!("loss: {}", f64::from(*p) / 100.0),
                GenFault::Delay(a, b) => format!("delay: {{min: {a}ms, max: {b}ms}}"),
                GenFault::Duplicate(p) => format!("duplicate: {}", f64::from(*p) / 100.0),
                GenFault::LinkDown(h) => format!("link_down: {}", name(*h)),
                GenFault::LinkUp(h) => format!("link_up: {}", name(*h)),
                GenFault::ApiserverDown(h) => format!("apiserver_down: {}", name(*h)),
                GenFault::ApiserverUp(h) => format!("apiserver_up: {}", name(*h)),
                GenFault::ClockDrift(h, ppm) => {
                    format!("clock_drift: {{host: {}, ppm: {ppm}}}", name(*h))
                }
                GenFault::VipRemoved(h) => format!("vip_removed: {}", name(*h)),
                GenFault::KernelRefuses(h, s) => {
                    // It ends by itself; with a fixed duration, by the repair at the latest.
                    let ms = (u32::from(*s) * 1000).min(repair_ms.saturating_sub(at).max(1));
                    format!("kernel_refuses: {{host: {}, for: {ms}ms}}", name(*h))
                }
                GenFault::Reload(h) => format!("reload: {}", name(*h)),
                GenFault::ReloadAdded => {
                    // Block style: the new file is a block string. Every controller's file
                    // changes (a daemon that is not running reads it when it starts).
                    let controllers: Vec<&str> = hosts
                        .iter()
                        .filter(|(_, controller)| *controller)
                        .map(|(n, _)| n.as_str())
                        .collect();
                    let _ = write!(
                        y,
                        "  - at: {at}ms\n    reload:\n      host: [{}]\n      config: |\n{}",
                        controllers.join(", "),
                        self.config_yaml(self.instances + 1, 8)
                    );
                    continue;
                }
            };
            let _ = writeln!(y, "  - {{at: {at}ms, {text}}}");
        }
        // The repair: everything back, so the clients must recover. A kernel refusal ends by
        // itself (before the repair), a removed VIP is the daemon's to put back, and a
        // reloaded configuration is a valid cluster's.
        let _ = writeln!(y, "  - {{at: {repair_ms}ms, heal: true}}");
        for (n, controller) in &hosts {
            let _ = writeln!(y, "  - {{at: {repair_ms}ms, poweron: {n}}}");
            let _ = writeln!(y, "  - {{at: {repair_ms}ms, clock_drift: {{host: {n}, ppm: 0}}}}");
            if *controller {
                let _ = writeln!(y, "  - {{at: {repair_ms}ms, start: {n}}}");
                let _ = writeln!(y, "  - {{at: {repair_ms}ms, apiserver_up: {n}}}");
            }
        }
        let _ = writeln!(y, "expect:\n  clients_recover: true");
        y
    }
}

/// What a case that held measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Measured {
    /// Simulated seconds.
    pub simulated_s: f64,
    /// Each failover's time from its fault to the VIP answering.
    pub failovers_s: Vec<f64>,
    /// The longest client outage.
    pub longest_outage_s: f64,
}

/// What one case did.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Everything held; what was measured.
    Held(Measured),
    /// Something failed: why.
    Failed(String),
    /// The daemon driver cannot express the case (see `daemon_driver::unsupported`).
    Skipped(String),
}

/// Runs one case on the engine (twice with `determinism`).
pub fn check(case: &GenCase, shape: Shape, determinism: bool) -> Verdict {
    check_with(case, shape, determinism, false)
}

/// Runs one case on the engine, or with `daemon` on cplbd's own code under turmoil.
pub fn check_with(case: &GenCase, shape: Shape, determinism: bool, daemon: bool) -> Verdict {
    let case = if daemon { case.as_cplbd_runs() } else { case.clone() };
    let yaml = case.to_yaml(shape);
    let scenario = match parse("generated", &yaml) {
        Ok(s) => s,
        Err(e) => return Verdict::Failed(format!("the generated scenario does not parse: {e}")),
    };
    let go = || {
        if daemon {
            crate::run::run_daemon(&scenario, scenario.seed)
        } else {
            Ok(run(&scenario, scenario.seed))
        }
    };
    let outcome = std::panic::catch_unwind(go);
    let report = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(RunError::Unsupported(why))) => return Verdict::Skipped(why.0),
        Ok(Err(e @ RunError::Turmoil(_))) => return Verdict::Failed(e.to_string()),
        Err(panic) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            return Verdict::Failed(format!("panic: {}", text.unwrap_or_default()));
        }
    };
    if !report.ok {
        let mut why: Vec<String> = report
            .outcome
            .violations
            .iter()
            .map(|v| format!("{} at {}: {}", v.invariant, v.at, v.detail))
            .collect();
        why.extend(
            report.verdicts.iter().filter(|v| !v.ok).map(|v| format!("{}: {}", v.name, v.detail)),
        );
        return Verdict::Failed(why.join("; "));
    }
    if determinism {
        let again = match go() {
            Ok(r) => r,
            Err(RunError::Unsupported(why)) => return Verdict::Skipped(why.0),
            Err(e @ RunError::Turmoil(_)) => return Verdict::Failed(e.to_string()),
        };
        if again.outcome.trace_hash != report.outcome.trace_hash {
            return Verdict::Failed("two runs with the same seed gave different traces".into());
        }
    }
    Verdict::Held(Measured {
        simulated_s: report.outcome.simulated.as_secs_f64(),
        failovers_s: report.outcome.failovers.iter().filter_map(|f| f.failover_s).collect(),
        longest_outage_s: report.outcome.client_totals().longest_outage.as_secs_f64(),
    })
}

/// A campaign's settings.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Cases to run.
    pub cases: u64,
    /// The campaign seed: case `i` is generated from (seed, i), whatever the thread count.
    pub seed: u64,
    /// Worker threads.
    pub jobs: usize,
    /// Run each case twice and compare traces.
    pub determinism: bool,
    /// Where failing scenarios are written.
    pub out_dir: PathBuf,
    /// Shape limits.
    pub shape: Shape,
    /// Shrink steps at most per failure.
    pub max_shrink: u32,
    /// Run the cases on cplbd's own code under turmoil (`--driver daemon`).
    pub daemon: bool,
}

/// A failure, shrunk and written out.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Case number in the campaign.
    pub case: u64,
    /// The scenario's simulator seed.
    pub seed: u64,
    /// The written scenario file.
    pub path: PathBuf,
    /// Why it failed (after shrinking).
    pub reason: String,
}

/// A campaign's result.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Cases run.
    pub cases: u64,
    /// Failures.
    pub failures: Vec<Failure>,
    /// Cases the daemon driver cannot express (skipped, not run).
    pub skipped: u64,
    /// Simulated seconds over all cases.
    pub simulated_s: f64,
    /// Wall time.
    pub wall_s: f64,
    /// Every failover time (fault to VIP answering) of the cases that held.
    pub failovers_s: Vec<f64>,
    /// The longest client outage of each case that held.
    pub outages_s: Vec<f64>,
}

/// What the workers add up.
#[derive(Debug, Default)]
struct Totals {
    simulated_s: f64,
    failovers_s: Vec<f64>,
    outages_s: Vec<f64>,
}

impl Summary {
    /// The campaign as the reports take it; failure files are named relative to `dir` when
    /// they are inside it (so the page's links work wherever the directory goes).
    pub fn campaign(
        &self,
        seed: u64,
        daemon: bool,
        dir: &std::path::Path,
    ) -> cplb_reports::Campaign {
        // Cases finish in any order on several threads: sorted, the page is the same for
        // the same campaign.
        let sorted = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v
        };
        cplb_reports::Campaign {
            seed,
            driver: if daemon { "daemon" } else { "engine" }.to_owned(),
            cases: self.cases,
            skipped: self.skipped,
            simulated_s: self.simulated_s,
            wall_s: self.wall_s,
            failures: self
                .failures
                .iter()
                .map(|f| cplb_reports::CaseFailure {
                    case: f.case,
                    seed: f.seed,
                    file: f.path.strip_prefix(dir).unwrap_or(&f.path).display().to_string(),
                    reason: f.reason.clone(),
                })
                .collect(),
            failover_s: sorted(&self.failovers_s),
            longest_outage_s: sorted(&self.outages_s),
        }
    }

    /// Cases per wall second.
    pub fn cases_per_sec(&self) -> f64 {
        if self.wall_s > 0.0 { self.cases as f64 / self.wall_s } else { 0.0 }
    }
}

fn runner_for(seed: u64, case: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&case.to_le_bytes());
    bytes[16..24].copy_from_slice(b"cplbfuzz");
    TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Generates case `index` of a campaign.
pub fn generate(seed: u64, index: u64, shape: Shape) -> GenCase {
    let mut runner = runner_for(seed, index);
    match case(shape).new_tree(&mut runner) {
        Ok(tree) => tree.current(),
        Err(_) => GenCase {
            seed,
            ipv6: false,
            v3: false,
            advert_cs: 100,
            controllers: vec![GenController { priority: 200, preempt: true }],
            instances: 1,
            unicast: false,
            ipvs: None,
            clients: vec![10],
            faults: Vec::new(),
        },
    }
}

/// Runs a campaign; `progress` is called after each case.
pub fn campaign(c: &Campaign, progress: &(dyn Fn(u64) + Sync)) -> Summary {
    let started = std::time::Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let measured = Mutex::new(Totals::default());
    let failures = Mutex::new(Vec::new());
    let skipped = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..c.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= c.cases {
                        break;
                    }
                    let mut runner = runner_for(c.seed, index);
                    let Ok(mut tree) = case(c.shape).new_tree(&mut runner) else {
                        continue;
                    };
                    match check_with(&tree.current(), c.shape, c.determinism, c.daemon) {
                        Verdict::Held(m) => {
                            if let Ok(mut total) = measured.lock() {
                                total.simulated_s += m.simulated_s;
                                total.failovers_s.extend(m.failovers_s);
                                total.outages_s.push(m.longest_outage_s);
                            }
                        }
                        Verdict::Skipped(_) => {
                            skipped.fetch_add(1, Ordering::Relaxed);
                        }
                        Verdict::Failed(reason) => {
                            let failure = shrink(c, index, &mut tree, reason);
                            if let Ok(mut f) = failures.lock() {
                                f.push(failure);
                            }
                        }
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|f| f.case);
    let totals = measured.into_inner().unwrap_or_default();
    Summary {
        cases: c.cases,
        failures,
        skipped: skipped.into_inner(),
        simulated_s: totals.simulated_s,
        wall_s: started.elapsed().as_secs_f64(),
        failovers_s: totals.failovers_s,
        outages_s: totals.outages_s,
    }
}

/// proptest's shrinking: simplify while the case still fails, complicate when it stops
/// failing, keep the smallest failing case; then write it out.
fn shrink(
    c: &Campaign,
    index: u64,
    tree: &mut impl ValueTree<Value = GenCase>,
    reason: String,
) -> Failure {
    let mut best = (tree.current(), reason);
    let mut failing = true;
    for _ in 0..c.max_shrink {
        let moved = if failing { tree.simplify() } else { tree.complicate() };
        if !moved {
            break;
        }
        match check_with(&tree.current(), c.shape, c.determinism, c.daemon) {
            Verdict::Failed(why) => {
                best = (tree.current(), why);
                failing = true;
            }
            Verdict::Held(_) | Verdict::Skipped(_) => failing = false,
        }
    }
    let (case, reason) = best;
    let case = if c.daemon { case.as_cplbd_runs() } else { case };
    let path = c.out_dir.join(format!("fuzz-{}-{index}.yaml", c.seed));
    let written = std::fs::create_dir_all(&c.out_dir)
        .and_then(|()| std::fs::write(&path, case.to_yaml(c.shape)));
    let reason = match written {
        Ok(()) => reason,
        Err(e) => format!("{reason} (could not write {}: {e})", path.display()),
    };
    Failure { case: index, seed: case.seed, path, reason }
}

/// Default campaign settings.
pub fn default_shape() -> Shape {
    Shape { controllers: None, duration_s: None }
}

/// How long a generated case simulates at most (for documentation and tests): faults in the
/// first 40 s, a kernel refusal of up to 20 s, the repair 2 s later, 45 s of quiet and how
/// long a node may take to notice the refusal is over.
pub fn max_duration() -> Duration {
    Duration::from_secs(40 + 20 + 2 + 45) + cplb_sim::Bounds::kernel_noticed()
}

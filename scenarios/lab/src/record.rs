//! What `cplb lab failover --out` draws: each controller's VRRP state as its cplbd reports
//! it (polled every 25 ms over its status socket; no answer is "down"), who holds the VIP
//! on eth0 (every 100 ms), the power-offs, and the client's every connection, as the
//! reports' [`Run`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cplb_reports::{
    Attempt, Client, Failover as Figure, FaultSpan, Instance, Run, Span, StateChange,
};

use cplb_netns::status;

use crate::client::Attempt as Connection;
use crate::layout::{API_PORT, CLIENT, CONTROLLERS, VIP, socket, topo_handle};
use crate::state::vip_holders;

/// How often each cplbd's state is asked for.
const STATE_EVERY: Duration = Duration::from_millis(25);
/// Every how many state polls the VIP's holder is looked up (an `ip addr` per controller).
const HOLDER_EVERY: u32 = 4;

/// The observer thread: from [`Recorder::start`] on it polls the controllers, and
/// [`Recorder::finish`] makes the run of what it saw and the power-offs it is given.
#[derive(Debug)]
pub(crate) struct Recorder {
    start: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Observed>>,
}

#[derive(Debug, Default)]
struct Observed {
    states: Vec<StateChange>,
    holders: Vec<Span>,
}

/// One power-off as the run shows it: the failover's figures, its instants, and the
/// client's connections around it.
#[derive(Debug)]
pub(crate) struct Rep {
    /// The controller powered off.
    pub(crate) old_master: String,
    /// The controller that took over.
    pub(crate) new_master: String,
    /// Seconds from the power-off until the new master's cplbd said it was master.
    pub(crate) new_master_s: f64,
    /// Seconds from the power-off to the client's first answered connection.
    pub(crate) failover_s: f64,
    /// The power-off.
    pub(crate) fault_at: Instant,
    /// The old master back (its link up and cplbd started).
    pub(crate) restored_at: Option<Instant>,
    /// The client's connections during the rep.
    pub(crate) attempts: Vec<Connection>,
}

impl Recorder {
    /// Starts observing.
    pub(crate) fn start() -> Self {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || observe(start, &s));
        Self { start, stop, thread: Some(thread) }
    }

    /// Stops observing; the run from the start to now.
    pub(crate) fn finish(mut self, reps: &[Rep], views_before: String, views_after: String) -> Run {
        self.stop.store(true, Ordering::Relaxed);
        let observed = self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default();
        let s = |t: Instant| t.saturating_duration_since(self.start).as_secs_f64();
        let duration_s = self.start.elapsed().as_secs_f64();
        let attempts: Vec<Attempt> = reps
            .iter()
            .flat_map(|r| &r.attempts)
            .map(|a| Attempt { at_s: s(a.start), source: 0, ok: a.answered })
            .collect();
        let mut run = Run {
            driver: "lab".into(),
            title: format!("cplb lab failover: {} power-off(s) of the master", reps.len()),
            description: "The seed's cluster in network namespaces: three controllers running cplbd and a stand-in API server, a client connecting to VIP:6443 every 10 ms. States as each cplbd's status socket reported them (every 25 ms), the VIP's holder as eth0 showed it (every 100 ms).".into(),
            seed: None,
            duration_s,
            ok: true,
            hosts: CONTROLLERS.iter().map(|(n, _)| (*n).to_owned()).chain([CLIENT.0.to_owned()]).collect(),
            instances: vec![Instance { name: "k0s-vip-0".into(), vips: vec![VIP.to_owned()] }],
            states: observed.states,
            vip_holders: observed.holders,
            faults: reps
                .iter()
                .map(|r| FaultSpan {
                    at_s: s(r.fault_at),
                    until_s: r.restored_at.map(s),
                    label: format!("poweroff {}", r.old_master),
                    hosts: vec![r.old_master.clone()],
                })
                .collect(),
            attempts,
            failovers: reps
                .iter()
                .map(|r| Figure {
                    instance: 0,
                    from: r.old_master.clone(),
                    to: r.new_master.clone(),
                    fault_at_s: Some(s(r.fault_at)),
                    new_master_at_s: s(r.fault_at) + r.new_master_s,
                    vip_answering_at_s: Some(s(r.fault_at) + r.failover_s),
                    failover_s: Some(r.failover_s),
                })
                .collect(),
            clients: Vec::new(),
            violations: Vec::new(),
            views_before,
            views_after,
            timeline: Vec::new(),
        };
        let longest = run.outages().iter().map(|o| o.until_s - o.from_s).fold(0.0, f64::max);
        run.clients = vec![Client {
            name: format!("{} → {VIP}:{API_PORT}", CLIENT.0),
            attempts: run.attempts.len() as u64,
            failed: run.attempts.iter().filter(|a| !a.ok).count() as u64,
            longest_outage_s: longest,
        }];
        run
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn observe(start: Instant, stop: &AtomicBool) -> Observed {
    let topo = topo_handle();
    let mut seen = Observed::default();
    let mut last: Vec<Vec<String>> = vec![Vec::new(); CONTROLLERS.len()];
    let mut holding: Vec<Option<f64>> = vec![None; CONTROLLERS.len()];
    let mut poll = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let at_s = start.elapsed().as_secs_f64();
        for (c, (name, _)) in CONTROLLERS.iter().enumerate() {
            let reply = status::query(&socket(name), Duration::from_millis(100));
            let states: Vec<String> = match reply {
                Ok(s) => s.instances.iter().map(|i| i.state.clone()).collect(),
                Err(_) => vec!["down".to_owned()],
            };
            for (instance, state) in states.iter().enumerate() {
                if last[c].get(instance) != Some(state) {
                    seen.states.push(StateChange {
                        at_s,
                        host: (*name).to_owned(),
                        instance,
                        state: state.clone(),
                    });
                }
            }
            last[c] = states;
        }
        if poll.is_multiple_of(HOLDER_EVERY) {
            let holders = vip_holders(&topo);
            for (c, (name, _)) in CONTROLLERS.iter().enumerate() {
                let holds = holders.iter().any(|h| h == name);
                match (holds, holding[c]) {
                    (true, None) => holding[c] = Some(at_s),
                    (false, Some(from_s)) => {
                        seen.holders.push(Span {
                            instance: 0,
                            host: (*name).to_owned(),
                            from_s,
                            until_s: Some(at_s),
                        });
                        holding[c] = None;
                    }
                    _ => {}
                }
            }
        }
        poll += 1;
        std::thread::sleep(STATE_EVERY);
    }
    for (c, (name, _)) in CONTROLLERS.iter().enumerate() {
        if let Some(from_s) = holding[c] {
            seen.holders.push(Span {
                instance: 0,
                host: (*name).to_owned(),
                from_s,
                until_s: None,
            });
        }
    }
    seen.holders.sort_by(|a, b| a.from_s.total_cmp(&b.from_s));
    seen
}

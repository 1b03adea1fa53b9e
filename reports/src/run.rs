//! One run, whoever ran it: the engine, cplbd's code under turmoil, or the lab's real
//! daemons in namespaces. This is the `run.json` shape; every time is in seconds from the
//! run's start.

use serde::{Deserialize, Serialize};

/// Everything a report shows of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// What ran it: `engine`, `daemon` (cplbd's code under turmoil) or `lab` (real daemons
    /// in network namespaces).
    pub driver: String,
    /// The scenario's name, or what the lab did.
    pub title: String,
    /// The scenario's description.
    #[serde(default)]
    pub description: String,
    /// The seed the run replays from (none for the lab).
    pub seed: Option<u64>,
    /// How long the run lasted.
    pub duration_s: f64,
    /// Whether every expectation and invariant held.
    pub ok: bool,
    /// Hosts, in the order of their lanes.
    pub hosts: Vec<String>,
    /// The VRRP instances (`k0s-vip-N`, in order).
    pub instances: Vec<Instance>,
    /// Every VRRP state change, in time order.
    pub states: Vec<StateChange>,
    /// Who held each instance's VIP, when.
    pub vip_holders: Vec<Span>,
    /// The faults: shaded from `at_s` until `until_s` (the end of the run when `null`); a
    /// moment's fault (a reload, a crash) has `until_s` equal to `at_s`.
    pub faults: Vec<FaultSpan>,
    /// Client connection attempts.
    pub attempts: Vec<Attempt>,
    /// Changes of master, with their figures.
    pub failovers: Vec<Failover>,
    /// Per traffic source.
    pub clients: Vec<Client>,
    /// Invariants that did not hold, and expectations that failed.
    pub violations: Vec<Violation>,
    /// `ip addr` and `ipvsadm --save -n` views before the first fault.
    pub views_before: String,
    /// The same at the end.
    pub views_after: String,
    /// The run's trace, a line per event.
    #[serde(default)]
    pub timeline: Vec<String>,
}

/// A VRRP instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// `k0s-vip-N`.
    pub name: String,
    /// Its virtual addresses.
    pub vips: Vec<String>,
}

/// A host's instance entering a state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// When.
    pub at_s: f64,
    /// The host's name.
    pub host: String,
    /// The instance's index in [`Run::instances`].
    pub instance: usize,
    /// `initialize`, `backup`, `master`, `fault`, or `down` (the host or daemon is off).
    pub state: String,
}

/// A host holding something over a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The instance's index.
    pub instance: usize,
    /// The host's name.
    pub host: String,
    /// From.
    pub from_s: f64,
    /// Until (the end of the run when `null`).
    pub until_s: Option<f64>,
}

/// A fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpan {
    /// When it began.
    pub at_s: f64,
    /// When it was undone (`null`: it lasted to the end).
    pub until_s: Option<f64>,
    /// What it was, as the scenario says it (`poweroff ctl1`).
    pub label: String,
    /// The hosts it struck (empty: the whole network).
    pub hosts: Vec<String>,
}

/// One client connection attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it began.
    pub at_s: f64,
    /// The traffic source's index in [`Run::clients`].
    pub source: usize,
    /// Whether it was answered.
    pub ok: bool,
}

/// A change of master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    /// The instance's index.
    pub instance: usize,
    /// The old master.
    pub from: String,
    /// The new one.
    pub to: String,
    /// The fault before it.
    pub fault_at_s: Option<f64>,
    /// When the new master took over.
    pub new_master_at_s: f64,
    /// When a client was first answered through the new master.
    pub vip_answering_at_s: Option<f64>,
    /// From the fault (or the takeover) to the VIP answering.
    pub failover_s: Option<f64>,
}

/// A traffic source's experience.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// `client -> 192.168.122.200`.
    pub name: String,
    /// Connections tried.
    pub attempts: u64,
    /// Connections that failed.
    pub failed: u64,
    /// The longest time from a failure to the next answer.
    pub longest_outage_s: f64,
}

/// Something that did not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// When (`null`: of the run as a whole, as an expectation).
    pub at_s: Option<f64>,
    /// The invariant or expectation.
    pub name: String,
    /// What was seen.
    pub detail: String,
}

/// A client's outage: from a failed attempt to the next answered one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// The source.
    pub source: usize,
    /// The first failure.
    pub from_s: f64,
    /// The next answer (the run's end when none came).
    pub until_s: f64,
}

impl Run {
    /// Reads a `run.json`.
    ///
    /// # Errors
    /// What is wrong, with the line and column.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("not a cplb run: {e}"))
    }

    /// The `run.json` text.
    pub fn to_json(&self) -> String {
        // A run is plain data: serialising it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The outages of every source, in time order: a failed attempt to the next answered
    /// one of the same source.
    pub fn outages(&self) -> Vec<Outage> {
        let mut out = Vec::new();
        for source in 0..self.clients.len().max(self.max_source() + 1) {
            let mut mine: Vec<&Attempt> =
                self.attempts.iter().filter(|a| a.source == source).collect();
            mine.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
            let mut start = None;
            for a in mine {
                match (a.ok, start) {
                    (false, None) => start = Some(a.at_s),
                    (true, Some(from_s)) => {
                        out.push(Outage { source, from_s, until_s: a.at_s });
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(from_s) = start {
                out.push(Outage { source, from_s, until_s: self.duration_s });
            }
        }
        out.sort_by(|a, b| a.from_s.total_cmp(&b.from_s));
        out
    }

    fn max_source(&self) -> usize {
        self.attempts.iter().map(|a| a.source).max().unwrap_or(0)
    }

    /// The hosts with VRRP lanes: those with a state change, in [`Run::hosts`] order.
    pub fn vrrp_hosts(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| self.states.iter().any(|s| &s.host == *h))
            .map(String::as_str)
            .collect()
    }

    /// The state of `host`'s `instance` over the run: `(from_s, until_s, state)`, from its
    /// first change on (before it, nothing is known).
    pub fn state_spans(&self, host: &str, instance: usize) -> Vec<(f64, f64, &str)> {
        let mut changes: Vec<&StateChange> =
            self.states.iter().filter(|s| s.host == host && s.instance == instance).collect();
        changes.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let mut spans = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let until = changes.get(i + 1).map_or(self.duration_s, |n| n.at_s);
            if until > c.at_s || (i + 1 == changes.len() && until >= c.at_s) {
                spans.push((c.at_s, until.max(c.at_s), c.state.as_str()));
            }
        }
        spans
    }

    /// VIP holder spans from the master spans (the engine and the turmoil driver, where a
    /// master holds its instance's VIPs by construction).
    pub fn holders_from_masters(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for host in self.vrrp_hosts() {
            for instance in 0..self.instances.len() {
                for (from_s, until_s, state) in self.state_spans(host, instance) {
                    if state == "master" {
                        let until_s = (until_s < self.duration_s).then_some(until_s);
                        out.push(Span { instance, host: host.to_owned(), from_s, until_s });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.from_s.total_cmp(&b.from_s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_run_from_a_failure_to_the_next_answer_of_the_same_source() {
        let a = |at_s, source, ok| Attempt { at_s, source, ok };
        let run = Run {
            attempts: vec![
                a(1.0, 0, true),
                a(2.0, 0, false),
                a(2.5, 1, false),
                a(3.0, 0, false),
                a(4.0, 0, true),
                a(9.0, 0, false),
            ],
            clients: vec![],
            duration_s: 10.0,
            ..crate::tests::empty_run()
        };
        let o = run.outages();
        assert_eq!(
            o,
            vec![
                Outage { source: 0, from_s: 2.0, until_s: 4.0 },
                Outage { source: 1, from_s: 2.5, until_s: 10.0 },
                Outage { source: 0, from_s: 9.0, until_s: 10.0 },
            ]
        );
    }
}

//! The `faults` of a scenario file: the vocabulary of docs/scenarios.md, each entry read
//! into the simulator's [`TimedFault`]s.

use std::time::Duration;

use cplb_core::config::walk::Field;
use cplb_core::config::yaml::NodeId;
use cplb_core::config::{LoadOptions, parse_go_duration};
use cplb_sim::{Fault, ReloadConfig, TimedFault};

use super::{Parser, ScenarioError};

impl Parser<'_> {
    /// One entry of `faults`; a `reload` of several hosts gives one fault per host.
    pub(super) fn fault(&mut self, id: NodeId) -> Result<Vec<TimedFault>, ScenarioError> {
        let kinds = [
            "poweroff",
            "poweron",
            "stop",
            "start",
            "crash",
            "restart",
            "partition",
            "cut",
            "heal",
            "loss",
            "delay",
            "duplicate",
            "link_down",
            "link_up",
            "apiserver_down",
            "apiserver_up",
            "apiserver_hang",
            "clock_drift",
            "vip_removed",
            "kernel_refuses",
            "reload",
        ];
        let mut known = vec!["at"];
        known.extend(kinds);
        let mut f = self.fields(id, "a fault", &known)?;
        let at_id = f.take("at").ok_or_else(|| self.err(id, "a fault needs \"at\"".into()))?;
        let at = self.duration(at_id, "at")?;
        let given: Vec<Field<'_>> = f.iter().filter(|field| field.key != "at").collect();
        let [Field { key: kind, value: v, .. }] = given.as_slice() else {
            return Err(self
                .err(id, format!("a fault has \"at\" and exactly one of: {}", kinds.join(", "))));
        };
        let (kind, v) = (*kind, *v);
        let fault = match kind {
            "poweroff" => Fault::PowerOff(self.host(v)?),
            "poweron" => Fault::PowerOn(self.host(v)?),
            "stop" => Fault::Stop(self.host(v)?),
            "start" => Fault::Start(self.host(v)?),
            "crash" => Fault::Crash(self.host(v)?),
            "restart" => Fault::Restart(self.host(v)?),
            "link_down" => Fault::LinkDown(self.host(v)?),
            "link_up" => Fault::LinkUp(self.host(v)?),
            "apiserver_down" => Fault::ApiserverDown(self.host(v)?),
            "apiserver_up" => Fault::ApiserverUp(self.host(v)?),
            "apiserver_hang" => Fault::ApiserverHang(self.host(v)?),
            "vip_removed" => Fault::VipRemoved(self.host(v)?),
            "kernel_refuses" => {
                // {host: H, for: TIME}, or {H: TIME}.
                let (host, time) = match self.doc.entries(v) {
                    Some(&[(k, t)]) if self.keyed_by_host(&[(k, t)]) => (k, t),
                    Some(_) => {
                        let mut kf = self.fields(v, "kernel_refuses", &["host", "for"])?;
                        let host = kf
                            .take("host")
                            .ok_or_else(|| self.err(v, "kernel_refuses needs \"host\"".into()))?;
                        let time = kf.take("for").ok_or_else(|| {
                            self.err(v, "kernel_refuses needs \"for\" (how long)".into())
                        })?;
                        (host, time)
                    }
                    None => {
                        return Err(self.err(
                            v,
                            "kernel_refuses takes {host: HOST, for: TIME} or {HOST: TIME}".into(),
                        ));
                    }
                };
                let refusal = self.duration(time, "kernel_refuses for")?;
                if refusal.is_zero() {
                    return Err(self.err(time, "kernel_refuses for must be longer than 0".into()));
                }
                Fault::KernelRefuses(self.host(host)?, refusal)
            }
            "reload" => {
                // HOST or [HOSTS]: the same file; {host: HOST or [HOSTS], config: CONFIG}: a
                // new one; {host: ..., invalid_config: TEXT}: one the daemon must refuse.
                let (hosts_id, config) = if self.doc.entries(v).is_some() {
                    let mut rf = self.fields(v, "reload", &["host", "config", "invalid_config"])?;
                    let hosts_id = rf
                        .take("host")
                        .ok_or_else(|| self.err(v, "reload needs \"host\"".into()))?;
                    let config = match (rf.take("config"), rf.take("invalid_config")) {
                        (Some(_), Some(i)) => {
                            return Err(self.err(
                                i,
                                "reload takes \"config\" or \"invalid_config\", not both".into(),
                            ));
                        }
                        (Some(c), None) => ReloadConfig::New(Box::new(self.config(c)?)),
                        (None, Some(i)) => self.invalid_config(i)?,
                        (None, None) => ReloadConfig::Same,
                    };
                    (hosts_id, config)
                } else {
                    (v, ReloadConfig::Same)
                };
                let hosts = if self.doc.items(hosts_id).is_some() {
                    self.hosts_list(hosts_id)?
                } else {
                    vec![self.host(hosts_id)?]
                };
                if hosts.is_empty() {
                    return Err(self.err(hosts_id, "reload needs at least one host".into()));
                }
                return Ok(hosts
                    .into_iter()
                    .map(|h| TimedFault { at, fault: Fault::Reload(h, config.clone()) })
                    .collect());
            }
            "partition" => {
                let groups = self
                    .list(v, "partition")?
                    .iter()
                    .map(|&g| self.hosts_list(g))
                    .collect::<Result<Vec<_>, _>>()?;
                Fault::Partition(groups)
            }
            "cut" => {
                let mut cf = self.fields(v, "cut", &["from", "to"])?;
                let from =
                    cf.take("from").ok_or_else(|| self.err(v, "cut needs \"from\"".into()))?;
                let to = cf.take("to").ok_or_else(|| self.err(v, "cut needs \"to\"".into()))?;
                Fault::Cut { from: self.host(from)?, to: self.host(to)? }
            }
            "heal" => Fault::Heal,
            "loss" => Fault::Loss(self.ratio(v, "loss")?),
            "duplicate" => Fault::Duplicate(self.ratio(v, "duplicate")?),
            "delay" if self.doc.entries(v).is_none() => {
                // "10ms..50ms", or one time for a fixed delay.
                let text = self.text(v, "delay")?;
                let (a, b) = text.split_once("..").unwrap_or((&text, &text));
                let parse = |t: &str| {
                    match parse_go_duration(t.trim()) {
                    Ok(ns) if ns >= 0 => Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))),
                    _ => Err(self.err(v, format!("delay {text:?}: expected {{min, max}} or \"MIN..MAX\" such as \"10ms..50ms\""))),
                }
                };
                let (min, max) = (parse(a)?, parse(b)?);
                if max < min {
                    return Err(self.err(v, "delay max is below min".into()));
                }
                Fault::Delay(min, max)
            }
            "delay" => {
                let mut df = self.fields(v, "delay", &["min", "max"])?;
                let min = match df.take("min") {
                    Some(m) => self.duration(m, "min")?,
                    None => Duration::ZERO,
                };
                let max = match df.take("max") {
                    Some(m) => self.duration(m, "max")?,
                    None => min,
                };
                if max < min {
                    return Err(self.err(v, "delay max is below min".into()));
                }
                Fault::Delay(min, max)
            }
            "clock_drift" => {
                // {host: H, ppm: P}, or {H: P}.
                if let Some(&[(k, ppm)]) = self.doc.entries(v)
                    && self.keyed_by_host(&[(k, ppm)])
                {
                    let ppm_v = self.number(ppm, "ppm")?;
                    if ppm_v.abs() > 100_000.0 {
                        return Err(self.err(ppm, "ppm must be within ±100000".into()));
                    }
                    let fault = Fault::ClockDrift(self.host(k)?, ppm_v);
                    return Ok(vec![TimedFault { at, fault }]);
                }
                let mut cf = self.fields(v, "clock_drift", &["host", "ppm"])?;
                let host = cf
                    .take("host")
                    .ok_or_else(|| self.err(v, "clock_drift needs \"host\"".into()))?;
                let ppm = cf
                    .take("ppm")
                    .ok_or_else(|| self.err(v, "clock_drift needs \"ppm\"".into()))?;
                let ppm_v = self.number(ppm, "ppm")?;
                if ppm_v.abs() > 100_000.0 {
                    return Err(self.err(ppm, "ppm must be within ±100000".into()));
                }
                Fault::ClockDrift(self.host(host)?, ppm_v)
            }
            _ => return Err(self.err(id, format!("unknown fault {kind:?}"))),
        };
        Ok(vec![TimedFault { at, fault }])
    }

    /// A reload's `invalid_config`: a file (block string or mapping in place) that
    /// `cplb validate` must refuse; a valid one is an error, so a typo cannot turn a
    /// reload into a refused one unnoticed.
    fn invalid_config(&mut self, id: NodeId) -> Result<ReloadConfig, ScenarioError> {
        let text = if self.doc.entries(id).is_some() {
            self.mapping_text(id).0
        } else {
            self.text(id, "invalid_config (a configuration cplb validate refuses)")?
        };
        match cplb_core::config::load(&text, LoadOptions::default()) {
            Ok(_) => Err(self
                .err(id, "invalid_config is a valid configuration; give it as \"config\"".into())),
            Err(r) => {
                let error = r
                    .errors
                    .first()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .unwrap_or_default();
                Ok(ReloadConfig::Invalid { text, error })
            }
        }
    }

    /// Whether a one-entry mapping is keyed by a host name (`{ctl0: 500}`).
    fn keyed_by_host(&self, entries: &[(NodeId, NodeId)]) -> bool {
        entries.iter().all(|(k, _)| {
            self.doc.scalar(*k).is_some_and(|(n, _)| self.hosts.iter().any(|h| h.name == n))
        })
    }
}

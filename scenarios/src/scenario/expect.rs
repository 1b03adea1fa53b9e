//! The `expect` of a scenario file: what must hold of a run.

use cplb_core::config::scalar::{Plain, resolve};
use cplb_core::config::walk::Field;
use cplb_core::config::yaml::NodeId;
use cplb_core::vrrp::State;

use super::{Expectation, Parser, ScenarioError};

impl Parser<'_> {
    pub(super) fn expect(&mut self, id: NodeId) -> Result<Vec<Expectation>, ScenarioError> {
        let known = [
            "max_failover",
            "max_client_outage",
            "no_dual_master",
            "master_at",
            "final_master",
            "final_master_not",
            "real_servers_at",
            "clients_recover",
            "state_at",
            "no_transitions",
            "final_vip_holders",
        ];
        let f = self.fields(id, "expect", &known)?;
        let mut out = Vec::new();
        for Field { key, value: v, .. } in f.iter() {
            match key {
                "max_failover" => out.push(Expectation::MaxFailover(self.duration(v, key)?)),
                "max_client_outage" => {
                    out.push(Expectation::MaxClientOutage(self.duration(v, key)?))
                }
                "clients_recover" if self.boolean(v, key)? => out.push(Expectation::ClientsRecover),
                "clients_recover" => {}
                "no_dual_master" => {
                    // Anything but true (as YAML 1.1 reads it) asks for nothing.
                    if matches!(
                        self.doc.scalar(v).map(|(s, _)| resolve(s)),
                        Some(Plain::Bool(true))
                    ) {
                        out.push(Expectation::NoDualMaster);
                    }
                }
                "master_at" => {
                    for item in self.one_or_many(v) {
                        let mut mf =
                            self.fields(item, "master_at", &["time", "host", "instance"])?;
                        let (at, instance, host) = (
                            self.req_time(&mut mf, item)?,
                            self.instance(&mut mf)?,
                            self.req_host(&mut mf, item)?,
                        );
                        out.push(Expectation::MasterAt { at, instance, host });
                    }
                }
                "final_master" | "final_master_not" => {
                    for item in self.one_or_many(v) {
                        let (instance, host) = if self.doc.entries(item).is_some() {
                            let mut mf = self.fields(item, key, &["host", "instance"])?;
                            (self.instance(&mut mf)?, self.req_host(&mut mf, item)?)
                        } else {
                            (0, self.host(item)?)
                        };
                        out.push(if key == "final_master" {
                            Expectation::FinalMaster { instance, host }
                        } else {
                            Expectation::FinalMasterNot { instance, host }
                        });
                    }
                }
                "real_servers_at" => {
                    for item in self.one_or_many(v) {
                        let mut rf =
                            self.fields(item, "real_servers_at", &["time", "hosts", "instance"])?;
                        let hosts_id = rf.take("hosts").ok_or_else(|| {
                            self.err(item, "real_servers_at needs \"hosts\"".into())
                        })?;
                        let mut hosts = self.hosts_list(hosts_id)?;
                        hosts.sort_unstable();
                        out.push(Expectation::RealServersAt {
                            at: self.req_time(&mut rf, item)?,
                            instance: self.instance(&mut rf)?,
                            hosts,
                        });
                    }
                }
                "state_at" => {
                    for item in self.one_or_many(v) {
                        let mut sf =
                            self.fields(item, "state_at", &["time", "host", "instance", "state"])?;
                        let state_id = sf
                            .take("state")
                            .ok_or_else(|| self.err(item, "state_at needs \"state\"".into()))?;
                        let state = self.state(state_id)?;
                        out.push(Expectation::StateAt {
                            at: self.req_time(&mut sf, item)?,
                            instance: self.instance(&mut sf)?,
                            host: self.req_host(&mut sf, item)?,
                            state,
                        });
                    }
                }
                "no_transitions" => {
                    for item in self.one_or_many(v) {
                        if self.doc.entries(item).is_none() {
                            let since = self.duration(item, "no_transitions")?;
                            out.push(Expectation::NoTransitions {
                                since,
                                until: None,
                                host: None,
                                instance: None,
                            });
                            continue;
                        }
                        let mut nf = self.fields(
                            item,
                            "no_transitions",
                            &["since", "until", "host", "instance"],
                        )?;
                        let since = nf.take("since").ok_or_else(|| {
                            self.err(item, "no_transitions needs \"since\"".into())
                        })?;
                        let since = self.duration(since, "since")?;
                        let until = match nf.take("until") {
                            Some(u) => {
                                let until = self.duration(u, "until")?;
                                if until <= since {
                                    return Err(self.err(u, "until must be after since".into()));
                                }
                                Some(until)
                            }
                            None => None,
                        };
                        let host = nf.take("host").map(|h| self.host(h)).transpose()?;
                        let instance = match nf.take("instance") {
                            Some(_) => Some(self.instance(&mut nf)?),
                            None => None,
                        };
                        out.push(Expectation::NoTransitions { since, until, host, instance });
                    }
                }
                "final_vip_holders" => {
                    for item in self.one_or_many(v) {
                        let mut hf = self.fields(item, "final_vip_holders", &["vip", "hosts"])?;
                        let hosts_id = hf.take("hosts").ok_or_else(|| {
                            self.err(item, "final_vip_holders needs \"hosts\"".into())
                        })?;
                        let mut hosts = self.hosts_list(hosts_id)?;
                        hosts.sort_unstable();
                        let vip = match hf.take("vip") {
                            Some(v) => self.ip(v, "vip")?,
                            None => self.first_vip.ok_or_else(|| {
                                let why = "final_vip_holders needs \"vip\" (no VIP configured)";
                                self.err(item, why.into())
                            })?,
                        };
                        out.push(Expectation::FinalVipHolders { vip, hosts });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// A router state: `initialize`, `backup`, `master` or `fault`.
    fn state(&mut self, id: NodeId) -> Result<State, ScenarioError> {
        let text = self.text(id, "state")?;
        match text.to_ascii_lowercase().as_str() {
            "initialize" => Ok(State::Initialize),
            "backup" => Ok(State::Backup),
            "master" => Ok(State::Master),
            "fault" => Ok(State::Fault),
            _ => Err(self
                .err(id, format!("state {text:?}: expected initialize, backup, master or fault"))),
        }
    }
}

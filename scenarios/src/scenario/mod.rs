//! Scenario files: a cluster, its CPLB configuration, traffic, a fault schedule and what
//! must hold. The format is documented in docs/scenarios.md.

use std::net::IpAddr;
use std::time::Duration;

use cplb_core::config::scalar;
use cplb_core::config::walk::{Expected, Fields, Format, Problem, Scalars, Walker};
use cplb_core::config::yaml::{self, Document, NodeId};
use cplb_core::config::{LoadOptions, parse_go_duration};
use cplb_core::vrrp::State;
use cplb_sim::{HostSpec, Role, SimSpec, TrafficSpec};

mod expect;
mod faults;

/// A parsed scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// What to simulate.
    pub spec: SimSpec,
    /// One line on what it shows.
    pub description: String,
    /// The default seed.
    pub seed: u64,
    /// What must hold.
    pub expect: Vec<Expectation>,
}

/// Something a scenario requires. `instance` is the VRRP instance's index, `host` a host's.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Expectation {
    /// Every failover completes (the VIP answers on the new master) within this time of
    /// the fault before it.
    MaxFailover(Duration),
    /// No client sees failures for longer than this.
    MaxClientOutage(Duration),
    /// Never two masters of an instance that can hear each other.
    NoDualMaster,
    /// At a time, this host is a master of the instance (one per partition).
    MasterAt { at: Duration, instance: usize, host: usize },
    /// At the end, this host is the only master.
    FinalMaster { instance: usize, host: usize },
    /// At the end, this host is not master.
    FinalMasterNot { instance: usize, host: usize },
    /// At a time, the master's data plane lists exactly these API servers.
    RealServersAt { at: Duration, instance: usize, hosts: Vec<usize> },
    /// After the last fault, every client's connections succeed again within the bound the
    /// configuration implies (and keep succeeding).
    ClientsRecover,
    /// At a time, the host's router for the instance is in this state (`Initialize` also
    /// while its daemon does not run: host off, daemon killed or stopped).
    StateAt { at: Duration, instance: usize, host: usize, state: State },
    /// No router state change (of this host and instance; of any when `None`) from `since`
    /// on (included) until `until` (excluded; the end when `None`).
    NoTransitions {
        since: Duration,
        until: Option<Duration>,
        host: Option<usize>,
        instance: Option<usize>,
    },
    /// At the end, exactly these hosts hold the VIP on eth0 (`ip addr`).
    FinalVipHolders { vip: IpAddr, hosts: Vec<usize> },
}

/// A scenario file that cannot be used: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a scenario file's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let err = |line: usize, message: String| ScenarioError { file: file.to_owned(), line, message };
    let docs = yaml::parse(text)
        .map_err(|e| err(e.mark.line, format!("not valid YAML: {}", e.message)))?;
    let doc = docs
        .into_iter()
        .find(|d| d.root().is_some())
        .ok_or_else(|| err(1, "empty scenario".into()))?;
    let mut p = Parser {
        walker: Walker::new(&doc, SCENARIO),
        doc: &doc,
        file,
        text,
        hosts: Vec::new(),
        first_vip: None,
    };
    p.scenario()
}

/// Scenario files are read as YAML says, and name a value in messages by what it is
/// ("duration", "a host"): that is the path the parser gives the walker.
const SCENARIO: Format = Format { scalars: Scalars::Yaml, wording };

fn wording(what: &str, problem: &Problem<'_>) -> String {
    match *problem {
        Problem::Value { expected, .. } => {
            let wanted = match expected {
                Expected::Mapping => "a mapping",
                Expected::List => "a list",
                Expected::Text => "text",
                Expected::Integer | Expected::Number => "a number",
                Expected::Boolean => "true or false",
            };
            format!("{what} must be {wanted}")
        }
        Problem::NotOneOf { text, names, .. } => {
            format!("{what} {text:?}: expected one of {}", names.join(", "))
        }
        Problem::KeyNotAName => "keys must be names".into(),
        Problem::DuplicateKey { key } => format!("duplicate key {key:?} in {what}"),
        Problem::UnknownKey { key, known, .. } => {
            format!("unknown key {key:?} in {what}; expected one of: {}", known.join(", "))
        }
    }
}

/// Reads a scenario document; the format's parts (faults, expectations) in modules of their
/// own.
struct Parser<'a> {
    walker: Walker<'a>,
    doc: &'a Document,
    file: &'a str,
    text: &'a str,
    hosts: Vec<HostSpec>,
    /// The first VIP of the scenario's configuration, once read (the default `vip`).
    first_vip: Option<IpAddr>,
}

impl<'a> Parser<'a> {
    fn err(&self, id: NodeId, message: String) -> ScenarioError {
        ScenarioError { file: self.file.to_owned(), line: self.doc.mark(id).line, message }
    }

    /// What the walker read, or the first error it found: the scenario stops there.
    fn read<T>(
        &mut self,
        read: impl FnOnce(&mut Walker<'a>) -> Option<T>,
    ) -> Result<T, ScenarioError> {
        let value = read(&mut self.walker);
        match (value, self.walker.first_error()) {
            (Some(value), None) => Ok(value),
            // The walker reports whenever it reads nothing, so there is an error.
            (_, e) => Err(ScenarioError {
                file: self.file.to_owned(),
                line: e.map_or(1, |e| e.mark.line),
                message: e.map(|e| e.message.clone()).unwrap_or_default(),
            }),
        }
    }

    /// A mapping's fields; keys it does not take are errors.
    fn fields(&mut self, id: NodeId, what: &str, known: &[&str]) -> Result<Fields, ScenarioError> {
        self.read(|w| {
            let fields = w.mapping(id, what)?;
            w.unknown_fields(&fields, known);
            Some(fields)
        })
    }

    fn text(&mut self, id: NodeId, what: &str) -> Result<String, ScenarioError> {
        self.read(|w| w.text(id, what))
    }

    fn number(&mut self, id: NodeId, what: &str) -> Result<f64, ScenarioError> {
        self.read(|w| w.number(id, what))
    }

    fn boolean(&mut self, id: NodeId, what: &str) -> Result<bool, ScenarioError> {
        self.read(|w| w.boolean(id, what))
    }

    fn list(&mut self, id: NodeId, what: &str) -> Result<&'a [NodeId], ScenarioError> {
        self.read(|w| w.list(id, what))
    }

    /// Seconds as a number (`12.5`) or a Go duration (`"1m30s"`, `500ms`).
    fn duration(&self, id: NodeId, what: &str) -> Result<Duration, ScenarioError> {
        let Some((raw, plain)) = self.doc.scalar(id) else {
            return Err(self.err(id, format!("{what} must be a time")));
        };
        if plain && let Some(n) = scalar::number(raw) {
            return if n < 0.0 {
                Err(self.err(id, format!("{what} must not be negative")))
            } else {
                // More seconds than a Duration holds (`1e30`) is refused, not a panic.
                Duration::try_from_secs_f64(n)
                    .map_err(|_| self.err(id, format!("{what} is too long")))
            };
        }
        match parse_go_duration(raw) {
            Ok(ns) if ns >= 0 => Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))),
            Ok(_) => Err(self.err(id, format!("{what} must not be negative"))),
            Err(e) => Err(self.err(id, format!("{what}: {e}"))),
        }
    }

    /// A ratio: `0.3` or `"30%"`.
    fn ratio(&mut self, id: NodeId, what: &str) -> Result<f64, ScenarioError> {
        let percent = self
            .doc
            .scalar(id)
            .and_then(|(s, _)| s.trim().strip_suffix('%')?.trim().parse::<f64>().ok());
        let r = match percent {
            Some(p) => p / 100.0,
            None => self.number(id, what)?,
        };
        if (0.0..=1.0).contains(&r) {
            Ok(r)
        } else {
            Err(self.err(id, format!("{what} must be between 0 and 1")))
        }
    }

    fn host(&mut self, id: NodeId) -> Result<usize, ScenarioError> {
        let name = self.text(id, "a host")?;
        self.hosts.iter().position(|h| h.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            self.err(id, format!("unknown host {name:?}; hosts are {}", names.join(", ")))
        })
    }

    fn hosts_list(&mut self, id: NodeId) -> Result<Vec<usize>, ScenarioError> {
        self.list(id, "a host list")?.iter().map(|&h| self.host(h)).collect()
    }

    fn scenario(&mut self) -> Result<Scenario, ScenarioError> {
        let root = self.doc.root().unwrap_or_default();
        let known = [
            "name",
            "description",
            "duration",
            "seed",
            "hosts",
            "config",
            "vrrp",
            "traffic",
            "faults",
            "expect",
        ];
        let mut f = self.fields(root, "the scenario", &known)?;
        let missing = |p: &Self, key: &str| p.err(root, format!("missing {key:?}"));
        let name_id = f.take("name").ok_or_else(|| missing(self, "name"))?;
        let name = self.text(name_id, "name")?;
        let description = match f.take("description") {
            Some(d) => self.text(d, "description")?,
            None => String::new(),
        };
        let duration_id = f.take("duration").ok_or_else(|| missing(self, "duration"))?;
        let duration = self.duration(duration_id, "duration")?;
        let seed = match f.take("seed") {
            Some(s) => self.number(s, "seed")? as u64,
            None => 1,
        };
        let hosts_id = f.take("hosts").ok_or_else(|| missing(self, "hosts"))?;
        for &h in self.list(hosts_id, "hosts")? {
            let host = self.host_spec(h)?;
            self.hosts.push(host);
        }
        let config_id = f.take("config").ok_or_else(|| missing(self, "config"))?;
        let config = self.config(config_id)?;
        self.first_vip = config
            .enabled_keepalived()
            .and_then(|k| k.vrrp_instances.first())
            .and_then(|i| i.virtual_ips.first())
            .map(|c| c.addr);
        let traffic = match f.take("traffic") {
            Some(t) => self.traffic(t)?,
            None => Vec::new(),
        };
        let mut faults = Vec::new();
        if let Some(list) = f.take("faults") {
            for &x in self.list(list, "faults")? {
                faults.extend(self.fault(x)?);
            }
        }
        let expect = match f.take("expect") {
            Some(e) => self.expect(e)?,
            None => Vec::new(),
        };
        let vrrp = match f.take("vrrp") {
            Some(v) => self.vrrp(v)?,
            None => cplb_sim::VrrpTuning::default(),
        };
        let spec =
            SimSpec { vrrp, name, duration, hosts: self.hosts.clone(), config, traffic, faults };
        Ok(Scenario { spec, description, seed, expect })
    }

    /// One entry of `hosts`.
    fn host_spec(&mut self, h: NodeId) -> Result<HostSpec, ScenarioError> {
        let known = ["name", "role", "address", "up_at", "config", "priority", "preempt"];
        let mut hf = self.fields(h, "a host", &known)?;
        let needs = |p: &Self, key: &str| p.err(h, format!("a host needs {key:?}"));
        let name_id = hf.take("name").ok_or_else(|| needs(self, "name"))?;
        let name = self.text(name_id, "name")?;
        if self.hosts.iter().any(|o| o.name == name) {
            return Err(self.err(h, format!("host {name:?} is defined twice")));
        }
        let role_id = hf.take("role").ok_or_else(|| needs(self, "role"))?;
        let role = match self.text(role_id, "role")?.as_str() {
            "controller" => Role::Controller,
            "worker" => Role::Worker,
            "client" => Role::Client,
            other => {
                return Err(self.err(
                    role_id,
                    format!("role {other:?}: expected controller, worker or client"),
                ));
            }
        };
        let addr_id = hf.take("address").ok_or_else(|| needs(self, "address"))?;
        let text = self.text(addr_id, "address")?;
        let (addr, prefix) =
            text.split_once('/').map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
        let address: IpAddr = addr
            .parse()
            .map_err(|_| self.err(addr_id, format!("{text:?} is not an IP address")))?;
        let prefix_len = match prefix {
            Some(p) => {
                p.parse().map_err(|_| self.err(addr_id, format!("bad prefix in {text:?}")))?
            }
            None if address.is_ipv4() => 24,
            None => 64,
        };
        let up_at = match hf.take("up_at") {
            Some(t) => self.duration(t, "up_at")?,
            None => Duration::ZERO,
        };
        let config = hf.take("config").map(|c| self.config(c)).transpose()?;
        let priority = match hf.take("priority") {
            Some(p) => {
                let v = self.number(p, "priority")?;
                if !(1.0..=255.0).contains(&v) {
                    return Err(self.err(p, "priority must be 1 to 255".into()));
                }
                Some(v as u8)
            }
            None => None,
        };
        let preempt = hf.take("preempt").map(|p| self.boolean(p, "preempt")).transpose()?;
        Ok(HostSpec {
            vrrp: cplb_sim::HostVrrp { priority, preempt },
            name,
            role,
            address,
            prefix_len,
            up_at,
            config,
        })
    }

    /// The embedded k0s.yaml, k0sctl.yaml or `spec:` fragment, read like `cplb validate`:
    /// either a block string (`config: |`) or written in place as a mapping.
    fn config(&mut self, id: NodeId) -> Result<cplb_core::config::ClusterConfig, ScenarioError> {
        // The text and the scenario line its first line stands on.
        let (text, first_line) = if self.doc.entries(id).is_some() {
            self.mapping_text(id)
        } else {
            let what =
                "config (a k0s.yaml, k0sctl.yaml or spec: fragment, as a mapping or a block)";
            (self.text(id, what)?, self.doc.mark(id).line)
        };
        cplb_core::config::load(&text, LoadOptions::default()).map(|l| l.config).map_err(|r| {
            let (line, message) = r
                .errors
                .first()
                .map(|e| (first_line + e.mark.line - 1, e.to_string()))
                .unwrap_or((first_line, String::new()));
            ScenarioError {
                file: self.file.to_owned(),
                line,
                message: format!("config: {message}"),
            }
        })
    }

    /// The source text of a block mapping: its lines from the first key on, while they are
    /// indented at least as far, dedented.
    fn mapping_text(&self, id: NodeId) -> (String, usize) {
        let mark = self.doc.mark(id);
        let indent = mark.col.saturating_sub(1);
        let mut out = String::new();
        for line in self.text.lines().skip(mark.line.saturating_sub(1)) {
            let body = line.trim_start();
            let own_indent = line.len() - body.len();
            if !out.is_empty() && !body.is_empty() && !body.starts_with('#') && own_indent < indent
            {
                break;
            }
            let cut = if out.is_empty() {
                line.get(indent..).unwrap_or(body)
            } else {
                line.get(indent..).unwrap_or("")
            };
            out.push_str(cut);
            out.push('\n');
        }
        (out, mark.line)
    }

    /// VRRP settings beyond k0s's configuration: `{version: 2|3, advert_interval: TIME}`.
    fn vrrp(&mut self, id: NodeId) -> Result<cplb_sim::VrrpTuning, ScenarioError> {
        let mut f = self.fields(id, "vrrp", &["version", "advert_interval"])?;
        let v3 = match f.take("version") {
            Some(v) => match self.number(v, "version")? as u8 {
                2 => false,
                3 => true,
                other => return Err(self.err(v, format!("VRRP version {other}: 2 or 3"))),
            },
            None => false,
        };
        let advert_interval_cs = match f.take("advert_interval") {
            Some(a) => {
                let d = self.duration(a, "advert_interval")?;
                let cs = d.as_millis() / 10;
                if !(1..=4095).contains(&cs) || d.as_millis() % 10 != 0 {
                    return Err(self.err(
                        a,
                        "advert_interval must be whole centiseconds from 10ms to 40.95s".into(),
                    ));
                }
                Some(cs as u16)
            }
            None => None,
        };
        Ok(cplb_sim::VrrpTuning { v3, advert_interval_cs })
    }

    fn traffic(&mut self, id: NodeId) -> Result<Vec<TrafficSpec>, ScenarioError> {
        let mut out = Vec::new();
        for &t in self.list(id, "traffic")? {
            let mut tf =
                self.fields(t, "a traffic entry", &["from", "rate", "vip", "start", "watch"])?;
            let from_id =
                tf.take("from").ok_or_else(|| self.err(t, "traffic needs \"from\"".into()))?;
            // One host, or a list of hosts that each connect at the rate.
            let sources = if self.doc.items(from_id).is_some() {
                self.hosts_list(from_id)?
            } else {
                vec![self.host(from_id)?]
            };
            let rate = match tf.take("rate") {
                Some(r) => self.number(r, "rate")?,
                None => 10.0,
            };
            if !(rate > 0.0 && rate <= 10_000.0) {
                return Err(self
                    .err(t, format!("rate {rate} must be in (0, 10000] connections per second")));
            }
            let vip = tf.take("vip").map(|v| self.ip(v, "vip")).transpose()?;
            let start = match tf.take("start") {
                Some(s) => self.duration(s, "start")?,
                None => Duration::ZERO,
            };
            let watch = match tf.take("watch") {
                Some(w) => self.boolean(w, "watch")?,
                None => false,
            };
            out.extend(sources.into_iter().map(|from| TrafficSpec {
                from,
                rate,
                vip,
                start,
                watch,
            }));
        }
        Ok(out)
    }

    /// An IP address (`vip`).
    fn ip(&mut self, id: NodeId, what: &str) -> Result<IpAddr, ScenarioError> {
        self.text(id, what)?
            .parse()
            .map_err(|_| self.err(id, format!("{what} must be an IP address")))
    }

    fn one_or_many(&self, id: NodeId) -> Vec<NodeId> {
        self.doc.items(id).map_or_else(|| vec![id], <[NodeId]>::to_vec)
    }

    fn req_time(&mut self, f: &mut Fields, at: NodeId) -> Result<Duration, ScenarioError> {
        let t = f.take("time").ok_or_else(|| self.err(at, "needs \"time\"".into()))?;
        self.duration(t, "time")
    }

    fn req_host(&mut self, f: &mut Fields, at: NodeId) -> Result<usize, ScenarioError> {
        let h = f.take("host").ok_or_else(|| self.err(at, "needs \"host\"".into()))?;
        self.host(h)
    }

    fn instance(&mut self, f: &mut Fields) -> Result<usize, ScenarioError> {
        match f.take("instance") {
            Some(i) => Ok(self.number(i, "instance")? as usize),
            None => Ok(0),
        }
    }
}

//! `cplb lab bench`: cplbd against what a cluster operator would otherwise deploy, in one
//! run, on the very same namespaces, because these machines are shared and noisy and only a
//! ratio measured side by side means anything.
//!
//! The topology is the lab's (the seed's three controllers and a client on one bridge,
//! prefix `cplb-bench-`). The contenders run in turn on it:
//! - VRRP: keepalived with the configuration k0s generates, and cplbd with the same k0s.yaml
//!   ([`failover`]);
//! - the data plane: HAProxy as kubeadm's HA guide configures it, cplbd's userspace proxy,
//!   cplbd's nftables balancing and a direct connection to one API server ([`load`]).
//!
//! Every measure is a row of median / min / max over its reps, the ratio to the reference
//! contender and, for failovers, the protocol's bound.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::files::private_dir;
use crate::layout::{CLIENT, CONTROLLERS, GATEWAY, VIP};
use crate::processes::Programs;
use crate::stats::median_min_max;
use crate::topology::{self, HostSpec, Topology};

mod contender;
mod failover;
mod load;

pub use self::load::serve_backend;

/// Namespace prefix of the bench.
const PREFIX: &str = "cplb-bench-";

/// Every measure, in the order the table shows them.
const MEASURES: [&str; 10] = [
    "crash_k0s",
    "crash_v3_100ms",
    "graceful",
    "first_election",
    "conn_rate",
    "latency_p50",
    "latency_p99",
    "bulk",
    "rss",
    "idle_cpu",
];

/// The four failover measures (`--only failover`).
const FAILOVER: [&str; 4] = ["crash_k0s", "crash_v3_100ms", "graceful", "first_election"];

/// What `cplb lab bench` was asked for.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Reps of each failover measure (the data plane's timed measures run `min(reps, 3)`).
    pub reps: u32,
    /// The measures to run (all when empty).
    pub only: Vec<String>,
    /// Seed of the crash phases (every contender gets the same sequence).
    pub seed: u64,
    /// How long one load rep runs.
    pub load_time: Duration,
    /// Bytes of one bulk transfer.
    pub bulk_bytes: u64,
    /// How long the idle CPU is measured (then scaled to an hour).
    pub idle_time: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            reps: 10,
            only: Vec::new(),
            seed: 1,
            load_time: Duration::from_secs(5),
            bulk_bytes: 1 << 30,
            idle_time: Duration::from_secs(60),
        }
    }
}

impl BenchOptions {
    /// Checks `--only`'s names; the measures to run, in table order.
    pub fn measures(&self) -> Result<Vec<&'static str>, String> {
        if self.only.is_empty() {
            return Ok(MEASURES.to_vec());
        }
        let mut wanted = Vec::new();
        for name in &self.only {
            match name.as_str() {
                "failover" => wanted.extend(FAILOVER),
                m => match MEASURES.iter().find(|x| **x == m) {
                    Some(x) => wanted.push(*x),
                    None => {
                        return Err(format!(
                            "--only {m}: not a measure (one of failover, {})",
                            MEASURES.join(", ")
                        ));
                    }
                },
            }
        }
        Ok(MEASURES.iter().copied().filter(|m| wanted.contains(m)).collect())
    }

    fn wants(&self, measure: &str) -> bool {
        self.measures().is_ok_and(|m| m.contains(&measure))
    }
}

/// One rep's value: a failover's two times, or a number.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
enum Rep {
    /// A failover.
    Failover {
        /// Seconds from the fault to the client's first answer: the TCP handshake of the
        /// first connection through the VIP that is then answered in full, so that the
        /// figure is the takeover's, not the data plane's (cplbd's proxy adds a hop that
        /// keepalived alone, without k0s's proxy, does not).
        from_fault_s: f64,
        /// Seconds from the old master's last advert (seen on the LAN) to that answer;
        /// `None` for a first election, which has no old master.
        from_last_advert_s: Option<f64>,
        /// Seconds from the fault to the end of that connection's HTTPS answer.
        answered_from_fault_s: f64,
    },
    /// Anything else, in the row's unit.
    Value(f64),
}

impl Rep {
    /// The number the row's statistics are over (a failover's time from the fault).
    fn value(&self) -> f64 {
        match self {
            Self::Failover { from_fault_s, .. } => *from_fault_s,
            Self::Value(v) => *v,
        }
    }
}

/// One measure of one contender.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row {
    /// One of [`MEASURES`].
    measure: &'static str,
    /// `cplbd`, `keepalived`, `cplbd-proxy`, `cplbd-nftables`, `haproxy` or `direct`.
    contender: &'static str,
    /// `s`, `conn/s`, `ms`, `MB/s`, `MiB`, `cpu_s/h`.
    unit: &'static str,
    /// Every rep.
    reps: Vec<Rep>,
    /// Over the reps (a failover's from the fault).
    median: f64,
    /// Smallest.
    min: f64,
    /// Largest.
    max: f64,
    /// The protocol's bound (failovers), else `None`.
    bound: Option<f64>,
    /// What answered behind the data plane: `tcp` (answers at once) or `https` (the
    /// stand-in API servers); `None` where it does not apply.
    backend: Option<&'static str>,
    /// `start` or `load` for resident memory; `None` elsewhere.
    when: Option<&'static str>,
}

impl Row {
    fn new(
        measure: &'static str,
        contender: &'static str,
        unit: &'static str,
        reps: Vec<Rep>,
    ) -> Self {
        let values: Vec<f64> = reps.iter().map(Rep::value).collect();
        let (median, min, max) = median_min_max(&values).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
        Self {
            measure,
            contender,
            unit,
            reps,
            median,
            min,
            max,
            bound: None,
            backend: None,
            when: None,
        }
    }

    fn bound(mut self, bound: f64) -> Self {
        self.bound = Some(bound);
        self
    }

    fn backend(mut self, backend: &'static str) -> Self {
        self.backend = Some(backend);
        self
    }

    fn when(mut self, when: &'static str) -> Self {
        self.when = Some(when);
        self
    }
}

/// The contender a row is compared with: keepalived for cplbd, HAProxy for cplbd's proxy,
/// a direct connection for the nftables data plane and for HAProxy.
fn reference(contender: &str) -> Option<&'static str> {
    match contender {
        "cplbd" => Some("keepalived"),
        "cplbd-proxy" => Some("haproxy"),
        "cplbd-nftables" | "haproxy" => Some("direct"),
        _ => None,
    }
}

/// The ratio of `row`'s median to its reference's in the same run (same measure, backend
/// and phase).
fn ratio(rows: &[Row], row: &Row) -> Option<(f64, &'static str)> {
    let reference = reference(row.contender)?;
    let other = rows.iter().find(|r| {
        r.measure == row.measure
            && r.contender == reference
            && r.backend == row.backend
            && r.when == row.when
    })?;
    (other.median > 0.0).then(|| (row.median / other.median, reference))
}

/// The result of a bench run.
#[derive(Debug, Clone, Default)]
pub struct Bench {
    /// Every row.
    rows: Vec<Row>,
}

impl Bench {
    /// `{"measures": [ROW, ...]}`, each row with its ratio added.
    pub fn json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(obj) = v.as_object_mut()
                    && let Some((x, of)) = ratio(&self.rows, r)
                {
                    obj.insert("ratio".into(), x.into());
                    obj.insert("ratio_to".into(), of.into());
                }
                v
            })
            .collect();
        serde_json::json!({ "measures": rows })
    }

    /// The table: median / min / max per measure and contender, the ratio to the reference
    /// and the bound.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| measure | contender | unit | median | min | max | ratio | bound |\n|---|---|---|---:|---:|---:|---|---:|\n",
        );
        for r in &self.rows {
            let mut measure = r.measure.to_owned();
            if let Some(b) = r.backend {
                measure += &format!(" ({b})");
            }
            if let Some(w) = r.when {
                measure += &format!(" ({w})");
            }
            let ratio =
                ratio(&self.rows, r).map_or_else(String::new, |(x, of)| format!("{x:.2} × {of}"));
            let bound = r.bound.map_or_else(String::new, |b| format!("{b:.3}"));
            let _ = writeln!(
                out,
                "| {measure} | {} | {} | {} | {} | {} | {ratio} | {bound} |",
                r.contender,
                r.unit,
                number(r.median),
                number(r.min),
                number(r.max)
            );
        }
        out
    }
}

/// Three significant digits or so, as a table wants them.
fn number(x: f64) -> String {
    if !x.is_finite() {
        "-".to_owned()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The bench's hosts: the lab's controllers and its client.
fn hosts() -> Vec<HostSpec> {
    CONTROLLERS
        .iter()
        .chain(std::iter::once(&CLIENT))
        .map(|(n, a)| HostSpec { name: (*n).to_owned(), address: format!("{a}/24") })
        .collect()
}

/// Where a bench run keeps its configurations and logs.
fn work_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("cplb-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    private_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `cplb lab bench`: builds the topology, runs every contender of the measures asked for
/// in turn, removes everything. `progress` gets a line per rep.
pub fn run(
    programs: &Programs,
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Bench, String> {
    if !topology::is_root() {
        return Err("cplb lab bench needs root (it creates network namespaces)".into());
    }
    let measures = options.measures()?;
    for tool in ["keepalived", "haproxy"] {
        let needed = match tool {
            "keepalived" => {
                measures.iter().any(|m| FAILOVER.contains(m) || *m == "rss" || *m == "idle_cpu")
            }
            _ => measures.iter().any(|m| !FAILOVER.contains(m)),
        };
        if needed && which(tool).is_none() {
            return Err(format!(
                "{tool} is not installed (apt-get install {tool}; the test command installs it)"
            ));
        }
    }
    topology::remove_prefix(PREFIX);
    let dir = work_dir()?;
    let topo = Topology::build(PREFIX, hosts(), false, Some(GATEWAY)).map_err(|e| e.to_string())?;
    let env = Env { topo, programs: programs.clone(), dir: dir.clone() };
    let mut bench = Bench::default();
    let result = (|| {
        failover::run(&env, options, &mut bench, progress)?;
        load::run(&env, options, &mut bench, progress)
    })();
    env.stop_everything();
    drop(env);
    match result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
            Ok(bench)
        }
        Err(e) => Err(format!("{e} (logs kept in {})", dir.display())),
    }
}

/// Writes `bench.json` and `bench.md` into `dir`.
pub fn write_out(bench: &Bench, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, body: String| {
        std::fs::write(dir.join(name), body)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    write("bench.json", format!("{:#}\n", bench.json()))?;
    write("bench.md", bench.markdown())
}

/// The topology and what runs on it.
struct Env {
    topo: Topology,
    programs: Programs,
    dir: PathBuf,
}

impl Env {
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn address(name: &str) -> &'static str {
        CONTROLLERS
            .iter()
            .chain(std::iter::once(&CLIENT))
            .find(|(n, _)| *n == name)
            .map_or("", |(_, a)| a)
    }

    /// Everything in every controller killed, the VIP removed wherever it is left.
    fn stop_everything(&self) {
        for (name, _) in CONTROLLERS {
            self.topo.kill_all(name, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(200));
        for (name, _) in CONTROLLERS {
            let _ = self.topo.set_link(name, true);
            let _ = self.topo.ip(name, &["addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
            let _ = self.topo.exec(name, "nft", &["delete", "table", "ip", "cplb"]);
        }
    }
}

/// The path of `program` on `PATH` (or in /usr/sbin, where Debian puts daemons).
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_takes_measure_names_and_failover() {
        let o = BenchOptions { only: vec!["failover".into(), "bulk".into()], ..Default::default() };
        assert_eq!(o.measures().expect("valid"), [&FAILOVER[..], &["bulk"]].concat());
        let bad = BenchOptions { only: vec!["speed".into()], ..Default::default() };
        let e = bad.measures().expect_err("refused");
        assert!(e.contains("speed") && e.contains("conn_rate"), "{e}");
        assert_eq!(BenchOptions::default().measures().expect("all").len(), MEASURES.len());
    }

    #[test]
    fn rows_carry_their_statistics_ratio_and_json_shape() {
        let f = |s| Rep::Failover {
            from_fault_s: s,
            from_last_advert_s: Some(s + 0.5),
            answered_from_fault_s: s + 0.001,
        };
        let rows = vec![
            Row::new("crash_k0s", "cplbd", "s", vec![f(2.0), f(3.0), f(2.5)]).bound(3.219),
            Row::new("crash_k0s", "keepalived", "s", vec![f(2.5), f(5.0), f(3.0)]).bound(3.219),
            Row::new("bulk", "cplbd-proxy", "MB/s", vec![Rep::Value(900.0)]),
        ];
        assert_eq!((rows[0].median, rows[0].min, rows[0].max), (2.5, 2.0, 3.0));
        let (x, of) = ratio(&rows, &rows[0]).expect("a reference");
        assert!((x - 2.5 / 3.0).abs() < 1e-9 && of == "keepalived");
        assert!(ratio(&rows, &rows[2]).is_none(), "no haproxy row, no ratio");
        let json = Bench { rows }.json();
        let row = &json["measures"][0];
        assert_eq!(row["measure"], "crash_k0s");
        assert_eq!(row["contender"], "cplbd");
        assert_eq!(row["unit"], "s");
        assert_eq!(row["bound"], 3.219);
        assert_eq!(row["reps"][0]["from_fault_s"], 2.0);
        assert_eq!(row["reps"][0]["from_last_advert_s"], 2.5);
        assert_eq!(json["measures"][2]["reps"][0], 900.0);
        assert!(json["measures"][2]["bound"].is_null());
    }
}

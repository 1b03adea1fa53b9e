//! The contenders' processes on the bench's controllers: how each is started (with the
//! configuration a cluster operator would give it), stopped, and what its processes cost
//! in memory and CPU.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Env;
use crate::files::write_private;
use crate::layout::{API_PORT, CONFIG, CONFIG_IPVS, CONTROLLERS, VIP};

/// The port HAProxy's frontend listens on (kubeadm's guide: `APISERVER_DEST_PORT`; the
/// API servers hold 6443 on every address of the controller).
pub(super) const HAPROXY_PORT: u16 = 8443;

/// The VRRP settings a failover run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timers {
    /// k0s's: VRRPv2, PASS, advert 1 s.
    K0s,
    /// VRRPv3 with 100 ms adverts (no authentication in VRRPv3).
    V3Fast,
}

impl Timers {
    /// The advertisement interval.
    pub(super) fn advert(self) -> Duration {
        match self {
            Self::K0s => Duration::from_secs(1),
            Self::V3Fast => Duration::from_millis(100),
        }
    }

    /// Master_Down_Interval at priority 200: 3 × interval + Skew_Time.
    pub(super) fn master_down(self) -> f64 {
        3.0 * self.advert().as_secs_f64() + self.skew()
    }

    /// Skew_Time at priority 200: (256 − 200) / 256 × interval (RFC 9568; VRRPv2's is in
    /// seconds, the same at 1 s).
    pub(super) fn skew(self) -> f64 {
        56.0 / 256.0 * self.advert().as_secs_f64()
    }
}

/// Which VRRP implementation a failover run is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vrrp {
    Cplbd,
    Keepalived,
}

impl Vrrp {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Cplbd => "cplbd",
            Self::Keepalived => "keepalived",
        }
    }

    /// The process names that make up the contender.
    pub(super) fn comm(self) -> &'static str {
        self.name()
    }
}

/// How cplbd balances in a data-plane run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plane {
    /// k0s's default: the userspace proxy behind an nftables redirect.
    Proxy,
    /// `virtualServers` on a kernel without IPVS: nftables NAT balancing.
    Nftables,
}

/// The keepalived configuration k0s's template renders for the lab's one instance (see
/// docs/k0s-cplb.md, section 2.1), or its VRRPv3 100 ms variant.
pub(super) fn keepalived_conf(timers: Timers) -> String {
    let (global, advert, auth) = match timers {
        Timers::K0s => (
            "",
            "1",
            "    authentication {\n        auth_type PASS\n        auth_pass Example\n    }\n",
        ),
        Timers::V3Fast => ("global_defs {\n    vrrp_version 3\n}\n", "0.1", ""),
    };
    format!(
        "{global}vrrp_instance k0s-vip-0 {{\n    state BACKUP\n    interface eth0\n    virtual_router_id 51\n    priority 200\n    advert_int {advert}\n{auth}    virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n"
    )
}

/// HAProxy as kubeadm's HA guide configures it: a TCP frontend, round robin over the API
/// servers with health checks (`/healthz` over TLS for API servers, a TCP connect for the
/// plain backends). `nbthread` is left to HAProxy (one per CPU).
pub(super) fn haproxy_conf(https_check: bool) -> String {
    let check = if https_check {
        "    option httpchk\n    http-check connect ssl\n    http-check send meth GET uri /healthz\n    http-check expect status 200\n"
    } else {
        ""
    };
    let verify = if https_check { " verify none" } else { "" };
    let servers: String = CONTROLLERS
        .iter()
        .map(|(n, a)| format!("    server {n} {a}:{API_PORT} check{verify}\n"))
        .collect();
    format!(
        "global\n    maxconn 8000\n\ndefaults\n    mode tcp\n    retries 1\n    option redispatch\n    timeout connect 5s\n    timeout client 35s\n    timeout server 35s\n    timeout check 10s\n\nfrontend apiserver\n    bind {VIP}:{HAPROXY_PORT}\n    mode tcp\n    default_backend apiserverbackend\n\nbackend apiserverbackend\n{check}    mode tcp\n    balance roundrobin\n{servers}"
    )
}

impl Env {
    /// The stand-in API server (HTTPS, `/healthz`) on every address of `name`.
    pub(super) fn start_apiserver(&self, name: &str) -> Result<Child, String> {
        let listen = format!("0.0.0.0:{API_PORT}");
        let cplb = self.programs.cplb.to_string_lossy().into_owned();
        self.topo
            .spawn(
                name,
                &cplb,
                &["lab", "apiserver", "--name", name, "--listen", &listen],
                &self.log(name),
            )
            .map_err(|e| format!("starting the API server of {name}: {e}"))
    }

    /// The plain backend (answers at once; see `load::serve_backend`) on every address.
    pub(super) fn start_backend(&self, name: &str) -> Result<Child, String> {
        let listen = format!("0.0.0.0:{API_PORT}");
        let cplb = self.programs.cplb.to_string_lossy().into_owned();
        self.topo
            .spawn(name, &cplb, &["lab", "backend", "--listen", &listen], &self.log(name))
            .map_err(|e| format!("starting the backend of {name}: {e}"))
    }

    /// cplbd with the lab's k0s.yaml (`ipvs`: with its virtual server) and `extra` flags.
    pub(super) fn start_cplbd(
        &self,
        name: &str,
        ipvs: bool,
        extra: &[&str],
    ) -> Result<Child, String> {
        let config = self.dir.join(if ipvs { "k0s-ipvs.yaml" } else { "k0s.yaml" });
        if !config.exists() {
            write_private(&config, if ipvs { CONFIG_IPVS } else { CONFIG })
                .map_err(|e| format!("writing {}: {e}", config.display()))?;
        }
        let servers: Vec<&str> = CONTROLLERS.iter().map(|(_, a)| *a).collect();
        let sock = self.dir.join(format!("{name}.sock"));
        let state = self.dir.join(format!("state-{name}"));
        let mut args: Vec<String> = [
            "--config",
            &config.to_string_lossy(),
            "--real-servers",
            &servers.join(","),
            "--status-socket",
            &sock.to_string_lossy(),
            "--state-dir",
            &state.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cplbd = self.programs.cplbd.to_string_lossy().into_owned();
        self.topo
            .spawn(name, &cplbd, &args, &self.log(name))
            .map_err(|e| format!("starting cplbd on {name}: {e}"))
    }

    /// keepalived (VRRP only) with k0s's configuration.
    pub(super) fn start_keepalived(&self, name: &str, timers: Timers) -> Result<Child, String> {
        let conf = self.dir.join(format!("keepalived-{name}.conf"));
        write_private(&conf, &keepalived_conf(timers))
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let pid = |what: &str| {
            self.dir.join(format!("ka-{name}-{what}.pid")).to_string_lossy().into_owned()
        };
        let (main, vrrp, checkers) = (pid("main"), pid("vrrp"), pid("checkers"));
        // A crashed keepalived's pid files name processes that may linger as zombies (no
        // init reaps them in a namespace lab), and keepalived refuses to start beside what
        // looks like itself: clear them, as systemd does for a unit's PIDFile.
        for file in [&main, &vrrp, &checkers] {
            let _ = std::fs::remove_file(file);
        }
        let conf = conf.to_string_lossy().into_owned();
        self.topo
            .spawn(
                name,
                "keepalived",
                &[
                    "--dont-fork",
                    "--vrrp",
                    "--no-syslog",
                    "--log-console",
                    "--use-file",
                    &conf,
                    "--pid",
                    &main,
                    "--vrrp_pid",
                    &vrrp,
                    "--checkers_pid",
                    &checkers,
                ],
                &self.log(name),
            )
            .map_err(|e| format!("starting keepalived on {name}: {e}"))
    }

    /// The VRRP contender on `name`.
    pub(super) fn start_vrrp(
        &self,
        name: &str,
        vrrp: Vrrp,
        timers: Timers,
    ) -> Result<Child, String> {
        match (vrrp, timers) {
            (Vrrp::Keepalived, t) => self.start_keepalived(name, t),
            (Vrrp::Cplbd, Timers::K0s) => self.start_cplbd(name, false, &[]),
            (Vrrp::Cplbd, Timers::V3Fast) => self.start_cplbd(
                name,
                false,
                &["--vrrp-version", "3", "--advert-interval", "100ms"],
            ),
        }
    }

    /// HAProxy on `name`, in the foreground.
    pub(super) fn start_haproxy(&self, name: &str, https_check: bool) -> Result<Child, String> {
        let conf = self.dir.join("haproxy.cfg");
        write_private(&conf, &haproxy_conf(https_check))
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        self.topo
            .spawn(name, "haproxy", &["-db", "-f", &conf.to_string_lossy()], &self.log(name))
            .map_err(|e| format!("starting haproxy on {name}: {e}"))
    }

    /// The controller holding the VIP on eth0, when exactly one does.
    pub(super) fn holder(&self) -> Option<&'static str> {
        let holders: Vec<&'static str> = CONTROLLERS
            .iter()
            .filter(|(n, _)| {
                self.topo
                    .addresses(n)
                    .is_ok_and(|a| a.iter().any(|x| x.starts_with(&format!("{VIP}/"))))
            })
            .map(|(n, _)| *n)
            .collect();
        (holders.len() == 1).then(|| holders[0])
    }

    /// Waits until one controller holds the VIP and it has stayed so for `settle`.
    pub(super) fn wait_holder(
        &self,
        limit: Duration,
        settle: Duration,
    ) -> Result<&'static str, String> {
        let start = Instant::now();
        let mut since: Option<(Instant, &str)> = None;
        loop {
            match (self.holder(), since) {
                (Some(h), Some((t, was))) if h == was => {
                    if t.elapsed() >= settle {
                        return Ok(h);
                    }
                }
                (Some(h), _) => since = Some((Instant::now(), h)),
                (None, _) => since = None,
            }
            if start.elapsed() > limit {
                return Err(format!("no single VIP holder after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops `child` with `signal` and waits for it (SIGKILL after 5 s).
    pub(super) fn stop(child: &mut Child, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, signal);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The pids of the processes called `comm` in the controllers' namespaces.
    pub(super) fn pids_of(&self, comm: &str) -> Vec<i32> {
        CONTROLLERS
            .iter()
            .flat_map(|(n, _)| crate::topology::pids(&self.topo.ns(n)))
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            })
            .collect()
    }

    /// Resident memory of all processes called `comm`, MiB.
    pub(super) fn rss_mib(&self, comm: &str) -> f64 {
        self.pids_of(comm)
            .iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .sum::<f64>()
            / 1024.0
    }

    /// CPU seconds (user + system) all processes called `comm` have used.
    pub(super) fn cpu_s(&self, comm: &str) -> f64 {
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100.0, |t| t as f64);
        self.pids_of(comm)
            .iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
                let rest = stat.rsplit_once(") ")?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = fields.get(11)?.parse().ok()?;
                let stime: f64 = fields.get(12)?.parse().ok()?;
                Some((utime + stime) / tick)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_gets_k0s_template_and_its_v3_variant() {
        let k0s = keepalived_conf(Timers::K0s);
        for line in [
            "state BACKUP",
            "virtual_router_id 51",
            "priority 200",
            "advert_int 1",
            "auth_type PASS",
            "192.168.122.200/24",
        ] {
            assert!(k0s.contains(line), "{line} missing:\n{k0s}");
        }
        assert!(!k0s.contains("global_defs"), "k0s sets no global_defs");
        let v3 = keepalived_conf(Timers::V3Fast);
        assert!(v3.contains("vrrp_version 3") && v3.contains("advert_int 0.1"), "{v3}");
        assert!(!v3.contains("authentication"), "VRRPv3 has no authentication");
        assert!((Timers::K0s.master_down() - 3.21875).abs() < 1e-9);
        assert!((Timers::V3Fast.master_down() - 0.321875).abs() < 1e-9);
    }

    #[test]
    fn haproxy_balances_every_api_server_with_checks() {
        let c = haproxy_conf(true);
        assert!(c.contains("balance roundrobin") && c.contains("mode tcp"), "{c}");
        assert_eq!(c.matches(" check verify none").count(), 3, "{c}");
        assert!(c.contains("http-check send meth GET uri /healthz"), "{c}");
        assert!(!haproxy_conf(false).contains("httpchk"));
    }
}

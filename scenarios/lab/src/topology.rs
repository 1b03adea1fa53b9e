//! Hosts made of network namespaces on one machine, for the lab and the tests: one bridge
//! in a namespace of its own, each host a namespace with `eth0` on it. Nothing is created in
//! the root namespace. Built with iproute2 (`ip`), as a test harness may; the daemon itself
//! never runs `ip`.

use std::fs::File;
use std::io;
use std::process::{Child, Command, Output, Stdio};

/// One host on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    /// Short name (`controller-0`).
    pub name: String,
    /// `eth0`'s address with prefix (`192.168.122.37/24`).
    pub address: String,
}

/// A built topology. Dropping it removes every namespace and what runs in them, unless
/// [`Topology::keep`] was called.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    hosts: Vec<HostSpec>,
    keep: bool,
    gateway: Option<String>,
}

fn run(args: &[&str]) -> io::Result<Output> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running ip {}: {e} (is iproute2 installed?)", args.join(" ")),
        )
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
    run(&["netns", "exec", ns, "sysctl", "-qw", &format!("{key}={value}")]).map(|_| ())
}

/// Whether this process runs as root (the namespace tests and the lab need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2).is_some_and(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

impl Topology {
    /// Namespace names are `<prefix><host>`; the bridge lives in `<prefix>lan`.
    /// With `gateway`, every host gets a default route through it (which need not exist),
    /// as real hosts have, so an empty `interface` resolves as k0s resolves it.
    pub fn build(
        prefix: &str,
        hosts: Vec<HostSpec>,
        ipv6: bool,
        gateway: Option<&str>,
    ) -> io::Result<Self> {
        let topo = Self {
            prefix: prefix.to_owned(),
            hosts,
            keep: false,
            gateway: gateway.map(str::to_owned),
        };
        // Whatever a crashed earlier run left under this prefix goes first.
        remove_prefix(prefix);
        let lan = topo.lan();
        run(&["netns", "add", &lan])?;
        run(&["-n", &lan, "link", "set", "lo", "up"])?;
        run(&[
            "-n",
            &lan,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        run(&["-n", &lan, "link", "set", "br0", "up"])?;
        for (i, host) in topo.hosts.iter().enumerate() {
            let ns = topo.ns(&host.name);
            let port = format!("p{i}");
            run(&["netns", "add", &ns])?;
            run(&["-n", &ns, "link", "set", "lo", "up"])?;
            for key in ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"] {
                sysctl(&ns, key, "0")?;
            }
            if !ipv6 {
                let _ = sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1");
                let _ = sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1");
            }
            run(&[
                "-n", &lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            run(&["-n", &lan, "link", "set", &port, "master", "br0"])?;
            run(&["-n", &lan, "link", "set", &port, "up"])?;
            let nodad = if host.address.contains(':') { vec!["nodad"] } else { vec![] };
            let mut add = vec!["-n", &ns, "addr", "add", &host.address, "dev", "eth0"];
            add.extend(nodad);
            run(&add)?;
            run(&["-n", &ns, "link", "set", "eth0", "up"])?;
            if let Some(gw) = gateway {
                run(&["-n", &ns, "route", "add", "default", "via", gw, "dev", "eth0", "onlink"])?;
            }
        }
        Ok(topo)
    }

    /// A handle on a topology built earlier (by another process); dropping it removes
    /// nothing.
    pub fn attach(prefix: &str, hosts: Vec<HostSpec>, gateway: Option<&str>) -> Self {
        Self { prefix: prefix.to_owned(), hosts, keep: true, gateway: gateway.map(str::to_owned) }
    }

    /// Leaves everything in place when dropped (the lab's `up`).
    pub fn keep(mut self) {
        self.keep = true;
    }

    /// The bridge's namespace.
    pub fn lan(&self) -> String {
        format!("{}lan", self.prefix)
    }

    /// A host's namespace.
    pub fn ns(&self, host: &str) -> String {
        format!("{}{host}", self.prefix)
    }

    /// The hosts.
    pub fn hosts(&self) -> &[HostSpec] {
        &self.hosts
    }

    /// Runs `ip` with arguments inside host's namespace (`ip -n NS ...`).
    pub fn ip(&self, host: &str, args: &[&str]) -> io::Result<String> {
        let ns = self.ns(host);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run(&all).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Runs a program inside host's namespace and waits for it.
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// Starts a program inside host's namespace, output appended to `log`; it runs in a
    /// process group of its own so that it outlives the caller's terminal.
    pub fn spawn(
        &self,
        host: &str,
        program: &str,
        args: &[&str],
        log: &std::path::Path,
    ) -> io::Result<Child> {
        use std::os::unix::process::CommandExt;
        let file = File::options().create(true).append(true).open(log)?;
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
    }

    /// Sets host's `eth0` up or down (up again restores the default route, which the
    /// kernel dropped with the link).
    pub fn set_link(&self, host: &str, up: bool) -> io::Result<()> {
        self.ip(host, &["link", "set", "eth0", if up { "up" } else { "down" }])?;
        if let (true, Some(gw)) = (up, &self.gateway) {
            self.ip(host, &["route", "replace", "default", "via", gw, "dev", "eth0", "onlink"])?;
        }
        Ok(())
    }

    /// `ip -br addr show dev eth0` style lines of host's global addresses on eth0:
    /// `address/prefix` plus `secondary` where so.
    pub fn addresses(&self, host: &str) -> io::Result<Vec<String>> {
        let text = self.ip(host, &["-o", "addr", "show", "dev", "eth0"])?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace().skip_while(|w| *w != "inet" && *w != "inet6");
                let addr = words.nth(1)?;
                let secondary = l.contains(" secondary ");
                (!addr.starts_with("fe80"))
                    .then(|| if secondary { format!("{addr} secondary") } else { addr.to_owned() })
            })
            .collect())
    }

    /// The `ip -o addr show dev eth0` lines of host (as the seed document shows them).
    pub fn address_lines(&self, host: &str) -> io::Result<String> {
        self.ip(host, &["-o", "addr", "show", "dev", "eth0"])
    }

    /// Kills every process in host's namespace with `signal` (`KILL`, `TERM`).
    pub fn kill_all(&self, host: &str, signal: nix::sys::signal::Signal) {
        for pid in pids(&self.ns(host)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Removes everything now.
    pub fn remove(&mut self) {
        remove_prefix(&self.prefix);
        self.keep = true;
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if !self.keep {
            remove_prefix(&self.prefix);
        }
    }
}

/// Pids of the processes in namespace `ns`.
pub fn pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes every namespace whose name starts with `prefix`, killing what runs there.
pub fn remove_prefix(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect();
    for ns in &names {
        for pid in pids(ns) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // Hosts before the bridge: their veth ends go with them.
    let (lans, hosts): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| n.ends_with("lan"));
    for ns in hosts.into_iter().chain(lans) {
        for _ in 0..20 {
            if pids(ns).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// Runs `f` on a thread whose network namespace is `ns` (sockets it opens live there). The
/// thread's result is `None` only if entering the namespace failed, which is reported here.
pub fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<Option<T>>> {
    let path = format!("/var/run/netns/{ns}");
    let file = File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET);
        let ok = entered.is_ok();
        let _ = tx.send(entered.map_err(io::Error::from));
        ok.then(f)
    });
    rx.recv().map_err(|_| io::Error::other("namespace thread died"))??;
    Ok(handle)
}

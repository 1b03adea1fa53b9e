//! Clusters of cplbd (and keepalived) in network namespaces, for the root-only tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cplb_lab::apiserver::{self, ApiServerOptions};
use cplb_lab::topology::{self, HostSpec, Topology};
use cplb_netns::net::Os;
use cplb_netns::status::{self, Snapshot};

/// Master_Down_Interval at k0s's defaults: 3 × 1 s + (256 − 200)/256 s.
pub const MASTER_DOWN: Duration = Duration::from_nanos(3_218_750_000);
/// Skew_Time at priority 200.
pub const SKEW: Duration = Duration::from_nanos(218_750_000);
pub const MARGIN: Duration = Duration::from_millis(100);

/// Checks that the test can run here (root, iproute2); these tests are `#[ignore]`d so a
/// plain `cargo test` lists them, and when asked for they fail rather than pass unseen.
pub fn can_run(test: &str) {
    assert!(topology::is_root(), "{test}: needs root (creates network namespaces)");
    assert!(
        std::process::Command::new("ip").arg("-V").output().is_ok(),
        "{test}: iproute2 (`ip`) is not installed"
    );
}

pub struct Cluster {
    pub topo: Topology,
    pub net: String,
    pub dir: PathBuf,
    pub controllers: Vec<String>,
    pub daemons: Vec<Option<Child>>,
    api_stops: Vec<Option<Arc<AtomicBool>>>,
    pub vip: String,
    /// IPv6 cluster (`net` is then a /64 prefix like `fd00:200:15`).
    pub v6: bool,
    /// More arguments for every cplbd started.
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// `n` controllers `c0..` at `<net>.10+i/24` and a client at `<net>.100`; `net` like
    /// `10.200.1`. Namespaces are `cplbt-<tag>-...`.
    pub fn new(tag: &str, net: &str, n: usize) -> Self {
        Self::build(tag, net, n, false)
    }

    /// The same with IPv6: controllers `<net>::10+i/64`, the client `<net>::100`, the VIP
    /// `<net>::200/64` (VRRPv3 with link-local sources, as k0s configures keepalived).
    pub fn new_v6(tag: &str, net: &str, n: usize) -> Self {
        Self::build(tag, net, n, true)
    }

    fn build(tag: &str, net: &str, n: usize, v6: bool) -> Self {
        let host = |last: usize| {
            if v6 { format!("{net}::{last}/64") } else { format!("{net}.{last}/24") }
        };
        let mut hosts: Vec<HostSpec> =
            (0..n).map(|i| HostSpec { name: format!("c{i}"), address: host(10 + i) }).collect();
        hosts.push(HostSpec { name: "client".into(), address: host(100) });
        let prefix = format!("cplbt-{tag}-");
        let topo = Topology::build(&prefix, hosts, v6, None).expect("namespaces");
        let dir = std::env::temp_dir().join(format!("cplbt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (vip, prefix_len) =
            if v6 { (format!("{net}::200"), 64) } else { (format!("{net}.200"), 24) };
        std::fs::write(
            dir.join("k0s.yaml"),
            format!(
                "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      type: Keepalived\n      keepalived:\n        vrrpInstances:\n        - virtualIPs: [\"{vip}/{prefix_len}\"]\n          authPass: k0s-lab1\n          virtualRouterID: 51\n          interface: eth0\n"
            ),
        )
        .unwrap();
        Self {
            topo,
            net: net.to_owned(),
            dir,
            controllers: (0..n).map(|i| format!("c{i}")).collect(),
            daemons: (0..n).map(|_| None).collect(),
            api_stops: (0..n).map(|_| None).collect(),
            vip,
            v6,
            extra_args: Vec::new(),
        }
    }

    /// Starts an API server and cplbd on every controller and waits for one settled VIP
    /// holder (staying single for 3 s); returns it.
    pub fn start_all(&mut self) -> usize {
        for i in 0..self.controllers.len() {
            self.start_api(i);
            self.start_cplbd(i);
        }
        let t = Instant::now();
        self.wait_holders(t, Duration::from_secs(10), |h| h.len() == 1).unwrap_or_else(|| {
            panic!("no single VIP holder; holders {:?}\n{}", self.holders(), self.logs())
        });
        // Exactly one holder, and it stays so (no dual master in steady state).
        for _ in 0..60 {
            let h = self.holders();
            assert_eq!(h.len(), 1, "VIP on {h:?}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        self.holders()[0]
    }

    pub fn addr(&self, i: usize) -> String {
        if self.v6 {
            format!("{}::{}", self.net, 10 + i)
        } else {
            format!("{}.{}", self.net, 10 + i)
        }
    }

    /// `ip:port`, bracketed for IPv6.
    fn socket_addr(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("c{i}.sock"))
    }

    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("c{i}.log"))
    }

    /// Starts the stand-in API server of controller `i` (HTTPS on :6443) on a thread of
    /// this process inside its namespace.
    pub fn start_api(&mut self, i: usize) {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let listen = Self::socket_addr(&self.addr(i), 6443);
        let name = format!("c{i}");
        topology::in_namespace(&self.topo.ns(&name), move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
                let options = ApiServerOptions { tls: true, ..ApiServerOptions::new(name) };
                tokio::select! {
                    _ = apiserver::serve::<Os>(listener, options) => {}
                    () = async { while !flag.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(20)).await } } => {}
                }
            });
        })
        .unwrap();
        self.api_stops[i] = Some(stop);
    }

    /// Stops controller `i`'s API server (its port then refuses connections).
    pub fn stop_api(&mut self, i: usize) {
        if let Some(s) = self.api_stops[i].take() {
            s.store(true, Ordering::Relaxed);
        }
    }

    pub fn real_servers(&self) -> String {
        (0..self.controllers.len()).map(|i| self.addr(i)).collect::<Vec<_>>().join(",")
    }

    pub fn start_cplbd(&mut self, i: usize) {
        let metrics = Self::socket_addr(&self.addr(i), 9464).to_string();
        let mut args = self.cplbd_args(&self.socket(i));
        args.extend(
            ["--log-level", "info,cplb_netns=debug", "--metrics", &metrics].map(String::from),
        );
        args.extend(self.extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .topo
            .spawn(&format!("c{i}"), env!("CARGO_BIN_EXE_cplbd"), &args, &self.log(i))
            .expect("cplbd starts");
        self.daemons[i] = Some(child);
    }

    /// What every cplbd of the cluster is started with: its configuration, the real servers
    /// and status socket `socket`.
    pub fn cplbd_args(&self, socket: &std::path::Path) -> Vec<String> {
        let config = self.dir.join("k0s.yaml");
        vec![
            "--config".into(),
            config.to_string_lossy().into_owned(),
            "--real-servers".into(),
            self.real_servers(),
            "--status-socket".into(),
            socket.to_string_lossy().into_owned(),
        ]
    }

    pub fn signal(
        &mut self,
        i: usize,
        signal: nix::sys::signal::Signal,
    ) -> Option<std::process::ExitStatus> {
        let child = self.daemons[i].as_mut()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.daemons[i] = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.daemons[i].as_ref().map(Child::id)
    }

    /// Controllers whose eth0 holds the VIP.
    pub fn holders(&self) -> Vec<usize> {
        (0..self.controllers.len())
            .filter(|i| {
                self.topo
                    .addresses(&format!("c{i}"))
                    .is_ok_and(|a| a.iter().any(|x| x.starts_with(&format!("{}/", self.vip))))
            })
            .collect()
    }

    pub fn status(&self, i: usize) -> Option<Snapshot> {
        status::query(&self.socket(i), Duration::from_millis(500)).ok()
    }

    /// Waits until `pred(holders)`; returns when it held (from `since`).
    pub fn wait_holders(
        &self,
        since: Instant,
        limit: Duration,
        pred: impl Fn(&[usize]) -> bool,
    ) -> Option<Duration> {
        loop {
            let h = self.holders();
            if pred(&h) {
                return Some(since.elapsed());
            }
            if since.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One connection from the client to VIP:6443; the name of the API server that answered.
    pub fn client_fetch(&self) -> Result<String, String> {
        let vip = Self::socket_addr(&self.vip, 6443);
        topology::in_namespace(&self.topo.ns("client"), move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(apiserver::fetch(vip, "/", true, Duration::from_secs(2)))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "client thread panicked".to_owned())?
        .unwrap_or_else(|| Err("client thread did not start".into()))
    }

    /// Retries the client for up to `limit` until answered.
    pub fn client_answered_within(&self, limit: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            match self.client_fetch() {
                Ok(name) => return Ok(name),
                Err(e) if start.elapsed() > limit => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Controller `i`'s Prometheus endpoint, scraped from the client.
    pub fn metrics(&self, i: usize) -> String {
        self.http(i, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    }

    /// Sends `request` from the client to controller `i`'s metrics port; the whole answer
    /// (empty when refused or failed).
    pub fn http(&self, i: usize, request: &'static str) -> String {
        use std::io::{Read, Write};
        let addr = Self::socket_addr(&self.addr(i), 9464);
        topology::in_namespace(&self.topo.ns("client"), move || {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            Some(out)
        })
        .ok()
        .and_then(|h| h.join().ok().flatten().flatten())
        .unwrap_or_default()
    }

    /// `nft list table ip cplb` of controller `i`.
    pub fn nft_table(&self, i: usize) -> String {
        self.topo
            .exec(&format!("c{i}"), "nft", &["list", "table", "ip", "cplb"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        (0..self.controllers.len())
            .map(|i| {
                format!("--- c{i}\n{}", std::fs::read_to_string(self.log(i)).unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.daemons.len() {
            self.stop_api(i);
            if let Some(mut c) = self.daemons[i].take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.topo.remove();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

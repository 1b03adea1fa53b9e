//! The data-plane measures: connections per second and connect + first-byte latency at a
//! fixed concurrency, bulk throughput, and the proxies' memory under that load, through
//! cplbd's userspace proxy, cplbd's nftables balancing, HAProxy, and a direct connection to
//! one server (the ceiling).
//!
//! Behind them, on every controller's :6443, either a backend that answers at once over
//! plain TCP (so the data plane, not TLS, is what is measured) or the stand-in HTTPS API
//! servers (what a client of the API sees).

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::contender::{HAPROXY_PORT, Plane};
use super::{BenchOptions, Env, Rep, Row};
use crate::layout::{API_PORT, CLIENT, CONTROLLERS, VIP};
use crate::topology;

/// Connections in flight at once.
const CONCURRENCY: usize = 64;
/// A backend request: answer one line at once.
const PING: u8 = b'g';
/// A backend request: send the size that follows (8 bytes, big endian), then close.
const BULK: u8 = b'b';
/// What the backend answers to [`PING`].
const ANSWER: &[u8] = b"ok\n";

/// `cplb lab backend`: on every connection, reads one request byte and answers at once
/// ([`PING`]) or streams the requested number of bytes ([`BULK`]); a health check's bare
/// connect is closed. Serves until the process ends.
pub async fn serve_backend(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut s, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = s.set_nodelay(true);
                connections.spawn(async move {
                    let mut request = [0u8; 1];
                    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut request)).await {
                        Ok(Ok(1)) if request[0] == PING => {
                            let _ = s.write_all(ANSWER).await;
                        }
                        Ok(Ok(1)) if request[0] == BULK => {
                            let mut size = [0u8; 8];
                            if s.read_exact(&mut size).await.is_ok() {
                                let _ = stream(&mut s, u64::from_be_bytes(size)).await;
                            }
                        }
                        _ => {}
                    }
                    let _ = s.shutdown().await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn stream(s: &mut tokio::net::TcpStream, mut left: u64) -> std::io::Result<()> {
    let chunk = vec![0x5au8; 256 * 1024];
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        s.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

/// The data planes: who the client connects to and what runs on the controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Direct,
    Cplbd(Plane),
    Haproxy,
}

impl Contender {
    const ALL: [Self; 4] =
        [Self::Cplbd(Plane::Proxy), Self::Cplbd(Plane::Nftables), Self::Haproxy, Self::Direct];

    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Cplbd(Plane::Proxy) => "cplbd-proxy",
            Self::Cplbd(Plane::Nftables) => "cplbd-nftables",
            Self::Haproxy => "haproxy",
        }
    }

    /// The processes whose memory counts.
    fn comm(self) -> Option<&'static str> {
        match self {
            Self::Direct => None,
            Self::Cplbd(_) => Some("cplbd"),
            Self::Haproxy => Some("haproxy"),
        }
    }

    fn target(self) -> SocketAddr {
        let (ip, port) = match self {
            Self::Direct => (CONTROLLERS[0].1, API_PORT),
            Self::Cplbd(_) => (VIP, API_PORT),
            Self::Haproxy => (VIP, HAPROXY_PORT),
        };
        SocketAddr::new(ip.parse().unwrap_or([0, 0, 0, 0].into()), port)
    }
}

/// What answers behind the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Tcp,
    Https,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Https => "https",
        }
    }
}

/// A data plane set up on the controllers.
struct Setup<'a> {
    env: &'a Env,
    children: Vec<Child>,
}

impl Drop for Setup<'_> {
    fn drop(&mut self) {
        for c in &mut self.children {
            Env::stop(c, Signal::SIGTERM);
        }
        self.env.stop_everything();
    }
}

fn set_up<'a>(env: &'a Env, contender: Contender, backend: Backend) -> Result<Setup<'a>, String> {
    let mut setup = Setup { env, children: Vec::new() };
    for (name, _) in CONTROLLERS {
        setup.children.push(match backend {
            Backend::Tcp => env.start_backend(name)?,
            Backend::Https => env.start_apiserver(name)?,
        });
    }
    let check: &[&str] = match backend {
        Backend::Tcp => &["--health-check", "tcp"],
        Backend::Https => &[],
    };
    match contender {
        Contender::Direct => {}
        Contender::Cplbd(plane) => {
            for (name, _) in CONTROLLERS {
                if plane == Plane::Nftables {
                    // What cplbd's warning asks of the operator: the master forwards what
                    // it balances to the other controllers.
                    env.topo
                        .exec(name, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])
                        .map_err(|e| format!("enabling forwarding on {name}: {e}"))?;
                }
                setup.children.push(env.start_cplbd(name, plane == Plane::Nftables, check)?);
            }
            env.wait_holder(Duration::from_secs(20), Duration::from_millis(500))?;
        }
        Contender::Haproxy => {
            // kubeadm's guide pairs HAProxy with keepalived for the VIP; here the VIP is put
            // on the first controller by hand, since only the data plane is measured.
            let ctl = CONTROLLERS[0].0;
            env.topo
                .ip(ctl, &["addr", "add", &format!("{VIP}/24"), "dev", "eth0"])
                .map_err(|e| format!("adding the VIP for HAProxy: {e}"))?;
            setup.children.push(env.start_haproxy(ctl, backend == Backend::Https)?);
        }
    }
    // The health checks see every backend up before the load starts.
    std::thread::sleep(Duration::from_secs(3));
    Ok(setup)
}

/// One load rep's figures.
#[derive(Debug, Clone, Copy)]
struct Load {
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
}

/// `CONCURRENCY` connections at a time for `time`, from the client's namespace.
fn load(env: &Env, to: SocketAddr, backend: Backend, time: Duration) -> Result<Load, String> {
    let ns = env.topo.ns(CLIENT.0);
    let handle = topology::in_namespace(&ns, move || -> Result<Load, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let deadline = tokio::time::Instant::now() + time;
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..CONCURRENCY {
                workers.spawn(async move {
                    let mut latencies = Vec::new();
                    let mut failed = 0u64;
                    while tokio::time::Instant::now() < deadline {
                        let start = Instant::now();
                        let ok = match backend {
                            Backend::Tcp => ping(to).await.is_ok(),
                            Backend::Https => {
                                crate::apiserver::fetch(to, "/", true, Duration::from_secs(2))
                                    .await
                                    .is_ok()
                            }
                        };
                        if ok {
                            latencies.push(start.elapsed().as_secs_f64() * 1e3);
                        } else {
                            failed += 1;
                        }
                    }
                    (latencies, failed)
                });
            }
            let mut all = Vec::new();
            let mut failed = 0;
            while let Some(done) = workers.join_next().await {
                let (l, f) = done.map_err(|e| e.to_string())?;
                all.extend(l);
                failed += f;
            }
            all.sort_by(f64::total_cmp);
            let at = |q: f64| {
                all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            Ok(Load {
                per_s: all.len() as f64 / time.as_secs_f64(),
                p50_ms: at(0.5),
                p99_ms: at(0.99),
                failed,
            })
        })
    })
    .map_err(|e| format!("entering the client namespace: {e}"))?;
    handle.join().ok().flatten().ok_or("the load thread failed")?
}

/// Connect, ask, read the answer to its end.
async fn ping(to: SocketAddr) -> std::io::Result<()> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))??;
    s.set_nodelay(true)?;
    s.write_all(&[PING]).await?;
    let mut answer = Vec::with_capacity(4);
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("answer timed out"))??;
    if answer == ANSWER { Ok(()) } else { Err(std::io::Error::other("wrong answer")) }
}

/// One bulk transfer of `bytes` through `to`, MB/s.
fn bulk(env: &Env, to: SocketAddr, bytes: u64) -> Result<f64, String> {
    let ns = env.topo.ns(CLIENT.0);
    let handle = topology::in_namespace(&ns, move || -> Result<f64, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let start = Instant::now();
            let mut s = tokio::net::TcpStream::connect(to)
                .await
                .map_err(|e| format!("bulk to {to}: {e}"))?;
            let mut request = vec![BULK];
            request.extend_from_slice(&bytes.to_be_bytes());
            s.write_all(&request).await.map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => got += n as u64,
                    Ok(Err(e)) => return Err(format!("bulk from {to}: {e}")),
                    Err(_) => return Err(format!("bulk from {to}: stalled for 10 s")),
                }
            }
            if got != bytes {
                return Err(format!("bulk from {to}: {got} of {bytes} bytes"));
            }
            Ok(bytes as f64 / 1e6 / start.elapsed().as_secs_f64())
        })
    })
    .map_err(|e| format!("entering the client namespace: {e}"))?;
    handle.join().ok().flatten().ok_or("the bulk thread failed")?
}

/// Runs the data-plane measures asked for.
pub(super) fn run(
    env: &Env,
    options: &BenchOptions,
    bench: &mut super::Bench,
    progress: &mut dyn FnMut(&str),
) -> Result<(), String> {
    let wanted = |m: &str| options.wants(m);
    let loads = wanted("conn_rate") || wanted("latency_p50") || wanted("latency_p99");
    if !loads && !wanted("bulk") && !wanted("rss") {
        return Ok(());
    }
    let reps = options.reps.clamp(1, 3);
    for contender in Contender::ALL {
        let name = contender.name();
        for backend in [Backend::Tcp, Backend::Https] {
            // Bulk and memory are the plain backend's only.
            if backend == Backend::Https && !loads {
                continue;
            }
            let setup = set_up(env, contender, backend)?;
            let rss_start = contender.comm().map(|c| env.rss_mib(c));
            let to = contender.target();
            let mut rate = Vec::new();
            let mut p50 = Vec::new();
            let mut p99 = Vec::new();
            if loads {
                for rep in 0..reps {
                    let l = load(env, to, backend, options.load_time)?;
                    progress(&format!(
                        "load {name} ({}) rep {}: {:.0} conn/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
                        backend.name(),
                        rep + 1,
                        l.per_s,
                        l.p50_ms,
                        l.p99_ms,
                        l.failed
                    ));
                    rate.push(Rep::Value(l.per_s));
                    p50.push(Rep::Value(l.p50_ms));
                    p99.push(Rep::Value(l.p99_ms));
                }
            }
            let mut mb_s = Vec::new();
            if backend == Backend::Tcp && wanted("bulk") {
                for rep in 0..reps {
                    let x = bulk(env, to, options.bulk_bytes)?;
                    progress(&format!("bulk {name} rep {}: {x:.0} MB/s", rep + 1));
                    mb_s.push(Rep::Value(x));
                }
            }
            let rss_load = contender.comm().map(|c| env.rss_mib(c));
            drop(setup);
            let b = backend.name();
            if loads {
                bench.rows.push(Row::new("conn_rate", name, "conn/s", rate).backend(b));
                bench.rows.push(Row::new("latency_p50", name, "ms", p50).backend(b));
                bench.rows.push(Row::new("latency_p99", name, "ms", p99).backend(b));
            }
            if !mb_s.is_empty() {
                bench.rows.push(Row::new("bulk", name, "MB/s", mb_s));
            }
            if backend == Backend::Tcp
                && wanted("rss")
                && let (Some(s), Some(l)) = (rss_start, rss_load)
            {
                bench.rows.push(Row::new("rss", name, "MiB", vec![Rep::Value(s)]).when("start"));
                bench.rows.push(Row::new("rss", name, "MiB", vec![Rep::Value(l)]).when("load"));
            }
        }
    }
    Ok(())
}

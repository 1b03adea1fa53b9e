//! `cplb lab`: the seed's cluster in network namespaces (or a qemu guest), its failover,
//! soak and bench, and the hidden helpers the lab runs in its namespaces.

use clap::{Args, Subcommand, ValueEnum};

use crate::output::{Done, emit};
#[derive(Debug, Args)]
pub(crate) struct LabFetchArgs {
    /// IP:PORT.
    addr: std::net::SocketAddr,
    /// The path.
    #[arg(long, default_value = "/whoami")]
    path: String,
    /// This many requests, each on a new connection.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LabCommand {
    /// Build the lab (3 controllers with API servers and cplbd, 3 workers, a client).
    Up(LabUpArgs),
    /// Power off the master while the client connects to VIP:6443 every 10 ms; print the
    /// failover time and the seed's views.
    Failover(LabFailoverArgs),
    /// Crash (SIGKILL of cplbd) or power off a random controller and restart it, N times,
    /// checking the whole lab after each cycle (needs `cplb lab up`). Exit 1 if any cycle
    /// failed.
    Soak(LabSoakArgs),
    /// Remove everything the lab created.
    Down(LabKernelArgs),
    /// cplbd against keepalived and HAProxy, side by side on the same namespaces: failover
    /// times, connections per second, latency, throughput, memory and idle CPU, as a table
    /// of median / min / max with the ratio to the reference and the protocol's bound.
    Bench(LabBenchArgs),
    /// The lab's stand-in API server (started by `lab up` in each controller).
    #[command(hide = true)]
    Apiserver(LabApiserverArgs),
    /// The bench's plain backend: answers at once over TCP, or streams bytes.
    #[command(hide = true)]
    Backend(LabBackendArgs),
    /// A client of the lab: HTTPS GETs of a path, one answer per line (tests use it).
    #[command(hide = true)]
    Fetch(LabFetchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct LabUpArgs {
    #[command(flatten)]
    kernel: LabKernelArgs,
    /// How API traffic is balanced: k0s's default userspace proxy, or the seed's IPVS
    /// virtual server (direct routing).
    #[arg(long, value_enum, default_value_t = LabMode::Proxy)]
    mode: LabMode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum LabMode {
    Proxy,
    Ipvs,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub(crate) enum LabKernel {
    /// This machine's kernel, in network namespaces.
    #[default]
    Host,
    /// A guest booted under qemu from Debian's cloud kernel (IPVS and dummy interfaces).
    Vm,
}

#[derive(Debug, Args)]
pub(crate) struct LabKernelArgs {
    /// Where the lab runs.
    #[arg(long, value_enum, default_value_t = LabKernel::Host)]
    kernel: LabKernel,
}

#[derive(Debug, Args)]
pub(crate) struct LabFailoverArgs {
    #[command(flatten)]
    kernel: LabKernelArgs,
    /// Print {failover_s, client_failed, client_attempts, new_master} (+ reps) as JSON.
    #[arg(long)]
    json: bool,
    /// Power off this many times, restoring the old master as a backup in between.
    #[arg(long, value_name = "N")]
    reps: Option<u32>,
    /// Also write run.json, report.md and report.html (the timeline of every power-off:
    /// each controller's state, the VIP's holder, the client's connections) into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct LabSoakArgs {
    #[command(flatten)]
    kernel: LabKernelArgs,
    /// Cycles to run.
    #[arg(long, value_name = "N", default_value_t = 10)]
    cycles: u32,
    /// Seed of the victims and restart delays (printed; default: from the clock).
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Print {seed, cycles, failures, recovery_s, failed, runs, ...} as JSON (cycle lines go
    /// to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LabBenchArgs {
    /// Reps of each failover measure (the timed data-plane measures run up to 3).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Only these measures (comma separated): crash_k0s, crash_v3_100ms, graceful,
    /// first_election, conn_rate, latency_p50, latency_p99, bulk, rss, idle_cpu, or
    /// `failover` for the first four.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    only: Vec<String>,
    /// Print {"measures": [ROW, ...]} as JSON (progress goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write bench.json and bench.md into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// Seed of the crash phases within the advert cycle (the same for every contender).
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Args)]
pub(crate) struct LabBackendArgs {
    /// Where it listens (IP:PORT).
    #[arg(long)]
    listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub(crate) struct LabApiserverArgs {
    /// The name it answers with.
    #[arg(long)]
    name: String,
    /// Where it listens (IP:PORT).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Plain HTTP instead of HTTPS.
    #[arg(long)]
    plain: bool,
}

pub(crate) fn lab(cmd: LabCommand) -> Result<Done, String> {
    use cplb_lab::failover::{self, failover_in_vm, failover_run};
    use cplb_lab::files::save_logs;
    use cplb_lab::layout::Mode;
    use cplb_lab::processes::Programs;
    use cplb_lab::up_down::{down, down_in_vm, up, up_in_vm};
    match cmd {
        LabCommand::Up(args) => {
            let programs = Programs::beside_current_exe()?;
            let mode = match args.mode {
                LabMode::Proxy => Mode::Proxy,
                LabMode::Ipvs => Mode::Ipvs,
            };
            match args.kernel.kernel {
                LabKernel::Host => up(&programs, mode).map(Done::ok),
                LabKernel::Vm => up_in_vm(&programs, mode).map(Done::ok),
            }
        }
        LabCommand::Down(args) => Ok(Done::ok(match args.kernel {
            LabKernel::Host => down(),
            LabKernel::Vm => down_in_vm(),
        })),
        LabCommand::Failover(args)
            if matches!(args.kernel.kernel, LabKernel::Vm) && args.out.is_some() =>
        {
            Err("--out draws the lab on this kernel (--kernel host); in the guest, --json gives the figures".into())
        }
        LabCommand::Failover(args) if matches!(args.kernel.kernel, LabKernel::Vm) => {
            let (code, out) = failover_in_vm(args.reps, args.json)?;
            if code == 0 {
                Ok(Done::ok(out.trim_end().to_owned()))
            } else {
                Err(format!("cplb lab failover failed in the guest (exit {code}):\n{out}"))
            }
        }
        LabCommand::Failover(args) => {
            let programs = Programs::beside_current_exe()?;
            let draw = args.out.is_some();
            let results = match failover_run(&programs, args.reps.unwrap_or(1), draw) {
                Ok((r, run)) => {
                    if let (Some(dir), Some(run)) = (&args.out, run) {
                        let html = cplb_reports::write_run(dir, &run)?;
                        eprintln!("report: {}", html.display());
                    }
                    r
                }
                Err(e) => {
                    let saved = save_logs();
                    let _ = down();
                    return Err(format!("{e} (the lab was removed{saved})"));
                }
            };
            if args.json {
                let v = failover::json(&results, args.reps.is_some());
                Ok(Done::ok(format!("{v:#}")))
            } else {
                let text = failover::report(&results);
                Ok(Done::ok(format!("{text}\n{}", failover::current_views())))
            }
        }
        LabCommand::Soak(args) => lab_soak(&args),
        LabCommand::Bench(args) => lab_bench(&args),
        LabCommand::Backend(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .map_err(|e| format!("binding {}: {e}", args.listen))?;
                cplb_lab::bench::serve_backend(listener).await.map_err(|e| e.to_string())
            })?;
            Ok(Done::ok(String::new()))
        }
        LabCommand::Fetch(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for _ in 0..args.count {
                let timeout = std::time::Duration::from_secs(2);
                let answer =
                    rt.block_on(cplb_lab::apiserver::fetch(args.addr, &args.path, true, timeout));
                out.push(match answer {
                    Ok(body) => body.trim_end().to_owned(),
                    Err(e) => format!("error: {e}"),
                });
            }
            Ok(Done::ok(out.join("\n")))
        }
        LabCommand::Apiserver(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .map_err(|e| format!("binding {}: {e}", args.listen))?;
                let options = cplb_lab::apiserver::ApiServerOptions {
                    tls: !args.plain,
                    ..cplb_lab::apiserver::ApiServerOptions::new(args.name)
                };
                cplb_lab::apiserver::serve::<cplb_netns::net::Os>(listener, options)
                    .await
                    .map_err(|e| e.to_string())
            })?;
            Ok(Done::ok(String::new()))
        }
    }
}

/// `cplb lab bench`: the table (or JSON) on stdout, a line per rep on stderr.
fn lab_bench(args: &LabBenchArgs) -> Result<Done, String> {
    use cplb_lab::bench;
    use cplb_lab::processes::Programs;
    let options = bench::BenchOptions {
        reps: args.reps,
        only: args.only.clone(),
        seed: args.seed,
        ..bench::BenchOptions::default()
    };
    options.measures()?;
    let programs = Programs::beside_current_exe()?;
    let mut progress = |line: &str| eprintln!("{line}");
    let run = bench::run(&programs, &options, &mut progress)?;
    if let Some(dir) = &args.out {
        bench::write_out(&run, dir)?;
    }
    let stdout = if args.json { format!("{:#}", run.json()) } else { run.markdown() };
    Ok(Done::ok(stdout.trim_end().to_owned()))
}

/// `cplb lab soak`: exit 0 when every cycle passed, 1 when one failed, 2 when it could not
/// run (not root, the lab not up, `--kernel vm`).
fn lab_soak(args: &LabSoakArgs) -> Result<Done, String> {
    use cplb_lab::processes::Programs;
    use cplb_lab::rng::SplitMix64;
    use cplb_lab::soak::soak;
    if matches!(args.kernel.kernel, LabKernel::Vm) {
        return Err("cplb lab soak runs in namespaces on this kernel only (--kernel host); in the guest, `cplb lab failover --kernel vm --reps N` repeats power-offs".into());
    }
    let programs = Programs::beside_current_exe()?;
    let seed = args.seed.unwrap_or_else(|| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        SplitMix64(now.as_secs() ^ u64::from(now.subsec_nanos()) << 20).next_u64() >> 16
    });
    let json = args.json;
    let mut progress = |line: &str| {
        if json {
            eprintln!("{line}");
        } else {
            emit(&format!("{line}\n"));
        }
    };
    let run = soak(&programs, args.cycles, seed, &mut progress)?;
    let stdout = if json { format!("{:#}", run.json()) } else { run.summary() };
    Ok(Done { stdout, code: u8::from(run.failures() > 0) })
}

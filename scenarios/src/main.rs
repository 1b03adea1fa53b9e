//! `cplb`: tools around the cplb core.
//!
//! Exit codes: 0 success, 2 for any error (bad input, a packet that breaks a rule, bad
//! arguments), with one line on stderr.

use std::io::Read as _;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cplb_core::vrrp::{ChecksumPolicy, ReceiveRules, V3Ipv4Checksum};
use cplb_scenarios::packet::{self, DecodeOptions, EncodeOptions, Framing};

#[derive(Debug, Parser)]
#[command(name = "cplb", version, about = "Control-plane load balancing: VRRP and virtual servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode and encode VRRP packets.
    #[command(subcommand)]
    Packet(PacketCommand),
    /// Run simulated failover scenarios.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Check a k0s.yaml, k0sctl.yaml or spec: fragment and print the effective CPLB
    /// configuration with every default filled in.
    Validate(ValidateArgs),
    /// Show a running cplbd: each instance's state, VIP, master, counters and the data
    /// plane (talks to the daemon over its local socket).
    Status(StatusArgs),
    /// The seed document's cluster in network namespaces on this machine, with a cplbd on
    /// every controller (needs root).
    #[command(subcommand)]
    Lab(LabCommand),
    /// Render a run.json (of `sim run`, `lab failover` or `sim fuzz` with `--out`) as
    /// report.html (the timeline picture) and report.md; without --html or --md, both are
    /// written beside RUN.json.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The run.json to render.
    #[arg(value_name = "RUN.json")]
    run: std::path::PathBuf,
    /// Write the HTML page here.
    #[arg(long, value_name = "FILE")]
    html: Option<std::path::PathBuf>,
    /// Write the Markdown here.
    #[arg(long, value_name = "FILE")]
    md: Option<std::path::PathBuf>,
    /// Write the timeline picture alone here, as SVG (the README's picture is made so).
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The daemon's status socket.
    #[arg(long, value_name = "PATH", default_value = "/run/cplb/cplbd.sock")]
    socket: std::path::PathBuf,
    /// Print the daemon's JSON snapshot.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LabFetchArgs {
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
enum LabCommand {
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
struct LabUpArgs {
    #[command(flatten)]
    kernel: LabKernelArgs,
    /// How API traffic is balanced: k0s's default userspace proxy, or the seed's IPVS
    /// virtual server (direct routing).
    #[arg(long, value_enum, default_value_t = LabMode::Proxy)]
    mode: LabMode,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LabMode {
    Proxy,
    Ipvs,
}

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum LabKernel {
    /// This machine's kernel, in network namespaces.
    #[default]
    Host,
    /// A guest booted under qemu from Debian's cloud kernel (IPVS and dummy interfaces).
    Vm,
}

#[derive(Debug, Args)]
struct LabKernelArgs {
    /// Where the lab runs.
    #[arg(long, value_enum, default_value_t = LabKernel::Host)]
    kernel: LabKernel,
}

#[derive(Debug, Args)]
struct LabFailoverArgs {
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
struct LabSoakArgs {
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
struct LabBenchArgs {
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
struct LabBackendArgs {
    /// Where it listens (IP:PORT).
    #[arg(long)]
    listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
struct LabApiserverArgs {
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

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Run a catalog scenario (by name) or a scenario file and tell its story.
    Run(SimRunArgs),
    /// List the catalog.
    List,
    /// Generate random clusters and fault schedules, run them, shrink failures to the
    /// smallest scenario that still fails and write it out.
    Fuzz(SimFuzzArgs),
}

#[derive(Debug, Args)]
struct SimFuzzArgs {
    /// Cases to run.
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// Campaign seed (case i is generated from it and i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Run every case twice and compare the traces (determinism self-check).
    #[arg(long)]
    check_determinism: bool,
    /// Where failing scenarios are written (default `fuzz-failures`); given, the campaign's
    /// run.json, report.md and report.html too (failures linked, histograms of failover
    /// times and outages).
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// Generate exactly this many controllers (1 to 7 otherwise).
    #[arg(long)]
    controllers: Option<u8>,
    /// Simulate exactly this many seconds per case (faults in the first 45 %).
    #[arg(long)]
    duration: Option<u32>,
    /// Which code runs the controllers (see `cplb sim run --driver`); cases the daemon
    /// driver cannot express are skipped and counted.
    #[arg(long, value_enum, default_value = "engine")]
    driver: DriverArg,
}

#[derive(Debug, Args)]
struct SimRunArgs {
    /// A catalog name (see `cplb sim list`) or a scenario file.
    scenario: String,
    /// Seed (default: the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object instead of the story.
    #[arg(long)]
    json: bool,
    /// Also write into this directory: run.json (the run for `cplb report`), report.md and
    /// report.html (the timeline picture), and report.json, story.txt and trace.txt.
    #[arg(long, value_name = "DIR")]
    out: Option<std::path::PathBuf>,
    /// Which code runs the controllers: the engine (the core under the deterministic
    /// simulator) or cplbd's own driver, prober and proxy under turmoil.
    #[arg(long, value_enum, default_value = "engine")]
    driver: DriverArg,
    /// Run both drivers and compare their state changes and failover times (exit 1 when
    /// they differ).
    #[arg(long, conflicts_with = "driver")]
    compare: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DriverArg {
    Engine,
    Daemon,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The configuration file (`-` for stdin).
    file: std::path::PathBuf,
    /// k0s runs with --single (CPLB is refused there).
    #[arg(long)]
    single: bool,
    /// Print JSON instead of YAML.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum PacketCommand {
    /// Decode a VRRP packet given as hex and print it as one JSON object.
    Decode(DecodeArgs),
    /// Encode a VRRP advertisement and print the packet as hex.
    Encode(EncodeArgs),
}

#[derive(Debug, Args)]
struct DecodeArgs {
    /// The packet as hex (white space, `0x` and tcpdump offsets ignored), or `-` for stdin.
    hex: String,
    /// HEX is the VRRP message alone, without an IP header.
    #[arg(long, conflicts_with = "ethernet")]
    payload: bool,
    /// HEX is an Ethernet frame (by default an Ethernet frame is recognised when the bytes
    /// are not an IP packet).
    #[arg(long)]
    ethernet: bool,
    /// With --payload: the IP source address, for the pseudo-header checksum forms.
    #[arg(long, requires = "payload")]
    src: Option<IpAddr>,
    /// With --payload: the IP destination address.
    #[arg(long, requires = "payload")]
    dst: Option<IpAddr>,
    /// Accept unicast VRRP to or from this peer (repeatable, or comma separated).
    #[arg(long = "peer", value_delimiter = ',')]
    peers: Vec<IpAddr>,
    /// VRRPv3-over-IPv4 checksum forms accepted.
    #[arg(long = "checksum-form", value_enum, default_value_t = AcceptedForm::Any)]
    checksum_form: AcceptedForm,
    /// Accept IPv6 advertisements whose first address is not link-local, as keepalived
    /// sends them outside its strict mode (RFC 9568 §5.2.9 requires a link-local one).
    #[arg(long)]
    allow_global_first_ipv6: bool,
    /// With --peer: accept unicast adverts from a peer whatever their TTL / hop limit, as
    /// keepalived does (its IPv6 unicast adverts leave with hop limit 64).
    #[arg(long)]
    unicast_any_ttl: bool,
    /// Print the packet even if its checksum is wrong (checksum_ok: false).
    #[arg(long)]
    ignore_checksum: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AcceptedForm {
    /// RFC 9568 (message only) or pseudo-header.
    Any,
    /// Only RFC 9568, message only.
    Rfc9568,
    /// Only with the IPv4 pseudo-header.
    PseudoHeader,
}

#[derive(Debug, Args)]
struct EncodeArgs {
    /// VRRP version, 2 or 3.
    #[arg(long = "version", visible_alias = "vrrp-version", default_value_t = 3)]
    version: u8,
    /// Virtual router ID, 1..=255.
    #[arg(long)]
    vrid: u8,
    /// Priority: 255 owner, 1..=254 backup, 0 resign.
    #[arg(long, default_value_t = 100)]
    priority: u8,
    /// Advertisement interval in centiseconds (whole seconds × 100 for v2).
    #[arg(long = "advert-interval-cs", visible_alias = "interval-cs", default_value_t = 100)]
    advert_interval_cs: u16,
    /// v2 authentication: none or simple (default: simple when --auth-data is given).
    #[arg(long)]
    auth_type: Option<String>,
    /// v2 simple-text password, at most 8 bytes.
    #[arg(long, visible_alias = "auth-pass")]
    auth_data: Option<String>,
    /// A virtual address (repeatable, or comma separated); IPv6 starts with the link-local one.
    #[arg(long = "address", visible_alias = "addresses", value_delimiter = ',', required = true)]
    addresses: Vec<IpAddr>,
    /// IP source: the primary IPv4 address, or the IPv6 link-local address.
    #[arg(long)]
    src: IpAddr,
    /// IP destination (default: 224.0.0.18 or ff02::12).
    #[arg(long)]
    dst: Option<IpAddr>,
    /// TTL / hop limit.
    #[arg(long, default_value_t = 255)]
    ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    #[arg(long, default_value_t = 0xc0)]
    tos: u8,
    /// IPv4 identification.
    #[arg(long, default_value_t = 0)]
    identification: u16,
    /// VRRPv3-over-IPv4 checksum: rfc9568 (default) or pseudo-header.
    #[arg(long)]
    checksum_form: Option<String>,
    /// Print only the VRRP message, without the IP header.
    #[arg(long)]
    payload: bool,
}

fn main() -> ExitCode {
    // RUST_LOG=cplb_netns=debug: the daemon code's logs (under `--driver daemon` too).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            emit(&e.to_string());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            return fail(
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or("bad arguments")
                    .trim_start_matches("error: "),
            );
        }
    };
    match run(cli) {
        Ok(done) => {
            if !done.stdout.is_empty() {
                emit(&format!("{}\n", done.stdout));
            }
            ExitCode::from(done.code)
        }
        Err(message) => fail(&message),
    }
}

/// What a command printed and its exit code: 0 success, 1 a check failed (an expectation,
/// an invariant, a fuzz case), 2 bad input (already reported on stderr).
struct Done {
    stdout: String,
    code: u8,
}

impl Done {
    fn ok(stdout: String) -> Self {
        Self { stdout, code: 0 }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn run(cli: Cli) -> Result<Done, String> {
    match cli.command {
        Command::Validate(args) => validate(args),
        Command::Status(args) => status(&args),
        Command::Lab(cmd) => lab(cmd),
        Command::Report(args) => report(&args),
        Command::Sim(SimCommand::List) => Ok(Done::ok(
            cplb_scenarios::catalog::CATALOG
                .iter()
                .map(|(name, text)| {
                    let about = cplb_scenarios::scenario::parse(name, text)
                        .map(|s| s.description)
                        .unwrap_or_default();
                    format!("{name:<28} {}", about.split(". ").next().unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )),
        Command::Sim(SimCommand::Run(args)) => sim_run(args),
        Command::Sim(SimCommand::Fuzz(args)) => sim_fuzz(args),
        Command::Packet(PacketCommand::Decode(args)) => decode(args).map(Done::ok),
        Command::Packet(PacketCommand::Encode(args)) => encode(args).map(Done::ok),
    }
}

/// `cplb report`: exit 0 with the files written, 2 when RUN.json is unreadable or not a run.
fn report(args: &ReportArgs) -> Result<Done, String> {
    let text =
        std::fs::read_to_string(&args.run).map_err(|e| format!("{}: {e}", args.run.display()))?;
    let rendered =
        cplb_reports::render(&text).map_err(|e| format!("{}: {e}", args.run.display()))?;
    let beside = |name: &str| args.run.parent().unwrap_or(std::path::Path::new(".")).join(name);
    let (html, md) = match (&args.html, &args.md, &args.svg) {
        (None, None, None) => (Some(beside("report.html")), Some(beside("report.md"))),
        (h, m, _) => (h.clone(), m.clone()),
    };
    let svg = match &args.svg {
        Some(path) => {
            let run = cplb_reports::Run::from_json(&text).map_err(|e| {
                format!("{}: --svg draws a run, not a campaign: {e}", args.run.display())
            })?;
            Some((path.clone(), cplb_reports::timeline(&run)))
        }
        None => None,
    };
    let mut wrote = Vec::new();
    let svg_file = svg.as_ref().map(|(p, _)| p.clone());
    let svg_body = svg.map(|(_, b)| b).unwrap_or_default();
    for (path, body) in [(html, &rendered.html), (md, &rendered.markdown), (svg_file, &svg_body)] {
        if let Some(path) = path {
            std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
            wrote.push(path.display().to_string());
        }
    }
    Ok(Done::ok(format!("wrote {}", wrote.join(" and "))))
}

fn status(args: &StatusArgs) -> Result<Done, String> {
    use cplb_netns::status;
    let snapshot = status::query(&args.socket, std::time::Duration::from_secs(2))?;
    if args.json {
        let text = serde_json::to_string_pretty(&snapshot).map_err(|e| e.to_string())?;
        Ok(Done::ok(text))
    } else {
        Ok(Done::ok(status::render(&snapshot).trim_end().to_owned()))
    }
}

fn lab(cmd: LabCommand) -> Result<Done, String> {
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

fn sim_run(args: SimRunArgs) -> Result<Done, String> {
    let (file, text) = match cplb_scenarios::catalog::get(&args.scenario) {
        Some(text) => (format!("catalog/{}.yaml", args.scenario), text.to_owned()),
        None => {
            let text = std::fs::read_to_string(&args.scenario).map_err(|e| {
                format!(
                    "{}: not a catalog scenario (see cplb sim list) nor a readable file: {e}",
                    args.scenario
                )
            })?;
            (args.scenario.clone(), text)
        }
    };
    let scenario = cplb_scenarios::scenario::parse(&file, &text).map_err(|e| e.to_string())?;
    let seed = args.seed.unwrap_or(scenario.seed);
    if args.compare {
        let c = cplb_scenarios::compare::compare(&scenario, seed).map_err(|e| e.to_string())?;
        let mut out = c.text.trim_end().to_owned();
        if !c.differences.is_empty() {
            out.push_str(&format!(
                "\n{} difference(s); replay with: cplb sim run {} --seed {seed} --compare",
                c.differences.len(),
                args.scenario
            ));
        }
        return Ok(Done { stdout: out, code: if c.differences.is_empty() { 0 } else { 1 } });
    }
    let report = match args.driver {
        DriverArg::Engine => {
            if let Some(why) = cplb_scenarios::run::engine_refuses(&scenario) {
                return Err(why);
            }
            cplb_scenarios::run::run(&scenario, seed)
        }
        DriverArg::Daemon => {
            cplb_scenarios::run::run_daemon(&scenario, seed).map_err(|e| e.to_string())?
        }
    };
    let json = cplb_scenarios::run::to_json(&report);
    let story = cplb_scenarios::run::story(&report);
    if let Some(dir) = &args.out {
        let write = |name: &str, body: String| {
            std::fs::write(dir.join(name), body)
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write("report.json", format!("{json:#}\n"))?;
        write("story.txt", story.clone())?;
        write("trace.txt", report.outcome.timeline.join("\n") + "\n")?;
        let run = cplb_scenarios::report::run_of(&scenario, &report);
        let html = cplb_reports::write_run(dir, &run)?;
        eprintln!("report: {}", html.display());
    }
    let out = if args.json { json.to_string() } else { story.trim_end().to_owned() };
    if !report.outcome.violations.is_empty() {
        eprintln!(
            "seed {seed}: invariant violated; replay with: cplb sim run {} --seed {seed}",
            args.scenario
        );
    }
    Ok(Done { stdout: out, code: if report.ok { 0 } else { 1 } })
}

fn sim_fuzz(args: SimFuzzArgs) -> Result<Done, String> {
    use cplb_scenarios::fuzz;
    if args.controllers.is_some_and(|c| !(1..=7).contains(&c)) {
        return Err("--controllers takes 1 to 7".into());
    }
    if args.duration.is_some_and(|d| !(30..=86_400).contains(&d)) {
        return Err("--duration takes 30 to 86400 seconds".into());
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let campaign = fuzz::Campaign {
        cases: args.cases,
        seed: args.seed,
        jobs,
        determinism: args.check_determinism,
        out_dir: args.out.clone().unwrap_or_else(|| "fuzz-failures".into()),
        shape: fuzz::Shape { controllers: args.controllers, duration_s: args.duration },
        max_shrink: 500,
        daemon: args.driver == DriverArg::Daemon,
    };
    let bar = indicatif::ProgressBar::new(args.cases);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cases, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let summary = fuzz::campaign(&campaign, &|_| bar.inc(1));
    bar.finish_and_clear();
    if let Some(dir) = &args.out {
        let page = summary.campaign(args.seed, campaign.daemon, dir);
        let html = cplb_reports::write_campaign(dir, &page)?;
        eprintln!("report: {}", html.display());
    }
    let out = if args.json {
        serde_json::json!({
            "cases": summary.cases,
            "failures": summary.failures.len(),
            "cases_per_sec": summary.cases_per_sec(),
            "skipped": summary.skipped,
            "driver": if args.driver == DriverArg::Daemon { "daemon" } else { "engine" },
            "simulated_s": summary.simulated_s,
            "seed": args.seed,
            "failed_cases": summary.failures.iter().map(|f| serde_json::json!({
                "case": f.case, "seed": f.seed, "path": f.path.display().to_string(), "reason": f.reason,
            })).collect::<Vec<_>>(),
        })
        .to_string()
    } else {
        let mut s = format!(
            "{} cases, {} failed, {:.1} simulated hours, {:.0} cases/s ({} threads, seed {})",
            summary.cases,
            summary.failures.len(),
            summary.simulated_s / 3600.0,
            summary.cases_per_sec(),
            jobs,
            args.seed
        );
        if args.driver == DriverArg::Daemon {
            s.push_str(&format!(
                "\ndriver daemon: {} case(s) skipped (a fault or setting turmoil or k0s.yaml cannot express)",
                summary.skipped
            ));
        }
        for f in &summary.failures {
            s.push_str(&format!(
                "\nFAILED case {} (scenario seed {}): {}\n  replay: cplb sim run {}{}",
                f.case,
                f.seed,
                f.reason,
                f.path.display(),
                if args.driver == DriverArg::Daemon { " --driver daemon" } else { "" }
            ));
        }
        s
    };
    Ok(Done { stdout: out, code: if summary.failures.is_empty() { 0 } else { 1 } })
}

fn validate(args: ValidateArgs) -> Result<Done, String> {
    let text = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading stdin: {e}"))?;
        text
    } else {
        let bytes =
            std::fs::read(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
        String::from_utf8(bytes).map_err(|e| {
            format!(
                "{}: not UTF-8 text (byte {} is invalid)",
                args.file.display(),
                e.utf8_error().valid_up_to()
            )
        })?
    };
    let outcome = cplb_scenarios::validate::validate(&text, args.single, args.json);
    for line in &outcome.stderr {
        eprintln!("{line}");
    }
    // On failure the errors are already on stderr, one per line, and stdout stays empty.
    Ok(Done { stdout: outcome.stdout.trim_end().to_owned(), code: outcome.exit_code })
}

fn decode(args: DecodeArgs) -> Result<String, String> {
    let text = if args.hex == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("reading stdin: {e}"))?;
        text
    } else {
        args.hex
    };
    let opts = DecodeOptions {
        framing: match (args.payload, args.ethernet) {
            (true, _) => Framing::Payload,
            (false, true) => Framing::Ethernet,
            (false, false) => Framing::Ip,
        },
        src: args.src,
        dst: args.dst,
        rules: ReceiveRules {
            unicast_peers: args.peers,
            checksum: match args.checksum_form {
                AcceptedForm::Any => ChecksumPolicy::AcceptBoth,
                AcceptedForm::Rfc9568 => ChecksumPolicy::Only(V3Ipv4Checksum::Rfc9568),
                AcceptedForm::PseudoHeader => ChecksumPolicy::Only(V3Ipv4Checksum::PseudoHeader),
            },
            allow_global_first_ipv6: args.allow_global_first_ipv6,
            unicast_any_ttl: args.unicast_any_ttl,
        },
        ignore_checksum: args.ignore_checksum,
    };
    let report = packet::decode(&text, &opts).map_err(|e| e.to_string())?;
    serde_json::to_string(&report).map_err(|e| format!("writing JSON: {e}"))
}

fn encode(args: EncodeArgs) -> Result<String, String> {
    let opts = EncodeOptions {
        version: args.version,
        vrid: args.vrid,
        priority: args.priority,
        advert_interval_cs: args.advert_interval_cs,
        auth_type: args.auth_type,
        auth_data: args.auth_data,
        addresses: args.addresses,
        src: args.src,
        dst: args.dst,
        ttl: args.ttl,
        tos: args.tos,
        identification: args.identification,
        checksum_form: args.checksum_form,
        payload: args.payload,
    };
    packet::encode(&opts).map_err(|e| e.to_string())
}

//! `cplb`: tools around the cplb core.
//!
//! Exit codes: 0 success, 2 for any error (bad input, a packet that breaks a rule, bad
//! arguments), with one line on stderr.

use std::io::Read as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod lab;
mod output;
mod packet;
mod sim;

use self::lab::{LabCommand, lab};
use self::output::{Done, emit, fail};
use self::packet::{PacketCommand, decode, encode};
use self::sim::{SimCommand, sim_fuzz, sim_run};

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

//! `cplb sim`: scenarios run on the engine or on cplbd's own code under turmoil, compared,
//! fuzzed.

use clap::{Args, Subcommand};

use crate::output::Done;
#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// Run a catalog scenario (by name) or a scenario file and tell its story.
    Run(SimRunArgs),
    /// List the catalog.
    List,
    /// Generate random clusters and fault schedules, run them, shrink failures to the
    /// smallest scenario that still fails and write it out.
    Fuzz(SimFuzzArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SimFuzzArgs {
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
pub(crate) struct SimRunArgs {
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
pub(crate) enum DriverArg {
    Engine,
    Daemon,
}

pub(crate) fn sim_run(args: SimRunArgs) -> Result<Done, String> {
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

pub(crate) fn sim_fuzz(args: SimFuzzArgs) -> Result<Done, String> {
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

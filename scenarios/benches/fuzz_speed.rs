//! Fuzzing throughput: `cargo bench -p cplb-scenarios --bench fuzz_speed` runs generated
//! 3-controller, 60-simulated-second cases on every core and prints cases per second.

use cplb_scenarios::fuzz::{Campaign, Shape, campaign};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cases = if quick { 500 } else { 20_000 };
    let jobs = std::thread::available_parallelism().map_or(1, usize::from);
    let c = Campaign {
        cases,
        seed: 2026,
        jobs,
        determinism: false,
        out_dir: std::env::temp_dir().join("cplb-fuzz-bench"),
        shape: Shape { controllers: Some(3), duration_s: Some(60) },
        max_shrink: 100,
        daemon: false,
    };
    let s = campaign(&c, &|_| {});
    println!(
        "fuzz: {} generated 3-controller 60 s cases on {jobs} threads in {:.2} s: {:.0} cases/s, {:.0}x real time, {} failures",
        s.cases,
        s.wall_s,
        s.cases_per_sec(),
        s.simulated_s / s.wall_s,
        s.failures.len()
    );
}

//! The fuzzer: a fixed-seed batch of generated scenarios must hold, generation is
//! reproducible, a generated case replays from its written file, and the regressions it
//! found stay fixed.

use cplb_scenarios::fuzz::{self, Campaign, Shape, Verdict, check, generate};
use cplb_scenarios::scenario::parse;
use proptest::prelude::*;

fn batch(cases: u64, seed: u64, shape: Shape) -> fuzz::Summary {
    let out_dir = std::env::temp_dir().join(format!("cplb-fuzz-{}-{seed}", std::process::id()));
    let c = Campaign {
        cases,
        seed,
        jobs: 2,
        determinism: false,
        out_dir,
        shape,
        max_shrink: 200,
        daemon: false,
    };
    fuzz::campaign(&c, &|_| {})
}

#[test]
fn a_fixed_seed_batch_of_generated_scenarios_holds() {
    let summary = batch(400, 20_251_125, fuzz::default_shape());
    let failures: Vec<String> = summary
        .failures
        .iter()
        .map(|f| {
            format!(
                "case {} seed {}: {} (replay: cplb sim run {})",
                f.case,
                f.seed,
                f.reason,
                f.path.display()
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(summary.simulated_s > 400.0 * 40.0, "cases ran: {} s simulated", summary.simulated_s);
}

#[test]
fn a_fixed_seed_batch_of_three_controller_minutes_holds() {
    let summary = batch(200, 7, Shape { controllers: Some(3), duration_s: Some(60) });
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    assert!((summary.simulated_s - 200.0 * 60.0).abs() < 1.0);
}

#[test]
fn generation_is_reproducible_and_replays_from_the_written_file() {
    for i in 0..50 {
        let a = generate(99, i, fuzz::default_shape());
        let b = generate(99, i, fuzz::default_shape());
        assert_eq!(a, b, "case {i}");
        let yaml = a.to_yaml(fuzz::default_shape());
        let s1 = parse("x", &yaml).expect("parses");
        let r1 = cplb_scenarios::run::run(&s1, s1.seed);
        let s2 = parse("x", &yaml).expect("parses");
        let r2 = cplb_scenarios::run::run(&s2, s2.seed);
        assert_eq!(r1.outcome.trace_hash, r2.outcome.trace_hash, "case {i}");
    }
}

#[test]
fn the_new_faults_are_drawn_and_the_repair_waits_for_kernel_refusals() {
    use cplb_scenarios::fuzz::GenFault;
    use cplb_sim::{Fault, ReloadConfig};
    let fixed = Shape { controllers: Some(3), duration_s: Some(60) };
    let mut seen = [0usize; 4];
    for shape in [fuzz::default_shape(), fixed] {
        for i in 0..200 {
            let case = generate(11, i, shape);
            let s = parse("x", &case.to_yaml(shape)).unwrap_or_else(|e| panic!("case {i}: {e}"));
            let repair = s.spec.faults.iter().map(|f| f.at).max().unwrap_or_default();
            for f in &s.spec.faults {
                match &f.fault {
                    Fault::VipRemoved(_) => seen[0] += 1,
                    Fault::KernelRefuses(_, d) => {
                        seen[1] += 1;
                        let slack = if shape.duration_s.is_some() {
                            std::time::Duration::ZERO
                        } else {
                            std::time::Duration::from_secs(2)
                        };
                        assert!(
                            f.at + *d + slack <= repair,
                            "case {i}: the refusal outlasts the repair"
                        );
                    }
                    Fault::Reload(_, ReloadConfig::Same) => seen[2] += 1,
                    Fault::Reload(_, ReloadConfig::New(c)) => {
                        seen[3] += 1;
                        let n = c.enabled_keepalived().map_or(0, |k| k.vrrp_instances.len());
                        assert_eq!(
                            n,
                            usize::from(case.instances) + 1,
                            "case {i}: one more instance"
                        );
                    }
                    _ => {}
                }
            }
            let added = case.faults.iter().filter(|(_, f)| *f == GenFault::ReloadAdded).count();
            let reloads = s
                .spec
                .faults
                .iter()
                .filter(|f| matches!(f.fault, Fault::Reload(_, ReloadConfig::New(_))))
                .count();
            assert_eq!(reloads, added * case.controllers.len(), "case {i}: every controller");
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "drawn: {seen:?}");
}

#[test]
fn the_loop_guard_is_what_keeps_the_crash_scenario_loop_free() {
    let text = cplb_scenarios::catalog::get("regress-crash-ipvs-loop").expect("catalog");
    let s = parse("regress-crash-ipvs-loop", text).expect("parses");
    let mut sim = cplb_sim::Sim::new(s.spec.clone(), s.seed);
    sim.set_loop_guard(false);
    let o = sim.run();
    assert!(o.forwarding_loops > 0, "without the guard the stale director loops");
    assert!(o.violations.iter().any(|v| v.invariant == "no_forwarding_loop"));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// The same property through proptest's own runner, so shrunk failures are persisted in
    /// tests/regressions/ and replayed first on every run.
    #[test]
    fn generated_scenarios_hold(case in fuzz::case(fuzz::default_shape())) {
        match check(&case, fuzz::default_shape(), false) {
            Verdict::Held(_) | Verdict::Skipped(_) => {}
            Verdict::Failed(why) => prop_assert!(false, "{}\n{}", why, case.to_yaml(fuzz::default_shape())),
        }
    }
}

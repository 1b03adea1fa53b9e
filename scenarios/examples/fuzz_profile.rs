//! Where a fuzz case's time goes: generation, YAML round trip, simulation.
use cplb_scenarios::fuzz::{Shape, generate};
use cplb_scenarios::scenario::parse;
use std::time::Instant;

fn main() {
    let shape = Shape { controllers: Some(3), duration_s: Some(60) };
    let n = 2000;
    let t = Instant::now();
    let cases: Vec<_> = (0..n).map(|i| generate(3, i, shape)).collect();
    println!("generate: {:.1} us/case", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    let scenarios: Vec<_> =
        cases.iter().map(|c| parse("g", &c.to_yaml(shape)).expect("parses")).collect();
    println!("render+parse: {:.1} us/case", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let t = Instant::now();
    let mut events = 0;
    for s in &scenarios {
        events += cplb_sim::Sim::new(s.spec.clone(), s.seed).run().events;
    }
    let e = t.elapsed().as_secs_f64();
    println!(
        "simulate: {:.1} us/case, {} events/case, {:.0} ns/event",
        e * 1e6 / n as f64,
        events / n,
        e * 1e9 / events as f64
    );
}

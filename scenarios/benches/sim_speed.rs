//! How much faster than real time the simulator runs, against a turmoil baseline.
//!
//! `cargo bench -p cplb-scenarios --bench sim_speed` prints, for `seed-poweroff` (3
//! controllers, 3 workers at 10 connections/s each, health checks, a power-off), simulated
//! seconds per wall second; and, in the same run, the same for a plain three-host UDP
//! multicast exchange at one datagram per second per host under turmoil with its 1 ms tick;
//! and `seed-poweroff` itself under `--driver daemon` (cplbd's driver, prober and proxy on
//! turmoil), so the engine's and the daemon driver's speeds come from one run.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use cplb_scenarios::catalog;
use cplb_scenarios::run::{run, run_daemon};
use cplb_scenarios::scenario::parse;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 0, 0, 18);
const PORT: u16 = 1112;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, turmoil_secs) = if quick { (2, 60) } else { (20, 600) };

    let mut scenario =
        parse("seed-poweroff", catalog::get("seed-poweroff").expect("catalog")).expect("parses");
    scenario.spec.duration = Duration::from_secs(3600);
    // Warm up, then measure.
    let _ = run(&scenario, 1);
    let started = Instant::now();
    let mut simulated = 0.0;
    let mut events = 0u64;
    for seed in 0..rounds {
        let r = run(&scenario, seed);
        assert!(r.ok, "seed-poweroff failed with seed {seed}");
        simulated += r.outcome.simulated.as_secs_f64();
        events += r.outcome.events;
    }
    let wall = started.elapsed().as_secs_f64();
    let sim_speed = simulated / wall;
    println!(
        "cplb-sim seed-poweroff (1 h simulated x {rounds}): {simulated:.0} simulated s in {wall:.3} wall s"
    );
    println!(
        "  {sim_speed:.0}x real time, {:.0} events/s, {:.0} ns/event",
        events as f64 / wall,
        wall * 1e9 / events as f64
    );

    let started = Instant::now();
    let sent = turmoil_multicast(turmoil_secs);
    let wall = started.elapsed().as_secs_f64();
    let turmoil_speed = turmoil_secs as f64 / wall;
    println!(
        "turmoil 3-host UDP multicast, 1 datagram/s/host, 1 ms tick ({turmoil_secs} s simulated, {sent} datagrams): {wall:.3} wall s"
    );
    println!("  {turmoil_speed:.0}x real time");
    println!(
        "ratio: cplb-sim is {:.0}x faster than the turmoil baseline",
        sim_speed / turmoil_speed
    );

    // The catalog's seed-poweroff as it is (120 s simulated), under the real daemon code.
    let scenario =
        parse("seed-poweroff", catalog::get("seed-poweroff").expect("catalog")).expect("parses");
    let daemon_rounds = if quick { 2 } else { 5 };
    let started = Instant::now();
    let mut simulated = 0.0;
    for seed in 0..daemon_rounds {
        let r = run_daemon(&scenario, seed).expect("the daemon driver runs seed-poweroff");
        assert!(r.ok, "seed-poweroff under --driver daemon failed with seed {seed}");
        simulated += r.outcome.simulated.as_secs_f64();
    }
    let wall = started.elapsed().as_secs_f64();
    let daemon_speed = simulated / wall;
    println!(
        "--driver daemon seed-poweroff (120 s simulated x {daemon_rounds}): {simulated:.0} simulated s in {wall:.3} wall s"
    );
    println!("  {daemon_speed:.0}x real time");
    println!(
        "ratio: the engine is {:.0}x faster than --driver daemon on seed-poweroff",
        sim_speed / daemon_speed
    );
}

/// Three hosts join a multicast group; each sends one datagram a second and reads what the
/// others send. Returns the datagrams received.
fn turmoil_multicast(secs: u64) -> u64 {
    let mut sim = turmoil::Builder::new()
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(secs + 5))
        .build();
    let received = std::rc::Rc::new(std::cell::Cell::new(0u64));
    for i in 0..3u8 {
        sim.host(format!("h{i}"), move || async move {
            let socket =
                turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
            socket.join_multicast_v4(GROUP, Ipv4Addr::UNSPECIFIED)?;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut buf = [0u8; 64];
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        socket.send_to(&[i; 20], (GROUP, PORT)).await?;
                    }
                    r = socket.recv_from(&mut buf) => { r?; }
                }
            }
        });
    }
    let counter = received.clone();
    sim.client("observer", async move {
        let socket =
            turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
        socket.join_multicast_v4(GROUP, Ipv4Addr::UNSPECIFIED)?;
        let mut buf = [0u8; 64];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while tokio::time::Instant::now() < deadline {
            if tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
                .await
                .is_ok()
            {
                counter.set(counter.get() + 1);
            }
        }
        Ok(())
    });
    sim.run().expect("turmoil run");
    received.get()
}

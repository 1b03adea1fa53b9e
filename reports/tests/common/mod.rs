//! A known run, by hand: the seed's three controllers, a power-off of the master at 10 s,
//! a failover to controller-1, a client whose connections fail for 2.6 s.

use cplb_reports::{Attempt, Client, Failover, FaultSpan, Instance, Run, Span, StateChange};

pub(crate) fn known_run() -> Run {
    let state = |at_s: f64, host: &str, state: &str| StateChange {
        at_s,
        host: host.into(),
        instance: 0,
        state: state.into(),
    };
    let mut attempts = Vec::new();
    for i in 0..300 {
        let at_s = f64::from(i) * 0.1;
        // Failing from the power-off until the VIP answers through controller-1.
        attempts.push(Attempt { at_s, source: 0, ok: !(10.0..12.65).contains(&at_s) });
    }
    Run {
        driver: "engine".into(),
        title: "seed-poweroff".into(),
        description: "The seed's cluster; the master loses power.".into(),
        seed: Some(7),
        duration_s: 30.0,
        ok: true,
        hosts: vec![
            "controller-0".into(),
            "controller-1".into(),
            "controller-2".into(),
            "client".into(),
        ],
        instances: vec![Instance { name: "k0s-vip-0".into(), vips: vec!["192.168.122.200".into()] }],
        states: vec![
            state(0.0, "controller-0", "backup"),
            state(0.0, "controller-1", "backup"),
            state(0.0, "controller-2", "backup"),
            state(3.2, "controller-0", "master"),
            state(10.0, "controller-0", "down"),
            state(12.6, "controller-1", "master"),
            state(20.0, "controller-0", "initialize"),
            state(20.1, "controller-0", "backup"),
        ],
        vip_holders: vec![
            Span { instance: 0, host: "controller-0".into(), from_s: 3.2, until_s: Some(10.0) },
            Span { instance: 0, host: "controller-1".into(), from_s: 12.6, until_s: None },
        ],
        faults: vec![FaultSpan {
            at_s: 10.0,
            until_s: Some(20.0),
            label: "poweroff controller-0".into(),
            hosts: vec!["controller-0".into()],
        }],
        attempts,
        failovers: vec![Failover {
            instance: 0,
            from: "controller-0".into(),
            to: "controller-1".into(),
            fault_at_s: Some(10.0),
            new_master_at_s: 12.6,
            vip_answering_at_s: Some(12.7),
            failover_s: Some(2.7),
        }],
        clients: vec![Client {
            name: "client → 192.168.122.200".into(),
            attempts: 300,
            failed: 27,
            longest_outage_s: 2.7,
        }],
        violations: vec![],
        views_before: "$ ip -o addr show dev eth0   # controller-0\n2: eth0    inet 192.168.122.37/24\n2: eth0    inet 192.168.122.200/24 secondary".into(),
        views_after: "$ ip -o addr show dev eth0   # controller-1\n2: eth0    inet 192.168.122.185/24\n2: eth0    inet 192.168.122.200/24 secondary".into(),
        timeline: vec!["   10.000000 FAULT poweroff controller-0".into()],
    }
}

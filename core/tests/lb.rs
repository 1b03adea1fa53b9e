//! Load balancing: the schedulers' kernel semantics, persistence, health checking, and the
//! desired data plane with its diff.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use cplb_core::config::{LbAlgo, LbKind, LoadOptions, load};
use cplb_core::lb::{
    Change, DataPlane, FWMARK_BASE, HealthChecker, HealthConfig, RealServer, ServiceKey,
    VirtualService, apply, desired, diff,
};
use cplb_core::time::Instant;
use proptest::prelude::*;

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 200));

fn server(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 200, 0, 10 + i)), 6443)
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a64_0000 + i))
}

fn service(algo: LbAlgo, persistence: Option<Duration>, weights: &[u32]) -> VirtualService {
    let mut vs =
        VirtualService::new(ServiceKey { vip: VIP, port: 6443 }, algo, LbKind::Dr, persistence);
    let servers: Vec<RealServer> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| RealServer { addr: server(i as u8), weight: w })
        .collect();
    vs.set_real_servers(&servers);
    vs
}

/// Picks for `n` new connections from distinct clients, closing each at once.
fn picks(vs: &mut VirtualService, n: u32) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| {
            let s = vs.schedule(Instant::ZERO, client(i)).expect("a server");
            vs.connection_closed(Instant::ZERO, client(i), s);
            s
        })
        .collect()
}

fn counts(picks: &[SocketAddr]) -> BTreeMap<SocketAddr, usize> {
    let mut m = BTreeMap::new();
    for p in picks {
        *m.entry(*p).or_default() += 1;
    }
    m
}

proptest! {
    #[test]
    fn rr_is_fair_over_every_cycle(n in 1usize..8, cycles in 1u32..5) {
        let mut vs = service(LbAlgo::Rr, None, &vec![1; n]);
        let p = picks(&mut vs, n as u32 * cycles);
        for chunk in p.chunks(n) {
            let mut c = chunk.to_vec();
            c.sort();
            c.dedup();
            prop_assert_eq!(c.len(), n, "every server once per cycle");
        }
    }

    #[test]
    fn wrr_follows_the_weights(weights in proptest::collection::vec(1u32..8, 1..6)) {
        let g = weights.iter().copied().fold(0, |a, b| { let (mut a, mut b) = (a, b); while b != 0 { (a, b) = (b, a % b); } a });
        let cycle: u32 = weights.iter().map(|w| w / g).sum();
        let mut vs = service(LbAlgo::Wrr, None, &weights);
        let p = picks(&mut vs, cycle * 3);
        let c = counts(&p);
        for (i, w) in weights.iter().enumerate() {
            prop_assert_eq!(c.get(&server(i as u8)).copied().unwrap_or(0), (w / g * 3) as usize, "server {} weight {}", i, w);
        }
    }

    #[test]
    fn persistence_holds_within_the_timeout_and_expires_after(
        algo in prop::sample::select(LbAlgo::ALL.to_vec()),
        timeout_s in 1u64..1000,
        within in 0.0f64..1.0,
    ) {
        let timeout = Duration::from_secs(timeout_s);
        let mut vs = service(algo, Some(timeout), &[1, 1, 1]);
        let c = client(7);
        let t0 = Instant::from_secs(10);
        let first = vs.schedule(t0, c).expect("server");
        vs.connection_closed(t0, c, first);
        // Other clients move the scheduler on.
        for i in 0..5 {
            let s = vs.schedule(t0, client(100 + i)).expect("server");
            vs.connection_closed(t0, client(100 + i), s);
        }
        let inside = t0 + timeout.mul_f64(within);
        let again = vs.schedule(inside, c).expect("server");
        prop_assert_eq!(again, first, "sticks within the timeout");
        vs.connection_closed(inside, c, again);
        let after = inside + timeout;
        prop_assert_eq!(vs.persistent_server(after, c), None, "expired after the timeout");
    }

    #[test]
    fn a_removed_real_server_is_never_chosen(
        algo in prop::sample::select(LbAlgo::ALL.to_vec()),
        persistent in any::<bool>(),
        removed in 0u8..4,
        clients in 1u32..200,
    ) {
        let mut vs = service(algo, persistent.then(|| Duration::from_secs(360)), &[1, 1, 1, 1]);
        for i in 0..clients {
            let _ = vs.schedule(Instant::ZERO, client(i));
        }
        let keep: Vec<RealServer> = (0..4).filter(|i| *i != removed).map(|i| RealServer { addr: server(i), weight: 1 }).collect();
        vs.set_real_servers(&keep);
        for i in 0..clients * 2 {
            if let Some(s) = vs.schedule(Instant::from_secs(1), client(i)) {
                prop_assert_ne!(s, server(removed));
            }
        }
    }
}

#[test]
fn least_connection_family_follows_the_kernel() {
    // Three servers, weights 1, 2, 3; hold connections open so counts build up.
    let open = |algo: LbAlgo, n: u32| {
        let mut vs = service(algo, None, &[1, 2, 3]);
        for i in 0..n {
            vs.schedule(Instant::ZERO, client(i)).expect("server");
        }
        vs.destinations().iter().map(|d| d.active).collect::<Vec<_>>()
    };
    assert_eq!(open(LbAlgo::Lc, 6), [2, 2, 2], "lc ignores weights");
    assert_eq!(open(LbAlgo::Wlc, 6), [1, 2, 3], "wlc balances active/weight");
    assert_eq!(open(LbAlgo::Sed, 6), [1, 2, 3], "sed: (active+1)/weight");
    // nq: an idle server first, then like sed.
    let mut vs = service(LbAlgo::Nq, None, &[1, 1, 5]);
    let firsts: Vec<SocketAddr> =
        (0..3).map(|i| vs.schedule(Instant::ZERO, client(i)).expect("s")).collect();
    assert_eq!(counts(&firsts).len(), 3, "every idle server gets one before any gets two");
}

#[test]
fn hashing_schedulers_are_stable() {
    let mut sh = service(LbAlgo::Sh, None, &[1, 1, 1]);
    let a = picks(&mut sh, 1)[0];
    for _ in 0..10 {
        assert_eq!(
            sh.schedule(Instant::ZERO, client(0)),
            Some(a),
            "sh: a client always lands on one server"
        );
    }
    let spread = counts(
        &(0..300)
            .map(|i| sh.schedule(Instant::ZERO, client(i * 7919)).expect("s"))
            .collect::<Vec<_>>(),
    );
    assert_eq!(spread.len(), 3, "sh spreads clients");
    let mut dh = service(LbAlgo::Dh, None, &[1, 1, 1]);
    let d = counts(&picks(&mut dh, 50));
    assert_eq!(d.len(), 1, "dh: one destination address, one server");
}

#[test]
fn lblc_sticks_until_overloaded() {
    let mut vs = service(LbAlgo::Lblc, None, &[2, 2]);
    let first = vs.schedule(Instant::ZERO, client(0)).expect("s");
    assert_eq!(vs.schedule(Instant::ZERO, client(1)), Some(first));
    assert_eq!(vs.schedule(Instant::ZERO, client(2)), Some(first));
    // Now 3 active > weight 2, and the other has 0 < 2/2: lblc moves.
    let moved = vs.schedule(Instant::ZERO, client(3)).expect("s");
    assert_ne!(moved, first);
}

#[test]
fn no_server_means_no_schedule() {
    let mut vs = service(LbAlgo::Rr, None, &[]);
    assert_eq!(vs.schedule(Instant::ZERO, client(0)), None);
    let mut vs = service(LbAlgo::Wrr, None, &[0, 0]);
    assert_eq!(vs.schedule(Instant::ZERO, client(0)), None, "weight 0 is quiesced");
}

// ---------------------------------------------------------------------------------------
// Health checking

struct Checked {
    hc: HealthChecker,
    now: Instant,
}

impl Checked {
    fn new(config: HealthConfig, servers: &[SocketAddr]) -> Self {
        let mut hc = HealthChecker::new(config);
        hc.set_servers(Instant::ZERO, servers);
        Self { hc, now: Instant::ZERO }
    }

    /// Answers every probe with `ok(server)` until `until`.
    fn run(&mut self, until: Instant, ok: impl Fn(SocketAddr) -> bool) {
        loop {
            while let Some(p) = self.hc.poll_probe() {
                self.hc.handle_probe_result(self.now, p.id, ok(p.server));
            }
            match self.hc.poll_timeout() {
                Some(t) if t <= until => {
                    assert!(t >= self.now, "deadline in the past");
                    self.now = t;
                    self.hc.handle_timeout(t);
                }
                _ => break,
            }
        }
        self.now = until;
    }
}

#[test]
fn servers_start_unhealthy_and_rise_on_success() {
    let mut c = Checked::new(HealthConfig::default(), &[server(0), server(1)]);
    assert!(c.hc.usable().len() == 2, "fail open while none is known healthy");
    c.run(Instant::from_millis(10), |s| s == server(0));
    assert!(c.hc.is_healthy(server(0)));
    assert!(!c.hc.is_healthy(server(1)));
    assert_eq!(c.hc.usable(), [server(0)]);
}

#[test]
fn fall_needs_retries_and_consecutive_failures() {
    let config = HealthConfig {
        fall: 2,
        rise: 1,
        retry: 1,
        retry_delay: Duration::from_secs(1),
        interval: Duration::from_secs(1),
        ..HealthConfig::default()
    };
    let mut c = Checked::new(config, &[server(0)]);
    c.run(Instant::from_millis(10), |_| true);
    assert!(c.hc.is_healthy(server(0)));
    let down_at = c.now;
    // Fails from now on: each counted failure takes a probe plus one retry (1 s apart).
    let mut changed = None;
    while changed.is_none() {
        let t = c.now + Duration::from_millis(100);
        c.run(t, |_| false);
        if let Some(ch) = c.hc.poll_change().filter(|ch| !ch.healthy) {
            changed = Some((c.now, ch));
        }
        assert!(c.now < down_at + Duration::from_secs(20), "never went down");
    }
    let (t, _) = changed.expect("went down");
    let took = t - down_at;
    assert!(
        took >= Duration::from_secs(3) && took <= Duration::from_secs(5),
        "2 counted failures with a retry each: {took:?}"
    );
}

#[test]
fn unanswered_probes_time_out_as_failures_and_late_answers_are_ignored() {
    let config = HealthConfig {
        retry: 0,
        initially_healthy: true,
        timeout: Duration::from_secs(3),
        ..HealthConfig::default()
    };
    let mut hc = HealthChecker::new(config);
    hc.set_servers(Instant::ZERO, &[server(0)]);
    let probe = hc.poll_probe().expect("probe");
    assert_eq!(hc.poll_timeout(), Some(probe.deadline));
    hc.handle_timeout(probe.deadline);
    assert!(!hc.is_healthy(server(0)), "timed out");
    hc.handle_probe_result(probe.deadline + Duration::from_secs(1), probe.id, true);
    assert!(!hc.is_healthy(server(0)), "a late answer changes nothing");
}

#[test]
fn fail_open_is_a_choice() {
    let closed = HealthConfig { fail_open: false, ..HealthConfig::default() };
    let mut c = Checked::new(closed, &[server(0), server(1)]);
    c.run(Instant::from_secs(5), |_| false);
    assert!(c.hc.usable().is_empty());
    let mut c = Checked::new(HealthConfig::default(), &[server(0), server(1)]);
    c.run(Instant::from_secs(5), |_| false);
    assert_eq!(c.hc.usable().len(), 2, "k0s: all unhealthy means use all");
}

#[test]
fn removed_servers_are_forgotten() {
    let mut c = Checked::new(HealthConfig::default(), &[server(0), server(1)]);
    c.run(Instant::from_secs(2), |_| true);
    c.hc.set_servers(c.now, &[server(1)]);
    assert_eq!(c.hc.usable(), [server(1)]);
}

// ---------------------------------------------------------------------------------------
// The desired data plane

fn keepalived(text: &str) -> cplb_core::config::Keepalived {
    load(text, LoadOptions::default())
        .expect("valid")
        .config
        .spec
        .network
        .control_plane_load_balancing
        .and_then(|c| c.keepalived)
        .expect("keepalived")
}

const TWO_INSTANCES_IPVS: &str = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      keepalived:\n        vrrpInstances:\n        - {virtualIPs: [\"10.200.0.200/24\"], authPass: a}\n        - {virtualIPs: [\"10.200.0.201/24\"], authPass: b}\n        virtualServers:\n        - {ipAddress: 10.200.0.200}\n        - {ipAddress: 10.200.0.201}\n";

#[test]
fn only_the_master_of_a_vip_programs_its_virtual_service_for_any_number_of_instances() {
    let k = keepalived(TWO_INSTANCES_IPVS);
    let healthy = [server(0), server(1), server(2)];
    let vip201 = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 201));
    let table = desired(&k, 6443, &healthy, &healthy, |vip| vip == vip201);
    assert_eq!(table.services.len(), 1);
    assert_eq!(table.services[0].key.vip, vip201);
    assert_eq!(table.services[0].real_servers.len(), 3);
    assert_eq!(table.services[0].persistence_secs, 360);
    assert_eq!(table.local_vips.len(), 2, "every controller holds every DR VIP locally");
    let backup = desired(&k, 6443, &healthy, &healthy, |_| false);
    assert!(backup.services.is_empty(), "a backup programs no service");

    // Marks follow the configuration's order, not mastership; every controller guards
    // every service, and the guard lists every server, healthy or not.
    assert_eq!(table.services[0].fwmark, FWMARK_BASE + 1);
    let one_healthy = desired(&k, 6443, &healthy, &[server(2)], |_| true);
    let marks: Vec<(IpAddr, u32)> =
        one_healthy.services.iter().map(|s| (s.key.vip, s.fwmark)).collect();
    assert_eq!(marks, [(VIP, FWMARK_BASE), (vip201, FWMARK_BASE + 1)]);
    for table in [&table, &backup, &one_healthy] {
        let guards: Vec<(IpAddr, u32, usize)> = table
            .loop_guards
            .iter()
            .map(|g| (g.service.vip, g.fwmark, g.real_servers.len()))
            .collect();
        assert_eq!(guards, [(VIP, FWMARK_BASE, 3), (vip201, FWMARK_BASE + 1, 3)]);
    }
}

#[test]
fn userspace_and_vip_only_modes() {
    let text = "spec:\n  network:\n    controlPlaneLoadBalancing:\n      enabled: true\n      keepalived:\n        vrrpInstances:\n        - {virtualIPs: [\"10.200.0.200/24\"], authPass: a}\n";
    let k = keepalived(text);
    let table = desired(&k, 6443, &[server(1), server(0)], &[server(1), server(0)], |_| false);
    assert_eq!(table.proxy_port, Some(6444));
    assert_eq!(table.proxy_backends, [server(0), server(1)]);
    assert_eq!(table.redirects, [SocketAddr::new(VIP, 6443)]);
    assert!(table.services.is_empty());
    let k = keepalived(&format!("{text}        disableLoadBalancer: true\n"));
    assert_eq!(desired(&k, 6443, &[server(0)], &[server(0)], |_| true), DataPlane::default());
}

#[test]
fn reconciling_a_stale_table_after_a_restart() {
    let k = keepalived(TWO_INSTANCES_IPVS);
    let all = [server(0), server(1), server(5)];
    let want = desired(&k, 6443, &all, &[server(0), server(1)], |vip| vip == VIP);
    // A predecessor left the other VIP's service and a dead real server behind.
    let mut stale = desired(&k, 6443, &all, &[server(0), server(5)], |_| true);
    let changes = diff(&stale, &want);
    assert!(changes.iter().any(|c| matches!(c, Change::RemoveService(key) if key.vip != VIP)));
    assert!(
        changes.contains(&Change::RemoveRealServer(ServiceKey { vip: VIP, port: 6443 }, server(5)))
    );
    apply(&mut stale, &changes);
    assert_eq!(stale, want);
    assert!(diff(&want, &want).is_empty(), "nothing to do when in step");
}

proptest! {
    #[test]
    fn diff_then_apply_reaches_the_desired_table(
        a_servers in proptest::collection::vec(0u8..6, 0..6),
        b_servers in proptest::collection::vec(0u8..6, 0..6),
        a_master in any::<[bool; 2]>(),
        b_master in any::<[bool; 2]>(),
    ) {
        let k = keepalived(TWO_INSTANCES_IPVS);
        let table = |servers: &[u8], master: [bool; 2]| {
            let s: Vec<SocketAddr> = servers.iter().map(|&i| server(i)).collect();
            let all: Vec<SocketAddr> = (0..6).map(server).collect();
            desired(&k, 6443, &all, &s, |vip| if vip == VIP { master[0] } else { master[1] })
        };
        let mut a = table(&a_servers, a_master);
        let b = table(&b_servers, b_master);
        let changes = diff(&a, &b);
        apply(&mut a, &changes);
        prop_assert_eq!(a, b);
    }
}

#[test]
fn the_health_interval_never_goes_below_its_minimum() {
    let k = keepalived(
        &TWO_INSTANCES_IPVS
            .replace("- {ipAddress: 10.200.0.200}", "- {ipAddress: 10.200.0.200, delayLoop: 1us}"),
    );
    assert_eq!(cplb_core::lb::k0s_health_config(&k).interval, cplb_core::lb::MIN_HEALTH_INTERVAL);
    let k =
        keepalived(&TWO_INSTANCES_IPVS.replace(
            "- {ipAddress: 10.200.0.200}",
            "- {ipAddress: 10.200.0.200, delayLoop: 300ms}",
        ));
    assert_eq!(cplb_core::lb::k0s_health_config(&k).interval, Duration::from_millis(300));
}

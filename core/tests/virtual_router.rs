//! Behaviour of the virtual router on an in-process LAN, one test per rule. Test names are
//! listed in docs/rfc-ledger.md; `the_rfc_ledger_names_only_tests_that_exist` keeps the two
//! in step.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::lan::{IF, Lan, VIP, addr, k0s_instance, tally, v3_instance};
use cplb_core::time::Instant;
use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, Cause, Event, InstanceConfig, Priority, Router, State,
    Track, TrackerConfig, V3Ipv4Checksum, VirtualAddresses, VirtualIp, Vrid,
};

fn secs_f(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The advert node `from` would send, as bytes, with some fields changed.
fn advert_bytes(cfg: &InstanceConfig, change: impl FnOnce(&mut Advertisement)) -> Vec<u8> {
    let mut a = Advertisement {
        version: cfg.version,
        vrid: cfg.vrid,
        priority: cfg.priority,
        interval_cs: cfg.advert_interval_cs,
        auth: cfg.auth,
        addresses: VirtualAddresses::V4(vec![Ipv4Addr::new(10, 200, 0, 200)]),
    };
    change(&mut a);
    a.encode(cfg.primary_address, group(), V3Ipv4Checksum::Rfc9568).expect("encodes")
}

fn group() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18))
}

/// Last time node `i` heard an advert with a non-zero priority before `t`.
fn last_heard_before(lan: &Lan, i: usize, t: Instant) -> Instant {
    lan.nodes[i]
        .heard
        .iter()
        .filter(|(at, _, p)| *at < t && *p > 0)
        .map(|(at, _, _)| *at)
        .max()
        .expect("heard one")
}

// ---------------------------------------------------------------------------------------
// RFC 9568 §6.1: parameters

#[test]
fn rfc9568_6_1_skew_time_v3_is_exact_to_the_nanosecond() {
    // ((256 - 100) × 10 cs) / 256 = 6.09375 cs = 60.9375 ms, and down = 300 ms + that.
    let lan = Lan::new(vec![vec![v3_instance(0, 100, 10)]]);
    let id = lan.nodes[0].instances[0];
    assert_eq!(
        lan.nodes[0].router.master_down_interval(id),
        Some(Duration::from_nanos(360_937_500))
    );
}

#[test]
fn rfc9568_6_1_v3_10cs_priority_100_takes_over_360_9375_ms_after_last_advert() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 10)], vec![v3_instance(1, 100, 10)]]);
    lan.drive_for(secs_f(2.0));
    assert_eq!(lan.masters(), vec![0]);
    lan.power_off(0);
    lan.drive_for(secs_f(1.0));
    let became = lan.entered(1, State::Master).expect("took over");
    assert_eq!(became - last_heard_before(&lan, 1, became), Duration::from_nanos(360_937_500));
}

#[test]
fn rfc3768_6_1_skew_time_is_in_seconds_whatever_the_interval() {
    // v2 priority 100 at 3 s: skew (256-100)/256 s = 0.609375 s, down 9.609375 s.
    let mut cfg = k0s_instance(0);
    cfg.priority = Priority(100);
    cfg.advert_interval_cs = 300;
    let lan = Lan::new(vec![vec![cfg]]);
    let id = lan.nodes[0].instances[0];
    assert_eq!(lan.nodes[0].router.master_down_interval(id), Some(secs_f(9.609375)));
}

#[test]
fn rfc3768_k0s_defaults_backup_takes_over_3_21875_s_after_the_last_advert() {
    let mut lan = Lan::k0s(3);
    lan.drive_for(secs_f(10.0));
    let master = lan.masters()[0];
    lan.power_off(master);
    lan.drive_for(secs_f(5.0));
    for i in (0..3).filter(|&i| i != master) {
        let became = lan.entered(i, State::Master).expect("each backup's timer fired");
        assert_eq!(became - last_heard_before(&lan, i, became), secs_f(3.21875), "node {i}");
    }
    assert_eq!(lan.masters().len(), 1, "the equal-priority contention resolved");
}

#[test]
fn rfc3768_k0s_defaults_priority_zero_takeover_after_0_21875_s() {
    let mut lan = Lan::k0s(3);
    lan.drive_for(secs_f(10.0));
    let master = lan.masters()[0];
    let stop_at = lan.now;
    lan.shutdown(master);
    lan.drive_for(secs_f(2.0));
    let new = lan.masters();
    assert_eq!(new.len(), 1);
    assert_eq!(lan.entered(new[0], State::Master).expect("master") - stop_at, secs_f(0.21875));
}

// ---------------------------------------------------------------------------------------
// RFC 9568 §6.4.1: Initialize

#[test]
fn rfc9568_6_4_1_owner_goes_straight_to_master() {
    let mut cfg = k0s_instance(0);
    cfg.priority = Priority::OWNER;
    let lan = Lan::new(vec![vec![cfg]]);
    assert_eq!(lan.transcript(0), ["Master"]);
    assert!(lan.nodes[0].held.contains(&VIP));
    assert_eq!(lan.wire.len(), 1, "an advert at once");
    assert_eq!(lan.nodes[0].announces.len(), 5, "and the announcement burst");
}

#[test]
fn rfc9568_6_4_1_non_owner_starts_as_backup_for_one_master_down_interval() {
    let mut lan = Lan::k0s(1);
    assert_eq!(lan.transcript(0), ["Backup"]);
    lan.drive_for(secs_f(3.2));
    assert_eq!(lan.state(0), State::Backup);
    lan.drive_for(secs_f(0.02));
    assert_eq!(lan.entered(0, State::Master), Some(Instant::ZERO + secs_f(3.21875)));
}

// ---------------------------------------------------------------------------------------
// RFC 9568 §6.4.2: Backup

#[test]
fn rfc9568_6_4_2_backup_takes_over_when_the_master_down_timer_fires() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 100)], vec![v3_instance(1, 100, 100)]]);
    lan.drive_for(secs_f(5.0));
    lan.power_off(0);
    lan.drive_for(secs_f(5.0));
    assert_eq!(lan.transcript(1), ["Backup", "Master"]);
    assert!(lan.nodes[1].held.contains(&VIP));
    let cause = lan.nodes[1].events.iter().find_map(|(_, e)| match e {
        Event::StateChanged { to: State::Master, cause, .. } => Some(*cause),
        _ => None,
    });
    assert_eq!(cause, Some(Cause::MasterDown));
}

#[test]
fn rfc9568_6_4_2_priority_zero_makes_the_backup_wait_only_skew_time() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 100)], vec![v3_instance(1, 100, 100)]]);
    lan.drive_for(secs_f(5.0));
    let t = lan.now;
    lan.shutdown(0);
    lan.drive_for(secs_f(2.0));
    // (256 - 100) × 100 cs / 256 = 0.609375 s
    assert_eq!(lan.entered(1, State::Master).expect("took over") - t, secs_f(0.609375));
}

#[test]
fn rfc9568_6_4_2_backup_accepts_an_equal_or_higher_priority_master() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 150, 100)], vec![], vec![]]);
    lan.drive_for(secs_f(5.0));
    lan.power_on_with(1, vec![v3_instance(1, 150, 100)]);
    lan.power_on_with(2, vec![v3_instance(2, 100, 100)]);
    lan.drive_for(secs_f(60.0));
    assert_eq!(lan.masters(), vec![0]);
    assert_eq!(lan.transcript(1), ["Backup"]);
    assert_eq!(lan.transcript(2), ["Backup"]);
}

#[test]
fn rfc9568_6_4_2_backup_adopts_the_masters_interval() {
    // The backup is configured for 100 cs but the master sends every 50 cs: the backup
    // takes over 3 × 50 cs + skew after the master's last advert, not 3 × 100 cs.
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 50)], vec![v3_instance(1, 100, 100)]]);
    lan.drive_for(secs_f(5.0));
    lan.power_off(0);
    lan.drive_for(secs_f(5.0));
    let became = lan.entered(1, State::Master).expect("took over");
    // skew = (256-100) × 50 / 256 cs = 30.46875 cs
    assert_eq!(became - last_heard_before(&lan, 1, became), secs_f(1.5 + 0.3046875));
}

#[test]
fn a_backup_adopts_a_long_interval_only_up_to_ten_seconds() {
    // A master (or a forger: v3 has no authentication) advertising every 20 s: the backup
    // takes 10 s, the ceiling, so it takes over 3 × 10 s + skew after the last advert
    // heard, not 3 × 20 s + skew.
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 2000)], vec![]]);
    lan.drive_for(secs_f(70.0));
    assert_eq!(lan.masters(), vec![0]);
    lan.power_on_with(1, vec![v3_instance(1, 100, 100)]);
    lan.drive_for(secs_f(45.0));
    assert_eq!(lan.masters(), vec![0], "the backup yields to the higher priority");
    lan.power_off(0);
    lan.drive_for(secs_f(60.0));
    let became = lan.entered(1, State::Master).expect("took over");
    // skew = (256-100) × 1000 / 256 cs = 6.09375 s
    assert_eq!(became - last_heard_before(&lan, 1, became), secs_f(30.0 + 6.09375));
}

#[test]
fn rfc9568_6_4_2_higher_priority_backup_preempts_a_lower_master() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 100, 100)], vec![]]);
    lan.drive_for(secs_f(5.0));
    assert_eq!(lan.masters(), vec![0]);
    let joined = lan.now;
    lan.power_on_with(1, vec![v3_instance(1, 200, 100)]);
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![1]);
    // The lower master's adverts are ignored, so the start-up down timer runs out.
    assert_eq!(lan.entered(1, State::Master).expect("preempted") - joined, secs_f(3.21875));
    assert_eq!(lan.transcript(0), ["Backup", "Master", "Backup"]);
}

#[test]
fn rfc9568_6_4_2_no_preempt_keeps_a_lower_priority_master() {
    let mut low = v3_instance(0, 100, 100);
    low.preempt = false;
    let mut high = v3_instance(1, 200, 100);
    high.preempt = false;
    let mut lan = Lan::new(vec![vec![low], vec![]]);
    lan.drive_for(secs_f(5.0));
    lan.power_on_with(1, vec![high]);
    lan.drive_for(secs_f(30.0));
    assert_eq!(lan.masters(), vec![0]);
    assert_eq!(lan.transcript(1), ["Backup"]);
}

#[test]
fn rfc9568_6_4_2_backup_shutdown_goes_to_initialize() {
    let mut lan = Lan::k0s(2);
    lan.drive_for(secs_f(10.0));
    let backup = (0..2).find(|&i| lan.state(i) == State::Backup).expect("a backup");
    let sent = lan.wire.len();
    lan.shutdown(backup);
    assert_eq!(lan.state(backup), State::Initialize);
    assert_eq!(lan.wire.len(), sent, "a backup sends nothing on shutdown");
    assert_eq!(lan.nodes[backup].router.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------
// RFC 9568 §6.4.3: Master

#[test]
fn rfc9568_6_4_3_master_advertises_every_interval() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 25)]]);
    lan.drive_for(secs_f(10.0));
    let times: Vec<Instant> = lan.wire.iter().map(|(t, _, _)| *t).collect();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 20);
    assert!(gaps.iter().all(|g| *g == secs_f(0.25)), "{gaps:?}");
}

#[test]
fn rfc9568_6_4_3_master_answers_priority_zero_at_once() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 100)], vec![v3_instance(1, 100, 100)]]);
    lan.drive_for(secs_f(5.5));
    let cfg = v3_instance(1, 100, 100);
    let before = lan.wire.len();
    lan.inject(0, addr(1), group(), 255, &advert_bytes(&cfg, |a| a.priority = Priority::RESIGN));
    assert_eq!(lan.wire.len(), before + 1, "an advert went out at once");
    assert_eq!(lan.state(0), State::Master);
}

#[test]
fn rfc9568_6_4_3_master_yields_to_a_higher_priority_and_releases_the_addresses() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 100, 100)], vec![]]);
    lan.drive_for(secs_f(5.0));
    lan.power_on_with(1, vec![v3_instance(1, 200, 100)]);
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.transcript(0), ["Backup", "Master", "Backup"]);
    assert_eq!(lan.masters(), vec![1]);
    assert!(!lan.nodes[0].held.contains(&VIP));
    assert!(lan.nodes[1].held.contains(&VIP));
}

#[test]
fn rfc9568_6_4_3_equal_priority_tie_break_on_the_higher_primary_address() {
    // All start together: every node times out at once, and the highest address wins.
    let mut lan = Lan::k0s(3);
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![2]);
    assert_eq!(lan.transcript(0), ["Backup", "Master", "Backup"]);
    assert_eq!(lan.transcript(2), ["Backup", "Master"]);
    assert_eq!(lan.nodes.iter().filter(|n| n.held.contains(&VIP)).count(), 1);
}

#[test]
fn rfc9568_6_4_3_master_re_advertises_at_once_on_a_lower_priority() {
    let mut lan = Lan::new(vec![vec![v3_instance(0, 200, 100)]]);
    lan.drive_for(secs_f(5.5));
    let before = lan.wire.len();
    let other = v3_instance(1, 100, 100);
    lan.inject(0, addr(1), group(), 255, &advert_bytes(&other, |_| {}));
    assert_eq!(lan.wire.len(), before + 1);
    assert_eq!(lan.state(0), State::Master);
}

#[test]
fn rfc9568_6_4_3_master_shutdown_sends_priority_zero_and_releases() {
    let mut lan = Lan::k0s(1);
    lan.drive_for(secs_f(5.0));
    lan.shutdown(0);
    let (_, _, last) = lan.wire.last().expect("sent");
    assert_eq!(last.priority, Priority::RESIGN);
    assert!(lan.nodes[0].held.is_empty());
    assert_eq!(lan.transcript(0), ["Backup", "Master", "Initialize"]);
}

// ---------------------------------------------------------------------------------------
// Receive checks (RFC 3768 §7.1, RFC 9568 §7.1): dropped, counted, no state change

fn drop_test(inject: impl FnOnce(&mut Lan), reason: &str) {
    let mut lan = Lan::k0s(1);
    lan.drive_for(secs_f(1.0));
    let deadline = lan.nodes[0].router.poll_timeout();
    inject(&mut lan);
    let id = lan.nodes[0].instances[0];
    let stats = lan.nodes[0].router.stats(id).expect("stats");
    assert_eq!(stats.dropped(reason), 1, "{reason}: {:?}", stats.dropped);
    assert_eq!(stats.adverts_received, 0);
    assert_eq!(lan.transcript(0), ["Backup"]);
    assert_eq!(lan.nodes[0].router.poll_timeout(), deadline, "the down timer was not touched");
}

#[test]
fn rfc9568_7_1_ttl_not_255_is_dropped_without_state_change() {
    let cfg = k0s_instance(1);
    drop_test(
        |lan| lan.inject(0, addr(1), group(), 64, &advert_bytes(&cfg, |_| {})),
        "ttl_not_255",
    );
}

#[test]
fn rfc3768_7_1_version_mismatch_is_dropped() {
    let cfg = k0s_instance(1);
    let bytes = advert_bytes(&cfg, |a| {
        a.version = cplb_core::vrrp::Version::V3;
        a.auth = Authentication::None;
    });
    drop_test(|lan| lan.inject(0, addr(1), group(), 255, &bytes), "version_mismatch");
}

#[test]
fn rfc3768_7_1_auth_mismatch_is_dropped_and_counted() {
    let cfg = k0s_instance(1);
    let bytes = advert_bytes(&cfg, |a| {
        a.auth = Authentication::SimpleText(AuthPass::new(b"wrong").expect("pass"))
    });
    drop_test(|lan| lan.inject(0, addr(1), group(), 255, &bytes), "auth_failure");
    let bytes = advert_bytes(&cfg, |a| a.auth = Authentication::None);
    drop_test(|lan| lan.inject(0, addr(1), group(), 255, &bytes), "auth_type_mismatch");
}

#[test]
fn adverts_from_sources_not_accepted_from_are_dropped_and_counted() {
    let mut cfg = k0s_instance(0);
    cfg.accept_from = vec![addr(2)];
    let mut lan = Lan::new(vec![vec![cfg]]);
    lan.drive_for(secs_f(1.0));
    let bytes = advert_bytes(&k0s_instance(1), |_| {});
    lan.inject(0, addr(1), group(), 255, &bytes);
    let id = lan.nodes[0].instances[0];
    let stats = lan.nodes[0].router.stats(id).expect("stats");
    assert_eq!(stats.dropped("source_not_allowed"), 1, "{:?}", stats.dropped);
    assert_eq!(stats.adverts_received, 0);
    let bytes = advert_bytes(&k0s_instance(2), |_| {});
    lan.inject(0, addr(2), group(), 255, &bytes);
    let stats = lan.nodes[0].router.stats(id).expect("stats");
    assert_eq!(stats.adverts_received, 1, "a listed source is heard");
}

#[test]
fn rfc3768_7_1_interval_mismatch_is_dropped_and_counted() {
    let cfg = k0s_instance(1);
    drop_test(
        |lan| lan.inject(0, addr(1), group(), 255, &advert_bytes(&cfg, |a| a.interval_cs = 200)),
        "interval_mismatch",
    );
}

#[test]
fn rfc9568_7_1_bad_checksum_is_dropped_and_counted() {
    let cfg = k0s_instance(1);
    let mut bytes = advert_bytes(&cfg, |_| {});
    bytes[7] ^= 1;
    drop_test(|lan| lan.inject(0, addr(1), group(), 255, &bytes), "bad_checksum");
}

#[test]
fn rfc9568_7_1_zero_address_count_is_dropped() {
    let mut bytes = advert_bytes(&k0s_instance(1), |_| {});
    bytes[3] = 0;
    drop_test(|lan| lan.inject(0, addr(1), group(), 255, &bytes), "zero_address_count");
}

#[test]
fn rfc9568_7_1_unconfigured_vrid_is_dropped_and_counted() {
    let mut lan = Lan::k0s(1);
    let bytes = advert_bytes(&k0s_instance(1), |a| a.vrid = Vrid::new(52).expect("vrid"));
    lan.inject(0, addr(1), group(), 255, &bytes);
    assert_eq!(lan.nodes[0].router.unrouted_stats().dropped("vrid_not_configured"), 1);
    assert_eq!(lan.transcript(0), ["Backup"]);
}

#[test]
fn address_list_mismatch_is_counted_not_dropped() {
    let mut lan = Lan::k0s(1);
    let bytes = advert_bytes(&k0s_instance(1), |a| {
        a.addresses = VirtualAddresses::V4(vec![Ipv4Addr::new(10, 200, 0, 201)])
    });
    lan.inject(0, addr(1), group(), 255, &bytes);
    let stats = lan.nodes[0].router.stats(lan.nodes[0].instances[0]).expect("stats");
    assert_eq!(
        (stats.address_list_mismatch, stats.adverts_received, stats.dropped_total()),
        (1, 1, 0)
    );
}

#[test]
fn own_looped_back_adverts_are_dropped() {
    let cfg = k0s_instance(0);
    drop_test(
        |lan| lan.inject(0, addr(0), group(), 255, &advert_bytes(&cfg, |_| {})),
        "own_advert",
    );
}

// ---------------------------------------------------------------------------------------
// What k0s and operators rely on

#[test]
fn equal_priorities_do_not_fail_over_when_a_node_joins() {
    let mut lan = Lan::new(vec![vec![k0s_instance(0)], vec![], vec![]]);
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![0]);
    lan.power_on_with(1, vec![k0s_instance(1)]);
    lan.drive_for(secs_f(7.0));
    lan.power_on_with(2, vec![k0s_instance(2)]);
    lan.drive_for(secs_f(30.0));
    assert_eq!(lan.masters(), vec![0]);
    assert_eq!(lan.transcript(0), ["Backup", "Master"]);
    assert_eq!(lan.transcript(1), ["Backup"]);
    assert_eq!(lan.transcript(2), ["Backup"]);
}

#[test]
fn preempt_delay_defers_preemption_by_the_delay() {
    let mut high = v3_instance(1, 200, 100);
    high.preempt_delay = Duration::from_secs(10);
    let mut lan = Lan::new(vec![vec![v3_instance(0, 100, 100)], vec![]]);
    lan.drive_for(secs_f(5.0));
    let joined = lan.now;
    lan.power_on_with(1, vec![high]);
    lan.drive_for(secs_f(9.0));
    assert_eq!(lan.masters(), vec![0], "no preemption during the delay");
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![1]);
    let took = lan.entered(1, State::Master).expect("preempted") - joined;
    // The delay, then the down interval after the last accepted advert.
    assert!(took > secs_f(10.0) && took <= secs_f(10.0 + 3.21875 + 1.0), "{took:?}");
}

#[test]
fn becoming_master_announces_a_burst_and_a_second_burst_5_s_later() {
    let mut lan = Lan::k0s(1);
    lan.drive_for(secs_f(20.0));
    let t0 = lan.entered(0, State::Master).expect("master");
    let at = tally(lan.nodes[0].announces.iter().map(|(t, _)| *t - t0));
    assert_eq!(at, [(Duration::ZERO, 5), (secs_f(5.0), 5)].into_iter().collect());
    assert!(lan.nodes[0].announces.iter().all(|(_, a)| a == &vec![VIP]));
}

#[test]
fn periodic_announcement_refresh_while_master() {
    let mut cfg = k0s_instance(0);
    cfg.announce.refresh_every = Some(Duration::from_secs(30));
    let mut lan = Lan::new(vec![vec![cfg]]);
    lan.drive_for(secs_f(100.0));
    let t0 = lan.entered(0, State::Master).expect("master");
    let refreshes: Vec<Duration> =
        lan.nodes[0].announces.iter().map(|(t, _)| *t - t0).filter(|d| *d > secs_f(5.0)).collect();
    assert_eq!(refreshes, [secs_f(30.0), secs_f(60.0), secs_f(90.0)]);
}

#[test]
fn contention_winner_announces_again_and_later_than_the_loser() {
    let mut lan = Lan::k0s(2);
    lan.latency = Duration::from_micros(50);
    lan.drive_for(secs_f(4.0));
    assert_eq!(lan.masters(), vec![1]);
    let loser_last = lan.nodes[0].announces.iter().map(|(t, _)| *t).max().expect("loser announced");
    let winner_after: Vec<Instant> =
        lan.nodes[1].announces.iter().map(|(t, _)| *t).filter(|t| *t > loser_last).collect();
    assert_eq!(winner_after.len(), 10, "a burst on winning and a follow-up burst");
    assert!(winner_after.iter().any(|t| *t - loser_last >= secs_f(0.1)));
    assert!(lan.nodes[1].events.iter().any(|(_, e)| matches!(e, Event::ContentionWon { .. })));
}

#[test]
fn a_yielding_master_stops_its_pending_announcements() {
    let mut lan = Lan::k0s(2);
    lan.drive_for(secs_f(20.0));
    // Node 0 lost the start-up contention: its 5 s repeat burst must not have gone out.
    let t0 = lan.entered(0, State::Master).expect("was master");
    assert!(lan.nodes[0].announces.iter().all(|(t, _)| *t == t0), "{:?}", lan.nodes[0].announces);
}

#[test]
fn unicast_sends_to_each_peer_and_accepts_only_configured_peers() {
    let peers = |i: usize| (0..3).filter(|&j| j != i).map(addr).collect::<Vec<_>>();
    let cfgs: Vec<Vec<InstanceConfig>> = (0..3)
        .map(|i| {
            let mut c = k0s_instance(i);
            c.unicast_peers = peers(i);
            vec![c]
        })
        .collect();
    let mut lan = Lan::new(cfgs);
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![2]);
    let master_sent: Vec<IpAddr> = {
        let mut r = Router::new(Instant::ZERO);
        let mut c = k0s_instance(2);
        c.unicast_peers = peers(2);
        c.priority = Priority::OWNER;
        r.add_instance(Instant::ZERO, c).expect("ok");
        std::iter::from_fn(|| r.poll_transmit()).map(|t| t.dst).collect()
    };
    assert_eq!(master_sent, peers(2));
    // A stranger's unicast advert is dropped; so is multicast in unicast mode.
    let stranger = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 99));
    let mut from_stranger = k0s_instance(0);
    from_stranger.primary_address = stranger;
    let bytes = advert_bytes(&from_stranger, |a| a.priority = Priority(250));
    lan.inject(0, stranger, addr(0), 255, &bytes);
    lan.inject(0, addr(1), group(), 255, &advert_bytes(&k0s_instance(1), |_| {}));
    let stats = lan.nodes[0].router.stats(lan.nodes[0].instances[0]).expect("stats");
    assert_eq!(stats.dropped("unicast_peer_unknown"), 1);
    assert_eq!(stats.dropped("multicast_in_unicast_mode"), 1);
    assert_eq!(lan.masters(), vec![2]);
}

#[test]
fn several_instances_on_one_node_are_independent() {
    let second = |i: usize, prio: u8| {
        let mut c = k0s_instance(i);
        c.name = "k0s-vip-1".into();
        c.vrid = Vrid::new(52).expect("vrid");
        c.priority = Priority(prio);
        c.virtual_ips =
            vec![VirtualIp { addr: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 201)), prefix_len: 24 }];
        c
    };
    let mut a0 = k0s_instance(0);
    a0.priority = Priority(250);
    let mut lan = Lan::new(vec![vec![a0, second(0, 100)], vec![k0s_instance(1), second(1, 250)]]);
    lan.drive_for(secs_f(10.0));
    let vip2 = IpAddr::V4(Ipv4Addr::new(10, 200, 0, 201));
    assert!(lan.nodes[0].held.contains(&VIP) && !lan.nodes[0].held.contains(&vip2));
    assert!(lan.nodes[1].held.contains(&vip2) && !lan.nodes[1].held.contains(&VIP));
    // The same VRID twice on one interface and family is refused.
    let mut r = Router::new(Instant::ZERO);
    r.add_instance(Instant::ZERO, k0s_instance(0)).expect("first");
    assert!(r.add_instance(Instant::ZERO, k0s_instance(0)).is_err());
}

// ---------------------------------------------------------------------------------------
// The VIP follows health

/// Nodes with a tracked "local API server" input (default weight or the given one).
fn tracked_lan(weight: i16, fall: u32) -> Lan {
    let mut lan = Lan::new(vec![vec![], vec![], vec![]]);
    for i in 0..3 {
        let mut router = Router::new(Instant::ZERO);
        let tracker = router
            .add_tracker(TrackerConfig { rise: 1, fall, initially_up: true })
            .expect("tracker");
        let mut cfg = k0s_instance(i);
        cfg.tracking = vec![Track { tracker, weight }];
        lan.nodes[i].router = router;
        lan.nodes[i].instances =
            vec![lan.nodes[i].router.add_instance(Instant::ZERO, cfg).expect("ok")];
        lan.nodes[i].powered = true;
        lan.settle(i);
    }
    lan
}

fn report_health(lan: &mut Lan, i: usize, ok: bool) {
    let now = lan.now;
    let tracker = cplb_core::vrrp::TrackerId(0);
    lan.nodes[i].router.handle_health(now, tracker, ok);
    lan.settle(i);
}

#[test]
fn master_with_a_failed_api_server_hands_over_within_master_down_plus_fall() {
    let mut lan = tracked_lan(-50, 2);
    lan.drive_for(secs_f(10.0));
    let master = lan.masters()[0];
    // Health checks every second; the second failure in a row brings the tracker down.
    let first_failure = lan.now;
    for _ in 0..2 {
        report_health(&mut lan, master, false);
        lan.drive_for(secs_f(1.0));
    }
    lan.drive_for(secs_f(5.0));
    let new = lan.masters();
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], master);
    let took = lan.entered(new[0], State::Master).expect("took over") - first_failure;
    assert!(
        took <= secs_f(1.0 + 3.21875),
        "took {took:?}: more than fall time + Master_Down_Interval"
    );
    // The old master, healthy again, does not take the VIP back from an equal-priority peer.
    report_health(&mut lan, master, true);
    lan.drive_for(secs_f(20.0));
    assert_eq!(lan.masters(), new);
}

#[test]
fn fault_weight_zero_resigns_at_once_and_recovers_as_backup() {
    let mut lan = tracked_lan(0, 1);
    lan.drive_for(secs_f(10.0));
    let master = lan.masters()[0];
    let t = lan.now;
    report_health(&mut lan, master, false);
    assert_eq!(lan.state(master), State::Fault);
    assert!(lan.nodes[master].held.is_empty());
    lan.drive_for(secs_f(2.0));
    let new = lan.masters();
    assert_eq!(new.len(), 1);
    assert_eq!(
        lan.entered(new[0], State::Master).expect("took over") - t,
        secs_f(0.21875),
        "resignation: Skew_Time"
    );
    report_health(&mut lan, master, true);
    assert_eq!(lan.state(master), State::Backup);
    lan.drive_for(secs_f(20.0));
    assert_eq!(lan.masters(), new);
}

#[test]
fn link_down_puts_the_instance_in_fault() {
    let mut lan = Lan::k0s(2);
    lan.drive_for(secs_f(10.0));
    let master = lan.masters()[0];
    let now = lan.now;
    lan.nodes[master].router.handle_link(now, IF, false);
    lan.settle(master);
    assert_eq!(lan.state(master), State::Fault);
    lan.nodes[master].router.handle_link(now, IF, true);
    lan.settle(master);
    assert_eq!(lan.state(master), State::Backup);
}

#[test]
fn k0s_power_off_transcript() {
    // The seed's story on three k0s-configured nodes: start, power off the master, bring it
    // back. Every state change and who holds the VIP, as a reviewed snapshot.
    let mut lan = Lan::k0s(3);
    lan.latency = Duration::from_micros(100);
    lan.drive_for(secs_f(10.0));
    let master = lan.masters()[0];
    lan.power_off(master);
    lan.drive_for(secs_f(10.0));
    lan.power_on_with(master, vec![k0s_instance(master)]);
    lan.drive_for(secs_f(10.0));
    let mut lines = Vec::new();
    for (i, node) in lan.nodes.iter().enumerate() {
        for (t, e) in &node.events {
            if let Event::StateChanged { from, to, cause, .. } = e {
                lines.push((*t, format!("{t} node{i} {from} -> {to} ({cause:?})")));
            }
        }
    }
    lines.sort();
    let holders: Vec<usize> = (0..3).filter(|&i| lan.nodes[i].held.contains(&VIP)).collect();
    let text = lines.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n");
    insta::assert_snapshot!(format!("{text}\nVIP held by {holders:?}"));
}

#[test]
fn a_yielding_master_notifies_so_the_winner_re_announces() {
    // Split 0 | 1,2, then heal: node 2 (higher address) stays master, node 0 yields. Node 2
    // never heard node 0 as master, so without node 0's last advert it would not re-announce
    // and hosts would keep pointing at node 0.
    let mut lan = Lan::k0s(3);
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![2]);
    for other in [1, 2] {
        lan.cut.insert((0, other));
        lan.cut.insert((other, 0));
    }
    lan.drive_for(secs_f(10.0));
    assert_eq!(lan.masters(), vec![0, 2]);
    let before = lan.nodes[2].announces.len();
    let healed = lan.now;
    lan.cut.clear();
    lan.drive_for(secs_f(3.0));
    assert_eq!(lan.masters(), vec![2]);
    let after: Vec<_> =
        lan.nodes[2].announces[before..].iter().filter(|(t, _)| *t >= healed).collect();
    assert_eq!(after.len(), 10, "the winner re-announced: a burst and the follow-up burst");
    assert!(
        lan.nodes[2]
            .events
            .iter()
            .any(|(t, e)| *t >= healed && matches!(e, Event::ContentionWon { .. }))
    );
}

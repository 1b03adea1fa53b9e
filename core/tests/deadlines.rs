//! After every `handle_*` call, `poll_timeout()` is later than `now` or `None`, whatever the
//! inputs: a driver that sleeps until the deadline can never spin.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use cplb_core::time::Instant;
use cplb_core::vrrp::{
    Advertisement, AuthPass, Authentication, IfIndex, Incoming, InstanceConfig, IpHeader, Priority,
    Router, Track, TrackerConfig, V3Ipv4Checksum, Version, VirtualAddresses, VirtualIp, Vrid,
};
use proptest::prelude::*;

const IF: IfIndex = IfIndex(1);

fn addr(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 0, 10 + i))
}

#[derive(Debug, Clone)]
enum Input {
    Advert { from: u8, priority: u8, interval_cs: u16, ttl: u8, unicast: bool, flip: Option<usize> },
    Garbage(Vec<u8>),
    Timeout { after_ms: u64 },
    Late { before_ms: u64 },
    Health(bool),
    Link(bool),
    Shutdown,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        4 => (0u8..4, any::<u8>(), prop_oneof![Just(100u16), Just(10), 1u16..4096], prop_oneof![Just(255u8), any::<u8>()], any::<bool>(), proptest::option::weighted(0.1, 0usize..200))
            .prop_map(|(from, priority, interval_cs, ttl, unicast, flip)| Input::Advert { from, priority, interval_cs, ttl, unicast, flip }),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Input::Garbage),
        4 => (0u64..5_000).prop_map(|after_ms| Input::Timeout { after_ms }),
        1 => (0u64..2_000).prop_map(|before_ms| Input::Late { before_ms }),
        1 => any::<bool>().prop_map(Input::Health),
        1 => any::<bool>().prop_map(Input::Link),
        1 => Just(Input::Shutdown),
    ]
}

fn config() -> impl Strategy<Value = (InstanceConfig, i16, bool)> {
    (
        any::<bool>(),
        1u8..=255,
        1u16..=40,
        any::<bool>(),
        0u64..3,
        any::<bool>(),
        prop_oneof![Just(0i16), -100i16..0],
        any::<bool>(),
    )
        .prop_map(|(v3, priority, interval, preempt, delay, unicast, weight, refresh)| {
            let mut cfg = InstanceConfig::new(
                "fuzz",
                IF,
                Vrid::new(51).expect("vrid"),
                addr(0),
                vec![VirtualIp {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 200, 0, 200)),
                    prefix_len: 24,
                }],
            );
            cfg.version = if v3 { Version::V3 } else { Version::V2 };
            cfg.priority = Priority(priority);
            cfg.advert_interval_cs = if v3 { interval * 10 } else { interval.min(5) * 100 };
            cfg.preempt = preempt;
            cfg.preempt_delay = Duration::from_secs(delay);
            if !v3 {
                cfg.auth = Authentication::SimpleText(AuthPass::new(b"k0s").expect("pass"));
            }
            if unicast {
                cfg.unicast_peers = vec![addr(1), addr(2), addr(3)];
            }
            if refresh {
                cfg.announce.refresh_every = Some(Duration::from_millis(700));
            }
            (cfg, weight, unicast)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn poll_timeout_is_always_later_than_now(
        (cfg, weight, unicast) in config(),
        inputs in proptest::collection::vec(input(), 1..120),
    ) {
        let mut now = Instant::from_secs(1);
        let mut latest = now;
        let mut router = Router::new(now);
        let tracker = router.add_tracker(TrackerConfig { rise: 2, fall: 2, initially_up: true }).expect("tracker");
        let mut cfg = cfg;
        cfg.tracking = vec![Track { tracker, weight }];
        let template = cfg.clone();
        router.add_instance(now, cfg).expect("valid");
        for input in inputs {
            match input {
                Input::Advert { from, priority, interval_cs, ttl, unicast: to_us, flip } => {
                    let advert = Advertisement {
                        version: template.version,
                        vrid: template.vrid,
                        priority: Priority(priority),
                        interval_cs: if template.version == Version::V2 { template.advert_interval_cs } else { interval_cs },
                        auth: template.auth,
                        addresses: VirtualAddresses::V4(vec![Ipv4Addr::new(10, 200, 0, 200)]),
                    };
                    let src = addr(from);
                    let dst = if unicast && to_us { addr(0) } else { IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)) };
                    let mut payload = advert.encode(src, dst, V3Ipv4Checksum::Rfc9568).expect("encodes");
                    if let Some(bit) = flip {
                        let bit = bit % (payload.len() * 8);
                        payload[bit / 8] ^= 1 << (bit % 8);
                    }
                    router.handle_packet(now, Incoming { ifindex: IF, header: IpHeader { src, dst, ttl }, payload: &payload });
                }
                Input::Garbage(bytes) => {
                    let header = IpHeader { src: addr(1), dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)), ttl: 255 };
                    router.handle_packet(now, Incoming { ifindex: IF, header, payload: &bytes });
                }
                Input::Timeout { after_ms } => {
                    now += Duration::from_millis(after_ms);
                    router.handle_timeout(now);
                }
                Input::Late { before_ms } => {
                    // A driver whose clock reading is older than the last one it passed in.
                    let earlier = Instant::from_nanos(now.as_nanos().saturating_sub(before_ms * 1_000_000));
                    router.handle_timeout(earlier);
                }
                Input::Health(ok) => router.handle_health(now, tracker, ok),
                Input::Link(up) => router.handle_link(now, IF, up),
                Input::Shutdown => router.shutdown(now),
            }
            latest = latest.max(now);
            while router.poll_transmit().is_some() {}
            while router.poll_command().is_some() {}
            while router.poll_event().is_some() {}
            if let Some(deadline) = router.poll_timeout() {
                prop_assert!(deadline > latest, "deadline {} is not after now {}", deadline, latest);
            }
        }
    }
}

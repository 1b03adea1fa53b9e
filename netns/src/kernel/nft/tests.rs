//! The messages a ruleset becomes, checked against an encoder of the tests' own; the tags
//! and what verify compares; replies and answers, well-formed and not.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use netlink_packet_netfilter::nftables::{
    ChainAttribute, Hook, HookNumber, InetHookNumber, RuleAttribute,
};

use super::batch::{Batch, Replies};
use super::encode::{HASH_SEED, encode};
use super::read::{Answer, Chain, Got, parse_object};
use super::*;

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

// ---- an encoder of its own, with literal uapi numbers ----
// Written apart from netlink-packet-netfilter and `expr`, so that a wrong constant, byte
// order or attribute order there makes the comparison fail.

fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = u16::try_from(4 + payload.len()).unwrap().to_ne_bytes().to_vec();
    v.extend(kind.to_ne_bytes());
    v.extend(payload);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}
fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | 0x8000, &parts.concat())
}
fn be(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
fn cstr(v: &str) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    b.push(0);
    b
}
fn data(kind: u16, bytes: &[u8]) -> Vec<u8> {
    nest(kind, &[nla(1, bytes)])
}
fn expr(name: &str, attrs: &[Vec<u8>]) -> Vec<u8> {
    nest(1, &[nla(1, &cstr(name)), nest(2, attrs)])
}
fn nlmsg(kind: u16, flags: u16, seq: u32, family: u8, res: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body = attrs.concat();
    let mut v = u32::try_from(20 + body.len()).unwrap().to_ne_bytes().to_vec();
    v.extend(kind.to_ne_bytes());
    v.extend(flags.to_ne_bytes());
    v.extend(seq.to_ne_bytes());
    v.extend(0u32.to_ne_bytes());
    v.extend([family, 0]);
    v.extend(res.to_be_bytes());
    v.extend(body);
    v
}
/// A rule's tag from the parts it covers: an nft comment TLV (type 0, length with the
/// NUL) holding "cplb " and the 64-bit FNV-1a of the length-prefixed parts.
fn tag(parts: &[&[u8]]) -> Vec<u8> {
    let mut h: u64 = 14_695_981_039_346_656_037;
    for part in parts {
        for b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            h = (h ^ u64::from(*b)).wrapping_mul(1_099_511_628_211);
        }
    }
    let text = cstr(&format!("cplb {h:016x}"));
    [vec![0, text.len() as u8], text].concat()
}
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
/// The messages of a batch, split by their length fields.
fn messages(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        out.push(&rest[..len]);
        rest = &rest[len.next_multiple_of(4)..];
    }
    out
}
/// (type, flags, seq, family) of every message in a batch.
fn headers(buf: &[u8]) -> Vec<(u16, u16, u32, u8)> {
    let field = |m: &[u8], at: usize| u16::from_ne_bytes([m[at], m[at + 1]]);
    messages(buf)
        .iter()
        .map(|m| {
            (field(m, 4), field(m, 6), u32::from_ne_bytes(m[8..12].try_into().unwrap()), m[16])
        })
        .collect()
}

pub(super) fn redirect_rules() -> Ruleset {
    Ruleset {
        guards: vec![],
        redirects: vec![Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 }],
        balancers: vec![],
    }
}

#[test]
fn redirect_batch_matches_the_uapi_bytes() {
    let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
    let reg1 = || nla(1, &be(1));
    let cmp = |value: &[u8]| expr("cmp", &[reg1(), nla(2, &be(0)), data(3, value)]);
    let exprs = [
        // ip daddr 10.200.0.200: network header (1) + 16, 4 bytes
        expr("payload", &[reg1(), nla(2, &be(1)), nla(3, &be(16)), nla(4, &be(4))]),
        cmp(&[10, 200, 0, 200]),
        // meta l4proto (16) tcp (6)
        expr("meta", &[reg1(), nla(2, &be(16))]),
        cmp(&[6]),
        // tcp dport: transport header (2) + 2, 2 bytes, 6443 big endian
        expr("payload", &[reg1(), nla(2, &be(2)), nla(3, &be(2)), nla(4, &be(2))]),
        cmp(&[0x19, 0x2b]),
        expr("immediate", &[reg1(), data(2, &[0x19, 0x2c])]),
        expr("redir", &[reg1()]),
    ];
    let table = || nla(1, &cstr("cplb"));
    let expected = [
        // BATCH_BEGIN 0x10, NLM_F_REQUEST, AF_UNSPEC, res_id NFNL_SUBSYS_NFTABLES
        nlmsg(0x10, 0x1, 100, 0, 10, &[]),
        // NEWTABLE (10 << 8 | 0), REQUEST | ACK | CREATE (0x400), NFPROTO_IPV4
        nlmsg(0x0a00, 0x405, 101, 2, 0, &[table()]),
        // DELTABLE (2)
        nlmsg(0x0a02, 0x005, 102, 2, 0, &[table()]),
        nlmsg(0x0a00, 0x405, 103, 2, 0, &[table()]),
        // NEWCHAIN (3): table, name (3), hook (4) { hooknum 0, priority -100 }, type (7)
        nlmsg(
            0x0a03,
            0x405,
            104,
            2,
            0,
            &[
                table(),
                nla(3, &cstr("prerouting")),
                nest(4, &[nla(1, &be(0)), nla(2, &(-100i32).to_be_bytes())]),
                nla(7, &cstr("nat")),
            ],
        ),
        // NEWRULE (6), REQUEST | ACK | CREATE | APPEND (0x800); userdata (7) the tag
        nlmsg(
            0x0a06,
            0xc05,
            105,
            2,
            0,
            &[
                table(),
                nla(2, &cstr("prerouting")),
                nest(4, &exprs),
                nla(7, &tag(&["ip".as_bytes(), b"prerouting", &exprs.concat(), b""])),
            ],
        ),
        // BATCH_END 0x11
        nlmsg(0x11, 0x1, 106, 0, 10, &[]),
    ]
    .concat();
    assert_eq!(batch.buf, expected);
    assert_eq!(batch.next_seq, 107);
    assert_eq!(batch.begin_seq, 100);
    assert_eq!(batch.acked.len(), 5);
    assert_eq!(batch.acked[4], (105, "NEWRULE (redirect 10.200.0.200:6443 -> :6444)".into()));

    // A few bytes checked by hand, independent of both encoders.
    assert_eq!(&batch.buf[18..20], &[0, 10], "res_id is big endian");
    assert_eq!(&batch.buf[0..4], &20u32.to_ne_bytes(), "BATCH_BEGIN is a bare header");
    let rule = messages(&batch.buf)[5];
    assert_eq!(&rule[4..6], &0x0a06u16.to_ne_bytes(), "NFNL_SUBSYS_NFTABLES << 8 | NEWRULE");
    // NFTA_RULE_EXPRESSIONS (4) carries NLA_F_NESTED (0x8000).
    assert!(contains(rule, &0x8004u16.to_ne_bytes()));
    // The port of the immediate: 6444 in network byte order.
    assert!(contains(rule, &[0x19, 0x2c]));
}

#[test]
fn ipv6_redirect_goes_to_the_ip6_table() {
    let rules = Ruleset {
        guards: vec![],
        redirects: vec![Redirect { vip: sa("[fd00:200::200]:6443"), to_port: 6444 }],
        balancers: vec![],
    };
    let v4 = encode("cplb", Family::Ip, &rules, 1).unwrap();
    assert_eq!(
        headers(&v4.buf),
        [(0x10, 1, 1, 0), (0x0a00, 0x405, 2, 2), (0x0a02, 0x5, 3, 2), (0x11, 1, 4, 0)],
        "nothing for IPv4: the ip table is only deleted"
    );
    let v6 = encode("cplb", Family::Ip6, &rules, 1).unwrap();
    let families: Vec<u8> = headers(&v6.buf).iter().map(|h| h.3).collect();
    assert_eq!(families, [0, 10, 10, 10, 10, 10, 0]);
    // ip6 daddr: network header + 24, 16 bytes.
    let payload =
        expr("payload", &[nla(1, &be(1)), nla(2, &be(1)), nla(3, &be(24)), nla(4, &be(16))]);
    assert!(contains(&v6.buf, &payload));
    let vip: std::net::Ipv6Addr = "fd00:200::200".parse().unwrap();
    let cmp = expr("cmp", &[nla(1, &be(1)), nla(2, &be(0)), data(3, &vip.octets())]);
    assert!(contains(&v6.buf, &cmp));
    assert_eq!(v6.acked[4].1, "NEWRULE (redirect [fd00:200::200]:6443 -> :6444)");
}

#[test]
fn round_robin_balancer_encodes_map_numgen_nat_and_masquerade() {
    let rules = Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer {
            vip: sa("10.200.9.200:6443"),
            backends: vec![
                sa("10.200.10.11:6444"),
                sa("10.200.10.12:6444"),
                sa("10.200.10.13:6445"),
            ],
            spread: Spread::RoundRobin,
        }],
    };
    let batch = encode("cplb", Family::Ip, &rules, 1).unwrap();
    let kinds: Vec<u16> = headers(&batch.buf).iter().map(|h| h.0).collect();
    // begin, table, deltable, table, 2 chains, set, elements, 2 rules, end
    assert_eq!(
        kinds,
        [0x10, 0x0a00, 0x0a02, 0x0a00, 0x0a03, 0x0a03, 0x0a09, 0x0a0c, 0x0a06, 0x0a06, 0x11]
    );
    let b = &batch.buf;
    // postrouting hook (4) at srcnat (100)
    assert!(contains(b, &nest(4, &[nla(1, &be(4)), nla(2, &be(100))])));
    // set: flags anonymous|constant|map, key integer (4) of 4 bytes,
    // data ipv4_addr . inet_service ((7 << 6) | 13) of 8 bytes, id 1
    let set = [
        nla(3, &be(0xb)),
        nla(4, &be(4)),
        nla(5, &be(4)),
        nla(6, &be(461)),
        nla(7, &be(8)),
        nla(10, &be(1)),
        // userdata: key byte order (0), 4 bytes, host endian (1)
        nla(13, &[[0, 4].as_slice(), &1u32.to_ne_bytes()].concat()),
    ]
    .concat();
    assert!(contains(b, &set));
    // element 2 : 10.200.10.13 . 6445 (port big endian, padded to 4 bytes)
    let elem =
        nest(1, &[data(1, &2u32.to_ne_bytes()), data(2, &[10, 200, 10, 13, 0x19, 0x2d, 0, 0])]);
    assert!(contains(b, &elem));
    let reg1 = || nla(1, &be(1));
    assert!(contains(b, &expr("numgen", &[reg1(), nla(2, &be(3)), nla(3, &be(0))])));
    let lookup =
        expr("lookup", &[nla(1, &cstr("__map0")), nla(4, &be(1)), nla(2, &be(1)), nla(3, &be(1))]);
    assert!(contains(b, &lookup));
    // dnat (1), NFPROTO_IPV4, address from reg 1, port from NFT_REG32_01 (9)
    let nat = expr("nat", &[nla(1, &be(1)), nla(2, &be(2)), nla(3, &be(1)), nla(5, &be(9))]);
    assert!(contains(b, &nat));
    // ct original (dir 0) dst_ip (20), then ct status (2) & IPS_DST_NAT (0x20) != 0
    assert!(contains(b, &expr("ct", &[reg1(), nla(2, &be(20)), nla(3, &[0])])));
    assert!(contains(b, &expr("ct", &[reg1(), nla(2, &be(12)), nla(3, &[0])])));
    assert!(contains(b, &data(4, &0x20u32.to_ne_bytes())));
    assert!(contains(b, &expr("cmp", &[reg1(), nla(2, &be(1)), data(3, &[0; 4])])));
    assert!(b.ends_with(&nlmsg(0x11, 1, 11, 0, 10, &[])));
    // The masquerade rule ends with masq, then its tag: a 22-byte comment "cplb HASH".
    let masquerade = messages(b)[9];
    let tail = [expr("masq", &[]).as_slice(), &[28, 0, 7, 0, 0, 22], b"cplb "].concat();
    assert!(masquerade[..masquerade.len() - 17].ends_with(&tail), "{masquerade:?}");
}

#[test]
fn source_hash_balancer_over_ipv6_hashes_the_source() {
    let rules = Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer {
            vip: sa("[fd00:200::200]:6443"),
            backends: vec![sa("[fd00:200::11]:6444"), sa("[fd00:200::12]:6444")],
            spread: Spread::SourceHash,
        }],
    };
    let batch = encode("cplb", Family::Ip6, &rules, 1).unwrap();
    let b = &batch.buf;
    let reg1 = || nla(1, &be(1));
    // ip6 saddr: network header + 8, 16 bytes; jhash over 16 bytes mod 2, fixed seed
    assert!(contains(
        b,
        &expr("payload", &[reg1(), nla(2, &be(1)), nla(3, &be(8)), nla(4, &be(16))])
    ));
    let hash = [
        reg1(),
        nla(2, &be(1)),
        nla(3, &be(16)),
        nla(4, &be(2)),
        nla(5, &be(HASH_SEED)),
        nla(7, &be(0)),
    ];
    assert!(contains(b, &expr("hash", &hash)));
    // data ipv6_addr . inet_service ((8 << 6) | 13) of 20 bytes; port in NFT_REG32_04 (12)
    assert!(contains(b, &[nla(6, &be(525)), nla(7, &be(20))].concat()));
    let nat = expr("nat", &[nla(1, &be(1)), nla(2, &be(10)), nla(3, &be(1)), nla(5, &be(12))]);
    assert!(contains(b, &nat));
    assert!(contains(b, &expr("ct", &[reg1(), nla(2, &be(22)), nla(3, &[0])])));
}

#[test]
fn balancer_without_backends_installs_nothing() {
    let rules = Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer {
            vip: sa("10.200.9.200:6443"),
            backends: vec![],
            spread: Spread::RoundRobin,
        }],
    };
    let batch = encode("cplb", Family::Ip, &rules, 1).unwrap();
    assert_eq!(headers(&batch.buf).len(), 4, "only add+delete of the table");
}

#[test]
fn mixed_family_balancer_is_refused() {
    let rules = Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer {
            vip: sa("10.200.9.200:6443"),
            backends: vec![sa("10.200.10.11:6444"), sa("[fd00:200::11]:6444")],
            spread: Spread::RoundRobin,
        }],
    };
    let err = encode("cplb", Family::Ip, &rules, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "balancer 10.200.9.200:6443: backend [fd00:200::11]:6444 is not of the same address family"
    );
}

#[test]
fn table_names_are_checked() {
    assert!(check_table_name("cplb").is_ok());
    assert!(check_table_name(&"x".repeat(255)).is_ok());
    for bad in ["", "a\0b", &"x".repeat(256)] {
        assert!(matches!(check_table_name(bad), Err(NftError::InvalidName { .. })), "{bad:?}");
    }
}

#[test]
fn huge_backend_lists_are_refused_not_truncated() {
    let backends = (0..4000u32)
        .map(|i| SocketAddr::from(([10, 200, (i / 250) as u8, (i % 250) as u8], 6444)))
        .collect();
    let rules = Ruleset {
        guards: vec![],
        redirects: vec![],
        balancers: vec![Balancer {
            vip: sa("10.200.9.200:6443"),
            backends,
            spread: Spread::RoundRobin,
        }],
    };
    let err = encode("cplb", Family::Ip, &rules, 1).unwrap_err();
    assert!(matches!(err, NftError::TooLarge { .. }), "{err}");
}

// ---- replies ----

/// An NLMSG_ERROR answering `seq` with `code`, capped: the request header only.
fn reply(seq: u32, code: i32) -> Vec<u8> {
    let mut v = 36u32.to_ne_bytes().to_vec();
    v.extend(2u16.to_ne_bytes());
    v.extend(0x100u16.to_ne_bytes());
    v.extend(seq.to_ne_bytes());
    v.extend(4242u32.to_ne_bytes());
    v.extend(code.to_ne_bytes());
    v.extend([0u8; 16]);
    v
}

fn outcome(batch: &Batch, datagrams: &[Vec<u8>]) -> Result<(), NftError> {
    let mut replies = Replies::new(batch);
    for d in datagrams {
        replies.absorb(d)?;
    }
    replies.finish()
}

#[test]
fn acks_for_every_message_are_success() {
    let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
    let all: Vec<Vec<u8>> = (101..106).map(|seq| reply(seq, 0)).collect();
    outcome(&batch, &all).unwrap();
    // Several messages in one datagram, and replies to other batches, are fine too.
    outcome(&batch, &[all.concat(), reply(7, -1)]).unwrap();
}

#[test]
fn a_refused_message_is_named_with_its_errno() {
    let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
    let mut replies: Vec<Vec<u8>> = (101..105).map(|seq| reply(seq, 0)).collect();
    replies.push(reply(105, -95));
    let err = outcome(&batch, &replies).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NEWRULE (redirect 10.200.0.200:6443 -> :6444) failed: \
         Operation not supported (os error 95)"
    );
    assert_eq!(err.raw_os_error(), Some(95));
}

#[test]
fn a_failed_commit_names_the_table() {
    let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
    let mut replies = vec![reply(100, -12)];
    replies.extend((101..106).map(|seq| reply(seq, 0)));
    let err = outcome(&batch, &replies).unwrap_err();
    assert_eq!(err.to_string(), "commit (ip cplb) failed: Cannot allocate memory (os error 12)");
}

#[test]
fn a_missing_ack_is_an_error() {
    let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
    let replies: Vec<Vec<u8>> = (101..105).map(|seq| reply(seq, 0)).collect();
    let err = outcome(&batch, &replies).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NEWRULE (redirect 10.200.0.200:6443 -> :6444): the kernel did not acknowledge it"
    );
}

#[test]
fn garbage_replies_never_panic() {
    let batch = encode("cplb", Family::Ip, &redirect_rules(), 100).unwrap();
    let good = [reply(101, -1), reply(102, i32::MIN), reply(103, i32::MAX)].concat();
    for cut in 0..=good.len() {
        let _ = outcome(&batch, &[good[..cut].to_vec()]);
    }
    for len in [0u32, 1, 15, 16, 17, 19, 20, 35, 36, 37, u32::MAX] {
        let mut bad = reply(101, -1);
        bad[0..4].copy_from_slice(&len.to_ne_bytes());
        let _ = outcome(&batch, &[bad]);
    }
    // A pseudo-random soup of bytes.
    let mut x = 0x1234_5678u32;
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..(x % 96))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = outcome(&batch, &[bytes]);
    }
    let err = outcome(&batch, &[reply(102, i32::MIN)]).unwrap_err();
    assert!(err.to_string().starts_with("DELTABLE (ip cplb) failed: "), "{err}");
}

// ---- what verify compares ----

fn mixed_rules(backend: &str) -> Ruleset {
    Ruleset {
        guards: vec![],
        redirects: vec![Redirect { vip: sa("10.200.0.200:6443"), to_port: 6444 }],
        balancers: vec![Balancer {
            vip: sa("10.200.0.201:6443"),
            backends: vec![sa("10.200.10.11:6444"), sa(backend)],
            spread: Spread::RoundRobin,
        }],
    }
}

#[test]
fn encode_writes_down_what_the_table_will_hold() {
    let contents = encode("cplb", Family::Ip, &mixed_rules("10.200.10.12:6444"), 7)
        .unwrap()
        .contents
        .expect("an ip table");
    let chain = |name: &str, hook, priority| Chain {
        name: name.into(),
        hook: Some((hook, priority)),
        kind: Some("nat".into()),
        policy: Some(1),
    };
    assert_eq!(contents.flags, 0);
    assert_eq!(
        contents.chains,
        [chain("prerouting", 0, -100), chain("postrouting", 4, 100)].into()
    );
    assert_eq!(contents.sets, [("__map0".to_owned(), 0xb)].into());
    let pre = &contents.rules["prerouting"];
    let post = &contents.rules["postrouting"];
    assert_eq!((pre.len(), post.len(), contents.rules.len()), (2, 1, 2));
    let tags: BTreeSet<&Vec<u8>> = pre.iter().chain(post).map(|t| &t.as_ref().unwrap().0).collect();
    assert_eq!(tags.len(), 3, "every rule has a tag of its own");
    for tag in tags {
        assert_eq!(tag.len(), 2 + 22);
        assert_eq!(&tag[..7], b"\x00\x16cplb ");
        assert!(tag[7..23].iter().all(u8::is_ascii_hexdigit) && tag[23] == 0, "{tag:?}");
    }

    // The sequence numbers of a batch are no part of what the table holds.
    let again = encode("cplb", Family::Ip, &mixed_rules("10.200.10.12:6444"), 9000).unwrap();
    assert_eq!(again.contents.as_ref(), Some(&contents));
    // Another backend: the same expressions, another map, so another balance tag.
    let moved = encode("cplb", Family::Ip, &mixed_rules("10.200.10.13:6444"), 7).unwrap();
    let moved = moved.contents.unwrap();
    assert_eq!(moved.rules["prerouting"][0], pre[0], "the redirect is unchanged");
    assert_ne!(moved.rules["prerouting"][1], pre[1], "the balance rule's map changed");
    assert_eq!(moved.rules["postrouting"], *post, "the masquerade is unchanged");
    // Nothing for IPv6: no table, as apply leaves it.
    let v6 = encode("cplb", Family::Ip6, &mixed_rules("10.200.10.12:6444"), 7).unwrap();
    assert_eq!(v6.contents, None);
}

pub(super) fn guard(macs: &[[u8; 6]]) -> Ruleset {
    Ruleset {
        guards: vec![Guard { vip: sa("10.200.9.200:6443"), fwmark: 100, macs: macs.to_vec() }],
        ..Ruleset::default()
    }
}

#[test]
fn a_guard_is_a_mangle_chain_passing_each_real_server_then_marking() {
    let mac = [2, 0, 0, 0, 0, 0x11];
    let batch = encode("cplb", Family::Ip, &guard(&[mac, [2, 0, 0, 0, 0, 0x12]]), 7).unwrap();
    let contents = batch.contents.clone().expect("an ip table");
    let chain = Chain {
        name: "loopguard".into(),
        hook: Some((0, -150)),
        kind: Some("filter".into()),
        policy: Some(1),
    };
    assert_eq!(contents.chains, [chain].into(), "no NAT chain for a guard alone");
    assert_eq!(contents.rules["loopguard"].len(), 3, "one pass per MAC, then the mark");
    // The pass: iiftype ether (u16 1, host order), the source MAC at LL offset 6, and
    // an immediate verdict of NFT_RETURN.
    let pass = [
        expr("meta", &[nla(1, &be(1)), nla(2, &be(8))]),
        expr("cmp", &[nla(1, &be(1)), nla(2, &be(0)), data(3, &1u16.to_ne_bytes())]),
        expr("payload", &[nla(1, &be(1)), nla(2, &be(0)), nla(3, &be(6)), nla(4, &be(6))]),
        expr("cmp", &[nla(1, &be(1)), nla(2, &be(0)), data(3, &mac)]),
        expr(
            "immediate",
            &[nla(1, &be(0)), nest(2, &[nest(2, &[nla(1, &(-5i32).to_be_bytes())])])],
        ),
    ]
    .concat();
    assert!(contains(&batch.buf, &pass), "the pass rule's expressions");
    // The mark: immediate 100 (host order) into reg 1, then meta mark set from reg 1.
    let mark = [
        expr("immediate", &[nla(1, &be(1)), data(2, &100u32.to_ne_bytes())]),
        expr("meta", &[nla(2, &be(3)), nla(3, &be(1))]),
    ]
    .concat();
    assert!(contains(&batch.buf, &mark), "the mark rule's expressions");
    // A MAC learned later is another rule: verify sees the table as not wanted.
    let fewer = encode("cplb", Family::Ip, &guard(&[mac]), 7).unwrap().contents.unwrap();
    assert_ne!(fewer, contents);
    // No MAC known: the mark rule alone.
    let none = encode("cplb", Family::Ip, &guard(&[]), 7).unwrap().contents.unwrap();
    assert_eq!(none.rules["loopguard"].len(), 1);
    assert_eq!(none.rules["loopguard"][0], contents.rules["loopguard"][2]);
}

/// A reply message of type `kind` (nf_tables or netlink's own) answering `seq`.
fn answer_msg(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(16 + body.len()).unwrap().to_ne_bytes().to_vec();
    v.extend(kind.to_ne_bytes());
    v.extend(flags.to_ne_bytes());
    v.extend(seq.to_ne_bytes());
    v.extend(4242u32.to_ne_bytes());
    v.extend(body);
    v
}

fn answer(dump: bool) -> Answer {
    Answer {
        seq: 5,
        dump,
        reply: 0x0a06,
        what: "GETRULE (ip cplb)".into(),
        messages: Vec::new(),
        interrupted: false,
    }
}

#[test]
fn answers_to_get_requests_are_gathered() {
    let rule = |seq, flags| {
        let body = [vec![2, 0, 0, 0], nla(2, &cstr("prerouting"))].concat();
        answer_msg(0x0a06, flags, seq, &body)
    };
    let done = |seq, code: i32| answer_msg(3, 2, seq, &code.to_ne_bytes());
    // A dump in two datagrams, with a stray reply to another request in between.
    let mut a = answer(true);
    assert!(a.absorb(&[rule(5, 2), rule(4, 2)].concat()).unwrap().is_none());
    let Some(Got::Messages(got)) = a.absorb(&[rule(5, 2), done(5, 0)].concat()).unwrap() else {
        panic!("a complete dump");
    };
    assert_eq!(got, [nla(2, &cstr("prerouting")), nla(2, &cstr("prerouting"))]);
    // A commit in the middle of the dump.
    let mut a = answer(true);
    let got = a.absorb(&[rule(5, 2 | 0x10), done(5, 0)].concat()).unwrap();
    assert!(matches!(got, Some(Got::Interrupted)), "{got:?}");
    // No table; another refusal, named; a failed dump.
    let got = answer(false).absorb(&reply(5, -2)).unwrap();
    assert!(matches!(got, Some(Got::NotFound)), "{got:?}");
    let err = answer(false).absorb(&reply(5, -1)).unwrap_err();
    assert_eq!(err.to_string(), "GETRULE (ip cplb) failed: Operation not permitted (os error 1)");
    let err = answer(true).absorb(&done(5, -12)).unwrap_err();
    assert!(err.to_string().starts_with("GETRULE (ip cplb) failed: "), "{err}");
    // A plain get is answered by its one message.
    let got = answer(false).absorb(&rule(5, 0)).unwrap();
    assert!(matches!(got, Some(Got::Messages(m)) if m.len() == 1));
}

#[test]
fn garbage_answers_and_attributes_never_panic() {
    let good = [
        answer_msg(0x0a06, 2, 5, &[[2, 0, 0, 0].as_slice(), &nla(2, b"x\0")].concat()),
        answer_msg(3, 2, 5, &0i32.to_ne_bytes()),
    ]
    .concat();
    for cut in 0..=good.len() {
        let _ = answer(true).absorb(&good[..cut]);
        let _ = parse_object::<ChainAttribute>(&good[..cut], &[]);
        let _ = parse_object::<ChainAttribute>(&good[cut..], &[]);
    }
    let mut x = 0x9e37_79b9u32;
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..(x % 80))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = answer(true).absorb(&bytes);
        if let Some(attrs) = parse_object::<ChainAttribute>(&bytes, &[]) {
            let _ = Chain::read(&attrs.into_iter().flatten().collect::<Vec<_>>());
        }
    }
    assert!(parse_object::<ChainAttribute>(&[3, 0, 1, 0], &[]).is_none(), "length below header");
    assert!(parse_object::<ChainAttribute>(&[9, 0, 1, 0, 1], &[]).is_none(), "length past end");
}

#[test]
fn dumped_objects_are_read_with_the_crates_types() {
    // A chain: table, name, hook { prerouting, -100 }, policy accept, type nat.
    let chain = [
        nla(1, &cstr("cplb")),
        nla(3, &cstr("prerouting")),
        nest(4, &[nla(1, &be(0)), nla(2, &(-100i32).to_be_bytes())]),
        nla(5, &be(1)),
        nla(7, &cstr("nat")),
    ]
    .concat();
    let attrs = parse_object::<ChainAttribute>(&chain, &[]).unwrap();
    assert!(attrs.iter().all(Option::is_some), "{attrs:?}");
    let attrs: Vec<ChainAttribute> = attrs.into_iter().flatten().collect();
    assert_eq!(
        attrs[2],
        ChainAttribute::Hook(vec![
            Hook::Number(HookNumber::Inet(InetHookNumber::PreRouting)),
            Hook::Priority((-100i32).cast_unsigned()),
        ])
    );
    let read = Chain::read(&attrs);
    let want = Chain {
        name: "prerouting".into(),
        hook: Some((0, -100)),
        kind: Some("nat".into()),
        policy: Some(1),
    };
    assert_eq!(read, want);
    let cut = [nla(1, &cstr("cplb")), nla(3, b"x\0")].concat();
    let attrs = parse_object::<ChainAttribute>(&cut[..cut.len() - 2], &[]).unwrap();
    assert_eq!(attrs[1], Some(ChainAttribute::Name("x".into())), "padding cut off");
    // A value that does not parse (a 1-byte policy) is marked, not dropped.
    let bad = [nla(1, &cstr("cplb")), nla(5, &[1])].concat();
    let attrs = parse_object::<ChainAttribute>(&bad, &[]).unwrap();
    assert_eq!(attrs, [Some(ChainAttribute::Table("cplb".into())), None]);

    // A rule whose expressions hold an immediate with a 1-byte data attribute, which the
    // crate's expression parser would index past: NFTA_RULE_EXPRESSIONS (4) is skipped.
    let broken = expr("immediate", &[nla(1, &be(1)), nla(0x8002, &[1])]);
    let rule = [
        nla(1, &cstr("cplb")),
        nla(2, &cstr("prerouting")),
        nest(4, &[broken]),
        nla(7, b"\x00\x02x\0"),
    ]
    .concat();
    let attrs = parse_object::<RuleAttribute>(&rule, &[4]).unwrap();
    assert_eq!(
        attrs,
        [
            Some(RuleAttribute::Table("cplb".into())),
            Some(RuleAttribute::Chain("prerouting".into())),
            Some(RuleAttribute::UserData(b"\x00\x02x\0".to_vec())),
        ]
    );
}

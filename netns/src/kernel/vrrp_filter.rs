//! Classic BPF programs that split a link's protocol-112 traffic in the kernel, before any
//! of it is queued for the daemon: what could be an advert of a configured instance (its
//! version and VRID, TTL 255, long enough, its password, an allowed source) goes to the
//! socket the adverts are read from; everything else goes to a second socket with a small
//! buffer, read after the first and only to count each drop by its reason.
//!
//! Why: a flood of forged or stray VRRP from the LAN would otherwise fill the one receive
//! queue, and whatever arrives next, the real master's adverts too, would be lost to it
//! whenever the daemon falls behind (a busy host, a slow core). With the split, the flood
//! can only overflow its own queue, and those losses are counted as overflows.
//!
//! The filter only sorts; the core still judges every packet of either socket by RFC 3768 /
//! RFC 9568 §7.1, so a filter looser than the core costs nothing but queue room, and a
//! filter that misjudged a real advert would only move it to the slower socket.

use std::net::IpAddr;

use cplb_core::vrrp::{Authentication, InstanceConfig, Version};
use socket2::SockFilter;

/// One instance's adverts, as the kernel can recognise them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// First byte of the VRRP header: version and type (advertisement).
    version_type: u8,
    vrid: u8,
    /// Checked unless the instance accepts unicast adverts with any TTL.
    ttl_255: bool,
    /// v2 simple-text authentication: the eight bytes on the wire.
    password: Option<[u8; 8]>,
    /// `--accept-adverts-from`: only these sources (empty: any).
    sources: Vec<IpAddr>,
}

impl Expected {
    /// What the adverts of `cfg` look like on its socket.
    pub fn of(cfg: &InstanceConfig) -> Self {
        let password = match (&cfg.version, &cfg.auth) {
            (Version::V2, Authentication::SimpleText(pass)) => Some(*pass.wire()),
            _ => None,
        };
        Self {
            version_type: match cfg.version {
                Version::V2 => 0x21,
                Version::V3 => 0x31,
            },
            vrid: cfg.vrid.get(),
            ttl_255: !cfg.unicast_any_ttl,
            password,
            sources: cfg.accept_from.clone(),
        }
    }
}

/// Which packets a program keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Those that match an instance: the adverts' socket.
    Expected,
    /// The others: the socket that only counts drops.
    Others,
}

/// The program for a raw socket of the family `v4` (IPv4 raw sockets see the IP header at
/// offset 0; IPv6 ones see the VRRP header at 0 and reach the IPv6 header through
/// `SKF_NET_OFF`).
pub fn program(v4: bool, expected: &[Expected], keep: Keep) -> Vec<SockFilter> {
    instructions(v4, expected, keep)
        .into_iter()
        .map(|i| SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect()
}

/// Bytes kept of a packet the program accepts (all of them).
const ALL: u32 = 0x0004_0000;
/// The kernel's offset base for loads relative to the network header.
const SKF_NET_OFF: u32 = 0xfff0_0000;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
const LD_W_IND: u16 = 0x40;
const LD_B_IND: u16 = 0x50;
const LD_W_LEN: u16 = 0x80;
const LDX_IMM: u16 = 0x01;
const LDX_B_MSH: u16 = 0xb1;
const ALU_ADD_K: u16 = 0x04;
const ALU_ADD_X: u16 = 0x0c;
const ALU_SUB_K: u16 = 0x14;
const ALU_LSH_K: u16 = 0x64;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JGE_X: u16 = 0x3d;
const TAX: u16 = 0x07;
const RET_K: u16 = 0x06;

/// One instruction, readable in tests (socket2's type hides its fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

/// A block's step: a plain instruction, or a test whose false branch leaves the block.
enum Step {
    Do(u16, u32),
    /// Go on if true; else on to the next block.
    Require(u16, u32),
}

fn instructions(v4: bool, expected: &[Expected], keep: Keep) -> Vec<Insn> {
    let (on_match, otherwise) = match keep {
        Keep::Expected => (ALL, 0),
        Keep::Others => (0, ALL),
    };
    let mut out = Vec::new();
    for e in expected {
        // One block per allowed source (or one for any source): a packet matches when
        // every test of some block holds.
        let sources: Vec<Option<IpAddr>> = if e.sources.is_empty() {
            vec![None]
        } else {
            e.sources.iter().copied().filter(|s| s.is_ipv4() == v4).map(Some).collect()
        };
        for source in sources {
            let steps = block(v4, e, source);
            let n = steps.len() + 1; // and the return
            for (i, step) in steps.into_iter().enumerate() {
                out.push(match step {
                    Step::Do(code, k) => Insn { code, jt: 0, jf: 0, k },
                    // To the instruction after this block's return.
                    Step::Require(code, k) => Insn {
                        code,
                        jt: 0,
                        jf: u8::try_from(n - i - 1).expect("a block is short"),
                        k,
                    },
                });
            }
            out.push(Insn { code: RET_K, jt: 0, jf: 0, k: on_match });
        }
    }
    out.push(Insn { code: RET_K, jt: 0, jf: 0, k: otherwise });
    out
}

/// The tests of one block. Every load is preceded by a length test covering it, so no load
/// ever runs past the packet (which would end the program with "drop" on either socket).
fn block(v4: bool, e: &Expected, source: Option<IpAddr>) -> Vec<Step> {
    use Step::{Do, Require};
    let mut s = Vec::new();
    if v4 {
        // X = the IP header's length; the packet holds at least the VRRP header's first 8.
        s.push(Do(LDX_B_MSH, 0));
        s.push(Do(LD_W_LEN, 0));
        s.push(Do(ALU_SUB_K, 8));
        s.push(Require(JGE_X, 0));
    } else {
        s.push(Do(LDX_IMM, 0));
        s.push(Do(LD_W_LEN, 0));
        s.push(Require(JGE_K, 8));
    }
    s.push(Do(LD_B_IND, 0));
    s.push(Require(JEQ_K, u32::from(e.version_type)));
    s.push(Do(LD_B_IND, 1));
    s.push(Require(JEQ_K, u32::from(e.vrid)));
    if e.ttl_255 {
        s.push(Do(LD_B_ABS, if v4 { 8 } else { SKF_NET_OFF + 7 }));
        s.push(Require(JEQ_K, 255));
    }
    match source {
        Some(IpAddr::V4(a)) => {
            s.push(Do(LD_W_ABS, 12));
            s.push(Require(JEQ_K, u32::from(a)));
        }
        Some(IpAddr::V6(a)) => {
            for (i, word) in a.octets().chunks(4).enumerate() {
                let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                s.push(Do(LD_W_ABS, SKF_NET_OFF + 8 + 4 * i as u32));
                s.push(Require(JEQ_K, word));
            }
        }
        None => {}
    }
    if let Some(pass) = e.password {
        // v2: auth type 1 at byte 4; the data after the header (8) and the addresses (4
        // each, their count at byte 3).
        s.push(Do(LD_B_IND, 4));
        s.push(Require(JEQ_K, 1));
        s.push(Do(LD_B_IND, 3));
        s.push(Do(ALU_LSH_K, 2));
        s.push(Do(ALU_ADD_X, 0));
        s.push(Do(ALU_ADD_K, 8));
        s.push(Do(TAX, 0));
        s.push(Do(LD_W_LEN, 0));
        s.push(Do(ALU_SUB_K, 8));
        s.push(Require(JGE_X, 0));
        for (i, word) in pass.chunks(4).enumerate() {
            s.push(Do(LD_W_IND, 4 * i as u32));
            s.push(Require(JEQ_K, u32::from_be_bytes([word[0], word[1], word[2], word[3]])));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A classic BPF machine for the instructions above: `data` is what the socket sees,
    /// `net` the network header (`SKF_NET_OFF` loads). `None`: a load out of bounds (the
    /// kernel then drops the packet).
    fn run(prog: &[Insn], data: &[u8], net: &[u8]) -> Option<u32> {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |at: u32, size: usize| -> Option<u32> {
            let (buf, at) = if at >= SKF_NET_OFF {
                (net, (at - SKF_NET_OFF) as usize)
            } else {
                (data, at as usize)
            };
            let bytes = buf.get(at..at + size)?;
            Some(bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b)))
        };
        loop {
            let i = prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { usize::from(i.jt) } else { usize::from(i.jf) };
            match i.code {
                LD_W_ABS => a = load(i.k, 4)?,
                LD_B_ABS => a = load(i.k, 1)?,
                LD_W_IND => a = load(x.wrapping_add(i.k), 4)?,
                LD_B_IND => a = load(x.wrapping_add(i.k), 1)?,
                LD_W_LEN => a = data.len() as u32,
                LDX_IMM => x = i.k,
                LDX_B_MSH => x = 4 * (load(i.k, 1)? & 0xf),
                ALU_ADD_K => a = a.wrapping_add(i.k),
                ALU_ADD_X => a = a.wrapping_add(x),
                ALU_SUB_K => a = a.wrapping_sub(i.k),
                ALU_LSH_K => a <<= i.k,
                JEQ_K => pc += jump(a == i.k),
                JGE_K => pc += jump(a >= i.k),
                JGE_X => pc += jump(a >= x),
                TAX => x = a,
                RET_K => return Some(i.k),
                other => panic!("opcode {other:#x} not modelled"),
            }
        }
    }

    fn v2(vrid: u8, ttl: u8, pass: &[u8], src: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0xc0, 0, 40, 0, 0, 0, 0, ttl, 112, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[224, 0, 0, 18]);
        p.extend_from_slice(&[0x21, vrid, 100, 1, 1, 1, 0, 0, 10, 0, 0, 1]);
        let mut auth = [0u8; 8];
        auth[..pass.len()].copy_from_slice(pass);
        p.extend_from_slice(&auth);
        p
    }

    fn expected(vrid: u8, pass: Option<&[u8]>, sources: Vec<IpAddr>) -> Expected {
        Expected {
            version_type: if pass.is_some() { 0x21 } else { 0x31 },
            vrid,
            ttl_255: true,
            password: pass.map(|p| {
                let mut w = [0u8; 8];
                w[..p.len()].copy_from_slice(p);
                w
            }),
            sources,
        }
    }

    /// Every packet goes to exactly one of the two sockets.
    fn sorted(v4: bool, e: &[Expected], data: &[u8], net: &[u8]) -> Keep {
        let to_adverts = run(&instructions(v4, e, Keep::Expected), data, net);
        let to_others = run(&instructions(v4, e, Keep::Others), data, net);
        match (to_adverts, to_others) {
            (Some(ALL), Some(0)) => Keep::Expected,
            (Some(0), Some(ALL)) => Keep::Others,
            other => panic!("a packet kept by both or neither socket: {other:?}"),
        }
    }

    #[test]
    fn a_real_advert_goes_to_the_adverts_socket_and_every_forgery_to_the_other() {
        let e = [expected(51, Some(b"k0s"), vec![]), expected(52, Some(b"other"), vec![])];
        let src = [10, 0, 0, 2];
        assert_eq!(sorted(true, &e, &v2(51, 255, b"k0s", src), &[]), Keep::Expected);
        assert_eq!(sorted(true, &e, &v2(52, 255, b"other", src), &[]), Keep::Expected);
        assert_eq!(sorted(true, &e, &v2(51, 255, b"other", src), &[]), Keep::Others);
        assert_eq!(sorted(true, &e, &v2(51, 255, b"wrong", src), &[]), Keep::Others);
        assert_eq!(sorted(true, &e, &v2(99, 255, b"k0s", src), &[]), Keep::Others);
        assert_eq!(sorted(true, &e, &v2(51, 64, b"k0s", src), &[]), Keep::Others);
        // Truncated anywhere: never a load past the end, always to the counting socket.
        let whole = v2(51, 255, b"k0s", src);
        for len in 20..whole.len() {
            assert_eq!(sorted(true, &e, &whole[..len], &[]), Keep::Others, "{len} bytes");
        }
        // More addresses than the packet holds: the password is not where it would be.
        let mut lying = whole.clone();
        lying[23] = 3;
        assert_eq!(sorted(true, &e, &lying, &[]), Keep::Others);
        // An IP header with options moves the VRRP header.
        let mut options = whole[..20].to_vec();
        options[0] = 0x46;
        options.extend_from_slice(&[1, 1, 1, 0]);
        options.extend_from_slice(&whole[20..]);
        assert_eq!(sorted(true, &e, &options, &[]), Keep::Expected);
    }

    #[test]
    fn with_allowed_sources_only_their_adverts_are_expected() {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
        let e = [expected(51, Some(b"k0s"), vec![peer, "fd00::3".parse().unwrap()])];
        assert_eq!(sorted(true, &e, &v2(51, 255, b"k0s", [10, 0, 0, 3]), &[]), Keep::Expected);
        assert_eq!(sorted(true, &e, &v2(51, 255, b"k0s", [10, 0, 0, 4]), &[]), Keep::Others);
    }

    #[test]
    fn ipv6_reads_hop_limit_and_source_from_the_network_header() {
        let advert = [0x31, 7, 100, 1, 0, 100, 0, 0];
        let mut header = vec![0x60, 0, 0, 0, 0, 24, 112, 255];
        let src: std::net::Ipv6Addr = "fe80::2".parse().unwrap();
        header.extend_from_slice(&src.octets());
        header.extend_from_slice(&"ff02::12".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let any = [expected(7, None, vec![])];
        assert_eq!(sorted(false, &any, &advert, &header), Keep::Expected);
        let allowed = [expected(7, None, vec![IpAddr::V6(src)])];
        assert_eq!(sorted(false, &allowed, &advert, &header), Keep::Expected);
        let other = [expected(7, None, vec!["fe80::9".parse().unwrap()])];
        assert_eq!(sorted(false, &other, &advert, &header), Keep::Others);
        let mut low = header.clone();
        low[7] = 1;
        assert_eq!(sorted(false, &any, &advert, &low), Keep::Others);
        assert_eq!(sorted(false, &any, &advert[..6], &header), Keep::Others);
        assert_eq!(sorted(false, &[expected(8, None, vec![])], &advert, &header), Keep::Others);
    }
}

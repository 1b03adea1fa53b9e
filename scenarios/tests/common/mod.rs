//! Reading the vector files: hand-built `.vec` files and tcpdump captures (`.txt`).
#![allow(dead_code, unreachable_pub)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A hand-built vector: the bytes, the extra CLI arguments and the expected JSON fields.
pub struct Vector {
    pub path: PathBuf,
    pub hex: String,
    pub args: Vec<String>,
    pub expect: serde_json::Value,
}

/// One VRRP packet from a tcpdump capture, with the fields tcpdump's own dissector printed.
#[derive(Debug)]
pub struct Captured {
    pub origin: String,
    /// Hex of the whole frame, as dumped (from the Ethernet header with `-XX`).
    pub frame_hex: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub interval_cs: u16,
    pub auth: Option<String>,
    pub addresses: Vec<IpAddr>,
}

impl Vector {
    /// The IP packet: the bytes as written, or the packet inside them when they are an
    /// Ethernet frame (a `tcpdump -XX` dump).
    pub fn ip_packet(&self) -> Vec<u8> {
        let bytes = cplb_scenarios::hex_input::parse(&self.hex).expect("hex");
        if cplb_core::vrrp::parse_ip(&bytes).is_ok() {
            bytes
        } else {
            cplb_scenarios::hex_input::ip_in_ethernet(&bytes)
                .expect("an IP packet or an Ethernet frame")
        }
    }
}

pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/vectors")
}

/// `../shared/vectors` next to the checkout, where new captures are dropped.
pub fn shared_vectors_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors");
    dir.is_dir().then_some(dir)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

pub fn hand_built() -> Vec<Vector> {
    files(&vectors_dir(), "vec")
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read vector");
            let mut args = Vec::new();
            let mut expect = None;
            let mut hex = String::new();
            for line in text.lines() {
                if let Some(a) = line.strip_prefix("# args:") {
                    args = a.split_whitespace().map(str::to_owned).collect();
                } else if let Some(e) = line.strip_prefix("# expect:") {
                    expect = Some(serde_json::from_str(e).expect("expect JSON"));
                } else if !line.starts_with('#') {
                    hex.push_str(line);
                    hex.push('\n');
                }
            }
            let expect =
                expect.unwrap_or_else(|| panic!("{} has no '# expect:' line", path.display()));
            Vector { path, hex, args, expect }
        })
        .collect()
}

/// Every VRRP packet in every tcpdump capture of the project and of `../shared/vectors`.
pub fn captured() -> Vec<Captured> {
    let mut dirs = vec![vectors_dir()];
    dirs.extend(shared_vectors_dir());
    let mut out = Vec::new();
    let mut seen_names = std::collections::BTreeSet::new();
    for dir in dirs {
        for path in files(&dir, "txt") {
            // The project keeps a copy of the shared capture; read each file name once.
            if !seen_names.insert(path.file_name().expect("name").to_owned()) {
                continue;
            }
            out.extend(parse_tcpdump(&path));
        }
    }
    out
}

fn parse_tcpdump(path: &Path) -> Vec<Captured> {
    let text = std::fs::read_to_string(path).expect("read capture");
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains("proto VRRP (112)") {
            continue;
        }
        let ttl = field_after(line, "ttl ").expect("ttl");
        let summary = lines[i + 1].trim();
        let (endpoints, rest) = summary.split_once(": VRRPv").expect("VRRP summary");
        let (src, dst) = endpoints.split_once(" > ").expect("src > dst");
        let mut frame_hex = String::new();
        for dump in lines[i + 2..].iter().take_while(|l| l.trim_start().starts_with("0x")) {
            let cols = dump.trim_start().split_once(':').expect("offset").1;
            frame_hex.push_str(cols.trim_start().split("  ").next().expect("hex"));
        }
        let intvl = rest.split("intvl ").nth(1).expect("intvl").split(',').next().expect("intvl");
        let interval_cs = match intvl.strip_suffix("cs") {
            Some(cs) => cs.parse().expect("cs"),
            None => intvl.trim_end_matches('s').parse::<u16>().expect("s") * 100,
        };
        let addrs = rest.split("addrs: ").nth(1).expect("addrs");
        let (addrs, auth) = match addrs.split_once(" auth \"") {
            Some((a, auth)) => (a, Some(auth.trim_end_matches('"').to_owned())),
            None => (addrs, None),
        };
        out.push(Captured {
            origin: format!("{}:{}", path.display(), i + 1),
            frame_hex,
            src: src.parse().expect("src"),
            dst: dst.parse().expect("dst"),
            ttl,
            version: rest[..1].parse().expect("version"),
            vrid: field_after(rest, "vrid ").expect("vrid"),
            priority: field_after(rest, "prio ").expect("prio"),
            interval_cs,
            auth,
            addresses: addrs.split(',').map(|a| a.trim().parse().expect("addr")).collect(),
        });
    }
    out
}

fn field_after<T: std::str::FromStr>(s: &str, key: &str) -> Option<T> {
    let start = s.find(key)? + key.len();
    let end = s[start..].find(|c: char| !c.is_ascii_alphanumeric()).map_or(s.len(), |e| start + e);
    s[start..end].parse().ok()
}

/// Runs the `cplb` binary.
pub fn cplb(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cplb"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run cplb");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes()).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("cplb output")
}

/// Runs `cplb packet decode` and returns the JSON, or panics with stderr.
pub fn decode_json(args: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let mut all = vec!["packet", "decode"];
    all.extend_from_slice(args);
    let out = cplb(&all, stdin);
    assert!(out.status.success(), "cplb {all:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// A directory under the system temp dir, removed when dropped (also when a test panics).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cplb-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! What cplbd created on this host, so that it removes only that: a keepalived or an
//! operator's address on the same host outlives cplbd's start, restart and stop.
//!
//! Addresses cplbd adds carry its tag in `IFA_PROTO` ([`ADDRESS_PROTO`], shown by `ip addr`
//! as `proto 99`). Kernels before 5.18 do not keep that attribute, so every address cplbd
//! adds is also written down in a small state file under `--state-dir` (`/run`, gone at
//! reboot with the addresses themselves), named after the network namespace like the lock.
//! A cplbd that was killed leaves the file; the next one reads it and so knows its
//! predecessor's addresses.
//!
//! The record also holds what direct routing changed on the host: the value each ARP
//! sysctl had before cplbd first set it (so a stop puts it back, even after a crash lost
//! the daemon that set it), and the interfaces it created (`dummyvip0` where it was
//! missing), which it deletes on stop and leaves alone otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The `IFA_PROTO` value of the addresses cplbd adds.
pub const ADDRESS_PROTO: u8 = 99;

/// The record, kept in step with the kernel on every change.
#[derive(Debug, Clone, Default)]
pub struct Owned {
    /// Where it is saved (`None`: not saved, as in tests).
    path: Option<PathBuf>,
    state: State,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    /// (ifindex, address) of every address cplbd added and has not removed.
    addresses: BTreeSet<(u32, IpAddr)>,
    /// Sysctl (path under /proc/sys) to the value it had before cplbd changed it.
    #[serde(default)]
    sysctls: BTreeMap<String, String>,
    /// Names of the interfaces cplbd created.
    #[serde(default)]
    links: BTreeSet<String>,
}

impl Owned {
    /// The record kept at `path` (`None`: kept in memory only), as a predecessor left it
    /// (empty when there is none or it does not parse: then only the tag tells).
    pub fn load(path: Option<PathBuf>) -> Self {
        let state = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| match serde_json::from_str(&text) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "the record of what cplbd created does not parse: only tagged addresses count as cplbd's");
                    None
                }
            })
            .unwrap_or_default();
        Self { path, state }
    }

    /// Whether cplbd added `addr` on `ifindex` (per the record).
    pub fn has_address(&self, ifindex: u32, addr: IpAddr) -> bool {
        self.state.addresses.contains(&(ifindex, addr))
    }

    /// Notes an address cplbd added.
    pub fn added(&mut self, ifindex: u32, addr: IpAddr) {
        if self.state.addresses.insert((ifindex, addr)) {
            self.save();
        }
    }

    /// Notes an address gone.
    pub fn removed(&mut self, ifindex: u32, addr: IpAddr) {
        if self.state.addresses.remove(&(ifindex, addr)) {
            self.save();
        }
    }

    /// Notes that cplbd is about to change `key` from `original`; a value recorded before
    /// (by a predecessor that was killed) is the original and stays.
    pub fn changing_sysctl(&mut self, key: &str, original: &str) {
        if !self.state.sysctls.contains_key(key) {
            self.state.sysctls.insert(key.to_owned(), original.to_owned());
            self.save();
        }
    }

    /// The sysctls cplbd changed, with the values to put back.
    pub fn changed_sysctls(&self) -> Vec<(String, String)> {
        self.state.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Notes a sysctl put back.
    pub fn restored_sysctl(&mut self, key: &str) {
        if self.state.sysctls.remove(key).is_some() {
            self.save();
        }
    }

    /// Notes an interface cplbd created.
    pub fn created_link(&mut self, name: &str) {
        if self.state.links.insert(name.to_owned()) {
            self.save();
        }
    }

    /// Whether cplbd created the interface `name` (per the record).
    pub fn has_link(&self, name: &str) -> bool {
        self.state.links.contains(name)
    }

    /// Notes an interface gone.
    pub fn removed_link(&mut self, name: &str) {
        if self.state.links.remove(name) {
            self.save();
        }
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let text = serde_json::to_string(&self.state).unwrap_or_default();
        // Written whole then renamed: a crash never leaves half a record.
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "writing the record of what cplbd created");
        }
    }
}

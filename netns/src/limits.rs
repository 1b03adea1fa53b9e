//! The daemon's budget of file descriptors, and logging that a flood cannot turn into a
//! flood of log lines.
//!
//! At start cplbd raises RLIMIT_NOFILE's soft limit to the hard one ([`raise_nofile`]).
//! The proxy may then use all but [`RESERVE_FDS`] of them ([`default_proxy_connections`]),
//! so that health probes, netlink, the status socket and the metrics endpoint always find a
//! descriptor: with the soft limit of 1024 and no cap, a few hundred held proxy connections
//! made the probes fail with EMFILE, the local API server counted as down, and the VIP moved.

use std::fmt::Display;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept out of the proxy's reach: health probes (one per API server per
/// interval, two while a TLS probe overlaps the next), netlink and VRRP sockets, the status
/// socket and the metrics endpoint's connections, the log.
pub const RESERVE_FDS: u64 = 256;

/// RLIMIT_NOFILE before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now (the hard limit, unless raising failed).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises RLIMIT_NOFILE's soft limit to its hard limit (no privilege needed) and logs both.
/// On failure the limit stays as it was and the failure is logged.
pub fn raise_nofile() -> Option<NoFile> {
    let (before, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE");
            return None;
        }
    };
    let soft = if before < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft = before, hard, "cannot raise RLIMIT_NOFILE");
                before
            }
        }
    } else {
        before
    };
    tracing::info!(before, soft, hard, "file descriptor limit (RLIMIT_NOFILE)");
    Some(NoFile { before, soft, hard })
}

/// RLIMIT_NOFILE's soft limit now.
pub fn nofile_soft() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// The proxy's connection cap for a descriptor limit: each proxied connection holds two
/// descriptors (client and server), and [`RESERVE_FDS`] (at most half the limit) stay for
/// everything else.
pub fn default_proxy_connections(limit: u64) -> usize {
    let reserve = RESERVE_FDS.min(limit / 2);
    usize::try_from(limit.saturating_sub(reserve) / 2).unwrap_or(usize::MAX).max(1)
}

/// Descriptors this process holds now (entries of `/proc/self/fd`).
pub fn open_fds() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle read_dir holds is one of them.
    Some(entries.count().saturating_sub(1) as u64)
}

/// How often at most [`RateLog`] writes a summary line.
pub const RATE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A warning that can come thousands of times a second (refused connections, peers denied):
/// the first is logged at once, later ones are counted and summed up in one line at most
/// every [`RATE_LOG_EVERY`]. The counters in status and metrics stay exact.
#[derive(Debug)]
pub struct RateLog {
    what: &'static str,
    pending: u64,
    last: Option<tokio::time::Instant>,
}

impl RateLog {
    /// A log for one kind of event, e.g. "proxy: connection refused over the cap".
    pub const fn new(what: &'static str) -> Self {
        Self { what, pending: 0, last: None }
    }

    /// One more event; `detail` (the peer, the limit) is shown on the lines that are written.
    pub fn note(&mut self, detail: impl Display) {
        let now = tokio::time::Instant::now();
        match self.last {
            None => {
                tracing::warn!(
                    "{}: {detail} (further ones are summed up at most once a minute)",
                    self.what
                );
                self.last = Some(now);
            }
            Some(last) if now.duration_since(last) >= RATE_LOG_EVERY => {
                let n = self.pending + 1;
                let secs = now.duration_since(last).as_secs();
                tracing::warn!(
                    count = n,
                    "{}: {n} in the last {secs} s, the last {detail}",
                    self.what
                );
                self.pending = 0;
                self.last = Some(now);
            }
            Some(_) => self.pending += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_cap_leaves_the_reserve_and_counts_two_descriptors_per_connection() {
        assert_eq!(default_proxy_connections(1024), (1024 - 256) / 2);
        assert_eq!(default_proxy_connections(1_048_576), (1_048_576 - 256) / 2);
        // A tiny limit still leaves half for the rest, and never a cap of zero.
        assert_eq!(default_proxy_connections(200), 50);
        assert_eq!(default_proxy_connections(1), 1);
    }

    #[test]
    fn open_descriptors_and_the_limit_are_read() {
        // stdin, stdout, stderr at least (other tests open and close theirs meanwhile).
        assert!(open_fds().unwrap() >= 3);
        assert!(nofile_soft().unwrap() >= 3);
    }
}

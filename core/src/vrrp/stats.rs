//! Per-instance counters: the RFC's statistics (VRRPv3-MIB, RFC 6527) and one counter per
//! drop reason.

use std::collections::BTreeMap;

use super::checksum::ChecksumForm;
use super::drop_reason::DropReason;

/// Counters of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Advertisements that passed every receive check.
    pub adverts_received: u64,
    /// Advertisements sent (one per destination).
    pub adverts_sent: u64,
    /// Transitions to Master.
    pub became_master: u64,
    /// Priority-0 advertisements received.
    pub priority_zero_received: u64,
    /// Priority-0 advertisements sent.
    pub priority_zero_sent: u64,
    /// Advertisements whose address list differs from ours (counted, not dropped).
    pub address_list_mismatch: u64,
    /// Contentions won against another master.
    pub contentions_won: u64,
    /// Accepted advertisements by the checksum form their sender used.
    pub checksum_forms: BTreeMap<ChecksumForm, u64>,
    /// Dropped packets by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Advertisements that could not be encoded (never sent).
    pub encode_failures: u64,
}

impl Stats {
    /// Packets dropped for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.iter().find(|(r, _)| r.as_str() == reason).map_or(0, |(_, n)| *n)
    }

    /// Packets dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    pub(crate) fn count_drops(&mut self, reason: DropReason, n: u64) {
        *self.dropped.entry(reason).or_default() += n;
    }
}

//! The driver's clock: the node's time, read from the runtime's, and the runtime's instant
//! at which a deadline of the node falls. On a host that is the monotonic time since the
//! daemon started; a simulation may give the driver a clock that drifts.

use std::time::Duration;

use cplb_core::time::Instant;

/// Converts between the runtime's time and the node's.
pub trait Clock {
    /// The node's time at the runtime's instant `at`.
    fn node_time(&self, at: tokio::time::Instant) -> Instant;
    /// The first runtime instant at which the node's time has reached `at`.
    fn runtime_time(&self, at: Instant) -> tokio::time::Instant;
}

/// The host's monotonic clock: the node's time is the time since `started`.
#[derive(Debug, Clone, Copy)]
pub struct Monotonic {
    /// The node's time zero.
    pub started: tokio::time::Instant,
}

impl Clock for Monotonic {
    fn node_time(&self, at: tokio::time::Instant) -> Instant {
        let nanos = at.saturating_duration_since(self.started).as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn runtime_time(&self, at: Instant) -> tokio::time::Instant {
        self.started + Duration::from_nanos(at.as_nanos())
    }
}

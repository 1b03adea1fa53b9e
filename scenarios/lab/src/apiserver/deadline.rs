//! When a connection is given up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// When a connection is given up: set at accept, so that a slow or silent client holds its
/// connection only that long, and moved by the answer: a watch pushes it back with each
/// event it sends (it lasts as long as its client reads), a hung server lifts it (it holds
/// the connection until the client gives up). Once lifted it stays lifted.
///
/// Clones share the deadline: the connection's task waits on it while the answer moves it.
#[derive(Debug, Clone)]
pub(super) struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    /// `after` from now.
    pub(super) fn after(after: Duration) -> Self {
        Self(Arc::new(Mutex::new(Some(Instant::now() + after))))
    }

    /// Moves it to `after` from now, unless it was lifted.
    pub(super) fn push_back(&self, after: Duration) {
        let mut at = self.lock();
        if at.is_some() {
            *at = Some(Instant::now() + after);
        }
    }

    /// No deadline any more.
    pub(super) fn lift(&self) {
        *self.lock() = None;
    }

    /// Returns once the deadline has passed; never if it is lifted.
    pub(super) async fn passed(&self) {
        // Sleep until the deadline last seen and look again: it may have moved meanwhile.
        // (No wake-up is needed when it moves: later, the sleep ends early and looks again;
        // lifted, it then waits for ever.)
        loop {
            let Some(at) = *self.lock() else {
                return std::future::pending().await;
            };
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // Nothing can be left half-done under this lock: a poisoned one still holds a time.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn passes_moves_and_lifts() {
        let start = Instant::now();
        let deadline = Deadline::after(100 * MS);
        deadline.passed().await;
        let took = start.elapsed();
        assert!((100 * MS..200 * MS).contains(&took), "{took:?}");

        let start = Instant::now();
        let deadline = Deadline::after(100 * MS);
        let mover = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(50 * MS).await;
            mover.push_back(200 * MS);
        });
        deadline.passed().await;
        let took = start.elapsed();
        assert!((250 * MS..350 * MS).contains(&took), "{took:?}");

        let deadline = Deadline::after(100 * MS);
        let lifter = deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(50 * MS).await;
            lifter.lift();
            // Lifted stays lifted.
            lifter.push_back(MS);
        });
        let waited = tokio::time::timeout(400 * MS, deadline.passed()).await;
        assert!(waited.is_err(), "a lifted deadline passed");
    }
}

//! The daemon's wake-up for the node's deadlines, on a `timerfd`.
//!
//! tokio's timer wheel rounds every deadline up to its next millisecond tick, so a
//! Master_Down timer fired 0.5–1.5 ms late, and a backup that must take over the VIP the
//! moment the interval ends announced it that much later than keepalived (whose select(2)
//! timeout is in microseconds). A timerfd armed for the deadline wakes within the kernel's
//! timer slack (50 µs by default). The simulated daemon keeps tokio's timer, which turmoil
//! drives.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// One timer, re-armed for each deadline.
pub(crate) struct Timer {
    /// `None` when no timerfd could be made: tokio's timer serves, a millisecond coarser.
    fd: Option<AsyncFd<Fd>>,
    /// The deadline the timerfd is armed for (`None` once it fired): the loop asks for the
    /// same deadline after every packet, and a flood must not cost a syscall each.
    armed: Option<tokio::time::Instant>,
}

/// tokio's `AsyncFd` wants `AsRawFd`, which nix's `TimerFd` does not implement.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    pub(crate) fn new() -> Self {
        // `AsyncFd::new` is deprecated for descriptors that could be closed while
        // registered; this AsyncFd owns its timerfd, and the safe constructor keeps the
        // crate free of `unsafe`.
        #[allow(deprecated)]
        let made = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)
        .and_then(|fd| AsyncFd::new(Fd(fd)));
        match made {
            Ok(fd) => Self { fd: Some(fd), armed: None },
            Err(e) => {
                tracing::warn!("no timerfd ({e}): timers use tokio's, which wake up to 1 ms late");
                Self { fd: None, armed: None }
            }
        }
    }

    /// Resolves at `deadline` (at once when it is past). Cancel-safe: dropping the future
    /// leaves the timer armed, and the next call re-arms it for another deadline or keeps
    /// it (an expiry nobody read yet is read then).
    pub(crate) async fn sleep_until(&mut self, deadline: tokio::time::Instant) {
        let Some(fd) = &self.fd else {
            return tokio::time::sleep_until(deadline).await;
        };
        if self.armed != Some(deadline) {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            // A zero expiration disarms a timerfd: a deadline already past fires in 1 ns.
            let wait = wait.max(Duration::from_nanos(1));
            let set = fd.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            );
            if let Err(e) = set {
                self.armed = None;
                tracing::warn!("arming the timerfd: {e}; this wake-up uses tokio's timer");
                return tokio::time::sleep_until(deadline).await;
            }
            self.armed = Some(deadline);
        }
        loop {
            let Ok(mut ready) = fd.readable().await else {
                self.armed = None;
                return tokio::time::sleep_until(deadline).await;
            };
            // Readiness can be left over from an expiry before the re-arm, whose count the
            // re-arm cleared: the read then finds nothing, and the wait goes on.
            let read = ready.try_io(|fd| {
                nix::unistd::read(&fd.get_ref().0, &mut [0u8; 8]).map_err(std::io::Error::from)
            });
            match read {
                Ok(Ok(_)) => {
                    self.armed = None;
                    return;
                }
                Ok(Err(e)) => {
                    self.armed = None;
                    tracing::warn!("reading the timerfd: {e}; this wake-up uses tokio's timer");
                    return tokio::time::sleep_until(deadline).await;
                }
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_at_the_deadline_and_at_once_for_a_past_one() {
        let mut timer = Timer::new();
        assert!(timer.fd.is_some(), "this kernel makes timerfds");
        let start = tokio::time::Instant::now();
        timer.sleep_until(start + Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30), "woke early: {:?}", start.elapsed());
        // Past deadline, and a re-arm after an expiry nobody read.
        let past = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        timer.sleep_until(past).await;
        // A cancelled wait, then a new one: the new deadline counts, not the old.
        let soon = tokio::time::Instant::now() + Duration::from_millis(2);
        tokio::select! {
            () = timer.sleep_until(soon + Duration::from_secs(60)) => panic!("fired early"),
            () = tokio::time::sleep_until(soon) => {}
        }
        // The same deadline asked again after a cancelled wait is not re-armed, and fires.
        // (Far enough ahead that a loaded machine polls the wait before it is due.)
        let same = tokio::time::Instant::now() + Duration::from_millis(500);
        tokio::select! {
            () = timer.sleep_until(same) => panic!("fired early"),
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        timer.sleep_until(same).await;
        assert!(tokio::time::Instant::now() >= same);
        let again = tokio::time::Instant::now();
        timer.sleep_until(again + Duration::from_millis(10)).await;
        assert!(again.elapsed() >= Duration::from_millis(10));
        assert!(again.elapsed() < Duration::from_secs(30), "the old deadline held");
    }
}

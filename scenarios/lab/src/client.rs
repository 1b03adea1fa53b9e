//! The lab's client: a fresh connection to VIP:6443 every few milliseconds from the client
//! namespace, each recorded with when it began, connected and ended.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) start: Instant,
    /// When its TCP connection was established (answered ones).
    pub(super) connected: Option<Instant>,
    pub(super) end: Instant,
    pub(super) answered: bool,
    /// Why it failed (for the reports of failures that should not have happened).
    pub(super) error: Option<String>,
}

/// A new connection to the VIP `every` interval, each with a 1 s limit, until told to stop;
/// each attempt goes into `record` as it ends.
pub(super) fn client_loop(
    vip: std::net::SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
    every: Duration,
    record: &Arc<Mutex<Vec<Attempt>>>,
) {
    client_loop_on(vip, stop, every, &Mutex::new(Instant::now()), record);
}

/// [`client_loop`] on a grid: connections begin at `origin + k * every`, and a new origin
/// moves the grid, so that a bench can put its probes at the same offsets from each fault
/// for every contender.
pub(super) fn client_loop_on(
    vip: std::net::SocketAddr,
    stop: &std::sync::atomic::AtomicBool,
    every: Duration,
    origin: &Mutex<Instant>,
    record: &Arc<Mutex<Vec<Attempt>>>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut last: Option<Instant> = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(o) = origin.lock().map(|o| *o) else { return };
            let after = last
                .map_or_else(Instant::now, |l| (l + Duration::from_nanos(1)).max(Instant::now()));
            let at = next_on_grid(o, every, after);
            tokio::time::sleep_until(at.into()).await;
            last = Some(at);
            let record = Arc::clone(record);
            tasks.spawn(async move {
                let start = Instant::now();
                let fetched =
                    crate::apiserver::fetch_timed(vip, "/", true, Duration::from_secs(1)).await;
                let (connected, error) = match fetched {
                    Ok((at, _)) => (Some(at), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let answered = error.is_none();
                let attempt = Attempt { start, connected, end: Instant::now(), answered, error };
                if let Ok(mut r) = record.lock() {
                    r.push(attempt);
                }
            });
            // Reap finished tasks as we go (a soak cycle runs for many seconds).
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// The first point `origin + k * every` (k any integer) at or after `after`.
fn next_on_grid(origin: Instant, every: Duration, after: Instant) -> Instant {
    let every_ns = every.as_nanos().max(1);
    if after >= origin {
        let k = (after - origin).as_nanos().div_ceil(every_ns);
        origin + Duration::from_nanos(u64::try_from(k * every_ns).unwrap_or(u64::MAX))
    } else {
        let k = (origin - after).as_nanos() / every_ns;
        origin - Duration::from_nanos(u64::try_from(k * every_ns).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_grid_takes_the_first_point_at_or_after_on_either_side_of_its_origin() {
        let origin = Instant::now() + Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert_eq!(next_on_grid(origin, ms(10), origin), origin);
        assert_eq!(next_on_grid(origin, ms(10), origin + ms(1)), origin + ms(10));
        assert_eq!(next_on_grid(origin, ms(10), origin + ms(20)), origin + ms(20));
        assert_eq!(next_on_grid(origin, ms(10), origin - ms(25)), origin - ms(20));
        assert_eq!(next_on_grid(origin, ms(10), origin - ms(30)), origin - ms(30));
    }
}

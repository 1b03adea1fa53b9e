//! A tracked input with rise/fall hysteresis, like keepalived's `vrrp_script`.

/// How a tracked input debounces its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrackerConfig {
    /// Consecutive successes that bring a down input up.
    pub rise: u32,
    /// Consecutive failures that bring an up input down.
    pub fall: u32,
    /// State before the first result: up, unless the input must prove itself first
    /// (keepalived's `init_fail`).
    pub initially_up: bool,
}

impl Default for TrackerConfig {
    /// keepalived's and k0s's health check habit: one success or two failures decide,
    /// assumed up until told otherwise.
    fn default() -> Self {
        Self { rise: 1, fall: 2, initially_up: true }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracker {
    config: TrackerConfig,
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

impl Tracker {
    pub(crate) fn new(config: TrackerConfig) -> Self {
        Self { config, up: config.initially_up, streak: 0 }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// Records a result; returns the new state when it flips.
    pub(crate) fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.config.rise } else { self.config.fall };
        (self.streak >= needed).then(|| {
            self.up = ok;
            self.streak = 0;
            ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_fall_failures_in_a_row_and_rise_successes_in_a_row() {
        let mut t = Tracker::new(TrackerConfig { rise: 2, fall: 3, initially_up: true });
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None); // the streak is broken
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert!(t.is_up());
    }
}

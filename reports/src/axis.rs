//! Time on the x axis: a window of the run mapped onto the plot, ticks at round steps, and
//! the windows worth zooming into.

use crate::run::Run;

/// Part of a run, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    pub(crate) t0: f64,
    pub(crate) t1: f64,
}

impl Window {
    pub(crate) fn span(self) -> f64 {
        (self.t1 - self.t0).max(1e-9)
    }

    pub(crate) fn overlaps(self, from: f64, until: f64) -> bool {
        until >= self.t0 && from <= self.t1
    }
}

/// A window on `width` pixels starting at `x0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    pub(crate) window: Window,
    pub(crate) x0: f64,
    pub(crate) width: f64,
}

impl Scale {
    /// The x of time `t`, clamped to the plot.
    pub(crate) fn x(&self, t: f64) -> f64 {
        let f = ((t - self.window.t0) / self.window.span()).clamp(0.0, 1.0);
        self.x0 + f * self.width
    }

    /// The x range of `[from, until]`, at least `min` pixels wide (so that a 3 ms fault in
    /// an hour's run is still seen), kept on the plot.
    pub(crate) fn range(&self, from: f64, until: f64, min: f64) -> (f64, f64) {
        let (a, b) = (self.x(from), self.x(until.max(from)));
        if b - a >= min {
            return (a, b - a);
        }
        let a = a.min(self.x0 + self.width - min).max(self.x0);
        (a, min)
    }

    /// Round ticks over the window, and how to write them.
    pub(crate) fn ticks(&self) -> Vec<(f64, String)> {
        let span = self.window.span();
        let step = STEPS.iter().copied().find(|s| span / s <= 10.0).unwrap_or(86_400.0);
        let first = (self.window.t0 / step - 1e-9).ceil() as i64;
        let last = (self.window.t1 / step + 1e-9).floor() as i64;
        (first..=last).map(|k| k as f64 * step).map(|t| (self.x(t), label(t, step))).collect()
    }
}

/// Tick steps, seconds: milliseconds to a day.
const STEPS: [f64; 30] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 10_800.0, 21_600.0, 43_200.0, 86_400.0,
    172_800.0, 432_000.0, 864_000.0,
];

/// A time written to the precision of the step it falls on.
fn label(t: f64, step: f64) -> String {
    if step < 1.0 {
        let decimals = (-step.log10()).ceil().max(0.0) as usize;
        return format!("{t:.decimals$} s");
    }
    if step < 60.0 {
        return format!("{t:.0} s");
    }
    let total = t.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, s) {
        _ if total == 0 => "0".to_owned(),
        (0, 0) => format!("{m} min"),
        (0, _) => format!("{m}m{s:02}s"),
        (_, 0) => format!("{h}h{m:02}"),
        _ => format!("{h}:{m:02}:{s:02}"),
    }
}

/// A duration for people: `2.569 s`, `640 ms`, `1h05m`.
pub(crate) fn duration(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 600.0 {
        format!("{s:.3} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.2} h", s / 3600.0)
    }
}

/// At most this many zoomed views.
pub(crate) const MAX_DETAILS: usize = 8;

/// The windows worth a zoomed view, in time order: around each failover (from its fault
/// to the VIP answering again), else around each fault, padded, merged where they meet.
/// None when the whole run is already short enough to read.
pub(crate) fn details(run: &Run) -> Vec<(Window, String)> {
    let mut spots: Vec<(f64, f64, String)> = run
        .failovers
        .iter()
        .map(|f| {
            let from = f.fault_at_s.unwrap_or(f.new_master_at_s).min(f.new_master_at_s);
            let until = f.vip_answering_at_s.unwrap_or(f.new_master_at_s).max(f.new_master_at_s);
            let name = run.instances.get(f.instance).map_or("?", |i| i.name.as_str());
            (from, until, format!("{} → {} ({name})", f.from, f.to))
        })
        .collect();
    if spots.is_empty() {
        spots = run
            .faults
            .iter()
            .map(|f| {
                let until = f.until_s.unwrap_or(run.duration_s).min(f.at_s + 10.0);
                (f.at_s, until, f.label.clone())
            })
            .collect();
    }
    spots.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut windows: Vec<(Window, String)> = Vec::new();
    for (from, until, what) in spots {
        let pad = ((until - from) * 0.25).max(0.5);
        let w = Window { t0: (from - pad).max(0.0), t1: (until + pad).min(run.duration_s) };
        match windows.last_mut() {
            Some((last, label)) if w.t0 <= last.t1 => {
                last.t1 = last.t1.max(w.t1);
                label.push_str(", ");
                label.push_str(&what);
            }
            _ => windows.push((w, what)),
        }
    }
    // A zoom is only worth it when it shows at least five times the detail.
    windows.retain(|(w, _)| w.span() * 5.0 <= run.duration_s);
    windows.truncate(MAX_DETAILS);
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_written_to_their_step_from_milliseconds_to_hours() {
        let scale = |t0, t1| Scale { window: Window { t0, t1 }, x0: 0.0, width: 1000.0 };
        let labels = |s: Scale| s.ticks().into_iter().map(|(_, l)| l).collect::<Vec<_>>();
        assert_eq!(labels(scale(0.0, 60.0))[..3], ["0 s", "10 s", "20 s"]);
        assert_eq!(labels(scale(2.5, 2.58))[..2], ["2.50 s", "2.51 s"]);
        assert_eq!(labels(scale(0.0, 4.0 * 3600.0))[..3], ["0", "30 min", "1h00"]);
        assert_eq!(labels(scale(0.0, 600.0))[1], "1 min");
        assert!(labels(scale(0.0, 0.004)).len() <= 11);
    }

    #[test]
    fn a_short_span_keeps_a_minimum_width_inside_the_plot() {
        let s = Scale { window: Window { t0: 0.0, t1: 3600.0 }, x0: 100.0, width: 1000.0 };
        assert_eq!(s.range(10.0, 10.003, 3.0).1, 3.0);
        let (x, w) = s.range(3600.0, 3600.0, 3.0);
        assert!(x + w <= 1100.0 + 1e-9);
        assert_eq!(s.range(0.0, 1800.0, 3.0), (100.0, 500.0));
    }
}

//! The run's trace: what happened when, in order. Same scenario and seed, same bytes.

use cplb_core::time::Instant;

/// Lines of the trace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trace {
    lines: Vec<(Instant, String)>,
}

impl Trace {
    pub(crate) fn push(&mut self, at: Instant, text: String) {
        self.lines.push((at, text));
    }

    /// The last `n` lines, rendered.
    pub(crate) fn tail(&self, n: usize) -> Vec<String> {
        let start = self.lines.len().saturating_sub(n);
        self.lines.get(start..).unwrap_or_default().iter().map(render).collect()
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.iter().map(render).collect()
    }

    /// FNV-1a over the rendered lines: equal hashes, equal traces (for the determinism check).
    pub(crate) fn hash(&self) -> u64 {
        use std::hash::Hasher as _;
        let mut h = fnv::FnvHasher::default();
        for line in &self.lines {
            h.write(render(line).as_bytes());
            h.write(b"\n");
        }
        h.finish()
    }
}

fn render((at, text): &(Instant, String)) -> String {
    format!("{:>12.6} {text}", at.as_nanos() as f64 / 1e9)
}

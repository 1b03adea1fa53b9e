//! A queue of things due at instants, taken in time order and, at one instant, in the order
//! they were put in: the engine's events, the observer's records.

use core::cmp::Reverse;
use std::collections::BinaryHeap;

use cplb_core::time::Instant;

/// One entry.
#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The queue.
#[derive(Debug)]
pub(crate) struct TimeQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

impl<T> Default for TimeQueue<T> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), seq: 0 }
    }
}

impl<T> TimeQueue<T> {
    /// Puts `item` in, due at `at`.
    pub(crate) fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, item }));
    }

    /// When the next item is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The next item, if it is due by `until` (any: `None`).
    pub(crate) fn pop(&mut self, until: Option<Instant>) -> Option<(Instant, T)> {
        if until.is_some_and(|t| self.next_at().is_some_and(|at| at > t)) {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.at, e.item))
    }

    /// A number that grows with every push (the engine's timers are told apart by it).
    pub(crate) fn generation(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

//! Which inference run is in flight, and whether it was cancelled.
//!
//! Owns the bookkeeping that makes cancelling a hung run exact: a run is
//! identified by a [`RunId`], a cancel names the run it is meant for, and a
//! run learns at its end whether it was the one cancelled. A cancel that
//! arrives after its run ended does nothing, so it can never abort the next
//! run. It does not cancel anything itself: the caller terminates the real
//! run (ONNX Runtime's run options) while it holds the tracker's lock, so the
//! decision and the action cannot be split by a run that ends in between.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(u64);

#[derive(Debug, Default)]
pub struct RunTracker {
    next: u64,
    current: Option<(RunId, Instant)>,
    cancelled: Option<RunId>,
}

impl RunTracker {
    /// A run starts now.
    pub fn start(&mut self, now: Instant) -> RunId {
        self.next += 1;
        let id = RunId(self.next);
        self.current = Some((id, now));
        id
    }

    /// The current run, if it has run longer than `limit` and was not
    /// cancelled yet: it is marked cancelled and returned, once.
    pub fn cancel_if_overdue(&mut self, now: Instant, limit: Duration) -> Option<RunId> {
        let (id, at) = self.current?;
        if now.duration_since(at) <= limit || self.cancelled == Some(id) {
            return None;
        }
        self.cancelled = Some(id);
        Some(id)
    }

    /// The current run, cancelled unconditionally (shutdown).
    pub fn cancel_current(&mut self) -> Option<RunId> {
        let (id, _) = self.current?;
        (self.cancelled != Some(id)).then(|| {
            self.cancelled = Some(id);
            id
        })
    }

    /// Run `id` ended; returns whether it was cancelled (its result must not be used).
    pub fn finish(&mut self, id: RunId) -> bool {
        if self.current.is_some_and(|(c, _)| c == id) {
            self.current = None;
        }
        let cancelled = self.cancelled == Some(id);
        if cancelled {
            self.cancelled = None;
        }
        cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_overdue_run_is_cancelled_once_and_learns_it() {
        let t0 = Instant::now();
        let mut t = RunTracker::default();
        let id = t.start(t0);
        assert_eq!(t.cancel_if_overdue(t0 + 500 * MS, 1000 * MS), None);
        assert_eq!(t.cancel_if_overdue(t0 + 1001 * MS, 1000 * MS), Some(id));
        assert_eq!(t.cancel_if_overdue(t0 + 2000 * MS, 1000 * MS), None, "once");
        assert!(t.finish(id));
        assert_eq!(t.cancel_current(), None, "nothing runs after it finished");
    }

    #[test]
    fn a_cancel_after_the_run_ended_never_touches_the_next_run() {
        let t0 = Instant::now();
        let mut t = RunTracker::default();
        let first = t.start(t0);
        assert!(!t.finish(first));
        // The watchdog looks now: nothing is running, nothing to cancel.
        assert_eq!(t.cancel_if_overdue(t0 + 5000 * MS, 1000 * MS), None);
        let second = t.start(t0 + 5000 * MS);
        assert!(!t.finish(second), "the next run is not aborted");
    }

    #[test]
    fn shutdown_cancels_whatever_runs() {
        let t0 = Instant::now();
        let mut t = RunTracker::default();
        assert_eq!(t.cancel_current(), None);
        let id = t.start(t0);
        assert_eq!(t.cancel_current(), Some(id));
        assert!(t.finish(id));
    }
}

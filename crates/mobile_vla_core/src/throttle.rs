//! Rate limiting for repeated warnings (a bad camera sends 30 bad frames a second).
//!
//! Owns only the decision "log this now, and how many were suppressed since";
//! the caller does the logging.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most one warning of each kind `K` per period.
pub struct Throttle<K> {
    period: Duration,
    last: HashMap<K, (Instant, u64)>,
}

impl<K: Copy + Eq + Hash> Throttle<K> {
    pub fn new(period: Duration) -> Self {
        Self { period, last: HashMap::new() }
    }

    /// `Some(suppressed)` when a warning of this kind may be logged now.
    pub fn allow(&mut self, kind: K, now: Instant) -> Option<u64> {
        match self.last.get_mut(&kind) {
            Some((at, suppressed)) if now.duration_since(*at) < self.period => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = std::mem::take(suppressed);
                *at = now;
                Some(n)
            }
            None => {
                self.last.insert(kind, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_per_kind_with_the_suppressed_count() {
        let mut t = Throttle::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(t.allow("frame", t0), Some(0));
        assert_eq!(t.allow("frame", t0 + Duration::from_millis(100)), None);
        assert_eq!(t.allow("frame", t0 + Duration::from_millis(200)), None);
        assert_eq!(t.allow("stale", t0 + Duration::from_millis(200)), Some(0));
        assert_eq!(t.allow("frame", t0 + Duration::from_secs(2)), Some(2));
    }
}

//! Which command source drives the robot, with twist_mux's semantics.
//!
//! Owns the priorities, timeouts and locks: the fresh source with the highest
//! priority wins (ties go to the most recent); a source that times out hands
//! control back to the next one; an active lock silences every source whose
//! priority is not above its own, and the e-stop lock (the highest priority)
//! silences all of them. A lock with a timeout that stops being published
//! counts as engaged, like twist_mux, so a dead e-stop publisher stops the
//! robot. Non-finite commands are refused. Nothing here publishes.

use std::time::{Duration, Instant};

/// A velocity command: linear.x, linear.y (omni base), angular.z.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Velocity {
    pub x: f64,
    pub y: f64,
    pub wz: f64,
}

impl Velocity {
    pub const ZERO: Velocity = Velocity { x: 0.0, y: 0.0, wz: 0.0 };

    pub fn is_finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite() && self.wz.is_finite()
    }

    pub fn axes(&self) -> [f64; 3] {
        [self.x, self.y, self.wz]
    }

    pub fn from_axes(a: [f64; 3]) -> Self {
        Velocity { x: a[0], y: a[1], wz: a[2] }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    pub name: String,
    pub priority: u8,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LockSpec {
    pub name: String,
    pub priority: u8,
    /// `None`: the lock holds its last state forever; `Some(t)`: no message
    /// for `t` engages it.
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
struct Source {
    spec: SourceSpec,
    last: Option<(Velocity, Instant)>,
    enabled: bool,
}

#[derive(Debug)]
struct Lock {
    spec: LockSpec,
    engaged: bool,
    at: Instant,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    NonFinite(Velocity),
}

/// What the mux decided at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub command: Velocity,
    /// The source in control, if any.
    pub source: Option<String>,
    /// The highest engaged lock, if any (it may or may not be silencing the winner).
    pub lock: Option<String>,
}

#[derive(Debug)]
pub struct CommandMux {
    sources: Vec<Source>,
    locks: Vec<Lock>,
}

impl CommandMux {
    /// `start` is when the locks' timeouts start counting.
    pub fn new(sources: Vec<SourceSpec>, locks: Vec<LockSpec>, start: Instant) -> Self {
        Self {
            sources: sources.into_iter().map(|spec| Source { spec, last: None, enabled: true }).collect(),
            locks: locks.into_iter().map(|spec| Lock { spec, engaged: false, at: start }).collect(),
        }
    }

    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.spec.name == name)
    }

    /// A new command from source `i`.
    pub fn command(&mut self, i: usize, v: Velocity, now: Instant) -> Result<(), Refused> {
        if !v.is_finite() {
            return Err(Refused::NonFinite(v));
        }
        self.sources[i].last = Some((v, now));
        Ok(())
    }

    /// Forgets source `i`'s last command (for example: the policy's action became invalid).
    pub fn clear(&mut self, i: usize) {
        self.sources[i].last = None;
    }

    /// Pauses (false) or resumes (true) source `i`; a paused source never wins.
    pub fn set_enabled(&mut self, i: usize, enabled: bool) {
        self.sources[i].enabled = enabled;
        if !enabled {
            self.sources[i].last = None;
        }
    }

    pub fn is_enabled(&self, i: usize) -> bool {
        self.sources[i].enabled
    }

    pub fn lock(&mut self, i: usize, engaged: bool, now: Instant) {
        self.locks[i].engaged = engaged;
        self.locks[i].at = now;
    }

    fn lock_engaged(l: &Lock, now: Instant) -> bool {
        l.engaged || l.spec.timeout.is_some_and(|t| now.duration_since(l.at) > t)
    }

    pub fn decide(&self, now: Instant) -> Decision {
        let lock = self
            .locks
            .iter()
            .filter(|l| Self::lock_engaged(l, now))
            .max_by_key(|l| l.spec.priority);
        let floor = lock.map(|l| l.spec.priority);
        let winner = self
            .sources
            .iter()
            .filter(|s| s.enabled && floor.is_none_or(|f| s.spec.priority > f))
            .filter_map(|s| match s.last {
                Some((v, at)) if now.duration_since(at) < s.spec.timeout => Some((s, v, at)),
                _ => None,
            })
            .max_by_key(|(s, _, at)| (s.spec.priority, *at));
        Decision {
            command: winner.map_or(Velocity::ZERO, |(_, v, _)| v),
            source: winner.map(|(s, _, _)| s.spec.name.clone()),
            lock: lock.map(|l| l.spec.name.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn v(x: f64) -> Velocity {
        Velocity { x, y: 0.0, wz: 0.0 }
    }

    fn mux(t0: Instant) -> CommandMux {
        CommandMux::new(
            vec![
                SourceSpec { name: "policy".into(), priority: 10, timeout: 500 * MS },
                SourceSpec { name: "nav".into(), priority: 50, timeout: 500 * MS },
                SourceSpec { name: "joystick".into(), priority: 100, timeout: 500 * MS },
            ],
            vec![
                LockSpec { name: "pause_autonomy".into(), priority: 20, timeout: None },
                LockSpec { name: "e_stop".into(), priority: 255, timeout: None },
            ],
            t0,
        )
    }

    #[test]
    fn higher_priority_preempts_and_its_timeout_hands_control_back() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(0, v(0.3), t0).unwrap();
        assert_eq!(m.decide(t0).source.as_deref(), Some("policy"));
        m.command(2, v(-0.5), t0 + 100 * MS).unwrap();
        let d = m.decide(t0 + 150 * MS);
        assert_eq!((d.source.as_deref(), d.command), (Some("joystick"), v(-0.5)));
        // The policy keeps publishing; the joystick goes quiet and times out.
        m.command(0, v(0.4), t0 + 550 * MS).unwrap();
        let d = m.decide(t0 + 650 * MS);
        assert_eq!((d.source.as_deref(), d.command), (Some("policy"), v(0.4)));
    }

    #[test]
    fn no_fresh_source_means_zero() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        assert_eq!(m.decide(t0), Decision { command: Velocity::ZERO, source: None, lock: None });
        m.command(1, v(1.0), t0).unwrap();
        assert_eq!(m.decide(t0 + 500 * MS).command, Velocity::ZERO);
    }

    #[test]
    fn e_stop_beats_everything_until_released() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(2, v(0.5), t0).unwrap();
        m.lock(1, true, t0);
        let d = m.decide(t0 + MS);
        assert_eq!((d.command, d.source, d.lock.as_deref()), (Velocity::ZERO, None, Some("e_stop")));
        m.command(2, v(0.5), t0 + 2 * MS).unwrap();
        assert_eq!(m.decide(t0 + 3 * MS).command, Velocity::ZERO);
        m.lock(1, false, t0 + 4 * MS);
        assert_eq!(m.decide(t0 + 5 * MS).command, v(0.5));
    }

    #[test]
    fn a_low_lock_silences_only_sources_at_or_below_it() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(0, v(0.3), t0).unwrap();
        m.lock(0, true, t0);
        assert_eq!(m.decide(t0).command, Velocity::ZERO);
        m.command(1, v(0.2), t0).unwrap();
        assert_eq!(m.decide(t0).source.as_deref(), Some("nav"));
    }

    #[test]
    fn a_lock_that_stops_being_published_engages() {
        let t0 = Instant::now();
        let mut m = CommandMux::new(
            vec![SourceSpec { name: "joystick".into(), priority: 100, timeout: Duration::from_secs(10) }],
            vec![LockSpec { name: "heartbeat".into(), priority: 255, timeout: Some(200 * MS) }],
            t0,
        );
        m.lock(0, false, t0);
        m.command(0, v(0.5), t0).unwrap();
        assert_eq!(m.decide(t0 + 100 * MS).command, v(0.5));
        assert_eq!(m.decide(t0 + 300 * MS).lock.as_deref(), Some("heartbeat"));
        assert_eq!(m.decide(t0 + 300 * MS).command, Velocity::ZERO);
    }

    #[test]
    fn non_finite_commands_are_refused_and_change_nothing() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(2, v(0.1), t0).unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(m.command(2, Velocity { x: 0.0, y: bad, wz: 0.0 }, t0 + MS).is_err());
        }
        assert_eq!(m.decide(t0 + 2 * MS).command, v(0.1));
    }

    #[test]
    fn a_paused_source_never_wins() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(0, v(0.3), t0).unwrap();
        m.set_enabled(0, false);
        m.command(0, v(0.3), t0).unwrap();
        assert_eq!(m.decide(t0).command, Velocity::ZERO);
        m.set_enabled(0, true);
        m.command(0, v(0.3), t0 + MS).unwrap();
        assert_eq!(m.decide(t0 + MS).command, v(0.3));
    }

    proptest! {
        /// Whatever happens, the mux only ever outputs zero or the last command of a
        /// fresh, enabled source above every engaged lock; with the e-stop engaged, zero.
        #[test]
        fn output_comes_only_from_fresh_unlocked_sources(
            events in prop::collection::vec((0u8..6, 0usize..3, -2.0f64..2.0, 0u64..400), 1..60)
        ) {
            let t0 = Instant::now();
            let mut m = mux(t0);
            let mut now = t0;
            let mut last: [Option<(f64, Instant)>; 3] = [None; 3];
            let mut estop = false;
            for (kind, i, x, dt) in events {
                now += Duration::from_millis(dt);
                match kind {
                    0..=2 => { m.command(i, v(x), now).unwrap(); last[i] = Some((x, now)); }
                    3 => { estop = !estop; m.lock(1, estop, now); }
                    _ => {}
                }
                let d = m.decide(now);
                if estop {
                    prop_assert_eq!(d.command, Velocity::ZERO);
                    prop_assert!(d.source.is_none());
                }
                match &d.source {
                    None => prop_assert_eq!(d.command, Velocity::ZERO),
                    Some(name) => {
                        let i = m.source_index(name).unwrap();
                        let (x, at) = last[i].unwrap();
                        prop_assert!(now.duration_since(at) < 500 * MS);
                        prop_assert_eq!(d.command, v(x));
                    }
                }
            }
        }
    }
}

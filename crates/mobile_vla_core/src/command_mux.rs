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

use crate::vocab::Velocity;

/// A command source of the mux, by its position in the configured list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub usize);

/// A lock of the mux, by its position in the configured list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(pub usize);

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
    /// The source is paused: what it sends now must not win when it resumes.
    Disabled,
}

/// What the mux decided at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub command: Velocity,
    /// The source in control, if any.
    pub source: Option<SourceId>,
    /// The highest engaged lock, if any (it may or may not be silencing the winner).
    pub lock: Option<LockId>,
}

impl Decision {
    pub const NONE: Decision = Decision { command: Velocity::ZERO, source: None, lock: None };

    /// A lock silences every source: stop at once, without a ramp.
    pub fn hard_stop(&self) -> bool {
        self.lock.is_some() && self.source.is_none()
    }
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

    /// New priorities and timeouts for the same sources and locks (by name);
    /// what each holds, and each lock's state, stay, except commands already
    /// timed out at `now`: a longer timeout must not bring one back, nor
    /// release a lock its timeout engaged.
    pub fn set_specs(&mut self, sources: &[SourceSpec], locks: &[LockSpec], now: Instant) {
        for s in &mut self.sources {
            if s.last.is_some_and(|(_, at)| now.duration_since(at) >= s.spec.timeout) {
                s.last = None;
            }
        }
        for s in &mut self.sources {
            if let Some(spec) = sources.iter().find(|n| n.name == s.spec.name) {
                s.spec = spec.clone();
            }
        }
        for l in &mut self.locks {
            // A lock engaged by its timeout stays engaged: only its publisher releases it.
            l.engaged = Self::lock_engaged(l, now);
            if let Some(spec) = locks.iter().find(|n| n.name == l.spec.name) {
                l.spec = spec.clone();
            }
        }
    }

    /// Why new specs may not apply at `now`: they would let a source drive
    /// that an engaged lock silences (a lower lock priority, a higher source
    /// priority). A live change never weakens an engaged lock; once it is
    /// released, the same change applies.
    pub fn weakens_engaged_lock(&self, sources: &[SourceSpec], locks: &[LockSpec], now: Instant) -> Option<String> {
        let priority = |name: &str, old: u8, new: &[(&str, u8)]| new.iter().find(|n| n.0 == name).map_or(old, |n| n.1);
        let new_sources: Vec<(&str, u8)> = sources.iter().map(|s| (s.name.as_str(), s.priority)).collect();
        let new_locks: Vec<(&str, u8)> = locks.iter().map(|l| (l.name.as_str(), l.priority)).collect();
        for l in self.locks.iter().filter(|l| Self::lock_engaged(l, now)) {
            let lock_now = priority(&l.spec.name, l.spec.priority, &new_locks);
            for s in self.sources.iter().filter(|s| s.spec.priority <= l.spec.priority) {
                let source_now = priority(&s.spec.name, s.spec.priority, &new_sources);
                if source_now > lock_now {
                    return Some(format!(
                        "lock '{}' is engaged: with lock priority {lock_now} and source '{}' at priority                          {source_now} the source would drive through it; release the lock first",
                        l.spec.name, s.spec.name
                    ));
                }
            }
        }
        None
    }

    pub fn source_id(&self, name: &str) -> Option<SourceId> {
        self.sources.iter().position(|s| s.spec.name == name).map(SourceId)
    }

    pub fn source_name(&self, id: SourceId) -> &str {
        &self.sources[id.0].spec.name
    }

    pub fn lock_name(&self, id: LockId) -> &str {
        &self.locks[id.0].spec.name
    }

    /// A new command from `id`; a paused source's commands are refused, not kept.
    pub fn command(&mut self, id: SourceId, v: Velocity, now: Instant) -> Result<(), Refused> {
        if !v.is_finite() {
            return Err(Refused::NonFinite(v));
        }
        let s = &mut self.sources[id.0];
        if !s.enabled {
            return Err(Refused::Disabled);
        }
        s.last = Some((v, now));
        Ok(())
    }

    /// Changes the value of `id`'s last command, keeping when it was given (so
    /// its timeout still counts from then); nothing when it holds none.
    pub fn retarget(&mut self, id: SourceId, v: Velocity) {
        if let Some((held, _)) = &mut self.sources[id.0].last {
            if v.is_finite() {
                *held = v;
            }
        }
    }

    /// Forgets `id`'s last command (for example: the policy's action became invalid).
    pub fn clear(&mut self, id: SourceId) {
        self.sources[id.0].last = None;
    }

    /// Forgets every source's last command: only what arrives from now on may drive.
    pub fn clear_all(&mut self) {
        for s in &mut self.sources {
            s.last = None;
        }
    }

    /// Pauses (false) or resumes (true) `id`; a paused source never wins and
    /// keeps nothing, so nothing from before the pause drives after it.
    pub fn set_enabled(&mut self, id: SourceId, enabled: bool) {
        let s = &mut self.sources[id.0];
        s.enabled = enabled;
        s.last = None;
    }

    pub fn is_enabled(&self, id: SourceId) -> bool {
        self.sources[id.0].enabled
    }

    pub fn lock(&mut self, id: LockId, engaged: bool, now: Instant) {
        self.locks[id.0].engaged = engaged;
        self.locks[id.0].at = now;
    }

    /// Whether `id` counts as engaged at `now` (set, or timed out).
    pub fn is_locked(&self, id: LockId, now: Instant) -> bool {
        Self::lock_engaged(&self.locks[id.0], now)
    }

    fn lock_engaged(l: &Lock, now: Instant) -> bool {
        l.engaged || l.spec.timeout.is_some_and(|t| now.duration_since(l.at) > t)
    }

    pub fn decide(&self, now: Instant) -> Decision {
        let lock = self
            .locks
            .iter()
            .enumerate()
            .filter(|(_, l)| Self::lock_engaged(l, now))
            .max_by_key(|(_, l)| l.spec.priority);
        let floor = lock.map(|(_, l)| l.spec.priority);
        let winner = self
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.enabled && floor.is_none_or(|f| s.spec.priority > f))
            .filter_map(|(i, s)| match s.last {
                Some((v, at)) if now.duration_since(at) < s.spec.timeout => Some((i, s.spec.priority, v, at)),
                _ => None,
            })
            .max_by_key(|(_, priority, _, at)| (*priority, *at));
        Decision {
            command: winner.map_or(Velocity::ZERO, |(_, _, v, _)| v),
            source: winner.map(|(i, ..)| SourceId(i)),
            lock: lock.map(|(i, _)| LockId(i)),
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

    fn src(m: &CommandMux, d: &Decision) -> Option<String> {
        d.source.map(|s| m.source_name(s).to_string())
    }

    fn lock_of(m: &CommandMux, d: &Decision) -> Option<String> {
        d.lock.map(|l| m.lock_name(l).to_string())
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
        m.command(SourceId(0), v(0.3), t0).unwrap();
        assert_eq!(src(&m, &m.decide(t0)).as_deref(), Some("policy"));
        m.command(SourceId(2), v(-0.5), t0 + 100 * MS).unwrap();
        let d = m.decide(t0 + 150 * MS);
        assert_eq!((src(&m, &d).as_deref(), d.command), (Some("joystick"), v(-0.5)));
        // The policy keeps publishing; the joystick goes quiet and times out.
        m.command(SourceId(0), v(0.4), t0 + 550 * MS).unwrap();
        let d = m.decide(t0 + 650 * MS);
        assert_eq!((src(&m, &d).as_deref(), d.command), (Some("policy"), v(0.4)));
    }

    #[test]
    fn no_fresh_source_means_zero() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        assert_eq!(m.decide(t0), Decision { command: Velocity::ZERO, source: None, lock: None });
        m.command(SourceId(1), v(1.0), t0).unwrap();
        assert_eq!(m.decide(t0 + 500 * MS).command, Velocity::ZERO);
    }

    #[test]
    fn e_stop_beats_everything_until_released() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(SourceId(2), v(0.5), t0).unwrap();
        m.lock(LockId(1), true, t0);
        let d = m.decide(t0 + MS);
        assert_eq!((d.command, d.source, lock_of(&m, &d).as_deref()), (Velocity::ZERO, None, Some("e_stop")));
        m.command(SourceId(2), v(0.5), t0 + 2 * MS).unwrap();
        assert_eq!(m.decide(t0 + 3 * MS).command, Velocity::ZERO);
        m.lock(LockId(1), false, t0 + 4 * MS);
        assert_eq!(m.decide(t0 + 5 * MS).command, v(0.5));
    }

    #[test]
    fn a_low_lock_silences_only_sources_at_or_below_it() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(SourceId(0), v(0.3), t0).unwrap();
        m.lock(LockId(0), true, t0);
        assert_eq!(m.decide(t0).command, Velocity::ZERO);
        m.command(SourceId(1), v(0.2), t0).unwrap();
        assert_eq!(src(&m, &m.decide(t0)).as_deref(), Some("nav"));
    }

    #[test]
    fn no_new_priority_lets_a_source_through_an_engaged_lock() {
        let t0 = Instant::now();
        let m = {
            let mut m = mux(t0);
            m.lock(LockId(1), true, t0);
            m
        };
        let sources = |joy: u8| {
            vec![
                SourceSpec { name: "policy".into(), priority: 10, timeout: 500 * MS },
                SourceSpec { name: "joystick".into(), priority: joy, timeout: 500 * MS },
            ]
        };
        let locks = |p: u8| vec![LockSpec { name: "e_stop".into(), priority: p, timeout: None }];
        // The e-stop lowered below the joystick, or the joystick raised above it.
        let why = m.weakens_engaged_lock(&sources(100), &locks(50), t0).expect("refused");
        assert!(why.contains("'e_stop'") && why.contains("'joystick'"), "{why}");
        assert!(m.weakens_engaged_lock(&sources(255), &locks(200), t0).is_some());
        // What keeps every source silenced, or changes nothing, is fine.
        assert_eq!(m.weakens_engaged_lock(&sources(100), &locks(254), t0), None);
        assert_eq!(m.weakens_engaged_lock(&sources(10), &locks(255), t0), None);
        // Released: the same change applies.
        let mut m = m;
        m.lock(LockId(1), false, t0);
        assert_eq!(m.weakens_engaged_lock(&sources(100), &locks(50), t0), None);
    }

    #[test]
    fn a_lock_that_stops_being_published_engages() {
        let t0 = Instant::now();
        let mut m = CommandMux::new(
            vec![SourceSpec { name: "joystick".into(), priority: 100, timeout: Duration::from_secs(10) }],
            vec![LockSpec { name: "heartbeat".into(), priority: 255, timeout: Some(200 * MS) }],
            t0,
        );
        m.lock(LockId(0), false, t0);
        m.command(SourceId(0), v(0.5), t0).unwrap();
        assert_eq!(m.decide(t0 + 100 * MS).command, v(0.5));
        assert_eq!(lock_of(&m, &m.decide(t0 + 300 * MS)).as_deref(), Some("heartbeat"));
        assert_eq!(m.decide(t0 + 300 * MS).command, Velocity::ZERO);
    }

    #[test]
    fn non_finite_commands_are_refused_and_change_nothing() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(SourceId(2), v(0.1), t0).unwrap();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(m.command(SourceId(2), Velocity { x: 0.0, y: bad, wz: 0.0 }, t0 + MS).is_err());
        }
        assert_eq!(m.decide(t0 + 2 * MS).command, v(0.1));
    }

    #[test]
    fn a_paused_source_never_wins() {
        let t0 = Instant::now();
        let mut m = mux(t0);
        m.command(SourceId(0), v(0.3), t0).unwrap();
        m.set_enabled(SourceId(0), false);
        assert_eq!(m.command(SourceId(0), v(0.3), t0), Err(Refused::Disabled));
        assert_eq!(m.decide(t0).command, Velocity::ZERO);
        m.set_enabled(SourceId(0), true);
        // Nothing sent while paused wins on resume.
        assert_eq!(m.decide(t0).command, Velocity::ZERO);
        m.command(SourceId(0), v(0.3), t0 + MS).unwrap();
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
                    0..=2 => { m.command(SourceId(i), v(x), now).unwrap(); last[i] = Some((x, now)); }
                    3 => { estop = !estop; m.lock(LockId(1), estop, now); }
                    _ => {}
                }
                let d = m.decide(now);
                if estop {
                    prop_assert_eq!(d.command, Velocity::ZERO);
                    prop_assert!(d.source.is_none());
                }
                match d.source {
                    None => prop_assert_eq!(d.command, Velocity::ZERO),
                    Some(SourceId(i)) => {
                        let (x, at) = last[i].unwrap();
                        prop_assert!(now.duration_since(at) < 500 * MS);
                        prop_assert_eq!(d.command, v(x));
                    }
                }
            }
        }
    }
}

//! Which policy may drive: the hybrid (primary) while it is healthy, the pure
//! Kosmos-2 (fallback) while it is not, nothing when neither is.
//!
//! Owns each policy's health and the switching rules, frame by frame:
//! - a policy fails on: load failure (or its required provider missing, or
//!   the inference server of a remote policy unreachable at start), an
//!   inference error, invalid output (non-finite or out of range), deadline
//!   misses (K consecutive, or M of the last N over the per-frame budget), or a
//!   hang (the caller cancels a run that passed the hard timeout and reports
//!   [`Outcome::Timeout`]); each trigger is its own [`Failure`];
//! - a failed policy waits out a cool-down, is then probed on live frames (its
//!   results never drive), and is healthy again after N consecutive good
//!   results; a policy that fails again after recovering doubles its cool-down
//!   (up to a maximum), so it cannot flap; a remote policy whose server was
//!   unreachable at start is probed the same way once it connects;
//! - only a result from the active policy, with outcome Ok and within its
//!   deadline, may be used (a late result counts towards the miss triggers and
//!   drives nothing).
//!
//! It never sees frames, models or ROS: the shell reports loads and outcomes
//! and asks [`Watchdog::verdict`] whether a result may become a command.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::config::WatchdogParams;
use crate::vocab::{ByRole, Role};

#[derive(Debug, Clone, PartialEq)]
pub struct WatchdogConfig {
    /// Per-frame inference budget.
    pub deadline: Duration,
    /// This many consecutive misses fail the policy (0: off).
    pub consecutive_misses: u32,
    /// `window_misses` misses among the last `window` results fail it (0: off).
    pub window_misses: u32,
    pub window: u32,
    /// A run still going after this is cancelled and counts as a hang.
    pub hard_timeout: Duration,
    /// Largest |velocity| a policy may propose before its output counts as invalid.
    pub max_abs_action: f64,
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Consecutive good probe results needed to trust a policy again.
    pub recovery_successes: u32,
    /// After this long healthy, a policy's cool-down is back to `cooldown`.
    pub stable_after: Duration,
    /// At start the fallback drives only once the primary's load has ended
    /// (loaded or failed), or after this long.
    pub start_timeout: Duration,
}

impl From<&WatchdogParams> for WatchdogConfig {
    fn from(w: &WatchdogParams) -> Self {
        let secs = Duration::from_secs_f64;
        WatchdogConfig {
            deadline: secs(w.deadline_s),
            consecutive_misses: w.consecutive_misses,
            window_misses: w.window_misses,
            window: w.window,
            hard_timeout: secs(w.hard_timeout_s),
            max_abs_action: w.max_abs_action,
            cooldown: secs(w.cooldown_s),
            max_cooldown: secs(w.max_cooldown_s),
            recovery_successes: w.recovery_successes,
            stable_after: secs(w.stable_after_s),
            start_timeout: secs(w.start_timeout_s),
        }
    }
}

/// The parameters' defaults (`watchdog.*` in the configuration).
impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig::from(&WatchdogParams::default())
    }
}

/// How one run of a policy ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `action` is the largest |component| of the proposed velocity.
    Ok {
        latency: Duration,
        max_abs: f64,
    },
    Error(String),
    NonFinite,
    Timeout,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Loading,
    /// Loading failed; it is not retried (the model or provider will not
    /// appear by itself), except a remote policy's connection, which its worker keeps trying.
    Unavailable(String),
    Healthy {
        since: Instant,
    },
    Failed {
        retry_at: Instant,
    },
    Probing {
        good: u32,
    },
}

#[derive(Debug, Clone)]
struct Health {
    state: State,
    cooldown: Duration,
    /// Set once a policy recovered: a failure after that doubles the cool-down.
    recovered: bool,
    misses_in_a_row: u32,
    recent: VecDeque<bool>,
    runs: u64,
    failures: u64,
    last_error: String,
}

impl Health {
    /// Counts a result's lateness; the trigger it sets off, if any.
    fn judge(&mut self, outcome: &Outcome, cfg: &WatchdogConfig) -> Option<Failure> {
        let (latency, max_abs) = match outcome {
            Outcome::Ok { latency, max_abs } => (*latency, *max_abs),
            Outcome::Error(e) => return Some(Failure::Inference(e.clone())),
            Outcome::NonFinite => return Some(Failure::NonFinite),
            Outcome::Timeout => return Some(Failure::Hang),
        };
        let miss = latency > cfg.deadline;
        self.misses_in_a_row = if miss { self.misses_in_a_row + 1 } else { 0 };
        self.recent.push_back(miss);
        while self.recent.len() > cfg.window.max(1) as usize {
            self.recent.pop_front();
        }
        let window_count = self.recent.iter().filter(|m| **m).count() as u32;
        if !max_abs.is_finite() || max_abs > cfg.max_abs_action {
            Some(Failure::OutOfRange { max_abs, limit: cfg.max_abs_action })
        } else if cfg.consecutive_misses > 0 && self.misses_in_a_row >= cfg.consecutive_misses {
            Some(Failure::ConsecutiveMisses { misses: self.misses_in_a_row, deadline: cfg.deadline })
        } else if cfg.window_misses > 0 && window_count >= cfg.window_misses {
            Some(Failure::WindowMisses { misses: window_count, of: self.recent.len(), deadline: cfg.deadline })
        } else {
            None
        }
    }

    /// A run failed at `now`: cool down (twice as long after a recent recovery).
    fn failed(&mut self, why: &Failure, now: Instant, cfg: &WatchdogConfig) {
        self.failures += 1;
        self.last_error = why.to_string();
        self.misses_in_a_row = 0;
        self.recent.clear();
        if let State::Healthy { since } = self.state {
            if now.duration_since(since) >= cfg.stable_after {
                self.cooldown = cfg.cooldown;
            } else if self.recovered {
                self.cooldown = (self.cooldown * 2).min(cfg.max_cooldown);
            }
        }
        if !matches!(self.state, State::Loading | State::Unavailable(_)) {
            self.state = State::Failed { retry_at: now + self.cooldown };
        }
    }
}

/// Why a policy stopped being trusted: each trigger its own.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Its load failed (or its required provider was missing): not retried.
    Load(String),
    /// Its inference thread died: not retried.
    Lost(String),
    /// Its inference server could not be reached at start; its worker keeps trying.
    Unreachable(String),
    OutOfRange {
        max_abs: f64,
        limit: f64,
    },
    ConsecutiveMisses {
        misses: u32,
        deadline: Duration,
    },
    WindowMisses {
        misses: u32,
        of: usize,
        deadline: Duration,
    },
    Inference(String),
    NonFinite,
    Hang,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: &Duration| d.as_secs_f64() * 1e3;
        match self {
            Failure::Load(e) | Failure::Lost(e) | Failure::Unreachable(e) => f.write_str(e),
            Failure::OutOfRange { max_abs, limit } => write!(f, "action out of range (|v| = {max_abs:.3} > {limit})"),
            Failure::ConsecutiveMisses { misses, deadline } => {
                write!(f, "{misses} consecutive deadline misses (> {:.0} ms)", ms(deadline))
            }
            Failure::WindowMisses { misses, of, deadline } => {
                write!(f, "{misses} of the last {of} runs missed the {:.0} ms deadline", ms(deadline))
            }
            Failure::Inference(e) => write!(f, "inference error: {e}"),
            Failure::NonFinite => f.write_str("non-finite output (NaN or infinity)"),
            Failure::Hang => f.write_str("hang: no result within the hard timeout (run cancelled)"),
        }
    }
}

/// Why control moved.
#[derive(Debug, Clone, PartialEq)]
pub enum SwitchReason {
    Loaded(Role),
    Failed(Role, Failure),
    Recovered {
        role: Role,
        good: u32,
    },
    /// The hybrid was still loading after `watchdog.start_timeout_s`.
    StillLoading {
        waited: Duration,
    },
}

impl fmt::Display for SwitchReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchReason::Loaded(r) => write!(f, "{r} loaded"),
            SwitchReason::Failed(r, Failure::Load(e)) => write!(f, "{r} failed to load: {e}"),
            SwitchReason::Failed(r, why) => write!(f, "{r}: {why}"),
            SwitchReason::Recovered { role, good } => write!(f, "{role} recovered after {good} good runs"),
            SwitchReason::StillLoading { waited } => {
                write!(f, "{} still loading after {:.0} s", Role::Primary, waited.as_secs_f64())
            }
        }
    }
}

/// A change of the policy in control.
#[derive(Debug, Clone, PartialEq)]
pub struct Switch {
    pub from: Option<Role>,
    pub to: Option<Role>,
    pub reason: SwitchReason,
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |r: Option<Role>| r.map_or("none", Role::name);
        write!(f, "{} -> {}: {}", name(self.from), name(self.to), self.reason)
    }
}

/// What to do with one result.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The result may become a command.
    pub drive: bool,
    /// Control moved because of it.
    pub switch: Option<Switch>,
}

/// A policy's health as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Loading,
    /// Failed to load, or its inference thread died: not retried; or its
    /// inference server is unreachable, which its worker keeps trying.
    Unavailable,
    Healthy,
    CoolingDown,
    Probing,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Loading => "loading",
            HealthState::Unavailable => "unavailable",
            HealthState::Healthy => "healthy",
            HealthState::CoolingDown => "cooling down",
            HealthState::Probing => "probing",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot for diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    pub state: HealthState,
    pub healthy: bool,
    pub runs: u64,
    pub failures: u64,
    pub cooldown: Duration,
    pub last_error: String,
}

pub struct Watchdog {
    cfg: WatchdogConfig,
    health: ByRole<Health>,
    active: Option<Role>,
    last_switch: Option<Switch>,
    /// Until then, a primary still loading keeps the fallback from driving.
    start_deadline: Instant,
}

impl Watchdog {
    /// New thresholds from the next result on; each policy's history and state stay.
    pub fn set_config(&mut self, cfg: WatchdogConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &WatchdogConfig {
        &self.cfg
    }

    pub fn new(cfg: WatchdogConfig, now: Instant) -> Self {
        let h = Health {
            state: State::Loading,
            cooldown: cfg.cooldown,
            recovered: false,
            misses_in_a_row: 0,
            recent: VecDeque::new(),
            runs: 0,
            failures: 0,
            last_error: String::new(),
        };
        let start_deadline = now + cfg.start_timeout;
        Self { health: ByRole::new(h.clone(), h), cfg, active: None, last_switch: None, start_deadline }
    }

    fn health(&mut self, r: Role) -> &mut Health {
        &mut self.health[r]
    }

    fn health_ref(&self, r: Role) -> &Health {
        &self.health[r]
    }

    /// The policy whose results may drive now.
    pub fn active(&self) -> Option<Role> {
        self.active
    }

    pub fn last_switch(&self) -> Option<&Switch> {
        self.last_switch.as_ref()
    }

    pub fn is_healthy(&self, r: Role) -> bool {
        matches!(self.health_ref(r).state, State::Healthy { .. })
    }

    /// Whether `r` should be given live frames now: when it is active, being
    /// probed, or its cool-down is over (the first probe frame starts probing).
    pub fn wants_frames(&self, r: Role, now: Instant) -> bool {
        match self.health_ref(r).state {
            State::Healthy { .. } => self.active == Some(r),
            State::Probing { .. } => true,
            State::Failed { retry_at } => now >= retry_at,
            State::Loading | State::Unavailable(_) => false,
        }
    }

    pub fn report(&self, r: Role) -> HealthReport {
        let h = self.health_ref(r);
        HealthReport {
            state: match h.state {
                State::Loading => HealthState::Loading,
                State::Unavailable(_) => HealthState::Unavailable,
                State::Healthy { .. } => HealthState::Healthy,
                State::Failed { .. } => HealthState::CoolingDown,
                State::Probing { .. } => HealthState::Probing,
            },
            healthy: matches!(h.state, State::Healthy { .. }),
            runs: h.runs,
            failures: h.failures,
            cooldown: h.cooldown,
            last_error: h.last_error.clone(),
        }
    }

    /// Why nothing may drive, when nothing may.
    pub fn reason(&self) -> Option<String> {
        if self.active.is_some() {
            return None;
        }
        let why = |r: Role| {
            let h = self.health_ref(r);
            match &h.state {
                State::Loading => "loading".to_string(),
                State::Unavailable(e) => format!("unavailable: {e}"),
                _ => format!("unhealthy: {}", h.last_error),
            }
        };
        Some(format!("no healthy policy (hybrid {}; pure {})", why(Role::Primary), why(Role::Fallback)))
    }

    pub fn loaded(&mut self, r: Role, result: Result<(), String>, now: Instant) -> Option<Switch> {
        match result {
            // A remote policy that connected after its server was unreachable:
            // probed on the next frames, like a policy after its cool-down.
            Ok(()) if matches!(self.health(r).state, State::Unavailable(_)) => {
                self.health(r).state = State::Failed { retry_at: now };
                None
            }
            Ok(()) => {
                self.health(r).state = State::Healthy { since: now };
                self.reselect(SwitchReason::Loaded(r), now)
            }
            Err(e) => self.unavailable(r, Failure::Load(e), now),
        }
    }

    /// `r` runs on an inference server that cannot be reached: like a failed
    /// load, control moves on, but its worker keeps trying; once it connects
    /// ([`Watchdog::loaded`]) it is probed before it drives.
    pub fn unreachable(&mut self, r: Role, why: String, now: Instant) -> Option<Switch> {
        self.unavailable(r, Failure::Unreachable(why), now)
    }

    /// `r` can no longer run at all (its inference thread died): like a load
    /// failure, it is not retried, and control moves on.
    pub fn lost(&mut self, r: Role, reason: String, now: Instant) -> Option<Switch> {
        self.unavailable(r, Failure::Lost(reason), now)
    }

    fn unavailable(&mut self, r: Role, why: Failure, now: Instant) -> Option<Switch> {
        let h = self.health(r);
        h.failures += 1;
        h.last_error = why.to_string();
        h.state = State::Unavailable(h.last_error.clone());
        self.reselect(SwitchReason::Failed(r, why), now)
    }

    /// A run of `r` ended with `outcome` at `now`.
    pub fn verdict(&mut self, r: Role, outcome: Outcome, now: Instant) -> Verdict {
        let cfg = self.cfg.clone();
        let was_active = self.active == Some(r);
        let h = self.health(r);
        h.runs += 1;
        let late = matches!(outcome, Outcome::Ok { latency, .. } if latency > cfg.deadline);
        if let Some(failure) = h.judge(&outcome, &cfg) {
            h.failed(&failure, now, &cfg);
            let switch = self.reselect(SwitchReason::Failed(r, failure), now);
            return Verdict { drive: false, switch };
        }
        match h.state {
            // A result that arrives while the policy cools down (a frame it
            // was handed before it failed) is no probe: probing starts after
            // the cool-down, on frames handed from then on.
            State::Failed { retry_at } if now < retry_at => return Verdict { drive: false, switch: None },
            State::Failed { .. } => h.state = State::Probing { good: 1 },
            State::Probing { good } => h.state = State::Probing { good: good + 1 },
            _ => {}
        }
        if let State::Probing { good } = h.state {
            if good >= cfg.recovery_successes {
                h.state = State::Healthy { since: now };
                h.recovered = true;
                let switch = self.reselect(SwitchReason::Recovered { role: r, good }, now);
                // This result came from a probe; control moves from the next one.
                return Verdict { drive: false, switch };
            }
            return Verdict { drive: false, switch: None };
        }
        let healthy = matches!(self.health_ref(r).state, State::Healthy { .. });
        Verdict { drive: was_active && healthy && !late, switch: None }
    }

    /// Lets the fallback drive once the primary has been loading past the
    /// start timeout (call it periodically).
    pub fn poll(&mut self, now: Instant) -> Option<Switch> {
        if self.active.is_none() && self.health[Role::Primary].state == State::Loading && now >= self.start_deadline {
            return self.reselect(SwitchReason::StillLoading { waited: self.cfg.start_timeout }, now);
        }
        None
    }

    /// The primary when healthy, else the fallback when healthy, else none.
    /// While the primary's first load is under way (and the start timeout has
    /// not passed) nothing drives: a start is hybrid-first, not a race.
    fn reselect(&mut self, reason: SwitchReason, now: Instant) -> Option<Switch> {
        let primary_loading = self.health[Role::Primary].state == State::Loading && now < self.start_deadline;
        let next = [Role::Primary, Role::Fallback].into_iter().find(|r| self.is_healthy(*r) && !primary_loading);
        if next == self.active {
            return None;
        }
        let s = Switch { from: self.active, to: next, reason };
        self.active = next;
        self.last_switch = Some(s.clone());
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn ok(ms: u64) -> Outcome {
        Outcome::Ok { latency: Duration::from_millis(ms), max_abs: 0.3 }
    }

    fn cfg() -> WatchdogConfig {
        WatchdogConfig {
            deadline: 100 * MS,
            consecutive_misses: 3,
            window_misses: 4,
            window: 10,
            hard_timeout: 1000 * MS,
            max_abs_action: 2.0,
            cooldown: 1000 * MS,
            max_cooldown: 8000 * MS,
            recovery_successes: 3,
            stable_after: 60_000 * MS,
            start_timeout: 5000 * MS,
        }
    }

    fn both_loaded(t0: Instant) -> Watchdog {
        let mut w = Watchdog::new(cfg(), Instant::now());
        w.loaded(Role::Fallback, Ok(()), t0);
        w.loaded(Role::Primary, Ok(()), t0);
        assert_eq!(w.active(), Some(Role::Primary));
        w
    }

    /// One scenario: a failure trigger on the primary moves control to the fallback.
    fn fails_over(trigger: impl Fn(&mut Watchdog, Instant) -> Option<Switch>, reason_has: &str) {
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        let s = trigger(&mut w, t0 + MS).expect("a switch");
        assert_eq!((s.from, s.to), (Some(Role::Primary), Some(Role::Fallback)));
        assert!(s.reason.to_string().contains(reason_has), "{}", s.reason);
        assert_eq!(w.active(), Some(Role::Fallback));
        assert_eq!(w.last_switch(), Some(&s));
    }

    #[test]
    fn scenario_table_every_trigger_fails_over_with_its_own_reason() {
        fails_over(|w, t| w.verdict(Role::Primary, Outcome::Error("boom".into()), t).switch, "inference error: boom");
        fails_over(|w, t| w.verdict(Role::Primary, Outcome::NonFinite, t).switch, "non-finite");
        fails_over(|w, t| w.verdict(Role::Primary, Outcome::Timeout, t).switch, "hang");
        fails_over(
            |w, t| w.verdict(Role::Primary, Outcome::Ok { latency: MS, max_abs: 9.0 }, t).switch,
            "out of range",
        );
        fails_over(
            |w, t| {
                w.verdict(Role::Primary, ok(150), t);
                w.verdict(Role::Primary, ok(150), t);
                w.verdict(Role::Primary, ok(150), t).switch
            },
            "3 consecutive deadline misses",
        );
        fails_over(
            |w, t| {
                let mut s = None;
                for ms in [150, 10, 150, 10, 150, 10, 150] {
                    s = s.or(w.verdict(Role::Primary, ok(ms), t).switch);
                }
                s
            },
            "4 of the last 7 runs missed",
        );
        // Load failure of the primary (missing file, corrupt file, required provider absent).
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), Instant::now());
        w.loaded(Role::Fallback, Ok(()), t0);
        let s = w.loaded(Role::Primary, Err("required execution provider unavailable".into()), t0).unwrap();
        assert_eq!((s.to, w.active()), (Some(Role::Fallback), Some(Role::Fallback)));
        assert!(s.reason.to_string().contains("failed to load"), "{}", s.reason);
        assert_eq!(w.report(Role::Primary).state, HealthState::Unavailable);
        assert!(!w.wants_frames(Role::Primary, t0 + Duration::from_secs(3600)), "a load failure is not probed");
    }

    #[test]
    fn a_failing_result_never_drives_and_a_healthy_active_one_does() {
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        assert!(w.verdict(Role::Primary, ok(10), t0).drive);
        assert!(!w.verdict(Role::Fallback, ok(10), t0).drive, "not active");
        assert!(!w.verdict(Role::Primary, Outcome::NonFinite, t0).drive);
        assert!(w.verdict(Role::Fallback, ok(10), t0).drive);
        let late = w.verdict(Role::Fallback, ok(150), t0);
        assert!(!late.drive && late.switch.is_none(), "late: counted, not used");
    }

    #[test]
    fn recovery_needs_the_cooldown_then_n_good_probes_and_probes_never_drive() {
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        w.verdict(Role::Primary, Outcome::Error("x".into()), t0);
        assert!(!w.wants_frames(Role::Primary, t0 + 500 * MS), "cooling down");
        let t1 = t0 + 1001 * MS;
        assert!(w.wants_frames(Role::Primary, t1));
        let v1 = w.verdict(Role::Primary, ok(10), t1);
        let v2 = w.verdict(Role::Primary, ok(10), t1);
        assert!(!v1.drive && !v2.drive && w.active() == Some(Role::Fallback));
        assert_eq!(w.report(Role::Primary).state, HealthState::Probing);
        let v3 = w.verdict(Role::Primary, ok(10), t1);
        assert!(!v3.drive, "the recovering probe itself does not drive");
        let s = v3.switch.unwrap();
        assert_eq!((s.from, s.to), (Some(Role::Fallback), Some(Role::Primary)));
        assert!(s.reason.to_string().contains("recovered"));
        assert!(w.verdict(Role::Primary, ok(10), t1).drive);
    }

    #[test]
    fn a_good_result_during_the_cooldown_is_no_probe() {
        // Found over ROS: after a hang, the frame handed to the hybrid during it
        // ran at once, counted as a probe, and the hybrid was trusted again
        // 10-60 ms after failing instead of after its cool-down.
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        w.verdict(Role::Primary, Outcome::Timeout, t0);
        for k in 1..=5 {
            let v = w.verdict(Role::Primary, ok(10), t0 + k * 10 * MS);
            assert!(!v.drive && v.switch.is_none(), "run {k} during the cool-down");
        }
        assert_eq!(w.report(Role::Primary).state, HealthState::CoolingDown);
        assert_eq!(w.active(), Some(Role::Fallback));
        let t1 = t0 + 1001 * MS;
        for _ in 0..2 {
            w.verdict(Role::Primary, ok(10), t1);
        }
        assert_eq!(w.active(), Some(Role::Fallback), "two probes of three");
        assert!(w.verdict(Role::Primary, ok(10), t1).switch.is_some());
    }

    #[test]
    fn a_bad_probe_restarts_the_cooldown() {
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        w.verdict(Role::Primary, Outcome::Error("x".into()), t0);
        let t1 = t0 + 1001 * MS;
        w.verdict(Role::Primary, ok(10), t1);
        w.verdict(Role::Primary, Outcome::NonFinite, t1);
        assert_eq!(w.report(Role::Primary).state, HealthState::CoolingDown);
        assert!(!w.wants_frames(Role::Primary, t1 + 500 * MS));
    }

    #[test]
    fn flapping_doubles_the_cooldown_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        let mut now = t0;
        let mut cooldowns = vec![];
        for _ in 0..6 {
            w.verdict(Role::Primary, Outcome::Error("x".into()), now);
            cooldowns.push(w.report(Role::Primary).cooldown.as_millis());
            now += w.report(Role::Primary).cooldown + MS;
            for _ in 0..3 {
                w.verdict(Role::Primary, ok(10), now);
            }
            assert_eq!(w.active(), Some(Role::Primary));
        }
        assert_eq!(cooldowns, vec![1000, 2000, 4000, 8000, 8000, 8000]);
        // Healthy for long enough: back to the base cool-down.
        now += 60_001 * MS;
        w.verdict(Role::Primary, Outcome::Error("x".into()), now);
        assert_eq!(w.report(Role::Primary).cooldown.as_millis(), 1000);
    }

    #[test]
    fn double_failure_is_a_safe_stop_with_a_reason_and_recovery_still_works() {
        let t0 = Instant::now();
        let mut w = both_loaded(t0);
        w.verdict(Role::Primary, Outcome::Timeout, t0);
        let s = w.verdict(Role::Fallback, Outcome::NonFinite, t0).switch.unwrap();
        assert_eq!(s.to, None);
        assert_eq!(w.active(), None);
        let why = w.reason().unwrap();
        assert!(why.contains("hang") && why.contains("non-finite"), "{why}");
        let t1 = t0 + 1001 * MS;
        assert!(w.wants_frames(Role::Fallback, t1) && w.wants_frames(Role::Primary, t1));
        for _ in 0..3 {
            w.verdict(Role::Fallback, ok(10), t1);
        }
        assert_eq!(w.active(), Some(Role::Fallback));
        for _ in 0..3 {
            w.verdict(Role::Primary, ok(10), t1);
        }
        assert_eq!(w.active(), Some(Role::Primary));
    }

    #[test]
    fn a_start_is_hybrid_first_unless_its_load_fails_or_takes_too_long() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), t0);
        assert_eq!(w.loaded(Role::Fallback, Ok(()), t0 + MS), None, "the fallback loaded first: nothing drives yet");
        assert_eq!(w.active(), None);
        let s = w.loaded(Role::Primary, Ok(()), t0 + 2 * MS).unwrap();
        assert_eq!((s.from, s.to), (None, Some(Role::Primary)));

        let mut w = Watchdog::new(cfg(), t0);
        w.loaded(Role::Fallback, Ok(()), t0);
        let s = w.loaded(Role::Primary, Err("missing".into()), t0 + MS).unwrap();
        assert_eq!(s.to, Some(Role::Fallback));

        let mut w = Watchdog::new(cfg(), t0);
        w.loaded(Role::Fallback, Ok(()), t0);
        assert_eq!(w.poll(t0 + 4999 * MS), None);
        let s = w.poll(t0 + 5000 * MS).unwrap();
        assert_eq!(s.to, Some(Role::Fallback));
        assert!(s.reason.to_string().contains("still loading"), "{}", s.reason);
    }

    #[test]
    fn a_remote_policy_unreachable_at_start_lets_the_fallback_drive_and_is_probed_once_it_connects() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), t0);
        w.loaded(Role::Fallback, Ok(()), t0);
        let s = w.unreachable(Role::Primary, "policy server unreachable: connection refused".into(), t0).unwrap();
        assert_eq!((s.from, s.to), (None, Some(Role::Fallback)));
        assert!(s.to_string().contains("connection refused"), "{s}");
        assert_eq!(w.report(Role::Primary).state, HealthState::Unavailable);
        assert!(!w.wants_frames(Role::Primary, t0 + 10 * MS), "nothing to run frames on yet");
        // It connects: no switch yet, frames go to it as probes, and its results never drive until trusted.
        assert_eq!(w.loaded(Role::Primary, Ok(()), t0 + 20 * MS), None);
        assert_eq!(w.active(), Some(Role::Fallback));
        assert!(w.wants_frames(Role::Primary, t0 + 20 * MS));
        for i in 0..2 {
            let v = w.verdict(Role::Primary, ok(5), t0 + (30 + i) * MS);
            assert_eq!(v, Verdict { drive: false, switch: None });
        }
        let v = w.verdict(Role::Primary, ok(5), t0 + 40 * MS);
        assert!(!v.drive, "the probe that recovers it does not drive");
        let s = v.switch.expect("recovered after recovery_successes good probes");
        assert_eq!((s.from, s.to), (Some(Role::Fallback), Some(Role::Primary)));
        assert!(w.verdict(Role::Primary, ok(5), t0 + 50 * MS).drive);
    }

    #[test]
    fn neither_loaded_means_nothing_drives() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), Instant::now());
        assert_eq!(w.active(), None);
        assert!(w.reason().unwrap().contains("loading"));
        w.loaded(Role::Primary, Err("missing".into()), t0);
        w.loaded(Role::Fallback, Err("corrupt".into()), t0);
        assert!(!w.verdict(Role::Primary, ok(1), t0).drive);
        assert!(w.reason().unwrap().contains("missing") && w.reason().unwrap().contains("corrupt"));
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            (0u64..300, 0.0f64..3.0).prop_map(|(ms, a)| Outcome::Ok { latency: Duration::from_millis(ms), max_abs: a }),
            Just(Outcome::NonFinite),
            Just(Outcome::Timeout),
            Just(Outcome::Error("e".into())),
        ]
    }

    proptest! {
        /// No result that drives comes from a policy that is not healthy and
        /// active, and no failing result ever drives.
        #[test]
        fn only_healthy_active_ok_results_ever_drive(
            steps in prop::collection::vec((any::<bool>(), outcome(), 0u64..800), 1..200)
        ) {
            let t0 = Instant::now();
            let mut w = both_loaded(t0);
            let mut now = t0;
            for (primary, o, dt) in steps {
                now += Duration::from_millis(dt);
                let r = if primary { Role::Primary } else { Role::Fallback };
                let active_before = w.active();
                let healthy_before = w.is_healthy(r);
                let failing = match &o {
                    Outcome::Ok { max_abs, latency } => *max_abs > 2.0 || *latency > 100 * MS,
                    _ => true,
                };
                let v = w.verdict(r, o, now);
                if v.drive {
                    prop_assert!(!failing);
                    prop_assert_eq!(active_before, Some(r));
                    prop_assert!(healthy_before && w.is_healthy(r));
                    prop_assert_eq!(w.active(), Some(r));
                }
                if let Some(a) = w.active() {
                    prop_assert!(w.is_healthy(a));
                    if a == Role::Fallback { prop_assert!(!w.is_healthy(Role::Primary)); }
                }
            }
        }
    }
}

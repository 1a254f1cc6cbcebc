//! What may drive the robot, decided in one place.
//!
//! Owns every decision between the node's inputs and `cmd_vel`: the policies'
//! health (through the [`Watchdog`]), which source wins (the [`CommandMux`]),
//! the output stage ([`OutputStage`]), the current instruction and its
//! [`Generation`], pause and resume, locks, the freshness of frames and of
//! results, which inference workers to start, and what `~/status` says. The
//! shell hands it typed events with the instant they happened and carries out
//! the [`Effects`] it returns. It never talks to ROS, ONNX Runtime or threads
//! (it only logs its decisions, through `tracing`), so every rule below is
//! tested here:
//! - a policy result drives only if the watchdog lets its policy drive, it was
//!   computed for the current instruction generation, its run started after
//!   the latest instruction change, stop, pause, resume or lock change, and its
//!   frame is still fresh on the node's clock when the result arrives;
//! - a paused source keeps nothing; a lock that engages or releases forgets
//!   every source's last command, so only commands sent after it drive; a lock
//!   that silences every source stops the robot at once, without a ramp;
//! - an action chunk that may drive is played from its frame's stamp (see
//!   [`ChunkPlayer`]) while the result is younger than the command timeout;
//!   everything that forgets the policy's command (a new task, stop, pause,
//!   a lock change, a policy switch, a skipped frame) also forgets the chunk;
//! - a jump of ROS time (see [`ClockWatch`]) voids everything stamped in the
//!   old timeline: the chunk, the policy's command, runs in flight, and the
//!   workers' recurrent state (a new generation of the same task); only a
//!   result computed afterwards drives;
//! - what is published is only ever the output stage's shaping of the mux's
//!   decision: with no fresh, valid source, zero.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::chunk::{Chunk, ChunkPlayer, Playback};
use crate::clock_jump::ClockWatch;
use crate::command_mux::{CommandMux, Decision, LockId, LockSpec, Refused, SourceId, SourceSpec, Velocity};
use crate::limits::{Limits, OutputStage};
use crate::throttle::Throttle;
use crate::watchdog::{ByRole, HealthState, Outcome, Role, Switch, Watchdog, WatchdogConfig};

/// The policy's commands are the mux's first source.
pub const POLICY: SourceId = SourceId(0);

/// Counts instruction changes: a result computed under an older generation
/// belongs to a task that is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a frame never reached the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    NoInstruction,
    Unstamped,
    Stale {
        age_s: f64,
    },
    Future {
        ahead_s: f64,
    },
    BadFrame(String),
    /// The policy's tokenizer refused the current instruction.
    BadInstruction(String),
    NotLoaded,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NoInstruction => write!(f, "no instruction: the robot holds still until one arrives"),
            Skip::Unstamped => write!(f, "frame has no header stamp; it cannot be checked for freshness"),
            Skip::Stale { age_s } => write!(f, "frame is stale ({age_s:.3} s old)"),
            Skip::Future { ahead_s } => write!(
                f,
                "frame is stamped in the future ({ahead_s:.3} s ahead of the node's clock; camera.max_future_s); \
                 are the clocks synchronised?"
            ),
            Skip::BadFrame(e) => write!(f, "frame rejected: {e}"),
            Skip::BadInstruction(e) => write!(f, "instruction refused: {e}; send another one"),
            Skip::NotLoaded => write!(f, "the policy is not loaded"),
        }
    }
}

/// How old a frame may be, and how far ahead of the node's clock it may be stamped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    pub max_age_s: f64,
    pub max_future_s: f64,
}

impl Freshness {
    /// The frame's age on the node's clock (`now_s`, seconds of ROS time), or
    /// why it may not drive. `stamp_s` is `None` for an unstamped frame.
    pub fn check(&self, stamp_s: Option<f64>, now_s: f64) -> Result<f64, Skip> {
        let stamp = stamp_s.ok_or(Skip::Unstamped)?;
        let age = now_s - stamp;
        if age < -self.max_future_s {
            Err(Skip::Future { ahead_s: -age })
        } else if age > self.max_age_s {
            Err(Skip::Stale { age_s: age })
        } else {
            Ok(age.max(0.0))
        }
    }
}

/// How one run of a policy ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// `command` is the action after the manifest's clip; `raw_max_abs` the
    /// largest |component| before it (of every chunk step), which the watchdog
    /// judges; `chunk`, for a policy that plays its chunks, every step (clipped).
    Action {
        command: Velocity,
        raw_max_abs: f64,
        chunk: Option<(Vec<Velocity>, Playback)>,
    },
    NonFinite,
    Error(String),
    /// Cancelled after the hard timeout; already counted when it was cancelled.
    Cancelled,
}

/// A finished run, tagged with what it was computed for.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub role: Role,
    pub generation: Generation,
    /// When the run took its frame (before preprocessing).
    pub started: Instant,
    /// The frame's stamp, seconds of ROS time.
    pub stamp_s: f64,
    /// Preprocess + inference + postprocess.
    pub latency: Duration,
    pub outcome: RunOutcome,
}

/// The instruction the robot works on.
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    None,
    Active(String),
    /// The last one received was refused; the reason says why.
    Rejected(String),
}

/// The values of `Status.msg`'s `STATE_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Starting,
    Running,
    Paused,
    SafeStop,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Running => "running",
            NodeState::Paused => "paused",
            NodeState::SafeStop => "safe_stop",
        }
    }
}

/// What `~/status` says.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub state: NodeState,
    /// Why the policy is not driving the robot ("" while it is).
    pub reason: String,
    pub active_policy: Option<Role>,
    pub source: Option<SourceId>,
    pub lock: Option<LockId>,
}

/// What to do with the fallback policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackMode {
    Disabled,
    /// Loaded at start, with the primary.
    Eager,
    /// Loaded the first time it is needed.
    Lazy,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub watchdog: WatchdogConfig,
    pub fallback: FallbackMode,
    /// The policy as a mux source (name "policy"; its timeout is the dead-man).
    pub policy_priority: u8,
    pub command_timeout: Duration,
    /// Teleop and other sources, after the policy.
    pub sources: Vec<SourceSpec>,
    pub locks: Vec<LockSpec>,
    pub limits: Limits,
    pub freshness: Freshness,
    pub max_instruction_bytes: usize,
}

impl ControlConfig {
    /// The mux's sources: the policy first (its timeout is the dead-man), then the others in order.
    fn mux_sources(&self) -> Vec<SourceSpec> {
        let policy =
            SourceSpec { name: "policy".into(), priority: self.policy_priority, timeout: self.command_timeout };
        std::iter::once(policy).chain(self.sources.iter().cloned()).collect()
    }
}

/// What the shell must do after an event.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Publish this command now.
    pub publish: Option<Velocity>,
    /// Tell the workers about the instruction of this generation (`None`: no task).
    pub instruction: Option<(Generation, Option<String>)>,
    /// Start these inference workers.
    pub start: Vec<Role>,
    /// Hand the newest frame to this policy (it just took control).
    pub hand_newest_to: Option<Role>,
    /// Something `/diagnostics` shows changed (a switch, the source or lock in control).
    pub diagnostics: bool,
    /// The run result just handled went out on `cmd_vel`.
    pub drove: bool,
}

pub struct Controller {
    watchdog: Watchdog,
    mux: CommandMux,
    stage: OutputStage,
    freshness: Freshness,
    max_instruction_bytes: usize,
    fallback: FallbackMode,
    instruction: Instruction,
    generation: Generation,
    /// Runs that started before this never drive.
    barrier: Instant,
    started: ByRole<bool>,
    /// Why the active policy's latest frame did not drive, when it did not.
    hold: Option<String>,
    decision: Decision,
    last_publish: Instant,
    throttle: Throttle,
    /// The chunk the policy's command plays from, if its policy plays chunks.
    player: ChunkPlayer,
    /// A managed node that is not active publishes nothing at all.
    active: bool,
    /// ROS time as last read, to tell a jump of it.
    clock: ClockWatch,
}

impl Controller {
    /// The controller, and the workers to start now.
    pub fn new(cfg: ControlConfig, now: Instant) -> (Self, Effects) {
        let mut c = Controller {
            mux: CommandMux::new(cfg.mux_sources(), cfg.locks, now),
            watchdog: Watchdog::new(cfg.watchdog, now),
            stage: OutputStage::new(cfg.limits),
            freshness: cfg.freshness,
            max_instruction_bytes: cfg.max_instruction_bytes,
            fallback: cfg.fallback,
            instruction: Instruction::None,
            generation: Generation::default(),
            barrier: now,
            started: ByRole::default(),
            hold: None,
            decision: Decision::NONE,
            last_publish: now,
            throttle: Throttle::new(Duration::from_secs(2)),
            player: ChunkPlayer::default(),
            active: true,
            clock: ClockWatch::default(),
        };
        let mut fx = Effects::default();
        c.start(Role::Primary, &mut fx);
        match c.fallback {
            FallbackMode::Eager => c.start(Role::Fallback, &mut fx),
            FallbackMode::Lazy => {}
            FallbackMode::Disabled => {
                let s =
                    c.watchdog.loaded(Role::Fallback, Err("disabled (watchdog.fallback_enabled: false)".into()), now);
                c.after_switch(s, now, &mut fx);
            }
        }
        (c, fx)
    }

    /// Parameters changed at runtime: the watchdog's thresholds, the mux's
    /// priorities and timeouts, the output limits, freshness and the
    /// instruction bound, from the next event on. What is held (commands,
    /// locks, each policy's health) stays, so a change never starts motion;
    /// the fallback mode and the set of sources are read-only.
    pub fn reconfigure(&mut self, cfg: ControlConfig, now: Instant) {
        self.mux.set_specs(&cfg.mux_sources(), &cfg.locks, now);
        self.watchdog.set_config(cfg.watchdog);
        self.stage.set_limits(cfg.limits);
        self.freshness = cfg.freshness;
        self.max_instruction_bytes = cfg.max_instruction_bytes;
    }

    /// Why `cfg` may not apply now, if it may not: a live change never
    /// weakens an engaged lock (see [`CommandMux::weakens_engaged_lock`]).
    pub fn refuses(&self, cfg: &ControlConfig, now: Instant) -> Option<String> {
        self.mux.weakens_engaged_lock(&cfg.mux_sources(), &cfg.locks, now)
    }

    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    pub fn mux(&self) -> &CommandMux {
        &self.mux
    }

    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    pub fn instruction(&self) -> &Instruction {
        &self.instruction
    }

    /// What a worker must run under now: the generation, and the task's text (`None`: no task).
    pub fn task(&self) -> (Generation, Option<String>) {
        let text = match &self.instruction {
            Instruction::Active(t) => Some(t.clone()),
            Instruction::None | Instruction::Rejected(_) => None,
        };
        (self.generation, text)
    }

    pub fn autonomy_enabled(&self) -> bool {
        self.mux.is_enabled(POLICY)
    }

    /// Whether `role`'s worker should get a frame that arrived now.
    pub fn wants_frame(&self, role: Role, now: Instant) -> bool {
        self.active && self.started[role] && self.watchdog.wants_frames(role, now)
    }

    /// A managed node's activation (true) or deactivation (false). Either way
    /// everything held is forgotten and only runs that start afterwards may
    /// drive; deactivating publishes one zero, then nothing until activated.
    pub fn set_active(&mut self, active: bool, now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.barrier = now;
        self.mux.clear_all();
        self.player.clear();
        self.hold = None;
        self.active = active;
        if active {
            self.publish(now, &mut fx);
        } else {
            // A hard stop, whatever the deceleration limits: the output closes now.
            fx.publish = Some(self.stage.step(Velocity::ZERO, Duration::ZERO, true));
            self.decision = Decision::NONE;
            fx.diagnostics = true;
        }
        fx
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// A worker finished loading its policy, or failed to.
    pub fn loaded(&mut self, role: Role, result: Result<(), String>, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if let Err(e) = &result {
            error!(policy = %role, "POLICY NOT LOADED ({role}): {e}");
        }
        let failed = result.is_err();
        let s = self.watchdog.loaded(role, result, now);
        if failed && role == Role::Primary {
            self.start(Role::Fallback, &mut fx);
        }
        self.after_switch(s, now, &mut fx);
        fx
    }

    /// A worker's thread ended while the node runs (it panicked): that policy is gone.
    pub fn worker_exited(&mut self, role: Role, why: &str, now: Instant) -> Effects {
        let mut fx = Effects::default();
        error!(policy = %role, "the {role} inference thread died: {why}");
        let s = self.watchdog.lost(role, format!("inference thread died: {why}"), now);
        if role == Role::Primary {
            self.start(Role::Fallback, &mut fx);
        }
        self.after_switch(s, now, &mut fx);
        fx
    }

    /// A frame of `role` never reached its model.
    pub fn skipped(&mut self, role: Role, skip: &Skip, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.watchdog.active() != Some(role) {
            return fx;
        }
        self.forget_policy();
        let kind = match skip {
            Skip::BadFrame(_) => "bad_frame",
            Skip::BadInstruction(_) => "bad_instruction",
            Skip::Stale { .. } | Skip::Future { .. } | Skip::Unstamped => "stale",
            Skip::NoInstruction | Skip::NotLoaded => return fx,
        };
        if let Some(n) = self.throttle.allow(kind, now) {
            warn!(suppressed = n, "{skip}; no command from this frame");
        }
        self.hold = Some(skip.to_string());
        self.publish(now, &mut fx);
        fx
    }

    /// A run ended; `ros_now_s` is the node's clock now (seconds of ROS time).
    pub fn ran(&mut self, r: &RunResult, ros_now_s: f64, now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.observe_clock(ros_now_s, now, &mut fx);
        let outcome = match &r.outcome {
            RunOutcome::Action { raw_max_abs, .. } => Some(Outcome::Ok { latency: r.latency, max_abs: *raw_max_abs }),
            RunOutcome::NonFinite => Some(Outcome::NonFinite),
            RunOutcome::Error(e) => Some(Outcome::Error(e.clone())),
            RunOutcome::Cancelled => None,
        };
        if let RunOutcome::Error(e) = &r.outcome {
            if let Some(n) = self.throttle.allow("inference", now) {
                warn!(suppressed = n, policy = %r.role, "{e}; no command from this frame");
            }
        }
        let verdict = outcome.map(|o| self.watchdog.verdict(r.role, o, now));
        let current = r.generation == self.generation
            && r.started >= self.barrier
            && matches!(self.instruction, Instruction::Active(_));
        match (&verdict, &r.outcome) {
            (Some(v), RunOutcome::Action { command, chunk, .. }) if v.drive && current => {
                match self.freshness.check(Some(r.stamp_s), ros_now_s) {
                    Ok(_) => {
                        self.hold = None;
                        let command = match chunk {
                            Some((steps, playback)) => {
                                let steps = steps.clone();
                                self.player.push(Chunk { stamp_s: r.stamp_s, steps, playback: *playback });
                                self.player.at(ros_now_s).unwrap_or(Velocity::ZERO)
                            }
                            None => *command,
                        };
                        // Refused only while paused: then it must not drive anyway.
                        let _ = self.mux.command(POLICY, command, now);
                        self.publish(now, &mut fx);
                        fx.drove = self.decision.source == Some(POLICY);
                    }
                    Err(skip) => {
                        // The run took so long that its frame went stale meanwhile.
                        self.forget_policy();
                        self.hold = Some(skip.to_string());
                    }
                }
            }
            // A result of an older task or from before a pause, stop or lock
            // change: counted by the watchdog above, ignored here.
            _ if !current => {}
            _ if self.watchdog.active().is_none_or(|a| a == r.role) => self.forget_policy(),
            _ => {}
        }
        self.after_switch(verdict.and_then(|v| v.switch), now, &mut fx);
        fx
    }

    /// `role`'s run passed the hard timeout and was cancelled: a hang.
    pub fn run_cancelled(&mut self, role: Role, now: Instant) -> Effects {
        let mut fx = Effects::default();
        warn!(policy = %role, "run exceeded the hard timeout: cancelling it");
        let v = self.watchdog.verdict(role, Outcome::Timeout, now);
        self.after_switch(v.switch, now, &mut fx);
        fx
    }

    /// A new instruction (`""` clears the task).
    pub fn instruction_received(&mut self, text: &str, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let trimmed = text.trim();
        let next = if trimmed.is_empty() {
            info!("empty instruction: the robot holds still until a task arrives");
            Instruction::None
        } else if text.len() > self.max_instruction_bytes {
            let why = format!(
                "instruction rejected: {} bytes is more than instruction.max_bytes = {}; the robot holds still",
                text.len(),
                self.max_instruction_bytes
            );
            warn!("{why}");
            Instruction::Rejected(why)
        } else {
            info!(instruction = %trimmed, "new instruction");
            Instruction::Active(trimmed.to_string())
        };
        if next != self.instruction {
            // A new task must not be driven by the old task's commands.
            self.generation.0 += 1;
            self.barrier = now;
            self.forget_policy();
            self.hold = None;
            self.instruction = next;
            fx.instruction = Some(self.task());
            self.publish(now, &mut fx);
        }
        fx
    }

    /// Pauses (false) or resumes (true) the policy's commands; returns what happened, for the caller to report.
    pub fn set_autonomy(&mut self, enabled: bool, now: Instant) -> (Effects, &'static str) {
        let mut fx = Effects::default();
        let was = self.mux.is_enabled(POLICY);
        if was != enabled {
            self.mux.set_enabled(POLICY, enabled);
            self.player.clear();
            // After a resume only runs that start after it may drive.
            self.barrier = now;
        }
        let msg = match (was, enabled) {
            (true, false) => "autonomy paused: the policy's commands are ignored",
            (false, true) => "autonomy resumed",
            (_, true) => "autonomy already running",
            (_, false) => "autonomy already paused",
        };
        info!("{msg}");
        self.publish(now, &mut fx);
        (fx, msg)
    }

    /// The original team's `start` / `stop` / `pause` / `resume` commands.
    pub fn system_control(&mut self, cmd: &str, now: Instant) -> Effects {
        match cmd.trim().to_ascii_lowercase().as_str() {
            "start" | "resume" => self.set_autonomy(true, now).0,
            "pause" => self.set_autonomy(false, now).0,
            "stop" => {
                let mut fx = self.set_autonomy(false, now).0;
                let cleared = self.instruction_received("", now);
                fx.instruction = cleared.instruction;
                fx.publish = cleared.publish.or(fx.publish);
                fx.diagnostics |= cleared.diagnostics;
                fx
            }
            other => {
                warn!("unknown system_control command '{other}' (start, stop, pause, resume)");
                Effects::default()
            }
        }
    }

    /// A command from a teleop (or other) source.
    pub fn teleop(&mut self, source: SourceId, v: Velocity, now: Instant) {
        if let Err(Refused::NonFinite(v)) = self.mux.command(source, v, now) {
            if let Some(n) = self.throttle.allow("non_finite_command", now) {
                warn!(
                    suppressed = n,
                    source = self.mux.source_name(source),
                    "non-finite command refused, not forwarded: {v:?}"
                );
            }
        }
    }

    /// A lock message. A change of the lock's state forgets every source's last
    /// command; engaging takes effect now, not at the next tick.
    pub fn lock(&mut self, lock: LockId, engaged: bool, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let was = self.mux.is_locked(lock, now);
        self.mux.lock(lock, engaged, now);
        if was != self.mux.is_locked(lock, now) {
            self.barrier = now;
            self.mux.clear_all();
            self.player.clear();
            let name = self.mux.lock_name(lock);
            if engaged {
                warn!(lock = name, "lock engaged");
            } else {
                info!(lock = name, "lock released: only commands sent from now on drive");
            }
        }
        self.publish(now, &mut fx);
        fx
    }

    /// The output rate's tick: the command for this instant (`ros_now_s`:
    /// the node's clock, which a playing chunk's steps are timed on).
    pub fn tick(&mut self, now: Instant, ros_now_s: f64) -> Effects {
        let mut fx = Effects::default();
        self.observe_clock(ros_now_s, now, &mut fx);
        let s = self.watchdog.poll(now);
        self.after_switch(s, now, &mut fx);
        if !self.player.is_empty() {
            // Past the chunk's end: zero, until the next chunk or the command timeout.
            let step = self.player.at(ros_now_s).unwrap_or(Velocity::ZERO);
            self.mux.retarget(POLICY, step);
        }
        self.publish(now, &mut fx);
        fx
    }

    /// What `~/status` says now.
    pub fn status(&self) -> StatusView {
        let d = &self.decision;
        let primary_loading = self.watchdog.report(Role::Primary).state == HealthState::Loading;
        let starting = primary_loading
            && (self.watchdog.active().is_none() || self.watchdog.report(Role::Fallback).state == HealthState::Loading);
        let policy_reason = || {
            if let Some(r) = self.watchdog.reason() {
                return r;
            }
            match &self.instruction {
                Instruction::None => Skip::NoInstruction.to_string(),
                Instruction::Rejected(why) => why.clone(),
                Instruction::Active(_) => match (&self.hold, d.source) {
                    (Some(r), _) => r.clone(),
                    (None, None) => "waiting for camera frames".into(),
                    (None, Some(_)) => String::new(),
                },
            }
        };
        let lock_name = |l: LockId| self.mux.lock_name(l).to_string();
        let (state, reason) = match (d.source, d.lock) {
            _ if !self.active => {
                (NodeState::SafeStop, "not active: a managed node commands nothing until activated".into())
            }
            (None, Some(lock)) => (NodeState::SafeStop, format!("lock '{}' engaged", lock_name(lock))),
            (Some(src), _) if src != POLICY => (NodeState::Running, String::new()),
            _ if !self.mux.is_enabled(POLICY) => (NodeState::Paused, "autonomy paused".to_string()),
            _ if starting => (NodeState::Starting, "loading the policies".to_string()),
            _ => match policy_reason() {
                r if r.is_empty() => (NodeState::Running, r),
                r => (NodeState::SafeStop, r),
            },
        };
        StatusView { state, reason, active_policy: self.watchdog.active(), source: d.source, lock: d.lock }
    }

    /// A reading of ROS time. After a jump nothing stamped in the old
    /// timeline drives: runs in flight are past the barrier, the chunk and the
    /// policy's command are forgotten, and the workers get a new generation of
    /// the same task (which resets their recurrent state). Teleop sources and
    /// locks are timed on the steady clock and stay as they are.
    fn observe_clock(&mut self, ros_now_s: f64, now: Instant, fx: &mut Effects) {
        let Some(jump) = self.clock.observe(ros_now_s, now) else { return };
        warn!("{jump}: what was computed or stamped before it is void; driving again from fresh results only");
        self.generation.0 += 1;
        self.barrier = now;
        self.forget_policy();
        self.hold = Some(format!("{jump}: waiting for a result computed after it"));
        fx.instruction = Some(self.task());
        fx.diagnostics = true;
    }

    /// The policy's command, and any chunk it plays, no longer drive.
    fn forget_policy(&mut self) {
        self.mux.clear(POLICY);
        self.player.clear();
    }

    fn start(&mut self, role: Role, fx: &mut Effects) {
        if role == Role::Fallback && self.fallback == FallbackMode::Disabled {
            return;
        }
        if !self.started[role] {
            self.started[role] = true;
            fx.start.push(role);
        }
    }

    fn after_switch(&mut self, switch: Option<Switch>, now: Instant, fx: &mut Effects) {
        let Some(s) = switch else { return };
        match s.to {
            Some(Role::Primary) => info!("policy switch: {s}"),
            Some(Role::Fallback) => warn!("policy switch: {s}"),
            None => error!("policy switch: {s}; the robot is held still"),
        }
        // The new policy must produce its own command before anything drives;
        // it starts on the newest frame (its own staleness check still applies).
        self.forget_policy();
        self.hold = None;
        fx.hand_newest_to = s.to;
        if s.to != Some(Role::Primary) {
            // A lazily loaded fallback starts loading the first time it is needed.
            self.start(Role::Fallback, fx);
        }
        fx.diagnostics = true;
        self.publish(now, fx);
    }

    /// Decides and shapes the command for this instant (nothing at all while inactive).
    fn publish(&mut self, now: Instant, fx: &mut Effects) {
        if !self.active {
            return;
        }
        let d = self.mux.decide(now);
        let out = self.stage.step(d.command, now.saturating_duration_since(self.last_publish), d.hard_stop());
        self.last_publish = now;
        if (d.source, d.lock) != (self.decision.source, self.decision.lock) {
            info!(
                source = d.source.map_or("none", |s| self.mux.source_name(s)),
                lock = d.lock.map_or("none", |l| self.mux.lock_name(l)),
                "command source changed"
            );
            fx.diagnostics = true;
        }
        self.decision = d;
        fx.publish = Some(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);
    const JOY: SourceId = SourceId(1);
    const E_STOP: LockId = LockId(0);
    /// ROS time of `t0` in the tests (the clocks only need to agree on differences).
    const ROS0: f64 = 1000.0;

    fn v(x: f64) -> Velocity {
        Velocity { x, y: 0.0, wz: 0.0 }
    }

    fn cfg(fallback: FallbackMode) -> ControlConfig {
        ControlConfig {
            watchdog: WatchdogConfig { deadline: Duration::from_secs(1), ..WatchdogConfig::default() },
            fallback,
            policy_priority: 10,
            command_timeout: 500 * MS,
            sources: vec![SourceSpec { name: "joystick".into(), priority: 100, timeout: 500 * MS }],
            locks: vec![LockSpec { name: "e_stop".into(), priority: 255, timeout: None }],
            limits: Limits {
                max_velocity: [10.0; 3],
                max_accel: [0.0; 3],
                max_decel: [0.0; 3],
                deadband: [0.0; 3],
                scale_velocities: false,
            },
            freshness: Freshness { max_age_s: 0.5, max_future_s: 0.05 },
            max_instruction_bytes: 64,
        }
    }

    /// Both policies loaded, instruction "go" set.
    fn ready(t0: Instant) -> Controller {
        let (mut c, fx) = Controller::new(cfg(FallbackMode::Eager), t0);
        assert_eq!(fx.start, vec![Role::Primary, Role::Fallback]);
        c.loaded(Role::Primary, Ok(()), t0);
        c.loaded(Role::Fallback, Ok(()), t0);
        c.instruction_received("go", t0);
        c
    }

    fn result(c: &Controller, role: Role, started: Instant, x: f64) -> RunResult {
        RunResult {
            role,
            generation: c.generation(),
            started,
            stamp_s: 0.0, // set by `run`
            latency: 10 * MS,
            outcome: RunOutcome::Action { command: v(x), raw_max_abs: x.abs(), chunk: None },
        }
    }

    /// ROS time at `t`, with the ROS clock running like the monotonic one.
    fn ros(t0: Instant, t: Instant) -> f64 {
        ROS0 + t.duration_since(t0).as_secs_f64()
    }

    fn run(c: &mut Controller, t0: Instant, r: &RunResult, at: Instant) -> Effects {
        let mut r = r.clone();
        r.stamp_s = ros(t0, r.started);
        c.ran(&r, ros(t0, at), at)
    }

    /// A chunk of `xs`, 100 ms a step, from a run that took its frame at `started`.
    fn chunked(c: &Controller, started: Instant, xs: &[f64]) -> RunResult {
        let mut r = result(c, Role::Primary, started, xs[0]);
        let steps = xs.iter().map(|&x| v(x)).collect();
        r.outcome = RunOutcome::Action {
            command: v(xs[0]),
            raw_max_abs: 1.0,
            chunk: Some((steps, Playback { period_s: 0.1, blend: None })),
        };
        r
    }

    fn tick_at(c: &mut Controller, t0: Instant, t: Instant) -> Velocity {
        c.tick(t, ros(t0, t)).publish.expect("a tick publishes")
    }

    #[test]
    fn a_chunk_plays_from_its_frame_stamp_and_stops_at_its_end() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        // The frame at t0; the result arrives 150 ms later: step 0 is past, step 1 plays.
        let r = chunked(&c, t0, &[0.1, 0.2, 0.3, 0.4]);
        let fx = run(&mut c, t0, &r, t0 + 150 * MS);
        assert!(fx.drove);
        assert_eq!(fx.publish, Some(v(0.2)));
        assert_eq!(tick_at(&mut c, t0, t0 + 199 * MS), v(0.2));
        assert_eq!(tick_at(&mut c, t0, t0 + 200 * MS), v(0.3));
        assert_eq!(tick_at(&mut c, t0, t0 + 350 * MS), v(0.4));
        // Past the last step: zero, never an extrapolation.
        assert_eq!(tick_at(&mut c, t0, t0 + 400 * MS), Velocity::ZERO);
        assert_eq!(tick_at(&mut c, t0, t0 + 450 * MS), Velocity::ZERO);
    }

    #[test]
    fn the_command_timeout_ends_a_chunk_longer_than_it() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let long: Vec<f64> = (1..=20).map(|k| k as f64 / 100.0).collect();
        let r = chunked(&c, t0, &long);
        run(&mut c, t0, &r, t0 + 10 * MS);
        assert_eq!(tick_at(&mut c, t0, t0 + 450 * MS), v(0.05));
        // 500 ms after the result: no newer result, the dead man stops the chunk.
        assert_eq!(tick_at(&mut c, t0, t0 + 520 * MS), Velocity::ZERO);
    }

    #[test]
    fn nothing_of_a_chunk_plays_after_an_instruction_change_a_pause_a_lock_or_a_switch() {
        let steps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        type Event = fn(&mut Controller, Instant);
        let events: [(&str, Event); 5] = [
            ("new instruction", |c, t| drop(c.instruction_received("turn", t))),
            ("pause", |c, t| drop(c.set_autonomy(false, t))),
            ("stop", |c, t| drop(c.system_control("stop", t))),
            ("e-stop engaged and released", |c, t| {
                c.lock(E_STOP, true, t);
                c.lock(E_STOP, false, t);
            }),
            ("switch to the fallback", |c, t| {
                let mut nan = result(c, Role::Primary, t, 0.0);
                nan.outcome = RunOutcome::NonFinite;
                nan.stamp_s = ROS0;
                c.ran(&nan, ROS0, t);
            }),
        ];
        for (what, event) in events {
            let t0 = Instant::now();
            let mut c = ready(t0);
            let r = chunked(&c, t0, &steps);
            run(&mut c, t0, &r, t0 + 10 * MS);
            assert_eq!(tick_at(&mut c, t0, t0 + 110 * MS), v(0.2), "{what}");
            event(&mut c, t0 + 120 * MS);
            for k in 2..6 {
                let t = t0 + (k * 100 + 30) * MS;
                assert_eq!(tick_at(&mut c, t0, t), Velocity::ZERO, "{what}: step {k} played");
            }
        }
    }

    #[test]
    fn after_a_clock_jump_only_results_computed_in_the_new_timeline_drive() {
        // Found from outside: with blending, /clock jumping from ~1000 s to 10 s
        // left the old chunk driving for seconds while every new run was refused.
        let blended = |c: &Controller, started: Instant, stamp_s: f64, x: f64| {
            let mut r = chunked(c, started, &[x; 40]);
            r.stamp_s = stamp_s;
            if let RunOutcome::Action { chunk: Some((_, p)), .. } = &mut r.outcome {
                p.blend = Some(0.1);
            }
            r
        };
        for back in [true, false] {
            let t0 = Instant::now();
            let mut c = ready(t0);
            let r = blended(&c, t0, ROS0, 1.0);
            assert!(c.ran(&r, ROS0 + 0.01, t0 + 10 * MS).drove);
            assert_eq!(c.tick(t0 + 50 * MS, ROS0 + 0.05).publish, Some(v(1.0)));
            // A run in flight across the jump, and the jump itself.
            let in_flight = blended(&c, t0 + 60 * MS, ROS0 + 0.06, 0.5);
            let to = if back { 10.0 } else { ROS0 + 500.0 };
            let t = t0 + 100 * MS;
            let fx = c.tick(t, to);
            assert_eq!(fx.publish, Some(Velocity::ZERO), "back: {back}: the old chunk drove after the jump");
            let (g, text) = fx.instruction.expect("the workers start the task again (recurrent state reset)");
            assert_eq!((g, text.as_deref()), (c.generation(), Some("go")));
            assert!(c.status().reason.contains("ROS time jumped"), "{}", c.status().reason);
            assert!(!c.ran(&in_flight, to + 0.01, t + 10 * MS).drove, "back: {back}: a run from before drove");
            assert_eq!(c.tick(t + 20 * MS, to + 0.02).publish, Some(Velocity::ZERO));
            // The first result of the new timeline drives at once, as on a fresh node.
            let fresh = blended(&c, t + 30 * MS, to + 0.03, 0.3);
            let fx = c.ran(&fresh, to + 0.04, t + 40 * MS);
            assert!(fx.drove, "back: {back}");
            assert_eq!(fx.publish, Some(v(0.3)));
            assert_eq!(c.status().reason, "");
        }
    }

    #[test]
    fn an_instruction_the_tokenizer_refused_is_the_status_reason_until_a_good_one_drives() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let fx = c.skipped(Role::Primary, &Skip::BadInstruction("text too long".into()), t0 + MS);
        assert_eq!(fx.publish, Some(Velocity::ZERO));
        assert!(c.status().reason.starts_with("instruction refused: text too long"), "{}", c.status().reason);
        c.instruction_received("go left", t0 + 2 * MS);
        let r = result(&c, Role::Primary, t0 + 3 * MS, 0.4);
        assert!(run(&mut c, t0, &r, t0 + 4 * MS).drove);
        assert_eq!(c.status().reason, "");
    }

    #[test]
    fn an_old_tasks_chunk_never_blends_into_the_new_tasks() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let blended = |c: &Controller, started: Instant, x: f64| {
            let mut r = chunked(c, started, &[x; 8]);
            if let RunOutcome::Action { chunk: Some((_, p)), .. } = &mut r.outcome {
                p.blend = Some(0.0);
            }
            r
        };
        let r = blended(&c, t0, 1.0);
        run(&mut c, t0, &r, t0 + 10 * MS);
        assert_eq!(tick_at(&mut c, t0, t0 + 50 * MS), v(1.0));
        c.instruction_received("turn", t0 + 60 * MS);
        // The new task's first chunk overlaps the old one in time: only it plays.
        let r = blended(&c, t0 + 70 * MS, 0.2);
        run(&mut c, t0, &r, t0 + 80 * MS);
        assert_eq!(tick_at(&mut c, t0, t0 + 100 * MS), v(0.2));
        // ...while two chunks of the same task do blend (equal weights with m = 0).
        let r = blended(&c, t0 + 110 * MS, 0.4);
        run(&mut c, t0, &r, t0 + 120 * MS);
        let x = tick_at(&mut c, t0, t0 + 130 * MS).x;
        assert!((x - 0.3).abs() < 1e-9, "{x}");
    }

    #[test]
    fn a_chunk_of_a_frame_gone_stale_never_plays() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        // The run took 600 ms: its frame is older than max_age_s when it ends.
        let fx = {
            let r = chunked(&c, t0, &[0.1; 10]);
            run(&mut c, t0, &r, t0 + 600 * MS)
        };
        assert!(!fx.drove);
        assert_eq!(tick_at(&mut c, t0, t0 + 610 * MS), Velocity::ZERO);
    }

    #[test]
    fn new_parameters_apply_from_the_next_event_and_never_revive_a_command() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let r = result(&c, Role::Primary, t0, 2.0);
        assert_eq!(run(&mut c, t0, &r, t0 + MS).publish, Some(v(2.0)));
        let mut next = cfg(FallbackMode::Eager);
        next.limits.max_velocity = [0.5; 3];
        next.command_timeout = 100 * MS;
        c.reconfigure(next, t0 + 2 * MS);
        // The held command, now limited; and it times out after the new 100 ms.
        assert_eq!(c.tick(t0 + 50 * MS, ROS0).publish, Some(v(0.5)));
        assert_eq!(c.tick(t0 + 150 * MS, ROS0).publish, Some(Velocity::ZERO));
        // A longer timeout again never revives the command that timed out.
        c.reconfigure(cfg(FallbackMode::Eager), t0 + 155 * MS);
        assert_eq!(c.tick(t0 + 160 * MS, ROS0).publish, Some(Velocity::ZERO));
    }

    #[test]
    fn a_live_change_that_would_weaken_the_engaged_e_stop_is_refused() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        c.lock(E_STOP, true, t0);
        let mut weaker = cfg(FallbackMode::Eager);
        weaker.locks[0].priority = 50;
        let why = c.refuses(&weaker, t0 + MS).expect("refused while engaged");
        assert!(why.contains("e_stop") && why.contains("joystick"), "{why}");
        // The policy's own priority counts too.
        let mut policy_up = cfg(FallbackMode::Eager);
        policy_up.policy_priority = 255;
        policy_up.locks[0].priority = 254;
        assert!(c.refuses(&policy_up, t0 + MS).is_some());
        c.lock(E_STOP, false, t0 + 2 * MS);
        assert_eq!(c.refuses(&weaker, t0 + 3 * MS), None, "released: the change applies");
    }

    #[test]
    fn a_longer_lock_timeout_never_releases_a_lock_its_timeout_engaged() {
        let t0 = Instant::now();
        let mut config = cfg(FallbackMode::Eager);
        config.locks[0].timeout = Some(100 * MS);
        let (mut c, _) = Controller::new(config.clone(), t0);
        c.loaded(Role::Primary, Ok(()), t0);
        c.instruction_received("go", t0);
        c.lock(E_STOP, false, t0);
        assert!(!c.mux().is_locked(E_STOP, t0 + 50 * MS));
        assert!(c.mux().is_locked(E_STOP, t0 + 150 * MS), "the silent lock engaged by itself");
        config.locks[0].timeout = Some(Duration::from_secs(10));
        c.reconfigure(config, t0 + 150 * MS);
        assert!(c.mux().is_locked(E_STOP, t0 + 200 * MS), "only its publisher releases it");
    }

    #[test]
    fn an_inactive_node_publishes_nothing_but_one_zero_and_forgets_what_it_held() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        c.teleop(JOY, v(0.3), t0);
        assert_eq!(c.tick(t0 + MS, ROS0).publish, Some(v(0.3)));
        let fx = c.set_active(false, t0 + 2 * MS);
        assert_eq!(fx.publish, Some(Velocity::ZERO), "one zero on deactivate");
        assert_eq!(c.tick(t0 + 3 * MS, ROS0).publish, None);
        c.teleop(JOY, v(0.3), t0 + 4 * MS);
        let r = result(&c, Role::Primary, t0 + 4 * MS, 0.4);
        assert_eq!(run(&mut c, t0, &r, t0 + 5 * MS).publish, None);
        assert!(!c.wants_frame(Role::Primary, t0 + 5 * MS));
        assert_eq!(c.status().state, NodeState::SafeStop);
        // Activated again: what was sent while inactive does not drive.
        assert_eq!(c.set_active(true, t0 + 6 * MS).publish, Some(Velocity::ZERO));
        assert_eq!(c.tick(t0 + 7 * MS, ROS0).publish, Some(Velocity::ZERO));
        c.teleop(JOY, v(0.2), t0 + 8 * MS);
        assert_eq!(c.tick(t0 + 9 * MS, ROS0).publish, Some(v(0.2)));
    }

    #[test]
    fn a_fresh_current_result_drives_at_once() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let r = result(&c, Role::Primary, t0 + MS, 0.3);
        let fx = run(&mut c, t0, &r, t0 + 20 * MS);
        assert_eq!(fx.publish, Some(v(0.3)));
        assert!(fx.drove);
        assert_eq!(c.status().state, NodeState::Running);
        // The dead-man: no newer result within the command timeout means zero.
        assert_eq!(c.tick(t0 + 600 * MS, ROS0).publish, Some(Velocity::ZERO));
    }

    #[test]
    fn a_result_for_a_replaced_or_cleared_instruction_never_drives() {
        for next in ["turn around", ""] {
            let t0 = Instant::now();
            let mut c = ready(t0);
            let in_flight = result(&c, Role::Primary, t0 + MS, 0.3);
            let fx = c.instruction_received(next, t0 + 50 * MS);
            assert!(fx.instruction.is_some());
            let fx = run(&mut c, t0, &in_flight, t0 + 100 * MS);
            assert_eq!(fx.publish, None, "{next:?}");
            assert!(!fx.drove);
            assert_eq!(c.tick(t0 + 120 * MS, ROS0).publish, Some(Velocity::ZERO), "{next:?}");
            if next.is_empty() {
                assert_eq!(c.status().reason, Skip::NoInstruction.to_string());
            }
        }
    }

    #[test]
    fn a_result_tagged_with_an_older_generation_never_drives_even_if_it_started_late() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let old = result(&c, Role::Primary, t0 + 60 * MS, 0.3);
        c.instruction_received("turn around", t0 + 50 * MS);
        // The worker had not seen the change yet when it started this run.
        assert!(!run(&mut c, t0, &old, t0 + 100 * MS).drove);
        let new = result(&c, Role::Primary, t0 + 110 * MS, 0.2);
        assert!(run(&mut c, t0, &new, t0 + 150 * MS).drove);
    }

    #[test]
    fn after_pause_and_resume_only_a_run_started_after_the_resume_drives() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let before_pause = result(&c, Role::Primary, t0 + MS, 0.3);
        c.set_autonomy(false, t0 + 10 * MS);
        assert_eq!(c.status().state, NodeState::Paused);
        let while_paused = result(&c, Role::Primary, t0 + 20 * MS, 0.4);
        assert!(!run(&mut c, t0, &while_paused, t0 + 30 * MS).drove);
        c.set_autonomy(true, t0 + 40 * MS);
        assert!(!run(&mut c, t0, &before_pause, t0 + 50 * MS).drove);
        assert_eq!(c.tick(t0 + 60 * MS, ROS0).publish, Some(Velocity::ZERO), "nothing kept across the pause");
        let after = result(&c, Role::Primary, t0 + 70 * MS, 0.5);
        assert_eq!(run(&mut c, t0, &after, t0 + 80 * MS).publish, Some(v(0.5)));
    }

    #[test]
    fn a_lock_stops_at_once_and_its_release_needs_fresh_commands() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        c.teleop(JOY, v(0.2), t0);
        assert_eq!(c.tick(t0 + MS, ROS0).publish, Some(v(0.2)));
        let in_flight = result(&c, Role::Primary, t0 + 2 * MS, 0.3);
        assert_eq!(c.lock(E_STOP, true, t0 + 5 * MS).publish, Some(Velocity::ZERO));
        assert_eq!(c.status().state, NodeState::SafeStop);
        c.teleop(JOY, v(0.25), t0 + 10 * MS);
        assert_eq!(c.tick(t0 + 11 * MS, ROS0).publish, Some(Velocity::ZERO));
        // A repeated "engaged" is no change.
        c.lock(E_STOP, true, t0 + 12 * MS);
        assert_eq!(c.lock(E_STOP, false, t0 + 20 * MS).publish, Some(Velocity::ZERO), "joystick from before");
        assert!(!run(&mut c, t0, &in_flight, t0 + 30 * MS).drove, "policy run from before");
        c.teleop(JOY, v(0.1), t0 + 40 * MS);
        assert_eq!(c.tick(t0 + 41 * MS, ROS0).publish, Some(v(0.1)));
        // A release repeated (a heartbeat of `false`) is no change: commands survive it.
        c.lock(E_STOP, false, t0 + 45 * MS);
        assert_eq!(c.tick(t0 + 46 * MS, ROS0).publish, Some(v(0.1)));
    }

    #[test]
    fn a_result_whose_frame_went_stale_during_the_run_does_not_drive() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let r = result(&c, Role::Primary, t0, 0.3);
        assert!(!run(&mut c, t0, &r, t0 + 600 * MS).drove);
        assert!(c.status().reason.contains("stale"), "{}", c.status().reason);
    }

    #[test]
    fn freshness_refuses_unstamped_stale_and_future_frames_with_their_reason() {
        let f = Freshness { max_age_s: 0.5, max_future_s: 0.05 };
        assert_eq!(f.check(Some(99.8), 100.0), Ok(0.20000000000000284));
        assert_eq!(f.check(Some(100.03), 100.0), Ok(0.0), "within the future tolerance");
        assert_eq!(f.check(None, 100.0), Err(Skip::Unstamped));
        assert!(matches!(f.check(Some(99.0), 100.0), Err(Skip::Stale { .. })));
        let future = f.check(Some(110.0), 100.0).unwrap_err();
        assert!(matches!(future, Skip::Future { .. }));
        assert!(future.to_string().contains("stamped in the future"), "{future}");
        assert!(!future.to_string().contains('-'), "{future}");
    }

    #[test]
    fn the_raw_action_is_judged_not_the_clipped_one() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let mut r = result(&c, Role::Primary, t0 + MS, 1.15);
        r.outcome = RunOutcome::Action { command: v(1.15), raw_max_abs: 9.0, chunk: None };
        let fx = run(&mut c, t0, &r, t0 + 10 * MS);
        assert!(!fx.drove);
        assert_eq!(fx.hand_newest_to, Some(Role::Fallback));
        assert_eq!(c.watchdog().active(), Some(Role::Fallback));
        assert!(c.watchdog().report(Role::Primary).last_error.contains("out of range"));
    }

    #[test]
    fn teleop_winning_means_the_result_did_not_drive() {
        let t0 = Instant::now();
        let mut c = ready(t0);
        c.teleop(JOY, v(-0.2), t0);
        let r = result(&c, Role::Primary, t0 + MS, 0.3);
        let fx = run(&mut c, t0, &r, t0 + 10 * MS);
        assert_eq!(fx.publish, Some(v(-0.2)));
        assert!(!fx.drove);
    }

    #[test]
    fn a_dead_worker_fails_its_policy_and_starts_a_lazy_fallback() {
        let t0 = Instant::now();
        let (mut c, fx) = Controller::new(cfg(FallbackMode::Lazy), t0);
        assert_eq!(fx.start, vec![Role::Primary]);
        c.loaded(Role::Primary, Ok(()), t0);
        assert_eq!(c.watchdog().active(), Some(Role::Primary));
        let fx = c.worker_exited(Role::Primary, "panicked", t0 + MS);
        assert_eq!(fx.start, vec![Role::Fallback]);
        assert_eq!(c.watchdog().active(), None);
        assert_eq!(c.watchdog().report(Role::Primary).state, HealthState::Unavailable);
        assert!(c.status().reason.contains("inference thread died"), "{}", c.status().reason);
        c.loaded(Role::Fallback, Ok(()), t0 + 2 * MS);
        assert_eq!(c.watchdog().active(), Some(Role::Fallback));
        assert!(!c.wants_frame(Role::Primary, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn a_primary_that_fails_to_load_starts_the_lazy_fallback_and_a_disabled_one_never() {
        let t0 = Instant::now();
        let (mut c, _) = Controller::new(cfg(FallbackMode::Lazy), t0);
        assert_eq!(c.loaded(Role::Primary, Err("missing".into()), t0).start, vec![Role::Fallback]);
        let (mut c, fx) = Controller::new(cfg(FallbackMode::Disabled), t0);
        assert_eq!(fx.start, vec![Role::Primary]);
        let fx = c.loaded(Role::Primary, Err("missing".into()), t0);
        assert!(fx.start.is_empty());
        assert_eq!(c.status().state, NodeState::SafeStop);
        assert!(c.status().reason.contains("missing"), "{}", c.status().reason);
    }

    #[test]
    fn status_says_why_the_robot_holds_still() {
        let t0 = Instant::now();
        let (mut c, _) = Controller::new(cfg(FallbackMode::Eager), t0);
        assert_eq!(c.status().state, NodeState::Starting);
        c.loaded(Role::Primary, Ok(()), t0);
        c.loaded(Role::Fallback, Ok(()), t0);
        assert_eq!(c.status().reason, Skip::NoInstruction.to_string());
        c.instruction_received(&"x".repeat(100), t0);
        let s = c.status();
        assert_eq!(s.state, NodeState::SafeStop);
        assert!(s.reason.contains("100 bytes") && s.reason.contains("instruction.max_bytes = 64"), "{}", s.reason);
        c.instruction_received("go", t0);
        assert_eq!(c.status().reason, "waiting for camera frames");
        c.skipped(Role::Primary, &Skip::Future { ahead_s: 9.9 }, t0);
        assert!(c.status().reason.contains("stamped in the future"));
        c.system_control("stop", t0);
        assert_eq!(c.status().state, NodeState::Paused);
        assert_eq!(c.instruction(), &Instruction::None);
    }

    /// Commands in the property test are multiples of this (within every limit).
    const ID: f64 = 0.001;

    #[derive(Debug, Clone)]
    enum Ev {
        Instruction(u8),
        Pause(bool),
        Lock(bool),
        Joy,
        /// A primary run: which generation (0: current, 1: the previous one), how
        /// long ago it started, and whether it returned a chunk to play.
        Run {
            older_generation: bool,
            started_ms_ago: u64,
            chunked: bool,
        },
        Tick,
    }

    fn event() -> impl Strategy<Value = Ev> {
        prop_oneof![
            1 => (0u8..3).prop_map(Ev::Instruction),
            1 => any::<bool>().prop_map(Ev::Pause),
            1 => any::<bool>().prop_map(Ev::Lock),
            1 => Just(Ev::Joy),
            3 => (any::<bool>(), 0u64..300, any::<bool>())
                .prop_map(|(o, s, chunked)| Ev::Run { older_generation: o, started_ms_ago: s, chunked }),
            2 => Just(Ev::Tick),
        ]
    }

    proptest! {
        /// Every policy command that reaches the output (a single action or a
        /// chunk's step) was computed for the current instruction, by a run that
        /// started after the latest instruction change, stop, pause, resume or
        /// lock change, while the robot was neither paused nor locked; teleop
        /// commands that reach it were sent after the latest lock change.
        #[test]
        fn nothing_from_before_a_change_ever_drives(
            steps in prop::collection::vec((event(), 1u64..80), 1..120)
        ) {
            let t0 = Instant::now();
            let mut c = ready(t0);
            let mut now = t0;
            // The test's own record of the spec's barriers.
            let mut instruction = "go".to_string();
            let (mut paused, mut locked) = (false, false);
            let mut barrier = t0;
            let mut lock_barrier = t0;
            // Results and joystick commands by the value they carry.
            let mut runs: Vec<(Generation, Instant)> = Vec::new();
            let mut joys: Vec<Instant> = Vec::new();
            for (ev, dt) in steps {
                now += Duration::from_millis(dt);
                let fx = match ev {
                    Ev::Instruction(i) => {
                        let text = ["go", "turn left", ""][i as usize].to_string();
                        if text != instruction { barrier = now; instruction = text.clone(); }
                        c.instruction_received(&text, now)
                    }
                    Ev::Pause(p) => {
                        if p != paused { barrier = now; paused = p; }
                        c.set_autonomy(!p, now).0
                    }
                    Ev::Lock(l) => {
                        if l != locked { barrier = now; lock_barrier = now; locked = l; }
                        c.lock(E_STOP, l, now)
                    }
                    Ev::Joy => {
                        joys.push(now);
                        c.teleop(JOY, v(-ID * joys.len() as f64), now);
                        c.tick(now, ros(t0, now))
                    }
                    Ev::Run { older_generation, started_ms_ago, chunked } => {
                        let generation = Generation(c.generation().0.saturating_sub(older_generation as u64));
                        let started = now.checked_sub(Duration::from_millis(started_ms_ago)).unwrap_or(t0).max(t0);
                        runs.push((generation, started));
                        let r = RunResult {
                            role: Role::Primary,
                            generation,
                            started,
                            stamp_s: ros(t0, started),
                            latency: MS,
                            outcome: RunOutcome::Action {
                                command: v(ID * runs.len() as f64),
                                raw_max_abs: 0.0,
                                // A chunk whose every step carries the run's index.
                                chunk: chunked.then(|| {
                                    (vec![v(ID * runs.len() as f64); 6], Playback { period_s: 0.05, blend: None })
                                }),
                            },
                        };
                        c.ran(&r, ros(t0, now), now)
                    }
                    Ev::Tick => c.tick(now, ros(t0, now)),
                };
                let Some(out) = fx.publish else { continue };
                // Each command carries the index of the result or joystick message it came from.
                let id = (out.x.abs() / ID).round() as usize;
                if out.x > 0.0 {
                    let (generation, started) = runs[id - 1];
                    prop_assert_eq!(generation, c.generation());
                    prop_assert!(started >= barrier, "a run from before the latest change drove");
                    prop_assert!(!paused && !locked && !instruction.is_empty());
                } else if out.x < 0.0 {
                    let sent = joys[id - 1];
                    prop_assert!(sent >= lock_barrier && !locked);
                }
            }
        }
    }
}

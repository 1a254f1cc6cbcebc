//! What may drive the robot, decided in one place.
//!
//! Owns every decision between the node's inputs and `cmd_vel`: the policies'
//! health (through the [`Watchdog`]), which source wins (the [`CommandMux`]),
//! the output stage ([`OutputStage`]), the current instruction and its
//! [`Generation`], pause and resume, locks, the freshness of frames and of
//! results, which inference workers to start, and what `~/status` says. The
//! shell hands it typed events with the instant they happened and carries out
//! the [`Effects`] it returns. Its parts: `setup` (the one mapping from the
//! parameters), `task` (instruction, generation, barrier), `output` (mux,
//! chunk, output stage), `status` (what `~/status` says), `effects`. It never talks to ROS, ONNX Runtime or threads
//! (it only logs its decisions, through `tracing`), so every rule below is
//! tested here:
//! - a policy result drives only if the watchdog lets its policy drive, it was
//!   computed for the current instruction generation, its run started after
//!   the latest instruction change, stop, pause, resume, lock change or the
//!   switch that gave its policy control, and its
//!   frame is still fresh on the node's clock when the result arrives;
//! - a paused source keeps nothing; a lock that engages or releases forgets
//!   every source's last command, so only commands sent after it drive; a lock
//!   that silences every source stops the robot at once, without a ramp;
//! - an action chunk that may drive is played from its frame's stamp (see
//!   [`ChunkPlayer`]) while the result is younger than the command timeout;
//!   everything that forgets the policy's command (a new task, stop, pause,
//!   a lock change, a policy switch, a skipped frame) also forgets the chunk;
//! - a policy taking control, and a managed node's activation and
//!   deactivation, start a new history ([`Task::history`]: every policy's
//!   recurrent state and frame windows start over);
//! - a jump of ROS time (see [`ClockWatch`]) voids everything stamped in the
//!   old timeline: the chunk, the policy's command, runs in flight, and the
//!   workers' recurrent state (a new generation of the same task); only a
//!   result computed afterwards drives;
//! - in shadow mode a result that would drive is a proposal instead: it never
//!   reaches the mux, and is scored against what is on `cmd_vel` (see
//!   [`Shadow`]); entering shadow mode forgets the policy's command, leaving
//!   it moves the barrier, so only a run started afterwards drives;
//! - what is published is only ever the output stage's shaping of the mux's
//!   decision: with no fresh, valid source, zero.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::chunk::{Chunk, Playback};
use crate::clock_jump::ClockWatch;
use crate::command_mux::{CommandMux, Decision, LockId, Refused, SourceId};
use crate::shadow::{Agreement, Shadow};
use crate::throttle::Throttle;
use crate::vocab::{ByRole, Generation, Role, SharedFreshness, Skip, Task, Velocity};
use crate::watchdog::{Outcome, Switch, Watchdog};

mod effects;
mod output;
mod setup;
mod status;
mod task;

pub use effects::Effects;
use output::Output;
pub use setup::{lock_id, teleop_source, ControlConfig, FallbackMode, POLICY};
pub use status::{Hold, NodeState, Reason, StatusView};
use task::TaskState;
pub use task::{Instruction, TooLong};

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

/// The kinds of warning the controller rate-limits, each on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Warn {
    BadFrame,
    BadInstruction,
    Stale,
    Inference,
    NonFiniteCommand,
}

pub struct Controller {
    watchdog: Watchdog,
    fallback: FallbackMode,
    /// The workers started so far.
    started: ByRole<bool>,
    task: TaskState,
    out: Output,
    freshness: SharedFreshness,
    /// Why the active policy's latest frame did not drive, when it did not.
    hold: Option<Hold>,
    throttle: Throttle<Warn>,
    /// ROS time as last read, to tell a jump of it.
    clock: ClockWatch,
    /// Shadow mode: the policies' results are proposals, scored here, never driven.
    shadow: Option<Shadow>,
    /// What went out on `cmd_vel` last.
    published: Velocity,
}

impl Controller {
    /// The controller, and the workers to start now.
    pub fn new(cfg: ControlConfig, now: Instant) -> (Self, Effects) {
        let mut c = Controller {
            out: Output::new(cfg.mux_sources(), cfg.locks, cfg.limits, now),
            watchdog: Watchdog::new(cfg.watchdog, now),
            fallback: cfg.fallback,
            started: ByRole::default(),
            task: TaskState::new(now, cfg.max_instruction_bytes),
            freshness: SharedFreshness::new(cfg.freshness),
            hold: None,
            throttle: Throttle::new(Duration::from_secs(2)),
            clock: ClockWatch::default(),
            shadow: None,
            published: Velocity::ZERO,
        };
        c.set_shadow(cfg.shadow, now);
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
        self.set_shadow(cfg.shadow, now);
        self.out.reconfigure(&cfg.mux_sources(), &cfg.locks, cfg.limits, now);
        self.watchdog.set_config(cfg.watchdog);
        self.freshness.set(cfg.freshness);
        self.task.max_bytes = cfg.max_instruction_bytes;
    }

    /// Enters or leaves shadow mode. Entering forgets the policy's command (the
    /// next publish is what the other sources say, or zero); leaving moves the
    /// barrier: a run started in shadow mode never drives.
    fn set_shadow(&mut self, on: bool, now: Instant) {
        if on == self.shadow.is_some() {
            return;
        }
        if on {
            info!("shadow mode: the policies run but never drive; what they would command goes to ~/proposed_cmd_vel");
            self.out.forget_policy();
            self.shadow = Some(Shadow::default());
        } else {
            info!("shadow mode off: the policy drives again, from its next run");
            self.task.set_barrier(now);
            self.shadow = None;
        }
    }

    /// In shadow mode, how the proposals agree with what drives; `None` otherwise.
    pub fn shadow(&self) -> Option<Agreement> {
        self.shadow.as_ref().map(Shadow::agreement)
    }

    /// Why `cfg` may not apply now, if it may not: a live change never
    /// weakens an engaged lock (see [`CommandMux::weakens_engaged_lock`]).
    pub fn refuses(&self, cfg: &ControlConfig, now: Instant) -> Option<String> {
        self.out.mux.weakens_engaged_lock(&cfg.mux_sources(), &cfg.locks, now)
    }

    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }

    pub fn mux(&self) -> &CommandMux {
        &self.out.mux
    }

    pub fn decision(&self) -> &Decision {
        self.out.decision()
    }

    pub fn generation(&self) -> Generation {
        self.task.generation()
    }

    pub fn instruction(&self) -> &Instruction {
        self.task.instruction()
    }

    /// What a worker must run under now.
    pub fn task(&self) -> Task {
        self.task.task()
    }

    /// The freshness rule the workers skip stale frames by (this controller keeps it current).
    pub fn freshness(&self) -> SharedFreshness {
        self.freshness.clone()
    }

    /// How long a run may take before it is cancelled as a hang.
    pub fn hard_timeout(&self) -> Duration {
        self.watchdog.config().hard_timeout
    }

    pub fn autonomy_enabled(&self) -> bool {
        self.out.mux.is_enabled(POLICY)
    }

    /// Whether `role`'s worker should get a frame that arrived now.
    pub fn wants_frame(&self, role: Role, now: Instant) -> bool {
        self.out.is_active() && self.started[role] && self.watchdog.wants_frames(role, now)
    }

    /// A managed node's activation (true) or deactivation (false). Either way
    /// everything held is forgotten and only runs that start afterwards may
    /// drive; deactivating publishes one zero, then nothing until activated.
    pub fn set_active(&mut self, active: bool, now: Instant) -> Effects {
        let mut fx = Effects::default();
        self.task.set_barrier(now);
        self.out.forget_all();
        self.hold = None;
        // Whatever a policy ran while inactive (a load finishing meanwhile) or
        // before the pause, it starts a new history either way.
        self.task.new_history();
        fx.instruction = Some(self.task());
        match self.out.set_active(active) {
            None => self.publish(now, &mut fx),
            Some(zero) => {
                fx.publish = Some(zero);
                fx.diagnostics = true;
            }
        }
        fx
    }

    pub fn is_active(&self) -> bool {
        self.out.is_active()
    }

    /// A worker finished loading its policy, or failed to.
    pub fn loaded(&mut self, role: Role, result: Result<(), String>, now: Instant) -> Effects {
        if let Err(e) = &result {
            error!(policy = %role, "POLICY NOT LOADED ({role}): {e}");
        }
        let failed = result.is_err();
        let s = self.watchdog.loaded(role, result, now);
        if failed {
            return self.out_of_service(role, s, now);
        }
        let mut fx = Effects::default();
        self.after_switch(s, now, &mut fx);
        fx
    }

    /// A worker's remote policy cannot reach its inference server at start
    /// (the worker keeps trying): the fallback drives meanwhile.
    pub fn unreachable(&mut self, role: Role, why: &str, now: Instant) -> Effects {
        error!(policy = %role, "POLICY NOT CONNECTED ({role}), the fallback drives: {why}");
        let s = self.watchdog.unreachable(role, why.to_string(), now);
        self.out_of_service(role, s, now)
    }

    /// A worker's thread ended while the node runs (it panicked): that policy is gone.
    pub fn worker_exited(&mut self, role: Role, why: &str, now: Instant) -> Effects {
        error!(policy = %role, "the {role} inference thread died: {why}");
        let s = self.watchdog.lost(role, format!("inference thread died: {why}"), now);
        self.out_of_service(role, s, now)
    }

    /// `role` cannot run (`switch`: what the watchdog made of it): a primary
    /// out of service starts the fallback, if it is not running yet.
    fn out_of_service(&mut self, role: Role, switch: Option<Switch>, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if role == Role::Primary {
            self.start(Role::Fallback, &mut fx);
        }
        self.after_switch(switch, now, &mut fx);
        fx
    }

    /// A frame of `role` never reached its model.
    pub fn skipped(&mut self, role: Role, skip: &Skip, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if self.watchdog.active() != Some(role) {
            return fx;
        }
        self.out.forget_policy();
        let kind = match skip {
            Skip::BadFrame(_) => Some(Warn::BadFrame),
            Skip::BadInstruction(_) => Some(Warn::BadInstruction),
            Skip::Stale { .. } | Skip::Future { .. } | Skip::Unstamped => Some(Warn::Stale),
            // Expected after every reset of a windowed policy: said on ~/status, not warned of.
            Skip::WindowFilling { .. } => None,
            Skip::NoInstruction | Skip::NotLoaded => return fx,
        };
        if let Some(n) = kind.and_then(|k| self.throttle.allow(k, now)) {
            warn!(suppressed = n, "{skip}; no command from this frame");
        }
        self.hold = Some(Hold::Skipped(skip.clone()));
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
            if let Some(n) = self.throttle.allow(Warn::Inference, now) {
                warn!(suppressed = n, policy = %r.role, "{e}; no command from this frame");
            }
        }
        let verdict = outcome.map(|o| self.watchdog.verdict(r.role, o, now));
        let current = self.task.is_current(r.generation, r.started);
        match (&verdict, &r.outcome) {
            (Some(v), RunOutcome::Action { command, chunk, .. }) if v.drive && current && self.shadow.is_some() => {
                self.propose(r, *command, chunk, ros_now_s, &mut fx)
            }
            (Some(v), RunOutcome::Action { command, chunk, .. }) if v.drive && current => {
                self.drive(r, *command, chunk, ros_now_s, now, &mut fx)
            }
            // A result of an older task or from before a pause, stop or lock
            // change: counted by the watchdog above, ignored here.
            _ if !current => {}
            _ if self.watchdog.active().is_none_or(|a| a == r.role) => self.out.forget_policy(),
            _ => {}
        }
        self.after_switch(verdict.and_then(|v| v.switch), now, &mut fx);
        fx
    }

    /// A current result of the policy in control: it drives if its frame is still fresh.
    fn drive(
        &mut self,
        r: &RunResult,
        command: Velocity,
        chunk: &Option<(Vec<Velocity>, Playback)>,
        ros_now_s: f64,
        now: Instant,
        fx: &mut Effects,
    ) {
        match self.freshness.get().check(Some(r.stamp_s), ros_now_s) {
            Ok(_) => {
                self.hold = None;
                self.out.policy_command(command, chunk_of(r, chunk), ros_now_s, now);
                self.publish(now, fx);
                fx.drove = self.out.decision().source == Some(POLICY);
            }
            Err(skip) => {
                // The run took so long that its frame went stale meanwhile.
                self.out.forget_policy();
                self.hold = Some(Hold::Skipped(skip));
            }
        }
    }

    /// In shadow mode, a result that would have driven: a proposal, if its
    /// frame is still fresh. A chunk proposes the step it would start from
    /// (the one due now, as [`Output::policy_command`] plays it; its later
    /// steps and the blend with an earlier chunk are not proposed).
    fn propose(
        &mut self,
        r: &RunResult,
        command: Velocity,
        chunk: &Option<(Vec<Velocity>, Playback)>,
        ros_now_s: f64,
        fx: &mut Effects,
    ) {
        if self.freshness.get().check(Some(r.stamp_s), ros_now_s).is_err() {
            return;
        }
        let proposed = match chunk_of(r, chunk) {
            Some(c) => c.at(ros_now_s).unwrap_or(Velocity::ZERO),
            None => command,
        };
        if let Some(s) = self.shadow.as_mut() {
            s.record(proposed, self.published);
        }
        fx.proposal = Some(proposed);
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
        if self.task.received(text, now) {
            self.out.forget_policy();
            self.hold = None;
            fx.instruction = Some(self.task());
            self.publish(now, &mut fx);
        }
        fx
    }

    /// Pauses (false) or resumes (true) the policy's commands; returns what happened, for the caller to report.
    pub fn set_autonomy(&mut self, enabled: bool, now: Instant) -> (Effects, &'static str) {
        let mut fx = Effects::default();
        let was = self.out.mux.is_enabled(POLICY);
        if was != enabled {
            self.out.mux.set_enabled(POLICY, enabled);
            self.out.stop_chunk();
            // After a resume only runs that start after it may drive.
            self.task.set_barrier(now);
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
                let paused = self.set_autonomy(false, now).0;
                paused.merge(self.instruction_received("", now))
            }
            other => {
                warn!("unknown system_control command '{other}' (start, stop, pause, resume)");
                Effects::default()
            }
        }
    }

    /// A command from a teleop (or other) source: it goes out now, not at the next tick.
    pub fn teleop(&mut self, source: SourceId, v: Velocity, now: Instant) -> Effects {
        let mut fx = Effects::default();
        if let Err(Refused::NonFinite(v)) = self.out.mux.command(source, v, now) {
            if let Some(n) = self.throttle.allow(Warn::NonFiniteCommand, now) {
                warn!(
                    suppressed = n,
                    source = self.out.mux.source_name(source),
                    "non-finite command refused, not forwarded: {v:?}"
                );
            }
        }
        self.publish(now, &mut fx);
        fx
    }

    /// A lock message. A change of the lock's state forgets every source's last
    /// command; engaging takes effect now, not at the next tick.
    pub fn lock(&mut self, lock: LockId, engaged: bool, now: Instant) -> Effects {
        let mut fx = Effects::default();
        let mux = &mut self.out.mux;
        let was = mux.is_locked(lock, now);
        mux.lock(lock, engaged, now);
        if was != mux.is_locked(lock, now) {
            let name = mux.lock_name(lock);
            if engaged {
                warn!(lock = name, "lock engaged");
            } else {
                info!(lock = name, "lock released: only commands sent from now on drive");
            }
            self.task.set_barrier(now);
            self.out.forget_all();
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
        self.out.play(ros_now_s);
        self.publish(now, &mut fx);
        fx
    }

    /// A reading of ROS time. After a jump nothing stamped in the old
    /// timeline drives: runs in flight are past the barrier, the chunk and the
    /// policy's command are forgotten, and the workers get a new generation of
    /// the same task (which resets their recurrent state). Teleop sources and
    /// locks are timed on the steady clock and stay as they are.
    fn observe_clock(&mut self, ros_now_s: f64, now: Instant, fx: &mut Effects) {
        let Some(jump) = self.clock.observe(ros_now_s, now) else { return };
        warn!("{jump}: what was computed or stamped before it is void; driving again from fresh results only");
        self.task.renew(now);
        self.out.forget_policy();
        self.hold = Some(Hold::ClockJump(jump));
        fx.instruction = Some(self.task());
        fx.diagnostics = true;
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
        self.out.forget_policy();
        self.hold = None;
        fx.hand_newest_to = s.to;
        if s.to.is_some() {
            // The policy taking control starts a new history (state and windows) on the newest frame;
            // a run it started before, on the old history, never drives.
            self.task.new_history();
            self.task.set_barrier(now);
            fx.instruction = Some(self.task());
        }
        if s.to != Some(Role::Primary) {
            // A lazily loaded fallback starts loading the first time it is needed.
            self.start(Role::Fallback, fx);
        }
        fx.diagnostics = true;
        self.publish(now, fx);
    }

    /// Decides and shapes the command for this instant (nothing at all while inactive).
    fn publish(&mut self, now: Instant, fx: &mut Effects) {
        if let Some(p) = self.out.publish(now) {
            fx.diagnostics |= p.changed;
            fx.publish = Some(p.command);
            self.published = p.command;
        }
    }
}

/// A result's chunk, timed from its frame's stamp.
fn chunk_of(r: &RunResult, chunk: &Option<(Vec<Velocity>, Playback)>) -> Option<Chunk> {
    chunk.as_ref().map(|(steps, playback)| Chunk { stamp_s: r.stamp_s, steps: steps.clone(), playback: *playback })
}

#[cfg(test)]
mod tests;

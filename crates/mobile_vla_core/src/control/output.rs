//! What goes out on `cmd_vel`: the mux's decision, shaped by the output stage.
//!
//! Owns the [`CommandMux`] (every source's last command, the locks), the
//! chunk the policy's command plays from, the [`OutputStage`] and the last
//! decision, and whether the output is open at all (a managed node that is
//! not active publishes nothing). It only ever publishes the stage's shaping
//! of the mux's decision: with no fresh, valid source, zero. Which results may
//! become the policy's command is the controller's decision.

use std::time::{Duration, Instant};

use tracing::info;

use super::setup::POLICY;
use crate::chunk::{Chunk, ChunkPlayer};
use crate::command_mux::{CommandMux, Decision, LockSpec, SourceSpec};
use crate::limits::{Limits, OutputStage};
use crate::vocab::Velocity;

#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) mux: CommandMux,
    stage: OutputStage,
    /// The chunk the policy's command plays from, if its policy plays chunks.
    player: ChunkPlayer,
    decision: Decision,
    last_publish: Instant,
    /// A managed node that is not active publishes nothing at all.
    active: bool,
}

/// One decision of the output: the command, and whether the source or lock in control changed.
pub(crate) struct Published {
    pub(crate) command: Velocity,
    pub(crate) changed: bool,
}

impl Output {
    pub(crate) fn new(sources: Vec<SourceSpec>, locks: Vec<LockSpec>, limits: Limits, now: Instant) -> Self {
        Self {
            mux: CommandMux::new(sources, locks, now),
            stage: OutputStage::new(limits),
            player: ChunkPlayer::default(),
            decision: Decision::NONE,
            last_publish: now,
            active: true,
        }
    }

    pub(crate) fn reconfigure(&mut self, sources: &[SourceSpec], locks: &[LockSpec], limits: Limits, now: Instant) {
        self.mux.set_specs(sources, locks, now);
        self.stage.set_limits(limits);
    }

    pub(crate) fn decision(&self) -> &Decision {
        &self.decision
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    /// The policy's command, and any chunk it plays, no longer drive.
    pub(crate) fn forget_policy(&mut self) {
        self.mux.clear(POLICY);
        self.player.clear();
    }

    /// Nothing held drives any more: every source's command and the chunk.
    pub(crate) fn forget_all(&mut self) {
        self.mux.clear_all();
        self.player.clear();
    }

    /// Stops the chunk (a pause or resume: the mux forgets the paused source itself).
    pub(crate) fn stop_chunk(&mut self) {
        self.player.clear();
    }

    /// Opens (true) or closes the output; closing is a hard stop whatever the
    /// deceleration limits, returned as the one command that goes out.
    pub(crate) fn set_active(&mut self, active: bool) -> Option<Velocity> {
        self.active = active;
        if active {
            return None;
        }
        self.decision = Decision::NONE;
        Some(self.stage.step(Velocity::ZERO, Duration::ZERO, true))
    }

    /// A result that may drive: its command (a single action, or the chunk's step for `ros_now_s`).
    pub(crate) fn policy_command(&mut self, command: Velocity, chunk: Option<Chunk>, ros_now_s: f64, now: Instant) {
        let command = match chunk {
            Some(c) => {
                self.player.push(c);
                self.player.at(ros_now_s).unwrap_or(Velocity::ZERO)
            }
            None => command,
        };
        // Refused only while paused: then it must not drive anyway.
        let _ = self.mux.command(POLICY, command, now);
    }

    /// A playing chunk's step for `ros_now_s` becomes the policy's command
    /// (zero past its end, until the next chunk or the command timeout).
    pub(crate) fn play(&mut self, ros_now_s: f64) {
        if !self.player.is_empty() {
            let step = self.player.at(ros_now_s).unwrap_or(Velocity::ZERO);
            self.mux.retarget(POLICY, step);
        }
    }

    /// Decides and shapes the command for this instant (nothing at all while inactive).
    pub(crate) fn publish(&mut self, now: Instant) -> Option<Published> {
        if !self.active {
            return None;
        }
        let d = self.mux.decide(now);
        let command = self.stage.step(d.command, now.saturating_duration_since(self.last_publish), d.hard_stop());
        self.last_publish = now;
        let changed = (d.source, d.lock) != (self.decision.source, self.decision.lock);
        if changed {
            info!(
                source = d.source.map_or("none", |s| self.mux.source_name(s)),
                lock = d.lock.map_or("none", |l| self.mux.lock_name(l)),
                "command source changed"
            );
        }
        self.decision = d;
        Some(Published { command, changed })
    }
}

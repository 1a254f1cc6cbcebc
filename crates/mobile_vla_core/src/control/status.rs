//! What `~/status` says: the node's state, and why the robot holds still when it does.
//!
//! Owns [`NodeState`], the typed [`Reason`] the robot is not driven by its
//! policy, and [`Hold`], why the active policy's latest frame did not drive.
//! It only describes: [`Controller::status`] derives every value from the
//! controller's state, never stored apart from it.

use std::fmt;

use super::setup::POLICY;
use super::task::{Instruction, TooLong};
use super::Controller;
use crate::clock_jump::Jump;
use crate::command_mux::{LockId, SourceId};
use crate::vocab::{Role, Skip};
use crate::watchdog::HealthState;

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

/// Why the active policy's latest frame did not drive.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// The frame never reached the model, or its result came too late for it.
    Skipped(Skip),
    /// ROS time jumped: only a result computed after it may drive.
    ClockJump(Jump),
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Skipped(skip) => skip.fmt(f),
            Hold::ClockJump(jump) => write!(f, "{jump}: waiting for a result computed after it"),
        }
    }
}

/// Why the policy is not driving the robot.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// It is (or another source drives).
    None,
    NotActive,
    Lock(String),
    Paused,
    Starting,
    /// The watchdog's account of both policies.
    NoHealthyPolicy(String),
    NoInstruction,
    InstructionRejected(TooLong),
    Held(Hold),
    WaitingForFrames,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::None => Ok(()),
            Reason::NotActive => f.write_str("not active: a managed node commands nothing until activated"),
            Reason::Lock(name) => write!(f, "lock '{name}' engaged"),
            Reason::Paused => f.write_str("autonomy paused"),
            Reason::Starting => f.write_str("loading the policies"),
            Reason::NoHealthyPolicy(why) => f.write_str(why),
            Reason::NoInstruction => Skip::NoInstruction.fmt(f),
            Reason::InstructionRejected(why) => why.fmt(f),
            Reason::Held(hold) => hold.fmt(f),
            Reason::WaitingForFrames => f.write_str("waiting for camera frames"),
        }
    }
}

/// What `~/status` says.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub state: NodeState,
    /// Why the policy is not driving the robot ([`Reason::None`] while it is).
    pub reason: Reason,
    pub active_policy: Option<Role>,
    pub source: Option<SourceId>,
    pub lock: Option<LockId>,
}

impl Controller {
    /// What `~/status` says now.
    pub fn status(&self) -> StatusView {
        let d = self.out.decision();
        let mux = &self.out.mux;
        let primary_loading = self.watchdog.report(Role::Primary).state == HealthState::Loading;
        let starting = primary_loading
            && (self.watchdog.active().is_none() || self.watchdog.report(Role::Fallback).state == HealthState::Loading);
        let policy_reason = || {
            if let Some(r) = self.watchdog.reason() {
                return Reason::NoHealthyPolicy(r);
            }
            match self.task.instruction() {
                Instruction::None => Reason::NoInstruction,
                Instruction::Rejected(why) => Reason::InstructionRejected(*why),
                Instruction::Active(_) => match (&self.hold, d.source) {
                    (Some(h), _) => Reason::Held(h.clone()),
                    (None, None) => Reason::WaitingForFrames,
                    (None, Some(_)) => Reason::None,
                },
            }
        };
        let (state, reason) = match (d.source, d.lock) {
            _ if !self.out.is_active() => (NodeState::SafeStop, Reason::NotActive),
            (None, Some(lock)) => (NodeState::SafeStop, Reason::Lock(mux.lock_name(lock).to_string())),
            (Some(src), _) if src != POLICY => (NodeState::Running, Reason::None),
            _ if !mux.is_enabled(POLICY) => (NodeState::Paused, Reason::Paused),
            _ if starting => (NodeState::Starting, Reason::Starting),
            _ => match policy_reason() {
                Reason::None => (NodeState::Running, Reason::None),
                r => (NodeState::SafeStop, r),
            },
        };
        StatusView { state, reason, active_policy: self.watchdog.active(), source: d.source, lock: d.lock }
    }
}

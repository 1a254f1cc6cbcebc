//! The task the robot works on, and which results still belong to it.
//!
//! Owns the current [`Instruction`], its [`Generation`] (bumped by every
//! instruction change, and by a clock jump, which starts the same task
//! again), and the barrier: the instant after which a run must have started
//! for its result to drive (moved by an instruction change, stop, pause,
//! resume, a lock change, activation, a clock jump, a policy taking control
//! and leaving shadow mode), and the history the policies' frames belong to (a new one when a
//! policy takes control or a managed node is activated or deactivated). It
//! decides whether a finished run is current; what a current result may do is
//! the controller's.

use std::fmt;
use std::time::Instant;

use tracing::{info, warn};

use crate::vocab::{Generation, History, Task};

/// The instruction the robot works on.
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    None,
    Active(String),
    /// The last one received was refused.
    Rejected(TooLong),
}

/// An instruction over `instruction.max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    pub bytes: usize,
    pub max_bytes: usize,
}

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instruction rejected: {} bytes is more than instruction.max_bytes = {}; the robot holds still",
            self.bytes, self.max_bytes
        )
    }
}

#[derive(Debug)]
pub(crate) struct TaskState {
    instruction: Instruction,
    generation: Generation,
    /// Runs that started before this never drive.
    barrier: Instant,
    /// Which history the policies' frames belong to (see [`Task::history`]).
    history: History,
    pub(crate) max_bytes: usize,
}

impl TaskState {
    pub(crate) fn new(now: Instant, max_bytes: usize) -> Self {
        Self {
            instruction: Instruction::None,
            generation: Generation::default(),
            barrier: now,
            history: History::default(),
            max_bytes,
        }
    }

    pub(crate) fn instruction(&self) -> &Instruction {
        &self.instruction
    }

    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }

    /// What a worker must run under now.
    pub(crate) fn task(&self) -> Task {
        let text = match &self.instruction {
            Instruction::Active(t) => Some(t.clone()),
            Instruction::None | Instruction::Rejected(_) => None,
        };
        Task { generation: self.generation, text, history: self.history }
    }

    /// The policies start a new history (zero state, empty windows) under the same task.
    pub(crate) fn new_history(&mut self) {
        self.history = self.history.next();
    }

    /// A new instruction (`""` clears the task); true when the task changed.
    pub(crate) fn received(&mut self, text: &str, now: Instant) -> bool {
        let trimmed = text.trim();
        let next = if trimmed.is_empty() {
            info!("empty instruction: the robot holds still until a task arrives");
            Instruction::None
        } else if text.len() > self.max_bytes {
            let too_long = TooLong { bytes: text.len(), max_bytes: self.max_bytes };
            warn!("{too_long}");
            Instruction::Rejected(too_long)
        } else {
            info!(instruction = %trimmed, "new instruction");
            Instruction::Active(trimmed.to_string())
        };
        if next == self.instruction {
            return false;
        }
        // A new task must not be driven by the old task's commands.
        self.instruction = next;
        self.renew(now);
        true
    }

    /// The same task as a new generation (a clock jump: the workers reset their state).
    pub(crate) fn renew(&mut self, now: Instant) {
        self.generation.0 += 1;
        self.barrier = now;
    }

    /// Only runs that start from `now` on may drive.
    pub(crate) fn set_barrier(&mut self, now: Instant) {
        self.barrier = now;
    }

    /// Whether a run of `generation` that started at `started` belongs to the current task.
    pub(crate) fn is_current(&self, generation: Generation, started: Instant) -> bool {
        generation == self.generation && started >= self.barrier && matches!(self.instruction, Instruction::Active(_))
    }
}

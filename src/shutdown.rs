//! The node's last moments: the phases of its shutdown, and a deadline on them.
//!
//! Owns which phase the shutdown is in (the final zero, the grace given to
//! it, the shell's teardown, rcl's), and a deadline armed once the final
//! zero is due: a process still alive [`DEADLINE`] later logs the phase it is
//! stuck in and ends at once. Whatever holds it up (a teardown waiting on a
//! transport, an exit handler, even the log's own output), the supervisor
//! (`ros2 launch`, systemd) gets an exit instead of a process that must be
//! killed; a robot whose final zero could not go out gets silence, which its
//! base's command timeout stops. It decides nothing about motion.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tracing::error;

/// How long the shutdown may take, from the final zero to the process's end.
pub const DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    FinalZero = 1,
    Grace,
    Shell,
    Rcl,
    Exit,
    /// After a panic: the zero went out as the shell unwound, then the grace.
    Panicked,
}

impl Phase {
    const ALL: [Phase; 6] = [Phase::FinalZero, Phase::Grace, Phase::Shell, Phase::Rcl, Phase::Exit, Phase::Panicked];

    fn name(self) -> &'static str {
        match self {
            Phase::FinalZero => "publishing the final zero",
            Phase::Grace => "the final zero's grace",
            Phase::Shell => "the shell's teardown",
            Phase::Rcl => "rcl's teardown (spin thread, node, DDS participant)",
            Phase::Exit => "the process's exit",
            Phase::Panicked => "the final zero's grace after a panic",
        }
    }
}

static PHASE: AtomicU8 = AtomicU8::new(0);

/// The shutdown enters `phase`.
pub fn enter(phase: Phase) {
    PHASE.store(phase as u8, Ordering::SeqCst);
}

/// Arms the deadline: a process still alive [`DEADLINE`] from now ends with exit code 1.
pub fn arm() {
    let spawned = std::thread::Builder::new().name("shutdown-deadline".into()).spawn(|| {
        std::thread::sleep(DEADLINE);
        let stored = PHASE.load(Ordering::SeqCst);
        let phase = Phase::ALL.into_iter().find(|p| *p as u8 == stored).map_or("its first step", Phase::name);
        // Logged from a thread of its own: the exit must not wait on a stuck log writer.
        let _ = std::thread::Builder::new().name("shutdown-log".into()).spawn(move || {
            error!("shutdown is stuck in {phase} after {} s: ending the process now", DEADLINE.as_secs());
        });
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: _exit ends the process without running exit handlers (which may
        // be what is stuck); it touches no memory of this process.
        unsafe { libc::_exit(1) };
    });
    if let Err(e) = spawned {
        error!("could not arm the shutdown deadline: {e}");
    }
}

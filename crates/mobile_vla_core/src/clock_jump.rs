//! Jumps of the node's ROS clock, told apart from its normal run.
//!
//! Owns the last reading of ROS time beside the steady clock, and the rule
//! that calls the change between two readings a jump: ROS time moving back by
//! more than [`BACKWARD_S`], or forward by more than [`FORWARD_S`] beyond the
//! steady time that passed meanwhile (`ros2 bag play --loop` starting over, a
//! simulator reset, a stepped system clock). A sim clock running faster than
//! real time, or paused, is not a jump. A reading of exactly 0 is rcl's "no
//! /clock message yet": it is no baseline, so the first `/clock` is no jump.
//! It never reads a clock itself (readings are passed in) and never decides
//! what a jump voids: that is the control core's.

use std::fmt;
use std::time::Instant;

/// ROS time going back by more than this is a jump (a sim clock never goes
/// back; the system clock only when it is stepped).
pub const BACKWARD_S: f64 = 0.1;
/// ROS time moving ahead of the steady clock by more than this between two
/// readings is a jump (a simulation at 10x real time moves 0.45 s ahead of
/// a 20 Hz output tick; a stepped clock or a bag skipping ahead, seconds).
pub const FORWARD_S: f64 = 1.0;

/// One jump of ROS time, in seconds of ROS time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jump {
    pub from_s: f64,
    pub to_s: f64,
}

impl fmt::Display for Jump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let way = if self.to_s < self.from_s { "back" } else { "forward" };
        write!(
            f,
            "ROS time jumped {way} {:.3} s ({:.3} -> {:.3})",
            (self.to_s - self.from_s).abs(),
            self.from_s,
            self.to_s
        )
    }
}

/// The last reading of ROS time, and when (steady clock) it was taken.
#[derive(Debug, Default)]
pub struct ClockWatch {
    last: Option<(f64, Instant)>,
}

impl ClockWatch {
    /// A reading of ROS time (`ros_s`) taken at `now`; the jump since the
    /// previous reading, if it was one.
    pub fn observe(&mut self, ros_s: f64, now: Instant) -> Option<Jump> {
        if ros_s == 0.0 {
            self.last = None;
            return None;
        }
        let jump = self.last.and_then(|(prev, at)| {
            let ros = ros_s - prev;
            let steady = now.saturating_duration_since(at).as_secs_f64();
            (ros < -BACKWARD_S || ros > steady + FORWARD_S).then_some(Jump { from_s: prev, to_s: ros_s })
        });
        self.last = Some((ros_s, now));
        jump
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_clock_running_at_any_sane_rate_or_paused_never_jumps() {
        let t0 = Instant::now();
        let mut w = ClockWatch::default();
        for i in 0..100u32 {
            // Real time, then 10x real time, then paused.
            let ros = if i < 40 { 100.0 + i as f64 * 0.05 } else { 102.0 + (i.min(70) - 40) as f64 * 0.5 };
            assert_eq!(w.observe(ros, t0 + 50 * MS * i), None, "reading {i}");
        }
        // A long stall of the node's loop: steady time passed too.
        assert_eq!(w.observe(130.0, t0 + Duration::from_secs(30)), None);
    }

    #[test]
    fn back_or_far_ahead_is_a_jump_and_the_new_time_is_the_baseline() {
        let t0 = Instant::now();
        let mut w = ClockWatch::default();
        assert_eq!(w.observe(1000.0, t0), None);
        let back = w.observe(10.0, t0 + 50 * MS).unwrap();
        assert_eq!(back, Jump { from_s: 1000.0, to_s: 10.0 });
        assert!(back.to_string().starts_with("ROS time jumped back 990.000 s"), "{back}");
        assert_eq!(w.observe(10.05, t0 + 100 * MS), None, "after a jump, normal running");
        assert!(w.observe(9.9, t0 + 150 * MS).is_some(), "0.15 s back");
        assert_eq!(w.observe(9.85, t0 + 200 * MS), None, "0.05 s back: within the tolerance");
        let ahead = w.observe(20.0, t0 + 250 * MS).unwrap();
        assert!(ahead.to_string().starts_with("ROS time jumped forward"), "{ahead}");
    }

    #[test]
    fn no_clock_yet_is_no_baseline() {
        let t0 = Instant::now();
        let mut w = ClockWatch::default();
        assert_eq!(w.observe(0.0, t0), None);
        assert_eq!(w.observe(1000.0, t0 + MS), None, "the first /clock is not a jump");
        assert_eq!(w.observe(0.0, t0 + 2 * MS), None);
        assert_eq!(w.observe(5.0, t0 + 3 * MS), None);
    }
}

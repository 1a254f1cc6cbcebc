//! The last stage before the robot: velocity and acceleration limits, deadband.
//!
//! Owns the shaping of the mux's chosen command into what is published, tick
//! by tick: clip each axis to its velocity limit, zero what is inside the
//! deadband, and move from the previous output towards the target no faster
//! than the acceleration limit (deceleration limit when heading towards zero;
//! a limit of 0 means unlimited). A hard stop (a lock) skips the ramp and
//! outputs zero at once. It never invents motion: with a zero target the output
//! only shrinks.

use std::time::Duration;

use crate::command_mux::Velocity;

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// |linear.x|, |linear.y|, |angular.z| limits (m/s, m/s, rad/s).
    pub max_velocity: [f64; 3],
    /// Speeding up, per axis (m/s², rad/s²); 0 = unlimited.
    pub max_accel: [f64; 3],
    /// Slowing down (towards zero or reversing), per axis; 0 = unlimited.
    pub max_decel: [f64; 3],
    /// Targets with a smaller magnitude are treated as zero.
    pub deadband: [f64; 3],
}

#[derive(Debug)]
pub struct OutputStage {
    limits: Limits,
    last: Velocity,
}

impl OutputStage {
    pub fn new(limits: Limits) -> Self {
        Self { limits, last: Velocity::ZERO }
    }

    pub fn last(&self) -> Velocity {
        self.last
    }

    /// The command to publish now, `dt` after the previous one.
    pub fn step(&mut self, target: Velocity, dt: Duration, hard_stop: bool) -> Velocity {
        if hard_stop || !target.is_finite() {
            self.last = Velocity::ZERO;
            return self.last;
        }
        let dt = dt.as_secs_f64();
        let l = &self.limits;
        let t = target.axes();
        let prev = self.last.axes();
        let out: [f64; 3] = std::array::from_fn(|i| {
            let mut want = t[i].clamp(-l.max_velocity[i], l.max_velocity[i]);
            if want.abs() < l.deadband[i] {
                want = 0.0;
            }
            let speeding_up = want * prev[i] >= 0.0 && want.abs() > prev[i].abs();
            let rate = if speeding_up { l.max_accel[i] } else { l.max_decel[i] };
            let next = if rate > 0.0 {
                let step = rate * dt;
                prev[i] + (want - prev[i]).clamp(-step, step)
            } else {
                want
            };
            next.clamp(-l.max_velocity[i], l.max_velocity[i])
        });
        self.last = Velocity::from_axes(out);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TICK: Duration = Duration::from_millis(50);

    fn limits() -> Limits {
        Limits { max_velocity: [1.0, 0.5, 1.5], max_accel: [0.0; 3], max_decel: [0.0; 3], deadband: [0.0; 3] }
    }

    fn v(x: f64, y: f64, wz: f64) -> Velocity {
        Velocity { x, y, wz }
    }

    #[test]
    fn velocities_are_clipped_per_axis() {
        let mut s = OutputStage::new(limits());
        assert_eq!(s.step(v(3.0, -3.0, 0.2), TICK, false), v(1.0, -0.5, 0.2));
    }

    #[test]
    fn acceleration_ramps_up_and_deceleration_ramps_down() {
        let mut l = limits();
        l.max_accel = [1.0, 1.0, 1.0]; // 0.05 m/s per 50 ms tick
        l.max_decel = [2.0, 2.0, 2.0];
        let mut s = OutputStage::new(l);
        let a = s.step(v(1.0, 0.0, 0.0), TICK, false);
        assert!((a.x - 0.05).abs() < 1e-12);
        for _ in 0..30 {
            s.step(v(1.0, 0.0, 0.0), TICK, false);
        }
        assert_eq!(s.last().x, 1.0);
        let d = s.step(Velocity::ZERO, TICK, false);
        assert!((d.x - 0.9).abs() < 1e-12);
    }

    #[test]
    fn deadband_zeroes_small_targets() {
        let mut l = limits();
        l.deadband = [0.05, 0.05, 0.1];
        let mut s = OutputStage::new(l);
        assert_eq!(s.step(v(0.04, -0.02, 0.09), TICK, false), Velocity::ZERO);
        assert_eq!(s.step(v(0.06, 0.0, 0.0), TICK, false), v(0.06, 0.0, 0.0));
    }

    #[test]
    fn hard_stop_skips_the_ramp() {
        let mut l = limits();
        l.max_decel = [0.1, 0.1, 0.1];
        let mut s = OutputStage::new(l);
        s.step(v(1.0, 0.5, 1.0), TICK, false);
        assert_eq!(s.step(v(1.0, 0.5, 1.0), TICK, true), Velocity::ZERO);
    }

    proptest! {
        #[test]
        fn output_never_exceeds_the_limits(
            targets in prop::collection::vec((-5.0f64..5.0, -5.0f64..5.0, -5.0f64..5.0, any::<bool>()), 1..80),
            accel in 0.0f64..3.0, decel in 0.0f64..3.0, dt_ms in 1u64..200,
        ) {
            let mut l = limits();
            l.max_accel = [accel; 3];
            l.max_decel = [decel; 3];
            let mut s = OutputStage::new(l.clone());
            for (x, y, wz, stop) in targets {
                let o = s.step(v(x, y, wz), Duration::from_millis(dt_ms), stop);
                for (a, m) in o.axes().iter().zip(l.max_velocity) {
                    prop_assert!(a.abs() <= m + 1e-12);
                }
                if stop {
                    prop_assert_eq!(o, Velocity::ZERO);
                }
            }
        }

        /// With a zero target (no fresh source) the output only shrinks, and
        /// with no deceleration limit it is zero at once.
        #[test]
        fn a_zero_target_never_adds_motion(
            start in (-1.0f64..1.0, -0.5f64..0.5, -1.5f64..1.5), decel in 0.0f64..3.0, ticks in 1usize..50,
        ) {
            let mut l = limits();
            l.max_decel = [decel; 3];
            let mut s = OutputStage::new(l);
            s.step(v(start.0, start.1, start.2), TICK, false);
            let mut prev = s.last();
            for _ in 0..ticks {
                let o = s.step(Velocity::ZERO, TICK, false);
                for (a, b) in o.axes().iter().zip(prev.axes()) {
                    prop_assert!(a.abs() <= b.abs() + 1e-12);
                    prop_assert!(a * b >= 0.0, "never reverses");
                }
                if decel == 0.0 {
                    prop_assert_eq!(o, Velocity::ZERO);
                }
                prev = o;
            }
        }
    }
}

//! The last stage before the robot: velocity and acceleration limits, deadband.
//!
//! Owns the shaping of the mux's chosen command into what is published, tick
//! by tick: clip each axis to its velocity limit, zero what is inside the
//! deadband, and move from the previous output towards the target with Nav2
//! velocity_smoother's semantics: moving towards zero is deceleration
//! (`max_decel`), moving away from zero is acceleration (`max_accel`); a limit
//! of 0 means unlimited. A reversal is both: within one tick the axis first
//! decelerates to zero, and only the time left after reaching zero
//! accelerates it the other way, so a joystick flip cannot skip the
//! acceleration limit. With `scale_velocities`, every axis's change is scaled
//! by the one factor of the most limited axis, so an omni base keeps the
//! direction it was told while it ramps. A hard stop (a lock) skips the ramp
//! and outputs zero at once. It never invents motion: with a zero target the
//! output only shrinks.

use std::time::Duration;

use crate::vocab::Velocity;

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
    /// Scale all axes' changes together while any one is limited (keeps the direction).
    pub scale_velocities: bool,
}

#[derive(Debug)]
pub struct OutputStage {
    limits: Limits,
    last: Velocity,
}

impl OutputStage {
    /// New limits from the next step on; the last output is kept, so a ramp
    /// continues from where the robot is.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

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
        let prev = self.last.axes();
        let want: [f64; 3] = std::array::from_fn(|i| {
            let w = target.axes()[i].clamp(-l.max_velocity[i], l.max_velocity[i]);
            if w.abs() < l.deadband[i] {
                0.0
            } else {
                w
            }
        });
        let mut out: [f64; 3] = std::array::from_fn(|i| ramp(prev[i], want[i], l.max_accel[i], l.max_decel[i], dt));
        if l.scale_velocities {
            // The share of its wanted change the most limited axis gets; all axes get that share.
            let k = (0..3)
                .filter(|&i| want[i] != prev[i])
                .map(|i| (out[i] - prev[i]) / (want[i] - prev[i]))
                .fold(1.0f64, f64::min)
                .clamp(0.0, 1.0);
            out = std::array::from_fn(|i| prev[i] + k * (want[i] - prev[i]));
        }
        self.last = Velocity::from_axes(std::array::from_fn(|i| out[i].clamp(-l.max_velocity[i], l.max_velocity[i])));
        self.last
    }
}

/// One axis, `dt` seconds: from `prev` towards `want`, decelerating (towards
/// zero) at most `decel`, accelerating (away from zero) at most `accel`; 0 = unlimited.
fn ramp(prev: f64, want: f64, accel: f64, decel: f64, dt: f64) -> f64 {
    let limited = |rate: f64, dist: f64, time: f64| {
        if rate > 0.0 {
            dist.min(rate * time)
        } else {
            dist
        }
    };
    if prev * want >= 0.0 && want.abs() >= prev.abs() {
        // Away from zero (or from zero): acceleration only.
        let sign = if want != 0.0 { want.signum() } else { prev.signum() };
        return prev + sign * limited(accel, want.abs() - prev.abs(), dt);
    }
    if prev * want > 0.0 {
        // Towards zero, same side: deceleration only.
        return prev - prev.signum() * limited(decel, prev.abs() - want.abs(), dt);
    }
    // Down to zero first (a stop or a reversal), then the time left accelerates the other way.
    let down = limited(decel, prev.abs(), dt);
    if down < prev.abs() {
        return prev - prev.signum() * down;
    }
    let left = if decel > 0.0 { dt - down / decel } else { dt };
    want.signum() * limited(accel, want.abs(), left.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TICK: Duration = Duration::from_millis(50);

    fn limits() -> Limits {
        Limits {
            max_velocity: [1.0, 0.5, 1.5],
            max_accel: [0.0; 3],
            max_decel: [0.0; 3],
            deadband: [0.0; 3],
            scale_velocities: false,
        }
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

    #[test]
    fn a_joystick_flip_decelerates_to_zero_then_accelerates_under_the_limit() {
        let mut l = limits();
        l.max_velocity = [1.0, 1.0, 1.5];
        l.max_accel = [1.0, 1.0, 2.0];
        let mut s = OutputStage::new(l);
        s.last = v(0.5, -0.5, 1.0);
        // Unlimited deceleration: zero at once, then 50 ms of acceleration the other way.
        let o = s.step(v(-0.5, 0.5, -1.0), TICK, false);
        for (got, want) in o.axes().iter().zip([-0.05, 0.05, -0.1]) {
            assert!((got - want).abs() < 1e-12, "{o:?}");
        }
        // A limited deceleration spends the tick slowing down first.
        let mut l = limits();
        l.max_accel = [1.0; 3];
        l.max_decel = [4.0; 3];
        let mut s = OutputStage::new(l);
        s.last = v(0.1, 0.0, 0.0);
        // 0.1 m/s to zero at 4 m/s² takes 25 ms; the other 25 ms reach -0.025 at 1 m/s².
        assert!((s.step(v(-1.0, 0.0, 0.0), TICK, false).x + 0.025).abs() < 1e-12);
    }

    #[test]
    fn scaled_velocities_keep_the_direction() {
        let mut l = limits();
        l.max_accel = [1.0, 1.0, 1.0];
        l.scale_velocities = true;
        let mut s = OutputStage::new(l);
        let o = s.step(v(0.8, 0.2, 0.0), TICK, false);
        assert!((o.x - 0.05).abs() < 1e-12 && (o.y - 0.0125).abs() < 1e-12, "{o:?}");
    }

    fn limits_strategy() -> impl Strategy<Value = (Limits, u64)> {
        (prop::array::uniform3(0.0f64..3.0), prop::array::uniform3(0.0f64..3.0), any::<bool>(), 1u64..200).prop_map(
            |(accel, decel, scale, dt_ms)| {
                let mut l = limits();
                l.max_accel = accel;
                l.max_decel = decel;
                l.scale_velocities = scale;
                (l, dt_ms)
            },
        )
    }

    proptest! {
        /// Per tick and axis: the part of the change towards zero takes at
        /// least its time at max_decel, the part away from zero at least its
        /// time at max_accel, and both fit in the tick (a reversal spends both).
        #[test]
        fn every_change_fits_the_acceleration_and_deceleration_limits(
            (l, dt_ms) in limits_strategy(),
            targets in prop::collection::vec(prop::array::uniform3(-5.0f64..5.0), 1..60),
        ) {
            let mut s = OutputStage::new(l.clone());
            let dt = dt_ms as f64 / 1e3;
            for t in targets {
                let prev = s.last().axes();
                let out = s.step(Velocity::from_axes(t), Duration::from_millis(dt_ms), false).axes();
                for i in 0..3 {
                    let (p, o) = (prev[i], out[i]);
                    let (toward, away) = if p * o < 0.0 {
                        (p.abs(), o.abs())
                    } else {
                        ((p.abs() - o.abs()).max(0.0), (o.abs() - p.abs()).max(0.0))
                    };
                    let time = |dist: f64, rate: f64| if rate > 0.0 { dist / rate } else { 0.0 };
                    prop_assert!(
                        time(toward, l.max_decel[i]) + time(away, l.max_accel[i]) <= dt + 1e-9,
                        "axis {} {} -> {} in {} s", i, p, o, dt
                    );
                }
            }
        }

        /// With scale_velocities, all axes move by one common share of their wanted change.
        #[test]
        fn scaled_changes_are_parallel_to_the_wanted_change(
            (mut l, dt_ms) in limits_strategy(),
            targets in prop::collection::vec(prop::array::uniform3(-0.5f64..0.5), 1..60),
        ) {
            l.scale_velocities = true;
            let mut s = OutputStage::new(l.clone());
            for t in targets {
                let prev = s.last().axes();
                let out = s.step(Velocity::from_axes(t), Duration::from_millis(dt_ms), false).axes();
                let shares: Vec<f64> = (0..3)
                    .filter(|&i| (t[i] - prev[i]).abs() > 1e-9)
                    .map(|i| (out[i] - prev[i]) / (t[i] - prev[i]))
                    .collect();
                for k in &shares {
                    prop_assert!((-1e-9..=1.0 + 1e-9).contains(k));
                    prop_assert!((k - shares[0]).abs() < 1e-6, "shares {:?}", shares);
                }
            }
        }
    }
}

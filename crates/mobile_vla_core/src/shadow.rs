//! Shadow mode's scorekeeping: how the policy's proposals agree with what really drives.
//!
//! Owns a sliding window of the last [`WINDOW`] proposals, each paired with
//! the command on `cmd_vel` at the instant it was proposed (teleop's, or zero
//! when nothing drives), and the agreement over it per axis: the mean
//! absolute difference and the fraction of proposals whose sign (with a
//! dead band of [`DEADBAND`]) matches. It never decides what drives; each
//! shadow session gets a new one, so a score never mixes two sessions.

use std::collections::VecDeque;

use crate::vocab::Velocity;

/// Proposals in the window: about 10 s at the team's 10 Hz.
pub const WINDOW: usize = 100;
/// |v| up to this counts as no motion when signs are compared (m/s, rad/s).
pub const DEADBAND: f64 = 0.05;

/// The agreement over the window, per axis [linear.x, linear.y, angular.z].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Agreement {
    pub samples: usize,
    pub mae: [f64; 3],
    pub sign_agreement: [f64; 3],
}

#[derive(Debug, Default)]
pub struct Shadow {
    pairs: VecDeque<([f64; 3], [f64; 3])>,
}

fn axes(v: Velocity) -> [f64; 3] {
    [v.x, v.y, v.wz]
}

/// The direction of `x`: 1, -1, or 0 within `deadband` of zero.
pub fn sign(x: f64, deadband: f64) -> i8 {
    if x > deadband {
        1
    } else if x < -deadband {
        -1
    } else {
        0
    }
}

impl Shadow {
    /// A proposal, and the command driving at that instant.
    pub fn record(&mut self, proposed: Velocity, driven: Velocity) {
        if self.pairs.len() == WINDOW {
            self.pairs.pop_front();
        }
        self.pairs.push_back((axes(proposed), axes(driven)));
    }

    pub fn agreement(&self) -> Agreement {
        let n = self.pairs.len();
        let mut a = Agreement { samples: n, ..Agreement::default() };
        if n == 0 {
            return a;
        }
        for (p, d) in &self.pairs {
            for k in 0..3 {
                a.mae[k] += (p[k] - d[k]).abs();
                a.sign_agreement[k] += f64::from(u8::from(sign(p[k], DEADBAND) == sign(d[k], DEADBAND)));
            }
        }
        for k in 0..3 {
            a.mae[k] /= n as f64;
            a.sign_agreement[k] /= n as f64;
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(x: f64, y: f64, wz: f64) -> Velocity {
        Velocity { x, y, wz }
    }

    #[test]
    fn agreement_is_per_axis_over_the_last_window_of_proposals() {
        let mut s = Shadow::default();
        assert_eq!(s.agreement(), Agreement::default());
        s.record(v(0.3, 0.0, 0.1), v(0.2, 0.0, -0.2));
        s.record(v(0.1, 0.02, 0.0), v(0.2, 0.0, 0.0));
        let a = s.agreement();
        assert_eq!(a.samples, 2);
        assert!((a.mae[0] - 0.1).abs() < 1e-12 && (a.mae[1] - 0.01).abs() < 1e-12 && (a.mae[2] - 0.15).abs() < 1e-12);
        assert_eq!(a.sign_agreement, [1.0, 1.0, 0.5]);
        for _ in 0..WINDOW {
            s.record(v(0.5, 0.0, 0.0), v(0.5, 0.0, 0.0));
        }
        assert_eq!(s.agreement(), Agreement { samples: WINDOW, mae: [0.0; 3], sign_agreement: [1.0; 3] });
    }
}

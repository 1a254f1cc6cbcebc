//! How close a policy's commands came to the recorded actions: the scores of one episode, or of many merged.
//!
//! Owns the metrics' definitions, on the axes the policy commands (never on
//! one it leaves at 0): MAE (the model team's metric: the mean of |command -
//! action| over every frame and commanded axis), RMSE, per-axis sign
//! agreement and the frame's direction class (stop / forward / backward /
//! left / right / turn left / turn right), each with a dead band; the frames
//! not scored, by reason; and per-stage latency percentiles. Pure arithmetic,
//! no I/O: the same numbers for the same inputs.

use std::collections::BTreeMap;

use mobile_vla_core::shadow::sign;
use mobile_vla_report::summary::Dist;
use serde::Serialize;

/// Velocity axes in a command's order.
pub const AXES: [&str; 3] = mobile_vla_core::vocab::Velocity::AXES;

/// The stages of a run whose latency is reported, in milliseconds.
pub const STAGES: [&str; 4] = ["preprocess", "inference", "postprocess", "total"];

#[derive(Debug, Clone, Default)]
struct Axis {
    n: u64,
    sum_abs: f64,
    sum_sq: f64,
    same_sign: u64,
}

/// The running scores: frames scored against their actions and frames refused.
#[derive(Debug, Clone)]
pub struct Score {
    commanded: [bool; 3],
    deadband: f64,
    axes: [Axis; 3],
    frames: u64,
    same_class: u64,
    refused: BTreeMap<String, u64>,
    latency_ms: [Vec<f64>; 4],
}

/// A frame's direction: what the robot mostly does.
pub fn direction(v: [f64; 3], commanded: [bool; 3], deadband: f64) -> &'static str {
    const NAMES: [[&str; 2]; 3] = [["forward", "backward"], ["left", "right"], ["turn_left", "turn_right"]];
    let mut best: Option<(usize, f64)> = None;
    for k in (0..3).filter(|k| commanded[*k] && v[*k].abs() > deadband) {
        if best.is_none_or(|(_, m)| v[k].abs() > m) {
            best = Some((k, v[k].abs()));
        }
    }
    match best {
        None => "stop",
        Some((k, _)) => NAMES[k][usize::from(v[k] < 0.0)],
    }
}

impl Score {
    /// Scores on the `commanded` axes; a |component| up to `deadband` counts as no motion.
    pub fn new(commanded: [bool; 3], deadband: f64) -> Self {
        Score {
            commanded,
            deadband,
            axes: Default::default(),
            frames: 0,
            same_class: 0,
            refused: BTreeMap::new(),
            latency_ms: Default::default(),
        }
    }

    /// No frames yet, on the same axes and dead band as `self`.
    pub fn empty_like(&self) -> Score {
        Score::new(self.commanded, self.deadband)
    }

    /// A frame the policy commanded `command` on, where the recording did `action`.
    pub fn scored(&mut self, action: [f64; 3], command: [f64; 3]) {
        self.frames += 1;
        for k in (0..3).filter(|k| self.commanded[*k]) {
            let a = &mut self.axes[k];
            let e = command[k] - action[k];
            a.n += 1;
            a.sum_abs += e.abs();
            a.sum_sq += e * e;
            a.same_sign += u64::from(sign(command[k], self.deadband) == sign(action[k], self.deadband));
        }
        let class = |v| direction(v, self.commanded, self.deadband);
        self.same_class += u64::from(class(action) == class(command));
    }

    /// A frame that gave no command, and why (a short, stable key).
    pub fn refused(&mut self, reason: &str) {
        self.frames += 1;
        *self.refused.entry(reason.to_string()).or_default() += 1;
    }

    /// One run's stage latencies, in [`STAGES`] order (ms).
    pub fn timed(&mut self, stages_ms: [f64; 4]) {
        for (all, t) in self.latency_ms.iter_mut().zip(stages_ms) {
            all.push(t);
        }
    }

    /// Adds `other`'s frames (same axes and dead band).
    pub fn merge(&mut self, other: &Score) {
        for (a, b) in self.axes.iter_mut().zip(&other.axes) {
            a.n += b.n;
            a.sum_abs += b.sum_abs;
            a.sum_sq += b.sum_sq;
            a.same_sign += b.same_sign;
        }
        self.frames += other.frames;
        self.same_class += other.same_class;
        for (k, n) in &other.refused {
            *self.refused.entry(k.clone()).or_default() += n;
        }
        for (a, b) in self.latency_ms.iter_mut().zip(&other.latency_ms) {
            a.extend(b);
        }
    }

    pub fn scored_frames(&self) -> u64 {
        self.frames - self.refused.values().sum::<u64>()
    }

    pub fn summary(&self) -> Summary {
        let scored = self.scored_frames();
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        let (n, sum_abs, sum_sq) =
            self.axes.iter().fold((0, 0.0, 0.0), |(n, s, q), a| (n + a.n, s + a.sum_abs, q + a.sum_sq));
        let axes = (0..3)
            .filter(|k| self.commanded[*k])
            .map(|k| {
                let a = &self.axes[k];
                let s = AxisSummary {
                    mae: ratio_f(a.sum_abs, a.n),
                    rmse: ratio_f(a.sum_sq, a.n).map(f64::sqrt),
                    sign_agreement: ratio(a.same_sign, a.n),
                };
                (AXES[k].to_string(), s)
            })
            .collect();
        let latency_ms = STAGES
            .iter()
            .zip(&self.latency_ms)
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, v)| (name.to_string(), Dist::of(v.iter().copied())))
            .collect();
        Summary {
            frames: self.frames,
            scored,
            mae: ratio_f(sum_abs, n),
            rmse: ratio_f(sum_sq, n).map(f64::sqrt),
            direction_agreement: ratio(self.same_class, scored),
            axes,
            refused_fraction: ratio(self.frames - scored, self.frames).unwrap_or(0.0),
            refused: self.refused.clone(),
            latency_ms,
        }
    }
}

fn ratio_f(a: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| a / n as f64)
}

/// One axis's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AxisSummary {
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    pub sign_agreement: Option<f64>,
}

/// The scores, as reported (`None`: nothing to compute it from).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub frames: u64,
    pub scored: u64,
    pub mae: Option<f64>,
    pub rmse: Option<f64>,
    pub direction_agreement: Option<f64>,
    pub axes: BTreeMap<String, AxisSummary>,
    pub refused_fraction: f64,
    pub refused: BTreeMap<String, u64>,
    /// Per stage (ms): p50, p90, p99 (numpy's interpolation, as `mobile_vla_report`) and max.
    pub latency_ms: BTreeMap<String, Dist>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mae_and_rmse_cover_the_commanded_axes_only() {
        let mut s = Score::new([true, false, true], 0.05);
        s.scored([1.0, 5.0, 0.0], [0.5, 0.0, 0.1]);
        s.scored([0.0, -5.0, 0.0], [0.0, 0.0, -0.3]);
        s.refused("window_filling");
        let m = s.summary();
        assert_eq!((m.frames, m.scored), (3, 2));
        assert!((m.mae.unwrap() - (0.5 + 0.1 + 0.0 + 0.3) / 4.0).abs() < 1e-12);
        assert!((m.rmse.unwrap() - ((0.25 + 0.01 + 0.09) / 4.0f64).sqrt()).abs() < 1e-12);
        assert_eq!(m.axes.keys().collect::<Vec<_>>(), ["angular.z", "linear.x"]);
        assert_eq!(m.axes["linear.x"].sign_agreement, Some(1.0));
        assert_eq!(m.axes["angular.z"].sign_agreement, Some(0.0), "0 vs 0.1, and 0 vs -0.3: both disagree");
        assert!((m.refused_fraction - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn the_direction_is_the_largest_commanded_component_beyond_the_dead_band() {
        let all = [true; 3];
        assert_eq!(direction([0.01, -0.02, 0.0], all, 0.05), "stop");
        assert_eq!(direction([0.3, -0.5, 0.1], all, 0.05), "right");
        assert_eq!(direction([-0.3, 0.0, 0.1], all, 0.05), "backward");
        assert_eq!(direction([0.1, 0.0, -0.9], all, 0.05), "turn_right");
        assert_eq!(direction([0.1, 0.0, -0.9], [true, true, false], 0.05), "forward");
    }

    #[test]
    fn merging_two_episodes_scores_as_one() {
        let (mut a, mut b, mut both) =
            (Score::new([true; 3], 0.0), Score::new([true; 3], 0.0), Score::new([true; 3], 0.0));
        for (i, s) in [&mut a, &mut b].into_iter().enumerate() {
            let x = i as f64;
            s.scored([x, 0.0, 1.0], [0.2, x, 1.0]);
            s.timed([1.0 + x, 2.0, 3.0, 6.0 + x]);
        }
        both.scored([0.0, 0.0, 1.0], [0.2, 0.0, 1.0]);
        both.scored([1.0, 0.0, 1.0], [0.2, 1.0, 1.0]);
        both.timed([1.0, 2.0, 3.0, 6.0]);
        both.timed([2.0, 2.0, 3.0, 7.0]);
        a.merge(&b);
        assert_eq!(a.summary(), both.summary());
        let total = &a.summary().latency_ms["total"];
        assert_eq!((total.p50, total.max), (6.5, 7.0));
    }
}

//! A policy's action output tensor into an [`Action`]: which steps, which elements, denormalised and clipped.
//!
//! Owns the manifest's reading of the action output: the index path into
//! the leading axes, the chunk step that drives (`first`, `last`, or every
//! step for `play`), which element is which velocity (an axis the policy
//! does not command is exactly 0), the scale and offset, the clip to each
//! axis's range, and the largest raw |velocity| the watchdog judges. Pure: a shape
//! and values in, an action or a one-line error out. Whether the action may
//! move the robot is the control core's decision.

use mobile_vla_core::vocab::Velocity;

use crate::manifest::{ActionOutput, ActionStep};
use crate::PolicyError;

/// A velocity proposal from a policy, already denormalised and clipped per its manifest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Action {
    pub linear_x: f32,
    pub linear_y: f32,
    pub angular_z: f32,
    /// The largest |velocity| after scaling and before the clip (of every
    /// step, for a chunk that plays): what the watchdog judges, so a diverging
    /// model fails over instead of driving at the clip.
    pub raw_max_abs: f32,
    /// For `step: play`: every chunk step (scaled and clipped), to be played
    /// `period_s` apart from the frame's stamp; the fields above are step 0.
    pub chunk: Option<PlayedChunk>,
}

impl Action {
    /// The action as a velocity command (step 0 of a chunk).
    pub fn velocity(&self) -> Velocity {
        Velocity::from_axes([self.linear_x, self.linear_y, self.angular_z].map(f64::from))
    }
}

/// A chunk to play, as the manifest's `play` mode describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayedChunk {
    pub steps: Vec<[f32; 3]>,
    pub period_s: f64,
    pub blend: Option<f64>,
}

/// The chunk rows of an action tensor: where the first starts, how many.
#[derive(Debug)]
pub(crate) struct Steps {
    pub start: usize,
    pub count: usize,
}

/// Applies the index path to a tensor of `shape`, leaving `[T, k]` or `[k]`.
pub(crate) fn pick(shape: &[i64], index: Option<&[i64]>) -> Result<(Steps, usize), String> {
    if shape.is_empty() {
        return Err("is a scalar; an action needs at least [k]".into());
    }
    let lead = shape.len().saturating_sub(2);
    let index: Vec<i64> = index.map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; lead]);
    if index.len() > shape.len() - 1 {
        return Err(format!("has shape {shape:?}: the index path {index:?} leaves no action vector"));
    }
    let mut start = 0usize;
    let mut stride: usize = shape.iter().map(|&d| d as usize).product();
    for (axis, &i) in index.iter().enumerate() {
        let d = shape[axis];
        stride /= d.max(1) as usize;
        let at = if i < 0 { d + i } else { i };
        if at < 0 || at >= d {
            return Err(format!("has shape {shape:?}: index {i} is outside axis {axis} of size {d}"));
        }
        start += at as usize * stride;
    }
    let rest = &shape[index.len()..];
    let (count, width) = match rest {
        [k] => (1, *k as usize),
        [t, k] => (*t as usize, *k as usize),
        _ => return Err(format!("has shape {shape:?}: after the index path {index:?}, {rest:?} is not [T, k] or [k]")),
    };
    if count == 0 || width == 0 {
        return Err(format!("has shape {shape:?}: an empty action"));
    }
    Ok((Steps { start, count }, width))
}

/// The action in output `a.output` of `shape` with `values` (f16 widened to f32).
pub fn decode(a: &ActionOutput, shape: &[i64], values: &[f32]) -> Result<Action, PolicyError> {
    let (steps, width) =
        pick(shape, a.index.as_deref()).map_err(|e| PolicyError::Run(format!("action output '{}' {e}", a.output)))?;
    let row_at = |s: usize| &values[steps.start + s * width..steps.start + (s + 1) * width];
    let rows: Vec<&[f32]> = match a.step {
        ActionStep::First => vec![row_at(0)],
        ActionStep::Last => vec![row_at(steps.count - 1)],
        ActionStep::Play => (0..steps.count).map(row_at).collect(),
    };
    if let Some(bad) = rows.iter().find(|r| r.iter().any(|v| !v.is_finite())) {
        return Err(PolicyError::NonFinite { output: a.output.clone(), values: bad.to_vec() });
    }
    let mut raw_max_abs = 0.0f32;
    let mut clipped_rows = Vec::with_capacity(rows.len());
    for row in rows {
        let mut out = [0.0f32; 3];
        for (k, axis) in a.axes.iter().enumerate() {
            let Some(axis) = axis else { continue };
            let v = *row
                .get(axis.index)
                .ok_or_else(|| PolicyError::Run(format!("action has {width} elements, index {} wanted", axis.index)))?;
            let raw = v * axis.scale + axis.offset;
            raw_max_abs = raw_max_abs.max(raw.abs());
            out[k] = raw.clamp(axis.range[0], axis.range[1]);
        }
        clipped_rows.push(out);
    }
    let first = clipped_rows[0];
    let chunk = (a.step == ActionStep::Play).then(|| PlayedChunk {
        steps: clipped_rows,
        period_s: a.period_s.unwrap_or_default(),
        blend: a.blend,
    });
    Ok(Action { linear_x: first[0], linear_y: first[1], angular_z: first[2], raw_max_abs, chunk })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::AxisMap;

    #[test]
    fn the_index_path_picks_the_chunk_out_of_any_rank() {
        let (s, w) = pick(&[1, 3], None).unwrap();
        assert_eq!((s.start, s.count, w), (0, 1, 3));
        let (s, w) = pick(&[1, 4, 3], None).unwrap();
        assert_eq!((s.start, s.count, w), (0, 4, 3));
        // [batch, history, T, k]: the last history entry.
        let (s, w) = pick(&[1, 2, 4, 3], Some(&[0, -1])).unwrap();
        assert_eq!((s.start, s.count, w), (12, 4, 3));
        let (s, _) = pick(&[2, 5, 3], Some(&[1, 2])).unwrap();
        assert_eq!((s.start, s.count), (15 + 6, 1));
        assert!(pick(&[], None).unwrap_err().contains("scalar"));
        assert!(pick(&[1, 4, 3], Some(&[0, 5])).unwrap_err().contains("outside axis 1"));
        assert!(pick(&[1, 2, 4, 3], Some(&[0])).unwrap_err().contains("not [T, k]"));
    }

    fn output(step: ActionStep) -> ActionOutput {
        let axis = |index, scale| Some(AxisMap { index, scale, offset: 0.0, range: [-1.0, 1.0] });
        ActionOutput {
            output: "actions".into(),
            index: None,
            step,
            period_s: (step == ActionStep::Play).then_some(0.1),
            blend: None,
            axes: [axis(0, 2.0), axis(2, 1.0), axis(1, 1.0)],
        }
    }

    #[test]
    fn elements_are_mapped_scaled_and_clipped_and_the_raw_maximum_is_kept() {
        // [1, 2, 3]: two steps of (x, wz, y).
        let values = [0.3, -0.2, 0.1, 0.9, 0.0, 0.0];
        let a = decode(&output(ActionStep::First), &[1, 2, 3], &values).unwrap();
        assert_eq!((a.linear_x, a.linear_y, a.angular_z), (0.6, 0.1, -0.2));
        assert!((a.raw_max_abs - 0.6).abs() < 1e-6 && a.chunk.is_none());
        let a = decode(&output(ActionStep::Last), &[1, 2, 3], &values).unwrap();
        assert_eq!(a.linear_x, 1.0, "clipped");
        assert!((a.raw_max_abs - 1.8).abs() < 1e-6, "judged before the clip");
        let a = decode(&output(ActionStep::Play), &[1, 2, 3], &values).unwrap();
        let chunk = a.chunk.unwrap();
        assert_eq!(chunk.steps, vec![[0.6, 0.1, -0.2], [1.0, 0.0, 0.0]]);
        assert_eq!(chunk.period_s, 0.1);
    }

    #[test]
    fn an_axis_the_policy_does_not_command_is_exactly_zero_and_bounds_denormalise() {
        let a = ActionOutput {
            axes: [
                Some(AxisMap { index: 0, scale: 1.15, offset: 0.0, range: [-1.15, 1.15] }),
                None,
                Some(AxisMap { index: 1, scale: 1.0, offset: 0.5, range: [-0.5, 1.5] }),
            ],
            ..output(ActionStep::First)
        };
        // A 2-axis head in [-1, 1]: (x, wz).
        let got = decode(&a, &[1, 2], &[0.5, -1.0]).unwrap();
        assert_eq!((got.linear_x, got.linear_y, got.angular_z), (0.575, 0.0, -0.5));
        assert_eq!(got.velocity().y.to_bits(), 0.0f64.to_bits(), "exactly 0, not -0 or a rounding");
        assert!((got.raw_max_abs - 0.575).abs() < 1e-6);
        // An element outside [-1, 1] stays within the axis's bounds: never below -0.5 on angular.z.
        let got = decode(&a, &[1, 2], &[0.0, -3.0]).unwrap();
        assert_eq!(got.angular_z, -0.5);
        assert!((got.raw_max_abs - 2.5).abs() < 1e-6, "the watchdog still sees the raw -2.5");
    }

    #[test]
    fn a_non_finite_step_is_named_with_its_output() {
        let e = decode(&output(ActionStep::Play), &[1, 2, 3], &[0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0]).unwrap_err();
        assert!(matches!(&e, PolicyError::NonFinite { output, .. } if output == "actions"), "{e}");
        assert!(e.to_string().contains("'actions' is not finite: [NaN, 0.0, 0.0]"), "{e}");
    }
}

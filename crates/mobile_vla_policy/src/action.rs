//! A policy's action output tensor into an [`Action`]: which steps, which elements, scaled and clipped.
//!
//! Owns the manifest's reading of the action output: the index path into
//! the leading axes, the chunk step that drives (`first`, `last`, or every
//! step for `play`), which element is which velocity, the scale and the
//! clip, and the largest raw |velocity| the watchdog judges. Pure: a shape
//! and values in, an action or a one-line error out. Whether the action may
//! move the robot is the control core's decision.

use mobile_vla_core::vocab::Velocity;

use crate::manifest::{ActionOutput, ActionStep};
use crate::PolicyError;

/// A velocity proposal from a policy, already scaled and clipped per its manifest.
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
        let scaled = |i: usize, k: usize| -> Result<f32, PolicyError> {
            let v = *row
                .get(i)
                .ok_or_else(|| PolicyError::Run(format!("action has {width} elements, index {i} wanted")))?;
            Ok(v * a.scale[k])
        };
        let raw = [scaled(a.linear_x, 0)?, scaled(a.linear_y, 1)?, scaled(a.angular_z, 2)?];
        raw_max_abs = raw.iter().fold(raw_max_abs, |m, v| m.max(v.abs()));
        clipped_rows.push(std::array::from_fn::<f32, 3, _>(|k| raw[k].clamp(-a.clip[k], a.clip[k])));
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
        ActionOutput {
            output: "actions".into(),
            index: None,
            step,
            period_s: (step == ActionStep::Play).then_some(0.1),
            blend: None,
            linear_x: 0,
            linear_y: 2,
            angular_z: 1,
            scale: [2.0, 1.0, 1.0],
            clip: [1.0, 1.0, 1.0],
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
    fn a_non_finite_step_is_named_with_its_output() {
        let e = decode(&output(ActionStep::Play), &[1, 2, 3], &[0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0]).unwrap_err();
        assert!(matches!(&e, PolicyError::NonFinite { output, .. } if output == "actions"), "{e}");
        assert!(e.to_string().contains("'actions' is not finite: [NaN, 0.0, 0.0]"), "{e}");
    }
}

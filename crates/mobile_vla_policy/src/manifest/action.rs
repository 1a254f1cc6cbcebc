//! What a manifest says of the action output: which steps drive, and which element is which velocity, denormalised how.
//!
//! Owns the `action` object of a manifest file in both its forms and their
//! translation into one [`ActionOutput`]:
//! - the three-axis form (every v1 and earlier v2 manifest):
//!   `linear_x`/`linear_y`/`angular_z` element indices, `scale` and `clip`
//!   for the three;
//! - the named-axis form: `axes` maps any of `linear_x`, `linear_y`,
//!   `angular_z` to its element, with `scale` and `offset`, or `bounds`
//!   `[min, max]` for a head trained on actions mapped to `[-1, 1]`
//!   (RoboVLMs, and the velocity stays within `[min, max]`), and a `clip`;
//!   an axis left out is not commanded (0).
//!
//! Reading the tensor is `crate::action`'s; this module only describes it.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The velocity axes, in the order of [`ActionOutput::axes`].
pub const AXES: [&str; 3] = mobile_vla_core::vocab::Velocity::AXES;
/// Their keys in a manifest, in the same order.
const KEYS: [&str; 3] = ["linear_x", "linear_y", "angular_z"];

/// Which step of an action chunk drives the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStep {
    First,
    Last,
    /// Every step, in time: step `k` at `stamp + k * period_s` from the frame's stamp.
    Play,
}

/// One commanded axis: `velocity = element * scale + offset`, then clamped to `range`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AxisMap {
    /// The element of the action vector.
    pub index: usize,
    pub scale: f32,
    pub offset: f32,
    /// `[lo, hi]`: the velocities this axis may command, after denormalisation:
    /// `±clip` (the team clipped to about 1.15), within `bounds` where given
    /// (a forward-only axis never reverses, whatever the element).
    pub range: [f32; 2],
}

impl AxisMap {
    /// The largest |velocity| this axis may command.
    pub fn max_abs(&self) -> f32 {
        self.range[0].abs().max(self.range[1].abs())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ActionFile")]
pub struct ActionOutput {
    pub output: String,
    /// Indices into the leading axes, leaving `[T, k]` (or `[k]`); negative
    /// counts from the end. Default: 0 for every axis before the last two.
    pub index: Option<Vec<i64>>,
    /// Which of the `T` chunk steps drives (`first`, `last`), or `play` them all in time.
    pub step: ActionStep,
    /// With `play`: seconds between chunk steps (the rate the policy was trained at).
    pub period_s: Option<f64>,
    /// With `play`: blend overlapping chunks with ACT's temporal-ensembling
    /// weights `exp(-m * i)` (`i = 0` the oldest chunk); absent: a new chunk replaces the old.
    pub blend: Option<f64>,
    /// linear.x, linear.y, angular.z: where each comes from; `None`: not commanded (0).
    pub axes: [Option<AxisMap>; 3],
}

impl ActionOutput {
    /// Each axis's largest |velocity| (0 for an axis the policy does not command).
    pub fn clip(&self) -> [f32; 3] {
        self.axes.map(|a| a.map_or(0.0, |a| a.max_abs()))
    }

    /// How many elements the action vector needs.
    pub fn width(&self) -> usize {
        self.axes.iter().flatten().map(|a| a.index + 1).max().unwrap_or(0)
    }

    /// The axes this policy commands, by name.
    pub fn commanded(&self) -> Vec<&'static str> {
        AXES.iter().zip(&self.axes).filter(|(_, a)| a.is_some()).map(|(n, _)| *n).collect()
    }

    /// The axes it leaves at 0, by name.
    pub fn absent(&self) -> Vec<&'static str> {
        AXES.iter().zip(&self.axes).filter(|(_, a)| a.is_none()).map(|(n, _)| *n).collect()
    }
}

fn first() -> ActionStep {
    ActionStep::First
}

/// The `action` object as a file has it (either form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionFile {
    output: String,
    #[serde(default)]
    index: Option<Vec<i64>>,
    #[serde(default = "first")]
    step: ActionStep,
    #[serde(default)]
    period_s: Option<f64>,
    #[serde(default)]
    blend: Option<f64>,
    #[serde(default)]
    linear_x: Option<usize>,
    #[serde(default)]
    linear_y: Option<usize>,
    #[serde(default)]
    angular_z: Option<usize>,
    #[serde(default)]
    scale: Option<[f32; 3]>,
    #[serde(default)]
    clip: Option<[f32; 3]>,
    #[serde(default)]
    axes: Option<BTreeMap<AxisName, AxisFile>>,
}

/// A key of `axes`; its discriminant indexes [`AXES`] and [`KEYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AxisName {
    LinearX,
    LinearY,
    AngularZ,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFile {
    index: usize,
    #[serde(default)]
    scale: Option<f32>,
    #[serde(default)]
    offset: Option<f32>,
    /// `[min, max]`: the element is in [-1, 1] and maps linearly onto it.
    #[serde(default)]
    bounds: Option<[f32; 2]>,
    #[serde(default)]
    clip: Option<f32>,
}

impl TryFrom<ActionFile> for ActionOutput {
    type Error = String;

    fn try_from(f: ActionFile) -> Result<Self, String> {
        let three = [f.linear_x, f.linear_y, f.angular_z];
        let axes = match f.axes {
            Some(named) => {
                if three.iter().any(Option::is_some) || f.scale.is_some() || f.clip.is_some() {
                    return Err("give either axes, or linear_x/linear_y/angular_z with scale and clip, not both".into());
                }
                named_axes(named)?
            }
            None => {
                let (scale, clip) = (f.scale.ok_or("missing field `scale`")?, f.clip.ok_or("missing field `clip`")?);
                let mut axes = [None; 3];
                for (k, (name, index)) in KEYS.iter().zip(three).enumerate() {
                    let index = index.ok_or_else(|| format!("missing field `{name}` (or give axes)"))?;
                    axes[k] = Some(AxisMap { index, scale: scale[k], offset: 0.0, range: [-clip[k], clip[k]] });
                }
                axes
            }
        };
        for (name, a) in AXES.iter().zip(&axes) {
            let Some(a) = a else { continue };
            let [lo, hi] = a.range;
            if ![a.scale, a.offset, lo, hi].iter().all(|v| v.is_finite()) || lo > hi || a.scale < 0.0 {
                return Err(format!("{name}: scale, offset and clip must be finite, scale and clip >= 0"));
            }
        }
        Ok(ActionOutput { output: f.output, index: f.index, step: f.step, period_s: f.period_s, blend: f.blend, axes })
    }
}

fn named_axes(named: BTreeMap<AxisName, AxisFile>) -> Result<[Option<AxisMap>; 3], String> {
    if named.is_empty() {
        return Err("axes: name at least one of linear_x, linear_y, angular_z".into());
    }
    let mut axes = [None; 3];
    for (name, a) in named {
        let key = KEYS[name as usize];
        if a.clip.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
            return Err(format!("axes.{key}.clip: must be finite and >= 0"));
        }
        let (scale, offset, range) = match (a.bounds, a.scale, a.offset) {
            (Some([min, max]), None, None) => {
                // A range without 0 would drive the robot on every command it gives.
                if !(min.is_finite() && max.is_finite() && min <= 0.0 && 0.0 <= max && min < max) {
                    return Err(format!("axes.{key}.bounds: [{min}, {max}] must be finite, with min <= 0 <= max"));
                }
                // The velocity stays within the bounds (and within ±clip, where given).
                let range = a.clip.map_or([min, max], |c| [min.max(-c), max.min(c)]);
                ((max - min) / 2.0, (max + min) / 2.0, range)
            }
            (Some(_), _, _) => return Err(format!("axes.{key}: give bounds, or scale and offset, not both")),
            (None, scale, offset) => {
                let clip = a.clip.ok_or_else(|| {
                    format!("axes.{key}.clip: required with scale and offset (the largest |velocity| this axis may command)")
                })?;
                (scale.unwrap_or(1.0), offset.unwrap_or(0.0), [-clip, clip])
            }
        };
        axes[name as usize] = Some(AxisMap { index: a.index, scale, offset, range });
    }
    Ok(axes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ActionOutput, String> {
        serde_json::from_str::<ActionOutput>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn the_three_axis_form_loads_as_before() {
        let a = parse(r#"{"output": "a", "linear_x": 0, "linear_y": 2, "angular_z": 1, "scale": [1, 2, 3], "clip": [1.15, 1.15, 1.15]}"#)
            .unwrap();
        assert_eq!(a.axes[1], Some(AxisMap { index: 2, scale: 2.0, offset: 0.0, range: [-1.15, 1.15] }));
        assert_eq!((a.width(), a.absent().len()), (3, 0));
        assert!(parse(r#"{"output": "a", "linear_x": 0, "linear_y": 1, "scale": [1, 1, 1], "clip": [1, 1, 1]}"#)
            .unwrap_err()
            .contains("angular_z"));
    }

    #[test]
    fn two_named_axes_with_robovlms_bounds_leave_the_third_at_zero() {
        let a = parse(
            r#"{"output": "a", "axes": {"linear_x": {"index": 0, "bounds": [-1.15, 1.15]},
                                                 "angular_z": {"index": 1, "bounds": [-0.5, 1.5]}}}"#,
        )
        .unwrap();
        assert_eq!(a.axes[0], Some(AxisMap { index: 0, scale: 1.15, offset: 0.0, range: [-1.15, 1.15] }));
        // Asymmetric bounds: the velocity stays within them (never -1.5 on this axis).
        assert_eq!(a.axes[2], Some(AxisMap { index: 1, scale: 1.0, offset: 0.5, range: [-0.5, 1.5] }));
        assert_eq!(a.axes[1], None);
        assert_eq!(
            (a.commanded(), a.absent(), a.width(), a.clip()),
            (vec!["linear.x", "angular.z"], vec!["linear.y"], 2, [1.15, 0.0, 1.5])
        );
    }

    #[test]
    fn a_named_axis_needs_a_clip_or_bounds_and_the_forms_do_not_mix() {
        let e = parse(r#"{"output": "a", "axes": {"linear_y": {"index": 0, "scale": 1.15}}}"#).unwrap_err();
        assert!(e.contains("axes.linear_y.clip"), "{e}");
        let e = parse(r#"{"output": "a", "linear_x": 0, "axes": {"linear_y": {"index": 0, "clip": 1}}}"#).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = parse(r#"{"output": "a", "axes": {"linear_y": {"index": 0, "bounds": [1, -1]}}}"#).unwrap_err();
        assert!(e.contains("min <= 0 <= max"), "{e}");
        // A range the velocity could never leave for zero.
        let e = parse(r#"{"output": "a", "axes": {"linear_x": {"index": 0, "bounds": [0.2, 1.0]}}}"#).unwrap_err();
        assert!(e.contains("axes.linear_x.bounds: [0.2, 1]"), "{e}");
        let e = parse(r#"{"output": "a", "axes": {"yaw": {"index": 0, "clip": 1}}}"#).unwrap_err();
        assert!(e.contains("linear_x"), "{e}");
        assert!(parse(r#"{"output": "a", "axes": {}}"#).unwrap_err().contains("at least one"));
        let e = parse(r#"{"output": "a", "axes": {"linear_y": {"index": 0, "bounds": [-1, 1], "clip": -1}}}"#);
        assert!(e.unwrap_err().contains("axes.linear_y.clip"));
    }

    #[test]
    fn a_clip_beside_bounds_narrows_them() {
        let a = parse(r#"{"output": "a", "axes": {"linear_x": {"index": 0, "bounds": [0, 2], "clip": 0.5}}}"#).unwrap();
        assert_eq!(a.axes[0].unwrap().range, [0.0, 0.5]);
    }
}

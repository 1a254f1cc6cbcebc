//! The rules between parameters: each value can be within its own bounds and still make no sense beside another.
//!
//! Owns the cross-parameter rules (the hard timeout at least the deadline,
//! the camera's size limits, the reserved source name, ...) and the one rule
//! between the parameters and the policies' manifests: the watchdog's bound
//! on a proposed action must be above every manifest's clip. The manifests'
//! clips are read once at start and passed in as [`ActionClip`]s; this module
//! never reads a file.

use super::{err, Config, ConfigError};

/// The largest side of a frame the node may be told to accept.
const MAX_PIXELS_PER_SIDE: u32 = 16_384;

/// One policy manifest's action clip, as read at start.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionClip {
    /// The manifest, for the message.
    pub manifest: String,
    /// Its `action.clip`: (linear.x, linear.y, angular.z).
    pub clip: [f32; 3],
}

/// The rules between parameters.
pub(super) fn between(c: &Config) -> Result<(), ConfigError> {
    let (w, h) = (c.camera.max_width, c.camera.max_height);
    if w == 0 || h == 0 || w > MAX_PIXELS_PER_SIDE || h > MAX_PIXELS_PER_SIDE {
        return Err(err(
            "camera.max_width/max_height",
            format!("{w}x{h}"),
            format!("pixel counts in 1..={MAX_PIXELS_PER_SIDE}"),
        ));
    }
    if c.mux.sources.contains_key("policy") {
        return Err(err("mux.sources.policy", "{...}", "another name: 'policy' is the autonomy source"));
    }
    let wd = &c.watchdog;
    if wd.hard_timeout_s < wd.deadline_s {
        return Err(err("watchdog.hard_timeout_s", wd.hard_timeout_s, "a timeout >= watchdog.deadline_s"));
    }
    if wd.max_cooldown_s < wd.cooldown_s {
        return Err(err("watchdog.max_cooldown_s", wd.max_cooldown_s, "a value >= watchdog.cooldown_s"));
    }
    if wd.window_misses > wd.window {
        return Err(err("watchdog.window_misses", wd.window_misses, "at most watchdog.window"));
    }
    Ok(())
}

/// `watchdog.max_abs_action` judges the raw action, before the manifest's
/// clip: at or below the clip it would fail the policy on actions the model
/// is documented to produce, and the clip would never act.
pub fn check_action_range(config: &Config, clips: &[ActionClip]) -> Result<(), ConfigError> {
    let max_abs = config.watchdog.max_abs_action;
    for c in clips {
        if c.clip.iter().any(|v| max_abs <= *v as f64) {
            return Err(err(
                "watchdog.max_abs_action",
                max_abs,
                format!(
                    "a value above every action.clip {:?} of {}: the invalid-output check judges the action \
                     before that clip, so at or below it the clip never acts",
                    c.clip, c.manifest
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_bound_must_be_above_every_clip() {
        let clips = [ActionClip { manifest: "models/hybrid.json".into(), clip: [1.15, 1.15, 1.15] }];
        let mut c = Config::default();
        assert_eq!(check_action_range(&c, &clips), Ok(()));
        c.watchdog.max_abs_action = 1.0;
        let e = check_action_range(&c, &clips).unwrap_err();
        assert_eq!(e.key, "watchdog.max_abs_action");
        assert!(e.allowed.contains("1.15") && e.allowed.contains("models/hybrid.json"), "{e}");
    }
}

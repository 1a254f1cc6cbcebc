//! The node's configuration as ROS parameters: names, values, descriptors,
//! and which of them may change while it runs.
//!
//! Owns the flat view of the [`Config`] (`limits.max_velocity`,
//! `mux.sources.joystick.timeout_s`, ...) that `ros2 param list/get/describe`
//! shows, every parameter's descriptor (description, read-only, range), and
//! setting: a change is applied to a copy of the parameters and validated
//! exactly as at start-up ([`Config::from_params`] plus the bound against the
//! manifests' clips);
//! if anything is wrong nothing changes and the one-line reason names the key.
//! Read-only parameters (models, providers, topics: what only a restart can
//! change) refuse every set, and so does a set the running node vetoes (one
//! that would weaken an engaged lock). A refused set leaves nothing half
//! applied: the next set is judged against the parameters as they were. It
//! never talks to ROS: the shell turns requests into calls here and the
//! accepted [`Config`] into the cores' settings.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::schema::{self, Range};
use crate::config::{check_action_range, ActionClip, Config};

#[derive(Debug, Clone, PartialEq)]
pub struct Descriptor {
    pub description: String,
    pub read_only: bool,
    pub range: Option<Range>,
}

/// One accepted change.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub name: String,
    pub old: Value,
    pub new: Value,
}

pub struct ParamTable {
    config: Config,
    flat: BTreeMap<String, Value>,
    /// The policies' action clips, read at start: `watchdog.max_abs_action` must stay above them.
    clips: Vec<ActionClip>,
}

fn runtime(name: &str) -> bool {
    schema::param(name).is_some_and(|p| p.runtime)
}

impl ParamTable {
    pub fn new(config: Config, clips: Vec<ActionClip>) -> Self {
        Self { flat: config.flat(), config, clips }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every parameter, sorted by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.flat.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.flat.get(name)
    }

    pub fn descriptor(&self, name: &str) -> Option<Descriptor> {
        self.flat.get(name)?;
        let p = schema::param(name)?;
        let mut description = p.description.to_string();
        if !p.runtime {
            description.push_str(" (read-only: set at start)");
        }
        Some(Descriptor { description, read_only: !p.runtime, range: p.runtime.then(|| p.rule.range()).flatten() })
    }

    /// Applies `changes` together, or none of them: the first problem is the
    /// one-line reason (unknown or read-only name, wrong type, a value start-up
    /// would refuse). Returns what changed.
    pub fn set(&mut self, changes: &[(String, Value)]) -> Result<Vec<Change>, String> {
        self.set_unless(changes, |_| None)
    }

    /// As [`set`](Self::set), and refused too when `veto` gives a reason
    /// against the new configuration (what the running node's state forbids,
    /// such as weakening an engaged lock). A value keeps its parameter's
    /// declared type: an integer set on a double parameter (`ros2 param set
    /// /mobile_vla output.rate_hz 10`) is stored, reported and announced as
    /// the double 10.0.
    pub fn set_unless(
        &mut self,
        changes: &[(String, Value)],
        veto: impl Fn(&Config) -> Option<String>,
    ) -> Result<Vec<Change>, String> {
        let mut next = self.flat.clone();
        for (name, value) in changes {
            let Some(old) = self.flat.get(name) else {
                return Err(format!("parameter '{name}' does not exist (see ros2 param list)"));
            };
            if !runtime(name) {
                return Err(format!("parameter '{name}' is read-only: it is set at start (restart the node)"));
            }
            // A double parameter takes an integer (ros2 param set x 1), as the parameters file does.
            if old.is_number() != value.is_number() && !(old.is_array() && value.is_array()) {
                return Err(format!("invalid parameter '{name}' = {value}: expected a value like {old}"));
            }
            next.insert(name.clone(), value.clone());
        }
        let config = Config::from_params(&next).map_err(|e| e.to_string())?;
        check_action_range(&config, &self.clips).map_err(|e| e.to_string())?;
        if let Some(why) = veto(&config) {
            return Err(format!("refused: {why}"));
        }
        let next = config.flat();
        let mut applied = Vec::new();
        for (name, _) in changes {
            let (old, new) = (&self.flat[name], &next[name]);
            if old != new && applied.iter().all(|c: &Change| c.name != *name) {
                applied.push(Change { name: name.clone(), old: old.clone(), new: new.clone() });
            }
        }
        self.flat = next;
        self.config = config;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> ParamTable {
        ParamTable::new(Config::default(), Vec::new())
    }

    #[test]
    fn every_parameter_is_listed_flat_with_its_value() {
        let t = table();
        let names: Vec<&str> = t.names().collect();
        for want in
            ["limits.max_velocity", "mux.sources.joystick.timeout_s", "policy.hybrid.tensorrt.fp16", "use_sim_time"]
        {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        assert_eq!(t.get("limits.max_velocity"), Some(&json!([0.5, 0.5, 1.0])));
        assert_eq!(t.get("mux.sources.joystick.priority"), Some(&json!(100)));
    }

    #[test]
    fn models_providers_and_topics_are_read_only_limits_and_timeouts_are_not() {
        let t = table();
        for ro in [
            "policy.hybrid.manifest",
            "policy.pure.providers",
            "camera.topic",
            "mux.sources.joystick.topic",
            "use_sim_time",
        ] {
            assert!(t.descriptor(ro).unwrap().read_only, "{ro}");
        }
        for rw in [
            "limits.max_accel",
            "mux.locks.e_stop.priority",
            "watchdog.deadline_s",
            "camera.max_age_s",
            "output.rate_hz",
        ] {
            let d = t.descriptor(rw).unwrap();
            assert!(!d.read_only && !d.description.is_empty(), "{rw}: {d:?}");
        }
        assert_eq!(t.descriptor("watchdog.deadline_s").unwrap().range, Some(Range::Float { from: 0.0, to: 3600.0 }));
        assert_eq!(t.descriptor("mux.autonomy_priority").unwrap().range, Some(Range::Integer { from: 0, to: 255 }));
    }

    #[test]
    fn a_valid_change_is_applied_and_reported() {
        let mut t = table();
        let changes = t.set(&[("limits.max_velocity".into(), json!([0.2, 0.2, 0.4]))]).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(t.config().limits.max_velocity, [0.2, 0.2, 0.4]);
        // An integer for a double, as `ros2 param set` sends it.
        t.set(&[("camera.max_age_s".into(), json!(1))]).unwrap();
        assert_eq!(t.config().camera.max_age_s, 1.0);
    }

    #[test]
    fn an_integer_set_on_a_double_parameter_stays_a_double() {
        let mut t = table();
        let changes = t.set(&[("output.rate_hz".into(), json!(10))]).unwrap();
        assert_eq!(changes[0].new, json!(10.0));
        assert!(t.get("output.rate_hz").unwrap().is_f64(), "{:?}", t.get("output.rate_hz"));
        t.set(&[("limits.max_velocity".into(), json!([1, 1, 2]))]).unwrap();
        assert!(t.get("limits.max_velocity").unwrap().as_array().unwrap().iter().all(Value::is_f64));
        // Integers stay integers.
        t.set(&[("mux.sources.joystick.priority".into(), json!(90))]).unwrap();
        assert!(t.get("mux.sources.joystick.priority").unwrap().is_u64());
    }

    #[test]
    fn a_veto_refuses_the_whole_set_with_its_reason() {
        let mut t = table();
        let before = t.config().clone();
        let e = t.set_unless(&[("mux.locks.e_stop.priority".into(), json!(50))], |_| Some("lock engaged".into()));
        assert_eq!(e.unwrap_err(), "refused: lock engaged");
        assert_eq!(t.config(), &before);
        assert_eq!(t.get("mux.locks.e_stop.priority"), Some(&json!(255)));
    }

    #[test]
    fn a_refused_change_names_the_key_and_changes_nothing() {
        let mut t = table();
        let before = t.config().clone();
        let cases = [
            (vec![("limits.max_velocity", json!([0.2, -1.0, 0.4]))], "'limits.max_velocity'"),
            (vec![("watchdog.hard_timeout_s", json!(0.01))], "'watchdog.hard_timeout_s'"),
            (vec![("policy.hybrid.manifest", json!("other.json"))], "read-only"),
            (vec![("limits.nothing", json!(1))], "does not exist"),
            (vec![("output.rate_hz", json!("fast"))], "'output.rate_hz'"),
            // Atomically: a good change with a bad one applies neither.
            (
                vec![("limits.deadband", json!([0.01, 0.01, 0.01])), ("camera.max_age_s", json!(-1.0))],
                "'camera.max_age_s'",
            ),
        ];
        for (changes, want) in cases {
            let changes: Vec<(String, Value)> = changes.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let e = t.set(&changes).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
            assert!(!e.contains('\n'), "one line: {e}");
            assert_eq!(t.config(), &before);
        }
    }

    #[test]
    fn the_bound_against_the_manifests_clips_applies_too() {
        let clips = vec![ActionClip { manifest: "models/hybrid.json".into(), clip: [1.15, 1.15, 1.15] }];
        let mut t = ParamTable::new(Config::default(), clips);
        let e = t.set(&[("watchdog.max_abs_action".into(), json!(1.0))]).unwrap_err();
        assert!(e.contains("action.clip"), "{e}");
    }
}

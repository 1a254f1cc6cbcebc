//! The node's configuration as ROS parameters: names, values, descriptors,
//! and which of them may change while it runs.
//!
//! Owns the flat view of the [`Config`] (`limits.max_velocity`,
//! `mux.sources.joystick.timeout_s`, ...) that `ros2 param list/get/describe`
//! shows, every parameter's descriptor (description, read-only, range), and
//! setting: a change is applied to a copy of the parameters and validated
//! exactly as at start-up ([`Config::from_params`] plus the node's own checks);
//! if anything is wrong nothing changes and the one-line reason names the key.
//! Read-only parameters (models, providers, topics: what only a restart can
//! change) refuse every set, and so does a set the running node vetoes (one
//! that would weaken an engaged lock). A refused set leaves nothing half
//! applied: the next set is judged against the parameters as they were. It never talks to ROS: the shell turns requests
//! into calls here and the accepted [`Config`] into the cores' settings.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::{Config, ConfigError};

/// A numeric range, as `rcl_interfaces/ParameterDescriptor` carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    Float { from: f64, to: f64 },
    Integer { from: i64, to: i64 },
}

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

/// The node's own checks beyond the configuration's (e.g. the watchdog's
/// bound against the manifests' clips).
pub type Check = Box<dyn Fn(&Config) -> Result<(), ConfigError> + Send>;

pub struct ParamTable {
    config: Config,
    flat: BTreeMap<String, Value>,
    check: Check,
}

/// What may change while the node runs: the output stage, the mux, the
/// watchdog's thresholds, freshness and rates. Everything else is read-only.
fn runtime(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["limits", _] => true,
        ["mux", "autonomy_priority"] => true,
        ["mux", "sources" | "locks", _, "priority" | "timeout_s"] => true,
        ["watchdog", k] => !matches!(*k, "fallback_enabled" | "lazy_fallback" | "start_timeout_s"),
        ["camera", "max_age_s" | "max_future_s"] => true,
        ["output", "rate_hz"] | ["policy", "command_timeout_s"] | ["instruction", "max_bytes"] => true,
        _ => false,
    }
}

/// The description of every parameter (its section's, for the per-source and per-policy ones).
fn description(name: &str) -> &'static str {
    let parts: Vec<&str> = name.split('.').collect();
    let tail = parts.last().copied().unwrap_or("");
    match (parts.first().copied().unwrap_or(""), parts.get(1).copied(), tail) {
        ("camera", _, "topic") => "base image topic",
        ("camera", _, "transport") => "raw (sensor_msgs/Image) or compressed (<topic>/compressed)",
        ("camera", _, "max_age_s") => "older frames never drive the robot (s)",
        ("camera", _, "max_future_s") => "frames stamped further ahead of the node's clock are refused (s)",
        ("camera", _, "max_width" | "max_height") => "larger frames are refused before decoding (pixels)",
        ("camera", _, "jpeg_scaling") => "full (every pixel, exact with the processors) or reduced (DCT-scaled decode)",
        ("camera", _, "resampling") => "exact (Pillow's arithmetic) or simd (8-bit SIMD, within two grey levels)",
        ("instruction", _, "topic") => "natural-language task topic",
        ("instruction", _, "max_bytes") => "longer instructions are refused",
        ("output", _, "topic") => "velocity command output",
        ("output", _, "stamped") => "publish TwistStamped instead of Twist",
        ("output", _, "frame_id") => "frame of stamped commands",
        ("output", _, "rate_hz") => "fixed command rate (Hz)",
        ("policy", Some("onnxruntime_library"), _) => "libonnxruntime.so to load (empty: $ORT_DYLIB_PATH)",
        ("policy", Some("command_timeout_s"), _) => "a policy action older than this stops driving (s)",
        ("policy", _, "manifest") => "model manifest (relative: to the package share directory)",
        ("policy", _, "providers") => "execution providers, in order (tensorrt, cuda, cpu)",
        ("policy", _, "require_provider") => "refuse the model unless the first provider gets min_provider_share of it",
        ("policy", _, "min_provider_share") => "share of graph nodes the first provider must get",
        ("policy", _, "cpu_threads") => "CPU intra-op threads",
        ("policy", _, "device_id") => "GPU index",
        ("policy", Some(_), _) => "TensorRT option (see the README)",
        ("watchdog", _, "deadline_s") => "per-frame budget (s)",
        ("watchdog", _, "consecutive_misses") => "this many late results in a row fail the policy over",
        ("watchdog", _, "window_misses") => "this many late results of the last `window` fail it over",
        ("watchdog", _, "window") => "results counted for window_misses",
        ("watchdog", _, "hard_timeout_s") => "a run past this is cancelled as a hang (s)",
        ("watchdog", _, "max_abs_action") => "a larger proposed |velocity| (before the clip) is invalid output",
        ("watchdog", _, "cooldown_s") => "a failed policy rests this long before probing (s)",
        ("watchdog", _, "max_cooldown_s") => "the cool-down doubles up to this after repeated failures (s)",
        ("watchdog", _, "recovery_successes") => "good probe results in a row that restore a policy",
        ("watchdog", _, "stable_after_s") => "healthy this long resets the cool-down (s)",
        ("watchdog", _, "start_timeout_s") => {
            "at start, the fallback may drive after this if the hybrid still loads (s)"
        }
        ("watchdog", _, "fallback_enabled") => "use the pure policy as fallback",
        ("watchdog", _, "lazy_fallback") => "load the fallback only when first needed",
        ("mux", Some("autonomy_priority"), _) => "priority of the policy's commands",
        ("mux", Some("sources"), "topic") => "command source topic (Twist or TwistStamped)",
        ("mux", Some("sources"), "priority") => "higher wins",
        ("mux", Some("sources"), "timeout_s") => "silence for this long hands control back (s)",
        ("mux", Some("sources"), "stamped") => "TwistStamped instead of Twist",
        ("mux", Some("locks"), "topic") => "std_msgs/Bool lock topic (true = engaged)",
        ("mux", Some("locks"), "priority") => "silences every source whose priority is not above it",
        ("mux", Some("locks"), "timeout_s") => "no message for this long engages the lock (0: never)",
        ("limits", _, "max_velocity") => "per-axis limits [linear.x, linear.y, angular.z] (m/s, m/s, rad/s)",
        ("limits", _, "max_accel") => "per-axis acceleration limits, away from zero (0: unlimited)",
        ("limits", _, "max_decel") => "per-axis deceleration limits, towards zero (0: unlimited)",
        ("limits", _, "deadband") => "smaller targets count as zero",
        ("limits", _, "scale_velocities") => "scale all axes together while one is ramp-limited",
        ("use_sim_time", _, _) => "follow /clock (set at start)",
        ("managed", _, _) => "a managed (lifecycle) node: unconfigured until ~/change_state configures it",
        _ => "",
    }
}

/// The range `validate` enforces, for the numeric scalars that have one.
fn range(name: &str, value: &Value) -> Option<Range> {
    let tail = name.rsplit('.').next().unwrap_or(name);
    if !value.is_number() {
        return None;
    }
    Some(match tail {
        "priority" | "autonomy_priority" => Range::Integer { from: 0, to: 255 },
        "consecutive_misses" | "window_misses" | "window" | "recovery_successes" => {
            Range::Integer { from: 0, to: 10_000 }
        }
        "max_bytes" => Range::Integer { from: 1, to: 1 << 20 },
        "max_future_s" => Range::Float { from: 0.0, to: 1.0 },
        "rate_hz" => Range::Float { from: 0.0, to: 1000.0 },
        "max_abs_action" => Range::Float { from: 0.0, to: 1e6 },
        t if t.ends_with("_s") => Range::Float { from: 0.0, to: 3600.0 },
        _ => return None,
    })
}

/// `{"a": {"b": 1}}` -> `a.b = 1` (arrays stay values: ROS array parameters).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The flat view of `config`: every value in its declared type.
fn flat(config: &Config) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    flatten("", &serde_json::to_value(config).expect("the configuration serialises"), &mut flat);
    flat
}

impl ParamTable {
    pub fn new(config: Config, check: Check) -> Self {
        Self { flat: flat(&config), config, check }
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
        let value = self.flat.get(name)?;
        let read_only = !runtime(name);
        let mut description = description(name).to_string();
        if read_only {
            description.push_str(if description.is_empty() { "read-only" } else { " (read-only: set at start)" });
        }
        Some(Descriptor { description, read_only, range: if read_only { None } else { range(name, value) } })
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
        (self.check)(&config).map_err(|e| e.to_string())?;
        if let Some(why) = veto(&config) {
            return Err(format!("refused: {why}"));
        }
        let next = flat(&config);
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
        ParamTable::new(Config::default(), Box::new(|_| Ok(())))
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
    fn the_nodes_own_checks_apply_too() {
        let mut t = ParamTable::new(
            Config::default(),
            Box::new(|c| {
                if c.watchdog.max_abs_action <= 1.15 {
                    Err(ConfigError {
                        key: "watchdog.max_abs_action".into(),
                        value: c.watchdog.max_abs_action.to_string(),
                        allowed: "a value above every action.clip".into(),
                    })
                } else {
                    Ok(())
                }
            }),
        );
        let e = t.set(&[("watchdog.max_abs_action".into(), json!(1.0))]).unwrap_err();
        assert!(e.contains("action.clip"), "{e}");
    }
}

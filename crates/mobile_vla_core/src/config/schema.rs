//! Every parameter's description, bounds and whether it may change while the node runs: one table.
//!
//! Owns [`PARAMS`]: for each parameter (by its full name, `*` standing for a
//! policy, source or lock name) what `ros2 param describe` says of it, whether
//! `ros2 param set` may change it, and the [`Rule`] its value must meet, which
//! is also the range the descriptor reports. Validation at start and at every
//! set, and every descriptor, are read from here; nothing restates a bound.
//! The rules between parameters (one timeout at least another, ...) are
//! `checks`'s.

use serde_json::Value;

use super::{err, ConfigError};

/// Durations: every one must convert to a `Duration` and mean something on a robot.
pub const MAX_SECONDS: f64 = 3600.0;
/// Velocities (m/s, rad/s) and their rates.
pub const MAX_RATE: f64 = 100.0;
/// Counts of runs (misses, windows, probes).
pub const MAX_COUNT: i64 = 10_000;

/// A numeric range, as `rcl_interfaces/ParameterDescriptor` carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    Float { from: f64, to: f64 },
    Integer { from: i64, to: i64 },
}

/// What a parameter's value must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Anything of the parameter's type.
    Any,
    /// A duration > 0 and at most an hour.
    Seconds,
    /// 0 (never) or a duration > 0 and at most an hour.
    ZeroOrSeconds,
    /// A finite number in `[min, max]`, or `(min, max]` when `open`.
    Float {
        min: f64,
        max: f64,
        open: bool,
        allowed: &'static str,
    },
    Integer {
        min: i64,
        max: i64,
        allowed: &'static str,
    },
    /// A valid ROS topic name.
    Topic,
    /// Three per-axis numbers in `[0, MAX_RATE]`, zero allowed or not.
    Axes {
        zero: bool,
    },
    /// A non-empty list.
    NonEmpty {
        allowed: &'static str,
    },
}

impl Rule {
    /// The range `ros2 param describe` shows.
    pub fn range(self) -> Option<Range> {
        match self {
            Rule::Seconds | Rule::ZeroOrSeconds => Some(Range::Float { from: 0.0, to: MAX_SECONDS }),
            Rule::Float { min, max, .. } => Some(Range::Float { from: min, to: max }),
            Rule::Integer { min, max, .. } => Some(Range::Integer { from: min, to: max }),
            Rule::Any | Rule::Topic | Rule::Axes { .. } | Rule::NonEmpty { .. } => None,
        }
    }

    fn check(self, key: &str, v: &Value) -> Result<(), ConfigError> {
        let number = || v.as_f64().unwrap_or(f64::NAN);
        let ok = match self {
            Rule::Any => true,
            Rule::Seconds => seconds(number()),
            Rule::ZeroOrSeconds => number() == 0.0 || seconds(number()),
            Rule::Float { min, max, open, .. } => {
                let x = number();
                x.is_finite() && x <= max && if open { x > min } else { x >= min }
            }
            Rule::Integer { min, max, .. } => v.as_i64().is_some_and(|n| (min..=max).contains(&n)),
            Rule::Topic => v.as_str().is_some_and(topic_name),
            Rule::Axes { zero } => v.as_array().is_some_and(|a| {
                a.iter().all(|x| {
                    let x = x.as_f64().unwrap_or(f64::NAN);
                    x.is_finite() && (0.0..=MAX_RATE).contains(&x) && (zero || x != 0.0)
                })
            }),
            Rule::NonEmpty { .. } => v.as_array().is_some_and(|a| !a.is_empty()),
        };
        if ok {
            return Ok(());
        }
        let allowed = match self {
            Rule::Any => "",
            Rule::Seconds => "a duration > 0 and <= 3600 s",
            Rule::ZeroOrSeconds => "0 (never expires) or a duration in (0, 3600] s",
            Rule::Float { allowed, .. } | Rule::Integer { allowed, .. } | Rule::NonEmpty { allowed } => allowed,
            Rule::Topic => "a valid ROS topic name ([A-Za-z_~/][A-Za-z0-9_/]*)",
            Rule::Axes { zero: true } => "three numbers in [0, 100] (0 = unlimited)",
            Rule::Axes { zero: false } => "three numbers in (0, 100]",
        };
        let value = match v {
            Value::String(s) => format!("\"{s}\""),
            Value::Array(a) => format!("{:?}", a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect::<Vec<_>>()),
            // As Rust prints a float (-5, not -5.0), like the bound it is compared with.
            Value::Number(n) if n.is_f64() => number().to_string(),
            other => other.to_string(),
        };
        Err(err(key, value, allowed))
    }
}

fn seconds(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= MAX_SECONDS
}

/// ROS topic names: letters, digits, `_`, `/`, `~`; not empty; no `//`.
fn topic_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains("//")
        && !name.ends_with('/')
        && !name.chars().next().is_some_and(|c| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '~'))
}

/// One parameter: its full name (`*` is one name segment), description, whether it may change at runtime, rule.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub key: &'static str,
    pub description: &'static str,
    pub runtime: bool,
    pub rule: Rule,
}

const fn p(key: &'static str, description: &'static str, runtime: bool, rule: Rule) -> Param {
    Param { key, description, runtime, rule }
}

const RUNTIME: bool = true;
const AT_START: bool = false;
const PRIORITY: Rule = Rule::Integer { min: 0, max: 255, allowed: "a priority in 0..=255" };
const COUNT: Rule = Rule::Integer { min: 0, max: MAX_COUNT, allowed: "a count in 0..=10000" };
const TENSORRT: &str = "TensorRT option (see the README)";

/// Every parameter of the node.
pub const PARAMS: &[Param] = &[
    p("camera.topic", "base image topic", AT_START, Rule::Topic),
    p("camera.transport", "raw (sensor_msgs/Image) or compressed (<topic>/compressed)", AT_START, Rule::Any),
    p("camera.max_age_s", "older frames never drive the robot (s)", RUNTIME, Rule::Seconds),
    p(
        "camera.max_future_s",
        "frames stamped further ahead of the node's clock are refused (s)",
        RUNTIME,
        Rule::Float { min: 0.0, max: 1.0, open: false, allowed: "a tolerance in [0, 1] s" },
    ),
    p("camera.max_width", "larger frames are refused before decoding (pixels)", AT_START, Rule::Any),
    p("camera.max_height", "larger frames are refused before decoding (pixels)", AT_START, Rule::Any),
    p(
        "camera.jpeg_scaling",
        "full (every pixel, exact with the processors) or reduced (DCT-scaled decode)",
        AT_START,
        Rule::Any,
    ),
    p(
        "camera.resampling",
        "exact (Pillow's arithmetic) or simd (8-bit SIMD, within two grey levels)",
        AT_START,
        Rule::Any,
    ),
    p("instruction.topic", "natural-language task topic", AT_START, Rule::Topic),
    p(
        "instruction.max_bytes",
        "longer instructions are refused",
        RUNTIME,
        Rule::Integer { min: 1, max: 1 << 20, allowed: "a byte count in 1..=1048576" },
    ),
    p("output.topic", "velocity command output", AT_START, Rule::Topic),
    p("output.stamped", "publish TwistStamped instead of Twist", AT_START, Rule::Any),
    p("output.frame_id", "frame of stamped commands", AT_START, Rule::Any),
    p(
        "output.rate_hz",
        "fixed command rate (Hz)",
        RUNTIME,
        Rule::Float { min: 0.0, max: 1000.0, open: true, allowed: "a finite rate > 0 and <= 1000 Hz" },
    ),
    p("policy.onnxruntime_library", "libonnxruntime.so to load (empty: $ORT_DYLIB_PATH)", AT_START, Rule::Any),
    p("policy.command_timeout_s", "a policy action older than this stops driving (s)", RUNTIME, Rule::Seconds),
    p("policy.shadow", "the policies run but never drive; their commands go to ~/proposed_cmd_vel", RUNTIME, Rule::Any),
    p("policy.*.manifest", "model manifest (relative: to the package share directory)", AT_START, Rule::Any),
    p(
        "policy.*.providers",
        "execution providers, in order (tensorrt, cuda, cpu)",
        AT_START,
        Rule::NonEmpty { allowed: "a non-empty list of tensorrt, cuda, cpu" },
    ),
    p(
        "policy.*.require_provider",
        "refuse the model unless the first provider gets min_provider_share of it",
        AT_START,
        Rule::Any,
    ),
    p(
        "policy.*.min_provider_share",
        "share of graph nodes the first provider must get",
        AT_START,
        Rule::Float { min: 0.0, max: 1.0, open: true, allowed: "a share in (0, 1]" },
    ),
    p("policy.*.cpu_threads", "CPU intra-op threads", AT_START, Rule::Integer { min: 1, max: 64, allowed: "1..=64" }),
    p("policy.*.device_id", "GPU index", AT_START, Rule::Any),
    p("policy.*.tensorrt.fp16", TENSORRT, AT_START, Rule::Any),
    p("policy.*.tensorrt.engine_cache_dir", TENSORRT, AT_START, Rule::Any),
    p("policy.*.tensorrt.timing_cache_dir", TENSORRT, AT_START, Rule::Any),
    p(
        "policy.*.tensorrt.workspace_mb",
        TENSORRT,
        AT_START,
        Rule::Integer { min: 1, max: 1 << 20, allowed: "a size in 1..=1048576 MiB" },
    ),
    p(
        "policy.*.tensorrt.builder_optimization_level",
        TENSORRT,
        AT_START,
        Rule::Integer { min: 0, max: 5, allowed: "0..=5" },
    ),
    p("policy.*.tensorrt.layer_norm_fp32", TENSORRT, AT_START, Rule::Any),
    p("policy.*.tensorrt.cuda_graph", TENSORRT, AT_START, Rule::Any),
    p(
        "policy.*.remote.url",
        "KServe v2 (Triton) gRPC server running the per-frame stages (empty: this robot)",
        AT_START,
        Rule::Any,
    ),
    p("policy.*.remote.model_version", "model version to ask the server for (empty: its choice)", AT_START, Rule::Any),
    p("policy.*.remote.deadline_s", "a remote request unanswered after this fails over (s)", AT_START, Rule::Seconds),
    p(
        "policy.*.remote.retry_s",
        "while the server is unreachable at start, try again this often (s)",
        AT_START,
        Rule::Seconds,
    ),
    p("policy.*.remote.tls_ca_file", "PEM CAs to trust for an https url (empty: the system's)", AT_START, Rule::Any),
    p(
        "policy.*.remote.tls_domain",
        "name the server's certificate must carry (empty: the url's host)",
        AT_START,
        Rule::Any,
    ),
    p("watchdog.fallback_enabled", "use the pure policy as fallback", AT_START, Rule::Any),
    p("watchdog.lazy_fallback", "load the fallback only when first needed", AT_START, Rule::Any),
    p("watchdog.deadline_s", "per-frame budget (s)", RUNTIME, Rule::Seconds),
    p("watchdog.consecutive_misses", "this many late results in a row fail the policy over", RUNTIME, COUNT),
    p("watchdog.window_misses", "this many late results of the last `window` fail it over", RUNTIME, COUNT),
    p("watchdog.window", "results counted for window_misses", RUNTIME, COUNT),
    p("watchdog.hard_timeout_s", "a run past this is cancelled as a hang (s)", RUNTIME, Rule::Seconds),
    p(
        "watchdog.max_abs_action",
        "a larger proposed |velocity| (before the clip) is invalid output",
        RUNTIME,
        Rule::Float { min: 0.0, max: 1e6, open: true, allowed: "a finite number in (0, 1e6]" },
    ),
    p("watchdog.cooldown_s", "a failed policy rests this long before probing (s)", RUNTIME, Rule::Seconds),
    p(
        "watchdog.max_cooldown_s",
        "the cool-down doubles up to this after repeated failures (s)",
        RUNTIME,
        Rule::Seconds,
    ),
    p(
        "watchdog.recovery_successes",
        "good probe results in a row that restore a policy",
        RUNTIME,
        Rule::Integer { min: 1, max: MAX_COUNT, allowed: "a count in 1..=10000" },
    ),
    p("watchdog.stable_after_s", "healthy this long resets the cool-down (s)", RUNTIME, Rule::Seconds),
    p(
        "watchdog.start_timeout_s",
        "at start, the fallback may drive after this if the hybrid still loads (s)",
        AT_START,
        Rule::Seconds,
    ),
    p("mux.autonomy_priority", "priority of the policy's commands", RUNTIME, PRIORITY),
    p("mux.sources.*.topic", "command source topic (Twist or TwistStamped)", AT_START, Rule::Topic),
    p("mux.sources.*.priority", "higher wins", RUNTIME, PRIORITY),
    p("mux.sources.*.timeout_s", "silence for this long hands control back (s)", RUNTIME, Rule::Seconds),
    p("mux.sources.*.stamped", "TwistStamped instead of Twist", AT_START, Rule::Any),
    p("mux.locks.*.topic", "std_msgs/Bool lock topic (true = engaged)", AT_START, Rule::Topic),
    p("mux.locks.*.priority", "silences every source whose priority is not above it", RUNTIME, PRIORITY),
    p("mux.locks.*.timeout_s", "no message for this long engages the lock (0: never)", RUNTIME, Rule::ZeroOrSeconds),
    p(
        "limits.max_velocity",
        "per-axis limits [linear.x, linear.y, angular.z] (m/s, m/s, rad/s)",
        RUNTIME,
        Rule::Axes { zero: false },
    ),
    p(
        "limits.max_accel",
        "per-axis acceleration limits, away from zero (0: unlimited)",
        RUNTIME,
        Rule::Axes { zero: true },
    ),
    p(
        "limits.max_decel",
        "per-axis deceleration limits, towards zero (0: unlimited)",
        RUNTIME,
        Rule::Axes { zero: true },
    ),
    p("limits.deadband", "smaller targets count as zero", RUNTIME, Rule::Axes { zero: true }),
    p("limits.scale_velocities", "scale all axes together while one is ramp-limited", RUNTIME, Rule::Any),
    p("use_sim_time", "follow /clock (set at start)", AT_START, Rule::Any),
    p("managed", "a managed (lifecycle) node: unconfigured until ~/change_state configures it", AT_START, Rule::Any),
];

/// The entry for a full parameter name.
pub fn param(name: &str) -> Option<&'static Param> {
    let parts: Vec<&str> = name.split('.').collect();
    PARAMS.iter().find(|p| {
        let pattern: Vec<&str> = p.key.split('.').collect();
        pattern.len() == parts.len() && pattern.iter().zip(&parts).all(|(want, got)| *want == "*" || want == got)
    })
}

/// Checks one value against its parameter's rule (a name outside the table has none to meet).
pub(super) fn check(key: &str, value: &Value) -> Result<(), ConfigError> {
    param(key).map_or(Ok(()), |p| p.rule.check(key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_parameter_has_exactly_one_entry_and_every_entry_a_parameter() {
        let flat = Config::default().flat();
        for name in flat.keys() {
            let n = PARAMS.iter().filter(|p| param(name).is_some_and(|q| q.key == p.key)).count();
            assert_eq!(n, 1, "{name}");
            assert!(!param(name).unwrap().description.is_empty(), "{name}");
        }
        for p in PARAMS {
            let pattern: Vec<&str> = p.key.split('.').collect();
            let used = flat.keys().any(|name| {
                let parts: Vec<&str> = name.split('.').collect();
                parts.len() == pattern.len() && pattern.iter().zip(&parts).all(|(w, g)| *w == "*" || w == g)
            });
            assert!(used, "{} names no parameter", p.key);
        }
    }

    #[test]
    fn each_rule_refuses_what_it_says_and_reports_its_range() {
        let out = |r: Rule, v: Value| r.check("k", &v).is_err();
        assert!(out(Rule::Seconds, 0.0.into()) && out(Rule::Seconds, 3601.0.into()) && !out(Rule::Seconds, 0.5.into()));
        assert!(!out(Rule::ZeroOrSeconds, 0.0.into()) && out(Rule::ZeroOrSeconds, (-1.0).into()));
        let open = Rule::Float { min: 0.0, max: 1.0, open: true, allowed: "" };
        assert!(out(open, 0.0.into()) && !out(open, 1.0.into()));
        assert!(out(Rule::Axes { zero: false }, serde_json::json!([1.0, 0.0, 1.0])));
        assert!(!out(Rule::Axes { zero: true }, serde_json::json!([1.0, 0.0, 1.0])));
        assert_eq!(Rule::Seconds.range(), Some(Range::Float { from: 0.0, to: 3600.0 }));
        assert_eq!(PRIORITY.range(), Some(Range::Integer { from: 0, to: 255 }));
        assert_eq!(Rule::Topic.range(), None);
    }
}

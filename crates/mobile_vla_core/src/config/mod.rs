//! Typed node configuration, built from the flat ROS parameter map and
//! validated once at start.
//!
//! This module owns the meaning and defaults of every parameter (the typed
//! sections below); [`schema`] is the one table of each parameter's
//! description, bounds and whether it may change at runtime, and `checks`
//! the rules between parameters. It never reads ROS itself: the node hands
//! it `name -> value` pairs (nested YAML keys arrive as `camera.topic`), and
//! it answers with a [`Config`] or one [`ConfigError`] naming the key, the
//! value and what is allowed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod checks;
mod files;
pub mod params_file;
pub mod schema;

pub use checks::{check_action_range, ActionClip};
pub use files::{expand_home, resolve_existing_file};

use crate::vocab::Role;

/// How camera frames arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `sensor_msgs/Image` on `camera.topic`.
    Raw,
    /// `sensor_msgs/CompressedImage` on `<camera.topic>/compressed`, as image_transport names it.
    Compressed,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    pub topic: String,
    pub transport: Transport,
    /// A frame older than this (stamp to now) is stale and never drives the robot.
    pub max_age_s: f64,
    /// A frame stamped further than this ahead of the node's clock is refused (clock skew).
    pub max_future_s: f64,
    /// Frames larger than this are rejected before any decoding.
    pub max_width: u32,
    pub max_height: u32,
    /// `full` (every pixel, exact with the processors) or `reduced` (DCT scaling, as `PIL.Image.draft`).
    pub jpeg_scaling: JpegScaling,
    /// `exact` (Pillow's arithmetic, bit-exact with the processors) or `simd` (within two grey levels).
    pub resampling: Resampling,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            topic: "camera/image_raw".into(),
            transport: Transport::Raw,
            max_age_s: 0.5,
            max_future_s: 0.05,
            max_width: 4096,
            max_height: 4096,
            jpeg_scaling: JpegScaling::Full,
            resampling: Resampling::Exact,
        }
    }
}

impl CameraConfig {
    /// The topic actually subscribed, following image_transport's naming.
    pub fn subscribed_topic(&self) -> String {
        match self.transport {
            Transport::Raw => self.topic.clone(),
            Transport::Compressed => format!("{}/compressed", self.topic.trim_end_matches('/')),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstructionConfig {
    pub topic: String,
    /// Longer instructions are rejected (the robot stops and status says why).
    pub max_bytes: usize,
}

impl Default for InstructionConfig {
    fn default() -> Self {
        Self { topic: "instruction".into(), max_bytes: 1024 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    pub topic: String,
    /// Publish `geometry_msgs/TwistStamped` instead of `Twist`.
    pub stamped: bool,
    /// `header.frame_id` of stamped commands.
    pub frame_id: String,
    /// Commands are published at this fixed rate, zero when nothing fresh drives.
    pub rate_hz: f64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self { topic: "cmd_vel".into(), stamped: false, frame_id: "base_link".into(), rate_hz: 20.0 }
    }
}

/// ONNX Runtime execution providers, in the order the node tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorRtConfig {
    pub fp16: bool,
    /// Built engines are cached here: the first start on an Orin takes minutes, later ones seconds.
    pub engine_cache_dir: String,
    pub timing_cache_dir: String,
    pub workspace_mb: u64,
    /// 0..=5; higher builds slower and may run faster.
    pub builder_optimization_level: u8,
    /// Keep LayerNorm in FP32 under FP16: transformer LayerNorms overflow in FP16.
    pub layer_norm_fp32: bool,
    /// Capture the engine in a CUDA graph (only for graphs whose input shapes never change).
    pub cuda_graph: bool,
}

impl Default for TensorRtConfig {
    fn default() -> Self {
        Self {
            fp16: true,
            engine_cache_dir: "~/.cache/mobile_vla/tensorrt".into(),
            timing_cache_dir: "~/.cache/mobile_vla/tensorrt".into(),
            workspace_mb: 2048,
            builder_optimization_level: 3,
            layer_norm_fp32: true,
            cuda_graph: false,
        }
    }
}

/// Where a policy's per-frame stages run when not on this robot: a KServe v2
/// inference server (NVIDIA Triton) reached over gRPC. Preprocessing,
/// tokenisation, the per-instruction stages, windows, recurrent state and the
/// command stage stay on the robot.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// The server's gRPC address: `http://host:8001`, or `https://...` for
    /// TLS. Empty: every stage runs on this robot.
    pub url: String,
    /// The model version to ask for; empty: the server's version policy decides.
    pub model_version: String,
    /// A request not answered within this fails (a later answer is dropped),
    /// and the fallback drives.
    pub deadline_s: f64,
    /// While the server cannot be reached at start, the node tries again this often.
    pub retry_s: f64,
    /// TLS: a PEM file of the CAs to trust; empty: the system's roots.
    pub tls_ca_file: String,
    /// TLS: the name the server's certificate must carry; empty: the URL's host.
    pub tls_domain: String,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            model_version: String::new(),
            deadline_s: 0.1,
            retry_s: 2.0,
            tls_ca_file: String::new(),
            tls_domain: String::new(),
        }
    }
}

impl RemoteConfig {
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}

/// One policy (model) and how to run it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model manifest (JSON); relative paths are resolved against the package share directory.
    pub manifest: String,
    /// Preference order; the first one that ONNX Runtime can register runs the model.
    pub providers: Vec<Provider>,
    /// Refuse the model unless the first preferred provider runs at least
    /// `min_provider_share` of its graph nodes (as ONNX Runtime assigned them).
    pub require_provider: bool,
    /// With `require_provider`: the share of nodes (0, 1] the first provider must get.
    pub min_provider_share: f64,
    pub cpu_threads: usize,
    pub device_id: i32,
    pub tensorrt: TensorRtConfig,
    /// Serve the per-frame stages from a GPU server instead (off by default).
    pub remote: RemoteConfig,
}

impl ModelConfig {
    fn with_manifest(manifest: &str) -> Self {
        Self {
            manifest: manifest.into(),
            providers: vec![Provider::Tensorrt, Provider::Cuda, Provider::Cpu],
            require_provider: false,
            min_provider_share: 1.0,
            cpu_threads: 1,
            device_id: 0,
            tensorrt: TensorRtConfig::default(),
            remote: RemoteConfig::default(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::with_manifest("models/hybrid.json")
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Path of libonnxruntime.so; empty: $ORT_DYLIB_PATH, else the loader's search path.
    pub onnxruntime_library: String,
    /// The primary policy (Kosmos-2 + CLIP hybrid).
    pub hybrid: ModelConfig,
    /// The fallback policy (pure Kosmos-2).
    pub pure: ModelConfig,
    /// A policy command older than this no longer drives the robot.
    pub command_timeout_s: f64,
    /// The policies run but never drive: their commands are proposals (shadow mode).
    pub shadow: bool,
}

impl PolicyConfig {
    /// The model of `role`: `hybrid` for the primary, `pure` for the fallback.
    pub fn model(&self, role: Role) -> &ModelConfig {
        match role {
            Role::Primary => &self.hybrid,
            Role::Fallback => &self.pure,
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            onnxruntime_library: String::new(),
            hybrid: ModelConfig::with_manifest("models/hybrid.json"),
            pure: ModelConfig::with_manifest("models/pure.json"),
            command_timeout_s: 0.5,
            shadow: false,
        }
    }
}

/// A teleop or other `Twist` topic competing for `cmd_vel` (twist_mux's "topics").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub topic: String,
    /// Higher wins; the policy is `mux.autonomy_priority`.
    pub priority: u8,
    /// Silence for this long hands control back to the next source.
    pub timeout_s: f64,
    /// `geometry_msgs/TwistStamped` instead of `Twist`.
    #[serde(default)]
    pub stamped: bool,
}

/// A `std_msgs/Bool` lock topic (twist_mux's "locks").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockConfig {
    pub topic: String,
    /// Silences every source whose priority is not above this; 255 silences all.
    pub priority: u8,
    /// 0: the lock keeps its last state; > 0: no message for this long engages it.
    #[serde(default)]
    pub timeout_s: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MuxConfig {
    /// Priority of the policy's commands.
    pub autonomy_priority: u8,
    pub sources: BTreeMap<String, SourceConfig>,
    pub locks: BTreeMap<String, LockConfig>,
}

impl Default for MuxConfig {
    fn default() -> Self {
        let src =
            |topic: &str, priority| SourceConfig { topic: topic.into(), priority, timeout_s: 0.5, stamped: false };
        Self {
            autonomy_priority: 10,
            sources: BTreeMap::from([
                ("joystick".to_string(), src("joy_vel", 100)),
                ("keyboard".to_string(), src("key_vel", 90)),
                ("navigation".to_string(), src("nav_vel", 50)),
            ]),
            locks: BTreeMap::from([(
                "e_stop".to_string(),
                LockConfig { topic: "e_stop".into(), priority: 255, timeout_s: 0.0 },
            )]),
        }
    }
}

/// Output shaping; per axis (linear.x, linear.y, angular.z).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_velocity: [f64; 3],
    /// 0 = unlimited.
    pub max_accel: [f64; 3],
    /// 0 = unlimited (stop at once when nothing fresh drives).
    pub max_decel: [f64; 3],
    pub deadband: [f64; 3],
    /// Scale all axes together while one is ramp-limited, keeping the direction (Nav2's velocity_smoother).
    pub scale_velocities: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_velocity: [0.5, 0.5, 1.0],
            max_accel: [1.0, 1.0, 2.0],
            max_decel: [0.0; 3],
            deadband: [0.0; 3],
            scale_velocities: false,
        }
    }
}

/// When the hybrid policy hands over to the pure Kosmos-2 one, and back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchdogParams {
    /// false: no fallback policy; a failing primary means zero velocity.
    pub fallback_enabled: bool,
    /// true: load the fallback only when it is first needed (saves its memory,
    /// but the first switch waits for a model load, and a TensorRT engine build).
    pub lazy_fallback: bool,
    /// Per-frame budget (preprocess + inference + postprocess).
    pub deadline_s: f64,
    pub consecutive_misses: u32,
    pub window_misses: u32,
    pub window: u32,
    /// A run still going after this is cancelled and counts as a hang.
    pub hard_timeout_s: f64,
    /// A proposed |velocity| above this makes the output invalid.
    pub max_abs_action: f64,
    pub cooldown_s: f64,
    pub max_cooldown_s: f64,
    pub recovery_successes: u32,
    pub stable_after_s: f64,
    /// At start, the fallback drives only once the primary's load has ended, or after this long.
    pub start_timeout_s: f64,
}

impl Default for WatchdogParams {
    fn default() -> Self {
        Self {
            fallback_enabled: true,
            lazy_fallback: false,
            deadline_s: 0.1,
            consecutive_misses: 3,
            window_misses: 5,
            window: 20,
            hard_timeout_s: 1.0,
            max_abs_action: 5.0,
            cooldown_s: 2.0,
            max_cooldown_s: 60.0,
            recovery_successes: 5,
            stable_after_s: 30.0,
            start_timeout_s: 120.0,
        }
    }
}

/// How JPEG frames are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JpegScaling {
    /// Every pixel, as `PIL.Image.open` (and so the Hugging Face processors) decode it.
    #[default]
    Full,
    /// At the smallest DCT scale that covers every image input (`PIL.Image.draft`):
    /// 2-4x less decoding for a 1080p frame, at the cost of exactness with the processors.
    Reduced,
}

/// How the antialiased filters (Pillow's bilinear and bicubic) are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resampling {
    /// Pillow's own 22-bit fixed-point arithmetic: the bytes `PIL.Image.resize`
    /// (and so the Hugging Face processors) produce.
    #[default]
    Exact,
    /// 8-bit SIMD (fast_image_resize: AVX2, SSE4.1 or NEON) with Pillow's
    /// kernels, pass order and geometry and 16-bit coefficients: within two
    /// grey levels of PIL, under 1% of the values differing on camera frames.
    Simd,
}

/// Everything the node reads from its parameters.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub camera: CameraConfig,
    pub instruction: InstructionConfig,
    pub output: OutputConfig,
    pub policy: PolicyConfig,
    pub watchdog: WatchdogParams,
    pub mux: MuxConfig,
    pub limits: LimitsConfig,
    /// Standard ROS parameter; accepted so launch files may set it.
    pub use_sim_time: bool,
    /// Start as a managed (lifecycle) node: unconfigured until `~/change_state` configures and activates it.
    pub managed: bool,
}

/// A parameter that stops start-up: which key, what it held, what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub value: String,
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid parameter '{}' = {}: {}", self.key, self.value, self.allowed)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Builds and validates the configuration from flat `a.b.c -> value` parameters.
    pub fn from_params(params: &BTreeMap<String, Value>) -> Result<Config, ConfigError> {
        let tree = nest(params)?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            // The path already names the offending key, unknown keys included.
            let key = e.path().to_string();
            let value = params.get(&key).map(render).unwrap_or_else(|| "?".into());
            ConfigError { key, value, allowed: e.into_inner().to_string() }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every value within its parameter's bounds ([`schema`]), then the rules between parameters ([`checks`]).
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in self.flat() {
            schema::check(&key, &value)?;
        }
        checks::between(self)
    }

    /// The flat view: every parameter by its full name (`limits.max_velocity`), in its declared type.
    pub fn flat(&self) -> BTreeMap<String, Value> {
        let mut flat = BTreeMap::new();
        flatten("", &serde_json::to_value(self).expect("the configuration serialises"), &mut flat);
        flat
    }
}

fn err(key: &str, value: impl fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_string(), value: value.to_string(), allowed: allowed.into() }
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

fn render(v: &Value) -> String {
    v.to_string()
}

/// Turns `{"a.b": 1, "a.c": 2}` into `{"a": {"b": 1, "c": 2}}`.
fn nest(params: &BTreeMap<String, Value>) -> Result<Value, ConfigError> {
    let mut root = serde_json::Map::new();
    for (key, value) in params {
        let mut node = &mut root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                node.insert(part.to_string(), value.clone());
            } else {
                let child = node.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
                node = child.as_object_mut().ok_or_else(|| {
                    err(key, render(value), format!("'{part}' is a value, not a group of parameters"))
                })?;
            }
        }
    }
    Ok(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn empty_parameters_give_the_documented_defaults() {
        let c = Config::from_params(&BTreeMap::new()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.camera.subscribed_topic(), "camera/image_raw");
        assert_eq!(c.output.topic, "cmd_vel");
    }

    #[test]
    fn nested_keys_fill_nested_sections_and_integers_widen_to_floats() {
        let c = Config::from_params(&params(&[
            ("camera.transport", json!("compressed")),
            ("camera.topic", json!("front/image")),
            ("output.rate_hz", json!(30)),
        ]))
        .unwrap();
        assert_eq!(c.camera.transport, Transport::Compressed);
        assert_eq!(c.camera.subscribed_topic(), "front/image/compressed");
        assert_eq!(c.output.rate_hz, 30.0);
    }

    #[test]
    fn unknown_enum_value_names_key_value_and_allowed_values() {
        let e = Config::from_params(&params(&[("camera.transport", json!("h264"))])).unwrap_err();
        assert_eq!(e.key, "camera.transport");
        assert_eq!(e.value, "\"h264\"");
        assert!(e.allowed.contains("`raw`") && e.allowed.contains("`compressed`"), "{e}");
    }

    #[test]
    fn negative_rate_is_refused() {
        let e = Config::from_params(&params(&[("output.rate_hz", json!(-5.0))])).unwrap_err();
        assert_eq!(e.key, "output.rate_hz");
        assert_eq!(e.value, "-5");
        assert!(e.to_string().contains("> 0"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused_by_its_full_name() {
        let e = Config::from_params(&params(&[("camera.fps", json!(30))])).unwrap_err();
        assert_eq!(e.key, "camera.fps");
        assert!(e.allowed.contains("expected one of"), "{e}");
        let e = Config::from_params(&params(&[("speed", json!(1))])).unwrap_err();
        assert_eq!(e.key, "speed");
    }

    #[test]
    fn wrong_type_is_refused() {
        let e = Config::from_params(&params(&[("output.stamped", json!("yes"))])).unwrap_err();
        assert_eq!(e.key, "output.stamped");
        assert!(e.allowed.contains("boolean"), "{e}");
    }

    #[test]
    fn bad_topic_names_are_refused() {
        for bad in ["", "cmd vel", "a//b", "9lives", "trailing/"] {
            let e = Config::from_params(&params(&[("output.topic", json!(bad))])).unwrap_err();
            assert_eq!(e.key, "output.topic", "{bad}");
        }
        Config::from_params(&params(&[("output.topic", json!("/robot/cmd_vel"))])).unwrap();
        Config::from_params(&params(&[("output.topic", json!("~/cmd"))])).unwrap();
    }

    #[test]
    fn a_value_used_as_a_group_is_refused() {
        let e = Config::from_params(&params(&[("camera", json!(1)), ("camera.topic", json!("x"))])).unwrap_err();
        assert_eq!(e.key, "camera.topic");
    }

    #[test]
    fn provider_lists_parse_from_string_arrays_and_bad_names_are_refused() {
        let c = Config::from_params(&params(&[("policy.hybrid.providers", json!(["cuda", "cpu"]))])).unwrap();
        assert_eq!(c.policy.hybrid.providers, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(c.policy.pure.providers[0], Provider::Tensorrt);
        let e = Config::from_params(&params(&[("policy.pure.providers", json!(["tensorrt", "gpu"]))])).unwrap_err();
        assert_eq!(e.key, "policy.pure.providers[1]");
        assert!(e.allowed.contains("`tensorrt`, `cuda`, `cpu`"), "{e}");
        let e = Config::from_params(&params(&[("policy.pure.providers", json!([]))])).unwrap_err();
        assert_eq!(e.key, "policy.pure.providers");
    }

    #[test]
    fn tensorrt_options_are_validated() {
        let e = Config::from_params(&params(&[("policy.hybrid.tensorrt.builder_optimization_level", json!(9))]))
            .unwrap_err();
        assert_eq!(e.key, "policy.hybrid.tensorrt.builder_optimization_level");
        let e = Config::from_params(&params(&[("policy.hybrid.tensorrt.workspace_mb", json!(-1))])).unwrap_err();
        assert_eq!(e.key, "policy.hybrid.tensorrt.workspace_mb");
    }

    #[test]
    fn mux_sources_and_limits_from_nested_parameters() {
        let c = Config::from_params(&params(&[
            ("mux.sources.joystick.topic", json!("teleop/cmd_vel")),
            ("mux.sources.joystick.priority", json!(120)),
            ("mux.sources.joystick.timeout_s", json!(0.25)),
            ("mux.locks.e_stop.topic", json!("estop")),
            ("mux.locks.e_stop.priority", json!(255)),
            ("limits.max_velocity", json!([0.3, 0.2, 0.8])),
        ]))
        .unwrap();
        assert_eq!(c.mux.sources.len(), 1, "a configured map replaces the defaults");
        assert_eq!(c.mux.sources["joystick"].priority, 120);
        assert_eq!(c.mux.locks["e_stop"].timeout_s, 0.0);
        assert_eq!(c.limits.max_velocity, [0.3, 0.2, 0.8]);
        let e = Config::from_params(&params(&[("limits.max_velocity", json!([0.3, -1.0, 0.8]))])).unwrap_err();
        assert_eq!(e.key, "limits.max_velocity");
        let e = Config::from_params(&params(&[("mux.sources.joystick.topic", json!("joy"))])).unwrap_err();
        assert!(e.key.starts_with("mux.sources.joystick"), "{e}");
        let e = Config::from_params(&params(&[("mux.autonomy_priority", json!(300))])).unwrap_err();
        assert_eq!(e.key, "mux.autonomy_priority");
    }

    #[test]
    fn every_value_is_bounded_so_none_can_panic_later() {
        for key in [
            "camera.max_age_s",
            "policy.command_timeout_s",
            "watchdog.deadline_s",
            "watchdog.hard_timeout_s",
            "watchdog.cooldown_s",
            "watchdog.max_cooldown_s",
            "watchdog.stable_after_s",
            "watchdog.start_timeout_s",
            "watchdog.max_abs_action",
            "camera.max_future_s",
        ] {
            for bad in [json!(1e300), json!(-1.0), json!(f64::MAX)] {
                let e = Config::from_params(&params(&[(key, bad.clone())])).unwrap_err();
                assert_eq!(e.key, key, "{bad}");
            }
        }
        let e = Config::from_params(&params(&[
            ("mux.sources.joystick.topic", json!("joy")),
            ("mux.sources.joystick.priority", json!(1)),
            ("mux.sources.joystick.timeout_s", json!(1e300)),
        ]))
        .unwrap_err();
        assert_eq!(e.key, "mux.sources.joystick.timeout_s");
        let e = Config::from_params(&params(&[("limits.max_accel", json!([1e300, 1.0, 1.0]))])).unwrap_err();
        assert_eq!(e.key, "limits.max_accel");
        let e = Config::from_params(&params(&[("watchdog.window", json!(4_000_000_000u32))])).unwrap_err();
        assert_eq!(e.key, "watchdog.window");
        let e = Config::from_params(&params(&[("camera.max_width", json!(100_000))])).unwrap_err();
        assert_eq!(e.key, "camera.max_width/max_height");
        // Every default is within its bounds.
        assert_eq!(Config::from_params(&BTreeMap::new()).unwrap(), Config::default());
    }
}

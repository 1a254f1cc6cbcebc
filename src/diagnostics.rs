//! The node's health as ROS messages: `~/status` and `/diagnostics`.
//!
//! Owns the wording and levels operators see; it formats what the control
//! core reports and decides nothing about motion.

use mobile_vla_core::camera_rate::CameraReport;
use mobile_vla_core::config::Provider;
use mobile_vla_core::control::{Controller, NodeState, StatusView};
use mobile_vla_core::lifecycle;
use mobile_vla_core::vocab::{ByRole, Role, Velocity};
use mobile_vla_core::watchdog::Watchdog;
use mobile_vla_policy::providers::OrtName;
use mobile_vla_policy::runner::Loaded;
use mobile_vla_policy::runtime::RuntimeInfo;
use mobile_vla_policy::session::Providers;
use r2r::{
    builtin_interfaces::msg::Time,
    diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue},
    mobile_vla_msgs::msg as vla,
    std_msgs::msg::Header,
};

/// What the node knows about one policy beyond the watchdog's view.
#[derive(Default, Clone)]
pub struct PolicyInfo {
    pub manifest: String,
    /// The execution providers the parameters ask for, in order.
    pub requested: Vec<Provider>,
    pub provider: String,
    pub loaded: bool,
    pub takes_instruction: bool,
    /// The velocity axes its action drives, and those it leaves at 0.
    pub commanded_axes: Vec<&'static str>,
    pub absent_axes: Vec<&'static str>,
    /// The ONNX Runtime that runs it, once loaded.
    pub runtime: Option<RuntimeInfo>,
    /// The providers registered and the nodes ONNX Runtime gave each, once loaded.
    pub providers: Option<Providers>,
}

impl PolicyInfo {
    /// What a load reported.
    pub fn loaded_as(&mut self, providers: Providers, loaded: Loaded) {
        self.loaded = true;
        self.takes_instruction = loaded.takes_instruction;
        self.commanded_axes = loaded.commanded_axes;
        self.absent_axes = loaded.absent_axes;
        self.runtime = Some(loaded.runtime);
        self.provider = providers.main();
        self.providers = Some(providers);
    }

    /// The policy was unloaded (a cleanup).
    pub fn unloaded(&mut self) {
        self.loaded = false;
        self.providers = None;
    }

    /// One line: the node counts per provider, or why they are unknown.
    fn node_assignment(&self) -> String {
        match (&self.providers, &self.runtime) {
            (Some(p), Some(r)) => p.describe(&r.version),
            _ => String::new(),
        }
    }
}

fn kv(key: &str, value: impl ToString) -> KeyValue {
    KeyValue { key: key.into(), value: value.to_string() }
}

/// `Status.msg`'s constant for a state (r2r gives string constants as C strings).
fn state_name(s: NodeState) -> String {
    let c: &[u8] = match s {
        NodeState::Starting => vla::Status::STATE_STARTING,
        NodeState::Running => vla::Status::STATE_RUNNING,
        NodeState::Paused => vla::Status::STATE_PAUSED,
        NodeState::SafeStop => vla::Status::STATE_SAFE_STOP,
    };
    String::from_utf8_lossy(c.strip_suffix(&[0]).unwrap_or(c)).into_owned()
}

fn policy_status(wd: &Watchdog, r: Role, info: &PolicyInfo) -> vla::PolicyStatus {
    let h = wd.report(r);
    let assignment = info.providers.as_ref().and_then(Providers::assignment);
    vla::PolicyStatus {
        name: r.name().into(),
        model: info.manifest.clone(),
        loaded: info.loaded,
        healthy: h.healthy,
        takes_instruction: info.takes_instruction,
        commanded_axes: info.commanded_axes.iter().map(|a| a.to_string()).collect(),
        absent_axes: info.absent_axes.iter().map(|a| a.to_string()).collect(),
        requested_providers: info.requested.iter().map(|p| p.ort_name().to_string()).collect(),
        execution_provider: info.provider.clone(),
        registered_providers: info
            .providers
            .as_ref()
            .and_then(|p| p.stages.last())
            .map(|s| s.registration.registered.iter().map(|p| p.ort_name().to_string()).collect())
            .unwrap_or_default(),
        assigned_providers: assignment.iter().flat_map(|a| a.counts.iter().map(|(p, _)| p.clone())).collect(),
        assigned_nodes: assignment.iter().flat_map(|a| a.counts.iter().map(|(_, n)| *n as u32)).collect(),
        graph_nodes: assignment.as_ref().map_or(0, |a| a.total() as u32),
        node_assignment: info.node_assignment(),
        onnxruntime_version: info.runtime.as_ref().map(|r| r.version.clone()).unwrap_or_default(),
        onnxruntime_library: info.runtime.as_ref().map(|r| r.library.display().to_string()).unwrap_or_default(),
        runs: h.runs,
        failures: h.failures,
        last_error: h.last_error,
    }
}

pub fn status(
    stamp: Time,
    view: &StatusView,
    ctl: &Controller,
    info: &ByRole<PolicyInfo>,
    lifecycle: Option<lifecycle::State>,
) -> vla::Status {
    let mux = ctl.mux();
    vla::Status {
        stamp,
        state: state_name(view.state),
        reason: view.reason.to_string(),
        active_policy: view.active_policy.map(Role::name).unwrap_or_default().into(),
        active_source: view.source.map(|s| mux.source_name(s)).unwrap_or_default().into(),
        active_lock: view.lock.map(|l| mux.lock_name(l)).unwrap_or_default().into(),
        policies: info.iter().map(|(r, i)| policy_status(ctl.watchdog(), r, i)).collect(),
        lifecycle_state: lifecycle.map(|s| s.label()).unwrap_or_default().into(),
    }
}

/// Three statuses: the policy watchdog, the command output (mux), and the camera.
pub fn diagnostics(
    stamp: Time,
    ctl: &Controller,
    info: &ByRole<PolicyInfo>,
    camera_topic: &str,
    camera: &CameraReport,
) -> DiagnosticArray {
    let wd = ctl.watchdog();
    let (level, message) = match wd.active() {
        Some(Role::Primary) => (DiagnosticStatus::OK as u8, "hybrid policy active".to_string()),
        Some(Role::Fallback) => {
            let h = wd.report(Role::Primary);
            (
                DiagnosticStatus::WARN as u8,
                format!("fallback: pure Kosmos-2 policy active (hybrid {}: {})", h.state, h.last_error),
            )
        }
        None => (DiagnosticStatus::ERROR as u8, wd.reason().unwrap_or_default()),
    };
    let mut values = vec![kv("active_policy", wd.active().map_or("none", Role::name))];
    if let Some(s) = wd.last_switch() {
        values.push(kv("last_switch", s));
        values.push(kv("last_switch_reason", &s.reason));
    }
    for (r, i) in info.iter() {
        let h = wd.report(r);
        let n = r.name();
        values.extend([
            kv(&format!("{n}.state"), h.state),
            kv(&format!("{n}.execution_provider"), &i.provider),
            kv(&format!("{n}.nodes"), i.node_assignment()),
            kv(&format!("{n}.onnxruntime"), i.runtime.as_ref().map(ToString::to_string).unwrap_or_default()),
            kv(&format!("{n}.takes_instruction"), i.takes_instruction),
            kv(&format!("{n}.runs"), h.runs),
            kv(&format!("{n}.failures"), h.failures),
            kv(&format!("{n}.cooldown_s"), format!("{:.1}", h.cooldown.as_secs_f64())),
            kv(&format!("{n}.last_error"), &h.last_error),
        ]);
    }
    let policy = DiagnosticStatus {
        level,
        name: "mobile_vla: policy watchdog".into(),
        message,
        hardware_id: "mobile_vla".into(),
        values,
    };
    let mux = ctl.mux();
    let d = ctl.decision();
    let source = d.source.map(|s| mux.source_name(s));
    let lock = d.lock.map(|l| mux.lock_name(l));
    let (level, message) = match (source, lock) {
        (None, Some(lock)) => (DiagnosticStatus::WARN as u8, format!("lock '{lock}' engaged: zero velocity")),
        (Some(src), _) => (DiagnosticStatus::OK as u8, format!("'{src}' in control")),
        (None, None) => (DiagnosticStatus::OK as u8, "no fresh command: zero velocity".to_string()),
    };
    let shadow = ctl.shadow();
    let mut values = vec![
        kv("active_source", source.unwrap_or("none")),
        kv("active_lock", lock.unwrap_or("none")),
        kv("autonomy", if ctl.autonomy_enabled() { "enabled" } else { "paused" }),
        kv("shadow", shadow.is_some()),
    ];
    let message = match shadow {
        None => message,
        // The operator's question in shadow mode: would the policy have done what the driver did?
        Some(a) => {
            values.push(kv("shadow.samples", a.samples));
            for (k, axis) in Velocity::AXES.iter().enumerate() {
                values.push(kv(&format!("shadow.{axis}.mae"), format!("{:.4}", a.mae[k])));
                values.push(kv(&format!("shadow.{axis}.sign_agreement"), format!("{:.3}", a.sign_agreement[k])));
            }
            format!("shadow mode, the policies never drive; {message}")
        }
    };
    let output = DiagnosticStatus {
        level,
        name: "mobile_vla: command output".into(),
        message,
        hardware_id: "mobile_vla".into(),
        values,
    };
    DiagnosticArray {
        header: Header { stamp, frame_id: String::new() },
        status: vec![policy, output, camera_status(camera_topic, camera)],
    }
}

/// Like diagnostic_updater's frequency status: the rate received, and frames evidently lost.
fn camera_status(topic: &str, c: &CameraReport) -> DiagnosticStatus {
    let window = mobile_vla_core::camera_rate::WINDOW.as_secs();
    let (level, message) = match (c.received, c.lost) {
        (0, _) => (DiagnosticStatus::WARN as u8, format!("no camera frames in the last {window} s")),
        (_, 0) => (DiagnosticStatus::OK as u8, format!("{:.1} Hz, no frames lost", c.rate_hz)),
        (n, lost) => (
            DiagnosticStatus::WARN as u8,
            format!("{lost} of {} frames lost in the last {window} s ({:.1} Hz received)", n + lost, c.rate_hz),
        ),
    };
    DiagnosticStatus {
        level,
        name: "mobile_vla: camera".into(),
        message,
        hardware_id: topic.into(),
        values: vec![
            kv("topic", topic),
            kv("rate_hz", format!("{:.2}", c.rate_hz)),
            kv("camera_hz", format!("{:.2}", c.camera_hz)),
            kv("received", c.received),
            kv("lost", c.lost),
            kv("lost_total", c.lost_total),
            kv("frame_bytes", c.frame_bytes),
            kv(
                "dds_profile",
                std::env::var("FASTRTPS_DEFAULT_PROFILES_FILE").unwrap_or_else(|_| "built-in transports".into()),
            ),
        ],
    }
}

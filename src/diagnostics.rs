//! The node's health as ROS messages: `~/status` and `/diagnostics`.
//!
//! Owns the wording and levels operators see; it formats state the shell
//! hands it and decides nothing about motion.

use mobile_vla_core::command_mux::Decision;
use mobile_vla_core::watchdog::{Role, Watchdog};
use r2r::{
    builtin_interfaces::msg::Time,
    diagnostic_msgs::msg::{DiagnosticArray, DiagnosticStatus, KeyValue},
    mobile_vla_msgs::msg as vla,
    std_msgs::msg::Header,
};

pub const ROLES: [Role; 2] = [Role::Primary, Role::Fallback];

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "hybrid",
        Role::Fallback => "pure",
    }
}

/// What the node knows about one policy beyond the watchdog's view.
#[derive(Default, Clone)]
pub struct PolicyInfo {
    pub manifest: String,
    pub requested: Vec<String>,
    pub provider: String,
    pub loaded: bool,
}

fn kv(key: &str, value: impl ToString) -> KeyValue {
    KeyValue { key: key.into(), value: value.to_string() }
}

pub fn policy_status(wd: &Watchdog, r: Role, info: &PolicyInfo) -> vla::PolicyStatus {
    let h = wd.report(r);
    vla::PolicyStatus {
        name: role_name(r).into(),
        model: info.manifest.clone(),
        loaded: info.loaded,
        healthy: h.healthy,
        requested_providers: info.requested.clone(),
        execution_provider: info.provider.clone(),
        runs: h.runs,
        failures: h.failures,
        last_error: h.last_error,
    }
}

/// Two statuses: the policy watchdog, and the command output (mux).
pub fn diagnostics(stamp: Time, wd: &Watchdog, info: &[PolicyInfo; 2], decision: &Decision, paused: bool) -> DiagnosticArray {
    let (level, message) = match wd.active() {
        Some(Role::Primary) => (DiagnosticStatus::OK as u8, "hybrid policy active".to_string()),
        Some(Role::Fallback) => {
            let h = wd.report(Role::Primary);
            (DiagnosticStatus::WARN as u8, format!("fallback: pure Kosmos-2 policy active (hybrid {}: {})", h.state, h.last_error))
        }
        None => (DiagnosticStatus::ERROR as u8, wd.reason().unwrap_or_default()),
    };
    let mut values = vec![kv("active_policy", wd.active().map_or("none", role_name))];
    if let Some(s) = wd.last_switch() {
        values.push(kv("last_switch", s));
        values.push(kv("last_switch_reason", &s.reason));
    }
    for (r, i) in ROLES.iter().zip(info) {
        let h = wd.report(*r);
        let n = role_name(*r);
        values.extend([
            kv(&format!("{n}.state"), h.state),
            kv(&format!("{n}.execution_provider"), &i.provider),
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
    let (level, message) = match (&decision.source, &decision.lock) {
        (None, Some(lock)) => (DiagnosticStatus::WARN as u8, format!("lock '{lock}' engaged: zero velocity")),
        (Some(src), _) => (DiagnosticStatus::OK as u8, format!("'{src}' in control")),
        (None, None) => (DiagnosticStatus::OK as u8, "no fresh command: zero velocity".to_string()),
    };
    let output = DiagnosticStatus {
        level,
        name: "mobile_vla: command output".into(),
        message,
        hardware_id: "mobile_vla".into(),
        values: vec![
            kv("active_source", decision.source.as_deref().unwrap_or("none")),
            kv("active_lock", decision.lock.as_deref().unwrap_or("none")),
            kv("autonomy", if paused { "paused" } else { "enabled" }),
        ],
    };
    DiagnosticArray { header: Header { stamp, frame_id: String::new() }, status: vec![policy, output] }
}

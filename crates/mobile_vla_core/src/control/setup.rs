//! The control core's settings, made from the node's configuration in one place.
//!
//! Owns [`ControlConfig`] and the one mapping from the parameters
//! ([`Config`]) to it: the watchdog's thresholds, the fallback mode, the mux's
//! sources and locks (their ids are their positions in `mux.sources` /
//! `mux.locks`, after the policy), the output limits, freshness and the
//! instruction bound. Start-up and every accepted `ros2 param set` go
//! through [`ControlConfig::from_config`]; nothing else builds one.

use std::time::Duration;

use crate::command_mux::{LockId, LockSpec, SourceId, SourceSpec};
use crate::config::Config;
use crate::limits::Limits;
use crate::vocab::Freshness;
use crate::watchdog::WatchdogConfig;

/// The policy's commands are the mux's first source.
pub const POLICY: SourceId = SourceId(0);

/// What to do with the fallback policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackMode {
    Disabled,
    /// Loaded at start, with the primary.
    Eager,
    /// Loaded the first time it is needed.
    Lazy,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub watchdog: WatchdogConfig,
    pub fallback: FallbackMode,
    /// The policy as a mux source (name "policy"; its timeout is the dead-man).
    pub policy_priority: u8,
    pub command_timeout: Duration,
    /// Teleop and other sources, after the policy.
    pub sources: Vec<SourceSpec>,
    pub locks: Vec<LockSpec>,
    pub limits: Limits,
    pub freshness: Freshness,
    pub max_instruction_bytes: usize,
    /// The policies' commands are proposals, never driven (shadow mode).
    pub shadow: bool,
}

impl ControlConfig {
    /// The control core's settings for the node's parameters.
    pub fn from_config(c: &Config) -> Self {
        let fallback = match (c.watchdog.fallback_enabled, c.watchdog.lazy_fallback) {
            (false, _) => FallbackMode::Disabled,
            (true, false) => FallbackMode::Eager,
            (true, true) => FallbackMode::Lazy,
        };
        let secs = Duration::from_secs_f64;
        ControlConfig {
            watchdog: WatchdogConfig::from(&c.watchdog),
            fallback,
            policy_priority: c.mux.autonomy_priority,
            command_timeout: secs(c.policy.command_timeout_s),
            sources: c
                .mux
                .sources
                .iter()
                .map(|(name, s)| SourceSpec { name: name.clone(), priority: s.priority, timeout: secs(s.timeout_s) })
                .collect(),
            locks: c
                .mux
                .locks
                .iter()
                .map(|(name, l)| LockSpec {
                    name: name.clone(),
                    priority: l.priority,
                    timeout: (l.timeout_s > 0.0).then(|| secs(l.timeout_s)),
                })
                .collect(),
            limits: Limits {
                max_velocity: c.limits.max_velocity,
                max_accel: c.limits.max_accel,
                max_decel: c.limits.max_decel,
                deadband: c.limits.deadband,
                scale_velocities: c.limits.scale_velocities,
            },
            freshness: Freshness { max_age_s: c.camera.max_age_s, max_future_s: c.camera.max_future_s },
            max_instruction_bytes: c.instruction.max_bytes,
            shadow: c.policy.shadow,
        }
    }

    /// The mux's sources: the policy first (its timeout is the dead-man), then the others in order.
    pub(crate) fn mux_sources(&self) -> Vec<SourceSpec> {
        let policy =
            SourceSpec { name: "policy".into(), priority: self.policy_priority, timeout: self.command_timeout };
        std::iter::once(policy).chain(self.sources.iter().cloned()).collect()
    }
}

/// The mux source of the `i`-th entry of `mux.sources` (the policy is source 0).
pub fn teleop_source(i: usize) -> SourceId {
    SourceId(i + 1)
}

/// The mux lock of the `i`-th entry of `mux.locks`.
pub fn lock_id(i: usize) -> LockId {
    LockId(i)
}

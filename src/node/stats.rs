//! One policy run as `~/inference_stats` records it, for `ros2 bag record` and `mobile_vla_report`.
//!
//! Owns the `InferenceStats` message of a run: its frame and stamps, the
//! policy and provider, how the run ended, per-stage times and whether (and
//! as which command) its result went out. It formats what happened; it
//! decides nothing.

use std::time::Duration;

use mobile_vla_core::control::{RunOutcome, RunResult};
use mobile_vla_core::shadow::Agreement;
use r2r::{mobile_vla_msgs::msg as vla, std_msgs::msg as std_msg};

use crate::command_out::twist;
use crate::inference::RunReport;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What happened to the run besides itself.
pub struct Context {
    /// The `cmd_vel` sequence number of its command and the frame stamp to
    /// publish latency (ms), when its result drove.
    pub drove: Option<(u64, f64)>,
    pub fallback_active: bool,
    /// Frames dropped since the last run reported.
    pub dropped: u64,
    /// In shadow mode, how the proposals agree with what drives.
    pub shadow: Option<Agreement>,
}

pub fn message(r: &RunReport, result: &RunResult, c: Context) -> vla::InferenceStats {
    let t = &r.run.timings;
    let outcome = match &result.outcome {
        RunOutcome::Action { .. } => vla::InferenceStats::OUTCOME_OK as u8,
        RunOutcome::NonFinite => vla::InferenceStats::OUTCOME_INVALID_OUTPUT as u8,
        RunOutcome::Cancelled => vla::InferenceStats::OUTCOME_TIMEOUT as u8,
        RunOutcome::Error(_) => vla::InferenceStats::OUTCOME_ERROR as u8,
    };
    let (command_seq, stamp_to_publish_ms) = c.drove.unwrap_or((0, 0.0));
    let agreement = c.shadow.unwrap_or_default();
    vla::InferenceStats {
        header: std_msg::Header { stamp: r.stamp.clone(), frame_id: r.frame_id.clone() },
        frame_seq: r.frame_seq,
        command_seq,
        policy: result.role.name().into(),
        execution_provider: r.provider.clone(),
        fallback_active: c.fallback_active,
        outcome,
        frame_age_ms: r.run.frame_age_s * 1e3,
        preprocess_ms: ms(t.preprocess),
        inference_ms: ms(t.inference),
        postprocess_ms: ms(t.postprocess),
        total_ms: ms(result.latency),
        stamp_to_publish_ms,
        frames_dropped: c.dropped.min(u32::MAX as u64) as u32,
        action: r.run.result.as_ref().map(|a| twist(a.velocity())).unwrap_or_default(),
        shadow: c.shadow.is_some(),
        shadow_samples: agreement.samples as u32,
        shadow_mae: agreement.mae.to_vec(),
        shadow_sign_agreement: agreement.sign_agreement.to_vec(),
    }
}

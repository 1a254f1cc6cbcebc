//! The shell's state between events: the pipeline, and the handles that carry its orders out.
//!
//! Owns the [`Pipeline`] (every decision), the publishers, the inference
//! workers, what the node knows of each policy for `~/status`, the
//! parameters as `ros2 param` sees them, the camera monitor and the telemetry
//! counters. Each handler passes one event to the pipeline and carries out
//! the [`Orders`] it returns; none of them decides what may drive.

use std::sync::Arc;
use std::time::Instant;

use mobile_vla_core::camera_rate::CameraMonitor;
use mobile_vla_core::control::{ControlConfig, Reason, RunResult, StatusView};
use mobile_vla_core::params::{Change, ParamTable};
use mobile_vla_core::pipeline::{Epoch, Order, Orders, Pipeline};
use mobile_vla_core::vocab::{ByRole, Role};
use tracing::{info, warn};

use super::io::Outputs;
use super::managed::Managed;
use super::stats;
use super::workers::Workers;
use crate::camera_frame::Frame;
use crate::diagnostics::{self, PolicyInfo};
use crate::inference::{Event, RunReport, What};
use crate::ros_clock::{stamp_s, NodeClock};

/// What the node counts for its telemetry, beside the pipeline.
pub struct Telemetry {
    /// Commands published on `cmd_vel` so far.
    pub command_seq: u64,
    /// Frames dropped by the workers since the last run was reported.
    pub dropped_pending: u64,
    pub last_status: Option<StatusView>,
    /// The camera's rate and the frames it lost, for /diagnostics.
    pub camera: CameraMonitor,
    pub camera_topic: String,
}

pub struct Shell {
    pub pipeline: Pipeline<Arc<Frame>>,
    pub out: Outputs,
    pub clock: NodeClock,
    pub workers: Workers,
    pub info: ByRole<PolicyInfo>,
    /// The parameters, as `ros2 param` sees and sets them.
    pub params: ParamTable,
    /// `managed: true`: the lifecycle state and a configure in progress.
    pub managed: Option<Managed>,
    pub telemetry: Telemetry,
}

impl Shell {
    /// Carries out what the pipeline ordered, then says so on `~/status` if it changed.
    pub fn apply(&mut self, orders: Orders<Arc<Frame>>) {
        self.carry_out(orders);
        self.publish_status(true);
    }

    fn carry_out(&mut self, orders: Orders<Arc<Frame>>) {
        for order in orders.list {
            match order {
                Order::Start { role, epoch, task } => {
                    self.workers.start(role, epoch, task, self.pipeline.controller().freshness())
                }
                Order::Task { role, task } => self.workers.task(role, task),
                Order::Frame { role, seq, frame } => self.workers.frame(role, seq, frame),
                Order::Publish(v) => match self.out.commands.publish(v) {
                    Ok(()) => self.telemetry.command_seq += 1,
                    Err(e) => warn!("publishing the command failed: {e}"),
                },
                Order::Diagnostics => self.publish_diagnostics(),
            }
        }
    }

    pub fn on_frame(&mut self, frame: Frame) {
        let now = Instant::now();
        let t = &mut self.telemetry;
        if let Some(warning) = t.camera.frame(now, stamp_s(&frame.header.stamp), frame.data().len()) {
            warn!(camera = %t.camera_topic, "{warning}");
        }
        let orders = self.pipeline.frame(Arc::new(frame), now);
        self.carry_out(orders);
    }

    /// Every tick: cancel runs past the hard timeout (hangs), then publish.
    pub fn on_tick(&mut self) {
        for role in self.workers.cancel_overdue(self.pipeline.hard_timeout()) {
            let orders = self.pipeline.run_cancelled(role, Instant::now());
            self.apply(orders);
        }
        let orders = self.pipeline.tick(Instant::now(), self.clock.now_s());
        self.apply(orders);
    }

    /// Parameters accepted at runtime take effect now: each change is logged once.
    pub fn apply_params(&mut self, changes: &[Change]) {
        for c in changes {
            info!(parameter = %c.name, "parameter changed: {} -> {}", c.old, c.new);
        }
        self.pipeline.reconfigure(ControlConfig::from_config(self.params.config()), Instant::now());
    }

    pub fn publish_status(&mut self, only_if_changed: bool) {
        let view = self.pipeline.controller().status();
        let last = &self.telemetry.last_status;
        let changed = last.as_ref() != Some(&view);
        if only_if_changed && !changed {
            return;
        }
        if changed && last.as_ref().is_none_or(|l| (l.state, &l.reason) != (view.state, &view.reason)) {
            if view.reason == Reason::None {
                info!(state = view.state.as_str(), "status");
            } else {
                info!(state = view.state.as_str(), reason = %view.reason, "status");
            }
        }
        let lifecycle = self.managed.as_ref().map(|m| m.lifecycle.state());
        let msg = diagnostics::status(self.clock.stamp(), &view, self.pipeline.controller(), &self.info, lifecycle);
        self.telemetry.last_status = Some(view);
        if let Err(e) = self.out.status.publish(&msg) {
            warn!("publishing ~/status failed: {e}");
        }
    }

    pub fn publish_diagnostics(&mut self) {
        let t = &mut self.telemetry;
        let camera = t.camera.report(Instant::now());
        let msg = diagnostics::diagnostics(
            self.clock.stamp(),
            self.pipeline.controller(),
            &self.info,
            &t.camera_topic,
            &camera,
        );
        if let Err(e) = self.out.diagnostics.publish(&msg) {
            warn!("publishing /diagnostics failed: {e}");
        }
    }

    /// A worker's event; one of a worker that was stopped since is dropped.
    pub async fn on_event(&mut self, ev: Event) {
        let Event { role, epoch, what } = ev;
        if !self.pipeline.is_current(role, epoch) {
            if matches!(what, What::Loaded { .. } | What::LoadFailed(_) | What::Unreachable(_)) {
                info!(policy = %role, "a stopped worker's load (or connection attempt) ended: ignored");
            }
            return;
        }
        let now = Instant::now();
        let loaded = match what {
            What::Loaded { providers, loaded } => {
                info!(
                    policy = %role,
                    execution_provider = %providers.main(),
                    onnxruntime = %loaded.runtime.version,
                    library = %loaded.runtime.library.display(),
                    "policy loaded: {}",
                    providers.describe(&loaded.runtime.version)
                );
                if loaded.stand_in {
                    warn!(policy = %role, "this is a STAND-IN model, not a trained policy: do not drive a real robot with it");
                }
                for w in &loaded.windows {
                    info!(policy = %role, "frame window {w}");
                }
                if !loaded.absent_axes.is_empty() {
                    info!(
                        policy = %role,
                        "this model commands {}; {} stays 0",
                        loaded.commanded_axes.join(", "),
                        loaded.absent_axes.join(" and ")
                    );
                }
                if !loaded.takes_instruction {
                    info!(policy = %role, "this model reads no instruction text: it drives only while an instruction is set, and ignores its words");
                }
                self.info[role].loaded_as(providers, loaded);
                Some(Ok(()))
            }
            What::LoadFailed(error) => Some(Err(error)),
            What::Unreachable(why) => {
                if let Some(orders) = self.pipeline.unreachable(role, epoch, &why, now) {
                    self.apply(orders);
                    // Not a failed configure: the fallback drives while the worker keeps trying.
                    self.configure_progress(role, true).await;
                }
                None
            }
            What::Skipped { reason, dropped } => {
                self.telemetry.dropped_pending += dropped;
                if let Some(orders) = self.pipeline.skipped(role, epoch, &reason, now) {
                    self.apply(orders);
                }
                None
            }
            What::Died(why) => {
                if let Some(orders) = self.pipeline.died(role, epoch, &why, now) {
                    self.apply(orders);
                }
                None
            }
            What::Ran(report) => {
                self.on_run(role, epoch, *report);
                None
            }
        };
        if let Some(result) = loaded {
            let ok = result.is_ok();
            if let Some(orders) = self.pipeline.loaded(role, epoch, result, now) {
                self.apply(orders);
                self.configure_progress(role, ok).await;
            }
        }
    }

    fn on_run(&mut self, role: Role, epoch: Epoch, r: RunReport) {
        let result = RunResult {
            role,
            generation: r.run.generation,
            started: r.run.started,
            stamp_s: stamp_s(&r.stamp).unwrap_or(0.0),
            latency: r.run.timings.preprocess + r.run.timings.inference + r.run.timings.postprocess,
            outcome: r.run.outcome(),
        };
        let Some(orders) = self.pipeline.ran(epoch, &result, self.clock.now_s(), Instant::now()) else {
            return;
        };
        let drove = orders.drove;
        if let Some(v) = orders.proposed {
            self.out.proposals.publish(&r.stamp, &r.frame_id, v);
        }
        self.apply(orders);
        let context = stats::Context {
            drove: drove.then(|| (self.telemetry.command_seq, (self.clock.now_s() - result.stamp_s) * 1e3)),
            fallback_active: self.pipeline.controller().watchdog().active() == Some(Role::Fallback),
            dropped: std::mem::take(&mut self.telemetry.dropped_pending) + r.dropped,
            shadow: self.pipeline.controller().shadow(),
        };
        let msg = stats::message(&r, &result, context);
        if let Err(e) = self.out.stats.publish(&msg) {
            warn!("publishing ~/inference_stats failed: {e}");
        }
    }
}

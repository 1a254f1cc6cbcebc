//! The async ROS shell of the node: moves messages between rcl and the cores.
//!
//! Owns the subscriptions, publishers, the rcl spin thread, the inference
//! threads (hybrid and pure) and the shutdown sequence. It decides nothing
//! itself: every event goes to the control core ([`Controller`]), and the shell
//! carries out the [`Effects`] it returns (publish this command, start that
//! worker, forward the instruction). Whatever way it ends, a panic included,
//! its last word to the robot is zero velocity.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{select_all, BoxStream, LocalBoxStream};
use futures::StreamExt;
use mobile_vla_core::camera_rate::{CameraMonitor, Transport as CameraTransport};
use mobile_vla_core::command_mux::{LockId, LockSpec, SourceId, SourceSpec, Velocity};
use mobile_vla_core::config::{Config, ModelConfig, Transport};
use mobile_vla_core::control::{
    ControlConfig, Controller, Effects, FallbackMode, Freshness, RunOutcome, RunResult, StatusView,
};
use mobile_vla_core::lifecycle::{Lifecycle, Outcome, Work};
use mobile_vla_core::limits::Limits;
use mobile_vla_core::params::{Change, Check, ParamTable};
use mobile_vla_core::watchdog::{ByRole, Role, WatchdogConfig};
use r2r::{
    diagnostic_msgs::msg::DiagnosticArray, geometry_msgs::msg as geo, lifecycle_msgs::srv::ChangeState,
    mobile_vla_msgs::msg as vla, sensor_msgs::msg as sensor, std_msgs::msg as std_msg, std_srvs::srv::SetBool,
    QosProfile, ServiceRequest,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::camera_frame::Frame;
use crate::command_out::{from_twist, twist, CommandPublisher};
use crate::diagnostics::{self, PolicyInfo};
use crate::inference::{self, Event, FrameInbox, RunReport, RunWatch, SeqFrame, WorkerConfig};
use crate::lifecycle_node::{self, LifecycleServices, Request as LifecycleRequest};
use crate::param_service::ParamServices;
use crate::ros_clock::{stamp_s, NodeClock};

/// How long the final zero command is given to reach reliable subscribers
/// before the node's publishers are torn down.
const FINAL_ZERO_GRACE: Duration = Duration::from_millis(300);

/// Spins rcl on its own thread until told to stop; gives the node back on join
/// so publishers stay valid until the very end.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<r2r::Node>,
}

impl Spinner {
    fn start(mut node: r2r::Node) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rcl-spin".into())
            .spawn(move || {
                // rcl_wait returns as soon as anything is ready; the timeout only
                // bounds how late the stop flag is seen (and each wake-up rebuilds
                // the wait set: at idle, that is most of the node's CPU time).
                while !flag.load(Ordering::Relaxed) {
                    node.spin_once(Duration::from_millis(100));
                }
                node
            })
            .expect("spawning the rcl spin thread");
        Self { stop, thread }
    }

    fn stop(self) -> Option<r2r::Node> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok()
    }
}

/// Publishes zero velocity when dropped, unless disarmed: on a panic that
/// unwinds through the shell, the robot still gets its final zero.
struct FinalZero {
    commands: Rc<CommandPublisher>,
    armed: bool,
}

impl Drop for FinalZero {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        error!("the node is failing: sending zero velocity");
        if let Err(e) = self.commands.publish(Velocity::ZERO) {
            error!("publishing the final zero command failed: {e}");
        }
        std::thread::sleep(FINAL_ZERO_GRACE);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An inference thread and the handles to feed and supervise it.
struct Worker {
    inbox: Arc<FrameInbox>,
    watch: Arc<RunWatch>,
    thread: JoinHandle<()>,
}

/// The shell's handles and what it publishes; every decision is `ctl`'s.
struct Shell {
    ctl: Controller,
    commands: Rc<CommandPublisher>,
    status_pub: r2r::Publisher<vla::Status>,
    stats_pub: r2r::Publisher<vla::InferenceStats>,
    diag_pub: r2r::Publisher<DiagnosticArray>,
    clock: NodeClock,
    hard_timeout: Duration,
    workers: ByRole<Option<Worker>>,
    /// Worker configurations not started yet (a lazily loaded fallback).
    pending: ByRole<Option<WorkerConfig>>,
    events_tx: mpsc::UnboundedSender<Event>,
    info: ByRole<PolicyInfo>,
    frame_seq: u64,
    /// The newest frame, handed to a policy that takes over so it need not
    /// wait for the next one.
    newest: Option<Arc<Frame>>,
    command_seq: u64,
    dropped_pending: u64,
    last_status: Option<StatusView>,
    /// The camera's rate and the frames it lost, for /diagnostics.
    camera: CameraMonitor,
    camera_topic: String,
    /// The parameters, as `ros2 param` sees and sets them.
    params: ParamTable,
    /// The workers' freshness rule, which `camera.max_age_s` changes at runtime.
    freshness: Arc<Mutex<Freshness>>,
    /// `managed: true`: the lifecycle state, the workers a configure starts,
    /// and a configure waiting for its models' loads.
    managed: Option<Managed>,
}

/// A managed node's state beside the control core.
struct Managed {
    lifecycle: Lifecycle,
    services: LifecycleServices,
    /// Worker configurations, to start again after a cleanup.
    workers: ByRole<Option<WorkerConfig>>,
    /// What a configure starts (the control core's start-up effects).
    starts: Vec<Role>,
    /// A configure waiting for these policies' loads to end.
    configuring: Option<(ServiceRequest<ChangeState::Service>, Vec<Role>)>,
}

impl Shell {
    /// Carries out what the core decided.
    fn apply(&mut self, fx: Effects) {
        if let Some(control) = fx.instruction {
            for w in self.workers.0.iter().flatten() {
                w.inbox.put_control(control.clone());
            }
        }
        for role in fx.start {
            self.spawn_worker(role);
        }
        if let (Some(role), Some(frame)) = (fx.hand_newest_to, &self.newest) {
            if let Some(w) = &self.workers[role] {
                w.inbox.put_frame(SeqFrame { seq: self.frame_seq, frame: frame.clone() });
            }
        }
        if let Some(v) = fx.publish {
            match self.commands.publish(v) {
                Ok(()) => self.command_seq += 1,
                Err(e) => warn!("publishing the command failed: {e}"),
            }
        }
        if fx.diagnostics {
            self.publish_diagnostics();
        }
        self.publish_status(true);
    }

    fn spawn_worker(&mut self, role: Role) {
        let Some(cfg) = self.pending[role].take() else {
            return;
        };
        let inbox: Arc<FrameInbox> = Arc::default();
        inbox.put_control(self.ctl.task());
        let watch: Arc<RunWatch> = Arc::default();
        let thread = inference::spawn(cfg, inbox.clone(), watch.clone(), self.events_tx.clone());
        self.workers[role] = Some(Worker { inbox, watch, thread });
    }

    fn on_frame(&mut self, frame: Frame) {
        self.frame_seq += 1;
        let now = Instant::now();
        if let Some(warning) = self.camera.frame(now, stamp_s(&frame.header.stamp), frame.data().len()) {
            warn!(camera = %self.camera_topic, "{warning}");
        }
        let frame = Arc::new(frame);
        self.newest = Some(frame.clone());
        for (role, w) in self.workers.iter() {
            if let Some(w) = w {
                if self.ctl.wants_frame(role, now) {
                    w.inbox.put_frame(SeqFrame { seq: self.frame_seq, frame: frame.clone() });
                }
            }
        }
    }

    /// Every tick: cancel runs past the hard timeout (hangs), then publish.
    fn on_tick(&mut self) {
        for role in Role::ALL {
            let hung = self.workers[role].as_ref().is_some_and(|w| w.watch.cancel_if_overdue(self.hard_timeout));
            if hung {
                let fx = self.ctl.run_cancelled(role, Instant::now());
                self.apply(fx);
            }
        }
        let fx = self.ctl.tick(Instant::now(), self.clock.now_s());
        self.apply(fx);
    }

    /// Parameters accepted at runtime take effect now: each change is logged once.
    fn apply_params(&mut self, changes: &[Change]) {
        for c in changes {
            info!(parameter = %c.name, "parameter changed: {} -> {}", c.old, c.new);
        }
        let config = self.params.config();
        self.ctl.reconfigure(control_config(config), Instant::now());
        *self.freshness.lock().unwrap_or_else(|e| e.into_inner()) =
            Freshness { max_age_s: config.camera.max_age_s, max_future_s: config.camera.max_future_s };
        self.hard_timeout = Duration::from_secs_f64(config.watchdog.hard_timeout_s);
    }

    fn publish_status(&mut self, only_if_changed: bool) {
        let view = self.ctl.status();
        let changed = self.last_status.as_ref() != Some(&view);
        if only_if_changed && !changed {
            return;
        }
        if changed && self.last_status.as_ref().is_none_or(|l| (l.state, &l.reason) != (view.state, &view.reason)) {
            if view.reason.is_empty() {
                info!(state = view.state.as_str(), "status");
            } else {
                info!(state = view.state.as_str(), reason = %view.reason, "status");
            }
        }
        let lifecycle = self.managed.as_ref().map(|m| m.lifecycle.state());
        let msg = diagnostics::status(self.clock.stamp(), &view, &self.ctl, &self.info, lifecycle);
        self.last_status = Some(view);
        if let Err(e) = self.status_pub.publish(&msg) {
            warn!("publishing ~/status failed: {e}");
        }
    }

    fn publish_diagnostics(&mut self) {
        let camera = self.camera.report(Instant::now());
        let msg = diagnostics::diagnostics(self.clock.stamp(), &self.ctl, &self.info, &self.camera_topic, &camera);
        if let Err(e) = self.diag_pub.publish(&msg) {
            warn!("publishing /diagnostics failed: {e}");
        }
    }

    fn on_event(&mut self, ev: Event) {
        let loaded = match &ev {
            Event::Loaded { role, .. } => Some((*role, true)),
            Event::LoadFailed { role, .. } => Some((*role, false)),
            _ => None,
        };
        self.on_worker_event(ev);
        if let Some((role, ok)) = loaded {
            self.configure_progress(role, ok);
        }
    }

    fn on_worker_event(&mut self, ev: Event) {
        let now = Instant::now();
        let fx = match ev {
            Event::Loaded { role, providers, runtime, stand_in, takes_instruction } => {
                info!(
                    policy = %role,
                    execution_provider = %providers.main(),
                    onnxruntime = %runtime.version,
                    library = %runtime.library.display(),
                    "policy loaded: {}",
                    providers.describe(&runtime.version)
                );
                if stand_in {
                    warn!(policy = %role, "this is a STAND-IN model, not a trained policy: do not drive a real robot with it");
                }
                if !takes_instruction {
                    info!(policy = %role, "this model reads no instruction text: it drives only while an instruction is set, and ignores its words");
                }
                let info = &mut self.info[role];
                info.loaded = true;
                info.takes_instruction = takes_instruction;
                info.runtime = Some(runtime);
                info.provider = providers.main();
                info.providers = Some(providers);
                self.ctl.loaded(role, Ok(()), now)
            }
            Event::LoadFailed { role, error } => self.ctl.loaded(role, Err(error), now),
            Event::Skipped { role, reason, dropped } => {
                self.dropped_pending += dropped;
                self.ctl.skipped(role, &reason, now)
            }
            Event::Died { role, why } => self.ctl.worker_exited(role, &why, now),
            Event::Ran(report) => return self.on_run(*report),
        };
        self.apply(fx);
    }

    /// A lifecycle request: queries are answered at once, a transition is
    /// carried out (a configure answers when its models' loads have ended).
    /// Returns false when the node is to end (shutdown).
    fn on_lifecycle(&mut self, req: LifecycleRequest) -> bool {
        let Some(m) = &mut self.managed else { return true };
        let Some(req) = m.services.answer(req, &m.lifecycle) else { return true };
        let t = &req.message.transition;
        let (work, event) = match m.lifecycle.begin(t.id, &t.label) {
            Ok(begun) => begun,
            Err(why) => {
                warn!("lifecycle: {why}");
                lifecycle_node::respond(req, false);
                return true;
            }
        };
        info!(transition = event.transition.label, "lifecycle: {} -> {}", event.start, event.goal);
        m.services.publish(event, self.clock.now_ns());
        let now = Instant::now();
        match work {
            Work::Configure => {
                let roles = std::mem::take(&mut m.starts);
                m.configuring = Some((req, roles.clone()));
                self.apply(Effects { start: roles, ..Default::default() });
                return true;
            }
            Work::Activate => {
                let fx = self.ctl.set_active(true, now);
                self.apply(fx);
            }
            Work::Deactivate => {
                let fx = self.ctl.set_active(false, now);
                self.apply(fx);
            }
            Work::Cleanup => self.unload(),
            Work::Shutdown => {
                if self.ctl.is_active() {
                    let fx = self.ctl.set_active(false, now);
                    self.apply(fx);
                }
                self.stop_workers();
            }
        }
        self.finish_transition(Outcome::Success);
        lifecycle_node::respond(req, true);
        work != Work::Shutdown
    }

    /// A policy's load ended: a configure waiting for it may be done.
    fn configure_progress(&mut self, role: Role, ok: bool) {
        let Some(m) = &mut self.managed else { return };
        let Some((_, waiting)) = &mut m.configuring else { return };
        waiting.retain(|r| *r != role);
        // The primary policy must load; the fallback may fail (the watchdog says so).
        let failed = !ok && role == Role::Primary;
        if !failed && !waiting.is_empty() {
            return;
        }
        let (req, _) = m.configuring.take().expect("checked above");
        if failed {
            warn!("lifecycle: configure failed: the hybrid policy did not load; the node stays unconfigured");
            self.unload();
            self.finish_transition(Outcome::Failure);
            lifecycle_node::respond(req, false);
        } else {
            self.finish_transition(Outcome::Success);
            lifecycle_node::respond(req, true);
        }
    }

    fn finish_transition(&mut self, outcome: Outcome) {
        let now_ns = self.clock.now_ns();
        let Some(m) = &mut self.managed else { return };
        if let Some(e) = m.lifecycle.finish(outcome) {
            info!(transition = e.transition.label, "lifecycle: {} -> {}", e.start, e.goal);
            m.services.publish(e, now_ns);
        }
        self.publish_status(false);
    }

    /// Cleanup: the models unloaded, their memory returned, the control core as new and inactive.
    fn unload(&mut self) {
        self.stop_workers();
        let Some(m) = &mut self.managed else { return };
        self.pending = ByRole::new(m.workers[Role::Primary].clone(), m.workers[Role::Fallback].clone());
        let (mut ctl, start) = Controller::new(control_config(self.params.config()), Instant::now());
        let _ = ctl.set_active(false, Instant::now());
        m.starts = start.start;
        self.ctl = ctl;
        for info in self.info.0.iter_mut() {
            info.loaded = false;
            info.providers = None;
        }
        crate::heap::release_freed();
    }

    /// Ends every inference thread and waits for it (its session is dropped with it).
    fn stop_workers(&mut self) {
        let workers: Vec<Worker> = self.workers.0.iter_mut().filter_map(Option::take).collect();
        for w in &workers {
            w.inbox.close();
            w.watch.cancel_current();
        }
        for w in workers {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !w.thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if w.thread.is_finished() {
                let _ = w.thread.join();
            } else {
                warn!("an inference thread did not end within 5 s (a run stuck in ONNX Runtime)");
            }
        }
    }

    fn on_run(&mut self, r: RunReport) {
        let t = &r.timings;
        let total = t.preprocess + t.inference + t.postprocess;
        let result = RunResult {
            role: r.role,
            generation: r.generation,
            started: r.started,
            stamp_s: stamp_s(&r.stamp).unwrap_or(0.0),
            latency: total,
            outcome: r.outcome(),
        };
        let fx = self.ctl.ran(&result, self.clock.now_s(), Instant::now());
        let drove = fx.drove;
        self.apply(fx);
        let (command_seq, stamp_to_publish_ms) =
            if drove { (self.command_seq, (self.clock.now_s() - result.stamp_s) * 1e3) } else { (0, 0.0) };
        let outcome = match &result.outcome {
            RunOutcome::Action { .. } => vla::InferenceStats::OUTCOME_OK as u8,
            RunOutcome::NonFinite => vla::InferenceStats::OUTCOME_INVALID_OUTPUT as u8,
            RunOutcome::Cancelled => vla::InferenceStats::OUTCOME_TIMEOUT as u8,
            RunOutcome::Error(_) => vla::InferenceStats::OUTCOME_ERROR as u8,
        };
        let stats = vla::InferenceStats {
            header: std_msg::Header { stamp: r.stamp.clone(), frame_id: r.frame_id.clone() },
            frame_seq: r.frame_seq,
            command_seq,
            policy: r.role.name().into(),
            execution_provider: r.provider.clone(),
            fallback_active: self.ctl.watchdog().active() == Some(Role::Fallback),
            outcome,
            frame_age_ms: r.frame_age_s * 1e3,
            preprocess_ms: ms(t.preprocess),
            inference_ms: ms(t.inference),
            postprocess_ms: ms(t.postprocess),
            total_ms: ms(total),
            stamp_to_publish_ms,
            frames_dropped: (self.dropped_pending + r.dropped).min(u32::MAX as u64) as u32,
            action: r.result.as_ref().map(|a| twist(inference::velocity(a))).unwrap_or_default(),
        };
        self.dropped_pending = 0;
        if let Err(e) = self.stats_pub.publish(&stats) {
            warn!("publishing ~/inference_stats failed: {e}");
        }
    }
}

/// The next lifecycle request, or never for an unmanaged node.
async fn next_lifecycle(managed: &mut Option<Managed>) -> Option<LifecycleRequest> {
    match managed {
        Some(m) => m.services.requests.next().await,
        None => futures::future::pending().await,
    }
}

/// Resolved files the node needs, checked at start.
pub struct Files {
    pub hybrid_manifest: PathBuf,
    pub pure_manifest: PathBuf,
}

fn watchdog_config(c: &Config) -> WatchdogConfig {
    let w = &c.watchdog;
    WatchdogConfig {
        deadline: Duration::from_secs_f64(w.deadline_s),
        consecutive_misses: w.consecutive_misses,
        window_misses: w.window_misses,
        window: w.window,
        max_abs_action: w.max_abs_action,
        cooldown: Duration::from_secs_f64(w.cooldown_s),
        max_cooldown: Duration::from_secs_f64(w.max_cooldown_s),
        recovery_successes: w.recovery_successes,
        stable_after: Duration::from_secs_f64(w.stable_after_s),
        start_timeout: Duration::from_secs_f64(w.start_timeout_s),
    }
}

/// The control core's configuration; sources and locks keep the order of
/// `mux.sources` / `mux.locks`, so their ids are positions in those maps (+1
/// for sources: the policy is the first).
fn control_config(c: &Config) -> ControlConfig {
    let fallback = match (c.watchdog.fallback_enabled, c.watchdog.lazy_fallback) {
        (false, _) => FallbackMode::Disabled,
        (true, false) => FallbackMode::Eager,
        (true, true) => FallbackMode::Lazy,
    };
    ControlConfig {
        watchdog: watchdog_config(c),
        fallback,
        policy_priority: c.mux.autonomy_priority,
        command_timeout: Duration::from_secs_f64(c.policy.command_timeout_s),
        sources: c
            .mux
            .sources
            .iter()
            .map(|(name, s)| SourceSpec {
                name: name.clone(),
                priority: s.priority,
                timeout: Duration::from_secs_f64(s.timeout_s),
            })
            .collect(),
        locks: c
            .mux
            .locks
            .iter()
            .map(|(name, l)| LockSpec {
                name: name.clone(),
                priority: l.priority,
                timeout: (l.timeout_s > 0.0).then(|| Duration::from_secs_f64(l.timeout_s)),
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
    }
}

pub async fn run(mut node: r2r::Node, config: Config, files: Files, check: Check) -> anyhow::Result<()> {
    let clock = NodeClock::new(config.use_sim_time);
    // Best effort, depth 1: how rclcpp's time source subscribes.
    let mut sim_clock: BoxStream<'static, r2r::rosgraph_msgs::msg::Clock> = if config.use_sim_time {
        info!("use_sim_time: frame ages and stamps follow /clock");
        node.subscribe("/clock", QosProfile::default().best_effort().keep_last(1))
            .context("subscribing to /clock")?
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let camera_topic = config.camera.subscribed_topic();
    // Native subscriptions: the frame's bytes are read where rmw put them.
    let mut frames: LocalBoxStream<'static, Frame> = match config.camera.transport {
        Transport::Raw => node
            .subscribe_native::<sensor::Image>(&camera_topic, QosProfile::sensor_data())
            .with_context(|| format!("subscribing to {camera_topic}"))?
            .map(Frame::from_image)
            .boxed_local(),
        Transport::Compressed => node
            .subscribe_native::<sensor::CompressedImage>(&camera_topic, QosProfile::sensor_data())
            .with_context(|| format!("subscribing to {camera_topic}"))?
            .map(Frame::from_compressed)
            .boxed_local(),
    };
    let mut instructions = node
        .subscribe::<std_msg::String>(&config.instruction.topic, QosProfile::default())
        .with_context(|| format!("subscribing to {}", config.instruction.topic))?;
    let commands = Rc::new(
        CommandPublisher::new(&mut node, &config.output, clock.clone())
            .with_context(|| format!("advertising {}", config.output.topic))?,
    );
    let mut final_zero = FinalZero { commands: commands.clone(), armed: true };
    // Latched, so an operator's late `ros2 topic echo` still sees the current state.
    let status_pub = node
        .create_publisher::<vla::Status>("~/status", QosProfile::default().reliable().transient_local().keep_last(1))
        .context("advertising ~/status")?;
    // Reliable and deep, so `ros2 bag record` keeps every run.
    let stats_pub = node
        .create_publisher::<vla::InferenceStats>("~/inference_stats", QosProfile::default().reliable().keep_last(100))
        .context("advertising ~/inference_stats")?;
    let diag_pub = node
        .create_publisher::<DiagnosticArray>("/diagnostics", QosProfile::default().reliable().keep_last(10))
        .context("advertising /diagnostics")?;

    // Teleop and other command sources, and locks, as twist_mux has them.
    let mut sources: Vec<BoxStream<'static, (SourceId, Velocity)>> = Vec::new();
    for (i, (name, src)) in config.mux.sources.iter().enumerate() {
        let id = SourceId(i + 1);
        let qos = QosProfile::default().keep_last(1);
        let ctx = || format!("subscribing to {} (mux.sources.{name})", src.topic);
        sources.push(if src.stamped {
            node.subscribe::<geo::TwistStamped>(&src.topic, qos)
                .with_context(ctx)?
                .map(move |m| (id, from_twist(&m.twist)))
                .boxed()
        } else {
            node.subscribe::<geo::Twist>(&src.topic, qos).with_context(ctx)?.map(move |m| (id, from_twist(&m))).boxed()
        });
    }
    let mut locks: Vec<BoxStream<'static, (LockId, bool)>> = Vec::new();
    for (i, (name, lock)) in config.mux.locks.iter().enumerate() {
        // Reliable: an e-stop must not be lost.
        let stream = node
            .subscribe::<std_msg::Bool>(&lock.topic, QosProfile::default().reliable().keep_last(1))
            .with_context(|| format!("subscribing to {} (mux.locks.{name})", lock.topic))?;
        locks.push(stream.map(move |m| (LockId(i), m.data)).boxed());
    }
    let mut sources = select_all(sources);
    let mut locks = select_all(locks);
    let mut enable_autonomy = node
        .create_service::<SetBool::Service>("~/enable_autonomy", QosProfile::services_default())
        .context("creating ~/enable_autonomy")?;
    let mut system_control = node
        .subscribe::<std_msg::String>("~/system_control", QosProfile::default())
        .context("subscribing to ~/system_control")?;
    // Created once: a signal that arrives while the loop is busy is not lost.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let mut param_services = ParamServices::new(&mut node).context("creating the parameter services")?;
    let freshness = Arc::new(Mutex::new(Freshness {
        max_age_s: config.camera.max_age_s,
        max_future_s: config.camera.max_future_s,
    }));

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let library = Some(&config.policy.onnxruntime_library).filter(|s| !s.is_empty()).map(PathBuf::from);
    let worker_cfg = |role: Role, manifest: &PathBuf, model: &ModelConfig| WorkerConfig {
        role,
        manifest: manifest.clone(),
        model: model.clone(),
        onnxruntime_library: library.clone(),
        max_frame: (config.camera.max_width, config.camera.max_height),
        jpeg_scaling: config.camera.jpeg_scaling,
        resampling: config.camera.resampling,
        freshness: freshness.clone(),
        clock: clock.clone(),
    };
    let info = |manifest: &PathBuf, model: &ModelConfig| PolicyInfo {
        manifest: manifest.display().to_string(),
        requested: model.providers.iter().map(|p| p.ort_name().to_string()).collect(),
        ..Default::default()
    };
    let pending = ByRole::new(
        Some(worker_cfg(Role::Primary, &files.hybrid_manifest, &config.policy.hybrid)),
        Some(worker_cfg(Role::Fallback, &files.pure_manifest, &config.policy.pure)),
    );
    let (mut ctl, mut start) = Controller::new(control_config(&config), Instant::now());
    let managed = if config.managed {
        // Unconfigured: no models, nothing published, until ~/change_state configures and activates it.
        let _ = ctl.set_active(false, Instant::now());
        Some(Managed {
            lifecycle: Lifecycle::default(),
            services: LifecycleServices::new(&mut node).context("creating the lifecycle services")?,
            workers: ByRole::new(pending[Role::Primary].clone(), pending[Role::Fallback].clone()),
            starts: std::mem::take(&mut start.start),
            configuring: None,
        })
    } else {
        None
    };
    let mut shell = Shell {
        ctl,
        commands,
        status_pub,
        stats_pub,
        diag_pub,
        clock,
        hard_timeout: Duration::from_secs_f64(config.watchdog.hard_timeout_s),
        workers: ByRole::default(),
        pending,
        events_tx,
        info: ByRole::new(
            info(&files.hybrid_manifest, &config.policy.hybrid),
            info(&files.pure_manifest, &config.policy.pure),
        ),
        frame_seq: 0,
        newest: None,
        command_seq: 0,
        dropped_pending: 0,
        last_status: None,
        camera: CameraMonitor::new(CameraTransport {
            raw: config.camera.transport == Transport::Raw,
            dds_profile: std::env::var("FASTRTPS_DEFAULT_PROFILES_FILE").ok().filter(|p| !p.is_empty()),
        }),
        camera_topic: camera_topic.clone(),
        params: ParamTable::new(config.clone(), check),
        freshness,
        managed,
    };
    let managed = shell.managed.is_some();
    if managed {
        info!("managed node: unconfigured; configure and activate it through ~/change_state");
    } else {
        shell.apply(start);
    }
    info!(
        camera = %camera_topic,
        instruction = %config.instruction.topic,
        cmd_vel = %config.output.topic,
        "ready: zero velocity until a healthy policy, an instruction and fresh frames agree"
    );
    shell.publish_status(false);
    param_services.announce(&shell.params, shell.clock.stamp());
    let spinner = Spinner::start(node);

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.output.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut trim_tick = tokio::time::interval(crate::heap::TRIM_PERIOD);

    loop {
        tokio::select! {
            _ = tick.tick() => shell.on_tick(),
            _ = status_tick.tick() => {
                shell.publish_status(false);
                shell.publish_diagnostics();
            }
            _ = trim_tick.tick() => crate::heap::release_freed(),
            Some(frame) = frames.next() => shell.on_frame(frame),
            Some(t) = sim_clock.next() => shell.clock.set_sim_time(t.clock),
            Some(msg) = instructions.next() => {
                let fx = shell.ctl.instruction_received(&msg.data, Instant::now());
                shell.apply(fx);
            }
            Some(ev) = events.recv() => shell.on_event(ev),
            Some((id, v)) = sources.next() => shell.ctl.teleop(id, v, Instant::now()),
            Some((id, engaged)) = locks.next() => {
                let fx = shell.ctl.lock(id, engaged, Instant::now());
                shell.apply(fx);
            }
            Some(req) = enable_autonomy.next() => {
                let (fx, message) = shell.ctl.set_autonomy(req.message.data, Instant::now());
                shell.apply(fx);
                if let Err(e) = req.respond(SetBool::Response { success: true, message: message.into() }) {
                    warn!("answering ~/enable_autonomy failed: {e}");
                }
            }
            Some(req) = next_lifecycle(&mut shell.managed) => {
                if !shell.on_lifecycle(req) {
                    info!("lifecycle: shut down");
                    break;
                }
            }
            Some(req) = param_services.requests.next() => {
                let rate = shell.params.config().output.rate_hz;
                let ctl = &shell.ctl;
                let veto = |c: &Config| ctl.refuses(&control_config(c), Instant::now());
                let changes = param_services.handle(req, &mut shell.params, veto, shell.clock.stamp());
                if !changes.is_empty() {
                    shell.apply_params(&changes);
                    let new_rate = shell.params.config().output.rate_hz;
                    if new_rate != rate {
                        tick = tokio::time::interval(Duration::from_secs_f64(1.0 / new_rate));
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    }
                }
            }
            Some(msg) = system_control.next() => {
                let fx = shell.ctl.system_control(&msg.data, Instant::now());
                shell.apply(fx);
            }
            _ = sigint.recv() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
        }
    }

    // The last word to the robot is zero velocity.
    let workers: Vec<Worker> = shell.workers.0.iter_mut().filter_map(Option::take).collect();
    for w in &workers {
        w.inbox.close();
        w.watch.cancel_current();
    }
    final_zero.armed = false;
    if let Err(e) = shell.commands.publish(Velocity::ZERO) {
        warn!("publishing the final zero command failed: {e}");
    } else {
        info!(frames = shell.frame_seq, "published the final zero command");
    }
    tokio::time::sleep(FINAL_ZERO_GRACE).await;
    drop(shell);
    drop(final_zero);
    drop(spinner.stop());
    // A run stuck inside ONNX Runtime must not hold the process up.
    for w in workers {
        if w.thread.is_finished() {
            let _ = w.thread.join();
        }
    }
    Ok(())
}

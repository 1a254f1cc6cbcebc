//! The async ROS shell of the node: moves messages between rcl and the cores.
//!
//! Owns the subscriptions, publishers, the rcl spin thread, the inference
//! threads (hybrid and pure) and the shutdown sequence. It decides nothing
//! itself: the `Watchdog` says which policy's results may drive, the
//! `CommandMux` which source wins, the `OutputStage` what is published; with
//! no fresh, valid source that is zero.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::stream::{select_all, BoxStream};
use futures::StreamExt;
use mobile_vla_core::command_mux::{CommandMux, Decision, LockSpec, SourceSpec, Velocity};
use mobile_vla_core::config::{Config, Transport};
use mobile_vla_core::limits::{Limits, OutputStage};
use mobile_vla_core::throttle::Throttle;
use mobile_vla_core::watchdog::{Outcome, Role, Switch, Watchdog, WatchdogConfig};
use mobile_vla_policy::PolicyError;
use r2r::{
    diagnostic_msgs::msg::DiagnosticArray, geometry_msgs::msg as geo, mobile_vla_msgs::msg as vla,
    sensor_msgs::msg as sensor, std_msgs::msg as std_msg, std_srvs::srv::SetBool, QosProfile,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::command_out::{from_twist, twist, velocity, CommandPublisher};
use crate::diagnostics::{self, role_name, PolicyInfo, ROLES};
use crate::inference::{self, Event, Frame, FrameInbox, RunReport, RunWatch, SeqFrame, Skip, WorkerConfig};

/// How long the final zero command is given to reach reliable subscribers
/// before the node's publishers are torn down.
const FINAL_ZERO_GRACE: Duration = Duration::from_millis(300);

/// The autonomy source's index in the mux.
const POLICY: usize = 0;

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
                while !flag.load(Ordering::Relaxed) {
                    node.spin_once(Duration::from_millis(20));
                }
                node
            })
            .expect("spawning the rcl spin thread");
        Self { stop, thread }
    }

    fn stop(self) -> r2r::Node {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("rcl spin thread panicked")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn idx(r: Role) -> usize {
    match r {
        Role::Primary => 0,
        Role::Fallback => 1,
    }
}

/// An inference thread and the handles to feed and supervise it.
struct Worker {
    inbox: Arc<FrameInbox>,
    watch: Arc<RunWatch>,
    thread: JoinHandle<()>,
}

/// The shell's mutable state and everything it publishes.
struct Shell {
    commands: CommandPublisher,
    status_pub: r2r::Publisher<vla::Status>,
    stats_pub: r2r::Publisher<vla::InferenceStats>,
    diag_pub: r2r::Publisher<DiagnosticArray>,
    clock: r2r::Clock,
    max_instruction_bytes: usize,
    max_frame_age_s: f64,
    hard_timeout: Duration,
    workers: [Option<Worker>; 2],
    /// Worker configurations not started yet (a lazily loaded fallback).
    pending: [Option<WorkerConfig>; 2],
    events_tx: mpsc::UnboundedSender<Event>,
    watchdog: Watchdog,
    info: [PolicyInfo; 2],
    /// Source 0 is the policy; then the configured teleop sources.
    mux: CommandMux,
    stage: OutputStage,
    last_publish: Instant,
    decision: Decision,
    instruction: Option<String>,
    /// Why the active policy's latest frame did not drive, when it did not.
    hold_reason: Option<String>,
    frame_seq: u64,
    /// The newest frame, handed to a policy that takes over so it need not
    /// wait for the next one.
    newest: Option<Arc<Frame>>,
    command_seq: u64,
    dropped_pending: u64,
    /// (state, reason, active policy, source, lock) last published.
    last_status: Option<[String; 5]>,
    throttle: Throttle,
}

impl Shell {
    fn stamp(&mut self) -> r2r::builtin_interfaces::msg::Time {
        self.clock.get_now().map(|t| r2r::Clock::to_builtin_time(&t)).unwrap_or_default()
    }

    fn spawn_worker(&mut self, role: Role) {
        let Some(cfg) = self.pending[idx(role)].take() else { return };
        let watch = match RunWatch::new() {
            Ok(w) => Arc::new(w),
            Err(e) => {
                self.on_event(Event::LoadFailed { role, error: e.to_string() });
                return;
            }
        };
        let inbox: Arc<FrameInbox> = Arc::default();
        if self.instruction.is_some() {
            inbox.put_control(self.instruction.clone());
        }
        let thread = inference::spawn(cfg, inbox.clone(), watch.clone(), self.events_tx.clone());
        self.workers[idx(role)] = Some(Worker { inbox, watch, thread });
    }

    /// Decides, shapes and publishes the command for this instant.
    fn publish_command(&mut self) -> bool {
        let now = Instant::now();
        let d = self.mux.decide(now);
        // A lock that silences everything stops at once, without the ramp.
        let hard_stop = d.lock.is_some() && d.source.is_none();
        let out = self.stage.step(d.command, now.duration_since(self.last_publish), hard_stop);
        self.last_publish = now;
        let changed = d.source != self.decision.source || d.lock != self.decision.lock;
        self.decision = d;
        if changed {
            info!(
                source = self.decision.source.as_deref().unwrap_or("none"),
                lock = self.decision.lock.as_deref().unwrap_or("none"),
                "command source changed"
            );
            self.publish_status(true);
            self.publish_diagnostics();
        }
        match self.commands.publish(out) {
            Ok(()) => {
                self.command_seq += 1;
                true
            }
            Err(e) => {
                warn!("publishing the command failed: {e}");
                false
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) {
        self.frame_seq += 1;
        let now = Instant::now();
        let frame = Arc::new(frame);
        self.newest = Some(frame.clone());
        for role in ROLES {
            if let Some(w) = &self.workers[idx(role)] {
                if self.watchdog.wants_frames(role, now) {
                    w.inbox.put_frame(SeqFrame { seq: self.frame_seq, frame: frame.clone() });
                }
            }
        }
    }

    fn on_source(&mut self, i: usize, v: Velocity) {
        if let Err(refused) = self.mux.command(i, v, Instant::now()) {
            if let Some(n) = self.throttle.allow("non_finite_command", Instant::now()) {
                warn!(suppressed = n, "non-finite command refused, not forwarded: {refused:?}");
            }
        }
    }

    fn on_lock(&mut self, i: usize, engaged: bool) {
        self.mux.lock(i, engaged, Instant::now());
        // Engaging a lock takes effect now, not at the next tick.
        self.publish_command();
    }

    fn set_autonomy(&mut self, enabled: bool) -> String {
        let was = self.mux.is_enabled(POLICY);
        self.mux.set_enabled(POLICY, enabled);
        let msg = match (was, enabled) {
            (true, false) => "autonomy paused: the policy's commands are ignored",
            (false, true) => "autonomy resumed",
            (_, true) => "autonomy already running",
            (_, false) => "autonomy already paused",
        };
        info!("{msg}");
        self.publish_command();
        self.publish_status(true);
        msg.to_string()
    }

    /// The original team's start / stop / pause / resume commands.
    fn on_system_control(&mut self, cmd: &str) {
        match cmd.trim().to_ascii_lowercase().as_str() {
            "start" | "resume" => {
                self.set_autonomy(true);
            }
            "pause" => {
                self.set_autonomy(false);
            }
            "stop" => {
                self.set_autonomy(false);
                self.on_instruction(String::new());
            }
            other => warn!("unknown system_control command '{other}' (start, stop, pause, resume)"),
        }
    }

    fn on_instruction(&mut self, text: String) {
        let trimmed = text.trim();
        let next = if trimmed.is_empty() {
            warn!("empty instruction: the robot holds still until a task arrives");
            None
        } else if text.len() > self.max_instruction_bytes {
            warn!(
                bytes = text.len(),
                max = self.max_instruction_bytes,
                "instruction longer than instruction.max_bytes rejected: the robot holds still"
            );
            None
        } else {
            info!(instruction = %trimmed, "new instruction");
            Some(trimmed.to_string())
        };
        if next != self.instruction {
            // A new task must not be driven by the old task's last command.
            self.mux.clear(POLICY);
            self.instruction = next.clone();
            for w in self.workers.iter().flatten() {
                w.inbox.put_control(next.clone());
            }
        }
        self.publish_status(true);
    }

    /// Every tick: cancel runs that passed the hard timeout (a hang).
    fn check_hangs(&mut self) {
        for role in ROLES {
            let Some(w) = &self.workers[idx(role)] else { continue };
            let hung = w.watch.running_for().is_some_and(|t| t > self.hard_timeout);
            if hung && w.watch.cancel() {
                warn!(policy = %role_name(role), "run exceeded the hard timeout: cancelling it");
                // Counted now: a run that never comes back must still fail its policy.
                let v = self.watchdog.verdict(role, Outcome::Timeout, Instant::now());
                self.after_verdict(v.switch);
            }
        }
    }

    fn after_verdict(&mut self, switch: Option<Switch>) {
        if let Some(s) = switch {
            match s.to {
                Some(Role::Primary) => info!("policy switch: {s}"),
                Some(Role::Fallback) => warn!("policy switch: {s}"),
                None => error!("policy switch: {s}; the robot is held still"),
            }
            // The new policy must produce its own command before anything drives;
            // it starts on the newest frame (its own staleness check still applies).
            self.mux.clear(POLICY);
            if let (Some(to), Some(frame)) = (s.to, &self.newest) {
                if let Some(w) = &self.workers[idx(to)] {
                    w.inbox.put_frame(SeqFrame { seq: self.frame_seq, frame: frame.clone() });
                }
            }
            if s.to.is_none() || s.to == Some(Role::Fallback) {
                // A lazily loaded fallback starts loading the first time it is needed.
                self.spawn_worker(Role::Fallback);
            }
            self.publish_command();
            self.publish_diagnostics();
        }
        self.publish_status(true);
    }

    fn state_and_reason(&self) -> (String, String) {
        let d = &self.decision;
        let policy_reason = || {
            if let Some(r) = self.watchdog.reason() {
                r
            } else if self.instruction.is_none() {
                Skip::NoInstruction.to_string()
            } else if let Some(r) = &self.hold_reason {
                r.clone()
            } else if d.source.is_none() {
                "waiting for camera frames".into()
            } else {
                String::new()
            }
        };
        let starting = ROLES.iter().all(|r| self.watchdog.report(*r).state == "loading")
            || (self.watchdog.active().is_none() && self.watchdog.report(Role::Primary).state == "loading");
        // The values of Status.msg's STATE_* constants.
        let (state, reason) = match (&d.source, &d.lock) {
            (None, Some(lock)) => ("safe_stop", format!("lock '{lock}' engaged")),
            (Some(src), _) if src != "policy" => ("running", String::new()),
            _ if !self.mux.is_enabled(POLICY) => ("paused", "autonomy paused".to_string()),
            _ if starting => ("starting", "loading the policies".to_string()),
            _ => match policy_reason() {
                r if r.is_empty() => ("running", r),
                r => ("safe_stop", r),
            },
        };
        (state.to_string(), reason)
    }

    fn publish_status(&mut self, only_if_changed: bool) {
        let (state, reason) = self.state_and_reason();
        let active_policy = self.watchdog.active().map(role_name).unwrap_or_default().to_string();
        let source = self.decision.source.clone().unwrap_or_default();
        let lock = self.decision.lock.clone().unwrap_or_default();
        let key = [state.clone(), reason.clone(), active_policy.clone(), source.clone(), lock.clone()];
        let changed = self.last_status.as_ref() != Some(&key);
        if only_if_changed && !changed {
            return;
        }
        if changed && self.last_status.as_ref().is_none_or(|k| k[..2] != key[..2]) {
            if reason.is_empty() {
                info!(state = %state, "status");
            } else {
                info!(state = %state, reason = %reason, "status");
            }
        }
        self.last_status = Some(key);
        let status = vla::Status {
            stamp: self.stamp(),
            state,
            reason,
            active_policy,
            active_source: source,
            active_lock: lock,
            policies: ROLES.iter().map(|r| diagnostics::policy_status(&self.watchdog, *r, &self.info[idx(*r)])).collect(),
        };
        if let Err(e) = self.status_pub.publish(&status) {
            warn!("publishing ~/status failed: {e}");
        }
    }

    fn publish_diagnostics(&mut self) {
        let stamp = self.stamp();
        let msg = diagnostics::diagnostics(stamp, &self.watchdog, &self.info, &self.decision, !self.mux.is_enabled(POLICY));
        if let Err(e) = self.diag_pub.publish(&msg) {
            warn!("publishing /diagnostics failed: {e}");
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Loaded { role, provider, stand_in } => {
                let name = role_name(role);
                info!(policy = %name, execution_provider = %provider, "policy loaded");
                if stand_in {
                    warn!(policy = %name, "this is a STAND-IN model, not a trained policy: do not drive a real robot with it");
                }
                let info = &mut self.info[idx(role)];
                info.loaded = true;
                info.provider = provider.split(' ').next().unwrap_or_default().to_string();
                let s = self.watchdog.loaded(role, Ok(()), Instant::now());
                self.after_verdict(s);
            }
            Event::LoadFailed { role, error } => {
                let name = role_name(role);
                error!(policy = %name, "POLICY NOT LOADED ({name}): {error}");
                let s = self.watchdog.loaded(role, Err(error), Instant::now());
                if role == Role::Primary {
                    self.spawn_worker(Role::Fallback);
                }
                self.after_verdict(s);
            }
            Event::Skipped { role, reason, dropped } => {
                self.dropped_pending += dropped;
                if self.watchdog.active() != Some(role) {
                    return;
                }
                self.mux.clear(POLICY);
                let kind = match &reason {
                    Skip::BadFrame(_) => "bad_frame",
                    Skip::Stale { .. } | Skip::Unstamped => "stale",
                    Skip::NoInstruction | Skip::NotLoaded => "idle",
                };
                if kind != "idle" {
                    if let Some(n) = self.throttle.allow(kind, Instant::now()) {
                        warn!(suppressed = n, "{reason}; no command from this frame");
                    }
                    self.hold_reason = Some(reason.to_string());
                }
                self.publish_status(true);
            }
            Event::Ran(report) => self.on_run(*report),
        }
    }

    fn on_run(&mut self, r: RunReport) {
        let now = Instant::now();
        let t = &r.timings;
        let total = t.preprocess + t.inference + t.postprocess;
        let (outcome, stats_outcome) = match &r.result {
            Ok(a) => {
                let max_abs = [a.linear_x, a.linear_y, a.angular_z].iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
                (Some(Outcome::Ok { latency: total, max_abs }), vla::InferenceStats::OUTCOME_OK as u8)
            }
            Err(PolicyError::NonFinite(_)) => (Some(Outcome::NonFinite), vla::InferenceStats::OUTCOME_INVALID_OUTPUT as u8),
            // Already counted when the run was cancelled.
            Err(PolicyError::Cancelled) => (None, vla::InferenceStats::OUTCOME_TIMEOUT as u8),
            Err(e) => (Some(Outcome::Error(e.to_string())), vla::InferenceStats::OUTCOME_ERROR as u8),
        };
        let verdict = outcome.map(|o| self.watchdog.verdict(r.role, o, now));
        let drive = verdict.as_ref().is_some_and(|v| v.drive);
        let name = role_name(r.role);
        if let Err(e) = &r.result {
            if let Some(n) = self.throttle.allow("inference", now) {
                warn!(suppressed = n, policy = %name, "{e}; no command from this frame");
            }
        }
        let mut command_seq = 0;
        let mut stamp_to_publish_ms = 0.0;
        if drive {
            let age = inference::seconds_since(&r.stamp);
            if age > self.max_frame_age_s {
                // The run took so long that its frame went stale meanwhile.
                self.mux.clear(POLICY);
                self.hold_reason = Some(Skip::Stale { age_s: age }.to_string());
            } else if let Ok(a) = &r.result {
                self.hold_reason = None;
                self.on_source(POLICY, velocity(a));
                // A fresh action goes out at once rather than waiting for the next tick.
                if self.publish_command() {
                    command_seq = self.command_seq;
                    stamp_to_publish_ms = inference::seconds_since(&r.stamp) * 1e3;
                }
            }
        } else if self.watchdog.active() == Some(r.role) || self.watchdog.active().is_none() {
            self.mux.clear(POLICY);
        }
        self.after_verdict(verdict.and_then(|v| v.switch));

        let stats = vla::InferenceStats {
            header: std_msg::Header { stamp: r.stamp.clone(), frame_id: r.frame_id.clone() },
            frame_seq: r.frame_seq,
            command_seq,
            policy: name.into(),
            execution_provider: r.provider.clone(),
            fallback_active: self.watchdog.active() == Some(Role::Fallback),
            outcome: stats_outcome,
            frame_age_ms: r.frame_age_s * 1e3,
            preprocess_ms: ms(t.preprocess),
            inference_ms: ms(t.inference),
            postprocess_ms: ms(t.postprocess),
            total_ms: ms(total),
            stamp_to_publish_ms,
            frames_dropped: (self.dropped_pending + r.dropped).min(u32::MAX as u64) as u32,
            action: r.result.as_ref().map(|a| twist(velocity(a))).unwrap_or_default(),
        };
        self.dropped_pending = 0;
        if let Err(e) = self.stats_pub.publish(&stats) {
            warn!("publishing ~/inference_stats failed: {e}");
        }
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
    }
}

pub async fn run(mut node: r2r::Node, config: Config, files: Files) -> anyhow::Result<()> {
    let camera_topic = config.camera.subscribed_topic();
    let mut frames: BoxStream<'static, Frame> = match config.camera.transport {
        Transport::Raw => node
            .subscribe::<sensor::Image>(&camera_topic, QosProfile::sensor_data())
            .with_context(|| format!("subscribing to {camera_topic}"))?
            .map(Frame::Raw)
            .boxed(),
        Transport::Compressed => node
            .subscribe::<sensor::CompressedImage>(&camera_topic, QosProfile::sensor_data())
            .with_context(|| format!("subscribing to {camera_topic}"))?
            .map(Frame::Compressed)
            .boxed(),
    };
    let mut instructions = node
        .subscribe::<std_msg::String>(&config.instruction.topic, QosProfile::default())
        .with_context(|| format!("subscribing to {}", config.instruction.topic))?;
    let commands = CommandPublisher::new(&mut node, &config.output)
        .with_context(|| format!("advertising {}", config.output.topic))?;
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
    let mut specs = vec![SourceSpec {
        name: "policy".into(),
        priority: config.mux.autonomy_priority,
        timeout: Duration::from_secs_f64(config.policy.command_timeout_s),
    }];
    let mut sources: Vec<BoxStream<'static, (usize, Velocity)>> = Vec::new();
    for (name, src) in &config.mux.sources {
        let i = specs.len();
        specs.push(SourceSpec { name: name.clone(), priority: src.priority, timeout: Duration::from_secs_f64(src.timeout_s) });
        let qos = QosProfile::default().keep_last(1);
        let ctx = || format!("subscribing to {} (mux.sources.{name})", src.topic);
        sources.push(if src.stamped {
            node.subscribe::<geo::TwistStamped>(&src.topic, qos).with_context(ctx)?.map(move |m| (i, from_twist(&m.twist))).boxed()
        } else {
            node.subscribe::<geo::Twist>(&src.topic, qos).with_context(ctx)?.map(move |m| (i, from_twist(&m))).boxed()
        });
    }
    let mut lock_specs = Vec::new();
    let mut locks: Vec<BoxStream<'static, (usize, bool)>> = Vec::new();
    for (name, lock) in &config.mux.locks {
        let i = lock_specs.len();
        lock_specs.push(LockSpec {
            name: name.clone(),
            priority: lock.priority,
            timeout: (lock.timeout_s > 0.0).then(|| Duration::from_secs_f64(lock.timeout_s)),
        });
        // Reliable: an e-stop must not be lost.
        let stream = node
            .subscribe::<std_msg::Bool>(&lock.topic, QosProfile::default().reliable().keep_last(1))
            .with_context(|| format!("subscribing to {} (mux.locks.{name})", lock.topic))?;
        locks.push(stream.map(move |m| (i, m.data)).boxed());
    }
    let mut sources = select_all(sources);
    let mut locks = select_all(locks);
    let mut enable_autonomy = node
        .create_service::<SetBool::Service>("~/enable_autonomy", QosProfile::services_default())
        .context("creating ~/enable_autonomy")?;
    let mut system_control = node
        .subscribe::<std_msg::String>("~/system_control", QosProfile::default())
        .context("subscribing to ~/system_control")?;

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let library = Some(&config.policy.onnxruntime_library).filter(|s| !s.is_empty()).map(PathBuf::from);
    let worker_cfg = |role: Role, manifest: &PathBuf, model: &mobile_vla_core::config::ModelConfig| WorkerConfig {
        role,
        name: role_name(role).into(),
        manifest: manifest.clone(),
        model: model.clone(),
        onnxruntime_library: library.clone(),
        max_frame: (config.camera.max_width, config.camera.max_height),
        max_age_s: config.camera.max_age_s,
    };
    let info = |manifest: &PathBuf, model: &mobile_vla_core::config::ModelConfig| PolicyInfo {
        manifest: manifest.display().to_string(),
        requested: model.providers.iter().map(|p| p.ort_name().to_string()).collect(),
        ..Default::default()
    };
    let mut shell = Shell {
        commands,
        status_pub,
        stats_pub,
        diag_pub,
        clock: r2r::Clock::create(r2r::ClockType::SystemTime)?,
        max_instruction_bytes: config.instruction.max_bytes,
        max_frame_age_s: config.camera.max_age_s,
        hard_timeout: Duration::from_secs_f64(config.watchdog.hard_timeout_s),
        workers: [None, None],
        pending: [
            Some(worker_cfg(Role::Primary, &files.hybrid_manifest, &config.policy.hybrid)),
            config.watchdog.fallback_enabled.then(|| worker_cfg(Role::Fallback, &files.pure_manifest, &config.policy.pure)),
        ],
        events_tx,
        watchdog: Watchdog::new(watchdog_config(&config)),
        info: [info(&files.hybrid_manifest, &config.policy.hybrid), info(&files.pure_manifest, &config.policy.pure)],
        mux: CommandMux::new(specs, lock_specs, Instant::now()),
        stage: OutputStage::new(Limits {
            max_velocity: config.limits.max_velocity,
            max_accel: config.limits.max_accel,
            max_decel: config.limits.max_decel,
            deadband: config.limits.deadband,
        }),
        last_publish: Instant::now(),
        decision: Decision { command: Velocity::ZERO, source: None, lock: None },
        instruction: None,
        hold_reason: None,
        frame_seq: 0,
        newest: None,
        command_seq: 0,
        dropped_pending: 0,
        last_status: None,
        throttle: Throttle::new(Duration::from_secs(2)),
    };
    shell.spawn_worker(Role::Primary);
    if !config.watchdog.fallback_enabled {
        let s = shell.watchdog.loaded(Role::Fallback, Err("disabled (watchdog.fallback_enabled: false)".into()), Instant::now());
        shell.after_verdict(s);
    } else if !config.watchdog.lazy_fallback {
        shell.spawn_worker(Role::Fallback);
    }
    info!(
        camera = %camera_topic,
        instruction = %config.instruction.topic,
        cmd_vel = %config.output.topic,
        "ready: zero velocity until a healthy policy, an instruction and fresh frames agree"
    );
    shell.publish_status(false);
    let spinner = Spinner::start(node);

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.output.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    loop {
        tokio::select! {
            _ = tick.tick() => {
                shell.check_hangs();
                shell.publish_command();
            }
            _ = status_tick.tick() => {
                shell.publish_status(false);
                shell.publish_diagnostics();
            }
            Some(frame) = frames.next() => shell.on_frame(frame),
            Some(msg) = instructions.next() => shell.on_instruction(msg.data),
            Some(ev) = events.recv() => shell.on_event(ev),
            Some((i, v)) = sources.next() => shell.on_source(i, v),
            Some((i, engaged)) = locks.next() => shell.on_lock(i, engaged),
            Some(req) = enable_autonomy.next() => {
                let message = shell.set_autonomy(req.message.data);
                if let Err(e) = req.respond(SetBool::Response { success: true, message }) {
                    warn!("answering ~/enable_autonomy failed: {e}");
                }
            }
            Some(msg) = system_control.next() => shell.on_system_control(&msg.data),
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
        }
    }

    // Whatever happened, the last word to the robot is zero velocity.
    let workers: Vec<Worker> = shell.workers.iter_mut().filter_map(Option::take).collect();
    for w in &workers {
        w.inbox.close();
        if w.watch.running_for().is_some() {
            w.watch.cancel();
        }
    }
    if let Err(e) = shell.commands.publish(Velocity::ZERO) {
        warn!("publishing the final zero command failed: {e}");
    } else {
        info!(frames = shell.frame_seq, "published the final zero command");
    }
    tokio::time::sleep(FINAL_ZERO_GRACE).await;
    drop(shell);
    drop(spinner.stop());
    // A run stuck inside ONNX Runtime must not hold the process up.
    for w in workers {
        if w.thread.is_finished() {
            let _ = w.thread.join();
        }
    }
    Ok(())
}

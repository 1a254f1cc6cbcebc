//! The async ROS shell of the node: moves messages between rcl and the cores.
//!
//! Owns the subscriptions, publishers, the rcl spin thread, the hand-over of
//! frames to the inference thread and the shutdown sequence. What it publishes
//! on `cmd_vel` is decided by the cores: `CommandMux` picks the source (the
//! policy, teleop topics, locks), `OutputStage` applies the limits; with no
//! fresh source that is zero.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::StreamExt;
use mobile_vla_core::command_mux::{CommandMux, Decision, LockSpec, SourceSpec, Velocity};
use mobile_vla_core::config::{Config, OutputConfig, Transport};
use mobile_vla_core::limits::{Limits, OutputStage};
use mobile_vla_core::throttle::Throttle;
use mobile_vla_policy::{Action, PolicyError};
use futures::stream::{select_all, BoxStream};
use r2r::{
    geometry_msgs::msg as geo, mobile_vla_msgs::msg as vla, sensor_msgs::msg as sensor,
    std_msgs::msg as std_msg, std_srvs::srv::SetBool, QosProfile,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::inference::{self, Event, Frame, FrameInbox, RunReport, SeqFrame, Skip, WorkerConfig};

/// How long the final zero command is given to reach reliable subscribers
/// before the node's publishers are torn down.
const FINAL_ZERO_GRACE: Duration = Duration::from_millis(300);

/// Publishes velocity commands as `Twist` or `TwistStamped`.
struct CommandPublisher {
    out: CommandOut,
    frame_id: String,
    clock: r2r::Clock,
}

enum CommandOut {
    Twist(r2r::Publisher<geo::Twist>),
    Stamped(r2r::Publisher<geo::TwistStamped>),
}

impl CommandPublisher {
    fn new(node: &mut r2r::Node, cfg: &OutputConfig) -> anyhow::Result<Self> {
        // Commands are reliable: a dropped stop command is not acceptable.
        let qos = QosProfile::default().reliable().keep_last(10);
        let out = if cfg.stamped {
            CommandOut::Stamped(node.create_publisher(&cfg.topic, qos)?)
        } else {
            CommandOut::Twist(node.create_publisher(&cfg.topic, qos)?)
        };
        Ok(Self { out, frame_id: cfg.frame_id.clone(), clock: r2r::Clock::create(r2r::ClockType::SystemTime)? })
    }

    fn publish(&mut self, twist: geo::Twist) -> anyhow::Result<()> {
        match &self.out {
            CommandOut::Twist(p) => p.publish(&twist)?,
            CommandOut::Stamped(p) => {
                let now = self.clock.get_now()?;
                let header = std_msg::Header { stamp: r2r::Clock::to_builtin_time(&now), frame_id: self.frame_id.clone() };
                p.publish(&geo::TwistStamped { header, twist })?
            }
        }
        Ok(())
    }
}

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

fn twist(v: Velocity) -> geo::Twist {
    geo::Twist { linear: geo::Vector3 { x: v.x, y: v.y, z: 0.0 }, angular: geo::Vector3 { x: 0.0, y: 0.0, z: v.wz } }
}

fn velocity(a: &Action) -> Velocity {
    Velocity { x: a.linear_x as f64, y: a.linear_y as f64, wz: a.angular_z as f64 }
}

/// linear.z, angular.x and angular.y mean nothing to a planar base; they are
/// dropped, but must not smuggle NaN past the finiteness check either.
fn from_twist(t: &geo::Twist) -> Velocity {
    let ignored_finite = t.linear.z.is_finite() && t.angular.x.is_finite() && t.angular.y.is_finite();
    let v = Velocity { x: t.linear.x, y: t.linear.y, wz: t.angular.z };
    if ignored_finite { v } else { Velocity { x: f64::NAN, ..v } }
}

/// The autonomy source's index in the mux.
const POLICY: usize = 0;

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn stamp_s(t: &r2r::builtin_interfaces::msg::Time) -> f64 {
    t.sec as f64 + t.nanosec as f64 * 1e-9
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What the node knows about its one policy.
#[derive(Default)]
struct PolicyState {
    name: String,
    manifest: String,
    requested: Vec<String>,
    provider: String,
    loaded: bool,
    load_error: Option<String>,
    runs: u64,
    failures: u64,
    last_error: String,
}

/// The shell's mutable state and everything it publishes.
struct Shell {
    commands: CommandPublisher,
    status_pub: r2r::Publisher<vla::Status>,
    stats_pub: r2r::Publisher<vla::InferenceStats>,
    clock: r2r::Clock,
    max_instruction_bytes: usize,
    inbox: Arc<FrameInbox>,
    /// Source 0 is the policy; then the configured teleop sources.
    mux: CommandMux,
    stage: OutputStage,
    last_publish: Instant,
    decision: Decision,
    instruction: Option<String>,
    policy: PolicyState,
    /// Why the robot is not driven by the policy, when it is not.
    hold_reason: Option<String>,
    frame_seq: u64,
    command_seq: u64,
    dropped_pending: u64,
    last_status: Option<(String, String)>,
    throttle: Throttle,
}

impl Shell {
    /// Decides, shapes and publishes the command for this instant.
    fn publish_command(&mut self) -> bool {
        let now = Instant::now();
        let d = self.mux.decide(now);
        // A lock that silences everything stops at once, without the ramp.
        let hard_stop = d.lock.is_some() && d.source.is_none();
        let out = self.stage.step(d.command, now.duration_since(self.last_publish), hard_stop);
        self.last_publish = now;
        if d.source != self.decision.source || d.lock != self.decision.lock {
            info!(
                source = d.source.as_deref().unwrap_or("none"),
                lock = d.lock.as_deref().unwrap_or("none"),
                "command source changed"
            );
            self.decision = d;
            self.publish_status(true);
        } else {
            self.decision = d;
        }
        match self.commands.publish(twist(out)) {
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

    fn on_source(&mut self, i: usize, v: Velocity) {
        if let Err(refused) = self.mux.command(i, v, Instant::now()) {
            if let Some(n) = self.throttle.allow("non_finite_teleop", Instant::now()) {
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

    fn state_and_reason(&self) -> (String, String) {
        let d = &self.decision;
        let policy_reason = || {
            if let Some(e) = &self.policy.load_error {
                format!("policy '{}' failed to load: {e}", self.policy.name)
            } else if !self.policy.loaded {
                format!("policy '{}' is loading", self.policy.name)
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
        // The values of Status.msg's STATE_* constants.
        let (state, reason) = match (&d.source, &d.lock) {
            (None, Some(lock)) => ("safe_stop", format!("lock '{lock}' engaged")),
            (Some(src), _) if src != "policy" => ("running", String::new()),
            _ if !self.mux.is_enabled(POLICY) => ("paused", "autonomy paused".to_string()),
            _ if !self.policy.loaded && self.policy.load_error.is_none() => ("starting", policy_reason()),
            _ => match policy_reason() {
                r if r.is_empty() => ("running", r),
                r => ("safe_stop", r),
            },
        };
        (state.to_string(), reason)
    }

    fn publish_status(&mut self, only_if_changed: bool) {
        let (state, reason) = self.state_and_reason();
        let key = (state.clone(), reason.clone());
        if only_if_changed && self.last_status.as_ref() == Some(&key) {
            return;
        }
        if self.last_status.as_ref() != Some(&key) {
            if reason.is_empty() {
                info!(state = %state, "status");
            } else {
                info!(state = %state, reason = %reason, "status");
            }
        }
        self.last_status = Some(key);
        let p = &self.policy;
        let status = vla::Status {
            stamp: self.clock.get_now().map(|t| r2r::Clock::to_builtin_time(&t)).unwrap_or_default(),
            state,
            reason,
            active_policy: if p.loaded { p.name.clone() } else { String::new() },
            active_source: self.decision.source.clone().unwrap_or_default(),
            active_lock: self.decision.lock.clone().unwrap_or_default(),
            policies: vec![vla::PolicyStatus {
                name: p.name.clone(),
                model: p.manifest.clone(),
                loaded: p.loaded,
                healthy: p.loaded && p.last_error.is_empty(),
                requested_providers: p.requested.clone(),
                execution_provider: p.provider.clone(),
                runs: p.runs,
                failures: p.failures,
                last_error: p.last_error.clone(),
            }],
        };
        if let Err(e) = self.status_pub.publish(&status) {
            warn!("publishing ~/status failed: {e}");
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
            self.inbox.put_control(next);
        }
        self.publish_status(true);
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Loaded { policy, provider, stand_in } => {
                info!(policy = %policy, execution_provider = %provider, "policy loaded");
                if stand_in {
                    warn!(policy = %policy, "this is a STAND-IN model, not a trained policy: do not drive a real robot with it");
                }
                self.policy.loaded = true;
                self.policy.provider = provider.split(' ').next().unwrap_or_default().to_string();
            }
            Event::LoadFailed { policy, error } => {
                error!(policy = %policy, "POLICY NOT LOADED, the robot will not move: {error}");
                self.policy.load_error = Some(error);
            }
            Event::Skipped { reason, dropped, .. } => {
                self.dropped_pending += dropped;
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
            }
            Event::Ran(report) => self.on_run(*report),
        }
        self.publish_status(true);
    }

    fn on_run(&mut self, r: RunReport) {
        self.policy.runs += 1;
        let outcome = match &r.result {
            Ok(a) => {
                self.on_source(POLICY, velocity(a));
                self.hold_reason = None;
                self.policy.last_error.clear();
                vla::InferenceStats::OUTCOME_OK as u8
            }
            Err(e) => {
                self.mux.clear(POLICY);
                self.policy.failures += 1;
                self.policy.last_error = e.to_string();
                self.hold_reason = Some(format!("policy '{}' failed: {e}", r.policy));
                if let Some(n) = self.throttle.allow("inference", Instant::now()) {
                    warn!(suppressed = n, policy = %r.policy, "{e}; no command from this frame");
                }
                match e {
                    PolicyError::NonFinite(_) => vla::InferenceStats::OUTCOME_INVALID_OUTPUT as u8,
                    _ => vla::InferenceStats::OUTCOME_ERROR as u8,
                }
            }
        };
        // A fresh action goes out at once rather than waiting for the next tick.
        let (command_seq, stamp_to_publish_ms) = if r.result.is_ok() && self.publish_command() {
            (self.command_seq, (now_s() - stamp_s(&r.stamp)) * 1e3)
        } else {
            (0, 0.0)
        };
        let t = &r.timings;
        let stats = vla::InferenceStats {
            header: std_msg::Header { stamp: r.stamp.clone(), frame_id: r.frame_id.clone() },
            frame_seq: r.frame_seq,
            command_seq,
            policy: r.policy.clone(),
            execution_provider: r.provider.clone(),
            fallback_active: false,
            outcome,
            frame_age_ms: r.frame_age_s * 1e3,
            preprocess_ms: ms(t.preprocess),
            inference_ms: ms(t.inference),
            postprocess_ms: ms(t.postprocess),
            total_ms: ms(t.preprocess + t.inference + t.postprocess),
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
}

pub async fn run(mut node: r2r::Node, config: Config, files: Files) -> anyhow::Result<()> {
    let camera_topic = config.camera.subscribed_topic();
    let mut frames: futures::stream::BoxStream<'static, Frame> = match config.camera.transport {
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
        // Reliable and latched-compatible: an e-stop must not be lost.
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

    let inbox: Arc<FrameInbox> = Arc::default();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let hybrid = &config.policy.hybrid;
    let worker = inference::spawn(
        WorkerConfig {
            name: "hybrid".into(),
            manifest: files.hybrid_manifest.clone(),
            model: hybrid.clone(),
            onnxruntime_library: Some(&config.policy.onnxruntime_library)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            max_frame: (config.camera.max_width, config.camera.max_height),
            max_age_s: config.camera.max_age_s,
        },
        inbox.clone(),
        events_tx,
    );

    let mut shell = Shell {
        commands,
        status_pub,
        stats_pub,
        clock: r2r::Clock::create(r2r::ClockType::SystemTime)?,
        max_instruction_bytes: config.instruction.max_bytes,
        inbox: inbox.clone(),
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
        policy: PolicyState {
            name: "hybrid".into(),
            manifest: files.hybrid_manifest.display().to_string(),
            requested: hybrid.providers.iter().map(|p| p.ort_name().to_string()).collect(),
            ..Default::default()
        },
        hold_reason: None,
        frame_seq: 0,
        command_seq: 0,
        dropped_pending: 0,
        last_status: None,
        throttle: Throttle::new(Duration::from_secs(2)),
    };
    info!(
        camera = %camera_topic,
        instruction = %config.instruction.topic,
        cmd_vel = %config.output.topic,
        "ready: zero velocity until a policy, an instruction and fresh frames agree"
    );
    shell.publish_status(false);
    let spinner = Spinner::start(node);

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.output.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    loop {
        tokio::select! {
            _ = tick.tick() => { shell.publish_command(); }
            _ = status_tick.tick() => shell.publish_status(false),
            Some(frame) = frames.next() => {
                shell.frame_seq += 1;
                inbox.put_frame(SeqFrame { seq: shell.frame_seq, frame });
            }
            Some(msg) = instructions.next() => shell.on_instruction(msg.data),
            Some((i, v)) = sources.next() => shell.on_source(i, v),
            Some((i, engaged)) = locks.next() => shell.on_lock(i, engaged),
            Some(req) = enable_autonomy.next() => {
                let message = shell.set_autonomy(req.message.data);
                if let Err(e) = req.respond(SetBool::Response { success: true, message }) {
                    warn!("answering ~/enable_autonomy failed: {e}");
                }
            }
            Some(msg) = system_control.next() => shell.on_system_control(&msg.data),
            Some(ev) = events.recv() => shell.on_event(ev),
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
        }
    }

    // Whatever happened, the last word to the robot is zero velocity.
    inbox.close();
    if let Err(e) = shell.commands.publish(geo::Twist::default()) {
        warn!("publishing the final zero command failed: {e}");
    } else {
        info!(frames = shell.frame_seq, "published the final zero command");
    }
    tokio::time::sleep(FINAL_ZERO_GRACE).await;
    drop(shell);
    drop(spinner.stop());
    // The inference thread notices the closed inbox after its current run; a
    // run stuck inside ONNX Runtime must not hold the process up.
    if worker.is_finished() {
        let _ = worker.join();
    }
    Ok(())
}

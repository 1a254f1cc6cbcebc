//! The async ROS shell of the node: moves messages between rcl and the cores.
//!
//! Owns the subscriptions, publishers, the rcl spin thread, the hand-over of
//! frames to the inference thread and the shutdown sequence. What it publishes
//! on `cmd_vel` is decided by [`Shell::command_now`]: a fresh, valid policy
//! action, or zero.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::StreamExt;
use mobile_vla_core::config::{Config, OutputConfig, Transport};
use mobile_vla_core::throttle::Throttle;
use mobile_vla_policy::{Action, PolicyError};
use r2r::{
    geometry_msgs::msg as geo, mobile_vla_msgs::msg as vla, sensor_msgs::msg as sensor,
    std_msgs::msg as std_msg, QosProfile,
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

fn twist(a: &Action) -> geo::Twist {
    geo::Twist {
        linear: geo::Vector3 { x: a.linear_x as f64, y: a.linear_y as f64, z: 0.0 },
        angular: geo::Vector3 { x: 0.0, y: 0.0, z: a.angular_z as f64 },
    }
}

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
    command_timeout: Duration,
    max_instruction_bytes: usize,
    inbox: Arc<FrameInbox>,
    /// The last valid policy action and when it arrived.
    autonomy: Option<(Action, Instant)>,
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
    /// What goes to the robot now: a fresh policy action, else zero.
    fn command_now(&self) -> geo::Twist {
        match &self.autonomy {
            Some((a, at)) if at.elapsed() < self.command_timeout => twist(a),
            _ => geo::Twist::default(),
        }
    }

    fn publish_command(&mut self) -> bool {
        let cmd = self.command_now();
        match self.commands.publish(cmd) {
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

    fn state_and_reason(&self) -> (String, String) {
        let reason = if let Some(e) = &self.policy.load_error {
            format!("policy '{}' failed to load: {e}", self.policy.name)
        } else if !self.policy.loaded {
            format!("policy '{}' is loading", self.policy.name)
        } else if self.instruction.is_none() {
            Skip::NoInstruction.to_string()
        } else if let Some(r) = &self.hold_reason {
            r.clone()
        } else if self.command_now() == geo::Twist::default() && self.autonomy.is_none() {
            "waiting for camera frames".into()
        } else {
            String::new()
        };
        // The values of Status.msg's STATE_* constants.
        let state = if !self.policy.loaded && self.policy.load_error.is_none() {
            "starting"
        } else if reason.is_empty() {
            "running"
        } else {
            "safe_stop"
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
            active_source: if self.autonomy.is_some() { "policy".into() } else { String::new() },
            active_lock: String::new(),
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
            self.autonomy = None;
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
                self.autonomy = None;
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
                self.autonomy = Some((*a, Instant::now()));
                self.hold_reason = None;
                self.policy.last_error.clear();
                vla::InferenceStats::OUTCOME_OK as u8
            }
            Err(e) => {
                self.autonomy = None;
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
            action: r.result.as_ref().map(twist).unwrap_or_default(),
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
        command_timeout: Duration::from_secs_f64(config.policy.command_timeout_s),
        max_instruction_bytes: config.instruction.max_bytes,
        inbox: inbox.clone(),
        autonomy: None,
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
            Some(ev) = events.recv() => shell.on_event(ev),
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
        }
    }

    // Whatever happened, the last word to the robot is zero velocity.
    inbox.close();
    shell.autonomy = None;
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

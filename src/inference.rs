//! The inference thread: runs one policy on the newest camera frame, off the async runtime.
//!
//! Owns the policy (its ONNX Runtime session is loaded and warmed here, so a
//! TensorRT engine build never blocks the node from publishing zero), the
//! instruction the policy runs under (tagged with its generation), skipping
//! frames that cannot drive (the control core's freshness rule, on the node's
//! clock) and the per-run timings. It reports what happened as [`Event`]s; it
//! never publishes anything itself, and it never decides whether an action
//! may move the robot.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mobile_vla_core::chunk::Playback;
use mobile_vla_core::command_mux::Velocity;
use mobile_vla_core::config::ModelConfig;
use mobile_vla_core::control::{Freshness, Generation, RunOutcome, Skip};
use mobile_vla_core::inbox::Inbox;
use mobile_vla_core::preprocess::{JpegScaling, RawFrame, Resampling};
use mobile_vla_core::run_tracker::RunTracker;
use mobile_vla_core::watchdog::Role;
use mobile_vla_policy::policy::{Providers, Timings};
use mobile_vla_policy::runtime::{init_runtime, RuntimeInfo};
use mobile_vla_policy::{Action, Policy, PolicyError, RunOptions};
use r2r::builtin_interfaces::msg::Time;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use crate::camera_frame::{Frame, Kind};
use crate::ros_clock::{stamp_s, NodeClock};

/// Shared with the probing policy too, so never copied.
pub struct SeqFrame {
    pub seq: u64,
    pub frame: Arc<Frame>,
}

/// Lets the node cancel a run that hangs: which run is in flight, since when,
/// and ONNX Runtime's run options to terminate it with. The options exist
/// once the worker has loaded ONNX Runtime (never before: the configured
/// library must be the first one loaded).
#[derive(Default)]
pub struct RunWatch {
    tracker: Mutex<RunTracker>,
    options: OnceLock<RunOptions>,
}

impl RunWatch {
    fn tracker(&self) -> MutexGuard<'_, RunTracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Terminates the run in flight if it has run longer than `limit`; true
    /// when it did. Decided and done under one lock, so a run that ends
    /// meanwhile is never cancelled after the fact.
    pub fn cancel_if_overdue(&self, limit: Duration) -> bool {
        let mut t = self.tracker();
        let overdue = t.cancel_if_overdue(Instant::now(), limit).is_some();
        if overdue {
            self.terminate();
        }
        overdue
    }

    /// Terminates whatever runs (shutdown).
    pub fn cancel_current(&self) {
        let mut t = self.tracker();
        if t.cancel_current().is_some() {
            self.terminate();
        }
    }

    fn terminate(&self) {
        if let Some(Err(e)) = self.options.get().map(|o| o.terminate()) {
            warn!("could not cancel the run: {e}");
        }
    }
}

/// Instruction changes: the generation they start, and the text (`None`: no task).
pub type Control = (Generation, Option<String>);

pub type FrameInbox = Inbox<SeqFrame, Control>;

/// One policy run.
pub struct RunReport {
    pub role: Role,
    pub generation: Generation,
    /// When the run took its frame.
    pub started: Instant,
    pub frame_seq: u64,
    pub stamp: Time,
    pub frame_id: String,
    pub provider: String,
    pub result: Result<Action, PolicyError>,
    /// Frame stamp to inference start, seconds (node clock).
    pub frame_age_s: f64,
    pub timings: Timings,
    pub dropped: u64,
}

impl RunReport {
    /// What the control core needs to know about how the run ended.
    pub fn outcome(&self) -> RunOutcome {
        match &self.result {
            Ok(a) => RunOutcome::Action {
                command: velocity(a),
                raw_max_abs: a.raw_max_abs as f64,
                chunk: a.chunk.as_ref().map(|c| {
                    let steps = c.steps.iter().map(|s| Velocity { x: s[0] as f64, y: s[1] as f64, wz: s[2] as f64 });
                    (steps.collect(), Playback { period_s: c.period_s, blend: c.blend })
                }),
            },
            Err(PolicyError::NonFinite(_)) => RunOutcome::NonFinite,
            Err(PolicyError::Cancelled) => RunOutcome::Cancelled,
            Err(e) => RunOutcome::Error(e.to_string()),
        }
    }
}

pub fn velocity(a: &Action) -> Velocity {
    Velocity { x: a.linear_x as f64, y: a.linear_y as f64, wz: a.angular_z as f64 }
}

pub enum Event {
    /// `providers`: the execution providers registered for it and the graph
    /// nodes ONNX Runtime assigned each; `takes_instruction`: whether the
    /// model reads the instruction's text (it needs one to drive either way).
    Loaded {
        role: Role,
        providers: Providers,
        runtime: RuntimeInfo,
        stand_in: bool,
        takes_instruction: bool,
    },
    LoadFailed {
        role: Role,
        error: String,
    },
    Ran(Box<RunReport>),
    Skipped {
        role: Role,
        reason: Skip,
        dropped: u64,
    },
    /// The inference thread panicked: this policy can no longer run.
    Died {
        role: Role,
        why: String,
    },
}

#[derive(Clone)]
pub struct WorkerConfig {
    pub role: Role,
    pub manifest: PathBuf,
    pub model: ModelConfig,
    pub onnxruntime_library: Option<PathBuf>,
    pub max_frame: (u32, u32),
    pub jpeg_scaling: JpegScaling,
    pub resampling: Resampling,
    /// Shared with the shell, which changes it when `camera.max_age_s` is set at runtime.
    pub freshness: Arc<Mutex<Freshness>>,
    pub clock: NodeClock,
}

/// Starts `cfg.role`'s inference thread. A panic in it is caught and reported
/// as [`Event::Died`], so the node fails that policy over instead of waiting
/// for results that never come.
pub fn spawn(
    cfg: WorkerConfig,
    inbox: Arc<FrameInbox>,
    watch: Arc<RunWatch>,
    events: UnboundedSender<Event>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("infer-{}", cfg.role))
        .spawn(move || {
            let role = cfg.role;
            let run = std::panic::AssertUnwindSafe(|| run(cfg, &inbox, &watch, &events));
            if let Err(panic) = std::panic::catch_unwind(run) {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panicked".into());
                let _ = events.send(Event::Died { role, why: format!("panicked: {why}") });
            }
        })
        .expect("spawning the inference thread")
}

fn load(cfg: &WorkerConfig, watch: &RunWatch) -> Result<(Policy, RuntimeInfo), PolicyError> {
    let runtime = init_runtime(cfg.onnxruntime_library.as_deref())?;
    // Only now that the configured ONNX Runtime is loaded.
    let options = RunOptions::new().map_err(|e| PolicyError::Runtime(e.to_string()))?;
    let _ = watch.options.set(options);
    let first = cfg.model.providers.first().copied();
    if first == Some(mobile_vla_core::config::Provider::Tensorrt) {
        info!(
            policy = %cfg.role,
            "loading; if TensorRT runs it, the first start builds its engine, which takes minutes on an Orin \
             (cached in {} for later starts)",
            cfg.model.tensorrt.engine_cache_dir
        );
    }
    let mut policy = Policy::load(&runtime, &cfg.manifest, &cfg.model, cfg.max_frame)?;
    policy.set_jpeg_scaling(cfg.jpeg_scaling);
    policy.set_resampling(cfg.resampling);
    warm_up(&mut policy)?;
    crate::heap::release_freed();
    Ok((policy, runtime.info))
}

/// One run on a grey frame, so the first real frame does not pay for lazy
/// initialisation (or a TensorRT engine build); state is reset afterwards.
/// A graph that cannot run at all fails the load here.
fn warm_up(policy: &mut Policy) -> Result<(), PolicyError> {
    let t0 = Instant::now();
    let grey = vec![128u8; 64 * 64 * 3];
    let frame = RawFrame { width: 64, height: 64, encoding: "rgb8", step: 64 * 3, data: &grey };
    policy.preprocess_raw(&frame).map_err(|e| PolicyError::Run(e.to_string()))?;
    policy.set_instruction("")?;
    let ro = RunOptions::new().map_err(|e| PolicyError::Run(e.to_string()))?;
    match policy.infer(&ro) {
        // Warm-up proves the graph runs; judging its output is the watchdog's job, on real frames.
        Ok(_) | Err(PolicyError::NonFinite(_)) => {}
        Err(e) => return Err(e),
    }
    policy.clear_instruction();
    info!(policy = %policy.name(), "warm-up run took {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

fn run(cfg: WorkerConfig, inbox: &FrameInbox, watch: &RunWatch, events: &UnboundedSender<Event>) {
    let role = cfg.role;
    let mut policy = match load(&cfg, watch) {
        Ok((p, runtime)) => {
            let _ = events.send(Event::Loaded {
                role,
                providers: p.providers().clone(),
                runtime,
                stand_in: p.manifest().manifest.stand_in,
                takes_instruction: !p.instruction_free(),
            });
            Some(p)
        }
        Err(e) => {
            let _ = events.send(Event::LoadFailed { role, error: e.to_string() });
            None
        }
    };
    let provider = policy.as_ref().map(|p| p.providers().main()).unwrap_or_default();
    let mut generation = Generation::default();
    let mut instruction: Option<String> = None;
    // Why the tokenizer refused the current instruction, until the next one.
    let mut refused: Option<String> = None;
    // The newest frame run under the current task: a frame handed again (to a
    // policy taking control, which probed on it) must not step the recurrent
    // state twice.
    let mut last_run: Option<u64> = None;

    while let Some(delivery) = inbox.take(Duration::from_millis(200)) {
        if let Some((g, text)) = delivery.control {
            generation = g;
            instruction = text;
            refused = None;
            last_run = None;
            if let Some(p) = policy.as_mut() {
                match instruction.as_deref().map(|t| p.set_instruction(t)) {
                    Some(Ok(true)) => {
                        warn!(policy = %role, "instruction truncated to the model's text length")
                    }
                    Some(Ok(false)) => {}
                    Some(Err(e)) => {
                        warn!(policy = %role, "{e}");
                        instruction = None;
                        refused = Some(e.to_string());
                    }
                    None => p.clear_instruction(),
                }
            }
        }
        let Some(SeqFrame { seq, frame }) = delivery.frame else {
            continue;
        };
        if last_run.is_some_and(|last| seq <= last) {
            continue;
        }
        let started = Instant::now();
        let skip = |reason| Event::Skipped { role, reason, dropped: delivery.dropped };
        let Some(p) = policy.as_mut() else {
            let _ = events.send(skip(Skip::NotLoaded));
            continue;
        };
        // Every model needs a task to drive, even one that does not read its text.
        if instruction.is_none() {
            let _ = events.send(skip(refused.clone().map_or(Skip::NoInstruction, Skip::BadInstruction)));
            continue;
        }
        let header = &frame.header;
        let freshness = *cfg.freshness.lock().unwrap_or_else(|e| e.into_inner());
        let age = match freshness.check(stamp_s(&header.stamp), cfg.clock.now_s()) {
            Ok(age) => age,
            Err(reason) => {
                let _ = events.send(skip(reason));
                continue;
            }
        };
        let prepared = match &frame.kind {
            Kind::Raw { width, height, step, encoding } => p.preprocess_raw(&RawFrame {
                width: *width,
                height: *height,
                encoding,
                step: *step,
                data: frame.data(),
            }),
            Kind::Compressed { format } => p.preprocess_compressed(format, frame.data()),
        };
        let preprocess = started.elapsed();
        if let Err(e) = prepared {
            let _ = events.send(skip(Skip::BadFrame(e.to_string())));
            continue;
        }
        last_run = Some(seq);
        let run = watch.tracker().start(Instant::now());
        let outcome = p.infer(watch.options.get().expect("set when the policy loaded"));
        let cancelled = watch.tracker().finish(run);
        let (mut result, inference, postprocess) = match outcome {
            Ok((a, inf, post)) => (Ok(a), inf, post),
            Err(e) => (Err(e), started.elapsed() - preprocess, Duration::ZERO),
        };
        if cancelled {
            // Whatever the run returned, it was cancelled: it drives nothing.
            result = Err(PolicyError::Cancelled);
            if let Some(Err(e)) = watch.options.get().map(|o| o.unterminate()) {
                warn!("could not re-arm the run options: {e}");
            }
        }
        let report = RunReport {
            role,
            generation,
            started,
            frame_seq: seq,
            stamp: header.stamp.clone(),
            frame_id: header.frame_id.clone(),
            provider: provider.clone(),
            result,
            frame_age_s: age,
            timings: Timings { preprocess, inference, postprocess },
            dropped: delivery.dropped,
        };
        if events.send(Event::Ran(Box::new(report))).is_err() {
            break;
        }
    }
}

//! The inference thread: runs one policy on the newest camera frame, off the async runtime.
//!
//! Owns the policy (its ONNX Runtime session is loaded and warmed here, so a
//! TensorRT engine build never blocks the node from publishing zero), the
//! staleness check of frames, and the per-run timings. It reports what
//! happened as [`Event`]s; it never publishes anything itself, and it never
//! decides whether an action may move the robot.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mobile_vla_core::config::ModelConfig;
use mobile_vla_core::inbox::Inbox;
use mobile_vla_core::preprocess::RawFrame;
use mobile_vla_core::watchdog::Role;
use mobile_vla_policy::policy::{init_runtime, Timings};
use mobile_vla_policy::{Action, Policy, PolicyError};
use r2r::{builtin_interfaces::msg::Time, sensor_msgs::msg as sensor};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

/// A camera frame as it arrived, raw or compressed.
pub enum Frame {
    Raw(sensor::Image),
    Compressed(sensor::CompressedImage),
}

impl Frame {
    fn header(&self) -> &r2r::std_msgs::msg::Header {
        match self {
            Frame::Raw(m) => &m.header,
            Frame::Compressed(m) => &m.header,
        }
    }
}

/// Shared with the probing policy too, so never copied.
pub struct SeqFrame {
    pub seq: u64,
    pub frame: Arc<Frame>,
}

/// Lets the node cancel a run that hangs: it sees when the current run
/// started and can terminate it through ONNX Runtime's run options.
pub struct RunWatch {
    started: Mutex<Option<Instant>>,
    options: mobile_vla_policy::RunOptions,
    cancelled: AtomicBool,
}

impl RunWatch {
    pub fn new() -> Result<Self, PolicyError> {
        Ok(Self {
            started: Mutex::new(None),
            options: mobile_vla_policy::RunOptions::new().map_err(|e| PolicyError::Run(e.to_string()))?,
            cancelled: AtomicBool::new(false),
        })
    }

    /// How long the current run has been going, if one is.
    pub fn running_for(&self) -> Option<Duration> {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed())
    }

    /// Asks ONNX Runtime to stop the current run; it returns with an error,
    /// reported as [`PolicyError::Cancelled`]. Returns false if already asked.
    pub fn cancel(&self) -> bool {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Err(e) = self.options.terminate() {
            warn!("could not cancel the run: {e}");
        }
        true
    }
}

/// Instruction changes: `None` means "no task".
pub type Control = Option<String>;

pub type FrameInbox = Inbox<SeqFrame, Control>;

/// Why a frame never reached the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    NoInstruction,
    Unstamped,
    Stale { age_s: f64 },
    BadFrame(String),
    NotLoaded,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NoInstruction => write!(f, "no instruction: the robot holds still until one arrives"),
            Skip::Unstamped => write!(f, "frame has no header stamp; it cannot be checked for freshness"),
            Skip::Stale { age_s } => write!(f, "frame is stale ({age_s:.3} s old)"),
            Skip::BadFrame(e) => write!(f, "frame rejected: {e}"),
            Skip::NotLoaded => write!(f, "the policy is not loaded"),
        }
    }
}

/// One policy run.
pub struct RunReport {
    pub role: Role,
    pub frame_seq: u64,
    pub stamp: Time,
    pub frame_id: String,
    pub provider: String,
    pub result: Result<Action, PolicyError>,
    /// Frame stamp to inference start, seconds.
    pub frame_age_s: f64,
    pub timings: Timings,
    pub dropped: u64,
}

pub enum Event {
    Loaded { role: Role, provider: String, stand_in: bool },
    LoadFailed { role: Role, error: String },
    Ran(Box<RunReport>),
    Skipped { role: Role, reason: Skip, dropped: u64 },
}

pub struct WorkerConfig {
    pub role: Role,
    pub name: String,
    pub manifest: PathBuf,
    pub model: ModelConfig,
    pub onnxruntime_library: Option<PathBuf>,
    pub max_frame: (u32, u32),
    pub max_age_s: f64,
}

pub fn spawn(
    cfg: WorkerConfig,
    inbox: Arc<FrameInbox>,
    watch: Arc<RunWatch>,
    events: UnboundedSender<Event>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("infer-{}", cfg.name))
        .spawn(move || run(cfg, &inbox, &watch, &events))
        .expect("spawning the inference thread")
}

fn load(cfg: &WorkerConfig) -> Result<Policy, PolicyError> {
    let env = init_runtime(cfg.onnxruntime_library.as_deref())?;
    let first = cfg.model.providers.first().copied();
    if first == Some(mobile_vla_core::config::Provider::Tensorrt) {
        info!(
            policy = %cfg.name,
            "loading; if TensorRT runs it, the first start builds its engine, which takes minutes on an Orin \
             (cached in {} for later starts)",
            cfg.model.tensorrt.engine_cache_dir
        );
    }
    let mut policy = Policy::load(&env, &cfg.manifest, &cfg.model, cfg.max_frame)?;
    warm_up(&mut policy)?;
    release_freed_heap();
    Ok(policy)
}

/// Loading parses the whole model into short-lived buffers. glibc keeps what
/// was freed for reuse (its mmap threshold grows after large frees), which left
/// an 86 M-parameter model's node ~200 MB over what ONNX Runtime holds; hand the
/// free pages back once the session is built.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches
    // no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
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
    let ro = mobile_vla_policy::RunOptions::new().map_err(|e| PolicyError::Run(e.to_string()))?;
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
    let mut policy = match load(&cfg) {
        Ok(p) => {
            let _ = events.send(Event::Loaded {
                role,
                provider: p.selection().describe(),
                stand_in: p.manifest().manifest.stand_in,
            });
            Some(p)
        }
        Err(e) => {
            let _ = events.send(Event::LoadFailed { role, error: e.to_string() });
            None
        }
    };
    let provider = policy.as_ref().map(|p| p.selection().provider.ort_name().to_string()).unwrap_or_default();
    let mut instruction: Control = None;

    while let Some(delivery) = inbox.take(Duration::from_millis(200)) {
        if let Some(change) = delivery.control {
            instruction = change;
            if let (Some(p), Some(text)) = (policy.as_mut(), instruction.as_deref()) {
                match p.set_instruction(text) {
                    Ok(true) => warn!(policy = %cfg.name, "instruction truncated to the model's text length"),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(policy = %cfg.name, "{e}");
                        instruction = None;
                    }
                }
            } else if let Some(p) = policy.as_mut() {
                p.clear_instruction();
            }
        }
        let Some(SeqFrame { seq, frame }) = delivery.frame else { continue };
        let skip = |reason| Event::Skipped { role, reason, dropped: delivery.dropped };
        let Some(p) = policy.as_mut() else {
            let _ = events.send(skip(Skip::NotLoaded));
            continue;
        };
        if instruction.is_none() && !p.instruction_free() {
            let _ = events.send(skip(Skip::NoInstruction));
            continue;
        }
        let header = frame.header();
        let age = match frame_age_s(&header.stamp, cfg.max_age_s) {
            Ok(age) => age,
            Err(reason) => {
                let _ = events.send(skip(reason));
                continue;
            }
        };
        let t0 = Instant::now();
        let prepared = match frame.as_ref() {
            Frame::Raw(m) => p.preprocess_raw(&RawFrame {
                width: m.width,
                height: m.height,
                encoding: &m.encoding,
                step: m.step,
                data: &m.data,
            }),
            Frame::Compressed(m) => p.preprocess_compressed(&m.format, &m.data),
        };
        let preprocess = t0.elapsed();
        if let Err(e) = prepared {
            let _ = events.send(skip(Skip::BadFrame(e.to_string())));
            continue;
        }
        *watch.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let outcome = p.infer(&watch.options);
        *watch.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let (mut result, inference, postprocess) = match outcome {
            Ok((a, inf, post)) => (Ok(a), inf, post),
            Err(e) => (Err(e), t0.elapsed() - preprocess, Duration::ZERO),
        };
        if watch.cancelled.swap(false, Ordering::SeqCst) {
            // Whatever the run returned, it was cancelled: it drives nothing.
            result = Err(PolicyError::Cancelled);
            if let Err(e) = watch.options.unterminate() {
                warn!("could not re-arm the run options: {e}");
            }
        }
        let report = RunReport {
            role,
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

/// Seconds from `stamp` (system clock, as cameras stamp frames) to now.
pub fn seconds_since(stamp: &Time) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    now - (stamp.sec as f64 + stamp.nanosec as f64 * 1e-9)
}

/// Seconds from the frame's stamp to now; refuses unstamped, stale and future frames.
fn frame_age_s(stamp: &Time, max_age_s: f64) -> Result<f64, Skip> {
    if stamp.sec == 0 && stamp.nanosec == 0 {
        return Err(Skip::Unstamped);
    }
    let age = seconds_since(stamp);
    if age > max_age_s || age < -max_age_s {
        return Err(Skip::Stale { age_s: age });
    }
    Ok(age)
}

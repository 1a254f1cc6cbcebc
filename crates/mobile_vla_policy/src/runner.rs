//! One policy's side of the pipeline: the task it runs under and the frames it is handed, run one by one.
//!
//! Owns a loaded [`Policy`] and what it runs under: the current [`Task`]
//! (tokenised when it changes, which resets the recurrent state), why the
//! tokenizer refused it if it did, and the newest frame run under it (a frame
//! handed again, to a policy taking control after probing on it, must not
//! step the recurrent state twice). A new history (a new task, a policy
//! taking control, a managed node's activation or deactivation: see
//! [`Task::history`]; a frame stamped more than `camera.max_age_s` after the
//! last one it ran on; a cancelled run; a window entry that changed shape, in
//! [`Policy::infer`]) starts with zero state and empty windows. For each frame it skips what cannot
//! drive (no task, a refused instruction, a stale or future stamp on the
//! node's clock, a frame the preprocessor refuses, windows still filling) and runs the rest, timed,
//! cancellable from another thread ([`RunWatch`]; a remote stage ends by its own deadline instead). It never decides whether a
//! result may move the robot: that is the control core's. No threads and no
//! ROS here: the node runs it on an inference thread, the evaluation tool
//! inline.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use mobile_vla_core::chunk::Playback;
use mobile_vla_core::config::{Config, ModelConfig, Provider};
use mobile_vla_core::control::RunOutcome;
use mobile_vla_core::run_tracker::RunTracker;
use mobile_vla_core::vocab::{Generation, Role, SharedFreshness, Skip, Task, Velocity};
use mobile_vla_vision::{Image, JpegScaling, RawFrame, Resampling};
use ort::session::RunOptions;
use tracing::{info, warn};

use crate::policy::Timings;
use crate::runtime::{init_runtime, RuntimeInfo};
use crate::{Action, Policy, PolicyError};

/// Lets another thread cancel a run that hangs: which run is in flight, since
/// when, and ONNX Runtime's run options to terminate it with. The options
/// exist once the policy's ONNX Runtime is loaded (never before: the
/// configured library must be the first one loaded).
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

    /// The run options, made when first needed (ONNX Runtime is loaded by then: a policy exists).
    fn options(&self) -> Result<&RunOptions, PolicyError> {
        if self.options.get().is_none() {
            let options = RunOptions::new().map_err(|e| PolicyError::Runtime(e.to_string()))?;
            let _ = self.options.set(options);
        }
        Ok(self.options.get().expect("set above"))
    }

    /// Runs `f` as the tracked run; returns its result and whether it was cancelled.
    fn track<T>(&self, f: impl FnOnce(&RunOptions) -> Result<T, PolicyError>) -> (Result<T, PolicyError>, bool) {
        let options = match self.options() {
            Ok(o) => o,
            Err(e) => return (Err(e), false),
        };
        let run = self.tracker().start(Instant::now());
        let out = f(options);
        let cancelled = self.tracker().finish(run);
        if cancelled {
            if let Err(e) = options.unterminate() {
                warn!("could not re-arm the run options: {e}");
            }
        }
        (out, cancelled)
    }
}

/// A frame handed to a policy: its sequence number, its stamp (seconds of
/// ROS time; `None`: unstamped) and the image.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub seq: u64,
    pub stamp_s: Option<f64>,
    pub image: Image<'a>,
}

/// One run of a policy on a frame.
#[derive(Debug)]
pub struct Run {
    pub generation: Generation,
    /// When the run took its frame (before preprocessing).
    pub started: Instant,
    pub result: Result<Action, PolicyError>,
    /// Frame stamp to run start, seconds (node clock).
    pub frame_age_s: f64,
    pub timings: Timings,
}

impl Run {
    /// How the run ended, in the control core's words.
    pub fn outcome(&self) -> RunOutcome {
        match &self.result {
            Ok(a) => RunOutcome::Action {
                command: a.velocity(),
                raw_max_abs: a.raw_max_abs as f64,
                chunk: a.chunk.as_ref().map(|c| {
                    let steps = c.steps.iter().map(|s| Velocity::from_axes(s.map(f64::from)));
                    (steps.collect(), Playback { period_s: c.period_s, blend: c.blend })
                }),
            },
            Err(PolicyError::NonFinite { .. }) => RunOutcome::NonFinite,
            Err(PolicyError::Cancelled) => RunOutcome::Cancelled,
            Err(e) => RunOutcome::Error(e.to_string()),
        }
    }
}

/// What became of a frame.
#[derive(Debug)]
pub enum Handled {
    /// Already run under the current task: nothing to report.
    Repeated,
    /// It never reached the model.
    Skipped(Skip),
    Ran(Box<Run>),
}

/// What a load found, for the operator.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub runtime: RuntimeInfo,
    pub stand_in: bool,
    /// Whether the model reads the instruction's text (it needs one to drive either way).
    pub takes_instruction: bool,
    /// The velocity axes its action drives, and those it leaves at 0.
    pub commanded_axes: Vec<&'static str>,
    pub absent_axes: Vec<&'static str>,
    /// Each frame window: what it holds and its memory.
    pub windows: Vec<String>,
}

/// How a policy is loaded for running: the part of the node's configuration its runner needs.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub role: Role,
    pub manifest: PathBuf,
    pub model: ModelConfig,
    pub onnxruntime_library: Option<PathBuf>,
    pub max_frame: (u32, u32),
    pub jpeg_scaling: JpegScaling,
    pub resampling: Resampling,
}

impl PolicySpec {
    /// `role`'s policy as `config` says to run it, from its resolved `manifest`.
    pub fn from_config(config: &Config, role: Role, manifest: PathBuf) -> Self {
        let library = &config.policy.onnxruntime_library;
        PolicySpec {
            role,
            manifest,
            model: config.policy.model(role).clone(),
            onnxruntime_library: (!library.is_empty()).then(|| PathBuf::from(library)),
            max_frame: (config.camera.max_width, config.camera.max_height),
            jpeg_scaling: config.camera.jpeg_scaling,
            resampling: config.camera.resampling,
        }
    }
}

pub struct Runner {
    role: Role,
    policy: Policy,
    freshness: SharedFreshness,
    task: Task,
    /// Why the tokenizer refused the current instruction, until the next one.
    refused: Option<String>,
    /// The newest frame run under the current task.
    last_run: Option<u64>,
    /// The stamp of that frame: a frame much later starts a new history (a stale camera gap).
    last_stamp: Option<f64>,
}

impl Runner {
    /// Loads the configured ONNX Runtime and the policy, and warms it up; `watch` gets the run options.
    pub fn load(
        spec: &PolicySpec,
        freshness: SharedFreshness,
        watch: &RunWatch,
    ) -> Result<(Runner, Loaded), PolicyError> {
        let runtime = init_runtime(spec.onnxruntime_library.as_deref())?;
        // Only now that the configured ONNX Runtime is loaded.
        watch.options()?;
        if spec.model.providers.first() == Some(&Provider::Tensorrt) {
            info!(
                policy = %spec.role,
                "loading; if TensorRT runs it, the first start builds its engine, which takes minutes on an Orin \
                 (cached in {} for later starts)",
                spec.model.tensorrt.engine_cache_dir
            );
        }
        let mut policy = Policy::load(&runtime, &spec.manifest, &spec.model, spec.max_frame)?;
        policy.set_jpeg_scaling(spec.jpeg_scaling);
        policy.set_resampling(spec.resampling);
        warm_up(&mut policy)?;
        let m = &policy.manifest().manifest;
        let loaded = Loaded {
            runtime: runtime.info,
            stand_in: m.stand_in,
            takes_instruction: !policy.instruction_free(),
            commanded_axes: m.action.commanded(),
            absent_axes: m.action.absent(),
            windows: policy.window_sizes().to_vec(),
        };
        Ok((Runner::new(spec.role, policy, freshness), loaded))
    }

    /// A runner for a policy already loaded.
    pub fn new(role: Role, policy: Policy, freshness: SharedFreshness) -> Self {
        Runner { role, policy, freshness, task: Task::default(), refused: None, last_run: None, last_stamp: None }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The task to run under from now on: a new instruction (or generation)
    /// is tokenised and starts a new history; a new history alone resets the
    /// recurrent state and the windows; no task clears the instruction.
    pub fn set_task(&mut self, task: Task) {
        let same_task = (task.generation, &task.text) == (self.task.generation, &self.task.text);
        if same_task && self.refused.is_none() {
            if task.history != self.task.history {
                self.new_history();
            }
            self.task = task;
            return;
        }
        // A new instruction (or none) is a new history too.
        self.new_history();
        self.refused = None;
        match task.text.as_deref().map(|t| self.policy.set_instruction(t)) {
            Some(Ok(true)) => warn!(policy = %self.role, "instruction truncated to the model's text length"),
            Some(Ok(false)) => {}
            Some(Err(e)) => {
                warn!(policy = %self.role, "{e}");
                self.refused = Some(e.to_string());
                self.task = Task { text: None, ..task };
                return;
            }
            None => self.policy.clear_instruction(),
        }
        self.task = task;
    }

    /// Zero recurrent state, empty windows; any frame may run again.
    fn new_history(&mut self) {
        self.policy.reset_state();
        self.last_run = None;
        self.last_stamp = None;
    }

    /// Runs `frame` if it can drive; `now_s` is the node's clock (seconds of ROS time).
    pub fn handle(&mut self, frame: &Frame<'_>, now_s: f64, watch: &RunWatch) -> Handled {
        if self.last_run.is_some_and(|last| frame.seq <= last) {
            return Handled::Repeated;
        }
        let started = Instant::now();
        // Every model needs a task to drive, even one that does not read its text.
        if self.task.text.is_none() {
            return Handled::Skipped(self.refused.clone().map_or(Skip::NoInstruction, Skip::BadInstruction));
        }
        let Some(stamp) = frame.stamp_s else { return Handled::Skipped(Skip::Unstamped) };
        let freshness = self.freshness.get();
        let frame_age_s = match freshness.check(Some(stamp), now_s) {
            Ok(age) => age,
            Err(skip) => return Handled::Skipped(skip),
        };
        let prepared = self.policy.preprocess(&frame.image);
        let preprocess = started.elapsed();
        if let Err(e) = prepared {
            return Handled::Skipped(Skip::BadFrame(e.to_string()));
        }
        // After a gap longer than a frame may be old (the camera stale or silent), the history starts over.
        if let Some(gap) = self.last_stamp.map(|last| stamp - last).filter(|gap| *gap > freshness.max_age_s) {
            info!(policy = %self.role, "{gap:.2} s since the last frame run (camera.max_age_s = {}): a new history", freshness.max_age_s);
            self.policy.reset_state();
        }
        self.last_run = Some(frame.seq);
        self.last_stamp = Some(stamp);
        let (outcome, cancelled) = watch.track(|options| self.policy.infer(options));
        if let (Err(PolicyError::WindowFilling { have, need }), false) = (&outcome, cancelled) {
            return Handled::Skipped(Skip::WindowFilling { have: *have, need: *need });
        }
        let (mut result, inference, postprocess) = match outcome {
            Ok((a, inf, post)) => (Ok(a), inf, post),
            Err(e) => (Err(e), started.elapsed() - preprocess, Duration::ZERO),
        };
        if cancelled {
            // Whatever the run returned, it was cancelled: it drives nothing, and
            // what it may have carried forward (state, windows) is dropped with a new history.
            result = Err(PolicyError::Cancelled);
            self.policy.reset_state();
        }
        Handled::Ran(Box::new(Run {
            generation: self.task.generation,
            started,
            result,
            frame_age_s,
            timings: Timings { preprocess, inference, postprocess },
        }))
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
    let ro = RunOptions::new().map_err(|e| PolicyError::Run(e.to_string()))?;
    match policy.infer_filled_once(&ro) {
        // Warm-up proves the graph runs; judging its output is the watchdog's job, on real frames.
        Ok(_) | Err(PolicyError::NonFinite { .. }) => {}
        Err(e) => return Err(e),
    }
    policy.clear_instruction();
    info!(policy = %policy.name(), "warm-up run took {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

//! A loaded policy: its ONNX Runtime sessions and everything needed to feed them.
//!
//! Owns the stages (one session per graph, each with its providers), the
//! preprocessor and its buffers (one tensor per image input), the tokenizers
//! and the current instruction's tokens, the outputs of the per-instruction
//! stages (computed once per instruction, fed to the per-frame ones), and the
//! recurrent state. At load every graph input is matched to what feeds it
//! (an image, a text role, the state, an earlier stage's output) and checked
//! for type and shape, so a mismatch is one error naming the tensor before
//! any frame. Given a frame it produces an [`Action`] or an error; it never
//! decides whether that action may move the robot (that is the watchdog's and
//! the command stage's job), and it holds no ROS types.
//!
//! What survives a failure: a refused frame leaves the state and the
//! instruction as they were (nothing ran); a run that errs, is cancelled or
//! returns a non-finite action or state carries no state forward (the next
//! state is taken only from a valid run, all of it or none); a session that
//! failed or was cancelled runs the next frame as before (the run options are
//! re-armed by the worker); an instruction the tokenizer refuses leaves no
//! instruction at all, never the previous one's tokens or stage outputs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use half::f16;
use mobile_vla_core::config::{expand_home, ModelConfig, Provider};
use mobile_vla_core::preprocess::{DType, FrameError, JpegScaling, Preprocessor, RawFrame, Resampling, Tensor};
use ort::ep::{self, ExecutionProvider};
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};

use crate::manifest::{
    ActionStep, FloatType, IdType, LoadedManifest, Manifest, Padding, Source, StageRun, TextLayout, TextRole,
};
use crate::providers::{self, Assignment, Registration};
use crate::runtime::Runtime;
use crate::text::{Ints, TextEncoder, Tokens};
use crate::PolicyError;
use crate::{engine, onnx_file};
use tracing::{info, warn};

/// A velocity proposal from a policy, already scaled and clipped per its manifest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Action {
    pub linear_x: f32,
    pub linear_y: f32,
    pub angular_z: f32,
    /// The largest |velocity| after scaling and before the clip (of every
    /// step, for a chunk that plays): what the watchdog judges, so a diverging
    /// model fails over instead of driving at the clip.
    pub raw_max_abs: f32,
    /// For `step: play`: every chunk step (scaled and clipped), to be played
    /// `period_s` apart from the frame's stamp; the fields above are step 0.
    pub chunk: Option<PlayedChunk>,
}

/// A chunk to play, as the manifest's `play` mode describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayedChunk {
    pub steps: Vec<[f32; 3]>,
    pub period_s: f64,
    pub blend: Option<f64>,
}

/// How long each stage of the last run took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

/// Which execution providers a stage registered and how ONNX Runtime used them.
#[derive(Debug, Clone, PartialEq)]
pub struct StageProviders {
    pub stage: String,
    pub registration: Registration,
    /// `None` when this ONNX Runtime cannot report it (before 1.24).
    pub assignment: Option<Assignment>,
}

/// The providers of every stage of a policy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Providers {
    pub stages: Vec<StageProviders>,
}

impl Providers {
    /// The node counts of all stages together, if every stage reported them.
    pub fn assignment(&self) -> Option<Assignment> {
        let mut total = Assignment::default();
        for s in &self.stages {
            total.add(s.assignment.as_ref()?);
        }
        Some(total)
    }

    /// The provider that runs most of the policy's nodes; without node
    /// counts, the first provider registered for the first per-frame stage.
    pub fn main(&self) -> String {
        match self.assignment() {
            Some(a) => a.main().unwrap_or_default().to_string(),
            None => {
                self.stages.last().and_then(|s| s.registration.registered.first()).map_or("", |p| p.ort_name()).into()
            }
        }
    }

    /// One line for logs: each stage's node counts (or why they are unknown) and chain.
    pub fn describe(&self, runtime_version: &str) -> String {
        let one = |s: &StageProviders| {
            let nodes = match &s.assignment {
                Some(a) => a.describe(),
                None => format!(
                    "node assignment unknown (ONNX Runtime {runtime_version} cannot report it; {}.{} and later can)",
                    providers::ASSIGNMENT_SINCE.0,
                    providers::ASSIGNMENT_SINCE.1
                ),
            };
            format!("{nodes}; registered {}", s.registration.describe())
        };
        match &self.stages[..] {
            [only] => one(only),
            stages => stages.iter().map(|s| format!("{}: {}", s.stage, one(s))).collect::<Vec<_>>().join(" | "),
        }
    }
}

/// How one stage's session is opened: its providers and their options.
struct StagePlan<'a> {
    stage: &'a str,
    cfg: &'a ModelConfig,
    preference: &'a [Provider],
    /// TensorRT's options for this graph (with its shape profile).
    tensorrt: Vec<(&'static str, String)>,
}

impl<'a> StagePlan<'a> {
    fn new(
        m: &Manifest,
        stage: &'a str,
        path: &Path,
        cfg: &'a ModelConfig,
        preference: &'a [Provider],
    ) -> Result<Self, PolicyError> {
        let names = onnx_file::input_names(path).map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?;
        let profile = shape_profile(m, &names);
        if cfg.tensorrt.cuda_graph && !profile.is_static() && preference.contains(&Provider::Tensorrt) {
            warn!(
                policy = %m.name, stage,
                "tensorrt.cuda_graph is set, but this graph's text inputs change length with the instruction: \
                 CUDA graphs stay off for it"
            );
        }
        Ok(StagePlan { stage, cfg, preference, tensorrt: providers::tensorrt_options(cfg, &profile) })
    }

    fn tensorrt_available(&self) -> bool {
        self.preference.contains(&Provider::Tensorrt) && ep::TensorRT::is_available().unwrap_or(false)
    }

    /// Registers the chain and opens `path`; `extra` TensorRT options (the engine dump) on top.
    fn open(
        &self,
        runtime: &Runtime,
        path: &Path,
        extra: &[(&'static str, String)],
        record: bool,
    ) -> Result<(Session, Registration, Option<Assignment>), PolicyError> {
        let cfg = self.cfg;
        let mut builder = Session::builder(&runtime.env)
            .and_then(|b| b.with_intra_threads(cfg.cpu_threads).map_err(Into::into))
            .map_err(|e| PolicyError::Load(e.to_string()))?;
        if record {
            builder = builder
                .with_config_entry(providers::RECORD_ASSIGNMENT, "1")
                .map_err(|e| PolicyError::Load(e.to_string()))?;
        }
        let registration = providers::plan(self.preference, |p| {
            let options = match p {
                Provider::Tensorrt => self.tensorrt.iter().chain(extra).cloned().collect(),
                Provider::Cuda => providers::cuda_options(cfg),
                Provider::Cpu => Vec::new(),
            };
            providers::register(p, &options, cfg, &mut builder)
        })?;
        let session = builder
            .commit_from_file(path)
            .map_err(|e| PolicyError::Load(format!("{} (stage '{}'): {e}", path.display(), self.stage)))?;
        let assignment = if record {
            Some(providers::assignment(&session).map_err(|e| {
                PolicyError::Load(format!("{}: reading ONNX Runtime's node assignment: {e}", path.display()))
            })?)
        } else {
            None
        };
        Ok((session, registration, assignment))
    }
}

/// TensorRT's shape profile: the exact-length text inputs this graph takes.
fn shape_profile(m: &Manifest, graph_inputs: &[String]) -> providers::ShapeProfile {
    let mut inputs = Vec::new();
    for t in m.texts.iter().filter(|t| t.padding == Padding::Exact) {
        let (min, opt, max) = t.lengths();
        let r = &t.roles;
        for name in [
            Some(&r.input_ids),
            r.attention_mask.as_ref(),
            r.position_ids.as_ref(),
            r.image_embeds_position_mask.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if graph_inputs.contains(name) {
                inputs.push(providers::ProfiledInput {
                    name: name.clone(),
                    min: vec![1, min as i64],
                    opt: vec![1, opt as i64],
                    max: vec![1, max as i64],
                });
            }
        }
    }
    providers::ShapeProfile { inputs }
}

/// Builds every TensorRT stage of the policy in `manifest_path` into a
/// precompiled engine (an EP-context model and its stamp, see `engine`);
/// returns one line per stage built. TensorRT must be in this ONNX Runtime.
pub fn build_engines(runtime: &Runtime, manifest_path: &Path, cfg: &ModelConfig) -> Result<Vec<String>, PolicyError> {
    let manifest = Manifest::load(manifest_path)?;
    let m = &manifest.manifest;
    let mut built = Vec::new();
    for (spec, path) in m.stages.iter().zip(&manifest.onnx_paths) {
        let preference = spec.providers.as_deref().unwrap_or(&cfg.providers);
        if !preference.contains(&Provider::Tensorrt) {
            built.push(format!("{}: skipped (its providers do not include tensorrt)", spec.name));
            continue;
        }
        let plan = StagePlan::new(m, &spec.name, path, cfg, preference)?;
        if !plan.tensorrt_available() {
            return Err(PolicyError::ProviderUnavailable(format!(
                "TensorRT is not in this ONNX Runtime build ({}): no engine can be built",
                runtime.info
            )));
        }
        let (ctx, stamp) = engine::paths(&expand_home(&cfg.tensorrt.engine_cache_dir), &m.name, &spec.name);
        std::fs::create_dir_all(ctx.parent().expect("has a parent"))
            .map_err(|e| PolicyError::Load(format!("{}: {e}", ctx.display())))?;
        let t0 = Instant::now();
        plan.open(runtime, path, &engine::dump_options(&ctx), false)?;
        let s = engine::Stamp {
            source: path.clone(),
            source_id: engine::source_id(path).map_err(|e| PolicyError::Load(format!("{}: {e}", path.display())))?,
            onnxruntime: runtime.info.version.clone(),
            options: plan.tensorrt.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        std::fs::write(&stamp, serde_json::to_string_pretty(&s).expect("serialisable"))
            .map_err(|e| PolicyError::Load(format!("{}: {e}", stamp.display())))?;
        built.push(format!("{}: {} ({:.0} s)", spec.name, ctx.display(), t0.elapsed().as_secs_f64()));
    }
    Ok(built)
}

/// What feeds one graph input.
#[derive(Debug, Clone, PartialEq)]
enum Feed {
    Manifest(Source),
    /// An output of an earlier stage, by name.
    Stage(String),
}

struct StageSession {
    name: String,
    run: StageRun,
    session: Session,
    feeds: Vec<(String, Feed)>,
    /// Outputs a later stage reads.
    keep: Vec<String>,
}

/// Where the action sits in its output: the leading indices, then `[T, k]`.
#[derive(Debug, Clone)]
struct ActionPick {
    stage: usize,
    dtype: FloatType,
    index: Option<Vec<i64>>,
}

pub struct Policy {
    manifest: LoadedManifest,
    stages: Vec<StageSession>,
    providers: Providers,
    pre: Preprocessor,
    texts: Vec<TextEncoder>,
    tokens: Option<Vec<Tokens>>,
    /// Outputs of the per-instruction stages, for the current instruction.
    instruction_values: HashMap<String, DynValue>,
    state: Vec<StateBuf>,
    action: ActionPick,
    /// Per state pair, the stage that produces its output.
    state_stage: Vec<usize>,
}

#[derive(Debug, Clone)]
enum StateBuf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl StateBuf {
    fn zeros(n: usize, ty: FloatType) -> Self {
        match ty {
            FloatType::F32 => StateBuf::F32(vec![0.0; n]),
            FloatType::F16 => StateBuf::F16(vec![f16::ZERO; n]),
        }
    }

    fn reset(&mut self) {
        match self {
            StateBuf::F32(v) => v.fill(0.0),
            StateBuf::F16(v) => v.fill(f16::ZERO),
        }
    }
}

impl Policy {
    /// Loads the manifest, creates every stage's session on its providers and
    /// checks the graphs against the manifest. `max_frame` bounds accepted frames.
    pub fn load(
        runtime: &Runtime,
        manifest_path: &Path,
        cfg: &ModelConfig,
        max_frame: (u32, u32),
    ) -> Result<Policy, PolicyError> {
        let manifest = Manifest::load(manifest_path)?;
        let m = &manifest.manifest;
        for p in &manifest.onnx_paths {
            if !p.is_file() {
                return Err(PolicyError::Load(format!("ONNX file {} does not exist", p.display())));
            }
        }
        let texts = m
            .texts
            .iter()
            .zip(&manifest.tokenizer_paths)
            .map(|(t, p)| TextEncoder::new(t.clone(), p))
            .collect::<Result<Vec<_>, _>>()?;
        let record = providers::reports_assignment(&runtime.info.version);
        let mut stages = Vec::new();
        let mut report = Providers::default();
        for (spec, path) in m.stages.iter().zip(&manifest.onnx_paths) {
            let preference = spec.providers.as_deref().unwrap_or(&cfg.providers);
            let plan = StagePlan::new(m, &spec.name, path, cfg, preference)?;
            let (ctx, stamp) = engine::paths(&expand_home(&cfg.tensorrt.engine_cache_dir), &m.name, &spec.name);
            let choice = if plan.tensorrt_available() {
                engine::choose(path, &ctx, &stamp, &runtime.info.version, &plan.tensorrt)
            } else {
                engine::Choice::Graph
            };
            let opened = match &choice {
                engine::Choice::Precompiled(ctx) => {
                    info!(policy = %m.name, stage = %spec.name, "loading the precompiled TensorRT engine {}", ctx.display());
                    plan.open(runtime, ctx, &[], record).or_else(|e| {
                        warn!(
                            policy = %m.name, stage = %spec.name,
                            "the precompiled TensorRT engine does not load ({e}): building from the graph at start \
                             (minutes); rebuild it with `mobile_vla_node --build-engines`"
                        );
                        plan.open(runtime, path, &[], record)
                    })
                }
                engine::Choice::Stale(why) => {
                    warn!(
                        policy = %m.name, stage = %spec.name,
                        "the precompiled TensorRT engine is stale ({why}): building from the graph at start \
                         (minutes); rebuild it with `mobile_vla_node --build-engines`"
                    );
                    plan.open(runtime, path, &[], record)
                }
                engine::Choice::Graph => plan.open(runtime, path, &[], record),
            };
            let (session, registration, assignment) = opened?;
            if cfg.require_provider {
                let first = preference[0];
                match &assignment {
                    Some(a) => a.check(first, cfg.min_provider_share)?,
                    None => {
                        return Err(PolicyError::ProviderUnavailable(format!(
                            "require_provider cannot be verified: ONNX Runtime {} does not report which provider \
                             runs which node ({}.{} and later do)",
                            runtime.info.version,
                            providers::ASSIGNMENT_SINCE.0,
                            providers::ASSIGNMENT_SINCE.1
                        )))
                    }
                }
            }
            report.stages.push(StageProviders { stage: spec.name.clone(), registration, assignment });
            stages.push(StageSession {
                name: spec.name.clone(),
                run: spec.run,
                session,
                feeds: Vec::new(),
                keep: Vec::new(),
            });
        }
        let (action, state_stage) = check_contract(m, &mut stages)?;
        let state = m.state.iter().map(|s| StateBuf::zeros(s.shape.iter().product(), s.dtype)).collect();
        let pre = Preprocessor::new(m.images.iter().map(|i| i.spec.clone()).collect(), max_frame.0, max_frame.1);
        Ok(Policy {
            manifest,
            stages,
            providers: report,
            pre,
            texts,
            tokens: None,
            instruction_values: HashMap::new(),
            state,
            action,
            state_stage,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.manifest.name
    }

    pub fn manifest(&self) -> &LoadedManifest {
        &self.manifest
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    /// True when the model takes no instruction text.
    pub fn instruction_free(&self) -> bool {
        self.texts.is_empty()
    }

    /// Tokenises a new instruction, runs the per-instruction stages on it
    /// (once per change) and resets the recurrent state. Returns whether the
    /// instruction had to be truncated.
    pub fn set_instruction(&mut self, instruction: &str) -> Result<bool, PolicyError> {
        self.clear_instruction();
        let tokens = self.texts.iter().map(|t| t.encode(instruction)).collect::<Result<Vec<_>, _>>()?;
        let truncated = tokens.iter().any(|t| t.truncated);
        self.tokens = Some(tokens);
        let options = RunOptions::new().map_err(|e| PolicyError::Run(e.to_string()))?;
        for i in 0..self.stages.len() {
            if self.stages[i].run == StageRun::PerInstruction {
                let (ctx, stages) = self.split_for_run();
                let stage = &mut stages[i];
                let keep = stage.keep.clone();
                let kept = run_session(stage, &ctx, &HashMap::new(), &options, |outs| Ok(split(outs, &keep).0))?;
                self.instruction_values.extend(kept);
            }
        }
        Ok(truncated)
    }

    /// Forgets the instruction: a model that needs one refuses to run until the next.
    pub fn clear_instruction(&mut self) {
        self.tokens = None;
        self.instruction_values.clear();
        self.reset_state();
    }

    pub fn reset_state(&mut self) {
        self.state.iter_mut().for_each(StateBuf::reset);
    }

    /// The tokens of text input `i` for the current instruction.
    pub fn tokens(&self, i: usize) -> Option<&Tokens> {
        self.tokens.as_ref().map(|t| &t[i])
    }

    /// Image input `i`'s tensor from the last preprocessed frame.
    pub fn image_tensor(&self, i: usize) -> Tensor<'_> {
        self.pre.tensor(i)
    }

    pub fn preprocess_raw(&mut self, frame: &RawFrame<'_>) -> Result<(), FrameError> {
        self.pre.raw(frame)
    }

    /// How JPEG frames are decoded from now on.
    pub fn set_jpeg_scaling(&mut self, scaling: JpegScaling) {
        self.pre.set_jpeg_scaling(scaling);
    }

    pub fn set_resampling(&mut self, resampling: Resampling) {
        self.pre.set_resampling(resampling);
    }

    pub fn preprocess_compressed(&mut self, format: &str, data: &[u8]) -> Result<(), FrameError> {
        self.pre.compressed(format, data)
    }

    /// The inputs a stage may read, and the stages, borrowed apart.
    fn split_for_run(&mut self) -> (FeedCtx<'_>, &mut [StageSession]) {
        let ctx = FeedCtx {
            m: &self.manifest.manifest,
            pre: &self.pre,
            tokens: self.tokens.as_deref(),
            state: &self.state,
            instruction_values: &self.instruction_values,
        };
        (ctx, &mut self.stages)
    }

    /// Runs the per-frame stages on the last preprocessed frame. On success
    /// the recurrent state advances; on any error it is left as it was.
    pub fn infer(&mut self, run_options: &RunOptions) -> Result<(Action, Duration, Duration), PolicyError> {
        if !self.texts.is_empty() && self.tokens.is_none() {
            return Err(PolicyError::Tokenize("no instruction has been set".into()));
        }
        let t0 = Instant::now();
        let mut frame_values: HashMap<String, DynValue> = HashMap::new();
        let mut finals: HashMap<String, DynValue> = HashMap::new();
        let last = self.stages.len();
        for i in 0..last {
            if self.stages[i].run != StageRun::PerFrame {
                continue;
            }
            let wanted: Vec<String> = self.wanted_from(i);
            let (ctx, stages) = self.split_for_run();
            let stage = &mut stages[i];
            let keep = stage.keep.clone();
            let (keep, mut rest) = run_session(stage, &ctx, &frame_values, run_options, |outs| Ok(split(outs, &keep)))?;
            frame_values.extend(keep);
            for w in wanted {
                if let Some(v) = rest.remove(&w) {
                    finals.insert(w, v);
                }
            }
        }
        let inference = t0.elapsed();
        let t1 = Instant::now();
        let m = &self.manifest.manifest;
        let run_err = |e: ort::Error| PolicyError::Run(e.to_string());
        let action_value = finals
            .get(&m.action.output)
            .ok_or_else(|| PolicyError::Run(format!("output '{}' was not produced", m.action.output)))?;
        let (shape, values) = extract_floats(action_value, self.action.dtype).map_err(run_err)?;
        let (steps, width) = pick(&shape, self.action.index.as_deref())
            .map_err(|e| PolicyError::Run(format!("action output '{}' {e}", m.action.output)))?;
        let row_at = |s: usize| &values[steps.start + s * width..steps.start + (s + 1) * width];
        let rows: Vec<&[f32]> = match m.action.step {
            ActionStep::First => vec![row_at(0)],
            ActionStep::Last => vec![row_at(steps.count - 1)],
            ActionStep::Play => (0..steps.count).map(row_at).collect(),
        };
        if let Some(bad) = rows.iter().find(|r| r.iter().any(|v| !v.is_finite())) {
            return Err(PolicyError::NonFinite(bad.to_vec()));
        }
        let a = &m.action;
        let mut raw_max_abs = 0.0f32;
        let mut clipped_rows = Vec::with_capacity(rows.len());
        for row in rows {
            let scaled = |i: usize, k: usize| -> Result<f32, PolicyError> {
                let v = *row
                    .get(i)
                    .ok_or_else(|| PolicyError::Run(format!("action has {width} elements, index {i} wanted")))?;
                Ok(v * a.scale[k])
            };
            let raw = [scaled(a.linear_x, 0)?, scaled(a.linear_y, 1)?, scaled(a.angular_z, 2)?];
            raw_max_abs = raw.iter().fold(raw_max_abs, |m, v| m.max(v.abs()));
            clipped_rows.push(std::array::from_fn::<f32, 3, _>(|k| raw[k].clamp(-a.clip[k], a.clip[k])));
        }
        let first = clipped_rows[0];
        let chunk = (a.step == ActionStep::Play).then(|| PlayedChunk {
            steps: clipped_rows,
            period_s: a.period_s.unwrap_or_default(),
            blend: a.blend,
        });
        let action = Action { linear_x: first[0], linear_y: first[1], angular_z: first[2], raw_max_abs, chunk };
        // Carry the recurrent state only from a run whose action was valid.
        let mut next = Vec::with_capacity(self.state.len());
        for pair in &m.state {
            let v = finals
                .get(&pair.output)
                .ok_or_else(|| PolicyError::Run(format!("state output '{}' was not produced", pair.output)))?;
            let buf = match pair.dtype {
                FloatType::F32 => StateBuf::F32(v.try_extract_tensor::<f32>().map_err(run_err)?.1.to_vec()),
                FloatType::F16 => StateBuf::F16(v.try_extract_tensor::<f16>().map_err(run_err)?.1.to_vec()),
            };
            let finite = match &buf {
                StateBuf::F32(v) => v.iter().all(|x| x.is_finite()),
                StateBuf::F16(v) => v.iter().all(|x| x.is_finite()),
            };
            if !finite {
                return Err(PolicyError::NonFinite(Vec::new()));
            }
            next.push(buf);
        }
        for (dst, src) in self.state.iter_mut().zip(next) {
            *dst = src;
        }
        Ok((action, inference, t1.elapsed()))
    }

    /// The action and state outputs that stage `i` produces.
    fn wanted_from(&self, i: usize) -> Vec<String> {
        let m = &self.manifest.manifest;
        let mut v = Vec::new();
        if self.action.stage == i {
            v.push(m.action.output.clone());
        }
        for (pair, &s) in m.state.iter().zip(&self.state_stage) {
            if s == i {
                v.push(pair.output.clone());
            }
        }
        v
    }
}

/// What a stage's inputs are read from.
struct FeedCtx<'a> {
    m: &'a Manifest,
    pre: &'a Preprocessor,
    tokens: Option<&'a [Tokens]>,
    state: &'a [StateBuf],
    instruction_values: &'a HashMap<String, DynValue>,
}

/// Feeds a stage, runs it, and hands its outputs (by name) to `read`.
fn run_session<R>(
    stage: &mut StageSession,
    ctx: &FeedCtx<'_>,
    frame_values: &HashMap<String, DynValue>,
    options: &RunOptions,
    read: impl FnOnce(&mut HashMap<String, DynValue>) -> Result<R, PolicyError>,
) -> Result<R, PolicyError> {
    let run_err = |e: ort::Error| PolicyError::Run(e.to_string());
    let m = ctx.m;
    let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(stage.feeds.len());
    for (name, feed) in &stage.feeds {
        let value: SessionInputValue<'_> = match feed {
            Feed::Manifest(Source::Image(k)) => {
                let shape: Vec<i64> = m.images[*k].spec.shape().iter().map(|&d| d as i64).collect();
                match ctx.pre.tensor(*k) {
                    Tensor::F32(v) => TensorRef::from_array_view((shape, v)).map_err(run_err)?.into(),
                    Tensor::F16(v) => TensorRef::<f16>::from_array_view((shape, v)).map_err(run_err)?.into(),
                }
            }
            Feed::Manifest(Source::Text(k, role)) => {
                let tokens = ctx.tokens.ok_or_else(|| PolicyError::Tokenize("no instruction has been set".into()))?;
                let t = tokens[*k].role(*role);
                let shape = vec![1i64, t.len() as i64];
                match t {
                    Ints::I64(v) => TensorRef::from_array_view((shape, &v[..])).map_err(run_err)?.into(),
                    Ints::I32(v) => TensorRef::from_array_view((shape, &v[..])).map_err(run_err)?.into(),
                }
            }
            Feed::Manifest(Source::State(k)) => {
                let shape: Vec<i64> = m.state[*k].shape.iter().map(|&d| d as i64).collect();
                match &ctx.state[*k] {
                    StateBuf::F32(v) => TensorRef::from_array_view((shape, &v[..])).map_err(run_err)?.into(),
                    StateBuf::F16(v) => TensorRef::from_array_view((shape, &v[..])).map_err(run_err)?.into(),
                }
            }
            Feed::Manifest(Source::Stage(_)) => unreachable!("manifest roles never name a stage"),
            Feed::Stage(out) => {
                let v = frame_values.get(out).or_else(|| ctx.instruction_values.get(out)).ok_or_else(|| {
                    PolicyError::Tokenize(format!(
                        "'{out}' (for stage '{}') is computed per instruction: no instruction has been set",
                        stage.name
                    ))
                })?;
                v.into()
            }
        };
        inputs.push((name.clone(), value));
    }
    let mut outputs = stage.session.run_with_options(inputs, options).map_err(run_err)?;
    let names: Vec<String> = outputs.keys().map(|k| k.to_string()).collect();
    let mut by_name: HashMap<String, DynValue> = HashMap::new();
    for n in names {
        if let Some(v) = outputs.remove(&n) {
            by_name.insert(n, v);
        }
    }
    read(&mut by_name)
}

/// Splits outputs into those in `keep` and the rest.
fn split(
    outs: &mut HashMap<String, DynValue>,
    keep: &[String],
) -> (HashMap<String, DynValue>, HashMap<String, DynValue>) {
    let mut kept = HashMap::new();
    for k in keep {
        if let Some(v) = outs.remove(k) {
            kept.insert(k.clone(), v);
        }
    }
    (kept, std::mem::take(outs))
}

/// An f32 or f16 tensor as f32 values, with its shape.
fn extract_floats(v: &DynValue, ty: FloatType) -> Result<(Vec<i64>, Vec<f32>), ort::Error> {
    Ok(match ty {
        FloatType::F32 => {
            let (s, d) = v.try_extract_tensor::<f32>()?;
            (s.to_vec(), d.to_vec())
        }
        FloatType::F16 => {
            let (s, d) = v.try_extract_tensor::<f16>()?;
            (s.to_vec(), d.iter().map(|x| x.to_f32()).collect())
        }
    })
}

/// The chunk rows of an action tensor: where the first starts, how many.
#[derive(Debug)]
struct Steps {
    start: usize,
    count: usize,
}

/// Applies the index path to a tensor of `shape`, leaving `[T, k]` or `[k]`.
fn pick(shape: &[i64], index: Option<&[i64]>) -> Result<(Steps, usize), String> {
    if shape.is_empty() {
        return Err("is a scalar; an action needs at least [k]".into());
    }
    let lead = shape.len().saturating_sub(2);
    let index: Vec<i64> = index.map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; lead]);
    if index.len() > shape.len() - 1 {
        return Err(format!("has shape {shape:?}: the index path {index:?} leaves no action vector"));
    }
    let mut start = 0usize;
    let mut stride: usize = shape.iter().map(|&d| d as usize).product();
    for (axis, &i) in index.iter().enumerate() {
        let d = shape[axis];
        stride /= d.max(1) as usize;
        let at = if i < 0 { d + i } else { i };
        if at < 0 || at >= d {
            return Err(format!("has shape {shape:?}: index {i} is outside axis {axis} of size {d}"));
        }
        start += at as usize * stride;
    }
    let rest = &shape[index.len()..];
    let (count, width) = match rest {
        [k] => (1, *k as usize),
        [t, k] => (*t as usize, *k as usize),
        _ => return Err(format!("has shape {shape:?}: after the index path {index:?}, {rest:?} is not [T, k] or [k]")),
    };
    if count == 0 || width == 0 {
        return Err(format!("has shape {shape:?}: an empty action"));
    }
    Ok((Steps { start, count }, width))
}

fn describe(t: &ValueType) -> String {
    match t {
        ValueType::Tensor { ty, shape, .. } if shape.is_empty() => format!("{ty:?} scalar"),
        ValueType::Tensor { ty, shape, .. } => format!("{ty:?}{:?}", &shape[..]),
        other => format!("{other:?}"),
    }
}

fn element(ty: &ValueType) -> Option<TensorElementType> {
    match ty {
        ValueType::Tensor { ty, .. } => Some(*ty),
        _ => None,
    }
}

fn dims(ty: &ValueType) -> &[i64] {
    match ty {
        ValueType::Tensor { shape, .. } => shape,
        _ => &[],
    }
}

fn float_element(t: FloatType) -> TensorElementType {
    match t {
        FloatType::F32 => TensorElementType::Float32,
        FloatType::F16 => TensorElementType::Float16,
    }
}

/// Matches every graph input to what feeds it and checks types and shapes;
/// finds the stage of the action and of each state output.
fn check_contract(m: &Manifest, stages: &mut [StageSession]) -> Result<(ActionPick, Vec<usize>), PolicyError> {
    let contract = |s: String| PolicyError::Contract(s);
    let fed = m.fed();
    let mut used = vec![false; fed.len()];
    // Outputs seen so far: name -> (stage, type).
    let mut produced: HashMap<String, (usize, ValueType, StageRun)> = HashMap::new();
    for (si, stage) in stages.iter_mut().enumerate() {
        let mut feeds = Vec::new();
        for input in stage.session.inputs() {
            let (name, actual) = (input.name(), input.dtype());
            let here = |what: &str| format!("stage '{}': tensor '{name}' {what}", stage.name);
            let feed = if let Some(k) = fed.iter().position(|(n, _)| *n == name) {
                used[k] = true;
                let source = fed[k].1;
                if stage.run == StageRun::PerInstruction && !matches!(source, Source::Text(..)) {
                    return Err(contract(here(
                        "changes every frame, but the stage runs per_instruction (it may read text and \
                         other per-instruction stages only)",
                    )));
                }
                expect_fed(m, source, actual).map_err(|e| contract(here(&e)))?;
                Feed::Manifest(source)
            } else if let Some((from, ty, run)) = produced.get(name) {
                if stage.run == StageRun::PerInstruction && *run == StageRun::PerFrame {
                    return Err(contract(here("comes from a per_frame stage, but this stage runs per_instruction")));
                }
                if element(ty) != element(actual) {
                    return Err(contract(here(&format!(
                        "expected {} (output of stage '{}'), graph has {}",
                        describe(ty),
                        m.stages[*from].name,
                        describe(actual)
                    ))));
                }
                Feed::Stage(name.to_string())
            } else {
                let mut have: Vec<&str> = fed.iter().map(|(n, _)| *n).collect();
                have.extend(produced.keys().map(String::as_str));
                have.sort();
                return Err(contract(format!(
                    "graph input '{name}' ({}) of stage '{}' is not named in the manifest (it feeds {have:?}) \
                     nor an output of an earlier stage",
                    describe(actual),
                    stage.name
                )));
            };
            feeds.push((name.to_string(), feed));
        }
        stage.feeds = feeds;
        for out in stage.session.outputs() {
            produced.insert(out.name().to_string(), (si, out.dtype().clone(), stage.run));
        }
    }
    // Outputs later stages read.
    let reads: Vec<(usize, String)> = stages
        .iter()
        .flat_map(|s| s.feeds.iter().filter_map(|(_, f)| if let Feed::Stage(n) = f { Some(n.clone()) } else { None }))
        .map(|n| (produced[&n].0, n))
        .collect();
    for (si, n) in reads {
        if !stages[si].keep.contains(&n) {
            stages[si].keep.push(n);
        }
    }
    if let Some(k) = used.iter().position(|u| !u) {
        let all: Vec<String> =
            stages.iter().flat_map(|s| s.session.inputs().iter().map(|i| i.name().to_string())).collect();
        return Err(contract(format!("input '{}' is not in any stage's graph (they take {all:?})", fed[k].0)));
    }
    let per_frame_output = |name: &str, what: &str| -> Result<(usize, ValueType), PolicyError> {
        match produced.get(name) {
            Some((si, ty, StageRun::PerFrame)) => Ok((*si, ty.clone())),
            Some((si, _, _)) => Err(contract(format!(
                "{what} '{name}' is an output of stage '{}', which runs per_instruction",
                m.stages[*si].name
            ))),
            None => {
                let mut have: Vec<&str> = produced.keys().map(String::as_str).collect();
                have.sort();
                Err(contract(format!("{what} '{name}' is not an output of any stage (they give {have:?})")))
            }
        }
    };
    let (stage, ty) = per_frame_output(&m.action.output, "output")?;
    let dtype = match element(&ty) {
        Some(TensorElementType::Float32) => FloatType::F32,
        Some(TensorElementType::Float16) => FloatType::F16,
        _ => {
            return Err(contract(format!(
                "tensor '{}': expected a Float32 or Float16 tensor, graph has {}",
                m.action.output,
                describe(&ty)
            )))
        }
    };
    // Check the index path and width against the static shape (dynamic axes are checked per run).
    let shape: Vec<i64> = dims(&ty).iter().map(|&d| if d < 0 { 1 } else { d }).collect();
    let need = m.action.linear_x.max(m.action.linear_y).max(m.action.angular_z) as i64 + 1;
    let (_, width) =
        pick(&shape, m.action.index.as_deref()).map_err(|e| contract(format!("tensor '{}' {e}", m.action.output)))?;
    let declared_width = *dims(&ty).last().unwrap_or(&-1);
    if declared_width != -1 && (width as i64) < need {
        return Err(contract(format!(
            "tensor '{}': the action vector has {width} elements, linear_x/linear_y/angular_z need {need} (graph has {})",
            m.action.output,
            describe(&ty)
        )));
    }
    let mut state_stage = Vec::new();
    for s in &m.state {
        let (si, ty) = per_frame_output(&s.output, "state output")?;
        let want: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
        expect_tensor(&ty, float_element(s.dtype), Some(&want))
            .map_err(|e| contract(format!("state output '{}': {e}", s.output)))?;
        state_stage.push(si);
    }
    Ok((ActionPick { stage, dtype, index: m.action.index.clone() }, state_stage))
}

/// The type and shape a manifest role feeds must match the graph's input.
fn expect_fed(m: &Manifest, source: Source, actual: &ValueType) -> Result<(), String> {
    match source {
        Source::Image(k) => {
            let spec = &m.images[k].spec;
            let ty = match spec.dtype {
                DType::F32 => TensorElementType::Float32,
                DType::F16 => TensorElementType::Float16,
            };
            let shape: Vec<i64> = spec.shape().iter().map(|&d| d as i64).collect();
            expect_tensor(actual, ty, Some(&shape))
        }
        Source::State(k) => {
            let s = &m.state[k];
            let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
            expect_tensor(actual, float_element(s.dtype), Some(&shape))
        }
        Source::Text(k, role) => {
            let t = &m.texts[k];
            let ty = match t.dtype {
                IdType::Int64 => TensorElementType::Int64,
                IdType::Int32 => TensorElementType::Int32,
            };
            let len = match t.padding {
                Padding::MaxLength => t.max_length as i64,
                Padding::Exact => -1,
            };
            expect_tensor(actual, ty, Some(&[1, len]))?;
            let d = dims(actual);
            if t.padding == Padding::Exact && d[1] != -1 {
                return Err(format!(
                    "has a fixed length {} but padding is exact (the length follows the instruction): export it \
                     with a dynamic axis, or use padding max_length with max_length {}",
                    d[1], d[1]
                ));
            }
            if role == TextRole::ImageEmbedsPositionMask && t.layout == TextLayout::Plain {
                return Err("is an image-token mask, but the text layout is plain".into());
            }
            Ok(())
        }
        Source::Stage(_) => Ok(()),
    }
}

fn expect_tensor(actual: &ValueType, ty: TensorElementType, shape: Option<&[i64]>) -> Result<(), String> {
    let ok = match actual {
        ValueType::Tensor { ty: t, shape: s, .. } => {
            *t == ty
                && shape.is_none_or(|want| {
                    s.len() == want.len() && s.iter().zip(want).all(|(a, w)| *a == -1 || *w == -1 || a == w)
                })
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let want = match shape {
        None => format!("a {ty:?} tensor"),
        Some([]) => format!("a {ty:?} scalar"),
        Some(s) => format!("{ty:?}{s:?}"),
    };
    Err(format!("expected {want}, graph has {}", describe(actual)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_path_picks_the_chunk_out_of_any_rank() {
        let (s, w) = pick(&[1, 3], None).unwrap();
        assert_eq!((s.start, s.count, w), (0, 1, 3));
        let (s, w) = pick(&[1, 4, 3], None).unwrap();
        assert_eq!((s.start, s.count, w), (0, 4, 3));
        // [batch, history, T, k]: the last history entry.
        let (s, w) = pick(&[1, 2, 4, 3], Some(&[0, -1])).unwrap();
        assert_eq!((s.start, s.count, w), (12, 4, 3));
        let (s, _) = pick(&[2, 5, 3], Some(&[1, 2])).unwrap();
        assert_eq!((s.start, s.count), (15 + 6, 1));
        assert!(pick(&[], None).unwrap_err().contains("scalar"));
        assert!(pick(&[1, 4, 3], Some(&[0, 5])).unwrap_err().contains("outside axis 1"));
        assert!(pick(&[1, 2, 4, 3], Some(&[0])).unwrap_err().contains("not [T, k]"));
    }

    #[test]
    fn exact_length_text_inputs_of_the_graph_get_tensorrts_shape_profile() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/hf_tiny/hybrid");
        let m = Manifest::load(&dir.join("hybrid.json")).unwrap().manifest;
        let names = onnx_file::input_names(&dir.join("policy.onnx")).unwrap();
        let p = shape_profile(&m, &names);
        // <s> <image> 64 image tokens </image> and at least one text token .. max_length.
        let ids = p.inputs.iter().find(|i| i.name == "input_ids").expect("input_ids is dynamic");
        assert_eq!((ids.min.clone(), ids.opt.clone(), ids.max.clone()), (vec![1, 68], vec![1, 84], vec![1, 256]));
        assert_eq!(p.inputs.len(), 4, "{p:?}");
        // CLIP's text is padded to 77 and lives in the other stage: not in this graph's profile.
        let text = onnx_file::input_names(&dir.join("clip_text.onnx")).unwrap();
        assert!(shape_profile(&m, &text).is_static());
    }

    fn tensor(ty: TensorElementType, shape: &[i64]) -> ValueType {
        ValueType::Tensor {
            ty,
            shape: shape.to_vec().into(),
            dimension_symbols: ort::value::SymbolicDimensions::new(shape.iter().map(|_| String::new())),
        }
    }

    #[test]
    fn type_errors_say_scalar_only_for_scalars() {
        let e =
            expect_tensor(&tensor(TensorElementType::Int64, &[1, 3]), TensorElementType::Float32, None).unwrap_err();
        assert_eq!(e, "expected a Float32 tensor, graph has Int64[1, 3]");
        let f16 = tensor(TensorElementType::Float16, &[1, 1, 128]);
        let e = expect_tensor(&f16, TensorElementType::Float32, Some(&[1, 1, 128])).unwrap_err();
        assert_eq!(e, "expected Float32[1, 1, 128], graph has Float16[1, 1, 128]");
        let e = expect_tensor(&tensor(TensorElementType::Float32, &[]), TensorElementType::Float32, Some(&[1, 3]))
            .unwrap_err();
        assert_eq!(e, "expected Float32[1, 3], graph has Float32 scalar");
    }
}

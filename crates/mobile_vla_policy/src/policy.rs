//! A loaded policy: its graphs, and everything needed to feed them a frame and an instruction.
//!
//! Owns the stages (one [`Backend`] per graph: the ONNX Runtime sessions of
//! `session` on this robot, or a `remote` server's model), the preprocessor and its buffers (one tensor
//! per image input), the tokenizers and what the current instruction made
//! (its tokens, and the outputs of the per-instruction stages, computed once
//! per instruction and fed to the per-frame ones), the recurrent state and
//! the frame windows (`window`).
//! At load every graph input is matched to what feeds it (`contract`), so a
//! mismatch is one error naming the tensor before any frame. Given a frame it
//! produces an [`Action`] (`action` decodes it) or an error; it never decides
//! whether that action may move the robot (that is the watchdog's and the
//! command stage's job), and it holds no ROS types.
//!
//! What survives a failure: a refused frame leaves the state, the windows
//! and the instruction as they were (nothing ran); a run that errs, is
//! cancelled or returns a non-finite action, state or window entry carries
//! nothing forward (the next state and the frame's window entries are taken
//! only from a valid run, all of it or none; a frame that only waits for its
//! windows to fill joins them); a window input that changes shape from one
//! frame to the next ends the history (state and windows start over); a backend that
//! failed or was cancelled runs the next frame as before (the run options are
//! re-armed by the worker); an instruction the tokenizer refuses, or whose
//! per-instruction stage fails, leaves no instruction at all, never the
//! previous one's tokens or stage outputs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use mobile_vla_core::config::ModelConfig;
use mobile_vla_vision::{FrameError, Image, JpegScaling, Preprocessor, RawFrame, Resampling, Tensor as ImageTensor};
use ort::session::RunOptions;

use crate::action::{self, Action};
use crate::backend::{Backend, Feed, Tensor, View};
use crate::contract::{self, Graph, Input, WindowFeed, WindowSource};
use crate::manifest::{LoadedManifest, Manifest, Source, Stage as ManifestStage, StageRun, WindowStart};
use crate::remote::{self, RemoteStage};
use crate::runtime::Runtime;
use crate::session::{OrtStage, Providers};
use crate::state::State;
use crate::text::{Ints, TextEncoder, Tokens};
use crate::window::{Fed, Windows};
use crate::PolicyError;

/// How long each stage of the last run took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

/// One stage: its backend and how its inputs are fed.
struct Stage {
    name: String,
    run: StageRun,
    backend: Box<dyn Backend>,
    feeds: Vec<(String, Input)>,
    /// Outputs a later stage reads.
    keep: Vec<String>,
}

/// What the current instruction made: its tokens, and the per-instruction stages' outputs.
struct Prepared {
    tokens: Vec<Tokens>,
    values: HashMap<String, Tensor>,
}

pub struct Policy {
    manifest: LoadedManifest,
    stages: Vec<Stage>,
    providers: Providers,
    pre: Preprocessor,
    texts: Vec<TextEncoder>,
    /// `None`: no instruction (a model that reads text refuses to run).
    instruction: Option<Prepared>,
    state: State,
    /// The stage that makes the action.
    action_stage: usize,
    /// Per state pair, the stage that produces its output.
    state_stage: Vec<usize>,
    windows: Windows,
    /// Per window, what each frame adds to it.
    window_sources: Vec<WindowFeed>,
    /// Per window, what it holds and its memory, for the start log.
    window_sizes: Vec<String>,
}

impl Policy {
    /// Loads the manifest, opens every stage's session on its providers and
    /// checks the graphs against the manifest. `max_frame` bounds accepted frames.
    pub fn load(
        runtime: &Runtime,
        manifest_path: &Path,
        cfg: &ModelConfig,
        max_frame: (u32, u32),
    ) -> Result<Policy, PolicyError> {
        let manifest = Manifest::load(manifest_path)?;
        let m = &manifest.manifest;
        // A stage served remotely needs no graph file on the robot.
        let remote = |s: &ManifestStage| cfg.remote.enabled() && s.run == StageRun::PerFrame;
        for (s, p) in m.stages.iter().zip(&manifest.onnx_paths) {
            if !remote(s) && !p.is_file() {
                return Err(PolicyError::Load(format!("ONNX file {} does not exist", p.display())));
            }
        }
        // The servers first: while one is unreachable nothing else is opened
        // (its worker tries the whole load again, every remote.retry_s).
        let mut remotes = Vec::new();
        for spec in m.stages.iter() {
            let name = remote::served_name(&m.name, &spec.name, spec.served_as.as_deref());
            remotes.push(if remote(spec) { Some(RemoteStage::connect(&cfg.remote, &name)?) } else { None });
        }
        let texts = m
            .texts
            .iter()
            .zip(&manifest.tokenizer_paths)
            .map(|(t, p)| TextEncoder::new(t.clone(), p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut backends: Vec<Box<dyn Backend>> = Vec::new();
        let mut providers = Providers::default();
        for ((spec, path), served) in m.stages.iter().zip(&manifest.onnx_paths).zip(remotes) {
            if let Some(stage) = served {
                providers.remote.push((spec.name.clone(), stage.describe().to_string()));
                backends.push(Box::new(stage));
                continue;
            }
            let (stage, report) = OrtStage::open(runtime, m, spec, path, cfg)?;
            backends.push(Box::new(stage));
            providers.stages.push(report);
        }
        Self::assemble(manifest, backends, providers, texts, max_frame)
    }

    /// Wires the stages' backends to the manifest (see `contract`).
    fn assemble(
        manifest: LoadedManifest,
        backends: Vec<Box<dyn Backend>>,
        providers: Providers,
        texts: Vec<TextEncoder>,
        max_frame: (u32, u32),
    ) -> Result<Policy, PolicyError> {
        let m = &manifest.manifest;
        let graphs: Vec<Graph<'_>> = m
            .stages
            .iter()
            .zip(&backends)
            .map(|(s, b)| Graph { name: &s.name, run: s.run, inputs: b.inputs(), outputs: b.outputs() })
            .collect();
        let wiring = contract::wire(m, &graphs)?;
        let window_sizes = m
            .windows
            .iter()
            .zip(&wiring.windows)
            .map(|(w, feed)| {
                use ort::value::TensorElementType as E;
                let bytes = match feed.element {
                    E::Float16 | E::Bfloat16 => 2,
                    E::Int64 | E::Float64 | E::Uint64 => 8,
                    _ => 4,
                };
                let per_frame = feed.frame_dims.iter().skip(1).try_fold(1i64, |n, &d| (d > 0).then_some(n * d));
                let size = per_frame.map_or("its size is known at the first frame".into(), |n| {
                    format!("{:.1} KiB", (n * bytes * w.length as i64) as f64 / 1024.0)
                });
                format!("'{}': {} x '{}' {:?}, {size}", w.input, w.length, w.from, feed.frame_dims)
            })
            .collect();
        let stages = m
            .stages
            .iter()
            .zip(backends)
            .zip(wiring.feeds.into_iter().zip(wiring.keep))
            .map(|((s, backend), (feeds, keep))| Stage { name: s.name.clone(), run: s.run, backend, feeds, keep })
            .collect();
        let pre = Preprocessor::new(m.images.iter().map(|i| i.spec.clone()).collect(), max_frame.0, max_frame.1);
        Ok(Policy {
            state: State::new(&m.state),
            windows: Windows::new(&m.windows, m.window_start),
            window_sources: wiring.windows,
            window_sizes,
            stages,
            providers,
            pre,
            texts,
            instruction: None,
            action_stage: wiring.action_stage,
            state_stage: wiring.state_stage,
            manifest,
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

    /// Each frame window: what it holds and its memory.
    pub fn window_sizes(&self) -> &[String] {
        &self.window_sizes
    }

    /// True when the model takes no instruction text.
    pub fn instruction_free(&self) -> bool {
        self.texts.is_empty()
    }

    /// Tokenises a new instruction, runs the per-instruction stages on it
    /// (once per change) and resets the recurrent state. Returns whether the
    /// instruction had to be truncated. On any error no instruction is left.
    pub fn set_instruction(&mut self, instruction: &str) -> Result<bool, PolicyError> {
        self.clear_instruction();
        let tokens = self.texts.iter().map(|t| t.encode(instruction)).collect::<Result<Vec<_>, _>>()?;
        let truncated = tokens.iter().any(|t| t.truncated);
        let mut prepared = Prepared { tokens, values: HashMap::new() };
        let options = RunOptions::new().map_err(|e| PolicyError::Run(e.to_string()))?;
        for stage in self.stages.iter_mut().filter(|s| s.run == StageRun::PerInstruction) {
            let ctx = FeedCtx {
                m: &self.manifest.manifest,
                pre: &self.pre,
                prepared: Some(&prepared),
                state: &self.state,
                frame_values: &HashMap::new(),
                windows: &HashMap::new(),
            };
            let wanted = stage.keep.clone();
            let outs = run_stage(stage, &ctx, &wanted, &options)?;
            prepared.values.extend(stage.keep.iter().cloned().zip(outs));
        }
        self.instruction = Some(prepared);
        Ok(truncated)
    }

    /// Forgets the instruction: a model that needs one refuses to run until the next.
    pub fn clear_instruction(&mut self) {
        self.instruction = None;
        self.reset_state();
    }

    /// One run with every window filled from this frame (whatever the manifest's
    /// `window_start`), then a new history: the warm-up proves the whole graph runs.
    pub fn infer_filled_once(&mut self, run_options: &RunOptions) -> Result<(Action, Duration, Duration), PolicyError> {
        let start = self.windows.set_start(WindowStart::RepeatFirst);
        let outcome = self.infer(run_options);
        self.windows.set_start(start);
        self.reset_state();
        outcome
    }

    /// A new history: zero recurrent state, empty windows.
    pub fn reset_state(&mut self) {
        self.state.reset();
        self.windows.reset();
    }

    /// The tokens of text input `i` for the current instruction.
    pub fn tokens(&self, i: usize) -> Option<&Tokens> {
        self.instruction.as_ref().map(|p| &p.tokens[i])
    }

    /// Image input `i`'s tensor from the last preprocessed frame.
    pub fn image_tensor(&self, i: usize) -> ImageTensor<'_> {
        self.pre.tensor(i)
    }

    /// Prepares every image input from a frame; a refused frame leaves them as they were.
    pub fn preprocess(&mut self, image: &Image<'_>) -> Result<(), FrameError> {
        self.pre.image(image)
    }

    pub fn preprocess_raw(&mut self, frame: &RawFrame<'_>) -> Result<(), FrameError> {
        self.pre.raw(frame)
    }

    pub fn preprocess_compressed(&mut self, format: &str, data: &[u8]) -> Result<(), FrameError> {
        self.pre.compressed(format, data)
    }

    /// How JPEG frames are decoded from now on.
    pub fn set_jpeg_scaling(&mut self, scaling: JpegScaling) {
        self.pre.set_jpeg_scaling(scaling);
    }

    pub fn set_resampling(&mut self, resampling: Resampling) {
        self.pre.set_resampling(resampling);
    }

    /// Runs the per-frame stages on the last preprocessed frame. On success
    /// the recurrent state advances and the frame joins its windows; on any
    /// error both are left as they were, but for a window that waits to fill
    /// (the frame joins it, and [`PolicyError::WindowFilling`] says how full
    /// it is) and a window entry that changed shape (a failed run that ends
    /// the history: state and windows start over).
    pub fn infer(&mut self, run_options: &RunOptions) -> Result<(Action, Duration, Duration), PolicyError> {
        if !self.texts.is_empty() && self.instruction.is_none() {
            return Err(PolicyError::Tokenize("no instruction has been set".into()));
        }
        let t0 = Instant::now();
        let m = &self.manifest.manifest;
        // What this frame adds to each window: images now, stage outputs as their stages run.
        let mut entries: Vec<Option<Tensor>> = self
            .window_sources
            .iter()
            .map(|w| match &w.source {
                WindowSource::Image(i) => Some(Tensor::image(&m.images[*i].spec.shape(), self.pre.tensor(*i))),
                WindowSource::Stage { .. } => None,
            })
            .collect();
        let mut frame_values: HashMap<String, Tensor> = HashMap::new();
        let mut finals: HashMap<String, Tensor> = HashMap::new();
        for (i, stage) in self.stages.iter_mut().enumerate().filter(|(_, s)| s.run == StageRun::PerFrame) {
            let window_values = feed_windows(&mut self.windows, &mut self.state, &stage.feeds, &mut entries)?;
            // Outputs later stages and windows read, then the action and state outputs this stage makes.
            let mut wanted = stage.keep.clone();
            if self.action_stage == i {
                wanted.push(m.action.output.clone());
            }
            for (pair, &s) in m.state.iter().zip(&self.state_stage) {
                if s == i {
                    wanted.push(pair.output.clone());
                }
            }
            let ctx = FeedCtx {
                m,
                pre: &self.pre,
                prepared: self.instruction.as_ref(),
                state: &self.state,
                frame_values: &frame_values,
                windows: &window_values,
            };
            let outs = run_stage(stage, &ctx, &wanted, run_options)?;
            let kept = stage.keep.len();
            for (k, (name, value)) in wanted.into_iter().zip(outs).enumerate() {
                if k < kept {
                    frame_values.insert(name, value);
                } else {
                    finals.insert(name, value);
                }
            }
            for (w, entry) in self.window_sources.iter().zip(entries.iter_mut()) {
                if let WindowSource::Stage { stage, output } = &w.source {
                    if *stage == i {
                        *entry = frame_values.get(output).cloned();
                    }
                }
            }
        }
        let inference = t0.elapsed();
        let t1 = Instant::now();
        let produced = |name: &str, what: &str, finals: &mut HashMap<String, Tensor>| {
            finals.remove(name).ok_or_else(|| PolicyError::Run(format!("{what} '{name}' was not produced")))
        };
        let out = produced(&m.action.output, "output", &mut finals)?;
        let values = out
            .floats()
            .ok_or_else(|| PolicyError::Run(format!("output '{}' is not a float tensor", m.action.output)))?;
        let action = action::decode(&m.action, &out.shape, &values)?;
        // Carry the recurrent state, and the frame into its windows, only from a run whose action was valid.
        let states =
            m.state.iter().map(|p| produced(&p.output, "state output", &mut finals)).collect::<Result<Vec<_>, _>>()?;
        self.windows.check(&entries)?;
        self.state.advance(&m.state, states)?;
        self.windows.commit(entries);
        Ok((action, inference, t1.elapsed()))
    }
}

/// The windows a stage's `feeds` take, with this frame's `entries` in them.
/// A window still filling ends the frame, every entry joining its window
/// (each is made by then: `contract` orders the stages so). A per-frame tensor
/// that changed shape ends the history it belonged to: the next frame starts
/// a new one, as on a fresh node.
fn feed_windows(
    windows: &mut Windows,
    state: &mut State,
    feeds: &[(String, Input)],
    entries: &mut Vec<Option<Tensor>>,
) -> Result<HashMap<usize, Tensor>, PolicyError> {
    let mut values = HashMap::new();
    for (_, input) in feeds {
        let Input::Manifest(Source::Window(k)) = input else { continue };
        let current = entries[*k].as_ref().expect("a window's source runs before the stage that takes it");
        match windows.feed(*k, current) {
            Ok(Fed::Full(t)) => {
                values.insert(*k, t);
            }
            Ok(Fed::Filling { have, need }) => {
                windows.check(entries)?;
                windows.commit(std::mem::take(entries));
                return Err(PolicyError::WindowFilling { have, need });
            }
            Err(e) => {
                state.reset();
                windows.reset();
                return Err(e);
            }
        }
    }
    Ok(values)
}

/// What a stage's inputs are read from.
struct FeedCtx<'a> {
    m: &'a Manifest,
    pre: &'a Preprocessor,
    prepared: Option<&'a Prepared>,
    state: &'a State,
    /// Outputs of the per-frame stages run so far on this frame.
    frame_values: &'a HashMap<String, Tensor>,
    /// This frame's windows the stage takes, by window.
    windows: &'a HashMap<usize, Tensor>,
}

/// Feeds a stage and runs it; the `wanted` outputs, in that order.
fn run_stage(
    stage: &mut Stage,
    ctx: &FeedCtx<'_>,
    wanted: &[String],
    options: &RunOptions,
) -> Result<Vec<Tensor>, PolicyError> {
    let no_instruction = || PolicyError::Tokenize("no instruction has been set".into());
    let mut feeds = Vec::with_capacity(stage.feeds.len());
    for (name, input) in &stage.feeds {
        let (shape, values) = match input {
            Input::Manifest(Source::Image(k)) => {
                let shape = ctx.m.images[*k].spec.shape().iter().map(|&d| d as i64).collect();
                let values = match ctx.pre.tensor(*k) {
                    ImageTensor::F32(v) => View::F32(v),
                    ImageTensor::F16(v) => View::F16(v),
                };
                (shape, values)
            }
            Input::Manifest(Source::Text(k, role)) => {
                let t = ctx.prepared.ok_or_else(no_instruction)?.tokens[*k].role(*role);
                let values = match t {
                    Ints::I64(v) => View::I64(v),
                    Ints::I32(v) => View::I32(v),
                };
                (vec![1, t.len() as i64], values)
            }
            Input::Manifest(Source::State(k)) => {
                (ctx.m.state[*k].shape.iter().map(|&d| d as i64).collect(), ctx.state.view(*k))
            }
            Input::Manifest(Source::Window(k)) => {
                let w = ctx.windows.get(k).expect("fed before the stage runs");
                (w.shape.clone(), w.values.view())
            }
            Input::Manifest(Source::Stage(_)) => unreachable!("manifest roles never name a stage"),
            Input::Stage(out) => {
                let v = ctx.frame_values.get(out).or_else(|| ctx.prepared.and_then(|p| p.values.get(out))).ok_or_else(
                    || {
                        PolicyError::Tokenize(format!(
                            "'{out}' (for stage '{}') is computed per instruction: no instruction has been set",
                            stage.name
                        ))
                    },
                )?;
                (v.shape.clone(), v.values.view())
            }
        };
        feeds.push(Feed { name, shape, values });
    }
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    stage.backend.run(&feeds, &wanted, options)
}

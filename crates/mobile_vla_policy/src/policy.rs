//! A loaded policy: one ONNX Runtime session and everything needed to feed it.
//!
//! Owns the session, the chosen execution provider, the preprocessor and its
//! buffers, the current instruction's tokens and the recurrent state. Given a
//! frame it produces an [`Action`] or an error; it never decides whether that
//! action may move the robot (that is the watchdog's and the command stage's
//! job), and it holds no ROS types.

use std::path::Path;
use std::time::{Duration, Instant};

use half::f16;
use mobile_vla_core::config::ModelConfig;
use mobile_vla_core::preprocess::{DType, FrameError, Preprocessor, RawFrame, Tensor};
use ort::session::{RunOptions, Session};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::manifest::{ActionStep, LoadedManifest, Manifest};
use crate::providers::{self, Selection};
use crate::text::{TextEncoder, Tokens};
use crate::PolicyError;

/// A velocity proposal from a policy, already scaled and clipped per its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Action {
    pub linear_x: f32,
    pub linear_y: f32,
    pub angular_z: f32,
    /// The largest |velocity| after scaling and before the clip: what the
    /// watchdog judges, so a diverging model fails over instead of driving at the clip.
    pub raw_max_abs: f32,
}

/// How long each stage of the last run took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

pub struct Policy {
    manifest: LoadedManifest,
    session: Session,
    selection: Selection,
    pre: Preprocessor,
    text: Option<TextEncoder>,
    tokens: Option<Tokens>,
    state: Vec<Vec<f32>>,
}

impl Policy {
    /// Loads the manifest, creates the session on the preferred provider and
    /// checks the graph against the manifest. `max_frame` bounds accepted frames.
    pub fn load(
        env: &ort::environment::Environment,
        manifest_path: &Path,
        cfg: &ModelConfig,
        max_frame: (u32, u32),
    ) -> Result<Policy, PolicyError> {
        let manifest = Manifest::load(manifest_path)?;
        if !manifest.onnx_path.is_file() {
            return Err(PolicyError::Load(format!("ONNX file {} does not exist", manifest.onnx_path.display())));
        }
        let text = match (&manifest.manifest.text, &manifest.tokenizer_path) {
            (Some(spec), Some(path)) => Some(TextEncoder::new(spec.clone(), path)?),
            _ => None,
        };
        let mut builder = Session::builder(env)
            .and_then(|b| b.with_intra_threads(cfg.cpu_threads).map_err(Into::into))
            .map_err(|e| PolicyError::Load(e.to_string()))?;
        let selection =
            providers::plan(&cfg.providers, cfg.require_provider, |p| providers::register(p, cfg, &mut builder))?;
        let session = builder
            .commit_from_file(&manifest.onnx_path)
            .map_err(|e| PolicyError::Load(format!("{}: {e}", manifest.onnx_path.display())))?;
        check_contract(&manifest.manifest, &session)?;
        let state = manifest.manifest.state.iter().map(|s| vec![0.0; s.shape.iter().product()]).collect();
        let pre = Preprocessor::new(manifest.manifest.image.spec.clone(), max_frame.0, max_frame.1);
        Ok(Policy { manifest, session, selection, pre, text, tokens: None, state })
    }

    pub fn name(&self) -> &str {
        &self.manifest.manifest.name
    }

    pub fn manifest(&self) -> &LoadedManifest {
        &self.manifest
    }

    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// True when the model takes no instruction.
    pub fn instruction_free(&self) -> bool {
        self.text.is_none()
    }

    /// Tokenises a new instruction (once per change) and resets the recurrent
    /// state. Returns whether the instruction had to be truncated.
    pub fn set_instruction(&mut self, instruction: &str) -> Result<bool, PolicyError> {
        self.reset_state();
        match &self.text {
            Some(t) => {
                let tokens = t.encode(instruction)?;
                let truncated = tokens.truncated;
                self.tokens = Some(tokens);
                Ok(truncated)
            }
            None => Ok(false),
        }
    }

    /// Forgets the instruction: a model that needs one refuses to run until the next.
    pub fn clear_instruction(&mut self) {
        self.tokens = None;
        self.reset_state();
    }

    pub fn reset_state(&mut self) {
        for s in &mut self.state {
            s.fill(0.0);
        }
    }

    pub fn preprocess_raw(&mut self, frame: &RawFrame<'_>) -> Result<(), FrameError> {
        self.pre.raw(frame).map(|_| ())
    }

    pub fn preprocess_compressed(&mut self, format: &str, data: &[u8]) -> Result<(), FrameError> {
        self.pre.compressed(format, data).map(|_| ())
    }

    /// Runs the graph on the last preprocessed frame. On success the recurrent
    /// state advances; on any error it is left as it was.
    pub fn infer(&mut self, run_options: &RunOptions) -> Result<(Action, Duration, Duration), PolicyError> {
        let m = &self.manifest.manifest;
        if self.text.is_some() && self.tokens.is_none() {
            return Err(PolicyError::Tokenize("no instruction has been set".into()));
        }
        let run_err = |e: ort::Error| PolicyError::Run(e.to_string());
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::with_capacity(6);
        let shape: Vec<i64> = m.image.spec.shape().iter().map(|&d| d as i64).collect();
        let image = match self.pre.tensor() {
            Tensor::F32(v) => TensorRef::from_array_view((shape, v)).map_err(run_err)?.into(),
            Tensor::F16(v) => TensorRef::<f16>::from_array_view((shape, v)).map_err(run_err)?.into(),
        };
        inputs.push((m.image.input.clone(), image));
        if let (Some(t), Some(tok)) = (&m.text, &self.tokens) {
            let shape = vec![1i64, tok.input_ids.len() as i64];
            inputs.push((
                t.input_ids.clone(),
                TensorRef::from_array_view((shape.clone(), &tok.input_ids[..])).map_err(run_err)?.into(),
            ));
            if let Some(name) = &t.attention_mask {
                inputs.push((
                    name.clone(),
                    TensorRef::from_array_view((shape.clone(), &tok.attention_mask[..])).map_err(run_err)?.into(),
                ));
            }
            if let Some(name) = &t.image_embeds_position_mask {
                inputs.push((
                    name.clone(),
                    TensorRef::from_array_view((shape, &tok.image_embeds_position_mask[..])).map_err(run_err)?.into(),
                ));
            }
        }
        for (pair, buf) in m.state.iter().zip(&self.state) {
            let shape: Vec<i64> = pair.shape.iter().map(|&d| d as i64).collect();
            inputs.push((pair.input.clone(), TensorRef::from_array_view((shape, &buf[..])).map_err(run_err)?.into()));
        }

        let t0 = Instant::now();
        let outputs = self.session.run_with_options(inputs, run_options).map_err(run_err)?;
        let inference = t0.elapsed();

        let t1 = Instant::now();
        let (shape, values) = outputs[m.action.output.as_str()].try_extract_tensor::<f32>().map_err(run_err)?;
        let width = *shape.last().unwrap_or(&0) as usize;
        if width == 0 || values.len() % width != 0 {
            return Err(PolicyError::Run(format!("action output has shape {shape:?}")));
        }
        let row = match m.action.step {
            ActionStep::First => &values[..width],
            ActionStep::Last => &values[values.len() - width..],
        };
        let scaled = |i: usize, k: usize| -> Result<f32, PolicyError> {
            let v = *row
                .get(i)
                .ok_or_else(|| PolicyError::Run(format!("action has {width} elements, index {i} wanted")))?;
            Ok(v * m.action.scale[k])
        };
        if row.iter().any(|v| !v.is_finite()) {
            return Err(PolicyError::NonFinite(row.to_vec()));
        }
        let raw = [scaled(m.action.linear_x, 0)?, scaled(m.action.linear_y, 1)?, scaled(m.action.angular_z, 2)?];
        let clipped: [f32; 3] = std::array::from_fn(|k| raw[k].clamp(-m.action.clip[k], m.action.clip[k]));
        let action = Action {
            linear_x: clipped[0],
            linear_y: clipped[1],
            angular_z: clipped[2],
            raw_max_abs: raw.iter().fold(0.0, |a, v| a.max(v.abs())),
        };
        // Carry the recurrent state only from a run whose action was valid.
        let mut next = Vec::with_capacity(self.state.len());
        for pair in &m.state {
            let (_, v) = outputs[pair.output.as_str()].try_extract_tensor::<f32>().map_err(run_err)?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(PolicyError::NonFinite(v.iter().copied().take(8).collect()));
            }
            next.push(v.to_vec());
        }
        drop(outputs);
        for (dst, src) in self.state.iter_mut().zip(next) {
            if dst.len() == src.len() {
                dst.copy_from_slice(&src);
            }
        }
        Ok((action, inference, t1.elapsed()))
    }
}

fn describe(t: &ValueType) -> String {
    match t {
        ValueType::Tensor { ty, shape, .. } => format!("{ty:?}{:?}", &shape[..]),
        other => format!("{other:?}"),
    }
}

/// Every tensor the manifest names must exist in the graph with a compatible type and shape.
pub fn check_contract(m: &Manifest, session: &Session) -> Result<(), PolicyError> {
    let find = |outlets: &[ort::value::Outlet], name: &str, kind: &str| -> Result<ValueType, PolicyError> {
        outlets.iter().find(|o| o.name() == name).map(|o| o.dtype().clone()).ok_or_else(|| {
            let have: Vec<&str> = outlets.iter().map(|o| o.name()).collect();
            PolicyError::Contract(format!("{kind} '{name}' is not in the graph (it has {have:?})"))
        })
    };
    let expect =
        |actual: &ValueType, name: &str, ty: TensorElementType, shape: Option<&[i64]>| -> Result<(), PolicyError> {
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
                Ok(())
            } else {
                let want = format!("{ty:?}{:?}", shape.unwrap_or(&[]));
                Err(PolicyError::Contract(format!("tensor '{name}': expected {want}, graph has {}", describe(actual))))
            }
        };
    let inputs = session.inputs();
    let image_ty = match m.image.spec.dtype {
        DType::F32 => TensorElementType::Float32,
        DType::F16 => TensorElementType::Float16,
    };
    let image_shape: Vec<i64> = m.image.spec.shape().iter().map(|&d| d as i64).collect();
    expect(&find(inputs, &m.image.input, "input")?, &m.image.input, image_ty, Some(&image_shape))?;
    if let Some(t) = &m.text {
        let shape = [1, t.max_length as i64];
        for name in
            [Some(&t.input_ids), t.attention_mask.as_ref(), t.image_embeds_position_mask.as_ref()].into_iter().flatten()
        {
            expect(&find(inputs, name, "input")?, name, TensorElementType::Int64, Some(&shape))?;
        }
    }
    for s in &m.state {
        let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
        expect(&find(inputs, &s.input, "input")?, &s.input, TensorElementType::Float32, Some(&shape))?;
        expect(&find(session.outputs(), &s.output, "output")?, &s.output, TensorElementType::Float32, Some(&shape))?;
    }
    // Every graph input must be fed by the manifest: ORT would fail each run otherwise.
    let fed = m.input_names();
    if let Some(extra) = inputs.iter().find(|o| !fed.contains(&o.name())) {
        return Err(PolicyError::Contract(format!(
            "graph input '{}' ({}) is not named in the manifest",
            extra.name(),
            describe(extra.dtype())
        )));
    }
    let action = find(session.outputs(), &m.action.output, "output")?;
    expect(&action, &m.action.output, TensorElementType::Float32, None)?;
    if let ValueType::Tensor { shape, .. } = &action {
        let k = *shape.last().unwrap_or(&0);
        let need = m.action.linear_x.max(m.action.linear_y).max(m.action.angular_z) as i64 + 1;
        if !(shape.len() == 2 || shape.len() == 3) || (k != -1 && k < need) {
            return Err(PolicyError::Contract(format!(
                "tensor '{}': expected [1, k] or [1, T, k] with k >= {need}, graph has {}",
                m.action.output,
                describe(&action)
            )));
        }
    }
    Ok(())
}

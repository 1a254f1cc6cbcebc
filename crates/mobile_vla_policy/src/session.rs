//! The local backend: a policy's graphs as ONNX Runtime sessions.
//!
//! Owns opening one stage's session (its execution-provider chain and their
//! options, TensorRT's shape profile, a precompiled engine when its stamp
//! still fits, the check that the required provider got its share of the
//! graph), running it ([`OrtStage`] is a [`Backend`]) and building the
//! precompiled TensorRT engines. What the graphs' tensors mean is the policy's.

use std::path::Path;
use std::time::Instant;

use half::f16;
use mobile_vla_core::config::{expand_home, ModelConfig, Provider};
use ort::ep::{self, ExecutionProvider};
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, TensorElementType, TensorRef, ValueType};
use tracing::{info, warn};

use crate::backend::{Backend, Feed, Port, Tensor, ValueInfo, Values, View};
use crate::manifest::{Manifest, Padding, Stage};
use crate::providers::{self, Assignment, OrtName, Registration};
use crate::runtime::Runtime;
use crate::{engine, onnx_file, PolicyError};

/// Which execution providers a stage registered and how ONNX Runtime used them.
#[derive(Debug, Clone, PartialEq)]
pub struct StageProviders {
    pub stage: String,
    pub registration: Registration,
    /// `None` when this ONNX Runtime cannot report it (before 1.24).
    pub assignment: Option<Assignment>,
}

/// What runs every stage of a policy: the local stages' providers, and the
/// remote stages' servers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Providers {
    pub stages: Vec<StageProviders>,
    /// Stages served by an inference server: the stage and where
    /// (`hybrid_policy (version 1) on triton 2.52.0 at http://gpu:8001`).
    pub remote: Vec<(String, String)>,
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
    /// A policy whose per-frame stages are served remotely: `remote: <server>`.
    pub fn main(&self) -> String {
        if let Some((_, server)) = self.remote.first() {
            return format!("remote: {server}");
        }
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
        let remote = self.remote.iter().map(|(stage, server)| format!("{stage}: served by {server}"));
        match (&self.stages[..], self.remote.is_empty()) {
            ([only], true) => one(only),
            (stages, _) => {
                stages.iter().map(|s| format!("{}: {}", s.stage, one(s))).chain(remote).collect::<Vec<_>>().join(" | ")
            }
        }
    }
}

/// One stage's graph in an ONNX Runtime session.
pub struct OrtStage {
    session: Session,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
}

fn port(name: &str, t: &ValueType) -> Port {
    let info = match t {
        ValueType::Tensor { ty, shape, .. } => ValueInfo::Tensor { ty: *ty, shape: shape.to_vec() },
        other => ValueInfo::Other(format!("{other:?}")),
    };
    Port { name: name.to_string(), info }
}

impl OrtStage {
    fn new(session: Session) -> Self {
        let inputs = session.inputs().iter().map(|i| port(i.name(), i.dtype())).collect();
        let outputs = session.outputs().iter().map(|o| port(o.name(), o.dtype())).collect();
        OrtStage { session, inputs, outputs }
    }

    /// Opens stage `spec` of manifest `m` from `path` with `cfg`'s providers
    /// (or the stage's own), a precompiled TensorRT engine where one fits.
    pub fn open(
        runtime: &Runtime,
        m: &Manifest,
        spec: &Stage,
        path: &Path,
        cfg: &ModelConfig,
    ) -> Result<(OrtStage, StageProviders), PolicyError> {
        let preference = spec.providers.as_deref().unwrap_or(&cfg.providers);
        let plan = StagePlan::new(m, &spec.name, path, cfg, preference)?;
        let record = providers::reports_assignment(&runtime.info.version);
        let (ctx, stamp) = engine::paths(&expand_home(&cfg.tensorrt.engine_cache_dir), &m.name, &spec.name);
        let choice = if plan.tensorrt_available() {
            engine::choose(path, &ctx, &stamp, &runtime.info.version, &plan.tensorrt)
        } else {
            engine::Choice::Graph
        };
        let rebuild = "building from the graph at start (minutes); rebuild it with `mobile_vla_node --build-engines`";
        let (session, registration, assignment) = match &choice {
            engine::Choice::Precompiled(ctx) => {
                info!(policy = %m.name, stage = %spec.name, "loading the precompiled TensorRT engine {}", ctx.display());
                plan.open(runtime, ctx, &[], record).or_else(|e| {
                    warn!(policy = %m.name, stage = %spec.name, "the precompiled TensorRT engine does not load ({e}): {rebuild}");
                    plan.open(runtime, path, &[], record)
                })
            }
            engine::Choice::Stale(why) => {
                warn!(policy = %m.name, stage = %spec.name, "the precompiled TensorRT engine is stale ({why}): {rebuild}");
                plan.open(runtime, path, &[], record)
            }
            engine::Choice::Graph => plan.open(runtime, path, &[], record),
        }?;
        if cfg.require_provider {
            match &assignment {
                Some(a) => a.check(preference[0], cfg.min_provider_share)?,
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
        let report = StageProviders { stage: spec.name.clone(), registration, assignment };
        Ok((OrtStage::new(session), report))
    }
}

impl Backend for OrtStage {
    fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    fn run(&mut self, feeds: &[Feed<'_>], wanted: &[&str], cancel: &RunOptions) -> Result<Vec<Tensor>, PolicyError> {
        let run_err = |e: ort::Error| PolicyError::Run(e.to_string());
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(feeds.len());
        for f in feeds {
            let shape = f.shape.clone();
            let value: SessionInputValue<'_> = match f.values {
                View::F32(v) => TensorRef::from_array_view((shape, v)).map_err(run_err)?.into(),
                View::F16(v) => TensorRef::<f16>::from_array_view((shape, v)).map_err(run_err)?.into(),
                View::I64(v) => TensorRef::from_array_view((shape, v)).map_err(run_err)?.into(),
                View::I32(v) => TensorRef::from_array_view((shape, v)).map_err(run_err)?.into(),
            };
            inputs.push((f.name, value));
        }
        let outputs = self.session.run_with_options(inputs, cancel).map_err(run_err)?;
        wanted
            .iter()
            .map(|name| {
                let v =
                    outputs.get(name).ok_or_else(|| PolicyError::Run(format!("output '{name}' was not produced")))?;
                tensor(name, v)
            })
            .collect()
    }
}

/// An output's values, copied out of ONNX Runtime.
fn tensor(name: &str, v: &DynValue) -> Result<Tensor, PolicyError> {
    let run_err = |e: ort::Error| PolicyError::Run(format!("output '{name}': {e}"));
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(PolicyError::Run(format!("output '{name}' is not a tensor ({other:?})"))),
    };
    let (shape, values) = match ty {
        TensorElementType::Float32 => {
            let (s, d) = v.try_extract_tensor::<f32>().map_err(run_err)?;
            (s.to_vec(), Values::F32(d.to_vec()))
        }
        TensorElementType::Float16 => {
            let (s, d) = v.try_extract_tensor::<f16>().map_err(run_err)?;
            (s.to_vec(), Values::F16(d.to_vec()))
        }
        TensorElementType::Int64 => {
            let (s, d) = v.try_extract_tensor::<i64>().map_err(run_err)?;
            (s.to_vec(), Values::I64(d.to_vec()))
        }
        TensorElementType::Int32 => {
            let (s, d) = v.try_extract_tensor::<i32>().map_err(run_err)?;
            (s.to_vec(), Values::I32(d.to_vec()))
        }
        other => {
            return Err(PolicyError::Run(format!(
                "output '{name}' has element type {other:?}, which the node does not read"
            )))
        }
    };
    Ok(Tensor { shape, values })
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

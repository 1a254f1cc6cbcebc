//! Which ONNX Runtime execution providers run a model, decided and reported honestly.
//!
//! Owns the mapping from the node's provider preference to ORT registrations,
//! the TensorRT/CUDA/CPU options, and what ONNX Runtime did with them. Every
//! provider in the preference list that this ONNX Runtime build has is
//! registered, in order, with `error_on_failure` (so a provider that cannot
//! start is an error, not a silent CPU fallback), and ONNX Runtime partitions
//! the graph among them: TensorRT takes what it can, CUDA the rest, the CPU
//! what neither can. "The provider that runs it" is then a distribution over
//! graph nodes, which [`Assignment`] reads back from ONNX Runtime itself
//! (`Session_GetEpGraphAssignmentInfo`, ONNX Runtime 1.24 and later).
//! [`plan`] and [`Assignment::check`] are pure decisions, unit-tested without a GPU.

use std::ffi::{c_char, CStr};

use mobile_vla_core::config::{expand_home, ModelConfig, Provider};
use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
use ort::session::builder::SessionBuilder;
use ort::session::Session;

use crate::PolicyError;

/// ONNX Runtime's own name of an execution provider, as `GetAvailableProviders` reports it.
pub trait OrtName {
    fn ort_name(self) -> &'static str;
}

impl OrtName for Provider {
    fn ort_name(self) -> &'static str {
        match self {
            Provider::Tensorrt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }
}

/// The outcome of registration: the chain ONNX Runtime partitions over, and
/// why the providers not in it were left out.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Registration {
    pub registered: Vec<Provider>,
    pub skipped: Vec<(Provider, String)>,
}

impl Registration {
    /// `TensorrtExecutionProvider, CUDAExecutionProvider (skipped: ...)`.
    pub fn describe(&self) -> String {
        let chain: Vec<&str> = self.registered.iter().map(|p| p.ort_name()).collect();
        if self.skipped.is_empty() {
            return chain.join(", ");
        }
        let why: Vec<String> = self.skipped.iter().map(|(p, e)| format!("{}: {e}", p.ort_name())).collect();
        format!("{} (skipped: {})", chain.join(", "), why.join("; "))
    }
}

/// Registers every provider of `preference` that `try_register` accepts, in
/// order. The CPU provider is ONNX Runtime's last resort either way; an empty
/// chain is an error.
pub fn plan(
    preference: &[Provider],
    mut try_register: impl FnMut(Provider) -> Result<(), String>,
) -> Result<Registration, PolicyError> {
    let mut r = Registration::default();
    for &p in preference {
        match try_register(p) {
            Ok(()) => r.registered.push(p),
            Err(e) => r.skipped.push((p, e)),
        }
    }
    if r.registered.is_empty() {
        let why: Vec<String> = r.skipped.iter().map(|(p, e)| format!("{}: {e}", p.ort_name())).collect();
        return Err(PolicyError::ProviderUnavailable(format!("no provider could be registered ({})", why.join("; "))));
    }
    Ok(r)
}

/// How many graph nodes ONNX Runtime assigned to each provider, in the
/// order of first appearance. Nodes of a subgraph compiled by TensorRT are
/// counted one by one (the original graph's nodes, not the fused node).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    pub counts: Vec<(String, usize)>,
}

impl Assignment {
    pub fn total(&self) -> usize {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    pub fn nodes_on(&self, provider: &str) -> usize {
        self.counts.iter().find(|(p, _)| p == provider).map_or(0, |(_, n)| *n)
    }

    /// The provider with the most nodes (the first such on a tie).
    pub fn main(&self) -> Option<&str> {
        self.counts
            .iter()
            .fold(None, |best: Option<&(String, usize)>, c| match best {
                Some(b) if b.1 >= c.1 => Some(b),
                _ => Some(c),
            })
            .map(|(p, _)| p.as_str())
    }

    pub fn add(&mut self, other: &Assignment) {
        for (p, n) in &other.counts {
            match self.counts.iter_mut().find(|(q, _)| q == p) {
                Some((_, m)) => *m += n,
                None => self.counts.push((p.clone(), *n)),
            }
        }
    }

    /// `812/812 nodes on TensorrtExecutionProvider` or `800/812 nodes on
    /// TensorrtExecutionProvider, 12/812 on CPUExecutionProvider`.
    pub fn describe(&self) -> String {
        let total = self.total();
        let parts: Vec<String> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, (p, n))| if i == 0 { format!("{n}/{total} nodes on {p}") } else { format!("{n}/{total} on {p}") })
            .collect();
        if parts.is_empty() {
            "no nodes".into()
        } else {
            parts.join(", ")
        }
    }

    /// `require_provider`: `first` got at least `min_share` of the nodes.
    pub fn check(&self, first: Provider, min_share: f64) -> Result<(), PolicyError> {
        let (on, total) = (self.nodes_on(first.ort_name()), self.total());
        if total > 0 && on as f64 >= min_share * total as f64 {
            return Ok(());
        }
        Err(PolicyError::ProviderUnavailable(format!(
            "require_provider wants {} for at least {:.0} % of the nodes; ONNX Runtime assigned {}",
            first.ort_name(),
            min_share * 100.0,
            self.describe()
        )))
    }
}

/// `OrtApi` slots of the graph-assignment functions (onnxruntime_c_api.h,
/// API 24), counted in `ort-sys`'s copy of the table: it only grows, so
/// their positions are fixed from 1.24 on. `ort` is built for API 20 (so it
/// still loads 1.20 to 1.23), which is why they are not fields here.
const SESSION_GET_EP_GRAPH_ASSIGNMENT_INFO: usize = 407;
const EP_ASSIGNED_SUBGRAPH_GET_EP_NAME: usize = 408;
const EP_ASSIGNED_SUBGRAPH_GET_NODES: usize = 409;

/// The session config key that makes ONNX Runtime record the assignment.
pub const RECORD_ASSIGNMENT: &str = "session.record_ep_graph_assignment_info";

/// The first ONNX Runtime whose C API reports node assignment.
pub const ASSIGNMENT_SINCE: (u32, u32) = (1, 24);

/// Whether ONNX Runtime `version` ("1.32.0") can report node assignment.
pub fn reports_assignment(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= ASSIGNMENT_SINCE
}

/// Reads the assignment ONNX Runtime recorded for `session` (built with
/// [`RECORD_ASSIGNMENT`] set, by a runtime that [`reports_assignment`]).
pub fn assignment(session: &Session) -> Result<Assignment, String> {
    type GetInfo =
        unsafe extern "system" fn(*const ort::sys::OrtSession, *mut *const *const Opaque, *mut usize) -> Status;
    type GetName = unsafe extern "system" fn(*const Opaque, *mut *const c_char) -> Status;
    type GetNodes = unsafe extern "system" fn(*const Opaque, *mut *const *const Opaque, *mut usize) -> Status;
    let api = ort::api();
    // SAFETY: the caller checked that the loaded library implements API 24,
    // so these slots of its (append-only) OrtApi table hold these functions
    // with these signatures. The returned arrays and strings are owned by the
    // session and read before it can go away; statuses are released.
    unsafe {
        let table = api as *const ort::sys::OrtApi as *const *const ();
        let slot = |i: usize| *table.add(i);
        let get_info: GetInfo = std::mem::transmute(slot(SESSION_GET_EP_GRAPH_ASSIGNMENT_INFO));
        let get_name: GetName = std::mem::transmute(slot(EP_ASSIGNED_SUBGRAPH_GET_EP_NAME));
        let get_nodes: GetNodes = std::mem::transmute(slot(EP_ASSIGNED_SUBGRAPH_GET_NODES));
        let check = |s: Status| -> Result<(), String> {
            if s.is_null() {
                return Ok(());
            }
            let msg = CStr::from_ptr((api.GetErrorMessage)(s.cast())).to_string_lossy().into_owned();
            (api.ReleaseStatus)(s.cast_mut().cast());
            Err(msg)
        };
        let (mut subgraphs, mut n) = (std::ptr::null(), 0usize);
        check(get_info(ort::AsPointer::ptr(session), &mut subgraphs, &mut n))?;
        let mut out = Assignment::default();
        for i in 0..n {
            let sg = *subgraphs.add(i);
            let mut name = std::ptr::null();
            check(get_name(sg, &mut name))?;
            let (mut nodes, mut count) = (std::ptr::null(), 0usize);
            check(get_nodes(sg, &mut nodes, &mut count))?;
            let ep = CStr::from_ptr(name).to_string_lossy().into_owned();
            out.add(&Assignment { counts: vec![(ep, count)] });
        }
        Ok(out)
    }
}

/// Opaque C types (OrtEpAssignedSubgraph, OrtEpAssignedNode) and OrtStatus*.
#[repr(C)]
pub struct Opaque {
    _private: [u8; 0],
}
type Status = *const Opaque;

/// One dynamic input's shapes in TensorRT's optimisation profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfiledInput {
    pub name: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// TensorRT's optimisation profile for a graph's dynamic inputs; empty when every input is static.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShapeProfile {
    pub inputs: Vec<ProfiledInput>,
}

impl ShapeProfile {
    pub fn is_static(&self) -> bool {
        self.inputs.is_empty()
    }

    /// `input_ids:1x67,attention_mask:1x67` for one of min (0), opt (1), max (2).
    fn option(&self, which: usize) -> String {
        let dims = |d: &[i64]| d.iter().map(i64::to_string).collect::<Vec<_>>().join("x");
        let shapes: Vec<String> =
            self.inputs.iter().map(|i| format!("{}:{}", i.name, dims([&i.min, &i.opt, &i.max][which]))).collect();
        shapes.join(",")
    }
}

/// TensorRT options as ONNX Runtime's provider-option keys, for a graph
/// whose dynamic inputs are `profile`. CUDA graphs need static shapes: with
/// dynamic inputs they stay off whatever `tensorrt.cuda_graph` says (the
/// policy logs it).
pub fn tensorrt_options(cfg: &ModelConfig, profile: &ShapeProfile) -> Vec<(&'static str, String)> {
    let t = &cfg.tensorrt;
    let mut o = vec![
        ("device_id", cfg.device_id.to_string()),
        ("trt_fp16_enable", (t.fp16 as u8).to_string()),
        ("trt_max_workspace_size", (t.workspace_mb * 1024 * 1024).to_string()),
        ("trt_engine_cache_enable", "1".into()),
        ("trt_engine_cache_path", expand_home(&t.engine_cache_dir).display().to_string()),
        ("trt_timing_cache_enable", "1".into()),
        ("trt_timing_cache_path", expand_home(&t.timing_cache_dir).display().to_string()),
        ("trt_builder_optimization_level", t.builder_optimization_level.to_string()),
        ("trt_layer_norm_fp32_fallback", (t.layer_norm_fp32 as u8).to_string()),
        ("trt_cuda_graph_enable", ((t.cuda_graph && profile.is_static()) as u8).to_string()),
    ];
    if !profile.is_static() {
        o.push(("trt_profile_min_shapes", profile.option(0)));
        o.push(("trt_profile_opt_shapes", profile.option(1)));
        o.push(("trt_profile_max_shapes", profile.option(2)));
    }
    o
}

pub fn cuda_options(cfg: &ModelConfig) -> Vec<(&'static str, String)> {
    vec![("device_id", cfg.device_id.to_string())]
}

/// Registers `p` on `builder` with `options`, erroring instead of silently falling back.
pub fn register(
    p: Provider,
    options: &[(&'static str, String)],
    cfg: &ModelConfig,
    builder: &mut SessionBuilder,
) -> Result<(), String> {
    let dispatch = match p {
        Provider::Tensorrt => {
            if !ep::TensorRT::is_available().unwrap_or(false) {
                return Err("not in this ONNX Runtime build".into());
            }
            for dir in [&cfg.tensorrt.engine_cache_dir, &cfg.tensorrt.timing_cache_dir] {
                let _ = std::fs::create_dir_all(expand_home(dir));
            }
            let mut e = ep::TensorRT::default();
            for (k, v) in options {
                e = e.with_arbitrary_config(*k, v.clone());
            }
            e.build()
        }
        Provider::Cuda => {
            if !ep::CUDA::is_available().unwrap_or(false) {
                return Err("not in this ONNX Runtime build".into());
            }
            let mut e = ep::CUDA::default();
            for (k, v) in options {
                e = e.with_arbitrary_config(*k, v.clone());
            }
            e.build()
        }
        Provider::Cpu => ep::CPU::default().build(),
    };
    dispatch.error_on_failure().register(builder).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Provider::*;

    fn only(available: &'static [Provider]) -> impl FnMut(Provider) -> Result<(), String> {
        move |p| if available.contains(&p) { Ok(()) } else { Err("not in this ONNX Runtime build".into()) }
    }

    #[test]
    fn every_available_provider_is_registered_in_order() {
        let r = plan(&[Tensorrt, Cuda, Cpu], only(&[Tensorrt, Cuda, Cpu])).unwrap();
        assert_eq!(r.registered, vec![Tensorrt, Cuda, Cpu]);
        assert_eq!(r.describe(), "TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider");
        let r = plan(&[Tensorrt, Cuda, Cpu], only(&[Cuda, Cpu])).unwrap();
        assert_eq!(r.registered, vec![Cuda, Cpu]);
        let r = plan(&[Tensorrt, Cuda, Cpu], only(&[Cpu])).unwrap();
        assert_eq!(r.registered, vec![Cpu]);
        let d = r.describe();
        assert!(d.starts_with("CPUExecutionProvider (skipped: TensorrtExecutionProvider: not in this"), "{d}");
    }

    #[test]
    fn no_provider_at_all_is_an_error() {
        assert!(plan(&[Tensorrt, Cuda], only(&[])).is_err());
    }

    fn assigned(counts: &[(&str, usize)]) -> Assignment {
        Assignment { counts: counts.iter().map(|(p, n)| (p.to_string(), *n)).collect() }
    }

    #[test]
    fn the_assignment_names_the_main_provider_and_its_share() {
        let a = assigned(&[("TensorrtExecutionProvider", 800), ("CPUExecutionProvider", 12)]);
        assert_eq!(a.total(), 812);
        assert_eq!(a.main(), Some("TensorrtExecutionProvider"));
        assert_eq!(a.describe(), "800/812 nodes on TensorrtExecutionProvider, 12/812 on CPUExecutionProvider");
        assert_eq!(assigned(&[("CPUExecutionProvider", 44)]).describe(), "44/44 nodes on CPUExecutionProvider");
        let mut b = assigned(&[("CPUExecutionProvider", 3)]);
        b.add(&a);
        assert_eq!(b.nodes_on("CPUExecutionProvider"), 15);
        assert_eq!(b.main(), Some("TensorrtExecutionProvider"));
    }

    #[test]
    fn require_provider_checks_the_first_providers_share_of_nodes() {
        let a = assigned(&[("TensorrtExecutionProvider", 800), ("CPUExecutionProvider", 12)]);
        a.check(Tensorrt, 0.95).unwrap();
        let e = a.check(Tensorrt, 1.0).unwrap_err().to_string();
        assert!(e.contains("100 %") && e.contains("800/812 nodes on TensorrtExecutionProvider"), "{e}");
        let e = assigned(&[("CPUExecutionProvider", 44)]).check(Tensorrt, 1.0).unwrap_err().to_string();
        assert!(e.contains("44/44 nodes on CPUExecutionProvider"), "{e}");
        assigned(&[("CPUExecutionProvider", 44)]).check(Cpu, 1.0).unwrap();
        assert!(assigned(&[]).check(Cpu, 0.5).is_err(), "an empty graph proves nothing");
    }

    #[test]
    fn the_slot_count_agrees_with_the_compiled_table() {
        // The same counting, checked where the compiler knows the answer: the
        // last function of API 20 (`SetEpDynamicOptions`) sits at slot 284.
        let slot = std::mem::offset_of!(ort::sys::OrtApi, SetEpDynamicOptions) / std::mem::size_of::<usize>();
        assert_eq!(slot, 284);
        assert_eq!(std::mem::size_of::<ort::sys::OrtApi>() / std::mem::size_of::<usize>(), 285);
        assert_eq!(SESSION_GET_EP_GRAPH_ASSIGNMENT_INFO, 407);
    }

    #[test]
    fn only_onnx_runtime_1_24_and_later_report_assignment() {
        assert!(reports_assignment("1.32.0") && reports_assignment("1.24.1") && reports_assignment("2.0.0"));
        assert!(!reports_assignment("1.22.1") && !reports_assignment("1.20.0") && !reports_assignment("unknown"));
    }

    #[test]
    fn tensorrt_options_carry_fp16_caches_and_workspace() {
        let mut cfg = ModelConfig::default();
        cfg.tensorrt.engine_cache_dir = "/var/cache/trt".into();
        cfg.tensorrt.workspace_mb = 1024;
        let o: std::collections::HashMap<_, _> = tensorrt_options(&cfg, &ShapeProfile::default()).into_iter().collect();
        assert_eq!(o["trt_fp16_enable"], "1");
        assert_eq!(o["trt_engine_cache_enable"], "1");
        assert_eq!(o["trt_engine_cache_path"], "/var/cache/trt");
        assert_eq!(o["trt_max_workspace_size"], (1u64 << 30).to_string());
        assert!(!o["trt_timing_cache_path"].starts_with('~'), "home is expanded");
        // Transformers under FP16 keep LayerNorm in FP32 unless told otherwise.
        assert_eq!(o["trt_layer_norm_fp32_fallback"], "1");
        assert_eq!(o["trt_cuda_graph_enable"], "0");
        assert!(!o.contains_key("trt_profile_min_shapes"), "a static graph needs no profile");
        cfg.tensorrt.fp16 = false;
        cfg.tensorrt.cuda_graph = true;
        let o = tensorrt_options(&cfg, &ShapeProfile::default());
        assert!(o.contains(&("trt_fp16_enable", "0".into())) && o.contains(&("trt_cuda_graph_enable", "1".into())));
    }

    #[test]
    fn dynamic_text_inputs_get_a_shape_profile_and_no_cuda_graph() {
        let mut cfg = ModelConfig::default();
        cfg.tensorrt.cuda_graph = true;
        let profile = ShapeProfile {
            inputs: ["input_ids", "attention_mask"]
                .map(|n| ProfiledInput { name: n.into(), min: vec![1, 68], opt: vec![1, 84], max: vec![1, 256] })
                .into(),
        };
        let o: std::collections::HashMap<_, _> = tensorrt_options(&cfg, &profile).into_iter().collect();
        assert_eq!(o["trt_profile_min_shapes"], "input_ids:1x68,attention_mask:1x68");
        assert_eq!(o["trt_profile_opt_shapes"], "input_ids:1x84,attention_mask:1x84");
        assert_eq!(o["trt_profile_max_shapes"], "input_ids:1x256,attention_mask:1x256");
        assert_eq!(o["trt_cuda_graph_enable"], "0", "shapes change with the instruction: no CUDA graph");
    }
}

//! Which ONNX Runtime execution provider runs a model, decided and reported honestly.
//!
//! Owns the mapping from the node's provider preference to ORT registrations,
//! and the TensorRT/CUDA/CPU options. ONNX Runtime silently falls back to the
//! CPU when an execution provider cannot be registered; here every provider is
//! registered with `error_on_failure`, tried in preference order, and the one
//! that registered is what the node reports. [`plan`] is the pure decision,
//! unit-tested without any GPU.

use mobile_vla_core::config::{expand_home, ModelConfig, Provider};
use ort::ep::{self, ArbitrarilyConfigurableExecutionProvider, ExecutionProvider};
use ort::session::builder::SessionBuilder;

use crate::PolicyError;

/// The outcome of provider selection: what runs, and why the ones before it did not.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub provider: Provider,
    pub skipped: Vec<(Provider, String)>,
}

impl Selection {
    /// One line for logs and status: `CPUExecutionProvider (tensorrt: not in this ONNX Runtime build; ...)`.
    pub fn describe(&self) -> String {
        if self.skipped.is_empty() {
            return self.provider.ort_name().to_string();
        }
        let why: Vec<String> = self.skipped.iter().map(|(p, e)| format!("{}: {e}", p.ort_name())).collect();
        format!("{} (fell back: {})", self.provider.ort_name(), why.join("; "))
    }
}

/// Tries `preference` in order with `try_register`; the first that succeeds runs
/// the model. The CPU provider cannot fail. With `require`, anything but the
/// first preference is refused.
pub fn plan(
    preference: &[Provider],
    require: bool,
    mut try_register: impl FnMut(Provider) -> Result<(), String>,
) -> Result<Selection, PolicyError> {
    let mut skipped = Vec::new();
    for &p in preference {
        match try_register(p) {
            Ok(()) => {
                if require && !skipped.is_empty() {
                    break;
                }
                return Ok(Selection { provider: p, skipped });
            }
            Err(e) => {
                skipped.push((p, e));
                if require {
                    break;
                }
            }
        }
    }
    let why: Vec<String> = skipped.iter().map(|(p, e)| format!("{}: {e}", p.ort_name())).collect();
    let why = why.join("; ");
    Err(PolicyError::ProviderUnavailable(match (require, preference.first()) {
        (true, Some(first)) => format!("wanted {} ({why}) and require_provider is set", first.ort_name()),
        _ => format!("no provider could be registered ({why})"),
    }))
}

/// TensorRT options as ONNX Runtime's provider-option keys.
pub fn tensorrt_options(cfg: &ModelConfig) -> Vec<(&'static str, String)> {
    let t = &cfg.tensorrt;
    vec![
        ("device_id", cfg.device_id.to_string()),
        ("trt_fp16_enable", (t.fp16 as u8).to_string()),
        ("trt_max_workspace_size", (t.workspace_mb * 1024 * 1024).to_string()),
        ("trt_engine_cache_enable", "1".into()),
        ("trt_engine_cache_path", expand_home(&t.engine_cache_dir).display().to_string()),
        ("trt_timing_cache_enable", "1".into()),
        ("trt_timing_cache_path", expand_home(&t.timing_cache_dir).display().to_string()),
        ("trt_builder_optimization_level", t.builder_optimization_level.to_string()),
        ("trt_layer_norm_fp32_fallback", (t.layer_norm_fp32 as u8).to_string()),
        ("trt_cuda_graph_enable", (t.cuda_graph as u8).to_string()),
    ]
}

pub fn cuda_options(cfg: &ModelConfig) -> Vec<(&'static str, String)> {
    vec![("device_id", cfg.device_id.to_string())]
}

/// Registers `p` on `builder`, erroring instead of silently falling back.
pub fn register(p: Provider, cfg: &ModelConfig, builder: &mut SessionBuilder) -> Result<(), String> {
    let dispatch = match p {
        Provider::Tensorrt => {
            if !ep::TensorRT::is_available().unwrap_or(false) {
                return Err("not in this ONNX Runtime build".into());
            }
            for dir in [&cfg.tensorrt.engine_cache_dir, &cfg.tensorrt.timing_cache_dir] {
                let _ = std::fs::create_dir_all(expand_home(dir));
            }
            let mut e = ep::TensorRT::default();
            for (k, v) in tensorrt_options(cfg) {
                e = e.with_arbitrary_config(k, v);
            }
            e.build()
        }
        Provider::Cuda => {
            if !ep::CUDA::is_available().unwrap_or(false) {
                return Err("not in this ONNX Runtime build".into());
            }
            let mut e = ep::CUDA::default();
            for (k, v) in cuda_options(cfg) {
                e = e.with_arbitrary_config(k, v);
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
    fn first_registrable_provider_runs_and_skipped_ones_are_reported() {
        let s = plan(&[Tensorrt, Cuda, Cpu], false, only(&[Cpu])).unwrap();
        assert_eq!(s.provider, Cpu);
        assert_eq!(s.skipped.len(), 2);
        let d = s.describe();
        assert!(d.starts_with("CPUExecutionProvider (fell back: TensorrtExecutionProvider: not in this"), "{d}");
        let s = plan(&[Tensorrt, Cuda, Cpu], false, only(&[Cuda, Cpu])).unwrap();
        assert_eq!(s.provider, Cuda);
        let s = plan(&[Tensorrt, Cuda, Cpu], false, only(&[Tensorrt, Cuda, Cpu])).unwrap();
        assert_eq!((s.provider, s.describe().as_str()), (Tensorrt, "TensorrtExecutionProvider"));
    }

    #[test]
    fn require_refuses_anything_but_the_first_preference() {
        let e = plan(&[Tensorrt, Cpu], true, only(&[Cpu])).unwrap_err();
        let PolicyError::ProviderUnavailable(msg) = e else { panic!("{e:?}") };
        assert!(msg.contains("TensorrtExecutionProvider") && msg.contains("require_provider"), "{msg}");
        assert_eq!(plan(&[Cpu], true, only(&[Cpu])).unwrap().provider, Cpu);
    }

    #[test]
    fn no_provider_at_all_is_an_error() {
        assert!(plan(&[Tensorrt, Cuda], false, only(&[])).is_err());
    }

    #[test]
    fn tensorrt_options_carry_fp16_caches_and_workspace() {
        let mut cfg = ModelConfig::default();
        cfg.tensorrt.engine_cache_dir = "/var/cache/trt".into();
        cfg.tensorrt.workspace_mb = 1024;
        let o: std::collections::HashMap<_, _> = tensorrt_options(&cfg).into_iter().collect();
        assert_eq!(o["trt_fp16_enable"], "1");
        assert_eq!(o["trt_engine_cache_enable"], "1");
        assert_eq!(o["trt_engine_cache_path"], "/var/cache/trt");
        assert_eq!(o["trt_max_workspace_size"], (1u64 << 30).to_string());
        assert!(!o["trt_timing_cache_path"].starts_with('~'), "home is expanded");
        // Transformers under FP16 keep LayerNorm in FP32 unless told otherwise.
        assert_eq!(o["trt_layer_norm_fp32_fallback"], "1");
        assert_eq!(o["trt_cuda_graph_enable"], "0");
        cfg.tensorrt.fp16 = false;
        cfg.tensorrt.cuda_graph = true;
        let o = tensorrt_options(&cfg);
        assert!(o.contains(&("trt_fp16_enable", "0".into())) && o.contains(&("trt_cuda_graph_enable", "1".into())));
    }
}

//! Precompiled TensorRT engines: built once on the robot, loaded at every start.
//!
//! A TensorRT engine is compiled for one model, one TensorRT, one GPU and one
//! set of builder options; building it for a 1.7 B-parameter model takes
//! minutes on an Orin. `mobile_vla_node --build-engines` builds each stage's
//! engine into an ONNX Runtime EP-context model (`<stage>_ctx.onnx` beside
//! the engine file in `tensorrt.engine_cache_dir/<policy>/`) and writes a
//! [`Stamp`] of what it was built from. At start the node loads the context
//! model instead of the graph when the stamp still matches the graph file, the
//! ONNX Runtime and the TensorRT options; a mismatch is stale, said once, and
//! the graph is loaded (TensorRT then builds at start). A different TensorRT
//! or GPU is refused by TensorRT itself when it deserialises the engine; the
//! node then falls back to the graph the same way. Owns the paths, the stamp
//! and the decision; ONNX Runtime does the building.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a precompiled engine was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The graph file, and its identity (size, modification time and a hash
    /// of its first MiB, with the same of its external-data files).
    pub source: PathBuf,
    pub source_id: String,
    /// The ONNX Runtime version that built it.
    pub onnxruntime: String,
    /// The TensorRT options it was built with (precision, LayerNorm in FP32,
    /// optimisation level, shape profile), as ONNX Runtime received them.
    pub options: Vec<(String, String)>,
}

/// Where stage `stage` of policy `policy` keeps its context model and stamp.
pub fn paths(cache_dir: &Path, policy: &str, stage: &str) -> (PathBuf, PathBuf) {
    let dir = cache_dir.join(policy);
    (dir.join(format!("{stage}_ctx.onnx")), dir.join(format!("{stage}_ctx.json")))
}

/// The graph file's identity: cheap enough for every start on a 4 GB model.
pub fn source_id(onnx: &Path) -> std::io::Result<String> {
    let mut parts = Vec::new();
    let mut files = vec![onnx.to_path_buf()];
    if let (Some(dir), Some(name)) = (onnx.parent(), onnx.file_name().and_then(|n| n.to_str())) {
        let mut data: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n != name && n.starts_with(name)))
            .collect();
        data.sort();
        files.extend(data);
    }
    for f in files {
        let meta = std::fs::metadata(&f)?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let mut head = vec![0; (meta.len() as usize).min(1 << 20)];
        std::io::Read::read_exact(&mut std::fs::File::open(&f)?, &mut head)?;
        parts.push(format!(
            "{}:{}:{}:{:016x}",
            f.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            meta.len(),
            mtime.map_or(0, |d| d.as_nanos()),
            fnv1a(&head)
        ));
    }
    Ok(parts.join(";"))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The TensorRT options that make it dump a context model to `ctx` (the
/// engine in its own file beside it).
pub fn dump_options(ctx: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("trt_dump_ep_context_model", "1".into()),
        ("trt_ep_context_file_path", ctx.display().to_string()),
        ("trt_ep_context_embed_mode", "0".into()),
    ]
}

/// What a stage loads.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// No precompiled engine: the graph (TensorRT builds, or reuses its cache).
    Graph,
    /// The precompiled context model.
    Precompiled(PathBuf),
    /// An engine exists but was built from something else: the graph, and why.
    Stale(String),
}

/// Whether the precompiled engine of a stage still fits `onnx`, this ONNX
/// Runtime and these options.
pub fn choose(onnx: &Path, ctx: &Path, stamp: &Path, onnxruntime: &str, options: &[(&'static str, String)]) -> Choice {
    let Ok(text) = std::fs::read_to_string(stamp) else {
        return Choice::Graph;
    };
    let Ok(s) = serde_json::from_str::<Stamp>(&text) else {
        return Choice::Stale(format!("{} is not a stamp this node wrote", stamp.display()));
    };
    if !ctx.is_file() {
        return Choice::Stale(format!("{} is missing", ctx.display()));
    }
    let want: Vec<(String, String)> = options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let id = source_id(onnx).unwrap_or_default();
    if s.source_id != id {
        Choice::Stale(format!("{} changed since the engine was built", onnx.display()))
    } else if s.onnxruntime != onnxruntime {
        Choice::Stale(format!("built with ONNX Runtime {}, this is {onnxruntime}", s.onnxruntime))
    } else if s.options != want {
        let diff: Vec<String> =
            want.iter().filter(|kv| !s.options.contains(kv)).map(|(k, v)| format!("{k}={v}")).collect();
        Choice::Stale(format!("built with other TensorRT options (now {})", diff.join(", ")))
    } else {
        Choice::Precompiled(ctx.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(tag: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("mobile_vla_engine_{tag}_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let onnx = dir.join("policy.onnx");
        std::fs::write(&onnx, b"graph").unwrap();
        std::fs::write(dir.join("policy.onnx.data"), b"weights").unwrap();
        let (ctx, stamp) = paths(&dir.join("cache"), "hybrid", "policy");
        std::fs::create_dir_all(ctx.parent().unwrap()).unwrap();
        (dir, onnx, ctx, stamp)
    }

    fn write(stamp: &Path, onnx: &Path, ort: &str, options: &[(&'static str, String)]) {
        let s = Stamp {
            source: onnx.to_path_buf(),
            source_id: source_id(onnx).unwrap(),
            onnxruntime: ort.into(),
            options: options.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        };
        std::fs::write(stamp, serde_json::to_string(&s).unwrap()).unwrap();
    }

    #[test]
    fn a_matching_engine_is_loaded_and_every_mismatch_is_stale_with_its_reason() {
        let (_dir, onnx, ctx, stamp) = setup("match");
        let opts = vec![("trt_fp16_enable", "1".to_string())];
        assert_eq!(choose(&onnx, &ctx, &stamp, "1.24.1", &opts), Choice::Graph, "nothing built yet");
        write(&stamp, &onnx, "1.24.1", &opts);
        assert!(matches!(choose(&onnx, &ctx, &stamp, "1.24.1", &opts), Choice::Stale(w) if w.contains("missing")));
        std::fs::write(&ctx, b"ctx").unwrap();
        assert_eq!(choose(&onnx, &ctx, &stamp, "1.24.1", &opts), Choice::Precompiled(ctx.clone()));
        let Choice::Stale(why) = choose(&onnx, &ctx, &stamp, "1.25.0", &opts) else { panic!() };
        assert!(why.contains("1.24.1") && why.contains("1.25.0"), "{why}");
        let fp32 = vec![("trt_fp16_enable", "0".to_string())];
        let Choice::Stale(why) = choose(&onnx, &ctx, &stamp, "1.24.1", &fp32) else { panic!() };
        assert!(why.contains("trt_fp16_enable=0"), "{why}");
    }

    #[test]
    fn a_new_graph_or_new_weights_make_the_engine_stale() {
        let (dir, onnx, ctx, stamp) = setup("source");
        let opts = vec![("trt_fp16_enable", "1".to_string())];
        std::fs::write(&ctx, b"ctx").unwrap();
        write(&stamp, &onnx, "1.24.1", &opts);
        std::fs::write(dir.join("policy.onnx.data"), b"new weights").unwrap();
        assert!(matches!(choose(&onnx, &ctx, &stamp, "1.24.1", &opts), Choice::Stale(w) if w.contains("changed")));
        write(&stamp, &onnx, "1.24.1", &opts);
        std::fs::write(&onnx, b"another graph").unwrap();
        assert!(matches!(choose(&onnx, &ctx, &stamp, "1.24.1", &opts), Choice::Stale(_)));
    }

    #[test]
    fn the_dump_options_write_a_context_model_with_the_engine_beside_it() {
        let o = dump_options(Path::new("/cache/hybrid/policy_ctx.onnx"));
        assert!(o.contains(&("trt_dump_ep_context_model", "1".into())));
        assert!(o.contains(&("trt_ep_context_file_path", "/cache/hybrid/policy_ctx.onnx".into())));
        assert!(o.contains(&("trt_ep_context_embed_mode", "0".into())));
    }
}

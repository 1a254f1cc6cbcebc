//! Model manifests: what a policy's ONNX graphs take and give, by role.
//!
//! Owns the serde schema of `models/<policy>.json`, its validation, and the
//! resolution of the files it names (relative to the manifest). Two versions
//! load into one [`Manifest`]:
//! - **v1** (no `version` key): one graph, one image input (half-pixel
//!   bilinear unless it says otherwise), an optional Kosmos-2 style prompt
//!   with a repeated image token, f32 state, an f32 `[1, k]` / `[1, T, k]` action;
//! - **v2** (`"version": 2`): several graphs (`stages`, each run per frame or
//!   once per instruction, with its own providers), named image inputs each
//!   with its own preprocessing, named text inputs each with its own
//!   `tokenizer.json`, layout (`plain` BOS/EOS as CLIP, `kosmos2` as
//!   `Kosmos2Processor`), padding (`max_length` | `exact`), id type and roles
//!   (`attention_mask`, `position_ids`, `image_embeds_position_mask`), state in
//!   f16 or f32, windows (the last T frames of an image or of a per-frame
//!   stage's output, fed as `[1, T, ...]`), and the action picked out of any
//!   output rank by an index path, its elements mapped to any of the three
//!   velocity axes and denormalised (`action`).
//!
//! Checking the manifest against the real graphs is `contract`'s job; nothing
//! here touches ONNX Runtime.

use std::path::{Path, PathBuf};

use mobile_vla_core::config::Provider;
use mobile_vla_vision::ImageSpec;
use serde::Deserialize;
use serde_json::Value;

use crate::PolicyError;

mod action;
mod v1;
mod v2;
mod validate;

pub use action::{ActionOutput, ActionStep, AxisMap, AXES};

use v1::V1;
use v2::V2;

/// A manifest, in its v2 form whatever version the file was.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// 1 or 2: the file's schema version.
    pub version: u32,
    /// "hybrid" or "pure": how the policy is named in logs, status and statistics.
    pub name: String,
    /// True for generated stand-ins; the node says so loudly at start.
    pub stand_in: bool,
    pub description: String,
    pub stages: Vec<Stage>,
    pub images: Vec<ImageInput>,
    pub texts: Vec<TextInput>,
    /// Recurrent state carried frame to frame, reset with every new history (see `runner`).
    pub state: Vec<StatePair>,
    /// Histories of per-frame tensors, each fed to a graph as `[1, T, ...]`.
    pub windows: Vec<Window>,
    /// What a window holds before it has its T frames.
    pub window_start: WindowStart,
    pub action: ActionOutput,
}

/// A history of a per-frame tensor, fed to a graph as `[1, length, ...]`:
/// each frame adds its tensor once, the oldest leaves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// The graph input that takes the window.
    pub input: String,
    /// What each frame adds: an image input (by its `input` name), or an
    /// output of an earlier per-frame stage (a backbone's features).
    pub from: String,
    /// How many frames it holds (T).
    pub length: usize,
}

/// What a window holds before it has its T frames (at start, and after every reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStart {
    /// No command until the window is full: the policy only ever sees windows
    /// of T real frames, as it did in training (RoboVLMs samples full windows).
    #[default]
    Wait,
    /// Command from the first frame, the older slots holding copies of the first frame.
    RepeatFirst,
}

/// When a stage's graph runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageRun {
    /// On every frame, in manifest order.
    PerFrame,
    /// Once per instruction change; its outputs are kept for the per-frame stages.
    PerInstruction,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// The ONNX file, relative to the manifest. External-data files sit beside it.
    pub onnx: PathBuf,
    #[serde(default = "per_frame")]
    pub run: StageRun,
    /// Execution providers for this stage, instead of the policy's.
    #[serde(default)]
    pub providers: Option<Vec<Provider>>,
    /// The model name a remote server serves this stage under (see `remote::served_name`).
    #[serde(default)]
    pub served_as: Option<String>,
}

fn per_frame() -> StageRun {
    StageRun::PerFrame
}

// No deny_unknown_fields here: serde does not support it beside `flatten`;
// ImageSpec itself refuses unknown keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageInput {
    pub input: String,
    #[serde(flatten)]
    pub spec: ImageSpec,
}

/// How the instruction becomes token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextLayout {
    /// The tokenizer's own special tokens (its post-processor), as CLIP's tokenizer.
    Plain,
    /// `Kosmos2Processor`: `<s><image>`, the image-token placeholders, `</image>`, then the text.
    Kosmos2,
    /// v1: BOS, an image span of one repeated token id, the prompt, EOS.
    Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// Pad to `max_length` with `pad_id` (attention 0).
    MaxLength,
    /// No padding: the graph's sequence axis is dynamic.
    Exact,
}

/// Integer type of a text input's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdType {
    Int64,
    Int32,
}

/// Graph input names of a text input's tensors.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRoles {
    pub input_ids: String,
    #[serde(default)]
    pub attention_mask: Option<String>,
    #[serde(default)]
    pub position_ids: Option<String>,
    #[serde(default)]
    pub image_embeds_position_mask: Option<String>,
}

/// `position_ids` of real tokens count from `start`; padding gets `pad`
/// (RoBERTa and Kosmos-2: start = pad id + 1, pad = pad id) or, when `pad`
/// is absent, keeps counting (CLIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionIds {
    #[serde(default)]
    pub start: i64,
    #[serde(default)]
    pub pad: Option<i64>,
}

/// `Kosmos2Processor`'s prompt: `bos_token`, then `boi_token` and `n`
/// placeholder `boi_token`s and `eoi_token` joined by spaces, a space and the
/// text, tokenised as one string; the placeholders then become
/// `first_image_token_id ..` and are marked in `image_embeds_position_mask`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kosmos2Prompt {
    pub bos_token: String,
    pub boi_token: String,
    pub eoi_token: String,
    pub num_image_tokens: usize,
    /// Default in the processor: the tokenizer's unk id + 1.
    pub first_image_token_id: i64,
    /// The processor's `add_eos_token` (default false): the tokenizer's own
    /// special tokens (BOS and EOS) instead of a leading `bos_token`.
    #[serde(default)]
    pub add_eos: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextInput {
    /// Hugging Face `tokenizer.json`, relative to the manifest.
    pub tokenizer: PathBuf,
    pub layout: TextLayout,
    /// `{instruction}` is replaced by the operator's instruction.
    pub prompt: String,
    /// Strip the instruction's surrounding whitespace first (the processors do).
    pub strip: bool,
    pub padding: Padding,
    pub max_length: usize,
    pub dtype: IdType,
    pub pad_id: i64,
    pub roles: TextRoles,
    pub position_ids: PositionIds,
    pub kosmos2: Option<Kosmos2Prompt>,
    /// Span layout (v1) only.
    pub bos_id: Option<i64>,
    pub eos_id: Option<i64>,
    pub image_span: Option<ImageSpan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpan {
    pub start_id: i64,
    pub token_id: i64,
    pub end_id: i64,
    pub length: usize,
}

/// Element type of a float tensor (state, action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    #[default]
    F32,
    F16,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatePair {
    pub input: String,
    pub output: String,
    pub shape: Vec<usize>,
    #[serde(default)]
    pub dtype: FloatType,
}

/// A manifest with its files resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    pub path: PathBuf,
    /// Per stage, its ONNX file.
    pub onnx_paths: Vec<PathBuf>,
    /// Per text input, its tokenizer.
    pub tokenizer_paths: Vec<PathBuf>,
}

/// Where a graph input's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Image(usize),
    Text(usize, TextRole),
    State(usize),
    /// An output of an earlier stage (`stage`, output name looked up there).
    Stage(usize),
    /// The window of that index: the history of an image or a stage output.
    Window(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRole {
    InputIds,
    AttentionMask,
    PositionIds,
    ImageEmbedsPositionMask,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<LoadedManifest, PolicyError> {
        let bad = |e: String| PolicyError::Manifest(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let manifest = Self::parse(&text).map_err(bad)?;
        manifest.validate().map_err(bad)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(LoadedManifest {
            onnx_paths: manifest.stages.iter().map(|s| dir.join(&s.onnx)).collect(),
            tokenizer_paths: manifest.texts.iter().map(|t| dir.join(&t.tokenizer)).collect(),
            path: path.to_path_buf(),
            manifest,
        })
    }

    /// Parses either schema; errors name the key (`images[1].filter: unknown variant ...`).
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let de = |v: Value| -> Result<Manifest, String> {
            match v.get("version").map(Value::as_u64) {
                None => {
                    let v1: V1 = serde_path_to_error::deserialize(v).map_err(|e| path_error(&e))?;
                    Ok(v1.into_manifest())
                }
                Some(Some(2)) => {
                    let v2: V2 = serde_path_to_error::deserialize(v).map_err(|e| path_error(&e))?;
                    Ok(v2.into_manifest())
                }
                Some(other) => Err(format!("version: {other:?} is not a manifest version (1 or 2)")),
            }
        };
        // v1 predates the resize filters: its image input is the half-pixel bilinear one.
        if value.get("version").is_none() {
            if let Some(image) = value.get_mut("image").and_then(Value::as_object_mut) {
                image.entry("antialias").or_insert(Value::Bool(false));
            }
        }
        // serde loses the key path inside a flattened struct: check the image specs on their own first.
        let images: Vec<(String, Value)> = match (value.get("image"), value.get("images")) {
            (Some(one), _) => vec![("image".into(), one.clone())],
            (None, Some(Value::Array(all))) => {
                all.iter().enumerate().map(|(i, v)| (format!("images[{i}]"), v.clone())).collect()
            }
            _ => Vec::new(),
        };
        for (at, mut img) in images {
            let name = img.as_object_mut().and_then(|o| o.remove("input"));
            if let Err(e) = serde_path_to_error::deserialize::<_, ImageSpec>(img) {
                let name = name.and_then(|n| n.as_str().map(|s| format!(" ('{s}')"))).unwrap_or_default();
                return Err(format!("{at}{name}.{}", path_error(&e)));
            }
        }
        de(value)
    }

    /// Every graph input the manifest feeds from an image, a text or the state, with its source.
    pub fn fed(&self) -> Vec<(&str, Source)> {
        let mut v: Vec<(&str, Source)> =
            self.images.iter().enumerate().map(|(i, img)| (img.input.as_str(), Source::Image(i))).collect();
        for (i, t) in self.texts.iter().enumerate() {
            let r = &t.roles;
            v.push((&r.input_ids, Source::Text(i, TextRole::InputIds)));
            for (name, role) in [
                (&r.attention_mask, TextRole::AttentionMask),
                (&r.position_ids, TextRole::PositionIds),
                (&r.image_embeds_position_mask, TextRole::ImageEmbedsPositionMask),
            ] {
                if let Some(n) = name {
                    v.push((n, Source::Text(i, role)));
                }
            }
        }
        v.extend(self.state.iter().enumerate().map(|(i, s)| (s.input.as_str(), Source::State(i))));
        v.extend(self.windows.iter().enumerate().map(|(i, w)| (w.input.as_str(), Source::Window(i))));
        v
    }

    fn fed_names(&self) -> Vec<&str> {
        self.fed().into_iter().map(|(n, _)| n).collect()
    }

    /// True when no stage reads text: the model ignores the instruction's words.
    pub fn instruction_free(&self) -> bool {
        self.texts.is_empty()
    }
}

impl TextInput {
    /// The sequence lengths this input can take: (shortest, typical, longest).
    /// One value when padded to `max_length`; for exact-length inputs, the
    /// fixed tokens alone up to `max_length` (TensorRT's shape profile).
    pub fn lengths(&self) -> (usize, usize, usize) {
        if self.padding == Padding::MaxLength {
            return (self.max_length, self.max_length, self.max_length);
        }
        let fixed = match (self.layout, &self.kosmos2, self.image_span) {
            (TextLayout::Kosmos2, Some(k), _) => k.num_image_tokens + 3 + k.add_eos as usize,
            (TextLayout::Span, _, span) => {
                self.bos_id.is_some() as usize + self.eos_id.is_some() as usize + span.map_or(0, |s| s.length + 2)
            }
            _ => 2,
        };
        let min = (fixed + 1).min(self.max_length);
        (min, (min + 16).min(self.max_length), self.max_length)
    }
}

fn path_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    if path == "." {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL_TEAM: &str = r#"{
        "name": "legacy", "onnx": "policy.onnx",
        "image": {"input": "image", "width": 224, "height": 224, "resize": "stretch",
                  "channel_order": "rgb", "layout": "nhwc", "scale": 0.00392156862745098,
                  "mean": [0,0,0], "std": [1,1,1], "dtype": "f32"},
        "action": {"output": "action", "step": "last", "linear_x": 0, "linear_y": 1, "angular_z": 2,
                   "scale": [1,1,1], "clip": [1.15,1.15,1.15]}
    }"#;

    const HYBRID_V2: &str = r#"{
        "version": 2, "name": "hybrid",
        "stages": [
            {"name": "clip_text", "onnx": "clip_text.onnx", "run": "per_instruction", "providers": ["cpu"]},
            {"name": "policy", "onnx": "policy.onnx"}
        ],
        "images": [
            {"input": "pixel_values", "width": 224, "height": 224, "resize": "stretch", "filter": "bicubic",
             "channel_order": "rgb", "layout": "nchw", "scale": 0.00392156862745098,
             "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711], "dtype": "f32"},
            {"input": "clip_pixel_values", "width": 224, "height": 224, "resize": "shortest_edge", "shortest_edge": 224,
             "filter": "bicubic", "channel_order": "rgb", "layout": "nchw", "scale": 0.00392156862745098,
             "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711], "dtype": "f16"}
        ],
        "texts": [
            {"tokenizer": "kosmos2/tokenizer.json", "layout": "kosmos2", "prompt": "<grounding>{instruction}",
             "padding": "exact", "max_length": 128, "dtype": "int32", "pad_id": 1,
             "kosmos2": {"bos_token": "<s>", "boi_token": "<image>", "eoi_token": "</image>",
                         "num_image_tokens": 64, "first_image_token_id": 4},
             "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                        "position_ids": "position_ids", "image_embeds_position_mask": "image_embeds_position_mask"},
             "position_ids": {"start": 2, "pad": 1}},
            {"tokenizer": "clip/tokenizer.json", "layout": "plain", "padding": "max_length", "max_length": 77,
             "pad_id": 49407, "inputs": {"input_ids": "clip_input_ids", "attention_mask": "clip_attention_mask"}}
        ],
        "state": [{"input": "h_in", "output": "h_out", "shape": [1, 1, 32], "dtype": "f16"}],
        "action": {"output": "actions", "index": [0, 0], "step": "first", "linear_x": 0, "linear_y": 1,
                   "angular_z": 2, "scale": [1, 1, 1], "clip": [1.15, 1.15, 1.15]}
    }"#;

    #[test]
    fn the_original_teams_single_image_nhwc_contract_is_expressible() {
        let m = Manifest::parse(ORIGINAL_TEAM).unwrap();
        m.validate().unwrap();
        assert!(m.texts.is_empty() && m.state.is_empty());
        assert_eq!(m.version, 1);
        assert_eq!(m.images[0].spec.shape(), [1, 224, 224, 3]);
        assert!(!m.images[0].spec.antialias, "v1 is the half-pixel bilinear transform");
        assert_eq!(m.fed().iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec!["image"]);
        assert_eq!(m.stages.len(), 1);
        assert!(m.instruction_free());
    }

    #[test]
    fn a_two_stage_two_image_two_tokenizer_hybrid_is_expressible() {
        let m = Manifest::parse(HYBRID_V2).unwrap();
        m.validate().unwrap();
        assert_eq!(m.stages[0].run, StageRun::PerInstruction);
        assert_eq!(m.stages[0].providers, Some(vec![Provider::Cpu]));
        assert!(m.images[0].spec.antialias, "v2 filters antialias as PIL does unless told otherwise");
        assert_eq!(m.texts[0].dtype, IdType::Int32);
        assert_eq!(m.texts[0].padding, Padding::Exact);
        assert_eq!(m.texts[1].position_ids, PositionIds { start: 0, pad: None });
        assert_eq!(m.state[0].dtype, FloatType::F16);
        assert_eq!(m.action.index, Some(vec![0, 0]));
        let fed = m.fed();
        assert_eq!(fed.len(), 2 + 4 + 2 + 1);
        assert!(fed.contains(&("position_ids", Source::Text(0, TextRole::PositionIds))));
    }

    #[test]
    fn bundled_manifests_load_and_name_their_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        for name in ["hybrid", "pure"] {
            let m = Manifest::load(&dir.join(format!("{name}.json"))).unwrap();
            assert_eq!(m.manifest.name, name);
            assert!(m.manifest.stand_in);
            assert!(m.onnx_paths[0].is_file(), "{}", m.onnx_paths[0].display());
            assert!(m.tokenizer_paths[0].is_file());
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let bad = ORIGINAL_TEAM.replace("\"nhwc\"", "\"hwc\"");
        let e = Manifest::parse(&bad).unwrap_err();
        assert!(e.contains("unknown variant `hwc`"), "{e}");
        assert!(Manifest::parse(&ORIGINAL_TEAM.replace("\"name\"", "\"nmae\"")).is_err());
        let e = Manifest::parse(&HYBRID_V2.replace("\"bicubic\"", "\"lanczos\"")).unwrap_err();
        assert!(e.starts_with("images[0] ('pixel_values').filter: unknown variant `lanczos`"), "{e}");
        let e = Manifest::parse(&HYBRID_V2.replace("\"exact\"", "\"longest\"")).unwrap_err();
        assert!(e.starts_with("texts[0].padding"), "{e}");
        let e = Manifest::parse(&HYBRID_V2.replace("\"version\": 2", "\"version\": 3")).unwrap_err();
        assert!(e.contains("1 or 2"), "{e}");
        let mut m = Manifest::parse(ORIGINAL_TEAM).unwrap();
        m.images[0].spec.std = [1.0, 0.0, 1.0];
        assert!(m.validate().unwrap_err().contains("std"));
    }

    #[test]
    fn inconsistent_v2_manifests_say_what_is_wrong() {
        let cases = [
            (HYBRID_V2.replace("\"layout\": \"kosmos2\"", "\"layout\": \"plain\""), "layout plain has no image tokens"),
            (HYBRID_V2.replace("\"name\": \"policy\"", "\"name\": \"clip_text\""), "used twice"),
            (HYBRID_V2.replace("\"clip_attention_mask\"", "\"attention_mask\""), "fed by two roles"),
            (HYBRID_V2.replace("{instruction}", "{task}"), "must contain {instruction}"),
            (HYBRID_V2.replace("\"shortest_edge\": 224", "\"shortest_edge\": 100"), "shortest_edge 100"),
        ];
        for (text, want) in cases {
            let m = Manifest::parse(&text).unwrap();
            let e = m.validate().unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
        let no_frame = HYBRID_V2.replace(
            "{\"name\": \"policy\", \"onnx\": \"policy.onnx\"}",
            "{\"name\": \"policy\", \"onnx\": \"policy.onnx\", \"run\": \"per_instruction\"}",
        );
        assert!(Manifest::parse(&no_frame).unwrap().validate().unwrap_err().contains("per_frame"));
    }
}

//! Model manifests: what a policy's ONNX graph takes and gives, by role.
//!
//! Owns the serde schema of `models/<policy>.json`, its validation, and the
//! resolution of the files it names (relative to the manifest). Checking the
//! manifest against a real graph is `session::check_contract`'s job; nothing
//! here touches ONNX Runtime.

use std::path::{Path, PathBuf};

use mobile_vla_core::preprocess::ImageSpec;
use serde::Deserialize;

use crate::PolicyError;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// "hybrid" or "pure": how the policy is named in logs, status and statistics.
    pub name: String,
    /// True for the generated stand-ins; the node says so loudly at start.
    #[serde(default)]
    pub stand_in: bool,
    #[serde(default)]
    pub description: String,
    /// The ONNX file, relative to the manifest. External-data files sit beside it.
    pub onnx: PathBuf,
    pub image: ImageInput,
    /// Absent for a model that takes no instruction (the original team's exports).
    #[serde(default)]
    pub text: Option<TextInput>,
    /// Recurrent state carried frame to frame, reset when the instruction changes.
    #[serde(default)]
    pub state: Vec<StatePair>,
    pub action: ActionOutput,
}

// No deny_unknown_fields here: serde does not support it beside `flatten`;
// ImageSpec itself refuses unknown keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImageInput {
    pub input: String,
    #[serde(flatten)]
    pub spec: ImageSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextInput {
    /// Hugging Face `tokenizer.json`, relative to the manifest.
    pub tokenizer: PathBuf,
    pub max_length: usize,
    /// `{instruction}` is replaced by the operator's instruction.
    pub prompt: String,
    pub bos_id: Option<i64>,
    pub eos_id: Option<i64>,
    pub pad_id: i64,
    /// Kosmos-2's image-token span right after BOS: start, `length` image tokens, end.
    pub image_span: Option<ImageSpan>,
    pub input_ids: String,
    pub attention_mask: Option<String>,
    pub image_embeds_position_mask: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpan {
    pub start_id: i64,
    pub token_id: i64,
    pub end_id: i64,
    pub length: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatePair {
    pub input: String,
    pub output: String,
    pub shape: Vec<usize>,
}

/// Which step of a `[1, T, 3]` action chunk drives the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStep {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionOutput {
    pub output: String,
    /// For `[1, T, k]` outputs; ignored for `[1, k]`.
    #[serde(default = "first")]
    pub step: ActionStep,
    /// Element index of each velocity in the action vector.
    pub linear_x: usize,
    pub linear_y: usize,
    pub angular_z: usize,
    /// Multiplies (linear.x, linear.y, angular.z) after extraction.
    pub scale: [f32; 3],
    /// Symmetric clip of each velocity after scaling (the team clipped to about 1.15).
    pub clip: [f32; 3],
}

fn first() -> ActionStep {
    ActionStep::First
}

/// A manifest with its files resolved to absolute paths.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    pub path: PathBuf,
    pub onnx_path: PathBuf,
    pub tokenizer_path: Option<PathBuf>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<LoadedManifest, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| PolicyError::Manifest(format!("{}: {e}", path.display())))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| PolicyError::Manifest(format!("{}: {e}", path.display())))?;
        manifest.validate().map_err(|e| PolicyError::Manifest(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Ok(LoadedManifest {
            onnx_path: dir.join(&manifest.onnx),
            tokenizer_path: manifest.text.as_ref().map(|t| dir.join(&t.tokenizer)),
            path: path.to_path_buf(),
            manifest,
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        self.image.spec.validate()?;
        let a = &self.action;
        if a.scale.iter().chain(&a.clip).any(|v| !v.is_finite() || *v < 0.0) {
            return Err("action.scale and action.clip must be finite and >= 0".into());
        }
        if let Some(t) = &self.text {
            let fixed =
                t.bos_id.is_some() as usize + t.eos_id.is_some() as usize + t.image_span.map_or(0, |s| s.length + 2);
            if t.max_length <= fixed {
                return Err(format!(
                    "text.max_length {} leaves no room for text after {fixed} fixed tokens",
                    t.max_length
                ));
            }
            if !t.prompt.contains("{instruction}") {
                return Err("text.prompt must contain {instruction}".into());
            }
            if t.image_span.is_some() && t.image_embeds_position_mask.is_none() {
                return Err("text.image_span needs text.image_embeds_position_mask".into());
            }
        }
        for s in &self.state {
            if s.shape.is_empty() || s.shape.contains(&0) {
                return Err(format!("state '{}' has an empty shape {:?}", s.input, s.shape));
            }
        }
        Ok(())
    }

    /// Every graph input the manifest feeds, by name.
    pub fn input_names(&self) -> Vec<&str> {
        let mut v = vec![self.image.input.as_str()];
        if let Some(t) = &self.text {
            v.push(&t.input_ids);
            v.extend(t.attention_mask.as_deref());
            v.extend(t.image_embeds_position_mask.as_deref());
        }
        v.extend(self.state.iter().map(|s| s.input.as_str()));
        v
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

    #[test]
    fn the_original_teams_single_image_nhwc_contract_is_expressible() {
        let m: Manifest = serde_json::from_str(ORIGINAL_TEAM).unwrap();
        m.validate().unwrap();
        assert!(m.text.is_none() && m.state.is_empty());
        assert_eq!(m.image.spec.shape(), [1, 224, 224, 3]);
        assert_eq!(m.input_names(), vec!["image"]);
    }

    #[test]
    fn bundled_manifests_load_and_name_their_files() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        for name in ["hybrid", "pure"] {
            let m = Manifest::load(&dir.join(format!("{name}.json"))).unwrap();
            assert_eq!(m.manifest.name, name);
            assert!(m.manifest.stand_in);
            assert!(m.onnx_path.is_file(), "{}", m.onnx_path.display());
            assert!(m.tokenizer_path.unwrap().is_file());
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let bad = ORIGINAL_TEAM.replace("\"nhwc\"", "\"hwc\"");
        let e = serde_json::from_str::<Manifest>(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown variant `hwc`"), "{e}");
        let bad = ORIGINAL_TEAM.replace("\"name\"", "\"nmae\"");
        assert!(serde_json::from_str::<Manifest>(&bad).is_err());
        let mut m: Manifest = serde_json::from_str(ORIGINAL_TEAM).unwrap();
        m.image.spec.std = [1.0, 0.0, 1.0];
        assert!(m.validate().unwrap_err().contains("std"));
    }
}

//! The v2 manifest file (`"version": 2`): stages, named image and text inputs.
//!
//! Owns the file's serde schema and its translation into a [`Manifest`].

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    ActionOutput, IdType, ImageInput, Kosmos2Prompt, Manifest, Padding, PositionIds, Stage, StatePair, TextInput,
    TextLayout, TextRoles, Window, WindowStart,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct V2 {
    version: u32,
    name: String,
    #[serde(default)]
    stand_in: bool,
    #[serde(default)]
    description: String,
    stages: Vec<Stage>,
    images: Vec<ImageInput>,
    #[serde(default)]
    texts: Vec<V2Text>,
    #[serde(default)]
    state: Vec<StatePair>,
    #[serde(default)]
    windows: Vec<Window>,
    #[serde(default)]
    window_start: WindowStart,
    action: ActionOutput,
}

fn instruction_only() -> String {
    "{instruction}".into()
}

fn int64() -> IdType {
    IdType::Int64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Text {
    tokenizer: PathBuf,
    layout: TextLayout,
    #[serde(default = "instruction_only")]
    prompt: String,
    #[serde(default = "yes")]
    strip: bool,
    padding: Padding,
    max_length: usize,
    #[serde(default = "int64")]
    dtype: IdType,
    pad_id: i64,
    inputs: TextRoles,
    #[serde(default)]
    position_ids: Option<PositionIds>,
    #[serde(default)]
    kosmos2: Option<Kosmos2Prompt>,
}

fn yes() -> bool {
    true
}

impl V2 {
    pub(super) fn into_manifest(self) -> Manifest {
        let texts = self
            .texts
            .into_iter()
            .map(|t| TextInput {
                tokenizer: t.tokenizer,
                layout: t.layout,
                prompt: t.prompt,
                strip: t.strip,
                padding: t.padding,
                max_length: t.max_length,
                dtype: t.dtype,
                pad_id: t.pad_id,
                roles: t.inputs,
                position_ids: t.position_ids.unwrap_or(PositionIds { start: 0, pad: None }),
                kosmos2: t.kosmos2,
                bos_id: None,
                eos_id: None,
                image_span: None,
            })
            .collect();
        Manifest {
            version: self.version,
            name: self.name,
            stand_in: self.stand_in,
            description: self.description,
            stages: self.stages,
            images: self.images,
            texts,
            state: self.state,
            windows: self.windows,
            window_start: self.window_start,
            action: self.action,
        }
    }
}

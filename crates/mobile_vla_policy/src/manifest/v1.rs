//! The v1 manifest file: one graph, one image input, an optional Kosmos-2 style prompt.
//!
//! Owns the file's serde schema and its translation into a [`Manifest`];
//! the half-pixel bilinear default of its image input is set by the parser.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    ActionOutput, IdType, ImageInput, ImageSpan, Manifest, Padding, PositionIds, Stage, StageRun, StatePair, TextInput,
    TextLayout, TextRoles, WindowStart,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct V1 {
    name: String,
    #[serde(default)]
    stand_in: bool,
    #[serde(default)]
    description: String,
    onnx: PathBuf,
    image: ImageInput,
    #[serde(default)]
    text: Option<V1Text>,
    #[serde(default)]
    state: Vec<StatePair>,
    action: ActionOutput,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct V1Text {
    tokenizer: PathBuf,
    max_length: usize,
    prompt: String,
    bos_id: Option<i64>,
    eos_id: Option<i64>,
    pad_id: i64,
    image_span: Option<ImageSpan>,
    input_ids: String,
    attention_mask: Option<String>,
    image_embeds_position_mask: Option<String>,
}

impl V1 {
    pub(super) fn into_manifest(self) -> Manifest {
        let texts = self
            .text
            .map(|t| TextInput {
                tokenizer: t.tokenizer,
                layout: TextLayout::Span,
                prompt: t.prompt,
                strip: false,
                padding: Padding::MaxLength,
                max_length: t.max_length,
                dtype: IdType::Int64,
                pad_id: t.pad_id,
                roles: TextRoles {
                    input_ids: t.input_ids,
                    attention_mask: t.attention_mask,
                    position_ids: None,
                    image_embeds_position_mask: t.image_embeds_position_mask,
                },
                position_ids: PositionIds { start: 0, pad: None },
                kosmos2: None,
                bos_id: t.bos_id,
                eos_id: t.eos_id,
                image_span: t.image_span,
            })
            .into_iter()
            .collect();
        Manifest {
            version: 1,
            name: self.name.clone(),
            stand_in: self.stand_in,
            description: self.description,
            stages: vec![Stage {
                name: self.name,
                onnx: self.onnx,
                run: StageRun::PerFrame,
                providers: None,
                served_as: None,
            }],
            images: vec![self.image],
            texts,
            state: self.state,
            windows: Vec::new(),
            window_start: WindowStart::default(),
            action: self.action,
        }
    }
}

//! Instruction -> token tensors, once per instruction change.
//!
//! Owns the tokenizer (a Hugging Face `tokenizer.json`, the format the real
//! Kosmos-2 processor ships) and the prompt layout: BOS, the Kosmos-2
//! image-token span (`<image>`, N image tokens, `</image>`) marked in
//! `image_embeds_position_mask`, the prompt text, EOS, then padding to the
//! fixed length with `attention_mask` 0. Nothing here runs a model.

use tokenizers::Tokenizer;

use crate::manifest::TextInput;
use crate::PolicyError;

/// The three int64 rows a Kosmos-2 style graph takes, each `max_length` long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub image_embeds_position_mask: Vec<i64>,
    /// True when the instruction did not fit and was cut.
    pub truncated: bool,
}

pub struct TextEncoder {
    spec: TextInput,
    tokenizer: Tokenizer,
}

impl TextEncoder {
    pub fn new(spec: TextInput, tokenizer_path: &std::path::Path) -> Result<Self, PolicyError> {
        let tokenizer = Tokenizer::from_file(tokenizer_path)
            .map_err(|e| PolicyError::Manifest(format!("tokenizer {}: {e}", tokenizer_path.display())))?;
        Ok(Self { spec, tokenizer })
    }

    pub fn encode(&self, instruction: &str) -> Result<Tokens, PolicyError> {
        let s = &self.spec;
        let text = s.prompt.replace("{instruction}", instruction);
        let enc = self.tokenizer.encode(text, false).map_err(|e| PolicyError::Tokenize(e.to_string()))?;
        Ok(layout(s, enc.get_ids().iter().map(|&i| i as i64)))
    }
}

/// Lays out prompt token ids as the graph expects them.
pub fn layout(s: &TextInput, text_ids: impl Iterator<Item = i64>) -> Tokens {
    let n = s.max_length;
    let mut ids = Vec::with_capacity(n);
    let mut image_mask = Vec::with_capacity(n);
    let mut push = |id: i64, image: bool, ids: &mut Vec<i64>| {
        ids.push(id);
        image_mask.push(image as i64);
    };
    if let Some(b) = s.bos_id {
        push(b, false, &mut ids);
    }
    if let Some(span) = s.image_span {
        push(span.start_id, false, &mut ids);
        for _ in 0..span.length {
            push(span.token_id, true, &mut ids);
        }
        push(span.end_id, false, &mut ids);
    }
    let room = n - ids.len() - s.eos_id.is_some() as usize;
    let mut truncated = false;
    for (k, id) in text_ids.enumerate() {
        if k >= room {
            truncated = true;
            break;
        }
        push(id, false, &mut ids);
    }
    if let Some(e) = s.eos_id {
        push(e, false, &mut ids);
    }
    let real = ids.len();
    while ids.len() < n {
        push(s.pad_id, false, &mut ids);
    }
    let attention_mask = (0..n).map(|i| (i < real) as i64).collect();
    Tokens { input_ids: ids, attention_mask, image_embeds_position_mask: image_mask, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImageSpan, Manifest};

    fn spec(max_length: usize) -> TextInput {
        TextInput {
            tokenizer: "t.json".into(),
            max_length,
            prompt: "<grounding> {instruction}".into(),
            bos_id: Some(0),
            eos_id: Some(2),
            pad_id: 1,
            image_span: Some(ImageSpan { start_id: 4, token_id: 7, end_id: 5, length: 3 }),
            input_ids: "input_ids".into(),
            attention_mask: Some("attention_mask".into()),
            image_embeds_position_mask: Some("image_embeds_position_mask".into()),
        }
    }

    #[test]
    fn kosmos2_layout_marks_the_image_span_and_pads() {
        let t = layout(&spec(12), [6, 20, 21].into_iter());
        assert_eq!(t.input_ids, vec![0, 4, 7, 7, 7, 5, 6, 20, 21, 2, 1, 1]);
        assert_eq!(t.image_embeds_position_mask, vec![0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(t.attention_mask, vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        assert!(!t.truncated);
    }

    #[test]
    fn long_text_is_truncated_keeping_eos() {
        let t = layout(&spec(10), 100..200);
        assert_eq!(t.input_ids.len(), 10);
        assert_eq!(*t.input_ids.last().unwrap(), 2);
        assert!(t.truncated);
        assert!(t.attention_mask.iter().all(|&m| m == 1));
    }

    #[test]
    fn stand_in_tokenizer_lowercases_and_maps_unknown_words() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let m = Manifest::load(&dir.join("hybrid.json")).unwrap();
        let enc = TextEncoder::new(m.manifest.text.clone().unwrap(), &m.tokenizer_path.unwrap()).unwrap();
        let t = enc.encode("STOP near the Zebra").unwrap();
        let text: Vec<i64> = t.input_ids.iter().copied().skip(1 + 66).take(5).collect();
        // <grounding>=6, stop=8, near=..., the=..., zebra=<unk>=3
        assert_eq!(text[0], 6);
        assert_eq!(text[1], 8);
        assert_eq!(text[4], 3);
        assert_eq!(t.image_embeds_position_mask.iter().sum::<i64>(), 64);
    }
}

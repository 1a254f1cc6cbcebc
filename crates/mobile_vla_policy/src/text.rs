//! Instruction -> token tensors, once per instruction change.
//!
//! Owns the tokenizers (Hugging Face `tokenizer.json`, the format the real
//! processors ship, run by the same `tokenizers` library they use) and the
//! prompt layouts, so the ids and masks are the processors' own:
//! - `plain`: the tokenizer's own special tokens, truncated to `max_length`
//!   (CLIP's `tokenizer(text, truncation=True, max_length=77)`);
//! - `kosmos2`: `Kosmos2Processor(text=..., images=...)`: `<s>`, `<image>`,
//!   the image-token placeholders (ids `first_image_token_id..`, marked in
//!   `image_embeds_position_mask`), `</image>`, the text, tokenised as one
//!   string so the added tokens split it exactly as in Python;
//! - `span` (v1 manifests): BOS, a span of one repeated image token id, the
//!   prompt, EOS.
//!
//! then padding (`max_length`, or `exact`: none), `position_ids`, and the id
//! type (int64 or int32). Nothing here runs a model, and nothing is kept
//! from one instruction to the next (the tokenizer is read-only once
//! loaded): a refused instruction leaves nothing behind.

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::manifest::{IdType, Padding, TextInput, TextLayout, TextRole};
use crate::PolicyError;

/// An integer tensor row in the type the graph takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ints {
    I64(Vec<i64>),
    I32(Vec<i32>),
}

impl Ints {
    fn new(v: Vec<i64>, ty: IdType) -> Self {
        match ty {
            IdType::Int64 => Ints::I64(v),
            IdType::Int32 => Ints::I32(v.into_iter().map(|x| x as i32).collect()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Ints::I64(v) => v.len(),
            Ints::I32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_i64(&self) -> Vec<i64> {
        match self {
            Ints::I64(v) => v.clone(),
            Ints::I32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
}

/// One instruction's token tensors, each `[1, len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub input_ids: Ints,
    pub attention_mask: Ints,
    pub position_ids: Ints,
    pub image_embeds_position_mask: Ints,
    /// True when the instruction did not fit and was cut.
    pub truncated: bool,
}

impl Tokens {
    pub fn role(&self, r: TextRole) -> &Ints {
        match r {
            TextRole::InputIds => &self.input_ids,
            TextRole::AttentionMask => &self.attention_mask,
            TextRole::PositionIds => &self.position_ids,
            TextRole::ImageEmbedsPositionMask => &self.image_embeds_position_mask,
        }
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct TextEncoder {
    spec: TextInput,
    tokenizer: Tokenizer,
}

/// Ids before padding: the sequence, which positions hold image tokens, whether it was cut.
struct Laid {
    ids: Vec<i64>,
    image: Vec<bool>,
    truncated: bool,
}

impl TextEncoder {
    pub fn new(spec: TextInput, tokenizer_path: &std::path::Path) -> Result<Self, PolicyError> {
        let mut tokenizer = Tokenizer::from_file(tokenizer_path)
            .map_err(|e| PolicyError::Manifest(format!("tokenizer {}: {e}", tokenizer_path.display())))?;
        // The manifest decides truncation and padding, not the file: a plain
        // layout is cut by the tokenizer (special tokens kept), the others by
        // their own layout code.
        tokenizer.with_padding(None);
        let truncation = (spec.layout == TextLayout::Plain).then_some(TruncationParams {
            max_length: spec.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        });
        tokenizer
            .with_truncation(truncation)
            .map_err(|e| PolicyError::Manifest(format!("tokenizer {}: {e}", tokenizer_path.display())))?;
        Ok(Self { spec, tokenizer })
    }

    pub fn spec(&self) -> &TextInput {
        &self.spec
    }

    pub fn encode(&self, instruction: &str) -> Result<Tokens, PolicyError> {
        let s = &self.spec;
        let filled = s.prompt.replace("{instruction}", instruction);
        let text = if s.strip { filled.trim() } else { filled.as_str() };
        let laid = match s.layout {
            TextLayout::Span => {
                let enc = self.tokenize(text, false)?;
                span(s, enc.get_ids().iter().map(|&i| i as i64))
            }
            TextLayout::Plain => {
                let enc = self.tokenize(text, true)?;
                let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
                Laid { image: vec![false; ids.len()], ids, truncated: !enc.get_overflowing().is_empty() }
            }
            TextLayout::Kosmos2 => self.kosmos2(text)?,
        };
        Ok(self.finish(laid))
    }

    fn tokenize(&self, text: &str, special: bool) -> Result<tokenizers::Encoding, PolicyError> {
        self.tokenizer.encode(text, special).map_err(|e| PolicyError::Tokenize(e.to_string()))
    }

    /// `Kosmos2Processor.__call__(text=text, images=image)`, one example, no bboxes.
    fn kosmos2(&self, text: &str) -> Result<Laid, PolicyError> {
        let s = &self.spec;
        let k = s.kosmos2.as_ref().expect("validated: layout kosmos2 has its prompt");
        let mut tags = vec![k.boi_token.as_str(); k.num_image_tokens + 1];
        tags.push(&k.eoi_token);
        let body = format!("{} {text}", tags.join(" "));
        let (full, start) = if k.add_eos { (body, 1) } else { (format!("{}{body}", k.bos_token), 2) };
        let enc = self.tokenize(&full, k.add_eos)?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        if ids.len() < start + k.num_image_tokens + 1 {
            return Err(PolicyError::Tokenize(format!(
                "the Kosmos-2 prompt tokenised to {} ids: '{}' or '{}' is not a token of this tokenizer",
                ids.len(),
                k.boi_token,
                k.eoi_token
            )));
        }
        let mut image = vec![false; ids.len()];
        for j in 0..k.num_image_tokens {
            ids[start + j] = k.first_image_token_id + j as i64;
            image[start + j] = true;
        }
        let mut truncated = false;
        if ids.len() > s.max_length {
            truncated = true;
            let eos = k.add_eos.then(|| *ids.last().expect("not empty"));
            ids.truncate(s.max_length - eos.is_some() as usize);
            ids.extend(eos);
            image.truncate(ids.len());
        }
        Ok(Laid { ids, image, truncated })
    }

    /// Padding, masks, position ids, and the id type.
    fn finish(&self, laid: Laid) -> Tokens {
        let s = &self.spec;
        let real = laid.ids.len();
        let n = match s.padding {
            Padding::MaxLength => s.max_length.max(real),
            Padding::Exact => real,
        };
        let mut ids = laid.ids;
        ids.resize(n, s.pad_id);
        let mut image: Vec<i64> = laid.image.into_iter().map(i64::from).collect();
        image.resize(n, 0);
        let mask: Vec<i64> = (0..n).map(|i| (i < real) as i64).collect();
        let p = s.position_ids;
        let positions = (0..n as i64).map(|i| if i < real as i64 { p.start + i } else { p.pad.unwrap_or(p.start + i) });
        Tokens {
            input_ids: Ints::new(ids, s.dtype),
            attention_mask: Ints::new(mask, s.dtype),
            position_ids: Ints::new(positions.collect(), s.dtype),
            image_embeds_position_mask: Ints::new(image, s.dtype),
            truncated: laid.truncated,
        }
    }
}

/// The v1 layout: BOS, the image span, the prompt's ids (cut to fit), EOS.
fn span(s: &TextInput, text_ids: impl Iterator<Item = i64>) -> Laid {
    let mut ids = Vec::with_capacity(s.max_length);
    let mut image = Vec::with_capacity(s.max_length);
    ids.extend(s.bos_id);
    image.extend(s.bos_id.map(|_| false));
    if let Some(span) = s.image_span {
        ids.push(span.start_id);
        image.push(false);
        ids.extend(std::iter::repeat_n(span.token_id, span.length));
        image.extend(std::iter::repeat_n(true, span.length));
        ids.push(span.end_id);
        image.push(false);
    }
    let room = s.max_length - ids.len() - s.eos_id.is_some() as usize;
    let mut truncated = false;
    for (k, id) in text_ids.enumerate() {
        if k >= room {
            truncated = true;
            break;
        }
        ids.push(id);
        image.push(false);
    }
    ids.extend(s.eos_id);
    image.extend(s.eos_id.map(|_| false));
    Laid { ids, image, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ImageSpan, Manifest, PositionIds, TextRoles};

    fn spec(max_length: usize) -> TextInput {
        TextInput {
            tokenizer: "t.json".into(),
            layout: TextLayout::Span,
            prompt: "<grounding> {instruction}".into(),
            strip: false,
            padding: Padding::MaxLength,
            max_length,
            dtype: IdType::Int64,
            pad_id: 1,
            roles: TextRoles { input_ids: "input_ids".into(), ..Default::default() },
            position_ids: PositionIds { start: 2, pad: Some(1) },
            kosmos2: None,
            bos_id: Some(0),
            eos_id: Some(2),
            image_span: Some(ImageSpan { start_id: 4, token_id: 7, end_id: 5, length: 3 }),
        }
    }

    fn finish(s: TextInput, laid: Laid) -> Tokens {
        let tokenizer = Tokenizer::new(tokenizers::models::wordlevel::WordLevel::default());
        TextEncoder { spec: s, tokenizer }.finish(laid)
    }

    #[test]
    fn span_layout_marks_the_image_span_and_pads() {
        let s = spec(12);
        let t = finish(s.clone(), span(&s, [6, 20, 21].into_iter()));
        assert_eq!(t.input_ids.to_i64(), vec![0, 4, 7, 7, 7, 5, 6, 20, 21, 2, 1, 1]);
        assert_eq!(t.image_embeds_position_mask.to_i64(), vec![0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(t.attention_mask.to_i64(), vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
        // RoBERTa-style positions: real tokens from 2, padding at the pad id.
        assert_eq!(t.position_ids.to_i64(), vec![2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 1]);
        assert!(!t.truncated);
    }

    #[test]
    fn exact_padding_and_int32_ids_leave_no_pad_to_read() {
        let mut s = spec(12);
        s.padding = Padding::Exact;
        s.dtype = IdType::Int32;
        s.position_ids = PositionIds { start: 0, pad: None };
        let t = finish(s.clone(), span(&s, [6].into_iter()));
        assert_eq!(t.input_ids, Ints::I32(vec![0, 4, 7, 7, 7, 5, 6, 2]));
        assert_eq!(t.position_ids, Ints::I32((0..8).collect()));
        assert!(t.attention_mask.to_i64().iter().all(|&m| m == 1));
    }

    #[test]
    fn long_text_is_truncated_keeping_eos() {
        let s = spec(10);
        let t = finish(s.clone(), span(&s, 100..200));
        assert_eq!(t.input_ids.len(), 10);
        assert_eq!(*t.input_ids.to_i64().last().unwrap(), 2);
        assert!(t.truncated);
        assert!(t.attention_mask.to_i64().iter().all(|&m| m == 1));
    }

    #[test]
    fn stand_in_tokenizer_lowercases_and_maps_unknown_words() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let m = Manifest::load(&dir.join("hybrid.json")).unwrap();
        let enc = TextEncoder::new(m.manifest.texts[0].clone(), &m.tokenizer_paths[0]).unwrap();
        let t = enc.encode("STOP near the Zebra").unwrap();
        let text: Vec<i64> = t.input_ids.to_i64().into_iter().skip(1 + 66).take(5).collect();
        // <grounding>=6, stop=8, near=..., the=..., zebra=<unk>=3
        assert_eq!(text[0], 6);
        assert_eq!(text[1], 8);
        assert_eq!(text[4], 3);
        assert_eq!(t.image_embeds_position_mask.to_i64().iter().sum::<i64>(), 64);
    }
}

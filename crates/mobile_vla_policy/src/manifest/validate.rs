//! What a manifest must satisfy on its own, before any graph is opened.
//!
//! Owns the rules between a manifest's parts (stages, images, texts, state,
//! action); each error names the key. Matching the manifest with the real
//! graphs is `contract`'s.

use super::{ActionStep, Manifest, StageRun, TextInput, TextLayout};

impl Manifest {
    pub fn validate(&self) -> Result<(), String> {
        if self.stages.is_empty() || !self.stages.iter().any(|s| s.run == StageRun::PerFrame) {
            return Err("stages: at least one stage must run per_frame".into());
        }
        for (i, s) in self.stages.iter().enumerate() {
            if self.stages[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("stages[{i}].name: '{}' is used twice", s.name));
            }
            if s.providers.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!("stages[{i}].providers: an empty list (leave it out to use the policy's)"));
            }
        }
        if self.images.is_empty() {
            return Err("images: a policy needs at least one image input".into());
        }
        for (i, img) in self.images.iter().enumerate() {
            img.spec.validate().map_err(|e| format!("images[{i}] ('{}'): {e}", img.input))?;
        }
        let a = &self.action;
        match (a.step, a.period_s, a.blend) {
            (ActionStep::Play, Some(p), _) if !(p.is_finite() && p > 0.0 && p <= 10.0) => {
                return Err(format!("action.period_s {p} must be a duration in (0, 10] s"))
            }
            (ActionStep::Play, None, _) => {
                return Err("action.step play needs action.period_s (seconds between chunk steps)".into())
            }
            (ActionStep::Play, _, Some(m)) if !(m.is_finite() && m >= 0.0) => {
                return Err(format!("action.blend {m} must be finite and >= 0 (ACT's m)"))
            }
            (ActionStep::First | ActionStep::Last, p, b) if p.is_some() || b.is_some() => {
                return Err("action.period_s and action.blend are for step: play".into())
            }
            _ => {}
        }
        for (i, t) in self.texts.iter().enumerate() {
            t.validate().map_err(|e| format!("texts[{i}] ('{}'): {e}", t.roles.input_ids))?;
        }
        for s in &self.state {
            if s.shape.is_empty() || s.shape.contains(&0) {
                return Err(format!("state '{}' has an empty shape {:?}", s.input, s.shape));
            }
        }
        for (i, w) in self.windows.iter().enumerate() {
            if w.length == 0 || w.length > 64 {
                return Err(format!("windows[{i}] ('{}'): length {} must be in 1..=64", w.input, w.length));
            }
            if w.from == w.input {
                return Err(format!("windows[{i}] ('{}'): a window cannot take its own input", w.input));
            }
        }
        let names = self.fed_names();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("tensor '{n}' is fed by two roles"));
            }
        }
        Ok(())
    }
}

impl TextInput {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_length == 0 || self.max_length > 1 << 16 {
            return Err(format!("max_length {} must be in 1..=65536", self.max_length));
        }
        if !self.prompt.contains("{instruction}") {
            return Err("prompt must contain {instruction}".into());
        }
        match self.layout {
            TextLayout::Span => {
                let fixed = self.bos_id.is_some() as usize
                    + self.eos_id.is_some() as usize
                    + self.image_span.map_or(0, |s| s.length + 2);
                if self.max_length <= fixed {
                    return Err(format!(
                        "max_length {} leaves no room for text after {fixed} fixed tokens",
                        self.max_length
                    ));
                }
                if self.image_span.is_some() && self.roles.image_embeds_position_mask.is_none() {
                    return Err("image_span needs image_embeds_position_mask".into());
                }
            }
            TextLayout::Kosmos2 => {
                let Some(k) = &self.kosmos2 else {
                    return Err("layout kosmos2 needs a 'kosmos2' object (bos_token, boi_token, eoi_token, \
                                num_image_tokens, first_image_token_id)"
                        .into());
                };
                if self.max_length <= k.num_image_tokens + 3 {
                    return Err(format!(
                        "max_length {} leaves no room for text after <s><image>, {} image tokens and </image>",
                        self.max_length, k.num_image_tokens
                    ));
                }
            }
            TextLayout::Plain => {
                if self.kosmos2.is_some() || self.roles.image_embeds_position_mask.is_some() {
                    return Err("layout plain has no image tokens: drop 'kosmos2' and image_embeds_position_mask \
                                (use layout kosmos2)"
                        .into());
                }
            }
        }
        Ok(())
    }
}

//! What a model wants its image input to look like, and the geometry that follows from it.
//!
//! Owns [`ImageSpec`] (size, resize mode, filter, normalisation, layout,
//! element type), its validation, and where in a frame of a given size each
//! input's pixels come from and land ([`ImageSpec::geometry`]), as the Hugging
//! Face processors and PIL define it. It touches no pixels.

use serde::Deserialize;

use crate::pillow::{Axis, Filter};

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Scale the whole frame to the model size (aspect ratio not kept).
    Stretch,
    /// Crop the centre to the model's aspect ratio, then scale.
    CenterCrop,
    /// Scale the short side to `shortest_edge`, then crop the centre (CLIP's processor).
    ShortestEdge,
    /// Fit inside the model size, aspect ratio kept, padded with `pad` (`PIL.ImageOps.pad`).
    Letterbox,
}

fn default_filter() -> Filter {
    Filter::Bilinear
}

fn yes() -> bool {
    true
}

/// What the model wants its image to look like.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub width: u32,
    pub height: u32,
    pub resize: ResizeMode,
    /// For `shortest_edge`: the short side after resizing (default: the larger of width and height).
    #[serde(default)]
    pub shortest_edge: Option<u32>,
    /// `nearest`, `bilinear` or `bicubic`, as `PIL.Image.Resampling` defines them.
    #[serde(default = "default_filter")]
    pub filter: Filter,
    /// Widen the kernel on downscale, as PIL always does. `false` is the
    /// half-pixel bilinear sampling of OpenCV and PyTorch (bilinear only).
    #[serde(default = "yes")]
    pub antialias: bool,
    /// Fill colour (RGB, 0..255) around a letterboxed frame.
    #[serde(default)]
    pub pad: [u8; 3],
    pub channel_order: ChannelOrder,
    pub layout: Layout,
    /// Multiplies the 0..255 pixel value first (1/255 gives [0, 1]).
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub dtype: DType,
}

impl ImageSpec {
    pub fn shape(&self) -> [usize; 4] {
        let (h, w) = (self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 || self.width > 4096 || self.height > 4096 {
            return Err(format!("image size {}x{} must be within 1..=4096", self.width, self.height));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(format!("image scale {} must be finite and > 0", self.scale));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("image mean {:?} / std {:?} must be finite with std > 0", self.mean, self.std));
        }
        if !self.antialias && self.filter == Filter::Bicubic {
            return Err("image filter 'bicubic' needs antialias: true (PIL's bicubic); without antialiasing \
                        only 'bilinear' (half-pixel, as OpenCV) and 'nearest' are supported"
                .into());
        }
        match (self.resize, self.shortest_edge) {
            (ResizeMode::ShortestEdge, Some(s)) if s < self.width.max(self.height) || s > 8192 => {
                return Err(format!(
                    "image shortest_edge {s} must be at least the crop size {}x{} (and at most 8192)",
                    self.width, self.height
                ))
            }
            (ResizeMode::ShortestEdge, _) => {}
            (_, Some(_)) => return Err("image shortest_edge is only for resize: shortest_edge".into()),
            _ => {}
        }
        Ok(())
    }

    /// The largest DCT scale denominator (8, 4, 2 or 1) at which a `sw x sh`
    /// frame still gives this input at least one source pixel per output
    /// pixel along both axes of the region it resizes (PIL's `draft` rule,
    /// `scale <= min(w // out_w, h // out_h)`, for any resize mode).
    pub fn dct_denominator(&self, sw: u32, sh: u32) -> u32 {
        let (x, y, _, _) = self.geometry(sw, sh);
        [8, 4, 2].into_iter().find(|a| a * x.full <= x.len && a * y.full <= y.len).unwrap_or(1)
    }

    /// Which part of a `sw x sh` frame is resized to what, and where the
    /// result sits in the `width x height` output: `(x, y, dst_x, dst_y)`.
    pub(crate) fn geometry(&self, sw: u32, sh: u32) -> (Axis, Axis, u32, u32) {
        let (ow, oh) = (self.width, self.height);
        match self.resize {
            ResizeMode::Stretch => (Axis::whole(0, sw, ow), Axis::whole(0, sh, oh), 0, 0),
            ResizeMode::CenterCrop => {
                // Compare sw/sh with ow/oh without floating point.
                if sw as u64 * oh as u64 > sh as u64 * ow as u64 {
                    let cw = ((sh as u64 * ow as u64) / oh as u64).max(1) as u32;
                    (Axis::whole((sw - cw) / 2, cw, ow), Axis::whole(0, sh, oh), 0, 0)
                } else {
                    let ch = ((sw as u64 * oh as u64) / ow as u64).max(1) as u32;
                    (Axis::whole(0, sw, ow), Axis::whole((sh - ch) / 2, ch, oh), 0, 0)
                }
            }
            ResizeMode::ShortestEdge => {
                let s = self.shortest_edge.unwrap_or(ow.max(oh));
                let (short, long) = (sw.min(sh), sw.max(sh));
                // transformers' get_resize_output_image_size: int(size * long / short).
                let new_long = ((s as f64 * long as f64 / short as f64) as u32).max(s);
                let (rw, rh) = if sw <= sh { (s, new_long) } else { (new_long, s) };
                let x = Axis { start: 0, len: sw, full: rw, keep_start: (rw - ow) / 2, keep: ow };
                let y = Axis { start: 0, len: sh, full: rh, keep_start: (rh - oh) / 2, keep: oh };
                (x, y, 0, 0)
            }
            ResizeMode::Letterbox => {
                let (im, dest) = (sw as f64 / sh as f64, ow as f64 / oh as f64);
                if im == dest {
                    (Axis::whole(0, sw, ow), Axis::whole(0, sh, oh), 0, 0)
                } else if im > dest {
                    let nh = (sh as f64 / sw as f64 * ow as f64).round_ties_even().clamp(0.0, oh as f64) as u32;
                    let dy = ((oh - nh) as f64 * 0.5).round_ties_even() as u32;
                    (Axis::whole(0, sw, ow), Axis::whole(0, sh, nh), 0, dy)
                } else {
                    let nw = (sw as f64 / sh as f64 * oh as f64).round_ties_even().clamp(0.0, ow as f64) as u32;
                    let dx = ((ow - nw) as f64 * 0.5).round_ties_even() as u32;
                    (Axis::whole(0, sw, nw), Axis::whole(0, sh, oh), dx, 0)
                }
            }
        }
    }
}

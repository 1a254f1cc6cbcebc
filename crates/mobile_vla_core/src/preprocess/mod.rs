//! Camera frame -> model input tensors, into buffers reused frame to frame.
//!
//! Owns the [`ImageSpec`] a model's image input asks for and the pipeline
//! that meets it: frame validation and decoding (`decode`), resizing
//! (`pillow`: exactly what PIL and the Hugging Face processors do, or
//! `bilinear`: the fast half-pixel sampling without antialiasing), then per
//! channel `(v * scale - mean) / std` in the model's channel order, NCHW or
//! NHWC, f32 or f16. One frame feeds every image input of a policy (a
//! Kosmos-2 + CLIP hybrid has two, each with its own preprocessing) and is
//! decoded once. A frame that fails any check is rejected with a
//! [`FrameError`]; nothing partial ever reaches a model. It knows nothing of
//! ROS or ONNX Runtime: the node passes plain bytes and the encoding string.
//!
//! The antialiased filters run Pillow's exact arithmetic by default; with
//! [`Resampling::Simd`] they run in 8-bit SIMD (`simd`), close to PIL but not
//! equal to it.
//!
//! Geometry, as the processors define it:
//! - `stretch`: the whole frame to `width x height`;
//! - `center_crop`: crop the centre to the target aspect ratio, then resize;
//! - `shortest_edge`: resize so the short side is `shortest_edge` (the long
//!   side `int(shortest_edge * long / short)`), then take the centre
//!   `width x height` (`top = (h - height) // 2`), as CLIP's processor does;
//! - `letterbox`: fit inside `width x height` keeping the aspect ratio and pad
//!   with `pad`, as `PIL.ImageOps.pad` does (Python's rounding, centred).
//!
//! Raw encodings (sensor_msgs/image_encodings): `rgb8`, `bgr8`, `rgba8`,
//! `bgra8` (alpha dropped, as cv_bridge does), `mono8`, `yuv422` (UYVY, as ROS
//! defines it) and `yuv422_yuy2` (YUYV, what most USB cameras send). YUV
//! follows cv_bridge (OpenCV's `COLOR_YUV2RGB_UYVY` / `_YUY2`). Compressed:
//! JPEG (libjpeg-turbo, as PIL decodes it) and PNG, refused from the header
//! when too large or not 8-bit; a JPEG must be complete. With
//! [`JpegScaling::Reduced`] a JPEG is decoded at the smallest DCT scale
//! (1/2, 1/4, 1/8) that still leaves every image input at least as many
//! source pixels as it resizes to, as PIL's `Image.draft` picks it.

mod bilinear;
mod decode;
pub mod pillow;
mod simd;

use std::fmt;

use half::{f16, slice::HalfFloatSliceExt};
use serde::{Deserialize, Serialize};

pub use decode::RawFrame;
use decode::{Decoder, Source};
pub use pillow::Filter;
use pillow::{Axis, Packed, Resampler};
use simd::SimdResampler;

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

/// How JPEG frames are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JpegScaling {
    /// Every pixel, as `PIL.Image.open` (and so the Hugging Face processors) decode it.
    #[default]
    Full,
    /// At the smallest DCT scale that covers every image input (`PIL.Image.draft`):
    /// 2-4x less decoding for a 1080p frame, at the cost of exactness with the processors.
    Reduced,
}

/// How the antialiased filters (Pillow's bilinear and bicubic) are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resampling {
    /// Pillow's own 22-bit fixed-point arithmetic: the bytes `PIL.Image.resize`
    /// (and so the Hugging Face processors) produce.
    #[default]
    Exact,
    /// 8-bit SIMD (fast_image_resize: AVX2, SSE4.1 or NEON) with Pillow's
    /// kernels, pass order and geometry and 16-bit coefficients: within two
    /// grey levels of PIL, under 1% of the values differing on camera frames.
    Simd,
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
    fn geometry(&self, sw: u32, sh: u32) -> (Axis, Axis, u32, u32) {
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

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnsupportedEncoding(String),
    Empty { width: u32, height: u32 },
    TooLarge { width: u32, height: u32, max_width: u32, max_height: u32 },
    StepTooSmall { step: u32, min: u64 },
    DataTooShort { len: usize, need: u64 },
    OddWidthForYuv { width: u32 },
    UnsupportedFormat(String),
    Decode(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnsupportedEncoding(e) => write!(
                f,
                "unsupported encoding '{e}' (supported: rgb8, bgr8, rgba8, bgra8, mono8, yuv422, yuv422_yuy2)"
            ),
            FrameError::Empty { width, height } => write!(f, "empty frame {width}x{height}"),
            FrameError::TooLarge { width, height, max_width, max_height } => {
                write!(f, "frame {width}x{height} exceeds the limit {max_width}x{max_height}")
            }
            FrameError::StepTooSmall { step, min } => {
                write!(f, "step {step} is smaller than width*bytes_per_pixel = {min}")
            }
            FrameError::DataTooShort { len, need } => write!(f, "data has {len} bytes, step*height needs {need}"),
            FrameError::OddWidthForYuv { width } => write!(f, "YUV 4:2:2 frame width {width} is odd"),
            FrameError::UnsupportedFormat(s) => write!(f, "unsupported compressed format '{s}' (supported: jpeg, png)"),
            FrameError::Decode(e) => write!(f, "corrupt compressed image: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The prepared tensor, borrowed from the preprocessor's buffer.
pub enum Tensor<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// Writes normalised pixels into the tensor, at an offset in the output
/// (letterbox), in the tensor's layout and channel order.
pub(super) struct Writer<'a> {
    out: &'a mut [f32],
    layout: Layout,
    width: usize,
    plane: usize,
    dx: usize,
    dy: usize,
    /// Output channel c = source channel `pick[c]` * `mul[c]` + `add[c]`.
    pick: [usize; 3],
    mul: [f32; 3],
    add: [f32; 3],
}

impl Writer<'_> {
    /// `sample(s)` gives source channel `s` (0 red, 1 green, 2 blue) in 0..255.
    #[inline(always)]
    pub(super) fn put(&mut self, x: usize, y: usize, sample: impl Fn(usize) -> f32) {
        let i = (y + self.dy) * self.width + x + self.dx;
        // Spelled out: `array::from_fn` here kept the sampling closure out of line (6x slower).
        let [c0, c1, c2] = self.pick;
        let v0 = sample(c0) * self.mul[0] + self.add[0];
        let v1 = sample(c1) * self.mul[1] + self.add[1];
        let v2 = sample(c2) * self.mul[2] + self.add[2];
        match self.layout {
            Layout::Nchw => {
                self.out[i] = v0;
                self.out[self.plane + i] = v1;
                self.out[2 * self.plane + i] = v2;
            }
            Layout::Nhwc => {
                let o = &mut self.out[3 * i..3 * i + 3];
                (o[0], o[1], o[2]) = (v0, v1, v2);
            }
        }
    }
}

impl Writer<'_> {
    /// One row of `row.len() / 3` pixels (RGB interleaved, 0..255) at output row `y`.
    pub(super) fn put_row(&mut self, y: usize, row: &[f32]) {
        let n = row.len() / 3;
        let start = (y + self.dy) * self.width + self.dx;
        match self.layout {
            Layout::Nchw => {
                for c in 0..3 {
                    let (pick, mul, add) = (self.pick[c], self.mul[c], self.add[c]);
                    let plane = &mut self.out[c * self.plane + start..c * self.plane + start + n];
                    for (o, px) in plane.iter_mut().zip(row.chunks_exact(3)) {
                        *o = px[pick] * mul + add;
                    }
                }
            }
            Layout::Nhwc => {
                let dst = &mut self.out[3 * start..3 * (start + n)];
                for (o, px) in dst.chunks_exact_mut(3).zip(row.chunks_exact(3)) {
                    for c in 0..3 {
                        o[c] = px[self.pick[c]] * self.mul[c] + self.add[c];
                    }
                }
            }
        }
    }
}

/// One image input of a model: its spec and buffers.
struct ImagePipeline {
    spec: ImageSpec,
    bilinear: bilinear::Bilinear,
    pillow: Resampler,
    /// Some for `Resampling::Simd`.
    simd: Option<SimdResampler>,
    /// Pillow's 8-bit output, before normalisation.
    resized: Vec<u8>,
    f32_out: Vec<f32>,
    f16_out: Vec<f16>,
    /// The geometry of the last frame size, and whether the padding is filled.
    last: Option<(u32, u32)>,
}

impl ImagePipeline {
    fn new(spec: ImageSpec) -> Self {
        let n = 3 * spec.width as usize * spec.height as usize;
        Self {
            f32_out: vec![0.0; n],
            f16_out: if spec.dtype == DType::F16 { vec![f16::ZERO; n] } else { Vec::new() },
            spec,
            bilinear: Default::default(),
            pillow: Default::default(),
            simd: None,
            resized: Vec::new(),
            last: None,
        }
    }

    fn uses_pillow(&self) -> bool {
        self.spec.antialias || self.spec.filter == Filter::Nearest
    }

    fn writer(&mut self, dx: u32, dy: u32) -> Writer<'_> {
        let s = &self.spec;
        let order = match s.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let (w, h) = (s.width as usize, s.height as usize);
        Writer {
            layout: s.layout,
            width: w,
            plane: w * h,
            dx: dx as usize,
            dy: dy as usize,
            pick: order,
            mul: std::array::from_fn(|c| s.scale / s.std[order[c]]),
            add: std::array::from_fn(|c| -s.mean[order[c]] / s.std[order[c]]),
            out: &mut self.f32_out,
        }
    }

    /// Fills the tensor from `src`; `rgb` is the same frame as packed RGB8
    /// when `src` is YUV and this pipeline resizes with Pillow.
    fn fill(&mut self, src: &Source<'_>, rgb: Option<&[u8]>) {
        let (x, y, dx, dy) = self.spec.geometry(src.width, src.height);
        // Whether the image part fills the tensor: a letterbox, even one too
        // thin to paste a row into, leaves the rest to the padding.
        let covers = x.keep == self.spec.width && y.keep == self.spec.height;
        if !covers && self.last != Some((src.width, src.height)) {
            // Letterbox: the padding, once per frame size (the image part is rewritten every frame).
            let (pad, ow, oh) = (self.spec.pad, self.spec.width as usize, self.spec.height as usize);
            let mut w = self.writer(0, 0);
            for yy in 0..oh {
                for xx in 0..ow {
                    w.put(xx, yy, |s| pad[s] as f32);
                }
            }
        }
        self.last = Some((src.width, src.height));
        if x.keep == 0 || y.keep == 0 {
            // A letterbox too thin to hold one row: PIL pastes nothing.
        } else if self.uses_pillow() {
            let (kw, kh) = (x.keep as usize, y.keep as usize);
            let mut resized = std::mem::take(&mut self.resized);
            resized.resize(kw * kh * 3, 0);
            let (filter, pillow, simd) = (self.spec.filter, &mut self.pillow, self.simd.as_mut());
            match (rgb, src.rgb_offsets(), src.bytes_per_pixel()) {
                (Some(rgb), _, _) => {
                    let p = Packed::<3> { data: rgb, step: src.width as usize * 3, rgb: [0, 1, 2] };
                    resample(p, x, y, filter, pillow, simd, &mut resized)
                }
                (None, Some(o), 1) => resample(
                    Packed::<1> { data: src.data, step: src.step, rgb: o },
                    x,
                    y,
                    filter,
                    pillow,
                    simd,
                    &mut resized,
                ),
                (None, Some(o), 3) => resample(
                    Packed::<3> { data: src.data, step: src.step, rgb: o },
                    x,
                    y,
                    filter,
                    pillow,
                    simd,
                    &mut resized,
                ),
                (None, Some(o), _) => resample(
                    Packed::<4> { data: src.data, step: src.step, rgb: o },
                    x,
                    y,
                    filter,
                    pillow,
                    simd,
                    &mut resized,
                ),
                (None, None, _) => unreachable!("YUV frames are converted to RGB before Pillow resizing"),
            }
            let mut w = self.writer(dx, dy);
            for (i, p) in resized.chunks_exact(3).enumerate() {
                w.put(i % kw, i / kw, |s| p[s] as f32);
            }
            self.resized = resized;
        } else {
            let mut bilinear = std::mem::take(&mut self.bilinear);
            bilinear.fill(src, x, y, &mut self.writer(dx, dy));
            self.bilinear = bilinear;
        }
        if self.spec.dtype == DType::F16 {
            // Vectorised (F16C) where the CPU has it.
            self.f16_out.convert_from_f32_slice(&self.f32_out);
        }
    }

    fn tensor(&self) -> Tensor<'_> {
        match self.spec.dtype {
            DType::F32 => Tensor::F32(&self.f32_out),
            DType::F16 => Tensor::F16(&self.f16_out),
        }
    }
}

/// The SIMD resampler where it is chosen and handles the case, else Pillow's exact one.
fn resample<const N: usize>(
    src: Packed<'_, N>,
    x: Axis,
    y: Axis,
    filter: Filter,
    pillow: &mut Resampler,
    simd: Option<&mut SimdResampler>,
    out: &mut [u8],
) {
    if !simd.is_some_and(|s| s.resize(src, x, y, filter, out)) {
        pillow.resize(src, x, y, filter, out)
    }
}

/// Turns frames into every image input of a model. Holds every buffer it
/// needs, so once warm it allocates nothing per frame (for compressed frames:
/// while their size stays the same; with [`Resampling::Simd`], but for
/// fast_image_resize's coefficient tables, which it builds every call).
///
/// What it keeps between frames never changes the next frame's tensors: a
/// frame is checked (and decoded) before any tensor is written, so a refused
/// one leaves them as the last good frame made them; every part of a tensor is
/// rewritten for each frame but a letterbox's padding, which is redrawn
/// whenever the frame size changes; the resamplers' coefficient tables are
/// keyed by the geometry they were made for. A good frame after any input
/// gives bit for bit what a fresh preprocessor gives (the `diff-*` targets
/// of `mobile_vla_fuzz`).
pub struct Preprocessor {
    decoder: Decoder,
    jpeg_scaling: JpegScaling,
    /// The frame as packed RGB8, for YUV frames resized the Pillow way.
    yuv_rgb: Vec<u8>,
    images: Vec<ImagePipeline>,
}

impl Preprocessor {
    pub fn new(specs: Vec<ImageSpec>, max_width: u32, max_height: u32) -> Self {
        Self {
            decoder: Decoder { max_width, max_height, decoded: Vec::new(), jpeg: None },
            jpeg_scaling: JpegScaling::Full,
            yuv_rgb: Vec::new(),
            images: specs.into_iter().map(ImagePipeline::new).collect(),
        }
    }

    pub fn set_jpeg_scaling(&mut self, scaling: JpegScaling) {
        self.jpeg_scaling = scaling;
    }

    pub fn set_resampling(&mut self, resampling: Resampling) {
        for img in &mut self.images {
            img.simd = (resampling == Resampling::Simd).then(SimdResampler::default);
        }
    }

    /// Image input `i`'s tensor from the last successful `raw` or `compressed` call.
    pub fn tensor(&self, i: usize) -> Tensor<'_> {
        self.images[i].tensor()
    }

    /// Validates and converts a raw `sensor_msgs/Image` into every image input.
    pub fn raw(&mut self, f: &RawFrame<'_>) -> Result<(), FrameError> {
        let src = self.decoder.raw(f)?;
        let rgb = if src.is_yuv() && self.images.iter().any(ImagePipeline::uses_pillow) {
            src.yuv_to_rgb8(&mut self.yuv_rgb);
            Some(&self.yuv_rgb[..])
        } else {
            None
        };
        for img in &mut self.images {
            img.fill(&src, rgb.filter(|_| img.uses_pillow()));
        }
        Ok(())
    }

    /// Validates, decodes and converts a `sensor_msgs/CompressedImage`.
    /// `format` is the message's format field (`jpeg`, `png`, `rgb8; jpeg compressed bgr8`, ...).
    pub fn compressed(&mut self, format: &str, data: &[u8]) -> Result<(), FrameError> {
        let (scaling, images) = (self.jpeg_scaling, &self.images);
        let denom = |w, h| match scaling {
            JpegScaling::Full => 1,
            JpegScaling::Reduced => images.iter().map(|i| i.spec.dct_denominator(w, h)).min().unwrap_or(1),
        };
        let src = self.decoder.compressed(format, data, denom)?;
        for img in &mut self.images {
            img.fill(&src, None);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::decode::yuv_to_rgb;
    use super::*;
    use std::io::Cursor;

    fn spec(w: u32, h: u32) -> ImageSpec {
        ImageSpec {
            width: w,
            height: h,
            resize: ResizeMode::Stretch,
            shortest_edge: None,
            filter: Filter::Bilinear,
            antialias: false,
            pad: [0; 3],
            channel_order: ChannelOrder::Rgb,
            layout: Layout::Nchw,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            dtype: DType::F32,
        }
    }

    fn f32s(t: Tensor<'_>) -> Vec<f32> {
        match t {
            Tensor::F32(v) => v.to_vec(),
            Tensor::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    fn raw(p: &mut Preprocessor, f: &RawFrame<'_>) -> Vec<f32> {
        p.raw(f).unwrap();
        f32s(p.tensor(0))
    }

    fn frame<'a>(w: u32, h: u32, enc: &'a str, step: u32, data: &'a [u8]) -> RawFrame<'a> {
        RawFrame { width: w, height: h, encoding: enc, step, data }
    }

    #[test]
    fn the_dct_scale_is_pils_draft_rule_for_every_resize_mode() {
        let s = spec(224, 224);
        // PIL: scale = min(w // 224, h // 224), rounded down to 8, 4, 2 or 1.
        assert_eq!(s.dct_denominator(1920, 1080), 4);
        assert_eq!(s.dct_denominator(1280, 720), 2);
        assert_eq!(s.dct_denominator(640, 480), 2);
        assert_eq!(s.dct_denominator(447, 1000), 1);
        assert_eq!(s.dct_denominator(4096, 4096), 8);
        // CLIP: the short side resized to 224, whatever the long side.
        let clip = ImageSpec { resize: ResizeMode::ShortestEdge, ..spec(224, 224) };
        assert_eq!(clip.dct_denominator(3840, 900), 4);
        // A letterbox fits the long side: a wide frame may shrink further than a stretch allows.
        let boxed = ImageSpec { resize: ResizeMode::Letterbox, ..spec(224, 224) };
        assert_eq!(boxed.dct_denominator(1920, 480), 8);
        assert_eq!(s.dct_denominator(1920, 480), 2);
    }

    #[test]
    fn identity_size_copies_pixels_into_planes() {
        let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
        let data = [10, 20, 30, 40, 50, 60];
        let out = raw(&mut p, &frame(2, 1, "rgb8", 6, &data));
        assert_eq!(out, vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]);
    }

    #[test]
    fn encodings_agree_on_the_same_colours() {
        let rgb = [10u8, 20, 30, 200, 150, 100];
        let bgr = [30u8, 20, 10, 100, 150, 200];
        let rgba = [10u8, 20, 30, 255, 200, 150, 100, 255];
        let bgra = [30u8, 20, 10, 0, 100, 150, 200, 0];
        let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
        let want = raw(&mut p, &frame(2, 1, "rgb8", 6, &rgb));
        assert_eq!(raw(&mut p, &frame(2, 1, "bgr8", 6, &bgr)), want);
        assert_eq!(raw(&mut p, &frame(2, 1, "rgba8", 8, &rgba)), want);
        assert_eq!(raw(&mut p, &frame(2, 1, "bgra8", 8, &bgra)), want);
    }

    #[test]
    fn yuv_grey_is_grey_and_byte_orders_differ_correctly() {
        let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
        // UYVY: U Y0 V Y1; YUYV: Y0 U Y1 V. Neutral chroma (128) gives grey,
        // video range: (Y - 16) * 1.164, rounded (OpenCV: 50 -> 40, 90 -> 86).
        let uyvy = [128u8, 50, 128, 90];
        let yuyv = [50u8, 128, 90, 128];
        let a = raw(&mut p, &frame(2, 1, "yuv422", 4, &uyvy));
        assert_eq!(a, vec![40.0, 86.0, 40.0, 86.0, 40.0, 86.0]);
        let b = raw(&mut p, &frame(2, 1, "yuv422_yuy2", 4, &yuyv));
        assert_eq!(a, b);
        // Strong V (red difference) raises R and lowers G.
        let red = raw(&mut p, &frame(2, 1, "yuv422", 4, &[128, 100, 228, 100]));
        assert!(red[0] > 200.0 && red[2] < 100.0, "{red:?}");
    }

    #[test]
    fn row_padding_in_step_is_skipped() {
        let mut p = Preprocessor::new(vec![spec(1, 2)], 100, 100);
        let data = [1, 2, 3, 99, 99, 4, 5, 6, 99, 99];
        let out = raw(&mut p, &frame(1, 2, "rgb8", 5, &data));
        assert_eq!(out, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn normalisation_and_layout_and_channel_order() {
        let mut s = spec(1, 1);
        s.scale = 1.0 / 255.0;
        s.mean = [0.5, 0.25, 0.0];
        s.std = [0.5, 0.25, 1.0];
        s.channel_order = ChannelOrder::Bgr;
        s.layout = Layout::Nhwc;
        let mut p = Preprocessor::new(vec![s], 10, 10);
        let out = raw(&mut p, &frame(1, 1, "rgb8", 3, &[255, 0, 51]));
        // BGR order: b=0.2, g=(0-0.25)/0.25=-1, r=(1-0.5)/0.5=1
        let want = [0.2f32, -1.0, 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn bilinear_downscale_with_half_pixel_centres() {
        // 4x1 -> 2x1: samples at src x = 0.5 and 2.5.
        let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
        let data = [0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255];
        let out = raw(&mut p, &frame(4, 1, "rgb8", 12, &data));
        assert_eq!(&out[0..2], &[50.0, 227.5]);
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        let mut s = spec(1, 1);
        s.resize = ResizeMode::CenterCrop;
        let mut p = Preprocessor::new(vec![s], 100, 100);
        // 3x1 -> 1x1 with centre crop takes the middle pixel only.
        let out = raw(&mut p, &frame(3, 1, "mono8", 3, &[0, 77, 255]));
        assert_eq!(out, vec![77.0, 77.0, 77.0]);
    }

    #[test]
    fn f16_output_matches_f32_within_half_precision() {
        let mut s = spec(4, 4);
        s.scale = 1.0 / 255.0;
        s.dtype = DType::F16;
        let mut p = Preprocessor::new(vec![s], 100, 100);
        let data: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let half = raw(&mut p, &frame(8, 8, "rgb8", 24, &data));
        let full = p.images[0].f32_out.clone();
        for (h, f) in half.iter().zip(full) {
            assert!((h - f).abs() < 1e-3);
        }
    }

    type IsError = fn(&FrameError) -> bool;

    #[test]
    fn malformed_frames_are_refused() {
        let mut p = Preprocessor::new(vec![spec(2, 2)], 64, 64);
        let d = vec![0u8; 64 * 64 * 4];
        let cases: Vec<(RawFrame, IsError)> = vec![
            (frame(2, 2, "rgb16", 12, &d), |e| matches!(e, FrameError::UnsupportedEncoding(_))),
            (frame(0, 2, "rgb8", 0, &d), |e| matches!(e, FrameError::Empty { .. })),
            (frame(65, 2, "rgb8", 195, &d), |e| matches!(e, FrameError::TooLarge { .. })),
            (frame(4, 2, "rgb8", 11, &d), |e| matches!(e, FrameError::StepTooSmall { step: 11, min: 12 })),
            (frame(4, 4, "rgb8", 12, &d[..47]), |e| matches!(e, FrameError::DataTooShort { len: 47, need: 48 })),
            (frame(3, 2, "yuv422", 6, &d), |e| matches!(e, FrameError::OddWidthForYuv { .. })),
        ];
        for (f, is) in cases {
            let e = p.raw(&f).err().unwrap_or_else(|| panic!("{} accepted", f.encoding));
            assert!(is(&e), "{e}");
        }
    }

    fn encode(img: image::RgbImage, fmt: image::ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, fmt).unwrap();
        buf.into_inner()
    }

    #[test]
    fn yuv_video_range_ends_are_black_and_white() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(0, 128, 128), [0, 0, 0]);
    }

    /// A realistic camera frame: gradients and noise, so the scan is most of the file.
    fn photo_jpeg(w: u32, h: u32) -> Vec<u8> {
        let mut seed = 12345u32;
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = (seed >> 16) as u8 % 40;
            image::Rgb([(x * 255 / w) as u8 ^ n, ((y * 255 / h) as u8).wrapping_add(n), ((x + y) % 256) as u8])
        });
        encode(img, image::ImageFormat::Jpeg)
    }

    #[test]
    fn a_truncated_jpeg_with_an_end_marker_appended_is_refused() {
        let jpeg = photo_jpeg(640, 480);
        let mut p = Preprocessor::new(vec![spec(8, 8)], 4096, 4096);
        p.compressed("jpeg", &jpeg).unwrap();
        // Some encoders pad after the end marker: still complete.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0, 0, 0, 0]);
        p.compressed("jpeg", &padded).unwrap();
        for percent in [10, 30, 50, 60, 80, 95, 99] {
            let mut cut = jpeg[..jpeg.len() * percent / 100].to_vec();
            cut.extend_from_slice(&[0xFF, 0xD9]);
            let e = p.compressed("jpeg", &cut).err().unwrap_or_else(|| panic!("{percent} % + EOI decoded"));
            assert!(matches!(e, FrameError::Decode(_)), "{percent} %: {e}");
            let bare = &jpeg[..jpeg.len() * percent / 100];
            assert!(p.compressed("jpeg", bare).is_err(), "{percent} % without EOI");
        }
    }

    /// What a fresh preprocessor makes of `good` (a compressed frame).
    fn fresh(specs: &[ImageSpec], scaling: JpegScaling, good: &[u8]) -> Vec<Vec<f32>> {
        let mut p = Preprocessor::new(specs.to_vec(), 4096, 4096);
        p.set_jpeg_scaling(scaling);
        p.compressed("jpeg", good).unwrap();
        (0..specs.len()).map(|i| f32s(p.tensor(i))).collect()
    }

    #[test]
    fn a_good_jpeg_after_a_corrupt_one_gives_what_a_fresh_preprocessor_gives() {
        // The poisoning sequence found from outside: SOI, a few hundred
        // random bytes, EOI ("extraneous bytes before marker"), then good frames.
        let good = photo_jpeg(320, 240);
        let mut seed = 7u32;
        let mut corrupt = vec![0xFF, 0xD8];
        corrupt.extend((0..376).map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        }));
        corrupt.extend_from_slice(&[0xFF, 0xD9]);
        let mut cut = good[..good.len() / 2].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        let specs = [spec(16, 12), ImageSpec { antialias: true, filter: Filter::Bicubic, ..spec(40, 30) }];
        for scaling in [JpegScaling::Full, JpegScaling::Reduced] {
            let want = fresh(&specs, scaling, &good);
            let mut p = Preprocessor::new(specs.to_vec(), 4096, 4096);
            p.set_jpeg_scaling(scaling);
            for bad in [&corrupt[..], &cut[..], b"\xFF\xD8", &good[..100]] {
                assert!(p.compressed("jpeg", bad).is_err(), "{scaling:?}: a bad frame decoded");
                p.compressed("jpeg", &good).unwrap_or_else(|e| panic!("{scaling:?}: good after bad refused: {e}"));
                let got: Vec<_> = (0..specs.len()).map(|i| f32s(p.tensor(i))).collect();
                assert!(got == want, "{scaling:?}: good after bad differs from a fresh preprocessor");
            }
        }
        // A reduced-scale decode never leaks its scale into a full one.
        let want = fresh(&specs, JpegScaling::Full, &good);
        let mut p = Preprocessor::new(specs.to_vec(), 4096, 4096);
        p.set_jpeg_scaling(JpegScaling::Reduced);
        p.compressed("jpeg", &photo_jpeg(1280, 720)).unwrap();
        p.set_jpeg_scaling(JpegScaling::Full);
        p.compressed("jpeg", &good).unwrap();
        assert!((0..specs.len()).all(|i| f32s(p.tensor(i)) == want[i]));
    }

    #[test]
    fn a_letterbox_with_one_padding_row_pads_it_whatever_came_before() {
        // 5x4 into 4x4: 3 rows of image, and the one row of padding goes below
        // (PIL's round(0.5) = 0 rows above), so the offset is (0, 0).
        let s = ImageSpec { resize: ResizeMode::Letterbox, antialias: true, pad: [1, 2, 3], ..spec(4, 4) };
        let wide = vec![200u8; 5 * 4 * 3];
        let square = vec![50u8; 4 * 4 * 3];
        let mut fresh = Preprocessor::new(vec![s.clone()], 4096, 4096);
        let want = raw(&mut fresh, &frame(5, 4, "rgb8", 15, &wide));
        // NCHW planes of 16: the last row of each is the padding colour.
        for (c, pad) in [1.0, 2.0, 3.0].into_iter().enumerate() {
            assert_eq!(&want[c * 16 + 12..c * 16 + 16], &[pad; 4], "channel {c}");
            assert_eq!(&want[c * 16..c * 16 + 12], &[200.0; 12], "channel {c}");
        }
        let mut p = Preprocessor::new(vec![s], 4096, 4096);
        raw(&mut p, &frame(4, 4, "rgb8", 12, &square));
        assert_eq!(raw(&mut p, &frame(5, 4, "rgb8", 15, &wide)), want);
    }

    #[test]
    fn a_16_bit_png_is_refused_from_its_header() {
        let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(64, 64, image::Rgb([1000, 2000, 3000]));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        let mut p = Preprocessor::new(vec![spec(4, 4)], 4096, 4096);
        match p.compressed("png", buf.get_ref()) {
            Err(FrameError::UnsupportedFormat(why)) => assert!(why.contains("16 bits"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        assert!(p.decoder.decoded.capacity() < 64 * 64 * 6, "nothing was decoded");
        for color in [image::ColorType::L8, image::ColorType::La8, image::ColorType::Rgba8] {
            let mut buf = Cursor::new(Vec::new());
            image::DynamicImage::new(8, 8, color).write_to(&mut buf, image::ImageFormat::Png).unwrap();
            p.compressed("png", buf.get_ref()).unwrap_or_else(|e| panic!("{color:?}: {e}"));
        }
    }

    #[test]
    fn truncated_png_is_refused() {
        let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, (x ^ y) as u8]));
        let png = encode(img, image::ImageFormat::Png);
        let mut p = Preprocessor::new(vec![spec(4, 4)], 640, 480);
        p.compressed("png", &png).unwrap();
        for cut in [3, 2, 10, 100] {
            let truncated = &png[..png.len() - (png.len() / cut).max(1)];
            assert!(p.compressed("png", truncated).is_err(), "cut 1/{cut}");
        }
    }

    #[test]
    fn png_decodes_to_the_same_tensor_as_raw() {
        let img = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 7]));
        let mut p = Preprocessor::new(vec![spec(4, 3)], 100, 100);
        let raw = raw(&mut p, &frame(8, 6, "rgb8", 24, img.as_raw()));
        let png = {
            p.compressed("png", &encode(img, image::ImageFormat::Png)).unwrap();
            f32s(p.tensor(0))
        };
        assert_eq!(raw, png);
    }

    #[test]
    fn jpeg_decodes_and_corrupt_or_huge_jpeg_is_refused() {
        let img = image::RgbImage::from_fn(32, 32, |x, _| image::Rgb([(x * 8) as u8, 100, 100]));
        let jpeg = encode(img, image::ImageFormat::Jpeg);
        let mut p = Preprocessor::new(vec![spec(4, 4)], 16, 64);
        // 32 wide > max 16: refused from the header, before decoding.
        assert!(matches!(p.compressed("jpeg", &jpeg), Err(FrameError::TooLarge { .. })));
        let mut p = Preprocessor::new(vec![spec(4, 4)], 64, 64);
        p.compressed("jpeg", &jpeg).unwrap();
        for cut in [3, 2, 10] {
            let truncated = &jpeg[..jpeg.len() - jpeg.len() / cut];
            assert!(matches!(p.compressed("jpeg", truncated), Err(FrameError::Decode(_))), "cut 1/{cut}");
        }
        assert!(matches!(p.compressed("jpeg", b"not an image"), Err(FrameError::Decode(_))));
        assert!(matches!(p.compressed("tiff", b"II*\0"), Err(FrameError::UnsupportedFormat(_))));
    }

    #[test]
    fn warm_preprocessing_does_not_reallocate() {
        let mut p = Preprocessor::new(vec![spec(8, 8)], 100, 100);
        let data = vec![9u8; 16 * 16 * 3];
        p.raw(&frame(16, 16, "rgb8", 48, &data)).unwrap();
        let a = p.images[0].f32_out.as_ptr();
        for _ in 0..3 {
            p.raw(&frame(16, 16, "rgb8", 48, &data)).unwrap();
        }
        assert_eq!(a, p.images[0].f32_out.as_ptr());
    }

    #[test]
    fn shortest_edge_resizes_the_short_side_then_crops_the_centre() {
        // 8x4 -> short side 4 -> 8x4 (no resize), centre crop 4x4 = columns 2..6.
        let mut s = spec(4, 4);
        s.resize = ResizeMode::ShortestEdge;
        s.antialias = true;
        s.filter = Filter::Bicubic;
        let mut p = Preprocessor::new(vec![s.clone()], 100, 100);
        let data: Vec<u8> = (0..4).flat_map(|_| (0..8u8).flat_map(|x| [x * 10, 0, 0])).collect();
        let out = raw(&mut p, &frame(8, 4, "rgb8", 24, &data));
        assert_eq!(&out[..4], &[20.0, 30.0, 40.0, 50.0]);
        // Portrait: the crop is vertical, and the long side is int(4 * 9 / 6) = 6.
        let (x, y, _, _) = s.geometry(6, 9);
        assert_eq!((x.full, x.keep_start, y.full, y.keep_start, y.keep), (4, 0, 6, 1, 4));
        s.shortest_edge = Some(3);
        assert!(s.validate().unwrap_err().contains("shortest_edge"));
    }

    #[test]
    fn letterbox_pads_as_imageops_pad_rounds() {
        let mut s = spec(4, 4);
        s.resize = ResizeMode::Letterbox;
        s.antialias = true;
        s.pad = [255, 0, 0];
        // 8x2 into 4x4: height round(2/8*4) = 1, offset round(3 * 0.5) = 2 (ties to even).
        let (x, y, dx, dy) = s.geometry(8, 2);
        assert_eq!((x.keep, y.keep, dx, dy), (4, 1, 0, 2));
        let mut p = Preprocessor::new(vec![s], 100, 100);
        let out = raw(&mut p, &frame(8, 2, "mono8", 8, &[9; 16]));
        let red = &out[..16];
        assert_eq!(red.iter().filter(|v| **v == 255.0).count(), 12, "{red:?}");
        assert_eq!(&red[8..12], &[9.0; 4]);
    }

    #[test]
    fn several_inputs_share_one_decoded_frame() {
        let mut a = spec(2, 2);
        a.antialias = true;
        a.filter = Filter::Bicubic;
        let mut b = spec(3, 3);
        b.dtype = DType::F16;
        let mut p = Preprocessor::new(vec![a, b], 64, 64);
        let img = image::RgbImage::from_fn(12, 12, |x, _| image::Rgb([(x * 20) as u8, 50, 50]));
        p.compressed("png", &encode(img, image::ImageFormat::Png)).unwrap();
        assert_eq!(f32s(p.tensor(0)).len(), 12);
        assert_eq!(f32s(p.tensor(1)).len(), 27);
        assert!(matches!(p.tensor(1), Tensor::F16(_)));
    }

    #[test]
    fn bicubic_without_antialiasing_is_refused_by_name() {
        let mut s = spec(2, 2);
        s.filter = Filter::Bicubic;
        assert!(s.validate().unwrap_err().contains("bicubic"));
    }

    #[test]
    fn yuv_frames_resized_the_pillow_way_match_their_rgb_conversion() {
        let mut s = spec(3, 2);
        s.antialias = true;
        let mut p = Preprocessor::new(vec![s], 64, 64);
        let uyvy: Vec<u8> = (0..16 * 4).map(|i| (i * 37 % 256) as u8).collect();
        let yuv = raw(&mut p, &frame(8, 4, "yuv422", 16, &uyvy));
        let rgb: Vec<u8> = (0..4)
            .flat_map(|y| {
                let uyvy = &uyvy;
                (0..8).flat_map(move |x| {
                    let m = &uyvy[y * 16 + (x & !1) * 2..];
                    yuv_to_rgb(m[1 + 2 * (x & 1)], m[0], m[2])
                })
            })
            .collect();
        assert_eq!(yuv, raw(&mut p, &frame(8, 4, "rgb8", 24, &rgb)));
    }
}

//! Camera frame -> model input tensors, into buffers reused frame to frame.
//!
//! Owns turning a frame into what each of a model's image inputs asks for
//! ([`ImageSpec`], in `spec`): frame validation and decoding (`decode`, the
//! crate's only foreign code: libjpeg-turbo), resizing (`pillow`: exactly
//! what PIL and the Hugging Face processors do, or `bilinear`: the fast
//! half-pixel sampling without antialiasing), then per channel
//! `(v * scale - mean) / std` in the model's channel order, NCHW or NHWC, f32
//! or f16 (`tensor`). One frame feeds every image input of a policy (a
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
mod error;
pub mod pillow;
mod simd;
mod spec;
mod tensor;

use decode::Decoder;
pub use decode::RawFrame;
pub use error::FrameError;
pub use mobile_vla_core::config::{JpegScaling, Resampling};
pub use pillow::Filter;
use simd::SimdResampler;
pub use spec::{ChannelOrder, DType, ImageSpec, Layout, ResizeMode};
use tensor::ImagePipeline;
pub use tensor::Tensor;

/// A frame as the node receives it, before any check.
#[derive(Debug, Clone, Copy)]
pub enum Image<'a> {
    /// `sensor_msgs/Image`: width, height, encoding, data (rows `step` bytes).
    Raw(RawFrame<'a>),
    /// `sensor_msgs/CompressedImage`: format (`jpeg`, `png`, ...) and data.
    Compressed { format: &'a str, data: &'a [u8] },
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

    /// Validates, decodes and converts a frame of either kind into every image input.
    pub fn image(&mut self, image: &Image<'_>) -> Result<(), FrameError> {
        match image {
            Image::Raw(f) => self.raw(f),
            Image::Compressed { format, data } => self.compressed(format, data),
        }
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
mod tests;

//! Camera frame -> model input tensor, in one pass into a reused buffer.
//!
//! Owns frame validation (encoding, size, `step`, data length, decode errors),
//! colour conversion, resizing, normalisation and tensor layout. A frame that
//! fails any check is rejected with a [`FrameError`]; nothing partial ever
//! reaches a model. It knows nothing of ROS or ONNX Runtime: the node passes
//! plain bytes and the encoding string from the message.
//!
//! The transform is specified exactly (tests in Python reproduce it):
//! 1. optional centre crop of the source to the target aspect ratio;
//! 2. bilinear sampling with half-pixel centres and edge clamping
//!    (`src = (dst + 0.5) * in / out - 0.5`), no antialiasing;
//! 3. per channel `(v * scale - mean) / std`, in the model's channel order;
//! 4. NCHW or NHWC layout, f32 or f16.
//!
//! Raw encodings (sensor_msgs/image_encodings): `rgb8`, `bgr8`, `rgba8`,
//! `bgra8`, `mono8`, `yuv422` (UYVY, as ROS defines it) and `yuv422_yuy2`
//! (YUYV, what most USB cameras send). YUV follows cv_bridge (OpenCV's
//! `COLOR_YUV2RGB_UYVY` / `_YUY2`): BT.601 video range, rounded to 8-bit RGB.
//! Compressed: JPEG and PNG, decoded into a reused RGB buffer only after the
//! header is checked (size within `max_width`/`max_height`, 8-bit PNG colour
//! types), with the decoders' own limits set, so a bomb is refused before any
//! allocation. A JPEG must be complete: the decoder runs in strict mode, so a
//! scan that ends early is an error even when an end marker was appended.

use std::fmt;
use std::io::Cursor;

use half::{f16, slice::HalfFloatSliceExt};
use image::ImageDecoder;
use serde::Deserialize;

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
}

/// What the model wants its image to look like.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub width: u32,
    pub height: u32,
    pub resize: ResizeMode,
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
        Ok(())
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

/// A raw frame borrowed from a `sensor_msgs/Image`.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub width: u32,
    pub height: u32,
    pub encoding: &'a str,
    pub step: u32,
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
    Mono8,
    Uyvy,
    Yuyv,
}

impl Encoding {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "rgb8" => Self::Rgb8,
            "bgr8" => Self::Bgr8,
            "rgba8" => Self::Rgba8,
            "bgra8" => Self::Bgra8,
            "mono8" => Self::Mono8,
            "yuv422" | "uyvy" => Self::Uyvy,
            "yuv422_yuy2" | "yuyv" => Self::Yuyv,
            _ => return None,
        })
    }

    fn bytes_per_pixel(self) -> u64 {
        match self {
            Self::Rgb8 | Self::Bgr8 => 3,
            Self::Rgba8 | Self::Bgra8 => 4,
            Self::Mono8 => 1,
            Self::Uyvy | Self::Yuyv => 2,
        }
    }
}

/// Bilinear taps along one axis: for each output index, two source indices and the weight of the second.
#[derive(Debug, Default, Clone)]
struct Taps {
    key: (u32, u32, u32),
    i0: Vec<u32>,
    i1: Vec<u32>,
    w1: Vec<f32>,
}

impl Taps {
    /// `out` samples over source indices `[start, start + len)`.
    fn update(&mut self, start: u32, len: u32, out: u32) {
        if self.key == (start, len, out) && !self.i0.is_empty() {
            return;
        }
        self.key = (start, len, out);
        self.i0.clear();
        self.i1.clear();
        self.w1.clear();
        let ratio = len as f32 / out as f32;
        for d in 0..out {
            let s = ((d as f32 + 0.5) * ratio - 0.5).max(0.0);
            let s0 = (s.floor() as u32).min(len - 1);
            let s1 = (s0 + 1).min(len - 1);
            self.i0.push(start + s0);
            self.i1.push(start + s1);
            self.w1.push(s - s0 as f32);
        }
    }
}

/// Turns frames into model input. Holds every buffer it needs, so once warm it
/// allocates nothing per frame (for compressed frames: while their size stays the same).
pub struct Preprocessor {
    spec: ImageSpec,
    max_width: u32,
    max_height: u32,
    xs: Taps,
    ys: Taps,
    f32_out: Vec<f32>,
    f16_out: Vec<f16>,
    decoded: Vec<u8>,
}

/// The prepared tensor, borrowed from the preprocessor's buffer.
pub enum Tensor<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Preprocessor {
    pub fn new(spec: ImageSpec, max_width: u32, max_height: u32) -> Self {
        let n = 3 * spec.width as usize * spec.height as usize;
        Self {
            f32_out: vec![0.0; n],
            f16_out: if spec.dtype == DType::F16 { vec![f16::ZERO; n] } else { Vec::new() },
            spec,
            max_width,
            max_height,
            xs: Taps::default(),
            ys: Taps::default(),
            decoded: Vec::new(),
        }
    }

    /// The tensor from the last successful `raw` or `compressed` call.
    pub fn tensor(&self) -> Tensor<'_> {
        match self.spec.dtype {
            DType::F32 => Tensor::F32(&self.f32_out),
            DType::F16 => Tensor::F16(&self.f16_out),
        }
    }

    fn check_size(&self, width: u32, height: u32) -> Result<(), FrameError> {
        if width == 0 || height == 0 {
            return Err(FrameError::Empty { width, height });
        }
        if width > self.max_width || height > self.max_height {
            return Err(FrameError::TooLarge { width, height, max_width: self.max_width, max_height: self.max_height });
        }
        Ok(())
    }

    /// Validates and converts a raw `sensor_msgs/Image`.
    pub fn raw(&mut self, f: &RawFrame<'_>) -> Result<Tensor<'_>, FrameError> {
        let enc = Encoding::parse(f.encoding).ok_or_else(|| FrameError::UnsupportedEncoding(f.encoding.to_string()))?;
        self.check_size(f.width, f.height)?;
        let min_step = f.width as u64 * enc.bytes_per_pixel();
        if (f.step as u64) < min_step {
            return Err(FrameError::StepTooSmall { step: f.step, min: min_step });
        }
        let need = f.step as u64 * f.height as u64;
        if (f.data.len() as u64) < need {
            return Err(FrameError::DataTooShort { len: f.data.len(), need });
        }
        if matches!(enc, Encoding::Uyvy | Encoding::Yuyv) && !f.width.is_multiple_of(2) {
            return Err(FrameError::OddWidthForYuv { width: f.width });
        }
        let src = Source { data: f.data, step: f.step as usize };
        match enc {
            Encoding::Rgb8 => self.fill_packed::<3>(f.width, f.height, f.data, src.step, [0, 1, 2]),
            Encoding::Bgr8 => self.fill_packed::<3>(f.width, f.height, f.data, src.step, [2, 1, 0]),
            Encoding::Rgba8 => self.fill_packed::<4>(f.width, f.height, f.data, src.step, [0, 1, 2]),
            Encoding::Bgra8 => self.fill_packed::<4>(f.width, f.height, f.data, src.step, [2, 1, 0]),
            Encoding::Mono8 => self.fill(f.width, f.height, |x, y| {
                let v = src.data[y * src.step + x] as f32;
                [v, v, v]
            }),
            Encoding::Uyvy => self.fill(f.width, f.height, |x, y| src.yuv422(x, y, [1, 0, 2])),
            Encoding::Yuyv => self.fill(f.width, f.height, |x, y| src.yuv422(x, y, [0, 1, 3])),
        }
        Ok(self.tensor())
    }

    /// Validates, decodes and converts a `sensor_msgs/CompressedImage`.
    /// `format` is the message's format field (`jpeg`, `png`, `rgb8; jpeg compressed bgr8`, ...).
    pub fn compressed(&mut self, format: &str, data: &[u8]) -> Result<Tensor<'_>, FrameError> {
        let fmt = format.to_ascii_lowercase();
        let is_png = fmt.contains("png") || data.starts_with(b"\x89PNG");
        let is_jpeg = fmt.contains("jpeg") || fmt.contains("jpg") || data.starts_with(&[0xFF, 0xD8]);
        let (w, h) = if is_png {
            self.decode_png(data)?
        } else if is_jpeg {
            self.decode_jpeg(data)?
        } else {
            return Err(FrameError::UnsupportedFormat(format.to_string()));
        };
        let decoded = std::mem::take(&mut self.decoded);
        self.fill_packed::<3>(w, h, &decoded, w as usize * 3, [0, 1, 2]);
        self.decoded = decoded;
        Ok(self.tensor())
    }

    /// Decodes a complete JPEG into `self.decoded` as RGB8.
    fn decode_jpeg(&mut self, data: &[u8]) -> Result<(u32, u32), FrameError> {
        use zune_core::colorspace::ColorSpace;
        use zune_core::options::DecoderOptions;
        let decode = |e: zune_jpeg::errors::DecodeErrors| FrameError::Decode(e.to_string());
        // Strict: a truncated scan is an error (non-strict pads it with grey,
        // and a camera that appends the end marker to a cut frame would drive).
        // Headers allocate no pixels; the frame size is checked below, before any do.
        let options = DecoderOptions::default()
            .set_strict_mode(true)
            .set_max_width(usize::from(u16::MAX))
            .set_max_height(usize::from(u16::MAX))
            .jpeg_set_out_colorspace(ColorSpace::RGB);
        // Decoded without its final end marker: a scan cut short then runs into
        // the end of the data, which strict mode refuses, instead of into an
        // appended marker, which zune accepts (as libjpeg-turbo does, with a warning).
        let body = data.windows(2).rposition(|w| w == [0xFF, 0xD9]).map_or(data, |eoi| &data[..eoi]);
        let mut dec = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(body), options);
        dec.decode_headers().map_err(decode)?;
        let (w, h) = dec.dimensions().ok_or_else(|| FrameError::Decode("JPEG has no frame header".into()))?;
        let (w, h) = (w as u32, h as u32);
        self.check_size(w, h)?;
        let n = dec.output_buffer_size().ok_or_else(|| FrameError::Decode("JPEG has no frame header".into()))?;
        if n != w as usize * h as usize * 3 {
            return Err(FrameError::Decode(format!("JPEG decodes to {n} bytes, not {w}x{h} RGB")));
        }
        self.decoded.resize(n, 0);
        dec.decode_into(&mut self.decoded).map_err(decode)?;
        Ok((w, h))
    }

    /// Decodes an 8-bit PNG into `self.decoded` as RGB8; everything else is
    /// refused from its header, before the decoder allocates.
    fn decode_png(&mut self, data: &[u8]) -> Result<(u32, u32), FrameError> {
        let mut dec =
            image::codecs::png::PngDecoder::new(Cursor::new(data)).map_err(|e| FrameError::Decode(e.to_string()))?;
        let (w, h) = dec.dimensions();
        self.check_size(w, h)?;
        let color = dec.color_type();
        if !matches!(
            color,
            image::ColorType::L8 | image::ColorType::La8 | image::ColorType::Rgb8 | image::ColorType::Rgba8
        ) {
            return Err(FrameError::UnsupportedFormat(format!(
                "PNG with {color:?} pixels ({} bits per channel; supported: 8-bit grey, grey+alpha, RGB, RGBA)",
                color.bytes_per_pixel() as u16 * 8 / color.channel_count() as u16
            )));
        }
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_width as u64 * self.max_height as u64 * 4);
        dec.set_limits(limits).map_err(|e| FrameError::Decode(e.to_string()))?;
        self.decode_rgb8(dec, color, w, h)?;
        Ok((w, h))
    }

    /// Decodes into `self.decoded` and normalises the 8-bit colour type to packed RGB8.
    fn decode_rgb8(
        &mut self,
        dec: impl ImageDecoder,
        color: image::ColorType,
        w: u32,
        h: u32,
    ) -> Result<(), FrameError> {
        let n = dec.total_bytes() as usize;
        self.decoded.resize(n, 0);
        dec.read_image(&mut self.decoded).map_err(|e| FrameError::Decode(e.to_string()))?;
        let px = (w * h) as usize;
        // Normalise the decoded colour type to packed RGB8 in place.
        match color {
            image::ColorType::Rgb8 => {}
            image::ColorType::L8 => {
                self.decoded.resize(px * 3, 0);
                for i in (0..px).rev() {
                    let v = self.decoded[i];
                    self.decoded[3 * i..3 * i + 3].copy_from_slice(&[v, v, v]);
                }
            }
            image::ColorType::Rgba8 => {
                for i in 0..px {
                    self.decoded.copy_within(4 * i..4 * i + 3, 3 * i);
                }
                self.decoded.truncate(px * 3);
            }
            image::ColorType::La8 => {
                // Grows 2 -> 3 bytes a pixel: back to front, so nothing unread is overwritten.
                self.decoded.resize(px * 3, 0);
                for i in (0..px).rev() {
                    let v = self.decoded[2 * i];
                    self.decoded[3 * i..3 * i + 3].copy_from_slice(&[v, v, v]);
                }
            }
            other => return Err(FrameError::UnsupportedFormat(format!("{other:?} pixels"))),
        }
        Ok(())
    }

    /// Samples the source (given as a per-pixel RGB function) into the output tensor.
    fn fill(&mut self, src_w: u32, src_h: u32, px: impl Fn(usize, usize) -> [f32; 3]) {
        let (ow, oh) = (self.spec.width as usize, self.spec.height as usize);
        let (order, mul, add) = self.prepare(src_w, src_h);
        let xs = &self.xs;
        let mut writer = Writer::new(&mut self.f32_out, self.spec.layout, ow * oh);
        for oy in 0..oh {
            let (ya, yb, wy) = (self.ys.i0[oy] as usize, self.ys.i1[oy] as usize, self.ys.w1[oy]);
            for ox in 0..ow {
                let (xa, xb, wx) = (xs.i0[ox] as usize, xs.i1[ox] as usize, xs.w1[ox]);
                let (p00, p01, p10, p11) = (px(xa, ya), px(xb, ya), px(xa, yb), px(xb, yb));
                let v: [f32; 3] = std::array::from_fn(|c| {
                    let s = order[c];
                    bilinear([p00[s], p01[s], p10[s], p11[s]], wx, wy) * mul[c] + add[c]
                });
                writer.put(oy * ow + ox, v);
            }
        }
        self.finish();
    }

    /// `fill` for packed 8-bit pixels (`N` bytes each, red/green/blue at byte
    /// offsets `rgb`): the same arithmetic, with the column offsets and the two
    /// source rows resolved once per row instead of per sample.
    fn fill_packed<const N: usize>(&mut self, src_w: u32, src_h: u32, data: &[u8], step: usize, rgb: [usize; 3]) {
        let (ow, oh) = (self.spec.width as usize, self.spec.height as usize);
        let (order, mul, add) = self.prepare(src_w, src_h);
        let pick: [usize; 3] = std::array::from_fn(|c| rgb[order[c]]);
        let xs = &self.xs;
        let row_len = src_w as usize * N;
        let mut writer = Writer::new(&mut self.f32_out, self.spec.layout, ow * oh);
        for oy in 0..oh {
            let (ya, yb, wy) = (self.ys.i0[oy] as usize, self.ys.i1[oy] as usize, self.ys.w1[oy]);
            let ra = &data[ya * step..ya * step + row_len];
            let rb = &data[yb * step..yb * step + row_len];
            for (ox, ((&xa, &xb), &wx)) in xs.i0.iter().zip(&xs.i1).zip(&xs.w1).enumerate() {
                let (xa, xb) = (xa as usize * N, xb as usize * N);
                let (a0, a1, b0, b1) = (&ra[xa..xa + N], &ra[xb..xb + N], &rb[xa..xa + N], &rb[xb..xb + N]);
                let v: [f32; 3] = std::array::from_fn(|c| {
                    let k = pick[c];
                    bilinear([a0[k] as f32, a1[k] as f32, b0[k] as f32, b1[k] as f32], wx, wy) * mul[c] + add[c]
                });
                writer.put(oy * ow + ox, v);
            }
        }
        self.finish();
    }

    /// Updates the sampling taps for this source size; returns, per output
    /// channel, the source channel and the folded `scale / std`, `-mean / std`.
    fn prepare(&mut self, src_w: u32, src_h: u32) -> ([usize; 3], [f32; 3], [f32; 3]) {
        let (x0, cw, y0, ch) = crop(src_w, src_h, self.spec.width, self.spec.height, self.spec.resize);
        self.xs.update(x0, cw, self.spec.width);
        self.ys.update(y0, ch, self.spec.height);
        let order = match self.spec.channel_order {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let scale = self.spec.scale;
        let mul = std::array::from_fn(|c| scale / self.spec.std[order[c]]);
        let add = std::array::from_fn(|c| -self.spec.mean[order[c]] / self.spec.std[order[c]]);
        (order, mul, add)
    }

    fn finish(&mut self) {
        if self.spec.dtype == DType::F16 {
            // Vectorised (F16C) where the CPU has it.
            self.f16_out.convert_from_f32_slice(&self.f32_out);
        }
    }
}

/// Bilinear blend of `[top-left, top-right, bottom-left, bottom-right]`.
#[inline(always)]
fn bilinear([p00, p01, p10, p11]: [f32; 4], wx: f32, wy: f32) -> f32 {
    let top = p00 + (p01 - p00) * wx;
    let bot = p10 + (p11 - p10) * wx;
    top + (bot - top) * wy
}

/// Writes one output pixel's three channels in the tensor's layout.
enum Writer<'a> {
    Planes([&'a mut [f32]; 3]),
    Interleaved(&'a mut [f32]),
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [f32], layout: Layout, plane: usize) -> Self {
        match layout {
            Layout::Nchw => {
                let (r, rest) = out.split_at_mut(plane);
                let (g, b) = rest.split_at_mut(plane);
                Writer::Planes([r, g, b])
            }
            Layout::Nhwc => Writer::Interleaved(out),
        }
    }

    #[inline(always)]
    fn put(&mut self, i: usize, v: [f32; 3]) {
        match self {
            Writer::Planes([r, g, b]) => {
                r[i] = v[0];
                g[i] = v[1];
                b[i] = v[2];
            }
            Writer::Interleaved(o) => o[3 * i..3 * i + 3].copy_from_slice(&v),
        }
    }
}

/// The source rectangle `(x0, width, y0, height)` that is resized to the output.
fn crop(sw: u32, sh: u32, ow: u32, oh: u32, mode: ResizeMode) -> (u32, u32, u32, u32) {
    match mode {
        ResizeMode::Stretch => (0, sw, 0, sh),
        ResizeMode::CenterCrop => {
            // Compare sw/sh with ow/oh without floating point.
            if sw as u64 * oh as u64 > sh as u64 * ow as u64 {
                let cw = ((sh as u64 * ow as u64) / oh as u64).max(1) as u32;
                ((sw - cw) / 2, cw, 0, sh)
            } else {
                let chh = ((sw as u64 * oh as u64) / ow as u64).max(1) as u32;
                (0, sw, (sh - chh) / 2, chh)
            }
        }
    }
}

struct Source<'a> {
    data: &'a [u8],
    step: usize,
}

impl Source<'_> {
    /// 4:2:2 macro-pixel of two pixels; `pos` = byte offsets of (Y0, U, V) and Y1 = Y0 + 2.
    #[inline(always)]
    fn yuv422(&self, x: usize, y: usize, pos: [usize; 3]) -> [f32; 3] {
        let i = y * self.step + (x & !1) * 2;
        let m = &self.data[i..i + 4];
        yuv_to_rgb(m[pos[0] + 2 * (x & 1)], m[pos[1]], m[pos[2]]).map(f32::from)
    }
}

/// BT.601 video range to 8-bit RGB, exactly as OpenCV's `cvtColor` (and so
/// cv_bridge) converts `yuv422` / `yuv422_yuy2`: its fixed-point coefficients,
/// rounding and saturation.
#[inline(always)]
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    const SHIFT: i32 = 20;
    const CY: i32 = 1_220_542; // 1.164 * 2^20
    const CUB: i32 = 2_116_026; // 2.018
    const CUG: i32 = -409_993; // -0.391
    const CVG: i32 = -852_492; // -0.813
    const CVR: i32 = 1_673_527; // 1.596
    const HALF: i32 = 1 << (SHIFT - 1);
    let (uu, vv) = (u as i32 - 128, v as i32 - 128);
    let yy = (y as i32 - 16).max(0) * CY;
    let sat = |x: i32| (x >> SHIFT).clamp(0, 255) as u8;
    [sat(yy + HALF + CVR * vv), sat(yy + HALF + CVG * vv + CUG * uu), sat(yy + HALF + CUB * uu)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32) -> ImageSpec {
        ImageSpec {
            width: w,
            height: h,
            resize: ResizeMode::Stretch,
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

    fn frame<'a>(w: u32, h: u32, enc: &'a str, step: u32, data: &'a [u8]) -> RawFrame<'a> {
        RawFrame { width: w, height: h, encoding: enc, step, data }
    }

    #[test]
    fn identity_size_copies_pixels_into_planes() {
        let mut p = Preprocessor::new(spec(2, 1), 100, 100);
        let data = [10, 20, 30, 40, 50, 60];
        let out = f32s(p.raw(&frame(2, 1, "rgb8", 6, &data)).unwrap());
        assert_eq!(out, vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]);
    }

    #[test]
    fn encodings_agree_on_the_same_colours() {
        let rgb = [10u8, 20, 30, 200, 150, 100];
        let bgr = [30u8, 20, 10, 100, 150, 200];
        let rgba = [10u8, 20, 30, 255, 200, 150, 100, 255];
        let bgra = [30u8, 20, 10, 0, 100, 150, 200, 0];
        let mut p = Preprocessor::new(spec(2, 1), 100, 100);
        let want = f32s(p.raw(&frame(2, 1, "rgb8", 6, &rgb)).unwrap());
        assert_eq!(f32s(p.raw(&frame(2, 1, "bgr8", 6, &bgr)).unwrap()), want);
        assert_eq!(f32s(p.raw(&frame(2, 1, "rgba8", 8, &rgba)).unwrap()), want);
        assert_eq!(f32s(p.raw(&frame(2, 1, "bgra8", 8, &bgra)).unwrap()), want);
    }

    #[test]
    fn yuv_grey_is_grey_and_byte_orders_differ_correctly() {
        let mut p = Preprocessor::new(spec(2, 1), 100, 100);
        // UYVY: U Y0 V Y1; YUYV: Y0 U Y1 V. Neutral chroma (128) gives grey,
        // video range: (Y - 16) * 1.164, rounded (OpenCV: 50 -> 40, 90 -> 86).
        let uyvy = [128u8, 50, 128, 90];
        let yuyv = [50u8, 128, 90, 128];
        let a = f32s(p.raw(&frame(2, 1, "yuv422", 4, &uyvy)).unwrap());
        assert_eq!(a, vec![40.0, 86.0, 40.0, 86.0, 40.0, 86.0]);
        let b = f32s(p.raw(&frame(2, 1, "yuv422_yuy2", 4, &yuyv)).unwrap());
        assert_eq!(a, b);
        // Strong V (red difference) raises R and lowers G.
        let red = f32s(p.raw(&frame(2, 1, "yuv422", 4, &[128, 100, 228, 100])).unwrap());
        assert!(red[0] > 200.0 && red[2] < 100.0, "{red:?}");
    }

    #[test]
    fn row_padding_in_step_is_skipped() {
        let mut p = Preprocessor::new(spec(1, 2), 100, 100);
        let data = [1, 2, 3, 99, 99, 4, 5, 6, 99, 99];
        let out = f32s(p.raw(&frame(1, 2, "rgb8", 5, &data)).unwrap());
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
        let mut p = Preprocessor::new(s, 10, 10);
        let out = f32s(p.raw(&frame(1, 1, "rgb8", 3, &[255, 0, 51])).unwrap());
        // BGR order: b=0.2, g=(0-0.25)/0.25=-1, r=(1-0.5)/0.5=1
        let want = [0.2f32, -1.0, 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn bilinear_downscale_with_half_pixel_centres() {
        // 4x1 -> 2x1: samples at src x = 0.5 and 2.5.
        let mut p = Preprocessor::new(spec(2, 1), 100, 100);
        let data = [0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255];
        let out = f32s(p.raw(&frame(4, 1, "rgb8", 12, &data)).unwrap());
        assert_eq!(&out[0..2], &[50.0, 227.5]);
    }

    #[test]
    fn center_crop_keeps_the_middle() {
        let mut s = spec(1, 1);
        s.resize = ResizeMode::CenterCrop;
        let mut p = Preprocessor::new(s, 100, 100);
        // 3x1 -> 1x1 with centre crop takes the middle pixel only.
        let out = f32s(p.raw(&frame(3, 1, "mono8", 3, &[0, 77, 255])).unwrap());
        assert_eq!(out, vec![77.0, 77.0, 77.0]);
    }

    #[test]
    fn f16_output_matches_f32_within_half_precision() {
        let mut s = spec(4, 4);
        s.scale = 1.0 / 255.0;
        s.dtype = DType::F16;
        let mut p = Preprocessor::new(s, 100, 100);
        let data: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let half = f32s(p.raw(&frame(8, 8, "rgb8", 24, &data)).unwrap());
        let full = p.f32_out.clone();
        for (h, f) in half.iter().zip(full) {
            assert!((h - f).abs() < 1e-3);
        }
    }

    type IsError = fn(&FrameError) -> bool;

    #[test]
    fn malformed_frames_are_refused() {
        let mut p = Preprocessor::new(spec(2, 2), 64, 64);
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
        let mut p = Preprocessor::new(spec(8, 8), 4096, 4096);
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

    #[test]
    fn a_16_bit_png_is_refused_from_its_header() {
        let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(64, 64, image::Rgb([1000, 2000, 3000]));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
        let mut p = Preprocessor::new(spec(4, 4), 4096, 4096);
        match p.compressed("png", buf.get_ref()) {
            Err(FrameError::UnsupportedFormat(why)) => assert!(why.contains("16 bits"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        assert!(p.decoded.capacity() < 64 * 64 * 6, "nothing was decoded");
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
        let mut p = Preprocessor::new(spec(4, 4), 640, 480);
        p.compressed("png", &png).unwrap();
        for cut in [3, 2, 10, 100] {
            let truncated = &png[..png.len() - (png.len() / cut).max(1)];
            assert!(p.compressed("png", truncated).is_err(), "cut 1/{cut}");
        }
    }

    #[test]
    fn png_decodes_to_the_same_tensor_as_raw() {
        let img = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 7]));
        let mut p = Preprocessor::new(spec(4, 3), 100, 100);
        let raw = f32s(p.raw(&frame(8, 6, "rgb8", 24, img.as_raw())).unwrap());
        let png = f32s(p.compressed("png", &encode(img, image::ImageFormat::Png)).unwrap());
        assert_eq!(raw, png);
    }

    #[test]
    fn jpeg_decodes_and_corrupt_or_huge_jpeg_is_refused() {
        let img = image::RgbImage::from_fn(32, 32, |x, _| image::Rgb([(x * 8) as u8, 100, 100]));
        let jpeg = encode(img, image::ImageFormat::Jpeg);
        let mut p = Preprocessor::new(spec(4, 4), 16, 64);
        // 32 wide > max 16: refused from the header, before decoding.
        assert!(matches!(p.compressed("jpeg", &jpeg), Err(FrameError::TooLarge { .. })));
        let mut p = Preprocessor::new(spec(4, 4), 64, 64);
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
        let mut p = Preprocessor::new(spec(8, 8), 100, 100);
        let data = vec![9u8; 16 * 16 * 3];
        p.raw(&frame(16, 16, "rgb8", 48, &data)).unwrap();
        let (a, b) = (p.f32_out.as_ptr(), p.xs.i0.as_ptr());
        for _ in 0..3 {
            p.raw(&frame(16, 16, "rgb8", 48, &data)).unwrap();
        }
        assert_eq!((a, b), (p.f32_out.as_ptr(), p.xs.i0.as_ptr()));
    }
}

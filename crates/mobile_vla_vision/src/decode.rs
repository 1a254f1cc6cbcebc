//! Untrusted frame bytes -> a checked view of 8-bit pixels.
//!
//! Owns every check made before pixels are read (encoding, size, `step`,
//! data length, YUV width) and the decoders of compressed frames (JPEG in
//! strict mode, 8-bit PNG), each given its limits before it allocates. What
//! it returns is a [`Source`]: packed pixels borrowed from the message or from
//! the decode buffer. It never resizes or normalises.
//!
//! After a failure nothing of the failed frame stays: the libjpeg-turbo
//! handle is dropped after any error or warning and made anew for the next
//! JPEG (it kept a failed decode's state: one corrupt frame made every later
//! one fail), each decode sets its own DCT scale, a PNG decoder lives for one
//! frame, and the decode buffer is resized to the next frame and fully
//! written before anything reads it.

use std::io::Cursor;

use image::ImageDecoder;

use crate::FrameError;

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
pub(super) enum Encoding {
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

/// Checked pixels of one frame, `width x height`, rows `step` bytes apart.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
    pub step: usize,
    pub(super) encoding: Encoding,
}

impl Source<'_> {
    /// Byte offsets of red, green and blue for packed colour encodings (not mono or YUV).
    pub(super) fn rgb_offsets(&self) -> Option<[usize; 3]> {
        match self.encoding {
            Encoding::Rgb8 | Encoding::Rgba8 => Some([0, 1, 2]),
            Encoding::Bgr8 | Encoding::Bgra8 => Some([2, 1, 0]),
            Encoding::Mono8 => Some([0, 0, 0]),
            Encoding::Uyvy | Encoding::Yuyv => None,
        }
    }

    pub(super) fn bytes_per_pixel(&self) -> usize {
        self.encoding.bytes_per_pixel() as usize
    }

    pub(super) fn is_yuv(&self) -> bool {
        matches!(self.encoding, Encoding::Uyvy | Encoding::Yuyv)
    }

    /// Byte offsets of (Y0, U, V) in a 4:2:2 macro-pixel (Y1 = Y0 + 2).
    pub(super) fn yuv_positions(&self) -> [usize; 3] {
        match self.encoding {
            Encoding::Uyvy => [1, 0, 2],
            _ => [0, 1, 3],
        }
    }

    /// One pixel as RGB, any encoding (the slow path: mono and YUV).
    #[inline(always)]
    pub(super) fn rgb_at(&self, x: usize, y: usize) -> [u8; 3] {
        let row = &self.data[y * self.step..];
        match self.encoding {
            Encoding::Rgb8 => [row[3 * x], row[3 * x + 1], row[3 * x + 2]],
            Encoding::Bgr8 => [row[3 * x + 2], row[3 * x + 1], row[3 * x]],
            Encoding::Rgba8 => [row[4 * x], row[4 * x + 1], row[4 * x + 2]],
            Encoding::Bgra8 => [row[4 * x + 2], row[4 * x + 1], row[4 * x]],
            Encoding::Mono8 => [row[x]; 3],
            Encoding::Uyvy | Encoding::Yuyv => {
                let pos = self.yuv_positions();
                let m = &row[(x & !1) * 2..(x & !1) * 2 + 4];
                yuv_to_rgb(m[pos[0] + 2 * (x & 1)], m[pos[1]], m[pos[2]])
            }
        }
    }

    /// Converts YUV 4:2:2 to packed RGB8 into `out` (cv_bridge's conversion).
    pub(super) fn yuv_to_rgb8(&self, out: &mut Vec<u8>) {
        let (w, h) = (self.width as usize, self.height as usize);
        out.resize(w * h * 3, 0);
        for y in 0..h {
            let dst = &mut out[y * w * 3..(y + 1) * w * 3];
            for (x, d) in dst.chunks_exact_mut(3).enumerate() {
                d.copy_from_slice(&self.rgb_at(x, y));
            }
        }
    }
}

/// Frame checks and the decode buffer, reused frame to frame.
pub(super) struct Decoder {
    pub max_width: u32,
    pub max_height: u32,
    pub decoded: Vec<u8>,
    /// libjpeg-turbo, created on the first JPEG.
    pub jpeg: Option<Result<Jpeg, String>>,
}

/// Progressive scans a JPEG may have (libjpeg-turbo's own suggestion for untrusted input).
const JPEG_SCAN_LIMIT: libc::c_int = 500;
/// libjpeg's working memory cap, in MB (a 4096x4096 progressive frame at 4:4:4 needs about 100).
const JPEG_MAX_MEMORY_MB: libc::c_int = 512;

/// A libjpeg-turbo decompressor (TurboJPEG 3 API).
pub(super) struct Jpeg {
    handle: turbojpeg_sys::tjhandle,
    /// The full size from the last header read.
    size: (u32, u32),
}

// SAFETY: a TurboJPEG handle is used by one thread at a time (the
// preprocessor that owns it); it holds no thread-local state.
unsafe impl Send for Jpeg {}

impl Jpeg {
    fn new() -> Result<Self, String> {
        use turbojpeg_sys as tj;
        // SAFETY: tj3Init returns a new handle or null; tj3Set only sets a parameter of it.
        unsafe {
            let handle = tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as libc::c_int);
            if handle.is_null() {
                return Err("libjpeg-turbo could not be initialised".into());
            }
            let jpeg = Jpeg { handle, size: (0, 0) };
            // A warning (a scan cut short, data after the scan) is an error:
            // libjpeg would otherwise pad the frame with grey and carry on.
            if tj::tj3Set(handle, tj::TJPARAM_TJPARAM_STOPONWARNING as libc::c_int, 1) != 0 {
                return Err(jpeg.error());
            }
            // A progressive stream of thousands of tiny scans decodes for seconds
            // (a CPU bomb in a few kilobytes); real encoders write about ten.
            // And libjpeg's own buffers stay bounded whatever the header claims.
            if tj::tj3Set(handle, tj::TJPARAM_TJPARAM_SCANLIMIT as libc::c_int, JPEG_SCAN_LIMIT) != 0
                || tj::tj3Set(handle, tj::TJPARAM_TJPARAM_MAXMEMORY as libc::c_int, JPEG_MAX_MEMORY_MB) != 0
            {
                return Err(jpeg.error());
            }
            Ok(jpeg)
        }
    }

    fn error(&self) -> String {
        // SAFETY: the handle is valid; the message is a NUL-terminated string it owns.
        unsafe { std::ffi::CStr::from_ptr(turbojpeg_sys::tj3GetErrorStr(self.handle)) }.to_string_lossy().into_owned()
    }

    /// The frame size, from the headers alone (nothing is allocated).
    fn header(&mut self, data: &[u8]) -> Result<(u32, u32), FrameError> {
        use turbojpeg_sys as tj;
        // SAFETY: data is a valid slice for the call; tj3Get reads the parsed header.
        unsafe {
            if tj::tj3DecompressHeader(self.handle, data.as_ptr(), data.len() as tj::size_t) != 0 {
                return Err(FrameError::Decode(self.error()));
            }
            let w = tj::tj3Get(self.handle, tj::TJPARAM_TJPARAM_JPEGWIDTH as libc::c_int);
            let h = tj::tj3Get(self.handle, tj::TJPARAM_TJPARAM_JPEGHEIGHT as libc::c_int);
            if w <= 0 || h <= 0 {
                return Err(FrameError::Decode("JPEG has no frame header".into()));
            }
            self.size = (w as u32, h as u32);
            Ok(self.size)
        }
    }

    fn scaled_width(&self, denom: u32) -> u32 {
        self.size.0.div_ceil(denom)
    }

    fn scaled_height(&self, denom: u32) -> u32 {
        self.size.1.div_ceil(denom)
    }

    /// Decodes at 1/`denom` scale (1, 2, 4 or 8: libjpeg's DCT scaling, as
    /// PIL's `Image.draft` uses it) into `out`, which holds the scaled frame
    /// (`ceil(w / denom) * ceil(h / denom) * 3` bytes, packed RGB).
    fn decode(&mut self, data: &[u8], denom: u32, out: &mut [u8]) -> Result<(), FrameError> {
        use turbojpeg_sys as tj;
        let factor = tj::tjscalingfactor { num: 1, denom: denom as libc::c_int };
        // SAFETY: the handle is valid; 1/1, 1/2, 1/4 and 1/8 are scaling factors every libjpeg-turbo supports.
        if unsafe { tj::tj3SetScalingFactor(self.handle, factor) } != 0 {
            return Err(FrameError::Decode(self.error()));
        }
        // SAFETY: `out` holds exactly the scaled frame's RGB pixels that
        // tj3Decompress8 writes (the size was read from the same data's header
        // just before, and scaled as libjpeg scales it).
        let w = self.scaled_width(denom);
        assert_eq!(out.len(), w as usize * self.scaled_height(denom) as usize * 3);
        let rc = unsafe {
            tj::tj3Decompress8(
                self.handle,
                data.as_ptr(),
                data.len() as tj::size_t,
                out.as_mut_ptr(),
                (w * 3) as libc::c_int,
                tj::TJPF_TJPF_RGB,
            )
        };
        if rc != 0 {
            return Err(FrameError::Decode(self.error()));
        }
        Ok(())
    }
}

impl Drop for Jpeg {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { turbojpeg_sys::tj3Destroy(self.handle) }
    }
}

impl Decoder {
    fn check_size(&self, width: u32, height: u32) -> Result<(), FrameError> {
        if width == 0 || height == 0 {
            return Err(FrameError::Empty { width, height });
        }
        if width > self.max_width || height > self.max_height {
            return Err(FrameError::TooLarge { width, height, max_width: self.max_width, max_height: self.max_height });
        }
        Ok(())
    }

    /// Validates a raw `sensor_msgs/Image`; its pixels stay in the message.
    pub fn raw<'a>(&self, f: &RawFrame<'a>) -> Result<Source<'a>, FrameError> {
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
        Ok(Source { width: f.width, height: f.height, data: f.data, step: f.step as usize, encoding: enc })
    }

    /// Validates and decodes a `sensor_msgs/CompressedImage` into packed RGB8.
    /// `format` is the message's format field (`jpeg`, `png`, `rgb8; jpeg compressed bgr8`, ...).
    /// `jpeg_denom` gives, from a JPEG's full size, the DCT scale to decode it at (1: every pixel).
    pub fn compressed(
        &mut self,
        format: &str,
        data: &[u8],
        jpeg_denom: impl Fn(u32, u32) -> u32,
    ) -> Result<Source<'_>, FrameError> {
        let fmt = format.to_ascii_lowercase();
        let is_png = fmt.contains("png") || data.starts_with(b"\x89PNG");
        let is_jpeg = fmt.contains("jpeg") || fmt.contains("jpg") || data.starts_with(&[0xFF, 0xD8]);
        let (w, h) = if is_png {
            self.decode_png(data)?
        } else if is_jpeg {
            self.decode_jpeg(data, jpeg_denom)?
        } else {
            return Err(FrameError::UnsupportedFormat(format.to_string()));
        };
        Ok(Source { width: w, height: h, data: &self.decoded, step: w as usize * 3, encoding: Encoding::Rgb8 })
    }

    /// Decodes a complete JPEG into `self.decoded` as RGB8, as PIL does
    /// (libjpeg-turbo, accurate integer DCT, smooth chroma upsampling), at
    /// the scale `jpeg_denom` picks; returns the decoded size.
    ///
    /// After any error the handle is dropped and the next JPEG gets a new
    /// one: libjpeg-turbo keeps a failed decode's error and warning state in
    /// its handle (with stop-on-warning, every later frame failed with the
    /// first one's message), so a failure must never outlive its frame.
    fn decode_jpeg(&mut self, data: &[u8], jpeg_denom: impl Fn(u32, u32) -> u32) -> Result<(u32, u32), FrameError> {
        let (max_w, max_h) = (self.max_width, self.max_height);
        let jpeg = match self.jpeg.get_or_insert_with(Jpeg::new) {
            Ok(jpeg) => jpeg,
            Err(e) => {
                let e = FrameError::Decode(e.clone());
                self.jpeg = None;
                return Err(e);
            }
        };
        let decoded = &mut self.decoded;
        let result = (|| {
            let (w, h) = jpeg.header(data)?;
            if w > max_w || h > max_h {
                return Err(FrameError::TooLarge { width: w, height: h, max_width: max_w, max_height: max_h });
            }
            let denom = jpeg_denom(w, h);
            let (sw, sh) = (jpeg.scaled_width(denom), jpeg.scaled_height(denom));
            decoded.resize(sw as usize * sh as usize * 3, 0);
            jpeg.decode(data, denom, decoded)?;
            Ok((sw, sh))
        })();
        if result.is_err() {
            self.jpeg = None;
        }
        result
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
}

/// BT.601 video range to 8-bit RGB, exactly as OpenCV's `cvtColor` (and so
/// cv_bridge) converts `yuv422` / `yuv422_yuy2`: its fixed-point coefficients,
/// rounding and saturation.
#[inline(always)]
pub(super) fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
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

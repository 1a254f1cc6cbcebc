//! The fuzz targets: every parser of bytes that arrive from outside the node.
//!
//! Owns how a target reads its input bytes (a small header of fields, then
//! the payload) and the property it checks beyond "no panic, no hang": a
//! frame the preprocessor accepts yields finite tensors of the model's shape;
//! an instruction always yields token rows of the manifest's length. It never
//! decides whether a failure is acceptable: a panic is a bug, whatever the input.

use std::path::{Path, PathBuf};

use mobile_vla_core::preprocess::{
    ChannelOrder, DType, Filter, ImageSpec, JpegScaling, Layout, Preprocessor, RawFrame, Resampling, ResizeMode, Tensor,
};
use mobile_vla_policy::manifest::{Manifest, Padding};
use mobile_vla_policy::text::TextEncoder;

/// One fuzz target: a name, its input size cap, and the function under test.
pub trait Target {
    fn name(&self) -> &'static str;
    /// The longest input worth generating.
    fn max_len(&self) -> usize;
    /// Runs one input; panics on a property violation.
    fn run(&mut self, data: &[u8]);
}

/// The node's own camera limits (config defaults).
const MAX_SIDE: u32 = 4096;

/// Small model inputs (the code paths are those of 224x224 ones, at a
/// fraction of the time per input): one per resize mode and filter family.
fn specs() -> Vec<ImageSpec> {
    let spec = |w, h, resize, filter, antialias, layout, dtype| ImageSpec {
        width: w,
        height: h,
        resize,
        shortest_edge: None,
        filter,
        antialias,
        pad: [10, 20, 30],
        channel_order: ChannelOrder::Rgb,
        layout,
        scale: 1.0 / 255.0,
        mean: [0.48, 0.46, 0.41],
        std: [0.27, 0.26, 0.28],
        dtype,
    };
    vec![
        spec(16, 12, ResizeMode::Stretch, Filter::Bilinear, false, Layout::Nchw, DType::F32),
        ImageSpec {
            shortest_edge: Some(20),
            ..spec(16, 16, ResizeMode::ShortestEdge, Filter::Bicubic, true, Layout::Nchw, DType::F16)
        },
        spec(12, 16, ResizeMode::Letterbox, Filter::Nearest, true, Layout::Nhwc, DType::F32),
        ImageSpec {
            channel_order: ChannelOrder::Bgr,
            ..spec(9, 7, ResizeMode::CenterCrop, Filter::Bilinear, true, Layout::Nchw, DType::F32)
        },
    ]
}

/// The node's preprocessor on the fuzzing specs, and the property an
/// accepted frame must have: finite tensors of each input's shape.
struct Frames {
    pre: Preprocessor,
    specs: Vec<ImageSpec>,
}

impl Default for Frames {
    fn default() -> Self {
        let specs = specs();
        Frames { pre: Preprocessor::new(specs.clone(), MAX_SIDE, MAX_SIDE), specs }
    }
}

impl Frames {
    fn check_tensors(&self) {
        for (i, s) in self.specs.iter().enumerate() {
            let n: usize = s.shape().iter().product();
            match self.pre.tensor(i) {
                Tensor::F32(v) => {
                    assert_eq!(v.len(), n, "input {i}: tensor size");
                    assert!(v.iter().all(|x| x.is_finite()), "input {i}: a non-finite value from an accepted frame");
                }
                Tensor::F16(v) => {
                    assert_eq!(v.len(), n, "input {i}: tensor size");
                    assert!(v.iter().all(|x| x.is_finite()), "input {i}: a non-finite value from an accepted frame");
                }
            }
        }
    }
}

/// A ROS string field's bytes as the node gets them from r2r: up to the first
/// NUL (rcl's strings are C strings), and empty unless that is valid UTF-8.
fn ros_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("").to_owned()
}

/// The encodings the node knows, and a few it must refuse.
pub const ENCODINGS: [&str; 10] =
    ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2", "mono16", "bayer_rggb8", "16UC1"];

/// `sensor_msgs/Image`: every field the node reads, and the data.
///
/// Input: width u16, height u16, step u32 (little-endian), an encoding
/// selector (below `ENCODINGS.len()`: that one; above: the next bytes as
/// the encoding string), then the data.
#[derive(Default)]
pub struct RawImage(Frames);

impl Target for RawImage {
    fn name(&self) -> &'static str {
        "image"
    }

    fn max_len(&self) -> usize {
        64 << 10
    }

    fn run(&mut self, data: &[u8]) {
        if data.len() < 9 {
            return;
        }
        let width = u16::from_le_bytes([data[0], data[1]]) as u32;
        let height = u16::from_le_bytes([data[2], data[3]]) as u32;
        let step = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
        let sel = data[8] as usize;
        let (encoding, pixels) = if sel < ENCODINGS.len() {
            (String::from(ENCODINGS[sel]), &data[9..])
        } else {
            let n = (sel - ENCODINGS.len()).min(data.len() - 9);
            (ros_string(&data[9..9 + n]), &data[9 + n..])
        };
        let frame = RawFrame { width, height, encoding: &encoding, step, data: pixels };
        for resampling in [Resampling::Exact, Resampling::Simd] {
            self.0.pre.set_resampling(resampling);
            if self.0.pre.raw(&frame).is_ok() {
                self.0.check_tensors();
            }
        }
    }
}

/// `sensor_msgs/CompressedImage`: the format field and the stream (JPEG, PNG, anything).
///
/// Input: a flags byte (bit 0: reduced JPEG scaling; bits 1-2: the format
/// string), then the data.
#[derive(Default)]
pub struct Compressed(Frames);

pub const FORMATS: [&str; 4] = ["jpeg", "png", "rgb8; jpeg compressed bgr8", ""];

impl Target for Compressed {
    fn name(&self) -> &'static str {
        "compressed"
    }

    fn max_len(&self) -> usize {
        256 << 10
    }

    fn run(&mut self, data: &[u8]) {
        let Some((&flags, stream)) = data.split_first() else { return };
        let scaling = if flags & 1 == 1 { JpegScaling::Reduced } else { JpegScaling::Full };
        self.0.pre.set_jpeg_scaling(scaling);
        if self.0.pre.compressed(FORMATS[(flags as usize >> 1) & 3], stream).is_ok() {
            self.0.check_tensors();
        }
    }
}

/// Instruction strings through the tokenizers and prompt layouts of the
/// bundled manifests (the stand-ins' span layout, Kosmos-2's and CLIP's).
pub struct Instruction {
    encoders: Vec<TextEncoder>,
}

impl Instruction {
    /// `manifests`: paths of manifests whose text inputs to fuzz.
    pub fn new(manifests: &[PathBuf]) -> Result<Self, String> {
        let mut encoders = Vec::new();
        for path in manifests {
            let loaded = Manifest::load(path).map_err(|e| e.to_string())?;
            for (spec, tok) in loaded.manifest.texts.iter().zip(&loaded.tokenizer_paths) {
                encoders.push(TextEncoder::new(spec.clone(), tok).map_err(|e| e.to_string())?);
            }
        }
        Ok(Instruction { encoders })
    }

    pub fn bundled(models: &Path) -> Result<Self, String> {
        Self::new(&[models.join("hybrid.json"), models.join("hf_tiny/hybrid/hybrid.json")])
    }
}

impl Target for Instruction {
    fn name(&self) -> &'static str {
        "instruction"
    }

    fn max_len(&self) -> usize {
        // The node refuses longer instructions before they reach a tokenizer
        // (instruction.max_bytes, 1024 by default).
        1024
    }

    fn run(&mut self, data: &[u8]) {
        let text = ros_string(data);
        for e in &self.encoders {
            // An instruction the encoder refuses is a clear error, not a panic.
            let Ok(tokens) = e.encode(&text) else { continue };
            let spec = e.spec();
            if spec.padding == Padding::MaxLength {
                assert_eq!(tokens.len(), spec.max_length, "padded rows have max_length ids");
            } else {
                assert!(tokens.len() <= spec.max_length && !tokens.is_empty(), "exact rows fit max_length");
            }
        }
    }
}

/// The report tool's bag reader: an MCAP file, then the CDR payloads of `InferenceStats`.
///
/// Input: a selector byte (even: an MCAP file; odd: one CDR payload), then the bytes.
pub struct Bag;

impl Target for Bag {
    fn name(&self) -> &'static str {
        "bag"
    }

    fn max_len(&self) -> usize {
        64 << 10
    }

    fn run(&mut self, data: &[u8]) {
        let Some((&sel, bytes)) = data.split_first() else { return };
        if sel % 2 == 0 {
            let _ = mobile_vla_report::bag::stats_in(bytes, "/mobile_vla/inference_stats", "fuzz.mcap");
        } else {
            let _ = mobile_vla_report::cdr::decode(bytes);
        }
    }
}

//! The fuzz targets: every parser of bytes that arrive from outside the node.
//!
//! Owns how a target reads its input bytes (a small header of fields, then
//! the payload) and the property it checks beyond "no panic, no hang": a
//! frame the preprocessor accepts yields finite tensors of the model's shape;
//! an instruction always yields token rows of the manifest's length. It never
//! decides whether a failure is acceptable: a panic is a bug, whatever the input.
//!
//! The input readers (`RawInput`, `CompressedInput`, `BagInput`, `ros_string`)
//! are the one definition of each corpus folder's format: the differential
//! targets (`differential`) read the same folders through them.

use std::path::{Path, PathBuf};

use mobile_vla_policy::manifest::{Manifest, Padding};
use mobile_vla_policy::text::TextEncoder;
use mobile_vla_recordings::stats::Stats;
use mobile_vla_vision::{
    ChannelOrder, DType, Filter, ImageSpec, JpegScaling, Layout, Preprocessor, RawFrame, Resampling, ResizeMode, Tensor,
};

/// One fuzz target: a name, its corpus, its input size cap, and the function under test.
pub trait Target {
    fn name(&self) -> &'static str;
    /// The folder of `corpus/` it starts from and replays. A target that reads
    /// another's input format shares that one's folder (no corpus is copied).
    fn corpus(&self) -> &'static str {
        self.name()
    }
    /// The longest input worth generating.
    fn max_len(&self) -> usize;
    /// How many runs of one input check it every way this target can: a
    /// differential target checks one known-good input per run, in turn, so
    /// a corpus replay runs each file this many times.
    fn cases(&self) -> usize {
        1
    }
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
pub(crate) struct Frames {
    pub(crate) pre: Preprocessor,
    pub(crate) specs: Vec<ImageSpec>,
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
pub fn ros_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).unwrap_or("").to_owned()
}

/// The encodings the node knows, and a few it must refuse.
pub const ENCODINGS: [&str; 10] =
    ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "yuv422", "yuv422_yuy2", "mono16", "bayer_rggb8", "16UC1"];

/// A `sensor_msgs/Image` as the fuzz input spells it: every field the node
/// reads, and the data.
///
/// Input: width u16, height u16, step u32 (little-endian), an encoding
/// selector (below `ENCODINGS.len()`: that one; above: the next bytes as
/// the encoding string), then the data.
pub struct RawInput<'a> {
    pub width: u32,
    pub height: u32,
    pub step: u32,
    pub encoding: String,
    pub data: &'a [u8],
}

impl<'a> RawInput<'a> {
    /// None when the input is shorter than its header.
    pub fn read(data: &'a [u8]) -> Option<Self> {
        if data.len() < 9 {
            return None;
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
        Some(RawInput { width, height, step, encoding, data: pixels })
    }

    pub fn frame(&self) -> RawFrame<'_> {
        RawFrame { width: self.width, height: self.height, encoding: &self.encoding, step: self.step, data: self.data }
    }
}

/// The longest `image` input worth generating (a 40x30 RGBA seed is 4.8 KB).
pub const RAW_MAX_LEN: usize = 64 << 10;

/// `sensor_msgs/Image` through every resize path, in both resampling modes.
#[derive(Default)]
pub struct RawImage(Frames);

impl Target for RawImage {
    fn name(&self) -> &'static str {
        "image"
    }

    fn max_len(&self) -> usize {
        RAW_MAX_LEN
    }

    fn run(&mut self, data: &[u8]) {
        let Some(input) = RawInput::read(data) else { return };
        let frame = input.frame();
        for resampling in [Resampling::Exact, Resampling::Simd] {
            self.0.pre.set_resampling(resampling);
            if self.0.pre.raw(&frame).is_ok() {
                self.0.check_tensors();
            }
        }
    }
}

pub const FORMATS: [&str; 4] = ["jpeg", "png", "rgb8; jpeg compressed bgr8", ""];

/// A `sensor_msgs/CompressedImage` as the fuzz input spells it: the format
/// field and the stream (JPEG, PNG, anything), and the JPEG scaling to decode with.
///
/// Input: a flags byte (bit 0: reduced JPEG scaling; bits 1-2: the format
/// string), then the data.
pub struct CompressedInput<'a> {
    pub scaling: JpegScaling,
    pub format: &'static str,
    pub stream: &'a [u8],
}

impl<'a> CompressedInput<'a> {
    /// None for an empty input.
    pub fn read(data: &'a [u8]) -> Option<Self> {
        let (&flags, stream) = data.split_first()?;
        let scaling = if flags & 1 == 1 { JpegScaling::Reduced } else { JpegScaling::Full };
        Some(CompressedInput { scaling, format: FORMATS[(flags as usize >> 1) & 3], stream })
    }
}

/// The longest `compressed` input worth generating (the PNG bomb seed is 46 KB).
pub const COMPRESSED_MAX_LEN: usize = 256 << 10;

/// `sensor_msgs/CompressedImage`: JPEG and PNG, full and DCT-scaled, bombs and truncations.
#[derive(Default)]
pub struct Compressed(Frames);

impl Target for Compressed {
    fn name(&self) -> &'static str {
        "compressed"
    }

    fn max_len(&self) -> usize {
        COMPRESSED_MAX_LEN
    }

    fn run(&mut self, data: &[u8]) {
        let Some(input) = CompressedInput::read(data) else { return };
        self.0.pre.set_jpeg_scaling(input.scaling);
        if self.0.pre.compressed(input.format, input.stream).is_ok() {
            self.0.check_tensors();
        }
    }
}

/// Instruction strings through the tokenizers and prompt layouts of the
/// bundled manifests (the stand-ins' span layout, Kosmos-2's and CLIP's).
pub struct Instruction {
    pub(crate) encoders: Vec<TextEncoder>,
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
        Self::new(&Self::bundled_manifests(models))
    }

    /// The stand-in's manifest (span layout) and the tiny Hugging Face hybrid's (Kosmos-2 and CLIP).
    pub fn bundled_manifests(models: &Path) -> Vec<PathBuf> {
        vec![models.join("hybrid.json"), models.join("hf_tiny/hybrid/hybrid.json")]
    }
}

/// The node refuses longer instructions before they reach a tokenizer
/// (instruction.max_bytes, 1024 by default).
pub const INSTRUCTION_MAX_LEN: usize = 1024;

impl Target for Instruction {
    fn name(&self) -> &'static str {
        "instruction"
    }

    fn max_len(&self) -> usize {
        INSTRUCTION_MAX_LEN
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

/// The topic the report tool reads.
const STATS_TOPIC: &str = "/mobile_vla/inference_stats";

/// The report tool's input as the fuzz input spells it: an MCAP file, or the
/// CDR payload of one `InferenceStats`.
///
/// Input: a selector byte (even: an MCAP file; odd: one CDR payload), then the bytes.
pub enum BagInput<'a> {
    Mcap(&'a [u8]),
    Cdr(&'a [u8]),
}

impl<'a> BagInput<'a> {
    /// None for an empty input.
    pub fn read(data: &'a [u8]) -> Option<Self> {
        let (&sel, bytes) = data.split_first()?;
        Some(if sel % 2 == 0 { BagInput::Mcap(bytes) } else { BagInput::Cdr(bytes) })
    }

    /// What the report tool reads from it: every message on its topic (one for a payload).
    pub fn decode(&self) -> Result<Vec<Stats>, mobile_vla_recordings::Error> {
        match self {
            BagInput::Mcap(bytes) => mobile_vla_recordings::stats::stats_in(bytes, STATS_TOPIC, "fuzz.mcap"),
            BagInput::Cdr(bytes) => mobile_vla_recordings::stats::decode(bytes).map(|s| vec![s]),
        }
    }
}

/// The longest `bag` input worth generating (the recorded bag is 6.4 KB).
pub const BAG_MAX_LEN: usize = 64 << 10;

/// The report tool's bag reader: MCAP files and the CDR payloads of `InferenceStats`.
pub struct Bag;

impl Target for Bag {
    fn name(&self) -> &'static str {
        "bag"
    }

    fn max_len(&self) -> usize {
        BAG_MAX_LEN
    }

    fn run(&mut self, data: &[u8]) {
        if let Some(input) = BagInput::read(data) {
            let _ = input.decode();
        }
    }
}

//! Differential "good after bad" targets: whatever input came before, a
//! known-good input gives bit for bit what a fresh instance gives it.
//!
//! Owns that property and the known-good inputs it is checked on. Each target
//! holds one long-lived instance (the preprocessor on the fuzzing specs, the
//! bundled text encoders, the report tool's bag reader) and, computed once at
//! construction with a new instance for each, what a fresh instance makes of
//! every known-good input G. Per fuzz input X it runs X on the long-lived
//! instance (any result), then the next G in turn, and asserts that G is
//! accepted and that its whole output (every tensor's f32 or f16 bits, every
//! token id, every decoded field's bits) equals the fresh one. So any state an
//! input leaves behind (a decoder's error flag, a stale buffer, padding drawn
//! for another frame size, the other scaling or resampling mode's leftovers)
//! is a failure, as it would be for the node's next camera frame.
//!
//! It reads inputs exactly as the plain targets do (their readers and corpus
//! folders) and never judges X's own result: that is the plain targets' job.
//! A failure may need earlier inputs as well as X (the instance lives across
//! the run); the fuzzer says whether X alone reproduces it on a fresh target.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use mobile_vla_policy::text::Tokens;
use mobile_vla_recordings::stats::Stats;
use mobile_vla_vision::{FrameError, JpegScaling, Preprocessor, Resampling, Tensor};

use crate::targets::{
    ros_string, BagInput, CompressedInput, Frames, Instruction, RawInput, Target, BAG_MAX_LEN, COMPRESSED_MAX_LEN,
    INSTRUCTION_MAX_LEN, RAW_MAX_LEN,
};

/// Corpus files compiled in, by name: the known-good inputs are real seeds,
/// in their folder's input format, so they are read as the fuzzed ones are.
macro_rules! corpus_files {
    ($dir:literal: $($file:literal),+ $(,)?) => {
        &[$(($file, include_bytes!(concat!("../corpus/", $dir, "/", $file)) as &[u8])),+]
    };
}

type Files = &'static [(&'static str, &'static [u8])];

/// Baseline 4:2:0 and 4:4:4, grey, progressive, optimised with restart
/// markers (and the "rgb8; jpeg compressed bgr8" format field), 640x480 (DCT
/// scale 1/8 where reduced; the 64x48 ones get 1/2), no format field.
const JPEGS: Files = corpus_files!("compressed":
    "00_light_left_q90.jpg",
    "01_centred_444.jpg",
    "grey.jpg",
    "progressive.jpg",
    "optimized_restart.jpg",
    "full_640x480.jpg",
    "no_format_field.jpg",
);

/// RGB, RGBA, grey, grey + alpha, palette.
const PNGS: Files =
    corpus_files!("compressed": "02_light_right_png", "rgba.png", "grey.png", "grey_alpha.png", "palette.png");

/// Every encoding the node reads, padded rows, and another frame size (so
/// the letterbox's padding is drawn for a new size).
const RAWS: Files = corpus_files!("image":
    "00_light_left_rgb8",
    "01_centred_bgr8",
    "02_light_right_rgba8",
    "00_light_left_bgra8",
    "01_centred_mono8",
    "02_light_right_yuv422",
    "00_light_left_yuv422_yuy2",
    "01_centred_rgb8_padded",
    "odd_7x5_rgb8",
);

/// The bag as recorded, and single payloads.
const BAGS: Files = corpus_files!("bag": "recorded.mcap", "payload_0.cdr", "payload_2.cdr");

/// Instructions the node must keep encoding the same way: English, Korean,
/// German, one cut to `max_length`, one with special tokens typed as text.
const INSTRUCTIONS: [&str; 5] = [
    "navigate around the obstacles to the cup",
    "장애물을 피해 음료수 페트병 앞으로 도착해라",
    "fahre nach links zur Tür, dann halt",
    concat!(
        "Go to the zebra-striped box #3! Then keep going forward, slowly, past the open door, the two chairs, ",
        "the long table, the shelves and the plants by the window, all the way to the far wall of the room; ",
        "turn left there, follow the wall until you see the charging dock, wait for the light to turn green, ",
        "then back into the dock very carefully, without touching the cables on the floor, and stop there ",
        "until somebody calls you again. If anything blocks the way, stop and wait for it to move."
    ),
    "<grounding> go to </s> the <phrase> cup </phrase>",
];

/// One image input's tensor as bits: equal only if equal bit for bit (-0 and NaN payloads included).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bits {
    F32(Vec<u32>),
    F16(Vec<u16>),
}

/// Every image input's tensor from the preprocessor's last accepted frame.
fn tensors(pre: &Preprocessor, inputs: usize) -> Vec<Bits> {
    (0..inputs)
        .map(|i| match pre.tensor(i) {
            Tensor::F32(v) => Bits::F32(v.iter().map(|x| x.to_bits()).collect()),
            Tensor::F16(v) => Bits::F16(v.iter().map(|x| x.to_bits()).collect()),
        })
        .collect()
}

/// Where the preprocessor's tensors first differ from `want`, if they do
/// (compared in place: this runs for every fuzz input).
fn difference(pre: &Preprocessor, want: &[Bits]) -> Option<String> {
    fn first<T: PartialEq + Debug>(i: usize, got: impl ExactSizeIterator<Item = T>, want: &[T]) -> Option<String> {
        if got.len() != want.len() {
            return Some(format!("input {i}: {} values, fresh {}", got.len(), want.len()));
        }
        let (j, (g, w)) = got.zip(want).enumerate().find(|(_, (g, w))| g != *w)?;
        Some(format!("input {i}, value {j}: bits {g:?}, fresh {w:?}"))
    }
    want.iter().enumerate().find_map(|(i, w)| match (pre.tensor(i), w) {
        (Tensor::F32(got), Bits::F32(w)) => first(i, got.iter().map(|x| x.to_bits()), w),
        (Tensor::F16(got), Bits::F16(w)) => first(i, got.iter().map(|x| x.to_bits()), w),
        _ => Some(format!("input {i}: another dtype than fresh")),
    })
}

/// A known-good input of a preprocessor target and the fresh preprocessor's tensors for it.
struct GoodFrame {
    name: &'static str,
    bytes: &'static [u8],
    fresh: Vec<Bits>,
}

/// Which known-good case the next input is followed by: cycles through `0..cases`.
#[derive(Default)]
struct Turn(usize);

impl Turn {
    fn next(&mut self, cases: usize) -> usize {
        let i = self.0 % cases;
        self.0 = i + 1;
        i
    }
}

/// A known-good corpus file through `pre` at `scaling`, as the `compressed` target reads it.
fn decode_good(pre: &mut Preprocessor, scaling: JpegScaling, bytes: &[u8]) -> Result<(), FrameError> {
    let g = CompressedInput::read(bytes).expect("a compressed seed has its flags byte");
    pre.set_jpeg_scaling(scaling);
    pre.compressed(g.format, g.stream)
}

/// Compressed frames: any `compressed` input X (its own format and JPEG
/// scaling, so a reduced decode comes before a full one and the other way
/// round), then a known-good JPEG or PNG at this target's scaling.
pub struct CompressedAfter {
    name: &'static str,
    scaling: JpegScaling,
    frames: Frames,
    goods: Vec<GoodFrame>,
    turn: Turn,
}

impl CompressedAfter {
    fn new(name: &'static str, scaling: JpegScaling, files: Files) -> Self {
        let goods = files
            .iter()
            .map(|&(file, bytes)| {
                let mut fresh = Frames::default();
                decode_good(&mut fresh.pre, scaling, bytes)
                    .unwrap_or_else(|e| panic!("{name}: a fresh preprocessor refuses known-good {file}: {e}"));
                GoodFrame { name: file, bytes, fresh: tensors(&fresh.pre, fresh.specs.len()) }
            })
            .collect();
        CompressedAfter { name, scaling, frames: Frames::default(), goods, turn: Turn::default() }
    }

    /// Known-good JPEGs decoded at full scale.
    pub fn jpeg() -> Self {
        Self::new("diff-jpeg", JpegScaling::Full, JPEGS)
    }

    /// Known-good JPEGs decoded DCT-scaled (`JpegScaling::Reduced`).
    pub fn jpeg_reduced() -> Self {
        Self::new("diff-jpeg-reduced", JpegScaling::Reduced, JPEGS)
    }

    /// Known-good PNGs.
    pub fn png() -> Self {
        Self::new("diff-png", JpegScaling::Full, PNGS)
    }
}

impl Target for CompressedAfter {
    fn name(&self) -> &'static str {
        self.name
    }

    fn corpus(&self) -> &'static str {
        "compressed"
    }

    fn max_len(&self) -> usize {
        COMPRESSED_MAX_LEN
    }

    fn cases(&self) -> usize {
        self.goods.len()
    }

    fn run(&mut self, data: &[u8]) {
        let pre = &mut self.frames.pre;
        if let Some(x) = CompressedInput::read(data) {
            pre.set_jpeg_scaling(x.scaling);
            let _ = pre.compressed(x.format, x.stream);
        }
        let g = &self.goods[self.turn.next(self.goods.len())];
        let scaling = self.scaling;
        if let Err(e) = decode_good(pre, scaling, g.bytes) {
            panic!("known-good {} ({scaling:?}) refused after this input: {e}", g.name);
        }
        if let Some(d) = difference(pre, &g.fresh) {
            panic!("known-good {} ({scaling:?}) after this input differs from a fresh preprocessor: {d}", g.name);
        }
    }
}

const RESAMPLINGS: [Resampling; 2] = [Resampling::Exact, Resampling::Simd];

/// A known-good raw frame and the fresh preprocessor's tensors for it, in each resampling mode.
struct GoodRaw {
    name: &'static str,
    bytes: &'static [u8],
    fresh: [Vec<Bits>; 2],
}

/// Raw frames: any `image` input X in one resampling mode, then a known-good
/// frame in the same or the other mode (every pair in turn). The mode is set
/// only when it changes, as the node sets it once: the SIMD resampler lives
/// across frames too.
pub struct RawAfter {
    frames: Frames,
    resampling: Resampling,
    goods: Vec<GoodRaw>,
    turn: Turn,
}

impl Default for RawAfter {
    fn default() -> Self {
        let goods =
            RAWS.iter()
                .map(|&(file, bytes)| {
                    let input = RawInput::read(bytes).expect("an image seed has its header");
                    let fresh = RESAMPLINGS.map(|mode| {
                        let mut fresh = Frames::default();
                        fresh.pre.set_resampling(mode);
                        fresh.pre.raw(&input.frame()).unwrap_or_else(|e| {
                            panic!("diff-image: a fresh preprocessor refuses known-good {file}: {e}")
                        });
                        tensors(&fresh.pre, fresh.specs.len())
                    });
                    GoodRaw { name: file, bytes, fresh }
                })
                .collect();
        RawAfter { frames: Frames::default(), resampling: Resampling::Exact, goods, turn: Turn::default() }
    }
}

impl RawAfter {
    fn set_resampling(&mut self, mode: Resampling) {
        if self.resampling != mode {
            self.frames.pre.set_resampling(mode);
            self.resampling = mode;
        }
    }
}

impl Target for RawAfter {
    fn name(&self) -> &'static str {
        "diff-image"
    }

    fn corpus(&self) -> &'static str {
        "image"
    }

    fn max_len(&self) -> usize {
        RAW_MAX_LEN
    }

    fn cases(&self) -> usize {
        self.goods.len() * RESAMPLINGS.len() * RESAMPLINGS.len()
    }

    fn run(&mut self, data: &[u8]) {
        let case = self.turn.next(self.cases());
        let (g, modes) = (case % self.goods.len(), case / self.goods.len());
        let (x_mode, g_mode) = (modes % 2, modes / 2);
        self.set_resampling(RESAMPLINGS[x_mode]);
        if let Some(x) = RawInput::read(data) {
            let _ = self.frames.pre.raw(&x.frame());
        }
        self.set_resampling(RESAMPLINGS[g_mode]);
        let g = &self.goods[g];
        let input = RawInput::read(g.bytes).expect("an image seed has its header");
        let (gm, xm) = (RESAMPLINGS[g_mode], RESAMPLINGS[x_mode]);
        if let Err(e) = self.frames.pre.raw(&input.frame()) {
            panic!("known-good {} ({gm:?} after {xm:?}) refused after this input: {e}", g.name);
        }
        if let Some(d) = difference(&self.frames.pre, &g.fresh[g_mode]) {
            panic!(
                "known-good {} ({gm:?} after {xm:?}) after this input differs from a fresh preprocessor: {d}",
                g.name
            );
        }
    }
}

/// Instructions: any `instruction` input X through every encoder of the
/// bundled manifests, then a known-good instruction through them all.
pub struct InstructionAfter {
    long_lived: Instruction,
    /// Each known-good instruction and every encoder's tokens for it, fresh.
    goods: Vec<(&'static str, Vec<Tokens>)>,
    turn: Turn,
}

impl InstructionAfter {
    /// `manifests`: paths of manifests whose text inputs to fuzz.
    pub fn new(manifests: &[PathBuf]) -> Result<Self, String> {
        let mut goods = Vec::new();
        for text in INSTRUCTIONS {
            let fresh = Instruction::new(manifests)?;
            let tokens = fresh.encoders.iter().map(|e| e.encode(text)).collect::<Result<Vec<_>, _>>();
            goods.push((text, tokens.map_err(|e| format!("a fresh encoder refuses known-good '{text}': {e}"))?));
        }
        Ok(InstructionAfter { long_lived: Instruction::new(manifests)?, goods, turn: Turn::default() })
    }

    pub fn bundled(models: &Path) -> Result<Self, String> {
        Self::new(&Instruction::bundled_manifests(models))
    }
}

impl Target for InstructionAfter {
    fn name(&self) -> &'static str {
        "diff-instruction"
    }

    fn corpus(&self) -> &'static str {
        "instruction"
    }

    fn max_len(&self) -> usize {
        INSTRUCTION_MAX_LEN
    }

    fn cases(&self) -> usize {
        self.goods.len()
    }

    fn run(&mut self, data: &[u8]) {
        let text = ros_string(data);
        for e in &self.long_lived.encoders {
            let _ = e.encode(&text);
        }
        let (good, fresh) = &self.goods[self.turn.next(self.goods.len())];
        for (k, (e, want)) in self.long_lived.encoders.iter().zip(fresh).enumerate() {
            let got = e.encode(good).unwrap_or_else(|err| panic!("encoder {k}: known-good '{good}' refused: {err}"));
            assert!(&got == want, "encoder {k}: known-good '{good}' after this input: {got:?}, fresh {want:?}");
        }
    }
}

/// One decoded message with every float as its bits: equal only if equal bit for bit.
#[derive(PartialEq, Eq)]
struct StatsBits<'a> {
    floats: Vec<u64>,
    strings: [&'a str; 3],
    ints: (u64, u64, bool, u8, u32),
}

/// Destructured in full, so a field added to `Stats` cannot go uncompared.
fn stats_bits(s: &Stats) -> StatsBits<'_> {
    let Stats {
        stamp_s,
        frame_id,
        frame_seq,
        command_seq,
        policy,
        execution_provider,
        fallback_active,
        outcome,
        frame_age_ms,
        preprocess_ms,
        inference_ms,
        postprocess_ms,
        total_ms,
        stamp_to_publish_ms,
        frames_dropped,
        action,
    } = s;
    let floats = [stamp_s, frame_age_ms, preprocess_ms, inference_ms, postprocess_ms, total_ms, stamp_to_publish_ms];
    StatsBits {
        floats: floats.into_iter().chain(action).map(|f| f.to_bits()).collect(),
        strings: [frame_id, policy, execution_provider],
        ints: (*frame_seq, *command_seq, *fallback_active, *outcome, *frames_dropped),
    }
}

/// Whether two reads decoded the same messages, bit for bit.
fn same_stats(a: &[Stats], b: &[Stats]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| stats_bits(a) == stats_bits(b))
}

/// The report tool's reader: any `bag` input X, then a known-good bag or
/// payload, which must decode to what it decoded on its own at construction.
pub struct BagAfter {
    goods: Vec<(&'static str, &'static [u8], Vec<Stats>)>,
    turn: Turn,
}

impl Default for BagAfter {
    fn default() -> Self {
        let goods = BAGS
            .iter()
            .map(|&(file, bytes)| {
                let input = BagInput::read(bytes).expect("a bag seed has its selector byte");
                let stats =
                    input.decode().unwrap_or_else(|e| panic!("diff-bag: known-good {file} does not decode: {e}"));
                assert!(!stats.is_empty(), "diff-bag: known-good {file} has no messages");
                (file, bytes, stats)
            })
            .collect();
        BagAfter { goods, turn: Turn::default() }
    }
}

impl Target for BagAfter {
    fn name(&self) -> &'static str {
        "diff-bag"
    }

    fn corpus(&self) -> &'static str {
        "bag"
    }

    fn max_len(&self) -> usize {
        BAG_MAX_LEN
    }

    fn cases(&self) -> usize {
        self.goods.len()
    }

    fn run(&mut self, data: &[u8]) {
        if let Some(x) = BagInput::read(data) {
            let _ = x.decode();
        }
        let (file, bytes, fresh) = &self.goods[self.turn.next(self.goods.len())];
        let got = BagInput::read(bytes)
            .expect("a bag seed has its selector byte")
            .decode()
            .unwrap_or_else(|e| panic!("known-good {file} refused after this input: {e}"));
        assert!(same_stats(&got, fresh), "known-good {file} after this input: {got:?}, fresh {fresh:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_compare_bit_for_bit() {
        let bytes = BAGS[1].1;
        let a = BagInput::read(bytes).unwrap().decode().unwrap();
        let mut b = a.clone();
        assert!(same_stats(&a, &b));
        // One bit off in the last place of one field.
        b[0].inference_ms = f64::from_bits(a[0].inference_ms.to_bits() ^ 1);
        assert!(!same_stats(&a, &b));
    }

    #[test]
    fn the_known_good_instructions_include_one_cut_to_max_length() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let t = InstructionAfter::bundled(&models).unwrap();
        assert!(t.goods.iter().any(|(_, tokens)| tokens.iter().any(|t| t.truncated)));
        assert!(t.goods.iter().any(|(_, tokens)| tokens.iter().all(|t| !t.truncated)));
    }

    #[test]
    fn the_reduced_target_really_decodes_dct_scaled() {
        // Else diff-jpeg-reduced would only repeat diff-jpeg.
        let (full, reduced) = (CompressedAfter::jpeg(), CompressedAfter::jpeg_reduced());
        let differ = full.goods.iter().zip(&reduced.goods).filter(|(f, r)| f.fresh != r.fresh).count();
        assert!(differ >= full.goods.len() / 2, "only {differ} known-good JPEGs decode differently when reduced");
    }

    #[test]
    fn every_case_comes_in_turn() {
        let mut t = Turn::default();
        let seen: Vec<usize> = (0..7).map(|_| t.next(3)).collect();
        assert_eq!(seen, [0, 1, 2, 0, 1, 2, 0]);
    }
}

//! Resized pixels into a model's input tensor: normalisation, channel order, layout, element type.
//!
//! Owns one image input's buffers ([`ImagePipeline`]): the resampler state,
//! the 8-bit resized image, and the f32 (and f16) tensor, rewritten for every
//! frame. It never decodes (that is `decode`) and never refuses a frame: it
//! is handed only frames that passed every check.

use half::{f16, slice::HalfFloatSliceExt};

use crate::bilinear;
use crate::decode::Source;
use crate::pillow::{Axis, Filter, Packed, Resampler};
use crate::simd::SimdResampler;
use crate::spec::{ChannelOrder, DType, ImageSpec, Layout};

/// The prepared tensor, borrowed from the preprocessor's buffer.
pub enum Tensor<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// Writes normalised pixels into the tensor, at an offset in the output
/// (letterbox), in the tensor's layout and channel order.
pub(crate) struct Writer<'a> {
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
    pub(crate) fn put(&mut self, x: usize, y: usize, sample: impl Fn(usize) -> f32) {
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
    pub(crate) fn put_row(&mut self, y: usize, row: &[f32]) {
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
pub(crate) struct ImagePipeline {
    pub(crate) spec: ImageSpec,
    bilinear: bilinear::Bilinear,
    pillow: Resampler,
    /// Some for `Resampling::Simd`.
    pub(crate) simd: Option<SimdResampler>,
    /// Pillow's 8-bit output, before normalisation.
    resized: Vec<u8>,
    pub(crate) f32_out: Vec<f32>,
    f16_out: Vec<f16>,
    /// The geometry of the last frame size, and whether the padding is filled.
    last: Option<(u32, u32)>,
}

impl ImagePipeline {
    pub(crate) fn new(spec: ImageSpec) -> Self {
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

    pub(crate) fn uses_pillow(&self) -> bool {
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
    pub(crate) fn fill(&mut self, src: &Source<'_>, rgb: Option<&[u8]>) {
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

    pub(crate) fn tensor(&self) -> Tensor<'_> {
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

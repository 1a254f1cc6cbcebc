//! Half-pixel bilinear sampling without antialiasing, fused with the colour
//! conversion and normalisation: `cv2.INTER_LINEAR` / `torch` `interpolate`
//! (`align_corners=False`), the transform of the original team's exports and
//! of manifests that ask for `filter: bilinear, antialias: false`.
//!
//! Owns the sampling taps (`src = (dst + 0.5) * in / out - 0.5`, edge
//! clamped) and the one pass from source pixels to the tensor. It reads four
//! source pixels per output pixel and nothing else, which is why it is the
//! fast path; it is not what PIL does on a downscale (see `pillow`).

use super::decode::Source;
use super::pillow::Axis;
use super::Writer;

/// Bilinear taps along one axis: for each kept output index, two absolute
/// source indices and the weight of the second.
#[derive(Debug, Default, Clone)]
struct Taps {
    key: Option<Axis>,
    i0: Vec<u32>,
    i1: Vec<u32>,
    w1: Vec<f32>,
}

impl Taps {
    fn update(&mut self, a: Axis) {
        if self.key == Some(a) {
            return;
        }
        self.key = Some(a);
        self.i0.clear();
        self.i1.clear();
        self.w1.clear();
        let ratio = a.len as f32 / a.full as f32;
        for d in a.keep_start..a.keep_start + a.keep {
            let s = ((d as f32 + 0.5) * ratio - 0.5).max(0.0);
            let s0 = (s.floor() as u32).min(a.len - 1);
            let s1 = (s0 + 1).min(a.len - 1);
            self.i0.push(a.start + s0);
            self.i1.push(a.start + s1);
            self.w1.push(s - s0 as f32);
        }
    }
}

/// Bilinear blend of `[top-left, top-right, bottom-left, bottom-right]`.
#[inline(always)]
fn blend([p00, p01, p10, p11]: [f32; 4], wx: f32, wy: f32) -> f32 {
    let top = p00 + (p01 - p00) * wx;
    let bot = p10 + (p11 - p10) * wx;
    top + (bot - top) * wy
}

#[derive(Default)]
pub(super) struct Bilinear {
    xs: Taps,
    ys: Taps,
}

impl Bilinear {
    /// Samples `src` over the axes into `out` (which normalises and lays out).
    pub fn fill(&mut self, src: &Source<'_>, x: Axis, y: Axis, out: &mut Writer<'_>) {
        self.xs.update(x);
        self.ys.update(y);
        match (src.rgb_offsets(), src.bytes_per_pixel()) {
            (Some(rgb), 3) => self.fill_packed::<3>(src, rgb, out),
            (Some(rgb), 4) => self.fill_packed::<4>(src, rgb, out),
            _ => self.fill_any(src, out),
        }
    }

    /// Any encoding, one pixel at a time (mono, YUV).
    fn fill_any(&self, src: &Source<'_>, out: &mut Writer<'_>) {
        for (oy, ((&ya, &yb), &wy)) in self.ys.i0.iter().zip(&self.ys.i1).zip(&self.ys.w1).enumerate() {
            let (ya, yb) = (ya as usize, yb as usize);
            for (ox, ((&xa, &xb), &wx)) in self.xs.i0.iter().zip(&self.xs.i1).zip(&self.xs.w1).enumerate() {
                let (xa, xb) = (xa as usize, xb as usize);
                let (p00, p01, p10, p11) =
                    (src.rgb_at(xa, ya), src.rgb_at(xb, ya), src.rgb_at(xa, yb), src.rgb_at(xb, yb));
                out.put(ox, oy, |s| blend([p00[s] as f32, p01[s] as f32, p10[s] as f32, p11[s] as f32], wx, wy));
            }
        }
    }

    /// Packed 8-bit pixels (`N` bytes each, red/green/blue at byte offsets
    /// `rgb`): the same arithmetic, with the two source rows resolved once per
    /// output row instead of per sample.
    fn fill_packed<const N: usize>(&self, src: &Source<'_>, rgb: [usize; 3], out: &mut Writer<'_>) {
        let row_len = src.width as usize * N;
        let step = src.step;
        for (oy, ((&ya, &yb), &wy)) in self.ys.i0.iter().zip(&self.ys.i1).zip(&self.ys.w1).enumerate() {
            let (ya, yb) = (ya as usize, yb as usize);
            let ra = &src.data[ya * step..ya * step + row_len];
            let rb = &src.data[yb * step..yb * step + row_len];
            for (ox, ((&xa, &xb), &wx)) in self.xs.i0.iter().zip(&self.xs.i1).zip(&self.xs.w1).enumerate() {
                let (xa, xb) = (xa as usize * N, xb as usize * N);
                let (a0, a1, b0, b1) = (&ra[xa..xa + N], &ra[xb..xb + N], &rb[xa..xa + N], &rb[xb..xb + N]);
                out.put(ox, oy, |s| {
                    let k = rgb[s];
                    blend([a0[k] as f32, a1[k] as f32, b0[k] as f32, b1[k] as f32], wx, wy)
                });
            }
        }
    }
}

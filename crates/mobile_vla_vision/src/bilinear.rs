//! Half-pixel bilinear sampling without antialiasing, fused with the colour
//! conversion and normalisation: `cv2.INTER_LINEAR` / `torch` `interpolate`
//! (`align_corners=False`), the transform of the original team's exports and
//! of manifests that ask for `filter: bilinear, antialias: false`.
//!
//! Owns the sampling taps (`src = (dst + 0.5) * in / out - 0.5`, edge
//! clamped) and the one pass from source pixels to the tensor. It reads four
//! source pixels per output pixel and nothing else, which is why it is the
//! fast path; it is not what PIL does on a downscale (see `pillow`).

use crate::decode::Source;
use crate::pillow::Axis;
use crate::tensor::Writer;

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
    /// One output row, RGB interleaved, before normalisation.
    row: Vec<f32>,
    /// Two source rows interpolated across, with the source row each holds.
    rows: [(Option<u32>, Vec<f32>); 2],
}

impl Bilinear {
    /// Samples `src` over the axes into `out` (which normalises and lays out).
    pub fn fill(&mut self, src: &Source<'_>, x: Axis, y: Axis, out: &mut Writer<'_>) {
        self.xs.update(x);
        self.ys.update(y);
        // Channel offsets as constants: the inner loop then has no bounds checks.
        match (src.rgb_offsets(), src.bytes_per_pixel()) {
            (Some([0, 1, 2]), 3) => self.fill_packed::<3, 0, 1, 2>(src, out),
            (Some([2, 1, 0]), 3) => self.fill_packed::<3, 2, 1, 0>(src, out),
            (Some([0, 1, 2]), 4) => self.fill_packed::<4, 0, 1, 2>(src, out),
            (Some([2, 1, 0]), 4) => self.fill_packed::<4, 2, 1, 0>(src, out),
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
    /// `R`, `G`, `B`): the same arithmetic, separably. Each source row an output row
    /// needs is interpolated across once (kept while the next output row
    /// needs it too), the two rows are blended into `row` (RGB, 0..255) and
    /// the writer takes it whole: straight loops the compiler vectorises.
    fn fill_packed<const N: usize, const R: usize, const G: usize, const B: usize>(
        &mut self,
        src: &Source<'_>,
        out: &mut Writer<'_>,
    ) {
        let n = self.xs.i0.len();
        let row_len = src.width as usize * N;
        let Bilinear { xs, ys, row, rows } = self;
        let across = |y: usize, dst: &mut Vec<f32>| {
            let line = &src.data[y * src.step..y * src.step + row_len];
            dst.resize(n * 3, 0.0);
            for (d, ((&xa, &xb), &wx)) in dst.chunks_exact_mut(3).zip(xs.i0.iter().zip(&xs.i1).zip(&xs.w1)) {
                let a: &[u8; N] = line[xa as usize * N..][..N].try_into().expect("N bytes");
                let b: &[u8; N] = line[xb as usize * N..][..N].try_into().expect("N bytes");
                let lerp = |p: u8, q: u8| p as f32 + (q as f32 - p as f32) * wx;
                (d[0], d[1], d[2]) = (lerp(a[R], b[R]), lerp(a[G], b[G]), lerp(a[B], b[B]));
            }
        };
        row.resize(n * 3, 0.0);
        for (oy, ((&ya, &yb), &wy)) in ys.i0.iter().zip(&ys.i1).zip(&ys.w1).enumerate() {
            let [(ka, ra), (kb, rb)] = rows;
            if *kb == Some(ya) {
                std::mem::swap(ka, kb);
                std::mem::swap(ra, rb);
            }
            if *ka != Some(ya) {
                across(ya as usize, ra);
                *ka = Some(ya);
            }
            if *kb != Some(yb) {
                across(yb as usize, rb);
                *kb = Some(yb);
            }
            for ((o, &a), &b) in row.iter_mut().zip(ra.iter()).zip(rb.iter()) {
                *o = a + (b - a) * wy;
            }
            out.put_row(oy, row);
        }
        // The rows belong to this frame only.
        rows[0].0 = None;
        rows[1].0 = None;
    }
}

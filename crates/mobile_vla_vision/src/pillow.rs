//! Pillow's resampling, reproduced exactly: what the Hugging Face image
//! processors (PIL backend) do to a frame before a model sees it.
//!
//! Owns the filter kernels (`Image.NEAREST`, `BILINEAR`, `BICUBIC`), their
//! coefficient tables (antialiased on downscale: the kernel widens with the
//! scale) and the two 8-bit passes, horizontal then vertical, with Pillow's
//! 22-bit fixed-point coefficients, rounding and clipping, so the output is
//! the bytes `PIL.Image.resize` returns (tests compare with PIL itself). It
//! knows nothing about tensors or normalisation: 8-bit RGB in, 8-bit RGB out.
//!
//! An [`Axis`] says which source segment is resized to how many pixels and
//! which window of that result is kept, so "resize the whole frame, then
//! centre-crop" (CLIP) computes only the kept window, with exactly the
//! coefficients the full resize would use.

/// `PIL.Image.Resampling` filters the node reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Nearest => 0.0,
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Nearest => 0.0,
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// One axis of a resize: source pixels `[start, start + len)` become `full`
/// pixels, of which `[keep_start, keep_start + keep)` are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Axis {
    pub start: u32,
    pub len: u32,
    pub full: u32,
    pub keep_start: u32,
    pub keep: u32,
}

impl Axis {
    /// The whole segment, all of it kept.
    pub fn whole(start: u32, len: u32, out: u32) -> Self {
        Axis { start, len, full: out, keep_start: 0, keep: out }
    }

    fn is_identity(&self) -> bool {
        self.full == self.len && self.keep_start == 0 && self.keep == self.full
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per kept output pixel: the first source index (absolute) and its fixed-point weights.
#[derive(Debug, Default, Clone)]
struct Coeffs {
    key: Option<(Axis, Filter)>,
    first: Vec<u32>,
    count: Vec<u32>,
    /// `ksize` weights per output, the unused tail zero.
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for a crop of
    /// `len` pixels resized to `full`, keeping the window.
    fn update(&mut self, axis: Axis, filter: Filter) {
        if self.key == Some((axis, filter)) {
            return;
        }
        self.key = Some((axis, filter));
        self.first.clear();
        self.count.clear();
        self.weights.clear();
        let scale = axis.len as f64 / axis.full as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        self.ksize = support.ceil() as usize * 2 + 1;
        let mut k = vec![0.0f64; self.ksize];
        for xx in axis.keep_start..axis.keep_start + axis.keep {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // Pillow rounds by truncating (value + 0.5) toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(axis.len as i64) - xmin;
            let xmax = xmax.max(0) as usize;
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(xmax) {
                let w = filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            for (x, &kx) in k.iter().enumerate() {
                let w = if x < xmax && ww != 0.0 { kx / ww } else { 0.0 };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                self.weights.push(if w < 0.0 { (-0.5 + fixed) as i32 } else { (0.5 + fixed) as i32 });
            }
            self.first.push(axis.start + xmin as u32);
            self.count.push(xmax as u32);
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let w = &self.weights[i * self.ksize..i * self.ksize + self.count[i] as usize];
        (self.first[i] as usize, w)
    }
}

/// Pillow's nearest neighbour (an affine transform sampling pixel centres,
/// with its running sum): the absolute source index of each kept output.
fn nearest_indices(axis: Axis, out: &mut Vec<u32>) {
    out.clear();
    let step = axis.len as f64 / axis.full as f64;
    let mut pos = step * 0.5;
    for x in 0..axis.keep_start + axis.keep {
        if x >= axis.keep_start {
            let i = if pos < 0.0 { 0 } else { (pos as u32).min(axis.len - 1) };
            out.push(axis.start + i);
        }
        pos += step;
    }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A packed 8-bit source: `N` bytes a pixel, red/green/blue at byte offsets `rgb`.
#[derive(Clone, Copy)]
pub struct Packed<'a, const N: usize> {
    pub data: &'a [u8],
    pub step: usize,
    pub rgb: [usize; 3],
}

/// Reusable state for Pillow-exact resizes into packed RGB.
#[derive(Default)]
pub struct Resampler {
    xs: Coeffs,
    ys: Coeffs,
    near_x: Vec<u32>,
    near_y: Vec<u32>,
    /// The first pass's output (8-bit RGB, as Pillow's intermediate image).
    temp: Vec<u8>,
    acc: Vec<i32>,
}

/// Pillow (12 and later) runs the vertical pass first when the image shrinks
/// vertically by more than twice as many pixels as horizontally (measured
/// against PIL; the intermediate 8-bit image, and so the output, depends on
/// the order).
pub(super) fn vertical_first(x: Axis, y: Axis) -> bool {
    y.len > y.full && (y.len - y.full) as i64 > 2 * (x.len as i64 - x.full as i64)
}

impl Resampler {
    /// Resizes `src` into `out` (`x.keep * y.keep * 3` bytes, packed RGB, rows of `x.keep` pixels).
    pub fn resize<const N: usize>(&mut self, src: Packed<'_, N>, x: Axis, y: Axis, filter: Filter, out: &mut [u8]) {
        let (ow, oh) = (x.keep as usize, y.keep as usize);
        debug_assert_eq!(out.len(), ow * oh * 3);
        if filter == Filter::Nearest {
            nearest_indices(x, &mut self.near_x);
            nearest_indices(y, &mut self.near_y);
            for (oy, &sy) in self.near_y.iter().enumerate() {
                let row = &src.data[sy as usize * src.step..];
                for (ox, &sx) in self.near_x.iter().enumerate() {
                    let p = &row[sx as usize * N..sx as usize * N + N];
                    out[(oy * ow + ox) * 3..][..3].copy_from_slice(&[p[src.rgb[0]], p[src.rgb[1]], p[src.rgb[2]]]);
                }
            }
            return;
        }
        let (need_h, need_v) = (!x.is_identity(), !y.is_identity());
        if need_h {
            self.xs.update(x, filter);
        }
        if need_v {
            self.ys.update(y, filter);
        }
        let mut temp = std::mem::take(&mut self.temp);
        match (need_h, need_v) {
            (false, false) => copy(src, window(x), window(y), out),
            (true, false) => self.horizontal(src, window(y), out),
            (false, true) => self.vertical(src, window(x), out),
            (true, true) if vertical_first(x, y) => {
                // Only the source columns the horizontal taps read.
                let last = self.xs.first.len() - 1;
                let cols = self.xs.first[0] as usize..(self.xs.first[last] + self.xs.count[last]) as usize;
                temp.resize(cols.len() * oh * 3, 0);
                self.vertical(src, cols.clone(), &mut temp);
                let t = Packed::<3> { data: &temp, step: cols.len() * 3, rgb: [0, 1, 2] };
                self.horizontal_from(t, cols.start, 0..oh, out);
            }
            (true, true) => {
                // Only the source rows the vertical taps read (Pillow's ybox).
                let last = self.ys.first.len() - 1;
                let rows = self.ys.first[0] as usize..(self.ys.first[last] + self.ys.count[last]) as usize;
                temp.resize(rows.len() * ow * 3, 0);
                self.horizontal(src, rows.clone(), &mut temp);
                let t = Packed::<3> { data: &temp, step: ow * 3, rgb: [0, 1, 2] };
                self.vertical_from(t, rows.start, 0..ow, out);
            }
        }
        self.temp = temp;
    }

    /// Horizontal pass over source `rows` into `dst` (rows of `keep` RGB pixels).
    fn horizontal<const N: usize>(&self, src: Packed<'_, N>, rows: std::ops::Range<usize>, dst: &mut [u8]) {
        self.horizontal_from(src, 0, rows, dst)
    }

    /// As `horizontal`, for a source whose column 0 is absolute column `col0`.
    fn horizontal_from<const N: usize>(
        &self,
        src: Packed<'_, N>,
        col0: usize,
        rows: std::ops::Range<usize>,
        dst: &mut [u8],
    ) {
        let width = self.xs.first.len() * 3;
        for (r, d) in rows.zip(dst.chunks_exact_mut(width)) {
            let line = &src.data[r * src.step..];
            for (ox, d) in d.chunks_exact_mut(3).enumerate() {
                let (first, k) = self.xs.taps(ox);
                let first = first - col0;
                let px = &line[first * N..(first + k.len()) * N];
                // Every byte of the pixel summed (a fixed-size array the
                // compiler keeps in one vector register), the channels picked after.
                let mut acc = [1i32 << (PRECISION_BITS - 1); N];
                for (p, &w) in px.chunks_exact(N).zip(k) {
                    for (a, &b) in acc.iter_mut().zip(p) {
                        *a += b as i32 * w;
                    }
                }
                d.copy_from_slice(&src.rgb.map(|c| clip8(acc[c])));
            }
        }
    }

    /// Vertical pass over source columns `cols` into `dst` (rows of `cols.len()` RGB pixels).
    fn vertical<const N: usize>(&mut self, src: Packed<'_, N>, cols: std::ops::Range<usize>, dst: &mut [u8]) {
        self.vertical_from(src, 0, cols, dst)
    }

    /// As `vertical`, for a source whose row 0 is absolute row `row0`. Whole
    /// rows at a time, so the inner loop is contiguous for RGB sources.
    fn vertical_from<const N: usize>(
        &mut self,
        src: Packed<'_, N>,
        row0: usize,
        cols: std::ops::Range<usize>,
        dst: &mut [u8],
    ) {
        let width = cols.len() * 3;
        self.acc.resize(width, 0);
        let contiguous = N == 3 && src.rgb == [0, 1, 2];
        for (oy, d) in dst.chunks_exact_mut(width).enumerate() {
            let (first, k) = self.ys.taps(oy);
            self.acc.fill(1 << (PRECISION_BITS - 1));
            for (j, &w) in k.iter().enumerate() {
                let line = &src.data[(first + j - row0) * src.step..];
                if contiguous {
                    for (a, &p) in self.acc.iter_mut().zip(&line[cols.start * 3..cols.end * 3]) {
                        *a += p as i32 * w;
                    }
                } else {
                    for (a, p) in self.acc.chunks_exact_mut(3).zip(line[cols.start * N..cols.end * N].chunks_exact(N)) {
                        for c in 0..3 {
                            a[c] += p[src.rgb[c]] as i32 * w;
                        }
                    }
                }
            }
            for (d, &a) in d.iter_mut().zip(&self.acc) {
                *d = clip8(a);
            }
        }
    }
}

/// The kept pixels of an axis that is not resized, as absolute source indices.
fn window(a: Axis) -> std::ops::Range<usize> {
    let s = (a.start + a.keep_start) as usize;
    s..s + a.keep as usize
}

/// Nothing to resize: the kept pixels, in RGB order.
fn copy<const N: usize>(
    src: Packed<'_, N>,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let width = cols.len() * 3;
    for (r, d) in rows.zip(out.chunks_exact_mut(width)) {
        let line = &src.data[r * src.step + cols.start * N..];
        for (d, p) in d.chunks_exact_mut(3).zip(line.chunks_exact(N)) {
            d.copy_from_slice(&[p[src.rgb[0]], p[src.rgb[1]], p[src.rgb[2]]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(w: usize, h: usize, f: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                v.extend(f(x, y));
            }
        }
        v
    }

    fn resize(src: &[u8], w: u32, x: Axis, y: Axis, f: Filter) -> Vec<u8> {
        let mut out = vec![0; x.keep as usize * y.keep as usize * 3];
        let packed = Packed::<3> { data: src, step: w as usize * 3, rgb: [0, 1, 2] };
        Resampler::default().resize(packed, x, y, f, &mut out);
        out
    }

    #[test]
    fn a_flat_image_stays_flat_under_every_filter() {
        let src = rgb(37, 23, |_, _| [10, 128, 250]);
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            for (ow, oh) in [(8, 8), (50, 30), (37, 23)] {
                let out = resize(&src, 37, Axis::whole(0, 37, ow), Axis::whole(0, 23, oh), f);
                assert!(out.chunks(3).all(|p| p == [10, 128, 250]), "{f:?} {ow}x{oh}");
            }
        }
    }

    #[test]
    fn the_same_size_is_a_copy() {
        let src = rgb(5, 4, |x, y| [(x * 40) as u8, (y * 60) as u8, 7]);
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            assert_eq!(resize(&src, 5, Axis::whole(0, 5, 5), Axis::whole(0, 4, 4), f), src);
        }
    }

    #[test]
    fn halving_with_bilinear_weighs_the_widened_kernel() {
        // 4 -> 2: the triangle kernel widens to 2 px; output 0 (centre 1.0)
        // weighs pixels 0, 1, 2 by 3/7, 3/7, 1/7 and output 1 pixels 1, 2, 3
        // by 1/7, 3/7, 3/7: 500/7 -> 71 and 1420/7 -> 203, as PIL gives.
        let src = rgb(4, 1, |x, _| [[0, 100, 200, 240][x]; 3]);
        let out = resize(&src, 4, Axis::whole(0, 4, 2), Axis::whole(0, 1, 1), Filter::Bilinear);
        assert_eq!(out, vec![71, 71, 71, 203, 203, 203]);
    }

    #[test]
    fn a_kept_window_equals_the_same_pixels_of_the_full_resize() {
        let src = rgb(64, 48, |x, y| [(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8]);
        for f in [Filter::Nearest, Filter::Bilinear, Filter::Bicubic] {
            let full = resize(&src, 64, Axis::whole(0, 64, 40), Axis::whole(0, 48, 30), f);
            let x = Axis { start: 0, len: 64, full: 40, keep_start: 5, keep: 30 };
            let y = Axis { start: 0, len: 48, full: 30, keep_start: 0, keep: 30 };
            let win = resize(&src, 64, x, y, f);
            for row in 0..30 {
                assert_eq!(&win[row * 90..(row + 1) * 90], &full[(row * 40 + 5) * 3..(row * 40 + 35) * 3], "{f:?}");
            }
        }
    }

    #[test]
    fn bicubic_overshoot_is_clipped_to_8_bits() {
        let src = rgb(8, 1, |x, _| if x < 4 { [0; 3] } else { [255; 3] });
        let out = resize(&src, 8, Axis::whole(0, 8, 20), Axis::whole(0, 1, 1), Filter::Bicubic);
        assert!(out.contains(&0) && out.contains(&255));
    }
}

//! Pillow's antialiased filters in 8-bit SIMD, for `camera.resampling: simd`:
//! fast_image_resize (AVX2, SSE4.1 or NEON, picked at run time) with the
//! kernels, antialiasing and geometry `pillow` reproduces.
//!
//! Owns the resizer, its scratch images and the mapping from an [`Axis`]
//! pair to fast_image_resize's source view and crop boxes. Its coefficients
//! are Pillow-SIMD's 16-bit ones, not Pillow's 22-bit ones, so the output is
//! close to `PIL.Image.resize` rather than equal to it (measured against the
//! processors on camera frames: at most one grey level, two on an upscale,
//! 0.1-0.7% of the values differing; the tests hold it to two levels). `pillow`
//! stays the exact path and the default. It declines what it does not
//! reproduce (nearest, one-byte pixels, rows that are not a whole number of
//! pixels) and the caller resizes those exactly.

use fast_image_resize as fr;

use crate::pillow::{self, Axis, Filter, Packed};

#[derive(Default)]
pub(super) struct SimdResampler {
    resizer: fr::Resizer,
    /// The image between the two passes.
    temp: Vec<u8>,
    /// The output in the source's own byte order, when that is not packed RGB.
    scratch: Vec<u8>,
}

impl SimdResampler {
    /// Resizes `src` over the axes into `out` (packed RGB, `x.keep * y.keep * 3`
    /// bytes, as `pillow::Resampler::resize`). False for a case it declines;
    /// the caller then resizes exactly, over whatever is in `out`.
    pub fn resize<const N: usize>(
        &mut self,
        src: Packed<'_, N>,
        x: Axis,
        y: Axis,
        filter: Filter,
        out: &mut [u8],
    ) -> bool {
        let kernel = match filter {
            Filter::Nearest => return false,
            Filter::Bilinear => fr::FilterType::Bilinear,
            // Pillow's BICUBIC is the Keys kernel with a = -0.5: Catmull-Rom.
            Filter::Bicubic => fr::FilterType::CatmullRom,
        };
        let pixel_type = match N {
            3 => fr::PixelType::U8x3,
            4 => fr::PixelType::U8x4,
            _ => return false,
        };
        if !src.step.is_multiple_of(N) || x.keep == 0 || y.keep == 0 {
            return false;
        }
        // The rows of the segment, whole (any row padding is cut by the crop below).
        let rows = &src.data[y.start as usize * src.step..(y.start + y.len) as usize * src.step];
        let Ok(image) = fr::images::ImageRef::new((src.step / N) as u32, y.len, rows, pixel_type) else {
            return false;
        };
        // The segment is the image Pillow resizes (taps clamp at its edges, as
        // after `crop`); the kept window is a crop of its resized output.
        let Ok(segment) = fr::images::CroppedImage::new(&image, x.start, 0, x.len, y.len) else { return false };
        let (sx, sy) = (x.len as f64 / x.full as f64, y.len as f64 / y.full as f64);
        let (kx, ky) = ((x.keep_start as f64 * sx, x.keep as f64 * sx), (y.keep_start as f64 * sy, y.keep as f64 * sy));
        // One pass at a time, in Pillow's order: left to itself, fast_image_resize
        // runs the vertical pass first, and the 8-bit image between the passes
        // (bicubic overshoot clipped) differs by tens of grey levels at hard edges.
        let h_first = !pillow::vertical_first(x, y);
        let (tw, th) = if h_first { (x.keep, y.len) } else { (x.len, y.keep) };
        let (first, second) = if h_first {
            ((kx.0, 0.0, kx.1, y.len as f64), (0.0, ky.0, x.keep as f64, ky.1))
        } else {
            ((0.0, ky.0, x.len as f64, ky.1), (kx.0, 0.0, kx.1, y.keep as f64))
        };
        let options = |(l, t, w, h): (f64, f64, f64, f64)| {
            fr::ResizeOptions::new()
                .resize_alg(fr::ResizeAlg::Convolution(kernel))
                .crop(l, t, w, h)
                // The fourth byte of rgba8/bgra8 is not premultiplied into the colours (cv_bridge drops it).
                .use_alpha(false)
        };
        self.temp.resize(tw as usize * th as usize * N, 0);
        let Ok(mut temp) = fr::images::Image::from_slice_u8(tw, th, &mut self.temp, pixel_type) else { return false };
        if self.resizer.resize(&segment, &mut temp, &options(first)).is_err() {
            return false;
        }
        let Ok(temp) = fr::images::ImageRef::new(tw, th, &self.temp, pixel_type) else { return false };
        let direct = N == 3 && src.rgb == [0, 1, 2];
        let dst_bytes = if direct {
            &mut out[..]
        } else {
            self.scratch.resize(x.keep as usize * y.keep as usize * N, 0);
            &mut self.scratch[..]
        };
        let Ok(mut dst) = fr::images::Image::from_slice_u8(x.keep, y.keep, dst_bytes, pixel_type) else {
            return false;
        };
        if self.resizer.resize(&temp, &mut dst, &options(second)).is_err() {
            return false;
        }
        if !direct {
            for (o, p) in out.chunks_exact_mut(3).zip(self.scratch.chunks_exact(N)) {
                o.copy_from_slice(&src.rgb.map(|c| p[c]));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::pillow::Resampler;
    use super::*;

    /// A frame with smooth gradients, hard edges and noise.
    fn frame(w: usize, h: usize, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * n);
        let mut s = 0x9e37_79b9u32;
        for yy in 0..h {
            for xx in 0..w {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let edge = (xx / 7 + yy / 5) % 3 == 0;
                for c in 0..n {
                    let base = (xx * 255 / w + yy * 91 / h + c * 40) % 256;
                    v.push(if edge { 250 - c as u8 * 100 } else { (base as u32 + s % 17) as u8 });
                }
            }
        }
        v
    }

    fn exact_and_simd<const N: usize>(src: Packed<'_, N>, x: Axis, y: Axis, filter: Filter) -> (Vec<u8>, Vec<u8>) {
        let n = x.keep as usize * y.keep as usize * 3;
        let (mut exact, mut simd) = (vec![0; n], vec![0; n]);
        Resampler::default().resize(src, x, y, filter, &mut exact);
        assert!(SimdResampler::default().resize(src, x, y, filter, &mut simd));
        (exact, simd)
    }

    fn max_diff(a: &[u8], b: &[u8]) -> u8 {
        a.iter().zip(b).map(|(p, q)| p.abs_diff(*q)).max().unwrap_or(0)
    }

    #[test]
    fn within_two_grey_levels_of_the_exact_path_for_every_filter_and_geometry() {
        let (w, h) = (301usize, 197usize);
        let data = frame(w, h, 3);
        let src = Packed::<3> { data: &data, step: w * 3, rgb: [0, 1, 2] };
        let whole = |len: u32, out: u32| Axis::whole(0, len, out);
        // Stretch down and up, a segment (centre crop), a kept window of a larger resize (CLIP).
        let clip_x = Axis { start: 0, len: w as u32, full: 342, keep_start: 59, keep: 224 };
        let cases = [
            (whole(w as u32, 224), whole(h as u32, 224)),
            (whole(w as u32, 96), whole(h as u32, 64)),
            (whole(w as u32, 640), whole(h as u32, 480)),
            (Axis::whole(52, 197, 224), whole(h as u32, 224)),
            (clip_x, Axis { start: 0, len: h as u32, full: 224, keep_start: 0, keep: 224 }),
        ];
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            for (x, y) in cases {
                let (exact, simd) = exact_and_simd(src, x, y, filter);
                // Measured: at most 2 (bicubic upscales), and under 0.5% of the bytes differ at all.
                let (max, off) = (max_diff(&exact, &simd), exact.iter().zip(&simd).filter(|(p, q)| p != q).count());
                assert!(max <= 2 && off * 100 < exact.len(), "{filter:?} {x:?} {y:?}: max {max}, {off} differ");
            }
        }
    }

    #[test]
    fn channel_order_row_padding_and_four_byte_pixels_come_out_as_packed_rgb() {
        let (w, h) = (120usize, 90usize);
        let rgb = frame(w, h, 3);
        // bgra8 with 8 bytes of padding a row, alpha noise that must not leak in.
        let step = w * 4 + 8;
        let mut bgra = vec![0u8; step * h];
        for yy in 0..h {
            for xx in 0..w {
                let p = &rgb[(yy * w + xx) * 3..][..3];
                bgra[yy * step + xx * 4..][..4].copy_from_slice(&[p[2], p[1], p[0], (xx * 37 % 256) as u8]);
            }
        }
        let (x, y) = (Axis::whole(0, w as u32, 64), Axis::whole(0, h as u32, 48));
        let packed = Packed::<3> { data: &rgb, step: w * 3, rgb: [0, 1, 2] };
        let (_, want) = exact_and_simd(packed, x, y, Filter::Bicubic);
        let (exact, got) = exact_and_simd(Packed::<4> { data: &bgra, step, rgb: [2, 1, 0] }, x, y, Filter::Bicubic);
        assert_eq!(got, want);
        assert!(max_diff(&exact, &got) <= 1);
    }

    #[test]
    fn declines_what_it_does_not_reproduce() {
        let data = frame(40, 30, 3);
        let (x, y) = (Axis::whole(0, 40, 20), Axis::whole(0, 30, 15));
        let mut out = vec![7u8; 20 * 15 * 3];
        let mut s = SimdResampler::default();
        assert!(!s.resize(Packed::<3> { data: &data, step: 120, rgb: [0, 1, 2] }, x, y, Filter::Nearest, &mut out));
        let mono = Packed::<1> { data: &data, step: 40, rgb: [0, 0, 0] };
        assert!(!s.resize(mono, x, y, Filter::Bicubic, &mut out));
        assert!(out.iter().all(|&v| v == 7));
    }
}

//! The preprocessor's unit tests: every resize mode, encoding and decoder, good after bad.

use super::decode::yuv_to_rgb;
use super::*;
use std::io::Cursor;

fn spec(w: u32, h: u32) -> ImageSpec {
    ImageSpec {
        width: w,
        height: h,
        resize: ResizeMode::Stretch,
        shortest_edge: None,
        filter: Filter::Bilinear,
        antialias: false,
        pad: [0; 3],
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

fn raw(p: &mut Preprocessor, f: &RawFrame<'_>) -> Vec<f32> {
    p.raw(f).unwrap();
    f32s(p.tensor(0))
}

fn frame<'a>(w: u32, h: u32, enc: &'a str, step: u32, data: &'a [u8]) -> RawFrame<'a> {
    RawFrame { width: w, height: h, encoding: enc, step, data }
}

#[test]
fn the_dct_scale_is_pils_draft_rule_for_every_resize_mode() {
    let s = spec(224, 224);
    // PIL: scale = min(w // 224, h // 224), rounded down to 8, 4, 2 or 1.
    assert_eq!(s.dct_denominator(1920, 1080), 4);
    assert_eq!(s.dct_denominator(1280, 720), 2);
    assert_eq!(s.dct_denominator(640, 480), 2);
    assert_eq!(s.dct_denominator(447, 1000), 1);
    assert_eq!(s.dct_denominator(4096, 4096), 8);
    // CLIP: the short side resized to 224, whatever the long side.
    let clip = ImageSpec { resize: ResizeMode::ShortestEdge, ..spec(224, 224) };
    assert_eq!(clip.dct_denominator(3840, 900), 4);
    // A letterbox fits the long side: a wide frame may shrink further than a stretch allows.
    let boxed = ImageSpec { resize: ResizeMode::Letterbox, ..spec(224, 224) };
    assert_eq!(boxed.dct_denominator(1920, 480), 8);
    assert_eq!(s.dct_denominator(1920, 480), 2);
}

#[test]
fn identity_size_copies_pixels_into_planes() {
    let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
    let data = [10, 20, 30, 40, 50, 60];
    let out = raw(&mut p, &frame(2, 1, "rgb8", 6, &data));
    assert_eq!(out, vec![10.0, 40.0, 20.0, 50.0, 30.0, 60.0]);
}

#[test]
fn encodings_agree_on_the_same_colours() {
    let rgb = [10u8, 20, 30, 200, 150, 100];
    let bgr = [30u8, 20, 10, 100, 150, 200];
    let rgba = [10u8, 20, 30, 255, 200, 150, 100, 255];
    let bgra = [30u8, 20, 10, 0, 100, 150, 200, 0];
    let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
    let want = raw(&mut p, &frame(2, 1, "rgb8", 6, &rgb));
    assert_eq!(raw(&mut p, &frame(2, 1, "bgr8", 6, &bgr)), want);
    assert_eq!(raw(&mut p, &frame(2, 1, "rgba8", 8, &rgba)), want);
    assert_eq!(raw(&mut p, &frame(2, 1, "bgra8", 8, &bgra)), want);
}

#[test]
fn yuv_grey_is_grey_and_byte_orders_differ_correctly() {
    let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
    // UYVY: U Y0 V Y1; YUYV: Y0 U Y1 V. Neutral chroma (128) gives grey,
    // video range: (Y - 16) * 1.164, rounded (OpenCV: 50 -> 40, 90 -> 86).
    let uyvy = [128u8, 50, 128, 90];
    let yuyv = [50u8, 128, 90, 128];
    let a = raw(&mut p, &frame(2, 1, "yuv422", 4, &uyvy));
    assert_eq!(a, vec![40.0, 86.0, 40.0, 86.0, 40.0, 86.0]);
    let b = raw(&mut p, &frame(2, 1, "yuv422_yuy2", 4, &yuyv));
    assert_eq!(a, b);
    // Strong V (red difference) raises R and lowers G.
    let red = raw(&mut p, &frame(2, 1, "yuv422", 4, &[128, 100, 228, 100]));
    assert!(red[0] > 200.0 && red[2] < 100.0, "{red:?}");
}

#[test]
fn row_padding_in_step_is_skipped() {
    let mut p = Preprocessor::new(vec![spec(1, 2)], 100, 100);
    let data = [1, 2, 3, 99, 99, 4, 5, 6, 99, 99];
    let out = raw(&mut p, &frame(1, 2, "rgb8", 5, &data));
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
    let mut p = Preprocessor::new(vec![s], 10, 10);
    let out = raw(&mut p, &frame(1, 1, "rgb8", 3, &[255, 0, 51]));
    // BGR order: b=0.2, g=(0-0.25)/0.25=-1, r=(1-0.5)/0.5=1
    let want = [0.2f32, -1.0, 1.0];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-6, "{out:?}");
    }
}

#[test]
fn bilinear_downscale_with_half_pixel_centres() {
    // 4x1 -> 2x1: samples at src x = 0.5 and 2.5.
    let mut p = Preprocessor::new(vec![spec(2, 1)], 100, 100);
    let data = [0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255];
    let out = raw(&mut p, &frame(4, 1, "rgb8", 12, &data));
    assert_eq!(&out[0..2], &[50.0, 227.5]);
}

#[test]
fn center_crop_keeps_the_middle() {
    let mut s = spec(1, 1);
    s.resize = ResizeMode::CenterCrop;
    let mut p = Preprocessor::new(vec![s], 100, 100);
    // 3x1 -> 1x1 with centre crop takes the middle pixel only.
    let out = raw(&mut p, &frame(3, 1, "mono8", 3, &[0, 77, 255]));
    assert_eq!(out, vec![77.0, 77.0, 77.0]);
}

#[test]
fn f16_output_matches_f32_within_half_precision() {
    let mut s = spec(4, 4);
    s.scale = 1.0 / 255.0;
    s.dtype = DType::F16;
    let mut p = Preprocessor::new(vec![s], 100, 100);
    let data: Vec<u8> = (0..8 * 8 * 3).map(|i| (i * 7 % 256) as u8).collect();
    let half = raw(&mut p, &frame(8, 8, "rgb8", 24, &data));
    let full = p.images[0].f32_out.clone();
    for (h, f) in half.iter().zip(full) {
        assert!((h - f).abs() < 1e-3);
    }
}

type IsError = fn(&FrameError) -> bool;

#[test]
fn malformed_frames_are_refused() {
    let mut p = Preprocessor::new(vec![spec(2, 2)], 64, 64);
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
    let mut p = Preprocessor::new(vec![spec(8, 8)], 4096, 4096);
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

/// What a fresh preprocessor makes of `good` (a compressed frame).
fn fresh(specs: &[ImageSpec], scaling: JpegScaling, good: &[u8]) -> Vec<Vec<f32>> {
    let mut p = Preprocessor::new(specs.to_vec(), 4096, 4096);
    p.set_jpeg_scaling(scaling);
    p.compressed("jpeg", good).unwrap();
    (0..specs.len()).map(|i| f32s(p.tensor(i))).collect()
}

#[test]
fn a_good_jpeg_after_a_corrupt_one_gives_what_a_fresh_preprocessor_gives() {
    // The poisoning sequence found from outside: SOI, a few hundred
    // random bytes, EOI ("extraneous bytes before marker"), then good frames.
    let good = photo_jpeg(320, 240);
    let mut seed = 7u32;
    let mut corrupt = vec![0xFF, 0xD8];
    corrupt.extend((0..376).map(|_| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as u8
    }));
    corrupt.extend_from_slice(&[0xFF, 0xD9]);
    let mut cut = good[..good.len() / 2].to_vec();
    cut.extend_from_slice(&[0xFF, 0xD9]);
    let specs = [spec(16, 12), ImageSpec { antialias: true, filter: Filter::Bicubic, ..spec(40, 30) }];
    for scaling in [JpegScaling::Full, JpegScaling::Reduced] {
        let want = fresh(&specs, scaling, &good);
        let mut p = Preprocessor::new(specs.to_vec(), 4096, 4096);
        p.set_jpeg_scaling(scaling);
        for bad in [&corrupt[..], &cut[..], b"\xFF\xD8", &good[..100]] {
            assert!(p.compressed("jpeg", bad).is_err(), "{scaling:?}: a bad frame decoded");
            p.compressed("jpeg", &good).unwrap_or_else(|e| panic!("{scaling:?}: good after bad refused: {e}"));
            let got: Vec<_> = (0..specs.len()).map(|i| f32s(p.tensor(i))).collect();
            assert!(got == want, "{scaling:?}: good after bad differs from a fresh preprocessor");
        }
    }
    // A reduced-scale decode never leaks its scale into a full one.
    let want = fresh(&specs, JpegScaling::Full, &good);
    let mut p = Preprocessor::new(specs.to_vec(), 4096, 4096);
    p.set_jpeg_scaling(JpegScaling::Reduced);
    p.compressed("jpeg", &photo_jpeg(1280, 720)).unwrap();
    p.set_jpeg_scaling(JpegScaling::Full);
    p.compressed("jpeg", &good).unwrap();
    assert!((0..specs.len()).all(|i| f32s(p.tensor(i)) == want[i]));
}

#[test]
fn a_letterbox_with_one_padding_row_pads_it_whatever_came_before() {
    // 5x4 into 4x4: 3 rows of image, and the one row of padding goes below
    // (PIL's round(0.5) = 0 rows above), so the offset is (0, 0).
    let s = ImageSpec { resize: ResizeMode::Letterbox, antialias: true, pad: [1, 2, 3], ..spec(4, 4) };
    let wide = vec![200u8; 5 * 4 * 3];
    let square = vec![50u8; 4 * 4 * 3];
    let mut fresh = Preprocessor::new(vec![s.clone()], 4096, 4096);
    let want = raw(&mut fresh, &frame(5, 4, "rgb8", 15, &wide));
    // NCHW planes of 16: the last row of each is the padding colour.
    for (c, pad) in [1.0, 2.0, 3.0].into_iter().enumerate() {
        assert_eq!(&want[c * 16 + 12..c * 16 + 16], &[pad; 4], "channel {c}");
        assert_eq!(&want[c * 16..c * 16 + 12], &[200.0; 12], "channel {c}");
    }
    let mut p = Preprocessor::new(vec![s], 4096, 4096);
    raw(&mut p, &frame(4, 4, "rgb8", 12, &square));
    assert_eq!(raw(&mut p, &frame(5, 4, "rgb8", 15, &wide)), want);
}

#[test]
fn a_16_bit_png_is_refused_from_its_header() {
    let img = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(64, 64, image::Rgb([1000, 2000, 3000]));
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    let mut p = Preprocessor::new(vec![spec(4, 4)], 4096, 4096);
    match p.compressed("png", buf.get_ref()) {
        Err(FrameError::UnsupportedFormat(why)) => assert!(why.contains("16 bits"), "{why}"),
        other => panic!("{:?}", other.err()),
    }
    assert!(p.decoder.decoded.capacity() < 64 * 64 * 6, "nothing was decoded");
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
    let mut p = Preprocessor::new(vec![spec(4, 4)], 640, 480);
    p.compressed("png", &png).unwrap();
    for cut in [3, 2, 10, 100] {
        let truncated = &png[..png.len() - (png.len() / cut).max(1)];
        assert!(p.compressed("png", truncated).is_err(), "cut 1/{cut}");
    }
}

#[test]
fn png_decodes_to_the_same_tensor_as_raw() {
    let img = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([(x * 30) as u8, (y * 40) as u8, 7]));
    let mut p = Preprocessor::new(vec![spec(4, 3)], 100, 100);
    let raw = raw(&mut p, &frame(8, 6, "rgb8", 24, img.as_raw()));
    let png = {
        p.compressed("png", &encode(img, image::ImageFormat::Png)).unwrap();
        f32s(p.tensor(0))
    };
    assert_eq!(raw, png);
}

#[test]
fn jpeg_decodes_and_corrupt_or_huge_jpeg_is_refused() {
    let img = image::RgbImage::from_fn(32, 32, |x, _| image::Rgb([(x * 8) as u8, 100, 100]));
    let jpeg = encode(img, image::ImageFormat::Jpeg);
    let mut p = Preprocessor::new(vec![spec(4, 4)], 16, 64);
    // 32 wide > max 16: refused from the header, before decoding.
    assert!(matches!(p.compressed("jpeg", &jpeg), Err(FrameError::TooLarge { .. })));
    let mut p = Preprocessor::new(vec![spec(4, 4)], 64, 64);
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
    let mut p = Preprocessor::new(vec![spec(8, 8)], 100, 100);
    let data = vec![9u8; 16 * 16 * 3];
    p.raw(&frame(16, 16, "rgb8", 48, &data)).unwrap();
    let a = p.images[0].f32_out.as_ptr();
    for _ in 0..3 {
        p.raw(&frame(16, 16, "rgb8", 48, &data)).unwrap();
    }
    assert_eq!(a, p.images[0].f32_out.as_ptr());
}

#[test]
fn shortest_edge_resizes_the_short_side_then_crops_the_centre() {
    // 8x4 -> short side 4 -> 8x4 (no resize), centre crop 4x4 = columns 2..6.
    let mut s = spec(4, 4);
    s.resize = ResizeMode::ShortestEdge;
    s.antialias = true;
    s.filter = Filter::Bicubic;
    let mut p = Preprocessor::new(vec![s.clone()], 100, 100);
    let data: Vec<u8> = (0..4).flat_map(|_| (0..8u8).flat_map(|x| [x * 10, 0, 0])).collect();
    let out = raw(&mut p, &frame(8, 4, "rgb8", 24, &data));
    assert_eq!(&out[..4], &[20.0, 30.0, 40.0, 50.0]);
    // Portrait: the crop is vertical, and the long side is int(4 * 9 / 6) = 6.
    let (x, y, _, _) = s.geometry(6, 9);
    assert_eq!((x.full, x.keep_start, y.full, y.keep_start, y.keep), (4, 0, 6, 1, 4));
    s.shortest_edge = Some(3);
    assert!(s.validate().unwrap_err().contains("shortest_edge"));
}

#[test]
fn letterbox_pads_as_imageops_pad_rounds() {
    let mut s = spec(4, 4);
    s.resize = ResizeMode::Letterbox;
    s.antialias = true;
    s.pad = [255, 0, 0];
    // 8x2 into 4x4: height round(2/8*4) = 1, offset round(3 * 0.5) = 2 (ties to even).
    let (x, y, dx, dy) = s.geometry(8, 2);
    assert_eq!((x.keep, y.keep, dx, dy), (4, 1, 0, 2));
    let mut p = Preprocessor::new(vec![s], 100, 100);
    let out = raw(&mut p, &frame(8, 2, "mono8", 8, &[9; 16]));
    let red = &out[..16];
    assert_eq!(red.iter().filter(|v| **v == 255.0).count(), 12, "{red:?}");
    assert_eq!(&red[8..12], &[9.0; 4]);
}

#[test]
fn several_inputs_share_one_decoded_frame() {
    let mut a = spec(2, 2);
    a.antialias = true;
    a.filter = Filter::Bicubic;
    let mut b = spec(3, 3);
    b.dtype = DType::F16;
    let mut p = Preprocessor::new(vec![a, b], 64, 64);
    let img = image::RgbImage::from_fn(12, 12, |x, _| image::Rgb([(x * 20) as u8, 50, 50]));
    p.compressed("png", &encode(img, image::ImageFormat::Png)).unwrap();
    assert_eq!(f32s(p.tensor(0)).len(), 12);
    assert_eq!(f32s(p.tensor(1)).len(), 27);
    assert!(matches!(p.tensor(1), Tensor::F16(_)));
}

#[test]
fn bicubic_without_antialiasing_is_refused_by_name() {
    let mut s = spec(2, 2);
    s.filter = Filter::Bicubic;
    assert!(s.validate().unwrap_err().contains("bicubic"));
}

#[test]
fn yuv_frames_resized_the_pillow_way_match_their_rgb_conversion() {
    let mut s = spec(3, 2);
    s.antialias = true;
    let mut p = Preprocessor::new(vec![s], 64, 64);
    let uyvy: Vec<u8> = (0..16 * 4).map(|i| (i * 37 % 256) as u8).collect();
    let yuv = raw(&mut p, &frame(8, 4, "yuv422", 16, &uyvy));
    let rgb: Vec<u8> = (0..4)
        .flat_map(|y| {
            let uyvy = &uyvy;
            (0..8).flat_map(move |x| {
                let m = &uyvy[y * 16 + (x & !1) * 2..];
                yuv_to_rgb(m[1 + 2 * (x & 1)], m[0], m[2])
            })
        })
        .collect();
    assert_eq!(yuv, raw(&mut p, &frame(8, 4, "rgb8", 24, &rgb)));
}

//! Preprocessing cost per frame (not a test: prints numbers).
//!
//!     cargo bench -p mobile_vla_vision --bench preprocess
//!
//! 640x480, 1280x720 (the model team's camera) and 1920x1080 frames, rgb8 and
//! JPEG (decoded whole: `camera.jpeg_scaling: full`, the default), into a
//! 224x224 NCHW input: the stand-ins' half-pixel bilinear (f32, and f16 for
//! the pure model's contract), PIL's antialiased bicubic as the Hugging Face
//! processors use it (Kosmos-2's stretch, CLIP's shortest edge + centre crop),
//! exact and with `camera.resampling: simd`, and torchvision's
//! `Resize((224, 224))` (antialiased bilinear) of the team's image-window heads.

use std::io::Cursor;
use std::time::{Duration, Instant};

use mobile_vla_vision::{
    ChannelOrder, DType, Filter, ImageSpec, Layout, Preprocessor, RawFrame, Resampling, ResizeMode,
};

fn spec(dtype: DType, filter: Filter, antialias: bool, resize: ResizeMode) -> ImageSpec {
    ImageSpec {
        width: 224,
        height: 224,
        resize,
        shortest_edge: None,
        filter,
        antialias,
        pad: [0; 3],
        channel_order: ChannelOrder::Rgb,
        layout: Layout::Nchw,
        scale: 1.0 / 255.0,
        mean: [0.481, 0.458, 0.408],
        std: [0.269, 0.261, 0.276],
        dtype,
    }
}

/// A camera-like scene: smooth gradients, a few shapes, mild sensor noise.
fn frame(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    let mut noise = 0x2545_f491u32;
    for y in 0..h {
        for x in 0..w {
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let n = (noise % 9) as i32 - 4;
            let cup = (x as i32 - w as i32 / 3).abs() < (w / 20) as i32
                && (y as i32 - h as i32 * 3 / 5).abs() < (h / 12) as i32;
            let floor = y > h * 2 / 3;
            let base = [(x * 200 / w + 30) as i32, (y * 150 / h + 40) as i32, if floor { 60 } else { 150 }];
            let px = if cup { [200, 30, 30] } else { base };
            v.extend(px.iter().map(|c| (c + n).clamp(0, 255) as u8));
        }
    }
    v
}

fn report(name: &str, mut f: impl FnMut()) {
    for _ in 0..5 {
        f();
    }
    let mut samples: Vec<Duration> = Vec::new();
    let start = Instant::now();
    while samples.len() < 2000 && (samples.len() < 30 || start.elapsed() < Duration::from_secs(3)) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!("{name:<44} n={:<5} p50={:7.3} ms  p90={:7.3} ms  p99={:7.3} ms", samples.len(), q(0.5), q(0.9), q(0.99));
}

fn main() {
    println!(
        "preprocess -> 224x224 NCHW (one core, {} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    for (w, h) in [(640u32, 480u32), (1280, 720), (1920, 1080)] {
        let raw = frame(w, h);
        let img = image::RgbImage::from_raw(w, h, raw.clone()).unwrap();
        let mut jpeg = Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&img).unwrap();
        let jpeg = jpeg.into_inner();
        let (exact, simd) = (Resampling::Exact, Resampling::Simd);
        let cases = [
            ("bilinear", spec(DType::F32, Filter::Bilinear, false, ResizeMode::Stretch), exact),
            ("bilinear f16", spec(DType::F16, Filter::Bilinear, false, ResizeMode::Stretch), exact),
            ("PIL bicubic", spec(DType::F32, Filter::Bicubic, true, ResizeMode::Stretch), exact),
            ("PIL bicubic, simd", spec(DType::F32, Filter::Bicubic, true, ResizeMode::Stretch), simd),
            ("PIL bicubic CLIP crop", spec(DType::F32, Filter::Bicubic, true, ResizeMode::ShortestEdge), exact),
            ("PIL bicubic CLIP crop, simd", spec(DType::F32, Filter::Bicubic, true, ResizeMode::ShortestEdge), simd),
            ("torchvision bilinear (team)", spec(DType::F32, Filter::Bilinear, true, ResizeMode::Stretch), exact),
        ];
        for (name, spec, resampling) in cases {
            let mut p = Preprocessor::new(vec![spec], 4096, 4096);
            p.set_resampling(resampling);
            let f = RawFrame { width: w, height: h, encoding: "rgb8", step: w * 3, data: &raw };
            report(&format!("{w}x{h} rgb8 -> {name}"), || {
                p.raw(&f).unwrap();
            });
            report(&format!("{w}x{h} jpeg ({} KB) -> {name}", jpeg.len() / 1024), || {
                p.compressed("jpeg", &jpeg).unwrap();
            });
        }
    }
}

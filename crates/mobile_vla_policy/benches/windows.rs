//! What a frame window costs per frame (not a test: prints numbers).
//!
//!     cargo bench -p mobile_vla_policy --bench windows
//!
//! One frame's work on a full window of T = 8, for the model team's two
//! forms at their real sizes: an image window (`[1, 8, 3, 224, 224]` f32, the
//! graph's input assembled from 7 kept frames and this one) and a feature
//! window (`[1, 8, 2048]`, twice: vision and text features). The frame's own
//! tensor is made outside the timed part (the preprocessor or the backbone
//! makes it whether or not there is a window).

use std::time::{Duration, Instant};

use mobile_vla_policy::backend::{Tensor, Values};
use mobile_vla_policy::manifest::{Window, WindowStart};
use mobile_vla_policy::window::{Fed, Windows};

/// This frame's entry for each window: what the preprocessor or the backbone made.
fn entries(shapes: &[Vec<i64>], frame: usize) -> Vec<Option<Tensor>> {
    shapes
        .iter()
        .map(|shape| {
            let n = shape.iter().product::<i64>() as usize;
            Some(Tensor { shape: shape.clone(), values: Values::F32(vec![frame as f32; n]) })
        })
        .collect()
}

/// Feeds every window and commits the frame, as `Policy::infer` does on a run that ended well; the time it took.
fn one_frame(windows: &mut Windows, entries: Vec<Option<Tensor>>) -> Duration {
    let t = Instant::now();
    for (k, entry) in entries.iter().enumerate() {
        let window = windows.feed(k, entry.as_ref().expect("an entry per window")).expect("shapes agree");
        assert!(matches!(window, Fed::Full(_)), "the bench feeds full windows");
        std::hint::black_box(&window);
    }
    windows.commit(entries);
    t.elapsed()
}

fn main() {
    println!("frame windows, T = 8, full ({} build)", if cfg!(debug_assertions) { "debug" } else { "release" });
    let cases: [(&str, Vec<Vec<i64>>); 2] = [
        ("image window [1, 8, 3, 224, 224] f32", vec![vec![1, 3, 224, 224]]),
        ("feature windows 2 x [1, 8, 2048] f32", vec![vec![1, 2048], vec![1, 2048]]),
    ];
    for (name, shapes) in cases {
        let specs: Vec<Window> = (0..shapes.len())
            .map(|k| Window { input: format!("window_{k}"), from: format!("frame_{k}"), length: 8 })
            .collect();
        let mut windows = Windows::new(&specs, WindowStart::Wait);
        let mut samples = Vec::new();
        let start = Instant::now();
        for frame in 0.. {
            let took = one_frame(&mut windows, entries(&shapes, frame));
            // The first 20 frames fill the window and warm the allocator up.
            if frame >= 20 {
                samples.push(took);
            }
            if samples.len() >= 5000 || (samples.len() >= 50 && start.elapsed() > Duration::from_secs(3)) {
                break;
            }
        }
        samples.sort();
        let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!("{name:<40} n={:<5} p50={:7.3} ms  p99={:7.3} ms", samples.len(), q(0.5), q(0.99));
    }
}

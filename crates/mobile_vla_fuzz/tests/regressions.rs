//! Every corpus file, through its target: the seeds, and every crash or hang
//! the fuzzer found (saved there once fixed), stay regression tests.

use std::path::Path;
use std::time::{Duration, Instant};

use mobile_vla_fuzz::targets::{Bag, Compressed, Instruction, RawImage, Target};

/// As `mobile_vla_fuzz`'s (a release build; a debug one may be several times slower).
const HANG: Duration = Duration::from_secs(2);

fn replay(target: &mut dyn Target) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target.name());
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let t = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(&data)));
        assert!(r.is_ok(), "{} panicked on {}", target.name(), path.display());
        // The fuzzer's hang limit: a saved hang fails here too, not only slowly.
        assert!(t.elapsed() < HANG, "{} took {:?} on {}", target.name(), t.elapsed(), path.display());
        n += 1;
    }
    assert!(n >= 5, "{}: only {n} corpus files in {}", target.name(), dir.display());
}

#[test]
fn image_corpus() {
    replay(&mut RawImage::default());
}

#[test]
fn compressed_corpus() {
    replay(&mut Compressed::default());
}

#[test]
fn instruction_corpus() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    replay(&mut Instruction::bundled(&models).unwrap());
}

#[test]
fn bag_corpus() {
    replay(&mut Bag);
}

//! Every corpus file, through every target that reads its folder: the seeds,
//! and every crash or hang the fuzzer found (saved there once fixed), stay
//! regression tests. A differential target checks one known-good input per
//! run, so each file runs once for each of its cases (file, then every
//! known-good input in turn).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mobile_vla_fuzz::differential::{BagAfter, CompressedAfter, InstructionAfter, RawAfter};
use mobile_vla_fuzz::targets::{Bag, Compressed, Instruction, RawImage, Target};

/// As `mobile_vla_fuzz`'s (a release build; a debug one may be several times slower).
const HANG: Duration = Duration::from_secs(2);

fn replay(target: &mut dyn Target) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target.corpus());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    // In the fuzzer's order, so a differential failure replays the same sequence.
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        for case in 0..target.cases() {
            let t = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.run(&data)));
            assert!(r.is_ok(), "{} panicked on {} (case {case})", target.name(), path.display());
            // The fuzzer's hang limit: a saved hang fails here too, not only slowly.
            assert!(t.elapsed() < HANG, "{} took {:?} on {}", target.name(), t.elapsed(), path.display());
        }
    }
    assert!(files.len() >= 5, "{}: only {} corpus files in {}", target.name(), files.len(), dir.display());
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
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
    replay(&mut Instruction::bundled(&models()).unwrap());
}

#[test]
fn bag_corpus() {
    replay(&mut Bag);
}

#[test]
fn diff_image_corpus() {
    replay(&mut RawAfter::default());
}

#[test]
fn diff_jpeg_corpus() {
    replay(&mut CompressedAfter::jpeg());
}

#[test]
fn diff_jpeg_reduced_corpus() {
    replay(&mut CompressedAfter::jpeg_reduced());
}

#[test]
fn diff_png_corpus() {
    replay(&mut CompressedAfter::png());
}

#[test]
fn diff_instruction_corpus() {
    replay(&mut InstructionAfter::bundled(&models()).unwrap());
}

#[test]
fn diff_bag_corpus() {
    replay(&mut BagAfter::default());
}

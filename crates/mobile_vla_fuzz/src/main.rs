//! `mobile_vla_fuzz`: fuzzes the node's parsers of untrusted bytes on stable Rust.
//!
//!     mobile_vla_fuzz [TARGET ...|all] [--seconds S] [--inputs N] [--seed X]
//!
//! Targets: `image` (sensor_msgs/Image fields and data), `compressed`
//! (CompressedImage: JPEG and PNG, bombs and truncations), `instruction`
//! (the tokenizers and prompt layouts), `bag` (the report tool's MCAP and CDR
//! reader), and their differential "good after bad" twins: `diff-image`,
//! `diff-jpeg`, `diff-jpeg-reduced` (DCT-scaled), `diff-png`,
//! `diff-instruction` and `diff-bag`, which follow every input with a
//! known-good one and require bit for bit what a fresh instance gives it
//! (`differential`). `all` runs every target, in that order. Each starts from
//! its corpus (`crates/mobile_vla_fuzz/corpus/<folder>/`, a twin sharing its
//! plain target's: real frames, instructions, a recorded bag) and runs havoc
//! mutations of it until the time or input budget is spent. A panic or an
//! input running past the hang limit (2 s) is saved under
//! `build/fuzz/<target>/` and ends the run with exit code 1, saying whether
//! the input alone fails a fresh target too (a differential failure may need
//! earlier inputs); `tests/regressions.rs` replays every corpus file through
//! every target, so a crash copied into the corpus stays a regression test.
//!
//! Not coverage-guided (that needs nightly's sanitizer flags here): the targets
//! parse a structured header first, so mutations land on the fields that
//! matter, and the seeds cover every format branch.

mod mutate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mobile_vla_fuzz::differential::{BagAfter, CompressedAfter, InstructionAfter, RawAfter};
use mobile_vla_fuzz::targets::{Bag, Compressed, Instruction, RawImage, Target};
use mutate::{havoc, Rng};

const HANG: Duration = Duration::from_secs(2);

/// Every target, in the order `all` runs them.
const TARGETS: [&str; 10] = [
    "image",
    "compressed",
    "instruction",
    "bag",
    "diff-image",
    "diff-jpeg",
    "diff-jpeg-reduced",
    "diff-png",
    "diff-instruction",
    "diff-bag",
];

/// A new target by name (an unknown name or unloadable models: the reason).
fn make(name: &str) -> Result<Box<dyn Target>, String> {
    let models = root().join("models");
    Ok(match name {
        "image" => Box::new(RawImage::default()),
        "compressed" => Box::new(Compressed::default()),
        "instruction" => Box::new(Instruction::bundled(&models).map_err(|e| format!("{name}: {e}"))?),
        "bag" => Box::new(Bag),
        "diff-image" => Box::new(RawAfter::default()),
        "diff-jpeg" => Box::new(CompressedAfter::jpeg()),
        "diff-jpeg-reduced" => Box::new(CompressedAfter::jpeg_reduced()),
        "diff-png" => Box::new(CompressedAfter::png()),
        "diff-instruction" => Box::new(InstructionAfter::bundled(&models).map_err(|e| format!("{name}: {e}"))?),
        "diff-bag" => Box::new(BagAfter::default()),
        other => return Err(format!("unknown target '{other}' ({}, all)", TARGETS.join(", "))),
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = root().join("crates/mobile_vla_fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    let mut seeds: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    if seeds.is_empty() {
        seeds.push(Vec::new());
    }
    seeds
}

struct Budget {
    seconds: f64,
    inputs: u64,
    seed: u64,
}

fn save(target: &str, input: &[u8], what: &str) -> PathBuf {
    let dir = root().join("build/fuzz").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{what}-{hash:016x}"));
    let _ = std::fs::write(&path, input);
    path
}

/// The input being run and when it started.
type InFlight = Option<(Instant, Vec<u8>)>;

/// Fuzzes one target; returns false on a crash (a hang ends the process).
fn fuzz(target: &mut dyn Target, budget: &Budget) -> bool {
    let name = target.name();
    let seeds = corpus(target.corpus());
    let mut rng = Rng::new(budget.seed ^ name.bytes().fold(0, |h, b| h * 31 + b as u64));
    // The hang watchdog: the input in flight and when it started, together, so
    // it never blames the next input for the previous one's time.
    let current: Arc<Mutex<InFlight>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let hung = match &*current.lock().unwrap_or_else(|e| e.into_inner()) {
                    Some((t, input)) if t.elapsed() > HANG => Some(input.clone()),
                    _ => None,
                };
                if let Some(input) = hung {
                    let path = save(name, &input, "hang");
                    eprintln!("{name}: HANG: one input ran past {HANG:?}; saved {}", path.display());
                    std::process::exit(1);
                }
            }
        })
    };
    let t0 = Instant::now();
    let (mut n, mut slowest) = (0u64, Duration::ZERO);
    let mut ok = true;
    while n < budget.inputs && t0.elapsed().as_secs_f64() < budget.seconds {
        // Every seed as it is first, then mutations of random seeds.
        let input = if (n as usize) < seeds.len() {
            seeds[n as usize].clone()
        } else {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            havoc(&mut rng, a, b, target.max_len())
        };
        let t = Instant::now();
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((t, input.clone()));
        let r = catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        slowest = slowest.max(t.elapsed());
        n += 1;
        if let Err(e) = r {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            let path = save(name, &input, "crash");
            let at = PANICKED_AT.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!("{name}: CRASH after {n} inputs: {} at {at}; saved {}", msg.unwrap_or_default(), path.display());
            eprintln!("{name}: {}", alone(name, &input));
            ok = false;
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{name:<17} {n:>10} inputs in {secs:>7.1} s ({:>8.0}/s), {} seeds, slowest input {:.1} ms{}",
        n as f64 / secs.max(1e-9),
        seeds.len(),
        slowest.as_secs_f64() * 1e3,
        if ok { "" } else { "  CRASH" }
    );
    ok
}

/// Whether `input` alone fails a fresh target (run once for each of its
/// cases), or needed the inputs before it: the state a differential target
/// found may have been left by any of them.
fn alone(name: &str, input: &[u8]) -> String {
    let Ok(mut fresh) = make(name) else { return String::from("no fresh target to replay the input on") };
    for _ in 0..fresh.cases() {
        if catch_unwind(AssertUnwindSafe(|| fresh.run(input))).is_err() {
            return String::from("the saved input alone fails a fresh target too (a regression test as it is)");
        }
    }
    String::from("the saved input alone passes on a fresh target: the failure needs earlier inputs as well")
}

/// Where the last panic happened: the fuzzer's own hook keeps it quiet (the
/// report tool catches the mcap crate's panics itself, thousands of them), and
/// a crash prints it once.
static PANICKED_AT: Mutex<String> = Mutex::new(String::new());

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| l.to_string()).unwrap_or_default();
        *PANICKED_AT.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }));
    let mut names = Vec::new();
    let mut budget = Budget { seconds: f64::INFINITY, inputs: u64::MAX, seed: 1 };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{a} needs {what}"));
        let parsed = match a.as_str() {
            "--seconds" => value("seconds").and_then(|v| v.parse().map_err(|e| format!("--seconds: {e}"))).map(|v| {
                budget.seconds = v;
            }),
            "--inputs" => value("a count").and_then(|v| v.parse().map_err(|e| format!("--inputs: {e}"))).map(|v| {
                budget.inputs = v;
            }),
            "--seed" => value("a number").and_then(|v| v.parse().map_err(|e| format!("--seed: {e}"))).map(|v| {
                budget.seed = v;
            }),
            "-h" | "--help" => Err(format!(
                "usage: mobile_vla_fuzz [TARGET ...|all] [--seconds S] [--inputs N] [--seed X]\n\
                 targets: {}\n\
                 the diff-* targets follow every input with a known-good one and require what a fresh instance gives",
                TARGETS.join(", ")
            )),
            _ => {
                names.push(a.clone());
                Ok(())
            }
        };
        if let Err(e) = parsed {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    if budget.seconds.is_infinite() && budget.inputs == u64::MAX {
        budget.seconds = 10.0;
    }
    if names.is_empty() || names.iter().any(|n| n == "all") {
        names = TARGETS.map(String::from).to_vec();
    }
    // A typo fails at once, not after the targets before it have run.
    if let Some(bad) = names.iter().find(|n| !TARGETS.contains(&n.as_str())) {
        eprintln!("unknown target '{bad}' ({}, all)", TARGETS.join(", "));
        return ExitCode::from(2);
    }
    let mut ok = true;
    for name in &names {
        let mut target = match make(name) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        ok &= fuzz(target.as_mut(), &budget);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! The node's pipeline without ROS: instructions and frames in, commands out,
//! with the stand-in policies in real ONNX Runtime (ORT_DYLIB_PATH, as env.sh sets it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use mobile_vla_core::config::{Config, Provider};
use mobile_vla_core::vocab::{ByRole, Role, Velocity};
use mobile_vla_policy::inline::{FrameKind, Inline, OwnedFrame};
use mobile_vla_policy::runner::PolicySpec;
use mobile_vla_policy::runtime::init_runtime;
use mobile_vla_policy::{Policy, RunOptions};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// The shipped parameters on the CPU, with limits that let every action through unshaped.
fn config() -> Config {
    let mut c = Config::default();
    c.policy.hybrid.providers = vec![Provider::Cpu];
    c.policy.pure.providers = vec![Provider::Cpu];
    c.limits.max_velocity = [2.0; 3];
    c.limits.max_accel = [0.0; 3];
    c
}

fn specs(c: &Config) -> ByRole<PolicySpec> {
    let manifest = |role: Role| models().join(if role == Role::Primary { "hybrid.json" } else { "pure.json" });
    ByRole::from_fn(|role| PolicySpec::from_config(c, role, manifest(role)))
}

fn png(name: &str, stamp_s: f64) -> OwnedFrame {
    let data = std::fs::read(models().join("samples").join(name)).unwrap();
    OwnedFrame { stamp_s: Some(stamp_s), kind: FrameKind::Compressed { format: "png".into() }, data }
}

/// What the hybrid policy alone gives for a frame and an instruction.
fn reference(instruction: &str, frame: &OwnedFrame) -> Velocity {
    let runtime = init_runtime(None).expect("libonnxruntime: source env.sh or run scripts/test.sh");
    let cfg = config();
    let mut p = Policy::load(&runtime, &models().join("hybrid.json"), &cfg.policy.hybrid, (4096, 4096)).unwrap();
    p.set_instruction(instruction).unwrap();
    p.preprocess(&frame.image()).unwrap();
    p.infer(&RunOptions::new().unwrap()).unwrap().0.velocity()
}

#[test]
fn frames_and_an_instruction_become_the_hybrids_commands_with_no_ros() {
    let c = config();
    let t = 1000.0;
    let (mut p, start) = Inline::new(&c, specs(&c), t);
    assert!(start.commands.iter().all(|v| *v == Velocity::ZERO), "{:?}", start.commands);
    assert_eq!(p.pipeline().controller().watchdog().active(), Some(Role::Primary));
    // No instruction yet: the frame runs nothing and the robot stays still.
    let step = p.frame(png("01_centred.png", t), t + 0.01);
    assert!(step.runs.is_empty() && step.commands.iter().all(|v| *v == Velocity::ZERO), "{step:?}");
    p.instruction("move left", t + 0.02);
    for (k, name) in ["00_light_left.png", "01_centred.png", "02_light_right.png"].into_iter().enumerate() {
        let stamp = t + 0.1 * (k + 1) as f64;
        let frame = png(name, stamp);
        let step = p.frame(frame.clone(), stamp + 0.005);
        assert_eq!(step.runs.len(), 1, "{name}: {step:?}");
        assert!(step.runs[0].drove && step.runs[0].role == Role::Primary, "{name}");
        let want = if k == 0 { reference("move left", &frame) } else { step.commands[0] };
        assert_eq!(step.commands, vec![want], "{name}");
        assert!(want.y > 0.2, "the stand-in strafes left on 'move left': {want:?}");
    }
    // A frame older than camera.max_age_s never reaches the model, and the dead-man stops the robot.
    let step = p.frame(png("01_centred.png", t), t + 2.0);
    assert!(step.runs.is_empty(), "{step:?}");
    assert_eq!(p.tick(t + 2.0).commands, vec![Velocity::ZERO]);
}

#[test]
fn a_missing_model_is_named_and_the_fallback_drives() {
    let c = config();
    let mut s = specs(&c);
    s[Role::Primary].manifest = models().join("no_such_model.json");
    let t = 50.0;
    let (mut p, _) = Inline::new(&c, s, t);
    assert!(
        p.load_error(Role::Primary).is_some_and(|e| e.contains("no_such_model.json")),
        "{:?}",
        p.load_error(Role::Primary)
    );
    assert_eq!(p.pipeline().controller().watchdog().active(), Some(Role::Fallback));
    p.instruction("go to the cup", t);
    let step = p.frame(png("00_light_left.png", t + 0.1), t + 0.11);
    assert_eq!(step.runs.len(), 1);
    assert_eq!(step.runs[0].role, Role::Fallback);
    assert!(step.runs[0].drove && step.commands[0] != Velocity::ZERO, "{step:?}");
}

#[test]
fn a_stale_camera_gap_starts_the_recurrent_state_over() {
    let c = config();
    let t = 300.0;
    let (mut p, _) = Inline::new(&c, specs(&c), t);
    p.instruction("go forward", t);
    let first = p.frame(png("01_centred.png", t + 0.1), t + 0.11).commands;
    let second = p.frame(png("01_centred.png", t + 0.2), t + 0.21).commands;
    assert_ne!(first, second, "the stand-in's state moves linear.x from frame to frame");
    // 0.8 s without a frame (camera.max_age_s is 0.5): the next one is the first of a new history.
    let after_gap = p.frame(png("01_centred.png", t + 1.0), t + 1.01).commands;
    assert_eq!(after_gap, first);
}

/// The model team's family (models/team_tiny): every frame's command against PyTorch's, windows included.
#[test]
fn the_team_fixtures_command_what_pytorch_computed_for_the_same_windows() {
    for kind in ["features", "images"] {
        let dir = models().join("team_tiny").join(kind);
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        let mut c = config();
        c.camera.max_age_s = 5.0;
        c.watchdog.fallback_enabled = false;
        c.watchdog.deadline_s = 2.0;
        c.watchdog.hard_timeout_s = 4.0;
        let mut s = specs(&c);
        s[Role::Primary].manifest = dir.join(format!("{kind}.json"));
        let t = 100.0;
        let (mut p, _) = Inline::new(&c, s, t);
        assert!(p.load_error(Role::Primary).is_none(), "{kind}: {:?}", p.load_error(Role::Primary));
        let frames: Vec<PathBuf> =
            reference["frames"].as_array().unwrap().iter().map(|f| dir.join(f.as_str().unwrap())).collect();
        // ROS time keeps pace with the monotonic clock: were it to run ahead, the node would see a clock jump.
        let start = Instant::now();
        let ros_now = || t + start.elapsed().as_secs_f64();
        for run in reference["runs"].as_array().unwrap() {
            let instruction = run["instruction"].as_str().unwrap();
            p.instruction(instruction, ros_now());
            for (path, want) in frames.iter().zip(run["actions"].as_array().unwrap()) {
                let data = std::fs::read(path).unwrap();
                let stamp = ros_now();
                let frame =
                    OwnedFrame { stamp_s: Some(stamp), kind: FrameKind::Compressed { format: "jpeg".into() }, data };
                let step = p.frame(frame, ros_now());
                match want.as_array() {
                    None => assert!(
                        step.runs.is_empty() && step.commands.iter().all(|v| *v == Velocity::ZERO),
                        "{kind} {instruction} {}: {step:?}",
                        path.display()
                    ),
                    Some(want) => {
                        let got =
                            step.commands.last().copied().unwrap_or_else(|| panic!("{kind}: no command {step:?}"));
                        let want: Vec<f64> = want.iter().map(|v| v.as_f64().unwrap()).collect();
                        let diff = (got.x - want[0]).abs().max((got.y - want[1]).abs()).max((got.wz - want[2]).abs());
                        assert!(diff <= 1e-4, "{kind} {instruction} {}: {got:?} vs {want:?}", path.display());
                        // The axis the 2-axis head does not command is exactly zero.
                        let absent = if kind == "features" { got.wz } else { got.y };
                        assert_eq!(absent, 0.0, "{kind}: {got:?}");
                    }
                }
            }
        }
    }
}

/// On the replay clock only the recording's time counts: frames 0.1 s apart
/// fed as fast as they run, the pipeline sees no clock jump and no stale frame,
/// and commands what PyTorch computed; a slow frame (here: a pause of the
/// real clock) changes nothing.
#[test]
fn a_replay_follows_the_recordings_time_alone() {
    let dir = models().join("team_tiny").join("features");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let mut c = config();
    c.watchdog.fallback_enabled = false;
    let mut s = specs(&c);
    s[Role::Primary].manifest = dir.join("features.json");
    let t = 5_000.0;
    let (mut p, _) = Inline::replay(&c, s, t);
    let run = &reference["runs"][0];
    p.instruction(run["instruction"].as_str().unwrap(), t);
    let frames = reference["frames"].as_array().unwrap();
    for (k, (f, want)) in frames.iter().zip(run["actions"].as_array().unwrap()).enumerate() {
        let data = std::fs::read(dir.join(f.as_str().unwrap())).unwrap();
        let stamp = t + 0.1 * (k + 1) as f64;
        if k == 9 {
            // Longer than camera.max_age_s of real time: on the steady clock this frame would be judged against it.
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
        let frame = OwnedFrame { stamp_s: Some(stamp), kind: FrameKind::Compressed { format: "jpeg".into() }, data };
        let step = p.frame(frame, stamp);
        match want.as_array() {
            None => assert!(step.commands.iter().all(|v| *v == Velocity::ZERO) && !step.skips.is_empty(), "{k}"),
            Some(want) => {
                let got = step.commands.last().copied().unwrap_or_else(|| panic!("{k}: no command {step:?}"));
                assert!((got.x - want[0].as_f64().unwrap()).abs() <= 1e-4, "{k}: {got:?} vs {want:?}");
                assert!((got.y - want[1].as_f64().unwrap()).abs() <= 1e-4, "{k}: {got:?} vs {want:?}");
            }
        }
    }
}

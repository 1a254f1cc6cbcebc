//! The node's pipeline without ROS: instructions and frames in, commands out,
//! with the stand-in policies in real ONNX Runtime (ORT_DYLIB_PATH, as env.sh sets it).

use std::path::{Path, PathBuf};

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

//! Chunk playback against holding one step (not a test: prints a table).
//!
//!     cargo bench -p mobile_vla_core --bench chunks
//!
//! The control core, driven in simulated time as the node drives it: a camera
//! at 5 Hz, a policy that takes 150 ms ± 40 ms a run (as the real ones on the
//! Orin) and returns a chunk of 8 steps 0.1 s apart that predicts an "ideal"
//! velocity profile (v(t) = 0.4 sin(2 pi t / 2 s) m/s, step k =
//! v(stamp + k * 0.1 s)) with a model's errors: a bias per chunk (uniform
//! +-0.04 m/s) and noise growing along the chunk (uniform +-0.005 (k + 1) m/s),
//! the node's default output limits, and output ticks at 5 Hz and 20 Hz. For each mode (`first`: step 0 held until the next result;
//! `play`; `play` with ACT blending, m = 0.5) it reports the gap between the
//! published command and the ideal profile, and the commanded jerk (second
//! difference of the published velocity over the tick interval squared), over
//! 60 s.

use std::time::{Duration, Instant};

use mobile_vla_core::chunk::Playback;
use mobile_vla_core::command_mux::{LockSpec, SourceSpec};
use mobile_vla_core::control::{ControlConfig, Controller, FallbackMode, RunOutcome, RunResult};
use mobile_vla_core::limits::Limits;
use mobile_vla_core::vocab::{Freshness, Role, Velocity};
use mobile_vla_core::watchdog::WatchdogConfig;

const ROS0: f64 = 1000.0;
const PERIOD: f64 = 0.1;
const STEPS: usize = 8;

fn ideal(t: f64) -> f64 {
    0.4 * (2.0 * std::f64::consts::PI * t / 2.0).sin()
}

#[derive(Clone, Copy)]
enum Mode {
    First,
    Play,
    Blend,
}

fn controller(t0: Instant) -> Controller {
    let cfg = ControlConfig {
        watchdog: WatchdogConfig { deadline: Duration::from_millis(500), ..WatchdogConfig::default() },
        fallback: FallbackMode::Disabled,
        policy_priority: 10,
        command_timeout: Duration::from_millis(500),
        sources: vec![SourceSpec { name: "joystick".into(), priority: 100, timeout: Duration::from_millis(500) }],
        locks: vec![LockSpec { name: "e_stop".into(), priority: 255, timeout: None }],
        // The node's defaults (config/mobile_vla.yaml).
        limits: Limits {
            max_velocity: [0.5, 0.5, 1.0],
            max_accel: [1.0, 1.0, 2.0],
            max_decel: [0.0; 3],
            deadband: [0.0; 3],
            scale_velocities: false,
        },
        freshness: Freshness { max_age_s: 0.5, max_future_s: 0.05 },
        max_instruction_bytes: 1024,
        shadow: false,
    };
    let (mut c, _) = Controller::new(cfg, t0);
    c.loaded(Role::Primary, Ok(()), t0);
    c.instruction_received("follow the profile", t0);
    c
}

/// (RMS gap to the ideal, mean |gap|, RMS jerk) of the published commands at the ticks.
fn simulate(mode: Mode, output_hz: f64) -> (f64, f64, f64) {
    let t0 = Instant::now();
    let mut c = controller(t0);
    let ros = |dt: f64| ROS0 + dt;
    let at = |dt: f64| t0 + Duration::from_secs_f64(dt);
    let (frame_dt, seconds) = (0.2, 60.0);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut jitter = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 81) as f64 / 1000.0 - 0.04
    };
    // Events: result arrivals and ticks, in time order.
    let mut arrivals: Vec<(f64, f64)> = Vec::new(); // (arrival, frame stamp)
    let mut f = 0.0;
    while f < seconds {
        arrivals.push((f + 0.15 + jitter(), f));
        f += frame_dt;
    }
    let tick_dt = 1.0 / output_hz;
    let (mut gaps, mut cmds) = (Vec::new(), Vec::new());
    let mut next = 0;
    let mut tick = 1.0; // after the first results
    while tick < seconds {
        while next < arrivals.len() && arrivals[next].0 <= tick {
            let (arrive, stamp) = arrivals[next];
            let bias = jitter();
            let steps: Vec<Velocity> = (0..STEPS)
                .map(|k| {
                    let noise = jitter() / 0.04 * 0.005 * (k + 1) as f64;
                    Velocity { x: ideal(stamp + k as f64 * PERIOD) + bias + noise, y: 0.0, wz: 0.0 }
                })
                .collect();
            let playback = match mode {
                Mode::First => None,
                Mode::Play => Some(Playback { period_s: PERIOD, blend: None }),
                Mode::Blend => Some(Playback { period_s: PERIOD, blend: Some(0.5) }),
            };
            let r = RunResult {
                role: Role::Primary,
                generation: c.generation(),
                started: at(stamp),
                stamp_s: ros(stamp),
                latency: Duration::from_secs_f64(arrive - stamp),
                outcome: RunOutcome::Action {
                    command: steps[0],
                    raw_max_abs: 0.4,
                    chunk: playback.map(|p| (steps.clone(), p)),
                },
            };
            c.ran(&r, ros(arrive), at(arrive));
            next += 1;
        }
        let out = c.tick(at(tick), ros(tick)).publish.expect("a tick publishes").x;
        gaps.push(out - ideal(tick));
        cmds.push(out);
        tick += tick_dt;
    }
    let rms = |v: &[f64]| (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    let jerk: Vec<f64> = cmds.windows(3).map(|w| (w[2] - 2.0 * w[1] + w[0]) / (tick_dt * tick_dt)).collect();
    (rms(&gaps), gaps.iter().map(|g| g.abs()).sum::<f64>() / gaps.len() as f64, rms(&jerk))
}

fn main() {
    println!(
        "chunk playback: camera 5 Hz, runs 150 ms +- 40 ms, 8 steps 0.1 s apart, ideal 0.4 sin(2 pi t / 2 s) m/s, \
         prediction bias +-0.04 m/s a chunk and noise +-0.005 (k + 1) m/s a step"
    );
    println!("| output | mode | RMS gap to ideal (m/s) | mean abs gap (m/s) | RMS jerk (m/s^3) |");
    println!("|---|---|---|---|---|");
    for hz in [5.0, 20.0] {
        let first = simulate(Mode::First, hz);
        for (name, mode) in
            [("first (hold step 0)", Mode::First), ("play", Mode::Play), ("play + blend m=0.5", Mode::Blend)]
        {
            let (rms, mean, jerk) = simulate(mode, hz);
            println!(
                "| {hz:.0} Hz | {name} | {rms:.4} ({:.2}x first) | {mean:.4} | {jerk:.2} ({:.2}x first) |",
                rms / first.0,
                jerk / first.2
            );
        }
    }
}

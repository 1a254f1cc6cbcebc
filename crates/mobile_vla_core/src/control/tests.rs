//! The control core's rules, one event sequence at a time, and a property over random ones.

use super::*;
use crate::command_mux::{LockSpec, SourceSpec};
use crate::limits::Limits;
use crate::vocab::Freshness;
use crate::watchdog::{HealthState, WatchdogConfig};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);
const JOY: SourceId = SourceId(1);
const E_STOP: LockId = LockId(0);
/// ROS time of `t0` in the tests (the clocks only need to agree on differences).
const ROS0: f64 = 1000.0;

fn v(x: f64) -> Velocity {
    Velocity { x, y: 0.0, wz: 0.0 }
}

fn cfg(fallback: FallbackMode) -> ControlConfig {
    ControlConfig {
        watchdog: WatchdogConfig { deadline: Duration::from_secs(1), ..WatchdogConfig::default() },
        fallback,
        policy_priority: 10,
        command_timeout: 500 * MS,
        sources: vec![SourceSpec { name: "joystick".into(), priority: 100, timeout: 500 * MS }],
        locks: vec![LockSpec { name: "e_stop".into(), priority: 255, timeout: None }],
        limits: Limits {
            max_velocity: [10.0; 3],
            max_accel: [0.0; 3],
            max_decel: [0.0; 3],
            deadband: [0.0; 3],
            scale_velocities: false,
        },
        freshness: Freshness { max_age_s: 0.5, max_future_s: 0.05 },
        max_instruction_bytes: 64,
        shadow: false,
    }
}

/// Both policies loaded, instruction "go" set.
fn ready(t0: Instant) -> Controller {
    let (mut c, fx) = Controller::new(cfg(FallbackMode::Eager), t0);
    assert_eq!(fx.start, vec![Role::Primary, Role::Fallback]);
    c.loaded(Role::Primary, Ok(()), t0);
    c.loaded(Role::Fallback, Ok(()), t0);
    c.instruction_received("go", t0);
    c
}

fn result(c: &Controller, role: Role, started: Instant, x: f64) -> RunResult {
    RunResult {
        role,
        generation: c.generation(),
        started,
        stamp_s: 0.0, // set by `run`
        latency: 10 * MS,
        outcome: RunOutcome::Action { command: v(x), raw_max_abs: x.abs(), chunk: None },
    }
}

/// ROS time at `t`, with the ROS clock running like the monotonic one.
fn ros(t0: Instant, t: Instant) -> f64 {
    ROS0 + t.duration_since(t0).as_secs_f64()
}

fn run(c: &mut Controller, t0: Instant, r: &RunResult, at: Instant) -> Effects {
    let mut r = r.clone();
    r.stamp_s = ros(t0, r.started);
    c.ran(&r, ros(t0, at), at)
}

/// A chunk of `xs`, 100 ms a step, from a run that took its frame at `started`.
fn chunked(c: &Controller, started: Instant, xs: &[f64]) -> RunResult {
    let mut r = result(c, Role::Primary, started, xs[0]);
    let steps = xs.iter().map(|&x| v(x)).collect();
    r.outcome = RunOutcome::Action {
        command: v(xs[0]),
        raw_max_abs: 1.0,
        chunk: Some((steps, Playback { period_s: 0.1, blend: None })),
    };
    r
}

/// The primary's result of `x` for a frame taken at `started`, handled at `at`.
fn run_at(c: &mut Controller, t0: Instant, started: Instant, x: f64, at: Instant) -> Effects {
    let r = result(c, Role::Primary, started, x);
    run(c, t0, &r, at)
}

fn tick_at(c: &mut Controller, t0: Instant, t: Instant) -> Velocity {
    c.tick(t, ros(t0, t)).publish.expect("a tick publishes")
}

#[test]
fn in_shadow_mode_a_result_is_a_proposal_scored_against_what_drives_and_never_drives() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let mut shadow = cfg(FallbackMode::Eager);
    shadow.shadow = true;
    // The policy drives; entering shadow mode forgets its command at once.
    run_at(&mut c, t0, t0, 0.4, t0 + 5 * MS);
    assert_eq!(c.decision().command, v(0.4));
    c.reconfigure(shadow.clone(), t0 + 10 * MS);
    assert_eq!(tick_at(&mut c, t0, t0 + 11 * MS), Velocity::ZERO);
    // Its fresh results are proposals, paired with what is on cmd_vel: zero, then the joystick's 0.2.
    let fx = run_at(&mut c, t0, t0 + 20 * MS, 0.3, t0 + 25 * MS);
    assert!(!fx.drove && fx.proposal == Some(v(0.3)) && fx.publish.is_none_or(|p| p == Velocity::ZERO), "{fx:?}");
    c.teleop(JOY, v(0.2), t0 + 30 * MS);
    let fx = run_at(&mut c, t0, t0 + 40 * MS, 0.5, t0 + 45 * MS);
    assert_eq!((fx.drove, fx.proposal), (false, Some(v(0.5))));
    assert_eq!(tick_at(&mut c, t0, t0 + 50 * MS), v(0.2), "the joystick drives, not the proposal");
    let a = c.shadow().expect("in shadow mode");
    assert_eq!(a.samples, 2);
    assert!((a.mae[0] - (0.3 + 0.3) / 2.0).abs() < 1e-12, "{a:?}");
    assert_eq!(a.sign_agreement[0], 0.5, "0.3 vs a still robot disagrees; 0.5 vs 0.2 agrees");
    // A stale result is no proposal.
    let stale = RunResult { stamp_s: ros(t0, t0) - 1.0, ..result(&c, Role::Primary, t0 + 60 * MS, 0.9) };
    assert_eq!(c.ran(&stale, ros(t0, t0 + 65 * MS), t0 + 65 * MS).proposal, None);
    assert_eq!(c.shadow().unwrap().samples, 2);
}

#[test]
fn a_chunk_proposes_the_step_it_would_start_driving_from() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let mut shadow = cfg(FallbackMode::Eager);
    shadow.shadow = true;
    c.reconfigure(shadow, t0);
    // Steps 100 ms apart; the result arrives 250 ms after its frame: step 2 is due.
    let r = chunked(&c, t0 + 10 * MS, &[0.1, 0.2, 0.3, 0.4]);
    let fx = run(&mut c, t0, &r, t0 + 260 * MS);
    assert_eq!(fx.proposal, Some(v(0.3)));
    assert_eq!(tick_at(&mut c, t0, t0 + 270 * MS), Velocity::ZERO, "and nothing of it plays");
}

#[test]
fn leaving_shadow_mode_drives_only_from_a_run_started_afterwards() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let mut shadow = cfg(FallbackMode::Eager);
    shadow.shadow = true;
    c.reconfigure(shadow, t0);
    let in_shadow = result(&c, Role::Primary, t0 + 10 * MS, 0.3);
    c.reconfigure(cfg(FallbackMode::Eager), t0 + 20 * MS);
    assert_eq!(c.shadow(), None);
    // Started in shadow mode, ended after it: no command, no proposal.
    let fx = run(&mut c, t0, &in_shadow, t0 + 30 * MS);
    assert!(!fx.drove && fx.proposal.is_none(), "{fx:?}");
    assert_eq!(tick_at(&mut c, t0, t0 + 31 * MS), Velocity::ZERO);
    let fx = run_at(&mut c, t0, t0 + 40 * MS, 0.3, t0 + 45 * MS);
    assert!(fx.drove && fx.publish == Some(v(0.3)), "{fx:?}");
}

#[test]
fn a_chunk_plays_from_its_frame_stamp_and_stops_at_its_end() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    // The frame at t0; the result arrives 150 ms later: step 0 is past, step 1 plays.
    let r = chunked(&c, t0, &[0.1, 0.2, 0.3, 0.4]);
    let fx = run(&mut c, t0, &r, t0 + 150 * MS);
    assert!(fx.drove);
    assert_eq!(fx.publish, Some(v(0.2)));
    assert_eq!(tick_at(&mut c, t0, t0 + 199 * MS), v(0.2));
    assert_eq!(tick_at(&mut c, t0, t0 + 200 * MS), v(0.3));
    assert_eq!(tick_at(&mut c, t0, t0 + 350 * MS), v(0.4));
    // Past the last step: zero, never an extrapolation.
    assert_eq!(tick_at(&mut c, t0, t0 + 400 * MS), Velocity::ZERO);
    assert_eq!(tick_at(&mut c, t0, t0 + 450 * MS), Velocity::ZERO);
}

#[test]
fn the_command_timeout_ends_a_chunk_longer_than_it() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let long: Vec<f64> = (1..=20).map(|k| k as f64 / 100.0).collect();
    let r = chunked(&c, t0, &long);
    run(&mut c, t0, &r, t0 + 10 * MS);
    assert_eq!(tick_at(&mut c, t0, t0 + 450 * MS), v(0.05));
    // 500 ms after the result: no newer result, the dead man stops the chunk.
    assert_eq!(tick_at(&mut c, t0, t0 + 520 * MS), Velocity::ZERO);
}

#[test]
fn nothing_of_a_chunk_plays_after_an_instruction_change_a_pause_a_lock_or_a_switch() {
    let steps = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
    type Event = fn(&mut Controller, Instant);
    let events: [(&str, Event); 5] = [
        ("new instruction", |c, t| drop(c.instruction_received("turn", t))),
        ("pause", |c, t| drop(c.set_autonomy(false, t))),
        ("stop", |c, t| drop(c.system_control("stop", t))),
        ("e-stop engaged and released", |c, t| {
            c.lock(E_STOP, true, t);
            c.lock(E_STOP, false, t);
        }),
        ("switch to the fallback", |c, t| {
            let mut nan = result(c, Role::Primary, t, 0.0);
            nan.outcome = RunOutcome::NonFinite;
            nan.stamp_s = ROS0;
            c.ran(&nan, ROS0, t);
        }),
    ];
    for (what, event) in events {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let r = chunked(&c, t0, &steps);
        run(&mut c, t0, &r, t0 + 10 * MS);
        assert_eq!(tick_at(&mut c, t0, t0 + 110 * MS), v(0.2), "{what}");
        event(&mut c, t0 + 120 * MS);
        for k in 2..6 {
            let t = t0 + (k * 100 + 30) * MS;
            assert_eq!(tick_at(&mut c, t0, t), Velocity::ZERO, "{what}: step {k} played");
        }
    }
}

#[test]
fn after_a_clock_jump_only_results_computed_in_the_new_timeline_drive() {
    // Found from outside: with blending, /clock jumping from ~1000 s to 10 s
    // left the old chunk driving for seconds while every new run was refused.
    let blended = |c: &Controller, started: Instant, stamp_s: f64, x: f64| {
        let mut r = chunked(c, started, &[x; 40]);
        r.stamp_s = stamp_s;
        if let RunOutcome::Action { chunk: Some((_, p)), .. } = &mut r.outcome {
            p.blend = Some(0.1);
        }
        r
    };
    for back in [true, false] {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let r = blended(&c, t0, ROS0, 1.0);
        assert!(c.ran(&r, ROS0 + 0.01, t0 + 10 * MS).drove);
        assert_eq!(c.tick(t0 + 50 * MS, ROS0 + 0.05).publish, Some(v(1.0)));
        // A run in flight across the jump, and the jump itself.
        let in_flight = blended(&c, t0 + 60 * MS, ROS0 + 0.06, 0.5);
        let to = if back { 10.0 } else { ROS0 + 500.0 };
        let t = t0 + 100 * MS;
        let fx = c.tick(t, to);
        assert_eq!(fx.publish, Some(Velocity::ZERO), "back: {back}: the old chunk drove after the jump");
        let Task { generation: g, text, .. } =
            fx.instruction.expect("the workers start the task again (recurrent state reset)");
        assert_eq!((g, text.as_deref()), (c.generation(), Some("go")));
        assert!(c.status().reason.to_string().contains("ROS time jumped"), "{}", c.status().reason);
        assert!(!c.ran(&in_flight, to + 0.01, t + 10 * MS).drove, "back: {back}: a run from before drove");
        assert_eq!(c.tick(t + 20 * MS, to + 0.02).publish, Some(Velocity::ZERO));
        // The first result of the new timeline drives at once, as on a fresh node.
        let fresh = blended(&c, t + 30 * MS, to + 0.03, 0.3);
        let fx = c.ran(&fresh, to + 0.04, t + 40 * MS);
        assert!(fx.drove, "back: {back}");
        assert_eq!(fx.publish, Some(v(0.3)));
        assert_eq!(c.status().reason.to_string(), "");
    }
}

#[test]
fn an_instruction_the_tokenizer_refused_is_the_status_reason_until_a_good_one_drives() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let fx = c.skipped(Role::Primary, &Skip::BadInstruction("text too long".into()), t0 + MS);
    assert_eq!(fx.publish, Some(Velocity::ZERO));
    assert!(c.status().reason.to_string().starts_with("instruction refused: text too long"), "{}", c.status().reason);
    c.instruction_received("go left", t0 + 2 * MS);
    let r = result(&c, Role::Primary, t0 + 3 * MS, 0.4);
    assert!(run(&mut c, t0, &r, t0 + 4 * MS).drove);
    assert_eq!(c.status().reason.to_string(), "");
}

#[test]
fn an_old_tasks_chunk_never_blends_into_the_new_tasks() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let blended = |c: &Controller, started: Instant, x: f64| {
        let mut r = chunked(c, started, &[x; 8]);
        if let RunOutcome::Action { chunk: Some((_, p)), .. } = &mut r.outcome {
            p.blend = Some(0.0);
        }
        r
    };
    let r = blended(&c, t0, 1.0);
    run(&mut c, t0, &r, t0 + 10 * MS);
    assert_eq!(tick_at(&mut c, t0, t0 + 50 * MS), v(1.0));
    c.instruction_received("turn", t0 + 60 * MS);
    // The new task's first chunk overlaps the old one in time: only it plays.
    let r = blended(&c, t0 + 70 * MS, 0.2);
    run(&mut c, t0, &r, t0 + 80 * MS);
    assert_eq!(tick_at(&mut c, t0, t0 + 100 * MS), v(0.2));
    // ...while two chunks of the same task do blend (equal weights with m = 0).
    let r = blended(&c, t0 + 110 * MS, 0.4);
    run(&mut c, t0, &r, t0 + 120 * MS);
    let x = tick_at(&mut c, t0, t0 + 130 * MS).x;
    assert!((x - 0.3).abs() < 1e-9, "{x}");
}

#[test]
fn a_chunk_of_a_frame_gone_stale_never_plays() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    // The run took 600 ms: its frame is older than max_age_s when it ends.
    let fx = {
        let r = chunked(&c, t0, &[0.1; 10]);
        run(&mut c, t0, &r, t0 + 600 * MS)
    };
    assert!(!fx.drove);
    assert_eq!(tick_at(&mut c, t0, t0 + 610 * MS), Velocity::ZERO);
}

#[test]
fn new_parameters_apply_from_the_next_event_and_never_revive_a_command() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let r = result(&c, Role::Primary, t0, 2.0);
    assert_eq!(run(&mut c, t0, &r, t0 + MS).publish, Some(v(2.0)));
    let mut next = cfg(FallbackMode::Eager);
    next.limits.max_velocity = [0.5; 3];
    next.command_timeout = 100 * MS;
    c.reconfigure(next, t0 + 2 * MS);
    // The held command, now limited; and it times out after the new 100 ms.
    assert_eq!(c.tick(t0 + 50 * MS, ROS0).publish, Some(v(0.5)));
    assert_eq!(c.tick(t0 + 150 * MS, ROS0).publish, Some(Velocity::ZERO));
    // A longer timeout again never revives the command that timed out.
    c.reconfigure(cfg(FallbackMode::Eager), t0 + 155 * MS);
    assert_eq!(c.tick(t0 + 160 * MS, ROS0).publish, Some(Velocity::ZERO));
}

#[test]
fn a_live_change_that_would_weaken_the_engaged_e_stop_is_refused() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    c.lock(E_STOP, true, t0);
    let mut weaker = cfg(FallbackMode::Eager);
    weaker.locks[0].priority = 50;
    let why = c.refuses(&weaker, t0 + MS).expect("refused while engaged");
    assert!(why.contains("e_stop") && why.contains("joystick"), "{why}");
    // The policy's own priority counts too.
    let mut policy_up = cfg(FallbackMode::Eager);
    policy_up.policy_priority = 255;
    policy_up.locks[0].priority = 254;
    assert!(c.refuses(&policy_up, t0 + MS).is_some());
    c.lock(E_STOP, false, t0 + 2 * MS);
    assert_eq!(c.refuses(&weaker, t0 + 3 * MS), None, "released: the change applies");
}

#[test]
fn a_longer_lock_timeout_never_releases_a_lock_its_timeout_engaged() {
    let t0 = Instant::now();
    let mut config = cfg(FallbackMode::Eager);
    config.locks[0].timeout = Some(100 * MS);
    let (mut c, _) = Controller::new(config.clone(), t0);
    c.loaded(Role::Primary, Ok(()), t0);
    c.instruction_received("go", t0);
    c.lock(E_STOP, false, t0);
    assert!(!c.mux().is_locked(E_STOP, t0 + 50 * MS));
    assert!(c.mux().is_locked(E_STOP, t0 + 150 * MS), "the silent lock engaged by itself");
    config.locks[0].timeout = Some(Duration::from_secs(10));
    c.reconfigure(config, t0 + 150 * MS);
    assert!(c.mux().is_locked(E_STOP, t0 + 200 * MS), "only its publisher releases it");
}

#[test]
fn an_inactive_node_publishes_nothing_but_one_zero_and_forgets_what_it_held() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    c.teleop(JOY, v(0.3), t0);
    assert_eq!(c.tick(t0 + MS, ROS0).publish, Some(v(0.3)));
    let fx = c.set_active(false, t0 + 2 * MS);
    assert_eq!(fx.publish, Some(Velocity::ZERO), "one zero on deactivate");
    assert_eq!(c.tick(t0 + 3 * MS, ROS0).publish, None);
    c.teleop(JOY, v(0.3), t0 + 4 * MS);
    let r = result(&c, Role::Primary, t0 + 4 * MS, 0.4);
    assert_eq!(run(&mut c, t0, &r, t0 + 5 * MS).publish, None);
    assert!(!c.wants_frame(Role::Primary, t0 + 5 * MS));
    assert_eq!(c.status().state, NodeState::SafeStop);
    // Activated again: what was sent while inactive does not drive.
    assert_eq!(c.set_active(true, t0 + 6 * MS).publish, Some(Velocity::ZERO));
    assert_eq!(c.tick(t0 + 7 * MS, ROS0).publish, Some(Velocity::ZERO));
    c.teleop(JOY, v(0.2), t0 + 8 * MS);
    assert_eq!(c.tick(t0 + 9 * MS, ROS0).publish, Some(v(0.2)));
}

#[test]
fn a_fresh_current_result_drives_at_once() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let r = result(&c, Role::Primary, t0 + MS, 0.3);
    let fx = run(&mut c, t0, &r, t0 + 20 * MS);
    assert_eq!(fx.publish, Some(v(0.3)));
    assert!(fx.drove);
    assert_eq!(c.status().state, NodeState::Running);
    // The dead-man: no newer result within the command timeout means zero.
    assert_eq!(c.tick(t0 + 600 * MS, ROS0).publish, Some(Velocity::ZERO));
}

#[test]
fn a_result_for_a_replaced_or_cleared_instruction_never_drives() {
    for next in ["turn around", ""] {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let in_flight = result(&c, Role::Primary, t0 + MS, 0.3);
        let fx = c.instruction_received(next, t0 + 50 * MS);
        assert!(fx.instruction.is_some());
        let fx = run(&mut c, t0, &in_flight, t0 + 100 * MS);
        assert_eq!(fx.publish, None, "{next:?}");
        assert!(!fx.drove);
        assert_eq!(c.tick(t0 + 120 * MS, ROS0).publish, Some(Velocity::ZERO), "{next:?}");
        if next.is_empty() {
            assert_eq!(c.status().reason.to_string(), Skip::NoInstruction.to_string());
        }
    }
}

#[test]
fn a_result_tagged_with_an_older_generation_never_drives_even_if_it_started_late() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let old = result(&c, Role::Primary, t0 + 60 * MS, 0.3);
    c.instruction_received("turn around", t0 + 50 * MS);
    // The worker had not seen the change yet when it started this run.
    assert!(!run(&mut c, t0, &old, t0 + 100 * MS).drove);
    let new = result(&c, Role::Primary, t0 + 110 * MS, 0.2);
    assert!(run(&mut c, t0, &new, t0 + 150 * MS).drove);
}

#[test]
fn after_pause_and_resume_only_a_run_started_after_the_resume_drives() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let before_pause = result(&c, Role::Primary, t0 + MS, 0.3);
    c.set_autonomy(false, t0 + 10 * MS);
    assert_eq!(c.status().state, NodeState::Paused);
    let while_paused = result(&c, Role::Primary, t0 + 20 * MS, 0.4);
    assert!(!run(&mut c, t0, &while_paused, t0 + 30 * MS).drove);
    c.set_autonomy(true, t0 + 40 * MS);
    assert!(!run(&mut c, t0, &before_pause, t0 + 50 * MS).drove);
    assert_eq!(c.tick(t0 + 60 * MS, ROS0).publish, Some(Velocity::ZERO), "nothing kept across the pause");
    let after = result(&c, Role::Primary, t0 + 70 * MS, 0.5);
    assert_eq!(run(&mut c, t0, &after, t0 + 80 * MS).publish, Some(v(0.5)));
}

#[test]
fn a_lock_stops_at_once_and_its_release_needs_fresh_commands() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    c.teleop(JOY, v(0.2), t0);
    assert_eq!(c.tick(t0 + MS, ROS0).publish, Some(v(0.2)));
    let in_flight = result(&c, Role::Primary, t0 + 2 * MS, 0.3);
    assert_eq!(c.lock(E_STOP, true, t0 + 5 * MS).publish, Some(Velocity::ZERO));
    assert_eq!(c.status().state, NodeState::SafeStop);
    c.teleop(JOY, v(0.25), t0 + 10 * MS);
    assert_eq!(c.tick(t0 + 11 * MS, ROS0).publish, Some(Velocity::ZERO));
    // A repeated "engaged" is no change.
    c.lock(E_STOP, true, t0 + 12 * MS);
    assert_eq!(c.lock(E_STOP, false, t0 + 20 * MS).publish, Some(Velocity::ZERO), "joystick from before");
    assert!(!run(&mut c, t0, &in_flight, t0 + 30 * MS).drove, "policy run from before");
    c.teleop(JOY, v(0.1), t0 + 40 * MS);
    assert_eq!(c.tick(t0 + 41 * MS, ROS0).publish, Some(v(0.1)));
    // A release repeated (a heartbeat of `false`) is no change: commands survive it.
    c.lock(E_STOP, false, t0 + 45 * MS);
    assert_eq!(c.tick(t0 + 46 * MS, ROS0).publish, Some(v(0.1)));
}

#[test]
fn a_result_whose_frame_went_stale_during_the_run_does_not_drive() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let r = result(&c, Role::Primary, t0, 0.3);
    assert!(!run(&mut c, t0, &r, t0 + 600 * MS).drove);
    assert!(c.status().reason.to_string().contains("stale"), "{}", c.status().reason);
}

#[test]
fn the_raw_action_is_judged_not_the_clipped_one() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let mut r = result(&c, Role::Primary, t0 + MS, 1.15);
    r.outcome = RunOutcome::Action { command: v(1.15), raw_max_abs: 9.0, chunk: None };
    let fx = run(&mut c, t0, &r, t0 + 10 * MS);
    assert!(!fx.drove);
    assert_eq!(fx.hand_newest_to, Some(Role::Fallback));
    assert_eq!(c.watchdog().active(), Some(Role::Fallback));
    assert!(c.watchdog().report(Role::Primary).last_error.contains("out of range"));
}

#[test]
fn teleop_winning_means_the_result_did_not_drive() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    c.teleop(JOY, v(-0.2), t0);
    let r = result(&c, Role::Primary, t0 + MS, 0.3);
    let fx = run(&mut c, t0, &r, t0 + 10 * MS);
    assert_eq!(fx.publish, Some(v(-0.2)));
    assert!(!fx.drove);
}

#[test]
fn a_dead_worker_fails_its_policy_and_starts_a_lazy_fallback() {
    let t0 = Instant::now();
    let (mut c, fx) = Controller::new(cfg(FallbackMode::Lazy), t0);
    assert_eq!(fx.start, vec![Role::Primary]);
    c.loaded(Role::Primary, Ok(()), t0);
    assert_eq!(c.watchdog().active(), Some(Role::Primary));
    let fx = c.worker_exited(Role::Primary, "panicked", t0 + MS);
    assert_eq!(fx.start, vec![Role::Fallback]);
    assert_eq!(c.watchdog().active(), None);
    assert_eq!(c.watchdog().report(Role::Primary).state, HealthState::Unavailable);
    assert!(c.status().reason.to_string().contains("inference thread died"), "{}", c.status().reason);
    c.loaded(Role::Fallback, Ok(()), t0 + 2 * MS);
    assert_eq!(c.watchdog().active(), Some(Role::Fallback));
    assert!(!c.wants_frame(Role::Primary, t0 + Duration::from_secs(3600)));
}

#[test]
fn a_primary_that_fails_to_load_starts_the_lazy_fallback_and_a_disabled_one_never() {
    let t0 = Instant::now();
    let (mut c, _) = Controller::new(cfg(FallbackMode::Lazy), t0);
    assert_eq!(c.loaded(Role::Primary, Err("missing".into()), t0).start, vec![Role::Fallback]);
    let (mut c, fx) = Controller::new(cfg(FallbackMode::Disabled), t0);
    assert_eq!(fx.start, vec![Role::Primary]);
    let fx = c.loaded(Role::Primary, Err("missing".into()), t0);
    assert!(fx.start.is_empty());
    assert_eq!(c.status().state, NodeState::SafeStop);
    assert!(c.status().reason.to_string().contains("missing"), "{}", c.status().reason);
}

#[test]
fn status_says_why_the_robot_holds_still() {
    let t0 = Instant::now();
    let (mut c, _) = Controller::new(cfg(FallbackMode::Eager), t0);
    assert_eq!(c.status().state, NodeState::Starting);
    c.loaded(Role::Primary, Ok(()), t0);
    c.loaded(Role::Fallback, Ok(()), t0);
    assert_eq!(c.status().reason.to_string(), Skip::NoInstruction.to_string());
    c.instruction_received(&"x".repeat(100), t0);
    let s = c.status();
    assert_eq!(s.state, NodeState::SafeStop);
    assert!(
        s.reason.to_string().contains("100 bytes") && s.reason.to_string().contains("instruction.max_bytes = 64"),
        "{}",
        s.reason
    );
    c.instruction_received("go", t0);
    assert_eq!(c.status().reason.to_string(), "waiting for camera frames");
    c.skipped(Role::Primary, &Skip::Future { ahead_s: 9.9 }, t0);
    assert!(c.status().reason.to_string().contains("stamped in the future"));
    c.system_control("stop", t0);
    assert_eq!(c.status().state, NodeState::Paused);
    assert_eq!(c.instruction(), &Instruction::None);
}

/// Commands in the property test are multiples of this (within every limit).
const ID: f64 = 0.001;

#[derive(Debug, Clone)]
enum Ev {
    Instruction(u8),
    Pause(bool),
    Lock(bool),
    Joy,
    /// A primary run: which generation (0: current, 1: the previous one), how
    /// long ago it started, and whether it returned a chunk to play.
    Run {
        older_generation: bool,
        started_ms_ago: u64,
        chunked: bool,
    },
    Tick,
}

fn event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        1 => (0u8..3).prop_map(Ev::Instruction),
        1 => any::<bool>().prop_map(Ev::Pause),
        1 => any::<bool>().prop_map(Ev::Lock),
        1 => Just(Ev::Joy),
        3 => (any::<bool>(), 0u64..300, any::<bool>())
            .prop_map(|(o, s, chunked)| Ev::Run { older_generation: o, started_ms_ago: s, chunked }),
        2 => Just(Ev::Tick),
    ]
}

proptest! {
    /// Every policy command that reaches the output (a single action or a
    /// chunk's step) was computed for the current instruction, by a run that
    /// started after the latest instruction change, stop, pause, resume or
    /// lock change, while the robot was neither paused nor locked; teleop
    /// commands that reach it were sent after the latest lock change.
    #[test]
    fn nothing_from_before_a_change_ever_drives(
        steps in prop::collection::vec((event(), 1u64..80), 1..120)
    ) {
        let t0 = Instant::now();
        let mut c = ready(t0);
        let mut now = t0;
        // The test's own record of the spec's barriers.
        let mut instruction = "go".to_string();
        let (mut paused, mut locked) = (false, false);
        let mut barrier = t0;
        let mut lock_barrier = t0;
        // Results and joystick commands by the value they carry.
        let mut runs: Vec<(Generation, Instant)> = Vec::new();
        let mut joys: Vec<Instant> = Vec::new();
        for (ev, dt) in steps {
            now += Duration::from_millis(dt);
            let fx = match ev {
                Ev::Instruction(i) => {
                    let text = ["go", "turn left", ""][i as usize].to_string();
                    if text != instruction { barrier = now; instruction = text.clone(); }
                    c.instruction_received(&text, now)
                }
                Ev::Pause(p) => {
                    if p != paused { barrier = now; paused = p; }
                    c.set_autonomy(!p, now).0
                }
                Ev::Lock(l) => {
                    if l != locked { barrier = now; lock_barrier = now; locked = l; }
                    c.lock(E_STOP, l, now)
                }
                Ev::Joy => {
                    joys.push(now);
                    c.teleop(JOY, v(-ID * joys.len() as f64), now);
                    c.tick(now, ros(t0, now))
                }
                Ev::Run { older_generation, started_ms_ago, chunked } => {
                    let generation = Generation(c.generation().0.saturating_sub(older_generation as u64));
                    let started = now.checked_sub(Duration::from_millis(started_ms_ago)).unwrap_or(t0).max(t0);
                    runs.push((generation, started));
                    let r = RunResult {
                        role: Role::Primary,
                        generation,
                        started,
                        stamp_s: ros(t0, started),
                        latency: MS,
                        outcome: RunOutcome::Action {
                            command: v(ID * runs.len() as f64),
                            raw_max_abs: 0.0,
                            // A chunk whose every step carries the run's index.
                            chunk: chunked.then(|| {
                                (vec![v(ID * runs.len() as f64); 6], Playback { period_s: 0.05, blend: None })
                            }),
                        },
                    };
                    c.ran(&r, ros(t0, now), now)
                }
                Ev::Tick => c.tick(now, ros(t0, now)),
            };
            let Some(out) = fx.publish else { continue };
            // Each command carries the index of the result or joystick message it came from.
            let id = (out.x.abs() / ID).round() as usize;
            if out.x > 0.0 {
                let (generation, started) = runs[id - 1];
                prop_assert_eq!(generation, c.generation());
                prop_assert!(started >= barrier, "a run from before the latest change drove");
                prop_assert!(!paused && !locked && !instruction.is_empty());
            } else if out.x < 0.0 {
                let sent = joys[id - 1];
                prop_assert!(sent >= lock_barrier && !locked);
            }
        }
    }
}

#[test]
fn a_teleop_command_goes_out_at_once_not_at_the_next_tick() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let fx = c.teleop(JOY, v(0.3), t0 + MS);
    assert_eq!(fx.publish, Some(v(0.3)));
    assert!(fx.diagnostics, "the joystick took control");
    // A refused (non-finite) one changes nothing and still answers with what drives.
    let fx = c.teleop(JOY, v(f64::NAN), t0 + 2 * MS);
    assert_eq!(fx.publish, Some(v(0.3)));
}

#[test]
fn stop_pauses_and_clears_the_task_in_one_answer() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let fx = c.system_control("stop", t0 + MS);
    let task = fx.instruction.expect("the workers are told the task is over");
    assert_eq!((task.generation, task.text), (c.generation(), None));
    assert_eq!(fx.publish, Some(Velocity::ZERO));
    assert_eq!(c.status().state, NodeState::Paused);
}

#[test]
fn a_run_started_before_its_policy_took_control_never_drives() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    // The pure policy's run started at t0 + 1 ms, on its old history; the hybrid fails at t0 + 2 ms.
    let early = result(&c, Role::Fallback, t0 + MS, 0.3);
    let mut nan = result(&c, Role::Primary, t0 + MS, 0.0);
    nan.outcome = RunOutcome::NonFinite;
    assert_eq!(run(&mut c, t0, &nan, t0 + 2 * MS).hand_newest_to, Some(Role::Fallback));
    let fx = run(&mut c, t0, &early, t0 + 3 * MS);
    assert!(!fx.drove, "a run from before the switch drove");
    assert_eq!(tick_at(&mut c, t0, t0 + 4 * MS), Velocity::ZERO);
    // Its first run on the new history drives.
    let fresh = result(&c, Role::Fallback, t0 + 5 * MS, 0.3);
    assert!(run(&mut c, t0, &fresh, t0 + 6 * MS).drove);
}

#[test]
fn a_policy_taking_control_and_a_deactivation_or_activation_start_a_new_history() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let before = c.task();
    // The hybrid fails: the pure policy takes control on a new history (same task and generation).
    let mut nan = result(&c, Role::Primary, t0 + MS, 0.0);
    nan.outcome = RunOutcome::NonFinite;
    let fx = run(&mut c, t0, &nan, t0 + 2 * MS);
    assert_eq!(fx.hand_newest_to, Some(Role::Fallback));
    let task = fx.instruction.expect("the workers hear of the new history");
    assert_eq!((task.generation, &task.text), (before.generation, &before.text));
    assert_eq!(task.history, before.history.next());
    // Deactivated: a new history again, and the instruction stays.
    let fx = c.set_active(false, t0 + 3 * MS);
    assert_eq!(fx.instruction.map(|t| t.history), Some(before.history.next().next()));
    assert_eq!(c.task().text.as_deref(), Some("go"));
    // Activated: whatever ran meanwhile, a new history once more.
    let fx = c.set_active(true, t0 + 4 * MS);
    assert_eq!(fx.instruction.map(|t| t.history), Some(before.history.next().next().next()));
}

#[test]
fn a_window_still_filling_holds_the_robot_still_without_a_warning() {
    let t0 = Instant::now();
    let mut c = ready(t0);
    let fx = c.skipped(Role::Primary, &Skip::WindowFilling { have: 3, need: 8 }, t0 + MS);
    assert_eq!(fx.publish, Some(Velocity::ZERO));
    let s = c.status();
    assert_eq!(s.state, NodeState::SafeStop);
    assert_eq!(s.reason.to_string(), "the frame window is filling (3 of 8 frames)");
    // The first result once it is full drives as any other.
    let r = result(&c, Role::Primary, t0 + 2 * MS, 0.2);
    assert!(run(&mut c, t0, &r, t0 + 3 * MS).drove);
}

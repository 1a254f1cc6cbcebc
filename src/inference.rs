//! The inference thread: one policy's [`Runner`], off the async runtime.
//!
//! Owns the thread and what crosses it: the task and the newest frame come in
//! through the inbox, what happened goes out as [`Event`]s tagged with the
//! worker's [`Epoch`]. The policy is loaded and warmed here, so a TensorRT
//! engine build never blocks the node from publishing zero; a remote policy
//! whose server cannot be reached is reported once and tried again every
//! `remote.retry_s` while frames keep being answered. Every decision
//! about a frame (skip it, run it) is the runner's, and whether a result may
//! move the robot the control core's; this thread decides neither and
//! publishes nothing.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mobile_vla_core::inbox::Inbox;
use mobile_vla_core::pipeline::Epoch;
use mobile_vla_core::vocab::{Role, SharedFreshness, Skip, Task};
use mobile_vla_policy::runner::{self, Handled, Loaded, PolicySpec, Run, RunWatch, Runner};
use mobile_vla_policy::session::Providers;
use mobile_vla_policy::PolicyError;
use r2r::builtin_interfaces::msg::Time;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use crate::camera_frame::Frame;
use crate::ros_clock::{stamp_s, NodeClock};

/// A frame and its sequence number; shared with every policy it is handed to, so never copied.
pub struct SeqFrame {
    pub seq: u64,
    pub frame: Arc<Frame>,
}

pub type FrameInbox = Inbox<SeqFrame, Task>;

/// How long the thread waits for a frame before it looks at the inbox again.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// One policy run, with what `~/inference_stats` reports of it.
pub struct RunReport {
    pub run: Run,
    pub frame_seq: u64,
    pub stamp: Time,
    pub frame_id: String,
    pub provider: String,
    pub dropped: u64,
}

/// What a worker reports, tagged with the policy and the worker's epoch.
pub struct Event {
    pub role: Role,
    pub epoch: Epoch,
    pub what: What,
}

pub enum What {
    /// `providers`: the execution providers registered for it and the graph nodes ONNX Runtime assigned each.
    Loaded {
        providers: Providers,
        loaded: Loaded,
    },
    LoadFailed(String),
    /// A remote policy's server cannot be reached; the worker keeps trying (a `Loaded` follows if it connects).
    Unreachable(String),
    Ran(Box<RunReport>),
    Skipped {
        reason: Skip,
        dropped: u64,
    },
    /// The inference thread panicked: this policy can no longer run.
    Died(String),
}

/// What a worker thread is given.
pub struct Start {
    pub spec: PolicySpec,
    pub epoch: Epoch,
    pub freshness: SharedFreshness,
    pub clock: NodeClock,
}

/// Starts a worker's inference thread. A panic in it is caught and reported
/// as [`What::Died`], so the node fails that policy over instead of waiting
/// for results that never come.
pub fn spawn(
    start: Start,
    inbox: Arc<FrameInbox>,
    watch: Arc<RunWatch>,
    events: UnboundedSender<Event>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("infer-{}", start.spec.role))
        .spawn(move || {
            let (role, epoch) = (start.spec.role, start.epoch);
            let run = std::panic::AssertUnwindSafe(|| run(start, &inbox, &watch, &events));
            if let Err(panic) = std::panic::catch_unwind(run) {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panicked".into());
                let _ = events.send(Event { role, epoch, what: What::Died(format!("panicked: {why}")) });
            }
        })
        .expect("spawning the inference thread")
}

fn load(start: &Start, watch: &RunWatch) -> Result<(Runner, Loaded), PolicyError> {
    let loaded = Runner::load(&start.spec, start.freshness.clone(), watch)?;
    crate::heap::release_freed();
    Ok(loaded)
}

fn run(start: Start, inbox: &FrameInbox, watch: &RunWatch, events: &UnboundedSender<Event>) {
    let send = |what| events.send(Event { role: start.spec.role, epoch: start.epoch, what }).is_ok();
    let remote = &start.spec.model.remote;
    let retry = remote.enabled().then(|| Duration::from_secs_f64(remote.retry_s));
    let mut runner: Option<Runner> = None;
    // The task that came while no policy was loaded, for the one that loads later.
    let mut task: Option<Task> = None;
    let mut provider = String::new();
    // When to (try to) load next: now, then only while a remote server is unreachable.
    let mut next_load = Some(Instant::now());
    // The last reason the server could not be reached, said when it changes.
    let mut unreachable: Option<String> = None;
    loop {
        if next_load.is_some_and(|at| Instant::now() >= at) {
            next_load = None;
            match (load(&start, watch), retry) {
                (Ok((mut r, loaded)), _) => {
                    provider = r.policy().providers().main();
                    send(What::Loaded { providers: r.policy().providers().clone(), loaded });
                    if let Some(t) = task.take() {
                        r.set_task(t);
                    }
                    runner = Some(r);
                }
                (Err(PolicyError::Unreachable(why)), Some(every)) => {
                    match &unreachable {
                        None => {
                            send(What::Unreachable(format!(
                                "policy server unreachable: {why}; trying again every {:.1} s",
                                every.as_secs_f64()
                            )));
                        }
                        Some(before) if *before != why => {
                            warn!(policy = %start.spec.role, "policy server still unreachable, now: {why}")
                        }
                        Some(_) => debug!(policy = %start.spec.role, "policy server still unreachable: {why}"),
                    };
                    unreachable = Some(why);
                    next_load = Some(Instant::now() + every);
                }
                (Err(e), _) => {
                    send(What::LoadFailed(e.to_string()));
                }
            }
        }
        let wait = next_load.map_or(IDLE_WAIT, |at| at.saturating_duration_since(Instant::now()).min(IDLE_WAIT));
        let Some(delivery) = inbox.take(wait) else { break };
        match (delivery.control, runner.as_mut()) {
            (Some(t), Some(r)) => r.set_task(t),
            (Some(t), None) => task = Some(t),
            (None, _) => {}
        }
        let Some(SeqFrame { seq, frame }) = delivery.frame else {
            continue;
        };
        let dropped = delivery.dropped;
        let Some(r) = runner.as_mut() else {
            send(What::Skipped { reason: Skip::NotLoaded, dropped });
            continue;
        };
        let header = &frame.header;
        let input = runner::Frame { seq, stamp_s: stamp_s(&header.stamp), image: frame.image() };
        let sent = match r.handle(&input, start.clock.now_s(), watch) {
            Handled::Repeated => true,
            Handled::Skipped(reason) => send(What::Skipped { reason, dropped }),
            Handled::Ran(run) => send(What::Ran(Box::new(RunReport {
                run: *run,
                frame_seq: seq,
                stamp: header.stamp.clone(),
                frame_id: header.frame_id.clone(),
                provider: provider.clone(),
                dropped,
            }))),
        };
        if !sent {
            break;
        }
    }
}

//! The policies' inference threads, as the pipeline orders them.
//!
//! Owns each running worker (its thread, its inbox, the handle that cancels
//! its run in flight, its epoch) and carries out the pipeline's orders for
//! them: start a worker under a task, hand it a task or a frame. Stopping
//! closes their inboxes, cancels what runs, and waits for the threads
//! without blocking the async loop; a thread stuck in ONNX Runtime past the
//! wait is left behind (its later events carry an epoch the pipeline no
//! longer accepts). It decides nothing: whom to start and feed is the
//! pipeline's.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mobile_vla_core::pipeline::Epoch;
use mobile_vla_core::vocab::{ByRole, Role, SharedFreshness, Task};
use mobile_vla_policy::runner::RunWatch;
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

use crate::camera_frame::Frame;
use crate::inference::{self, Event, FrameInbox, SeqFrame, Start};
use crate::ros_clock::NodeClock;
use mobile_vla_policy::runner::PolicySpec;

/// How long a stop waits for a thread before leaving it behind.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// An inference thread and the handles to feed and supervise it.
struct Worker {
    inbox: Arc<FrameInbox>,
    watch: Arc<RunWatch>,
    thread: JoinHandle<()>,
}

pub struct Workers {
    running: ByRole<Option<Worker>>,
    specs: ByRole<PolicySpec>,
    events: UnboundedSender<Event>,
    clock: NodeClock,
}

impl Workers {
    pub fn new(specs: ByRole<PolicySpec>, events: UnboundedSender<Event>, clock: NodeClock) -> Self {
        Self { running: ByRole::default(), specs, events, clock }
    }

    /// Starts `role`'s worker as `epoch`, under `task`; stale frames are judged by `freshness`.
    pub fn start(&mut self, role: Role, epoch: Epoch, task: Task, freshness: SharedFreshness) {
        let inbox: Arc<FrameInbox> = Arc::default();
        inbox.put_control(task);
        let watch: Arc<RunWatch> = Arc::default();
        let start = Start { spec: self.specs[role].clone(), epoch, freshness, clock: self.clock.clone() };
        let thread = inference::spawn(start, inbox.clone(), watch.clone(), self.events.clone());
        self.running[role] = Some(Worker { inbox, watch, thread });
    }

    pub fn task(&self, role: Role, task: Task) {
        if let Some(w) = &self.running[role] {
            w.inbox.put_control(task);
        }
    }

    pub fn frame(&self, role: Role, seq: u64, frame: Arc<Frame>) {
        if let Some(w) = &self.running[role] {
            w.inbox.put_frame(SeqFrame { seq, frame });
        }
    }

    /// Cancels each run in flight longer than `limit` (a hang); the roles cancelled.
    pub fn cancel_overdue(&self, limit: Duration) -> Vec<Role> {
        self.running
            .iter()
            .filter(|(_, w)| w.as_ref().is_some_and(|w| w.watch.cancel_if_overdue(limit)))
            .map(|(r, _)| r)
            .collect()
    }

    /// Ends every inference thread (closed inbox, run cancelled); the threads, to wait for or leave.
    fn close(&mut self) -> Vec<Worker> {
        let workers: Vec<Worker> = self.running.0.iter_mut().filter_map(Option::take).collect();
        for w in &workers {
            w.inbox.close();
            w.watch.cancel_current();
        }
        workers
    }

    /// Ends every inference thread and waits for each (its session is dropped with it), up to [`STOP_WAIT`].
    pub async fn stop(&mut self) {
        for w in self.close() {
            let deadline = Instant::now() + STOP_WAIT;
            while !w.thread.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if w.thread.is_finished() {
                let _ = w.thread.join();
            } else {
                warn!("an inference thread did not end within 5 s (a run stuck in ONNX Runtime)");
            }
        }
    }

    /// Shutdown: ends every thread; those still in a run are not waited for.
    pub fn stop_now(&mut self) -> Vec<JoinHandle<()>> {
        self.close().into_iter().map(|w| w.thread).collect()
    }
}

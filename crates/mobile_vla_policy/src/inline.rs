//! The node's pipeline with its policies run inline: frames and instructions in, commands out, on one thread.
//!
//! Owns a [`Pipeline`] and a [`Runner`] per policy, and carries out the
//! pipeline's orders the way the node does, but in place of threads: a
//! worker started is loaded there and then, a frame handed to a policy is run
//! at once, and its result goes straight back to the pipeline. The same
//! decisions as on the robot (the control core's, the runners'), with no
//! ROS and no threads: for the evaluation tool and for tests. The node's
//! threads make runs overlap frames; here a run always ends before the next
//! frame arrives.
//!
//! Two clocks: [`Inline::new`] keeps the node's (its instants are the steady
//! clock's, the caller's ROS time must keep pace with it), [`Inline::replay`]
//! follows the caller's ROS time alone: its instants are that time's, and a
//! run takes no time in it (its result comes back at the instant its frame
//! arrived, measured latencies are reported in [`Ran`], never judged). A
//! replay gives the same commands on any machine, however fast its models.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mobile_vla_core::config::Config;
use mobile_vla_core::control::{ControlConfig, RunResult};
use mobile_vla_core::pipeline::{Epoch, Order, Orders, Pipeline};
use mobile_vla_core::vocab::{ByRole, Role, Skip, Velocity};
use mobile_vla_vision::{Image, RawFrame};

use crate::runner::{self, Handled, Loaded, PolicySpec, Run, RunWatch, Runner};

/// A frame owned by the caller: its stamp (seconds of ROS time; `None`: unstamped) and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedFrame {
    pub stamp_s: Option<f64>,
    pub kind: FrameKind,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FrameKind {
    Raw { width: u32, height: u32, step: u32, encoding: String },
    Compressed { format: String },
}

impl OwnedFrame {
    pub fn image(&self) -> Image<'_> {
        match &self.kind {
            FrameKind::Raw { width, height, step, encoding } => {
                Image::Raw(RawFrame { width: *width, height: *height, encoding, step: *step, data: &self.data })
            }
            FrameKind::Compressed { format } => Image::Compressed { format, data: &self.data },
        }
    }
}

/// One policy's runner, once started, and what its loading reported.
struct Slot {
    epoch: Epoch,
    runner: Option<Runner>,
    loaded: Option<Loaded>,
    watch: RunWatch,
}

pub struct Inline {
    pipeline: Pipeline<Rc<OwnedFrame>>,
    specs: ByRole<PolicySpec>,
    slots: ByRole<Option<Slot>>,
    /// The node's clock for the event being handled (seconds of ROS time).
    ros_now_s: f64,
    clock: Clock,
}

/// Where the pipeline's instants come from.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// The steady clock, as on the robot.
    Steady,
    /// ROS time, from `ros_start_s` at `start`: runs take no time.
    Replay { start: Instant, ros_start_s: f64 },
}

impl Clock {
    fn at(self, ros_now_s: f64) -> Instant {
        match self {
            Clock::Steady => Instant::now(),
            // Never before the start: ROS time that steps back is the clock-jump check's to judge.
            Clock::Replay { start, ros_start_s } => start + Duration::from_secs_f64((ros_now_s - ros_start_s).max(0.0)),
        }
    }
}

/// What a run of a policy on a frame gave, as the pipeline saw it.
#[derive(Debug)]
pub struct Ran {
    pub role: Role,
    pub seq: u64,
    pub run: Run,
    /// Its result went out as a command.
    pub drove: bool,
}

/// What an event led to: the commands published (in order), the runs made and the frames a policy did not run on.
#[derive(Debug, Default)]
pub struct Step {
    pub commands: Vec<Velocity>,
    pub runs: Vec<Ran>,
    pub skips: Vec<(Role, Skip)>,
}

impl Inline {
    /// The pipeline for `config` with each policy's `specs`, started (each policy loaded) at ROS time `ros_now_s`.
    pub fn new(config: &Config, specs: ByRole<PolicySpec>, ros_now_s: f64) -> (Self, Step) {
        Self::start_with(config, specs, ros_now_s, Clock::Steady)
    }

    /// As [`Inline::new`], on the replay clock: ROS time alone, runs take none of it.
    pub fn replay(config: &Config, specs: ByRole<PolicySpec>, ros_now_s: f64) -> (Self, Step) {
        Self::start_with(config, specs, ros_now_s, Clock::Replay { start: Instant::now(), ros_start_s: ros_now_s })
    }

    fn start_with(config: &Config, specs: ByRole<PolicySpec>, ros_now_s: f64, clock: Clock) -> (Self, Step) {
        let (pipeline, start) = Pipeline::new(ControlConfig::from_config(config), clock.at(ros_now_s));
        let mut me = Inline { pipeline, specs, slots: ByRole::default(), ros_now_s, clock };
        let step = me.carry_out(start);
        (me, step)
    }

    /// The pipeline's instant for the event being handled.
    fn now(&self) -> Instant {
        self.clock.at(self.ros_now_s)
    }

    pub fn pipeline(&self) -> &Pipeline<Rc<OwnedFrame>> {
        &self.pipeline
    }

    /// What `role`'s policy reported when it loaded (`None`: not loaded).
    pub fn loaded(&self, role: Role) -> Option<&Loaded> {
        self.slots[role].as_ref().and_then(|s| s.loaded.as_ref())
    }

    /// Why `role`'s policy did not load, if it did not.
    pub fn load_error(&self, role: Role) -> Option<String> {
        let report = self.pipeline.controller().watchdog().report(role);
        (!report.healthy && self.slots[role].as_ref().is_some_and(|s| s.runner.is_none())).then_some(report.last_error)
    }

    pub fn instruction(&mut self, text: &str, ros_now_s: f64) -> Step {
        self.ros_now_s = ros_now_s;
        let orders = self.pipeline.instruction(text, self.now());
        self.carry_out(orders)
    }

    /// A camera frame arriving at ROS time `ros_now_s`; the policies that want it run on it now.
    pub fn frame(&mut self, frame: OwnedFrame, ros_now_s: f64) -> Step {
        self.ros_now_s = ros_now_s;
        let orders = self.pipeline.frame(Rc::new(frame), self.now());
        self.carry_out(orders)
    }

    /// The output tick at ROS time `ros_now_s`.
    pub fn tick(&mut self, ros_now_s: f64) -> Step {
        self.ros_now_s = ros_now_s;
        let orders = self.pipeline.tick(self.now(), ros_now_s);
        self.carry_out(orders)
    }

    /// Carries out `orders` and everything they lead to, until nothing is left to do.
    fn carry_out(&mut self, orders: Orders<Rc<OwnedFrame>>) -> Step {
        let mut step = Step::default();
        let mut queue: VecDeque<Order<Rc<OwnedFrame>>> = orders.list.into();
        while let Some(order) = queue.pop_front() {
            let next = match order {
                Order::Start { role, epoch, task } => self.start(role, epoch, task),
                Order::Task { role, task } => {
                    if let Some(r) = self.slots[role].as_mut().and_then(|s| s.runner.as_mut()) {
                        r.set_task(task);
                    }
                    None
                }
                Order::Frame { role, seq, frame } => self.run(role, seq, &frame, &mut step),
                Order::Publish(v) => {
                    step.commands.push(v);
                    None
                }
                Order::Diagnostics => None,
            };
            queue.extend(next.into_iter().flat_map(|o| o.list));
        }
        step
    }

    fn start(
        &mut self,
        role: Role,
        epoch: Epoch,
        task: mobile_vla_core::vocab::Task,
    ) -> Option<Orders<Rc<OwnedFrame>>> {
        let watch = RunWatch::default();
        let loaded = Runner::load(&self.specs[role], self.pipeline.controller().freshness(), &watch);
        let (runner, loaded, result) = match loaded {
            Ok((mut r, loaded)) => {
                r.set_task(task);
                (Some(r), Some(loaded), Ok(()))
            }
            Err(e) => (None, None, Err(e.to_string())),
        };
        self.slots[role] = Some(Slot { epoch, runner, loaded, watch });
        self.pipeline.loaded(role, epoch, result, self.now())
    }

    fn run(&mut self, role: Role, seq: u64, frame: &OwnedFrame, step: &mut Step) -> Option<Orders<Rc<OwnedFrame>>> {
        let slot = self.slots[role].as_mut()?;
        let epoch = slot.epoch;
        let Some(runner) = slot.runner.as_mut() else {
            step.skips.push((role, Skip::NotLoaded));
            return self.pipeline.skipped(role, epoch, &Skip::NotLoaded, self.now());
        };
        let input = runner::Frame { seq, stamp_s: frame.stamp_s, image: frame.image() };
        match runner.handle(&input, self.ros_now_s, &slot.watch) {
            Handled::Repeated => None,
            Handled::Skipped(skip) => {
                let orders = self.pipeline.skipped(role, epoch, &skip, self.now());
                step.skips.push((role, skip));
                orders
            }
            Handled::Ran(run) => {
                let t = &run.timings;
                let (started, latency) = match self.clock {
                    Clock::Steady => (run.started, t.preprocess + t.inference + t.postprocess),
                    Clock::Replay { .. } => (self.now(), Duration::ZERO),
                };
                let result = RunResult {
                    role,
                    generation: run.generation,
                    started,
                    stamp_s: frame.stamp_s.unwrap_or(0.0),
                    latency,
                    outcome: run.outcome(),
                };
                let orders = self.pipeline.ran(epoch, &result, self.ros_now_s, self.now());
                let drove = orders.as_ref().is_some_and(|o| o.drove);
                step.runs.push(Ran { role, seq, run: *run, drove });
                orders
            }
        }
    }
}

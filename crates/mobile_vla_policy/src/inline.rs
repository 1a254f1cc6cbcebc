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

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use mobile_vla_core::config::Config;
use mobile_vla_core::control::{ControlConfig, RunResult};
use mobile_vla_core::pipeline::{Epoch, Order, Orders, Pipeline};
use mobile_vla_core::vocab::{ByRole, Role, Velocity};
use mobile_vla_vision::{Image, RawFrame};

use crate::runner::{self, Handled, PolicySpec, Run, RunWatch, Runner};

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

/// One policy's runner, once started.
struct Slot {
    epoch: Epoch,
    runner: Option<Runner>,
    watch: RunWatch,
}

pub struct Inline {
    pipeline: Pipeline<Rc<OwnedFrame>>,
    specs: ByRole<PolicySpec>,
    slots: ByRole<Option<Slot>>,
    /// The node's clock for the event being handled (seconds of ROS time).
    ros_now_s: f64,
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

/// What an event led to: the commands published (in order) and the runs made.
#[derive(Debug, Default)]
pub struct Step {
    pub commands: Vec<Velocity>,
    pub runs: Vec<Ran>,
}

impl Inline {
    /// The pipeline for `config` with each policy's `specs`, started (each policy loaded) at ROS time `ros_now_s`.
    pub fn new(config: &Config, specs: ByRole<PolicySpec>, ros_now_s: f64) -> (Self, Step) {
        let (pipeline, start) = Pipeline::new(ControlConfig::from_config(config), Instant::now());
        let mut me = Inline { pipeline, specs, slots: ByRole::default(), ros_now_s };
        let step = me.carry_out(start);
        (me, step)
    }

    pub fn pipeline(&self) -> &Pipeline<Rc<OwnedFrame>> {
        &self.pipeline
    }

    /// Why `role`'s policy did not load, if it did not.
    pub fn load_error(&self, role: Role) -> Option<String> {
        let report = self.pipeline.controller().watchdog().report(role);
        (!report.healthy && self.slots[role].as_ref().is_some_and(|s| s.runner.is_none())).then_some(report.last_error)
    }

    pub fn instruction(&mut self, text: &str, ros_now_s: f64) -> Step {
        self.ros_now_s = ros_now_s;
        let orders = self.pipeline.instruction(text, Instant::now());
        self.carry_out(orders)
    }

    /// A camera frame arriving at ROS time `ros_now_s`; the policies that want it run on it now.
    pub fn frame(&mut self, frame: OwnedFrame, ros_now_s: f64) -> Step {
        self.ros_now_s = ros_now_s;
        let orders = self.pipeline.frame(Rc::new(frame), Instant::now());
        self.carry_out(orders)
    }

    /// The output tick at ROS time `ros_now_s`.
    pub fn tick(&mut self, ros_now_s: f64) -> Step {
        self.ros_now_s = ros_now_s;
        let orders = self.pipeline.tick(Instant::now(), ros_now_s);
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
        let (runner, result) = match loaded {
            Ok((mut r, _)) => {
                r.set_task(task);
                (Some(r), Ok(()))
            }
            Err(e) => (None, Err(e.to_string())),
        };
        self.slots[role] = Some(Slot { epoch, runner, watch });
        self.pipeline.loaded(role, epoch, result, Instant::now())
    }

    fn run(&mut self, role: Role, seq: u64, frame: &OwnedFrame, step: &mut Step) -> Option<Orders<Rc<OwnedFrame>>> {
        let slot = self.slots[role].as_mut()?;
        let epoch = slot.epoch;
        let Some(runner) = slot.runner.as_mut() else {
            return self.pipeline.skipped(role, epoch, &mobile_vla_core::vocab::Skip::NotLoaded, Instant::now());
        };
        let input = runner::Frame { seq, stamp_s: frame.stamp_s, image: frame.image() };
        match runner.handle(&input, self.ros_now_s, &slot.watch) {
            Handled::Repeated => None,
            Handled::Skipped(skip) => self.pipeline.skipped(role, epoch, &skip, Instant::now()),
            Handled::Ran(run) => {
                let t = &run.timings;
                let result = RunResult {
                    role,
                    generation: run.generation,
                    started: run.started,
                    stamp_s: frame.stamp_s.unwrap_or(0.0),
                    latency: t.preprocess + t.inference + t.postprocess,
                    outcome: run.outcome(),
                };
                let orders = self.pipeline.ran(epoch, &result, self.ros_now_s, Instant::now());
                let drove = orders.as_ref().is_some_and(|o| o.drove);
                step.runs.push(Ran { role, seq, run: *run, drove });
                orders
            }
        }
    }
}

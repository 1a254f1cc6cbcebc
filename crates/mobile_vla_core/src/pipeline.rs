//! Frames and instructions in, commands out: the control core and the routing of work to the policies.
//!
//! Owns the [`Controller`] and what the controller's decisions mean for the
//! workers that run the policies: which frame each policy is handed (the
//! newest one, counted by a sequence number, to the policies that want
//! frames now and to a policy that just took control), the task each runs
//! under, and which generation of each worker is current (its [`Epoch`]).
//! Every event is answered with [`Orders`], in the order they must be carried
//! out. Events of a worker that is no longer current (one detached at a
//! cleanup, whose load ends minutes later) are refused, so they can never
//! count for the worker that replaced it.
//!
//! It runs nothing and publishes nothing: the node carries the orders out
//! with threads and rcl, the evaluation tool by running the policies inline.
//! Both drive this same type, so both make the same decisions.

use std::time::{Duration, Instant};

use crate::command_mux::{LockId, SourceId};
use crate::control::{ControlConfig, Controller, Effects, RunResult};
use crate::vocab::{ByRole, Role, Skip, Task, Velocity};

/// One generation of a policy's worker: each start gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

/// One thing to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Order<F> {
    /// Start `role`'s worker as `epoch`, under `task`.
    Start { role: Role, epoch: Epoch, task: Task },
    /// The task `role`'s worker runs under from now on.
    Task { role: Role, task: Task },
    /// Run `role` on this frame.
    Frame { role: Role, seq: u64, frame: F },
    /// Publish this command on `cmd_vel` now.
    Publish(Velocity),
    /// Something `/diagnostics` shows changed: publish it now.
    Diagnostics,
}

/// What to do after an event, in order, and whether a run result just drove.
#[derive(Debug, Clone, PartialEq)]
pub struct Orders<F> {
    pub list: Vec<Order<F>>,
    /// The run result just handled went out on `cmd_vel`.
    pub drove: bool,
    /// In shadow mode, what the run result just handled would have commanded.
    pub proposed: Option<Velocity>,
}

impl<F> Orders<F> {
    /// The command to publish, if any.
    pub fn command(&self) -> Option<Velocity> {
        self.list.iter().rev().find_map(|o| match o {
            Order::Publish(v) => Some(*v),
            _ => None,
        })
    }
}

pub struct Pipeline<F> {
    ctl: Controller,
    /// The newest frame and its sequence number, handed to a policy that takes control.
    newest: Option<(u64, F)>,
    seq: u64,
    /// The current worker of each policy, once started.
    workers: ByRole<Option<Epoch>>,
    last_epoch: u64,
    /// The workers a managed node's next configure starts (held while unconfigured).
    held: Vec<Role>,
}

impl<F: Clone> Pipeline<F> {
    /// A pipeline, and what to start now.
    pub fn new(cfg: ControlConfig, now: Instant) -> (Self, Orders<F>) {
        let (ctl, fx) = Controller::new(cfg, now);
        let mut p = Pipeline { ctl, newest: None, seq: 0, workers: ByRole::default(), last_epoch: 0, held: Vec::new() };
        let orders = p.orders(fx);
        (p, orders)
    }

    /// A managed node, unconfigured: nothing is started or published until
    /// [`configure`](Self::configure) and activation.
    pub fn new_unconfigured(cfg: ControlConfig, now: Instant) -> Self {
        let mut p = Pipeline {
            ctl: Controller::new(cfg.clone(), now).0,
            newest: None,
            seq: 0,
            workers: ByRole::default(),
            last_epoch: 0,
            held: Vec::new(),
        };
        p.cleanup(cfg, now);
        p
    }

    pub fn controller(&self) -> &Controller {
        &self.ctl
    }

    /// The frames received so far.
    pub fn frames(&self) -> u64 {
        self.seq
    }

    /// Configure: start what the controller asked for at its creation, under the task of now.
    pub fn configure(&mut self) -> Orders<F> {
        let start = std::mem::take(&mut self.held);
        self.orders(Effects { start, ..Default::default() })
    }

    /// Cleanup: the workers were stopped; everything starts over, unconfigured
    /// and inactive, with new worker epochs (those of the stopped workers stay
    /// refused).
    pub fn cleanup(&mut self, cfg: ControlConfig, now: Instant) {
        let (ctl, fx) = Controller::new(cfg, now);
        self.ctl = ctl;
        let _ = self.ctl.set_active(false, now);
        self.workers = ByRole::default();
        self.newest = None;
        self.held = fx.start;
    }

    /// The workers that run now, with their epochs.
    pub fn workers(&self) -> impl Iterator<Item = (Role, Epoch)> + '_ {
        self.workers.iter().filter_map(|(r, e)| e.map(|e| (r, e)))
    }

    /// Whether `epoch` is `role`'s current worker.
    pub fn is_current(&self, role: Role, epoch: Epoch) -> bool {
        self.workers[role] == Some(epoch)
    }

    /// A camera frame arrived: the policies that want frames now get it.
    pub fn frame(&mut self, frame: F, now: Instant) -> Orders<F> {
        self.seq += 1;
        let seq = self.seq;
        let mut list = Vec::new();
        for (role, epoch) in self.workers.iter() {
            if epoch.is_some() && self.ctl.wants_frame(role, now) {
                list.push(Order::Frame { role, seq, frame: frame.clone() });
            }
        }
        // A frame that arrives while inactive is never run, not even later by a policy taking control.
        self.newest = self.ctl.is_active().then_some((seq, frame));
        Orders { list, drove: false, proposed: None }
    }

    pub fn instruction(&mut self, text: &str, now: Instant) -> Orders<F> {
        let fx = self.ctl.instruction_received(text, now);
        self.orders(fx)
    }

    /// The output tick (`ros_now_s`: the node's clock).
    pub fn tick(&mut self, now: Instant, ros_now_s: f64) -> Orders<F> {
        let fx = self.ctl.tick(now, ros_now_s);
        self.orders(fx)
    }

    pub fn teleop(&mut self, source: SourceId, v: Velocity, now: Instant) -> Orders<F> {
        let fx = self.ctl.teleop(source, v, now);
        self.orders(fx)
    }

    pub fn lock(&mut self, lock: LockId, engaged: bool, now: Instant) -> Orders<F> {
        let fx = self.ctl.lock(lock, engaged, now);
        self.orders(fx)
    }

    /// Pause (false) or resume; with what happened, for the caller to report.
    pub fn set_autonomy(&mut self, enabled: bool, now: Instant) -> (Orders<F>, &'static str) {
        let (fx, msg) = self.ctl.set_autonomy(enabled, now);
        (self.orders(fx), msg)
    }

    pub fn system_control(&mut self, cmd: &str, now: Instant) -> Orders<F> {
        let fx = self.ctl.system_control(cmd, now);
        self.orders(fx)
    }

    /// A managed node's activation or deactivation.
    pub fn set_active(&mut self, active: bool, now: Instant) -> Orders<F> {
        // Nothing from before an activation or deactivation is handed over after it.
        self.newest = None;
        let fx = self.ctl.set_active(active, now);
        self.orders(fx)
    }

    /// Parameters accepted at runtime.
    pub fn reconfigure(&mut self, cfg: ControlConfig, now: Instant) {
        self.ctl.reconfigure(cfg, now);
    }

    /// Why `cfg` may not apply now (it would weaken an engaged lock).
    pub fn refuses(&self, cfg: &ControlConfig, now: Instant) -> Option<String> {
        self.ctl.refuses(cfg, now)
    }

    /// How long a run may take before it is cancelled as a hang.
    pub fn hard_timeout(&self) -> Duration {
        self.ctl.hard_timeout()
    }

    /// `role`'s run was cancelled after the hard timeout.
    pub fn run_cancelled(&mut self, role: Role, now: Instant) -> Orders<F> {
        let fx = self.ctl.run_cancelled(role, now);
        self.orders(fx)
    }

    /// Worker `epoch` of `role` loaded its policy, or failed to; `None` when it is not current.
    pub fn loaded(&mut self, role: Role, epoch: Epoch, result: Result<(), String>, now: Instant) -> Option<Orders<F>> {
        self.is_current(role, epoch).then(|| {
            let fx = self.ctl.loaded(role, result, now);
            self.orders(fx)
        })
    }

    /// Worker `epoch` of `role` cannot reach its inference server (it keeps trying).
    pub fn unreachable(&mut self, role: Role, epoch: Epoch, why: &str, now: Instant) -> Option<Orders<F>> {
        self.is_current(role, epoch).then(|| {
            let fx = self.ctl.unreachable(role, why, now);
            self.orders(fx)
        })
    }

    /// A frame of worker `epoch` of `role` never reached its model.
    pub fn skipped(&mut self, role: Role, epoch: Epoch, skip: &Skip, now: Instant) -> Option<Orders<F>> {
        self.is_current(role, epoch).then(|| {
            let fx = self.ctl.skipped(role, skip, now);
            self.orders(fx)
        })
    }

    /// Worker `epoch` of `role` died.
    pub fn died(&mut self, role: Role, epoch: Epoch, why: &str, now: Instant) -> Option<Orders<F>> {
        self.is_current(role, epoch).then(|| {
            let fx = self.ctl.worker_exited(role, why, now);
            self.orders(fx)
        })
    }

    /// A run of worker `epoch` ended (`ros_now_s`: the node's clock now).
    pub fn ran(&mut self, epoch: Epoch, r: &RunResult, ros_now_s: f64, now: Instant) -> Option<Orders<F>> {
        self.is_current(r.role, epoch).then(|| {
            let fx = self.ctl.ran(r, ros_now_s, now);
            self.orders(fx)
        })
    }

    /// The controller's effects as orders for the workers and the output.
    fn orders(&mut self, fx: Effects) -> Orders<F> {
        let mut list = Vec::new();
        if let Some(task) = fx.instruction {
            for (role, _) in self.workers() {
                list.push(Order::Task { role, task: task.clone() });
            }
        }
        for role in fx.start {
            self.last_epoch += 1;
            let epoch = Epoch(self.last_epoch);
            self.workers[role] = Some(epoch);
            list.push(Order::Start { role, epoch, task: self.ctl.task() });
        }
        if let (Some(role), Some((seq, frame))) = (fx.hand_newest_to, &self.newest) {
            if self.workers[role].is_some() {
                list.push(Order::Frame { role, seq: *seq, frame: frame.clone() });
            }
        }
        if let Some(v) = fx.publish {
            list.push(Order::Publish(v));
        }
        if fx.diagnostics {
            list.push(Order::Diagnostics);
        }
        Orders { list, drove: fx.drove, proposed: fx.proposal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::control::RunOutcome;

    const MS: Duration = Duration::from_millis(1);

    fn started(o: &Orders<u32>) -> Vec<(Role, Epoch)> {
        o.list
            .iter()
            .filter_map(|o| match o {
                Order::Start { role, epoch, .. } => Some((*role, *epoch)),
                _ => None,
            })
            .collect()
    }

    fn result(p: &Pipeline<u32>, started: Instant, x: f64) -> RunResult {
        RunResult {
            role: Role::Primary,
            generation: p.controller().generation(),
            started,
            stamp_s: 100.0,
            latency: 10 * MS,
            outcome: RunOutcome::Action { command: Velocity { x, ..Velocity::ZERO }, raw_max_abs: x, chunk: None },
        }
    }

    #[test]
    fn frames_go_to_the_policy_in_control_and_its_result_drives() {
        let t0 = Instant::now();
        let mut config = Config::default();
        config.limits.max_accel = [0.0; 3];
        let (mut p, start) = Pipeline::<u32>::new(ControlConfig::from_config(&config), t0);
        let epochs = started(&start);
        assert_eq!(epochs.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![Role::Primary, Role::Fallback]);
        assert!(p.frame(1, t0).list.is_empty(), "nothing loaded yet");
        for (role, epoch) in &epochs {
            p.loaded(*role, *epoch, Ok(()), t0).unwrap();
        }
        let tasks = p.instruction("go", t0);
        assert!(tasks
            .list
            .iter()
            .any(|o| matches!(o, Order::Task { role: Role::Primary, task } if task.text.as_deref() == Some("go"))));
        assert_eq!(p.frame(2, t0 + MS).list, vec![Order::Frame { role: Role::Primary, seq: 2, frame: 2 }]);
        let orders = p.ran(epochs[0].1, &result(&p, t0 + MS, 0.2), 100.01, t0 + 10 * MS).unwrap();
        assert!(orders.drove);
        assert_eq!(orders.command(), Some(Velocity { x: 0.2, ..Velocity::ZERO }));
    }

    #[test]
    fn events_of_a_worker_that_is_no_longer_current_are_refused() {
        let t0 = Instant::now();
        let mut p = Pipeline::<u32>::new_unconfigured(ControlConfig::from_config(&Config::default()), t0);
        let first = started(&p.configure());
        p.cleanup(ControlConfig::from_config(&Config::default()), t0 + MS);
        let second = started(&p.configure());
        assert!(second.iter().all(|s| !first.contains(s)), "new epochs after a cleanup");
        // The first configure's primary finishes loading long after the cleanup: it counts for nothing.
        assert_eq!(p.loaded(Role::Primary, first[0].1, Ok(()), t0 + 2 * MS), None);
        assert!(!p.controller().watchdog().is_healthy(Role::Primary));
        assert!(p.loaded(Role::Primary, second[0].1, Ok(()), t0 + 3 * MS).is_some());
        assert!(p.controller().watchdog().is_healthy(Role::Primary));
    }

    #[test]
    fn a_policy_taking_control_gets_the_newest_frame() {
        let t0 = Instant::now();
        let (mut p, start) = Pipeline::<u32>::new(ControlConfig::from_config(&Config::default()), t0);
        let epochs = started(&start);
        p.loaded(Role::Fallback, epochs[1].1, Ok(()), t0).unwrap();
        p.instruction("go", t0);
        p.frame(7, t0);
        let orders = p.loaded(Role::Primary, epochs[0].1, Ok(()), t0 + MS).unwrap();
        assert!(orders.list.contains(&Order::Frame { role: Role::Primary, seq: 1, frame: 7 }), "{orders:?}");
    }

    #[test]
    fn a_frame_that_arrived_while_inactive_is_never_handed_over() {
        let t0 = Instant::now();
        let (mut p, start) = Pipeline::<u32>::new(ControlConfig::from_config(&Config::default()), t0);
        let epochs = started(&start);
        p.loaded(Role::Fallback, epochs[1].1, Ok(()), t0).unwrap();
        p.instruction("go", t0);
        p.set_active(false, t0 + MS);
        assert!(p.frame(7, t0 + 2 * MS).list.is_empty());
        p.set_active(true, t0 + 3 * MS);
        // The primary takes control after the activation: it waits for a frame that arrives now.
        let orders = p.loaded(Role::Primary, epochs[0].1, Ok(()), t0 + 4 * MS).unwrap();
        assert!(!orders.list.iter().any(|o| matches!(o, Order::Frame { .. })), "{orders:?}");
        assert_eq!(p.frame(8, t0 + 5 * MS).list, vec![Order::Frame { role: Role::Primary, seq: 2, frame: 8 }]);
    }
}

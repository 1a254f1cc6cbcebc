//! The managed node's transitions, carried out (`managed: true`).
//!
//! Owns the lifecycle state beside the pipeline and a configure waiting for
//! its policies' loads. A request is answered at once (queries), or its
//! transition is begun ([`Lifecycle::begin`]), carried out (configure starts
//! the workers, activate and deactivate open and close the output, cleanup
//! stops the workers and starts the pipeline over, shutdown stops
//! everything) and finished with its outcome. Whether a transition exists is
//! the lifecycle core's; whether a configure succeeded is [`Configuring`]'s
//! (the primary policy must load, or, served remotely, its server may be
//! unreachable: the fallback drives while its worker keeps trying).

use std::time::Instant;

use mobile_vla_core::control::ControlConfig;
use mobile_vla_core::lifecycle::{Configuring, Lifecycle, Outcome, Work};
use mobile_vla_core::vocab::Role;
use r2r::lifecycle_msgs::srv::ChangeState;
use r2r::ServiceRequest;
use tracing::{info, warn};

use super::shell::Shell;
use crate::lifecycle_node::{self, LifecycleServices, Request};

pub struct Managed {
    pub lifecycle: Lifecycle,
    pub services: LifecycleServices,
    /// A configure waiting for these policies' loads to end.
    configuring: Option<(ServiceRequest<ChangeState::Service>, Configuring)>,
}

impl Managed {
    pub fn new(services: LifecycleServices) -> Self {
        Managed { lifecycle: Lifecycle::default(), services, configuring: None }
    }
}

impl Shell {
    /// A lifecycle request: queries are answered at once, a transition is
    /// carried out (a configure answers when its models' loads have ended).
    /// Returns false when the node is to end (shutdown).
    pub async fn on_lifecycle(&mut self, req: Request) -> bool {
        let Some(m) = &mut self.managed else { return true };
        let Some(req) = m.services.answer(req, &m.lifecycle) else { return true };
        let t = &req.message.transition;
        let (work, event) = match m.lifecycle.begin(t.id, &t.label) {
            Ok(begun) => begun,
            Err(why) => {
                warn!("lifecycle: {why}");
                lifecycle_node::respond(req, false);
                return true;
            }
        };
        info!(transition = event.transition.label, "lifecycle: {} -> {}", event.start, event.goal);
        m.services.publish(event, self.clock.now_ns());
        let now = Instant::now();
        match work {
            Work::Configure => {
                let orders = self.pipeline.configure();
                let roles = self.pipeline.workers().map(|(r, _)| r).collect();
                if let Some(m) = &mut self.managed {
                    m.configuring = Some((req, Configuring::new(roles)));
                }
                self.apply(orders);
                return true;
            }
            Work::Activate => {
                let orders = self.pipeline.set_active(true, now);
                self.apply(orders);
            }
            Work::Deactivate => {
                let orders = self.pipeline.set_active(false, now);
                self.apply(orders);
            }
            Work::Cleanup => self.unload().await,
            Work::Shutdown => {
                if self.pipeline.controller().is_active() {
                    let orders = self.pipeline.set_active(false, now);
                    self.apply(orders);
                }
                self.workers.stop().await;
            }
        }
        self.finish_transition(Outcome::Success);
        lifecycle_node::respond(req, true);
        work != Work::Shutdown
    }

    /// A policy's load ended: a configure waiting for it may be done.
    pub async fn configure_progress(&mut self, role: Role, ok: bool) {
        let Some(m) = &mut self.managed else { return };
        let Some((_, configuring)) = &mut m.configuring else { return };
        let Some(outcome) = configuring.loaded(role, ok) else { return };
        let (req, _) = m.configuring.take().expect("checked above");
        if outcome == Outcome::Failure {
            warn!("lifecycle: configure failed: the hybrid policy did not load; the node stays unconfigured");
            self.unload().await;
        }
        self.finish_transition(outcome);
        lifecycle_node::respond(req, outcome == Outcome::Success);
    }

    fn finish_transition(&mut self, outcome: Outcome) {
        let now_ns = self.clock.now_ns();
        let Some(m) = &mut self.managed else { return };
        if let Some(e) = m.lifecycle.finish(outcome) {
            info!(transition = e.transition.label, "lifecycle: {} -> {}", e.start, e.goal);
            m.services.publish(e, now_ns);
        }
        self.publish_status(false);
    }

    /// Cleanup: the models unloaded, their memory returned, the pipeline as new and inactive.
    async fn unload(&mut self) {
        self.workers.stop().await;
        self.pipeline.cleanup(ControlConfig::from_config(self.params.config()), Instant::now());
        for info in self.info.0.iter_mut() {
            info.unloaded();
        }
        crate::heap::release_freed();
    }
}

//! The managed node's ROS interface (`managed: true`), as `lifecycle_msgs` defines it.
//!
//! Owns the services Nav2's lifecycle_manager and `ros2 lifecycle` call
//! (`~/change_state`, `~/get_state`, `~/get_available_states`,
//! `~/get_available_transitions`, `~/get_transition_graph`), the
//! `~/transition_event` topic, and the conversions to and from the state
//! machine in `mobile_vla_core::lifecycle`. What a transition does (load,
//! unload, open or close the output) is the shell's; which transitions exist
//! is the core's.

use futures::stream::{BoxStream, StreamExt};
use mobile_vla_core::lifecycle::{Event, Lifecycle, State, Transition};
use r2r::lifecycle_msgs::{msg as lc, srv};
use r2r::{QosProfile, ServiceRequest};
use tracing::warn;

pub enum Request {
    Change(ServiceRequest<srv::ChangeState::Service>),
    Get(ServiceRequest<srv::GetState::Service>),
    States(ServiceRequest<srv::GetAvailableStates::Service>),
    Transitions(ServiceRequest<srv::GetAvailableTransitions::Service>),
    Graph(ServiceRequest<srv::GetAvailableTransitions::Service>),
}

pub struct LifecycleServices {
    pub requests: BoxStream<'static, Request>,
    events: r2r::Publisher<lc::TransitionEvent>,
}

fn state(s: State) -> lc::State {
    lc::State { id: s.id(), label: s.label().into() }
}

fn transition(t: Transition) -> lc::Transition {
    lc::Transition { id: t.id, label: t.label.into() }
}

fn description((t, start, goal): (Transition, State, State)) -> lc::TransitionDescription {
    lc::TransitionDescription { transition: transition(t), start_state: state(start), goal_state: state(goal) }
}

impl LifecycleServices {
    pub fn new(node: &mut r2r::Node) -> anyhow::Result<Self> {
        let qos = QosProfile::services_default;
        let streams: Vec<BoxStream<'static, Request>> = vec![
            node.create_service::<srv::ChangeState::Service>("~/change_state", qos())?.map(Request::Change).boxed(),
            node.create_service::<srv::GetState::Service>("~/get_state", qos())?.map(Request::Get).boxed(),
            node.create_service::<srv::GetAvailableStates::Service>("~/get_available_states", qos())?
                .map(Request::States)
                .boxed(),
            node.create_service::<srv::GetAvailableTransitions::Service>("~/get_available_transitions", qos())?
                .map(Request::Transitions)
                .boxed(),
            node.create_service::<srv::GetAvailableTransitions::Service>("~/get_transition_graph", qos())?
                .map(Request::Graph)
                .boxed(),
        ];
        let events = node.create_publisher("~/transition_event", QosProfile::default().reliable().keep_last(10))?;
        Ok(Self { requests: futures::stream::select_all(streams).boxed(), events })
    }

    /// Answers a query; a change request is handed back for the shell to carry out.
    pub fn answer(&self, req: Request, lifecycle: &Lifecycle) -> Option<ServiceRequest<srv::ChangeState::Service>> {
        let sent = match req {
            Request::Change(r) => return Some(r),
            Request::Get(r) => r.respond(srv::GetState::Response { current_state: state(lifecycle.state()) }),
            Request::States(r) => r.respond(srv::GetAvailableStates::Response {
                available_states: State::ALL.into_iter().map(state).collect(),
            }),
            Request::Transitions(r) => r.respond(srv::GetAvailableTransitions::Response {
                available_transitions: lifecycle.available().into_iter().map(description).collect(),
            }),
            Request::Graph(r) => r.respond(srv::GetAvailableTransitions::Response {
                available_transitions: Lifecycle::graph().into_iter().map(description).collect(),
            }),
        };
        if let Err(e) = sent {
            warn!("answering a lifecycle request failed: {e}");
        }
        None
    }

    pub fn publish(&self, e: Event, timestamp_ns: u64) {
        let msg = lc::TransitionEvent {
            timestamp: timestamp_ns,
            transition: transition(e.transition),
            start_state: state(e.start),
            goal_state: state(e.goal),
        };
        if let Err(e) = self.events.publish(&msg) {
            warn!("publishing ~/transition_event failed: {e}");
        }
    }
}

pub fn respond(req: ServiceRequest<srv::ChangeState::Service>, success: bool) {
    if let Err(e) = req.respond(srv::ChangeState::Response { success }) {
        warn!("answering ~/change_state failed: {e}");
    }
}

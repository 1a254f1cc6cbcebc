//! The managed-node state machine of ROS 2 (`lifecycle_msgs`), for `managed: true`.
//!
//! Owns the primary states (unconfigured, inactive, active, finalized), the
//! transition states between them, which transitions each state offers, and
//! the ids and labels `lifecycle_msgs` gives them, so Nav2's
//! lifecycle_manager (or `ros2 lifecycle set`) drives the node as any managed
//! node. A transition is requested ([`Lifecycle::begin`]), carried out by the
//! shell (load or unload the models, open or close the command output) and
//! finished with its outcome ([`Lifecycle::finish`]); a failed transition
//! returns to the state it started from (the shell's work never raises an
//! error, so error processing is listed but never entered). A configure
//! succeeds when the primary policy loads ([`Configuring`]). What each state
//! lets drive is the control core's job.

use std::fmt;

use crate::vocab::Role;

/// `lifecycle_msgs/State` ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Unconfigured = 1,
    Inactive = 2,
    Active = 3,
    Finalized = 4,
    Configuring = 10,
    CleaningUp = 11,
    ShuttingDown = 12,
    Activating = 13,
    Deactivating = 14,
    ErrorProcessing = 15,
}

impl State {
    pub const ALL: [State; 10] = [
        State::Unconfigured,
        State::Inactive,
        State::Active,
        State::Finalized,
        State::Configuring,
        State::CleaningUp,
        State::ShuttingDown,
        State::Activating,
        State::Deactivating,
        State::ErrorProcessing,
    ];

    pub fn id(self) -> u8 {
        self as u8
    }

    /// As lifecycle_msgs labels them.
    pub fn label(self) -> &'static str {
        match self {
            State::Unconfigured => "unconfigured",
            State::Inactive => "inactive",
            State::Active => "active",
            State::Finalized => "finalized",
            State::Configuring => "configuring",
            State::CleaningUp => "cleaningup",
            State::ShuttingDown => "shuttingdown",
            State::Activating => "activating",
            State::Deactivating => "deactivating",
            State::ErrorProcessing => "errorprocessing",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a requested transition asks the shell to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Load and warm the models.
    Configure,
    /// Unload the models.
    Cleanup,
    /// Let commands flow.
    Activate,
    /// Stop commands (one zero).
    Deactivate,
    /// Stop everything; the node then ends.
    Shutdown,
}

/// A `lifecycle_msgs/Transition`: id and label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub id: u8,
    pub label: &'static str,
}

impl Transition {
    const fn new(id: u8, label: &'static str) -> Self {
        Transition { id, label }
    }
}

type Offer = (Transition, Work, State);

const CONFIGURE: Offer = (Transition::new(1, "configure"), Work::Configure, State::Configuring);
const CLEANUP: Offer = (Transition::new(2, "cleanup"), Work::Cleanup, State::CleaningUp);
const ACTIVATE: Offer = (Transition::new(3, "activate"), Work::Activate, State::Activating);
const DEACTIVATE: Offer = (Transition::new(4, "deactivate"), Work::Deactivate, State::Deactivating);
const UNCONFIGURED_SHUTDOWN: Offer = (Transition::new(5, "shutdown"), Work::Shutdown, State::ShuttingDown);
const INACTIVE_SHUTDOWN: Offer = (Transition::new(6, "shutdown"), Work::Shutdown, State::ShuttingDown);
const ACTIVE_SHUTDOWN: Offer = (Transition::new(7, "shutdown"), Work::Shutdown, State::ShuttingDown);
const FROM_UNCONFIGURED: [Offer; 2] = [CONFIGURE, UNCONFIGURED_SHUTDOWN];
const FROM_INACTIVE: [Offer; 3] = [CLEANUP, ACTIVATE, INACTIVE_SHUTDOWN];
const FROM_ACTIVE: [Offer; 2] = [DEACTIVATE, ACTIVE_SHUTDOWN];

/// The transitions a primary state offers: (transition, work, the transition state it passes).
fn offered(s: State) -> &'static [Offer] {
    match s {
        State::Unconfigured => &FROM_UNCONFIGURED,
        State::Inactive => &FROM_INACTIVE,
        State::Active => &FROM_ACTIVE,
        _ => &[],
    }
}

/// How the work of a transition ended (the `on_*` callbacks' results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// One state change, as `~/transition_event` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub transition: Transition,
    pub start: State,
    pub goal: State,
}

#[derive(Debug)]
pub struct Lifecycle {
    state: State,
    /// The transition in progress: its work and the state it started from.
    pending: Option<(Work, State)>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle { state: State::Unconfigured, pending: None }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        self.state
    }

    /// Transitions available now: (transition, start, goal), the goal being
    /// the transition state it enters (as rcl_lifecycle reports them).
    pub fn available(&self) -> Vec<(Transition, State, State)> {
        offered(self.state).iter().map(|&(t, _, via)| (t, self.state, via)).collect()
    }

    /// Every transition requestable from a primary state.
    pub fn graph() -> Vec<(Transition, State, State)> {
        [State::Unconfigured, State::Inactive, State::Active]
            .into_iter()
            .flat_map(|s| offered(s).iter().map(move |&(t, _, via)| (t, s, via)))
            .collect()
    }

    /// Starts a transition named by id (or, with id 0, by label); returns
    /// the work to do and the event of entering the transition state, or why
    /// it is not available here.
    pub fn begin(&mut self, id: u8, label: &str) -> Result<(Work, Event), String> {
        if self.pending.is_some() {
            return Err(format!("a transition is already in progress (state {})", self.state));
        }
        let found = offered(self.state).iter().find(|(t, ..)| if id != 0 { t.id == id } else { t.label == label });
        let Some(&(t, work, via)) = found else {
            let names: Vec<&str> = offered(self.state).iter().map(|(t, ..)| t.label).collect();
            return Err(format!(
                "transition {} is not available in state {} (available: {})",
                if id != 0 { id.to_string() } else { format!("'{label}'") },
                self.state,
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ));
        };
        let start = self.state;
        self.pending = Some((work, start));
        self.state = via;
        Ok((work, Event { transition: t, start, goal: via }))
    }

    /// Ends the transition in progress with the work's outcome; returns the event of reaching the new state.
    pub fn finish(&mut self, outcome: Outcome) -> Option<Event> {
        let (work, start) = self.pending.take()?;
        let via = self.state;
        let (goal, id, label) = match outcome {
            Outcome::Success => (success_goal(work), result_id(work, 0), "transition_success"),
            Outcome::Failure => (start, result_id(work, 1), "transition_failure"),
        };
        self.state = goal;
        Some(Event { transition: Transition::new(id, label), start: via, goal })
    }
}

/// A configure waiting for its policies' loads. The primary policy must
/// load for the configure to succeed; the fallback may fail (the watchdog
/// reports it, and the node runs on the primary alone).
#[derive(Debug, Clone, PartialEq)]
pub struct Configuring {
    waiting: Vec<Role>,
}

impl Configuring {
    /// A configure that started the workers of `roles`.
    pub fn new(roles: Vec<Role>) -> Self {
        Self { waiting: roles }
    }

    /// `role`'s load ended (`ok`: loaded); the configure's outcome once it is decided.
    pub fn loaded(&mut self, role: Role, ok: bool) -> Option<Outcome> {
        self.waiting.retain(|r| *r != role);
        if !ok && role == Role::Primary {
            return Some(Outcome::Failure);
        }
        self.waiting.is_empty().then_some(Outcome::Success)
    }
}

fn success_goal(work: Work) -> State {
    match work {
        Work::Configure | Work::Deactivate => State::Inactive,
        Work::Cleanup => State::Unconfigured,
        Work::Activate => State::Active,
        Work::Shutdown => State::Finalized,
    }
}

/// `lifecycle_msgs/Transition`'s ON_*_SUCCESS / _FAILURE ids.
fn result_id(work: Work, offset: u8) -> u8 {
    let base = match work {
        Work::Configure => 10,
        Work::Cleanup => 20,
        Work::Shutdown => 30,
        Work::Activate => 40,
        Work::Deactivate => 50,
    };
    base + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configure_needs_the_primary_loaded_and_waits_for_every_load() {
        let mut c = Configuring::new(vec![Role::Primary, Role::Fallback]);
        assert_eq!(c.loaded(Role::Primary, true), None, "the fallback is still loading");
        assert_eq!(c.loaded(Role::Fallback, false), Some(Outcome::Success), "the fallback may fail");
        let mut c = Configuring::new(vec![Role::Primary, Role::Fallback]);
        assert_eq!(c.loaded(Role::Fallback, true), None);
        assert_eq!(c.loaded(Role::Primary, false), Some(Outcome::Failure));
        let mut c = Configuring::new(vec![Role::Primary, Role::Fallback]);
        assert_eq!(c.loaded(Role::Primary, false), Some(Outcome::Failure), "no need to wait for the fallback");
    }

    #[test]
    fn the_full_cycle_goes_through_every_transition_state() {
        let mut l = Lifecycle::default();
        assert_eq!(l.state(), State::Unconfigured);
        let steps = [
            ("configure", Work::Configure, State::Configuring, State::Inactive),
            ("activate", Work::Activate, State::Activating, State::Active),
            ("deactivate", Work::Deactivate, State::Deactivating, State::Inactive),
            ("cleanup", Work::Cleanup, State::CleaningUp, State::Unconfigured),
            ("shutdown", Work::Shutdown, State::ShuttingDown, State::Finalized),
        ];
        for (label, work, via, goal) in steps {
            let (w, e) = l.begin(0, label).unwrap();
            assert_eq!((w, e.goal, l.state()), (work, via, via), "{label}");
            let done = l.finish(Outcome::Success).unwrap();
            assert_eq!((done.start, done.goal, l.state()), (via, goal, goal), "{label}");
        }
        assert!(l.available().is_empty(), "finalized offers nothing");
    }

    #[test]
    fn transitions_are_found_by_lifecycle_msgs_ids() {
        let mut l = Lifecycle::default();
        // lifecycle_msgs/Transition: CONFIGURE = 1, ACTIVATE = 3.
        assert_eq!(l.begin(1, "").unwrap().0, Work::Configure);
        assert_eq!(l.finish(Outcome::Success).unwrap().transition.id, 10, "ON_CONFIGURE_SUCCESS");
        assert_eq!(l.begin(3, "").unwrap().0, Work::Activate);
        l.finish(Outcome::Success);
        assert_eq!(l.state().id(), 3);
    }

    #[test]
    fn a_failed_transition_returns_to_where_it_started() {
        let mut l = Lifecycle::default();
        l.begin(0, "configure").unwrap();
        let e = l.finish(Outcome::Failure).unwrap();
        assert_eq!((e.goal, e.transition.id), (State::Unconfigured, 11));
        l.begin(0, "configure").unwrap();
        l.finish(Outcome::Success);
        l.begin(0, "activate").unwrap();
        let e = l.finish(Outcome::Failure).unwrap();
        assert_eq!((e.goal, e.transition.id, l.state()), (State::Inactive, 41, State::Inactive));
    }

    #[test]
    fn a_transition_not_offered_here_is_refused_naming_the_ones_that_are() {
        let mut l = Lifecycle::default();
        let e = l.begin(0, "activate").unwrap_err();
        assert!(e.contains("unconfigured") && e.contains("configure, shutdown"), "{e}");
        l.begin(0, "configure").unwrap();
        assert!(l.begin(0, "activate").unwrap_err().contains("in progress"));
        assert_eq!(Lifecycle::graph().len(), 7);
    }
}

//! What the shell must do after an event: the control core's only output.

use crate::vocab::{Role, Task, Velocity};

/// What the shell must do after an event, in this order: forward the task,
/// start workers, hand the newest frame over, publish, report.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Publish this command now.
    pub publish: Option<Velocity>,
    /// Tell the workers the task they run under from now on.
    pub instruction: Option<Task>,
    /// Start these inference workers.
    pub start: Vec<Role>,
    /// Hand the newest frame to this policy (it just took control).
    pub hand_newest_to: Option<Role>,
    /// Something `/diagnostics` shows changed (a switch, the source or lock in control).
    pub diagnostics: bool,
    /// The run result just handled went out on `cmd_vel`.
    pub drove: bool,
    /// In shadow mode, the command the run result just handled would have driven.
    pub proposal: Option<Velocity>,
}

impl Effects {
    /// `self` followed by `later`, as one: the later command and task win,
    /// workers to start and flags add up.
    pub fn merge(mut self, later: Effects) -> Effects {
        self.publish = later.publish.or(self.publish);
        self.instruction = later.instruction.or(self.instruction);
        for role in later.start {
            if !self.start.contains(&role) {
                self.start.push(role);
            }
        }
        self.hand_newest_to = later.hand_newest_to.or(self.hand_newest_to);
        self.diagnostics |= later.diagnostics;
        self.drove |= later.drove;
        self.proposal = later.proposal.or(self.proposal);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Generation, History};

    #[test]
    fn a_merge_keeps_everything_of_both_and_the_later_command() {
        let first = Effects {
            publish: Some(Velocity { x: 1.0, ..Velocity::ZERO }),
            start: vec![Role::Primary],
            hand_newest_to: Some(Role::Fallback),
            ..Default::default()
        };
        let task = Task { generation: Generation(2), text: None, history: History::default() };
        let later = Effects {
            publish: Some(Velocity::ZERO),
            instruction: Some(task.clone()),
            start: vec![Role::Primary, Role::Fallback],
            diagnostics: true,
            ..Default::default()
        };
        let m = first.merge(later);
        assert_eq!(m.publish, Some(Velocity::ZERO));
        assert_eq!(m.instruction, Some(task));
        assert_eq!(m.start, vec![Role::Primary, Role::Fallback]);
        assert_eq!(m.hand_newest_to, Some(Role::Fallback));
        assert!(m.diagnostics && !m.drove);
    }
}

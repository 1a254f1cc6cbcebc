//! The words every core, the policy crate and the shell share.
//!
//! Owns small value types and nothing else: a [`Velocity`], the two policy
//! [`Role`]s and a value per role ([`ByRole`]), the instruction [`Generation`]
//! and the [`Task`] a policy runs under, the [`Freshness`] rule for frames (and
//! the one copy of it a running node shares with its workers) and
//! why a frame never reached its model ([`Skip`]). No type here decides
//! anything about motion; the cores do, with these words.

use std::fmt;
use std::sync::{Arc, RwLock};

/// A velocity command: linear.x, linear.y (omni base), angular.z.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Velocity {
    pub x: f64,
    pub y: f64,
    pub wz: f64,
}

impl Velocity {
    pub const ZERO: Velocity = Velocity { x: 0.0, y: 0.0, wz: 0.0 };
    /// Its axes by their ROS names, in order (x, y, wz).
    pub const AXES: [&'static str; 3] = ["linear.x", "linear.y", "angular.z"];

    pub fn is_finite(&self) -> bool {
        self.x.is_finite() && self.y.is_finite() && self.wz.is_finite()
    }

    pub fn axes(&self) -> [f64; 3] {
        [self.x, self.y, self.wz]
    }

    pub fn from_axes(a: [f64; 3]) -> Self {
        Velocity { x: a[0], y: a[1], wz: a[2] }
    }
}

/// The two policies: the hybrid drives while healthy, the pure Kosmos-2 one is its fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Fallback,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Primary, Role::Fallback];

    pub fn other(self) -> Role {
        match self {
            Role::Primary => Role::Fallback,
            Role::Fallback => Role::Primary,
        }
    }

    /// The name operators see (logs, status, statistics, parameters): "hybrid" or "pure".
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "hybrid",
            Role::Fallback => "pure",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value per policy, indexed by [`Role`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ByRole<T>(pub [T; 2]);

impl<T> ByRole<T> {
    pub fn new(primary: T, fallback: T) -> Self {
        Self([primary, fallback])
    }

    /// The value `f` gives for each role.
    pub fn from_fn(mut f: impl FnMut(Role) -> T) -> Self {
        Self([f(Role::Primary), f(Role::Fallback)])
    }

    pub fn iter(&self) -> impl Iterator<Item = (Role, &T)> {
        Role::ALL.into_iter().zip(&self.0)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Role, &mut T)> {
        Role::ALL.into_iter().zip(&mut self.0)
    }

    pub fn map<U>(self, mut f: impl FnMut(Role, T) -> U) -> ByRole<U> {
        let [p, b] = self.0;
        ByRole([f(Role::Primary, p), f(Role::Fallback, b)])
    }
}

impl<T> std::ops::Index<Role> for ByRole<T> {
    type Output = T;
    fn index(&self, r: Role) -> &T {
        &self.0[r as usize]
    }
}

impl<T> std::ops::IndexMut<Role> for ByRole<T> {
    fn index_mut(&mut self, r: Role) -> &mut T {
        &mut self.0[r as usize]
    }
}

/// Counts instruction changes (and clock jumps): a result computed under an
/// older generation belongs to a task that is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a policy runs under: the generation, the instruction's text
/// (`None`: no task, the policy holds still), and which history its frames
/// belong to: when `history` changes (a policy took control, a managed node
/// was activated or deactivated) the policy starts a new one, with zero
/// recurrent state and empty frame windows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    pub generation: Generation,
    pub text: Option<String>,
    pub history: History,
}

/// Which history a policy's frames belong to (see [`Task`]): a new one has
/// a new number; the numbers say nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct History(pub u64);

impl History {
    pub fn next(self) -> Self {
        History(self.0 + 1)
    }
}

/// How old a frame may be, and how far ahead of the node's clock it may be stamped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    pub max_age_s: f64,
    pub max_future_s: f64,
}

impl Freshness {
    /// The frame's age on the node's clock (`now_s`, seconds of ROS time), or
    /// why it may not drive. `stamp_s` is `None` for an unstamped frame.
    pub fn check(&self, stamp_s: Option<f64>, now_s: f64) -> Result<f64, Skip> {
        let stamp = stamp_s.ok_or(Skip::Unstamped)?;
        let age = now_s - stamp;
        if age < -self.max_future_s {
            Err(Skip::Future { ahead_s: -age })
        } else if age > self.max_age_s {
            Err(Skip::Stale { age_s: age })
        } else {
            Ok(age.max(0.0))
        }
    }
}

/// The one freshness rule of a running node: the control core sets it (at
/// start and when `camera.max_age_s` / `max_future_s` change), the inference
/// workers read it to skip stale frames before running them.
#[derive(Debug, Clone)]
pub struct SharedFreshness(Arc<RwLock<Freshness>>);

impl SharedFreshness {
    pub fn new(f: Freshness) -> Self {
        Self(Arc::new(RwLock::new(f)))
    }

    pub fn get(&self) -> Freshness {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, f: Freshness) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = f;
    }
}

/// Why a frame never reached the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    NoInstruction,
    Unstamped,
    Stale {
        age_s: f64,
    },
    Future {
        ahead_s: f64,
    },
    BadFrame(String),
    /// The policy's tokenizer refused the current instruction.
    BadInstruction(String),
    NotLoaded,
    /// The frame joined the policy's windows, which wait for `need` frames before it runs on them.
    WindowFilling {
        have: usize,
        need: usize,
    },
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NoInstruction => write!(f, "no instruction: the robot holds still until one arrives"),
            Skip::Unstamped => write!(f, "frame has no header stamp; it cannot be checked for freshness"),
            Skip::Stale { age_s } => write!(f, "frame is stale ({age_s:.3} s old)"),
            Skip::Future { ahead_s } => write!(
                f,
                "frame is stamped in the future ({ahead_s:.3} s ahead of the node's clock; camera.max_future_s); \
                 are the clocks synchronised?"
            ),
            Skip::BadFrame(e) => write!(f, "frame rejected: {e}"),
            Skip::BadInstruction(e) => write!(f, "instruction refused: {e}; send another one"),
            Skip::NotLoaded => write!(f, "the policy is not loaded"),
            Skip::WindowFilling { have, need } => write!(f, "the frame window is filling ({have} of {need} frames)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_refuses_unstamped_stale_and_future_frames_with_their_reason() {
        let f = Freshness { max_age_s: 0.5, max_future_s: 0.05 };
        assert_eq!(f.check(Some(99.8), 100.0), Ok(0.20000000000000284));
        assert_eq!(f.check(Some(100.03), 100.0), Ok(0.0), "within the future tolerance");
        assert_eq!(f.check(None, 100.0), Err(Skip::Unstamped));
        assert!(matches!(f.check(Some(99.0), 100.0), Err(Skip::Stale { .. })));
        let future = f.check(Some(110.0), 100.0).unwrap_err();
        assert!(matches!(future, Skip::Future { .. }));
        assert!(future.to_string().contains("stamped in the future"), "{future}");
        assert!(!future.to_string().contains('-'), "{future}");
    }

    #[test]
    fn by_role_indexes_and_maps_in_role_order() {
        let b = ByRole::from_fn(Role::name).map(|r, n| format!("{r:?}={n}"));
        assert_eq!(b[Role::Primary], "Primary=hybrid");
        assert_eq!(b[Role::Fallback], "Fallback=pure");
    }
}

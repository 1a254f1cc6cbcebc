//! The node's ROS clock, shared by the shell and the inference threads.
//!
//! Owns reading ROS time: the system clock normally; with `use_sim_time`, the
//! latest `/clock` message (zero until the first one, as rcl does), which the
//! shell feeds in. Frame ages are measured on it, so a simulation or a bag
//! replay ages frames in its own time. It decides nothing about what is
//! fresh: that is the control core's `Freshness`.
//!
//! (r2r's own time source is not used: it enables itself through a build-time
//! cfg that r2r drops when its cached bindings are reused.)

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use r2r::builtin_interfaces::msg::Time;

#[derive(Clone)]
pub struct NodeClock {
    /// `Some` under `use_sim_time`: the latest `/clock` time.
    sim: Option<Arc<Mutex<Time>>>,
}

impl NodeClock {
    pub fn new(use_sim_time: bool) -> Self {
        Self { sim: use_sim_time.then(|| Arc::new(Mutex::new(Time::default()))) }
    }

    /// A `/clock` message arrived.
    pub fn set_sim_time(&self, t: Time) {
        if let Some(sim) = &self.sim {
            *sim.lock().unwrap_or_else(|e| e.into_inner()) = t;
        }
    }

    /// Now, as a message stamp.
    pub fn stamp(&self) -> Time {
        match &self.sim {
            Some(sim) => sim.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => {
                let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                Time { sec: d.as_secs() as i32, nanosec: d.subsec_nanos() }
            }
        }
    }

    /// Now, in seconds of ROS time.
    pub fn now_s(&self) -> f64 {
        seconds(&self.stamp())
    }

    /// Now, in nanoseconds of ROS time (the lifecycle `TransitionEvent` stamp).
    pub fn now_ns(&self) -> u64 {
        let t = self.stamp();
        (t.sec.max(0) as u64) * 1_000_000_000 + u64::from(t.nanosec)
    }
}

/// A stamp in seconds; `None` for the zero stamp (an unstamped message).
pub fn stamp_s(t: &Time) -> Option<f64> {
    (t.sec != 0 || t.nanosec != 0).then(|| seconds(t))
}

fn seconds(t: &Time) -> f64 {
    t.sec as f64 + t.nanosec as f64 * 1e-9
}

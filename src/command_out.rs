//! Velocity commands in and out of ROS messages.
//!
//! Owns the `cmd_vel` publisher (`Twist` or `TwistStamped`) and the
//! conversions between ROS twists, policy actions and the mux's velocities.
//! It publishes what it is given; deciding what that is happens elsewhere.

use anyhow::Context as _;
use mobile_vla_core::config::OutputConfig;
use mobile_vla_core::vocab::Velocity;
use r2r::{geometry_msgs::msg as geo, std_msgs::msg as std_msg, QosProfile};

use crate::ros_clock::NodeClock;

pub struct CommandPublisher {
    out: Out,
    frame_id: String,
    clock: NodeClock,
}

enum Out {
    Twist(r2r::Publisher<geo::Twist>),
    Stamped(r2r::Publisher<geo::TwistStamped>),
}

impl CommandPublisher {
    pub fn new(node: &mut r2r::Node, cfg: &OutputConfig, clock: NodeClock) -> anyhow::Result<Self> {
        // Commands are reliable: a dropped stop command is not acceptable.
        let qos = QosProfile::default().reliable().keep_last(10);
        let out = if cfg.stamped {
            Out::Stamped(node.create_publisher(&cfg.topic, qos)?)
        } else {
            Out::Twist(node.create_publisher(&cfg.topic, qos)?)
        };
        Ok(Self { out, frame_id: cfg.frame_id.clone(), clock })
    }

    pub fn publish(&self, v: Velocity) -> anyhow::Result<()> {
        let twist = twist(v);
        match &self.out {
            Out::Twist(p) => p.publish(&twist)?,
            Out::Stamped(p) => {
                let header = std_msg::Header { stamp: self.clock.stamp(), frame_id: self.frame_id.clone() };
                p.publish(&geo::TwistStamped { header, twist })?
            }
        }
        Ok(())
    }
}

/// Shadow mode's `~/proposed_cmd_vel`: what the policy would have commanded,
/// stamped with the frame it was computed from (so it lines up with `cmd_vel`
/// and the camera in a plot or a bag).
pub struct ProposalPublisher(r2r::Publisher<geo::TwistStamped>);

impl ProposalPublisher {
    pub fn new(node: &mut r2r::Node) -> anyhow::Result<Self> {
        let qos = QosProfile::default().reliable().keep_last(10);
        Ok(Self(node.create_publisher("~/proposed_cmd_vel", qos).context("advertising ~/proposed_cmd_vel")?))
    }

    pub fn publish(&self, stamp: &r2r::builtin_interfaces::msg::Time, frame_id: &str, v: Velocity) {
        let header = std_msg::Header { stamp: stamp.clone(), frame_id: frame_id.to_string() };
        if let Err(e) = self.0.publish(&geo::TwistStamped { header, twist: twist(v) }) {
            tracing::warn!("publishing ~/proposed_cmd_vel failed: {e}");
        }
    }
}

pub fn twist(v: Velocity) -> geo::Twist {
    geo::Twist { linear: geo::Vector3 { x: v.x, y: v.y, z: 0.0 }, angular: geo::Vector3 { x: 0.0, y: 0.0, z: v.wz } }
}

/// linear.z, angular.x and angular.y mean nothing to a planar base; they are
/// dropped, but must not smuggle NaN past the finiteness check either.
pub fn from_twist(t: &geo::Twist) -> Velocity {
    let ignored_finite = t.linear.z.is_finite() && t.angular.x.is_finite() && t.angular.y.is_finite();
    let v = Velocity { x: t.linear.x, y: t.linear.y, wz: t.angular.z };
    if ignored_finite {
        v
    } else {
        Velocity { x: f64::NAN, ..v }
    }
}

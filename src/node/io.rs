//! The node's ROS interface: every subscription, service and publisher, created once at start.
//!
//! Owns their names, types and QoS (as the README's interface table lists
//! them) and the conversion of incoming messages into the cores' words
//! (teleop sources and locks by their ids). It decides nothing about what
//! arrives or goes out.

use std::rc::Rc;

use anyhow::Context as _;
use futures::stream::{select_all, BoxStream, LocalBoxStream};
use futures::StreamExt;
use mobile_vla_core::command_mux::{LockId, SourceId};
use mobile_vla_core::config::{Config, Transport};
use mobile_vla_core::control::{lock_id, teleop_source};
use mobile_vla_core::vocab::Velocity;
use r2r::{
    diagnostic_msgs::msg::DiagnosticArray, geometry_msgs::msg as geo, mobile_vla_msgs::msg as vla,
    rosgraph_msgs::msg::Clock, sensor_msgs::msg as sensor, std_msgs::msg as std_msg, std_srvs::srv::SetBool,
    QosProfile, ServiceRequest,
};

use crate::camera_frame::Frame;
use crate::command_out::{from_twist, CommandPublisher, ProposalPublisher};
use crate::ros_clock::NodeClock;

/// What comes in.
pub struct Inputs {
    pub sim_clock: BoxStream<'static, Clock>,
    pub frames: LocalBoxStream<'static, Frame>,
    pub instructions: BoxStream<'static, std_msg::String>,
    pub sources: BoxStream<'static, (SourceId, Velocity)>,
    pub locks: BoxStream<'static, (LockId, bool)>,
    pub enable_autonomy: BoxStream<'static, ServiceRequest<SetBool::Service>>,
    pub system_control: BoxStream<'static, std_msg::String>,
}

/// What goes out.
pub struct Outputs {
    pub commands: Rc<CommandPublisher>,
    pub status: r2r::Publisher<vla::Status>,
    pub stats: r2r::Publisher<vla::InferenceStats>,
    pub diagnostics: r2r::Publisher<DiagnosticArray>,
    /// Shadow mode's proposals.
    pub proposals: ProposalPublisher,
}

impl Inputs {
    pub fn new(node: &mut r2r::Node, config: &Config) -> anyhow::Result<Self> {
        // Best effort, depth 1: how rclcpp's time source subscribes.
        let sim_clock = if config.use_sim_time {
            node.subscribe("/clock", QosProfile::default().best_effort().keep_last(1))
                .context("subscribing to /clock")?
                .boxed()
        } else {
            futures::stream::pending().boxed()
        };
        let camera_topic = config.camera.subscribed_topic();
        // Native subscriptions: the frame's bytes are read where rmw put them.
        let frames: LocalBoxStream<'static, Frame> = match config.camera.transport {
            Transport::Raw => node
                .subscribe_native::<sensor::Image>(&camera_topic, QosProfile::sensor_data())
                .with_context(|| format!("subscribing to {camera_topic}"))?
                .map(Frame::from_image)
                .boxed_local(),
            Transport::Compressed => node
                .subscribe_native::<sensor::CompressedImage>(&camera_topic, QosProfile::sensor_data())
                .with_context(|| format!("subscribing to {camera_topic}"))?
                .map(Frame::from_compressed)
                .boxed_local(),
        };
        let instructions = node
            .subscribe::<std_msg::String>(&config.instruction.topic, QosProfile::default())
            .with_context(|| format!("subscribing to {}", config.instruction.topic))?
            .boxed();
        // Teleop and other command sources, and locks, as twist_mux has them.
        let mut sources: Vec<BoxStream<'static, (SourceId, Velocity)>> = Vec::new();
        for (i, (name, src)) in config.mux.sources.iter().enumerate() {
            let id = teleop_source(i);
            let qos = QosProfile::default().keep_last(1);
            let ctx = || format!("subscribing to {} (mux.sources.{name})", src.topic);
            sources.push(if src.stamped {
                node.subscribe::<geo::TwistStamped>(&src.topic, qos)
                    .with_context(ctx)?
                    .map(move |m| (id, from_twist(&m.twist)))
                    .boxed()
            } else {
                node.subscribe::<geo::Twist>(&src.topic, qos)
                    .with_context(ctx)?
                    .map(move |m| (id, from_twist(&m)))
                    .boxed()
            });
        }
        let mut locks: Vec<BoxStream<'static, (LockId, bool)>> = Vec::new();
        for (i, (name, lock)) in config.mux.locks.iter().enumerate() {
            let id = lock_id(i);
            // Reliable: an e-stop must not be lost.
            let stream = node
                .subscribe::<std_msg::Bool>(&lock.topic, QosProfile::default().reliable().keep_last(1))
                .with_context(|| format!("subscribing to {} (mux.locks.{name})", lock.topic))?;
            locks.push(stream.map(move |m| (id, m.data)).boxed());
        }
        let enable_autonomy = node
            .create_service::<SetBool::Service>("~/enable_autonomy", QosProfile::services_default())
            .context("creating ~/enable_autonomy")?
            .boxed();
        let system_control = node
            .subscribe::<std_msg::String>("~/system_control", QosProfile::default())
            .context("subscribing to ~/system_control")?
            .boxed();
        Ok(Inputs {
            sim_clock,
            frames,
            instructions,
            sources: select_all(sources).boxed(),
            locks: select_all(locks).boxed(),
            enable_autonomy,
            system_control,
        })
    }
}

impl Outputs {
    pub fn new(node: &mut r2r::Node, config: &Config, clock: NodeClock) -> anyhow::Result<Self> {
        let commands = Rc::new(
            CommandPublisher::new(node, &config.output, clock)
                .with_context(|| format!("advertising {}", config.output.topic))?,
        );
        // Latched, so an operator's late `ros2 topic echo` still sees the current state.
        let status = node
            .create_publisher::<vla::Status>(
                "~/status",
                QosProfile::default().reliable().transient_local().keep_last(1),
            )
            .context("advertising ~/status")?;
        // Reliable and deep, so `ros2 bag record` keeps every run.
        let stats = node
            .create_publisher::<vla::InferenceStats>(
                "~/inference_stats",
                QosProfile::default().reliable().keep_last(100),
            )
            .context("advertising ~/inference_stats")?;
        let diagnostics = node
            .create_publisher::<DiagnosticArray>("/diagnostics", QosProfile::default().reliable().keep_last(10))
            .context("advertising /diagnostics")?;
        let proposals = ProposalPublisher::new(node)?;
        Ok(Outputs { commands, status, stats, diagnostics, proposals })
    }
}

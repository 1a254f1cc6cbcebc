//! The async ROS shell of the node: moves messages between rcl and the pure cores.
//!
//! Owns the subscriptions, publishers, the rcl spin thread and the shutdown
//! sequence. It makes no decisions of its own: what may be commanded comes from
//! the cores, and until a policy runs that is zero velocity.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use mobile_vla_core::config::{Config, OutputConfig, Transport};
use r2r::{
    geometry_msgs::msg as geo, mobile_vla_msgs::msg as vla, sensor_msgs::msg as sensor,
    std_msgs::msg as std_msg, QosProfile,
};
use tracing::{info, warn};

/// How long the final zero command is given to reach reliable subscribers
/// before the node's publishers are torn down.
const FINAL_ZERO_GRACE: Duration = Duration::from_millis(300);

/// Publishes velocity commands as `Twist` or `TwistStamped`.
struct CommandPublisher {
    out: CommandOut,
    frame_id: String,
    clock: r2r::Clock,
}

enum CommandOut {
    Twist(r2r::Publisher<geo::Twist>),
    Stamped(r2r::Publisher<geo::TwistStamped>),
}

impl CommandPublisher {
    fn new(node: &mut r2r::Node, cfg: &OutputConfig) -> anyhow::Result<Self> {
        // Commands are reliable: a dropped stop command is not acceptable.
        let qos = QosProfile::default().reliable().keep_last(10);
        let out = if cfg.stamped {
            CommandOut::Stamped(node.create_publisher(&cfg.topic, qos)?)
        } else {
            CommandOut::Twist(node.create_publisher(&cfg.topic, qos)?)
        };
        Ok(Self {
            out,
            frame_id: cfg.frame_id.clone(),
            clock: r2r::Clock::create(r2r::ClockType::SystemTime)?,
        })
    }

    fn publish(&mut self, twist: geo::Twist) -> anyhow::Result<()> {
        match &self.out {
            CommandOut::Twist(p) => p.publish(&twist)?,
            CommandOut::Stamped(p) => {
                let now = self.clock.get_now()?;
                let header = std_msg::Header {
                    stamp: r2r::Clock::to_builtin_time(&now),
                    frame_id: self.frame_id.clone(),
                };
                p.publish(&geo::TwistStamped { header, twist })?
            }
        }
        Ok(())
    }
}

/// A camera frame as it arrived, raw or compressed.
#[allow(dead_code)] // the payload is read once a policy consumes frames
enum Frame {
    Raw(sensor::Image),
    Compressed(sensor::CompressedImage),
}

/// Spins rcl on its own thread until told to stop; gives the node back on join
/// so publishers stay valid until the very end.
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<r2r::Node>,
}

impl Spinner {
    fn start(mut node: r2r::Node) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("rcl-spin".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    node.spin_once(Duration::from_millis(20));
                }
                node
            })
            .expect("spawning the rcl spin thread");
        Self { stop, thread }
    }

    fn stop(self) -> r2r::Node {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("rcl spin thread panicked")
    }
}

pub async fn run(mut node: r2r::Node, config: Config) -> anyhow::Result<()> {
    let camera_topic = config.camera.subscribed_topic();
    let mut frames: futures::stream::BoxStream<'static, Frame> = match config.camera.transport {
        Transport::Raw => node
            .subscribe::<sensor::Image>(&camera_topic, QosProfile::sensor_data())
            .with_context(|| format!("subscribing to {camera_topic}"))?
            .map(Frame::Raw)
            .boxed(),
        Transport::Compressed => node
            .subscribe::<sensor::CompressedImage>(&camera_topic, QosProfile::sensor_data())
            .with_context(|| format!("subscribing to {camera_topic}"))?
            .map(Frame::Compressed)
            .boxed(),
    };
    let mut instructions = node
        .subscribe::<std_msg::String>(&config.instruction.topic, QosProfile::default())
        .with_context(|| format!("subscribing to {}", config.instruction.topic))?;
    let mut commands = CommandPublisher::new(&mut node, &config.output)
        .with_context(|| format!("advertising {}", config.output.topic))?;
    // Latched, so an operator's late `ros2 topic echo` still sees the current state.
    let status_pub = node
        .create_publisher::<vla::Status>("~/status", QosProfile::default().reliable().transient_local().keep_last(1))
        .context("advertising ~/status")?;
    let mut status_clock = r2r::Clock::create(r2r::ClockType::SystemTime)?;
    let mut publish_status = move || {
        let stamp = status_clock.get_now().map(|t| r2r::Clock::to_builtin_time(&t)).unwrap_or_default();
        let status = vla::Status {
            stamp,
            state: "safe_stop".into(),
            reason: "no policy is loaded".into(),
            ..Default::default()
        };
        if let Err(e) = status_pub.publish(&status) {
            warn!("publishing ~/status failed: {e}");
        }
    };
    publish_status();

    info!(
        camera = %camera_topic,
        instruction = %config.instruction.topic,
        cmd_vel = %config.output.topic,
        "no policy is loaded: publishing zero velocity only"
    );
    let spinner = Spinner::start(node);

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.output.rate_hz));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_tick = tokio::time::interval(Duration::from_secs(1));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut frames_seen: u64 = 0;

    let result: anyhow::Result<()> = loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = commands.publish(geo::Twist::default()) {
                    warn!("publishing the command failed: {e}");
                }
            }
            _ = status_tick.tick() => publish_status(),
            Some(_frame) = frames.next() => frames_seen += 1,
            Some(msg) = instructions.next() => {
                info!(instruction = %msg.data, "instruction received");
            }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break Ok(()); }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break Ok(()); }
        }
    };

    // Whatever happened, the last word to the robot is zero velocity.
    if let Err(e) = commands.publish(geo::Twist::default()) {
        warn!("publishing the final zero command failed: {e}");
    } else {
        info!(frames_seen, "published the final zero command");
    }
    tokio::time::sleep(FINAL_ZERO_GRACE).await;
    drop(commands);
    drop(spinner.stop());
    result
}

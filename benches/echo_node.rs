//! The zero-work floor for `benches/compare.py`: a node that answers every
//! camera frame at once, with nothing in between.
//!
//! NOT A ROBOT NODE. It subscribes to the frames as mobile_vla does (native
//! r2r subscriptions, sensor-data QoS), and for each one publishes a zero
//! Twist on `/cmd_vel` and an `InferenceStats` carrying the frame's stamp and
//! id (inference 0 ms), from the thread that spins rcl. What a frame costs
//! mobile_vla beyond this is what the node itself adds.
//!
//!     cargo build --release --example echo_node && build/mobile_vla/release/examples/echo_node

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::executor::LocalPool;
use futures::stream::{self, StreamExt};
use futures::task::LocalSpawnExt;
use r2r::geometry_msgs::msg::Twist;
use r2r::mobile_vla_msgs::msg::InferenceStats;
use r2r::sensor_msgs::msg::{CompressedImage, Image};
use r2r::std_msgs::msg::Header;
use r2r::{QosProfile, WrappedTypesupport};

fn ms_since(stamp: &r2r::builtin_interfaces::msg::Time) -> f64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    (now - (stamp.sec as f64 + stamp.nanosec as f64 * 1e-9)) * 1e3
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SIGINT/SIGTERM end the loop, so the node and its context are dropped: a
    // process killed by the signal leaves its Fast DDS shared-memory segment behind.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let ctx = r2r::Context::create()?;
    let mut node = r2r::Node::create(ctx, "mobile_vla_echo", "")?;
    let raw = node.subscribe_native::<Image>("/camera/image_raw", QosProfile::sensor_data())?;
    let jpeg = node.subscribe_native::<CompressedImage>("/camera/image_raw/compressed", QosProfile::sensor_data())?;
    let cmd = node.create_publisher::<Twist>("/cmd_vel", QosProfile::default())?;
    let stats = node.create_publisher::<InferenceStats>(
        "/mobile_vla/inference_stats",
        QosProfile::default().reliable().keep_last(100),
    )?;
    let headers =
        stream::select(raw.map(|m| Header::from_native(&m.header)), jpeg.map(|m| Header::from_native(&m.header)));
    let mut pool = LocalPool::new();
    pool.spawner().spawn_local(async move {
        let mut headers = headers;
        let mut seq = 0;
        while let Some(header) = headers.next().await {
            seq += 1;
            let _ = cmd.publish(&Twist::default());
            let age = ms_since(&header.stamp);
            let _ = stats.publish(&InferenceStats {
                header,
                frame_seq: seq,
                command_seq: seq,
                policy: "hybrid".into(),
                execution_provider: "none (echo)".into(),
                frame_age_ms: age,
                stamp_to_publish_ms: age,
                ..Default::default()
            });
        }
    })?;
    while !STOP.load(Ordering::Relaxed) {
        node.spin_once(Duration::from_millis(100));
        pool.run_until_stalled();
    }
    Ok(())
}

//! The async ROS shell of the node: moves messages between rcl and the pipeline.
//!
//! Owns start-up (the ROS interface in `io`, the shell's state in `shell`,
//! the inference threads in `workers`, a managed node's transitions in
//! `managed`), the rcl spin thread, the event loop and the shutdown sequence.
//! It decides nothing itself: every event goes to the pipeline
//! ([`mobile_vla_core::pipeline::Pipeline`]), and the shell carries out the
//! orders it returns (publish this command, start that worker, hand it this
//! frame). The loop ends when `shutdown` resolves (SIGINT or SIGTERM in the
//! node) or a managed node is shut down. Whatever way it ends, a panic
//! included, its last word to the robot is zero velocity.

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use mobile_vla_core::camera_rate::{CameraMonitor, Transport as CameraTransport};
use mobile_vla_core::config::{ActionClip, Config, Transport};
use mobile_vla_core::control::ControlConfig;
use mobile_vla_core::params::ParamTable;
use mobile_vla_core::pipeline::Pipeline;
use mobile_vla_core::vocab::{ByRole, Velocity};
use mobile_vla_policy::runner::PolicySpec;
use r2r::std_srvs::srv::SetBool;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::command_out::CommandPublisher;
use crate::diagnostics::PolicyInfo;
use crate::inference::Event;
use crate::lifecycle_node::{LifecycleServices, Request as LifecycleRequest};
use crate::param_service::ParamServices;
use crate::ros_clock::NodeClock;
use crate::shutdown::Phase;

mod io;
mod managed;
mod shell;
mod stats;
mod workers;

use io::{Inputs, Outputs};
use managed::Managed;
use shell::{Shell, Telemetry};
use workers::Workers;

/// How long the final zero command is given to reach reliable subscribers
/// before the node's publishers are torn down.
pub const FINAL_ZERO_GRACE: Duration = Duration::from_millis(300);

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
                // rcl_wait returns as soon as anything is ready; the timeout only
                // bounds how late the stop flag is seen (and each wake-up rebuilds
                // the wait set: at idle, that is most of the node's CPU time).
                while !flag.load(Ordering::Relaxed) {
                    node.spin_once(Duration::from_millis(100));
                }
                node
            })
            .expect("spawning the rcl spin thread");
        Self { stop, thread }
    }

    fn stop(self) -> Option<r2r::Node> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().ok()
    }
}

/// Publishes zero velocity when dropped, unless disarmed: on a panic that
/// unwinds through the shell, the robot still gets its final zero (the
/// caller then gives it [`FINAL_ZERO_GRACE`] to arrive, off the async loop).
struct FinalZero {
    commands: Rc<CommandPublisher>,
    armed: bool,
}

impl Drop for FinalZero {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        error!("the node is failing: sending zero velocity");
        if let Err(e) = self.commands.publish(Velocity::ZERO) {
            error!("publishing the final zero command failed: {e}");
        }
    }
}

fn policy_info(config: &Config, manifests: &ByRole<PathBuf>) -> ByRole<PolicyInfo> {
    ByRole::from_fn(|role| PolicyInfo {
        manifest: manifests[role].display().to_string(),
        requested: config.policy.model(role).providers.clone(),
        ..Default::default()
    })
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// The node from start to its final zero; returns when `shutdown` resolves (with
/// its name, for the log) or a managed node is shut down.
pub async fn run(
    mut node: r2r::Node,
    config: Config,
    manifests: ByRole<PathBuf>,
    clips: Vec<ActionClip>,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    let (mut shell, mut inputs, mut params, mut events) = start(&mut node, &config, &manifests, clips)?;
    let mut final_zero = FinalZero { commands: shell.out.commands.clone(), armed: true };
    let spinner = Spinner::start(node);
    serve(&mut shell, &mut inputs, &mut params, &mut events, shutdown).await;
    // The last word to the robot is zero velocity; the rest of the shutdown has a deadline.
    crate::shutdown::arm();
    crate::shutdown::enter(Phase::FinalZero);
    let threads = shell.workers.stop_now();
    final_zero.armed = false;
    if let Err(e) = shell.out.commands.publish(Velocity::ZERO) {
        warn!("publishing the final zero command failed: {e}");
    } else {
        info!(frames = shell.pipeline.frames(), "published the final zero command");
    }
    crate::shutdown::enter(Phase::Grace);
    tokio::time::sleep(FINAL_ZERO_GRACE).await;
    crate::shutdown::enter(Phase::Shell);
    drop(shell);
    drop(final_zero);
    crate::shutdown::enter(Phase::Rcl);
    drop(spinner.stop());
    // A run stuck inside ONNX Runtime must not hold the process up.
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        }
    }
    drop((inputs, params, events));
    crate::shutdown::enter(Phase::Exit);
    Ok(())
}

/// The ROS interface, the pipeline and the shell, started as the parameters say.
fn start(
    node: &mut r2r::Node,
    config: &Config,
    manifests: &ByRole<PathBuf>,
    clips: Vec<ActionClip>,
) -> anyhow::Result<(Shell, Inputs, ParamServices, mpsc::UnboundedReceiver<Event>)> {
    let clock = NodeClock::new(config.use_sim_time);
    if config.use_sim_time {
        info!("use_sim_time: frame ages and stamps follow /clock");
    }
    let inputs = Inputs::new(node, config)?;
    let out = Outputs::new(node, config, clock.clone())?;
    let params = ParamServices::new(node).context("creating the parameter services")?;
    let control = ControlConfig::from_config(config);
    let (pipeline, start, managed) = if config.managed {
        // Unconfigured: no models, nothing published, until ~/change_state configures and activates it.
        let services = LifecycleServices::new(node).context("creating the lifecycle services")?;
        (Pipeline::new_unconfigured(control, Instant::now()), None, Some(Managed::new(services)))
    } else {
        let (pipeline, start) = Pipeline::new(control, Instant::now());
        (pipeline, Some(start), None)
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let camera_topic = config.camera.subscribed_topic();
    let mut shell = Shell {
        pipeline,
        out,
        clock: clock.clone(),
        workers: Workers::new(
            ByRole::from_fn(|role| PolicySpec::from_config(config, role, manifests[role].clone())),
            events_tx,
            clock,
        ),
        info: policy_info(config, manifests),
        params: ParamTable::new(config.clone(), clips),
        managed,
        telemetry: Telemetry {
            command_seq: 0,
            dropped_pending: 0,
            last_status: None,
            camera: CameraMonitor::new(CameraTransport {
                raw: config.camera.transport == Transport::Raw,
                dds_profile: std::env::var("FASTRTPS_DEFAULT_PROFILES_FILE").ok().filter(|p| !p.is_empty()),
            }),
            camera_topic: camera_topic.clone(),
        },
    };
    match start {
        Some(start) => shell.apply(start),
        None => info!("managed node: unconfigured; configure and activate it through ~/change_state"),
    }
    info!(
        camera = %camera_topic,
        instruction = %config.instruction.topic,
        cmd_vel = %config.output.topic,
        "ready: zero velocity until a healthy policy, an instruction and fresh frames agree"
    );
    shell.publish_status(false);
    params.announce(&shell.params, shell.clock.stamp());
    Ok((shell, inputs, params, events))
}

/// Every event to the shell, until `shutdown` resolves or a managed node is shut down.
async fn serve(
    shell: &mut Shell,
    inputs: &mut Inputs,
    params: &mut ParamServices,
    events: &mut mpsc::UnboundedReceiver<Event>,
    shutdown: impl Future<Output = &'static str>,
) {
    let mut tick = interval(Duration::from_secs_f64(1.0 / shell.params.config().output.rate_hz));
    let mut status_tick = interval(Duration::from_secs(1));
    let mut trim_tick = interval(crate::heap::TRIM_PERIOD);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => shell.on_tick(),
            _ = status_tick.tick() => {
                shell.publish_status(false);
                shell.publish_diagnostics();
            }
            _ = trim_tick.tick() => crate::heap::release_freed(),
            Some(frame) = inputs.frames.next() => shell.on_frame(frame),
            Some(t) = inputs.sim_clock.next() => shell.clock.set_sim_time(t.clock),
            Some(msg) = inputs.instructions.next() => {
                let orders = shell.pipeline.instruction(&msg.data, Instant::now());
                shell.apply(orders);
            }
            Some(ev) = events.recv() => shell.on_event(ev).await,
            Some((id, v)) = inputs.sources.next() => {
                let orders = shell.pipeline.teleop(id, v, Instant::now());
                shell.apply(orders);
            }
            Some((id, engaged)) = inputs.locks.next() => {
                let orders = shell.pipeline.lock(id, engaged, Instant::now());
                shell.apply(orders);
            }
            Some(req) = inputs.enable_autonomy.next() => {
                let (orders, message) = shell.pipeline.set_autonomy(req.message.data, Instant::now());
                shell.apply(orders);
                if let Err(e) = req.respond(SetBool::Response { success: true, message: message.into() }) {
                    warn!("answering ~/enable_autonomy failed: {e}");
                }
            }
            Some(req) = next_lifecycle(&mut shell.managed) => {
                if !shell.on_lifecycle(req).await {
                    info!("lifecycle: shut down");
                    return;
                }
            }
            Some(req) = params.requests.next() => {
                let rate = shell.params.config().output.rate_hz;
                let pipeline = &shell.pipeline;
                let veto = |c: &Config| pipeline.refuses(&ControlConfig::from_config(c), Instant::now());
                let changes = params.handle(req, &mut shell.params, veto, shell.clock.stamp());
                if !changes.is_empty() {
                    shell.apply_params(&changes);
                    let new_rate = shell.params.config().output.rate_hz;
                    if new_rate != rate {
                        tick = interval(Duration::from_secs_f64(1.0 / new_rate));
                    }
                }
            }
            Some(msg) = inputs.system_control.next() => {
                let orders = shell.pipeline.system_control(&msg.data, Instant::now());
                shell.apply(orders);
            }
            why = &mut shutdown => {
                info!("{why}: stopping");
                return;
            }
        }
    }
}

/// The next lifecycle request, or never for an unmanaged node.
async fn next_lifecycle(managed: &mut Option<Managed>) -> Option<LifecycleRequest> {
    match managed {
        Some(m) => m.services.requests.next().await,
        None => futures::future::pending().await,
    }
}

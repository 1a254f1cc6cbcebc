//! `mobile_vla_node`: the ROS 2 entry point.
//!
//! Sets up logging, reads and validates the configuration, runs the node until
//! SIGINT/SIGTERM, and maps the outcome to an exit code: 0 after a clean
//! shutdown, 2 for a configuration error (one line naming the key), 1 for any
//! other start-up failure. With `--build-engines` it builds the precompiled
//! TensorRT engines for its parameters instead, and exits.

mod camera_frame;
mod command_out;
mod diagnostics;
mod heap;
mod inference;
mod lifecycle_node;
mod node;
mod param_service;
mod ros_clock;
mod ros_params;
mod shutdown;

use std::path::PathBuf;
use std::process::ExitCode;

use mobile_vla_core::config::{check_action_range, ActionClip, Config, ConfigError};
use mobile_vla_core::vocab::{ByRole, Role};
use tracing::{error, info, warn};

const NODE_NAME: &str = "mobile_vla";

fn main() -> ExitCode {
    heap::keep_frames_on_the_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn")),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let (ros_node, fqn) = match start_ros() {
        Ok(started) => started,
        Err(code) => return code,
    };
    let (config, manifests, clips) = match configure(&ros_node, &fqn) {
        Ok(configured) => configured,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    if std::env::args().any(|a| a == "--build-engines") {
        return build_engines(&config, &manifests);
    }
    info!(node = %fqn, share = %share_dir().display(), "starting with {config:?}");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let run = std::panic::AssertUnwindSafe(|| {
        runtime.block_on(async move { node::run(ros_node, config, manifests, clips, shutdown()?).await })
    });
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => {
            info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
        Err(_) => {
            // The zero went out as the shell unwound; the rcl node lives on in its
            // spin thread while it is delivered.
            shutdown::arm();
            shutdown::enter(shutdown::Phase::Panicked);
            std::thread::sleep(node::FINAL_ZERO_GRACE);
            ExitCode::from(101)
        }
    }
}

/// SIGINT or SIGTERM, by name: created before the loop, so a signal that
/// arrives while it is busy is not lost.
fn shutdown() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut sigint, mut sigterm) = (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?);
    Ok(async move {
        tokio::select! {
            _ = sigint.recv() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        }
    })
}

/// rcl from the command line, and the node; on failure, the exit code (the reason is logged).
fn start_ros() -> Result<(r2r::Node, String), ExitCode> {
    if let Err(e) = ros_params::check_params_files(std::env::args()) {
        error!("{e}");
        return Err(ExitCode::from(2));
    }
    // r2r panics when rcl refuses the arguments (a malformed params file, say):
    // that is one error line naming rcl's reason, not a panic report.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ctx = std::panic::catch_unwind(r2r::Context::create);
    // From here on, a panic anywhere is an error in the log, not only a line on stderr.
    std::panic::set_hook(Box::new(move |panic| {
        error!("panic: {panic}");
        default_hook(panic);
    }));
    let ctx = match ctx {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(e)) => {
            error!("could not initialise ROS 2 (rcl_init: {e}); check the --ros-args");
            return Err(ExitCode::from(1));
        }
        Err(panic) => {
            let why =
                panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied());
            error!("could not initialise ROS 2: {}; check the --ros-args", why.unwrap_or("rcl_init failed"));
            return Err(ExitCode::from(2));
        }
    };
    let node = r2r::Node::create(ctx, NODE_NAME, "").map_err(|e| {
        error!("could not create node '{NODE_NAME}': {e}");
        ExitCode::from(1)
    })?;
    let fqn = node.fully_qualified_name().unwrap_or_else(|_| NODE_NAME.into());
    Ok((node, fqn))
}

/// The validated configuration, the manifests it names, and their action
/// clips (read once: every later `ros2 param set` is checked against them).
fn configure(node: &r2r::Node, fqn: &str) -> Result<(Config, ByRole<PathBuf>, Vec<ActionClip>), ConfigError> {
    let name = node.name().unwrap_or_else(|_| NODE_NAME.into());
    for unmatched in ros_params::unmatched_params_files(std::env::args(), &name, fqn) {
        warn!("{unmatched}");
    }
    let config = Config::from_params(&ros_params::flat_params(node))?;
    let (hybrid_manifest, pure_manifest) = config.resolve_files(&share_dir())?;
    let manifests = ByRole::new(hybrid_manifest, pure_manifest);
    // Manifests that do not load are left to the policy's load, which reports them.
    let clips: Vec<ActionClip> = Role::ALL
        .iter()
        .filter_map(|&role| {
            let path = &manifests[role];
            let m = mobile_vla_policy::manifest::Manifest::load(path).ok()?;
            Some(ActionClip { manifest: path.display().to_string(), clip: m.manifest.action.clip() })
        })
        .collect();
    check_action_range(&config, &clips)?;
    Ok((config, manifests, clips))
}

/// `--build-engines`: builds the precompiled TensorRT engines of both
/// policies (see `mobile_vla_policy::engine`) with the node's own parameters,
/// then exits: 0 when every TensorRT stage was built, 1 otherwise.
fn build_engines(config: &Config, manifests: &ByRole<PathBuf>) -> ExitCode {
    let library = Some(&config.policy.onnxruntime_library).filter(|s| !s.is_empty()).map(PathBuf::from);
    let runtime = match mobile_vla_policy::runtime::init_runtime(library.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut ok = true;
    for role in Role::ALL {
        let name = role.name();
        info!(policy = name, "building TensorRT engines (minutes on an Orin)");
        match mobile_vla_policy::session::build_engines(&runtime, &manifests[role], config.policy.model(role)) {
            Ok(lines) => lines.iter().for_each(|l| info!(policy = name, "{l}")),
            Err(e) => {
                error!(policy = name, "{e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The package's share directory: beside the installed binary
/// (`<prefix>/lib/mobile_vla/<exe>` -> `<prefix>/share/mobile_vla`), else the
/// first `AMENT_PREFIX_PATH` entry that has it, else the working directory.
fn share_dir() -> PathBuf {
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("share").join(NODE_NAME)));
    let from_ament = || {
        std::env::var_os("AMENT_PREFIX_PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("share").join(NODE_NAME))
                .find(|p| p.join("package.xml").is_file())
        })
    };
    beside_exe.filter(|p| p.join("package.xml").is_file()).or_else(from_ament).unwrap_or_else(|| PathBuf::from("."))
}

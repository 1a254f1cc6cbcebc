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

use std::path::PathBuf;
use std::process::ExitCode;

use mobile_vla_core::config::Config;
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
    if let Err(e) = ros_params::check_params_files(std::env::args()) {
        error!("{e}");
        return ExitCode::from(2);
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
            return ExitCode::from(1);
        }
        Err(panic) => {
            let why =
                panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied());
            error!("could not initialise ROS 2: {}; check the --ros-args", why.unwrap_or("rcl_init failed"));
            return ExitCode::from(2);
        }
    };
    let ros_node = match r2r::Node::create(ctx, NODE_NAME, "") {
        Ok(n) => n,
        Err(e) => {
            error!("could not create node '{NODE_NAME}': {e}");
            return ExitCode::from(1);
        }
    };
    let fqn = ros_node.fully_qualified_name().unwrap_or_else(|_| NODE_NAME.into());
    let name = ros_node.name().unwrap_or_else(|_| NODE_NAME.into());
    for unmatched in ros_params::unmatched_params_files(std::env::args(), &name, &fqn) {
        warn!("{unmatched}");
    }
    let config = match Config::from_params(&ros_params::flat_params(&ros_node)) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let share = share_dir();
    let files = match config.resolve_files(&share) {
        Ok((hybrid_manifest, pure_manifest)) => node::Files { hybrid_manifest, pure_manifest },
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_action_range(&config, &files) {
        error!("{e}");
        return ExitCode::from(2);
    }
    if std::env::args().any(|a| a == "--build-engines") {
        return build_engines(&config, &files);
    }
    info!(node = %fqn, share = %share.display(), "starting with {config:?}");

    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!("could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Parameters set at runtime get the start-up checks, the node's own included.
    let manifests =
        node::Files { hybrid_manifest: files.hybrid_manifest.clone(), pure_manifest: files.pure_manifest.clone() };
    let check: mobile_vla_core::params::Check = Box::new(move |c| check_action_range(c, &manifests));
    match runtime.block_on(node::run(ros_node, config, files, check)) {
        Ok(()) => {
            info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--build-engines`: builds the precompiled TensorRT engines of both
/// policies (see `mobile_vla_policy::engine`) with the node's own parameters,
/// then exits: 0 when every TensorRT stage was built, 1 otherwise.
fn build_engines(config: &Config, files: &node::Files) -> ExitCode {
    let library = Some(&config.policy.onnxruntime_library).filter(|s| !s.is_empty()).map(PathBuf::from);
    let runtime = match mobile_vla_policy::runtime::init_runtime(library.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let mut ok = true;
    for (name, manifest, model) in
        [("hybrid", &files.hybrid_manifest, &config.policy.hybrid), ("pure", &files.pure_manifest, &config.policy.pure)]
    {
        info!(policy = name, "building TensorRT engines (minutes on an Orin)");
        match mobile_vla_policy::policy::build_engines(&runtime, manifest, model) {
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

/// `watchdog.max_abs_action` judges the raw action, before the manifest's
/// clip: at or below the clip it would fail the policy on actions the model
/// is documented to produce, and the clip would never act. Manifests that do
/// not load are left to the policy's load, which reports them.
fn check_action_range(config: &Config, files: &node::Files) -> Result<(), mobile_vla_core::config::ConfigError> {
    let max_abs = config.watchdog.max_abs_action;
    for path in [&files.hybrid_manifest, &files.pure_manifest] {
        let Ok(m) = mobile_vla_policy::manifest::Manifest::load(path) else {
            continue;
        };
        let clip = m.manifest.action.clip;
        if clip.iter().any(|c| max_abs <= *c as f64) {
            return Err(mobile_vla_core::config::ConfigError {
                key: "watchdog.max_abs_action".into(),
                value: max_abs.to_string(),
                allowed: format!(
                    "a value above every action.clip {clip:?} of {}: the invalid-output check judges the action \
                     before that clip, so at or below it the clip never acts",
                    path.display()
                ),
            });
        }
    }
    Ok(())
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

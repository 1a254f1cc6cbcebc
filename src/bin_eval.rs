//! `mobile_vla_eval`: scores policies on recorded episodes (the model team's
//! HDF5 files, rosbag2 bags) through the node's own pipeline, before they
//! drive (see `crates/mobile_vla_eval`). Exit 0 when every gate passes and
//! every policy scored, 1 otherwise, 2 on bad arguments.

use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

fn main() -> ExitCode {
    // The pipeline logs each episode's new history at INFO: here only what is wrong is worth a line.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // ONNX Runtime's own warnings (a float16 graph's constant folding on the CPU) are not the scores'.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ort=error")),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = match mobile_vla_eval::parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let sources = match mobile_vla_eval::sources::resolve(&args.episodes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mobile_vla_eval: {e}");
            return ExitCode::from(2);
        }
    };
    // Drawn on stderr, and hidden when it is not a terminal (CI logs, pipes).
    let bar = ProgressBar::new((sources.len() * args.policies.len()) as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} episode runs {msg} [{elapsed}, eta {eta}]")
            .expect("a valid template"),
    );
    let report = mobile_vla_eval::run(&args, &sources, |episode| {
        bar.set_message(episode.to_string());
        bar.inc(1);
    });
    bar.finish_and_clear();
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mobile_vla_eval: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{report}");
    if let Err(e) = write_outputs(&args, &report) {
        eprintln!("mobile_vla_eval: {e}");
        return ExitCode::from(1);
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn write_outputs(args: &mobile_vla_eval::Args, report: &mobile_vla_eval::report::Report) -> Result<(), String> {
    if let Some(path) = &args.json {
        std::fs::write(path, report.json()).map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    if let Some(dir) = &args.plot {
        let err = |e: std::io::Error| format!("--plot {}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(err)?;
        // A name may hold folders (two episodes of one file name): the figure is flattened into `dir`.
        let names: Vec<&str> = report
            .policies
            .iter()
            .flat_map(|p| p.episodes.iter().map(|e| e.episode.as_str()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for name in names {
            if let Some(svg) = mobile_vla_eval::plot::episode(report, name) {
                std::fs::write(dir.join(format!("{}.svg", name.replace('/', "_"))), svg).map_err(err)?;
            }
        }
        std::fs::write(dir.join("summary.svg"), mobile_vla_eval::plot::summary(report)).map_err(err)?;
    }
    Ok(())
}

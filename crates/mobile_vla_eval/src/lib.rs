//! `mobile_vla_eval`: scores policies on recorded episodes before they drive.
//!
//! Each policy (a manifest, as the node loads it) is replayed over every
//! episode (the model team's HDF5 files, or rosbag2 recordings in MCAP or
//! sqlite3 storage) through the node's own pipeline from decoded frame to
//! command, and each frame's command is set against the action recorded
//! with it. `sources` finds the episodes, `replay` runs a policy over them,
//! `score` owns the metrics, `gate` the acceptance rules, `report` the
//! table and the JSON, `plot` the figures. No ROS, no robot: files in,
//! scores out, and an exit code a CI job can gate a model on.

pub mod gate;
pub mod plot;
pub mod replay;
pub mod report;
pub mod score;
pub mod sources;

use std::path::PathBuf;

use mobile_vla_core::config::{params_file, Config, Provider};

use crate::gate::Gate;
use crate::replay::{Evaluator, Options};
use crate::report::{PolicyReport, Report, Skipped};

pub const USAGE: &str = "\
usage: mobile_vla_eval --policy [NAME=]MANIFEST [--policy ...] EPISODE... [options]

  EPISODE                  a team HDF5 file (.h5), a bag (.mcap, .db3, rosbag2 folder), a folder of them, or a glob
  --policy [NAME=]MANIFEST a policy to score; with several, the first is the reference of the comparison
  --gate GATE              e.g. 'mae<=1.05*ref', 'p99_ms<=30', 'direction>=0.9'; exit 1 if one fails (repeatable)
  --json FILE              every score, per episode and frame, as JSON
  --plot DIR               an SVG per episode (recorded vs commanded, per axis) and summary.svg
  --rate HZ                frame rate of HDF5 episodes (default 10)
  --camera TOPIC           bag camera topic, Image or CompressedImage (default /camera/image_raw, or its /compressed)
  --instruction-topic T    bag instruction topic, std_msgs/String (default /instruction)
  --action-topic T         bag topic of the command that drove, Twist or TwistStamped (default /cmd_vel)
  --action-timeout S       a recorded command older than this is a stop (default 0.5)
  --params FILE            the node's parameters file (its mobile_vla or /** section): camera decoding,
                           freshness, watchdog, providers as on the robot (default: the node's defaults)
  --provider P             cpu, cuda or tensorrt (default: cpu, or the --params file's)
  --deadband D             |v| up to D is no motion for the direction agreement (default 0.05)";

/// What to score and how.
#[derive(Debug, Clone)]
pub struct Args {
    /// Name and manifest; the first is the reference.
    pub policies: Vec<(String, PathBuf)>,
    pub episodes: Vec<String>,
    pub gates: Vec<Gate>,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub options: Options,
}

pub fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        policies: Vec::new(),
        episodes: Vec::new(),
        gates: Vec::new(),
        json: None,
        plot: None,
        options: Options::default(),
    };
    let number = |flag: &str, v: Option<String>, min: f64| -> Result<f64, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= min => Ok(x),
            _ => Err(format!("{flag} {v}: expected a number >= {min}")),
        }
    };
    let mut provider_given = false;
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--policy" | "-p" => {
                let v = value("--policy")?;
                let (name, path) = match v.split_once('=') {
                    Some((n, p)) if !n.is_empty() => (n.to_string(), PathBuf::from(p)),
                    _ => {
                        let p = PathBuf::from(&v);
                        let stem = p.file_stem().map_or(v.clone(), |s| s.to_string_lossy().into_owned());
                        (stem, p)
                    }
                };
                if a.policies.iter().any(|(n, _)| *n == name) {
                    return Err(format!(
                        "--policy {v}: the name {name} is taken; name each policy: --policy NAME=MANIFEST"
                    ));
                }
                a.policies.push((name, path));
            }
            "--gate" => a.gates.push(value("--gate")?.parse()?),
            "--json" => a.json = Some(value("--json")?.into()),
            "--plot" => a.plot = Some(value("--plot")?.into()),
            "--rate" => a.options.rate_hz = number("--rate", it.next(), f64::MIN_POSITIVE)?,
            "--camera" => a.options.topics.camera = value("--camera")?,
            "--instruction-topic" => a.options.topics.instruction = value("--instruction-topic")?,
            "--action-topic" => a.options.topics.action = value("--action-topic")?,
            "--action-timeout" => a.options.topics.action_timeout_s = number("--action-timeout", it.next(), 0.0)?,
            "--deadband" => a.options.deadband = number("--deadband", it.next(), 0.0)?,
            "--params" => {
                let path = PathBuf::from(value("--params")?);
                let params = params_file::parameters(&path, "mobile_vla", "/mobile_vla")?;
                a.options.node =
                    Config::from_params(&params).map_err(|e| format!("--params {}: {e}", path.display()))?;
                if !provider_given {
                    a.options.providers = None;
                }
            }
            "--provider" => {
                let v = value("--provider")?;
                let p = match v.as_str() {
                    "cpu" => Provider::Cpu,
                    "cuda" => Provider::Cuda,
                    "tensorrt" => Provider::Tensorrt,
                    _ => return Err(format!("--provider {v}: expected cpu, cuda or tensorrt")),
                };
                // The CPU always stays last, as in the node's parameters.
                a.options.providers = Some(if p == Provider::Cpu { vec![p] } else { vec![p, Provider::Cpu] });
                provider_given = true;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}\n{USAGE}")),
            _ => a.episodes.push(arg),
        }
    }
    if a.policies.is_empty() || a.episodes.is_empty() {
        return Err(format!("at least one --policy and one episode are needed\n{USAGE}"));
    }
    if a.policies.len() < 2 && a.gates.iter().any(|g| g.relative) {
        return Err("a gate relative to ref needs a second --policy to compare with the first".into());
    }
    Ok(a)
}

/// Scores every policy on every episode of `sources`; `progress` is told each episode done.
pub fn run(args: &Args, sources: &[sources::Source], mut progress: impl FnMut(&str)) -> Result<Report, String> {
    let mut report = Report::default();
    for (name, manifest) in &args.policies {
        let mut evaluator = match Evaluator::new(manifest, &args.options) {
            Ok(e) => e,
            Err(e) => {
                report.unloaded.push(Skipped { episode: String::new(), policy: name.clone(), reason: e });
                report.policies.push(PolicyReport::new(
                    name,
                    manifest,
                    String::new(),
                    [false; 3],
                    args.options.deadband,
                ));
                continue;
            }
        };
        let mut policy =
            PolicyReport::new(name, manifest, evaluator.runtime.clone(), evaluator.commanded(), args.options.deadband);
        for source in sources {
            match evaluator.episode(source) {
                Ok(run) => policy.add(run),
                Err(reason) => {
                    report.skipped.push(Skipped { episode: source.name.clone(), policy: name.clone(), reason })
                }
            }
            progress(&source.name);
        }
        report.policies.push(policy);
    }
    report.judge(&args.gates);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<Args, String> {
        parse_args(args.split_whitespace().map(String::from))
    }

    #[test]
    fn the_robots_parameters_file_is_the_evaluations_node_and_flags_override_it() {
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/mobile_vla.yaml");
        let a = parse(&format!("--policy a.json ep.h5 --params {shipped}")).unwrap();
        assert_eq!(a.options.providers, None, "the file's providers");
        assert_eq!(a.options.node.policy.hybrid.providers, [Provider::Tensorrt, Provider::Cuda, Provider::Cpu]);
        let a = parse(&format!("--provider cuda --params {shipped} --policy a.json ep.h5")).unwrap();
        assert_eq!(a.options.providers, Some(vec![Provider::Cuda, Provider::Cpu]));
        let e = parse("--policy a.json ep.h5 --params /no/such.yaml").unwrap_err();
        assert!(e.contains("/no/such.yaml"), "{e}");
    }

    #[test]
    fn bad_arguments_say_what_is_expected() {
        assert!(parse("ep.h5").unwrap_err().contains("at least one --policy"));
        assert!(parse("--policy a.json ep.h5 --gate mae<=1.05*ref").unwrap_err().contains("second --policy"));
        assert!(parse("--policy a.json --policy b/a.json ep.h5").unwrap_err().contains("NAME=MANIFEST"));
        assert!(parse("--policy a.json ep.h5 --rate 0").unwrap_err().contains("--rate 0"));
        let a = parse("-p ref=x/a.json -p int8=y/a.json ep.h5 --gate mae<=1.05*ref").unwrap();
        assert_eq!(a.policies.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["ref", "int8"]);
    }
}

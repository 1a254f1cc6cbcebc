//! `mobile_vla_report`: what a `ros2 bag record` of `~/inference_stats` says.
//!
//! `mobile_vla_recordings` reads the recording and decodes the messages,
//! `summary` computes the numbers, `plot` draws them. It reads files and
//! writes a report; it talks to no robot.

pub mod plot;
pub mod summary;

pub use mobile_vla_recordings::stats::Stats;

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    Usage(String),
    Recording(mobile_vla_recordings::Error),
}

impl From<mobile_vla_recordings::Error> for Error {
    fn from(e: mobile_vla_recordings::Error) -> Self {
        Error::Recording(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(e) => write!(f, "{e}"),
            Error::Recording(e) => e.fmt(f),
        }
    }
}

pub const USAGE: &str =
    "usage: mobile_vla_report BAG [--topic /mobile_vla/inference_stats] [--plot report.svg] [--json]
  BAG: a rosbag2 directory recorded with `-s mcap`, or one .mcap file";

pub struct Args {
    pub bag: PathBuf,
    pub topic: String,
    pub plot: Option<PathBuf>,
    pub json: bool,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, Error> {
    let mut bag = None;
    let mut a = Args { bag: PathBuf::new(), topic: "/mobile_vla/inference_stats".into(), plot: None, json: false };
    let mut it = args.into_iter();
    while let Some(x) = it.next() {
        match x.as_str() {
            "--topic" => a.topic = it.next().ok_or_else(|| Error::Usage(USAGE.into()))?,
            "--plot" => a.plot = Some(it.next().ok_or_else(|| Error::Usage(USAGE.into()))?.into()),
            "--json" => a.json = true,
            "-h" | "--help" => return Err(Error::Usage(USAGE.into())),
            _ if bag.is_none() && !x.starts_with('-') => bag = Some(PathBuf::from(x)),
            _ => return Err(Error::Usage(format!("unexpected argument '{x}'\n{USAGE}"))),
        }
    }
    a.bag = bag.ok_or_else(|| Error::Usage(USAGE.into()))?;
    Ok(a)
}

/// Reads the bag, prints the report (or JSON), writes the plot.
pub fn run(args: &Args) -> Result<String, Error> {
    let stats = mobile_vla_recordings::stats::read(&args.bag, &args.topic)?;
    let summary = summary::summarize(&stats);
    let plot = args.plot.clone().unwrap_or_else(|| {
        let name = args.bag.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
        PathBuf::from(format!("{name}_latency.svg"))
    });
    std::fs::write(&plot, plot::svg(&stats, &summary, &format!("mobile_vla latency: {}", args.bag.display())))
        .map_err(|e| mobile_vla_recordings::Error::Input(format!("writing {}: {e}", plot.display())))?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&summary).expect("summary serialises"));
    }
    Ok(text(args, &summary, &plot))
}

fn text(args: &Args, s: &summary::Summary, plot: &std::path::Path) -> String {
    let mut out = format!(
        "bag {}  topic {}\n{} messages over {:.1} s, {} frames dropped (newest-frame-only)\n\n",
        args.bag.display(),
        args.topic,
        s.messages,
        s.duration_s,
        s.frames_dropped
    );
    for g in &s.groups {
        out += &format!("policy {} on {}: {} runs, {} ok\n", g.policy, g.execution_provider, g.count, g.ok);
        out += &format!("  {:<22}{:>10}{:>10}{:>10}{:>10}\n", "(ms)", "p50", "p90", "p99", "max");
        for t in summary::TIMINGS {
            let d = &g.timings[t];
            out += &format!(
                "  {:<22}{:>10.3}{:>10.3}{:>10.3}{:>10.3}\n",
                t.trim_end_matches("_ms"),
                d.p50,
                d.p90,
                d.p99,
                d.max
            );
        }
    }
    if s.fallback_periods.is_empty() {
        out += "\nfallback: never active\n";
    } else {
        let total: f64 = s.fallback_periods.iter().map(|p| p.end_s - p.start_s).sum();
        out += &format!("\nfallback active in {} period(s), {:.2} s in all:\n", s.fallback_periods.len(), total);
        for p in &s.fallback_periods {
            out += &format!("  {:8.2} s .. {:8.2} s  ({} runs)\n", p.start_s, p.end_s, p.messages);
        }
    }
    out += &format!("\nplot: {}\n", plot.display());
    out
}

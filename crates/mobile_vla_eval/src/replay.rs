//! One policy replayed over episodes: the node's pipeline (`Inline`, on the
//! replay clock) fed each episode's instructions and frames as they were
//! recorded, each frame's command set against the recorded action.
//!
//! Owns the evaluation's node: the node's parameters (its defaults, or the
//! robot's parameters file: camera decoding and freshness, the instruction
//! bound, the watchdog's thresholds, providers) with this policy as the only one (no fallback: a frame it cannot answer is refused,
//! not answered by another policy), the velocity and acceleration limits
//! lifted (they shape the robot's motion, not the policy's choice; the
//! manifest's clip and denormalisation stay), and the seam between episodes:
//! the instruction cleared (a new history: windows, recurrent state and
//! chunks over, as a fresh node would start) and ten seconds without a frame
//! (nothing the previous episode computed is fresh any more). It
//! never reads a wall clock into a decision, so a replay gives the same
//! commands on any machine.

use std::path::{Path, PathBuf};

use mobile_vla_core::config::{Config, Provider};
use mobile_vla_core::vocab::{ByRole, Role, Skip};
use mobile_vla_policy::inline::{FrameKind, Inline, OwnedFrame, Step};
use mobile_vla_policy::runner::PolicySpec;
use mobile_vla_recordings::driven::{self, Topics};
use mobile_vla_recordings::episode::{Event, Format, Picture};
use mobile_vla_recordings::team;
use serde::Serialize;

use crate::score::{Score, AXES};
use crate::sources::Source;

/// ROS time without a frame between two episodes.
const EPISODE_GAP_S: f64 = 10.0;

/// How episodes are read and scored.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's parameters (the defaults, or the robot's parameters file).
    pub node: Config,
    /// The team's files carry no clock: their frames arrive at this rate.
    pub rate_hz: f64,
    pub topics: Topics,
    /// In place of `node`'s (`policy.hybrid.providers`).
    pub providers: Option<Vec<Provider>>,
    /// |component| up to this is no motion, for the sign and direction agreement.
    pub deadband: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            node: Config::default(),
            rate_hz: 10.0,
            topics: Topics::default(),
            providers: Some(vec![Provider::Cpu]),
            deadband: 0.05,
        }
    }
}

/// One frame of an episode, as scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrameRecord {
    /// Since the episode's first event (s).
    pub t_s: f64,
    pub action: [f64; 3],
    /// What the policy commanded on it (`None`: it gave no command, see `refused`).
    pub command: Option<[f64; 3]>,
    pub refused: Option<String>,
    pub label: Option<String>,
}

/// A policy's run over one episode.
#[derive(Debug, Clone)]
pub struct EpisodeRun {
    pub episode: String,
    pub frames: Vec<FrameRecord>,
    pub score: Score,
}

/// The evaluation's node, running one policy.
pub struct Evaluator {
    inline: Inline,
    options: Options,
    commanded: [bool; 3],
    /// ROS time of the next episode's first event.
    next_start_s: f64,
    /// What ran the policy, as its loading reported it.
    pub runtime: String,
}

/// The node's parameters for scoring a policy alone.
fn config(options: &Options) -> Config {
    let mut c = options.node.clone();
    if let Some(p) = &options.providers {
        c.policy.hybrid.providers = p.clone();
    }
    c.watchdog.fallback_enabled = false;
    // Far beyond any robot's, finite: the output stage does arithmetic with it.
    c.limits.max_velocity = [1e6; 3];
    c.limits.max_accel = [0.0; 3];
    c.limits.max_decel = [0.0; 3];
    c.limits.deadband = [0.0; 3];
    c
}

impl Evaluator {
    /// Loads the policy of `manifest`; an error says why it cannot be scored.
    pub fn new(manifest: &Path, options: &Options) -> Result<Self, String> {
        let c = config(options);
        let specs = ByRole::from_fn(|role| PolicySpec::from_config(&c, role, PathBuf::from(manifest)));
        let start_s = 1_000.0;
        let (inline, _) = Inline::replay(&c, specs, start_s);
        if let Some(e) = inline.load_error(Role::Primary) {
            return Err(e);
        }
        let loaded = inline.loaded(Role::Primary).ok_or("the policy did not start")?;
        let commanded = AXES.map(|a| loaded.commanded_axes.contains(&a));
        let runtime = loaded.runtime.to_string();
        Ok(Evaluator { inline, options: options.clone(), commanded, next_start_s: start_s + EPISODE_GAP_S, runtime })
    }

    /// The axes the policy commands.
    pub fn commanded(&self) -> [bool; 3] {
        self.commanded
    }

    /// Replays `source` and scores it; an error names what is wrong with the recording.
    pub fn episode(&mut self, source: &Source) -> Result<EpisodeRun, String> {
        let mut run = EpisodeRun {
            episode: source.name.clone(),
            frames: Vec::new(),
            score: Score::new(self.commanded, self.options.deadband),
        };
        let mut first_s: Option<f64> = None;
        let mut window_need = None;
        let mut last_s = self.next_start_s;
        let base = self.next_start_s;
        // No task of the previous episode carries over: its instruction is cleared, a new one starts a new history.
        self.inline.instruction("", base);
        let mut visit = |event: Event| {
            let time_s = match &event {
                Event::Instruction { time_s, .. } => *time_s,
                Event::Frame(f) => f.time_s,
            };
            let t0 = *first_s.get_or_insert(time_s);
            // ROS time never steps back, even when a recording's log does.
            let now = (base + time_s - t0).max(last_s);
            last_s = now;
            match event {
                Event::Instruction { text, .. } => {
                    self.inline.instruction(&text, now);
                }
                Event::Frame(f) => {
                    let frame = OwnedFrame {
                        stamp_s: f.stamp_s.map(|s| base + s - t0),
                        kind: match f.picture {
                            Picture::Raw { width, height, step, encoding } => {
                                FrameKind::Raw { width, height, step, encoding }
                            }
                            Picture::Compressed { format } => FrameKind::Compressed { format },
                        },
                        data: f.data,
                    };
                    let step = self.inline.frame(frame, now);
                    let (command, refused) = outcome(&step, &mut run.score, &mut window_need);
                    match command {
                        Some(c) => run.score.scored(f.action, c),
                        None => run.score.refused(refused.unwrap_or("not_run")),
                    }
                    run.frames.push(FrameRecord {
                        t_s: time_s - t0,
                        action: f.action,
                        command,
                        refused: command.is_none().then(|| refused.unwrap_or("not_run").to_string()),
                        label: f.label,
                    });
                }
            }
            Ok(())
        };
        let read = match source.format {
            Format::Team => team::read(&source.path, self.options.rate_hz, &mut visit),
            Format::Bag => driven::read(&source.path, &self.options.topics, &mut visit),
        };
        self.next_start_s = last_s + EPISODE_GAP_S;
        read.map_err(|e| e.to_string())?;
        if run.score.scored_frames() == 0 {
            if let Some(need) =
                window_need.filter(|_| run.frames.iter().all(|f| f.refused.as_deref() == Some("window_filling")))
            {
                let (path, n) = (source.path.display(), run.frames.len());
                return Err(format!("{path}: {n} frames, shorter than the policy's window ({need} frames)"));
            }
        }
        Ok(run)
    }
}

/// The command a frame gave (the last one published after a run that drove), or why there was none.
fn outcome(
    step: &Step,
    score: &mut Score,
    window_need: &mut Option<usize>,
) -> (Option<[f64; 3]>, Option<&'static str>) {
    for r in &step.runs {
        let t = &r.run.timings;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        score.timed([
            ms(t.preprocess),
            ms(t.inference),
            ms(t.postprocess),
            ms(t.preprocess + t.inference + t.postprocess),
        ]);
    }
    if step.runs.iter().any(|r| r.drove) {
        let v = step.commands.last().expect("a run that drove published its command");
        return (Some([v.x, v.y, v.wz]), None);
    }
    if let Some(r) = step.runs.last() {
        let why = match &r.run.result {
            Err(mobile_vla_policy::PolicyError::NonFinite { .. }) => "non_finite",
            Err(_) => "run_failed",
            Ok(_) => "not_driven",
        };
        return (None, Some(why));
    }
    let why = step.skips.last().map(|(_, skip)| match skip {
        Skip::NoInstruction => "no_instruction",
        Skip::Unstamped => "unstamped",
        Skip::Stale { .. } => "stale",
        Skip::Future { .. } => "future_stamp",
        Skip::BadFrame(_) => "bad_frame",
        Skip::BadInstruction(_) => "bad_instruction",
        Skip::NotLoaded => "not_loaded",
        Skip::WindowFilling { need, .. } => {
            *window_need = Some(*need);
            "window_filling"
        }
    });
    (None, why)
}

//! What a run found: every policy's scores per episode and overall, the
//! comparison with the first policy, the episodes skipped and why, and the
//! gates' verdicts, as a table for people and JSON for programs.
//!
//! Owns the report's shape and wording, the comparison's common ground, and
//! the exit decision: a failed gate, or a policy that scored nothing, fails
//! the run; a skipped episode alone does not (it is listed). Policies are
//! compared (and gated relative to the first) on the frames every one of
//! them commanded, so a policy that refuses the hard frames is not scored
//! on the easy ones alone; how many it refused is its own, overall figure.

use std::fmt::{self, Write as _};
use std::path::Path;

use serde::Serialize;

use crate::gate::{Gate, Metric, Verdict};
use crate::replay::{EpisodeRun, FrameRecord};
use crate::score::{Score, Summary, AXES, STAGES};

/// An episode (or a policy) that could not be scored, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub episode: String,
    pub policy: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EpisodeReport {
    pub episode: String,
    pub summary: Summary,
    pub frames: Vec<FrameRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub name: String,
    pub manifest: String,
    /// The ONNX Runtime that ran it.
    pub runtime: String,
    pub commanded_axes: Vec<&'static str>,
    pub overall: Summary,
    /// In compare mode: the scores on the frames every policy commanded (refusals and latency: `overall`'s).
    pub on_common_frames: Option<Summary>,
    pub episodes: Vec<EpisodeReport>,
    #[serde(skip)]
    total: Score,
}

impl PolicyReport {
    pub fn new(name: &str, manifest: &Path, runtime: String, commanded: [bool; 3], deadband: f64) -> Self {
        let total = Score::new(commanded, deadband);
        PolicyReport {
            name: name.to_string(),
            manifest: manifest.display().to_string(),
            runtime,
            commanded_axes: AXES.iter().zip(commanded).filter(|(_, c)| *c).map(|(a, _)| *a).collect(),
            overall: total.summary(),
            on_common_frames: None,
            episodes: Vec::new(),
            total,
        }
    }

    pub fn add(&mut self, run: EpisodeRun) {
        self.total.merge(&run.score);
        self.overall = self.total.summary();
        self.episodes.push(EpisodeReport { episode: run.episode, summary: run.score.summary(), frames: run.frames });
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub policies: Vec<PolicyReport>,
    pub skipped: Vec<Skipped>,
    /// Policies that did not load: nothing of theirs was scored.
    pub unloaded: Vec<Skipped>,
    pub gates: Vec<Verdict>,
    pub passed: bool,
}

impl Report {
    /// With several policies, each one's scores on the frames every one of them commanded.
    fn compare(&mut self) {
        if self.policies.len() < 2 {
            return;
        }
        let commanded = |p: &PolicyReport, episode: &str, k: usize| {
            p.episodes.iter().find(|e| e.episode == episode).and_then(|e| e.frames.get(k)).and_then(|f| f.command)
        };
        let first = &self.policies[0];
        let common: Vec<(String, usize)> = first
            .episodes
            .iter()
            .flat_map(|e| (0..e.frames.len()).map(move |k| (e.episode.clone(), k)))
            .filter(|(e, k)| self.policies.iter().all(|p| commanded(p, e, *k).is_some()))
            .collect();
        for p in &mut self.policies {
            let mut score = p.total.empty_like();
            for (e, k) in &common {
                let f = &p.episodes.iter().find(|x| x.episode == *e).expect("commanded").frames[*k];
                score.scored(f.action, f.command.expect("commanded"));
            }
            let s = score.summary();
            p.on_common_frames = Some(Summary {
                frames: s.scored,
                refused_fraction: p.overall.refused_fraction,
                refused: p.overall.refused.clone(),
                latency_ms: p.overall.latency_ms.clone(),
                ..s
            });
        }
    }

    /// Judges the gates and settles whether the run passed.
    pub fn judge(&mut self, gates: &[Gate]) {
        self.compare();
        let overall: Vec<(String, Summary)> =
            self.policies.iter().map(|p| (p.name.clone(), p.overall.clone())).collect();
        let common: Vec<(String, Summary)> = self
            .policies
            .iter()
            .map(|p| (p.name.clone(), p.on_common_frames.clone().unwrap_or_else(|| p.overall.clone())))
            .collect();
        self.gates = gates.iter().flat_map(|g| g.judge(if g.relative { &common } else { &overall })).collect();
        self.passed = self.gates.iter().all(|v| v.passed) && self.policies.iter().all(|p| p.overall.scored > 0);
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises")
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn refused(s: &Summary) -> String {
    let n = s.frames - s.scored;
    if n == 0 {
        return "0".into();
    }
    let why: Vec<String> = s.refused.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{n} ({})", why.join(", "))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.policies {
            let runs = if p.runtime.is_empty() { "not loaded".to_string() } else { p.runtime.clone() };
            writeln!(f, "policy {} ({}), commands {}; {runs}", p.name, p.manifest, p.commanded_axes.join(", "))?;
            let width = p.episodes.iter().map(|e| e.episode.len()).max().unwrap_or(0).max(8);
            writeln!(
                f,
                "  {:width$}  {:>6} {:>6}  {:>7} {:>7} {:>9}  refused",
                "episode", "frames", "scored", "MAE", "RMSE", "direction"
            )?;
            let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &Summary| {
                writeln!(
                    f,
                    "  {name:width$}  {:>6} {:>6}  {:>7} {:>7} {:>9}  {}",
                    s.frames,
                    s.scored,
                    num(s.mae),
                    num(s.rmse),
                    pct(s.direction_agreement),
                    refused(s)
                )
            };
            for e in &p.episodes {
                row(f, &e.episode, &e.summary)?;
            }
            row(f, "all", &p.overall)?;
            for (axis, a) in &p.overall.axes {
                writeln!(
                    f,
                    "  {axis:>9}: MAE {} RMSE {} sign agreement {}",
                    num(a.mae),
                    num(a.rmse),
                    pct(a.sign_agreement)
                )?;
            }
            let mut lat = String::new();
            for stage in STAGES {
                if let Some(l) = p.overall.latency_ms.get(stage) {
                    let _ = write!(lat, " {stage} {:.2}/{:.2}/{:.2}", l.p50, l.p90, l.p99);
                }
            }
            if !lat.is_empty() {
                writeln!(f, "  latency ms p50/p90/p99 (this machine):{lat}")?;
            }
            writeln!(f)?;
        }
        if let [reference, others @ ..] = self.policies.as_slice() {
            if !others.is_empty() {
                let on = |p: &'_ PolicyReport| p.on_common_frames.clone().unwrap_or_else(|| p.overall.clone());
                let common = on(reference).scored;
                writeln!(
                    f,
                    "compared with {} (difference to it), on the {common} frames every policy commanded",
                    reference.name
                )?;
                for p in std::iter::once(reference).chain(others) {
                    let diff = |m: Metric| match (m.of(&on(p)), m.of(&on(reference))) {
                        (Some(v), Some(r)) if p.name != reference.name => format!("{v:.4} ({:+.4})", v - r),
                        (Some(v), _) => format!("{v:.4}"),
                        _ => "-".into(),
                    };
                    writeln!(
                        f,
                        "  {:12} MAE {:18} RMSE {:18} direction {:18} p50 ms {}",
                        p.name,
                        diff(Metric::Mae),
                        diff(Metric::Rmse),
                        diff(Metric::Direction),
                        diff(Metric::P50Ms)
                    )?;
                }
                writeln!(f)?;
            }
        }
        for s in &self.unloaded {
            writeln!(f, "policy {} not loaded: {}", s.policy, s.reason)?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "skipped {} episode run(s):", self.skipped.len())?;
            for s in &self.skipped {
                // The reason names the file.
                writeln!(f, "  {}: {}", s.policy, s.reason)?;
            }
        }
        for v in &self.gates {
            writeln!(
                f,
                "gate {} on {}: {} against {} -> {}",
                v.gate,
                v.policy,
                num(v.value),
                num(v.bound),
                if v.passed { "pass" } else { "FAIL" }
            )?;
        }
        for p in self.policies.iter().filter(|p| p.overall.scored == 0) {
            writeln!(f, "policy {} scored no frame", p.name)?;
        }
        write!(f, "{}", if self.passed { "result: pass" } else { "result: FAIL" })
    }
}

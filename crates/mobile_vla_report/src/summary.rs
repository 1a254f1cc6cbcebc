//! The numbers of the report: percentiles per policy and provider, dropped
//! frames, fallback periods. Pure functions of the decoded messages.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Stats;

/// Linear interpolation between closest ranks (numpy's default), on sorted data.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (idx.floor() as usize, idx.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (idx - lo as f64)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dist {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    /// The distribution of the finite `values`.
    pub fn of(values: impl Iterator<Item = f64>) -> Dist {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Dist {
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

pub const TIMINGS: [&str; 6] =
    ["total_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "frame_age_ms", "stamp_to_publish_ms"];

pub fn timing(s: &Stats, name: &str) -> f64 {
    match name {
        "total_ms" => s.total_ms,
        "preprocess_ms" => s.preprocess_ms,
        "inference_ms" => s.inference_ms,
        "postprocess_ms" => s.postprocess_ms,
        "frame_age_ms" => s.frame_age_ms,
        "stamp_to_publish_ms" => s.stamp_to_publish_ms,
        _ => unreachable!("unknown timing {name}"),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    pub policy: String,
    pub execution_provider: String,
    pub count: usize,
    pub ok: usize,
    pub timings: BTreeMap<String, Dist>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Period {
    pub start_s: f64,
    pub end_s: f64,
    pub messages: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub messages: usize,
    pub duration_s: f64,
    pub frames_dropped: u64,
    pub groups: Vec<Group>,
    /// Stretches of consecutive messages with `fallback_active`, in seconds from the first message.
    pub fallback_periods: Vec<Period>,
}

pub fn summarize(stats: &[Stats]) -> Summary {
    let t0 = stats.first().map_or(0.0, |s| s.stamp_s);
    let mut keys: Vec<(String, String)> =
        stats.iter().map(|s| (s.policy.clone(), s.execution_provider.clone())).collect();
    keys.sort();
    keys.dedup();
    let groups = keys
        .into_iter()
        .map(|(policy, ep)| {
            let mine: Vec<&Stats> = stats.iter().filter(|s| s.policy == policy && s.execution_provider == ep).collect();
            // Timings of runs that completed; failed runs are counted, not timed.
            let ok: Vec<&&Stats> = mine.iter().filter(|s| s.outcome == 0).collect();
            let timings = TIMINGS.iter().map(|t| (t.to_string(), Dist::of(ok.iter().map(|s| timing(s, t))))).collect();
            Group { policy, execution_provider: ep, count: mine.len(), ok: ok.len(), timings }
        })
        .collect();
    let mut periods: Vec<Period> = Vec::new();
    let mut open = false;
    for s in stats {
        let t = s.stamp_s - t0;
        match (s.fallback_active, open) {
            (true, false) => {
                periods.push(Period { start_s: t, end_s: t, messages: 1 });
                open = true;
            }
            (true, true) => {
                let p = periods.last_mut().expect("an open period");
                p.end_s = t;
                p.messages += 1;
            }
            (false, _) => open = false,
        }
    }
    Summary {
        messages: stats.len(),
        duration_s: stats.last().map_or(0.0, |s| s.stamp_s - t0),
        frames_dropped: stats.iter().map(|s| s.frames_dropped as u64).sum(),
        groups,
        fallback_periods: periods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
    }
}

//! Acceptance gates: `mae<=1.05*ref`, `p99_ms<=30`, `direction>=0.95*ref`.
//!
//! Owns the gate grammar (a metric, `<=` or `>=`, a number, optionally
//! `*ref` for a multiple of the first policy's value) and judging a policy's
//! summary by it. A gate relative to `ref` judges every policy but the first;
//! an absolute one judges them all. A metric a policy has no value for (it
//! scored no frame) fails its gate: nothing measured is never a pass.

use std::fmt;

use crate::score::Summary;

/// What a gate bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Mae,
    Rmse,
    /// Direction class agreement.
    Direction,
    /// Fraction of frames that gave no command.
    Refused,
    /// Total run latency percentiles (ms).
    P50Ms,
    P99Ms,
}

const METRICS: [(&str, Metric); 6] = [
    ("mae", Metric::Mae),
    ("rmse", Metric::Rmse),
    ("direction", Metric::Direction),
    ("refused", Metric::Refused),
    ("p50_ms", Metric::P50Ms),
    ("p99_ms", Metric::P99Ms),
];

impl Metric {
    pub fn name(self) -> &'static str {
        METRICS.iter().find(|(_, m)| *m == self).map(|(n, _)| *n).expect("every metric is named")
    }

    pub fn of(self, s: &Summary) -> Option<f64> {
        let latency = |p: fn(&mobile_vla_report::summary::Dist) -> f64| s.latency_ms.get("total").map(p);
        match self {
            Metric::Mae => s.mae,
            Metric::Rmse => s.rmse,
            Metric::Direction => s.direction_agreement,
            Metric::Refused => Some(s.refused_fraction),
            Metric::P50Ms => latency(|p| p.p50),
            Metric::P99Ms => latency(|p| p.p99),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub metric: Metric,
    /// `<=` (true) or `>=`.
    pub at_most: bool,
    pub value: f64,
    /// `value` multiplies the first policy's.
    pub relative: bool,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.at_most { "<=" } else { ">=" };
        write!(f, "{}{op}{}{}", self.metric.name(), self.value, if self.relative { "*ref" } else { "" })
    }
}

impl std::str::FromStr for Gate {
    type Err = String;

    fn from_str(text: &str) -> Result<Gate, String> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let usage = || {
            let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
            format!(
                "--gate {text:?}: expected METRIC<=NUMBER, METRIC>=NUMBER or METRIC<=NUMBER*ref, METRIC one of {}",
                names.join(", ")
            )
        };
        let (name, at_most, rest) = match (t.split_once("<="), t.split_once(">=")) {
            (Some((n, r)), None) => (n, true, r),
            (None, Some((n, r))) => (n, false, r),
            _ => return Err(usage()),
        };
        let metric = METRICS.iter().find(|(n, _)| *n == name).map(|(_, m)| *m).ok_or_else(usage)?;
        let (number, relative) = match rest.strip_suffix("*ref") {
            Some(n) => (n, true),
            None if rest == "ref" => ("1", true),
            None => (rest, false),
        };
        let value: f64 = number.parse().map_err(|_| usage())?;
        if !value.is_finite() {
            return Err(usage());
        }
        Ok(Gate { metric, at_most, value, relative })
    }
}

/// One gate's judgement of one policy.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub gate: String,
    pub policy: String,
    pub value: Option<f64>,
    pub bound: Option<f64>,
    pub passed: bool,
}

impl Gate {
    /// Judges every policy it applies to (`policies`: name and summary, the reference first).
    pub fn judge(&self, policies: &[(String, Summary)]) -> Vec<Verdict> {
        let reference = policies.first().and_then(|(_, s)| self.metric.of(s));
        let skip = usize::from(self.relative);
        policies
            .iter()
            .skip(skip)
            .map(|(name, s)| {
                let value = self.metric.of(s);
                let bound = if self.relative { reference.map(|r| r * self.value) } else { Some(self.value) };
                let passed = match (value, bound) {
                    (Some(v), Some(b)) => (self.at_most && v <= b) || (!self.at_most && v >= b),
                    _ => false,
                };
                Verdict { gate: self.to_string(), policy: name.clone(), value, bound, passed }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Score;

    fn summary(err: f64) -> Summary {
        let mut s = Score::new([true; 3], 0.0);
        s.scored([0.0; 3], [err; 3]);
        s.summary()
    }

    #[test]
    fn gates_parse_and_print_back() {
        for text in ["mae<=1.05*ref", "p99_ms<=30", "direction>=0.95*ref", "refused<=0.1"] {
            assert_eq!(text.parse::<Gate>().unwrap().to_string(), text);
        }
        assert_eq!("mae <= ref".parse::<Gate>().unwrap().to_string(), "mae<=1*ref");
        for bad in ["mae<1.05", "accuracy<=1", "mae<=x*ref", "mae<=inf", "mae"] {
            let e = bad.parse::<Gate>().unwrap_err();
            assert!(e.contains("mae, rmse, direction, refused, p50_ms, p99_ms"), "{e}");
        }
    }

    #[test]
    fn a_relative_gate_judges_the_others_by_the_first() {
        let gate: Gate = "mae<=1.05*ref".parse().unwrap();
        let v = gate.judge(&[
            ("fp32".into(), summary(0.2)),
            ("fp16".into(), summary(0.209)),
            ("int8".into(), summary(0.22)),
        ]);
        assert_eq!(
            v.iter().map(|v| (v.policy.as_str(), v.passed)).collect::<Vec<_>>(),
            [("fp16", true), ("int8", false)]
        );
        assert!((v[0].bound.unwrap() - 0.21).abs() < 1e-12);
    }

    #[test]
    fn nothing_measured_fails_the_gate() {
        let none = Score::new([true; 3], 0.0).summary();
        let gate: Gate = "mae<=0.5".parse().unwrap();
        assert!(!gate.judge(&[("empty".into(), none)])[0].passed);
    }
}

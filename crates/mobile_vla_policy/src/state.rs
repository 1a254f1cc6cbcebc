//! The recurrent state a policy carries from frame to frame.
//!
//! Owns one buffer per state pair of the manifest (f32 or f16, zero at
//! start), what a run feeds from them, and taking the next state from a
//! run's outputs: all of it or none, and only values that are finite. It
//! never decides when the state resets (a new instruction, a policy taking
//! over): the policy and the control core do.

use half::f16;

use crate::backend::{Tensor, Values, View};
use crate::manifest::{FloatType, StatePair};
use crate::PolicyError;

#[derive(Debug, Clone, PartialEq)]
enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct State {
    bufs: Vec<Buf>,
}

impl State {
    /// Zero state for the manifest's pairs.
    pub(crate) fn new(pairs: &[StatePair]) -> Self {
        let zeros = |s: &StatePair| {
            let n = s.shape.iter().product();
            match s.dtype {
                FloatType::F32 => Buf::F32(vec![0.0; n]),
                FloatType::F16 => Buf::F16(vec![f16::ZERO; n]),
            }
        };
        State { bufs: pairs.iter().map(zeros).collect() }
    }

    pub(crate) fn reset(&mut self) {
        for b in &mut self.bufs {
            match b {
                Buf::F32(v) => v.fill(0.0),
                Buf::F16(v) => v.fill(f16::ZERO),
            }
        }
    }

    /// State `k`'s values, to feed a run.
    pub(crate) fn view(&self, k: usize) -> View<'_> {
        match &self.bufs[k] {
            Buf::F32(v) => View::F32(v),
            Buf::F16(v) => View::F16(v),
        }
    }

    /// Takes the next state from a run's state outputs (in the pairs' order):
    /// every one of the pair's type and all finite, or the state stays as it was.
    pub(crate) fn advance(&mut self, pairs: &[StatePair], outputs: Vec<Tensor>) -> Result<(), PolicyError> {
        let mut next = Vec::with_capacity(pairs.len());
        for (pair, t) in pairs.iter().zip(outputs) {
            let wrong = || PolicyError::Run(format!("state output '{}' is not {:?}", pair.output, pair.dtype));
            let (buf, finite) = match (pair.dtype, t.values) {
                (FloatType::F32, Values::F32(v)) => {
                    let finite = v.iter().all(|x| x.is_finite());
                    (Buf::F32(v), finite)
                }
                (FloatType::F16, Values::F16(v)) => {
                    let finite = v.iter().all(|x| x.is_finite());
                    (Buf::F16(v), finite)
                }
                _ => return Err(wrong()),
            };
            if !finite {
                return Err(PolicyError::NonFinite { output: pair.output.clone(), values: Vec::new() });
            }
            next.push(buf);
        }
        self.bufs = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dtype: FloatType) -> StatePair {
        StatePair { input: "h_in".into(), output: "h_out".into(), shape: vec![1, 2], dtype }
    }

    #[test]
    fn a_state_with_a_non_finite_value_is_named_and_never_taken() {
        let pairs = [pair(FloatType::F32)];
        let mut s = State::new(&pairs);
        let good = Tensor { shape: vec![1, 2], values: Values::F32(vec![0.5, -0.5]) };
        s.advance(&pairs, vec![good]).unwrap();
        let before = s.clone();
        let bad = Tensor { shape: vec![1, 2], values: Values::F32(vec![0.5, f32::INFINITY]) };
        let e = s.advance(&pairs, vec![bad]).unwrap_err();
        assert_eq!(e.to_string(), "model output 'h_out' is not finite");
        assert_eq!(s, before, "the state stays as the last valid run left it");
        s.reset();
        assert!(matches!(s.view(0), View::F32(v) if v == [0.0, 0.0]));
    }
}

//! Frame windows: the last T frames of a per-frame tensor, fed to a graph as one `[1, T, ...]` tensor.
//!
//! Owns one ring per window of the manifest (an image's tensor, or a
//! backbone's per-frame output, each computed once per frame and kept, never
//! recomputed), how a window is filled before it has T frames
//! ([`WindowStart`]: wait, or repeat the first frame), and the rule that a
//! frame enters its windows only with a run that ended well (or one that
//! only waited for the window to fill) and whose entries are finite: a
//! refused or failed run leaves them as they were. Resets (with the recurrent
//! state) empty them; when a policy resets is decided elsewhere: by the
//! control core (see `Task::history`), its runner (a stale camera gap, a
//! cancelled run) and `Policy::infer` (an entry that changed shape).

use std::collections::VecDeque;

use crate::backend::{Tensor, Values};
use crate::manifest::{Window, WindowStart};
use crate::PolicyError;

/// What a window gives for this frame.
#[derive(Debug)]
pub enum Fed {
    /// `[1, T, ...]`, ready to feed.
    Full(Tensor),
    /// It waits for T frames; `have` counts this one.
    Filling { have: usize, need: usize },
}

#[derive(Debug)]
pub struct Windows {
    specs: Vec<Window>,
    start: WindowStart,
    /// Per window, the frames committed so far, oldest first (at most T - 1 are ever needed beside the current one).
    rings: Vec<VecDeque<Tensor>>,
}

impl Windows {
    pub fn new(specs: &[Window], start: WindowStart) -> Self {
        Windows { specs: specs.to_vec(), start, rings: vec![VecDeque::new(); specs.len()] }
    }

    /// How windows fill from now on (the warm-up fills them whatever the manifest says); returns the previous rule.
    pub fn set_start(&mut self, start: WindowStart) -> WindowStart {
        std::mem::replace(&mut self.start, start)
    }

    /// Every window empty (with the recurrent state: a new history).
    pub fn reset(&mut self) {
        self.rings.iter_mut().for_each(VecDeque::clear);
    }

    /// Window `k` for this frame (`current`: what this frame adds, `[1, ...]`).
    pub fn feed(&self, k: usize, current: &Tensor) -> Result<Fed, PolicyError> {
        let (spec, ring) = (&self.specs[k], &self.rings[k]);
        let t = spec.length;
        let have = ring.len() + 1;
        if current.shape.first() != Some(&1) {
            return Err(PolicyError::Run(format!(
                "window '{}': '{}' is {:?}; a window keeps one frame's [1, ...] tensor",
                spec.input, spec.from, current.shape
            )));
        }
        if have < t && self.start == WindowStart::Wait {
            return Ok(Fed::Filling { have, need: t });
        }
        // The committed frames (at most T - 1) and this one, the oldest slots filled with the first frame.
        let recent: Vec<&Tensor> = ring.iter().chain(std::iter::once(current)).collect();
        let first = recent[0];
        let slots: Vec<&Tensor> = std::iter::repeat_n(first, t.saturating_sub(recent.len())).chain(recent).collect();
        for s in &slots {
            if s.shape != current.shape {
                return Err(PolicyError::Run(format!(
                    "window '{}': '{}' was {:?} on an earlier frame and is {:?} now",
                    spec.input, spec.from, s.shape, current.shape
                )));
            }
        }
        let shape = [1, t as i64].into_iter().chain(current.shape.iter().skip(1).copied()).collect();
        Ok(Fed::Full(Tensor { shape, values: concat(&slots)? }))
    }

    /// Refuses entries with NaN or infinity (a backbone's features): such a
    /// frame would spoil every window it is part of for the next T - 1 frames.
    pub fn check(&self, entries: &[Option<Tensor>]) -> Result<(), PolicyError> {
        for (spec, entry) in self.specs.iter().zip(entries) {
            let finite = match entry.as_ref().map(|e| &e.values) {
                Some(Values::F32(v)) => v.iter().all(|x| x.is_finite()),
                Some(Values::F16(v)) => v.iter().all(|x| x.is_finite()),
                _ => true,
            };
            if !finite {
                return Err(PolicyError::NonFinite { output: spec.from.clone(), values: Vec::new() });
            }
        }
        Ok(())
    }

    /// This frame's entries join their windows (the oldest leave once T are kept).
    pub fn commit(&mut self, entries: Vec<Option<Tensor>>) {
        for ((ring, spec), entry) in self.rings.iter_mut().zip(&self.specs).zip(entries) {
            let Some(entry) = entry else { continue };
            ring.push_back(entry);
            while ring.len() > spec.length.saturating_sub(1) {
                ring.pop_front();
            }
        }
    }
}

/// The values of `parts`, one after the other (all of one element type).
fn concat(parts: &[&Tensor]) -> Result<Values, PolicyError> {
    fn join<T: Copy>(parts: &[&Tensor], get: impl Fn(&Values) -> Option<&Vec<T>>) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(parts.iter().map(|p| get(&p.values).map_or(0, Vec::len)).sum());
        for p in parts {
            out.extend_from_slice(get(&p.values)?);
        }
        Some(out)
    }
    let joined = match &parts[0].values {
        Values::F32(_) => join(parts, |v| if let Values::F32(x) = v { Some(x) } else { None }).map(Values::F32),
        Values::F16(_) => join(parts, |v| if let Values::F16(x) = v { Some(x) } else { None }).map(Values::F16),
        Values::I64(_) => join(parts, |v| if let Values::I64(x) = v { Some(x) } else { None }).map(Values::I64),
        Values::I32(_) => join(parts, |v| if let Values::I32(x) = v { Some(x) } else { None }).map(Values::I32),
    };
    joined.ok_or_else(|| PolicyError::Run("a window's frames differ in element type".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(x: f32) -> Tensor {
        Tensor { shape: vec![1, 2], values: Values::F32(vec![x, -x]) }
    }

    fn window(start: WindowStart) -> Windows {
        Windows::new(&[Window { input: "w".into(), from: "f".into(), length: 3 }], start)
    }

    fn values(fed: Fed) -> Vec<f32> {
        match fed {
            Fed::Full(Tensor { values: Values::F32(v), .. }) => v,
            other => panic!("{other:?}"),
        }
    }

    fn filling(fed: Fed) -> (usize, usize) {
        match fed {
            Fed::Filling { have, need } => (have, need),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waiting_windows_feed_only_t_real_frames_oldest_first() {
        let mut w = window(WindowStart::Wait);
        assert_eq!(filling(w.feed(0, &frame(1.0)).unwrap()), (1, 3));
        w.commit(vec![Some(frame(1.0))]);
        assert_eq!(filling(w.feed(0, &frame(2.0)).unwrap()), (2, 3));
        w.commit(vec![Some(frame(2.0))]);
        let Fed::Full(full) = w.feed(0, &frame(3.0)).unwrap() else { panic!("the window is full") };
        assert_eq!(full.shape, vec![1, 3, 2]);
        assert_eq!(values(Fed::Full(full)), vec![1.0, -1.0, 2.0, -2.0, 3.0, -3.0]);
        w.commit(vec![Some(frame(3.0))]);
        assert_eq!(values(w.feed(0, &frame(4.0)).unwrap()), vec![2.0, -2.0, 3.0, -3.0, 4.0, -4.0]);
    }

    #[test]
    fn repeat_first_pads_with_the_first_frame_and_a_reset_starts_over() {
        let mut w = window(WindowStart::RepeatFirst);
        assert_eq!(values(w.feed(0, &frame(1.0)).unwrap()), vec![1.0, -1.0, 1.0, -1.0, 1.0, -1.0]);
        w.commit(vec![Some(frame(1.0))]);
        assert_eq!(values(w.feed(0, &frame(2.0)).unwrap()), vec![1.0, -1.0, 1.0, -1.0, 2.0, -2.0]);
        w.commit(vec![Some(frame(2.0))]);
        w.reset();
        assert_eq!(values(w.feed(0, &frame(5.0)).unwrap()), vec![5.0, -5.0, 5.0, -5.0, 5.0, -5.0]);
        // A frame that changes shape is named, not fed.
        w.commit(vec![Some(frame(5.0))]);
        let wide = Tensor { shape: vec![1, 3], values: Values::F32(vec![0.0; 3]) };
        assert!(w.feed(0, &wide).unwrap_err().to_string().contains("window 'w'"));
        // So is one that is not one frame's tensor.
        let batch = Tensor { shape: vec![2, 2], values: Values::F32(vec![0.0; 4]) };
        assert!(w.feed(0, &batch).unwrap_err().to_string().contains("[2, 2]"));
    }

    #[test]
    fn a_non_finite_entry_is_refused_and_never_kept() {
        let w = window(WindowStart::Wait);
        let e = w.check(&[Some(frame(f32::NAN))]).unwrap_err();
        assert!(matches!(&e, PolicyError::NonFinite { output, .. } if output == "f"), "{e}");
        assert!(w.check(&[Some(frame(1.0)), None]).is_ok());
    }
}

//! Action chunks played out in time, from the frame they were computed for.
//!
//! A policy that predicts `T` future actions `period_s` apart (RoboVLMs, ACT)
//! says what to do at `stamp + k * period` for the frame stamped `stamp`. Run
//! on the Orin in 50-150 ms, its chunk arrives late: the steps already in the
//! past are skipped, because the step is chosen from the frame's stamp and the
//! clock, `k = floor((now - stamp) / period)`, not guessed from a latency
//! estimate. Past the last step there is nothing to play: the player says so
//! and the caller commands zero (never extrapolate). A new chunk replaces the
//! old, or, with `blend`, is averaged with the older chunks' steps for the
//! same instant using ACT's temporal-ensembling weights `exp(-m * i)`
//! (`i = 0` the oldest). Owns the chunks and that arithmetic; whether a chunk
//! may be played at all (instruction, watchdog, locks, pauses, the command
//! timeout) is the control core's decision, which clears the player on
//! every refused, invalid or late result of the policy in control, and on a
//! jump of the clock its stamps are read on.

use std::collections::VecDeque;

use crate::vocab::Velocity;

/// How a policy's chunks become commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Playback {
    /// Seconds between chunk steps.
    pub period_s: f64,
    /// ACT's `m`: blend overlapping chunks with weights `exp(-m * i)`; `None` replaces.
    pub blend: Option<f64>,
}

/// One chunk, anchored at its frame's stamp (seconds of ROS time).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub stamp_s: f64,
    pub steps: Vec<Velocity>,
    pub playback: Playback,
}

impl Chunk {
    /// Which step is due at `now_s` (a frame stamped slightly ahead of the clock
    /// starts at 0). Step `k` begins at `stamp + k * period` exactly: the
    /// nanosecond of slack absorbs the division's rounding.
    fn step(&self, now_s: f64) -> f64 {
        ((now_s - self.stamp_s) / self.playback.period_s + 1e-9).floor().max(0.0)
    }

    /// The step for `now_s`, if the chunk covers it.
    pub fn at(&self, now_s: f64) -> Option<Velocity> {
        let k = self.step(now_s);
        self.steps.get(k as usize).copied().filter(|_| k.is_finite())
    }

    /// Whether every step is in the past at `now_s`.
    pub fn ended(&self, now_s: f64) -> bool {
        self.step(now_s) >= self.steps.len() as f64
    }
}

/// At most this many chunks are blended (older ones have ended by then anyway).
const MAX_CHUNKS: usize = 16;

#[derive(Debug, Default)]
pub struct ChunkPlayer {
    chunks: VecDeque<Chunk>,
}

impl ChunkPlayer {
    /// A chunk that may drive: it replaces what plays (or joins it, when blending).
    pub fn push(&mut self, chunk: Chunk) {
        if chunk.playback.blend.is_none() {
            self.chunks.clear();
        }
        // Chunks of older frames than the newest one played are out of order: keep time monotonic.
        if self.chunks.back().is_some_and(|c| c.stamp_s > chunk.stamp_s) {
            return;
        }
        self.chunks.push_back(chunk);
        while self.chunks.len() > MAX_CHUNKS {
            self.chunks.pop_front();
        }
    }

    /// Nothing plays any more (a new task, a pause, a lock, a switch).
    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The command for `now_s`: the newest chunk's step, or the blend of every
    /// chunk that covers `now_s`; `None` once every chunk has run out.
    pub fn at(&mut self, now_s: f64) -> Option<Velocity> {
        while self.chunks.front().is_some_and(|c| c.ended(now_s)) {
            self.chunks.pop_front();
        }
        let newest = self.chunks.back()?;
        let Some(m) = newest.playback.blend else {
            return newest.at(now_s);
        };
        let (mut sum, mut total) = (Velocity::ZERO, 0.0);
        let covering = self.chunks.iter().filter_map(|c| c.at(now_s));
        for (i, v) in covering.enumerate() {
            let w = (-m * i as f64).exp();
            sum = Velocity { x: sum.x + w * v.x, y: sum.y + w * v.y, wz: sum.wz + w * v.wz };
            total += w;
        }
        (total > 0.0).then(|| Velocity { x: sum.x / total, y: sum.y / total, wz: sum.wz / total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(x: f64) -> Velocity {
        Velocity { x, y: 0.0, wz: 0.0 }
    }

    fn chunk(stamp_s: f64, xs: &[f64], blend: Option<f64>) -> Chunk {
        Chunk { stamp_s, steps: xs.iter().map(|&x| v(x)).collect(), playback: Playback { period_s: 0.1, blend } }
    }

    #[test]
    fn steps_come_out_at_their_times_from_the_frame_stamp() {
        let mut p = ChunkPlayer::default();
        p.push(chunk(10.0, &[1.0, 2.0, 3.0, 4.0], None));
        assert_eq!(p.at(10.0), Some(v(1.0)));
        assert_eq!(p.at(10.099), Some(v(1.0)));
        assert_eq!(p.at(10.1), Some(v(2.0)));
        // Arrived 0.25 s late: the first two steps are past and skipped.
        assert_eq!(p.at(10.25), Some(v(3.0)));
        assert_eq!(p.at(10.35), Some(v(4.0)));
        // Past the last step: nothing, never an extrapolation.
        assert_eq!(p.at(10.4), None);
        assert!(p.is_empty());
    }

    #[test]
    fn a_new_chunk_replaces_the_old_one() {
        let mut p = ChunkPlayer::default();
        p.push(chunk(10.0, &[1.0, 2.0, 3.0, 4.0], None));
        p.push(chunk(10.2, &[7.0, 8.0], None));
        assert_eq!(p.at(10.25), Some(v(7.0)));
        assert_eq!(p.at(10.45), None, "the old chunk does not come back when the new one ends");
    }

    #[test]
    fn blending_weighs_overlapping_chunks_as_act_does() {
        let mut p = ChunkPlayer::default();
        p.push(chunk(10.0, &[1.0, 1.0, 1.0, 1.0], Some(0.5)));
        p.push(chunk(10.1, &[3.0, 3.0, 3.0, 3.0], Some(0.5)));
        // At 10.15 both cover: weights 1 (oldest) and exp(-0.5).
        let w = (-0.5f64).exp();
        let want = (1.0 + 3.0 * w) / (1.0 + w);
        assert!((p.at(10.15).unwrap().x - want).abs() < 1e-12);
        // After the first has ended (10.4) only the second is left.
        assert_eq!(p.at(10.45), Some(v(3.0)));
    }

    #[test]
    fn an_older_frames_chunk_never_plays_after_a_newer_one() {
        let mut p = ChunkPlayer::default();
        p.push(chunk(10.2, &[5.0, 5.0], Some(0.1)));
        p.push(chunk(10.0, &[1.0, 1.0, 1.0, 1.0, 1.0], Some(0.1)));
        assert_eq!(p.at(10.25), Some(v(5.0)));
    }

    proptest! {
        #[test]
        fn the_played_step_is_the_one_for_the_instant_or_nothing(
            stamp in 0.0f64..100.0,
            steps in prop::collection::vec(-2.0f64..2.0, 1..12),
            dt in -0.05f64..2.0,
        ) {
            let mut p = ChunkPlayer::default();
            let c = chunk(stamp, &steps, None);
            p.push(c.clone());
            let now = stamp + dt;
            let got = p.at(now);
            let k = ((now - stamp) / 0.1 + 1e-9).floor().max(0.0) as usize;
            prop_assert_eq!(got, steps.get(k).map(|&x| v(x)));
            if c.ended(now) {
                prop_assert!(got.is_none());
            }
        }
    }
}

//! The camera as the node receives it: rate, and frames evidently lost.
//!
//! Owns a window of recent frame stamps (the last `WINDOW`), the camera's
//! period (the median gap between consecutive stamps), and the frames that
//! never arrived (a gap of n periods means n - 1 frames lost), like
//! diagnostic_updater's frequency status. A loss is reported once, with the
//! likely cause, and again only after `REWARN` of no loss: an operator gets
//! one line, not one a second. It knows nothing of ROS; the shell passes the
//! arrival instant, the frame's stamp and its size.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::clock_jump::FORWARD_S;

/// How far back the rate and the losses are counted.
pub const WINDOW: Duration = Duration::from_secs(5);
/// A loss is said again only after this long without one.
pub const REWARN: Duration = Duration::from_secs(60);
/// Fast DDS's built-in shared-memory segment: larger raw frames fall back to UDP fragments.
pub const FASTDDS_DEFAULT_SHM_BYTES: usize = 512 * 1024;

/// What the monitor knows of the transport, for naming the likely cause.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transport {
    /// `sensor_msgs/Image` (raw) rather than compressed.
    pub raw: bool,
    /// The Fast DDS profile the node runs with (`FASTRTPS_DEFAULT_PROFILES_FILE`), if any.
    pub dds_profile: Option<String>,
}

/// The camera over the last window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CameraReport {
    /// Frames received per second.
    pub rate_hz: f64,
    /// The camera's own rate, from its stamps (0 until known).
    pub camera_hz: f64,
    pub received: usize,
    /// Frames lost in the window, and since start.
    pub lost: usize,
    pub lost_total: u64,
    /// Bytes of the last frame.
    pub frame_bytes: usize,
}

#[derive(Debug, Default)]
pub struct CameraMonitor {
    transport: Transport,
    /// (arrival, stamp, frames lost just before it)
    frames: VecDeque<(Instant, f64, usize)>,
    lost_total: u64,
    frame_bytes: usize,
    last_loss: Option<Instant>,
    warned: bool,
}

impl CameraMonitor {
    pub fn new(transport: Transport) -> Self {
        Self { transport, ..Default::default() }
    }

    /// A frame arrived; returns the warning to log when this is the first
    /// loss in a while.
    pub fn frame(&mut self, arrived: Instant, stamp_s: Option<f64>, bytes: usize) -> Option<String> {
        self.frame_bytes = bytes;
        self.trim(arrived);
        let stamp = stamp_s?;
        // A stamp that goes back (a restarted camera, a bag looping) or runs
        // ahead of the time that passed (a clock stepped forward) is a new
        // timeline, not lost frames: it starts the window again.
        if self.frames.back().is_some_and(|&(at, prev, _)| {
            stamp < prev || stamp - prev > arrived.saturating_duration_since(at).as_secs_f64() + FORWARD_S
        }) {
            self.frames.clear();
        }
        let period = self.period();
        let lost = match (self.frames.back(), period) {
            (Some(&(_, prev, _)), Some(p)) if stamp - prev > 1.5 * p => ((stamp - prev) / p).round() as usize - 1,
            _ => 0,
        };
        self.frames.push_back((arrived, stamp, lost));
        if lost == 0 {
            return None;
        }
        self.lost_total += lost as u64;
        let quiet = self.last_loss.is_none_or(|at| arrived.duration_since(at) > REWARN);
        self.last_loss = Some(arrived);
        if self.warned && !quiet {
            return None;
        }
        self.warned = true;
        Some(format!(
            "camera frames are being lost: {lost} missing before the frame stamped {stamp:.3} (the camera sends \
             every {:.0} ms); {}",
            period.unwrap_or_default() * 1e3,
            self.likely_cause()
        ))
    }

    fn likely_cause(&self) -> String {
        match (&self.transport.dds_profile, self.transport.raw && self.frame_bytes > FASTDDS_DEFAULT_SHM_BYTES) {
            (None, true) => format!(
                "raw frames of {} KB are larger than Fast DDS's built-in 512 KB shared-memory segment, fall back \
                 to UDP fragments and are dropped without a word on a best-effort topic: run the node and the \
                 camera driver with config/fastdds_shm.xml (the launch file's dds_profile; \
                 FASTRTPS_DEFAULT_PROFILES_FILE for a driver started elsewhere)",
                self.frame_bytes / 1024
            ),
            (Some(p), _) => format!(
                "the transport profile {p} is in use: check that the camera driver's process uses it too, and the \
                 driver's and this machine's load"
            ),
            (None, false) => "the camera driver, the network or this machine's load drops them".into(),
        }
    }

    fn trim(&mut self, now: Instant) {
        while self.frames.front().is_some_and(|&(at, _, _)| now.duration_since(at) > WINDOW) {
            self.frames.pop_front();
        }
    }

    /// The median gap between consecutive stamps, from at least 4 gaps.
    fn period(&self) -> Option<f64> {
        let mut gaps: Vec<f64> =
            self.frames.iter().zip(self.frames.iter().skip(1)).map(|(a, b)| b.1 - a.1).filter(|g| *g > 0.0).collect();
        if gaps.len() < 4 {
            return None;
        }
        gaps.sort_by(f64::total_cmp);
        Some(gaps[gaps.len() / 2])
    }

    pub fn report(&mut self, now: Instant) -> CameraReport {
        self.trim(now);
        let received = self.frames.len();
        let rate_hz = match (self.frames.front(), self.frames.back()) {
            (Some(a), Some(b)) if received > 1 && b.0 > a.0 => {
                (received - 1) as f64 / b.0.duration_since(a.0).as_secs_f64()
            }
            _ => 0.0,
        };
        CameraReport {
            rate_hz,
            camera_hz: self.period().map_or(0.0, |p| 1.0 / p),
            received,
            lost: self.frames.iter().map(|f| f.2).sum(),
            lost_total: self.lost_total,
            frame_bytes: self.frame_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn feed(m: &mut CameraMonitor, t0: Instant, stamps: impl IntoIterator<Item = u32>, bytes: usize) -> Vec<String> {
        stamps.into_iter().filter_map(|k| m.frame(t0 + k * 33 * MS + 2 * MS, Some(k as f64 * 0.033), bytes)).collect()
    }

    #[test]
    fn a_steady_camera_loses_nothing_and_reports_its_rate() {
        let t0 = Instant::now();
        let mut m = CameraMonitor::new(Transport { raw: true, dds_profile: None });
        assert!(feed(&mut m, t0, 0..60, 900_000).is_empty());
        let r = m.report(t0 + 60 * 33 * MS);
        assert_eq!((r.lost, r.lost_total), (0, 0));
        assert!((r.camera_hz - 30.3).abs() < 0.5 && (r.rate_hz - 30.3).abs() < 0.5, "{r:?}");
    }

    #[test]
    fn gaps_in_the_stamps_count_as_lost_frames_and_warn_once_naming_the_shared_memory() {
        let t0 = Instant::now();
        let mut m = CameraMonitor::new(Transport { raw: true, dds_profile: None });
        // Every third frame missing, 640x480 rgb8 (900 KB).
        let stamps = (0..90).filter(|k| k % 3 != 2);
        let warnings = feed(&mut m, t0, stamps, 921_600);
        assert_eq!(warnings.len(), 1, "one line, not one a second: {warnings:?}");
        assert!(warnings[0].contains("512 KB") && warnings[0].contains("fastdds_shm.xml"), "{}", warnings[0]);
        let r = m.report(t0 + 90 * 33 * MS);
        assert!(r.lost_total >= 25, "{r:?}");
        assert!(r.lost > 0 && r.received > 0);
    }

    #[test]
    fn with_a_profile_or_small_frames_the_cause_is_not_the_segment() {
        let t0 = Instant::now();
        let mut m = CameraMonitor::new(Transport { raw: true, dds_profile: Some("/x/fastdds_shm.xml".into()) });
        let w = feed(&mut m, t0, (0..30).filter(|k| *k != 20), 921_600);
        assert!(w.len() == 1 && w[0].contains("/x/fastdds_shm.xml") && !w[0].contains("512 KB"), "{w:?}");
        let mut m = CameraMonitor::new(Transport { raw: false, dds_profile: None });
        let w = feed(&mut m, t0, (0..30).filter(|k| *k != 20), 40_000);
        assert!(w.len() == 1 && !w[0].contains("512 KB"), "{w:?}");
    }

    #[test]
    fn a_camera_that_restarts_is_not_a_loss() {
        let t0 = Instant::now();
        let mut m = CameraMonitor::new(Transport::default());
        feed(&mut m, t0, 0..20, 1000);
        // Stamps start again from zero: a new window, nothing lost.
        let again: Vec<String> =
            (0..20).filter_map(|k| m.frame(t0 + (700 + k * 33) * MS, Some(k as f64 * 0.033), 1000)).collect();
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(m.report(t0 + 1400 * MS).lost_total, 0);
    }

    #[test]
    fn stamps_that_jump_ahead_of_the_time_that_passed_are_not_a_loss() {
        // A clock stepped forward by 990 s: not 30,000 lost frames.
        let t0 = Instant::now();
        let mut m = CameraMonitor::new(Transport::default());
        feed(&mut m, t0, 0..20, 1000);
        let later: Vec<String> =
            (20..40).filter_map(|k| m.frame(t0 + (k * 33 + 2) * MS, Some(990.0 + k as f64 * 0.033), 1000)).collect();
        assert!(later.is_empty(), "{later:?}");
        assert_eq!(m.report(t0 + 1400 * MS).lost_total, 0);
    }
}

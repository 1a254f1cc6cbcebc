//! A recorded episode as the evaluation replays it: instructions and camera
//! frames in arrival order, each frame with the action that really drove.
//!
//! Owns the event types every episode reader yields (`team` for the model
//! team's HDF5 files, `driven` for rosbag2 recordings), and how a source is
//! recognised from its path. It decides nothing about the frames: replaying
//! them is the evaluation's, and it never talks to a robot.

use std::path::Path;

/// A camera frame's bytes, as a ROS message carries them.
#[derive(Debug, Clone, PartialEq)]
pub enum Picture {
    /// `sensor_msgs/Image`.
    Raw { width: u32, height: u32, step: u32, encoding: String },
    /// `sensor_msgs/CompressedImage`.
    Compressed { format: String },
}

/// One camera frame and what drove the robot after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// When it arrived (seconds: the recording's clock).
    pub time_s: f64,
    /// Its header stamp (`None`: unstamped).
    pub stamp_s: Option<f64>,
    pub picture: Picture,
    pub data: Vec<u8>,
    /// The action that drove after this frame: linear.x, linear.y, angular.z.
    pub action: [f64; 3],
    /// The recording's label for it (the team's `action_event_types`), if any.
    pub label: Option<String>,
}

/// What happens next in an episode.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Instruction { time_s: f64, text: String },
    Frame(Frame),
}

/// The kinds of recording an episode is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The model team's HDF5 episode file.
    Team,
    /// A rosbag2 recording (MCAP or sqlite3 storage).
    Bag,
}

impl Format {
    /// The kind of recording at `path`: `.h5`/`.hdf5` files are the team's,
    /// `.mcap`/`.db3` files and rosbag2 directories are bags.
    pub fn of(path: &Path) -> Option<Format> {
        if path.is_dir() {
            return Some(Format::Bag);
        }
        match path.extension()?.to_str()? {
            "h5" | "hdf5" => Some(Format::Team),
            "mcap" | "db3" => Some(Format::Bag),
            _ => None,
        }
    }
}

//! Recordings of the robot, read without ROS: rosbag2 bags and the model team's episode files.
//!
//! `bag` walks a recording's messages (MCAP or sqlite3 storage, in log order,
//! whatever their type), `cdr` reads a message's fields from its CDR payload,
//! `stats` decodes the node's own `~/inference_stats`. `episode` is what the
//! evaluation replays, read from the team's HDF5 files (`team`) or from a
//! bag's camera, instruction and command topics (`driven`). Shared by the
//! report tool and the evaluation tool; it reads files and talks to no robot.

pub mod bag;
pub mod cdr;
pub mod driven;
pub mod episode;
pub mod stats;
pub mod team;

use std::fmt;

/// Why a recording could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The file or directory cannot be read as a recording.
    Input(String),
    /// A topic's recorded definition is not the one expected.
    Schema(String),
    /// A payload does not decode.
    Decode(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(e) => write!(f, "cannot read the recording: {e}"),
            Error::Schema(e) => write!(f, "unexpected message definition: {e}"),
            Error::Decode(e) => write!(f, "corrupt message: {e}"),
        }
    }
}

impl Error {
    /// What is wrong, without the kind's prefix (for an error that names where it happened).
    pub fn detail(&self) -> &str {
        match self {
            Error::Input(e) | Error::Schema(e) | Error::Decode(e) => e,
        }
    }
}

impl std::error::Error for Error {}

//! Recordings of the robot, read without ROS: rosbag2 bags today.
//!
//! `bag` walks a recording's messages (MCAP storage, in log order, whatever
//! their type), `cdr` reads a message's fields from its CDR payload, `stats`
//! decodes the node's own `~/inference_stats`. Shared by the report tool and
//! the evaluation tool; it reads files and talks to no robot.

pub mod bag;
pub mod cdr;
pub mod stats;

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
            Error::Input(e) => write!(f, "cannot read the bag: {e}"),
            Error::Schema(e) => write!(f, "unexpected message definition: {e}"),
            Error::Decode(e) => write!(f, "corrupt message: {e}"),
        }
    }
}

impl std::error::Error for Error {}

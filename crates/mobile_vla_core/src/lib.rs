//! Pure, synchronous decision logic of the mobile_vla node.
//!
//! Nothing in this crate talks to ROS, ONNX Runtime or the robot: every module
//! is plain data in, plain data out, driven by unit tests. The node's async
//! shell moves messages between rcl and these cores.

pub mod camera_rate;
pub mod chunk;
pub mod clock_jump;
pub mod command_mux;
pub mod config;
pub mod control;
pub mod inbox;
pub mod lifecycle;
pub mod limits;
pub mod params;
pub mod preprocess;
pub mod run_tracker;
pub mod throttle;
pub mod watchdog;

//! Pure, synchronous decisions of the mobile_vla node, and the words they share.
//!
//! Nothing in this crate talks to ROS, ONNX Runtime, threads or the robot,
//! and none of it is foreign code: every module is plain data in, plain data
//! out (it logs its decisions through `tracing`), driven by unit tests.
//! `vocab` holds the shared words; `config` and `params` the parameters;
//! `control` every decision between the inputs and `cmd_vel`, from the
//! `watchdog`, `command_mux`, `limits`, `chunk` and `clock_jump` cores;
//! `pipeline` routes frames and tasks to the policies' workers as the control
//! core decides; `lifecycle` is the managed-node state machine. The node's
//! shell, and the evaluation tool, carry out what these decide.

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
pub mod pipeline;
pub mod run_tracker;
pub mod shadow;
pub mod throttle;
pub mod vocab;
pub mod watchdog;

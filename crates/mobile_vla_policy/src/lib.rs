//! Policies for mobile_vla: what a model is, what runs it, and a frame and an instruction into an [`Action`].
//!
//! `manifest` describes a policy's graphs by role, `contract` checks the real
//! graphs against it, `backend` is the seam to what runs a graph (`session`:
//! the local ONNX Runtime sessions, their providers and precompiled TensorRT
//! engines), `policy` feeds the stages a preprocessed frame, the tokens of
//! the instruction (`text`) and the recurrent state (`state`), and `action`
//! decodes the action output. `runner` is one policy's side of the pipeline,
//! frame by frame, without threads or ROS; `runtime` loads the configured
//! ONNX Runtime, `providers` decides and reports which execution provider
//! runs what, `engine` whether a precompiled engine still fits, `onnx_file`
//! reads a graph's input names without loading it, `inspect` writes the
//! tensors the node would feed. Nothing in this crate publishes to the robot:
//! an `Action` is a proposal that the control core may use.

pub mod action;
pub mod backend;
mod contract;
pub mod engine;
mod error;
pub mod inline;
pub mod inspect;
pub mod manifest;
pub mod onnx_file;
pub mod policy;
pub mod providers;
pub mod remote;
pub mod runner;
pub mod runtime;
pub mod session;
mod state;
pub mod text;
pub mod window;

pub use action::Action;
pub use error::PolicyError;
pub use ort::session::RunOptions;
pub use policy::Policy;

//! ONNX Runtime inference for mobile_vla.
//!
//! `runtime` loads the configured ONNX Runtime and says which one runs,
//! `inspect` writes the tensors the node would feed a policy (no model run),
//! `engine` decides whether a precompiled TensorRT engine still fits,
//! `onnx_file` reads a graph's input names without loading it,
//! `manifest` describes a policy's graph by role, `text` turns instructions
//! into token tensors, `providers` decides which execution provider runs a
//! model and reports it honestly, `policy` owns a loaded session and turns a
//! preprocessed frame into an [`Action`]. Nothing in this crate publishes to
//! the robot: an `Action` is a proposal that the node's command stage may use.

pub mod engine;
pub mod inspect;
pub mod manifest;
pub mod onnx_file;
pub mod policy;
pub mod providers;
pub mod runtime;
pub mod text;

pub use ort::session::RunOptions;
pub use policy::{Action, Policy};

use std::fmt;

/// Everything that can go wrong loading or running a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    /// libonnxruntime.so could not be loaded.
    Runtime(String),
    /// The manifest or a file it names is missing or invalid.
    Manifest(String),
    /// The graph's inputs or outputs do not match the manifest.
    Contract(String),
    /// The required execution provider is not available.
    ProviderUnavailable(String),
    /// Session creation failed.
    Load(String),
    Tokenize(String),
    /// ONNX Runtime returned an error running the graph.
    Run(String),
    /// The action contains NaN or infinity.
    NonFinite(Vec<f32>),
    /// The run was cancelled (through ONNX Runtime's run options) after the hard timeout.
    Cancelled,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Runtime(e) => write!(f, "ONNX Runtime unavailable: {e}"),
            PolicyError::Manifest(e) => write!(f, "bad model manifest: {e}"),
            PolicyError::Contract(e) => write!(f, "model does not match its manifest: {e}"),
            PolicyError::ProviderUnavailable(e) => write!(f, "required execution provider unavailable: {e}"),
            PolicyError::Load(e) => write!(f, "model failed to load: {e}"),
            PolicyError::Tokenize(e) => write!(f, "tokenizer failed: {e}"),
            PolicyError::Run(e) => write!(f, "inference failed: {e}"),
            PolicyError::NonFinite(v) => write!(f, "model output is not finite: {v:?}"),
            PolicyError::Cancelled => write!(f, "run cancelled after the hard timeout"),
        }
    }
}

impl std::error::Error for PolicyError {}

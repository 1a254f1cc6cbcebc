//! Everything that can go wrong loading or running a policy, as one type.

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
    /// The inference server of a remote stage could not be reached, or did
    /// not answer within its deadline, or does not serve the model (now).
    Unreachable(String),
    /// The inference server answered with an error or with outputs that do
    /// not match what the model declares.
    Remote(String),
    /// An output the node reads (the action, or a recurrent state) contains
    /// NaN or infinity: its name, and for the action, the offending step.
    NonFinite {
        output: String,
        values: Vec<f32>,
    },
    /// The run was cancelled (through ONNX Runtime's run options) after the hard timeout.
    Cancelled,
    /// The frame joined its windows, which wait for T frames before the policy runs on them.
    WindowFilling {
        have: usize,
        need: usize,
    },
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
            PolicyError::Unreachable(e) => write!(f, "policy server unreachable: {e}"),
            PolicyError::Remote(e) => write!(f, "policy server failed: {e}"),
            PolicyError::NonFinite { output, values } if values.is_empty() => {
                write!(f, "model output '{output}' is not finite")
            }
            PolicyError::NonFinite { output, values } => write!(f, "model output '{output}' is not finite: {values:?}"),
            PolicyError::Cancelled => write!(f, "run cancelled after the hard timeout"),
            PolicyError::WindowFilling { have, need } => {
                write!(f, "the frame window is filling ({have} of {need} frames)")
            }
        }
    }
}

impl std::error::Error for PolicyError {}

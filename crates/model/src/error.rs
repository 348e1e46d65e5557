//! Errors of the model crate.

use thiserror::Error;

/// What went wrong while building, converting or loading a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The checkpoint does not match the network: every missing, unexpected and mis-shaped
    /// parameter name is listed.
    #[error(
        "checkpoint does not match {model}: {} missing {missing:?}, {} unexpected {unexpected:?}, {} mismatched {mismatched:?}",
        missing.len(),
        unexpected.len(),
        mismatched.len()
    )]
    Checkpoint {
        /// The network being loaded (e.g. `resnet18`).
        model: String,
        /// Names the network needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Names in the checkpoint the network has no parameter for.
        unexpected: Vec<String>,
        /// `name: expected [..], found [..]` for each shape mismatch.
        mismatched: Vec<String>,
    },
    /// A configuration value is out of range.
    #[error("invalid model configuration: {field} = {value}: {reason}")]
    Config {
        /// The configuration field at fault.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The stem convolution cannot be converted to grey input.
    #[error(
        "cannot convert stem `{name}` to one input channel: it has {channels} input channels, expected 3"
    )]
    Stem {
        /// Parameter name of the stem convolution.
        name: &'static str,
        /// Its number of input channels.
        channels: usize,
    },
    /// A tensor's values could not be read back from the device.
    #[error("cannot read tensor `{name}` back from the device: {reason}")]
    TensorData {
        /// The parameter name.
        name: String,
        /// The backend's message.
        reason: String,
    },
    /// A model package cannot be written, read or trusted.
    #[error("model package {path}: {reason}")]
    Package {
        /// The package file (empty when not yet written).
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A pretrained-weights file cannot be read or does not fit its architecture.
    #[error("pretrained weights {path}: {reason}")]
    Weights {
        /// The weights file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An input image cannot be used.
    #[error("{0}")]
    Input(String),
}

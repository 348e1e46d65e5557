//! Errors of training.

use std::path::PathBuf;

use thiserror::Error;

/// What stopped a training run.
#[derive(Debug, Error)]
pub enum TrainError {
    /// A configuration value is invalid.
    #[error("invalid training configuration: {field}: {reason}")]
    Config {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The split manifest cannot be used for training.
    #[error("split manifest {path}: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request names data that does not fit the model or cannot be evaluated.
    #[error("{what}: {reason}")]
    Request {
        /// The argument or file at fault.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// Pretrained weights are missing or do not fit.
    #[error("pretrained weights: {0}")]
    Weights(String),
    /// A checkpoint cannot be written or resumed.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The requested device is not available in this build.
    #[error("device `{0}` is not available: {1}")]
    Device(String, String),
    /// Loss or metrics became non-finite.
    #[error("training diverged at {0}: the loss is not finite (lower the learning rate?)")]
    Diverged(String),
    /// Image loading failed.
    #[error(transparent)]
    Loader(#[from] covidct_data::LoaderError),
    /// Data error.
    #[error(transparent)]
    Data(#[from] covidct_data::DataError),
    /// A shared helper failed (an atomic write).
    #[error(transparent)]
    Common(#[from] covidct_common::CommonError),
    /// Model error.
    #[error(transparent)]
    Model(#[from] covidct_model::ModelError),
    /// The tracking server or model registry failed.
    #[error(transparent)]
    Tracking(#[from] covidct_tracking::TrackingError),
    /// An evaluation step failed.
    #[error(transparent)]
    Eval(#[from] covidct_evaluation::EvalError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

//! Errors of dataset handling; every one names the file, folder or field at fault.

use std::path::PathBuf;

use crate::problem::Problem;

/// Why a dataset operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A shared helper failed (an atomic write).
    #[error(transparent)]
    Common(#[from] covidct_common::CommonError),
    /// The dataset root is missing or not a folder.
    #[error("dataset folder {path}: {reason}")]
    Root {
        /// The folder given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The folder layout does not describe a classification dataset.
    #[error("dataset folder {path}: {reason}")]
    Layout {
        /// The folder at fault.
        path: PathBuf,
        /// What is wrong with its layout.
        reason: String,
    },
    /// Files that could not be used (without `--skip-invalid`).
    #[error("{} invalid file(s) in the dataset (use --skip-invalid to continue without them):\n{}", .0.len(), render_problems(.0))]
    InvalidFiles(Vec<Problem>),
    /// A manifest or user CSV is malformed or inconsistent.
    #[error("{path}: {reason}")]
    Manifest {
        /// The CSV file at fault.
        path: PathBuf,
        /// Row and field at fault, and why.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid setting `{field}`: {reason}")]
    Config {
        /// The setting at fault.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    const SHOWN: usize = 20;
    let mut text: Vec<String> = problems
        .iter()
        .take(SHOWN)
        .map(|p| format!("  {}: {}", p.path, p.reason))
        .collect();
    if problems.len() > SHOWN {
        text.push(format!("  … and {} more", problems.len() - SHOWN));
    }
    text.join("\n")
}

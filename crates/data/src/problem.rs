//! A file of a dataset that could not be used.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The file or folder at fault, as the user would type it.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    /// A problem with a path on disk.
    pub fn new(path: &Path, reason: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

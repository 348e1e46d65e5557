//! The error of the shared helpers.

use std::path::PathBuf;

/// What can go wrong in a shared helper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommonError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    IoAt {
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A file's SHA-256 is not the one expected.
    #[error(
        "{}: SHA-256 mismatch: expected {expected}, got {actual} (the file is corrupt or not the \
         one expected; delete it and obtain it again)",
        path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The expected digest (lowercase hex).
        expected: String,
        /// The digest of the file (lowercase hex).
        actual: String,
    },
}

impl CommonError {
    /// An I/O error on `path`.
    pub(crate) fn io_at(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::IoAt {
            path: path.to_path_buf(),
            source,
        }
    }
}

//! Why decoding failed: the public [`DecodeError`], and the crate's [`Failure`] before a path is
//! attached.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::options::DecodeOptions;

/// The broad class of a [`DecodeError`], for callers that count or route failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The file could not be read: not found, permission denied, a directory, read failure.
    Io,
    /// The file is empty (0 bytes).
    Empty,
    /// The content is not any supported image format (text, an archive, random bytes).
    NotAnImage,
    /// A recognised format, or a variant of one, that this decoder does not handle.
    Unsupported,
    /// The content is truncated or corrupt.
    Corrupt,
    /// The image is larger than [`DecodeOptions::max_pixels`] allows.
    TooLarge,
    /// The [`DecodeOptions`] themselves are invalid (e.g. a non-positive DICOM window width).
    InvalidOptions,
}

impl DecodeErrorKind {
    /// The stable code a client sees: `image_too_large`, `unsupported_image`, `empty_image`,
    /// or `invalid_image` for every other kind.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooLarge => "image_too_large",
            Self::Unsupported => "unsupported_image",
            Self::Empty => "empty_image",
            _ => "invalid_image",
        }
    }
}

/// Why a file could not be decoded; always names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct DecodeError {
    /// The file at fault (`<memory>` for in-memory input).
    pub path: PathBuf,
    /// The class of failure.
    pub kind: DecodeErrorKind,
    /// Human-readable reason.
    pub reason: String,
}

impl DecodeError {
    /// Builds an error for `path`.
    pub fn new(path: impl Into<PathBuf>, kind: DecodeErrorKind, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            kind,
            reason: reason.into(),
        }
    }
}

/// Crate-internal alias: a failure not yet attached to a path.
pub(crate) type FailureKind = DecodeErrorKind;

/// A decoding failure before the path is attached.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The class of failure.
    pub(crate) kind: FailureKind,
    /// Human-readable reason.
    pub(crate) reason: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }

    /// The error, now that the file is known.
    pub(crate) fn at(self, path: &Path) -> DecodeError {
        DecodeError::new(path, self.kind, self.reason)
    }
}

/// Formats an error with its chain of sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Refuses empty images and images over the pixel budget; called with header dimensions only.
pub(crate) fn check_pixel_count(
    width: u32,
    height: u32,
    options: &DecodeOptions,
) -> Result<(), Failure> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 {
        return Err(Failure::new(
            FailureKind::Corrupt,
            format!("image is {width}×{height}: it has no pixels"),
        ));
    }
    if pixels > options.max_pixels {
        return Err(Failure::new(
            FailureKind::TooLarge,
            format!(
                "image is {width}×{height} = {pixels} pixels, over the limit of {} (raise \
                 --max-pixels to allow it)",
                options.max_pixels
            ),
        ));
    }
    Ok(())
}

//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a checkpoint.
///
/// Each message names the file at fault and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// The file could not be opened or read.
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The output file (or its temporary sibling) could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The file is none of the supported formats.
    #[error(
        "{} is not a supported checkpoint: {reason} (expected a PyTorch .pth/.pt state dict in \
         zip format (torch >= 1.6) or legacy format, or a .safetensors file)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// The pickle names a Python global that is not on the allow-list; nothing was executed.
    #[error(
        "{}: refusing to load: {part} references the Python global '{global}' (at byte {offset}), \
         which is not allowed; only plain tensor state dicts can be read (torch._utils \
         tensor/parameter rebuilders, torch.*Storage types and collections.OrderedDict). Save the \
         model with torch.save(model.state_dict(), path) instead",
        path.display()
    )]
    ForbiddenGlobal {
        /// The file.
        path: PathBuf,
        /// Which pickle inside the file (e.g. `data.pkl`, `object pickle`).
        part: String,
        /// The global, as `module.name`.
        global: String,
        /// Byte offset of the opcode within that pickle.
        offset: usize,
    },

    /// A pickle inside the file is malformed or uses something this reader does not support.
    #[error("{}: malformed pickle ({part}, byte {offset}): {reason}", path.display())]
    Pickle {
        /// The file.
        path: PathBuf,
        /// Which pickle inside the file.
        part: String,
        /// Byte offset of the failing opcode within that pickle.
        offset: usize,
        /// What is wrong.
        reason: String,
    },

    /// The file's container (zip archive, legacy layout, safetensors header) is malformed.
    #[error("{}: malformed checkpoint: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// One tensor's description does not fit its data.
    #[error("{}: tensor '{name}': {reason}", path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name in the state dict.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// The pickle holds something other than a state dict of tensors.
    #[error("{}: no state dict of tensors found: {reason}", path.display())]
    NotAStateDict {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// A [`crate::Tensor`]'s shape does not match its number of values.
    #[error(
        "tensor '{name}' has shape {shape:?}, which needs {expected} values, but holds {actual}"
    )]
    ShapeMismatch {
        /// The tensor's name (empty when not yet named).
        name: String,
        /// The shape.
        shape: Vec<usize>,
        /// The number of values the shape needs (saturated at `usize::MAX` on overflow).
        expected: usize,
        /// The number of values held.
        actual: usize,
    },
}

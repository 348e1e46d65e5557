//! Reading and writing safetensors files.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use ::safetensors::tensor::{Dtype, SafeTensors, View};

use crate::checkpoint::{Checkpoint, CheckpointFormat, DType, SkippedEntry, Tensor};
use crate::error::WeightsError;

/// `__metadata__` key holding the tensor names in checkpoint order, as a JSON array (safetensors
/// itself stores tensors sorted, not in insertion order).
pub(crate) const ORDER_KEY: &str = "covidct.tensor_order";

/// An f32 tensor borrowed for serialisation.
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

/// The checkpoint's f32 tensors as safetensors bytes (dtype F32, tensor order kept in the
/// header's `__metadata__`); what [`save_safetensors`] writes.
pub fn safetensors_bytes(checkpoint: &Checkpoint) -> Result<Vec<u8>, WeightsError> {
    encode(checkpoint, Path::new("<memory>"))
}

fn encode(checkpoint: &Checkpoint, path: &Path) -> Result<Vec<u8>, WeightsError> {
    for (name, tensor) in checkpoint.iter() {
        tensor.check(name)?;
    }
    let names: Vec<&str> = checkpoint.names().collect();
    let order = serde_json::to_string(&names).map_err(|e| WeightsError::Malformed {
        path: path.to_path_buf(),
        reason: format!("cannot encode the tensor order: {e}"),
    })?;
    // One entry only: the header's metadata is a hash map, and a single key keeps the bytes
    // (and so any checksum of them) identical from run to run.
    let metadata = HashMap::from([(ORDER_KEY.to_owned(), order)]);
    let views = checkpoint.iter().map(|(n, t)| (n, F32View(t)));
    ::safetensors::serialize(views, Some(metadata)).map_err(|e| WeightsError::Malformed {
        path: path.to_path_buf(),
        reason: format!("cannot encode as safetensors: {e}"),
    })
}

/// Writes the checkpoint's f32 tensors to `path` as safetensors (dtype F32), atomically: into a
/// temporary file in the same folder, flushed to disk, then renamed over `path`. The tensor order
/// is kept in the header's `__metadata__`, so [`crate::load_checkpoint`] restores it. Skipped
/// entries are not written.
pub fn save_safetensors(
    checkpoint: &Checkpoint,
    path: impl AsRef<Path>,
) -> Result<(), WeightsError> {
    let path = path.as_ref();
    let buffer = encode(checkpoint, path)?;
    let write_err = |source| WeightsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".covidct-weights-")
        .suffix(".tmp")
        .tempfile_in(parent)
        .map_err(write_err)?;
    tmp.write_all(&buffer).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    tracing::info!(
        path = %path.display(),
        tensors = checkpoint.len(),
        bytes = buffer.len(),
        "saved safetensors"
    );
    Ok(())
}

/// Reads a safetensors file held in memory.
pub(crate) fn load(bytes: &[u8], path: &Path) -> Result<Checkpoint, WeightsError> {
    let malformed = |reason: String| WeightsError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| malformed(format!("invalid safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| malformed(format!("invalid safetensors file: {e}")))?;

    let mut names = metadata.offset_keys();
    let recorded: Option<Vec<String>> = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(ORDER_KEY))
        .and_then(|s| serde_json::from_str(s).ok());
    if let Some(recorded) = recorded {
        let set: HashSet<&String> = names.iter().collect();
        let same = recorded.len() == names.len()
            && recorded.iter().collect::<HashSet<_>>().len() == recorded.len()
            && recorded.iter().all(|n| set.contains(n));
        if same {
            names = recorded;
        } else {
            tracing::warn!(path = %path.display(), "ignoring a tensor order that does not match the file's tensors");
        }
    }

    let mut checkpoint = Checkpoint::with_format(CheckpointFormat::SafeTensors);
    for name in names {
        let view = file
            .tensor(&name)
            .map_err(|e| malformed(format!("tensor '{name}': {e}")))?;
        let shape = view.shape().to_vec();
        let b = view.data();
        let (dtype, data): (DType, Option<Vec<f32>>) = match view.dtype() {
            Dtype::F32 => (
                DType::F32,
                Some(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
            ),
            Dtype::F64 => (
                DType::F64,
                Some(
                    b.chunks_exact(8)
                        .map(|c| {
                            f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                                as f32
                        })
                        .collect(),
                ),
            ),
            Dtype::F16 => (
                DType::F16,
                Some(
                    b.chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                ),
            ),
            Dtype::BF16 => (
                DType::BF16,
                Some(
                    b.chunks_exact(2)
                        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                ),
            ),
            Dtype::I64 => (DType::I64, None),
            Dtype::I32 => (DType::I32, None),
            Dtype::I16 => (DType::I16, None),
            Dtype::I8 => (DType::I8, None),
            Dtype::U8 => (DType::U8, None),
            Dtype::BOOL => (DType::Bool, None),
            other => {
                return Err(WeightsError::Tensor {
                    path: path.to_path_buf(),
                    name,
                    reason: format!("unsupported safetensors dtype {other:?}"),
                });
            }
        };
        match data {
            Some(data) => {
                let tensor = Tensor { shape, data };
                tensor.check(&name)?;
                checkpoint.insert_typed(name, tensor, dtype);
            }
            None => checkpoint.push_skipped(SkippedEntry { name, dtype, shape }),
        }
    }
    if checkpoint.is_empty() && checkpoint.skipped().is_empty() {
        return Err(WeightsError::NotAStateDict {
            path: path.to_path_buf(),
            reason: "the safetensors file holds no tensors".to_owned(),
        });
    }
    Ok(checkpoint)
}

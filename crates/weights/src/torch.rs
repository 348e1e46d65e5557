//! PyTorch checkpoints: the zip format (torch ≥ 1.6) and the legacy format.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use zip::ZipArchive;

use crate::checkpoint::{Checkpoint, CheckpointFormat, DType, SkippedEntry, Tensor};
use crate::error::WeightsError;
use crate::pickle::{self, Obj, Pickle, PickleError, StorageRef, TensorRef, Value};

/// First pickle of a legacy file.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
/// The only legacy protocol version torch ever wrote.
const LEGACY_PROTOCOL: i128 = 1001;
/// Keys a state dict may be nested under in a training checkpoint, in order of preference.
const NESTED_KEYS: [&str; 3] = ["state_dict", "model_state_dict", "model"];
/// Deflate cannot expand data by more than about 1032:1; a storage claiming more than this
/// many times the archive's size is refused before anything is read.
const MAX_EXPANSION: usize = 1100;

fn malformed(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn parse_pickle(data: &[u8], path: &Path, part: &str) -> Result<Pickle, WeightsError> {
    pickle::parse(data).map_err(|e| match e {
        PickleError::Forbidden { global, offset } => WeightsError::ForbiddenGlobal {
            path: path.to_path_buf(),
            part: part.to_owned(),
            global,
            offset,
        },
        PickleError::Malformed { offset, reason } => WeightsError::Pickle {
            path: path.to_path_buf(),
            part: part.to_owned(),
            offset,
            reason,
        },
    })
}

/// Reads a zip-format checkpoint.
pub(crate) fn load_zip(bytes: &[u8], path: &Path) -> Result<Checkpoint, WeightsError> {
    let mut zip = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| malformed(path, format!("not a readable zip archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.map(|n| n.into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| malformed(path, format!("unreadable zip entry name: {e}")))?;
    let mut pickles: Vec<&String> = names
        .iter()
        .filter(|n| n.as_str() == "data.pkl" || n.ends_with("/data.pkl"))
        .collect();
    pickles.sort_by_key(|n| (n.matches('/').count(), n.len()));
    let Some(pkl_name) = pickles.first().map(|s| s.to_string()) else {
        let torchscript = names.iter().any(|n| n.ends_with("constants.pkl"));
        let mut shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        if names.len() > 5 {
            shown.push("…");
        }
        return Err(WeightsError::UnknownFormat {
            path: path.to_path_buf(),
            reason: if torchscript {
                "it is a TorchScript archive (torch.jit.save); save the model's state_dict with \
                 torch.save instead"
                    .to_owned()
            } else {
                format!(
                    "it is a zip archive without a data.pkl entry (entries: {})",
                    shown.join(", ")
                )
            },
        });
    };
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    if names
        .iter()
        .any(|n| n.starts_with(prefix) && n[prefix.len()..].starts_with("code/"))
    {
        return Err(WeightsError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "it is a TorchScript archive (torch.jit.save); save the model's state_dict \
                     with torch.save instead"
                .to_owned(),
        });
    }
    let byteorder_name = format!("{prefix}byteorder");
    if names.contains(&byteorder_name) {
        let order = read_entry(&mut zip, &byteorder_name, 16, path)?;
        match order.as_slice() {
            b"little" => {}
            b"big" => {
                return Err(malformed(
                    path,
                    "the checkpoint was saved on a big-endian machine, which is not supported",
                ));
            }
            other => {
                return Err(malformed(
                    path,
                    format!(
                        "{byteorder_name} says '{}', expected 'little'",
                        String::from_utf8_lossy(other)
                    ),
                ));
            }
        }
    }
    let pkl_size = zip
        .by_name(&pkl_name)
        .map(|e| e.size())
        .map_err(|e| malformed(path, format!("cannot read {pkl_name}: {e}")))?;
    let pkl_limit = bytes.len().saturating_mul(MAX_EXPANSION);
    let pkl_size = usize::try_from(pkl_size)
        .ok()
        .filter(|&n| n <= pkl_limit)
        .ok_or_else(|| malformed(path, format!("{pkl_name} claims an impossible size")))?;
    let data = read_entry(&mut zip, &pkl_name, pkl_size, path)?;
    let pickle = parse_pickle(&data, path, &pkl_name)?;
    let entries = state_dict(&pickle, path)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, tensor) in &entries {
        let key = &tensor.storage.key;
        if storages.contains_key(key) {
            continue;
        }
        let entry = format!("{prefix}data/{key}");
        let needed = storage_bytes(tensor, path, name)?;
        if needed > bytes.len().saturating_mul(MAX_EXPANSION) {
            return Err(tensor_err(
                path,
                name,
                format!(
                    "its storage claims {needed} bytes, more than the archive could hold \
                     (the checkpoint is corrupt)"
                ),
            ));
        }
        if !names.contains(&entry) {
            return Err(tensor_err(
                path,
                name,
                format!("its storage entry {entry} is missing from the archive"),
            ));
        }
        let data = read_entry(&mut zip, &entry, needed, path)?;
        if data.len() < needed {
            return Err(tensor_err(
                path,
                name,
                format!(
                    "its storage {entry} holds {} bytes, but {} elements of {} need {needed} \
                     (the file is truncated or corrupt)",
                    data.len(),
                    tensor.storage.numel,
                    tensor.storage.dtype
                ),
            ));
        }
        storages.insert(key.clone(), data);
    }
    let storages: HashMap<&str, &[u8]> = storages
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    build(CheckpointFormat::TorchZip, entries, &storages, path)
}

/// Reads at most `limit` bytes of the zip entry `name`.
fn read_entry(
    zip: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limit: usize,
    path: &Path,
) -> Result<Vec<u8>, WeightsError> {
    let entry = zip
        .by_name(name)
        .map_err(|e| malformed(path, format!("cannot read {name}: {e}")))?;
    let mut data = Vec::new();
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    entry
        .take(limit)
        .read_to_end(&mut data)
        .map_err(|e| malformed(path, format!("cannot read {name}: {e}")))?;
    Ok(data)
}

/// Bytes of the root storage a tensor's storage reference declares.
fn storage_bytes(tensor: &TensorRef, path: &Path, name: &str) -> Result<usize, WeightsError> {
    tensor
        .storage
        .numel
        .checked_mul(tensor.storage.dtype.size())
        .ok_or_else(|| tensor_err(path, name, "its storage size overflows"))
}

fn tensor_err(path: &Path, name: &str, reason: impl Into<String>) -> WeightsError {
    WeightsError::Tensor {
        path: path.to_path_buf(),
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a legacy-format checkpoint.
pub(crate) fn load_legacy(bytes: &[u8], path: &Path) -> Result<Checkpoint, WeightsError> {
    let mut pos = 0usize;
    let mut next = |part: &str| -> Result<Pickle, WeightsError> {
        let rest = bytes.get(pos..).unwrap_or_default();
        let p = parse_pickle(rest, path, part)?;
        pos += p.len;
        Ok(p)
    };
    let magic = next("magic number").map_err(|e| match e {
        WeightsError::ForbiddenGlobal { .. } => e,
        _ => WeightsError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "it starts like a pickle but not like a PyTorch checkpoint".to_owned(),
        },
    })?;
    if !matches!(magic.root, Value::Int(LEGACY_MAGIC)) {
        return Err(WeightsError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "it is a pickle without PyTorch's magic number (wrong magic; not saved by \
                     torch.save)"
                .to_owned(),
        });
    }
    let protocol = next("protocol version")?;
    match protocol.root {
        Value::Int(LEGACY_PROTOCOL) => {}
        Value::Int(v) => {
            return Err(malformed(
                path,
                format!("unsupported legacy protocol version {v} (expected {LEGACY_PROTOCOL})"),
            ));
        }
        _ => return Err(malformed(path, "the protocol version is not an int")),
    }
    let sys_info = next("system info")?;
    if let Some(Obj::Dict(items)) = sys_info.obj(&sys_info.root) {
        let little = items
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .map(|(_, v)| v);
        if matches!(little, Some(Value::Bool(false))) {
            return Err(malformed(
                path,
                "the checkpoint was saved on a big-endian machine, which is not supported",
            ));
        }
    } else {
        return Err(malformed(path, "the system info pickle is not a dict"));
    }
    let object = next("object pickle")?;
    let keys_pickle = next("storage key list")?;
    let Some(Obj::List(key_values)) = keys_pickle.obj(&keys_pickle.root) else {
        return Err(malformed(path, "the storage key list is not a list"));
    };
    let entries = state_dict(&object, path)?;

    // Element type and size of every storage the object pickle references.
    let mut declared: HashMap<&str, (DType, usize)> = HashMap::new();
    for obj in &object.objects {
        if let Obj::Storage(s) = obj {
            let known = declared.entry(&s.key).or_insert((s.dtype, s.numel));
            if *known != (s.dtype, s.numel) {
                return Err(malformed(
                    path,
                    format!(
                        "storage '{}' is declared both as {} x {} and as {} x {}",
                        s.key, known.1, known.0, s.numel, s.dtype
                    ),
                ));
            }
        }
    }

    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for key in key_values {
        let Some(key) = key.as_str() else {
            return Err(malformed(path, "the storage key list holds a non-string"));
        };
        let Some(&(dtype, numel)) = declared.get(key) else {
            return Err(malformed(
                path,
                format!("storage '{key}' is listed but no tensor uses it, so its size is unknown"),
            ));
        };
        let header = bytes
            .get(pos..pos.saturating_add(8))
            .and_then(|h| <[u8; 8]>::try_from(h).ok())
            .ok_or_else(|| {
                malformed(
                    path,
                    format!(
                        "truncated: the file ends at byte {} before storage '{key}'",
                        bytes.len()
                    ),
                )
            })?;
        pos += 8;
        let count = u64::from_le_bytes(header);
        if usize::try_from(count).ok() != Some(numel) {
            return Err(malformed(
                path,
                format!("storage '{key}' holds {count} elements, but its tensors declare {numel}"),
            ));
        }
        let size = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| malformed(path, format!("storage '{key}' is too large")))?;
        let data = pos
            .checked_add(size)
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| {
                malformed(
                    path,
                    format!(
                        "truncated: storage '{key}' needs {size} bytes from byte {pos}, but the \
                         file ends at byte {}",
                        bytes.len()
                    ),
                )
            })?;
        pos += size;
        if storages.insert(key, data).is_some() {
            return Err(malformed(path, format!("storage '{key}' is listed twice")));
        }
    }
    if pos != bytes.len() {
        return Err(malformed(
            path,
            format!(
                "{} unexpected bytes after the last storage (at byte {pos})",
                bytes.len() - pos
            ),
        ));
    }
    build(CheckpointFormat::TorchLegacy, entries, &storages, path)
}

/// Finds the state dict in a checkpoint's pickle: `(name, tensor)` pairs in order.
fn state_dict(pickle: &Pickle, path: &Path) -> Result<Vec<(String, TensorRef)>, WeightsError> {
    let not_dict = |reason: String| WeightsError::NotAStateDict {
        path: path.to_path_buf(),
        reason,
    };
    let Some(Obj::Dict(top)) = pickle.obj(&pickle.root) else {
        return Err(not_dict(format!(
            "the pickle holds a {}, not a dict",
            pickle.root.type_name(&pickle.objects)
        )));
    };
    let mut items = top;
    for key in NESTED_KEYS {
        let nested = top
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| pickle.obj(v));
        if let Some(Obj::Dict(inner)) = nested {
            tracing::debug!(key, "using the state dict nested under this key");
            items = inner;
            break;
        }
    }
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Some(name) = k.as_str() else {
            return Err(not_dict(format!(
                "a key is a {}, not a string",
                k.type_name(&pickle.objects)
            )));
        };
        match pickle.obj(v) {
            Some(Obj::Tensor(t)) => out.push((name.to_owned(), t.clone())),
            _ => {
                return Err(not_dict(format!(
                    "entry '{name}' is a {}, not a tensor",
                    v.type_name(&pickle.objects)
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(not_dict("the dict holds no tensors".to_owned()));
    }
    Ok(out)
}

/// Materialises the tensors from their storages' bytes.
fn build(
    format: CheckpointFormat,
    entries: Vec<(String, TensorRef)>,
    storages: &HashMap<&str, &[u8]>,
    path: &Path,
) -> Result<Checkpoint, WeightsError> {
    let mut checkpoint = Checkpoint::with_format(format);
    for (name, tensor) in entries {
        if checkpoint.has_name(&name) {
            return Err(tensor_err(
                path,
                &name,
                "the name occurs twice in the state dict",
            ));
        }
        let Some(&bytes) = storages.get(tensor.storage.key.as_str()) else {
            return Err(tensor_err(
                path,
                &name,
                format!("its storage '{}' is not in the file", tensor.storage.key),
            ));
        };
        let needed = storage_bytes(&tensor, path, &name)?;
        let Some(bytes) = bytes.get(..needed) else {
            return Err(tensor_err(
                path,
                &name,
                format!(
                    "its storage '{}' holds {} bytes, but {} elements of {} need {needed}",
                    tensor.storage.key,
                    bytes.len(),
                    tensor.storage.numel,
                    tensor.storage.dtype
                ),
            ));
        };
        let data = materialise(&tensor, bytes).map_err(|reason| tensor_err(path, &name, reason))?;
        match data {
            Some(data) => {
                let t = Tensor {
                    shape: tensor.shape,
                    data,
                };
                checkpoint.insert_typed(name, t, tensor.storage.dtype);
            }
            None => checkpoint.push_skipped(SkippedEntry {
                name,
                dtype: tensor.storage.dtype,
                shape: tensor.shape,
            }),
        }
    }
    Ok(checkpoint)
}

/// The tensor's values in row-major order as f32, or `None` for a non-float tensor (whose
/// bounds are still checked). `storage` holds exactly the root storage's bytes.
pub(crate) fn materialise(t: &TensorRef, storage: &[u8]) -> Result<Option<Vec<f32>>, String> {
    let StorageRef {
        dtype,
        ref key,
        numel: root_numel,
        view,
    } = t.storage;
    let (base, storage_len) = view.unwrap_or((0, root_numel));
    let numel = t
        .shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("its shape {:?} overflows", t.shape))?;
    // A stride does not matter along a dimension of size 1.
    let stride: Vec<usize> = t
        .shape
        .iter()
        .zip(&t.stride)
        .map(|(&d, &s)| if d == 1 { 0 } else { s })
        .collect();
    if numel == 0 {
        return Ok(dtype.is_float().then(Vec::new));
    }
    let fits = t
        .shape
        .iter()
        .zip(&stride)
        .try_fold(t.offset, |acc, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
        })
        .is_some_and(|last| last < storage_len);
    if !fits {
        return Err(format!(
            "shape {:?} with stride {:?} at offset {} needs more than the {storage_len} \
             elements of its storage '{key}' (the file is corrupt)",
            t.shape, t.stride, t.offset
        ));
    }
    if numel > storage_len {
        return Err(format!(
            "it has {numel} values but its storage '{key}' only {storage_len} (overlapping \
             strides are not supported)"
        ));
    }
    if !dtype.is_float() {
        return Ok(None);
    }
    let size = dtype.size();
    let read = |i: usize| -> Option<f32> {
        let at = (base + i) * size;
        let b = storage.get(at..at + size)?;
        Some(match dtype {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => return None,
        })
    };
    let out_of_bounds = || format!("its storage '{key}' is shorter than its header says");

    let mut contiguous = true;
    let mut expected = 1usize;
    for (&d, &s) in t.shape.iter().zip(&stride).rev() {
        if d != 1 && s != expected {
            contiguous = false;
            break;
        }
        expected *= d;
    }
    let mut out = Vec::with_capacity(numel);
    if contiguous {
        if dtype == DType::F32 {
            let start = (base + t.offset) * 4;
            let bytes = storage
                .get(start..start + numel * 4)
                .ok_or_else(out_of_bounds)?;
            out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        } else {
            for i in t.offset..t.offset + numel {
                out.push(read(i).ok_or_else(out_of_bounds)?);
            }
        }
    } else {
        let ndim = t.shape.len();
        let mut index = vec![0usize; ndim];
        let mut at = t.offset;
        for _ in 0..numel {
            out.push(read(at).ok_or_else(out_of_bounds)?);
            for d in (0..ndim).rev() {
                index[d] += 1;
                at += stride[d];
                if index[d] < t.shape[d] {
                    break;
                }
                at -= stride[d] * t.shape[d];
                index[d] = 0;
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(
        dtype: DType,
        numel: usize,
        offset: usize,
        shape: &[usize],
        stride: &[usize],
    ) -> TensorRef {
        TensorRef {
            storage: StorageRef {
                dtype,
                key: "0".into(),
                numel,
                view: None,
            },
            offset,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        }
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn contiguous_with_offset() {
        let s = f32_bytes(&[9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let t = tensor(DType::F32, 7, 1, &[2, 3], &[3, 1]);
        assert_eq!(
            materialise(&t, &s).unwrap().unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn transposed_is_materialised_row_major() {
        // Storage holds a 3x2 matrix row-major; the tensor is its 2x3 transpose.
        let s = f32_bytes(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let t = tensor(DType::F32, 6, 0, &[2, 3], &[1, 2]);
        assert_eq!(
            materialise(&t, &s).unwrap().unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn converts_f16_bf16_f64() {
        let s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let t = tensor(DType::F16, 2, 0, &[2], &[1]);
        assert_eq!(materialise(&t, &s).unwrap().unwrap(), [1.5, -2.0]);
        let s: Vec<u8> = [0.25f32, 8.0]
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let t = tensor(DType::BF16, 2, 0, &[2], &[1]);
        assert_eq!(materialise(&t, &s).unwrap().unwrap(), [0.25, 8.0]);
        let s: Vec<u8> = [0.5f64, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = tensor(DType::F64, 2, 0, &[2], &[1]);
        assert_eq!(materialise(&t, &s).unwrap().unwrap(), [0.5, 3.0]);
    }

    #[test]
    fn integer_tensors_are_skipped_but_checked() {
        let s = 7i64.to_le_bytes();
        assert_eq!(
            materialise(&tensor(DType::I64, 1, 0, &[], &[]), &s),
            Ok(None)
        );
        assert!(materialise(&tensor(DType::I64, 1, 1, &[], &[]), &s).is_err());
    }

    #[test]
    fn out_of_storage_is_an_error() {
        let s = f32_bytes(&[1.0, 2.0, 3.0]);
        let err = materialise(&tensor(DType::F32, 3, 1, &[3], &[1]), &s).unwrap_err();
        assert!(err.contains("needs more than the 3 elements"), "{err}");
        let err =
            materialise(&tensor(DType::F32, 3, 0, &[usize::MAX, 2], &[1, 1]), &s).unwrap_err();
        assert!(err.contains("overflows"), "{err}");
        let err = materialise(&tensor(DType::F32, 3, 0, &[4], &[0]), &s).unwrap_err();
        assert!(err.contains("overlapping"), "{err}");
        // Size-1 dimensions ignore their (possibly huge) stride.
        let t = tensor(DType::F32, 3, 0, &[1, 3], &[usize::MAX, 1]);
        assert_eq!(materialise(&t, &s).unwrap().unwrap(), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn empty_tensor() {
        let t = tensor(DType::F32, 0, 0, &[0, 3], &[3, 1]);
        assert_eq!(materialise(&t, &[]).unwrap().unwrap(), Vec::<f32>::new());
    }
}

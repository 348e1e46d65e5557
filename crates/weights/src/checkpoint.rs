//! The checkpoint a file holds once read: named f32 tensors in file order, with each tensor's
//! stored element type and the entries that were skipped.

use std::collections::HashMap;
use std::fmt;

use crate::error::WeightsError;

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// 64-bit float (`torch.float64`).
    F64,
    /// 32-bit float (`torch.float32`).
    F32,
    /// IEEE half (`torch.float16`).
    F16,
    /// bfloat16 (`torch.bfloat16`).
    BF16,
    /// 64-bit signed integer (`torch.int64`).
    I64,
    /// 32-bit signed integer (`torch.int32`).
    I32,
    /// 16-bit signed integer (`torch.int16`).
    I16,
    /// 8-bit signed integer (`torch.int8`).
    I8,
    /// 8-bit unsigned integer (`torch.uint8`).
    U8,
    /// Boolean, one byte each (`torch.bool`).
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether values of this type are loaded (converted to f32) rather than skipped.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// The PyTorch name, e.g. `torch.float32`.
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F64 => "torch.float64",
            DType::F32 => "torch.float32",
            DType::F16 => "torch.float16",
            DType::BF16 => "torch.bfloat16",
            DType::I64 => "torch.int64",
            DType::I32 => "torch.int32",
            DType::I16 => "torch.int16",
            DType::I8 => "torch.int8",
            DType::U8 => "torch.uint8",
            DType::Bool => "torch.bool",
        }
    }

    /// The legacy storage class name, e.g. `FloatStorage`.
    pub(crate) fn storage_name(self) -> &'static str {
        match self {
            DType::F64 => "DoubleStorage",
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }

    /// The type of a `torch.<name>` storage class.
    pub(crate) fn from_storage_name(name: &str) -> Option<DType> {
        [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U8,
            DType::Bool,
        ]
        .into_iter()
        .find(|d| d.storage_name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.torch_name())
    }
}

/// Which format a checkpoint was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointFormat {
    /// `torch.save`'s zip format (torch ≥ 1.6).
    TorchZip,
    /// `torch.save`'s legacy format (`_use_new_zipfile_serialization=False`, torch < 1.6).
    TorchLegacy,
    /// safetensors.
    SafeTensors,
}

impl fmt::Display for CheckpointFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointFormat::TorchZip => "PyTorch zip",
            CheckpointFormat::TorchLegacy => "PyTorch legacy",
            CheckpointFormat::SafeTensors => "safetensors",
        })
    }
}

/// A dense tensor of f32 values in row-major (C) order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    /// Size of each dimension; empty for a scalar.
    pub shape: Vec<usize>,
    /// The values, row-major; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `data`, checking that the sizes agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, WeightsError> {
        let tensor = Tensor { shape, data };
        tensor.check("")?;
        Ok(tensor)
    }

    /// Number of values the shape calls for (saturated at `usize::MAX` on overflow).
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Checks that `data` holds exactly the values `shape` calls for.
    pub(crate) fn check(&self, name: &str) -> Result<(), WeightsError> {
        if self.numel() == self.data.len() {
            Ok(())
        } else {
            Err(WeightsError::ShapeMismatch {
                name: name.to_owned(),
                shape: self.shape.clone(),
                expected: self.numel(),
                actual: self.data.len(),
            })
        }
    }
}

/// An entry of the file that was not loaded as an f32 tensor (an integer or boolean tensor,
/// e.g. BatchNorm's `num_batches_tracked`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The entry's name in the state dict.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// Named f32 tensors in file order, with the integer entries that were skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    format: CheckpointFormat,
    /// Name, values and stored element type of each tensor, in file order.
    pub(crate) entries: Vec<(String, Tensor, DType)>,
    index: HashMap<String, usize>,
    skipped: Vec<SkippedEntry>,
}

impl Checkpoint {
    /// An empty checkpoint; its format reads as safetensors, the format it can be saved in.
    pub fn new() -> Self {
        Self::with_format(CheckpointFormat::SafeTensors)
    }

    pub(crate) fn with_format(format: CheckpointFormat) -> Self {
        Checkpoint {
            format,
            entries: Vec::new(),
            index: HashMap::new(),
            skipped: Vec::new(),
        }
    }

    /// The format the checkpoint was read from.
    pub fn format(&self) -> CheckpointFormat {
        self.format
    }

    /// Adds (or replaces, keeping its position) the tensor `name`; returns the replaced one.
    /// Its source type reads as [`DType::F32`].
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) -> Option<Tensor> {
        self.insert_typed(name.into(), tensor, DType::F32)
    }

    pub(crate) fn insert_typed(
        &mut self,
        name: String,
        tensor: Tensor,
        dtype: DType,
    ) -> Option<Tensor> {
        match self.index.get(&name) {
            Some(&i) => {
                let slot = &mut self.entries[i];
                slot.2 = dtype;
                Some(std::mem::replace(&mut slot.1, tensor))
            }
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor, dtype));
                None
            }
        }
    }

    pub(crate) fn push_skipped(&mut self, entry: SkippedEntry) {
        tracing::debug!(name = %entry.name, dtype = %entry.dtype, "skipping non-float entry");
        self.skipped.push(entry);
    }

    /// Whether the name is taken by a tensor or a skipped entry.
    pub(crate) fn has_name(&self, name: &str) -> bool {
        self.index.contains_key(name) || self.skipped.iter().any(|s| s.name == name)
    }

    /// Removes the tensor `name`, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        let i = self.index.remove(name)?;
        let (_, tensor, _) = self.entries.remove(i);
        for (j, (n, _, _)) in self.entries.iter().enumerate().skip(i) {
            self.index.insert(n.clone(), j);
        }
        Some(tensor)
    }

    /// The tensor `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// The element type the tensor `name` had in the file before conversion to f32.
    pub fn source_dtype(&self, name: &str) -> Option<DType> {
        self.index.get(name).map(|&i| self.entries[i].2)
    }

    /// Number of f32 tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no f32 tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Tensor names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _, _)| n.as_str())
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t, _)| (n.as_str(), t))
    }

    /// The `(name, tensor)` pairs in order, consuming the checkpoint.
    pub fn into_tensors(self) -> Vec<(String, Tensor)> {
        self.entries.into_iter().map(|(n, t, _)| (n, t)).collect()
    }

    /// Entries of the file that were not loaded (integer and boolean tensors), in file order.
    pub fn skipped(&self) -> &[SkippedEntry] {
        &self.skipped
    }

    /// Total number of values in all f32 tensors (buffers such as BatchNorm running statistics
    /// included).
    pub fn value_count(&self) -> usize {
        self.entries.iter().map(|(_, t, _)| t.data.len()).sum()
    }

    /// Number of learnable parameters: values of all f32 tensors except BatchNorm running
    /// statistics (names ending in `running_mean` or `running_var`). For the usual CNN state
    /// dicts this is what `sum(p.numel() for p in model.parameters())` reports in PyTorch.
    pub fn learnable_parameter_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|(n, _, _)| !is_running_stat(n))
            .map(|(_, t, _)| t.data.len())
            .sum()
    }
}

impl Default for Checkpoint {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a state-dict name is a BatchNorm running statistic (a buffer, not a parameter).
fn is_running_stat(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "running_mean" || last == "running_var"
}

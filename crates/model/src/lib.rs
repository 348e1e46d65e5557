//! Classifier networks for the CT scans, on [`burn`], with pretrained-weight import.
//!
//! - [`ResNet`]: ResNet-18/34/50 with torchvision's module layout and parameter names
//!   (`conv1`, `bn1`, `layer1.0.conv1`, `layer1.0.downsample.0`, …, `fc`), so that torchvision
//!   ImageNet checkpoints load unchanged.
//! - [`EfficientNetLite`]: EfficientNet-Lite0 (MBConv blocks, ReLU6, no squeeze-excitation,
//!   BatchNorm eps 1e-3, TensorFlow "same" padding) with the parameter names of the
//!   `efficientnet_pytorch` layout (`_conv_stem`, `_bn0`, `_blocks.N._depthwise_conv`, …, `_fc`).
//! - [`BackbonePair`]: the CT ResNet-152-C4 and EfficientNet-Lite0 side by side, their features
//!   concatenated before one head (`ct.…`, `lite.…`, `fc`).
//!
//! burn 0.22 selects the backend at run time through its [`Device`](burn::tensor::Device)
//! (e.g. `Device::flex()` for the CPU backend); the modules here are therefore generic over the
//! backend without a type parameter: nothing in them names one.
//!
//! Weights come from a [`covidct_weights::Checkpoint`]: [`StateDict::load_pretrained`] (the one
//! trait every architecture and [`Network`] share) maps every name to its parameter, checks
//! every shape and reports all missing, unexpected and mismatched names at once
//! ([`ModelError::Checkpoint`]). [`StateDict::export`] does the reverse.
//!
//! Transfer learning for grey CT input: load the 3-channel ImageNet weights, then
//! [`ResNet::into_grey`] (or [`EfficientNetLite::into_grey`]) sums the stem kernel over the
//! colour channels — identical to feeding the grey image replicated three times — and
//! [`ResNet::with_num_classes`] replaces the 1000-class head with a freshly initialised one.
//! The grey input must then be normalised with the mean and std of *one* channel of the
//! pretrained network (e.g. 0.5/0.5 for EfficientNet-Lite0), since the summed kernel sees the
//! same value the replicated channels would each have carried.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod architecture;
mod config;
mod device;
mod efficientnet;
mod error;
mod fold;
mod gradcam;
mod import;
mod layers;
mod network;
mod ood;
mod package;
mod pair;
mod predictor;
mod resnet;
mod tensor;
mod transfer;

pub use crate::architecture::Architecture;
pub use crate::config::{EfficientNetLiteConfig, ResNetConfig, ResNetDepth};
pub use crate::device::{cpu_devices, is_cpu, select_device};
pub use crate::efficientnet::{EfficientNetLite, MbConvBlock};
pub use crate::error::ModelError;
pub use crate::gradcam::{GradCam, grad_cam};
pub use crate::import::StateDict;
pub use crate::network::Network;
pub use crate::ood::{
    EXPLAINED_VARIANCE, FeatureDensity, GateValidation, MAX_COMPONENTS, MAX_VALIDATION_REFUSED,
    OodAssessment, OodGate,
};
pub use crate::package::{
    ModelPackage, PACKAGE_EXTENSION, PACKAGE_FORMAT_VERSION, PackageMetadata,
};
pub use crate::pair::BackbonePair;
pub use crate::predictor::{
    Prediction, Predictor, Scored, calibrated_probabilities, prepare_input,
};
pub use crate::resnet::{Downsample, ResNet, ResidualBlock};
pub use crate::tensor::tensor_to_vec;
pub use crate::transfer::{ImportedWeights, import_pretrained, sum_stem_to_grey};

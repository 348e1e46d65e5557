//! Layer constructors shared by the architectures.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

/// A bias-free convolution initialised like torchvision (`kaiming_normal_`, fan-out, ReLU gain).
pub(crate) fn conv2d(
    [c_in, c_out]: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    padding: PaddingConfig2d,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(padding)
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// Batch normalisation with the architecture's epsilon and momentum.
pub(crate) fn batch_norm(
    features: usize,
    epsilon: f64,
    momentum: f64,
    device: &Device,
) -> BatchNorm {
    BatchNormConfig::new(features)
        .with_epsilon(epsilon)
        .with_momentum(momentum)
        .init(device)
}

/// Applies the BatchNorm in `slot`, or passes `x` through once folding has removed it.
pub(crate) fn norm<const D: usize>(slot: &Option<BatchNorm>, x: Tensor<D>) -> Tensor<D> {
    match slot {
        Some(bn) => bn.forward(x),
        None => x,
    }
}

/// A fresh classifier head `d_input → num_classes`.
pub(crate) fn head(d_input: usize, num_classes: usize, device: &Device) -> Linear {
    LinearConfig::new(d_input, num_classes).init(device)
}

/// How many of a backbone's `units` [`freeze_early`](crate::Network::freeze_early) freezes to
/// leave the last `trainable` ones training: `None` (nothing frozen) for 0 or at least `units`.
pub(crate) fn frozen_units(units: usize, trainable: usize) -> Option<usize> {
    (trainable != 0 && trainable < units).then(|| units - trainable)
}

//! Grad-CAM (Selvaraju et al. 2017): where in the image the network found evidence for a class.
//!
//! The last convolutional feature map `A` (`[1, K, h, w]`) is computed without autodiff, then
//! made an autodiff leaf; pooling and the head run on it, and the class logit `y_c` is
//! backpropagated to `A` with burn's autodiff (the pooled `layer2` context of a multiscale
//! network is held constant: it is not part of the map explained). Each channel's weight is its
//! mean gradient `α_k = mean_ij ∂y_c/∂A_kij`, and the map is `ReLU(Σ_k α_k A_k)`, scaled to 0–1.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use crate::error::ModelError;
use crate::network::Network;
use crate::tensor::tensor_to_vec;

/// A class-activation map at the resolution of the last feature map.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GradCam {
    /// Map width (input width / 32 for the architectures here).
    pub width: usize,
    /// Map height.
    pub height: usize,
    /// `width × height` values, row-major, scaled so that the largest is 1 (all 0 when the
    /// class has no positive evidence anywhere).
    pub map: Vec<f32>,
    /// The largest value before scaling.
    pub peak: f32,
}

/// Grad-CAM of `class` for one prepared input `[1, channels, H, W]`.
pub fn grad_cam(network: &Network, input: Tensor<4>, class: usize) -> Result<GradCam, ModelError> {
    let [batch, ..] = input.dims();
    if batch != 1 {
        return Err(ModelError::Config {
            field: "grad_cam_input",
            value: batch.to_string(),
            reason: "Grad-CAM explains one image at a time",
        });
    }
    let classes = network.head().weight.dims()[1];
    if class >= classes {
        return Err(ModelError::Config {
            field: "grad_cam_class",
            value: class.to_string(),
            reason: "is not a class of the network",
        });
    }
    let (map, context) = network.feature_map_and_context(input);
    let map = map.without_autodiff().autodiff().require_grad();
    // The multiscale context enters the logit additively: held constant, it does not change the
    // gradient with respect to the last map.
    let context = context.map(|c| c.without_autodiff().autodiff());
    let score = network
        .logits_from_map(map.clone(), context)
        .narrow(1, class, 1)
        .sum();
    let gradients = score.backward();
    let gradient = map.grad(&gradients).ok_or_else(|| ModelError::TensorData {
        name: "grad-cam gradient".to_owned(),
        reason: "backpropagation did not reach the feature map".to_owned(),
    })?;
    let [_, _, height, width] = gradient.dims();
    let weights = gradient.mean_dim(3).mean_dim(2);
    let cam: Tensor<4> = relu((map.without_autodiff() * weights).sum_dim(1));
    let mut values = tensor_to_vec("grad-cam", cam)?;
    let peak = values.iter().copied().fold(0f32, f32::max);
    if peak > 0.0 {
        values.iter_mut().for_each(|v| *v /= peak);
    }
    Ok(GradCam {
        width,
        height,
        map: values,
        peak,
    })
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;
    use crate::architecture::Architecture;

    /// With global average pooling and a linear head, `∂y_c/∂A_kij = w_kc / (h·w)`, so Grad-CAM
    /// must equal `ReLU(Σ_k w_kc A_k)` up to scale (`w` the head's last `K` inputs, after any
    /// multiscale context): checked against that closed form on a `side`² input.
    fn matches_closed_form(architecture: Architecture, side: usize) {
        let device = Device::flex();
        device.seed(11);
        let network = Network::new(architecture, 1, 2, &device).expect("network");
        // Non-negative head weights over the non-negative (ReLU) feature map: the class has
        // positive evidence whatever the random draws (tests share the device's generator).
        let head = network.head().clone();
        let network = network.with_head(burn::nn::Linear {
            weight: burn::module::Param::from_tensor(head.weight.val().abs()),
            bias: head.bias,
        });
        let x = Tensor::<4>::random([1, 1, side, side], Distribution::Normal(0.0, 1.0), &device);
        let class = 1;
        let cam = grad_cam(&network, x.clone(), class).expect("grad-cam");

        let map = network.feature_map(x);
        let [_, channels, height, width] = map.dims();
        assert_eq!((cam.width, cam.height), (width, height));
        let inputs = network.head().weight.dims()[0];
        let w: Tensor<4> = network
            .head()
            .weight
            .val()
            .narrow(0, inputs - channels, channels)
            .narrow(1, class, 1)
            .reshape([1, channels, 1, 1]);
        let expected = tensor_to_vec("expected", relu((map * w).sum_dim(1))).expect("values");
        let peak = expected.iter().copied().fold(0f32, f32::max);
        assert!(
            peak > 0.0,
            "{architecture}: no positive evidence to compare"
        );
        for (got, want) in cam.map.iter().zip(&expected) {
            assert!(
                (got - want / peak).abs() < 1e-4,
                "{architecture}: {cam:?} vs {expected:?}"
            );
        }
        assert!(cam.map.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn resnet_grad_cam_matches_the_closed_form() {
        matches_closed_form(Architecture::Resnet18, 96);
    }

    #[test]
    fn multiscale_grad_cam_matches_the_closed_form_of_its_last_map() {
        matches_closed_form(Architecture::Resnet152C3C4, 48);
    }

    #[test]
    fn pair_grad_cam_explains_the_ct_map_with_lite0s_features_held() {
        matches_closed_form(Architecture::Resnet152C4Lite0, 48);
    }

    #[test]
    fn efficientnet_grad_cam_matches_the_closed_form() {
        matches_closed_form(Architecture::EfficientnetLite0, 96);
    }

    #[test]
    fn refuses_batches_and_unknown_classes() {
        let device = Device::flex();
        let network = Network::new(Architecture::Resnet18, 1, 2, &device).expect("network");
        let two = Tensor::<4>::zeros([2, 1, 32, 32], &device);
        assert!(grad_cam(&network, two, 0).is_err());
        let one = Tensor::<4>::zeros([1, 1, 32, 32], &device);
        assert!(grad_cam(&network, one, 2).is_err());
    }
}

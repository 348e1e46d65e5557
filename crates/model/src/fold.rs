//! BatchNorm folding for inference: each convolution absorbs the BatchNorm that follows it.
//!
//! At inference a BatchNorm is the per-channel affine map `y = γ (x − μ) / √(σ² + ε) + β`. For
//! the convolution before it, with weight `W` and bias `b` (0 when absent), scaling output
//! channel `o` by `s_o = γ_o / √(σ²_o + ε)` gives
//! `W'_o = s_o W_o`, `b'_o = β_o + s_o (b_o − μ_o)`, and the BatchNorm is removed: the folded
//! network runs no normalisation pass at all. Both architectures pair every convolution with
//! exactly one BatchNorm, visited right after it, which is what the two passes below rely on.

use std::collections::VecDeque;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::tensor::Tensor;

use crate::error::ModelError;
use crate::import::{Layout, ParamVisitor};
use crate::network::Network;

/// First pass: each BatchNorm's inference scale `s` and shift `β − s μ`, in visiting order.
#[derive(Default)]
struct Collect {
    affine: VecDeque<(String, Tensor<1>, Tensor<1>)>,
    convolutions: usize,
}

impl ParamVisitor for Collect {
    fn conv2d(&mut self, _name: &str, _conv: &mut Conv2d) {
        self.convolutions += 1;
    }

    fn batch_norm(&mut self, name: &str, bn: &mut BatchNorm) {
        let mean = bn.running_mean.valid().value();
        let var = bn.running_var.valid().value();
        let scale = bn.gamma.val() / (var + bn.epsilon).sqrt();
        let shift = bn.beta.val() - mean * scale.clone();
        self.affine.push_back((name.to_owned(), scale, shift));
    }

    fn linear(&mut self, _name: &str, _linear: &mut Linear) {}
}

/// Second pass: scales each convolution by the next BatchNorm's affine map and removes that
/// BatchNorm.
struct Fold {
    affine: VecDeque<(String, Tensor<1>, Tensor<1>)>,
    error: Option<ModelError>,
}

impl ParamVisitor for Fold {
    fn conv2d(&mut self, name: &str, conv: &mut Conv2d) {
        let Some((bn_name, scale, shift)) = self.affine.pop_front() else {
            self.error.get_or_insert(ModelError::Config {
                field: "batch_norm",
                value: name.to_owned(),
                reason: "convolution has no BatchNorm to fold",
            });
            return;
        };
        let [out, ..] = conv.weight.dims();
        if scale.dims()[0] != out {
            self.error.get_or_insert(ModelError::Config {
                field: "batch_norm",
                value: format!("{name} / {bn_name}"),
                reason: "BatchNorm width differs from the convolution's output channels",
            });
            return;
        }
        let weight = conv.weight.val() * scale.clone().reshape([out, 1, 1, 1]);
        let bias = match &conv.bias {
            Some(bias) => shift + bias.val() * scale,
            None => shift,
        };
        conv.weight = Param::from_tensor(weight);
        conv.bias = Some(Param::from_tensor(bias));
    }

    /// Not reached: [`Fold::batch_norm_slot`] removes each BatchNorm instead of visiting it.
    fn batch_norm(&mut self, _name: &str, _bn: &mut BatchNorm) {}

    fn batch_norm_slot(&mut self, _name: &str, slot: &mut Option<BatchNorm>) {
        *slot = None;
    }

    fn linear(&mut self, _name: &str, _linear: &mut Linear) {}
}

impl Network {
    /// The same inference function with every BatchNorm folded into the convolution before it
    /// (see the module documentation). For inference only: the folded network has convolution
    /// biases that the PyTorch layouts lack, so [`crate::StateDict::export`] of it does not round-trip.
    pub fn fold_batch_norm(mut self) -> Result<Self, ModelError> {
        let mut collect = Collect::default();
        self.visit_params(&mut collect);
        if collect.affine.len() != collect.convolutions {
            return Err(ModelError::Config {
                field: "batch_norm",
                value: format!(
                    "{} convolutions, {} BatchNorms",
                    collect.convolutions,
                    collect.affine.len()
                ),
                reason: "every convolution must be followed by exactly one BatchNorm",
            });
        }
        let mut fold = Fold {
            affine: collect.affine,
            error: None,
        };
        self.visit_params(&mut fold);
        match fold.error {
            Some(error) => Err(error),
            None => Ok(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::{Device, Distribution, Tensor};

    use super::Collect;
    use crate::architecture::Architecture;
    use crate::import::Layout;
    use crate::network::Network;
    use crate::tensor::tensor_to_vec;

    /// A network with non-trivial BatchNorm statistics: a few training-mode forward passes on
    /// an autodiff device update the running means and variances.
    fn trained_statistics(architecture: Architecture) -> Network {
        let device = Device::flex();
        device.seed(3);
        let ad = device.clone().autodiff();
        let network = Network::new(architecture, 1, 2, &ad).expect("network");
        for _ in 0..3 {
            let x = Tensor::<4>::random([2, 1, 64, 64], Distribution::Normal(0.3, 1.5), &ad);
            let _ = network.forward(x);
        }
        network.valid()
    }

    fn assert_same_logits(architecture: Architecture) {
        let network = trained_statistics(architecture);
        let device = Device::flex();
        let x = Tensor::<4>::random([3, 1, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let plain = tensor_to_vec("plain", network.forward(x.clone())).expect("logits");
        let mut folded = network.fold_batch_norm().expect("fold");
        let mut left = Collect::default();
        folded.visit_params(&mut left);
        assert!(
            left.affine.is_empty() && left.convolutions > 0,
            "{architecture}: {} BatchNorms left after folding",
            left.affine.len()
        );
        let folded = tensor_to_vec("folded", folded.forward(x)).expect("logits");
        let scale = plain.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (a, b) in plain.iter().zip(&folded) {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{architecture}: {plain:?} vs {folded:?}"
            );
        }
    }

    #[test]
    fn folded_resnet_gives_the_same_logits_without_batch_norms() {
        assert_same_logits(Architecture::Resnet18);
    }

    #[test]
    fn folded_efficientnet_gives_the_same_logits_without_batch_norms() {
        assert_same_logits(Architecture::EfficientnetLite0);
    }
}

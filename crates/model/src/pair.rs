//! Two backbones read side by side ([`Architecture::Resnet152C4Lite0`]): the CT ResNet-152-C4
//! and EfficientNet-Lite0, their pooled features concatenated before one head.
//!
//! The pair takes its input in the CT encoder's convention (RAS orientation, intensities in
//! [0, 1]) and hands its Lite0 branch the same slice in Lite0's own: displayed orientation and
//! `(x − 0.5) / 0.5`. The RAS turn (`img[::-1, ::-1].T`) is its own inverse, so one more turn of
//! the tensor gives the displayed slice back. The CT branch's last map is what Grad-CAM
//! explains; Lite0's pooled features enter the head as the context beside it, held constant.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use covidct_weights::Checkpoint;

use crate::architecture::Architecture;
use crate::config::{EfficientNetLiteConfig, ResNetConfig, ResNetDepth};
use crate::efficientnet::EfficientNetLite;
use crate::error::ModelError;
use crate::import::{Layout, ParamVisitor, Prefixed, StateDict};
use crate::layers::head;
use crate::resnet::{ResNet, global_average, with_context};

/// The CT ResNet-152-C4 and EfficientNet-Lite0 under one head; input `[batch, channels, H, W]`
/// in the CT convention, output logits. State-dict names: `ct.` + torchvision's, `lite.` +
/// `efficientnet_pytorch`'s, and `fc` for the head. Each branch keeps the classifier of its
/// own architecture unused (not part of the state dict).
#[derive(Module, Debug)]
pub struct BackbonePair {
    /// The CT encoder truncated after `layer3` (1024 features).
    pub ct: ResNet,
    /// EfficientNet-Lite0 (1280 features).
    pub lite: EfficientNetLite,
    /// The classifier over Lite0's features followed by the CT encoder's.
    pub fc: Linear,
}

/// Width of the pair's head input: Lite0's 1280 features, then the C4's 1024.
const FEATURES: usize = 1280 + 1024;

impl BackbonePair {
    /// A freshly initialised pair for `in_channels`-channel input.
    pub fn new(
        in_channels: usize,
        num_classes: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let ct = ResNet::new(&c4_config(in_channels), device)?;
        let lite = EfficientNetLite::new(
            &EfficientNetLiteConfig {
                in_channels,
                ..Default::default()
            },
            device,
        )?;
        Ok(Self::from_branches(ct, lite, num_classes, device))
    }

    /// Transfer learning for grey CT: the CT branch from a (depth-collapsed) ResNet-152
    /// checkpoint, the Lite0 branch from an EfficientNet-Lite0 one, both stems summed to one
    /// channel, and a fresh `num_classes` head.
    pub fn from_pretrained(
        ct: &Checkpoint,
        lite: &Checkpoint,
        num_classes: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        crate::config::check_num_classes(num_classes)?;
        let ct = ResNet::new(&c4_config(3), device)?
            .load_backbone(ct)?
            .into_grey()?;
        let lite = EfficientNetLite::new(&EfficientNetLiteConfig::default(), device)?
            .load_backbone(lite)?
            .into_grey()?;
        Ok(Self::from_branches(ct, lite, num_classes, device))
    }

    fn from_branches(
        ct: ResNet,
        lite: EfficientNetLite,
        num_classes: usize,
        device: &Device,
    ) -> Self {
        Self {
            ct,
            lite,
            fc: head(FEATURES, num_classes, device),
        }
    }

    /// The CT branch's `layer3` map `[batch, 1024, H/16, W/16]` and Lite0's pooled features
    /// `[batch, 1280]` of the same slices, the context the head sees beside it.
    pub fn feature_map_and_context(&self, x: Tensor<4>) -> (Tensor<4>, Option<Tensor<2>>) {
        let lite = self.lite.features(displayed(x.clone()));
        let (map, context) = self.ct.feature_map_and_context(x);
        let context = match context {
            Some(ct_context) => Tensor::cat(vec![lite, ct_context], 1),
            None => lite,
        };
        (map, Some(context))
    }

    /// Pooled features `[batch, 2304]`: Lite0's, then the CT encoder's.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let (map, context) = self.feature_map_and_context(x);
        with_context(context, global_average(map))
    }
}

/// The ResNet-152-C4 of the CT branch.
fn c4_config(in_channels: usize) -> ResNetConfig {
    ResNetConfig {
        depth: ResNetDepth::R152,
        in_channels,
        num_classes: 2,
        stages: 3,
        multiscale: false,
    }
}

/// A slice in the CT convention (RAS, [0, 1]) turned back to its displayed orientation and
/// scaled as EfficientNet-Lite0 expects (`2x − 1`, i.e. mean 0.5 and std 0.5).
fn displayed(x: Tensor<4>) -> Tensor<4> {
    x.flip([2, 3]).swap_dims(2, 3) * 2.0 - 1.0
}

impl Layout for BackbonePair {
    fn visit_params(&mut self, v: &mut impl ParamVisitor) {
        self.ct.visit_backbone(&mut Prefixed {
            prefix: "ct.",
            inner: v,
        });
        self.lite.visit_backbone(&mut Prefixed {
            prefix: "lite.",
            inner: v,
        });
        v.linear("fc", &mut self.fc);
    }

    fn checkpoint_model(&self) -> &'static str {
        Architecture::Resnet152C4Lite0.name()
    }

    fn backbone_exclusions(&self) -> &'static [&'static str] {
        &["fc"]
    }

    fn param_device(&self) -> Device {
        self.fc.weight.val().device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn the_lite_branch_sees_the_displayed_slice_scaled_to_lite0s_convention() {
        let device = crate::select_device("cpu").unwrap();
        // A 2×3 image [[0, 1, 2], [3, 4, 5]] / 10; RAS (NumPy img[::-1, ::-1].T) is
        // [[5, 2], [4, 1], [3, 0]] / 10.
        let ras = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32, 0.2, 0.4, 0.1, 0.3, 0.0], [1, 1, 3, 2]),
            &device,
        );
        let shown = crate::tensor_to_vec("shown", displayed(ras)).unwrap();
        let expected = [0.0f32, 0.1, 0.2, 0.3, 0.4, 0.5].map(|v| 2.0 * v - 1.0);
        for (a, b) in shown.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{shown:?}");
        }
    }
}

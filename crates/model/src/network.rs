//! One type for every architecture covidct trains: [`Network`] runs any [`Architecture`].

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use covidct_weights::Checkpoint;

use crate::architecture::Architecture;
use crate::config::{EfficientNetLiteConfig, ResNetConfig, ResNetDepth};
use crate::efficientnet::EfficientNetLite;
use crate::error::ModelError;
use crate::import::{Layout, ParamVisitor, StateDict};
use crate::pair::BackbonePair;
use crate::resnet::{ResNet, global_average, with_context};

/// A classifier of any [`Architecture`]: input `[batch, channels, H, W]`, output logits.
// A process holds one or two networks: the variants' size difference (a few hundred bytes of
// layer handles) does not matter, and burn's `Module` derive does not see through a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    /// A ResNet-18/34/50/152.
    ResNet(ResNet),
    /// EfficientNet-Lite0.
    EfficientNetLite(EfficientNetLite),
    /// The CT ResNet-152-C4 and EfficientNet-Lite0 side by side.
    Pair(BackbonePair),
}

impl Network {
    /// A freshly initialised network.
    pub fn new(
        architecture: Architecture,
        in_channels: usize,
        num_classes: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let resnet = |depth, stages, multiscale| {
            let config = ResNetConfig {
                depth,
                in_channels,
                num_classes,
                stages,
                multiscale,
            };
            ResNet::new(&config, device).map(Network::ResNet)
        };
        match architecture {
            Architecture::Resnet18 => resnet(ResNetDepth::R18, 4, false),
            Architecture::Resnet34 => resnet(ResNetDepth::R34, 4, false),
            Architecture::Resnet50 => resnet(ResNetDepth::R50, 4, false),
            Architecture::Resnet152 => resnet(ResNetDepth::R152, 4, false),
            Architecture::Resnet152C4 => resnet(ResNetDepth::R152, 3, false),
            Architecture::Resnet152C3C4 => resnet(ResNetDepth::R152, 3, true),
            Architecture::EfficientnetLite0 => {
                let config = EfficientNetLiteConfig {
                    in_channels,
                    num_classes,
                    ..Default::default()
                };
                EfficientNetLite::new(&config, device).map(Network::EfficientNetLite)
            }
            Architecture::Resnet152C4Lite0 => {
                BackbonePair::new(in_channels, num_classes, device).map(Network::Pair)
            }
        }
    }

    /// Transfer learning for grey CT: the 3-channel network loaded from pretrained
    /// `checkpoints`, one per [`Architecture::components`] (ImageNet, or a backbone-only
    /// encoder such as the CT one of [`covidct_weights::ct_astra`], once
    /// [`covidct_weights::collapse_depth`] made it 2D), its stems summed to one channel and its
    /// classifier, if any, replaced by a fresh `num_classes` one.
    pub fn from_pretrained(
        architecture: Architecture,
        checkpoints: &[Checkpoint],
        num_classes: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let checkpoint = match (architecture, checkpoints) {
            (Architecture::Resnet152C4Lite0, [ct, lite]) => {
                return BackbonePair::from_pretrained(ct, lite, num_classes, device)
                    .map(Network::Pair);
            }
            (Architecture::Resnet152C4Lite0, _) | (_, [_, _, ..]) | (_, []) => {
                return Err(ModelError::Config {
                    field: "pretrained",
                    value: format!("{} checkpoints for {architecture}", checkpoints.len()),
                    reason: "takes one checkpoint per backbone (resnet152-c4-lite0: the CT \
                             encoder, then EfficientNet-Lite0's)",
                });
            }
            (_, [checkpoint]) => checkpoint,
        };
        let network = Network::new(architecture, 3, 1000, device)?.load_backbone(checkpoint)?;
        Ok(match network {
            Network::ResNet(n) => Network::ResNet(n.into_grey()?.with_num_classes(num_classes)?),
            Network::EfficientNetLite(n) => {
                Network::EfficientNetLite(n.into_grey()?.with_num_classes(num_classes)?)
            }
            pair @ Network::Pair(_) => pair,
        })
    }

    /// Which architecture this is.
    pub fn architecture(&self) -> Architecture {
        match self {
            Network::ResNet(n) => n.architecture(),
            Network::EfficientNetLite(_) => Architecture::EfficientnetLite0,
            Network::Pair(_) => Architecture::Resnet152C4Lite0,
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.classify(self.features(x))
    }

    /// Pooled backbone features `[batch, feature_dim]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::ResNet(n) => n.features(x),
            Network::EfficientNetLite(n) => n.features(x),
            Network::Pair(n) => n.features(x),
        }
    }

    /// The last convolutional feature map `[batch, channels, H/32, W/32]`, before global
    /// pooling: what Grad-CAM explains.
    pub fn feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        self.feature_map_and_context(x).0
    }

    /// [`Network::feature_map`] and the pooled features the head sees beside it, if any (the
    /// `layer2` context of [`Architecture::Resnet152C3C4`], Lite0's features in the pair).
    pub fn feature_map_and_context(&self, x: Tensor<4>) -> (Tensor<4>, Option<Tensor<2>>) {
        match self {
            Network::ResNet(n) => n.feature_map_and_context(x),
            Network::EfficientNetLite(n) => (n.feature_map(x), None),
            Network::Pair(n) => n.feature_map_and_context(x),
        }
    }

    /// Inference logits from a [`Network::feature_map`] and its context: global average pooling,
    /// then the head (dropout is the identity at inference and is left out).
    pub fn logits_from_map(&self, map: Tensor<4>, context: Option<Tensor<2>>) -> Tensor<2> {
        self.head()
            .forward(with_context(context, global_average(map)))
    }

    /// Logits from pooled features (dropout, where the architecture has it, then the head).
    pub fn classify(&self, features: Tensor<2>) -> Tensor<2> {
        match self {
            Network::ResNet(n) => n.fc.forward(features),
            Network::EfficientNetLite(n) => n.classify(features),
            Network::Pair(n) => n.fc.forward(features),
        }
    }

    /// The classifier head.
    pub fn head(&self) -> &Linear {
        match self {
            Network::ResNet(n) => &n.fc,
            Network::EfficientNetLite(n) => &n.fc,
            Network::Pair(n) => &n.fc,
        }
    }

    /// The same network with `head` as its classifier.
    pub fn with_head(mut self, head: Linear) -> Self {
        match &mut self {
            Network::ResNet(n) => n.fc = head,
            Network::EfficientNetLite(n) => n.fc = head,
            Network::Pair(n) => n.fc = head,
        }
        self
    }

    /// Number of backbone units [`Network::freeze_early`] counts: ResNet stem + 4 stages (5; 4
    /// when truncated after `layer3`), EfficientNet-Lite0 stem + 16 blocks + head convolution
    /// (18); for the pair, those of its larger branch (each branch counts its own).
    pub fn backbone_units(&self) -> usize {
        match self {
            Network::ResNet(n) => n.backbone_units(),
            Network::EfficientNetLite(n) => n.backbone_units(),
            Network::Pair(n) => n.ct.backbone_units().max(n.lite.backbone_units()),
        }
    }

    /// Freezes all backbone units but the last `trainable` ones (0: nothing frozen; in the
    /// pair, of each branch); the classifier head always trains. Frozen layers keep their
    /// weights and BatchNorm statistics, and their forward pass records nothing for
    /// backpropagation, which is what makes partial fine-tuning cheap.
    pub fn freeze_early(self, trainable: usize) -> Self {
        match self {
            Network::ResNet(n) => Network::ResNet(n.freeze_early(trainable)),
            Network::EfficientNetLite(n) => Network::EfficientNetLite(n.freeze_early(trainable)),
            Network::Pair(mut n) => {
                n.ct = n.ct.freeze_early(trainable);
                n.lite = n.lite.freeze_early(trainable);
                Network::Pair(n)
            }
        }
    }

    /// The same network with every parameter held as concrete values.
    ///
    /// burn initialises parameters lazily, on first use, from the backend's random generator;
    /// calling this right after seeding the device fixes the initial weights, whatever runs
    /// later (dropout, other tensors) draws from the same generator.
    pub fn materialized(self) -> Result<Self, ModelError> {
        let weights = self.export()?;
        self.load_pretrained(&weights)
    }
}

impl Layout for Network {
    fn visit_params(&mut self, v: &mut impl ParamVisitor) {
        match self {
            Network::ResNet(n) => n.visit_params(v),
            Network::EfficientNetLite(n) => n.visit_params(v),
            Network::Pair(n) => n.visit_params(v),
        }
    }

    fn checkpoint_model(&self) -> &'static str {
        match self {
            Network::ResNet(n) => n.checkpoint_model(),
            Network::EfficientNetLite(n) => n.checkpoint_model(),
            Network::Pair(n) => n.checkpoint_model(),
        }
    }

    fn backbone_exclusions(&self) -> &'static [&'static str] {
        match self {
            Network::ResNet(n) => n.backbone_exclusions(),
            Network::EfficientNetLite(n) => n.backbone_exclusions(),
            Network::Pair(n) => n.backbone_exclusions(),
        }
    }

    fn param_device(&self) -> Device {
        match self {
            Network::ResNet(n) => n.param_device(),
            Network::EfficientNetLite(n) => n.param_device(),
            Network::Pair(n) => n.param_device(),
        }
    }
}

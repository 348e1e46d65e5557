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
        }
    }

    /// Transfer learning for grey CT: the 3-channel network loaded from a pretrained
    /// `checkpoint` (ImageNet, or a backbone-only encoder such as the CT one of
    /// [`covidct_weights::ct_astra`], once [`covidct_weights::collapse_depth`] made it 2D), its
    /// stem summed to one channel and its classifier, if any, replaced by a fresh `num_classes`
    /// one.
    pub fn from_pretrained(
        architecture: Architecture,
        checkpoint: &Checkpoint,
        num_classes: usize,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let network = Network::new(architecture, 3, 1000, device)?.load_backbone(checkpoint)?;
        Ok(match network {
            Network::ResNet(n) => Network::ResNet(n.into_grey()?.with_num_classes(num_classes)?),
            Network::EfficientNetLite(n) => {
                Network::EfficientNetLite(n.into_grey()?.with_num_classes(num_classes)?)
            }
        })
    }

    /// Which architecture this is.
    pub fn architecture(&self) -> Architecture {
        match self {
            Network::ResNet(n) => n.architecture(),
            Network::EfficientNetLite(_) => Architecture::EfficientnetLite0,
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
        }
    }

    /// The last convolutional feature map `[batch, channels, H/32, W/32]`, before global
    /// pooling: what Grad-CAM explains.
    pub fn feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        self.feature_map_and_context(x).0
    }

    /// [`Network::feature_map`] and the pooled features the head sees beside it, if any (the
    /// `layer2` context of [`Architecture::Resnet152C3C4`]).
    pub fn feature_map_and_context(&self, x: Tensor<4>) -> (Tensor<4>, Option<Tensor<2>>) {
        match self {
            Network::ResNet(n) => n.feature_map_and_context(x),
            Network::EfficientNetLite(n) => (n.feature_map(x), None),
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
        }
    }

    /// The classifier head.
    pub fn head(&self) -> &Linear {
        match self {
            Network::ResNet(n) => &n.fc,
            Network::EfficientNetLite(n) => &n.fc,
        }
    }

    /// The same network with `head` as its classifier.
    pub fn with_head(mut self, head: Linear) -> Self {
        match &mut self {
            Network::ResNet(n) => n.fc = head,
            Network::EfficientNetLite(n) => n.fc = head,
        }
        self
    }

    /// Number of backbone units [`Network::freeze_early`] counts: ResNet stem + 4 stages (5; 4
    /// when truncated after `layer3`),
    /// EfficientNet-Lite0 stem + 16 blocks + head convolution (18).
    pub fn backbone_units(&self) -> usize {
        match self {
            Network::ResNet(n) => {
                1 + [&n.layer1, &n.layer2, &n.layer3, &n.layer4]
                    .iter()
                    .filter(|stage| !stage.is_empty())
                    .count()
            }
            Network::EfficientNetLite(n) => n.blocks.len() + 2,
        }
    }

    /// Freezes all backbone units but the last `trainable` ones (0: nothing frozen); the
    /// classifier head always trains. Frozen layers keep their weights and BatchNorm
    /// statistics, and their forward pass records nothing for backpropagation, which is what
    /// makes partial fine-tuning cheap.
    pub fn freeze_early(self, trainable: usize) -> Self {
        let units = self.backbone_units();
        if trainable == 0 || trainable >= units {
            return self;
        }
        let frozen = units - trainable;
        match self {
            Network::ResNet(mut n) => {
                n.conv1 = n.conv1.freeze();
                n.bn1 = n.bn1.freeze();
                let mut stages = [&mut n.layer1, &mut n.layer2, &mut n.layer3, &mut n.layer4];
                for stage in stages.iter_mut().take(frozen - 1) {
                    let blocks = std::mem::take(&mut **stage);
                    **stage = blocks.into_iter().map(Module::freeze).collect();
                }
                Network::ResNet(n)
            }
            Network::EfficientNetLite(mut n) => {
                n.conv_stem = n.conv_stem.freeze();
                n.bn0 = n.bn0.freeze();
                let blocks = std::mem::take(&mut n.blocks);
                n.blocks = blocks
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i + 1 < frozen { b.freeze() } else { b })
                    .collect();
                if frozen > n.blocks.len() + 1 {
                    n.conv_head = n.conv_head.freeze();
                    n.bn1 = n.bn1.freeze();
                }
                Network::EfficientNetLite(n)
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
        }
    }

    fn checkpoint_model(&self) -> &'static str {
        match self {
            Network::ResNet(n) => n.checkpoint_model(),
            Network::EfficientNetLite(n) => n.checkpoint_model(),
        }
    }

    fn backbone_exclusions(&self) -> &'static [&'static str] {
        match self {
            Network::ResNet(n) => n.backbone_exclusions(),
            Network::EfficientNetLite(n) => n.backbone_exclusions(),
        }
    }

    fn param_device(&self) -> Device {
        match self {
            Network::ResNet(n) => n.param_device(),
            Network::EfficientNetLite(n) => n.param_device(),
        }
    }
}

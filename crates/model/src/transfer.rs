//! Transfer learning: grey (1-channel) stems from RGB weights, and new classifier heads.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use covidct_weights::Checkpoint;

use crate::architecture::Architecture;
use crate::config::check_num_classes;
use crate::efficientnet::EfficientNetLite;
use crate::error::ModelError;
use crate::layers::head;
use crate::network::Network;
use crate::resnet::ResNet;

/// Converts a 3-input-channel stem convolution to 1 input channel by summing its kernel over the
/// colour channels.
///
/// For a grey image `g`, `conv(w, [g, g, g]) = Σ_c conv(w_c, g) = conv(Σ_c w_c, g)`: the result
/// is identical to replicating the grey channel three times, at a third of the stem's cost. The
/// grey input must be normalised with the mean and std of one channel of the pretrained network
/// (the value each replicated channel would have carried); with per-channel statistics that
/// differ (torchvision's ImageNet mean/std), replication is only an approximation either way.
/// `name` is used in the error when the convolution does not have 3 input channels.
pub fn sum_stem_to_grey(name: &'static str, mut conv: Conv2d) -> Result<Conv2d, ModelError> {
    let [_, channels, _, _] = conv.weight.dims();
    if channels != 3 || conv.groups != 1 {
        return Err(ModelError::Stem { name, channels });
    }
    let summed: Tensor<4> = conv.weight.val().sum_dim(1).detach();
    conv.weight = Param::from_tensor(summed);
    Ok(conv)
}

impl ResNet {
    /// The network for 1-channel input: the 3-channel stem `conv1` summed over colour channels
    /// (see [`sum_stem_to_grey`]). Normalise grey input with one channel's mean and std.
    pub fn into_grey(mut self) -> Result<Self, ModelError> {
        self.conv1 = sum_stem_to_grey("conv1", self.conv1)?;
        Ok(self)
    }

    /// The same backbone with a freshly initialised `num_classes` classifier head.
    pub fn with_num_classes(mut self, num_classes: usize) -> Result<Self, ModelError> {
        self.fc = new_head(&self.fc, num_classes)?;
        Ok(self)
    }
}

impl EfficientNetLite {
    /// The network for 1-channel input: the 3-channel stem `_conv_stem` summed over colour
    /// channels (see [`sum_stem_to_grey`]). Normalise grey input with mean 0.5 and std 0.5.
    pub fn into_grey(mut self) -> Result<Self, ModelError> {
        self.conv_stem = sum_stem_to_grey("_conv_stem", self.conv_stem)?;
        Ok(self)
    }

    /// The same backbone with a freshly initialised `num_classes` classifier head.
    pub fn with_num_classes(mut self, num_classes: usize) -> Result<Self, ModelError> {
        self.fc = new_head(&self.fc, num_classes)?;
        Ok(self)
    }
}

/// A pretrained checkpoint checked against its architecture and made ready for
/// [`Network::from_pretrained`].
#[derive(Debug)]
pub struct ImportedWeights {
    /// The 2D checkpoint (inflated-3D kernels summed over depth).
    pub checkpoint: Checkpoint,
    /// How many inflated-3D kernels were collapsed (0: the file was already 2D).
    pub collapsed: usize,
}

/// Reads a pretrained checkpoint (torchvision / `efficientnet_pytorch` names; zip or legacy
/// `.pth`, or safetensors; f32, f16 or bf16), collapses inflated-3D kernels to 2D and checks
/// every name and shape against `architecture` (a classifier may be absent: it is replaced in
/// transfer learning anyway).
pub fn import_pretrained(
    file: &std::path::Path,
    architecture: Architecture,
) -> Result<ImportedWeights, ModelError> {
    let refused = |reason: String| ModelError::Weights {
        path: file.to_path_buf(),
        reason,
    };
    let mut checkpoint =
        covidct_weights::load_checkpoint(file).map_err(|e| refused(e.to_string()))?;
    let collapsed = covidct_weights::collapse_depth(&mut checkpoint);
    let device = crate::select_device("cpu")?;
    Network::from_pretrained(architecture, std::slice::from_ref(&checkpoint), 2, &device).map_err(
        |e| {
            refused(format!(
                "is not a pretrained {architecture} checkpoint: {e}"
            ))
        },
    )?;
    Ok(ImportedWeights {
        checkpoint,
        collapsed,
    })
}

/// A freshly initialised `num_classes` head with the input width of `fc`.
fn new_head(fc: &Linear, num_classes: usize) -> Result<Linear, ModelError> {
    check_num_classes(num_classes)?;
    let [d_input, _] = fc.weight.dims();
    Ok(head(d_input, num_classes, &fc.weight.val().device()))
}

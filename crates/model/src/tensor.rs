//! Reading tensors back to the host.

use burn::tensor::Tensor;

use crate::error::ModelError;

/// Reads a tensor's values back as row-major f32 (`name` names it in the error).
pub fn tensor_to_vec<const D: usize>(
    name: &str,
    tensor: Tensor<D>,
) -> Result<Vec<f32>, ModelError> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| ModelError::TensorData {
            name: name.to_owned(),
            reason: format!("{err:?}"),
        })
}

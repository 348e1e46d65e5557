//! Choosing the compute device from a user's string.

use burn::tensor::Device;

use crate::error::ModelError;

/// Whether `spec` names the CPU (burn's flex backend).
pub fn is_cpu(spec: &str) -> bool {
    matches!(spec, "cpu" | "flex")
}

/// The device named by `spec`: `cpu` (burn's flex backend, always built), `cuda:N` (builds with
/// the `cuda` feature) or `wgpu` (builds with the `wgpu` feature; the first discrete GPU).
pub fn select_device(spec: &str) -> Result<Device, ModelError> {
    let unavailable = |reason: &'static str| ModelError::Config {
        field: "device",
        value: spec.to_owned(),
        reason,
    };
    match spec {
        cpu if is_cpu(cpu) => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(0))),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(unavailable(
            "this build has no wgpu backend: rebuild with `--features wgpu`",
        )),
        other => match other.strip_prefix("cuda") {
            #[cfg(feature = "cuda")]
            Some(index) => {
                let index: usize = index
                    .strip_prefix(':')
                    .unwrap_or("0")
                    .parse()
                    .map_err(|_| unavailable("write `cuda:N` with N the GPU index"))?;
                Ok(Device::cuda(index))
            }
            #[cfg(not(feature = "cuda"))]
            Some(_) => Err(unavailable(
                "this build has no CUDA backend: rebuild with `--features cuda`",
            )),
            None => Err(unavailable("must be `cpu`, `cuda:N` or `wgpu`")),
        },
    }
}

//! Choosing the compute device from a user's string.

use burn::tensor::Device;

use crate::error::ModelError;

/// How to get the LibTorch backend into a build that lacks it.
#[cfg(not(feature = "tch"))]
const TCH_MISSING: &str = "this build has no LibTorch backend: run `bash scripts/setup.sh libtorch`, \
     `export $(bash scripts/libtorch-env.sh)` and rebuild with `--features tch` (docs/MODEL.md, Devices)";

/// Whether `spec` names the CPU through burn's flex backend.
pub fn is_cpu(spec: &str) -> bool {
    matches!(spec, "cpu" | "flex")
}

/// The devices of this build that run on the CPU, flex first: `cpu` always, `tch` (LibTorch) in
/// builds with the `tch` feature. Tests that must hold on every backend run on each of these.
pub fn cpu_devices() -> &'static [&'static str] {
    #[cfg(feature = "tch")]
    return &["cpu", "tch"];
    #[cfg(not(feature = "tch"))]
    &["cpu"]
}

/// The device named by `spec`: `cpu` (burn's flex backend, always built), `tch` / `tch-cuda:N`
/// (LibTorch on the CPU / the N-th NVIDIA GPU; builds with the `tch` feature), `cuda:N` (builds
/// with the `cuda` feature) or `wgpu` (builds with the `wgpu` feature; the first discrete GPU).
pub fn select_device(spec: &str) -> Result<Device, ModelError> {
    let unavailable = |reason: &'static str| ModelError::Config {
        field: "device",
        value: spec.to_owned(),
        reason,
    };
    let index = |suffix: &str, form: &'static str| -> Result<usize, ModelError> {
        match suffix {
            "" => Ok(0),
            _ => suffix
                .strip_prefix(':')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| unavailable(form)),
        }
    };
    match spec {
        cpu if is_cpu(cpu) => Ok(Device::flex()),
        "tch" => libtorch(None).map_err(unavailable),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(0))),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(unavailable(
            "this build has no wgpu backend: rebuild with `--features wgpu`",
        )),
        other => {
            if let Some(suffix) = other.strip_prefix("tch-cuda") {
                let gpu = index(suffix, "write `tch-cuda:N` with N the GPU index")?;
                return libtorch(Some(gpu)).map_err(unavailable);
            }
            let Some(suffix) = other.strip_prefix("cuda") else {
                return Err(unavailable(
                    "must be `cpu`, `tch`, `tch-cuda:N`, `cuda:N` or `wgpu`",
                ));
            };
            let gpu = index(suffix, "write `cuda:N` with N the GPU index")?;
            cubecl_cuda(gpu).map_err(unavailable)
        }
    }
}

/// LibTorch on the CPU (`None`) or the `gpu`-th NVIDIA GPU, or why this build cannot.
fn libtorch(gpu: Option<usize>) -> Result<Device, &'static str> {
    #[cfg(feature = "tch")]
    #[allow(
        deprecated,
        reason = "burn 0.22 deprecates burn-tch; docs/MODEL.md says why we use it"
    )]
    return Ok(gpu.map_or_else(Device::libtorch, Device::libtorch_cuda));
    #[cfg(not(feature = "tch"))]
    {
        let _ = gpu;
        Err(TCH_MISSING)
    }
}

/// burn's CUDA backend on the `gpu`-th GPU, or why this build cannot.
fn cubecl_cuda(gpu: usize) -> Result<Device, &'static str> {
    #[cfg(feature = "cuda")]
    return Ok(Device::cuda(gpu));
    #[cfg(not(feature = "cuda"))]
    {
        let _ = gpu;
        Err("this build has no CUDA backend: rebuild with `--features cuda`")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

    use super::*;

    #[test]
    fn every_built_cpu_device_is_selectable_and_bad_specs_name_the_field() {
        for spec in cpu_devices() {
            select_device(spec).unwrap();
        }
        for bad in ["gpu", "cuda:x", "tch-cuda:", "tch-cuda:one"] {
            let error = select_device(bad).unwrap_err().to_string();
            assert!(error.contains("device") && error.contains(bad), "{error}");
        }
        #[cfg(not(feature = "tch"))]
        {
            let error = select_device("tch").unwrap_err().to_string();
            assert!(error.contains("--features tch"), "{error}");
        }
    }
}

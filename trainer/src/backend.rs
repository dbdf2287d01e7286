//! The one place that names a burn backend. Everything else takes a `Device`.

use burn::prelude::*;

/// The CPU device: burn-ndarray.
#[allow(deprecated)] // ndarray is deprecated upstream in favour of flex; the project pins it.
pub fn cpu() -> Device {
    Device::ndarray()
}

/// The device a `--device` argument names: `cpu` (ndarray), or with the `tch` feature
/// `tch-cpu` (libtorch on the CPU) and `cuda:N` (libtorch on GPU N).
#[allow(deprecated)]
pub fn parse_device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(cpu()),
        #[cfg(feature = "tch")]
        "tch-cpu" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        other if other.starts_with("cuda:") => other[5..]
            .parse::<usize>()
            .map(Device::libtorch_cuda)
            .map_err(|_| format!("bad CUDA device {other:?} (expected cuda:N)")),
        other => Err(format!(
            "unknown device {other:?}: this build supports {}",
            supported_devices()
        )),
    }
}

pub fn supported_devices() -> &'static str {
    if cfg!(feature = "tch") {
        "cpu, tch-cpu, cuda:N"
    } else {
        "cpu (build with --features tch for tch-cpu and cuda:N)"
    }
}

/// A short name for run records.
pub fn describe(device: &Device) -> String {
    format!("{device:?}")
}

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

/// The torch device (`cpu` or `cuda:N`) on which TorchScript modules should run next to
/// `device`. burn keeps its dispatch device private; its Debug form
/// (`Device<LibTorch(Cuda(0))>`) is the one public view of which GPU a device is.
pub fn torch_device_name(device: &Device) -> String {
    let debug = format!("{device:?}");
    match debug.split_once("Cuda(") {
        Some((_, rest)) => format!("cuda:{}", rest.split(')').next().unwrap_or("0")),
        None => "cpu".into(),
    }
}

/// A short name for run records.
pub fn describe(device: &Device) -> String {
    format!("{device:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_device_names_follow_the_burn_device() {
        assert_eq!(torch_device_name(&cpu()), "cpu");
        assert!(parse_device("cuda").is_err());
        #[cfg(feature = "tch")]
        {
            let name = |d: &str| torch_device_name(&parse_device(d).unwrap());
            assert_eq!(name("tch-cpu"), "cpu");
            assert_eq!(name("cuda:1"), "cuda:1");
            assert_eq!(
                torch_device_name(&parse_device("cuda:3").unwrap().autodiff()),
                "cuda:3"
            );
        }
    }
}

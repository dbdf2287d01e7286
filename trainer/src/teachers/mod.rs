//! Teachers: everything the generator can run, behind one trait.
//!
//! - `gaussian`: one Gaussian fitted to the data (closed-form ODE; the solver reference);
//! - `gmm`: one Gaussian per class, exact posterior mean (the default CPU teacher);
//! - `unet:DIR`: a U-Net trained with the EDM loss by `bdense teacher train`.

pub mod gmm;
pub mod unet;

use std::path::PathBuf;

use burn::prelude::*;

use crate::data::ImageSet;
use crate::solvers::Denoiser;

pub use gmm::{FitConfig, GmmParams};

/// A denoiser plus the facts the store records about it. Shared across threads: generation
/// solves several batches at once with one teacher.
pub trait Teacher: Denoiser + Send + Sync {
    fn info(&self) -> TeacherInfo;
}

#[derive(Debug, Clone, PartialEq)]
pub struct TeacherInfo {
    pub kind: String,
    pub checkpoint_hash: Option<String>,
    /// `[C, H, W]`.
    pub dims: [usize; 3],
    /// Class-conditional teachers need a label per trajectory.
    pub conditional: bool,
    pub num_classes: usize,
    pub params: Vec<(String, String)>,
}

/// Which teacher, as the command line names it.
#[derive(Debug, Clone, PartialEq)]
pub enum TeacherSpec {
    Gaussian {
        rank: usize,
    },
    Gmm {
        rank: usize,
        conditional: bool,
    },
    Unet(PathBuf),
    /// A TorchScript denoiser (needs a build with `--features tch`).
    TorchScript(PathBuf),
}

impl std::str::FromStr for TeacherSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gaussian" => Ok(TeacherSpec::Gaussian { rank: 32 }),
            "gaussian-diag" => Ok(TeacherSpec::Gaussian { rank: 0 }),
            "gmm" => Ok(TeacherSpec::Gmm {
                rank: 32,
                conditional: false,
            }),
            "gmm-cond" => Ok(TeacherSpec::Gmm {
                rank: 32,
                conditional: true,
            }),
            _ => {
                if let Some(dir) = s.strip_prefix("unet:") {
                    Ok(TeacherSpec::Unet(dir.into()))
                } else if let Some(file) = s.strip_prefix("torchscript:") {
                    Ok(TeacherSpec::TorchScript(file.into()))
                } else {
                    Err(format!(
                        "unknown teacher {s:?} (expected gaussian, gaussian-diag, gmm, gmm-cond, unet:DIR or torchscript:FILE)"
                    ))
                }
            }
        }
    }
}

impl std::fmt::Display for TeacherSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TeacherSpec::Gaussian { rank: 0 } => f.write_str("gaussian-diag"),
            TeacherSpec::Gaussian { .. } => f.write_str("gaussian"),
            TeacherSpec::Gmm {
                conditional: false, ..
            } => f.write_str("gmm"),
            TeacherSpec::Gmm {
                conditional: true, ..
            } => f.write_str("gmm-cond"),
            TeacherSpec::Unet(dir) => write!(f, "unet:{}", dir.display()),
            TeacherSpec::TorchScript(file) => write!(f, "torchscript:{}", file.display()),
        }
    }
}

/// A fitted mixture on a device, as a teacher.
pub struct GmmTeacher {
    pub params: GmmParams,
    denoiser: gmm::GmmDenoiser,
    kind: &'static str,
}

impl GmmTeacher {
    pub fn new(params: GmmParams, kind: &'static str, device: &Device) -> Self {
        GmmTeacher {
            denoiser: params.denoiser(device),
            params,
            kind,
        }
    }
}

impl Denoiser for GmmTeacher {
    fn denoise(&self, x: Tensor<4>, sigma: f64, labels: Option<&Tensor<1, Int>>) -> Tensor<4> {
        self.denoiser.denoise(x, sigma, labels)
    }
}

impl Teacher for GmmTeacher {
    fn info(&self) -> TeacherInfo {
        let c = &self.params.components;
        TeacherInfo {
            kind: self.kind.into(),
            checkpoint_hash: Some(self.params.content_hash()),
            dims: self.params.dims,
            conditional: self.params.conditional,
            num_classes: if self.params.conditional { c.len() } else { 0 },
            params: vec![
                ("components".into(), c.len().to_string()),
                (
                    "pca_rank".into(),
                    c.first().map_or(0, |c| c.rank()).to_string(),
                ),
            ],
        }
    }
}

/// Builds the teacher `spec` names: fits the analytic ones to `train`, loads the U-Net.
pub fn load(
    spec: &TeacherSpec,
    train: &ImageSet,
    device: &Device,
) -> crate::Result<Box<dyn Teacher>> {
    Ok(match spec {
        TeacherSpec::Gaussian { rank } => {
            let fit = FitConfig {
                per_class: false,
                rank: *rank,
            };
            Box::new(GmmTeacher::new(
                GmmParams::fit(train, fit, false),
                "gaussian",
                device,
            ))
        }
        TeacherSpec::Gmm { rank, conditional } => {
            let fit = FitConfig {
                per_class: true,
                rank: *rank,
            };
            Box::new(GmmTeacher::new(
                GmmParams::fit(train, fit, *conditional),
                "gmm",
                device,
            ))
        }
        TeacherSpec::Unet(dir) => Box::new(unet::UnetTeacher::load(dir, device)?),
        TeacherSpec::TorchScript(file) => {
            let torch_device = crate::backend::torch_device_name(device);
            torchscript(
                file,
                [train.channels, train.height, train.width],
                &torch_device,
            )?
        }
    })
}

/// A TorchScript denoiser on a torch device (`cpu` or `cuda:N`) for images of `dims`.
#[cfg(feature = "tch")]
pub fn torchscript(
    file: &std::path::Path,
    dims: [usize; 3],
    device: &str,
) -> crate::Result<Box<dyn Teacher>> {
    Ok(Box::new(crate::torch::TorchScriptTeacher::load(
        file, dims, 0, device,
    )?))
}

#[cfg(not(feature = "tch"))]
pub fn torchscript(
    file: &std::path::Path,
    _dims: [usize; 3],
    _device: &str,
) -> crate::Result<Box<dyn Teacher>> {
    Err(crate::TrainerError::Config(format!(
        "teacher torchscript:{}: this bdense was built without libtorch; rebuild with --features tch (README, \"The libtorch path\")",
        file.display()
    )))
}

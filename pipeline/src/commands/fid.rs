//! `bdense fid --inception FILE A.npy B.npy`: the Fréchet Inception Distance between two image
//! sets, with the FID Inception network as TorchScript (needs a build with `--features tch`).

use std::process::ExitCode;

use crate::cli::FidArgs;

pub fn run(args: &FidArgs) -> anyhow::Result<ExitCode> {
    let fid = inception::fid_between(&args.inception, &args.a, &args.b, &args.device)?;
    println!(
        "fid {fid:.6} between {} and {} (Inception pool3, {})",
        args.a.display(),
        args.b.display(),
        args.inception.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "tch")]
pub mod inception {
    use std::path::Path;

    use anyhow::Context;
    use bdense_trainer::metrics::{Gaussian, frechet_distance};
    use bdense_trainer::torch::InceptionFeatures;

    use crate::images::read_npy;

    /// pool3 statistics of images `[n, C, H, W]` in [-1, 1] (f64, as FID specifies).
    pub fn statistics(net: &InceptionFeatures, images: &[f32], dims: [usize; 3]) -> Gaussian {
        Gaussian::fit(&net.features(images, dims, 50), 2048)
    }

    pub fn fid_between(inception: &Path, a: &Path, b: &Path, device: &str) -> anyhow::Result<f64> {
        let net = InceptionFeatures::load(inception, device)?;
        let stats = |p: &Path| -> anyhow::Result<Gaussian> {
            let (values, shape) = read_npy(p)?;
            let dims: [usize; 3] = shape
                .get(1..4)
                .and_then(|s| s.try_into().ok())
                .with_context(|| format!("{}: expected [n, C, H, W]", p.display()))?;
            Ok(statistics(&net, &values, dims))
        };
        Ok(frechet_distance(&stats(a)?, &stats(b)?))
    }
}

#[cfg(not(feature = "tch"))]
pub mod inception {
    use std::path::Path;

    pub fn fid_between(
        _inception: &Path,
        _a: &Path,
        _b: &Path,
        _device: &str,
    ) -> anyhow::Result<f64> {
        anyhow::bail!(
            "Inception FID runs the network with libtorch: rebuild with --features tch (README, \"The libtorch path\")"
        )
    }
}

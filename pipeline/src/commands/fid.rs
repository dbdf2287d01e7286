//! `bdense fid --inception FILE A.npy B.npy`: the Fréchet Inception Distance between two image
//! sets, with the FID Inception network as TorchScript (needs a build with `--features tch`).

use std::process::ExitCode;

use crate::cli::FidArgs;
use crate::evaluation::fid::{fid_between, inception_network};

pub fn run(args: &FidArgs) -> anyhow::Result<ExitCode> {
    let network = inception_network(&args.inception)?;
    let fid = fid_between(&network, &args.a, &args.b, &args.device)?;
    println!(
        "fid {fid:.6} between {} and {} (Inception pool3, {})",
        args.a.display(),
        args.b.display(),
        network.display()
    );
    Ok(ExitCode::SUCCESS)
}

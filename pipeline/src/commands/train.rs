//! `bdense train`: a B-DENSE or SFD student from a store, reproducible and resumable. The run
//! directory, its record and the training itself live in [`crate::run`].

use std::process::ExitCode;

use crate::cli::TrainArgs;

// Kept while `commands::bench` still imports them from here; new code uses `crate::run`.

pub fn run(args: &TrainArgs) -> anyhow::Result<ExitCode> {
    println!("{}", crate::run::train(args, true)?);
    Ok(ExitCode::SUCCESS)
}

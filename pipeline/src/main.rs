//! `bdense`: distill diffusion models with B-DENSE from a Parquet trajectory store.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = bdense_pipeline::cli::Cli::parse();
    match bdense_pipeline::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bdense: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

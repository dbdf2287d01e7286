//! `bdense`: distill diffusion models with B-DENSE from a Parquet trajectory store.

use std::process::ExitCode;

use clap::Parser;

// glibc's allocator hands large tensor and Parquet buffers back to the kernel and page-faults
// them in again on every step; mimalloc keeps them (docs/perf.md has the measurement).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bdense_pipeline::restore_sigpipe();
    let cli = bdense_pipeline::cli::Cli::parse();
    match bdense_pipeline::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bdense: error: {}", bdense_pipeline::describe_error(&e));
            ExitCode::from(2)
        }
    }
}

//! End-to-end tests: `bdense` run as a user runs it, in a fresh directory per test.

mod args;
#[cfg(feature = "cluster")]
mod cluster;
mod crash;
mod generate;
mod pd;
mod queries;
mod readers;
mod report;
mod store;
mod sweep;
mod torch;
mod train;
mod workers;

use bdense_tests::TestDir;

pub fn dir() -> TestDir {
    TestDir::new(env!("CARGO_BIN_EXE_bdense"))
}

/// `store/p`: 64 GMM trajectories of the procedural shapes on a 13-point grid, 2 shards.
pub fn procedural_store(t: &TestDir) {
    t.bdense([
        "generate",
        "store/p",
        "--dataset",
        "procedural",
        "--teacher",
        "gmm",
        "--grid",
        "13",
        "--count",
        "64",
        "--rows-per-shard",
        "32",
        "--fit-limit",
        "1024",
    ])
    .ok();
}

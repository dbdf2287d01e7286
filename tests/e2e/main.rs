//! End-to-end tests: `bdense` run as a user runs it, in a fresh directory per test.

mod args;
mod bench;
#[cfg(feature = "cluster")]
mod cluster;
mod crash;
mod generate;
mod pd;
mod queries;
mod readers;
mod report;
#[cfg(feature = "s3")]
mod s3;
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
    t.bdense(procedural_args("store/p")).ok();
}

/// `generate` arguments for [`procedural_store`]'s dataset at `dataset` (a path or a URL).
pub fn procedural_args(dataset: &str) -> Vec<String> {
    gmm_procedural_args(dataset, 13, 64, 32, 1024)
}

/// `generate` arguments for a small dataset shaped as the README's SQL block expects (49
/// steps, so step 48 is the last; 8 GMM trajectories of the procedural shapes).
pub fn readme_store_args(dataset: &str) -> Vec<String> {
    gmm_procedural_args(dataset, 49, 8, 8, 256)
}

/// `generate` arguments: the GMM teacher on the procedural shapes.
fn gmm_procedural_args(dataset: &str, grid: u32, count: u32, rows: u32, fit: u32) -> Vec<String> {
    let mut args: Vec<String> = [
        "generate",
        dataset,
        "--dataset",
        "procedural",
        "--teacher",
        "gmm",
    ]
    .map(String::from)
    .to_vec();
    for (flag, value) in [
        ("--grid", grid),
        ("--count", count),
        ("--rows-per-shard", rows),
        ("--fit-limit", fit),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    args
}

/// The step, weights hash and EMA hash of a training run's newest checkpoint.
pub fn weights(run: &std::path::Path) -> String {
    let ckpt = bdense_trainer::checkpoint::latest(run).unwrap().unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ckpt.join("meta.json")).unwrap()).unwrap();
    format!(
        "{} {} {}",
        meta["step"], meta["weights_hash"], meta["ema_hash"]
    )
}

/// The statements of the README's SQL example block, each without its comment lines.
pub fn readme_queries() -> Vec<String> {
    let readme = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let section = &text[text
        .find("### SQL over teacher paths")
        .expect("SQL section")..];
    let block = &section[section.find("```sql\n").expect("sql block") + 7..];
    let block = &block[..block.find("```").unwrap()];
    block
        .split(';')
        .map(|q| {
            q.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_string()
        })
        .filter(|q| !q.is_empty())
        .collect()
}

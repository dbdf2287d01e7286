//! The trajectory store: teacher trajectories as Parquet datasets keyed by step.
//!
//! A *store* is a directory of *datasets*. A dataset is a directory of hive-partitioned Parquet
//! files, one per (step, shard), that pyarrow, polars, duckdb and DataFusion open as they are,
//! plus everything else under `_bdense/` (which such readers skip): the committed manifest
//! versions and the writers' lock files:
//!
//! ```text
//! <store>/<name>/step=7/shard-00003.parquet
//! <store>/<name>/_bdense/manifests/00000000000000000042.json   (the newest is the snapshot)
//! <store>/<name>/_bdense/writer-PID-N.lock
//! ```
//!
//! Files are written under a hidden temporary name and published whole; each commit is a new
//! manifest version created with put-if-absent, so a reader sees one whole snapshot and
//! several writers can commit to one dataset (docs/STORE-PROTOCOL.md). Files the newest
//! manifest does not name are ignored by readers; [`gc::collect_garbage`] removes those a dead
//! writer left (only names the store creates, never while their writer lives). Datasets of an
//! older bdense (`manifest.json`, `step=0007`) open read-only; [`upgrade`] moves them.
//!
//! The sigma grid the manifest records ([`grid::Grid`]) and the (N, K) student layout over it
//! ([`layout::StudentLayout`]) are defined here, once, for every crate above.
//!
//! Every read is checked: a manifest is range-checked and its paths confined to the dataset
//! when loaded, and a step file's size, xxh3 hash, row count and trajectory ids are compared
//! with the manifest before its data are handed out ([`integrity`]).

pub mod backend;
pub mod copy;
pub mod decode;
pub mod error;
pub mod gc;
pub mod grid;
pub mod integrity;
pub mod layout;
pub mod location;
pub mod manifest;
pub mod object;
pub mod parallel;
pub mod reader;
pub mod schema;
pub mod seeds;
pub mod synthetic;
pub mod upgrade;
pub mod verify;
pub mod writer;

mod fsutil;

pub use arrow;
pub use integrity::VerifiedFiles;
pub use parquet;

pub use error::{Result, StoreError};
pub use grid::Grid;
pub use layout::{LayoutError, StudentLayout};
pub use manifest::{Dims, Dtype, FileEntry, Manifest, PdRound, Provenance, SeedPolicy, ShardEntry};
pub use reader::{Dataset, StateView, StepBatch, Trajectory};
pub use writer::{DatasetSpec, DatasetWriter, ShardData, WriteOptions};

/// The name of the dataset at `dir` (`STORE/NAME`): its directory's name, which is also its
/// SQL table name. `None` for a path with no final component (`/`, `..`).
pub fn dataset_name(dir: &std::path::Path) -> Option<String> {
    dir.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Lists the datasets (directories or prefixes holding a committed manifest, of either layout)
/// inside a store (a path, `file://PATH` or `s3://BUCKET/PREFIX`), sorted by name.
pub fn list_datasets(store: &std::path::Path) -> Result<Vec<String>> {
    let backend = backend::open(store)?;
    if let Some(dir) = backend.local_dir() {
        // A missing store is an error, not an empty one.
        std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    let mut names = Vec::new();
    for name in backend.list("")? {
        let dataset = backend.locate(&name);
        if writer::is_dataset_in(backend::open(&dataset)?.as_ref())? {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

//! The trajectory store: teacher trajectories as Parquet datasets keyed by step.
//!
//! A *store* is a directory of *datasets*. A dataset is a `manifest.json` (the committed
//! snapshot) plus one Parquet file per (step, shard):
//!
//! ```text
//! <store>/<name>/manifest.json
//! <store>/<name>/step=0007/shard-00003.parquet
//! ```
//!
//! Files are written under a temporary name and renamed when complete; the manifest is replaced
//! atomically last, so a reader sees either the old snapshot or the new one. Files the manifest
//! does not name are ignored by readers; [`gc::collect_garbage`] removes those a dead writer
//! left (only names the store creates, never while their writer lives).
//!
//! The sigma grid the manifest records ([`grid::Grid`]) and the (N, K) student layout over it
//! ([`layout::StudentLayout`]) are defined here, once, for every crate above.
//!
//! Every read is checked: a manifest is range-checked and its paths confined to the dataset
//! when loaded, and a step file's size, xxh3 hash, row count and trajectory ids are compared
//! with the manifest before its data are handed out ([`integrity`]).

pub mod decode;
pub mod error;
pub mod gc;
pub mod grid;
pub mod integrity;
pub mod layout;
pub mod manifest;
pub mod reader;
pub mod schema;
pub mod seeds;
pub mod synthetic;
pub mod verify;
pub mod writer;

mod fsutil;

pub use arrow;
pub use integrity::VerifiedFiles;
pub use parquet;

pub use error::{Result, StoreError};
pub use grid::Grid;
pub use layout::{LayoutError, StudentLayout};
pub use manifest::{Dims, Dtype, FileEntry, Manifest, Provenance, SeedPolicy, ShardEntry};
pub use reader::{Dataset, StateView, StepBatch, Trajectory};
pub use writer::{DatasetSpec, DatasetWriter, ShardData, WriteOptions};

/// The name of the dataset at `dir` (`STORE/NAME`): its directory's name, which is also its
/// SQL table name. `None` for a path with no final component (`/`, `..`).
pub fn dataset_name(dir: &std::path::Path) -> Option<String> {
    dir.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Lists the datasets (directories holding a `manifest.json`) inside a store, sorted by name.
pub fn list_datasets(store: &std::path::Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(store).map_err(|e| StoreError::io(store, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(store, e))?;
        if entry.path().join(manifest::MANIFEST_FILE).is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

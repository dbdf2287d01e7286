//! `gc`: removes files the committed manifest does not name (staged files of a crashed writer,
//! stray files dropped into the dataset), under the dataset lock so no commit races it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::fsutil::DatasetLock;
use crate::manifest::{LOCK_FILE, MANIFEST_FILE, Manifest};

#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
}

/// Deletes unreferenced files (or only lists them when `dry_run`).
///
/// A writer that is still staging files for an uncommitted shard loses them; run gc when no
/// `generate` is writing to the dataset.
pub fn collect_garbage(dataset_dir: &Path, dry_run: bool) -> Result<GcReport> {
    let _lock = DatasetLock::acquire(dataset_dir)?;
    let manifest = Manifest::load(dataset_dir)?;
    let keep: HashSet<PathBuf> = manifest
        .shards
        .iter()
        .flat_map(|s| s.files.iter().map(|f| dataset_dir.join(&f.path)))
        .chain([dataset_dir.join(MANIFEST_FILE), dataset_dir.join(LOCK_FILE)])
        .collect();
    let mut report = GcReport::default();
    sweep(dataset_dir, &keep, dry_run, &mut report)?;
    Ok(report)
}

fn sweep(dir: &Path, keep: &HashSet<PathBuf>, dry_run: bool, report: &mut GcReport) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| StoreError::io(&path, e))?;
        if kind.is_dir() {
            sweep(&path, keep, dry_run, report)?;
            if !dry_run && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none()) {
                let _ = std::fs::remove_dir(&path);
            }
        } else if !keep.contains(&path) {
            report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
            report.removed.push(path);
        }
    }
    Ok(())
}

//! `bdense store upgrade`: moves a dataset of an older bdense's layout (`manifest.json` at the
//! top, `step=0007` partitions, `manifest.lock`, `.writer-PID-N.lock`) to the current one
//! (`_bdense/manifests/<v>.json`, `step=7`), so that writers, gc and other Parquet readers can
//! use it.
//!
//! Crash safety without copying data: each step file is hard-linked to its new name (both
//! names hold the same bytes), version 1 naming the new paths is put, and only then are the
//! old names, `manifest.json` last of all, removed. Killed at any point, the dataset reads as
//! before (only `manifest.json`) or as upgraded (version 1, which wins over `manifest.json`),
//! and running the upgrade again finishes it. Readers that opened the old snapshot before the
//! upgrade may find its files gone: run it while nothing reads or writes the dataset.

use std::collections::HashSet;
use std::path::Path;

use crate::backend::{Backend, LocalDir};
use crate::error::{Result, StoreError};
use crate::fsutil::{self, LEGACY_WRITER_LOCK_PREFIX, WriterLock};
use crate::manifest::{self, LEGACY_LOCK_FILE, LEGACY_MANIFEST_FILE, Manifest, Version};

#[derive(Debug, Default)]
pub struct UpgradeReport {
    /// Step files given their new names.
    pub files_moved: usize,
    /// The dataset was already in the current layout (an interrupted upgrade may have been
    /// finished).
    pub already: bool,
}

/// Upgrades the dataset at `dir` in place (see the module's documentation).
pub fn upgrade(dir: &Path) -> Result<UpgradeReport> {
    if crate::location::is_remote(dir) {
        // bdense wrote to object storage only in the current layout.
        return Err(StoreError::invalid(
            dir,
            "datasets on object storage are always in the current layout; nothing to upgrade",
        ));
    }
    let backend = LocalDir::new(dir);
    let (version, current) = manifest::load_latest(&backend)?;
    let legacy_path = dir.join(LEGACY_MANIFEST_FILE);
    if let Version::Versioned(_) = version {
        // Done, or killed after its commit: remove what the old manifest named and the new
        // one does not.
        let mut report = UpgradeReport {
            already: true,
            ..UpgradeReport::default()
        };
        if let Some(bytes) = backend.get(LEGACY_MANIFEST_FILE)? {
            let old = Manifest::parse(&bytes, &legacy_path)?;
            report.files_moved = remove_old_names(dir, &old, &current)?;
        }
        return Ok(report);
    }
    refuse_live_legacy_writers(dir)?;
    let mut new = current.clone();
    let mut moved = 0;
    for shard in &mut new.shards {
        for f in &mut shard.files {
            let rel = manifest::file_name(f.step, shard.index);
            if rel == f.path {
                continue;
            }
            link_same_bytes(dir, &f.path, &rel, &f.xxh3)?;
            f.path = rel;
            moved += 1;
        }
    }
    if !manifest::put_version(&backend, 1, &new)? {
        // Another upgrade of this dataset committed first: finish from its version.
        return upgrade(dir);
    }
    remove_old_names(dir, &current, &new)?;
    Ok(UpgradeReport {
        files_moved: moved,
        already: false,
    })
}

/// Gives the step file `from` the second name `to`; a file already at `to` (an interrupted
/// upgrade made it) must hold the manifest's bytes.
fn link_same_bytes(dir: &Path, from: &str, to: &str, xxh3: &str) -> Result<()> {
    let (src, dst) = (dir.join(from), dir.join(to));
    let parent = dst.parent().expect("step files live in a directory");
    std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    match std::fs::hard_link(&src, &dst) {
        Ok(()) => fsutil::sync_dir(parent),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let (_, hash) = crate::writer::hash_file(&dst)?;
            if hash == xxh3 {
                Ok(())
            } else {
                Err(StoreError::invalid(
                    &dst,
                    format!(
                        "is in the way of upgrading {from}: it holds other bytes (xxh3 {hash}, the manifest says {xxh3})"
                    ),
                ))
            }
        }
        Err(e) => Err(StoreError::io(&src, e)),
    }
}

/// An older bdense still writing would keep naming the old layout: refuse while one runs.
fn refuse_live_legacy_writers(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(LEGACY_WRITER_LOCK_PREFIX)
            && WriterLock::owner(&name).is_some()
            && WriterLock::is_held(&entry.path())
        {
            return Err(StoreError::invalid(
                entry.path(),
                "a writer of an older bdense is running on this dataset; upgrade it once it ends",
            ));
        }
    }
    Ok(())
}

/// Removes the names only the old manifest uses, then the old manifest and lock files (the
/// manifest last, so that an interrupted removal is finished by running the upgrade again).
/// Returns how many step files had other names.
fn remove_old_names(dir: &Path, old: &Manifest, new: &Manifest) -> Result<usize> {
    let keep: HashSet<&str> = new
        .shards
        .iter()
        .flat_map(|s| s.files.iter().map(|f| f.path.as_str()))
        .collect();
    let mut removed = 0;
    let mut dirs = HashSet::new();
    for f in old.shards.iter().flat_map(|s| &s.files) {
        if keep.contains(f.path.as_str()) {
            continue;
        }
        let path = dir.join(&f.path);
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        if let Some(parent) = path.parent() {
            dirs.insert(parent.to_path_buf());
        }
    }
    for d in dirs {
        // Only if empty: a directory holding anything else is not ours to remove.
        let _ = std::fs::remove_dir(d);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name == LEGACY_LOCK_FILE
            || (name.starts_with(LEGACY_WRITER_LOCK_PREFIX)
                && WriterLock::owner(&name).is_some()
                && !WriterLock::is_held(&entry.path()))
            || fsutil::temp_owner(&name).is_some_and(|(_, base)| base == LEGACY_MANIFEST_FILE);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let legacy = dir.join(LEGACY_MANIFEST_FILE);
    match std::fs::remove_file(&legacy) {
        Ok(()) => fsutil::sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&legacy, e)),
    }
    Ok(removed)
}

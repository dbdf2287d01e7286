//! Crash-safe file primitives: everything durable is written to a temporary name, synced and
//! renamed into place, then the directory is synced so the rename itself survives a crash.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// Temporary sibling of `path`; dot-prefixed so DataFusion, pyarrow and duckdb skip it.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Renames a complete, synced temp file into place and makes the rename durable.
pub(crate) fn publish(temp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(temp, path).map_err(|e| StoreError::io(path, e))?;
    sync_dir(path.parent().expect("published files live in a directory"))
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = temp_path(path);
    let result = File::create(&temp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(|e| StoreError::io(&temp, e));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    publish(&temp, path)
}

/// An exclusive advisory lock on the dataset's lock file, released on drop.
pub(crate) struct DatasetLock(File);

impl DatasetLock {
    pub(crate) fn acquire(dataset_dir: &Path) -> Result<DatasetLock> {
        let path = dataset_dir.join(crate::manifest::LOCK_FILE);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.lock().map_err(|e| StoreError::io(&path, e))?;
        Ok(DatasetLock(file))
    }
}

impl Drop for DatasetLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

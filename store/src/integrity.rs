//! Integrity on every read: a step file is handed to a decoder only after its bytes are shown
//! to be the ones the manifest committed (size and xxh3), and its row count and trajectory
//! ids agree with the manifest. `verify` reports every problem; readers stop at the first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use crate::error::{Result, StoreError};
use crate::fsutil;
use crate::manifest::{FileEntry, ShardEntry};
use crate::schema;

/// A step file's bytes as read, before any check: what `verify` inspects.
pub(crate) struct RawFile {
    pub path: PathBuf,
    pub bytes: Bytes,
    /// The file holds more than the manifest's byte count (only that many were read).
    pub longer: bool,
}

impl RawFile {
    /// Reads `entry` from the dataset at `dir`: confined to the dataset, at most the
    /// manifest's byte count.
    pub(crate) fn read(dir: &Path, entry: &FileEntry) -> Result<RawFile> {
        let (file, path) = fsutil::open_confined(dir, &entry.path)?;
        let (bytes, longer) = fsutil::read_bounded(file, &path, entry.bytes)?;
        Ok(RawFile {
            path,
            bytes: Bytes::from(bytes),
            longer,
        })
    }

    /// What differs from the manifest's size and hash, if anything.
    pub(crate) fn mismatch(&self, entry: &FileEntry) -> Option<String> {
        if self.longer || self.bytes.len() as u64 != entry.bytes {
            let size = std::fs::metadata(&self.path).map_or(self.bytes.len() as u64, |m| m.len());
            return Some(format!("size {size} bytes, manifest says {}", entry.bytes));
        }
        let hash = hash_hex(&self.bytes);
        (hash != entry.xxh3).then(|| format!("content hash {hash}, manifest says {}", entry.xxh3))
    }
}

pub(crate) fn hash_hex(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

pub(crate) fn damaged(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Damaged {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Runs a decoder over bytes that may be damaged in ways its own checks miss (a flipped bit in
/// the footer's embedded Arrow schema makes arrow-ipc panic, even when a rewritten manifest
/// vouches for the file): a panic becomes an error naming the file.
pub(crate) fn guard<T>(path: &Path, decode: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(damaged(
            path,
            format!("the Parquet/Arrow decoder failed: {what}"),
        ))
    })
}

/// The bytes of `entry`, shown to be exactly the committed ones.
pub(crate) fn read_verified(dir: &Path, entry: &FileEntry) -> Result<(PathBuf, Bytes)> {
    let raw = RawFile::read(dir, entry)?;
    match raw.mismatch(entry) {
        Some(detail) => Err(damaged(&raw.path, detail)),
        None => Ok((raw.path, raw.bytes)),
    }
}

/// Checks a file's footer against its shard: row count and (from the column statistics) the
/// trajectory id range, without decoding any page.
pub(crate) fn check_footer(path: &Path, meta: &ParquetMetaData, shard: &ShardEntry) -> Result<()> {
    let rows = meta.file_metadata().num_rows();
    if u64::try_from(rows).ok() != Some(shard.rows) {
        return Err(damaged(
            path,
            format!("holds {rows} rows, the manifest says {}", shard.rows),
        ));
    }
    let Some(col) = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == schema::TRAJ_ID)
    else {
        return Ok(()); // the schema check names a missing column
    };
    let mut next = shard.first_id;
    for (g, group) in meta.row_groups().iter().enumerate() {
        let Some(Statistics::Int64(s)) = group.column(col).statistics() else {
            return Ok(()); // no statistics to compare; the hash still holds
        };
        let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
            return Ok(());
        };
        let (min, max) = (min as u64, max as u64);
        let span = max.checked_sub(min).map(|d| d + 1);
        if min != next || span != u64::try_from(group.num_rows()).ok() {
            return Err(damaged(
                path,
                format!(
                    "row group {g} holds trajectory ids {min}..={max} in {} rows, the manifest's ids continue at {next}",
                    group.num_rows()
                ),
            ));
        }
        next = max.saturating_add(1);
    }
    Ok(())
}

/// Files already checked in this session, by (path, size, mtime): one hash per file however
/// many queries or epochs read it, and a new hash as soon as it changes on disk.
#[derive(Debug, Default)]
pub struct VerifiedFiles {
    seen: Mutex<HashMap<PathBuf, Stamp>>,
}

impl VerifiedFiles {
    pub fn new() -> VerifiedFiles {
        VerifiedFiles::default()
    }

    /// Checks `entry` of `shard` in the dataset at `dir` (size, hash, rows, ids) unless it was
    /// checked unchanged before. Returns the file's path.
    pub fn check(&self, dir: &Path, shard: &ShardEntry, entry: &FileEntry) -> Result<PathBuf> {
        let path = dir.join(&entry.path);
        // Stamped before reading, so a change while we hash invalidates the entry.
        let stamp = stamp(&path)?;
        if self.is_checked(&path, stamp) {
            return Ok(path);
        }
        let (path, bytes) = read_verified(dir, entry)?;
        guard(&path, || {
            let meta = ParquetMetaDataReader::new()
                .parse_and_finish(&bytes)
                .map_err(|e| StoreError::parquet(&path, e))?;
            check_footer(&path, &meta, shard)?;
            // Decode the embedded Arrow schema now, where a failure is an error naming the
            // file, rather than inside the query engine.
            ArrowReaderMetadata::try_new(Arc::new(meta), ArrowReaderOptions::default())
                .map_err(|e| StoreError::parquet(&path, e))
        })?;
        self.seen
            .lock()
            .expect("no poisoned cache")
            .insert(path.clone(), stamp);
        Ok(path)
    }

    /// The bytes of `entry`: hashed against the manifest unless [`VerifiedFiles::check`]
    /// passed the file unchanged before (a training run reads every file once per epoch;
    /// hashing it each time cost a twentieth of the target stream, docs/perf.md).
    pub(crate) fn read(&self, dir: &Path, entry: &FileEntry) -> Result<(PathBuf, Bytes)> {
        let path = dir.join(&entry.path);
        if stamp(&path).is_ok_and(|s| self.is_checked(&path, s)) {
            let raw = RawFile::read(dir, entry)?;
            if !raw.longer && raw.bytes.len() as u64 == entry.bytes {
                return Ok((raw.path, raw.bytes));
            }
        }
        read_verified(dir, entry)
    }

    fn is_checked(&self, path: &Path, stamp: Stamp) -> bool {
        self.seen.lock().expect("no poisoned cache").get(path) == Some(&stamp)
    }
}

/// What marks a file unchanged: its size and modification time.
type Stamp = (u64, SystemTime);

fn stamp(path: &Path) -> Result<Stamp> {
    std::fs::symlink_metadata(path)
        .map_err(|e| StoreError::io(path, e))
        .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}
